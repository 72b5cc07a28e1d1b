//! The admin API's state, kept off the request path's [`Store`](crate::Store): services stored
//! at runtime, revoked tokens, the use of time passes, read-only listings of tokens and
//! payments, and the hub's providers, fee ledger and bills. One [`AdminStore`] implementation
//! serves both databases (`sql.rs`).

use async_trait::async_trait;
use turnpike_l402::{Msat, TokenId};

use crate::StoreError;

/// A service stored through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredService {
    /// The service's name.
    pub name: String,
    /// Its `[[services]]` table as JSON; `None` is a tombstone (the name is deleted, hiding a
    /// config-file service of that name).
    pub config: Option<String>,
    /// When it was last written (unix seconds).
    pub updated_at: u64,
    /// The change sequence number of that write.
    pub seq: u64,
}

/// Which tokens [`AdminStore::list_tokens`] returns, newest issued first.
#[derive(Debug, Clone, Copy)]
pub struct TokenQuery<'a> {
    /// Only tokens minted for this service.
    pub service: Option<&'a str>,
    /// Only paid (used at least once) or only unpaid tokens.
    pub paid: Option<bool>,
    /// At most this many.
    pub limit: u32,
    /// Only tokens issued before this `(issued_at, token_id)` position (the previous page's
    /// last).
    pub before: Option<(u64, TokenId)>,
}

/// A token as the admin API lists it: minted with a 402 challenge, and paid once used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The token.
    pub token_id: TokenId,
    /// The service it was minted for.
    pub service: String,
    /// The invoice's amount.
    pub amount: Msat,
    /// When it was issued (unix seconds).
    pub issued_at: u64,
    /// Whether it was used (so paid).
    pub paid: bool,
    /// Calls it grants (`None`: uncounted, a time pass).
    pub calls_total: Option<u64>,
    /// Calls used so far (0 for an uncounted token).
    pub calls_used: u64,
    /// First use (unix seconds).
    pub first_used: Option<u64>,
    /// Last use known to the store (time passes: at most a minute behind).
    pub last_used: Option<u64>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A payment: a token's first paid use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    /// The token paid for.
    pub token_id: TokenId,
    /// Its service.
    pub service: String,
    /// The amount of its invoice.
    pub amount: Msat,
    /// When it was first used (unix seconds).
    pub paid_at: u64,
}

/// A provider registered on the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    /// Its slug: a DNS label, unique on the hub.
    pub slug: String,
    /// Its display name.
    pub name: String,
    /// How to reach it (an email address or a URL).
    pub contact: String,
    /// Where its invoices are created, as JSON (it may hold an invoice key: never shown).
    pub payout: String,
    /// SHA-256 of its admin token.
    pub token_hash: [u8; 32],
    /// `active` (or, later, `suspended`).
    pub status: String,
    /// When it registered (unix seconds).
    pub created_at: u64,
    /// Until when no platform fee is added to its invoices (unix seconds).
    pub trial_ends_at: u64,
}

/// A token minted for a provider's service: what the provider asked and the fee added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeRecord {
    /// The token.
    pub token_id: TokenId,
    /// Its invoice's payment hash.
    pub payment_hash: turnpike_l402::PaymentHash,
    /// The provider's slug.
    pub provider: String,
    /// The service it was minted for.
    pub service: String,
    /// The provider's price.
    pub price: Msat,
    /// The platform fee added to the invoice (0 in the trial).
    pub fee: Msat,
    /// When it was issued (unix seconds).
    pub issued_at: u64,
}

/// A LUD-21 `verify` URL of an invoice issued for a Lightning-address provider, asked by the
/// replicas' background verifier until the invoice is settled or expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRecord {
    /// The invoice's payment hash (its token's fee row has the same).
    pub payment_hash: turnpike_l402::PaymentHash,
    /// The provider's slug.
    pub provider: String,
    /// The `verify` URL the provider's LNURL service gave.
    pub url: String,
    /// The invoice's amount.
    pub amount: Msat,
    /// When the invoice expires (unix seconds): the row is dropped then.
    pub expires_at: u64,
    /// When it is due a look (unix seconds).
    pub next_at: u64,
    /// The wait after that look, in seconds.
    pub wait_secs: u64,
}

