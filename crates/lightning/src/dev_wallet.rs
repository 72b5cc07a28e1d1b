//! A payer for gateways running the dev backend: it "pays" by asking the gateway's dev pay
//! endpoint to settle the invoice. **It moves no real money.**
//!
//! Wire protocol (the gateway side uses [`DevPayRequest`] and [`DevPayResponse`] too):
//!
//! - `POST <origin>/_turnpike/dev/pay` with JSON `{"invoice": "<bolt11>"}`
//! - success: `200 {"preimage": "<64 hex>"}`
//! - failure: non-2xx `{"error": {"code": "<code>", "message": "<text>"}}`, where `code` is a
//!   [`BackendError::code`] such as `already_paid`, `invoice_expired` or `unknown_invoice`.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::http::{self, snippet};
use crate::rules;
use crate::{BackendError, Msat, OutgoingState, Payment, PaymentBackend, PaymentHash, Preimage};

/// Path of the gateway's dev pay endpoint.
pub const DEV_PAY_PATH: &str = "/_turnpike/dev/pay";

/// Default time allowed to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default time allowed for a whole pay call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Body of a dev pay request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevPayRequest {
    /// The BOLT11 invoice to settle.
    pub invoice: String,
}

/// Body of a successful dev pay response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevPayResponse {
    /// The preimage, 64 hex characters.
    pub preimage: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    message: String,
}

/// Why a [`DevPayWallet`] could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DevWalletError {
    /// The URL is not an `http` or `https` URL that can carry a path.
    #[error("invalid dev pay URL: {0}")]
    InvalidUrl(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
}

/// A [`PaymentBackend`] that pays through a gateway's dev pay endpoint. **It moves no real
/// money**: it only works against a gateway running the dev backend.
///
/// Every preimage the gateway returns is checked against the invoice's payment hash.
#[derive(Debug, Clone)]
pub struct DevPayWallet {
    client: reqwest::Client,
    endpoint: Url,
}

impl DevPayWallet {
    /// A wallet posting to `endpoint` (the full URL of the dev pay endpoint), with the default
    /// timeouts (connect 5 s, total 30 s).
    pub fn new(endpoint: Url) -> Result<Self, DevWalletError> {
        Self::with_timeouts(endpoint, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT)
    }

    /// A wallet for the gateway at `origin` (scheme, host and port; any path is ignored),
    /// posting to `<origin>/_turnpike/dev/pay`.
    pub fn for_origin(origin: &Url) -> Result<Self, DevWalletError> {
        Self::new(endpoint_for_origin(origin)?)
    }

    /// Like [`DevPayWallet::new`], with explicit timeouts: `connect` to establish a connection,
    /// `total` for a whole call. Exceeding either gives [`BackendError::Timeout`].
    pub fn with_timeouts(
        endpoint: Url,
        connect: Duration,
        total: Duration,
    ) -> Result<Self, DevWalletError> {
        check_http_url(&endpoint)?;
        let client = http::client(connect, total)
            .map_err(|e| DevWalletError::HttpClient(http::error_chain(&e)))?;
        Ok(DevPayWallet { client, endpoint })
    }

    /// The URL this wallet posts to.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }
}

fn check_http_url(url: &Url) -> Result<(), DevWalletError> {
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(()),
        _ => Err(DevWalletError::InvalidUrl(format!(
            "{url} is not an http(s) URL with a host"
        ))),
    }
}

fn endpoint_for_origin(origin: &Url) -> Result<Url, DevWalletError> {
    check_http_url(origin)?;
    origin
        .join(DEV_PAY_PATH)
        .map_err(|e| DevWalletError::InvalidUrl(format!("{origin}: {e}")))
}

const NO_DEV_ENDPOINT: &str =
    "the gateway has no dev pay endpoint (is it running the dev backend?)";

/// Maps a non-2xx answer of the dev pay endpoint to a [`BackendError`].
fn map_error_response(status: StatusCode, body: &[u8]) -> BackendError {
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        let message = if error.message.is_empty() {
            format!("HTTP {status}: {}", error.code)
        } else {
            error.message
        };
        return match error.code.as_str() {
            "already_paid" => BackendError::AlreadyPaid,
            "invoice_expired" => BackendError::InvoiceExpired,
            "unknown_invoice" => BackendError::UnknownInvoice,
            "insufficient_balance" => BackendError::InsufficientBalance,
            "unauthorized" => BackendError::Unauthorized(message),
            "timeout" => BackendError::Timeout,
            "unreachable" => BackendError::Unreachable(message),
            // The gateway answers this when it does not run the dev backend.
            "not_found" => BackendError::Unsupported(NO_DEV_ENDPOINT),
            _ if is_gateway_unavailable(status) => BackendError::Unreachable(message),
            _ => BackendError::Rejected(message),
        };
    }
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            BackendError::Unauthorized(format!("HTTP {status}"))
        }
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            BackendError::Unsupported(NO_DEV_ENDPOINT)
        }
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => BackendError::Timeout,
        s if is_gateway_unavailable(s) => BackendError::Unreachable(format!("HTTP {s}")),
        s => BackendError::Rejected(format!("HTTP {s}: {}", snippet(body))),
    }
}

