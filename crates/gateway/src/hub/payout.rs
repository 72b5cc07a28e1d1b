//! Where a provider is paid: its own wallet, never the hub's. A payout is stored as JSON with
//! the provider and becomes the provider's invoice backend ([`Payout::connect`]). Every kind
//! takes a credential that can create and read invoices but **cannot spend**, and the hub
//! refuses one that can, where the credential or the wallet tells
//! ([`Payout::check_cannot_spend`]):
//!
//! - `{"kind": "lnbits", "url": "https://…", "invoice_key": "…"}`: an LNbits wallet's invoice
//!   key (it can create and read invoices, not spend).
//! - `{"kind": "lightning_address", "address": "user@domain"}`: a Lightning address (LUD-16),
//!   see [`turnpike_lightning::lnurl`]. No credential at all.
//! - `{"kind": "nwc", "uri": "nostr+walletconnect://…"}`: a Nostr Wallet Connect connection
//!   allowed `make_invoice` and `lookup_invoice` only (its `get_info` must list no paying
//!   method). Its relays must be `wss` and public.
//! - `{"kind": "lnd", "url": "https://…", "macaroon": "<hex>", "tls_cert": "-----BEGIN…"}`: an
//!   LND node's REST API with its **invoice** macaroon (its permissions are read from it: only
//!   `invoices`, `address`, `onchain:read` and `info:read`), `tls_cert` (optional) pinned.
//! - `{"kind": "cln", "url": "https://…", "rune": "…"}`: Core Lightning's clnrest with a rune
//!   restricted to `invoice` and `listinvoices` (and `getinfo`).
//! - `{"kind": "phoenixd", "url": "https://…", "password": "…"}`: phoenixd's
//!   `http-password-limited-access` (the full-access password can pay: refused).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use turnpike_l402::bolt11::Network;
use turnpike_lightning::cln::ClnBackend;
use turnpike_lightning::lnbits::{LnbitsBackend, LnbitsConfig};
use turnpike_lightning::lnd::LndBackend;
use turnpike_lightning::lnurl::{LightningAddress, LnAddressBackend, LnurlPolicy};
use turnpike_lightning::nwc::{NwcBackend, NwcConfig};
use turnpike_lightning::phoenixd::PhoenixdBackend;
use turnpike_lightning::{InvoiceBackend, SecretSource, spend_rights};

/// The longest secret or URL a payout takes, in bytes.
const MAX_FIELD: usize = 4096;
/// The longest pinned certificate (PEM) a payout takes, in bytes.
const MAX_CERT: usize = 16_384;

/// A provider's payout. `Debug` shows it redacted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// A wallet reached with Nostr Wallet Connect (NIP-47).
    Nwc {
        /// The `nostr+walletconnect://` connection URI (holds the client's secret key).
        uri: String,
    },
    /// An LND node's REST API.
    Lnd {
        /// Base URL of the REST API.
        url: String,
        /// The invoice macaroon, hex.
        macaroon: String,
        /// lnd's `tls.cert` (PEM text), pinned: the node must present exactly it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls_cert: Option<String>,
    },
    /// Core Lightning's REST plugin (clnrest).
    Cln {
        /// Base URL of clnrest.
        url: String,
        /// A rune restricted to invoice methods.
        rune: String,
    },
    /// A phoenixd server's HTTP API.
    Phoenixd {
        /// Base URL of the API.
        url: String,
        /// The limited-access password.
        password: String,
    },
}

impl fmt::Debug for Payout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payout({})", self.redacted())
    }
}

/// How payouts may be reached.
#[derive(Debug, Clone, Copy)]
pub struct PayoutPolicy {
    /// Allow `http` and internal addresses (tests and development on one machine only).
    pub allow_insecure: bool,
    /// The network invoices must be for.
    pub network: Network,
}

/// A payout's wallet, kept to ask it what its credential may do.
enum Wallet {
    Nwc(Arc<NwcBackend>),
    Phoenixd(Arc<PhoenixdBackend>),
    /// The credential says it all (read when parsing), or there is none.
    Other,
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
    wallet: Wallet,
}

