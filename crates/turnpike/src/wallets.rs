//! Wallets for `turnpike fetch --wallet NAME`: `dev` is built in; others come from a wallet file
//! (`--wallet-config`, `$TURNPIKE_WALLETS`, or `~/.config/turnpike/wallets.toml`):
//!
//! ```toml
//! [wallets.alice]
//! kind = "lnbits"
//! url = "http://127.0.0.1:5000"
//! admin_key = { env = "ALICE_LNBITS_ADMIN_KEY" }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Deserialize;
use turnpike_lightning::config::{Backend, BackendConfig};

/// The wallet file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletFile {
    /// Wallets by name.
    #[serde(default)]
    pub wallets: BTreeMap<String, BackendConfig>,
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
    let path = wallet_file_path(explicit).context("no wallet file: pass --wallet-config")?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the wallet file {}", path.display()))?;
    let mut file: WalletFile =
        toml::from_str(&text).with_context(|| format!("invalid wallet file {}", path.display()))?;
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

/// A paying backend for wallet `name`, which must not be `dev`.
pub fn connect(name: &str, explicit: Option<&Path>) -> anyhow::Result<Arc<dyn Backend>> {
    let config = wallet_config(name, explicit)?;
    if matches!(config, BackendConfig::Dev(_)) {
        bail!("wallet {name:?} is of kind dev: use --wallet dev");
    }
    Ok(config.connect()?)
}
