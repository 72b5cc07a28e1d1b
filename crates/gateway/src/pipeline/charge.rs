//! What a request was charged, and how that is settled once the upstream has answered: kept
//! (and, with an `Idempotency-Key`, recorded for retries) or given back.
//!
//! Giving a call back is a store write that must happen exactly once even if the client hangs
//! up meanwhile (its request future is then dropped): it runs on the gateway's background
//! runtime ([`crate::Background`]) and the request only waits for its result. A request dropped
//! before the upstream answered gives its call back through [`ChargeGuard`].

use axum::response::Response;
use http::HeaderValue;
use turnpike_l402::TokenId;

use std::sync::Arc;

use crate::SharedState;
use crate::headers::CALLS_REMAINING;
use crate::metrics::{ServiceMetrics, StoreOp};

/// The charge a request carries to the upstream.
#[derive(Debug)]
pub(crate) enum Charge {
    /// Nothing was charged (a free call, a time pass).
    None,
    /// One call of a counted token; `remaining` after it.
    Counted {
        /// The token charged.
        token: TokenId,
        /// Calls left after this one.
        remaining: u64,
    },
    /// An idempotent request: its entry, and (for a counted token) its call.
    Idempotent {
        /// The token it runs under.
        token: TokenId,
        /// Its `Idempotency-Key`.
        key: String,
        /// Calls left after this one (`None`: not counted, or a taken-over entry).
        remaining: Option<u64>,
    },
}

impl Charge {
    fn remaining(&self) -> Option<u64> {
        match self {
            Charge::None => None,
            Charge::Counted { remaining, .. } => Some(*remaining),
            Charge::Idempotent { remaining, .. } => *remaining,
        }
    }

    /// Arms a guard that gives the charge back if the request is dropped before it is disarmed
    /// (a counted call given back so is counted refunded in `metrics`).
    pub(crate) fn guard(self, state: &SharedState, metrics: &Arc<ServiceMetrics>) -> ChargeGuard {
        ChargeGuard {
            state: state.clone(),
            charge: Some(self),
            metrics: metrics.clone(),
        }
    }

    /// Gives the charge back (an idempotent entry is released so a retry runs afresh); resolves
    /// to whether a counted call was given back. The write runs to its end even if the caller
    /// is dropped.
    pub(crate) fn give_back(
        &self,
        state: &SharedState,
    ) -> impl Future<Output = bool> + Send + 'static {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let counted = self.remaining().is_some();
        if let Some(task) = self.give_back_task(state) {
            state.background.spawn(async move {
                let _ = done_tx.send(task.await);
            });
        }
        async move { counted && done_rx.await.unwrap_or(false) }
    }

    /// The store write that gives this charge back, if there is one; it logs its own failure.
    fn give_back_task(
        &self,
        state: &SharedState,
    ) -> Option<impl Future<Output = bool> + Send + 'static> {
        let (token, key) = match self {
            Charge::None => return None,
            Charge::Counted { token, .. } => (*token, None),
            Charge::Idempotent { token, key, .. } => (*token, Some(key.clone())),
        };
        if self.remaining().is_some() {
            state.limits.record_refund(&token);
        }
        let (store, metrics) = (state.store.clone(), state.metrics.clone());
        Some(async move {
            let started = std::time::Instant::now();
            let done = match &key {
                Some(key) => store.idempotency_abort(&token, key, true).await,
                None => store.refund_call(&token).await,
            };
            metrics.store_op(StoreOp::RefundCall, started.elapsed());
            if let Err(e) = &done {
                tracing::error!(token = %token, error = %e, "could not give back a call");
            }
            done.is_ok()
        })
    }

    /// Sets `Turnpike-Calls-Remaining` on a response whose call was (`given_back`) or was not
    /// given back.
    pub(crate) fn with_remaining(&self, mut resp: Response, given_back: bool) -> Response {
        if let Some(r) = self.remaining() {
            let r = r + u64::from(given_back);
            resp.headers_mut()
                .insert(CALLS_REMAINING, HeaderValue::from(r));
        }
        resp
    }

    /// Keeps the charge of a served call: the remaining calls are announced, and an idempotent
    /// response is recorded for retries once its body has been sent.
    pub(crate) fn settle(self, state: &SharedState, resp: Response) -> Response {
        let resp = self.with_remaining(resp, false);
        match self {
            Charge::Idempotent { token, key, .. } => crate::idempotency::Recorder {
                background: state.background.clone(),
                store: state.store.clone(),
                token,
                key,
                max_bytes: state.idempotency.max_response_bytes,
            }
            .record(resp),
            Charge::None | Charge::Counted { .. } => resp,
        }
    }
}

/// Gives a charge back when the request is dropped (its client hung up) before the upstream
/// answered, the same rule as for an upstream that never answers.
pub(crate) struct ChargeGuard {
    state: SharedState,
    charge: Option<Charge>,
    metrics: Arc<ServiceMetrics>,
}

impl ChargeGuard {
    /// The upstream answered (or failed, handled by the caller): the charge is the caller's.
    pub(crate) fn disarm(mut self) -> Charge {
        self.charge.take().unwrap_or(Charge::None)
    }
}

impl Drop for ChargeGuard {
    fn drop(&mut self) {
        let Some(charge) = self.charge.take() else {
            return;
        };
        let counted = charge.remaining().is_some();
        if let Some(task) = charge.give_back_task(&self.state) {
            let metrics = self.metrics.clone();
            self.state.background.spawn(async move {
                if task.await && counted {
                    metrics.calls_refunded.inc();
                    tracing::debug!("client left before the upstream answered: call given back");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remaining_calls_count_a_given_back_call() {
        let t = TokenId::random();
        let counted = Charge::Counted {
            token: t,
            remaining: 2,
        };
        let resp = counted.with_remaining(Response::default(), true);
        assert_eq!(resp.headers()[CALLS_REMAINING], "3");
        let resp = counted.with_remaining(Response::default(), false);
        assert_eq!(resp.headers()[CALLS_REMAINING], "2");
        let taken_over = Charge::Idempotent {
            token: t,
            key: "k".into(),
            remaining: None,
        };
        let resp = taken_over.with_remaining(Response::default(), true);
        assert!(!resp.headers().contains_key(CALLS_REMAINING));
        assert!(
            !Charge::None
                .with_remaining(Response::default(), false)
                .headers()
                .contains_key(CALLS_REMAINING)
        );
    }
}
