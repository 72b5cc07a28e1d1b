//! Wallets for `turnpike fetch --wallet NAME`: `dev` is built in; others come from a wallet file
//! (`--wallet-config`, `$TURNPIKE_WALLETS`, or `~/.config/turnpike/wallets.toml`):
//!
//! ```toml
//! [wallets.alice]
//! kind = "lnbits"
//! url = "http://127.0.0.1:5000"
//! admin_key = { env = "ALICE_LNBITS_ADMIN_KEY" }
//! max_fee_sats = 10            # fee reserved per payment (default 10; a dev wallet: 0)
//!
//! [wallets.alice.budget]
//! max_per_call = 100
//! per_host = { sats = 500, per = "day" }
//! per_period = { sats = 2000, per = "day" }
//! total = 10000
//! approve_above = 200
//!
//! # x402 (optional): pay stablecoin 402s from an EVM key, within budgets per asset. A wallet
//! without `kind` and with this table pays x402 only.
//! [wallets.alice.x402]
//! evm_key = { env = "ALICE_EVM_KEY" }   # 0x + 64 hex; inline, { env } or { file }; never shown
//! prefer = "l402"                      # rail first tried when a 402 offers both (or "x402")
//!
//! [[wallets.alice.x402.assets]]        # what it pays with, first preferred
//! network = "eip155:8453"              # CAIP-2
//! asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"   # USDC on Base
//! decimals = 6                         # for display (default 6)
//! rpc_url = "https://mainnet.base.org" # optional: resolves payments of unknown outcome
//! budget = { max_per_call = 100000, per_period = { units = 1000000, per = "day" }, approve_above = 50000 }
//!
//! [mcp]
//! allow_hosts = ["127.0.0.1"]   # hosts `turnpike mcp` may reach on private addresses
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Deserialize;
use turnpike_client::budget::{Budget, TokenBudget};
use turnpike_client::x402pay::{PayableAsset, Rail, X402Wallet};
use turnpike_lightning::config::{Backend, BackendConfig};
use turnpike_lightning::secret::SecretSource;

/// Default fee reserved per payment, sats (a dev wallet reserves none).
pub const DEFAULT_MAX_FEE_SATS: u64 = 10;

/// The wallet file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletFile {
    /// Wallets by name.
    #[serde(default)]
    pub wallets: BTreeMap<String, WalletEntry>,
    /// Settings of `turnpike mcp`.
    #[serde(default)]
    pub mcp: McpSettings,
}

/// The `[mcp]` table of the wallet file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpSettings {
    /// Hosts the MCP tools may reach even when they resolve to private, loopback or
    /// link-local addresses (as `--allow-host`).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
}

/// One wallet: its Lightning backend (none for a wallet that only pays x402: no `kind`, an
/// `[x402]` table), its budget and its fee reserve.
#[derive(Debug, Clone)]
pub struct WalletEntry {
    /// The budget (no limits when absent).
    pub budget: Budget,
    /// The most fee one payment may cost, sats (default 10; a dev wallet: 0).
    pub max_fee_sats: Option<u64>,
    /// Paying x402 challenges (none when absent).
    pub x402: Option<X402Settings>,
    /// The Lightning backend; `None` for an x402-only wallet.
    pub backend: Option<BackendConfig>,
}

impl<'de> Deserialize<'de> for WalletEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WalletEntry, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            budget: Budget,
            #[serde(default)]
            max_fee_sats: Option<u64>,
            #[serde(default)]
            x402: Option<X402Settings>,
            #[serde(flatten)]
            backend: toml::Table,
        }
        let raw = Raw::deserialize(d)?;
        let backend = if raw.backend.is_empty() && raw.x402.is_some() {
            None
        } else {
            let table = toml::Value::Table(raw.backend);
            Some(BackendConfig::deserialize(table).map_err(serde::de::Error::custom)?)
        };
        Ok(WalletEntry {
            budget: raw.budget,
            max_fee_sats: raw.max_fee_sats,
            x402: raw.x402,
            backend,
        })
    }
}

/// The `[wallets.NAME.x402]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X402Settings {
    /// The EVM private key (a secret: inline, `{ env }` or `{ file }`).
    pub evm_key: SecretSource,
    /// The rail tried first when a 402 offers both (default `l402`).
    #[serde(default)]
    pub prefer: Rail,
    /// The assets it pays with, first preferred.
    #[serde(default)]
    pub assets: Vec<AssetSettings>,
}

