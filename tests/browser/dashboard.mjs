// Opens the dashboard for one coupon in headless Chromium, waits until every number shows the
// expected value, and keeps a screenshot. Exits non-zero (with the page's text) when it does not.
//   node dashboard.mjs <base-url> <coupon-id> '<{"elementId":"text",…}>' <screenshot.png>
import { chromium } from "playwright-core";

const [baseUrl, couponId, expectedJson, screenshot] = process.argv.slice(2);
const expected = Object.entries(JSON.parse(expectedJson));
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
  try {
    for (const [id, text] of expected) {
      await page.waitForFunction(
        ([id, text]) => document.getElementById(id)?.textContent === text,
        [id, text],
        { timeout: 45_000 },
      );
    }
    // Two polls give the chart its first rate segment.
    await page.waitForFunction(() => document.querySelectorAll("#chart polyline").length === 2);
  } finally {
    await page.screenshot({ path: screenshot, fullPage: true });
  }
  const shown = await page.evaluate((ids) => ids.map((id) => [id, document.getElementById(id)?.textContent]), expected.map(([id]) => id));
  console.log(`dashboard shows ${JSON.stringify(Object.fromEntries(shown))}`);
} finally {
  await browser.close();
}
