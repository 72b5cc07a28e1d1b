//! A payee that is only a **Lightning address** (LUD-16): invoices are asked of the address's
//! LNURL-pay service (LUD-06), so the money goes straight to the address's wallet and the
//! gateway never holds it.
//!
//! - `user@domain` resolves to `GET https://domain/.well-known/lnurlp/user`, a `payRequest`
//!   (`callback`, `minSendable`, `maxSendable` in msat, `metadata`), kept for five minutes.
//! - Each invoice: `GET <callback>?amount=<msat>` answers `{pr, routes}`. The invoice is checked
//!   before use: its amount is exactly the one asked, its description hash is
//!   `sha256(metadata)` (LUD-06), its network is the expected one, it has not expired.
//! - When the answer carries a LUD-21 `verify` URL ([`LnAddressBackend::verify_of`], to keep
//!   it where every replica finds it), [`LnAddressBackend::verify`] asks it whether the
//!   invoice was settled (`{status, settled, preimage}`; the preimage is checked against the
//!   payment hash); [`InvoiceBackend::lookup_invoice`] does so for invoices this process
//!   issued. Without one, the invoice is unknown to this backend: the client's preimage is the
//!   proof of payment.
//!
//! Every URL the LNURL service hands out is checked by the SSRF guard ([`crate::net_guard`]):
//! `https` only, public addresses only, no redirects. [`LnurlPolicy::allow_insecure`] lifts
//! that for tests and development on one machine (`http`, loopback).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use turnpike_l402::bolt11::{Invoice, Network};

use crate::http::{map_transport_error, read_limited, snippet};
use crate::rules::MAX_RESPONSE_BYTES;
use crate::{
    BackendError, CreateInvoice, InvoiceBackend, InvoiceState, InvoiceStatus, IssuedInvoice, Msat,
    PaymentHash, Preimage,
};

/// How long a `payRequest` is reused before it is fetched again.
const PAY_REQUEST_TTL: Duration = Duration::from_secs(300);
/// Time allowed for each call to the LNURL service.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most `verify` URLs remembered (older ones, of long-expired invoices, are dropped first).
const MAX_PENDING: usize = 100_000;

/// A Lightning address, `user@domain` (LUD-16): the user part in `a-z0-9-_.+`, the domain a
/// host name (or, for tests, `host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LightningAddress {
    user: String,
    domain: String,
}

/// Why a text is not a Lightning address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Lightning address (user@domain, the user part in a-z 0-9 - _ . +)")]
pub struct BadAddress(pub String);

impl FromStr for LightningAddress {
    type Err = BadAddress;

    fn from_str(s: &str) -> Result<LightningAddress, BadAddress> {
        let bad = || BadAddress(s.chars().take(100).collect());
        let (user, domain) = s.split_once('@').ok_or_else(bad)?;
        let user = user.to_ascii_lowercase();
        let user_ok = !user.is_empty()
            && user.len() <= 64
            && user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
        if !user_ok || domain.is_empty() || domain.len() > 253 {
            return Err(bad());
        }
        let url = reqwest::Url::parse(&format!("https://{domain}/")).map_err(|_| bad())?;
        let host_ok = url.host_str().is_some()
            && url.path() == "/"
            && url.username().is_empty()
            && url.query().is_none()
            && !domain.contains(['/', '?', '#', '@', '\\']);
        if !host_ok {
            return Err(bad());
        }
        Ok(LightningAddress {
            user,
            domain: domain.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for LightningAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.domain)
    }
}

impl LightningAddress {
    /// The LUD-16 well-known URL (`http` instead of `https` when `insecure`).
    pub fn well_known_url(&self, insecure: bool) -> String {
        let scheme = if insecure { "http" } else { "https" };
        format!(
            "{scheme}://{}/.well-known/lnurlp/{}",
            self.domain, self.user
        )
    }
}

/// What a Lightning-address payee accepts.
#[derive(Debug, Clone, Copy)]
pub struct LnurlPolicy {
    /// Allow `http` and internal addresses (tests and development on one machine only).
    pub allow_insecure: bool,
    /// The network invoices must be for.
    pub network: Network,
}

/// A LUD-06 `payRequest`, checked.
#[derive(Debug, Clone)]
struct PayRequest {
    callback: reqwest::Url,
    min: Msat,
    max: Msat,
    metadata_hash: [u8; 32],
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PayRequestWire {
    tag: String,
    callback: String,
    min_sendable: u64,
    max_sendable: u64,
    metadata: String,
}

#[derive(Deserialize)]
struct CallbackWire {
    pr: String,
    verify: Option<String>,
}

#[derive(Deserialize)]
struct VerifyWire {
    status: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    settled: bool,
    preimage: Option<String>,
    pr: Option<String>,
}

#[derive(Deserialize)]
struct LnurlError {
    status: String,
    reason: Option<String>,
}

/// The LUD-21 `verify` URL of an invoice issued through the address, and what it was issued
/// for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    /// The URL (checked like every URL the LNURL service gives).
    pub url: String,
    /// The invoice's amount.
    pub amount: Msat,
    /// When the invoice expires (unix seconds).
    pub expires_at: u64,
}

/// The payee side of a Lightning address (see the module docs).
pub struct LnAddressBackend {
    address: LightningAddress,
    policy: LnurlPolicy,
    http: reqwest::Client,
    pay_request: tokio::sync::Mutex<Option<(PayRequest, Instant)>>,
    /// The `verify` URLs of the invoices this process issued.
    issued: Mutex<HashMap<PaymentHash, Verify>>,
}

impl fmt::Debug for LnAddressBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LnAddressBackend")
            .field("address", &self.address.to_string())
            .finish_non_exhaustive()
    }
}

