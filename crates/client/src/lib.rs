//! # turnpike-client
//!
//! An L402 client: it sends a request, and when the server answers `402 Payment Required` with
//! an L402 challenge it checks the challenge, pays the invoice with a Lightning wallet — never
//! more than the price limit — and retries with the credential.
//!
//! Before paying it checks that the invoice's payment hash is the one the macaroon commits to,
//! that the invoice states an amount within the limit, and that it has not expired. The amount
//! comes from the decoded invoice, never from a field the server chose to report.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod budget;
pub mod ledger;
pub mod spend;
pub mod x402pay;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use turnpike_l402::bolt11::Invoice;
use turnpike_l402::challenge::Challenge;
use turnpike_l402::credential::Credential;
use turnpike_l402::identifier::Identifier;
use turnpike_l402::macaroon::Macaroon;
use turnpike_l402::{Msat, PaymentHash, Preimage, Sats};
use turnpike_lightning::{BackendError, PaymentBackend};

use crate::ledger::{LedgerError, NewPayment, PaymentState, Reservation, StoredToken, now_unix};
use crate::spend::{Accounting, Quote, Resolution};
use crate::x402pay::{Rail, X402Receipt, X402Wallet};

/// The most of a 402 answer's body that is read (for a challenge sent as JSON).
pub const MAX_CHALLENGE_BODY: usize = 64 * 1024;

/// The response header in which Turnpike reports the calls a token has left.
pub const CALLS_REMAINING: &str = "turnpike-calls-remaining";

/// Errors of a paid fetch. None of them leaves a payment half done: either the invoice was paid
/// and the error says so, or nothing was paid.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP request failed.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered 402 without a usable L402 challenge.
    #[error("the server asked for payment but sent no usable L402 challenge: {0}")]
    InvalidChallenge(String),
    /// The invoice pays for something other than the macaroon: paying would not unlock it.
    #[error(
        "the invoice's payment hash {invoice} differs from the macaroon's {macaroon}: refusing to pay"
    )]
    HashMismatch {
        /// Hash in the invoice.
        invoice: PaymentHash,
        /// Hash the macaroon commits to.
        macaroon: PaymentHash,
    },
    /// The invoice does not state an amount.
    #[error("the invoice has no amount: refusing to pay an open amount")]
    NoAmount,
    /// The price is above the limit; nothing was paid.
    #[error("the price {price} is above the limit of {limit}: nothing was paid")]
    OverLimit {
        /// Price asked (rounded up to whole sats).
        price: Sats,
        /// Limit in force.
        limit: Sats,
    },
    /// The invoice asks more than the exact amount this client may pay (for instance the
    /// amount a directory listed); nothing was paid.
    #[error("the invoice asks {amount}, above the {limit} this call may pay: nothing was paid")]
    OverAmount {
        /// The invoice's amount.
        amount: Msat,
        /// The most this client pays.
        limit: Msat,
    },
    /// The invoice already expired; nothing was paid.
    #[error("the invoice expired at {expires_at} (unix time): nothing was paid")]
    InvoiceExpired {
        /// When it expired.
        expires_at: u64,
    },
    /// The wallet could not pay.
    #[error("payment failed: {0}")]
    Payment(#[source] BackendError),
    /// The budget refuses the payment; nothing was paid.
    #[error("{0}")]
    OverBudget(budget::Refusal),
    /// The payment needs a person's approval, which was not given; nothing was paid.
    #[error(
        "paying {} needs approval (above approve_above) and none was given: nothing was paid",
        .0.price()
    )]
    NotApproved(Box<Quote>),
    /// The person asked to approve the payment said no; nothing was paid, and the other rail
    /// of the 402 is not tried (the no is about the URL, not the currency).
    #[error("paying {} was declined by the person asked: nothing was paid", .0.price())]
    Declined(Box<Quote>),
    /// The ledger failed; nothing was paid after the failure.
    #[error("{0}")]
    Ledger(LedgerError),
    /// This challenge's payment was started by another run whose outcome the wallet cannot
    /// tell yet; it is not paid again.
    #[error(
        "the payment of this challenge (ledger row {0}) is in flight or its outcome unknown: \
         not paying it again"
    )]
    Unresolved(i64),
    /// An x402 asset's budget refuses the payment; nothing was signed or paid.
    #[error("{0}")]
    OverTokenBudget(budget::TokenRefusal),
    /// The server asks for an x402 payment and the wallet has no `[x402]` settings.
    #[error(
        "the server asks for an x402 (stablecoin) payment and this wallet has no x402 key: \
         nothing was paid"
    )]
    X402NotConfigured,
    /// None of the x402 offers can be paid by this wallet.
    #[error("no x402 offer this wallet can pay: {0}; nothing was paid")]
    NoPayableOffer(String),
    /// The server asks for a Lightning payment and the wallet has no Lightning side.
    #[error(
        "the server asks for a Lightning (L402) payment and this wallet has no Lightning \
         backend (it pays x402 only): nothing was paid"
    )]
    NoLightning,
    /// The x402 part of the 402 is malformed.
    #[error("the server's x402 challenge is unusable: {0}; nothing was paid")]
    InvalidX402(String),
    /// The 402 came from another origin than the URL fetched, after a redirect: the budgets
    /// are kept per origin, so it is not paid.
    #[error(
        "the payment was asked by {answered}, reached by a redirect from {asked}: nothing was \
         paid (fetch the final URL {url} itself to pay it)"
    )]
    RedirectedPayment {
        /// The origin fetched.
        asked: String,
        /// The origin that answered 402.
        answered: String,
        /// The URL that answered 402.
        url: String,
    },
    /// The 402 answer had no challenge in its headers and a body larger than the limit.
    #[error("the 402 answer's body is larger than {MAX_CHALLENGE_BODY} bytes")]
    BodyTooLarge,
}

