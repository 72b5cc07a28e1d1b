//! Paying x402 challenges (the `exact` scheme on EVM chains: a signed EIP-3009
//! `transferWithAuthorization`) from a wallet's EVM key, within a budget per asset, recorded in
//! the same ledger as Lightning payments.
//!
//! The steps, each before the next: choose an `accepts` entry the wallet can pay (its network
//! and asset configured, a sane `maxTimeoutSeconds`); if the ledger holds a payment of this same
//! challenge whose outcome is not known and whose authorisation is still valid, send that one
//! again (on chain a nonce transfers at most once, so this can never pay twice); otherwise
//! reserve a row within the asset's budget ([`Ledger::reserve_x402`], the same `BEGIN
//! IMMEDIATE` reservation as the Lightning path), sign with a random nonce, store the signed
//! payment, send it (`PAYMENT-SIGNATURE` for v2, `X-PAYMENT` for v1) and record the outcome
//! from `PAYMENT-RESPONSE`. A `Turnpike-Credential` in the answer (what the payment bought
//! beyond this call) is kept like an L402 token.
//!
//! [`Ledger::reserve_x402`]: crate::ledger::Ledger::reserve_x402

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use turnpike_l402::credential::Credential;
use turnpike_x402::{
    Address, Network, PayerKey, PaymentRequired, PaymentRequirements, SettleResponse, X402Version,
    keccak256,
};

use crate::budget::{TokenBudget, TokenRefusal, check_tokens};
use crate::ledger::{LedgerError, NewX402Payment, PaymentRow, PaymentState, now_unix};
pub use crate::spend::X402Quote;
use crate::spend::{self, Accounting, process_alive};
use crate::{ClientError, Event, FetchRequest, L402Client};

/// The response header in which Turnpike hands back the credential an x402 payment bought.
pub const TURNPIKE_CREDENTIAL: &str = "turnpike-credential";

/// The longest authorisation window signed: an offer asking for more is not paid (a signed
/// authorisation can be settled by whoever holds it until it expires).
pub const MAX_TIMEOUT_SECONDS: u64 = 3_600;

/// A stored payment is sent again only while it stays valid this much longer (the reference
/// facilitator wants 6 s left).
const REUSE_MARGIN_SECONDS: u64 = 10;

/// Which rail a wallet uses first when a 402 offers both; the other is used when the first
/// cannot pay (not configured, no payable offer, over budget, refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rail {
    /// Lightning (L402): the default.
    #[default]
    L402,
    /// x402 (a stablecoin on an EVM chain).
    X402,
}

impl Rail {
    /// `l402` or `x402`.
    pub fn name(self) -> &'static str {
        match self {
            Rail::L402 => "l402",
            Rail::X402 => "x402",
        }
    }

    /// Both rails, `self` first.
    pub fn order(self) -> [Rail; 2] {
        match self {
            Rail::L402 => [Rail::L402, Rail::X402],
            Rail::X402 => [Rail::X402, Rail::L402],
        }
    }
}

/// An asset the wallet pays with, and its budget.
#[derive(Debug, Clone)]
pub struct PayableAsset {
    /// The chain.
    pub network: Network,
    /// The token contract.
    pub asset: Address,
    /// The token's decimals (for showing amounts only).
    pub decimals: u8,
    /// Limits in base units.
    pub budget: TokenBudget,
    /// A JSON-RPC endpoint of the chain, to ask whether an authorisation of unknown outcome
    /// was used (`authorizationState`); without one such payments stay charged.
    pub rpc_url: Option<reqwest::Url>,
}

impl PayableAsset {
    /// The ledger's name of the asset: `network/address`, lowercase (`eip155:8453/0x8335…`).
    pub fn key(&self) -> String {
        asset_key(self.network, self.asset)
    }

    fn pays(&self, offer: &PaymentRequirements) -> bool {
        offer.network == self.network && offer.asset == self.asset
    }
}

fn asset_key(network: Network, asset: Address) -> String {
    format!("{}/0x{}", network.caip2(), hex::encode(asset.as_slice()))
}

