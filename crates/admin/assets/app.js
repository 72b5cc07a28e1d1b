// Turnpike's dashboard: one page on the admin listener, talking to its JSON API (/api/v1/...).
// No framework, no build step, no outside resource: strict-CSP compatible (no inline script,
// no inline handler, no style attribute). Data goes into the DOM as text only, never as HTML.

import { byTestId, el, fmt } from "./dom.js";

const TOKEN_KEY = "turnpike.admin_token";
const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f7ed8", "#e4572e", "#29a35a", "#9b59b6", "#f0a202", "#17a2b8", "#8d6e63", "#d63384"];
const FORM_KEYS = ["name", "upstream", "host", "path", "description", "tags", "price_sats", "calls_per_payment", "time_pass_secs",
  "token_lifetime_secs", "upstream_timeout_secs", "refund_on_5xx", "allow_encoded_slashes"];
const OPTIONAL_TEXT = ["host", "path", "description"];
const OPTIONAL_NUMBERS = ["calls_per_payment", "time_pass_secs", "token_lifetime_secs"];
const READ_ONLY = ["source"];

const state = {
  token: null,
  timer: null,
  editing: null, // null: editor closed; {} adding; a service: editing it
  confirm: null, // {kind: "revoke"|"delete", id}
  gen: 0, // refreshes started
  rendered: {}, // last JSON rendered per table, to keep focus when nothing changed
  services: [],
  session: null, // {role: "operator"|"provider", provider, hub}
};

// ---------- small DOM helpers ----------

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

const shortId = (hex) => (hex.length > 12 ? `${hex.slice(0, 12)}…` : hex);
const when = (secs) => (secs ? new Date(secs * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–");

function notice(text, isError = false) {
  const n = byTestId("notice");
  n.textContent = text;
  n.classList.toggle("error", isError);
}

// Replaces a table's rows unless the data is the same as last time (keeps focus and selection).
function fillTable(testid, key, rows) {
  if (state.rendered[testid] === key) return;
  state.rendered[testid] = key;
  byTestId(testid).tBodies[0].replaceChildren(...rows);
}

function emptyRow(cols, text) {
  return el("tr", {}, el("td", { colspan: cols, class: "muted", text }));
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(`api/v1${path}`, init);
  } catch (e) {
    throw new ApiError(0, "unreachable", `The gateway did not answer: ${e.message}`);
  }
  const text = await resp.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      throw new ApiError(resp.status, "bad_response", `Not JSON (HTTP ${resp.status}).`);
    }
  }
  if (resp.status === 401) {
    logout("The admin token was refused. Log in again.");
    throw new ApiError(401, "unauthorized", "The admin token was refused.");
  }
  if (!resp.ok) {
    const e = json?.error ?? {};
    throw new ApiError(resp.status, e.code ?? "http_error", e.message ?? `HTTP ${resp.status}`, e.field);
  }
  return json;
}

// ---------- login ----------

