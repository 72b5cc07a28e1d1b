//! `GET /api/v1/health`: the store and the backend answering, and the version.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use turnpike_lightning::{BackendError, PaymentHash};

use crate::Api;

/// Longest wait for the store or the backend.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// 200 when the store and the backend answer, else 503 with the same body.
pub async fn health(State(api): State<Api>) -> (StatusCode, Json<serde_json::Value>) {
    let started = Instant::now();
    let store = match api.control.store() {
        Some(store) => match tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        },
        None => Err("no admin store".to_owned()),
    };
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    // A look-up of an invoice nobody issued: "unknown" is the answer of a backend that works.
    let nobody = PaymentHash(rand::random());
    let probe = api.backend.lookup_invoice(&nobody);
    let backend = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(_) | Err(BackendError::UnknownInvoice)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    };
    let ok = store.is_ok() && backend.is_ok();
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "store": { "ok": store.is_ok(), "latency_ms": latency_ms, "error": store.err() },
        "backend": { "ok": backend.is_ok(), "kind": api.backend.name(), "error": backend.err() },
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
