// A paid API built with the official x402 server middleware (@x402/express 2.27.0, express 5)
// and @x402/evm's exact scheme, verifying and settling through the test facilitator. Loopback
// only. GET /weather costs <amount> base units of <token>, paid to <payTo>; it answers
// {"weather": "sunny"}. Prints {"port": N} on its first line once it listens.
//
//   node express.mjs <facilitator url> <network> <token> <token name> <token version> <payTo> <amount>
import express from "express";
import { paymentMiddleware, x402ResourceServer } from "@x402/express";
import { ExactEvmScheme } from "@x402/evm/exact/server";
import { HTTPFacilitatorClient } from "@x402/core/server";

const [facilitatorUrl, network, token, name, version, payTo, amount] = process.argv.slice(2);
if (!amount) {
  console.error("usage: node express.mjs <facilitator url> <network> <token> <name> <version> <payTo> <amount>");
  process.exit(2);
}

const server = new x402ResourceServer(new HTTPFacilitatorClient({ url: facilitatorUrl })).register(
  network,
  new ExactEvmScheme(),
);
const app = express();
app.use(
  paymentMiddleware(
    {
      "GET /weather": {
        accepts: {
          scheme: "exact",
          // The local token is not one of the middleware's default assets: give it in full.
          price: { amount, asset: token, extra: { name, version } },
          network,
          payTo,
          maxTimeoutSeconds: 120,
        },
        description: "Today's weather",
        mimeType: "application/json",
      },
    },
    server,
  ),
);
app.get("/weather", (_req, res) => res.json({ weather: "sunny" }));

const listener = app.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ port: listener.address().port }));
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