/// The x402 side of a wallet: its key and the assets it pays with, in order of preference.
#[derive(Clone)]
pub struct X402Wallet {
    key: PayerKey,
    assets: Vec<PayableAsset>,
    rpc: reqwest::Client,
}

impl std::fmt::Debug for X402Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X402Wallet")
            .field("key", &self.key)
            .field("assets", &self.assets)
            .finish_non_exhaustive()
    }
}

impl X402Wallet {
    /// A wallet paying from `key` in `assets` (first preferred).
    pub fn new(key: PayerKey, assets: Vec<PayableAsset>) -> Result<X402Wallet, ClientError> {
        turnpike_lightning::ensure_crypto_provider();
        let rpc = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(X402Wallet { key, assets, rpc })
    }

    /// The paying address.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// The configured assets.
    pub fn assets(&self) -> &[PayableAsset] {
        &self.assets
    }

    /// The same wallet with each asset's budget replaced by `f` of it (to lower them).
    pub fn with_budgets(&self, f: impl Fn(&TokenBudget) -> TokenBudget) -> X402Wallet {
        let mut lowered = self.clone();
        for asset in &mut lowered.assets {
            asset.budget = f(&asset.budget);
        }
        lowered
    }

    fn asset_by_key(&self, key: &str) -> Option<&PayableAsset> {
        self.assets.iter().find(|a| a.key() == key)
    }
}

/// What an x402 payment of a fetch did.
#[derive(Debug, Clone, Serialize)]
pub struct X402Receipt {
    /// The ledger row.
    pub ledger_id: i64,
    /// The asset, `network/address`.
    pub asset: String,
    /// The amount, base units.
    pub amount_units: u64,
    /// The token's decimals.
    pub decimals: u8,
    /// The recipient.
    pub pay_to: String,
    /// Whether the server reported (or the chain shows) the transfer settled.
    pub settled: bool,
    /// The settlement's transaction hash, when reported.
    pub transaction: Option<String>,
    /// Whether a payment signed earlier for this same challenge was sent again.
    pub resent: bool,
    /// The ledger state after the answer.
    pub state: PaymentState,
}

/// The quote of the offer the wallet would pay: the first payable one its budget allows, else
/// the first payable one with the refusal.
pub(crate) async fn quote(
    acc: Option<&Accounting>,
    wallet: &X402Wallet,
    req: &FetchRequest,
    required: &PaymentRequired,
) -> Result<X402Quote, ClientError> {
    let candidates = payable_offers(&wallet.assets, &required.accepts);
    let origin = req.url.origin().ascii_serialization();
    let mut first = None;
    for (offer, asset) in candidates {
        let amount = u64::try_from(offer.amount.base_units()).unwrap_or(u64::MAX);
        let refusal = match acc {
            Some(acc) => {
                let spent = acc
                    .ledger
                    .spent_units(
                        &acc.wallet,
                        &asset.key(),
                        &origin,
                        &asset.budget,
                        now_unix(),
                    )
                    .await?;
                check_tokens(&asset.budget, &asset.key(), u128::from(amount), &spent).err()
            }
            None => None,
        };
        let quote = X402Quote {
            url: req.url.to_string(),
            asset: asset.key(),
            amount_units: amount,
            decimals: asset.decimals,
            pay_to: format!("{:#x}", offer.pay_to),
            refusal,
            needs_approval: asset.budget.needs_approval(u128::from(amount)),
        };
        if quote.refusal.is_none() {
            return Ok(quote);
        }
        first.get_or_insert(quote);
    }
    first.ok_or_else(|| ClientError::NoPayableOffer(describe_offers(wallet, required)))
}

/// The offers of a 402 the wallet can pay, best first: in the order of the wallet's assets,
/// then the server's; entries on other networks or assets, or asking for a window longer than
/// [`MAX_TIMEOUT_SECONDS`], are left out.
pub fn payable_offers<'a>(
    assets: &'a [PayableAsset],
    accepts: &'a [PaymentRequirements],
) -> Vec<(&'a PaymentRequirements, &'a PayableAsset)> {
    assets
        .iter()
        .flat_map(|asset| {
            accepts
                .iter()
                .filter(move |offer| asset.pays(offer))
                .map(move |offer| (offer, asset))
        })
        .filter(|(offer, _)| {
            (1..=MAX_TIMEOUT_SECONDS).contains(&offer.max_timeout_seconds)
                && u64::try_from(offer.amount.base_units()).is_ok_and(|a| a <= i64::MAX as u64)
        })
        .collect()
}

