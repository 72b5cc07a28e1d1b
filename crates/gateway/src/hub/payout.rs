//! Where a provider is paid: its own wallet, never the hub's. A payout is stored as JSON with
//! the provider and becomes the provider's invoice backend ([`Payout::connect`]).
//!
//! - `{"kind": "lnbits", "url": "https://…", "invoice_key": "…"}`: an LNbits wallet's invoice
//!   key (it can create and read invoices, not spend).
//! - `{"kind": "lightning_address", "address": "user@domain"}`: a Lightning address (LUD-16),
//!   see [`turnpike_lightning::lnurl`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use turnpike_l402::bolt11::Network;
use turnpike_lightning::lnbits::{LnbitsBackend, LnbitsConfig};
use turnpike_lightning::lnurl::{LightningAddress, LnAddressBackend, LnurlPolicy};
use turnpike_lightning::{InvoiceBackend, SecretSource};

/// A provider's payout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Payout {
    /// An LNbits wallet, by its invoice key.
    Lnbits {
        /// The LNbits instance's base URL.
        url: String,
        /// The wallet's invoice/read key.
        invoice_key: String,
    },
    /// A Lightning address (LUD-16).
    LightningAddress {
        /// `user@domain`.
        address: String,
    },
}

/// How payouts may be reached.
#[derive(Debug, Clone, Copy)]
pub struct PayoutPolicy {
    /// Allow `http` and internal addresses (tests and development on one machine only).
    pub allow_insecure: bool,
    /// The network invoices must be for.
    pub network: Network,
}

/// A payout made ready: the backend creating the provider's invoices, and what it needs.
pub struct Connected {
    /// Creates the provider's invoices.
    pub backend: Arc<dyn InvoiceBackend>,
    /// The wallet takes whole satoshis only: amounts are rounded up to one.
    pub whole_sats: bool,
    /// The wallet can tell whether an invoice was paid (LNbits; a Lightning address only
    /// through LUD-21 `verify`, asked in the background, never before serving).
    pub checks_settlement: bool,
    /// A Lightning address whose invoices' LUD-21 `verify` URLs are asked in the background.
    pub verifier: Option<Arc<LnAddressBackend>>,
}