fn is_gateway_unavailable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

#[async_trait]
impl PaymentBackend for DevPayWallet {
    fn name(&self) -> &'static str {
        "dev-wallet"
    }

    /// Asks the gateway to settle `bolt11` and checks the preimage it returns. Fees are zero.
    async fn pay_invoice(&self, bolt11: &str, _max_fee: Msat) -> Result<Payment, BackendError> {
        let (invoice, amount) = rules::check_payable(bolt11, crate::now_unix())?;

        let resp = self
            .client
            .post(self.endpoint.clone())
            .json(&DevPayRequest {
                invoice: invoice.as_str().to_owned(),
            })
            .send()
            .await
            .map_err(|e| http::map_transport_error(&e))?;
        let status = resp.status();
        let body = http::read_limited(resp, rules::MAX_RESPONSE_BYTES).await?;
        if !status.is_success() {
            return Err(map_error_response(status, &body));
        }

        let answer: DevPayResponse = serde_json::from_slice(&body).map_err(|e| {
            BackendError::InvalidResponse(format!("expected {{\"preimage\": \"<hex>\"}}: {e}"))
        })?;
        let preimage: Preimage = answer.preimage.parse().map_err(|_| {
            BackendError::InvalidResponse("the preimage is not 64 hex characters".into())
        })?;
        let payment = Payment {
            payment_hash: invoice.payment_hash(),
            preimage,
            amount,
            fee: Msat::ZERO,
        };
        rules::check_paid("dev-wallet", &invoice, payment, Msat::ZERO)
    }

    /// Always [`BackendError::Unsupported`]: the dev wallet has no funds of its own.
    async fn balance(&self) -> Result<Msat, BackendError> {
        Err(BackendError::Unsupported("the dev wallet has no balance"))
    }

    /// `GET <endpoint>/<payment hash>`: the gateway reports its dev invoice's state. The dev
    /// payer and payee are one node, so a settled invoice is a succeeded payment, an expired
    /// or canceled one failed, and an open or unknown one was never paid.
    async fn lookup_payment(&self, hash: &PaymentHash) -> Result<OutgoingState, BackendError> {
        let url = self
            .endpoint
            .join(&format!("{}/{}", DEV_PAY_PATH, hash.to_hex()))
            .map_err(|e| BackendError::InvalidResponse(format!("lookup URL: {e}")))?;
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| http::map_transport_error(&e))?;
        let status = resp.status();
        let body = http::read_limited(resp, rules::MAX_RESPONSE_BYTES).await?;
        if !status.is_success() {
            return match map_error_response(status, &body) {
                BackendError::UnknownInvoice => Ok(OutgoingState::Unknown),
                e => Err(e),
            };
        }
        let answer: DevLookupResponse = serde_json::from_slice(&body).map_err(|e| {
            BackendError::InvalidResponse(format!("dev payment lookup answer: {e}"))
        })?;
        match answer.state.as_str() {
            "settled" => {
                let preimage: Preimage = answer
                    .preimage
                    .as_deref()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|_| {
                        BackendError::InvalidResponse(
                            "a settled dev invoice without a 64 hex character preimage".into(),
                        )
                    })?;
                OutgoingState::succeeded(hash, preimage, Msat(answer.amount_msat), Msat::ZERO)
            }
            "expired" | "canceled" => Ok(OutgoingState::Failed(format!(
                "the invoice is {}",
                answer.state
            ))),
            "pending" => Ok(OutgoingState::Unknown),
            other => Err(BackendError::InvalidResponse(format!(
                "unknown dev invoice state {:?}",
                snippet(other.as_bytes())
            ))),
        }
    }
}

