//! # turnpike-lightning
//!
//! Lightning backends behind two traits:
//!
//! - [`InvoiceBackend`], used by the gateway (the payee): create invoices and look them up.
//! - [`PaymentBackend`], used by clients (the payer): pay invoices and report a balance.
//!
//! Shipped backends: [`dev::DevBackend`] (an in-process fake node that moves no real money, for
//! demos and tests; it implements both traits) and [`dev_wallet::DevPayWallet`] (a payer that
//! settles through a gateway's dev pay endpoint). Real backends (LNbits, LND, Core Lightning,
//! phoenixd, NWC) implement the same traits, and [`lnurl::LnAddressBackend`] makes a Lightning
//! address (LUD-16/06/21) a payee. [`net_guard`] is the SSRF guard for URLs a third party gave.
//!
//! All amounts are integer millisatoshis ([`Msat`]). The rules every backend applies (checks on
//! invoice requests, on issued invoices, before paying, on payments, body limits) are in
//! [`rules`]; every payer must check what its backend returns with [`check_payment`] before
//! trusting a preimage.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use async_trait::async_trait;
pub use turnpike_l402::{Msat, PaymentHash, Preimage, Sats};

pub mod cln;
pub mod config;
pub mod dev;
pub mod dev_wallet;
mod http;
pub mod lnbits;
pub mod lnd;
pub mod lnurl;
pub mod net_guard;
pub mod nwc;
pub mod phoenixd;
pub mod relay_guard;
pub mod rules;
pub mod secret;
pub mod spend_rights;

pub use dev::DevBackend;
pub use dev_wallet::DevPayWallet;
pub use http::ensure_crypto_provider;
pub use rules::check_payment;
pub use secret::{Secret, SecretError, SecretSource};

/// A request to create an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateInvoice {
    /// Amount to request; must be positive.
    pub amount: Msat,
    /// Description shown to the payer (the BOLT11 `d` field). At most 639 bytes.
    pub memo: String,
    /// Seconds from creation until the invoice expires; must be positive.
    pub expiry_secs: u32,
}

/// An invoice a backend has created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedInvoice {
    /// The BOLT11 text to hand to the payer.
    pub bolt11: String,
    /// The invoice's payment hash.
    pub payment_hash: PaymentHash,
    /// The amount requested.
    pub amount: Msat,
    /// Expiry time, unix seconds.
    pub expires_at: u64,
}

/// Where an invoice stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceState {
    /// Not paid yet, still payable.
    Pending,
    /// Paid: the preimage is the proof of payment.
    Settled {
        /// The preimage released by the payment.
        preimage: Preimage,
        /// When it was settled, unix seconds.
        settled_at: u64,
    },
    /// Not paid before its expiry; can no longer be paid.
    Expired,
    /// Canceled by the node before payment; can no longer be paid.
    Canceled,
}

impl InvoiceState {
    /// Whether the invoice has been paid.
    pub fn is_settled(&self) -> bool {
        matches!(self, InvoiceState::Settled { .. })
    }

    /// Whether the state can no longer change (settled, expired or canceled).
    pub fn is_final(&self) -> bool {
        !matches!(self, InvoiceState::Pending)
    }
}

/// The state of one invoice, as reported by [`InvoiceBackend::lookup_invoice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvoiceStatus {
    /// The invoice's payment hash.
    pub payment_hash: PaymentHash,
    /// The amount requested.
    pub amount: Msat,
    /// Where it stands.
    pub state: InvoiceState,
}

/// A completed outgoing payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    /// The payment hash of the invoice paid.
    pub payment_hash: PaymentHash,
    /// The preimage received: proof of payment.
    pub preimage: Preimage,
    /// The amount delivered to the payee (excluding fees).
    pub amount: Msat,
    /// Routing fees paid.
    pub fee: Msat,
}

/// Where an outgoing payment stands, as reported by [`PaymentBackend::lookup_payment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutgoingState {
    /// Sent and not resolved yet: it may still succeed or fail.
    Pending,
    /// Paid: the preimage (checked against the hash) is the proof.
    Succeeded(Payment),
    /// Failed for good: no money left the wallet for it and it will not.
    Failed(String),
    /// The wallet has no record of a payment with this hash.
    Unknown,
}

impl OutgoingState {
    /// A [`OutgoingState::Succeeded`] after checking that `preimage` hashes to `hash`;
    /// [`BackendError::InvalidResponse`] otherwise.
    pub fn succeeded(
        hash: &PaymentHash,
        preimage: Preimage,
        amount: Msat,
        fee: Msat,
    ) -> Result<OutgoingState, BackendError> {
        rules::check_preimage(hash, &preimage, "the payment reported")?;
        Ok(OutgoingState::Succeeded(Payment {
            payment_hash: *hash,
            preimage,
            amount,
            fee,
        }))
    }
}

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached (connection refused, DNS, TLS, 502/503/504...).
    #[error("lightning backend unreachable: {0}")]
    Unreachable(String),
    /// The backend did not answer in time.
    #[error("lightning backend timed out")]
    Timeout,
    /// The backend refused our credentials.
    #[error("lightning backend refused our credentials: {0}")]
    Unauthorized(String),
    /// The backend answered something we cannot use (bad JSON, wrong preimage...).
    #[error("invalid response from lightning backend: {0}")]
    InvalidResponse(String),
    /// The backend refused the request (routing failure, bad invoice, limits...).
    #[error("lightning backend rejected the request: {0}")]
    Rejected(String),
    /// Not enough funds to pay.
    #[error("insufficient balance")]
    InsufficientBalance,
    /// The invoice has already been paid.
    #[error("the invoice has already been paid")]
    AlreadyPaid,
    /// The invoice has expired.
    #[error("the invoice has expired")]
    InvoiceExpired,
    /// The backend does not know this invoice.
    #[error("unknown invoice")]
    UnknownInvoice,
    /// The backend cannot do this at all.
    #[error("not supported by this backend: {0}")]
    Unsupported(&'static str),
}

