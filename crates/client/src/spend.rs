//! Paying within a budget, with a ledger: the reservation before the payment, its settlement or
//! release after, the recovery of payments a crashed process never saw the end of, and reusable
//! tokens.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use turnpike_l402::bolt11::Invoice;
use turnpike_l402::caveat;
use turnpike_l402::challenge::Challenge;
use turnpike_l402::credential::Credential;
use turnpike_l402::macaroon::Macaroon;
use turnpike_l402::{Msat, Preimage, Sats};
use turnpike_lightning::{BackendError, OutgoingState, PaymentBackend};

use crate::budget::{self, Budget};
use crate::ledger::{Ledger, LedgerError, NewToken, PaymentRow, now_unix};

/// Asks a person whether a payment above `approve_above` may go ahead (on a terminal, or
/// through the MCP client); the answer may take a while, so it is awaited.
pub type Approver = Arc<
    dyn Fn(Quote) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

/// Called right after a payment succeeded, before anything is recorded (test hook).
pub type AfterPayment = Arc<dyn Fn() + Send + Sync>;

/// Budget, ledger and token cache of one wallet.
#[derive(Clone)]
pub struct Accounting {
    /// The ledger.
    pub ledger: Ledger,
    /// The wallet's name in the ledger.
    pub wallet: String,
    /// Its budget.
    pub budget: Budget,
    /// Fee reserved per payment (0 for the dev wallet).
    pub max_fee: Msat,
    /// Reuse and keep tokens.
    pub cache: bool,
    /// Asked above `approve_above`; without one such payments are refused.
    pub approver: Option<Approver>,
    /// Test hook run right after a payment succeeded.
    pub after_payment: Option<AfterPayment>,
    pub(crate) locks: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    pub(crate) recovered: Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for Accounting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounting")
            .field("wallet", &self.wallet)
            .field("budget", &self.budget)
            .field("max_fee", &self.max_fee)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Accounting {
    /// Accounting for `wallet` in `ledger` with `budget`, reserving `max_fee` per payment,
    /// with the token cache on and no approver.
    pub fn new(ledger: Ledger, wallet: impl Into<String>, budget: Budget, max_fee: Msat) -> Self {
        Accounting {
            ledger,
            wallet: wallet.into(),
            budget,
            max_fee,
            cache: true,
            approver: None,
            after_payment: None,
            locks: Arc::default(),
            recovered: Arc::default(),
        }
    }

    /// The in-process lock for paying `key` (origin and service): concurrent fetches wait for
    /// an in-flight payment rather than each paying.
    pub(crate) fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(key.to_owned()).or_default().clone()
    }
}

/// What paying an x402 challenge would cost, before anything is signed.
#[derive(Debug, Clone, Serialize)]
pub struct X402Quote {
    /// The URL.
    pub url: String,
    /// The asset, `network/address`.
    pub asset: String,
    /// The amount, base units.
    pub amount_units: u64,
    /// The token's decimals.
    pub decimals: u8,
    /// The recipient.
    pub pay_to: String,
    /// Why the asset's budget would refuse it, if it would.
    pub refusal: Option<budget::TokenRefusal>,
    /// Whether the asset's `approve_above` asks a person.
    pub needs_approval: bool,
}

/// What a challenge would cost, before anything is paid.
#[derive(Debug, Clone, Serialize)]
pub struct Quote {
    /// The URL.
    pub url: String,
    /// The service the macaroon names.
    pub service: Option<String>,
    /// The invoice's amount.
    pub amount_msat: u64,
    /// Amount plus the fee reserve: what the budget is checked against.
    pub reserve_msat: u64,
    /// The payment hash, hex.
    pub payment_hash: String,
    /// Whether `approve_above` asks a person.
    pub needs_approval: bool,
    /// Why the budget would refuse it, if it would.
    pub refusal: Option<budget::Refusal>,
    /// For an x402 payment (the sats fields are then 0): what it would pay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x402: Option<X402Quote>,
}

impl Quote {
    /// The quote of an x402 payment, for an approver.
    pub fn for_x402(q: X402Quote) -> Quote {
        Quote {
            url: q.url.clone(),
            service: None,
            amount_msat: 0,
            reserve_msat: 0,
            payment_hash: String::new(),
            needs_approval: q.needs_approval,
            refusal: None,
            x402: Some(q),
        }
    }

    /// The most it may cost, in words: `N sats`, or `N base units of ASSET`.
    pub fn price(&self) -> String {
        match &self.x402 {
            Some(x) => format!("{} base units of {}", x.amount_units, x.asset),
            None => format!("{} sats", Msat(self.reserve_msat).to_sats_ceil().0),
        }
    }

