// DOM helpers shared by Turnpike's pages (the admin dashboard, the hub's catalogue): nodes are
// built with their text set as text, never parsed as HTML, and no inline handler or style
// (strict-CSP compatible).

// The element marked `data-testid="<id>"` under `root`.
export const byTestId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

// A `tag` element: `attrs` are attributes (`text`: its text; `on`: event listeners; null,
// undefined and false left out), then its children (nodes or text; null and undefined skipped).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = String(v);
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// A whole number with thousands separators.
export const fmt = (n) => Number(n ?? 0).toLocaleString("en-US");
