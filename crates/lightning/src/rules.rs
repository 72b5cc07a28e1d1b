//! The rules every backend applies, in one place:
//!
//! - a [`CreateInvoice`] is checked before it is sent ([`check_create_request`]);
//! - the invoice a node returns for it is checked before it is handed out ([`check_issued`]);
//! - an invoice is checked locally before paying it ([`check_payable`]);
//! - what a node reports as paid is checked before it is trusted ([`check_paid`], built on
//!   [`check_payment`]);
//! - an invoice reported settled is checked ([`check_settled`], [`check_preimage`]);
//! - answers are read up to a size limit (64 KiB, 1 MiB for payment results);
//! - timeouts and retries in a backend's configuration stay within [`MAX_TIMEOUT_SECS`],
//!   [`MAX_RETRIES`] and [`MAX_PAYMENT_TIMEOUT_SECS`], with shared defaults.
//!
//! A backend adds only what is its own (its units, its record formats), never a second copy of
//! these.

use turnpike_l402::bolt11::Invoice;

use crate::{
    BackendError, CreateInvoice, InvoiceState, IssuedInvoice, Msat, OutgoingState, Payment,
    PaymentHash, Preimage, Sats,
};

/// Longest memo BOLT11 can carry (the `d` field), in bytes.
pub const MAX_MEMO_BYTES: usize = 639;

/// Default call timeout of a backend (each call, retries included), in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Default number of retries of a call that is safe to repeat.
pub const DEFAULT_RETRIES: u32 = 2;
/// Default payment timeout of a backend, in seconds.
pub const DEFAULT_PAYMENT_TIMEOUT_SECS: u64 = 60;

/// Most retries accepted in a backend's configuration.
pub const MAX_RETRIES: u32 = 10;
/// Longest call timeout accepted in a backend's configuration, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// Longest payment timeout accepted in a backend's configuration, in seconds.
pub const MAX_PAYMENT_TIMEOUT_SECS: u64 = 3600;

/// Largest ordinary answer a backend reads, in bytes. Backends answer small JSON documents;
/// anything bigger is refused rather than buffered.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Largest answer to a payment read, in bytes (a payment result may list every attempt).
pub(crate) const MAX_PAYMENT_BYTES: usize = 1024 * 1024;