async function login(ev) {
  ev.preventDefault();
  const input = byTestId("login-token");
  const err = byTestId("login-error");
  const token = input.value.trim();
  err.textContent = "";
  if (!token) {
    err.textContent = "Enter the admin token.";
    return;
  }
  let resp;
  try {
    resp = await fetch("api/v1/session", { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  } catch (e) {
    err.textContent = `The gateway did not answer: ${e.message}`;
    return;
  }
  if (resp.status === 401) {
    err.textContent = "That token was refused.";
    input.setAttribute("aria-invalid", "true");
    input.select();
    return;
  }
  input.value = "";
  input.removeAttribute("aria-invalid");
  sessionStorage.setItem(TOKEN_KEY, token);
  start(token);
}

async function start(token) {
  state.token = token;
  state.rendered = {};
  try {
    state.session = await api("GET", "/session");
  } catch (e) {
    if (state.token) logout(`Could not open the dashboard: ${e.message}`);
    return;
  }
  applyRole(state.session);
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  byTestId("logout").hidden = false;
  refresh();
}

// Shows the panels of the token's role: a hub provider sees its account and its own services
// and statistics; the operator everything else, and the hub's fees on a hub.
function applyRole(session) {
  const provider = session.role === "provider";
  for (const node of document.querySelectorAll("[data-role]")) {
    const role = node.dataset.role;
    node.hidden = role === "provider" ? !provider : role === "operator-hub" ? provider || !session.hub : provider;
  }
  byTestId("health").hidden = provider;
  const who = byTestId("whoami");
  who.hidden = !provider;
  who.textContent = provider ? `provider: ${session.provider}` : "";
  if (provider && !byTestId("statement-month").value) byTestId("statement-month").value = new Date().toISOString().slice(0, 7);
}

function logout(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.session = null;
  state.hub = null;
  clearTimeout(state.timer);
  state.timer = null;
  closeEditor();
  document.getElementById("app").hidden = true;
  document.getElementById("login").hidden = false;
  byTestId("logout").hidden = true;
  setHealth("unknown", "health: unknown");
  byTestId("login-error").textContent = message;
  byTestId("login-token").focus();
}

// ---------- refresh loop ----------

// One refresh loop: a refresh started while another runs (a filter changed, a save) takes over
// its timer.
async function refresh() {
  clearTimeout(state.timer);
  if (!state.token) return;
  const gen = ++state.gen;
  const loaders = state.session?.role === "provider"
    ? [loadStats(), loadServices(), loadAccount(), loadStatement()]
    : [loadHealth(), loadStats(), loadPayments(), loadServices(), loadTokens(), ...(state.session?.hub ? [loadHub()] : [])];
  const results = await Promise.allSettled(loaders);
  if (!state.token || gen !== state.gen) return; // logged out (401) or a newer refresh runs
  const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
  byTestId("updated").textContent = failed.length
    ? `update failed: ${failed[0]}`
    : `updated ${new Date().toLocaleTimeString("en-GB")}`;
  state.timer = setTimeout(refresh, REFRESH_MS);
}

function setHealth(st, text, title = "") {
  const b = byTestId("health");
  b.dataset.state = st;
  b.textContent = text;
  b.title = title;
}

async function loadHealth() {
  let resp;
  try {
    resp = await fetch("api/v1/health", { headers: { Authorization: `Bearer ${state.token}` }, cache: "no-store" });
  } catch {
    setHealth("down", "unreachable", "The admin listener did not answer.");
    return;
  }
  if (resp.status === 401) {
    logout("The admin token was refused. Log in again.");
    return;
  }
  const h = await resp.json().catch(() => null);
  if (!h) {
    setHealth("down", `health: HTTP ${resp.status}`);
    return;
  }
  const problems = [];
  if (!h.store?.ok) problems.push("store down");
  if (!h.backend?.ok) problems.push(`backend down${h.backend?.error ? `: ${h.backend.error}` : ""}`);
  const detail = `version ${h.version}, store ${h.store?.latency_ms ?? "?"} ms, backend ${h.backend?.kind ?? "?"}`;
  if (resp.ok && problems.length === 0) setHealth("ok", `healthy · v${h.version}`, detail);
  else setHealth("down", problems.join(", ") || `HTTP ${resp.status}`, detail);
}

// ---------- stats: totals, charts, top services ----------

async function loadStats() {
  let s;
  try {
    s = await api("GET", "/stats");
  } catch (e) {
    delete state.rendered.stats;
    const why = el("p", { class: "error", "data-testid": "stats-error", text: `Statistics unavailable: ${e.message}` });
    byTestId("revenue-chart").replaceChildren(why);
    throw e;
  }
  const t = s.totals ?? {};
  byTestId("range").textContent = `(${s.from} to ${s.to})`;
  byTestId("total-earned").textContent = `${fmt(t.earned_sats)} sats`;
  byTestId("total-challenges").textContent = fmt(t.challenges);
  byTestId("total-payments").textContent = fmt(t.payments);
  byTestId("conversion").textContent = t.challenges ? `${Math.round((100 * t.payments) / t.challenges)} %` : "–";
  byTestId("total-calls-served").textContent = fmt(t.calls_served);
  byTestId("total-calls-refunded").textContent = fmt(t.calls_refunded);
  byTestId("total-free-calls").textContent = fmt(t.free_calls);
  byTestId("total-rate-limited").textContent = fmt(t.rate_limited);

  const key = JSON.stringify(s);
  if (state.rendered.stats === key) return;
  state.rendered.stats = key;
  const services = topServices(s.days ?? []);
  renderRevenue(s, services);
  renderCalls(t);
  renderTop(services);
}

// Per service totals, highest revenue first.
function topServices(days) {
  const by = new Map();
  for (const d of days) {
    const e = by.get(d.service) ?? { service: d.service, msat: 0, payments: 0, calls: 0 };
    e.msat += d.earned_msat ?? 0;
    e.payments += d.payments ?? 0;
    e.calls += d.calls_served ?? 0;
    by.set(d.service, e);
  }
  return [...by.values()].sort((a, b) => b.msat - a.msat || b.calls - a.calls || a.service.localeCompare(b.service));
}

function dayRange(from, to) {
  const out = [];
  const end = Date.parse(`${to}T00:00:00Z`);
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= end && out.length < 400; t += 86400000) {
    out.push(new Date(t).toISOString().slice(0, 10));
  }
  return out;
}

// A y axis step for four gridlines reaching at least `v`: 1, 2 or 5 times a power of ten,
// at least 1 (whole sats).
function niceStep(v) {
  const raw = Math.max(v / 4, 1);
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= raw);
}