/// One `[[wallets.NAME.x402.assets]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetSettings {
    /// CAIP-2 network, `eip155:<chain id>`.
    pub network: String,
    /// The token contract's address.
    pub asset: String,
    /// The token's decimals (default 6), for display.
    #[serde(default = "six")]
    pub decimals: u8,
    /// A JSON-RPC endpoint of the chain, to resolve payments whose outcome is unknown.
    #[serde(default)]
    pub rpc_url: Option<String>,
    /// Limits in base units.
    #[serde(default)]
    pub budget: TokenBudget,
}

fn six() -> u8 {
    6
}

impl WalletEntry {
    /// The rail tried first when a 402 offers both.
    pub fn prefer(&self) -> Rail {
        self.x402.as_ref().map_or(Rail::L402, |x| x.prefer)
    }

    /// The x402 side of wallet `name`, its key read now (from wherever the file says).
    pub fn x402_wallet(&self, name: &str) -> anyhow::Result<Option<X402Wallet>> {
        let Some(x) = &self.x402 else {
            return Ok(None);
        };
        let at = format!("wallets.{name}.x402");
        let secret = x
            .evm_key
            .resolve()
            .with_context(|| format!("{at}.evm_key"))?;
        let key = turnpike_x402::PayerKey::from_hex(secret.expose())
            .with_context(|| format!("{at}.evm_key"))?;
        let mut assets = Vec::new();
        for (i, a) in x.assets.iter().enumerate() {
            let at = format!("{at}.assets[{i}]");
            if a.budget.max_per_call.is_none() {
                bail!(
                    "{at}.budget.max_per_call is required: the most one x402 payment may cost, \
                     in the asset's base units (10000 = 0.01 USDC)"
                );
            }
            assets.push(PayableAsset {
                network: turnpike_x402::Network::parse_caip2(&a.network)
                    .with_context(|| format!("{at}.network"))?,
                asset: turnpike_x402::parse_address(&a.asset)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("{at}.asset"))?,
                decimals: a.decimals,
                budget: a.budget,
                rpc_url: a
                    .rpc_url
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .with_context(|| format!("{at}.rpc_url"))?,
            });
        }
        if assets.is_empty() {
            bail!("{at}.assets: list at least one asset the wallet pays with");
        }
        Ok(Some(X402Wallet::new(key, assets)?))
    }

    /// The fee reserved per payment: none for a dev wallet (it pays no fee) or one without
    /// Lightning.
    pub fn max_fee_sats(&self) -> u64 {
        match self.backend {
            Some(BackendConfig::Dev(_)) | None => 0,
            Some(_) => self.max_fee_sats.unwrap_or(DEFAULT_MAX_FEE_SATS),
        }
    }
}

/// Where the wallet file is looked for.
pub fn wallet_file_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os("TURNPIKE_WALLETS") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/turnpike/wallets.toml"))
}

/// The Lightning configuration of wallet `name` from the wallet file.
pub fn wallet_config(name: &str, explicit: Option<&Path>) -> anyhow::Result<BackendConfig> {
    wallet_entry(name, explicit)?
        .backend
        .with_context(|| format!("wallet {name:?} has no Lightning backend (it pays x402 only)"))
}

/// Reads the wallet file.
pub fn read_wallet_file(explicit: Option<&Path>) -> anyhow::Result<(PathBuf, WalletFile)> {
    let path = wallet_file_path(explicit).context("no wallet file: pass --wallet-config")?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the wallet file {}", path.display()))?;
    let file: WalletFile =
        toml::from_str(&text).with_context(|| format!("invalid wallet file {}", path.display()))?;
    Ok((path, file))
}

/// Wallet `name` of the wallet file; for `dev`, a dev wallet with no budget when the file
/// has none of that name (or there is no file).
pub fn wallet_entry(name: &str, explicit: Option<&Path>) -> anyhow::Result<WalletEntry> {
    let found = read_wallet_file(explicit);
    if name == "dev" {
        let entry = found
            .ok()
            .and_then(|(_, mut f)| f.wallets.remove("dev"))
            .unwrap_or(WalletEntry {
                budget: Budget::default(),
                max_fee_sats: None,
                x402: None,
                backend: Some(BackendConfig::Dev(Default::default())),
            });
        return Ok(entry);
    }
    let (path, mut file) = found?;
    match file.wallets.remove(name) {
        Some(c) => Ok(c),
        None => {
            let known: Vec<&str> = file.wallets.keys().map(String::as_str).collect();
            bail!(
                "no wallet {name:?} in {} (it has: {})",
                path.display(),
                known.join(", ")
            )
        }
    }
}

