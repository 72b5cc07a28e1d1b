//! Watching one client connection: what it is doing (waiting for a request head, serving a
//! request, idle between requests, waiting for the client to read) and since when, so that
//! slow, idle and non-reading clients are closed on time and shutdown closes what has nothing in
//! flight.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Frame, SizeHint};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ConnectionsConfig;

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Connected, or bytes of a request head arrived: the head must be complete in time.
    HeadPending,
    /// A request is being served (its response body not yet produced to its end).
    Busy,
    /// Between requests on a keep-alive connection.
    Idle,
    /// A write to the client has been waiting (the client does not read).
    SendBlocked,
}

const HEAD_PENDING: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// A connection's phase and when it began, shared by the connection's reader, its service and
/// its watcher.
#[derive(Debug)]
pub(crate) struct Activity {
    phase: AtomicU8,
    /// When the phase began, in milliseconds after `epoch`.
    since_ms: AtomicU64,
    epoch: Instant,
    /// Woken when a request head starts on an idle connection, or a write starts waiting
    /// (the deadline moves closer).
    head_started: Notify,
    /// Since when a write to the client has been waiting, in milliseconds after `epoch`
    /// ([`NOT_BLOCKED`]: none is).
    write_blocked_ms: AtomicU64,
}

/// No write is waiting.
const NOT_BLOCKED: u64 = u64::MAX;

impl Activity {
    /// A connection just accepted: waiting for its first request head.
    pub(crate) fn new() -> Activity {
        Activity {
            phase: AtomicU8::new(HEAD_PENDING),
            since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            head_started: Notify::new(),
            write_blocked_ms: AtomicU64::new(NOT_BLOCKED),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived from the client.
    fn bytes_arrived(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.since_ms.store(self.now_ms(), Ordering::Relaxed);
            self.phase.store(HEAD_PENDING, Ordering::Relaxed);
            self.head_started.notify_one();
        }
    }

    /// A write to the client could (`false`) or could not (`true`) go out now.
    fn write_waiting(&self, waiting: bool) {
        let blocked = self.write_blocked_ms.load(Ordering::Relaxed) != NOT_BLOCKED;
        if waiting && !blocked {
            self.write_blocked_ms
                .store(self.now_ms(), Ordering::Relaxed);
            self.head_started.notify_one();
        } else if !waiting && blocked {
            self.write_blocked_ms.store(NOT_BLOCKED, Ordering::Relaxed);
        }
    }

    /// A whole request head arrived and is being served.
    pub(crate) fn request_started(&self) {
        self.phase.store(BUSY, Ordering::Relaxed);
    }

    /// The response body was produced to its end (or dropped).
    fn response_done(&self) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(IDLE, Ordering::Relaxed);
    }

    /// The phase now, and when it ends by timeout (for `Busy`: when to look again).
    pub(crate) fn deadline(&self, limits: &ConnectionsConfig) -> (Phase, Instant) {
        let blocked = self.write_blocked_ms.load(Ordering::Relaxed);
        if blocked != NOT_BLOCKED {
            let since = self.epoch + Duration::from_millis(blocked);
            return (
                Phase::SendBlocked,
                since + Duration::from_secs(limits.send_timeout_secs),
            );
        }
        let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        let keep_alive = Duration::from_secs(limits.keep_alive_timeout_secs);
        match self.phase.load(Ordering::Relaxed) {
            HEAD_PENDING => (
                Phase::HeadPending,
                since + Duration::from_secs(limits.header_read_timeout_secs),
            ),
            IDLE => (Phase::Idle, since + keep_alive),
            _ => (Phase::Busy, Instant::now() + keep_alive),
        }
    }
}