impl ClientError {
    /// Whether this error was raised before anything could pay: the other rail of a 402 that
    /// offers both may be tried.
    pub fn nothing_paid(&self) -> bool {
        match self {
            ClientError::OverBudget(_)
            | ClientError::OverTokenBudget(_)
            | ClientError::OverLimit { .. }
            | ClientError::OverAmount { .. }
            | ClientError::NotApproved(_)
            | ClientError::Declined(_)
            | ClientError::InvalidChallenge(_)
            | ClientError::HashMismatch { .. }
            | ClientError::NoAmount
            | ClientError::InvoiceExpired { .. }
            | ClientError::X402NotConfigured
            | ClientError::NoLightning
            | ClientError::NoPayableOffer(_)
            | ClientError::InvalidX402(_)
            | ClientError::RedirectedPayment { .. } => true,
            ClientError::Payment(e) => spend::surely_not_sent(e),
            _ => false,
        }
    }

    /// Whether this is a refusal by a budget or a limit (rather than a rail not usable).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ClientError::OverBudget(_)
                | ClientError::OverTokenBudget(_)
                | ClientError::OverLimit { .. }
                | ClientError::OverAmount { .. }
                | ClientError::NotApproved(_)
                | ClientError::Declined(_)
        )
    }

    /// Whether the other rail of a 402 that offers both may be tried after this error: nothing
    /// was paid, and no person said no.
    pub fn may_try_other_rail(&self) -> bool {
        self.nothing_paid() && !matches!(self, ClientError::Declined(_))
    }
}

impl From<LedgerError> for ClientError {
    fn from(e: LedgerError) -> ClientError {
        match e {
            LedgerError::OverBudget(r) => ClientError::OverBudget(r),
            LedgerError::OverTokenBudget(r) => ClientError::OverTokenBudget(r),
            e => ClientError::Ledger(e),
        }
    }
}

/// What happened during a fetch, reported as it happens (for verbose output and ledgers).
#[derive(Debug, Clone)]
pub enum Event {
    /// The server asked for payment.
    Challenged {
        /// The invoice as decoded.
        invoice: Box<Invoice>,
        /// The macaroon's base64 form.
        macaroon: String,
    },
    /// The invoice was paid.
    Paid {
        /// Payment hash.
        payment_hash: PaymentHash,
        /// Preimage received, the proof of payment.
        preimage: Preimage,
        /// Amount paid, fees excluded.
        amount: Msat,
        /// Routing fee.
        fee: Msat,
    },
    /// The request is being sent again with the credential.
    Retrying {
        /// The `Authorization` value sent.
        authorization: String,
    },
    /// An x402 payment is being sent (the signed payment itself is never reported).
    X402Paying {
        /// The asset, `network/address`.
        asset: String,
        /// The amount, base units.
        amount_units: u128,
        /// The recipient.
        pay_to: String,
        /// Whether it is a payment of the same challenge signed earlier, sent again.
        resent: bool,
    },
    /// One rail of a 402 cannot pay (nothing was paid on it); the other is tried if offered.
    RailCannotPay {
        /// `l402` or `x402`.
        rail: &'static str,
        /// Why.
        reason: String,
    },
    /// The answer to an x402 payment.
    X402Answered {
        /// Whether it settled.
        settled: bool,
        /// The transaction, when reported.
        transaction: Option<String>,
    },
}

/// A payment made during a fetch.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// Payment hash.
    pub payment_hash: PaymentHash,
    /// Proof of payment.
    pub preimage: Preimage,
    /// Amount paid, fees excluded.
    pub amount: Msat,
    /// Routing fee.
    pub fee: Msat,
    /// The credential, reusable while the token has calls left.
    pub authorization: String,
}

/// The result of a fetch: the final response (streaming body) and the payment, if one was made.
#[derive(Debug)]
pub struct Fetched {
    /// The final response.
    pub response: reqwest::Response,
    /// The payment made for it, if any.
    pub receipt: Option<Receipt>,
    /// Whether a stored token was used for the final request.
    pub reused_token: bool,
    /// The x402 payment made (or sent again) for it, if any.
    pub x402: Option<X402Receipt>,
}

/// What [`L402Client::quote`] found.
#[derive(Debug)]
pub enum Quoted {
    /// No payment asked: the final response.
    Free(reqwest::Response),
    /// The price of the challenge; nothing was paid.
    Priced(Box<Quote>),
    /// The price of the x402 offer the wallet would pay; nothing was signed or paid.
    X402(Box<x402pay::X402Quote>),
}

impl Quoted {
    /// Whether a budget or limit would refuse this price.
    fn refused(&self) -> bool {
        match self {
            Quoted::Free(_) => false,
            Quoted::Priced(q) => q.refusal.is_some(),
            Quoted::X402(q) => q.refusal.is_some(),
        }
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// HTTP method.
    pub method: Method,
    /// Target URL.
    pub url: reqwest::Url,
    /// Headers to send.
    pub headers: HeaderMap,
    /// Body (kept so the request can be sent again after paying).
    pub body: Option<Bytes>,
}

impl FetchRequest {
    /// A GET request.
    pub fn get(url: reqwest::Url) -> FetchRequest {
        FetchRequest {
            method: Method::GET,
            url,
            headers: HeaderMap::new(),
            body: None,
        }
    }
}

type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// An HTTP client that pays L402 challenges with a wallet, within a price limit.
#[derive(Clone)]
pub struct L402Client {
    http: reqwest::Client,
    wallet: Arc<dyn PaymentBackend>,
    max_price: Sats,
    /// The most one payment may be, exactly (none: `max_price` only).
    max_amount: Option<Msat>,
    max_fee: Msat,
    on_event: Option<EventSink>,
    accounting: Option<Accounting>,
    x402: Option<Arc<X402Wallet>>,
    prefer: Rail,
    lightning: bool,
}

impl std::fmt::Debug for L402Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L402Client")
            .field("wallet", &self.wallet.name())
            .field("max_price", &self.max_price)
            .field("max_fee", &self.max_fee)
            .finish()
    }
}

