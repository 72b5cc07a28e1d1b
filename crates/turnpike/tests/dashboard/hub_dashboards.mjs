// The hub's dashboards in a real headless Chromium (Debian's `chromium`, through npm
// `playwright-core`), against a real `turnpike serve` with `[hub]` on which provider `alice`
// has had one paid call (made by the Rust test over a real LNbits):
// - alice logs in to the admin dashboard with her own token: she sees her account, her
//   revenue (the paid call), her fees, the bill for them (its invoice, due date) and this
//   month's statement (and an empty older month), her own service only, and no operator panel
//   (the page asks for nothing she may not read: any 403 fails the test); she pays the bill
//   (the hub's dev backend) and sees it paid;
// - the operator logs in: the hub's fees per provider and in total, and suspends then
//   reinstates bob from the page (checked through the API); suspended, bob sees it on his
//   account.
// No request may leave the page's origin and the page must log no error (CSP included).
//
//   node hub_dashboards.mjs --admin URL --public URL --operator-token T --alice-token T --bob-token T \
//        [--screenshots DIR] [--chromium BIN] [--env DIR]
//
// Exits 0 when every expectation held (printing `hub dashboards: all expectations held`).

import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Failure, fail, parseArgs, until, watch, withBrowser } from "./browser.mjs";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const args = parseArgs(process.argv.slice(2), ["admin", "public", "operator-token", "alice-token", "bob-token"], (msg) => {
  console.error(`hub_dashboards.mjs: ${msg}\nusage: node hub_dashboards.mjs --admin URL --public URL --operator-token T --alice-token T --bob-token T [--screenshots DIR] [--chromium BIN] [--env DIR]`);
  process.exit(2);
});
const admin = args.admin.replace(/\/+$/, "");
const pub = args.public.replace(/\/+$/, "");
const shots = resolve(args.screenshots ?? `${repo}/target/test-output`);
const chromiumBin = args.chromium ?? process.env.TURNPIKE_CHROMIUM ?? "/usr/bin/chromium";
const envDir = resolve(args.env ?? process.env.TURNPIKE_DASHBOARD_ENV ?? `${repo}/.dashboard-env`);
const ok = (msg) => console.log(`ok: ${msg}`);
const month = new Date().toISOString().slice(0, 7);

// Logs in with `token` in a new context; the error answers in `expected` are provoked on purpose.
async function logIn(browser, token, expected = new Set()) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 }, locale: "en-US" });
  const page = await context.newPage();
  const problems = await watch(context, page, new URL(admin).origin, expected);
  const resp = await page.goto(`${admin}/`);
  if (resp.status() !== 200) fail(`GET / answered ${resp.status()}`);
  await page.getByTestId("login-token").fill(token);
  await page.getByTestId("login-submit").click();
  await page.getByTestId("services").waitFor({ state: "visible" });
  return { context, page, problems, byId: (id) => page.getByTestId(id) };
}

const text = async (locator) => (await locator.textContent()).trim();

