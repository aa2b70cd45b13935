// Opens the dashboard for one coupon in headless Chromium and waits, state after state, until
// every number shows its expected value, printing "state <i>" as each is reached (the caller
// acts on it: the next state may only come about after that). Keeps a screenshot; exits non-zero
// (with the page's text) when a state is not shown.
//   node dashboard.mjs <base-url> <coupon-id> '[{"elementId":"text",…},…]' <screenshot.png>
import { chromium } from "playwright-core";

const [baseUrl, couponId, expectedJson, screenshot] = process.argv.slice(2);
const states = JSON.parse(expectedJson).map((state) => Object.entries(state));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 760 } });
  await page.goto(`${baseUrl}/dashboard?coupon=${couponId}`);
  // The caller may start its spike once the page shows the event.
  await page.waitForFunction(() => document.getElementById("stock")?.textContent !== "–");
  console.log("ready");
  const show = (ids) => page.evaluate(
    (ids) => Object.fromEntries(ids.map((id) => [id, document.getElementById(id)?.textContent])), ids);
  try {
    for (const [i, expected] of states.entries()) {
      try {
        // All at once: a state is one moment of the page, not each number at some time.
        await page.waitForFunction(
          (expected) => expected.every(([id, text]) => document.getElementById(id)?.textContent === text),
          expected,
          { timeout: 45_000 },
        );
      } catch (e) {
        console.log(`state ${i} not shown; the page shows ${JSON.stringify(await show(expected.map(([id]) => id)))}`);
        throw e;
      }
      console.log(`state ${i}`);
    }
    // Two polls give the chart its first rate segment.
    await page.waitForFunction(() => document.querySelectorAll("#chart polyline").length === 2);
  } finally {
    await page.screenshot({ path: screenshot, fullPage: true });
  }
} finally {
  await browser.close();
}
