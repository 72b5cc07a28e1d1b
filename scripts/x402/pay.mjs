// The official x402 client (@x402/core x402HTTPClient + @x402/evm exact scheme, v2 and v1)
// answers a 402: reads {"headers": {name: value}, "body": <JSON or null>} on stdin (the 402
// response), signs a payment with the payer key, and prints {"headers": {name: value}} (the
// PAYMENT-SIGNATURE or X-PAYMENT header to retry with) and "payload" (the decoded payment).
//
//   node pay.mjs <payer key>
import { x402Client, x402HTTPClient } from "@x402/core/client";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";

const [key] = process.argv.slice(2);
if (!key) {
  console.error("usage: node pay.mjs <payer key> < 402-response.json");
  process.exit(2);
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const response = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const headers = Object.fromEntries(Object.entries(response.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));

const client = new x402Client();
registerExactEvmScheme(client, { signer: privateKeyToAccount(key) });
// 2.27 refuses assets other than its known defaults unless spend controls allow them; the
// local token is one of those. The amount limits are what the test passes in.
client.setSpendControls(false);
const http = new x402HTTPClient(client);

const paymentRequired = http.getPaymentRequiredResponse((name) => headers[name.toLowerCase()], response.body ?? undefined);
const payload = await http.createPaymentPayload(paymentRequired);
console.log(JSON.stringify({ headers: http.encodePaymentSignatureHeader(payload), payload }));
