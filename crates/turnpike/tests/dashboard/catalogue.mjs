// The hub's public catalogue page (`GET /directory` from a browser) in a real headless Chromium
// (Debian's `chromium`, through npm `playwright-core`), against a real `turnpike serve` with
// `[hub]` and two providers: alice's "alice-quote" (21 sats, tag finance) and bob's
// "bob-weather" (5 sats, tag weather), whose description holds HTML markup meant to run script,
// and who is suspended.
// The page lists both with their price including the fee, searches, filters by tag, maximum
// price and mode, keeps the query in its address, and shows bob's markup as inert text.
//
//   node catalogue.mjs --public URL [--screenshot PNG] [--chromium BIN] [--env DIR]
//
// Exits 0 when every expectation held (printing `catalogue: all expectations held`).

import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Failure, fail, parseArgs, until, watch, withBrowser } from "./browser.mjs";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const args = parseArgs(process.argv.slice(2), ["public"], (msg) => {
  console.error(`catalogue.mjs: ${msg}\nusage: node catalogue.mjs --public URL [--screenshot PNG] [--chromium BIN] [--env DIR]`);
  process.exit(2);
});
const pub = args.public.replace(/\/+$/, "");
const screenshot = resolve(args.screenshot ?? `${repo}/target/test-output/catalogue.png`);
const chromiumBin = args.chromium ?? process.env.TURNPIKE_CHROMIUM ?? "/usr/bin/chromium";
const envDir = resolve(args.env ?? process.env.TURNPIKE_DASHBOARD_ENV ?? `${repo}/.dashboard-env`);
const ok = (msg) => console.log(`ok: ${msg}`);

