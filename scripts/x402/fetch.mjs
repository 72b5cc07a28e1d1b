// The official x402 fetch client (@x402/fetch 2.27.0 wrapping the global fetch, with the
// @x402/evm exact scheme) gets a URL, paying a 402 from the payer key: prints {"status",
// "body", "payment_response" (the decoded PAYMENT-RESPONSE, or null), "credential" (the
// Turnpike-Credential header, or null)}.
//
//   node fetch.mjs <payer key> <url> [v1]
//
// With "v1" the client answers only x402 v1 (the JSON body, X-PAYMENT): the PAYMENT-REQUIRED
// header is hidden from it.
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";

const [key, url, mode] = process.argv.slice(2);
if (!key || !url) {
  console.error("usage: node fetch.mjs <payer key> <url> [v1]");
  process.exit(2);
}

const client = new x402Client();
registerExactEvmScheme(client, { signer: privateKeyToAccount(key) });
// 2.27 refuses assets other than its known defaults unless spend controls allow them; the
// local token is not one of them.
client.setSpendControls(false);

// For v1, a fetch whose 402 answers lack PAYMENT-REQUIRED (so the client reads the v1 body).
const v1Fetch = async (input, init) => {
  const response = await fetch(input, init);
  if (response.status !== 402) return response;
  const headers = new Headers(response.headers);
  headers.delete("payment-required");
  return new Response(await response.text(), { status: 402, headers });
};
const paying = wrapFetchWithPayment(mode === "v1" ? v1Fetch : fetch, client);

const response = await paying(url);
const body = await response.text();
const settle = response.headers.get("payment-response") ?? response.headers.get("x-payment-response");
console.log(
  JSON.stringify({
    status: response.status,
    body,
    payment_response: settle ? decodePaymentResponseHeader(settle) : null,
    credential: response.headers.get("turnpike-credential"),
  }),
);