function renderRevenue(stats, services) {
  const days = dayRange(stats.from, stats.to);
  const color = new Map(services.map((s, i) => [s.service, PALETTE[i % PALETTE.length]]));
  const perDay = new Map(days.map((d) => [d, []]));
  for (const row of stats.days ?? []) {
    if (row.earned_msat > 0 && perDay.has(row.day)) perDay.get(row.day).push(row);
  }
  const totalOf = (rows) => rows.reduce((a, r) => a + r.earned_msat / 1000, 0);
  const max = 4 * niceStep(Math.max(0, ...[...perDay.values()].map(totalOf)));
  const W = 720, H = 240, L = 48, R = 8, T = 10, B = 28;
  const plotW = W - L - R, plotH = H - T - B;
  const slot = plotW / Math.max(days.length, 1);
  const barW = Math.max(2, slot * 0.7);
  const total = services.reduce((a, s) => a + s.msat, 0) / 1000;
  const chart = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", "data-testid": "revenue-svg",
    "aria-label": `Revenue per day from ${stats.from} to ${stats.to}: ${fmt(Math.floor(total))} sats in total`,
  });
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const y = T + plotH - (plotH * i) / 4;
    chart.append(svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: "gridline" }));
    chart.append(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end", class: "axis" }, fmt(v)));
  }
  days.forEach((day, i) => {
    const x = L + i * slot + (slot - barW) / 2;
    let y = T + plotH;
    for (const row of perDay.get(day)) {
      const h = (plotH * row.earned_msat) / 1000 / max;
      y -= h;
      chart.append(svg("rect", {
        x: x.toFixed(1), y: y.toFixed(1), width: barW.toFixed(1), height: Math.max(h, 0.5).toFixed(1),
        fill: color.get(row.service), "data-testid": "revenue-bar", "data-day": day,
        "data-service": row.service, "data-sats": row.earned_sats, "data-msat": row.earned_msat,
      }, svg("title", {}, `${day} · ${row.service}: ${fmt(row.earned_sats)} sats`)));
    }
    if (i % Math.ceil(days.length / 6) === 0 || i === days.length - 1) {
      chart.append(svg("text", { x: (L + i * slot + slot / 2).toFixed(1), y: H - 8, "text-anchor": "middle", class: "axis" }, day.slice(5)));
    }
  });
  if (total === 0) {
    chart.append(svg("text", { x: L + plotW / 2, y: T + plotH / 2, "text-anchor": "middle", class: "empty" }, "No revenue in this period yet"));
  }
  byTestId("revenue-chart").replaceChildren(chart);
  byTestId("revenue-legend").replaceChildren(...services.filter((s) => s.msat > 0).map((s) =>
    el("li", { "data-service": s.service },
      el("span", { class: "swatch", "aria-hidden": "true", "data-color": color.get(s.service) }),
      `${s.service}: ${fmt(Math.floor(s.msat / 1000))} sats`)));
  // Swatch colours through the CSSOM (allowed under a strict CSP, unlike a style attribute).
  for (const sw of byTestId("revenue-legend").querySelectorAll(".swatch")) sw.style.background = sw.dataset.color;
}

