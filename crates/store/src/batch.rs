//! Group commit for the two writes on the request path, [`Store::consume_call`] and
//! [`Store::record_invoice`]: writes that arrive while a batch is being written queue up and are
//! written together, one multi-row statement per kind (in one transaction when both kinds are
//! present), so under load the store commits once per batch instead of once per request.
//!
//! Each write is still answered only after the batch holding it committed, and a batch is atomic,
//! so the semantics are exactly those of one statement per write: a failed batch wrote nothing
//! and every caller in it gets the error.
//!
//! [`Store::consume_call`]: crate::Store::consume_call
//! [`Store::record_invoice`]: crate::Store::record_invoice A token appears at most once per
//! batch (a second call of the same token waits for the next batch), and rows are written in
//! token order, so concurrent batches of several gateway replicas cannot deadlock.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use turnpike_l402::TokenId;

use crate::{Consumption, InvoiceRecord, StoreError};

/// Most calls written in one batch.
pub(crate) const MAX_BATCH: usize = 64;

/// One call to consume.
#[derive(Debug, Clone)]
pub struct ConsumeRequest {
    pub token: TokenId,
    pub service: String,
    pub calls_total: u64,
    pub now_unix: u64,
}

/// One write on the request path.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    Consume(ConsumeRequest),
    Invoice(InvoiceRecord),
    /// Gives back a call granted to a caller that left before reading the answer.
    Refund(TokenId),
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Consumed(Consumption),
    /// The invoice was recorded (`false`: its payment hash was already recorded).
    Recorded(bool),
}

/// Writes a batch of distinct tokens (sorted by token) and invoices: for each consume its
/// outcome, and for each invoice whether it was new, in order.
#[async_trait]
pub(crate) trait BatchWriter: Send + Sync + 'static {
    async fn write_batch(
        &self,
        consumes: &[ConsumeRequest],
        invoices: &[InvoiceRecord],
    ) -> Result<(Vec<Consumption>, Vec<bool>), StoreError>;

    /// Gives back one call of `token` (its caller left before learning it was charged).
    async fn refund(&self, token: &TokenId) -> Result<(), StoreError>;
}

struct Pending {
    write: Write,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

impl Pending {
    /// The token a consume charges (one consume per token and batch).
    fn token(&self) -> Option<TokenId> {
        match &self.write {
            Write::Consume(r) => Some(r.token),
            Write::Invoice(_) | Write::Refund(_) => None,
        }
    }
}

/// The queue in front of a store's writers.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    queue: mpsc::UnboundedSender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("token", &self.token())
            .finish()
    }
}

impl Batcher {
    /// Starts `writers` tasks writing batches with `store` (on the current Tokio runtime). They
    /// stop when every handle to this batcher is dropped.
    pub(crate) fn start(store: Arc<dyn BatchWriter>, writers: usize) -> Batcher {
        let (queue, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(tokio::sync::Mutex::new(Receiver {
            rx,
            deferred: VecDeque::new(),
        }));
        for _ in 0..writers.max(1) {
            let (rx, store) = (rx.clone(), store.clone());
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut rx = rx.lock().await;
                        match rx.next_batch().await {
                            Some(b) => b,
                            None => return,
                        }
                    };
                    write(&*store, batch).await;
                }
            });
        }
        Batcher { queue }
    }

    /// Writes `write` in the next batch. If the caller goes away before reading a granted
    /// consume (its client hung up), the call is given back: nothing is charged unseen.
    pub(crate) async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let token = match &write {
            Write::Consume(r) => Some(r.token),
            _ => None,
        };
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { write, reply })
            .map_err(|_| StoreError::Closed)?;
        let mut answer = Answer {
            rx: answer,
            token,
            queue: self.queue.clone(),
            read: false,
        };
        let result = (&mut answer.rx).await;
        answer.read = true;
        result.map_err(|_| StoreError::Closed)?
    }
}

