// The hub's public catalogue: one page reading the hub's directory as JSON (`GET /directory`
// with `Accept: application/json`, the same URL as this page) and listing its services with a
// search box, a tag filter, a maximum price and a pricing mode. No framework, no outside
// resource, no inline script or style (strict CSP). Everything a provider wrote (names,
// descriptions, tags) goes into the page as text, never as HTML.
import { byTestId, el, fmt } from "/_turnpike/hub/dom.js";

const PAGE = 20;
const MODES = {
  per_call: "per call",
  bundle: "bundle",
  time_pass: "time pass",
  dynamic_cap: "dynamic, capped",
  unlimited: "unlimited",
};

const form = () => document.getElementById("search");
let offset = 0;
let asked = 0; // searches started: only the latest one's answer is shown
let timer = null;

// Millisatoshis as satoshis: whole when they are, else with the millisatoshis as decimals.
function satsText(msat) {
  const m = Math.max(0, Math.floor(Number(msat) || 0));
  const whole = Math.floor(m / 1000);
  const rest = m % 1000;
  return rest ? `${fmt(whole)}.${String(rest).padStart(3, "0").replace(/0+$/, "")}` : fmt(whole);
}

// A link only to a path on this hub ("/alice/quote"): never another scheme or host.
function hubPath(p) {
  return typeof p === "string" && /^\/(?![/\\])[^\s]*$/.test(p) ? p : null;
}

function duration(secs) {
  if (secs % 86400 === 0) return `${fmt(secs / 86400)} d`;
  if (secs % 3600 === 0) return `${fmt(secs / 3600)} h`;
  if (secs % 60 === 0) return `${fmt(secs / 60)} min`;
  return `${fmt(secs)} s`;
}

// What one payment buys.
function grant(s) {
  if (s.valid_secs && s.calls_per_payment == null) return `a ${duration(s.valid_secs)} pass`;
  const n = s.calls_per_payment ?? 1;
  const calls = n === 1 ? "1 call" : `${fmt(n)} calls`;
  return s.valid_secs ? `${calls} within ${duration(s.valid_secs)}` : calls;
}

// ---------- the query, in the form and in the page's address ----------

function readForm() {
  const f = form().elements;
  const params = new URLSearchParams();
  const q = f.q.value.trim();
  const tag = f.tag.value.trim().toLowerCase();
  const max = f.max_sats.value.trim();
  if (q) params.set("q", q);
  if (tag) params.set("tag", tag);
  if (max) {
    if (!/^\d{1,12}$/.test(max)) return { error: "Max price: a whole number of sats." };
    params.set("max_price_msat", String(Number(max) * 1000));
  }
  if (f.mode.value) params.set("mode", f.mode.value);
  return { params };
}

function fillForm(params) {
  const f = form().elements;
  f.q.value = params.get("q") ?? "";
  f.tag.value = params.get("tag") ?? "";
  const max = params.get("max_price_msat");
  f.max_sats.value = max && /^\d+$/.test(max) ? String(Math.floor(Number(max) / 1000)) : "";
  f.mode.value = MODES[params.get("mode")] ? params.get("mode") : "";
  offset = Math.max(0, Number.parseInt(params.get("offset") ?? "0", 10) || 0);
}

// ---------- fetching and showing ----------

async function search() {
  clearTimeout(timer);
  const { params, error } = readForm();
  byTestId("error").textContent = error ?? "";
  if (error) return;
  const shown = new URLSearchParams(params);
  if (offset) shown.set("offset", String(offset));
  history.replaceState(null, "", shown.toString() ? `?${shown}` : location.pathname);
  params.set("limit", String(PAGE));
  params.set("offset", String(offset));
  const mine = ++asked;
  byTestId("status").textContent = "Searching…";
  let body;
  try {
    const resp = await fetch(`/directory?${params}`, { headers: { Accept: "application/json" }, cache: "no-store" });
    body = await resp.json().catch(() => null);
    if (!resp.ok) throw new Error(body?.error?.message ?? `HTTP ${resp.status}`);
    if (!body || !Array.isArray(body.services)) throw new Error("the directory's answer is not a list of services");
  } catch (e) {
    if (mine !== asked) return;
    byTestId("status").textContent = "";
    byTestId("error").textContent = `The directory did not answer: ${e.message}`;
    return;
  }
  if (mine !== asked) return; // a newer search is on its way
  show(body);
}

