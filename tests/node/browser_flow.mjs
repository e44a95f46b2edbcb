// Drives the page in browser/ in headless Chromium (playwright-core):
// clicks Run and prints what the page shows as one JSON line.
//
// Usage: node browser_flow.mjs <page URL>
// The page (with ?api=<API base URL>) must be served by the caller.

import { chromium } from "playwright-core";

const [pageUrl] = process.argv.slice(2);
if (!pageUrl) {
  console.error("usage: node browser_flow.mjs <page URL>");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
  ],
});
try {
  const page = await browser.newPage();
  const consoleErrors = [];
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(m.text());
  });
  await page.goto(pageUrl);
  await page.click("#run");
  await page.waitForFunction(
    () => ["done", "failed"].includes(document.getElementById("status").textContent),
    null,
    { timeout: 20000 },
  );
  const status = await page.textContent("#status");
  const result = JSON.parse(await page.textContent("#result"));
  const listedText = await page.$$eval("#keys li", (items) => items.map((li) => li.textContent));
  const badTokenText = await page.textContent("#bad-token");
  console.log(JSON.stringify({ status, result, listedText, badTokenText, consoleErrors }));
} finally {
  await browser.close();
}
