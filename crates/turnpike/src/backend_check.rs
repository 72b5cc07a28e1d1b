//! `turnpike backend check`: connect to a backend and print what it reports, or a precise error.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use turnpike_lightning::config::{Backend, BackendConfig};
use turnpike_lightning::{BackendError, NodeInfo};

/// Runs the check for the gateway config's backend, or for wallet `wallet`.
pub async fn run(
    config: &Path,
    wallet: Option<&str>,
    wallet_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (what, backend_config) = match wallet {
        Some(name) => (
            format!("wallet {name:?}"),
            crate::wallets::wallet_config(name, wallet_file)?,
        ),
        None => {
            let c = turnpike_gateway::GatewayConfig::load(config)
                .with_context(|| format!("loading {}", config.display()))?;
            (format!("the backend of {}", config.display()), c.backend)
        }
    };
    let backend: Arc<dyn Backend> = match &backend_config {
        BackendConfig::Dev(_) => {
            println!(
                "{what}: kind dev — the embedded dev backend (regtest invoices, no real money); nothing to connect to"
            );
            return Ok(ExitCode::SUCCESS);
        }
        other => other.connect()?,
    };
    match backend.info().await {
        Ok(info) => {
            print_info(&what, &info);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{what} ({}): {}", backend_config.kind(), explain(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_info(what: &str, info: &NodeInfo) {
    println!("{what}: OK");
    println!("  kind:    {}", info.backend);
    if let Some(alias) = &info.alias {
        println!("  alias:   {alias}");
    }
    if let Some(id) = &info.node_id {
        println!("  node id: {id}");
    }
    if let Some(network) = &info.network {
        println!("  network: {network}");
    }
    match info.balance {
        // Whole satoshis rounded down (what can be spent in satoshis), then exact.
        Some(b) => println!("  balance: {} ({b})", b.to_sats_floor()),
        None => println!("  balance: not readable with these credentials"),
    }
}

fn explain(e: &BackendError) -> String {
    match e {
        BackendError::Unreachable(m) => format!("unreachable: {m}"),
        BackendError::Timeout => "no answer in time (is the URL right and the service up?)".into(),
        BackendError::Unauthorized(m) => {
            format!("the credentials were refused (bad key, macaroon, rune or password): {m}")
        }
        other => other.to_string(),
    }
}