/// What a provider's paid tokens add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeTotals {
    /// The provider's slug.
    pub provider: String,
    /// Tokens whose payment was recognised.
    pub payments: u64,
    /// The provider's prices of those tokens (what it received).
    pub revenue: Msat,
    /// The fees accrued on them.
    pub fees: Msat,
}

/// Where a provider's fees stand: accrued (its paid tokens), how much of that is not yet
/// billed, billed and unpaid, billed and paid, and what the paid bills brought the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeStanding {
    /// The provider's slug.
    pub provider: String,
    /// Tokens whose payment was recognised.
    pub payments: u64,
    /// The provider's prices of those tokens.
    pub revenue: Msat,
    /// The fees accrued on them: `unbilled + billed_unpaid + billed_paid`.
    pub fees: Msat,
    /// Fees not yet on a bill.
    pub unbilled: Msat,
    /// Fees on a bill not yet paid.
    pub billed_unpaid: Msat,
    /// Fees on a paid bill.
    pub billed_paid: Msat,
    /// What the paid bills asked (each rounded down to a whole satoshi): the hub's earnings.
    pub earned: Msat,
}

/// A bill: the hub's Lightning invoice to a provider for fees it owes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRecord {
    /// The invoice's payment hash.
    pub payment_hash: turnpike_l402::PaymentHash,
    /// The provider billed.
    pub provider: String,
    /// The exact sum of the fee rows it covers.
    pub fees: Msat,
    /// What the invoice asks.
    pub amount: Msat,
    /// The invoice.
    pub bolt11: String,
    /// When it was issued (unix seconds).
    pub created_at: u64,
    /// When the provider is suspended if it is still unpaid (unix seconds).
    pub due_at: u64,
    /// When it was seen paid.
    pub paid_at: Option<u64>,
}