impl Connected {
    fn wallet(backend: Arc<dyn InvoiceBackend>, whole_sats: bool, wallet: Wallet) -> Connected {
        Connected {
            backend,
            whole_sats,
            checks_settlement: true,
            verifier: None,
            wallet,
        }
    }
}

/// `Err((field, message))` for `payout.<key>`.
fn field<T>(key: &str, message: impl Into<String>) -> Result<T, (String, String)> {
    Err((format!("payout.{key}"), message.into()))
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
        if let Some(url) = self.node_url() {
            check_url(url)?;
        }
        match self {
            Payout::Lnbits { invoice_key, .. } => {
                let key_ok = (16..=128).contains(&invoice_key.len())
                    && invoice_key.bytes().all(|b| b.is_ascii_alphanumeric());
                if !key_ok {
                    return field("invoice_key", "is not an LNbits key.");
                }
            }
            Payout::LightningAddress { address } => {
                if let Err(e) = address.parse::<LightningAddress>() {
                    return field("address", format!("{e}."));
                }
            }
            Payout::Nwc { uri } => {
                if uri.len() > MAX_FIELD {
                    return field("uri", "is too long.");
                }
                nwc(uri).map_err(|e| (String::from("payout.uri"), format!("{e}.")))?;
            }
            Payout::Lnd {
                macaroon, tls_cert, ..
            } => {
                if macaroon.len() > MAX_FIELD {
                    return field("macaroon", "is too long.");
                }
                spend_rights::check_invoice_macaroon(macaroon)
                    .or_else(|m| field("macaroon", format!("{m}.")))?;
                match tls_cert {
                    Some(pem) if pem.len() > MAX_CERT => return field("tls_cert", "is too long."),
                    Some(pem) if !pem.contains("-----BEGIN CERTIFICATE-----") => {
                        return field("tls_cert", "is not a PEM certificate (lnd's tls.cert).");
                    }
                    _ => {}
                }
            }
            Payout::Cln { rune, .. } => {
                if rune.len() > MAX_FIELD {
                    return field("rune", "is too long.");
                }
                spend_rights::check_invoice_rune(rune)
                    .or_else(|m| field("rune", format!("{m}.")))?;
            }
            Payout::Phoenixd { password, .. } => {
                let ok = (1..=256).contains(&password.len())
                    && password.bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    return field("password", "is not a phoenixd password.");
                }
            }
        }
        // Build it once: the backends check the rest (a PEM that does not parse, a URL with
        // credentials in it), naming nothing secret.
        self.connect(PayoutPolicy {
            allow_insecure: true,
            network: Network::Bitcoin,
        })
        .map(drop)
        .or_else(|m| field(self.secret_field(), format!("{m}.")))
    }

    /// The field holding the payout's credential (where a backend's setup error is reported).
    fn secret_field(&self) -> &'static str {
        match self {
            Payout::Lnbits { .. } => "invoice_key",
            Payout::LightningAddress { .. } => "address",
            Payout::Nwc { .. } => "uri",
            Payout::Lnd {
                tls_cert: Some(_), ..
            } => "tls_cert",
            Payout::Lnd { .. } => "macaroon",
            Payout::Cln { .. } => "rune",
            Payout::Phoenixd { .. } => "password",
        }
    }

    /// The base URL of a wallet reached over HTTP.
    fn node_url(&self) -> Option<&str> {
        match self {
            Payout::Lnbits { url, .. }
            | Payout::Lnd { url, .. }
            | Payout::Cln { url, .. }
            | Payout::Phoenixd { url, .. } => Some(url),
            Payout::LightningAddress { .. } | Payout::Nwc { .. } => None,
        }
    }

    /// The URLs the hub calls to reach this payout (each checked by the SSRF guard): the
    /// wallet's, the Lightning address's `.well-known` document, or the NWC relays.
    pub fn urls(&self, insecure: bool) -> Vec<reqwest::Url> {
        let texts = match self {
            Payout::LightningAddress { address } => address
                .parse::<LightningAddress>()
                .map(|a| vec![a.well_known_url(insecure)])
                .unwrap_or_default(),
            Payout::Nwc { uri } => nwc(uri).map(|b| b.relays()).unwrap_or_default(),
            other => other.node_url().map(str::to_owned).into_iter().collect(),
        };
        texts
            .iter()
            .filter_map(|t| reqwest::Url::parse(t).ok())
            .collect()
    }

    /// The payout as the API shows it: every credential redacted.
    pub fn redacted(&self) -> serde_json::Value {
        use serde_json::json;
        let hidden = json!({ "redacted": true });
        match self {
            Payout::Lnbits { url, .. } => json!({
                "kind": "lnbits", "url": url, "invoice_key": hidden
            }),
            Payout::LightningAddress { address } => json!({
                "kind": "lightning_address", "address": address
            }),
            Payout::Nwc { uri } => json!({
                "kind": "nwc", "uri": hidden,
                "relays": nwc(uri).map(|b| b.relays()).unwrap_or_default(),
            }),
            Payout::Lnd { url, tls_cert, .. } => json!({
                "kind": "lnd", "url": url, "macaroon": hidden, "tls_cert_pinned": tls_cert.is_some()
            }),
            Payout::Cln { url, .. } => json!({ "kind": "cln", "url": url, "rune": hidden }),
            Payout::Phoenixd { url, .. } => json!({
                "kind": "phoenixd", "url": url, "password": hidden
            }),
        }
    }

    /// Checks the payout's URLs with the SSRF guard (unless insecure payouts are allowed):
    /// `https` (`wss` for relays), public addresses only.
    pub async fn check_reachable(&self, policy: PayoutPolicy) -> Result<(), String> {
        if policy.allow_insecure {
            return Ok(());
        }
        let urls = self.urls(false);
        if urls.is_empty() {
            return Err("the payout has no valid URL".to_owned());
        }
        for url in &urls {
            match self {
                Payout::Nwc { .. } => turnpike_lightning::net_guard::check_public_relay(url).await,
                _ => turnpike_lightning::net_guard::check_public_url(url, false).await,
            }?;
        }
        Ok(())
    }

    /// Asks the wallet whether its credential can spend, where only the wallet can tell (NWC:
    /// the connection's `get_info` methods; phoenixd: which password it is). `Err` with the
    /// reason when it can, or cannot say.
    pub async fn check_cannot_spend(&self, connected: &Connected) -> Result<(), String> {
        match &connected.wallet {
            Wallet::Nwc(wallet) => match wallet.spending_methods().await {
                Ok(methods) if methods.is_empty() => Ok(()),
                Ok(methods) => Err(format!(
                    "this NWC connection may {}: create one allowed make_invoice and \
                     lookup_invoice only",
                    methods.join(", ")
                )),
                Err(e) => Err(format!(
                    "the NWC wallet does not tell what this connection may do ({e})"
                )),
            },
            Wallet::Phoenixd(wallet) => match wallet.can_pay().await {
                Ok(false) => Ok(()),
                Ok(true) => Err("this is phoenixd's full-access password, which can pay: \
                                 give http-password-limited-access"
                    .into()),
                Err(e) => Err(format!("cannot tell what this password may do ({e})")),
            },
            Wallet::Other => Ok(()),
        }
    }

    /// The backend creating the provider's invoices. Its HTTP client (or relay transport)
    /// connects to public addresses only unless insecure payouts are allowed.
    pub fn connect(&self, policy: PayoutPolicy) -> Result<Connected, String> {
        let public_only = !policy.allow_insecure;
        let err = |e: &dyn fmt::Display| e.to_string();
        Ok(match self {
            Payout::Lnbits { url, invoice_key } => {
                let config = LnbitsConfig {
                    invoice_key: Some(SecretSource::Inline(invoice_key.clone())),
                    ..LnbitsConfig::new(url.clone())
                };
                let mut backend = LnbitsBackend::new(&config).map_err(|e| err(&e))?;
                if public_only {
                    backend = backend.public_only().map_err(|e| err(&e))?;
                }
                Connected::wallet(Arc::new(backend), true, Wallet::Other)
            }
            Payout::LightningAddress { address } => {
                let address = address.parse::<LightningAddress>().map_err(|e| err(&e))?;
                let lnurl = LnurlPolicy {
                    allow_insecure: policy.allow_insecure,
                    network: policy.network,
                };
                let backend = LnAddressBackend::new(address, lnurl).map_err(|e| err(&e))?;
                let backend = Arc::new(backend);
                Connected {
                    backend: backend.clone(),
                    whole_sats: false,
                    checks_settlement: false,
                    verifier: Some(backend),
                    wallet: Wallet::Other,
                }
            }
            Payout::Nwc { uri } => {
                let mut backend = nwc(uri).map_err(|e| err(&e))?;
                if public_only {
                    backend = backend.public_only();
                }
                let backend = Arc::new(backend);
                // Many NWC wallets take whole satoshis only.
                Connected::wallet(backend.clone(), true, Wallet::Nwc(backend))
            }
            Payout::Lnd {
                url,
                macaroon,
                tls_cert,
            } => {
                let backend =
                    LndBackend::from_values(url, macaroon, tls_cert.as_deref(), public_only)
                        .map_err(|e| err(&e))?;
                Connected::wallet(Arc::new(backend), false, Wallet::Other)
            }
            Payout::Cln { url, rune } => {
                let backend =
                    ClnBackend::from_values(url, rune, public_only).map_err(|e| err(&e))?;
                Connected::wallet(Arc::new(backend), false, Wallet::Other)
            }
            Payout::Phoenixd { url, password } => {
                let backend = PhoenixdBackend::from_values(url, password, public_only)
                    .map_err(|e| err(&e))?;
                let backend = Arc::new(backend);
                // phoenixd counts whole satoshis.
                Connected::wallet(backend.clone(), true, Wallet::Phoenixd(backend))
            }
        })
    }
}