/// The x402 part of a 402 answer as read: what it offers and in which version, or why it is
/// unusable.
pub type ReadX402 = Result<(PaymentRequired, X402Version), String>;

/// The x402 part of a 402 answer, if it has one: the v2 `PAYMENT-REQUIRED` header, else a v1
/// JSON body (`x402Version: 1` with `accepts`).
pub fn read_x402(headers: &HeaderMap, body: &[u8]) -> Option<ReadX402> {
    if let Some(value) = headers.get("payment-required") {
        return Some(
            PaymentRequired::from_header(value.as_bytes())
                .map(|r| (r, X402Version::V2))
                .map_err(|e| format!("bad PAYMENT-REQUIRED header: {e}")),
        );
    }
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    if json.get("x402Version").and_then(serde_json::Value::as_u64) != Some(1) {
        return None;
    }
    Some(
        PaymentRequired::from_v1_body(body)
            .map(|r| (r, X402Version::V1))
            .map_err(|e| format!("bad x402 v1 body: {e}")),
    )
}

/// The identity of a challenge for the ledger: method, URL and the terms of the offer, hashed.
/// The same 402 answered again has the same identity.
pub fn challenge_key(req: &FetchRequest, offer: &PaymentRequirements) -> String {
    let mut h = Sha256::new();
    h.update(req.method.as_str().as_bytes());
    h.update(b" ");
    h.update(req.url.as_str().as_bytes());
    h.update(b" ");
    h.update(offer.to_json_v2().to_string().as_bytes());
    hex::encode(h.finalize())
}

use Outcome::Settled;

/// What the answer to a payment says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Settled (the transaction hash when reported).
    Settled(Option<String>),
    /// The server says the settlement failed: no money moved.
    Failed(String),
    /// Not known: the authorisation may still be settled until it expires.
    Unknown(String),
}

/// Reads the outcome of a payment from the answer: `PAYMENT-RESPONSE` (v2) or
/// `X-PAYMENT-RESPONSE` (v1), else a `Turnpike-Credential` (handed back only for a settled
/// payment); anything else leaves it unknown.
pub fn outcome(status: StatusCode, headers: &HeaderMap) -> Outcome {
    let settle = headers
        .get("payment-response")
        .or_else(|| headers.get("x-payment-response"));
    if let Some(value) = settle {
        return match SettleResponse::from_header(value.as_bytes()) {
            Ok(s) if s.success => Settled(s.transaction.map(|t| format!("{t:#x}"))),
            Ok(s) => Outcome::Failed(
                s.error_reason
                    .unwrap_or_else(|| "the settlement failed".to_owned()),
            ),
            Err(e) => Outcome::Unknown(format!("unreadable PAYMENT-RESPONSE: {e}")),
        };
    }
    if headers.contains_key(TURNPIKE_CREDENTIAL) {
        return Settled(None);
    }
    Outcome::Unknown(format!(
        "answered {status} without a settlement report; the authorisation can be settled until \
         it expires"
    ))
}

/// Whether the authorisation `nonce` of `payer` was used (or cancelled) on the token contract:
/// `authorizationState(address,bytes32)` over JSON-RPC.
async fn authorization_used(
    rpc: &reqwest::Client,
    url: &reqwest::Url,
    asset: Address,
    payer: Address,
    nonce: &str,
) -> Result<bool, String> {
    let selector = &keccak256(b"authorizationState(address,bytes32)")[..4];
    let data = format!(
        "0x{}{:0>64}{}",
        hex::encode(selector),
        hex::encode(payer.as_slice()),
        nonce
    );
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
        "params": [{"to": format!("0x{}", hex::encode(asset.as_slice())), "data": data}, "latest"]});
    let answer: serde_json::Value = rpc
        .post(url.clone())
        .json(&call)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let result = answer["result"]
        .as_str()
        .ok_or_else(|| format!("eth_call answered {answer}"))?;
    Ok(result.trim_start_matches("0x").chars().any(|c| c != '0'))
}