/// Body of a dev payment lookup (`GET /_turnpike/dev/pay/<payment hash>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevLookupResponse {
    /// `pending`, `settled`, `expired` or `canceled`.
    pub state: String,
    /// The invoice's amount, msat.
    pub amount_msat: u64,
    /// The preimage (64 hex), when settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preimage: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::Json;
    use axum::extract::State;
    use axum::http::StatusCode as AxumStatus;
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use serde_json::json;

    use super::*;
    use crate::{CreateInvoice, DevBackend, InvoiceBackend};

    fn init() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    /// A minimal gateway dev pay endpoint over a shared [`DevBackend`].
    async fn pay_handler(
        State(backend): State<Arc<DevBackend>>,
        Json(req): Json<DevPayRequest>,
    ) -> Response {
        match backend.pay_invoice(&req.invoice, Msat(0)).await {
            Ok(p) => Json(DevPayResponse {
                preimage: p.preimage.to_hex(),
            })
            .into_response(),
            Err(e) => {
                let status = match e {
                    BackendError::UnknownInvoice => AxumStatus::NOT_FOUND,
                    BackendError::AlreadyPaid | BackendError::InvoiceExpired => {
                        AxumStatus::CONFLICT
                    }
                    _ => AxumStatus::BAD_REQUEST,
                };
                let body = json!({"error": {"code": e.code(), "message": e.to_string()}});
                (status, Json(body)).into_response()
            }
        }
    }

    async fn serve(router: axum::Router) -> Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Url::parse(&format!("http://{addr}")).unwrap()
    }

    async fn gateway() -> (Arc<DevBackend>, Url) {
        let backend = Arc::new(DevBackend::random());
        let router = axum::Router::new()
            .route(DEV_PAY_PATH, post(pay_handler))
            .with_state(Arc::clone(&backend));
        let origin = serve(router).await;
        (backend, origin)
    }

    async fn invoice(backend: &DevBackend) -> crate::IssuedInvoice {
        backend
            .create_invoice(CreateInvoice {
                amount: Msat(21_000),
                memo: "test".into(),
                expiry_secs: 600,
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn pays_through_the_gateway() {
        init();
        let (backend, origin) = gateway().await;
        let wallet = DevPayWallet::for_origin(&origin).unwrap();
        let issued = invoice(&backend).await;

        let payment = wallet.pay_invoice(&issued.bolt11, Msat(0)).await.unwrap();
        assert_eq!(payment.payment_hash, issued.payment_hash);
        assert!(payment.preimage.matches(&issued.payment_hash));
        assert_eq!(payment.amount, Msat(21_000));
        assert_eq!(payment.fee, Msat(0));
        assert!(
            backend
                .lookup_invoice(&issued.payment_hash)
                .await
                .unwrap()
                .state
                .is_settled()
        );
        assert_eq!(backend.balance().await.unwrap(), Msat(21_000));

        // The upper-case, prefixed form is sent normalised and works too; paying again maps
        // the gateway's error JSON.
        let issued2 = invoice(&backend).await;
        let shouting = format!("LIGHTNING:{}", issued2.bolt11.to_uppercase());
        wallet.pay_invoice(&shouting, Msat(0)).await.unwrap();
        assert_eq!(
            wallet.pay_invoice(&issued2.bolt11, Msat(0)).await,
            Err(BackendError::AlreadyPaid)
        );
        assert_eq!(
            wallet.balance().await,
            Err(BackendError::Unsupported("the dev wallet has no balance"))
        );
    }

    #[tokio::test]
    async fn maps_error_codes() {
        init();
        let (_backend, origin) = gateway().await;
        let wallet = DevPayWallet::for_origin(&origin).unwrap();
        // An invoice from another node: the gateway's backend refuses it.
        let other = DevBackend::random();
        let foreign = invoice(&other).await;
        assert_eq!(
            wallet.pay_invoice(&foreign.bolt11, Msat(0)).await,
            Err(BackendError::Rejected(
                "lightning backend rejected the request: the dev backend only pays invoices it issued"
                    .into()
            ))
        );

        // Same key as the gateway's node, but an invoice it never issued: unknown_invoice.
        let (backend2, origin2) = {
            let backend = Arc::new(DevBackend::new([5; 32]));
            let router = axum::Router::new()
                .route(DEV_PAY_PATH, post(pay_handler))
                .with_state(Arc::clone(&backend));
            (backend, serve(router).await)
        };
        let twin = DevBackend::new([5; 32]);
        assert_eq!(twin.node_id(), backend2.node_id());
        let never_issued = invoice(&twin).await;
        let wallet2 = DevPayWallet::for_origin(&origin2).unwrap();
        assert_eq!(
            wallet2.pay_invoice(&never_issued.bolt11, Msat(0)).await,
            Err(BackendError::UnknownInvoice)
        );
    }

    #[test]
    fn error_body_mapping() {
        let body = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"nope"}}}}"#);
        let map = |status: u16, b: &str| {
            map_error_response(StatusCode::from_u16(status).unwrap(), b.as_bytes())
        };
        assert_eq!(map(409, &body("already_paid")), BackendError::AlreadyPaid);
        assert_eq!(
            map(410, &body("invoice_expired")),
            BackendError::InvoiceExpired
        );
        assert_eq!(
            map(404, &body("unknown_invoice")),
            BackendError::UnknownInvoice
        );
        assert_eq!(
            map(400, &body("whatever")),
            BackendError::Rejected("nope".into())
        );
        assert_eq!(
            map(503, &body("whatever")),
            BackendError::Unreachable("nope".into())
        );
        assert!(matches!(
            map(404, "not found"),
            BackendError::Unsupported(_)
        ));
        assert!(matches!(map(401, ""), BackendError::Unauthorized(_)));
        assert!(matches!(map(502, "<html>"), BackendError::Unreachable(_)));
        assert!(matches!(map(500, "boom"), BackendError::Rejected(m) if m.contains("boom")));
    }

    #[tokio::test]
    async fn rejects_a_wrong_preimage() {
        init();
        let backend = DevBackend::random();
        let issued = invoice(&backend).await;
        for answer in [
            json!({"preimage": "00".repeat(32)}),
            // The payment hash itself in place of the preimage.
            json!({"preimage": issued.payment_hash.to_hex()}),
            json!({"preimage": "zz"}),
            json!({"nothing": true}),
        ] {
            let router = axum::Router::new().route(
                DEV_PAY_PATH,
                post(move || {
                    let answer = answer.clone();
                    async move { Json(answer) }
                }),
            );
            let wallet = DevPayWallet::for_origin(&serve(router).await).unwrap();
            assert!(matches!(
                wallet.pay_invoice(&issued.bolt11, Msat(0)).await,
                Err(BackendError::InvalidResponse(_))
            ));
        }
    }

    #[tokio::test]
    async fn refuses_oversized_answers() {
        init();
        let backend = DevBackend::random();
        let issued = invoice(&backend).await;
        let router = axum::Router::new().route(
            DEV_PAY_PATH,
            post(|| async { "x".repeat(rules::MAX_RESPONSE_BYTES + 1) }),
        );
        let wallet = DevPayWallet::for_origin(&serve(router).await).unwrap();
        assert!(matches!(
            wallet.pay_invoice(&issued.bolt11, Msat(0)).await,
            Err(BackendError::InvalidResponse(_))
        ));
    }

    #[tokio::test]
    async fn times_out_on_a_silent_server() {
        init();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accept connections and never answer.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let endpoint = Url::parse(&format!("http://{addr}{DEV_PAY_PATH}")).unwrap();
        let wallet = DevPayWallet::with_timeouts(
            endpoint,
            Duration::from_millis(200),
            Duration::from_millis(300),
        )
        .unwrap();
        let issued = invoice(&DevBackend::random()).await;
        let started = std::time::Instant::now();
        assert_eq!(
            wallet.pay_invoice(&issued.bolt11, Msat(0)).await,
            Err(BackendError::Timeout)
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn unreachable_when_nothing_listens() {
        init();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let wallet =
            DevPayWallet::for_origin(&Url::parse(&format!("http://{addr}")).unwrap()).unwrap();
        let issued = invoice(&DevBackend::random()).await;
        let err = wallet
            .pay_invoice(&issued.bolt11, Msat(0))
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Unreachable(_)), "{err:?}");
        assert!(err.is_transient());
    }

    #[tokio::test]
    async fn refuses_bad_invoices_before_calling() {
        init();
        // Nothing listens here; an invoice problem must be reported without a request.
        let wallet = DevPayWallet::new(Url::parse("http://127.0.0.1:9/x").unwrap()).unwrap();
        assert!(matches!(
            wallet.pay_invoice("not an invoice", Msat(0)).await,
            Err(BackendError::Rejected(_))
        ));
        let old = DevBackend::random().with_clock(|| 1_600_000_000);
        let expired = invoice(&old).await;
        assert_eq!(
            wallet.pay_invoice(&expired.bolt11, Msat(0)).await,
            Err(BackendError::InvoiceExpired)
        );
    }

    #[test]
    fn builds_endpoint_urls() {
        init();
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            DevPayWallet::for_origin(&url("http://127.0.0.1:8080"))
                .unwrap()
                .endpoint()
                .as_str(),
            "http://127.0.0.1:8080/_turnpike/dev/pay"
        );
        assert_eq!(
            DevPayWallet::for_origin(&url("https://api.example.com/some/path?q=1"))
                .unwrap()
                .endpoint()
                .as_str(),
            "https://api.example.com/_turnpike/dev/pay"
        );
        assert!(matches!(
            DevPayWallet::for_origin(&url("mailto:someone@example.com")),
            Err(DevWalletError::InvalidUrl(_))
        ));
        assert!(matches!(
            DevPayWallet::new(url("ftp://example.com/pay")),
            Err(DevWalletError::InvalidUrl(_))
        ));
    }
}