/// The admin API's durable state. Obligations: every write takes the next change sequence
/// number in the same transaction, so [`AdminStore::sequence`] grows with every change any
/// replica makes, and a reader that saw sequence N and reads again sees every change after N.
/// It also keeps the services' health for a hub's directory ([`crate::HealthStore`]).
#[async_trait]
pub trait AdminStore: crate::HealthStore + Send + Sync + 'static {
    /// The number of the latest change (0: none). One cheap read, for polling replicas.
    async fn sequence(&self) -> Result<u64, StoreError>;

    /// Every stored service and tombstone, by name.
    async fn stored_services(&self) -> Result<Vec<StoredService>, StoreError>;

    /// Stores `config` (JSON) as the service `name`, or a tombstone when `None`. Returns the
    /// change's sequence number.
    async fn put_service(
        &self,
        name: &str,
        config: Option<&str>,
        now_unix: u64,
    ) -> Result<u64, StoreError>;

    /// Records `token` as revoked (again: nothing changes). Returns the change's sequence
    /// number.
    async fn revoke_token(&self, token: &TokenId, now_unix: u64) -> Result<u64, StoreError>;

    /// Tokens revoked by changes numbered above `after`.
    async fn revocations_since(&self, after: u64) -> Result<Vec<TokenId>, StoreError>;

    /// Tokens, newest issued first (see [`TokenQuery`]).
    async fn list_tokens(&self, query: &TokenQuery<'_>) -> Result<Vec<TokenRecord>, StoreError>;

    /// The latest `limit` payments, newest first.
    async fn recent_payments(&self, limit: u32) -> Result<Vec<PaymentRecord>, StoreError>;

    /// Records a use of an uncounted token (a time pass) at `now_unix`: its first use, or a
    /// later last use.
    async fn note_pass_use(
        &self,
        token: &TokenId,
        service: &str,
        now_unix: u64,
    ) -> Result<(), StoreError>;

    /// Registers a provider (taking the next change sequence number); `None` when its slug or
    /// token hash is taken (then nothing is stored).
    async fn create_provider(&self, provider: &ProviderRecord) -> Result<Option<u64>, StoreError>;

    /// Sets the status of provider `slug` (`active`, `suspended`), taking the next change
    /// sequence number; `None` when there is no such provider (nothing changed).
    async fn set_provider_status(
        &self,
        slug: &str,
        status: &str,
    ) -> Result<Option<u64>, StoreError>;

    /// Replaces the payout (JSON) of provider `slug`, taking the next change sequence number;
    /// `None` when there is no such provider (nothing changed).
    async fn set_provider_payout(
        &self,
        slug: &str,
        payout: &str,
    ) -> Result<Option<u64>, StoreError>;

    /// Every provider, by slug.
    async fn providers(&self) -> Result<Vec<ProviderRecord>, StoreError>;

    /// Records the fee of a token just minted (again for the same token: nothing changes).
    async fn record_fee(&self, fee: &FeeRecord) -> Result<(), StoreError>;

    /// Marks the fee of `token` accrued: its payment was recognised at `now_unix`. Whether this
    /// was the first time (false also for a token with no fee record).
    async fn fee_paid(&self, token: &TokenId, now_unix: u64) -> Result<bool, StoreError>;

    /// Marks the fee of the token whose invoice is `hash` accrued: the payee reported the
    /// invoice settled (LUD-21 `verify`) at `now_unix`. Whether this was the first time.
    async fn fee_paid_by_hash(
        &self,
        hash: &turnpike_l402::PaymentHash,
        now_unix: u64,
    ) -> Result<bool, StoreError>;

    /// Keeps the `verify` URL of an invoice just issued (again for the same invoice: nothing
    /// changes).
    async fn record_verify(&self, verify: &VerifyRecord) -> Result<(), StoreError>;

    /// Drops the `verify` URLs of invoices expired at `now_unix`, then returns at most
    /// `limit` of those due a look at `now_unix`, the most overdue first.
    async fn verify_due(&self, now_unix: u64, limit: u32) -> Result<Vec<VerifyRecord>, StoreError>;

    /// Takes the look at `hash`'s `verify` URL: moves its `next_at` from `seen_next_at` (what
    /// the caller read) to `next.0`, its wait to `next.1`. Whether this caller took it (false:
    /// another replica did first).
    async fn claim_verify(
        &self,
        hash: &turnpike_l402::PaymentHash,
        seen_next_at: u64,
        next: (u64, u64),
    ) -> Result<bool, StoreError>;

    /// Stops asking `hash`'s `verify` URL (settled, expired or unknown to the payee).
    async fn forget_verify(&self, hash: &turnpike_l402::PaymentHash) -> Result<(), StoreError>;

    /// The tokens of every provider (or of `provider` only) whose payment was recognised in
    /// `paid` (unix seconds, end excluded), added up, by slug.
    async fn fee_totals(
        &self,
        provider: Option<&str>,
        paid: std::ops::Range<u64>,
    ) -> Result<Vec<FeeTotals>, StoreError>;

    /// Where the fees of every provider (or of `provider` only) stand, by slug: every provider
    /// with a recognised payment or a bill.
    async fn fee_standing(&self, provider: Option<&str>) -> Result<Vec<FeeStanding>, StoreError>;

    /// Fees owed and not yet billed (payment recognised before `before`), by provider, for
    /// providers with no unpaid bill.
    async fn unbilled_fees(&self, before: u64) -> Result<Vec<(String, Msat)>, StoreError>;

    /// Issues `bill` for the provider's unbilled fee rows paid before `before`, in one
    /// transaction: only if the provider has no unpaid bill and those rows add up to exactly
    /// `bill.fees` (another replica may have billed them meanwhile). Whether it was stored.
    async fn open_bill(&self, bill: &BillRecord, before: u64) -> Result<bool, StoreError>;

    /// Moves the unpaid bill `old` (its invoice expired unpaid) to a new invoice `new` (payment
    /// hash, BOLT11), its fee rows with it, in one transaction: same provider, fees, amount and
    /// due date. Whether it moved (false: paid, or already moved by another replica).
    async fn reissue_bill(
        &self,
        old: &turnpike_l402::PaymentHash,
        new: (&turnpike_l402::PaymentHash, &str),
    ) -> Result<bool, StoreError>;

    /// The unpaid bills of every provider.
    async fn open_bills(&self) -> Result<Vec<BillRecord>, StoreError>;

    /// The latest `limit` bills of `provider` (or of every provider), newest first.
    async fn bills(
        &self,
        provider: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BillRecord>, StoreError>;

    /// Marks a bill paid at `now_unix`; whether this was the first time.
    async fn bill_paid(
        &self,
        hash: &turnpike_l402::PaymentHash,
        now_unix: u64,
    ) -> Result<bool, StoreError>;

    /// A trivial query, to tell whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A token id read from a column.
pub(crate) fn token_id(bytes: Vec<u8>, what: &'static str) -> Result<TokenId, StoreError> {
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| StoreError::Corrupt(what))?;
    Ok(TokenId(bytes))
}
