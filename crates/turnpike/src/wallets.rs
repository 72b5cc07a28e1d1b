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
//! [mcp]
//! allow_hosts = ["127.0.0.1"]   # hosts `turnpike mcp` may reach on private addresses
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Deserialize;
use turnpike_client::budget::Budget;
use turnpike_lightning::config::{Backend, BackendConfig};

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

/// One wallet: its backend, its budget and its fee reserve.
#[derive(Debug, Clone, Deserialize)]
pub struct WalletEntry {
    /// The budget (no limits when absent).
    #[serde(default)]
    pub budget: Budget,
    /// The most fee one payment may cost, sats (default 10; a dev wallet: 0).
    #[serde(default)]
    pub max_fee_sats: Option<u64>,
    /// The backend.
    #[serde(flatten)]
    pub backend: BackendConfig,
}

impl WalletEntry {
    /// The fee reserved per payment: none for a dev wallet (it pays no fee).
    pub fn max_fee_sats(&self) -> u64 {
        match self.backend {
            BackendConfig::Dev(_) => 0,
            _ => self.max_fee_sats.unwrap_or(DEFAULT_MAX_FEE_SATS),
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

/// The configuration of wallet `name` from the wallet file.
pub fn wallet_config(name: &str, explicit: Option<&Path>) -> anyhow::Result<BackendConfig> {
    Ok(wallet_entry(name, explicit)?.backend)
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
                backend: BackendConfig::Dev(Default::default()),
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
    if matches!(entry.backend, BackendConfig::Dev(_)) {
        bail!("wallet {name:?} is of kind dev: it pays through the gateway it calls");
    }
    Ok(entry.backend.connect()?)
}