/// An NWC backend for `uri` (its errors never quote the secret).
fn nwc(uri: &str) -> Result<NwcBackend, turnpike_lightning::nwc::NwcConfigError> {
    NwcBackend::new(&NwcConfig {
        uri: SecretSource::Inline(uri.to_owned()),
        timeout_secs: turnpike_lightning::nwc::DEFAULT_TIMEOUT_SECS,
        payment_timeout_secs: turnpike_lightning::rules::DEFAULT_PAYMENT_TIMEOUT_SECS,
    })
}

/// A wallet's base URL: parses, `http(s)`, at most [`MAX_FIELD`] bytes, no credentials.
fn check_url(url: &str) -> Result<(), (String, String)> {
    match reqwest::Url::parse(url) {
        Ok(u) if url.len() <= MAX_FIELD && matches!(u.scheme(), "http" | "https") => {
            if !u.username().is_empty() || u.password().is_some() {
                return field("url", "must not hold credentials.");
            }
            Ok(())
        }
        _ => field("url", "is not a URL."),
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

    const NWC_URI: &str = "nostr+walletconnect://b889ff5b1513b641e2a139f661a661364979c5beee91842f8f0ef42ab558e9d4?relay=wss%3A%2F%2Frelay.example.com&secret=71a8c14c1407c113601079c4302dab36460f0ccd0ad506f1f2dc73b5100e4f3c";

    fn invoice_macaroon() -> String {
        spend_rights::test_credentials::lnd_macaroon(&["invoices:read", "invoices:write"])
    }

    fn invoice_rune() -> String {
        spend_rights::test_credentials::cln_rune("=0&method=invoice|method=listinvoices")
    }

    fn node_payouts() -> Vec<serde_json::Value> {
        use serde_json::json;
        vec![
            json!({ "kind": "nwc", "uri": NWC_URI }),
            json!({ "kind": "lnd", "url": "https://lnd.example:8080", "macaroon": invoice_macaroon() }),
            json!({ "kind": "cln", "url": "https://cln.example:3010", "rune": invoice_rune() }),
            json!({ "kind": "phoenixd", "url": "https://phoenixd.example", "password": "limited-password-123" }),
        ]
    }

    #[test]
    fn node_payouts_parse_strictly_and_never_show_their_secrets() {
        use serde_json::json;
        for v in node_payouts() {
            let p = Payout::from_json(v.clone()).unwrap_or_else(|e| panic!("{v}: {e:?}"));
            let shown = format!("{} {p:?}", p.redacted());
            for secret in [
                "71a8c14c1407c113601079c4302dab36",
                &invoice_macaroon()[..40],
                &invoice_rune()[..30],
                "limited-password-123",
            ] {
                assert!(!shown.contains(secret), "{shown}");
            }
            let mut extra = v.clone();
            extra["bogus"] = json!(1);
            let (_, message) = Payout::from_json(extra).unwrap_err();
            assert!(message.contains("bogus"), "{message}");
        }
        let field = |v: serde_json::Value| Payout::from_json(v).unwrap_err().0;
        assert_eq!(
            field(json!({ "kind": "nwc", "uri": "https://x" })),
            "payout.uri"
        );
        assert_eq!(field(json!({ "kind": "nwc" })), "payout");
        // A secret is never echoed in the error either.
        let bad_secret = NWC_URI.replace("&secret=71a8", "&secret=zz");
        let (f, m) = Payout::from_json(json!({ "kind": "nwc", "uri": bad_secret })).unwrap_err();
        assert_eq!(f, "payout.uri");
        assert!(!m.contains("c14c1407c113601079c4302dab36"), "{m}");
        let lnd = |mac: String, cert: Option<&str>| json!({ "kind": "lnd", "url": "https://l.example", "macaroon": mac, "tls_cert": cert });
        assert_eq!(field(lnd("zz".into(), None)), "payout.macaroon");
        assert_eq!(
            field(json!({ "kind": "lnd", "url": "x", "macaroon": invoice_macaroon() })),
            "payout.url"
        );
        assert_eq!(
            field(lnd(invoice_macaroon(), Some("not pem"))),
            "payout.tls_cert"
        );
        assert_eq!(
            field(lnd(
                invoice_macaroon(),
                Some("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
            )),
            "payout.tls_cert"
        );
        assert_eq!(
            field(
                json!({ "kind": "lnd", "url": "https://u:p@l.example", "macaroon": invoice_macaroon() })
            ),
            "payout.url"
        );
        assert_eq!(
            field(json!({ "kind": "cln", "url": "https://c.example", "rune": "!" })),
            "payout.rune"
        );
        assert_eq!(
            field(json!({ "kind": "phoenixd", "url": "https://p.example", "password": "" })),
            "payout.password"
        );
        assert_eq!(
            field(json!({ "kind": "phoenixd", "url": "https://p.example" })),
            "payout"
        );
    }

    #[test]
    fn credentials_that_can_spend_are_refused_when_they_say_so() {
        use serde_json::json;
        let admin =
            spend_rights::test_credentials::lnd_macaroon(&["invoices:write", "offchain:write"]);
        let (f, m) = Payout::from_json(
            json!({ "kind": "lnd", "url": "https://l.example", "macaroon": admin }),
        )
        .unwrap_err();
        assert_eq!(f, "payout.macaroon");
        assert!(m.contains("offchain:write"), "{m}");
        let master = spend_rights::test_credentials::cln_rune("=0");
        let (f, m) =
            Payout::from_json(json!({ "kind": "cln", "url": "https://c.example", "rune": master }))
                .unwrap_err();
        assert_eq!(f, "payout.rune");
        assert!(m.contains("pay"), "{m}");
    }

    #[tokio::test]
    async fn internal_node_payouts_are_refused_unless_allowed() {
        use serde_json::json;
        let strict = PayoutPolicy {
            allow_insecure: false,
            network: Network::Bitcoin,
        };
        let internal = [
            json!({ "kind": "nwc", "uri": NWC_URI.replace("wss%3A%2F%2Frelay.example.com", "ws%3A%2F%2F1.1.1.1") }),
            json!({ "kind": "nwc", "uri": NWC_URI.replace("relay.example.com", "127.0.0.1%3A7777") }),
            json!({ "kind": "lnd", "url": "https://10.0.0.5:8080", "macaroon": invoice_macaroon() }),
            json!({ "kind": "lnd", "url": "http://1.1.1.1:8080", "macaroon": invoice_macaroon() }),
            json!({ "kind": "cln", "url": "https://[::1]:3010", "rune": invoice_rune() }),
            json!({ "kind": "phoenixd", "url": "https://169.254.169.254", "password": "limited-password-123" }),
        ];
        for v in internal {
            let p = Payout::from_json(v.clone()).unwrap();
            assert!(p.check_reachable(strict).await.is_err(), "{v}");
            let open = PayoutPolicy {
                allow_insecure: true,
                ..strict
            };
            assert!(p.check_reachable(open).await.is_ok(), "{v}");
        }
    }
}