async function run(browser) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, locale: "en-US" });
  const page = await context.newPage();
  const problems = await watch(context, page, new URL(pub).origin, new Set());
  // Anything the payload manages to run would show here.
  await page.exposeBinding("reportXss", (_, what) => problems.push(`script from a provider's text ran: ${what}`));
  page.on("dialog", (d) => { problems.push(`a dialog opened: ${d.message()}`); d.dismiss(); });

  const resp = await page.goto(`${pub}/directory`);
  if (resp.status() !== 200) fail(`GET /directory answered ${resp.status()}`);
  const headers = resp.headers();
  if (!headers["content-type"]?.startsWith("text/html")) fail(`a browser got ${headers["content-type"]}`);
  const csp = headers["content-security-policy"] ?? "";
  if (!csp.includes("default-src 'none'") || !csp.includes("script-src 'self'") || csp.includes("unsafe")) fail(`CSP: ${csp}`);
  ok("a browser asking /directory gets the catalogue page, under a strict CSP");

  const items = page.locator('[data-testid="service"]');
  const ids = () => items.evaluateAll((els) => els.map((e) => e.dataset.id));
  const shows = async (want) => {
    let seen = [];
    const what = () => `the list showing [${want.join(", ")}]`;
    try {
      await until(what(), async () => JSON.stringify((seen = await ids())) === JSON.stringify(want), 10000);
    } catch (e) {
      const said = `${await page.getByTestId("status").textContent()} ${await page.getByTestId("error").textContent()}`;
      fail(`${e.message}: it shows [${seen.join(", ")}] (${said.trim()}; ${page.url()})`);
    }
  };
  await shows(["alice/alice-quote", "bob/bob-weather"]);
  const alice = items.filter({ has: page.locator('[data-testid="service-name"]', { hasText: "alice-quote" }) });
  const price = alice.getByTestId("price");
  if ((await price.textContent()) !== "22 sats" || (await price.getAttribute("data-amount-msat")) !== "22000") {
    fail(`alice's price shows ${await price.textContent()}`);
  }
  if (!(await alice.textContent()).includes("the provider's 21 sats + 1 hub fee")) fail("the fee is not shown");
  // The hub probes the upstreams every second, and counts real calls: searched again, both
  // are shown up, and alice's one call is in her figures.
  const badges = page.locator('[data-testid="health"]');
  const aliceHealth = alice.getByTestId("health-details");
  await until("both services shown up, alice's call counted", async () => {
    await page.getByTestId("search-submit").click();
    await shows(["alice/alice-quote", "bob/bob-weather"]);
    const states = await badges.evaluateAll((els) => els.map((e) => e.dataset.status));
    const details = await aliceHealth.textContent();
    return states.length === 2 && states.every((s) => s === "up")
      && details.includes("1 call in 24 h") && details.includes("100.0 % calls succeed");
  }, 20000);
  const badge = await badges.first().textContent();
  if (!/^up · \d+\.\d % up \(24 h\)$/.test(badge)) fail(`alice's health badge says ${badge}`);
  ok(`both services listed, alice's at 22 sats (21 + 1 sat fee); health badges up (${badge}; ${await aliceHealth.textContent()})`);
  // Bob is suspended (by the Rust test, before this script): listed, flagged.
  if ((await items.nth(1).getByTestId("suspended").count()) !== 1 || (await alice.getByTestId("suspended").count()) !== 0) {
    fail("the suspended provider is not flagged (or the active one is)");
  }
  ok("bob, suspended, is listed with a 'suspended' badge; alice is not");

  // The XSS payload is text: shown literally, no element made of it, nothing ran.
  const bob = items.nth(1);
  const desc = await bob.getByTestId("description").textContent();
  if (!desc.includes("<img src=x onerror=") || !desc.includes("<script>")) fail(`bob's description shows as ${desc}`);
  const injected = await page.evaluate(() => document.querySelectorAll('[data-testid="services"] img, [data-testid="services"] script').length);
  if (injected) fail(`${injected} element(s) made from a provider's text`);
  if (await page.evaluate(() => window.pwned)) fail("the payload ran");
  ok("bob's description with <img onerror> and <script> markup is shown as inert text");

  // Search, tag, maximum price, mode; the query kept in the address.
  await page.getByTestId("q").fill("stock");
  await shows(["alice/alice-quote"]);
  if (!page.url().includes("q=stock")) fail(`the address does not keep the query: ${page.url()}`);
  await page.getByTestId("search-reset").click();
  await shows(["alice/alice-quote", "bob/bob-weather"]);
  await bob.getByTestId("tag").filter({ hasText: "weather" }).click();
  await shows(["bob/bob-weather"]);
  if ((await page.locator("#tag").inputValue()) !== "weather") fail("the tag filter does not show the tag clicked");
  await page.getByTestId("search-reset").click();
  await shows(["alice/alice-quote", "bob/bob-weather"]);
  await page.getByTestId("max-price").fill("10");
  await shows(["bob/bob-weather"]);
  await page.getByTestId("max-price").fill("");
  await page.getByTestId("mode-filter").selectOption("time_pass");
  await shows([]);
  if ((await page.getByTestId("status").textContent()) !== "No service matches.") fail("no 'no match' message");
  await page.getByTestId("mode-filter").selectOption("per_call");
  await shows(["alice/alice-quote", "bob/bob-weather"]);
  ok("the search box, a tag clicked, a maximum price and a mode narrow the list; the query is in the address");

  // A bad maximum price is refused on the page, nothing asked.
  await page.getByTestId("max-price").fill("lots");
  await until("the max price refused", async () => (await page.getByTestId("error").textContent()).includes("Max price"), 5000);
  await page.getByTestId("max-price").fill("");

  // Opened with a query in its address, the page starts from it.
  await page.goto(`${pub}/directory?tag=finance`);
  await shows(["alice/alice-quote"]);
  if ((await page.locator("#tag").inputValue()) !== "finance") fail("the address's tag is not in the form");
  ok("a link with ?tag=finance opens the page filtered");

  mkdirSync(dirname(screenshot), { recursive: true });
  await page.goto(`${pub}/directory`);
  await shows(["alice/alice-quote", "bob/bob-weather"]);
  await page.screenshot({ path: screenshot, fullPage: true });
  if (await page.evaluate(() => window.pwned)) fail("the payload ran");
  if (problems.length) fail(`the page had problems:\n  ${problems.join("\n  ")}`);
  ok("no console error, no CSP violation, no request outside the hub");
}

try {
  await withBrowser(envDir, chromiumBin, run);
  console.log("catalogue: all expectations held");
} catch (e) {
  console.error(e instanceof Failure ? `FAIL: ${e.message}` : `FAIL: ${e.stack ?? e}`);
  process.exit(1);
}