impl LnAddressBackend {
    /// A payee paid at `address`. Nothing is fetched until the first invoice.
    pub fn new(
        address: LightningAddress,
        policy: LnurlPolicy,
    ) -> Result<LnAddressBackend, BackendError> {
        crate::ensure_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("turnpike/", env!("CARGO_PKG_VERSION")));
        if !policy.allow_insecure {
            builder = crate::net_guard::public_only(builder);
        }
        let http = builder
            .build()
            .map_err(|e| BackendError::Unreachable(e.to_string()))?;
        Ok(LnAddressBackend {
            address,
            policy,
            http,
            pay_request: tokio::sync::Mutex::new(None),
            issued: Mutex::new(HashMap::new()),
        })
    }

    /// The address paid.
    pub fn address(&self) -> &LightningAddress {
        &self.address
    }

    /// The smallest and largest amounts the address accepts now.
    pub async fn sendable(&self) -> Result<(Msat, Msat), BackendError> {
        let p = self.pay_request().await?;
        Ok((p.min, p.max))
    }

    /// GETs `url` (checked by the SSRF guard) and reads a JSON answer of at most
    /// [`MAX_RESPONSE_BYTES`]; an LNURL `{"status":"ERROR"}` is [`BackendError::Rejected`].
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &reqwest::Url,
        what: &str,
    ) -> Result<T, BackendError> {
        if !self.policy.allow_insecure {
            crate::net_guard::check_public_url(url, false)
                .await
                .map_err(|e| BackendError::Rejected(format!("{what}: {e}")))?;
        }
        let resp = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| map_transport_error(&e))?;
        let status = resp.status();
        let body = read_limited(resp, MAX_RESPONSE_BYTES).await?;
        if let Ok(e) = serde_json::from_slice::<LnurlError>(&body)
            && e.status.eq_ignore_ascii_case("ERROR")
        {
            let reason = e.reason.unwrap_or_default();
            return Err(BackendError::Rejected(format!(
                "{what}: {}",
                snippet(reason.as_bytes())
            )));
        }
        if !status.is_success() {
            return Err(match status.as_u16() {
                502..=504 => BackendError::Unreachable(format!("{what}: HTTP {status}")),
                _ => BackendError::Rejected(format!("{what}: HTTP {status}: {}", snippet(&body))),
            });
        }
        serde_json::from_slice(&body)
            .map_err(|e| BackendError::InvalidResponse(format!("{what}: {e}: {}", snippet(&body))))
    }

    /// The address's `payRequest`, fetched at most every five minutes.
    async fn pay_request(&self) -> Result<PayRequest, BackendError> {
        let mut cached = self.pay_request.lock().await;
        if let Some((p, at)) = cached.as_ref()
            && at.elapsed() < PAY_REQUEST_TTL
        {
            return Ok(p.clone());
        }
        let url = reqwest::Url::parse(&self.address.well_known_url(self.policy.allow_insecure))
            .map_err(|e| BackendError::Rejected(format!("bad Lightning address: {e}")))?;
        let wire: PayRequestWire = self.get_json(&url, "LNURL payRequest").await?;
        let p = self.check_pay_request(wire)?;
        *cached = Some((p.clone(), Instant::now()));
        Ok(p)
    }

    fn check_pay_request(&self, w: PayRequestWire) -> Result<PayRequest, BackendError> {
        let invalid = |m: &str| BackendError::InvalidResponse(format!("LNURL payRequest: {m}"));
        if w.tag != "payRequest" {
            return Err(invalid("the tag is not payRequest"));
        }
        if w.min_sendable == 0 || w.min_sendable > w.max_sendable {
            return Err(invalid(
                "minSendable must be at least 1 and at most maxSendable",
            ));
        }
        let entries: Vec<Vec<serde_json::Value>> = serde_json::from_str(&w.metadata)
            .map_err(|_| invalid("metadata is not a JSON array of arrays"))?;
        if !entries
            .iter()
            .any(|e| e.first().and_then(|v| v.as_str()) == Some("text/plain"))
        {
            return Err(invalid("metadata has no text/plain entry"));
        }
        Ok(PayRequest {
            callback: self.service_url(&w.callback, "callback")?,
            min: Msat(w.min_sendable),
            max: Msat(w.max_sendable),
            metadata_hash: Sha256::digest(w.metadata.as_bytes()).into(),
        })
    }

    /// A URL the LNURL service gave: `https` (or `http` when insecure is allowed).
    fn service_url(&self, text: &str, what: &str) -> Result<reqwest::Url, BackendError> {
        let url = reqwest::Url::parse(text)
            .map_err(|_| BackendError::InvalidResponse(format!("LNURL {what} is not a URL")))?;
        match url.scheme() {
            "https" => Ok(url),
            "http" if self.policy.allow_insecure => Ok(url),
            _ => Err(BackendError::InvalidResponse(format!(
                "LNURL {what} must be an https URL"
            ))),
        }
    }

    /// Checks the invoice the callback returned for `asked` against the `payRequest`.
    fn check_invoice(
        &self,
        pr: &str,
        asked: Msat,
        p: &PayRequest,
    ) -> Result<Invoice, BackendError> {
        let invalid = |m: String| BackendError::InvalidResponse(format!("LNURL invoice: {m}"));
        let invoice = Invoice::parse(pr).map_err(|e| invalid(e.to_string()))?;
        if invoice.amount() != Some(asked) {
            return Err(invalid(format!(
                "asked for {asked}, the invoice is for {}",
                invoice
                    .amount()
                    .map_or("any amount".into(), |a| a.to_string())
            )));
        }
        if invoice.description_hash() != Some(p.metadata_hash) {
            return Err(invalid(
                "its description hash is not sha256(metadata) (LUD-06)".into(),
            ));
        }
        if invoice.network() != self.policy.network {
            return Err(invalid(format!(
                "it is for {}, not {}",
                invoice.network(),
                self.policy.network
            )));
        }
        if invoice.is_expired(crate::now_unix()) {
            return Err(invalid("it has already expired".into()));
        }
        Ok(invoice)
    }

    /// The `verify` URL of the invoice `hash`, when this process issued it with one.
    pub fn verify_of(&self, hash: &PaymentHash) -> Option<Verify> {
        let map = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        map.get(hash).cloned()
    }

    fn remember(&self, hash: PaymentHash, verify: Verify) {
        let mut map = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_PENDING {
            let now = crate::now_unix();
            map.retain(|_, v| v.expires_at.saturating_add(86_400) > now);
            if map.len() >= MAX_PENDING {
                map.clear();
            }
        }
        map.insert(hash, verify);
    }

    /// Asks the LUD-21 `verify` URL of the invoice `hash` (issued by this process or another
    /// replica) whether it was settled: the preimage it reports is checked against the hash,
    /// and an answer about another invoice is refused.
    pub async fn verify(
        &self,
        hash: &PaymentHash,
        v: &Verify,
    ) -> Result<InvoiceStatus, BackendError> {
        let url = self.service_url(&v.url, "verify")?;
        let answer: VerifyWire = match self.get_json(&url, "LNURL verify").await {
            Err(BackendError::Rejected(m)) if m.to_ascii_lowercase().contains("not found") => {
                return Err(BackendError::UnknownInvoice);
            }
            other => other?,
        };
        verify_answer(hash, v, answer)
    }
}