/// The client's socket, telling the connection's [`Activity`] when bytes arrive.
pub(crate) struct TimedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl TimedStream {
    pub(crate) fn new(inner: TcpStream, activity: Arc<Activity>) -> TimedStream {
        TimedStream { inner, activity }
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        result
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.write_waiting(result.is_pending());
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.write_waiting(result.is_pending());
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that marks its connection idle once produced to its end or dropped.
pub(crate) struct TrackedBody {
    inner: Body,
    activity: Option<Arc<Activity>>,
}

impl TrackedBody {
    pub(crate) fn new(inner: Body, activity: Arc<Activity>) -> TrackedBody {
        TrackedBody {
            inner,
            activity: Some(activity),
        }
    }

    fn done(&mut self) {
        if let Some(activity) = self.activity.take() {
            activity.response_done();
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.done();
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let result = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(result, Poll::Ready(None | Some(Err(_)))) {
            self.done();
        }
        result
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Drives one connection and closes it when a deadline passes or the server stops.
pub(crate) struct Watch {
    pub(crate) activity: Arc<Activity>,
    pub(crate) limits: ConnectionsConfig,
    /// Graceful stop: close if nothing is in flight, else finish the request and close.
    pub(crate) stop: CancellationToken,
    /// Close now, whatever is in flight.
    pub(crate) hard_stop: CancellationToken,
}

impl Watch {
    /// Serves `conn` until it ends or the watch closes it.
    ///
    /// The connection is polled whenever it is woken; the watch (its deadline, the head-started
    /// signal, the stop tokens) only when one of those woke it. Polling all of them on every
    /// wake of the connection cost about a tenth of a proxied request's instructions.
    pub(crate) async fn drive<C>(self, conn: C)
    where
        C: GracefulConnection,
        C::Error: std::fmt::Display,
    {
        let graceful = AtomicBool::new(false);
        let mut watch = std::pin::pin!(self.watch(&graceful));
        let mut conn = std::pin::pin!(conn);
        let signal = Arc::new(WatchSignal {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let watch_waker = Waker::from(signal.clone());
        std::future::poll_fn(|cx| {
            signal.task.register(cx.waker());
            if signal.woken.swap(false, Ordering::AcqRel) {
                let mut watch_cx = Context::from_waker(&watch_waker);
                if watch.as_mut().poll(&mut watch_cx).is_ready() {
                    return Poll::Ready(());
                }
                if graceful.swap(false, Ordering::Relaxed) {
                    conn.as_mut().graceful_shutdown();
                }
            }
            match conn.as_mut().poll(cx) {
                Poll::Ready(Err(e)) => {
                    tracing::trace!(error = %e, "connection ended with an error");
                    Poll::Ready(())
                }
                Poll::Ready(Ok(())) => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
    }

    /// Ends when the connection must close; asks (through `graceful`) for a graceful shutdown
    /// when the server stops while a request is in flight.
    async fn watch(&self, graceful: &AtomicBool) {
        // Made once: a new timer or cancellation future per request costs a registration each.
        let mut stop = std::pin::pin!(self.stop.cancelled());
        let mut hard_stop = std::pin::pin!(self.hard_stop.cancelled());
        let mut sleep = std::pin::pin!(tokio::time::sleep_until(
            self.activity.deadline(&self.limits).1
        ));
        let mut stopping = false;
        loop {
            let (_, deadline) = self.activity.deadline(&self.limits);
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            tokio::select! {
                () = &mut sleep => {
                    // The phase may have changed while sleeping: look again.
                    let (phase, deadline) = self.activity.deadline(&self.limits);
                    if phase != Phase::Busy && deadline <= Instant::now() {
                        tracing::debug!(?phase, "closing a connection that timed out");
                        return;
                    }
                }
                () = self.activity.head_started.notified() => {}
                () = &mut stop, if !stopping => {
                    stopping = true;
                    if self.activity.deadline(&self.limits).0 != Phase::Busy {
                        return;
                    }
                    graceful.store(true, Ordering::Relaxed);
                }
                () = &mut hard_stop => return,
            }
        }
    }
}

/// Wakes the connection's task for its watch, noting that the watch is what woke it.
struct WatchSignal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WatchSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}