/// The caller's side of a pending write; see [`Batcher::write`].
struct Answer {
    rx: oneshot::Receiver<Result<Written, StoreError>>,
    token: Option<TokenId>,
    queue: mpsc::UnboundedSender<Pending>,
    read: bool,
}

impl Drop for Answer {
    fn drop(&mut self) {
        if self.read {
            return;
        }
        // Either the writer has not answered yet (closing makes its send fail, and it gives the
        // call back itself), or it has: then the granted call is given back here.
        self.rx.close();
        if let (Ok(Ok(Written::Consumed(Consumption::Granted { .. }))), Some(token)) =
            (self.rx.try_recv(), self.token)
        {
            let (reply, _) = oneshot::channel();
            let _ = self.queue.send(Pending {
                write: Write::Refund(token),
                reply,
            });
        }
    }
}

struct Receiver {
    rx: mpsc::UnboundedReceiver<Pending>,
    /// Calls of tokens already in the batch being assembled, kept for the next one.
    deferred: VecDeque<Pending>,
}

impl Receiver {
    /// Waits for at least one call, then takes whatever else is queued (up to [`MAX_BATCH`]),
    /// one call per token.
    async fn next_batch(&mut self) -> Option<Vec<Pending>> {
        let mut batch: Vec<Pending> = Vec::new();
        let mut tokens: HashSet<TokenId> = HashSet::new();
        let mut later = VecDeque::new();
        let mut fresh = |p: &Pending| p.token().is_none_or(|t| tokens.insert(t));
        while let Some(p) = self.deferred.pop_front() {
            if batch.len() < MAX_BATCH && fresh(&p) {
                batch.push(p);
            } else {
                later.push_back(p);
            }
        }
        self.deferred = later;
        if batch.is_empty() {
            let first = self.rx.recv().await?;
            fresh(&first);
            batch.push(first);
        }
        while batch.len() < MAX_BATCH {
            let Ok(p) = self.rx.try_recv() else { break };
            if fresh(&p) {
                batch.push(p);
            } else {
                self.deferred.push_back(p);
            }
        }
        Some(batch)
    }
}