    /// The question put to a person: what would be paid, to whom, for what.
    pub fn question(&self) -> String {
        match &self.x402 {
            Some(x) => format!(
                "pay {} base units of {} over x402 to {} for {}",
                x.amount_units, x.asset, x.pay_to, self.url
            ),
            None => format!(
                "pay up to {} sats ({} sats + fee reserve) for {}{}",
                Msat(self.reserve_msat).to_sats_ceil().0,
                Msat(self.amount_msat).to_sats_ceil().0,
                self.url,
                self.service
                    .as_deref()
                    .map(|s| format!(" (service {s})"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// What a token's caveats grant, read without verifying (the client cannot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenTerms {
    /// The first service named.
    pub service: Option<String>,
    /// Calls bought, if counted.
    pub calls: Option<u64>,
    /// Expiry, unix seconds.
    pub valid_until: Option<u64>,
}

/// Reads the service, call count and expiry from a macaroon's caveats. Malformed values are
/// ignored (the server is the judge); repeated limits take the smallest.
pub fn token_terms(macaroon: &Macaroon) -> TokenTerms {
    let caveats: Vec<(String, String)> = macaroon
        .first_party_caveats()
        .filter_map(|raw| {
            let s = std::str::from_utf8(raw).ok()?;
            let (c, v) = s.split_once('=')?;
            Some((c.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let service = caveats
        .iter()
        .find(|(c, _)| c == caveat::SERVICES_CONDITION)
        .and_then(|(_, v)| v.split(',').next())
        .and_then(|entry| entry.split(':').next())
        .map(|s| s.trim().to_owned())
        .filter(|s| caveat::is_valid_service_name(s));
    let mut terms = TokenTerms {
        service,
        ..TokenTerms::default()
    };
    if let Some(svc) = terms.service.clone() {
        for (c, v) in &caveats {
            let Some(rest) = c.strip_prefix(svc.as_str()) else {
                continue;
            };
            let Ok(n) = v.parse::<u64>() else { continue };
            if rest == caveat::CALLS_SUFFIX {
                terms.calls = Some(terms.calls.map_or(n, |o| o.min(n)));
            } else if rest == caveat::VALID_UNTIL_SUFFIX {
                terms.valid_until = Some(terms.valid_until.map_or(n, |o| o.min(n)));
            }
        }
    }
    terms
}

/// Whether process `pid` still runs (Linux: `/proc/<pid>`; elsewhere assumed running).
pub(crate) fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// What became of a payment row after asking the wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Paid: the preimage to use with the stored macaroon.
    Paid(Preimage),
    /// Released: it did not go through.
    Released,
    /// Still not known; the reservation stays.
    Unknown,
}

/// Settles a row from the wallet's answer about its payment.
pub(crate) async fn resolve_row(
    acc: &Accounting,
    wallet: &dyn PaymentBackend,
    row: &PaymentRow,
) -> Result<Resolution, LedgerError> {
    let hash = row.hash()?;
    let now = now_unix();
    let expired = Invoice::parse(&row.invoice).map_or(true, |i| i.is_expired(now));
    match wallet.lookup_payment(&hash).await {
        Ok(OutgoingState::Succeeded(p)) => {
            acc.ledger
                .settle(row.id, p.amount, p.fee, &p.preimage, now)
                .await?;
            Ok(Resolution::Paid(p.preimage))
        }
        Ok(OutgoingState::Failed(reason)) => {
            acc.ledger.release(row.id, &reason, now).await?;
            Ok(Resolution::Released)
        }
        Ok(OutgoingState::Unknown) if expired => {
            acc.ledger
                .release(
                    row.id,
                    "the wallet never sent it and the invoice has expired",
                    now,
                )
                .await?;
            Ok(Resolution::Released)
        }
        Ok(OutgoingState::Unknown | OutgoingState::Pending) => {
            acc.ledger
                .mark_unknown(row.id, "the wallet does not report an outcome yet", now)
                .await?;
            Ok(Resolution::Unknown)
        }
        Err(e) => {
            acc.ledger
                .mark_unknown(row.id, &format!("look-up failed: {e}"), now)
                .await?;
            Ok(Resolution::Unknown)
        }
    }
}

/// Resolves the rows of this wallet left `reserved` or `unknown` by processes that are gone: a
/// payment that went through is settled and its token kept for reuse, one that provably failed
/// is released. Runs once per [`Accounting`].
pub(crate) async fn recover(
    acc: &Accounting,
    wallet: &dyn PaymentBackend,
) -> Result<(), LedgerError> {
    for row in acc.ledger.unresolved(&acc.wallet, "l402").await? {
        if row.state == crate::ledger::PaymentState::Reserved && process_alive(row.pid) {
            continue;
        }
        if let Resolution::Paid(preimage) = resolve_row(acc, wallet, &row).await? {
            tracing::info!(id = row.id, "recovered a payment made by an earlier run");
            store_token_for(acc, &row, preimage, false).await?;
        }
    }
    Ok(())
}

/// Keeps the token a row paid for. When `payer_uses_one` the paying fetch is about to use one
/// of its calls, so that call is not offered to others (a single-call token is kept with none).
pub(crate) async fn store_token_for(
    acc: &Accounting,
    row: &PaymentRow,
    preimage: Preimage,
    payer_uses_one: bool,
) -> Result<Option<(i64, String)>, LedgerError> {
    let Ok(macaroon) = Macaroon::from_base64(&row.macaroon) else {
        return Ok(None);
    };
    store_credential(acc, row, Credential { macaroon, preimage }, payer_uses_one).await
}

/// Keeps a credential bought by the payment of `row` (an L402 token, or the
/// `Turnpike-Credential` an x402 payment was answered with) for reuse on its origin. Returns
/// its id (-1 when its caveats name no service, so it is not kept) and `Authorization` value.
pub(crate) async fn store_credential(
    acc: &Accounting,
    row: &PaymentRow,
    credential: Credential,
    payer_uses_one: bool,
) -> Result<Option<(i64, String)>, LedgerError> {
    let terms = token_terms(&credential.macaroon);
    let authorization = credential.authorization_value();
    let Some(service) = terms.service.as_deref() else {
        return Ok(Some((-1, authorization)));
    };
    let path = reqwest::Url::parse(&row.url)
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    let id = acc
        .ledger
        .store_token(
            &NewToken {
                origin: &row.origin,
                service,
                path: &path,
                authorization: &authorization,
                payment_id: Some(row.id),
                calls_remaining: terms.calls.map(|c| {
                    if payer_uses_one {
                        c.saturating_sub(1)
                    } else {
                        c
                    }
                }),
                valid_until: terms.valid_until,
            },
            now_unix(),
        )
        .await?;
    Ok(Some((id, authorization)))
}

/// Whether a failed pay call means no money left: the wallet refused before sending.
pub(crate) fn surely_not_sent(e: &BackendError) -> bool {
    matches!(
        e,
        BackendError::InsufficientBalance
            | BackendError::InvoiceExpired
            | BackendError::Unauthorized(_)
            | BackendError::Unsupported(_)
            | BackendError::Rejected(_)
            | BackendError::UnknownInvoice
    )
}

/// The quote for a checked challenge.
pub(crate) async fn quote(
    acc: &Accounting,
    url: &str,
    origin: &str,
    challenge: &Challenge,
    invoice: &Invoice,
    amount: Msat,
    call_cap: Option<Sats>,
) -> Result<Quote, LedgerError> {
    let reserve = Msat(amount.0.saturating_add(acc.max_fee.0));
    let spent = acc
        .ledger
        .spent(&acc.wallet, origin, &acc.budget, now_unix())
        .await?;
    Ok(Quote {
        url: url.to_owned(),
        service: token_terms(&challenge.macaroon).service,
        amount_msat: amount.0,
        reserve_msat: reserve.0,
        payment_hash: invoice.payment_hash().to_hex(),
        needs_approval: budget::needs_approval(&acc.budget, reserve),
        refusal: budget::check(&acc.budget, call_cap, reserve, &spent).err(),
        x402: None,
    })
}

#[cfg(test)]
mod tests {
    use turnpike_l402::macaroon::Macaroon;

    use super::*;

    #[test]
    fn terms_come_from_the_named_service_caveats() {
        let mut m = Macaroon::new(b"k", b"id".to_vec(), "x");
        m.add_first_party_caveat("services=joke:0,other:0");
        m.add_first_party_caveat("joke_calls=10");
        m.add_first_party_caveat("joke_calls=5");
        m.add_first_party_caveat("other_calls=1");
        m.add_first_party_caveat("joke_valid_until=1900000000");
        m.add_first_party_caveat("joke_valid_until=bogus");
        assert_eq!(
            token_terms(&m),
            TokenTerms {
                service: Some("joke".into()),
                calls: Some(5),
                valid_until: Some(1_900_000_000),
            }
        );
        let bare = Macaroon::new(b"k", b"id".to_vec(), "x");
        assert_eq!(token_terms(&bare), TokenTerms::default());
    }

    #[test]
    fn only_refusals_before_sending_count_as_not_sent() {
        assert!(surely_not_sent(&BackendError::InsufficientBalance));
        assert!(!surely_not_sent(&BackendError::Timeout));
        assert!(!surely_not_sent(&BackendError::Unreachable("x".into())));
        assert!(!surely_not_sent(&BackendError::InvalidResponse("x".into())));
    }
}