/// A paying backend for a wallet entry that is not of kind dev.
pub fn connect_entry(name: &str, entry: &WalletEntry) -> anyhow::Result<Arc<dyn Backend>> {
    match &entry.backend {
        Some(BackendConfig::Dev(_)) => {
            bail!("wallet {name:?} is of kind dev: it pays through the gateway it calls")
        }
        Some(b) => Ok(b.connect()?),
        None => bail!("wallet {name:?} has no Lightning backend (it pays x402 only)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

    fn entry(x402: &str) -> WalletEntry {
        let file: WalletFile =
            toml::from_str(&format!("[wallets.a]\nkind = \"dev\"\n{x402}")).unwrap();
        file.wallets["a"].clone()
    }

    fn error(x402: &str) -> String {
        format!("{:#}", entry(x402).x402_wallet("a").unwrap_err())
    }

    #[test]
    fn the_x402_table_gives_a_wallet_and_its_errors_name_the_key() {
        let asset =
            "network = \"eip155:8453\"\nasset = \"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913\"";
        let good = format!(
            "[wallets.a.x402]\nevm_key = \"{KEY}\"\nprefer = \"x402\"\n\
             [[wallets.a.x402.assets]]\n{asset}\nbudget = {{ max_per_call = 10000 }}\n"
        );
        let e = entry(&good);
        assert_eq!(e.prefer(), Rail::X402);
        let w = e.x402_wallet("a").unwrap().unwrap();
        assert_eq!(
            w.address().to_checksum(None),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        );
        assert_eq!(w.assets()[0].decimals, 6);
        // The key never shows, not even in the wallet's Debug.
        assert!(!format!("{e:?} {w:?}").contains(&KEY[2..]));
        assert_eq!(entry("").prefer(), Rail::L402);
        assert!(entry("").x402_wallet("a").unwrap().is_none());

        let no_cap = good.replace("budget = { max_per_call = 10000 }", "");
        assert!(error(&no_cap).contains("wallets.a.x402.assets[0].budget.max_per_call"));
        let bad_key = good.replace(KEY, "0x1234");
        let text = error(&bad_key);
        assert!(text.contains("wallets.a.x402.evm_key"), "{text}");
        assert!(!text.contains("1234"), "{text}");
        let unset = good.replace(&format!("\"{KEY}\""), "{ env = \"TURNPIKE_SURELY_UNSET\" }");
        assert!(error(&unset).contains("TURNPIKE_SURELY_UNSET"));
        assert!(error(&good.replace("eip155:8453", "solana:x")).contains("assets[0].network"));
        let mixed = good.replace("0x833589fCD6", "0x833589fcD6");
        assert!(error(&mixed).contains("assets[0].asset"));
        let none = format!("[wallets.a.x402]\nevm_key = \"{KEY}\"\n");
        assert!(error(&none).contains("wallets.a.x402.assets"));
        // Without `kind`: a wallet that pays x402 only; without either, an error.
        let file: WalletFile = toml::from_str(
            &good
                .replace("wallets.a.", "wallets.b.")
                .replace("[wallets.b.x402]", "[wallets.b]\n[wallets.b.x402]"),
        )
        .unwrap();
        let b = &file.wallets["b"];
        assert!(b.backend.is_none() && b.x402_wallet("b").unwrap().is_some());
        assert_eq!(b.max_fee_sats(), 0);
        assert!(
            toml::from_str::<WalletFile>("[wallets.c]\nmax_fee_sats = 1\n")
                .is_err_and(|e| e.to_string().contains("kind"))
        );
        let e = toml::from_str::<WalletFile>("[wallets.c]\nkind = \"lnbits\"\nbogus = 1\n")
            .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(
            toml::from_str::<WalletFile>(&format!("{good}bogus = 1\n"))
                .is_err_and(|e| e.to_string().contains("bogus"))
        );
    }
}
