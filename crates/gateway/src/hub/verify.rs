//! LUD-21 `verify` for the fee ledger: every second, each replica asks the `verify` URLs of the
//! invoices it issued for Lightning-address providers that are due a look (a growing
//! interval, 2 s up to 60 s, until settled or expired; see
//! [`turnpike_lightning::lnurl::LnAddressBackend::verify_due`]). An invoice reported settled
//! makes its token's fee owed, whether or not the token is ever used. Never on the request
//! path: serving needs only the client's preimage.

use std::sync::Arc;
use std::time::Duration;

use turnpike_lightning::{BackendError, InvoiceBackend, InvoiceState};
use turnpike_store::StoreError;

use crate::control::Control;

/// How often the due invoices are looked at.
const TICK: Duration = Duration::from_secs(1);

/// Asks the `verify` URL of every invoice due a look at `now`; returns how many were found
/// settled (their fees now owed).
pub async fn run_once(control: &Control, now: u64) -> Result<u32, StoreError> {
    let (Some(hub), Some(store)) = (control.hub(), control.store()) else {
        return Ok(0);
    };
    let mut settled = 0;
    for provider in hub.providers() {
        let Some(verifier) = &provider.payee.verifier else {
            continue;
        };
        for hash in verifier.verify_due(now) {
            match verifier.lookup_invoice(&hash).await {
                Ok(status) if status.state.is_settled() => {
                    store.fee_paid_by_hash(&hash, now).await?;
                    verifier.forget(&hash);
                    settled += 1;
                }
                Ok(status)
                    if matches!(status.state, InvoiceState::Expired | InvoiceState::Canceled) =>
                {
                    verifier.forget(&hash);
                }
                Ok(_) => {}
                Err(BackendError::UnknownInvoice) => verifier.forget(&hash),
                Err(e) => {
                    tracing::debug!(provider = %provider.record.slug, error = %e, "LUD-21 verify failed; will look again");
                }
            }
        }
    }
    Ok(settled)
}

/// Runs [`run_once`] every second on a hub.
pub fn spawn(control: Arc<Control>) -> Option<tokio::task::JoinHandle<()>> {
    control.hub()?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = run_once(&control, crate::unix_now()).await {
                tracing::warn!(error = %e, "cannot record invoices settled per LUD-21 verify");
            }
        }
    }))
}
