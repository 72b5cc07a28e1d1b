//! Billing the platform fee: every `[hub] billing_interval_secs`, each replica
//!
//! 1. bills every provider whose fees owed and not yet billed reach `bill_threshold_sats` (and
//!    that has no unpaid bill): a Lightning invoice on the **hub's own** backend for them
//!    (rounded down to a whole satoshi: the hub forgoes the odd millisatoshis), due in
//!    `bill_grace_days`. The store takes the bill only if the fee rows still add up to it, so
//!    replicas running together bill each row once;
//! 2. asks the hub's backend about every unpaid bill: a paid one is marked paid (and its
//!    provider, if suspended and the bill was overdue, takes payments again unless another
//!    bill is overdue); one whose invoice expired unpaid is **reissued**: a new invoice (living
//!    `bill_expiry_secs` again) for the same bill, same fee rows, same amount and same due
//!    date, so the provider can still pay it and be reinstated (the store moves the bill only
//!    if it is still unpaid on its old invoice: one replica reissues it, and each provider
//!    keeps at most one open bill); an unpaid one past its due time suspends its provider (no
//!    new payments; tokens already paid keep working).
//!
//! A run that changed a provider's status syncs the gateway at once; other replicas follow
//! within `[admin] sync_interval_secs`.

use std::sync::Arc;

use turnpike_l402::Msat;
use turnpike_lightning::{
    BackendError, CreateInvoice, InvoiceBackend, InvoiceState, IssuedInvoice,
};
use turnpike_store::{AdminStore, BillRecord, StoreError};

use super::{ACTIVE, Hub, SUSPENDED};
use crate::control::Control;

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Run {
    /// Bills issued.
    pub billed: u32,
    /// Bills seen paid.
    pub paid: u32,
    /// Providers suspended for an overdue bill.
    pub suspended: u32,
    /// Providers reinstated once their overdue bills were paid.
    pub reinstated: u32,
    /// Bills whose invoice expired unpaid, put on a new invoice.
    pub reissued: u32,
}

/// One billing run at `now` (see the module docs), on `control`'s hub with the hub's
/// `backend`. Nothing happens on a gateway that is not a hub.
pub async fn run_once(
    control: &Control,
    backend: &dyn InvoiceBackend,
    now: u64,
) -> Result<Run, StoreError> {
    let (Some(hub), Some(store)) = (control.hub(), control.store()) else {
        return Ok(Run::default());
    };
    let mut run = Run::default();
    let cx = Cx {
        hub,
        store,
        backend,
        now,
    };
    bill_providers(&cx, &mut run).await?;
    check_bills(&cx, &mut run).await?;
    if run.suspended + run.reinstated > 0 {
        control.sync().await?;
    }
    Ok(run)
}

/// What a run works with.
struct Cx<'a> {
    hub: &'a Hub,
    store: &'a Arc<dyn AdminStore>,
    backend: &'a dyn InvoiceBackend,
    now: u64,
}

async fn bill_providers(cx: &Cx<'_>, run: &mut Run) -> Result<(), StoreError> {
    let (store, now) = (cx.store, cx.now);
    let settings = &cx.hub.settings;
    for (provider, fees) in store.unbilled_fees(now).await? {
        let amount = Msat(fees.0 - fees.0 % 1000);
        if fees < settings.bill_threshold || amount == Msat::ZERO {
            continue;
        }
        let Some(issued) = bill_invoice(cx, &provider, amount).await else {
            continue;
        };
        let bill = BillRecord {
            payment_hash: issued.payment_hash,
            provider: provider.clone(),
            fees,
            amount,
            bolt11: issued.bolt11,
            created_at: now,
            due_at: now.saturating_add(settings.bill_grace_secs),
            paid_at: None,
        };
        if store.open_bill(&bill, now).await? {
            tracing::info!(%provider, %amount, "provider billed for platform fees");
            run.billed += 1;
        }
    }
    Ok(())
}

