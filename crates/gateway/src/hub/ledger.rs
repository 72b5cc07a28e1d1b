//! The hub on the request path: which wallet a service's invoice is created on and for how
//! much, the fee ledger's rows (one per token minted for a provider's service, owed once its
//! payment is recognised). Nothing here runs for a service that is not a provider's.

use std::sync::Arc;

use turnpike_l402::{Msat, TokenId};
use turnpike_lightning::InvoiceBackend;
use turnpike_store::FeeRecord;

use super::Payee;
use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::service::Service;

/// The backend creating `service`'s invoice, the amount the client pays for `price` at `now`
/// and the platform fee in it: the gateway's backend and `price` itself for a service that is
/// not a provider's.
pub(crate) fn invoice_terms<'a>(
    state: &'a AppState,
    service: &'a Service,
    price: Msat,
    now: u64,
) -> Result<(&'a Arc<dyn InvoiceBackend>, Msat, Msat), ApiError> {
    let Some(payee) = &service.payee else {
        return Ok((&state.backend, price, Msat::ZERO));
    };
    if payee.suspended {
        return Err(ApiError::new(
            ErrorCode::ProviderSuspended,
            "This provider is suspended: it takes no new payments (tokens already paid keep working).",
        ));
    }
    let (amount, fee) = payee.invoice_amount(price, now).ok_or_else(|| {
        ApiError::new(
            ErrorCode::PricerUnavailable,
            "The price of this request is out of range.",
        )
    })?;
    Ok((&payee.backend, amount, fee))
}

/// Records the fee row of a token just minted for a provider's service (before the challenge
/// is answered, so its payment can never be recognised first).
pub(crate) async fn record_fee(
    state: &AppState,
    payee: &Payee,
    service: &Service,
    (token_id, payment_hash): (TokenId, turnpike_l402::PaymentHash),
    (price, fee): (Msat, Msat),
    now: u64,
) -> Result<(), ApiError> {
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "cannot record a hub fee");
        ApiError::new(
            ErrorCode::StoreUnavailable,
            "The gateway's store is unavailable.",
        )
        .retry_after(5)
    };
    let admin = state
        .control
        .store()
        .ok_or_else(|| unavailable(&"no admin store"))?;
    let record = FeeRecord {
        token_id,
        payment_hash,
        provider: payee.provider.clone(),
        service: service.name.clone(),
        price,
        fee,
        issued_at: now,
    };
    admin
        .record_fee(&record)
        .await
        .map_err(|e| unavailable(&e))?;
    // A LUD-21 `verify` URL is kept in the store: any replica's verifier asks it.
    if let Some(v) = payee
        .verifier
        .as_ref()
        .and_then(|b| b.verify_of(&payment_hash))
    {
        let row = super::verify::first_look(&payee.provider, payment_hash, v, now);
        admin
            .record_verify(&row)
            .await
            .map_err(|e| unavailable(&e))?;
    }
    Ok(())
}

/// Where the fee of a provider's token is accrued once its payment is recognised: nowhere for
/// a service that is not a provider's.
pub(crate) struct FeeOwed(Option<Arc<dyn turnpike_store::AdminStore>>);

impl FeeOwed {
    /// For a token of `service`.
    pub(crate) fn of(state: &AppState, service: &Service) -> FeeOwed {
        FeeOwed(service.payee.as_ref().and(state.control.store().cloned()))
    }

    /// The token's payment was recognised at `now`: its fee is owed.
    pub(crate) async fn accrue(self, token: TokenId, now: u64) {
        if let Some(admin) = self.0
            && let Err(e) = admin.fee_paid(&token, now).await
        {
            tracing::error!(error = %e, token = %token, "cannot accrue a hub fee");
        }
    }
}

/// A token of a provider's service was used for the first time: its fee is owed (written in
/// the background).
pub(crate) fn note_paid(state: &AppState, service: &Service, token: TokenId, now: u64) {
    let owed = FeeOwed::of(state, service);
    if owed.0.is_some() {
        state.background.spawn(owed.accrue(token, now));
    }
}

/// The backend to ask whether `service`'s token was paid before its first use: the gateway's,
/// the provider's wallet, or none (a payee that cannot tell, such as a Lightning address: the
/// preimage is the proof).
pub(crate) fn settlement_backend<'a>(
    state: &'a AppState,
    service: &'a Service,
) -> Option<&'a Arc<dyn InvoiceBackend>> {
    match &service.payee {
        None => Some(&state.backend),
        Some(p) if p.checks_settlement => Some(&p.backend),
        Some(_) => None,
    }
}