function show(body) {
  const total = Number(body.total) || 0;
  const list = byTestId("services");
  list.replaceChildren(...body.services.map(card));
  const first = total ? offset + 1 : 0;
  const last = offset + body.services.length;
  byTestId("status").textContent = total
    ? `${fmt(total)} service${total === 1 ? "" : "s"}${total > body.services.length ? `, ${fmt(first)} to ${fmt(last)}` : ""}`
    : "No service matches.";
  list.dataset.total = String(total);
  byTestId("prev").hidden = offset === 0;
  byTestId("next").hidden = last >= total;
}

function healthBadge(h) {
  const status = ["up", "down"].includes(h?.status) ? h.status : "unknown";
  const parts = [status];
  if (typeof h?.uptime_pct === "number") parts.push(`${h.uptime_pct.toFixed(1)} % up (24 h)`);
  const badge = el("span", { class: "badge", "data-testid": "health", "data-status": status, text: parts.join(" · ") });
  const details = [];
  if (typeof h?.success_rate === "number") details.push(`${(h.success_rate * 100).toFixed(1)} % calls succeed`);
  if (typeof h?.median_latency_ms === "number") details.push(`median ${fmt(h.median_latency_ms)} ms`);
  if (typeof h?.calls_24h === "number") details.push(`${fmt(h.calls_24h)} call${h.calls_24h === 1 ? "" : "s"} in 24 h`);
  if (h?.checked_at) details.push(`checked ${h.checked_at}`);
  badge.title = details.join(", ");
  return [badge, details.length ? el("span", { "data-testid": "health-details", text: details.join(" · ") }) : null];
}

function card(s) {
  const provider = s.provider ?? {};
  const title = [s.service, s.route].filter(Boolean).join(" / ");
  const link = hubPath(s.path);
  const price = el("span", { class: "price", "data-testid": "price", "data-amount-msat": s.amount_msat, text: `${satsText(s.amount_msat)} sats` });
  const fee = Number(s.amount_msat) - Number(s.price_msat);
  const priceNote = fee > 0
    ? `for ${grant(s)} (the provider's ${satsText(s.price_msat)} sats + ${satsText(fee)} hub fee)`
    : `for ${grant(s)}`;
  const tags = (Array.isArray(s.tags) ? s.tags : []).map((t) => el("button", {
    type: "button", class: "tag", "data-testid": "tag", "data-tag": t, text: t,
    "aria-label": `Show services tagged ${t}`,
    on: { click: () => { form().elements.tag.value = String(t); offset = 0; search(); } },
  }));
  const docs = [["OpenAPI", s.openapi], ["l402.json", s.catalogue]]
    .map(([label, p]) => (hubPath(p) ? el("a", { href: hubPath(p), text: label }) : null))
    .filter(Boolean);
  return el("li", { class: "service", "data-testid": "service", "data-id": s.id, "data-mode": s.mode },
    el("div", { class: "head" },
      el("h2", {}, el("span", { "data-testid": "service-name", text: title }),
        " ", el("span", { class: "muted", "data-testid": "provider", text: `by ${provider.name ?? provider.slug ?? "?"}` })),
      el("span", {}, price, " ", el("span", { class: "muted", text: priceNote }))),
    s.description ? el("p", { class: "desc", "data-testid": "description", text: s.description }) : null,
    el("div", { class: "meta" },
      ...healthBadge(s.health),
      el("span", { "data-testid": "mode", text: MODES[s.mode] ?? String(s.mode ?? "") }),
      provider.suspended ? el("span", { class: "badge suspended", "data-testid": "suspended", text: "suspended: no new payments" }) : null,
      el("span", {}, `${s.method ?? "any method"} `, link ? el("a", { href: link, "data-testid": "path", text: link }) : el("code", { text: String(s.path ?? "") })),
      s.host_url ? el("code", { "data-testid": "host-url", text: s.host_url }) : null,
      ...docs),
    tags.length ? el("div", { class: "tags" }, ...tags) : null);
}

// ---------- wiring ----------

function init() {
  const f = form();
  fillForm(new URLSearchParams(location.search));
  f.addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; search(); });
  f.addEventListener("reset", () => { setTimeout(() => { offset = 0; search(); }, 0); });
  f.elements.mode.addEventListener("change", () => { offset = 0; search(); });
  for (const name of ["q", "tag", "max_sats"]) {
    f.elements[name].addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { offset = 0; search(); }, 300);
    });
  }
  byTestId("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); search(); });
  byTestId("next").addEventListener("click", () => { offset += PAGE; search(); });
  search();
}

init();
