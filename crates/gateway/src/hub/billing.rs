//! Billing the platform fee: every `[hub] billing_interval_secs`, each replica
//!
//! 1. bills every provider whose fees owed and not yet billed reach `bill_threshold_sats` (and
//!    that has no unpaid bill): a Lightning invoice on the **hub's own** backend for them
//!    (rounded down to a whole satoshi: the hub forgoes the odd millisatoshis), due in
//!    `bill_grace_days`. The store takes the bill only if the fee rows still add up to it, so
//!    replicas running together bill each row once;
//! 2. asks the hub's backend about every unpaid bill: a paid one is marked paid (and its
//!    provider, if suspended and the bill was overdue, takes payments again unless another
//!    bill is overdue); an unpaid one past its due time suspends its provider (no new
//!    payments; tokens already paid keep working).
//!
//! A run that changed a provider's status syncs the gateway at once; other replicas follow
//! within `[admin] sync_interval_secs`.

use std::sync::Arc;

use turnpike_l402::Msat;
use turnpike_lightning::{CreateInvoice, InvoiceBackend};
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
}

/// The longest a bill's invoice lives (some backends refuse longer expiries).
const MAX_BILL_EXPIRY_SECS: u64 = 30 * 86_400;

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
    let (store, backend, now) = (cx.store, cx.backend, cx.now);
    let settings = &cx.hub.settings;
    for (provider, fees) in store.unbilled_fees(now).await? {
        let amount = Msat(fees.0 - fees.0 % 1000);
        if fees < settings.bill_threshold || amount == Msat::ZERO {
            continue;
        }
        let expiry = (settings.bill_grace_secs + 7 * 86_400).clamp(600, MAX_BILL_EXPIRY_SECS);
        let issued = backend
            .create_invoice(CreateInvoice {
                amount,
                memo: format!("Turnpike hub: platform fees of {provider}"),
                expiry_secs: u32::try_from(expiry).unwrap_or(u32::MAX),
            })
            .await;
        let issued = match issued {
            Ok(i) if i.amount == amount => i,
            Ok(i) => {
                tracing::error!(%provider, asked = %amount, got = %i.amount, "bill invoice for another amount");
                continue;
            }
            Err(e) => {
                tracing::warn!(%provider, error = %e, "cannot issue a bill; will retry");
                continue;
            }
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

async fn check_bills(cx: &Cx<'_>, run: &mut Run) -> Result<(), StoreError> {
    let (hub, store, now) = (cx.hub, cx.store, cx.now);
    let open = store.open_bills().await?;
    let (mut unpaid, mut paid_overdue) = (Vec::new(), Vec::new());
    for bill in &open {
        match cx.backend.lookup_invoice(&bill.payment_hash).await {
            Ok(status) if status.state.is_settled() => {
                if store.bill_paid(&bill.payment_hash, now).await? {
                    run.paid += 1;
                }
                if now >= bill.due_at {
                    paid_overdue.push(bill.provider.as_str());
                }
            }
            Ok(_) => unpaid.push(bill),
            // Unknown to the backend now: its state cannot be told, nothing is decided.
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
