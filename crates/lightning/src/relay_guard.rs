//! The SSRF guard for nostr relays a third party named (a hub provider's NWC connection): a
//! websocket transport for the relay pool that connects only to `wss` relays whose host
//! resolves to public addresses, and connects **to the addresses it checked** (so a name that
//! resolves elsewhere a moment later is not followed), at every connection and reconnection.
//! TLS is verified for the relay's name as usual.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_wsocket::{ConnectionMode, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{Sink, SinkExt as _, StreamExt as _, TryStreamExt as _};
use nostr::Url;
use nostr::util::BoxedFuture;
use nostr_relay_pool::transport::error::TransportError;
use nostr_relay_pool::transport::websocket::{WebSocketSink, WebSocketStream, WebSocketTransport};
use tokio::net::TcpStream;

/// Connects to `wss` relays on public addresses only (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicRelays;

impl WebSocketTransport for PublicRelays {
    fn support_ping(&self) -> bool {
        true
    }

    fn connect<'a>(
        &'a self,
        url: &'a Url,
        _mode: &'a ConnectionMode,
        timeout: Duration,
    ) -> BoxedFuture<'a, Result<(WebSocketSink, WebSocketStream), TransportError>> {
        Box::pin(async move {
            let socket = tokio::time::timeout(timeout, connect(url))
                .await
                .map_err(|_| refused("timed out".into()))??;
            let (tx, rx) = WebSocket::Tokio(socket).split();
            let sink: WebSocketSink = Box::new(GuardedSink(tx));
            let stream: WebSocketStream = Box::pin(rx.map_err(TransportError::backend));
            Ok((sink, stream))
        })
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Checks `url`, resolves its host once, and opens the websocket over a TCP connection to one
/// of the (public) addresses found.
async fn connect(url: &Url) -> Result<Socket, TransportError> {
    let checked = reqwest::Url::parse(url.as_str()).map_err(TransportError::backend)?;
    if checked.scheme() != "wss" {
        return Err(refused(format!(
            "only wss relays are accepted, not {}:",
            checked.scheme()
        )));
    }
    let addrs = crate::net_guard::public_addrs(&checked)
        .await
        .map_err(refused)?;
    open(url, &addrs).await
}

/// Opens the websocket `url` over a TCP connection to one of `addrs` (the first that answers):
/// TLS, for `wss`, verified for the URL's host name.
async fn open(url: &Url, addrs: &[SocketAddr]) -> Result<Socket, TransportError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                let (socket, _) = tokio_tungstenite::client_async_tls(url.as_str(), tcp)
                    .await
                    .map_err(TransportError::backend)?;
                return Ok(socket);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(TransportError::backend(last.unwrap_or_else(|| {
        std::io::Error::other("the relay resolves to no address")
    })))
}

fn refused(message: String) -> TransportError {
    TransportError::backend(std::io::Error::other(format!("refused: {message}")))
}

/// The write half, its errors as the pool expects them (written out rather than with
/// `sink_map_err`, as nostr-relay-pool does, see rust-nostr issue 984).
struct GuardedSink(SplitSink<WebSocket, Message>);

impl Sink<Message> for GuardedSink {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready_unpin(cx).map_err(TransportError::backend)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.0
            .start_send_unpin(item)
            .map_err(TransportError::backend)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_flush_unpin(cx).map_err(TransportError::backend)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_close_unpin(cx).map_err(TransportError::backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket opened to a checked address speaks to the relay through the pool's sink and
    /// stream types (a subscription answered by its end of stored events).
    #[tokio::test]
    async fn a_socket_to_a_checked_address_talks_to_the_relay() {
        use futures_util::StreamExt as _;
        let relay = nostr_relay_builder::LocalRelay::new(
            nostr_relay_builder::RelayBuilder::default().addr("127.0.0.1".parse().unwrap()),
        );
        relay.run().await.unwrap();
        let url = relay.url().await;
        let url = Url::parse(url.as_str()).unwrap();
        let addr = SocketAddr::new(
            "127.0.0.1".parse().unwrap(),
            url.port_or_known_default().unwrap(),
        );
        let socket = open(&url, &[addr]).await.unwrap();
        let (tx, mut rx) = WebSocket::Tokio(socket).split();
        let mut sink: WebSocketSink = Box::new(GuardedSink(tx));
        sink.send(Message::Text(r#"["REQ","t",{"limit":1}]"#.into()))
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), rx.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match answer {
            Message::Text(text) => assert_eq!(text, r#"["EOSE","t"]"#),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn internal_and_plain_relays_are_refused_before_connecting() {
        for bad in [
            "ws://1.1.1.1/",
            "wss://127.0.0.1:7777/",
            "wss://[::1]/",
            "wss://localhost/",
            "wss://10.0.0.1/",
        ] {
            let url = Url::parse(bad).unwrap();
            let Err(e) = PublicRelays
                .connect(&url, &ConnectionMode::Direct, Duration::from_secs(2))
                .await
            else {
                panic!("{bad} was connected");
            };
            assert!(e.to_string().contains("refused"), "{bad}: {e}");
        }
    }
}
