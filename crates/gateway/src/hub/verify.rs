//! LUD-21 `verify` for the fee ledger. The `verify` URL of each invoice issued for a
//! Lightning-address provider is kept in the store with the token's fee row
//! ([`first_look`]), so every replica's verifier sees it and a restart forgets none. Every
//! second, each replica takes the URLs due a look (a growing interval, 2 s, 4 s, … at most
//! 60 s, until settled or expired): a look is taken by one replica only (it moves the row's
//! next look first). An invoice reported settled makes its token's fee owed, exactly once
//! whichever replica hears it, whether or not the token is ever used. Never on the request
//! path: serving needs only the client's preimage.

use std::sync::Arc;
use std::time::Duration;

use turnpike_l402::PaymentHash;
use turnpike_lightning::lnurl::Verify;
use turnpike_lightning::{BackendError, InvoiceState};
use turnpike_store::{StoreError, VerifyRecord};

use crate::control::Control;

/// How often the due invoices are looked at.
const TICK: Duration = Duration::from_secs(1);
/// First and longest wait between two looks at an unpaid invoice's `verify` URL, in seconds.
pub const FIRST_WAIT: u64 = 2;
/// See [`FIRST_WAIT`].
pub const LONGEST_WAIT: u64 = 60;
/// Most looks a replica takes per tick.
const PER_TICK: u32 = 200;

/// The store row of an invoice just issued by `provider` with the `verify` URL `v`: first
/// looked at [`FIRST_WAIT`] seconds after `now`.
pub fn first_look(provider: &str, hash: PaymentHash, v: Verify, now: u64) -> VerifyRecord {
    VerifyRecord {
        payment_hash: hash,
        provider: provider.to_owned(),
        url: v.url,
        amount: v.amount,
        expires_at: v.expires_at,
        next_at: now.saturating_add(FIRST_WAIT),
        wait_secs: FIRST_WAIT,
    }
}

/// When a row looked at `now` is looked at next, and the wait after that.
pub fn next_look(row: &VerifyRecord, now: u64) -> (u64, u64) {
    let wait = row.wait_secs.clamp(FIRST_WAIT, LONGEST_WAIT);
    (now.saturating_add(wait), (wait * 2).min(LONGEST_WAIT))
}

/// Asks the `verify` URL of every invoice due a look at `now` (taken by this replica);
/// returns how many were found settled with their fee newly owed.
pub async fn run_once(control: &Control, now: u64) -> Result<u32, StoreError> {
    let (Some(hub), Some(store)) = (control.hub(), control.store()) else {
        return Ok(0);
    };
    let mut settled = 0;
    for row in store.verify_due(now, PER_TICK).await? {
        let hash = row.payment_hash;
        if !store
            .claim_verify(&hash, row.next_at, next_look(&row, now))
            .await?
        {
            continue;
        }
        let verifier = hub
            .provider(&row.provider)
            .and_then(|p| p.payee.verifier.clone());
        let Some(verifier) = verifier else {
            // Not known here yet (registered on another replica moments ago), gone, or paid
            // elsewhere now: nothing to ask through on this replica. The row stays for the
            // others and is dropped at its expiry.
            continue;
        };
        let v = Verify {
            url: row.url.clone(),
            amount: row.amount,
            expires_at: row.expires_at,
        };
        match verifier.verify(&hash, &v).await {
            Ok(status) if status.state.is_settled() => {
                if store.fee_paid_by_hash(&hash, now).await? {
                    settled += 1;
                }
                store.forget_verify(&hash).await?;
            }
            Ok(status)
                if matches!(status.state, InvoiceState::Expired | InvoiceState::Canceled) =>
            {
                store.forget_verify(&hash).await?;
            }
            Ok(_) => {}
            Err(BackendError::UnknownInvoice) => store.forget_verify(&hash).await?,
            Err(e) => {
                tracing::debug!(provider = %row.provider, error = %e, "LUD-21 verify failed; will look again");
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

#[cfg(test)]
mod tests {
    use super::*;
    use turnpike_l402::Msat;

    #[test]
    fn looks_come_at_a_growing_interval_up_to_a_minute() {
        let v = Verify {
            url: "https://b.example/v".into(),
            amount: Msat(1000),
            expires_at: 10_000,
        };
        let mut row = first_look("alice", PaymentHash([1; 32]), v, 100);
        assert_eq!((row.next_at, row.wait_secs), (102, 2));
        let mut looks = vec![row.next_at];
        for _ in 0..7 {
            let now = row.next_at;
            (row.next_at, row.wait_secs) = next_look(&row, now);
            looks.push(row.next_at);
        }
        assert_eq!(looks, [102, 104, 108, 116, 132, 164, 224, 284]);
    }

    /// A replica that does not know the provider (registered on another replica a moment ago)
    /// takes the look but leaves the row for the others.
    #[tokio::test]
    async fn a_row_of_a_provider_unknown_here_stays() {
        use turnpike_store::AdminStore;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store: Arc<dyn AdminStore> =
            Arc::new(turnpike_store::SqliteStore::open(&url).await.unwrap());
        let settings = toml::from_str("domain = \"hub.example\"").unwrap();
        let hub = super::super::Hub::new(super::super::HubSettings::parse(&settings).unwrap());
        let table = crate::router::ServiceTable::new(crate::router::Router::new(Vec::new()))
            .with_hub(Some(Arc::new(hub)));
        let control = Control::new(Arc::new(table), Vec::new(), Some(store.clone()));
        let v = Verify {
            url: "https://pay.example/verify/1".into(),
            amount: Msat(1000),
            expires_at: 10_000,
        };
        store
            .record_verify(&first_look("alice", PaymentHash([1; 32]), v, 100))
            .await
            .unwrap();
        assert_eq!(run_once(&control, 102).await.unwrap(), 0);
        let left = store.verify_due(104, 10).await.unwrap();
        assert_eq!(left.len(), 1, "kept");
        assert_eq!((left[0].next_at, left[0].wait_secs), (104, 4), "looked at");
    }
}