async fn write(store: &dyn BatchWriter, batch: Vec<Pending>) {
    // Refunds are owed whoever waits; other callers that gave up need no write.
    let (refunds, mut batch): (Vec<Pending>, Vec<Pending>) = batch
        .into_iter()
        .partition(|p| matches!(p.write, Write::Refund(_)));
    for p in refunds {
        if let Write::Refund(token) = p.write
            && let Err(e) = store.refund(&token).await
        {
            tracing::error!(token = %token, error = %e, "could not give back an abandoned call");
        }
    }
    batch.retain(|p| !p.reply.is_closed());
    if batch.is_empty() {
        return;
    }
    let (mut consumes, invoices): (Vec<Pending>, Vec<Pending>) = batch
        .into_iter()
        .partition(|p| matches!(p.write, Write::Consume(_)));
    consumes.sort_unstable_by_key(|p| p.token().map(|t| t.0));
    let consume_requests: Vec<ConsumeRequest> = consumes
        .iter()
        .filter_map(|p| match &p.write {
            Write::Consume(r) => Some(r.clone()),
            Write::Invoice(_) | Write::Refund(_) => None,
        })
        .collect();
    let invoice_records: Vec<InvoiceRecord> = invoices
        .iter()
        .filter_map(|p| match &p.write {
            Write::Invoice(r) => Some(r.clone()),
            Write::Consume(_) | Write::Refund(_) => None,
        })
        .collect();
    match store.write_batch(&consume_requests, &invoice_records).await {
        Ok((consumed, recorded))
            if consumed.len() == consumes.len() && recorded.len() == invoices.len() =>
        {
            let mut abandoned = Vec::new();
            for (p, outcome) in consumes.into_iter().zip(consumed) {
                let token = p.token();
                let sent = p.reply.send(Ok(Written::Consumed(outcome)));
                // The caller went away while its batch was written (its client hung up): it
                // never learns of the charge and serves nothing, so the call is given back.
                if let (Err(_), Consumption::Granted { .. }, Some(token)) = (sent, outcome, token) {
                    abandoned.push(token);
                }
            }
            for token in abandoned {
                if let Err(e) = store.refund(&token).await {
                    tracing::error!(token = %token, error = %e, "could not give back an abandoned call");
                }
            }
            for (p, new) in invoices.into_iter().zip(recorded) {
                let _ = p.reply.send(Ok(Written::Recorded(new)));
            }
        }
        Ok(_) => {
            for p in consumes.into_iter().chain(invoices) {
                let _ = p.reply.send(Err(StoreError::Corrupt(
                    "batch answered a wrong number of rows",
                )));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for p in consumes.into_iter().chain(invoices) {
                let _ = p.reply.send(Err(StoreError::Batch(message.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A writer that grants every consume once `release` is notified, and records refunds.
    #[derive(Default)]
    struct Gate {
        release: tokio::sync::Notify,
        entered: tokio::sync::Notify,
        refunds: Mutex<Vec<TokenId>>,
    }

    #[async_trait]
    impl BatchWriter for Gate {
        async fn write_batch(
            &self,
            consumes: &[ConsumeRequest],
            invoices: &[InvoiceRecord],
        ) -> Result<(Vec<Consumption>, Vec<bool>), StoreError> {
            self.entered.notify_one();
            self.release.notified().await;
            let granted = Consumption::Granted {
                remaining: 0,
                first_use: false,
            };
            Ok((vec![granted; consumes.len()], vec![true; invoices.len()]))
        }

        async fn refund(&self, token: &TokenId) -> Result<(), StoreError> {
            self.refunds.lock().unwrap().push(*token);
            Ok(())
        }
    }

    fn consume(token: TokenId) -> Write {
        Write::Consume(ConsumeRequest {
            token,
            service: "svc".into(),
            calls_total: 1,
            now_unix: 1,
        })
    }

    async fn refunded(gate: &Gate) -> Vec<TokenId> {
        for _ in 0..100 {
            let r = gate.refunds.lock().unwrap().clone();
            if !r.is_empty() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Vec::new()
    }

    #[tokio::test]
    async fn a_caller_gone_before_its_batch_is_answered_is_given_the_call_back() {
        let gate = Arc::new(Gate::default());
        let batcher = Batcher::start(gate.clone(), 1);
        let token = TokenId::random();
        let caller = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.write(consume(token)).await }
        });
        gate.entered.notified().await;
        caller.abort();
        let _ = caller.await;
        gate.release.notify_one();
        assert_eq!(refunded(&gate).await, vec![token]);
    }

    #[tokio::test]
    async fn a_caller_gone_after_the_answer_but_before_reading_it_is_given_the_call_back() {
        let gate = Arc::new(Gate::default());
        let batcher = Batcher::start(gate.clone(), 1);
        let token = TokenId::random();
        let mut pending = Box::pin(batcher.write(consume(token)));
        assert!(futures_util::FutureExt::now_or_never(&mut pending).is_none());
        gate.entered.notified().await;
        gate.release.notify_one();
        // Let the writer send its answer, then drop the caller without reading it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(pending);
        assert_eq!(refunded(&gate).await, vec![token]);
    }

    #[tokio::test]
    async fn a_caller_that_reads_its_answer_keeps_the_charge() {
        let gate = Arc::new(Gate::default());
        let batcher = Batcher::start(gate.clone(), 1);
        let release = async {
            gate.entered.notified().await;
            gate.release.notify_one();
        };
        let (written, ()) = tokio::join!(batcher.write(consume(TokenId::random())), release);
        assert_eq!(
            written.unwrap(),
            Written::Consumed(Consumption::Granted {
                remaining: 0,
                first_use: false
            })
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(gate.refunds.lock().unwrap().is_empty());
    }
}
