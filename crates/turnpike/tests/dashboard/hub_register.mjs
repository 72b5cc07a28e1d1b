// Drives the hub's registration page (`GET /_turnpike/hub/register` on the public listener of a
// gateway with `[hub] open_registration = true`) in a real headless Chromium (Debian's
// `chromium`, through npm `playwright-core`): a slug the hub refuses first (its message shown,
// nothing registered), then a provider registered with only a Lightning address; the token the
// page shows then opens the provider's own record on the admin API. With `--phoenixd`, a second
// provider registers with a phoenixd wallet: the full-access password refused (it can pay),
// the limited one taken, its record showing the password redacted. No request may leave the
// page's origin and the page must log no error (a CSP violation included).
//
//   node crates/turnpike/tests/dashboard/hub_register.mjs --public http://127.0.0.1:8080 \
//        --admin http://127.0.0.1:8403 --address alice@127.0.0.1:9000 \
//        [--phoenixd URL --phoenixd-full PW --phoenixd-limited PW] \
//        [--screenshot target/test-output/hub-register.png] [--chromium BIN] [--env DIR]
//
// Exits 0 when every expectation held (printing `hub register: all expectations held`), 1 with
// `FAIL: ...` otherwise, 2 on bad arguments.

import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Failure, fail, watch, withBrowser } from "./browser.mjs";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");

const args = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  if (!argv[i].startsWith("--") || i + 1 >= argv.length) usage(`bad argument ${argv[i]}`);
  args[argv[i].slice(2)] = argv[i + 1];
}
for (const k of ["public", "admin", "address"]) if (!args[k]) usage(`--${k} is required`);

function usage(msg) {
  console.error(`hub_register.mjs: ${msg}\nusage: node hub_register.mjs --public URL --admin URL --address USER@DOMAIN [--screenshot PNG] [--chromium BIN] [--env DIR]`);
  process.exit(2);
}

const pub = args.public.replace(/\/+$/, "");
const admin = args.admin.replace(/\/+$/, "");
const screenshot = resolve(args.screenshot ?? `${repo}/target/test-output/hub-register.png`);
const chromiumBin = args.chromium ?? process.env.TURNPIKE_CHROMIUM ?? "/usr/bin/chromium";
const envDir = resolve(args.env ?? process.env.TURNPIKE_DASHBOARD_ENV ?? `${repo}/.dashboard-env`);

const ok = (msg) => console.log(`ok: ${msg}`);

async function main() {
  await withBrowser(envDir, chromiumBin, run);
}

async function run(browser) {
  const context = await browser.newContext({ viewport: { width: 900, height: 900 }, locale: "en-US" });
  const page = await context.newPage();
  // The one error answer provoked: the refused slug.
  const provoked = new Set(["POST /_turnpike/hub/register 400", "POST /_turnpike/hub/register 422"]);
  const problems = await watch(context, page, new URL(pub).origin, provoked);

  const resp = await page.goto(`${pub}/_turnpike/hub/register`);
  if (resp.status() !== 200) fail(`the page answered ${resp.status()}`);
  const csp = resp.headers()["content-security-policy"] ?? "";
  if (!csp.includes("default-src 'self'")) fail(`no strict content security policy: ${csp}`);
  ok("the registration page is served with a strict CSP");

  await page.fill("#name", "Alice APIs");
  await page.fill("#slug", "Alice!");
  await page.fill("#contact", "ops@alice.example");
  await page.fill("#address", args.address);
  await page.click("#submit");
  await page.locator("#error").waitFor({ state: "visible", timeout: 15000 });
  const message = await page.locator("#error").textContent();
  if (!message.includes("slug")) fail(`the refusal does not name the slug: ${message}`);
  if (await page.locator("#done").isVisible()) fail("a refused registration was shown as done");
  ok(`a bad slug is refused on the page: ${message}`);

  await page.fill("#slug", "alice");
  if ((await page.locator(".slug-echo").first().textContent()) !== "alice") fail("the slug is not echoed in the address shown");
  await page.click("#submit");
  await page.locator("#done").waitFor({ state: "visible", timeout: 30000 });
  const token = (await page.locator("#token").textContent()).trim();
  if (!/^[0-9a-f]{64}$/.test(token)) fail(`the page shows no token: ${token}`);
  ok("registered with only a Lightning address; the page shows the token");
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });

  const me = await fetch(`${admin}/api/v1/hub/me`, { headers: { Authorization: `Bearer ${token}` } });
  if (me.status !== 200) fail(`the token does not open the provider's record: ${me.status}`);
  const record = await me.json();
  if (record.slug !== "alice" || record.payout?.kind !== "lightning_address") fail(`unexpected record: ${JSON.stringify(record)}`);
  ok("the token opens the provider's own record");

  if (args.phoenixd) await phoenixd(page);

  if (problems.length) fail(`the page had problems:\n  ${problems.join("\n  ")}`);
  ok("no console error, no page error, no request outside the page's origin");
}

/// A second provider on a phoenixd wallet: the full-access password is refused, the limited one
/// taken; the record shows the password redacted.
async function phoenixd(page) {
  await page.goto(`${pub}/_turnpike/hub/register`);
  await page.fill("#name", "Bob APIs");
  await page.fill("#slug", "bob");
  await page.fill("#contact", "ops@bob.example");
  await page.check("input[name=kind][value=phoenixd]");
  if (!(await page.locator("#phoenixd_url").isVisible()) || (await page.locator("#address").isVisible())) {
    fail("choosing phoenixd does not show its fields (and only them)");
  }
  await page.fill("#phoenixd_url", args.phoenixd);
  await page.fill("#phoenixd_password", args["phoenixd-full"]);
  await page.click("#submit");
  await page.locator("#error").waitFor({ state: "visible", timeout: 30000 });
  const message = await page.locator("#error").textContent();
  if (!message.includes("full-access")) fail(`the full-access password is not refused as such: ${message}`);
  ok(`phoenixd's full-access password is refused: ${message}`);
  await page.fill("#phoenixd_password", args["phoenixd-limited"]);
  await page.click("#submit");
  await page.locator("#done").waitFor({ state: "visible", timeout: 30000 });
  const token = (await page.locator("#token").textContent()).trim();
  const me = await fetch(`${admin}/api/v1/hub/me`, { headers: { Authorization: `Bearer ${token}` } });
  const record = await me.json();
  const text = JSON.stringify(record);
  if (record.payout?.kind !== "phoenixd" || record.payout?.password?.redacted !== true) fail(`unexpected record: ${text}`);
  if (text.includes(args["phoenixd-limited"])) fail("the password is shown");
  ok("registered with phoenixd's limited-access password; the record shows it redacted");
}

try {
  await main();
  console.log("hub register: all expectations held");
} catch (e) {
  console.error(e instanceof Failure ? `FAIL: ${e.message}` : `FAIL: ${e.stack ?? e}`);
  process.exit(1);
}