/// Asks the chain about a row whose outcome is unknown, when its asset has an RPC endpoint:
/// used → settled; unused after `validBefore` → it can never settle. `None`: still unknown.
async fn ask_chain(wallet: &X402Wallet, row: &PaymentRow, now: u64) -> Option<Outcome> {
    let asset = wallet.asset_by_key(row.asset.as_deref()?)?;
    let url = asset.rpc_url.as_ref()?;
    let payer = row.payer.as_deref()?.parse::<Address>().ok()?;
    match authorization_used(&wallet.rpc, url, asset.asset, payer, &row.payment_hash).await {
        Ok(true) => Some(Settled(row.tx_hash.clone())),
        Ok(false) if row.valid_before.is_some_and(|v| v <= now) => Some(Outcome::Failed(
            "expired unused (authorizationState on chain)".to_owned(),
        )),
        Ok(false) => None,
        Err(e) => {
            tracing::warn!(
                id = row.id,
                "asking the chain about an x402 payment failed: {e}"
            );
            None
        }
    }
}

async fn record(acc: &Accounting, id: i64, outcome: &Outcome) -> Result<(), LedgerError> {
    let now = now_unix();
    match outcome {
        Settled(tx) => acc.ledger.settle_x402(id, tx.as_deref(), now).await,
        Outcome::Failed(reason) => acc.ledger.release(id, reason, now).await,
        Outcome::Unknown(reason) => acc.ledger.mark_unknown(id, reason, now).await,
    }
}

/// Resolves the x402 rows of this wallet left open (by processes that are gone, or with an
/// unknown outcome): a row never signed and sent is released; an expired one is settled or
/// released from the chain when its asset has an RPC endpoint. One still valid stays for the
/// next fetch of its challenge, which sends it again. Runs at the first fetch and before each
/// new x402 reservation.
pub(crate) async fn recover(acc: &Accounting, wallet: &X402Wallet) -> Result<(), LedgerError> {
    let now = now_unix();
    for row in acc.ledger.unresolved(&acc.wallet, "x402").await? {
        if row.state == PaymentState::Reserved && process_alive(row.pid) {
            continue;
        }
        if row.x402_payment.is_none() {
            acc.ledger
                .release(row.id, "never signed and sent (the process stopped)", now)
                .await?;
            continue;
        }
        if row.valid_before.is_some_and(|v| v <= now)
            && let Some(outcome) = ask_chain(wallet, &row, now).await
        {
            record(acc, row.id, &outcome).await?;
        }
    }
    Ok(())
}

/// What asking a person about an x402 payment gave.
enum Approval {
    /// Yes.
    Given,
    /// Not asked: the budget refuses it anyway.
    OverBudget(TokenRefusal),
}

/// Asks the wallet's approver about paying `offer` (above its asset's `approve_above`), unless
/// the budget refuses it anyway; a no, or no one to ask, is [`ClientError::NotApproved`].
async fn approve(
    acc: &Accounting,
    wallet: &X402Wallet,
    req: &FetchRequest,
    required: &PaymentRequired,
    offer: &PaymentRequirements,
) -> Result<Approval, ClientError> {
    let one = PaymentRequired {
        accepts: vec![offer.clone()],
        skipped: Vec::new(),
        ..required.clone()
    };
    let q = quote(Some(acc), wallet, req, &one).await?;
    if let Some(r) = q.refusal {
        return Ok(Approval::OverBudget(r));
    }
    let q = crate::spend::Quote::for_x402(q);
    let yes = match &acc.approver {
        Some(ask) => ask(q.clone()).await,
        None => false,
    };
    if yes {
        Ok(Approval::Given)
    } else {
        Err(ClientError::NotApproved(Box::new(q)))
    }
}

