// "Verify my place" on the dashboard, in headless Chromium: a winner's receipt verifies in the
// browser; the same receipt with its nonce changed on the way (a forged receipt) does not; a
// user with no place has no receipt. Prints one line per case: "<case>: <verdict>".
//   node verify.mjs <base-url> <coupon-id> <winner-token> <loser-token> <screenshot.png>
import { chromium } from "playwright-core";

const [baseUrl, couponId, winner, loser, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await page.goto(`${baseUrl}/dashboard?coupon=${couponId}`);
  await page.waitForFunction(
    (id) => document.getElementById("checkpoint")?.textContent.includes(`/coupons/${id}\n`), couponId);
  console.log(`checkpoint: ${(await page.textContent("#checkpoint")).split("\n").slice(0, 2).join(" ")}`);
  const verdict = async (name, token) => {
    await page.fill("#token", token);
    await page.click("#verify");
    await page.waitForFunction(() => !["", "checking…"].includes(document.getElementById("verdict").textContent));
    console.log(`${name}: ${await page.textContent("#verdict")}`);
  };
  await verdict("winner", winner);
  await page.screenshot({ path: screenshot, fullPage: true });
  const position = (url) => url.pathname.endsWith("/position");
  await page.route(position, async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    body.receipt.nonce = "00".repeat(16);
    await route.fulfill({ response, json: body });
  });
  await verdict("forged", winner);
  await page.unroute(position);
  await verdict("loser", loser);
} finally {
  await browser.close();
}
