// What the browser tests share: Debian's chromium driven by npm playwright-core (resolved from
// the env folder), and a watch on a page that records every problem: a request leaving the
// page's origin (refused), an error answer not in the expected set, a console or page error.

import { createRequire } from "node:module";

export class Failure extends Error {}
export const fail = (msg) => { throw new Failure(msg); };

// Runs `run(browser)` in a headless chromium, closed afterwards.
export async function withBrowser(envDir, chromiumBin, run) {
  const require = createRequire(`${envDir}/`);
  let chromium;
  try {
    ({ chromium } = require("playwright-core"));
  } catch (e) {
    fail(`playwright-core is not installed in ${envDir} (run scripts/dashboard-env.sh install): ${e.message}`);
  }
  const browser = await chromium.launch({
    executablePath: chromiumBin,
    headless: true,
    // Root in a container has no user namespace for the sandbox.
    args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
  });
  try {
    await run(browser);
  } finally {
    await browser.close();
  }
}

// Watches `page` of `context`: the problems seen, filled as they happen. `expected` holds the
// error answers provoked on purpose, as "METHOD /path STATUS"; the browser's own favicon
// request is not the page's.
export async function watch(context, page, origin, expected) {
  const problems = [];
  await context.route("**/*", (route) => {
    const u = route.request().url();
    if (new URL(u).origin === origin) return route.continue();
    problems.push(`request outside the page's origin: ${u}`);
    return route.abort();
  });
  page.on("response", (r) => {
    const u = new URL(r.url());
    const key = `${r.request().method()} ${u.pathname} ${r.status()}`;
    if (r.status() >= 400 && u.pathname !== "/favicon.ico" && !expected.has(key)) problems.push(`error answer: ${key}`);
  });
  page.on("console", (m) => {
    // A failed load is logged too, without its URL: the answers are checked above.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`console error: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  return problems;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `probe` (returning a truthy value when satisfied) until `ms` have passed: its value.
export async function until(what, probe, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) fail(`${what}: not seen within ${ms / 1000} s${last ? ` (last error: ${last.message})` : ""}`);
    await sleep(250);
  }
}

// `--key value` pairs into an object; `usage(message)` (which exits) on a stray word or a
// missing `required` key.
export function parseArgs(argv, required, usage) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || i + 1 >= argv.length) usage(`bad argument ${argv[i]}`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  for (const k of required) if (!out[k]) usage(`--${k} is required`);
  return out;
}