/// The x402 challenge of a 402 answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offered<'a> {
    /// What it offers.
    pub(crate) required: &'a PaymentRequired,
    /// v2 (`PAYMENT-REQUIRED` header) or v1 (JSON body).
    pub(crate) version: X402Version,
    /// The answer's headers (for the server's own JSON of the offers).
    pub(crate) headers: &'a HeaderMap,
}

/// An x402 payment made (or sent again) and its answer.
pub(crate) struct X402Paid {
    pub(crate) response: reqwest::Response,
    pub(crate) receipt: X402Receipt,
}

impl L402Client {
    /// Pays an x402 challenge with `wallet` within its asset budgets, or sends again the
    /// payment of the same challenge still open in the ledger.
    pub(crate) async fn pay_x402(
        &self,
        acc: &Accounting,
        wallet: &X402Wallet,
        req: &FetchRequest,
        origin: &str,
        offered: Offered<'_>,
    ) -> Result<X402Paid, ClientError> {
        let Offered {
            required,
            version,
            headers,
        } = offered;
        let candidates = payable_offers(&wallet.assets, &required.accepts);
        if candidates.is_empty() {
            return Err(ClientError::NoPayableOffer(describe_offers(
                wallet, required,
            )));
        }
        let now = now_unix();
        for (offer, asset) in &candidates {
            let challenge = challenge_key(req, offer);
            if let Some(row) = acc
                .ledger
                .reusable_x402(&acc.wallet, &challenge, now, REUSE_MARGIN_SECONDS)
                .await?
            {
                return self
                    .send_x402(acc, wallet, req, row, (offer, asset), true)
                    .await;
            }
        }
        // Payments whose window closed since (in a long-running `turnpike mcp` too) are
        // resolved from the chain first, so that they stop holding the budget.
        recover(acc, wallet).await?;
        let mut refusal = None;
        for (offer, asset) in candidates {
            let challenge = challenge_key(req, offer);
            let nonce: [u8; 32] = rand::random();
            let payer = format!("{:#x}", wallet.address());
            let asset_key = asset.key();
            let new = NewX402Payment {
                wallet: &acc.wallet,
                url: req.url.as_str(),
                origin,
                asset: &asset_key,
                amount: u64::try_from(offer.amount.base_units())
                    .map_err(|_| LedgerError::OutOfRange(u64::MAX))?,
                nonce,
                valid_before: now.saturating_add(offer.max_timeout_seconds),
                challenge: &challenge,
                payer: &payer,
            };
            if asset.budget.needs_approval(u128::from(new.amount)) {
                match approve(acc, wallet, req, required, offer).await? {
                    Approval::Given => {}
                    Approval::OverBudget(r) => {
                        refusal.get_or_insert(r);
                        continue;
                    }
                }
            }
            let id = match acc.ledger.reserve_x402(&new, &asset.budget, now).await {
                Ok(id) => id,
                Err(LedgerError::OverTokenBudget(r)) => {
                    refusal.get_or_insert(r);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // Signed only now that the reservation is on disk; stored before it is sent.
            let resource = (version == X402Version::V2).then(|| required.resource.clone());
            let payment = match wallet.key.pay(offer, resource, version, now, nonce) {
                Ok(p) => match raw_offer(headers, offer) {
                    Some(entry) => p.with_accepted_json(entry),
                    None => p,
                },
                Err(e) => {
                    acc.ledger.release(id, &e.to_string(), now_unix()).await?;
                    return Err(ClientError::InvalidX402(e.to_string()));
                }
            };
            acc.ledger
                .set_x402_payment(id, &payment.to_header())
                .await?;
            let row = acc
                .ledger
                .payment(id)
                .await?
                .ok_or(ClientError::Unresolved(id))?;
            return self
                .send_x402(acc, wallet, req, row, (offer, asset), false)
                .await;
        }
        Err(refusal.map_or_else(
            || ClientError::NoPayableOffer(describe_offers(wallet, required)),
            ClientError::OverTokenBudget,
        ))
    }

    /// Sends the signed payment of `row` (for `offer` in `asset`) and records what the answer
    /// says.
    async fn send_x402(
        &self,
        acc: &Accounting,
        wallet: &X402Wallet,
        req: &FetchRequest,
        row: PaymentRow,
        (offer, asset): (&PaymentRequirements, &PayableAsset),
        resent: bool,
    ) -> Result<X402Paid, ClientError> {
        let header = row
            .x402_payment
            .as_deref()
            .ok_or(ClientError::Unresolved(row.id))?;
        let version = if header_is_v1(header) {
            X402Version::V1
        } else {
            X402Version::V2
        };
        self.emit(Event::X402Paying {
            asset: asset.key(),
            amount_units: offer.amount.base_units(),
            pay_to: format!("{:#x}", offer.pay_to),
            resent,
        });
        let name = match version {
            X402Version::V2 => "payment-signature",
            X402Version::V1 => "x-payment",
        };
        let response = match self.send_with(req, None, Some((name, header))).await {
            Ok(r) => r,
            Err(e) => {
                acc.ledger
                    .mark_unknown(row.id, &format!("sending failed: {e}"), now_unix())
                    .await?;
                return Err(e);
            }
        };
        if let Some(hook) = &acc.after_payment {
            hook();
        }
        let status = response.status();
        let mut result = outcome(status, response.headers());
        if resent && let Outcome::Failed(reason) = &result {
            // It may have settled when first sent: a refusal now proves nothing.
            result = Outcome::Unknown(format!("sent again and refused: {reason}"));
        }
        if let Outcome::Unknown(_) = result
            && let Some(known) = ask_chain(wallet, &row, now_unix()).await
        {
            result = known;
        }
        record(acc, row.id, &result).await?;
        acc.ledger.set_http_status(row.id, status.as_u16()).await?;
        self.keep_credential(acc, &row, &response).await?;
        let transaction = match &result {
            Settled(tx) => tx.clone(),
            _ => None,
        };
        self.emit(Event::X402Answered {
            settled: matches!(result, Settled(_)),
            transaction: transaction.clone(),
        });
        let state = acc
            .ledger
            .payment(row.id)
            .await?
            .map_or(PaymentState::Unknown, |r| r.state);
        Ok(X402Paid {
            response,
            receipt: X402Receipt {
                ledger_id: row.id,
                asset: asset.key(),
                amount_units: row.amount_units.unwrap_or(0),
                decimals: asset.decimals,
                pay_to: format!("{:#x}", offer.pay_to),
                settled: matches!(result, Settled(_)),
                transaction,
                resent,
                state,
            },
        })
    }

    /// Keeps the `Turnpike-Credential` of an answer as a token for its origin; the answer's
    /// call is taken off it when the call was served.
    async fn keep_credential(
        &self,
        acc: &Accounting,
        row: &PaymentRow,
        response: &reqwest::Response,
    ) -> Result<(), ClientError> {
        if !acc.cache {
            return Ok(());
        }
        let credential = response
            .headers()
            .get(TURNPIKE_CREDENTIAL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Credential::parse_authorization(v).ok().flatten());
        let Some(credential) = credential else {
            return Ok(());
        };
        let served = response.status().is_success();
        if let Some((id, _)) = spend::store_credential(acc, row, credential, served).await?
            && id >= 0
        {
            self.note_remaining(acc, id, response).await?;
        }
        Ok(())
    }
}

/// The server's own JSON of the `accepts` entry `offer` in its `PAYMENT-REQUIRED` header (to
/// echo it verbatim).
fn raw_offer(headers: &HeaderMap, offer: &PaymentRequirements) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let value = headers.get("payment-required")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let json: serde_json::Value =
        serde_json::from_slice(&b64.decode(value.as_bytes()).ok()?).ok()?;
    json.get("accepts")?.as_array()?.iter().find_map(|entry| {
        let mut one = json.clone();
        one["accepts"] = serde_json::Value::Array(vec![entry.clone()]);
        let parsed = PaymentRequired::from_header(b64.encode(one.to_string()).as_bytes()).ok()?;
        (parsed.accepts.first() == Some(offer)).then(|| entry.clone())
    })
}

/// Whether a stored payment header is an x402 v1 payload.
fn header_is_v1(header: &str) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(header)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|j| j.get("x402Version").and_then(serde_json::Value::as_u64))
        == Some(1)
}

