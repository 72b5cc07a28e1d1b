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
    /// The invoice already expired; nothing was paid.
    #[error("the invoice expired at {expires_at} (unix time): nothing was paid")]
    InvoiceExpired {
        /// When it expired.
        expires_at: u64,
    },
    /// The wallet could not pay.
    #[error("payment failed: {0}")]
    Payment(#[source] BackendError),
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
    max_fee: Msat,
    on_event: Option<EventSink>,
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
            max_fee: Msat(10_000),
            on_event: None,
        })
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
        let mut builder = self
            .http
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(auth) = authorization {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        Ok(builder.send().await?)
    }

    /// Sends `req`; on a 402 with an L402 challenge, pays (within the limit) and sends it once
    /// more with the credential. A second 402 is returned as it is: it is never paid again.
    pub async fn fetch(&self, req: FetchRequest) -> Result<Fetched, ClientError> {
        let first = self.send(&req, None).await?;
        if first.status() != StatusCode::PAYMENT_REQUIRED {
            return Ok(Fetched {
                response: first,
                receipt: None,
            });
        }
        let headers = first.headers().clone();
        let body = first.bytes().await.unwrap_or_default();
        let challenge = read_challenge(&headers, &body)?;
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
        })
    }

    /// Checks a challenge before paying: same payment hash in invoice and macaroon, an amount,
    /// within the limit, not expired. Returns the decoded invoice.
    pub fn check_challenge(&self, challenge: &Challenge) -> Result<Invoice, ClientError> {
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
        let amount = invoice.amount().ok_or(ClientError::NoAmount)?;
        let price = amount.to_sats_ceil();
        if price > self.max_price {
            return Err(ClientError::OverLimit {
                price,
                limit: self.max_price,
            });
        }
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
