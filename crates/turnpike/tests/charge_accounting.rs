//! A call given back must stay given back even when the client hangs up while the store is
//! still writing the refund: the refund outlives the request that started it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use turnpike_gateway::config::{
    BackendConfig, DevBackendConfig, GatewayConfig, ServiceConfig, StoreConfig,
};
use turnpike_gateway::{Gateway, GatewayParts};
use turnpike_l402::credential::Credential;
use turnpike_l402::identifier::Identifier;
use turnpike_l402::root_key::MasterKey;
use turnpike_l402::{Msat, PaymentHash, TokenId};
use turnpike_lightning::{DevBackend, PaymentBackend};
use turnpike_store::{
    Consumption, DailyStats, Day, IdempotencyBegin, IdempotencyRequest, Inspect, InvoiceRecord,
    SqliteStore, StatsStore, Store, StoreError, StoredResponse, TokenUsage,
};

/// A real SQLite store whose refunds take a while (as under load), so a client can hang up in
/// the middle of one.
struct SlowRefunds(SqliteStore);

const REFUND_DELAY: Duration = Duration::from_millis(700);

#[async_trait]
impl StatsStore for SlowRefunds {
    async fn add_daily_stats(&self, deltas: &[DailyStats]) -> Result<(), StoreError> {
        self.0.add_daily_stats(deltas).await
    }
    async fn daily_stats(
        &self,
        from: Day,
        to: Day,
        service: Option<&str>,
    ) -> Result<Vec<DailyStats>, StoreError> {
        self.0.daily_stats(from, to, service).await
    }
    async fn record_pass_use(
        &self,
        token: &TokenId,
        service: &str,
        now_unix: u64,
    ) -> Result<bool, StoreError> {
        self.0.record_pass_use(token, service, now_unix).await
    }
}

#[async_trait]
impl Store for SlowRefunds {
    async fn consume_call(
        &self,
        token: &TokenId,
        service: &str,
        calls_total: u64,
        now_unix: u64,
    ) -> Result<Consumption, StoreError> {
        self.0
            .consume_call(token, service, calls_total, now_unix)
            .await
    }
    async fn refund_call(&self, token: &TokenId) -> Result<(), StoreError> {
        tokio::time::sleep(REFUND_DELAY).await;
        self.0.refund_call(token).await
    }
    async fn record_invoice(&self, invoice: &InvoiceRecord) -> Result<(), StoreError> {
        self.0.record_invoice(invoice).await
    }
    async fn prune_expired_invoices(&self, now_unix: u64) -> Result<u64, StoreError> {
        self.0.prune_expired_invoices(now_unix).await
    }
    async fn take_free_call(
        &self,
        service: &str,
        client: &str,
        limit: u64,
        window_secs: u64,
        now_unix: u64,
    ) -> Result<bool, StoreError> {
        self.0
            .take_free_call(service, client, limit, window_secs, now_unix)
            .await
    }
    async fn prune_free_tier(&self, now_unix: u64) -> Result<u64, StoreError> {
        self.0.prune_free_tier(now_unix).await
    }
    async fn idempotency_begin(
        &self,
        r: &IdempotencyRequest<'_>,
    ) -> Result<IdempotencyBegin, StoreError> {
        self.0.idempotency_begin(r).await
    }
    async fn idempotency_complete(
        &self,
        token: &TokenId,
        key: &str,
        response: &StoredResponse,
        now_unix: u64,
    ) -> Result<(), StoreError> {
        self.0
            .idempotency_complete(token, key, response, now_unix)
            .await
    }
    async fn idempotency_abort(
        &self,
        token: &TokenId,
        key: &str,
        refund: bool,
    ) -> Result<(), StoreError> {
        tokio::time::sleep(REFUND_DELAY).await;
        self.0.idempotency_abort(token, key, refund).await
    }
    async fn prune_idempotency(&self, older_than_unix: u64) -> Result<u64, StoreError> {
        self.0.prune_idempotency(older_than_unix).await
    }
    async fn claim_x402_payment(
        &self,
        replay_key: &str,
        now_unix: u64,
        expires_at: u64,
    ) -> Result<turnpike_store::X402Claim, StoreError> {
        self.0
            .claim_x402_payment(replay_key, now_unix, expires_at)
            .await
    }
    async fn record_x402_settlement(
        &self,
        replay_key: &str,
        settle_header: &str,
    ) -> Result<(), StoreError> {
        self.0
            .record_x402_settlement(replay_key, settle_header)
            .await
    }
    async fn release_x402_payment(&self, replay_key: &str) -> Result<(), StoreError> {
        self.0.release_x402_payment(replay_key).await
    }
    async fn prune_x402_payments(&self, now_unix: u64) -> Result<u64, StoreError> {
        self.0.prune_x402_payments(now_unix).await
    }
}

#[async_trait]
impl Inspect for SlowRefunds {
    async fn token_usage(&self, token: &TokenId) -> Result<Option<TokenUsage>, StoreError> {
        self.0.token_usage(token).await
    }
    async fn invoice(&self, hash: &PaymentHash) -> Result<Option<InvoiceRecord>, StoreError> {
        self.0.invoice(hash).await
    }
}

#[tokio::test]
async fn a_refund_survives_the_client_hanging_up_while_it_is_written() {
    turnpike_lightning::ensure_crypto_provider();
    // An upstream that fails every call at once.
    let app = axum::Router::new()
        .fallback(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "broken") });
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    tokio::spawn(axum::serve(up, app).into_future());

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Arc::new(SlowRefunds(SqliteStore::open(&url).await.unwrap()));
    let config = GatewayConfig {
        data_dir: dir.path().to_owned(),
        store: StoreConfig { url: Some(url) },
        services: vec![ServiceConfig {
            calls_per_payment: Some(3),
            ..ServiceConfig::new("broken", format!("http://{up_addr}"), 2)
        }],
        ..GatewayConfig::new(BackendConfig::Dev(DevBackendConfig::default()))
    };
    let dev = Arc::new(DevBackend::random());
    let gateway = Gateway::new(GatewayParts {
        config,
        master_key: MasterKey::from_bytes(rand::random()),
        store: store.clone(),
        backend: dev.clone(),
        dev: Some(dev.clone()),
        admin: None,
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway.serve(listener, std::future::pending()));

    // Pay for three calls.
    let resp = reqwest::get(format!("http://{addr}/x")).await.unwrap();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    let challenge = turnpike_client::read_challenge(&headers, &body).unwrap();
    let paid = dev
        .pay_invoice(&challenge.invoice, Msat::ZERO)
        .await
        .unwrap();
    let token = Identifier::decode(challenge.macaroon.identifier())
        .unwrap()
        .token_id;
    let auth = Credential {
        macaroon: challenge.macaroon,
        preimage: paid.preimage,
    }
    .authorization_value();

    // Twice: a plain call, and one with an Idempotency-Key. The upstream answers 500 at once;
    // the client hangs up while the refund is being written.
    for extra in ["", "Idempotency-Key: k1\r\n"] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET /x HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n{extra}\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(REFUND_DELAY / 3).await;
        drop(s);
    }
    tokio::time::sleep(REFUND_DELAY * 3).await;
    let usage = store.token_usage(&token).await.unwrap().unwrap();
    assert_eq!(
        usage.used, 0,
        "a call was charged for a request the upstream failed"
    );
}
