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
//
// The newcomer's path (README's "Run a hub"): with `--domain D` the page must show D as the
// hub's domain; with `--upstream URL` the newcomer goes on: follows the page's link to the
// admin dashboard (it must be `--admin`), logs in with the token and puts the API at URL
// behind the hub in the service editor (`quote`, path `/quote`, 50 sats a call), then prints
// `provider token: <hex>`. `--phase dashboards --provider-token T --operator-token T` (after
// the Rust test's agents paid two calls): the provider's dashboard shows the payments (2, 100
// sats, 2 calls) and their fee (2,000 msat), the operator's the same fee against the provider;
// it prints `hub newcomer dashboards: all expectations held`.
//
//   node crates/turnpike/tests/dashboard/hub_register.mjs --public URL --admin URL \
//        --address A --domain D --upstream URL [--screenshot PNG] [--chromium BIN] [--env DIR]
//   node crates/turnpike/tests/dashboard/hub_register.mjs --phase dashboards --public URL \
//        --admin URL --provider-token T --operator-token T [--chromium BIN] [--env DIR]

import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Failure, fail, until, watch, withBrowser } from "./browser.mjs";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");

const args = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  if (!argv[i].startsWith("--") || i + 1 >= argv.length) usage(`bad argument ${argv[i]}`);
  args[argv[i].slice(2)] = argv[i + 1];
}
const dashboards = args.phase === "dashboards";
const required = dashboards ? ["public", "admin", "provider-token", "operator-token"] : ["public", "admin", "address"];
for (const k of required) if (!args[k]) usage(`--${k} is required`);

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
  await withBrowser(envDir, chromiumBin, dashboards ? views : run);
}

// Logs in to the admin dashboard with `token` in a new context (nothing from elsewhere, no
// error answer, no console error).
async function logIn(browser, token, url = `${admin}/`) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 }, locale: "en-US" });
  const page = await context.newPage();
  const problems = await watch(context, page, new URL(admin).origin, new Set());
  const resp = await page.goto(url);
  if (resp.status() !== 200) fail(`the dashboard answered ${resp.status()}`);
  await page.getByTestId("login-token").fill(token);
  await page.getByTestId("login-submit").click();
  await page.getByTestId("services").waitFor({ state: "visible" });
  return { context, page, problems, byId: (id) => page.getByTestId(id) };
}

const text = async (locator) => (await locator.textContent()).trim();

// The provider follows the page's link to the dashboard and puts its API behind the hub in
// the service editor.
async function addService(browser, token, dashboardUrl) {
  const { context, page, problems, byId } = await logIn(browser, token, dashboardUrl);
  if ((await text(byId("whoami"))) !== "provider: alice") fail(`the badge says ${await text(byId("whoami"))}`);
  await byId("service-add").click();
  if (await page.locator("#f-host").isVisible()) fail("a provider is offered the host field");
  await byId("field-name").fill("quote");
  await byId("field-path").fill("/quote");
  await byId("field-price_sats").fill("50");
  await byId("field-upstream").fill(args.upstream);
  await byId("field-description").fill("Stock quotes");
  await byId("field-tags").fill("finance");
  await byId("service-save").click();
  await byId("service-form").waitFor({ state: "hidden", timeout: 10000 });
  await page.locator('[data-testid="service-row"][data-service="quote"]').waitFor({ state: "visible", timeout: 10000 });
  const r = await fetch(`${admin}/api/v1/services/quote`, { headers: { Authorization: `Bearer ${token}` } });
  const saved = await r.json();
  if (r.status !== 200 || saved.provider !== "alice" || saved.price_sats !== 50 || saved.path !== "/quote") {
    fail(`the stored service: ${r.status} ${JSON.stringify(saved)}`);
  }
  if (problems.length) fail(`the dashboard had problems:\n  ${problems.join("\n  ")}`);
  ok("logged in to the dashboard with the token and put the API behind the hub (quote, 50 sats)");
  await context.close();
}

// After two paid calls: the provider's dashboard and the operator's both show them.
async function views(browser) {
  const provider = await logIn(browser, args["provider-token"]);
  const p = provider.byId;
  await until("the payment in the provider's totals", async () => (await text(p("total-payments"))) === "2", 20000);
  if ((await text(p("total-earned"))) !== "100 sats") fail(`earned: ${await text(p("total-earned"))}`);
  if ((await text(p("total-calls-served"))) !== "2") fail(`calls: ${await text(p("total-calls-served"))}`);
  await until("the provider's fee", async () => (await text(p("fees-accrued"))) === "2,000 msat", 20000);
  if ((await text(p("fees-revenue"))) !== "100") fail(`fees revenue: ${await text(p("fees-revenue"))}`);
  if (provider.problems.length) fail(`the provider's dashboard had problems:\n  ${provider.problems.join("\n  ")}`);
  ok("the provider's dashboard shows the paid calls (2 payments, 100 sats, 2 calls) and their 2,000 msat fee");
  await provider.context.close();

  const operator = await logIn(browser, args["operator-token"]);
  const row = operator.page.locator('[data-testid="hub-provider-row"][data-provider="alice"]');
  await until("alice's fee on the operator's dashboard", async () => (await row.getAttribute("data-fees-msat")) === "2000", 20000);
  if ((await text(operator.byId("hub-accrued"))) !== "2 (2,000 msat)") fail(`accrued: ${await text(operator.byId("hub-accrued"))}`);
  if (operator.problems.length) fail(`the operator's dashboard had problems:\n  ${operator.problems.join("\n  ")}`);
  ok("the operator's dashboard shows alice's 2,000 msat fee");
  await operator.context.close();
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
  if (args.domain && (await page.locator("#domain").textContent()) !== args.domain) {
    fail(`the page shows the domain ${await page.locator("#domain").textContent()}, not the hub's ${args.domain}`);
  }
  await page.click("#submit");
  await page.locator("#done").waitFor({ state: "visible", timeout: 30000 });
  const token = (await page.locator("#token").textContent()).trim();
  if (!/^[0-9a-f]{64}$/.test(token)) fail(`the page shows no token: ${token}`);
  ok("registered with only a Lightning address; the page shows the token");
  // Where to log in with it: the hub's dashboard, linked when `[hub] dashboard_url` is set.
  const link = page.locator("#done a#dashboard");
  const dashboardUrl = (await link.count()) ? await link.getAttribute("href") : null;
  if (args.upstream && dashboardUrl?.replace(/\/+$/, "") !== admin) fail(`the page links the dashboard at ${dashboardUrl}, not ${admin}`);
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
  await context.close();
  if (args.upstream) {
    await addService(browser, token, dashboardUrl);
    console.log(`provider token: ${token}`);
  }
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
  console.log(dashboards ? "hub newcomer dashboards: all expectations held" : "hub register: all expectations held");
} catch (e) {
  console.error(e instanceof Failure ? `FAIL: ${e.message}` : `FAIL: ${e.stack ?? e}`);
  process.exit(1);
}