/// What a LUD-21 `verify` answer says of the invoice `hash`.
fn verify_answer(
    hash: &PaymentHash,
    v: &Verify,
    answer: VerifyWire,
) -> Result<InvoiceStatus, BackendError> {
    if answer
        .status
        .as_deref()
        .is_some_and(|s| !s.eq_ignore_ascii_case("OK"))
    {
        let reason = answer.reason.unwrap_or_default();
        return Err(BackendError::Rejected(format!("LNURL verify: {reason}")));
    }
    if let Some(pr) = &answer.pr
        && Invoice::parse(pr).map(|i| i.payment_hash()).ok() != Some(*hash)
    {
        return Err(BackendError::InvalidResponse(
            "LNURL verify answered about another invoice".into(),
        ));
    }
    let state = match (answer.settled, answer.preimage.as_deref()) {
        (true, Some(hex)) => {
            let preimage = hex.parse::<Preimage>().map_err(|_| {
                BackendError::InvalidResponse("LNURL verify: malformed preimage".into())
            })?;
            crate::rules::check_preimage(hash, &preimage, "LNURL verify")?;
            InvoiceState::Settled {
                preimage,
                settled_at: crate::now_unix(),
            }
        }
        (true, None) => {
            return Err(BackendError::InvalidResponse(
                "LNURL verify: settled without a preimage".into(),
            ));
        }
        (false, _) if crate::now_unix() >= v.expires_at => InvoiceState::Expired,
        (false, _) => InvoiceState::Pending,
    };
    Ok(InvoiceStatus {
        payment_hash: *hash,
        amount: v.amount,
        state,
    })
}