/// The offers of a 402 and the wallet's assets, for the error saying none fits.
fn describe_offers(wallet: &X402Wallet, required: &PaymentRequired) -> String {
    let offered: Vec<String> = required
        .accepts
        .iter()
        .map(|o| {
            format!(
                "{} base units of {} (window {} s)",
                o.amount.base_units(),
                asset_key(o.network, o.asset),
                o.max_timeout_seconds
            )
        })
        .chain(required.skipped.iter().map(|e| format!("unsupported: {e}")))
        .collect();
    let accepted: Vec<String> = wallet.assets.iter().map(PayableAsset::key).collect();
    format!(
        "offered [{}]; the wallet pays in [{}] with windows up to {MAX_TIMEOUT_SECONDS} s",
        offered.join("; "),
        accepted.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use turnpike_x402::{ResourceInfo, TokenAmount, TokenDomain};

    use super::*;

    fn addr(b: u8) -> Address {
        Address::from([b; 20])
    }

    fn offer(chain: u64, asset: u8, amount: u128, timeout: u64) -> PaymentRequirements {
        PaymentRequirements {
            network: Network::eip155(chain).unwrap(),
            amount: TokenAmount::from_base_units(amount),
            asset: addr(asset),
            pay_to: addr(0xee),
            max_timeout_seconds: timeout,
            extra: TokenDomain {
                name: "USDC".into(),
                version: "2".into(),
            },
        }
    }

    fn asset(chain: u64, asset: u8) -> PayableAsset {
        PayableAsset {
            network: Network::eip155(chain).unwrap(),
            asset: addr(asset),
            decimals: 6,
            budget: TokenBudget::default(),
            rpc_url: None,
        }
    }

    #[test]
    fn offers_are_chosen_in_the_wallets_order_and_only_when_payable() {
        let wallet = [asset(8453, 1), asset(84532, 2)];
        let accepts = [
            offer(1, 1, 10, 60),                      // another chain
            offer(84532, 2, 20, 60),                  // the wallet's second asset
            offer(8453, 3, 5, 60),                    // another token
            offer(8453, 1, 30, 60),                   // the wallet's first asset
            offer(8453, 1, 1, 86_400),                // a day-long window
            offer(8453, 1, u128::from(u64::MAX), 60), // beyond the ledger's integers
        ];
        let chosen: Vec<u128> = payable_offers(&wallet, &accepts)
            .iter()
            .map(|(o, _)| o.amount.base_units())
            .collect();
        assert_eq!(chosen, [30, 20]);
        assert!(payable_offers(&[], &accepts).is_empty());
        assert_eq!(
            wallet[0].key(),
            format!("eip155:8453/0x{}", "01".repeat(20))
        );
    }

    #[test]
    fn rails_are_tried_in_the_preferred_order() {
        assert_eq!(Rail::default(), Rail::L402);
        assert_eq!(Rail::X402.order(), [Rail::X402, Rail::L402]);
        assert_eq!(Rail::L402.order(), [Rail::L402, Rail::X402]);
    }

    #[test]
    fn the_outcome_comes_from_the_settlement_report() {
        let report = |success: bool| {
            let s = SettleResponse {
                success,
                error_reason: (!success).then(|| "insufficient_funds".to_owned()),
                payer: Some(addr(7)),
                transaction: success.then(|| turnpike_x402::B256::from([0xab; 32])),
                network: Network::eip155(84532).unwrap(),
            };
            let mut h = HeaderMap::new();
            h.insert(
                "payment-response",
                s.to_header(X402Version::V2).parse().unwrap(),
            );
            h
        };
        assert_eq!(
            outcome(StatusCode::OK, &report(true)),
            Settled(Some(format!("0x{}", "ab".repeat(32))))
        );
        assert_eq!(
            outcome(StatusCode::PAYMENT_REQUIRED, &report(false)),
            Outcome::Failed("insufficient_funds".into())
        );
        let mut credential = HeaderMap::new();
        credential.insert(TURNPIKE_CREDENTIAL, "L402 a:b".parse().unwrap());
        assert_eq!(outcome(StatusCode::OK, &credential), Settled(None));
        assert!(matches!(
            outcome(StatusCode::PAYMENT_REQUIRED, &HeaderMap::new()),
            Outcome::Unknown(_)
        ));
        let mut garbage = HeaderMap::new();
        garbage.insert("payment-response", "%%%".parse().unwrap());
        assert!(matches!(
            outcome(StatusCode::OK, &garbage),
            Outcome::Unknown(_)
        ));
    }

    #[test]
    fn the_x402_part_of_a_402_is_read_from_the_header_or_the_v1_body() {
        let required = PaymentRequired::new(
            ResourceInfo {
                url: "http://a/x".into(),
                description: String::new(),
                mime_type: String::new(),
            },
            vec![offer(84532, 1, 10, 60)],
        );
        let mut h = HeaderMap::new();
        h.insert("payment-required", required.to_header().parse().unwrap());
        let (got, v) = read_x402(&h, b"").unwrap().unwrap();
        assert_eq!(
            (got.accepts, v),
            (required.accepts.clone(), X402Version::V2)
        );
        let body = required.to_v1_body().to_string();
        let (got, v) = read_x402(&HeaderMap::new(), body.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.accepts, v),
            (required.accepts.clone(), X402Version::V1)
        );
        assert!(read_x402(&HeaderMap::new(), b"{\"error\": 1}").is_none());
        assert!(read_x402(&HeaderMap::new(), b"not json").is_none());
        let mut bad = HeaderMap::new();
        bad.insert("payment-required", "bm9wZQ==".parse().unwrap());
        assert!(read_x402(&bad, b"").unwrap().is_err());
    }

    proptest! {
        /// Whatever a server offers, only entries on a configured network and asset with a
        /// sane window are chosen, and every such entry is.
        #[test]
        fn only_and_all_payable_offers_are_chosen(
            offers in proptest::collection::vec(
                (prop_oneof![Just(8453u64), Just(84532), Just(1)], 1u8..4, 0u128..1_000_000,
                 0u64..5_000),
                0..8,
            ),
        ) {
            let wallet = [asset(8453, 1), asset(84532, 2)];
            let accepts: Vec<PaymentRequirements> =
                offers.iter().map(|&(c, a, n, t)| offer(c, a, n, t)).collect();
            let chosen = payable_offers(&wallet, &accepts);
            for (o, a) in &chosen {
                prop_assert!(a.pays(o));
                prop_assert!((1..=MAX_TIMEOUT_SECONDS).contains(&o.max_timeout_seconds));
            }
            let payable = accepts
                .iter()
                .filter(|o| wallet.iter().any(|a| a.pays(o)))
                .filter(|o| (1..=MAX_TIMEOUT_SECONDS).contains(&o.max_timeout_seconds))
                .count();
            prop_assert_eq!(chosen.len(), payable);
            // The wallet's first asset comes first.
            let firsts = chosen.iter().take_while(|(_, a)| a.asset == addr(1)).count();
            prop_assert_eq!(firsts, chosen.iter().filter(|(_, a)| a.asset == addr(1)).count());
        }

        /// The challenge identity changes with the URL and with every term of the offer.
        #[test]
        fn the_challenge_key_tells_terms_apart(amount in 1u128..1_000_000, timeout in 1u64..600) {
            let req = FetchRequest::get("http://a/x".parse().unwrap());
            let base = offer(84532, 1, amount, timeout);
            let key = challenge_key(&req, &base);
            prop_assert_eq!(&key, &challenge_key(&req, &base.clone()));
            prop_assert_ne!(&key, &challenge_key(&FetchRequest::get("http://a/y".parse().unwrap()), &base));
            prop_assert_ne!(&key, &challenge_key(&req, &offer(84532, 1, amount + 1, timeout)));
            prop_assert_ne!(&key, &challenge_key(&req, &offer(84532, 1, amount, timeout + 1)));
            prop_assert_ne!(&key, &challenge_key(&req, &offer(84532, 2, amount, timeout)));
        }
    }
}
