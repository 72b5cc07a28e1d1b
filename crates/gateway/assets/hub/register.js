// The hub's registration page: posts the form as JSON to /_turnpike/hub/register and shows the
// provider's token, or the hub's error next to the form.
"use strict";

const $ = (id) => document.getElementById(id);

const KINDS = ["lightning_address", "lnbits", "nwc", "lnd", "cln", "phoenixd"];

function payout(form) {
  const kind = form.querySelector("input[name=kind]:checked").value;
  const v = (id) => $(id).value.trim();
  switch (kind) {
    case "lnbits":
      return { kind, url: v("url"), invoice_key: v("invoice_key") };
    case "nwc":
      return { kind, uri: v("nwc_uri") };
    case "lnd": {
      const p = { kind, url: v("lnd_url"), macaroon: v("lnd_macaroon") };
      if (v("lnd_tls_cert")) p.tls_cert = v("lnd_tls_cert");
      return p;
    }
    case "cln":
      return { kind, url: v("cln_url"), rune: v("cln_rune") };
    case "phoenixd":
      return { kind, url: v("phoenixd_url"), password: $("phoenixd_password").value };
    default:
      return { kind, address: v("address") };
  }
}

function showKind() {
  const kind = document.querySelector("input[name=kind]:checked").value;
  for (const k of KINDS) $(k).hidden = k !== kind;
}

async function submit(event) {
  event.preventDefault();
  const form = event.target;
  const body = {
    name: $("name").value.trim(),
    slug: $("slug").value.trim(),
    contact: $("contact").value.trim(),
    payout: payout(form),
  };
  $("error").hidden = true;
  $("submit").disabled = true;
  try {
    const resp = await fetch("/_turnpike/hub/register", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await resp.json().catch(() => ({}));
    if (resp.status !== 201) {
      const message = answer.error ? answer.error.message : `The hub answered ${resp.status}.`;
      $("error").textContent = message;
      $("error").hidden = false;
      return;
    }
    $("token").textContent = answer.token;
    form.hidden = true;
    $("done").hidden = false;
  } finally {
    $("submit").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const radio of document.querySelectorAll("input[name=kind]")) {
    radio.addEventListener("change", showKind);
  }
  $("slug").addEventListener("input", () => {
    for (const el of document.querySelectorAll(".slug-echo")) {
      el.textContent = $("slug").value || "slug";
    }
  });
  $("register").addEventListener("submit", submit);
});