impl L402Client {
    /// A client paying with `wallet`, refusing any single payment above `max_price`.
    pub fn new(
        wallet: Arc<dyn PaymentBackend>,
        max_price: Sats,
    ) -> Result<L402Client, ClientError> {
        turnpike_lightning::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("turnpike/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(L402Client {
            http,
            wallet,
            max_price,
            max_amount: None,
            max_fee: Msat(10_000),
            on_event: None,
            accounting: None,
            x402: None,
            prefer: Rail::L402,
            lightning: true,
        })
    }

    /// Pays within `accounting`'s budget, recording every payment in its ledger, reusing its
    /// tokens (unless its cache is off) and reserving its `max_fee` per payment.
    pub fn with_accounting(mut self, accounting: Accounting) -> L402Client {
        self.max_fee = accounting.max_fee;
        self.accounting = Some(accounting);
        self
    }

    /// Pays x402 challenges with `wallet` too (only under accounting: budgets per asset and the
    /// ledger are required); `prefer` decides which rail is tried first when a 402 offers both.
    pub fn with_x402(mut self, wallet: Option<X402Wallet>, prefer: Rail) -> L402Client {
        self.x402 = wallet.map(Arc::new);
        self.prefer = prefer;
        self
    }

    /// Marks the wallet as having no Lightning side (it pays x402 only): L402 challenges are
    /// not attempted, nothing is reserved for them.
    pub fn without_lightning(mut self) -> L402Client {
        self.lightning = false;
        self
    }

    /// Sends requests with `http` (for instance one whose resolver refuses private addresses)
    /// instead of the default client.
    pub fn with_http_client(mut self, http: reqwest::Client) -> L402Client {
        self.http = http;
        self
    }

    /// The accounting in use, if any.
    pub fn accounting(&self) -> Option<&Accounting> {
        self.accounting.as_ref()
    }

    /// Refuses any invoice above `limit` msat, exactly (`max_price` is in whole sats): for a
    /// price known in advance to the msat, such as the amount a hub's directory lists.
    pub fn with_max_amount(mut self, limit: Msat) -> L402Client {
        self.max_amount = Some(limit);
        self
    }

    /// Sets the highest routing fee accepted per payment (default 10 sats).
    pub fn with_max_fee(mut self, max_fee: Msat) -> L402Client {
        self.max_fee = max_fee;
        self
    }

    /// Calls `sink` for each step of the handshake.
    pub fn on_event(mut self, sink: impl Fn(&Event) + Send + Sync + 'static) -> L402Client {
        self.on_event = Some(Arc::new(sink));
        self
    }

    fn emit(&self, event: Event) {
        if let Some(sink) = &self.on_event {
            sink(&event);
        }
    }

    async fn send(
        &self,
        req: &FetchRequest,
        authorization: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        self.send_with(req, authorization, None).await
    }

    /// Sends `req` with an `Authorization` and one more header (an x402 payment), if given.
    pub(crate) async fn send_with(
        &self,
        req: &FetchRequest,
        authorization: Option<&str>,
        extra: Option<(&'static str, &str)>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut builder = self
            .http
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(auth) = authorization {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        if let Some((name, value)) = extra {
            builder = builder.header(name, value);
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        Ok(builder.send().await?)
    }

    /// Sends `req`; on a 402 with an L402 challenge, pays (within the limit) and sends it once
    /// more with the credential. A second 402 is returned as it is: it is never paid again.
    ///
    /// With [accounting](L402Client::with_accounting): a stored token for the origin is tried
    /// first (a 401 drops it and the request is sent once without; a fresh 402 for the same
    /// service drops it and the new challenge is paid); orphaned payments of earlier runs are
    /// resolved first; each payment is reserved in the ledger within the budget before it is
    /// sent; concurrent fetches of one service wait for a payment in flight and use its token.
    pub async fn fetch(&self, req: FetchRequest) -> Result<Fetched, ClientError> {
        match &self.accounting {
            Some(acc) => self.fetch_accounted(acc, req).await,
            None => self.fetch_plain(req).await,
        }
    }

    async fn fetch_plain(&self, req: FetchRequest) -> Result<Fetched, ClientError> {
        let first = self.send(&req, None).await?;
        if first.status() != StatusCode::PAYMENT_REQUIRED {
            return Ok(Fetched {
                response: first,
                receipt: None,
                reused_token: false,
                x402: None,
            });
        }
        let (headers, body) = read_402(first).await?;
        let challenge = read_l402_only(&headers, &body)?;
        let invoice = self.check_challenge(&challenge)?;
        self.emit(Event::Challenged {
            invoice: Box::new(invoice.clone()),
            macaroon: challenge.macaroon.to_base64(),
        });

        let payment = self
            .wallet
            .pay_invoice(invoice.as_str(), self.max_fee)
            .await
            .map_err(ClientError::Payment)?;
        turnpike_lightning::check_payment(&invoice, &payment).map_err(ClientError::Payment)?;
        self.emit(Event::Paid {
            payment_hash: payment.payment_hash,
            preimage: payment.preimage,
            amount: payment.amount,
            fee: payment.fee,
        });

        let authorization = Credential {
            macaroon: challenge.macaroon,
            preimage: payment.preimage,
        }
        .authorization_value();
        self.emit(Event::Retrying {
            authorization: authorization.clone(),
        });
        let response = self.send(&req, Some(&authorization)).await?;
        Ok(Fetched {
            response,
            receipt: Some(Receipt {
                payment_hash: payment.payment_hash,
                preimage: payment.preimage,
                amount: payment.amount,
                fee: payment.fee,
                authorization,
            }),
            reused_token: false,
            x402: None,
        })
    }

    async fn fetch_accounted(
        &self,
        acc: &Accounting,
        req: FetchRequest,
    ) -> Result<Fetched, ClientError> {
        acc.recovered
            .get_or_try_init(|| async {
                spend::recover(acc, &*self.wallet).await?;
                match &self.x402 {
                    Some(x) => x402pay::recover(acc, x).await,
                    None => Ok(()),
                }
            })
            .await?;
        let origin = req.url.origin().ascii_serialization();
        let path = req.url.path().to_owned();
        // The token whose use was answered with a 402.
        let mut refused: Option<StoredToken> = None;
        let mut resp = None;
        if acc.cache
            && let Some(token) = acc.ledger.claim_token(&origin, &path, now_unix()).await?
        {
            let r = self.send(&req, Some(&token.authorization)).await?;
            match r.status() {
                StatusCode::PAYMENT_REQUIRED => {
                    refused = Some(token);
                    resp = Some(r);
                }
                StatusCode::UNAUTHORIZED => {
                    acc.ledger.drop_token(token.id).await?;
                }
                _ => return self.used_token(acc, &token, r).await,
            }
        }
        let mut resp = match resp {
            Some(r) => r,
            None => self.send(&req, None).await?,
        };
        // At most three challenges are answered for one fetch.
        for _ in 0..3 {
            if resp.status() != StatusCode::PAYMENT_REQUIRED {
                return Ok(Fetched {
                    response: resp,
                    receipt: None,
                    reused_token: false,
                    x402: None,
                });
            }
            same_origin(&req.url, resp.url())?;
            let (headers, body) = read_402(resp).await?;
            let l402 = read_challenge(&headers, &body);
            let x402 = x402pay::read_x402(&headers, &body);
            let l402 = match (l402, &x402) {
                (Err(e), None) => return Err(e),
                (l402, _) => l402,
            };
            let service = l402
                .as_ref()
                .ok()
                .and_then(|c| spend::token_terms(&c.macaroon).service);
            if let Some(token) = &refused
                && refuses_token(service.as_deref(), token, &path)
            {
                acc.ledger.drop_token(token.id).await?;
            }
            let lock = acc.lock_for(&format!(
                "{origin} {}",
                service.unwrap_or_else(|| path.clone())
            ));
            let guard = lock.lock().await;
            if acc.cache
                && let Some(token) = acc.ledger.claim_token(&origin, &path, now_unix()).await?
                && refused.as_ref().map(|t| t.id) != Some(token.id)
            {
                // Another fetch paid while this one waited: use its token.
                drop(guard);
                let r = self.send(&req, Some(&token.authorization)).await?;
                match r.status() {
                    StatusCode::PAYMENT_REQUIRED => {
                        refused = Some(token);
                        resp = r;
                        continue;
                    }
                    StatusCode::UNAUTHORIZED => {
                        acc.ledger.drop_token(token.id).await?;
                        refused = None;
                        resp = self.send(&req, None).await?;
                        continue;
                    }
                    _ => return self.used_token(acc, &token, r).await,
                }
            }
            let paid = match self
                .pay_some_rail(acc, &req, &origin, l402, x402, &headers)
                .await?
            {
                RailPaid::L402(paid) => paid,
                RailPaid::X402(done) => {
                    drop(guard);
                    return Ok(Fetched {
                        response: done.response,
                        receipt: None,
                        reused_token: false,
                        x402: Some(done.receipt),
                    });
                }
            };
            drop(guard);
            self.emit(Event::Retrying {
                authorization: paid.receipt.authorization.clone(),
            });
            let r = self.send(&req, Some(&paid.receipt.authorization)).await?;
            acc.ledger
                .set_http_status(paid.row, r.status().as_u16())
                .await?;
            if let Some(token) = paid.token {
                // Its call was taken off when it was stored; the server's count still wins.
                self.note_remaining(acc, token, &r).await?;
            }
            return Ok(Fetched {
                response: r,
                receipt: Some(paid.receipt),
                reused_token: false,
                x402: None,
            });
        }
        Ok(Fetched {
            response: resp,
            receipt: None,
            reused_token: false,
            x402: None,
        })
    }

    /// Pays a 402 on one of the rails it offers, the wallet's preferred first; the other is
    /// tried only when the first failed before anything was paid. With both failing, the
    /// error told is a budget's refusal if there was one, else the preferred rail's.
    async fn pay_some_rail(
        &self,
        acc: &Accounting,
        req: &FetchRequest,
        origin: &str,
        l402: Result<Challenge, ClientError>,
        x402: Option<x402pay::ReadX402>,
        headers: &HeaderMap,
    ) -> Result<RailPaid, ClientError> {
        let mut failed: Option<ClientError> = None;
        for (rail, offer) in self.rails_offered(l402, x402) {
            let attempt = match offer {
                Ok(RailOffer::L402(challenge)) => self
                    .pay_l402(acc, req, origin, &challenge)
                    .await
                    .map(RailPaid::L402),
                Ok(RailOffer::X402(wallet, required, version)) => self
                    .pay_x402(
                        acc,
                        &wallet,
                        req,
                        origin,
                        x402pay::Offered {
                            required: &required,
                            version,
                            headers,
                        },
                    )
                    .await
                    .map(RailPaid::X402),
                Err(e) => Err(e),
            };
            match attempt {
                Ok(paid) => return Ok(paid),
                Err(e) if e.may_try_other_rail() => {
                    self.emit(Event::RailCannotPay {
                        rail: rail.name(),
                        reason: e.to_string(),
                    });
                    if failed.as_ref().is_none_or(|f| rank(&e) < rank(f)) {
                        failed = Some(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(failed.unwrap_or_else(|| {
            ClientError::InvalidChallenge("the 402 offers no payment this client knows".into())
        }))
    }

    /// The rails a 402 offers, in the wallet's order of preference: what each would pay, or
    /// why it cannot (an x402 offer and no x402 key, an unreadable challenge).
    fn rails_offered(
        &self,
        l402: Result<Challenge, ClientError>,
        x402: Option<x402pay::ReadX402>,
    ) -> Vec<(Rail, Result<RailOffer, ClientError>)> {
        let mut l402 = Some(l402);
        let mut x402 = x402;
        self.prefer
            .order()
            .into_iter()
            .filter_map(|rail| match rail {
                Rail::L402 => l402.take().map(|c| {
                    let offer = match c {
                        Ok(_) if !self.lightning => Err(ClientError::NoLightning),
                        c => c.map(RailOffer::L402),
                    };
                    (rail, offer)
                }),
                Rail::X402 => x402.take().map(|x| {
                    let offer = match (x, &self.x402) {
                        (_, None) => Err(ClientError::X402NotConfigured),
                        (Err(e), Some(_)) => Err(ClientError::InvalidX402(e)),
                        (Ok((required, version)), Some(wallet)) => {
                            Ok(RailOffer::X402(wallet.clone(), required, version))
                        }
                    };
                    (rail, offer)
                }),
            })
            .collect()
    }

    /// Checks an L402 challenge against `--max-sats` and pays it within the budget.
    async fn pay_l402(
        &self,
        acc: &Accounting,
        req: &FetchRequest,
        origin: &str,
        challenge: &Challenge,
    ) -> Result<Paid, ClientError> {
        // `--max-sats` caps the price of one call; the budget adds the fee reserve.
        let invoice = self.check_challenge(challenge)?;
        self.pay_accounted(acc, req, origin, challenge, &invoice)
            .await
    }

    async fn used_token(
        &self,
        acc: &Accounting,
        token: &StoredToken,
        response: reqwest::Response,
    ) -> Result<Fetched, ClientError> {
        // Its call was taken off when it was claimed.
        self.note_remaining(acc, token.id, &response).await?;
        Ok(Fetched {
            response,
            receipt: None,
            reused_token: true,
            x402: None,
        })
    }

    /// Records the server's `Turnpike-Calls-Remaining` for a token, when sent.
    async fn note_remaining(
        &self,
        acc: &Accounting,
        token: i64,
        response: &reqwest::Response,
    ) -> Result<(), ClientError> {
        let remaining = response
            .headers()
            .get(CALLS_REMAINING)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(n) = remaining {
            acc.ledger.set_calls_remaining(token, n).await?;
        }
        Ok(())
    }

    /// What paying the challenge of `req` would cost, and whether the budget allows it;
    /// nothing is paid. Needs accounting (for the budget); without it only the price is given.
    pub async fn quote(&self, req: FetchRequest) -> Result<Quoted, ClientError> {
        let first = self.send(&req, None).await?;
        if first.status() != StatusCode::PAYMENT_REQUIRED {
            return Ok(Quoted::Free(first));
        }
        let (headers, body) = read_402(first).await?;
        let l402 = read_challenge(&headers, &body);
        let x402 = x402pay::read_x402(&headers, &body);
        // The rail the wallet would pay on: the preferred one unless its budget refuses.
        let mut fallback: Option<Result<Quoted, ClientError>> = None;
        for (_, offer) in self.rails_offered(l402, x402) {
            let quoted = match offer {
                Ok(RailOffer::L402(challenge)) => self.quote_l402(&req, &challenge).await,
                Ok(RailOffer::X402(wallet, required, _)) => {
                    x402pay::quote(self.accounting.as_ref(), &wallet, &req, &required)
                        .await
                        .map(|q| Quoted::X402(Box::new(q)))
                }
                Err(e) => Err(e),
            };
            match quoted {
                Ok(q) if !q.refused() => return Ok(q),
                q => {
                    let better = match (&fallback, &q) {
                        (None, _) => true,
                        (Some(Err(_)), Ok(_)) => true,
                        (Some(Err(f)), Err(e)) => rank(e) < rank(f),
                        _ => false,
                    };
                    if better {
                        fallback = Some(q);
                    }
                }
            }
        }
        fallback.unwrap_or_else(|| {
            Err(ClientError::InvalidChallenge(
                "the 402 offers no payment this client knows".into(),
            ))
        })
    }

    /// The price of an L402 challenge and what the budget says of it.
    async fn quote_l402(
        &self,
        req: &FetchRequest,
        challenge: &Challenge,
    ) -> Result<Quoted, ClientError> {
        let invoice = self.check_challenge(challenge)?;
        let amount = invoice.amount().ok_or(ClientError::NoAmount)?;
        let origin = req.url.origin().ascii_serialization();
        let quote = match &self.accounting {
            Some(acc) => {
                spend::quote(
                    acc,
                    req.url.as_str(),
                    &origin,
                    challenge,
                    &invoice,
                    amount,
                    None,
                )
                .await?
            }
            None => Quote {
                url: req.url.to_string(),
                service: spend::token_terms(&challenge.macaroon).service,
                amount_msat: amount.0,
                reserve_msat: amount.0.saturating_add(self.max_fee.0),
                payment_hash: invoice.payment_hash().to_hex(),
                needs_approval: false,
                refusal: None,
                x402: None,
            },
        };
        Ok(Quoted::Priced(Box::new(quote)))
    }

    /// Reserves, pays, and settles or releases one challenge's payment (the caller holds the
    /// service's lock). The token it buys is stored before the lock is released.
    async fn pay_accounted(
        &self,
        acc: &Accounting,
        req: &FetchRequest,
        origin: &str,
        challenge: &Challenge,
        invoice: &Invoice,
    ) -> Result<Paid, ClientError> {
        let amount = invoice.amount().ok_or(ClientError::NoAmount)?;
        let quote = spend::quote(
            acc,
            req.url.as_str(),
            origin,
            challenge,
            invoice,
            amount,
            None,
        )
        .await?;
        if let Some(refusal) = quote.refusal {
            return Err(ClientError::OverBudget(refusal));
        }
        if quote.needs_approval {
            ask_approval(acc, quote.clone()).await?;
        }
        self.emit(Event::Challenged {
            invoice: Box::new(invoice.clone()),
            macaroon: challenge.macaroon.to_base64(),
        });
        let macaroon_b64 = challenge.macaroon.to_base64();
        let new = NewPayment {
            wallet: &acc.wallet,
            url: req.url.as_str(),
            origin,
            service: quote.service.as_deref(),
            invoice: invoice.as_str(),
            macaroon: &macaroon_b64,
            payment_hash: invoice.payment_hash(),
            amount,
            reserve: Msat(quote.reserve_msat),
        };
        let row_id = match acc
            .ledger
            .reserve(&new, &acc.budget, None, now_unix())
            .await?
        {
            Reservation::New(id) => id,
            Reservation::Existing(row) => {
                // Paid (or being paid) before: never pay the same challenge twice.
                let preimage = match (row.state, row.preimage.as_deref()) {
                    (PaymentState::Paid, Some(p)) => p.parse::<Preimage>().ok(),
                    (PaymentState::Reserved, _) if spend_row_alive(&row) => None,
                    _ => match spend::resolve_row(acc, &*self.wallet, &row).await? {
                        Resolution::Paid(p) => Some(p),
                        _ => None,
                    },
                };
                let preimage = preimage.ok_or(ClientError::Unresolved(row.id))?;
                let token = spend::store_token_for(acc, &row, preimage, true).await?;
                let authorization = token.as_ref().map(|(_, a)| a.clone()).unwrap_or_else(|| {
                    Credential {
                        macaroon: challenge.macaroon.clone(),
                        preimage,
                    }
                    .authorization_value()
                });
                return Ok(Paid {
                    row: row.id,
                    token: token.map(|(id, _)| id).filter(|id| *id >= 0),
                    receipt: Receipt {
                        payment_hash: invoice.payment_hash(),
                        preimage,
                        amount: Msat(row.amount_msat),
                        fee: Msat(row.fee_msat.unwrap_or(0)),
                        authorization,
                    },
                });
            }
        };
        let paid = self
            .wallet
            .pay_invoice(invoice.as_str(), self.max_fee)
            .await;
        let payment = match paid.and_then(|p| {
            turnpike_lightning::check_payment(invoice, &p)?;
            Ok(p)
        }) {
            Ok(p) => p,
            Err(e) => {
                // Did it go out anyway? Ask the wallet before releasing anything.
                let row = acc
                    .ledger
                    .payment(row_id)
                    .await?
                    .ok_or(ClientError::Unresolved(row_id))?;
                match spend::resolve_row(acc, &*self.wallet, &row).await? {
                    Resolution::Paid(_) => {
                        let row = acc.ledger.payment(row_id).await?;
                        let row = row.ok_or(ClientError::Unresolved(row_id))?;
                        let preimage = row
                            .preimage
                            .as_deref()
                            .and_then(|p| p.parse::<Preimage>().ok())
                            .ok_or(ClientError::Unresolved(row_id))?;
                        turnpike_lightning::Payment {
                            payment_hash: invoice.payment_hash(),
                            preimage,
                            amount: Msat(row.amount_msat),
                            fee: Msat(row.fee_msat.unwrap_or(0)),
                        }
                    }
                    Resolution::Unknown if spend::surely_not_sent(&e) => {
                        acc.ledger
                            .release(row_id, &e.to_string(), now_unix())
                            .await?;
                        return Err(ClientError::Payment(e));
                    }
                    _ => return Err(ClientError::Payment(e)),
                }
            }
        };
        if let Some(hook) = &acc.after_payment {
            hook();
        }
        acc.ledger
            .settle(
                row_id,
                payment.amount,
                payment.fee,
                &payment.preimage,
                now_unix(),
            )
            .await?;
        self.emit(Event::Paid {
            payment_hash: payment.payment_hash,
            preimage: payment.preimage,
            amount: payment.amount,
            fee: payment.fee,
        });
        let row = acc
            .ledger
            .payment(row_id)
            .await?
            .ok_or(ClientError::Unresolved(row_id))?;
        let token = if acc.cache {
            spend::store_token_for(acc, &row, payment.preimage, true).await?
        } else {
            None
        };
        let authorization = Credential {
            macaroon: challenge.macaroon.clone(),
            preimage: payment.preimage,
        }
        .authorization_value();
        Ok(Paid {
            row: row_id,
            token: token.map(|(id, _)| id).filter(|id| *id >= 0),
            receipt: Receipt {
                payment_hash: payment.payment_hash,
                preimage: payment.preimage,
                amount: payment.amount,
                fee: payment.fee,
                authorization,
            },
        })
    }

    /// Checks a challenge before paying: same payment hash in invoice and macaroon, an amount,
    /// within the limit, not expired. Returns the decoded invoice.
    pub fn check_challenge(&self, challenge: &Challenge) -> Result<Invoice, ClientError> {
        let invoice = self.check_challenge_terms(challenge)?;
        let amount = invoice.amount().ok_or(ClientError::NoAmount)?;
        let price = amount.to_sats_ceil();
        if price > self.max_price {
            return Err(ClientError::OverLimit {
                price,
                limit: self.max_price,
            });
        }
        if let Some(limit) = self.max_amount.filter(|limit| amount > *limit) {
            return Err(ClientError::OverAmount { amount, limit });
        }
        Ok(invoice)
    }

    /// The checks of [`L402Client::check_challenge`] but the price limit.
    pub fn check_challenge_terms(&self, challenge: &Challenge) -> Result<Invoice, ClientError> {
        let invoice = Invoice::parse(&challenge.invoice)
            .map_err(|e| ClientError::InvalidChallenge(format!("bad invoice: {e}")))?;
        let id = Identifier::decode(challenge.macaroon.identifier())
            .map_err(|e| ClientError::InvalidChallenge(format!("bad macaroon identifier: {e}")))?;
        if id.payment_hash != invoice.payment_hash() {
            return Err(ClientError::HashMismatch {
                invoice: invoice.payment_hash(),
                macaroon: id.payment_hash,
            });
        }
        invoice.amount().ok_or(ClientError::NoAmount)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if invoice.is_expired(now) {
            return Err(ClientError::InvoiceExpired {
                expires_at: invoice.expires_at(),
            });
        }
        Ok(invoice)
    }
}

/// The L402 challenge of a 402 answer, for the paths that pay over Lightning only (no wallet,
/// or a quote): an x402-only challenge says so.
fn read_l402_only(headers: &HeaderMap, body: &[u8]) -> Result<Challenge, ClientError> {
    read_challenge(headers, body).map_err(|e| match x402pay::read_x402(headers, body) {
        Some(_) => ClientError::X402NotConfigured,
        None => e,
    })
}

/// Which error of two rails to tell: a budget's refusal first, then a rail that was offered
/// but could not pay, last an L402 challenge missing or unreadable.
fn rank(e: &ClientError) -> u8 {
    match e {
        e if e.is_refusal() => 0,
        ClientError::InvalidChallenge(_) | ClientError::NoLightning => 2,
        _ => 1,
    }
}

/// What a 402 offers on one rail, usable by this client.
enum RailOffer {
    /// An L402 challenge.
    L402(Challenge),
    /// x402 offers, and the wallet to pay them.
    X402(
        Arc<X402Wallet>,
        turnpike_x402::PaymentRequired,
        turnpike_x402::X402Version,
    ),
}

/// What paying a 402 on one rail did.
enum RailPaid {
    /// Paid over Lightning: the request is still to be sent with the credential.
    L402(Paid),
    /// Paid over x402: the request was sent with the payment; its answer.
    X402(x402pay::X402Paid),
}

/// A payment made under accounting.
struct Paid {
    row: i64,
    token: Option<i64>,
    receipt: Receipt,
}

/// Whether a 402 answered to `token` on `path` shows the token used up or revoked: the
/// challenge names the token's own service, or names none and the token was bought for this
/// very path. A token tried on another path (the origin's newest) whose 402 names no service
/// (x402 only, or an unreadable L402 challenge) may be for something else: it is kept.
fn refuses_token(service: Option<&str>, token: &StoredToken, path: &str) -> bool {
    match service {
        Some(s) => s == token.service,
        None => token.path == path,
    }
}

/// Asks the person about a payment above `approve_above`: a no is
/// [`ClientError::Declined`] (no other rail is tried); no one to
/// ask is [`ClientError::NotApproved`].
pub(crate) async fn ask_approval(acc: &Accounting, quote: Quote) -> Result<(), ClientError> {
    match &acc.approver {
        Some(ask) if ask(quote.clone()).await => Ok(()),
        Some(_) => Err(ClientError::Declined(Box::new(quote))),
        None => Err(ClientError::NotApproved(Box::new(quote))),
    }
}

/// Refuses a 402 that came from another origin than the URL fetched (a redirect): the budget
/// would be charged to the wrong origin, and the payment sent where it was not budgeted.
fn same_origin(asked: &reqwest::Url, answered: &reqwest::Url) -> Result<(), ClientError> {
    if asked.origin() == answered.origin() {
        return Ok(());
    }
    Err(ClientError::RedirectedPayment {
        asked: asked.origin().ascii_serialization(),
        answered: answered.origin().ascii_serialization(),
        url: answered.to_string(),
    })
}

fn spend_row_alive(row: &ledger::PaymentRow) -> bool {
    spend::process_alive(row.pid)
}

/// Reads a 402 answer: its headers, and its body up to [`MAX_CHALLENGE_BODY`] bytes (a
/// larger body is left unread and taken as empty unless the headers lack a challenge).
async fn read_402(mut resp: reqwest::Response) -> Result<(HeaderMap, Bytes), ClientError> {
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_CHALLENGE_BODY {
                    if Challenge::from_headers(&headers).is_ok() {
                        return Ok((headers, Bytes::new()));
                    }
                    return Err(ClientError::BodyTooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            // A body cut short does not matter when the headers carry the challenge.
            Err(_) => break,
        }
    }
    Ok((headers, Bytes::from(body)))
}

/// Reads the challenge from the `WWW-Authenticate` headers, or failing that from a JSON body
/// with `macaroon` (or `token`) and `invoice` fields, as some servers send.
pub fn read_challenge(headers: &HeaderMap, body: &[u8]) -> Result<Challenge, ClientError> {
    let header_err = match Challenge::from_headers(headers) {
        Ok(c) => return Ok(c),
        Err(e) => e.to_string(),
    };
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let Some(json) = json {
        let mac = json
            .get("macaroon")
            .or_else(|| json.get("token"))
            .and_then(|v| v.as_str());
        let inv = json
            .get("invoice")
            .or_else(|| json.get("payment_request"))
            .and_then(|v| v.as_str());
        if let (Some(mac), Some(inv)) = (mac, inv) {
            let macaroon = Macaroon::from_base64(mac)
                .map_err(|e| ClientError::InvalidChallenge(format!("bad macaroon in body: {e}")))?;
            return Ok(Challenge {
                macaroon,
                invoice: inv.to_owned(),
            });
        }
    }
    Err(ClientError::InvalidChallenge(header_err))
}

/// Builds a header map from `Name: value` strings (curl's `-H` syntax).
pub fn parse_header_lines<'a>(
    lines: impl IntoIterator<Item = &'a str>,
) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header {line:?} is not 'Name: value'"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("invalid header name in {line:?}"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("invalid header value in {line:?}"))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Ledger, NewToken};

    /// A client with a ledger and no budget limits; its Lightning wallet is never reached.
    fn accounted_client(url: &reqwest::Url, ledger: &Ledger) -> L402Client {
        let lightning = turnpike_lightning::DevPayWallet::new(url.clone()).unwrap();
        L402Client::new(Arc::new(lightning), Sats(1))
            .unwrap()
            .with_accounting(Accounting::new(
                ledger.clone(),
                "w",
                budget::Budget::default(),
                Msat(0),
            ))
    }

    /// A challenge whose invoice (dev backend) asks `amount`.
    async fn challenge_of(amount: Msat) -> Challenge {
        use turnpike_lightning::InvoiceBackend as _;
        let node = turnpike_lightning::DevBackend::new([7; 32]);
        let invoice = node
            .create_invoice(turnpike_lightning::CreateInvoice {
                amount,
                memo: "t".into(),
                expiry_secs: 600,
            })
            .await
            .unwrap();
        let minter = turnpike_l402::token::Minter::new(
            turnpike_l402::root_key::MasterKey::from_bytes([1; 32]),
        );
        let (macaroon, _) = minter.mint(&turnpike_l402::token::MintRequest {
            payment_hash: invoice.payment_hash,
            service: "s",
            calls: Some(1),
            valid_until: None,
            capabilities: &[],
            max_price_msat: None,
        });
        Challenge {
            macaroon,
            invoice: invoice.bolt11,
        }
    }

    #[tokio::test]
    async fn an_exact_amount_limit_refuses_even_a_msat_more() {
        let url: reqwest::Url = "http://127.0.0.1:1/".parse().unwrap();
        let wallet = turnpike_lightning::DevPayWallet::new(url).unwrap();
        // 21.42 sats listed: the whole-sat limit (22) alone would let 21.999 through.
        let client = L402Client::new(Arc::new(wallet), Sats(22))
            .unwrap()
            .with_max_amount(Msat(21_420));
        assert!(
            client
                .check_challenge(&challenge_of(Msat(21_420)).await)
                .is_ok()
        );
        assert!(
            client
                .check_challenge(&challenge_of(Msat(20_000)).await)
                .is_ok()
        );
        let err = client
            .check_challenge(&challenge_of(Msat(21_421)).await)
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::OverAmount {
                    amount: Msat(21_421),
                    limit: Msat(21_420)
                }
            ),
            "{err}"
        );
        assert!(err.nothing_paid() && err.is_refusal());
        assert!(err.to_string().contains("nothing was paid"), "{err}");
    }

    #[tokio::test]
    async fn a_paid_token_survives_a_402_from_another_path_naming_no_service() {
        // One origin: `/l402` (a Turnpike service bought with a bundle) and `/x402` (x402 only).
        let required = turnpike_x402::PaymentRequired::new(
            turnpike_x402::ResourceInfo {
                url: "http://a/x402".into(),
                description: String::new(),
                mime_type: String::new(),
            },
            Vec::new(),
        );
        let header = required.to_header();
        let app = axum::Router::new().route(
            "/x402",
            axum::routing::get(move || {
                let header = header.clone();
                async move { (StatusCode::PAYMENT_REQUIRED, [("payment-required", header)]) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_in(dir.path()).await.unwrap();
        let bought = ledger
            .store_token(
                &NewToken {
                    origin: &origin,
                    service: "joke",
                    path: "/l402",
                    authorization: "L402 mac:pre",
                    payment_id: None,
                    calls_remaining: Some(5),
                    valid_until: None,
                },
                now_unix(),
            )
            .await
            .unwrap();
        let url: reqwest::Url = format!("{origin}/x402").parse().unwrap();
        let client = accounted_client(&url, &ledger);
        let err = client.fetch(FetchRequest::get(url)).await.unwrap_err();
        assert!(matches!(err, ClientError::X402NotConfigured), "{err}");
        let kept: Vec<i64> = ledger
            .tokens()
            .await
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(kept, [bought]);
    }

    #[test]
    fn a_persons_no_stops_the_fetch_but_no_one_to_ask_tries_the_other_rail() {
        let quote = || {
            Box::new(Quote {
                url: "http://a/".into(),
                service: None,
                amount_msat: 1000,
                reserve_msat: 1000,
                payment_hash: String::new(),
                needs_approval: true,
                refusal: None,
                x402: None,
            })
        };
        let declined = ClientError::Declined(quote());
        assert!(declined.nothing_paid() && declined.is_refusal());
        assert!(!declined.may_try_other_rail());
        assert!(ClientError::NotApproved(quote()).may_try_other_rail());
        assert!(!ClientError::Unresolved(1).may_try_other_rail());
    }

    #[tokio::test]
    async fn a_402_reached_by_a_redirect_to_another_origin_is_not_paid() {
        // `payee` asks for payment; `redirector`, another origin, sends there.
        let payee = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let paid_url = format!("http://{}/paid", payee.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/paid",
            axum::routing::get(|| async { (StatusCode::PAYMENT_REQUIRED, "pay") }),
        );
        tokio::spawn(async move { axum::serve(payee, app).await });
        let redirector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let start: reqwest::Url = format!("http://{}/go", redirector.local_addr().unwrap())
            .parse()
            .unwrap();
        let target = paid_url.clone();
        let app = axum::Router::new().route(
            "/go",
            axum::routing::get(move || {
                let target = target.clone();
                async move { (StatusCode::FOUND, [(header::LOCATION, target)]) }
            }),
        );
        tokio::spawn(async move { axum::serve(redirector, app).await });
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_in(dir.path()).await.unwrap();
        let client = accounted_client(&start, &ledger);
        let err = client.fetch(FetchRequest::get(start)).await.unwrap_err();
        match &err {
            ClientError::RedirectedPayment { url, .. } => assert_eq!(*url, paid_url),
            other => panic!("{other}"),
        }
        assert!(err.nothing_paid());
        assert!(ledger.payments(None, None).await.unwrap().is_empty());
        // The same origin, whatever the path: paid as usual.
        let here: reqwest::Url = "http://a:1/x".parse().unwrap();
        assert!(same_origin(&here, &"http://a:1/y?z".parse().unwrap()).is_ok());
        assert!(same_origin(&here, &"https://a:1/x".parse().unwrap()).is_err());
    }

    #[test]
    fn a_402_drops_a_token_only_for_its_service_or_its_own_path() {
        let token = StoredToken {
            id: 1,
            origin: "http://a".into(),
            service: "joke".into(),
            path: "/joke".into(),
            authorization: String::new(),
            payment_id: None,
            calls_remaining: Some(1),
            valid_until: None,
            created_at: 0,
        };
        assert!(refuses_token(Some("joke"), &token, "/other"));
        assert!(!refuses_token(Some("other"), &token, "/joke"));
        assert!(refuses_token(None, &token, "/joke"));
        assert!(!refuses_token(None, &token, "/other"));
    }
}