/// Checks a [`CreateInvoice`] before it is sent: a positive amount, a positive expiry and a memo
/// of at most [`MAX_MEMO_BYTES`]. [`BackendError::Rejected`] otherwise.
pub fn check_create_request(req: &CreateInvoice) -> Result<(), BackendError> {
    if req.amount == Msat::ZERO {
        return Err(BackendError::Rejected(
            "the amount must be at least 1 msat".into(),
        ));
    }
    if req.expiry_secs == 0 {
        return Err(BackendError::Rejected(
            "the expiry must be at least 1 second".into(),
        ));
    }
    if req.memo.len() > MAX_MEMO_BYTES {
        return Err(BackendError::Rejected(format!(
            "the memo is longer than {MAX_MEMO_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The amount in whole satoshis, for backends whose invoices are in satoshis; rejected (never
/// rounded) when it has a sub-satoshi part.
pub fn whole_sats(backend: &str, amount: Msat) -> Result<Sats, BackendError> {
    amount.to_sats_exact().ok_or_else(|| {
        BackendError::Rejected(format!(
            "{backend} invoices are in whole satoshis; {amount} is not"
        ))
    })
}

/// Checks the invoice a node returned for `req`: it decodes, and its amount and payment hash
/// (when the node reported one besides the invoice) are what was asked.
/// [`BackendError::InvalidResponse`] otherwise.
pub fn check_issued(
    backend: &str,
    bolt11: &str,
    req: &CreateInvoice,
    reported_hash: Option<PaymentHash>,
) -> Result<IssuedInvoice, BackendError> {
    let invoice = Invoice::parse(bolt11).map_err(|e| {
        BackendError::InvalidResponse(format!("{backend} returned an invalid invoice: {e}"))
    })?;
    let payment_hash = invoice.payment_hash();
    if let Some(reported) = reported_hash
        && reported != payment_hash
    {
        return Err(BackendError::InvalidResponse(format!(
            "{backend} reported payment hash {reported} for an invoice whose hash is \
             {payment_hash}"
        )));
    }
    if invoice.amount() != Some(req.amount) {
        return Err(BackendError::InvalidResponse(format!(
            "{backend} returned an invoice for {} instead of {}",
            invoice
                .amount()
                .map_or_else(|| "any amount".to_owned(), |a| a.to_string()),
            req.amount
        )));
    }
    Ok(IssuedInvoice {
        bolt11: invoice.as_str().to_owned(),
        payment_hash,
        amount: req.amount,
        expires_at: invoice.expires_at(),
    })
}

/// Decodes an invoice given to pay; [`BackendError::Rejected`] when it does not decode.
pub fn parse_invoice(bolt11: &str) -> Result<Invoice, BackendError> {
    Invoice::parse(bolt11).map_err(|e| BackendError::Rejected(format!("invalid invoice: {e}")))
}

/// Checks an invoice locally before paying it, at `now` (unix seconds): it decodes, states a
/// amount and has not expired. Returns it with its amount.
pub fn check_payable(bolt11: &str, now: u64) -> Result<(Invoice, Msat), BackendError> {
    let invoice = parse_invoice(bolt11)?;
    let amount = invoice.amount().ok_or_else(|| {
        BackendError::Rejected("cannot pay an invoice that does not state an amount".into())
    })?;
    if invoice.is_expired(now) {
        return Err(BackendError::InvoiceExpired);
    }
    Ok((invoice, amount))
}

/// Checks that `payment` is a genuine payment of `invoice`: same payment hash, and a preimage
/// that hashes to it. Returns [`BackendError::InvalidResponse`] otherwise.
pub fn check_payment(invoice: &Invoice, payment: &Payment) -> Result<(), BackendError> {
    let expected = invoice.payment_hash();
    if payment.payment_hash != expected {
        return Err(BackendError::InvalidResponse(format!(
            "payment hash {} does not match the invoice's {expected}",
            payment.payment_hash
        )));
    }
    check_preimage(&expected, &payment.preimage, "the payment returned")
}

/// Checks that `preimage`, reported by `what`, hashes to `hash`: the proof of payment.
/// [`BackendError::InvalidResponse`] otherwise.
pub fn check_preimage(
    hash: &PaymentHash,
    preimage: &Preimage,
    what: &str,
) -> Result<(), BackendError> {
    if !preimage.matches(hash) {
        return Err(BackendError::InvalidResponse(format!(
            "{what}: the preimage does not hash to the payment hash {hash}"
        )));
    }
    Ok(())
}

/// Checks what `backend` reports as a payment of `invoice` (see [`check_payable`]): a genuine
/// payment ([`check_payment`]) of exactly the invoice's amount. A fee above `max_fee` (which
/// some nodes cannot be told) is logged as a warning: the money is spent either way.
pub fn check_paid(
    backend: &str,
    invoice: &Invoice,
    payment: Payment,
    max_fee: Msat,
) -> Result<Payment, BackendError> {
    check_payment(invoice, &payment)?;
    if invoice.amount() != Some(payment.amount) {
        return Err(BackendError::InvalidResponse(format!(
            "{backend} reports {} delivered for an invoice of {}",
            payment.amount,
            invoice
                .amount()
                .map_or_else(|| "any amount".to_owned(), |a| a.to_string()),
        )));
    }
    if payment.fee > max_fee {
        tracing::warn!(
            backend,
            payment_hash = %payment.payment_hash,
            fee = %payment.fee,
            max_fee = %max_fee,
            "the node paid more in fees than the limit"
        );
    }
    Ok(payment)
}

/// The state of an invoice a node reports as settled with `preimage`, after checking it: the
/// preimage hashes to `hash`, and the amount received (when the node reports one) covers the
/// amount requested. [`BackendError::InvalidResponse`] otherwise.
pub fn check_settled(
    backend: &str,
    hash: &PaymentHash,
    preimage: Preimage,
    received: Option<Msat>,
    requested: Msat,
    settled_at: u64,
) -> Result<InvoiceState, BackendError> {
    check_preimage(hash, &preimage, &format!("{backend}: invoice settled"))?;
    if let Some(received) = received
        && received < requested
    {
        return Err(BackendError::InvalidResponse(format!(
            "{backend} reports invoice {hash} settled with {received} received, less than the \
             {requested} requested"
        )));
    }
    Ok(InvoiceState::Settled {
        preimage,
        settled_at,
    })
}

/// One attempt at an outgoing payment, as a node lists it.
pub(crate) enum Attempt {
    /// Paid (the preimage already checked: see [`OutgoingState::succeeded`]).
    Succeeded(OutgoingState),
    /// Not resolved yet.
    Pending,
    /// Failed for good.
    Failed,
}

/// What the attempts a node lists for one outgoing payment add up to: the first succeeded
/// one; else pending if one is; else failed (with `failed`) if one failed; else (none listed)
/// unknown. The first error stops the look-up.
pub(crate) fn outgoing_from_attempts(
    attempts: impl IntoIterator<Item = Result<Attempt, BackendError>>,
    failed: &str,
) -> Result<OutgoingState, BackendError> {
    let (mut pending, mut any_failed) = (false, false);
    for attempt in attempts {
        match attempt? {
            Attempt::Succeeded(state) => return Ok(state),
            Attempt::Pending => pending = true,
            Attempt::Failed => any_failed = true,
        }
    }
    Ok(if pending {
        OutgoingState::Pending
    } else if any_failed {
        OutgoingState::Failed(failed.to_owned())
    } else {
        OutgoingState::Unknown
    })
}

/// 32 bytes a node reports as hex (a payment hash, a preimage) in `field`;
/// [`BackendError::InvalidResponse`] naming the field otherwise.
pub(crate) fn hex32(backend: &str, text: &str, field: &str) -> Result<[u8; 32], BackendError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| {
        BackendError::InvalidResponse(format!("{backend}: {field} is not 32 bytes of hex"))
    })?;
    Ok(out)
}

/// An amount a node reports in satoshis, in millisatoshis; [`BackendError::InvalidResponse`]
/// naming `field` if it overflows.
pub(crate) fn sats_field(backend: &str, sats: u64, field: &str) -> Result<Msat, BackendError> {
    Sats(sats)
        .to_msat()
        .ok_or_else(|| BackendError::InvalidResponse(format!("{backend}: {field} overflows")))
}

/// How long a node backend's calls may take and how often a call that is safe to repeat is
/// retried: the `timeout_secs`, `retries` and `payment_timeout_secs` keys of LND, Core Lightning
/// and phoenixd (written once here, flattened into each backend's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct CallLimits {
    /// Time allowed for each call (invoice, lookup, balance, info), retries included, in
    /// seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// How many times a call that is safe to repeat is retried after a transient failure. A
    /// payment is retried only when the connection could not be established.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Time allowed for a payment, in seconds. A payment still unresolved when it expires gives
    /// [`crate::BackendError::Timeout`]: its outcome is then unknown (look at the node).
    #[serde(default = "default_payment_timeout_secs")]
    pub payment_timeout_secs: u64,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            retries: DEFAULT_RETRIES,
            payment_timeout_secs: DEFAULT_PAYMENT_TIMEOUT_SECS,
        }
    }
}

