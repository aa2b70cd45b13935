// Walks Swagger UI as a new user would: Authorize with the admin token, create an event with
// POST /coupons, authorize as a user, apply, read the position; then the fairness log's verifier
// key and the event's checkpoint. Prints one JSON line with what
// each step answered; exits non-zero (with a screenshot) when a step does not answer as it should.
//   node swagger.mjs <base-url> <admin-token> <user-token> <screenshot.png>
import { chromium } from "playwright-core";

const [baseUrl, adminToken, userToken, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const seen = {};
const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
try {
  await page.goto(`${baseUrl}/docs`);
  await page.waitForSelector(".opblock", { timeout: 30_000 });

  await authorize(page, adminToken);
  const created = await execute(page, "Coupons", "createCoupon", async (block) => {
    await block.locator("textarea.body-param__text")
      .fill(JSON.stringify({ name: "Swagger sale", stock: 10 }));
  });
  seen.create = created;
  const couponId = String(JSON.parse(created.body).id);

  await authorize(page, userToken);
  seen.apply = await execute(page, "Applications", "applyForCoupon", (block) =>
    block.locator('input[placeholder="couponId"]').fill(couponId));
  seen.position = await execute(page, "Applications", "getPosition", (block) =>
    block.locator('input[placeholder="couponId"]').fill(couponId));
  seen.key = await execute(page, "Fairness", "getFairnessKey", async () => {});
  seen.checkpoint = await execute(page, "Fairness", "getLogCheckpoint", (block) =>
    block.locator('input[placeholder="couponId"]').fill(couponId));
  console.log(JSON.stringify(seen));
} finally {
  await page.screenshot({ path: screenshot, fullPage: false });
  await browser.close();
}

// The Authorize dialog: log out whoever was authorized, paste the token, close.
async function authorize(page, token) {
  await page.click(".scheme-container .btn.authorize");
  const dialog = page.locator(".modal-ux");
  const logout = dialog.locator("button", { hasText: "Logout" });
  if (await logout.count()) await logout.first().click();
  await dialog.locator("input").first().fill(token);
  await dialog.locator("button.modal-btn.authorize").click();
  await dialog.locator("button.btn-done").click();
}

// Opens one operation, presses "Try it out", fills it in, executes, and returns the status and
// body Swagger UI shows for the live response.
async function execute(page, tag, operationId, fill) {
  const block = page.locator(`#operations-${tag}-${operationId}`);
  if (!(await block.locator(".opblock-body").count())) {
    await block.locator(".opblock-summary").first().click();
  }
  await block.locator("button.try-out__btn").click();
  await fill(block);
  await block.locator("button.execute").click();
  const live = block.locator(".live-responses-table .response");
  await live.first().waitFor({ timeout: 15_000 });
  const status = (await live.locator(".response-col_status").first().innerText()).trim();
  const body = (await live.locator(".response-col_description pre").first().innerText()).trim();
  await block.locator(".opblock-summary").first().scrollIntoViewIfNeeded();
  return { status: Number(status), body };
}