/// A Lightning invoice on the hub's backend for `provider`'s bill of `amount` (logged and
/// `None` when it cannot be had: the next run tries again).
async fn bill_invoice(cx: &Cx<'_>, provider: &str, amount: Msat) -> Option<IssuedInvoice> {
    let issued = cx
        .backend
        .create_invoice(CreateInvoice {
            amount,
            memo: format!("Turnpike hub: platform fees of {provider}"),
            expiry_secs: cx.hub.settings.bill_expiry_secs,
        })
        .await;
    match issued {
        Ok(i) if i.amount == amount => Some(i),
        Ok(i) => {
            tracing::error!(%provider, asked = %amount, got = %i.amount, "bill invoice for another amount");
            None
        }
        Err(e) => {
            tracing::warn!(%provider, error = %e, "cannot issue a bill invoice; will retry");
            None
        }
    }
}

/// Whether `bill`'s invoice has expired by its own terms at `now`.
fn expired(bill: &BillRecord, now: u64) -> bool {
    turnpike_l402::bolt11::Invoice::parse(&bill.bolt11).is_ok_and(|i| i.is_expired(now))
}

/// Puts `bill`, whose invoice expired unpaid, on a new invoice; whether it moved.
async fn reissue(cx: &Cx<'_>, bill: &BillRecord) -> Result<bool, StoreError> {
    let Some(issued) = bill_invoice(cx, &bill.provider, bill.amount).await else {
        return Ok(false);
    };
    let moved = cx
        .store
        .reissue_bill(&bill.payment_hash, (&issued.payment_hash, &issued.bolt11))
        .await?;
    if moved {
        tracing::info!(provider = %bill.provider, amount = %bill.amount, "bill's invoice expired unpaid: reissued");
    }
    Ok(moved)
}

async fn check_bills(cx: &Cx<'_>, run: &mut Run) -> Result<(), StoreError> {
    let (hub, store, now) = (cx.hub, cx.store, cx.now);
    let open = store.open_bills().await?;
    let (mut unpaid, mut paid_overdue) = (Vec::new(), Vec::new());
    for bill in &open {
        let state = cx
            .backend
            .lookup_invoice(&bill.payment_hash)
            .await
            .map(|s| s.state);
        // Expired unpaid, or unknown to the backend (another node now, or one that forgot it)
        // and expired by its own terms: it can no longer be paid.
        let lapsed = match &state {
            Ok(InvoiceState::Expired | InvoiceState::Canceled) => true,
            Err(BackendError::UnknownInvoice) => expired(bill, now),
            _ => false,
        };
        match state {
            Ok(s) if s.is_settled() => {
                if store.bill_paid(&bill.payment_hash, now).await? {
                    run.paid += 1;
                }
                if now >= bill.due_at {
                    paid_overdue.push(bill.provider.as_str());
                }
            }
            _ if lapsed => {
                if reissue(cx, bill).await? {
                    run.reissued += 1;
                }
                unpaid.push(bill);
            }
            Ok(_) => unpaid.push(bill),
            // Otherwise its state cannot be told: nothing is decided.
            Err(e) => {
                tracing::warn!(provider = %bill.provider, error = %e, "cannot check a bill");
            }
        }
    }
    for provider in hub.providers() {
        let slug = &provider.record.slug;
        let overdue = unpaid
            .iter()
            .any(|b| &b.provider == slug && now >= b.due_at);
        let paid_up = paid_overdue.contains(&slug.as_str());
        let status = match (overdue, provider.record.status.as_str()) {
            (true, ACTIVE) => SUSPENDED,
            (false, SUSPENDED) if paid_up => ACTIVE,
            _ => continue,
        };
        if store.set_provider_status(slug, status).await?.is_some() {
            tracing::info!(provider = %slug, status, "provider status set by billing");
            match status {
                SUSPENDED => run.suspended += 1,
                _ => run.reinstated += 1,
            }
        }
    }
    Ok(())
}

/// Runs [`run_once`] every `[hub] billing_interval_secs` (the first run right away).
pub fn spawn(
    control: Arc<Control>,
    backend: Arc<dyn InvoiceBackend>,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = control.hub()?.settings.billing_interval;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match run_once(&control, &*backend, crate::unix_now()).await {
                Ok(run) if run != Run::default() => tracing::info!(?run, "hub billing"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "hub billing failed; will retry"),
            }
        }
    }))
}
