// Drives Turnpike's admin dashboard in a real headless Chromium (Debian's `chromium`, through
// npm `playwright-core`) against a running gateway with the dev Lightning backend:
// log in (a wrong token first), add a paid service through the editor (a field-named 400 from
// the API shown next to its field first), pay for a call through the public listener, see the
// payment on the revenue chart and in the recent payments (auto-refresh, no reload), edit the
// price, revoke the token (the gateway then refuses it), save a screenshot, delete the service,
// log out. No request may leave the admin origin, and the page must log no error (a CSP
// violation included).
//
//   node crates/turnpike/tests/dashboard/dashboard.mjs --admin http://127.0.0.1:8403 \
//        --token-file DATA/admin.token --public http://127.0.0.1:8080 \
//        --upstream http://127.0.0.1:9000 [--screenshot target/test-output/dashboard.png] \
//        [--chromium /usr/bin/chromium] [--env DIR]
//
// --token TOKEN may replace --token-file. The paid call uses the gateway's dev backend
// (`POST /_turnpike/dev/pay`), so the gateway must run with `[backend] kind = "dev"`.
// The upstream must answer 2xx to `GET /<anything>`. playwright-core is resolved from --env
// (default: $TURNPIKE_DASHBOARD_ENV or <repo>/.dashboard-env, installed by
// `scripts/dashboard-env.sh install`). Exits 0 when every expectation held, 1 with
// `FAIL: ...` otherwise, 2 on bad arguments.

import { readFileSync, mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { Failure, fail, until, watch, withBrowser } from "./browser.mjs";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    if (!k.startsWith("--") || i + 1 >= argv.length) usage(`bad argument ${k}`);
    out[k.slice(2)] = argv[i + 1];
  }
  for (const k of ["admin", "public", "upstream"]) if (!out[k]) usage(`--${k} is required`);
  if (!out.token && !out["token-file"]) usage("--token or --token-file is required");
  return out;
}

function usage(msg) {
  console.error(`dashboard.mjs: ${msg}\nusage: node dashboard.mjs --admin URL (--token T | --token-file F) --public URL --upstream URL [--screenshot PNG] [--chromium BIN] [--env DIR]`);
  process.exit(2);
}

const args = parseArgs(process.argv.slice(2));
const admin = args.admin.replace(/\/+$/, "");
const pub = args.public.replace(/\/+$/, "");
const token = (args.token ?? readFileSync(args["token-file"], "utf8")).trim();
const screenshot = resolve(args.screenshot ?? `${repo}/target/test-output/dashboard.png`);
const chromiumBin = args.chromium ?? process.env.TURNPIKE_CHROMIUM ?? "/usr/bin/chromium";
const envDir = resolve(args.env ?? process.env.TURNPIKE_DASHBOARD_ENV ?? `${repo}/.dashboard-env`);

const ok = (msg) => console.log(`ok: ${msg}`);
async function apiGet(path) {
  const r = await fetch(`${admin}/api/v1${path}`, { headers: { Authorization: `Bearer ${token}` } });
  if (!r.ok) fail(`GET /api/v1${path} answered ${r.status}: ${await r.text()}`);
  return r.json();
}

// Pays for one call on the public listener with the dev backend: 402 → dev pay → retry.
async function paidCall(url) {
  const challenge = await until(`a 402 from the new service at ${url}`, async () => {
    const r = await fetch(url);
    if (r.status === 402) return r.json();
    if (r.status !== 404) fail(`GET ${url} without a credential answered ${r.status}, not 402: ${await r.text()}`);
    return null; // not routed yet
  }, 10000);
  if (!challenge.invoice || !challenge.macaroon) fail(`the 402 body has no invoice or macaroon: ${JSON.stringify(challenge)}`);
  const payResp = await fetch(`${pub}/_turnpike/dev/pay`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ invoice: challenge.invoice }),
  });
  if (!payResp.ok) fail(`the dev payment answered ${payResp.status}: ${await payResp.text()}`);
  const { preimage } = await payResp.json();
  const authorization = `L402 ${challenge.macaroon}:${preimage}`;
  const r = await fetch(url, { headers: { Authorization: authorization } });
  if (r.status !== 200) fail(`the paid call answered ${r.status}, not 200: ${await r.text()}`);
  return { authorization, price: challenge.price_sats };
}

async function main() {
  await withBrowser(envDir, chromiumBin, run);
}