function renderCalls(t) {
  const metrics = [
    ["challenges", "402s issued", "m-challenge"],
    ["payments", "Paid", "m-paid"],
    ["calls_served", "Calls served", "m-served"],
    ["calls_refunded", "Refunded", "m-refunded"],
    ["free_calls", "Free calls", "m-free"],
    ["rate_limited", "Rate-limited", "m-limited"],
  ];
  const max = Math.max(1, ...metrics.map(([k]) => t[k] ?? 0));
  const W = 360, row = 30, L = 100, R = 56;
  const chart = svg("svg", {
    viewBox: `0 0 ${W} ${metrics.length * row + 4}`, role: "img", "data-testid": "calls-svg",
    "aria-label": metrics.map(([k, label]) => `${label} ${t[k] ?? 0}`).join(", "),
  });
  metrics.forEach(([k, label, cls], i) => {
    const v = t[k] ?? 0;
    const y = i * row + 4;
    chart.append(svg("text", { x: L - 8, y: y + 16, "text-anchor": "end", class: "axis" }, label));
    chart.append(svg("rect", {
      x: L, y, height: row - 10, width: Math.max(1, ((W - L - R) * v) / max).toFixed(1),
      class: cls, "data-testid": "calls-bar", "data-metric": k, "data-value": v,
    }, svg("title", {}, `${label}: ${fmt(v)}`)));
    chart.append(svg("text", { x: L + ((W - L - R) * v) / max + 6, y: y + 16, class: "axis" }, fmt(v)));
  });
  byTestId("calls-chart").replaceChildren(chart);
}

function renderTop(services) {
  const rows = services.slice(0, 10).map((s) => el("tr", { "data-testid": "top-service-row", "data-service": s.service },
    el("td", { text: s.service }),
    el("td", { class: "num", text: fmt(Math.floor(s.msat / 1000)) }),
    el("td", { class: "num", text: fmt(s.payments) }),
    el("td", { class: "num", text: fmt(s.calls) })));
  fillTable("top-services", JSON.stringify(services), rows.length ? rows : [emptyRow(4, "No activity yet.")]);
}

// ---------- payments ----------

async function loadPayments() {
  const { payments } = await api("GET", "/payments?limit=20");
  const rows = payments.map((p) => el("tr", { "data-testid": "payment-row", "data-token": p.token_id, "data-service": p.service, "data-sats": p.amount_sats },
    el("td", { text: when(p.paid_at) }),
    el("td", { text: p.service }),
    el("td", { class: "num", text: fmt(p.amount_sats) }),
    el("td", {}, el("code", { title: p.token_id, text: shortId(p.token_id) }))));
  fillTable("payments", JSON.stringify(payments), rows.length ? rows : [emptyRow(4, "No payments yet.")]);
}

// ---------- services ----------

async function loadServices() {
  const { services } = await api("GET", "/services");
  state.services = services;
  renderServices();
}

function grant(s) {
  if (s.time_pass_secs) return `${fmt(s.time_pass_secs)} s pass`;
  const n = s.calls_per_payment ?? 1;
  return n === 1 ? "1 call" : `${fmt(n)} calls`;
}

function renderServices() {
  const pending = state.confirm;
  const rows = state.services.map((s) => {
    const confirming = pending?.kind === "delete" && pending.id === s.name;
    const actions = confirming
      ? [el("button", { type: "button", class: "danger", "data-testid": "service-delete-confirm", "aria-label": `Really delete ${s.name}`, text: "Really delete", on: { click: () => deleteService(s.name) } }),
        el("button", { type: "button", class: "quiet", "data-testid": "service-delete-cancel", text: "Keep", on: { click: () => setConfirm(null) } })]
      : [el("button", { type: "button", "data-testid": "service-edit", "aria-label": `Edit ${s.name}`, text: "Edit", on: { click: () => openEditor(s) } }),
        el("button", { type: "button", class: "quiet", "data-testid": "service-delete", "aria-label": `Delete ${s.name}`, text: "Delete", on: { click: () => setConfirm({ kind: "delete", id: s.name }) } })];
    return el("tr", { "data-testid": "service-row", "data-service": s.name },
      el("td", { text: s.name }),
      el("td", { text: [s.host, s.path].filter(Boolean).join(" ") || "everything" }),
      el("td", {}, el("code", { text: s.upstream })),
      el("td", { class: "num", text: s.price_sats === 0 ? "free" : fmt(s.price_sats) }),
      el("td", { text: grant(s) }),
      el("td", { text: s.source ?? "" }),
      el("td", { class: "actions" }, ...actions));
  });
  fillTable("services", JSON.stringify([state.services, pending]), rows.length ? rows : [emptyRow(7, "No services.")]);
}

