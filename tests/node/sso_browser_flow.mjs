// Drives the page in browser/sso.html in headless Chromium (playwright-core)
// with a persistent profile, so the browser can be closed and started again
// with its cookies. Prints one JSON line per step; waits for a line on stdin
// where the test has something to do in between (move the server's clock).
//
// Usage: node sso_browser_flow.mjs <origin> <email> <profile folder>
//
// Steps:
//   signed-out   the page before any sign-in
//   signed-in    after the single sign-on link, through the provider, back
//   reloaded     after a reload
//   restarted    after closing the browser and starting it again
//   waiting      (then reads a line from stdin)
//   expired      a call after the test moved the server's clock past the
//                access token's expiry
//   logged-out   after the sign-out button; with the cookies left

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [origin, email, profile] = process.argv.slice(2);
if (!profile) {
  console.error("usage: node sso_browser_flow.mjs <origin> <email> <profile folder>");
  process.exit(2);
}

const launch = () =>
  chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-dev-shm-usage",
    ],
  });

const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
const report = (step, extra) => console.log(JSON.stringify({ step, ...extra }));

async function state(page) {
  await page.waitForFunction(
    () => ["signed-in", "signed-out", "error"].includes(document.getElementById("status").textContent)
      && document.getElementById("call").textContent !== "",
    null,
    { timeout: 20000 },
  );
  const text = (id) => page.textContent(`#${id}`);
  return {
    status: await text("status"),
    email: await text("email"),
    refreshes: Number(await text("refreshes")),
    call: await text("call"),
    url: page.url(),
  };
}

async function sessionCookies(context) {
  // Every cookie: one scoped to /auth/ is not among the page URL's.
  return (await context.cookies()).filter((c) => c.name === "__Secure-twig_refresh");
}

let context = await launch();
try {
  let page = context.pages()[0] ?? (await context.newPage());
  const errors = [];
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));

  await page.goto(`${origin}/app/index.html?email=${encodeURIComponent(email)}`);
  report("signed-out", await state(page));

  await Promise.all([page.waitForURL(`${origin}/app/index.html`, { timeout: 20000 }), page.click("#sso")]);
  const cookie = (await sessionCookies(context))[0];
  report("signed-in", {
    ...(await state(page)),
    cookie: cookie && {
      httpOnly: cookie.httpOnly, secure: cookie.secure, sameSite: cookie.sameSite,
      path: cookie.path, persistent: cookie.expires > 0,
    },
  });

  await page.reload();
  report("reloaded", await state(page));

  await context.close();
  context = await launch();
  page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  await page.goto(`${origin}/app/index.html`);
  report("restarted", await state(page));

  report("waiting", {});
  await lines.next();
  await page.evaluate(() => { document.getElementById("call").textContent = ""; });
  await page.click("#whoami");
  report("expired", await state(page));

  const before = (await sessionCookies(context))[0]?.value ?? "";
  await page.evaluate(() => { document.getElementById("call").textContent = ""; });
  await page.click("#logout");
  await page.waitForFunction(() => document.getElementById("call").textContent === "logged-out");
  report("logged-out", {
    refresh_token_before: before,
    cookies_left: (await sessionCookies(context)).length,
    console_errors: errors,
  });
} finally {
  await context.close();
  // stdin open would keep the process alive.
  input.close();
}
