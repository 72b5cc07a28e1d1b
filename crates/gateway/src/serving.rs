//! Serving accepted connections: HTTP/1.1, each request handed straight to the pipeline; only
//! `/_turnpike/…` and `/.well-known/l402.json` go through the internal router.
//!
//! Every connection is watched ([`connection`]): a request head must arrive whole within
//! `header_read_timeout_secs` of its first byte (or of connecting), a keep-alive connection may
//! stay idle `keep_alive_timeout_secs`, and at shutdown connections with no request in flight
//! close at once while the others get `shutdown_grace_secs` to finish. The accept loop caps open
//! connections and backs off when the process runs out of file descriptors, logging each such
//! episode once rather than on every attempt.

mod connection;
mod episode;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::SharedState;
use crate::config::ConnectionsConfig;
use connection::{Activity, TimedStream, TrackedBody};
pub(crate) use episode::Episode;

/// Where the gateway's own endpoints live.
const INTERNAL_PREFIX: &str = "/_turnpike/";

/// The count of open client connections, shared by every worker.
#[derive(Debug, Default)]
pub(crate) struct OpenConnections {
    open: Arc<AtomicUsize>,
}

/// One open connection, counted until it is dropped.
#[derive(Debug)]
pub(crate) struct ConnectionPermit(Arc<OpenConnections>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl OpenConnections {
    /// A permit for one more connection, unless `max` are open.
    pub(crate) fn try_open(self: &Arc<Self>, max: usize) -> Option<ConnectionPermit> {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionPermit(self.clone()))
    }

    /// A count kept in `open` (the metrics' gauge).
    pub(crate) fn counting_in(open: Arc<AtomicUsize>) -> OpenConnections {
        OpenConnections { open }
    }
}

/// Accepts connections for one listener, within the connection cap.
pub(crate) struct Acceptor {
    open: Arc<OpenConnections>,
    refusing: Arc<OpenConnections>,
    max: usize,
    failing: Episode,
    full: Episode,
}

/// Body of the answer to a connection over the cap (its request is not read).
const OVER_CAPACITY_BODY: &str = "{\"error\":{\"code\":\"over_capacity\",\"message\":\"Too many connections are open. Retry shortly.\"}}";

fn over_capacity_response() -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{OVER_CAPACITY_BODY}",
        OVER_CAPACITY_BODY.len()
    )
    .into_bytes()
}

/// Longest pause between accept attempts while they fail.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

impl Acceptor {
    pub(crate) fn new(state: &SharedState) -> Acceptor {
        Acceptor {
            open: state.open_connections.clone(),
            refusing: Arc::default(),
            max: state.connections.max,
            failing: Episode::new("accepting connections fails"),
            full: Episode::new("the connection limit is reached: new connections get 503"),
        }
    }

    /// The next accepted connection within the cap. Accept errors (out of file descriptors and
    /// the like) pause the loop, longer while they go on; connections over the cap are answered
    /// `503` and closed.
    pub(crate) async fn accept(
        &mut self,
        listener: &tokio::net::TcpListener,
    ) -> (tokio::net::TcpStream, SocketAddr, ConnectionPermit) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    self.failing.happened(&e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            };
            self.failing.ended();
            match self.open.try_open(self.max) {
                Some(permit) => {
                    self.full.ended();
                    return (stream, peer, permit);
                }
                None => {
                    self.full.happened(&format_args!("{} open", self.max));
                    self.refuse(stream);
                }
            }
        }
    }
}

impl Acceptor {
    /// Answers a connection over the cap with `503` and closes it: the answer is written, the
    /// sending side shut, and what the client sent drained for a moment (closing with unread
    /// bytes would reset the connection and lose the answer). At most [`MAX_REFUSING`] such
    /// connections are kept at once; beyond that they are closed straight away.
    pub(crate) fn refuse(&self, mut stream: tokio::net::TcpStream) {
        let Some(refusing) = self.refusing.try_open(MAX_REFUSING) else {
            return;
        };
        tokio::spawn(async move {
            let answer = async {
                stream.write_all(&over_capacity_response()).await?;
                stream.shutdown().await?;
                let mut sink = [0u8; 1024];
                while stream.read(&mut sink).await? != 0 {}
                Ok::<_, std::io::Error>(())
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
            drop(refusing);
        });
    }
}

/// Most over-the-cap connections being answered at once.
const MAX_REFUSING: usize = 64;

/// Serves the connections of one runtime and lets them finish at shutdown.
pub(crate) struct ConnectionServer {
    state: SharedState,
    internal: axum::Router,
    builder: http1::Builder,
    limits: ConnectionsConfig,
    tracker: TaskTracker,
    stop: CancellationToken,
    hard_stop: CancellationToken,
}

impl ConnectionServer {
    pub(crate) fn new(state: SharedState) -> ConnectionServer {
        ConnectionServer {
            internal: crate::app_with(state.clone()),
            limits: state.connections,
            state,
            builder: http1::Builder::new(),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
        }
    }

    /// Serves `stream` on a task of the current runtime; `permit` is released when it closes.
    pub(crate) fn serve(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        permit: ConnectionPermit,
    ) {
        // Small requests and answers go out at once (no Nagle delay), as nginx does.
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let (state, internal) = (self.state.clone(), self.internal.clone());
        let seen = activity.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            seen.request_started();
            let (state, internal, seen) = (state.clone(), internal.clone(), seen.clone());
            async move {
                let mut req = req.map(Body::new);
                let path = req.uri().path();
                let resp = if path.starts_with(INTERNAL_PREFIX)
                    || path == crate::discovery::PATH
                    || crate::hub::directory::documents::is_hub_path(path)
                {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    match internal.oneshot(req).await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    }
                } else {
                    crate::pipeline::serve(state, peer, req).await
                };
                Ok::<_, Infallible>(resp.map(|body| TrackedBody::new(body, seen)))
            }
        });
        let io = TokioIo::new(TimedStream::new(stream, activity.clone()));
        let conn = self.builder.serve_connection(io, service);
        let watch = connection::Watch {
            activity,
            limits: self.limits,
            stop: self.stop.clone(),
            hard_stop: self.hard_stop.clone(),
        };
        self.tracker.spawn(async move {
            watch.drive(conn).await;
            drop(permit);
        });
    }

    /// Closes idle connections, lets requests in flight finish within the grace period, then
    /// closes whatever is left.
    pub(crate) async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        let grace = Duration::from_secs(self.limits.shutdown_grace_secs);
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = self.tracker.len(),
                "requests still in flight after the shutdown grace period: closing their connections"
            );
            self.hard_stop.cancel();
            self.tracker.wait().await;
        }
    }
}