impl Payout {
    /// Parses and checks a payout (JSON), naming the field at fault.
    pub fn from_json(value: serde_json::Value) -> Result<Payout, (String, String)> {
        let payout: Payout = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = match path.as_str() {
                "." => "payout".to_owned(),
                p => format!("payout.{p}"),
            };
            (field, format!("{}.", e.inner()))
        })?;
        payout.check()?;
        Ok(payout)
    }

    fn check(&self) -> Result<(), (String, String)> {
        let field = |k: &str, m: &str| Err((format!("payout.{k}"), m.to_owned()));
        match self {
            Payout::Lnbits { url, invoice_key } => {
                if reqwest::Url::parse(url).is_err() || url.len() > 512 {
                    return field("url", "is not a URL.");
                }
                let key_ok = (16..=128).contains(&invoice_key.len())
                    && invoice_key.bytes().all(|b| b.is_ascii_alphanumeric());
                if !key_ok {
                    return field("invoice_key", "is not an LNbits key.");
                }
            }
            Payout::LightningAddress { address } => {
                if let Err(e) = address.parse::<LightningAddress>() {
                    return field("address", &format!("{e}."));
                }
            }
        }
        Ok(())
    }

    /// The URL the hub calls to reach this payout (checked by the SSRF guard).
    pub fn url(&self, insecure: bool) -> Option<reqwest::Url> {
        let text = match self {
            Payout::Lnbits { url, .. } => url.clone(),
            Payout::LightningAddress { address } => address
                .parse::<LightningAddress>()
                .ok()?
                .well_known_url(insecure),
        };
        reqwest::Url::parse(&text).ok()
    }

    /// The payout as the API shows it: the invoice key redacted.
    pub fn redacted(&self) -> serde_json::Value {
        match self {
            Payout::Lnbits { url, .. } => serde_json::json!({
                "kind": "lnbits", "url": url, "invoice_key": { "redacted": true }
            }),
            Payout::LightningAddress { address } => serde_json::json!({
                "kind": "lightning_address", "address": address
            }),
        }
    }

    /// Checks the payout's URL with the SSRF guard (unless insecure payouts are allowed):
    /// `https`, public addresses only.
    pub async fn check_reachable(&self, policy: PayoutPolicy) -> Result<(), String> {
        if policy.allow_insecure {
            return Ok(());
        }
        let url = self
            .url(false)
            .ok_or_else(|| "the payout has no valid URL".to_owned())?;
        turnpike_lightning::net_guard::check_public_url(&url, false).await
    }

    /// The backend creating the provider's invoices.
    pub fn connect(&self, policy: PayoutPolicy) -> Result<Connected, String> {
        match self {
            Payout::Lnbits { url, invoice_key } => {
                let config = LnbitsConfig {
                    invoice_key: Some(SecretSource::Inline(invoice_key.clone())),
                    ..LnbitsConfig::new(url.clone())
                };
                let mut backend = LnbitsBackend::new(&config).map_err(|e| e.to_string())?;
                if !policy.allow_insecure {
                    backend = backend.public_only().map_err(|e| e.to_string())?;
                }
                Ok(Connected {
                    backend: Arc::new(backend),
                    whole_sats: true,
                    checks_settlement: true,
                    verifier: None,
                })
            }
            Payout::LightningAddress { address } => {
                let address = address
                    .parse::<LightningAddress>()
                    .map_err(|e| e.to_string())?;
                let lnurl = LnurlPolicy {
                    allow_insecure: policy.allow_insecure,
                    network: policy.network,
                };
                let backend = LnAddressBackend::new(address, lnurl).map_err(|e| e.to_string())?;
                let backend = Arc::new(backend);
                Ok(Connected {
                    backend: backend.clone(),
                    whole_sats: false,
                    checks_settlement: false,
                    verifier: Some(backend),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payouts_parse_strictly_naming_the_field() {
        let ok = Payout::from_json(serde_json::json!({
            "kind": "lightning_address", "address": "alice@example.com"
        }));
        assert!(ok.is_ok());
        let field = |v: serde_json::Value| Payout::from_json(v).unwrap_err().0;
        assert_eq!(
            field(serde_json::json!({ "kind": "lightning_address", "address": "nope" })),
            "payout.address"
        );
        assert_eq!(
            field(serde_json::json!({ "kind": "lnbits", "url": "x", "invoice_key": "k" })),
            "payout.url"
        );
        assert_eq!(
            field(
                serde_json::json!({ "kind": "lnbits", "url": "https://l.example", "invoice_key": "k" })
            ),
            "payout.invoice_key"
        );
        assert!(Payout::from_json(serde_json::json!({ "kind": "custodial" })).is_err());
        assert!(
            Payout::from_json(serde_json::json!({
                "kind": "lightning_address", "address": "a@b.c", "extra": 1
            }))
            .is_err()
        );
    }

    #[test]
    fn the_invoice_key_is_never_shown() {
        let p = Payout::Lnbits {
            url: "https://l.example".into(),
            invoice_key: "0123456789abcdef0123".into(),
        };
        assert!(!p.redacted().to_string().contains("0123456789abcdef"));
    }

    #[tokio::test]
    async fn internal_payouts_are_refused_unless_allowed() {
        let strict = PayoutPolicy {
            allow_insecure: false,
            network: Network::Bitcoin,
        };
        for p in [
            Payout::Lnbits {
                url: "http://127.0.0.1:5000".into(),
                invoice_key: "0123456789abcdef0123".into(),
            },
            Payout::Lnbits {
                url: "https://10.1.2.3".into(),
                invoice_key: "0123456789abcdef0123".into(),
            },
            Payout::LightningAddress {
                address: "a@169.254.169.254".into(),
            },
            Payout::LightningAddress {
                address: "a@localhost:80".into(),
            },
        ] {
            assert!(p.check_reachable(strict).await.is_err(), "{p:?}");
            let open = PayoutPolicy {
                allow_insecure: true,
                ..strict
            };
            assert!(p.check_reachable(open).await.is_ok());
        }
    }
}
