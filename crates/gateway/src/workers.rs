//! Thread-per-core serving: `N` worker threads, each with a single-threaded Tokio runtime, its
//! own copy of the pipeline state's upstream client (so a request and its upstream connection
//! are always polled on the same thread) and the connections the acceptor deals it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::serving::{Acceptor, ConnectionPermit, ConnectionServer};
use crate::{AppState, SharedState};

/// Runs the workers until `shutdown`, then lets each finish its requests in flight.
pub(crate) async fn serve(
    state: &SharedState,
    listener: tokio::net::TcpListener,
    workers: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut queues = Vec::with_capacity(workers);
    let mut done = Vec::with_capacity(workers);
    for i in 0..workers {
        let (tx, rx) = mpsc::channel::<Dealt>(1024);
        queues.push(tx);
        let worker_state: SharedState = Arc::new(AppState::for_worker(state.shared.clone()));
        let stop = stop_rx.clone();
        let (finished_tx, finished_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        done.push(finished_rx);
        std::thread::Builder::new()
            .name(format!("turnpike-worker-{i}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(run_worker(worker_state, rx, stop)));
                let _ = finished_tx.send(result);
            })?;
    }

    let mut acceptor = Acceptor::new(state);
    let mut queues_full =
        crate::serving::Episode::new("every worker's queue is full: new connections get 503");
    let accept = async {
        let mut next = 0usize;
        loop {
            let (stream, peer, permit) = acceptor.accept(&listener).await;
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand over an accepted connection");
                    continue;
                }
            };
            match deal(&queues, &mut next, (stream, peer, permit)) {
                Ok(()) => queues_full.ended(),
                Err((stream, _, permit)) => {
                    queues_full.happened(&format_args!("{} workers", queues.len()));
                    if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                        acceptor.refuse(stream);
                    }
                    drop(permit);
                }
            }
        }
    };
    tokio::select! {
        () = accept => {}
        () = shutdown => {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let mut result = Ok(());
    for finished in done {
        match finished.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => {
                result = Err(std::io::Error::other(
                    "a worker thread stopped unexpectedly",
                ));
            }
        }
    }
    result
}

/// Deals a connection to the next worker (round-robin) whose queue has room, or hands it back
/// when every queue is full (the caller answers it `503` rather than dropping it unanswered).
fn deal(queues: &[mpsc::Sender<Dealt>], next: &mut usize, mut item: Dealt) -> Result<(), Dealt> {
    for _ in 0..queues.len() {
        let queue = &queues[*next % queues.len()];
        *next = next.wrapping_add(1);
        match queue.try_send(item) {
            Ok(()) => return Ok(()),
            Err(
                mpsc::error::TrySendError::Full(back) | mpsc::error::TrySendError::Closed(back),
            ) => item = back,
        }
    }
    Err(item)
}

/// A connection dealt to a worker, with its place in the connection count.
type Dealt = (std::net::TcpStream, SocketAddr, ConnectionPermit);

/// One worker: serves the connections dealt to it until told to stop, then lets them finish.
async fn run_worker(
    state: SharedState,
    mut incoming: mpsc::Receiver<Dealt>,
    mut stop: watch::Receiver<bool>,
) {
    let server = ConnectionServer::new(state);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            next = incoming.recv() => {
                let Some((stream, peer, permit)) = next else { break };
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => server.serve(stream, peer, permit),
                    Err(e) => tracing::warn!(error = %e, "cannot register an accepted connection"),
                }
            }
        }
    }
    server.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_no_worker_can_take_is_handed_back_not_dropped() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(crate::serving::OpenConnections::default());
        let accepted = || {
            let _client = std::net::TcpStream::connect(addr).unwrap();
            let (stream, peer) = listener.accept().unwrap();
            let permit = open.try_open(10).unwrap();
            (stream, peer, permit)
        };
        let (tx_a, mut rx_a) = mpsc::channel::<Dealt>(1);
        let (tx_b, mut rx_b) = mpsc::channel::<Dealt>(1);
        let queues = [tx_a, tx_b];
        let mut next = 0;
        assert!(deal(&queues, &mut next, accepted()).is_ok());
        assert!(deal(&queues, &mut next, accepted()).is_ok());
        // Both queues are full: the third comes back to be answered.
        let back = deal(&queues, &mut next, accepted());
        assert!(back.is_err());
        // Round-robin: one went to each worker.
        assert!(rx_a.try_recv().is_ok() && rx_b.try_recv().is_ok());
        assert!(deal(&queues, &mut next, back.unwrap_err()).is_ok());
    }
}