function setConfirm(c) {
  state.confirm = c;
  renderServices();
  renderTokens();
  renderHub();
  const confirmOf = { delete: "service-delete-confirm", revoke: "token-revoke-confirm", suspend: "provider-suspend-confirm" };
  const sel = c ? confirmOf[c.kind] : null;
  if (sel) byTestId(sel)?.focus();
}

async function deleteService(name) {
  setConfirm(null);
  try {
    await api("DELETE", `/services/${encodeURIComponent(name)}`);
    notice(`Service ${name} deleted.`);
  } catch (e) {
    notice(`Could not delete ${name}: ${e.message}`, true);
  }
  refresh();
}

// ---------- the service editor ----------

const form = () => byTestId("service-form");
const field = (k) => form().elements.namedItem(k);

function clearErrors() {
  byTestId("service-form-error").textContent = "";
  for (const e of form().querySelectorAll("span.error")) e.textContent = "";
  for (const i of form().querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
}

function showFieldError(fieldName, message) {
  // `price_sats`, `headers.X-Api-Key`, `routes[0].path`; a `services[0].` prefix is dropped.
  const key = fieldName.replace(/^services(\[\d+\])?\./, "");
  const root = key.split(/[.[]/)[0];
  const k = FORM_KEYS.includes(root) ? root : "advanced";
  const text = k === root || message.includes(key) ? message : `${key}: ${message}`;
  const span = byTestId(`error-${k}`);
  span.textContent = span.textContent ? `${span.textContent} ${text}` : text;
  field(k).setAttribute("aria-invalid", "true");
  return field(k);
}

// The advanced keys of a service: everything not in the form and not read-only.
function advancedPart(s) {
  const out = {};
  for (const [k, v] of Object.entries(s)) {
    if (!FORM_KEYS.includes(k) && !READ_ONLY.includes(k) && !isEmpty(v)) out[k] = v;
  }
  return out;
}

function openEditor(service) {
  state.editing = service ?? {};
  clearErrors();
  const f = form();
  f.reset();
  const s = service ?? {};
  byTestId("editor-title").textContent = service ? `Edit ${service.name}` : "Add a service";
  for (const k of FORM_KEYS) {
    const input = field(k);
    if (input.type === "checkbox") input.checked = s[k] ?? (k === "refund_on_5xx");
    else input.value = Array.isArray(s[k]) ? s[k].join(", ") : s[k] ?? "";
  }
  field("name").readOnly = Boolean(service);
  const adv = advancedPart(s);
  field("advanced").value = Object.keys(adv).length ? JSON.stringify(adv, null, 2) : "";
  f.hidden = false;
  (service ? field("upstream") : field("name")).focus();
}

function closeEditor() {
  state.editing = null;
  form().hidden = true;
}

// Reads the form into a service object (optional fields left empty are null). Reports input
// errors next to their field and returns null if there are any.
function readForm() {
  const s = {};
  let ok = true;
  for (const k of FORM_KEYS) {
    const input = field(k);
    if (input.type === "checkbox") {
      s[k] = input.checked;
      continue;
    }
    const v = input.value.trim();
    if (k === "tags") {
      // Comma-separated; none is no key (the service's tags removed on an edit).
      const tags = v.split(",").map((t) => t.trim()).filter(Boolean);
      s.tags = tags.length ? tags : null;
    } else if (["price_sats", "upstream_timeout_secs", ...OPTIONAL_NUMBERS].includes(k)) {
      if (v === "") s[k] = k === "price_sats" ? undefined : null;
      else if (/^\d+$/.test(v) && Number.isSafeInteger(Number(v))) s[k] = Number(v);
      else {
        showFieldError(k, "Enter a whole number.");
        ok = false;
      }
    } else {
      s[k] = v === "" && OPTIONAL_TEXT.includes(k) ? null : v;
    }
  }
  if (s.price_sats === undefined) {
    showFieldError("price_sats", "Enter a price (0 for a free service).");
    ok = false;
  }
  if (s.upstream_timeout_secs === null) delete s.upstream_timeout_secs;
  const advText = field("advanced").value.trim();
  if (advText) {
    try {
      const adv = JSON.parse(advText);
      if (typeof adv !== "object" || adv === null || Array.isArray(adv)) throw new Error("expected a JSON object");
      for (const k of Object.keys(adv)) {
        if (FORM_KEYS.includes(k) || READ_ONLY.includes(k)) throw new Error(`set ${k} with its own field`);
      }
      Object.assign(s, adv);
    } catch (e) {
      showFieldError("advanced", `Not valid: ${e.message}.`);
      ok = false;
    }
  }
  return ok ? s : null;
}

const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);
const isEmpty = (v) => v === null || (Array.isArray(v) && !v.length) || (isObject(v) && !Object.keys(v).length);

// The JSON merge patch (RFC 7386) turning `from` into `to`.
function mergePatch(from, to) {
  const patch = {};
  for (const k of Object.keys(from)) if (!(k in to) && from[k] !== null) patch[k] = null;
  for (const [k, v] of Object.entries(to)) {
    const old = from[k] ?? null;
    if (isObject(old) && isObject(v)) {
      const sub = mergePatch(old, v);
      if (Object.keys(sub).length) patch[k] = sub;
    } else if (JSON.stringify(old) !== JSON.stringify(v)) patch[k] = v;
  }
  return patch;
}

async function saveService(ev) {
  ev.preventDefault();
  clearErrors();
  const s = readForm();
  if (!s) return;
  const original = state.editing;
  const adding = !original?.name;
  try {
    if (adding) {
      const body = Object.fromEntries(Object.entries(s).filter(([, v]) => v !== null));
      await api("POST", "/services", body);
    } else {
      // Empty optional keys ([] routes, {} headers) count as absent on both sides.
      const before = Object.fromEntries(Object.entries(original).filter(([k, v]) => !READ_ONLY.includes(k)
        && k !== "name" && !isEmpty(v)));
      const after = { ...s };
      delete after.name;
      const patch = mergePatch(before, after);
      if (Object.keys(patch).length) await api("PATCH", `/services/${encodeURIComponent(original.name)}`, patch);
    }
  } catch (e) {
    if (e.status === 401) return;
    if (e.field) showFieldError(e.field, e.message).focus();
    else if (e.code === "conflict") showFieldError("name", e.message).focus();
    else byTestId("service-form-error").textContent = e.message;
    return;
  }
  closeEditor();
  notice(`Service ${s.name} ${adding ? "added" : "saved"}.`);
  refresh();
}

// ---------- tokens ----------

function tokenQuery() {
  const f = byTestId("token-filters").elements;
  const q = new URLSearchParams({ limit: "50" });
  if (f.service.value.trim()) q.set("service", f.service.value.trim());
  if (f.paid.value) q.set("paid", f.paid.value);
  return q.toString();
}

async function loadTokens() {
  const q = tokenQuery();
  const { tokens, next } = await api("GET", `/tokens?${q}`);
  if (q !== tokenQuery()) return; // the filter changed meanwhile: a newer answer is on its way
  state.tokens = tokens;
  byTestId("tokens-more").textContent = next ? "Showing the newest 50: filter by service or payment to see others." : "";
  renderTokens();
}

function renderTokens() {
  const tokens = state.tokens ?? [];
  const pending = state.confirm;
  const rows = tokens.map((t) => {
    const confirming = pending?.kind === "revoke" && pending.id === t.token_id;
    let actions = [];
    if (!t.revoked) {
      actions = confirming
        ? [el("button", { type: "button", class: "danger", "data-testid": "token-revoke-confirm", "aria-label": `Really revoke token ${t.token_id}`, text: "Really revoke", on: { click: () => revoke(t.token_id) } }),
          el("button", { type: "button", class: "quiet", "data-testid": "token-revoke-cancel", text: "Keep", on: { click: () => setConfirm(null) } })]
        : [el("button", { type: "button", class: "quiet", "data-testid": "token-revoke", "aria-label": `Revoke token ${t.token_id}`, text: "Revoke", on: { click: () => setConfirm({ kind: "revoke", id: t.token_id }) } })];
    }
    const used = t.calls_total == null ? fmt(t.calls_used) : `${fmt(t.calls_used)} / ${fmt(t.calls_total)}`;
    return el("tr", { "data-testid": "token-row", "data-token": t.token_id, "data-service": t.service, "data-revoked": String(Boolean(t.revoked)) },
      el("td", {}, el("code", { title: t.token_id, text: shortId(t.token_id) })),
      el("td", { text: t.service }),
      el("td", { text: t.paid ? `yes (${fmt(Math.floor((t.amount_msat ?? 0) / 1000))} sats)` : "no" }),
      el("td", { class: "num", text: used }),
      el("td", { text: when(t.first_used) }),
      el("td", { text: when(t.last_used) }),
      el("td", {}, el("span", { class: t.revoked ? "tag revoked" : "tag", text: t.revoked ? "revoked" : "active" })),
      el("td", { class: "actions" }, ...actions));
  });
  fillTable("tokens", JSON.stringify([tokens, pending]), rows.length ? rows : [emptyRow(8, "No tokens match.")]);
}

async function revoke(id) {
  setConfirm(null);
  try {
    await api("POST", `/tokens/${encodeURIComponent(id)}/revoke`);
    notice(`Token ${shortId(id)} revoked.`);
  } catch (e) {
    notice(`Could not revoke ${shortId(id)}: ${e.message}`, true);
  }
  refresh();
}

// ---------- hub: a provider's account ----------

const sats = (msat) => `${fmt(Math.floor((msat ?? 0) / 1000))}`;

async function loadAccount() {
  const me = await api("GET", "/hub/me");
  const f = me.fees ?? {};
  byTestId("account-name").textContent = `${me.name} (${me.slug})`;
  const status = byTestId("account-status");
  status.textContent = me.status;
  status.className = `tag ${me.status === "active" ? "ok" : "suspended"}`;
  byTestId("account-suspended").hidden = me.status !== "suspended";
  const now = Date.now() / 1000;
  byTestId("account-trial").textContent = me.trial_ends_at > now
    ? `Free trial (no fee) until ${when(me.trial_ends_at)}`
    : `Trial ended ${when(me.trial_ends_at)}`;
  byTestId("account-payout").textContent = me.payout?.kind === "lightning_address"
    ? `Paid to ${me.payout.address}` : `Paid to ${me.payout?.kind ?? "?"}`;
  byTestId("fees-payments").textContent = fmt(f.payments);
  byTestId("fees-revenue").textContent = sats(f.revenue_msat);
  const msatText = (m) => `${fmt(m ?? 0)} msat`;
  byTestId("fees-accrued").textContent = msatText(f.fees_msat);
  byTestId("fees-owed").textContent = msatText(f.owed_msat);
  byTestId("fees-unbilled").textContent = msatText(f.unbilled_msat);
  byTestId("fees-billed-unpaid").textContent = msatText(f.billed_unpaid_msat);
  byTestId("fees-billed-paid").textContent = msatText(f.billed_paid_msat);
  const bills = me.bills ?? [];
  const rows = bills.map((b) => {
    const overdue = !b.paid_at && b.due_at < now;
    const state_ = b.paid_at ? `paid ${when(b.paid_at)}` : overdue ? "overdue" : "unpaid";
    return el("tr", { "data-testid": "bill-row", "data-paid": String(Boolean(b.paid_at)) },
      el("td", { text: when(b.created_at) }),
      el("td", { class: "num", text: fmt(b.amount_sats) }),
      el("td", { text: when(b.due_at) }),
      el("td", {}, el("span", { class: `tag ${b.paid_at ? "ok" : overdue ? "suspended" : ""}`, text: state_ })),
      el("td", {}, b.paid_at ? "" : el("code", { class: "invoice", "data-testid": "bill-invoice", text: b.invoice })));
  });
  fillTable("bills", JSON.stringify(bills), rows.length ? rows : [emptyRow(5, "No bills yet.")]);
}

async function loadStatement() {
  const month = byTestId("statement-month").value;
  const err = byTestId("statement-error");
  if (!/^\d{4}-\d{2}$/.test(month)) {
    err.textContent = "Choose a month.";
    return;
  }
  let s;
  try {
    s = await api("GET", `/hub/statement?month=${encodeURIComponent(month)}`);
  } catch (e) {
    err.textContent = `Statement unavailable: ${e.message}`;
    throw e;
  }
  if (byTestId("statement-month").value !== month) return; // changed meanwhile
  err.textContent = "";
  const row = s.providers?.[0] ?? { payments: 0, revenue_msat: 0, fees_msat: 0 };
  byTestId("statement").dataset.month = s.month;
  byTestId("statement-payments").textContent = fmt(row.payments);
  byTestId("statement-revenue").textContent = sats(row.revenue_msat);
  byTestId("statement-fees").textContent = `${sats(row.fees_msat)} (${fmt(row.fees_msat)} msat)`;
}

// ---------- hub: the operator's view of fees and providers ----------

async function loadHub() {
  state.hub = await api("GET", "/hub/fees");
  const t = state.hub.totals ?? {};
  byTestId("hub-earned").textContent = sats(t.earned_msat);
  byTestId("hub-owed").textContent = sats(t.owed_msat);
  byTestId("hub-unbilled").textContent = sats(t.unbilled_msat);
  byTestId("hub-billed-unpaid").textContent = sats(t.billed_unpaid_msat);
  byTestId("hub-accrued").textContent = `${sats(t.fees_msat)} (${fmt(t.fees_msat)} msat)`;
  byTestId("hub-revenue").textContent = sats(t.revenue_msat);
  renderHub();
}

function renderHub() {
  if (!state.hub) return;
  const pending = state.confirm;
  const providers = state.hub.providers ?? [];
  const rows = providers.map((p) => {
    const confirming = pending?.kind === "suspend" && pending.id === p.provider;
    let actions = [];
    if (p.status === "active") {
      actions = confirming
        ? [el("button", { type: "button", class: "danger", "data-testid": "provider-suspend-confirm", "aria-label": `Really suspend ${p.provider}`, text: "Really suspend", on: { click: () => setStatus(p.provider, "suspend") } }),
          el("button", { type: "button", class: "quiet", "data-testid": "provider-suspend-cancel", text: "Keep", on: { click: () => setConfirm(null) } })]
        : [el("button", { type: "button", class: "quiet", "data-testid": "provider-suspend", "aria-label": `Suspend ${p.provider}`, text: "Suspend", on: { click: () => setConfirm({ kind: "suspend", id: p.provider }) } })];
    } else if (p.status === "suspended") {
      actions = [el("button", { type: "button", "data-testid": "provider-reinstate", "aria-label": `Reinstate ${p.provider}`, text: "Reinstate", on: { click: () => setStatus(p.provider, "reinstate") } })];
    }
    return el("tr", { "data-testid": "hub-provider-row", "data-provider": p.provider, "data-status": p.status ?? "", "data-fees-msat": p.fees_msat, "data-owed-msat": p.owed_msat },
      el("td", { title: p.name ?? "", text: p.name ? `${p.name} (${p.provider})` : p.provider }),
      el("td", {}, el("span", { class: `tag ${p.status === "active" ? "ok" : "suspended"}`, text: p.status ?? "gone" })),
      el("td", { class: "num", text: fmt(p.payments) }),
      el("td", { class: "num", text: sats(p.revenue_msat) }),
      el("td", { class: "num", title: `${fmt(p.fees_msat)} msat`, text: sats(p.fees_msat) }),
      el("td", { class: "num", text: sats(p.earned_msat) }),
      el("td", { class: "num", title: `${fmt(p.owed_msat)} msat`, text: sats(p.owed_msat) }),
      el("td", { class: "actions" }, ...actions));
  });
  fillTable("hub-providers", JSON.stringify([providers, pending]), rows.length ? rows : [emptyRow(8, "No providers yet.")]);
}

async function setStatus(slug, action) {
  setConfirm(null);
  try {
    await api("POST", `/hub/providers/${encodeURIComponent(slug)}/${action}`);
    notice(`Provider ${slug} ${action === "suspend" ? "suspended" : "reinstated"}.`);
  } catch (e) {
    notice(`Could not ${action} ${slug}: ${e.message}`, true);
  }
  refresh();
}

// ---------- wiring ----------

function init() {
  byTestId("login-form").addEventListener("submit", login);
  byTestId("logout").addEventListener("click", () => logout());
  byTestId("service-add").addEventListener("click", () => openEditor(null));
  byTestId("service-cancel").addEventListener("click", closeEditor);
  form().addEventListener("submit", saveService);
  const statement = byTestId("statement-form");
  statement.addEventListener("submit", (ev) => { ev.preventDefault(); loadStatement().catch(() => {}); });
  statement.addEventListener("change", () => loadStatement().catch(() => {}));
  const filters = byTestId("token-filters");
  filters.addEventListener("submit", (ev) => { ev.preventDefault(); refresh(); });
  filters.addEventListener("change", () => refresh());
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && state.confirm) setConfirm(null);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.token) refresh();
  });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) start(saved);
  else byTestId("login-token").focus();
}

init();