/// [`DEFAULT_TIMEOUT_SECS`], for `#[serde(default = ...)]`.
pub(crate) fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

/// [`DEFAULT_RETRIES`], for `#[serde(default = ...)]`.
pub(crate) fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

/// [`DEFAULT_PAYMENT_TIMEOUT_SECS`], for `#[serde(default = ...)]`.
pub(crate) fn default_payment_timeout_secs() -> u64 {
    DEFAULT_PAYMENT_TIMEOUT_SECS
}

/// Checks the timeouts and retries of a backend's configuration: a call timeout of 1 to
/// [`MAX_TIMEOUT_SECS`], at most [`MAX_RETRIES`] retries, and (for backends that have one) a
/// payment timeout of 1 to [`MAX_PAYMENT_TIMEOUT_SECS`]. The error names the field.
pub(crate) fn check_limits(
    timeout_secs: u64,
    retries: u32,
    payment_timeout_secs: Option<u64>,
) -> Result<(), String> {
    if !(1..=MAX_TIMEOUT_SECS).contains(&timeout_secs) {
        return Err(format!(
            "timeout_secs must be between 1 and {MAX_TIMEOUT_SECS}"
        ));
    }
    if retries > MAX_RETRIES {
        return Err(format!("retries must be at most {MAX_RETRIES}"));
    }
    if let Some(secs) = payment_timeout_secs
        && !(1..=MAX_PAYMENT_TIMEOUT_SECS).contains(&secs)
    {
        return Err(format!(
            "payment_timeout_secs must be between 1 and {MAX_PAYMENT_TIMEOUT_SECS}"
        ));
    }
    Ok(())
}