impl BackendError {
    /// Whether retrying the same call later may succeed (unreachable or timed out).
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Unreachable(_) | BackendError::Timeout)
    }

    /// A stable snake_case code for this kind of error, for JSON error bodies and metrics:
    /// `unreachable`, `timeout`, `unauthorized`, `invalid_response`, `rejected`,
    /// `insufficient_balance`, `already_paid`, `invoice_expired`, `unknown_invoice`,
    /// `unsupported`.
    pub fn code(&self) -> &'static str {
        match self {
            BackendError::Unreachable(_) => "unreachable",
            BackendError::Timeout => "timeout",
            BackendError::Unauthorized(_) => "unauthorized",
            BackendError::InvalidResponse(_) => "invalid_response",
            BackendError::Rejected(_) => "rejected",
            BackendError::InsufficientBalance => "insufficient_balance",
            BackendError::AlreadyPaid => "already_paid",
            BackendError::InvoiceExpired => "invoice_expired",
            BackendError::UnknownInvoice => "unknown_invoice",
            BackendError::Unsupported(_) => "unsupported",
        }
    }
}

/// What a backend reports about itself, for `turnpike backend check`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Backend kind, e.g. `"lnbits"`.
    pub backend: &'static str,
    /// Node alias or wallet name, when known.
    pub alias: Option<String>,
    /// Node public key (hex), when known.
    pub node_id: Option<String>,
    /// Network (`bitcoin`, `testnet`, `signet`, `regtest`), when known.
    pub network: Option<String>,
    /// Spendable balance, when the credentials allow reading it.
    pub balance: Option<Msat>,
}

/// Backends that can describe themselves: reaching the backend, checking the credentials and
/// reading what it reports. Errors are precise (unreachable, unauthorized, TLS, wrong network).
#[async_trait]
pub trait Diagnose: Send + Sync + 'static {
    /// Connects and reports what the backend says about itself.
    async fn info(&self) -> Result<NodeInfo, BackendError>;
}

/// The payee side of a Lightning node, used by the gateway.
#[async_trait]
pub trait InvoiceBackend: Send + Sync + 'static {
    /// A short name for logs and metrics, e.g. `"dev"` or `"lnbits"`.
    fn name(&self) -> &'static str;

    /// Creates an invoice for `req.amount`.
    async fn create_invoice(&self, req: CreateInvoice) -> Result<IssuedInvoice, BackendError>;

    /// Reports the state of an invoice this backend created; [`BackendError::UnknownInvoice`]
    /// when it does not know (or no longer remembers) it.
    async fn lookup_invoice(&self, hash: &PaymentHash) -> Result<InvoiceStatus, BackendError>;
}

/// The payer side of a Lightning wallet, used by clients.
#[async_trait]
pub trait PaymentBackend: Send + Sync + 'static {
    /// A short name for logs and metrics, e.g. `"dev-wallet"` or `"lnbits"`.
    fn name(&self) -> &'static str;

    /// Pays a BOLT11 invoice, spending at most `max_fee` in routing fees. Implementations must
    /// verify the result with [`check_payment`] before returning it.
    async fn pay_invoice(&self, bolt11: &str, max_fee: Msat) -> Result<Payment, BackendError>;

    /// The spendable balance.
    async fn balance(&self) -> Result<Msat, BackendError>;

    /// Looks up an outgoing payment of this wallet by payment hash: pending, succeeded (with
    /// a preimage checked against the hash, the amount and the fee), failed, or unknown to the
    /// wallet. Used to resolve payments whose outcome a crashed process never saw.
    async fn lookup_payment(&self, hash: &PaymentHash) -> Result<OutgoingState, BackendError>;
}

/// The current time, unix seconds (0 if the system clock is before 1970).
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use turnpike_l402::bolt11::Invoice;

    use super::*;

    #[test]
    fn check_payment_accepts_only_the_right_preimage() {
        let backend = DevBackend::random();
        let issued = tokio_test_block_on(backend.create_invoice(CreateInvoice {
            amount: Msat(1000),
            memo: "x".into(),
            expiry_secs: 60,
        }))
        .unwrap();
        let invoice = Invoice::parse(&issued.bolt11).unwrap();
        let good = tokio_test_block_on(backend.pay_invoice(&issued.bolt11, Msat(0))).unwrap();
        assert_eq!(check_payment(&invoice, &good), Ok(()));

        let wrong_preimage = Payment {
            preimage: Preimage([0; 32]),
            ..good
        };
        assert!(matches!(
            check_payment(&invoice, &wrong_preimage),
            Err(BackendError::InvalidResponse(_))
        ));
        // A preimage for another hash, reported under that other hash.
        let other = Preimage([1; 32]);
        let mismatched = Payment {
            payment_hash: other.payment_hash(),
            preimage: other,
            ..good
        };
        assert!(matches!(
            check_payment(&invoice, &mismatched),
            Err(BackendError::InvalidResponse(_))
        ));
    }

    #[test]
    fn transient_errors() {
        assert!(BackendError::Timeout.is_transient());
        assert!(BackendError::Unreachable("x".into()).is_transient());
        assert!(!BackendError::AlreadyPaid.is_transient());
        assert!(!BackendError::Rejected("x".into()).is_transient());
        assert_eq!(BackendError::InvoiceExpired.code(), "invoice_expired");
    }

    fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }
}