#[async_trait]
impl InvoiceBackend for LnAddressBackend {
    fn name(&self) -> &'static str {
        "lightning-address"
    }

    /// Asks the address's callback for an invoice of exactly `req.amount` and checks it. The
    /// memo is not sent: the address's metadata describes the payment.
    async fn create_invoice(&self, req: CreateInvoice) -> Result<IssuedInvoice, BackendError> {
        crate::rules::check_create_request(&req)?;
        let p = self.pay_request().await?;
        if req.amount < p.min || req.amount > p.max {
            return Err(BackendError::Rejected(format!(
                "the Lightning address takes {} to {}, not {}",
                p.min, p.max, req.amount
            )));
        }
        let mut url = p.callback.clone();
        url.query_pairs_mut()
            .append_pair("amount", &req.amount.0.to_string());
        let answer: CallbackWire = self.get_json(&url, "LNURL callback").await?;
        let invoice = self.check_invoice(&answer.pr, req.amount, &p)?;
        let hash = invoice.payment_hash();
        if let Some(verify) = answer.verify.as_deref() {
            let url = self.service_url(verify, "verify")?;
            self.remember(
                hash,
                Verify {
                    url: url.to_string(),
                    amount: req.amount,
                    expires_at: invoice.expires_at(),
                },
            );
        }
        Ok(IssuedInvoice {
            bolt11: answer.pr,
            payment_hash: hash,
            amount: req.amount,
            expires_at: invoice.expires_at(),
        })
    }

    /// Asks the invoice's LUD-21 `verify` URL; an invoice issued without one (or by another
    /// process) is [`BackendError::UnknownInvoice`] (see [`LnAddressBackend::verify`]).
    async fn lookup_invoice(&self, hash: &PaymentHash) -> Result<InvoiceStatus, BackendError> {
        let v = self.verify_of(hash).ok_or(BackendError::UnknownInvoice)?;
        self.verify(hash, &v).await
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn addresses_parse_per_lud16() {
        let a: LightningAddress = "Alice.B+tips@Example.com".parse().unwrap();
        assert_eq!(a.to_string(), "alice.b+tips@example.com");
        assert_eq!(
            a.well_known_url(false),
            "https://example.com/.well-known/lnurlp/alice.b+tips"
        );
        let local: LightningAddress = "bob@127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            local.well_known_url(true),
            "http://127.0.0.1:8080/.well-known/lnurlp/bob"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "al ice@example.com",
            "alice@exa mple.com",
            "alice@example.com/path",
            "alice@user@example.com",
            "alice@example.com?x=1",
            "alice@example.com#x",
            "al/ice@example.com",
            "alice@example.com\\x",
        ] {
            assert!(bad.parse::<LightningAddress>().is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Any text is an address whose well-known URL stays on its own host, or an error.
        #[test]
        fn any_text_is_an_address_or_an_error(text in "\\PC{0,40}") {
            if let Ok(a) = text.parse::<LightningAddress>() {
                let url = reqwest::Url::parse(&a.well_known_url(false)).unwrap();
                prop_assert_eq!(url.path(), format!("/.well-known/lnurlp/{}", a.user));
                prop_assert!(url.query().is_none() && url.username().is_empty());
            }
        }
    }
}