async function providerView(browser) {
  // The one error answer provoked: a bad tag, refused by the API.
  const { context, page, problems, byId } = await logIn(browser, args["alice-token"], new Set(["PATCH /api/v1/services/alice-quote 400"]));
  await until("alice's account panel", () => byId("account").isVisible(), 10000);
  if ((await text(byId("whoami"))) !== "provider: alice") fail(`the badge says ${await text(byId("whoami"))}`);
  for (const id of ["payments", "tokens", "hub", "health"]) {
    if (await byId(id).isVisible()) fail(`the operator's panel ${id} is shown to a provider`);
  }
  if (await page.locator("#f-host").isVisible()) fail("a provider is offered the host field");
  ok("a provider's token opens its own view, without the operator's panels");

  // Her revenue: the one paid call, at her price (21 sats), on today's bar; her service only.
  await until("her paid call in the totals", async () => (await text(byId("total-payments"))) === "1", 15000);
  if ((await text(byId("total-earned"))) !== "21 sats") fail(`earned: ${await text(byId("total-earned"))}`);
  if ((await text(byId("total-calls-served"))) !== "1") fail(`calls: ${await text(byId("total-calls-served"))}`);
  const bars = page.locator('[data-testid="revenue-bar"]');
  await until("a revenue bar", async () => (await bars.count()) === 1, 10000);
  if ((await bars.first().getAttribute("data-service")) !== "alice-quote") fail("a bar of another service");
  const rows = await page.locator('[data-testid="service-row"]').evaluateAll((r) => r.map((e) => e.dataset.service));
  if (JSON.stringify(rows) !== JSON.stringify(["alice-quote"])) fail(`services shown: ${rows}`);
  ok("her revenue (1 payment, 21 sats, 1 call, today's bar) and only her service");

  // She edits her service in the editor: its description and tags, a bad tag refused first.
  await page.getByTestId("service-edit").click();
  if ((await byId("field-description").inputValue()) !== "Stock quotes" || (await byId("field-tags").inputValue()) !== "finance") {
    fail("the editor does not show her service's description and tags");
  }
  await byId("field-tags").fill("finance, Bad Tag");
  await byId("service-save").click();
  await until("the bad tag refused next to the tags field", async () => (await text(byId("error-tags"))).length > 0, 10000);
  await byId("field-tags").fill("finance, stocks");
  await byId("service-save").click();
  await until("her service saved", async () => (await text(byId("notice"))) === "Service alice-quote saved.", 10000);
  const saved = await (await fetch(`${admin}/api/v1/services/alice-quote`, { headers: { Authorization: `Bearer ${args["alice-token"]}` } })).json();
  if (JSON.stringify(saved.tags) !== JSON.stringify(["finance", "stocks"]) || saved.description !== "Stock quotes") fail(`saved: ${JSON.stringify(saved)}`);
  ok("she edits her service's tags in the editor (a bad tag refused next to the field)");

  // Her fees: 22 sats paid by the client (LNbits rounds 21.42 up), 1 sat of it the hub's,
  // billed at once (threshold 1 sat), due in a day.
  const bill = page.locator('[data-testid="bill-row"]');
  await until("her bill", async () => (await bill.count()) === 1, 15000);
  const expectFees = async (rows) => {
    for (const [id, want] of rows) {
      await until(`${id} showing ${want}`, async () => (await text(byId(id))) === want, 10000);
    }
  };
  await expectFees([["fees-payments", "1"], ["fees-revenue", "21"], ["fees-accrued", "1,000 msat"],
    ["fees-owed", "1,000 msat"], ["fees-unbilled", "0 msat"], ["fees-billed-unpaid", "1,000 msat"], ["fees-billed-paid", "0 msat"]]);
  const invoice = await text(bill.getByTestId("bill-invoice"));
  if (!/^ln[a-z0-9]+$/.test(invoice)) fail(`the bill's invoice: ${invoice}`);
  if ((await bill.getAttribute("data-paid")) !== "false" || !(await text(bill)).includes("unpaid")) fail("the bill is not shown unpaid");
  if ((await text(byId("account-status"))) !== "active") fail("not shown active");
  if (!(await text(byId("account-trial"))).startsWith("Trial ended")) fail(`trial: ${await text(byId("account-trial"))}`);
  ok("her fees: 1,000 msat accrued and billed; the bill unpaid, with its invoice and due date; trial over");

  // This month's statement, then an older month with nothing in it.
  await until("this month's statement", async () => (await byId("statement").getAttribute("data-month")) === month, 10000);
  if ((await text(byId("statement-payments"))) !== "1") fail(`statement payments: ${await text(byId("statement-payments"))}`);
  if ((await text(byId("statement-fees"))) !== "1 (1,000 msat)") fail(`statement fees: ${await text(byId("statement-fees"))}`);
  await byId("statement-month").fill("2020-01");
  await until("the 2020-01 statement", async () => (await byId("statement").getAttribute("data-month")) === "2020-01", 10000);
  if ((await text(byId("statement-payments"))) !== "0") fail("2020-01 shows payments");
  await byId("statement-month").fill(month);
  await until("back to this month", async () => (await text(byId("statement-payments"))) === "1", 10000);
  ok(`the statement of ${month} (1 payment, 1 sat of fee) and of 2020-01 (nothing)`);

  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: `${shots}/hub-provider.png`, fullPage: true });

  // She pays the bill (the hub's backend is the dev one): shown paid, nothing owed.
  const paid = await fetch(`${pub}/_turnpike/dev/pay`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ invoice }) });
  if (paid.status !== 200) fail(`paying the bill: ${paid.status}`);
  await until("the bill shown paid", async () => (await bill.getAttribute("data-paid")) === "true", 15000);
  await expectFees([["fees-owed", "0 msat"], ["fees-billed-unpaid", "0 msat"], ["fees-billed-paid", "1,000 msat"]]);
  if (await bill.getByTestId("bill-invoice").count()) fail("a paid bill still offers its invoice");
  ok("she pays the bill: shown paid, nothing owed");
  if (problems.length) fail(`the provider's page had problems:\n  ${problems.join("\n  ")}`);
  ok("no error answer (no 403), no console error, nothing from elsewhere");
  await context.close();
}