async function run(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "en-US" });
  const page = await context.newPage();
  // Nothing may come from anywhere but the admin listener. Error answers: only the two
  // provoked here (the wrong token's 401, the refused upstream's 400) are expected.
  const provoked = new Set(["GET /api/v1/session 401", "POST /api/v1/services 400"]);
  const problems = await watch(context, page, new URL(admin).origin, provoked);
  const byId = (id) => page.getByTestId(id);
  const service = `dash-${randomBytes(4).toString("hex")}`;
  const path = `/${service}`;
  const today = new Date().toISOString().slice(0, 10);

  // --- The page and its headers.
  const resp = await page.goto(`${admin}/`);
  if (resp.status() !== 200) fail(`GET / answered ${resp.status()}`);
  const csp = resp.headers()["content-security-policy"] ?? "";
  if (!/default-src 'self'/.test(csp)) fail(`GET / has no Content-Security-Policy with default-src 'self' (got "${csp}")`);
  await byId("login-form").waitFor({ state: "visible" });
  ok("the dashboard loads with a strict CSP and shows the login form");

  // --- Log in: a wrong token is refused, the right one lets in.
  await byId("login-token").fill(`${token}x`);
  await byId("login-submit").click();
  await until("the login error for a wrong token", async () => (await byId("login-error").textContent()).includes("refused"), 5000);
  if (!(await byId("login-form").isVisible())) fail("a wrong token left the login form");
  await byId("login-token").fill(token);
  await byId("login-submit").click();
  await byId("services").waitFor({ state: "visible" });
  await until("the health badge saying healthy", async () => (await byId("health").getAttribute("data-state")) === "ok", 10000);
  const stored = await page.evaluate(() => sessionStorage.getItem("turnpike.admin_token"));
  if (stored !== token) fail("the token is not kept in sessionStorage");
  ok("a wrong token is refused; the right one logs in; health is ok");

  // --- Accessible names: every form control has a label, every button a name.
  const unnamed = await page.evaluate(() => [
    ...[...document.querySelectorAll("input, select, textarea")].filter((e) => e.labels.length === 0)
      .map((e) => `${e.tagName.toLowerCase()} ${e.name || e.id}`),
    ...[...document.querySelectorAll("button")].filter((b) => !(b.getAttribute("aria-label") || b.textContent.trim()))
      .map((b) => `button ${b.dataset.testid}`),
  ]);
  if (unnamed.length) fail(`controls without a label or name: ${unnamed.join(", ")}`);
  const charts = await page.locator('[data-testid$="-chart"] svg[role="img"][aria-label]').count();
  if (charts !== 2) fail(`expected two charts with role="img" and an aria-label, found ${charts}`);
  ok("every control is labelled and the charts have text alternatives");

  // --- Add a service through the editor; the API's field-named error shows next to the field.
  await byId("service-add").click();
  await byId("field-name").fill(service);
  await byId("field-path").fill(path);
  await byId("field-price_sats").fill("abc");
  await byId("field-upstream").fill(args.upstream);
  await byId("service-save").click();
  await until("the editor's own error for a price that is not a number", async () => (await byId("error-price_sats").textContent()).length > 0, 3000);
  await byId("field-price_sats").fill("7");
  await byId("field-upstream").fill("ftp://127.0.0.1:1/");
  await byId("service-save").click();
  const upstreamError = await until("the API's 400 for an ftp:// upstream, next to the upstream field", async () => {
    const t = await byId("error-upstream").textContent();
    return t.length > 0 && t;
  }, 5000);
  if ((await byId("field-upstream").getAttribute("aria-invalid")) !== "true") fail("the upstream field is not marked aria-invalid");
  if ((await apiGet("/services")).services.some((s) => s.name === service)) fail("a refused service was stored anyway");
  ok(`the API's refusal shows next to the upstream field ("${upstreamError.trim()}") and stored nothing`);
  await byId("field-upstream").fill(args.upstream);
  await byId("service-save").click();
  await byId("service-form").waitFor({ state: "hidden", timeout: 5000 });
  const row = page.locator(`[data-testid="service-row"][data-service="${service}"]`);
  await row.waitFor({ state: "visible", timeout: 10000 });
  const created = (await apiGet("/services")).services.find((s) => s.name === service);
  if (!created) fail(`the API does not list ${service} after the editor saved it`);
  if (created.price_sats !== 7 || created.path !== path || created.upstream.replace(/\/$/, "") !== args.upstream.replace(/\/$/, "")) {
    fail(`the stored service differs from what was entered: ${JSON.stringify(created)}`);
  }
  if (created.source !== "admin") fail(`the new service's source is ${created.source}, not admin`);
  ok(`service ${service} added through the editor (price 7 sats, path ${path})`);

  // --- A paid call through the public listener appears on the chart and in recent payments.
  const { authorization } = await paidCall(`${pub}${path}/hello`);
  ok("paid for one call through the gateway (402, dev payment, 200)");
  const payment = page.locator(`[data-testid="payment-row"][data-service="${service}"]`);
  await until("the payment in the recent payments table (auto-refresh)", async () => (await payment.count()) === 1, 20000);
  const tokenId = await payment.getAttribute("data-token");
  if ((await payment.getAttribute("data-sats")) !== "7") fail(`the payment row shows ${await payment.getAttribute("data-sats")} sats, not 7`);
  const bar = page.locator(`[data-testid="revenue-bar"][data-service="${service}"][data-day="${today}"]`);
  await until(`a bar for ${service} on ${today} in the revenue chart`, async () => (await bar.count()) === 1, 20000);
  if ((await bar.getAttribute("data-sats")) !== "7") fail(`the chart's bar for ${service} is ${await bar.getAttribute("data-sats")} sats, not 7`);
  if (!((await bar.getAttribute("height")) > 0)) fail("the chart's bar has no height");
  await until("the service among the top services", async () => (await page.locator(`[data-testid="top-service-row"][data-service="${service}"]`).count()) === 1, 10000);
  const paidBar = page.locator('[data-testid="calls-bar"][data-metric="payments"]');
  if (!(Number(await paidBar.getAttribute("data-value")) >= 1)) fail("the calls chart counts no payment");
  ok(`the payment (token ${tokenId.slice(0, 12)}…) shows in recent payments, on the revenue chart and in the top services`);

  // --- Edit the price (a merge patch of the changed key only).
  await row.getByTestId("service-edit").click();
  if (!(await byId("field-name").evaluate((e) => e.readOnly))) fail("the name is editable when editing a service");
  await byId("field-price_sats").fill("9");
  await byId("service-save").click();
  await byId("service-form").waitFor({ state: "hidden", timeout: 5000 });
  await until("the new price in the services table", async () => (await row.locator("td").nth(3).textContent()) === "9", 10000);
  const edited = (await apiGet(`/services/${service}`));
  if (edited.price_sats !== 9 || edited.path !== path) fail(`the edited service is ${JSON.stringify(edited)}`);
  ok("the price was edited to 9 sats");

  // --- Revoke the token: the row says so and the gateway refuses the credential.
  await byId("token-filter-service").fill(service);
  await byId("token-filter-service").press("Enter");
  const tokenRow = page.locator(`[data-testid="token-row"][data-token="${tokenId}"]`);
  await until("only the new service's tokens in the filtered token list", () => page.locator('[data-testid="token-row"]')
    .evaluateAll((rows, s) => rows.length > 0 && rows.every((r) => r.dataset.service === s), service), 10000);
  await tokenRow.waitFor({ state: "visible", timeout: 10000 });
  await tokenRow.getByTestId("token-revoke").click();
  await tokenRow.getByTestId("token-revoke-confirm").click();
  await until("the token row marked revoked", async () => (await tokenRow.getAttribute("data-revoked")) === "true", 10000);
  const listed = (await apiGet(`/tokens?service=${service}`)).tokens.find((t) => t.token_id === tokenId);
  if (!listed?.revoked) fail(`the API does not list token ${tokenId} as revoked`);
  await until("a 401 for the revoked credential", async () => (await fetch(`${pub}${path}/again`, { headers: { Authorization: authorization } })).status === 401, 10000);
  ok("the token was revoked from the dashboard and the gateway now answers 401 to it");

  // --- Screenshot of the whole page with the payment on it.
  await byId("token-filter-service").fill("");
  await byId("token-filter-service").press("Enter");
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  ok(`screenshot saved to ${screenshot}`);

  // --- Delete the service: gone from the table and from the gateway.
  await row.getByTestId("service-delete").click();
  await row.getByTestId("service-delete-confirm").click();
  await row.waitFor({ state: "detached", timeout: 10000 });
  await until("a 404 for the deleted service", async () => (await fetch(`${pub}${path}/x`)).status === 404, 10000);
  ok("the service was deleted from the dashboard and the gateway no longer routes it");

  // --- Log out: back to the login form, the token forgotten.
  await byId("logout").click();
  await byId("login-form").waitFor({ state: "visible" });
  if (await page.evaluate(() => sessionStorage.getItem("turnpike.admin_token"))) fail("logging out kept the token");
  await page.reload();
  if (!(await byId("login-form").isVisible())) fail("after logging out a reload is logged in again");
  ok("logging out forgets the token");

  if (problems.length) fail(`the page had problems:\n  ${problems.join("\n  ")}`);
  ok("no console error, no page error, no request outside the admin origin");
}

try {
  await main();
  console.log("dashboard: all expectations held");
} catch (e) {
  console.error(e instanceof Failure ? `FAIL: ${e.message}` : `FAIL: ${e.stack ?? e}`);
  process.exit(1);
}
