//! Choosing a backend in configuration: `kind = "lnbits" | "lnd" | "cln" | "phoenixd" | "nwc" |
//! "dev"`
//! plus that backend's keys, in the gateway's `[backend]` and in a client's wallet file.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use crate::cln::{ClnBackend, ClnConfig};
use crate::lnbits::{LnbitsBackend, LnbitsConfig};
use crate::lnd::{LndBackend, LndConfig};
use crate::nwc::{NwcBackend, NwcConfig};
use crate::phoenixd::{PhoenixdBackend, PhoenixdConfig};
use crate::{Diagnose, InvoiceBackend, NodeInfo, PaymentBackend};

/// A Lightning backend that can issue invoices, pay, and describe itself.
pub trait Backend: InvoiceBackend + PaymentBackend + Diagnose {}

impl<T: InvoiceBackend + PaymentBackend + Diagnose> Backend for T {}

/// A backend selected by `kind`, with its options.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackendConfig {
    /// The embedded dev backend (no real money): inside the gateway; for a client, the dev
    /// pay endpoint of the gateway being called.
    Dev(DevConfig),
    /// An LNbits wallet (REST, `X-Api-Key`).
    Lnbits(LnbitsConfig),
    /// An LND node (REST, macaroon, pinned TLS certificate).
    Lnd(LndConfig),
    /// A Core Lightning node through clnrest (`Rune`).
    Cln(ClnConfig),
    /// A phoenixd wallet (HTTP basic auth).
    Phoenixd(PhoenixdConfig),
    /// A wallet reached with Nostr Wallet Connect (NIP-47), from a `nostr+walletconnect://` URI.
    Nwc(NwcConfig),
}

/// Options of the dev backend.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevConfig {
    /// Most unpaid invoices held in memory at once (default
    /// [`crate::dev::DEFAULT_MAX_UNPAID`]); past it, new challenges get `503`.
    #[serde(default)]
    pub max_unpaid: Option<usize>,
}

/// A backend could not be set up from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} backend configuration: {message}")]
pub struct ConnectError {
    /// The backend kind.
    pub kind: &'static str,
    /// What is wrong.
    pub message: String,
}

impl BackendConfig {
    /// The `kind` value.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Dev(_) => "dev",
            BackendConfig::Lnbits(_) => "lnbits",
            BackendConfig::Lnd(_) => "lnd",
            BackendConfig::Cln(_) => "cln",
            BackendConfig::Phoenixd(_) => "phoenixd",
            BackendConfig::Nwc(_) => "nwc",
        }
    }

    /// Builds a real backend (secrets resolved now). The dev backend is not built here: it lives
    /// inside the gateway (see [`crate::dev::DevBackend`]) or, for a client, is the dev pay
    /// endpoint of a gateway ([`crate::dev_wallet::DevPayWallet`]).
    pub fn connect(&self) -> Result<Arc<dyn Backend>, ConnectError> {
        let kind = self.kind();
        let err = |message: String| ConnectError { kind, message };
        Ok(match self {
            BackendConfig::Dev(_) => {
                return Err(err(
                    "the dev backend is built by the gateway or the client".into()
                ));
            }
            BackendConfig::Lnbits(c) => {
                Arc::new(LnbitsBackend::new(c).map_err(|e| err(e.to_string()))?)
            }
            BackendConfig::Lnd(c) => Arc::new(LndBackend::new(c).map_err(|e| err(e.to_string()))?),
            BackendConfig::Cln(c) => Arc::new(ClnBackend::new(c).map_err(|e| err(e.to_string()))?),
            BackendConfig::Phoenixd(c) => {
                Arc::new(PhoenixdBackend::new(c).map_err(|e| err(e.to_string()))?)
            }
            BackendConfig::Nwc(c) => Arc::new(NwcBackend::new(c).map_err(|e| err(e.to_string()))?),
        })
    }
}

#[async_trait]
impl Diagnose for crate::dev::DevBackend {
    async fn info(&self) -> Result<NodeInfo, crate::BackendError> {
        Ok(NodeInfo {
            backend: "dev",
            alias: Some("turnpike dev backend (no real money)".into()),
            node_id: Some(hex::encode(self.node_id())),
            network: Some("regtest".into()),
            balance: Some(PaymentBackend::balance(self).await?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        backend: BackendConfig,
    }

    fn parse(text: &str) -> Result<BackendConfig, String> {
        serde_json::from_str::<File>(text)
            .map(|f| f.backend)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_kind_parses_and_unknown_keys_fail() {
        let lnbits = parse(r#"{"backend": {"kind": "lnbits", "url": "http://127.0.0.1:5000", "invoice_key": {"env": "K"}}}"#).unwrap();
        assert_eq!(lnbits.kind(), "lnbits");
        let phoenixd = parse(
            r#"{"backend": {"kind": "phoenixd", "url": "http://127.0.0.1:9740", "password": "p"}}"#,
        )
        .unwrap();
        assert_eq!(phoenixd.kind(), "phoenixd");
        assert!(phoenixd.connect().is_ok());
        assert_eq!(
            parse(r#"{"backend": {"kind": "dev"}}"#).unwrap().kind(),
            "dev"
        );
        let e =
            parse(r#"{"backend": {"kind": "lnbits", "url": "http://x", "bogus": 1}}"#).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = parse(r#"{"backend": {"kind": "eclair"}}"#).unwrap_err();
        assert!(e.contains("eclair"), "{e}");
    }

    #[test]
    fn a_missing_secret_is_named_when_connecting() {
        let c = parse(r#"{"backend": {"kind": "lnbits", "url": "http://127.0.0.1:5000", "invoice_key": {"env": "TURNPIKE_TEST_SURELY_UNSET"}}}"#).unwrap();
        let e = c.connect().err().unwrap().to_string();
        assert!(e.contains("TURNPIKE_TEST_SURELY_UNSET"), "{e}");
    }
}