// Bob, suspended, logs in: his account says so.
async function suspendedView(browser) {
  const { context, problems, byId } = await logIn(browser, args["bob-token"]);
  await until("bob's account shown suspended", async () => (await text(byId("account-status"))) === "suspended", 10000);
  if (!(await byId("account-suspended").isVisible())) fail("no notice that his services take no new payments");
  if ((await text(byId("fees-owed"))) !== "0 msat") fail(`bob owes ${await text(byId("fees-owed"))}`);
  if (problems.length) fail(`bob's page had problems:\n  ${problems.join("\n  ")}`);
  await context.close();
  ok("bob, suspended, sees it on his account, with the notice");
}

async function operatorView(browser) {
  const { context, page, problems, byId } = await logIn(browser, args["operator-token"]);
  await until("the hub's fees", () => byId("hub").isVisible(), 10000);
  if (await byId("account").isVisible()) fail("the operator is shown a provider's account");
  const row = (slug) => page.locator(`[data-testid="hub-provider-row"][data-provider="${slug}"]`);
  await until("alice's row with her fee", async () => (await row("alice").getAttribute("data-fees-msat")) === "1000", 10000);
  if ((await row("bob").getAttribute("data-fees-msat")) !== "0") fail("bob shows fees");
  if ((await row("alice").getAttribute("data-owed-msat")) !== "0") fail("alice still owes");
  if ((await text(byId("hub-owed"))) !== "0" || (await text(byId("hub-earned"))) !== "1") {
    fail(`totals: owed ${await text(byId("hub-owed"))}, earned ${await text(byId("hub-earned"))}`);
  }
  if ((await text(byId("hub-accrued"))) !== "1 (1,000 msat)") fail(`accrued: ${await text(byId("hub-accrued"))}`);
  ok("the operator sees the fees: alice's 1,000 msat accrued and paid, bob none; 1 sat earned, 0 owed in total");

  await row("bob").getByTestId("provider-suspend").click();
  await byId("provider-suspend-confirm").click();
  await until("bob suspended", async () => (await row("bob").getAttribute("data-status")) === "suspended", 10000);
  const bob = await (await fetch(`${admin}/api/v1/hub/providers`, { headers: { Authorization: `Bearer ${args["operator-token"]}` } })).json();
  if (bob.providers.find((p) => p.slug === "bob")?.status !== "suspended") fail("the API does not show bob suspended");
  await page.screenshot({ path: `${shots}/hub-operator.png`, fullPage: true });
  await suspendedView(browser);
  await row("bob").getByTestId("provider-reinstate").click();
  await until("bob reinstated", async () => (await row("bob").getAttribute("data-status")) === "active", 10000);
  ok("the operator suspends bob (after confirming) and reinstates him from the page");
  if (problems.length) fail(`the operator's page had problems:\n  ${problems.join("\n  ")}`);
  await context.close();
}

try {
  await withBrowser(envDir, chromiumBin, async (browser) => {
    await providerView(browser);
    await operatorView(browser);
  });
  console.log("hub dashboards: all expectations held");
} catch (e) {
  console.error(e instanceof Failure ? `FAIL: ${e.message}` : `FAIL: ${e.stack ?? e}`);
  process.exit(1);
}
