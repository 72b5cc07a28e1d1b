//! Serving accepted connections: HTTP/1.1, each request handed straight to the pipeline; only
//! `/_turnpike/…` goes through the internal router.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tower::ServiceExt;

use crate::SharedState;

/// Where the gateway's own endpoints live.
const INTERNAL_PREFIX: &str = "/_turnpike/";

/// The next accepted connection. Accept errors (out of file descriptors and the like) are
/// logged and retried after a short pause, as axum does.
pub(crate) async fn accept(
    listener: &tokio::net::TcpListener,
) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves the connections of one runtime and lets them finish at shutdown.
pub(crate) struct ConnectionServer {
    state: SharedState,
    internal: axum::Router,
    builder: http1::Builder,
    graceful: GracefulShutdown,
}

impl ConnectionServer {
    pub(crate) fn new(state: SharedState) -> ConnectionServer {
        ConnectionServer {
            internal: crate::app_with(state.clone()),
            state,
            builder: http1::Builder::new(),
            graceful: GracefulShutdown::new(),
        }
    }

    /// Serves `stream` on a task of the current runtime.
    pub(crate) fn serve(&self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        // Small requests and answers go out at once (no Nagle delay), as nginx does.
        let _ = stream.set_nodelay(true);
        let (state, internal) = (self.state.clone(), self.internal.clone());
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            let internal = internal.clone();
            async move {
                let mut req = req.map(Body::new);
                let resp = if req.uri().path().starts_with(INTERNAL_PREFIX) {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    match internal.oneshot(req).await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    }
                } else {
                    crate::pipeline::serve(state, peer, req).await
                };
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = self
            .graceful
            .watch(self.builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }

    /// Asks every connection to finish its request in flight and close, and waits for them.
    pub(crate) async fn shutdown(self) {
        self.graceful.shutdown().await;
    }
}
