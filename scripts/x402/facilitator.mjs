// A real x402 facilitator for tests: @x402/core's x402Facilitator with @x402/evm's exact EVM
// scheme (v2 and v1), settling on the local anvil chain with anvil's key #0. Loopback only.
//
//   node facilitator.mjs <port> <rpc url> <facilitator key> <network, e.g. eip155:84532>
//
// POST /verify and POST /settle take {"x402Version", "paymentPayload", "paymentRequirements"};
// GET /supported lists the kinds; GET /health answers {"ok": true}.
import { createServer } from "node:http";
import { x402Facilitator } from "@x402/core/facilitator";
import { toFacilitatorEvmSigner } from "@x402/evm";
import { registerExactEvmScheme } from "@x402/evm/exact/facilitator";
import { createWalletClient, http, publicActions } from "viem";
import { privateKeyToAccount } from "viem/accounts";

const [port, rpcUrl, key, network] = process.argv.slice(2);
if (!network) {
  console.error("usage: node facilitator.mjs <port> <rpc url> <facilitator key> <network>");
  process.exit(2);
}

const account = privateKeyToAccount(key);
const client = createWalletClient({ account, transport: http(rpcUrl, { timeout: 10_000 }) }).extend(publicActions);
const chainId = await client.getChainId();
if (`eip155:${chainId}` !== network) throw new Error(`the chain at ${rpcUrl} is eip155:${chainId}, not ${network}`);
const chain = { id: chainId, name: "anvil", nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 }, rpcUrls: { default: { http: [rpcUrl] } } };

const signer = toFacilitatorEvmSigner(
  {
    address: account.address,
    getCode: (args) => client.getCode(args),
    readContract: (args) => client.readContract(args),
    verifyTypedData: (args) => client.verifyTypedData(args),
    writeContract: (args) => client.writeContract({ ...args, chain }),
    sendTransaction: (args) => client.sendTransaction({ ...args, chain }),
    waitForTransactionReceipt: (args) => client.waitForTransactionReceipt({ timeout: 30_000, ...args }),
  },
  { confirmationTimeoutMs: 30_000 },
);
const facilitator = new x402Facilitator();
registerExactEvmScheme(facilitator, { signer, networks: network });

const MAX_BODY = 64 * 1024;

function send(res, status, body) {
  const text = JSON.stringify(body, (_, v) => (typeof v === "bigint" ? v.toString() : v));
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Error("body too large");
    chunks.push(chunk);
  }
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

const server = createServer(async (req, res) => {
  try {
    if (req.method === "GET" && req.url === "/health") return send(res, 200, { ok: true });
    if (req.method === "GET" && req.url === "/supported") return send(res, 200, facilitator.getSupported());
    if (req.method === "POST" && (req.url === "/verify" || req.url === "/settle")) {
      const { paymentPayload, paymentRequirements } = await readJson(req);
      const result =
        req.url === "/verify"
          ? await facilitator.verify(paymentPayload, paymentRequirements)
          : await facilitator.settle(paymentPayload, paymentRequirements);
      console.log(`${req.url} -> ${JSON.stringify(result)}`);
      return send(res, 200, result);
    }
    send(res, 404, { error: "not found" });
  } catch (e) {
    console.error(`${req.method} ${req.url}: ${e?.stack ?? e}`);
    send(res, 400, { error: String(e?.message ?? e) });
  }
});
server.requestTimeout = 60_000;
server.listen(Number(port), "127.0.0.1", () => console.log(`facilitator for ${network} on 127.0.0.1:${port}, signer ${account.address}`));
// Nothing to flush: exit at once rather than wait for idle keep-alive connections.
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