/// A network name as Turnpike writes it: nodes say `mainnet` (or `testnet3`, `testnet4`) where
/// Turnpike says `bitcoin` (`testnet`).
pub(crate) fn normalize_network(network: &str) -> String {
    let network = network.to_ascii_lowercase();
    match network.as_str() {
        "mainnet" => "bitcoin".to_owned(),
        n if n.starts_with("testnet") => "testnet".to_owned(),
        _ => network,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DevBackend, InvoiceBackend, PaymentBackend};

    fn req(amount: u64, memo_bytes: usize, expiry_secs: u32) -> CreateInvoice {
        CreateInvoice {
            amount: Msat(amount),
            memo: "m".repeat(memo_bytes),
            expiry_secs,
        }
    }

    fn rejected<T: std::fmt::Debug>(r: Result<T, BackendError>) -> bool {
        matches!(r, Err(BackendError::Rejected(_)))
    }

    fn invalid<T: std::fmt::Debug>(r: Result<T, BackendError>) -> bool {
        matches!(r, Err(BackendError::InvalidResponse(_)))
    }

    #[test]
    fn create_requests() {
        assert_eq!(check_create_request(&req(1, MAX_MEMO_BYTES, 1)), Ok(()));
        assert!(rejected(check_create_request(&req(0, 1, 60))));
        assert!(rejected(check_create_request(&req(1, 1, 0))));
        assert!(rejected(check_create_request(&req(
            1,
            MAX_MEMO_BYTES + 1,
            60
        ))));
        assert_eq!(whole_sats("x", Msat(21_000)), Ok(Sats(21)));
        assert!(rejected(whole_sats("x", Msat(21_001))));
    }

    #[tokio::test]
    async fn issued_invoices() {
        let dev = DevBackend::random();
        let asked = req(2000, 4, 60);
        let one = dev.create_invoice(asked.clone()).await.unwrap();
        let two = dev.create_invoice(asked.clone()).await.unwrap();
        assert_eq!(
            check_issued("x", &one.bolt11, &asked, None),
            Ok(one.clone())
        );
        assert_eq!(
            check_issued("x", &one.bolt11, &asked, Some(one.payment_hash)),
            Ok(one.clone())
        );
        assert!(invalid(check_issued(
            "x",
            &one.bolt11,
            &asked,
            Some(two.payment_hash)
        )));
        assert!(invalid(check_issued(
            "x",
            &one.bolt11,
            &req(1000, 4, 60),
            None
        )));
        assert!(invalid(check_issued("x", "lnbcgarbage", &asked, None)));
    }

    #[tokio::test]
    async fn payable_and_paid() {
        let dev = DevBackend::random();
        let issued = dev.create_invoice(req(2000, 4, 60)).await.unwrap();
        let (invoice, amount) = check_payable(&issued.bolt11, crate::now_unix()).unwrap();
        assert_eq!(amount, Msat(2000));
        assert!(rejected(check_payable("lnbcgarbage", 0)));
        assert_eq!(
            check_payable(&issued.bolt11, issued.expires_at).map(|_| ()),
            Err(BackendError::InvoiceExpired)
        );

        let paid = dev.pay_invoice(&issued.bolt11, Msat::ZERO).await.unwrap();
        assert_eq!(check_paid("x", &invoice, paid, Msat::ZERO), Ok(paid));
        // Over the fee limit: accepted (it is spent), only logged.
        let costly = Payment {
            fee: Msat(5),
            ..paid
        };
        assert_eq!(check_paid("x", &invoice, costly, Msat(1)), Ok(costly));
        let short = Payment {
            amount: Msat(1999),
            ..paid
        };
        assert!(invalid(check_paid("x", &invoice, short, Msat::ZERO)));
        let forged = Payment {
            preimage: Preimage([0; 32]),
            ..paid
        };
        assert!(invalid(check_paid("x", &invoice, forged, Msat::ZERO)));
    }

    #[test]
    fn settled_invoices() {
        let preimage = Preimage([7; 32]);
        let hash = preimage.payment_hash();
        let settled = InvoiceState::Settled {
            preimage,
            settled_at: 5,
        };
        assert_eq!(
            check_settled("x", &hash, preimage, None, Msat(10), 5),
            Ok(settled)
        );
        assert_eq!(
            check_settled("x", &hash, preimage, Some(Msat(11)), Msat(10), 5),
            Ok(settled)
        );
        assert!(invalid(check_settled(
            "x",
            &hash,
            preimage,
            Some(Msat(9)),
            Msat(10),
            5
        )));
        assert!(invalid(check_settled(
            "x",
            &hash,
            Preimage([8; 32]),
            None,
            Msat(10),
            5
        )));
    }

    #[test]
    fn attempts_add_up() {
        let add = |attempts: Vec<Attempt>| {
            outgoing_from_attempts(attempts.into_iter().map(Ok), "all failed")
        };
        let preimage = Preimage([3; 32]);
        let hash = preimage.payment_hash();
        let paid = OutgoingState::succeeded(&hash, preimage, Msat(1), Msat(0)).unwrap();
        assert_eq!(add(vec![]), Ok(OutgoingState::Unknown));
        assert_eq!(
            add(vec![Attempt::Failed, Attempt::Failed]),
            Ok(OutgoingState::Failed("all failed".into()))
        );
        assert_eq!(
            add(vec![Attempt::Failed, Attempt::Pending]),
            Ok(OutgoingState::Pending)
        );
        assert_eq!(
            add(vec![
                Attempt::Pending,
                Attempt::Succeeded(paid.clone()),
                Attempt::Failed
            ]),
            Ok(paid)
        );
        let broken = vec![Err(BackendError::Timeout), Ok(Attempt::Pending)];
        assert_eq!(
            outgoing_from_attempts(broken, "x"),
            Err(BackendError::Timeout)
        );
    }

    #[test]
    fn limits_and_networks() {
        assert_eq!(check_limits(10, 2, Some(60)), Ok(()));
        assert_eq!(check_limits(10, 2, None), Ok(()));
        assert!(
            check_limits(0, 2, None)
                .unwrap_err()
                .contains("timeout_secs")
        );
        assert!(check_limits(10, 11, None).unwrap_err().contains("retries"));
        assert!(
            check_limits(10, 2, Some(0))
                .unwrap_err()
                .contains("payment_timeout_secs")
        );
        assert_eq!(sats_field("x", 2, "f"), Ok(Msat(2000)));
        assert_eq!(hex32("x", &"ab".repeat(32), "f"), Ok([0xab; 32]));
        assert!(invalid(hex32("x", &"ab".repeat(31), "f")));
        assert!(invalid(hex32("x", &"zz".repeat(32), "f")));
        assert!(invalid(sats_field("x", u64::MAX, "f")));
        assert_eq!(normalize_network("Mainnet"), "bitcoin");
        assert_eq!(normalize_network("testnet4"), "testnet");
        assert_eq!(normalize_network("regtest"), "regtest");
    }
}
