//! The connection's socket wrapped with the timeouts hyper does not keep itself.
//!
//! [`TimedIo`] knows, through [`ConnState`], whether a request is in flight (the service
//! marks it), and enforces while none is:
//!
//! - on a fresh connection, a complete request head within `header_read` of the accept;
//! - on a kept-alive connection, the next request's first byte within `keep_alive` of the
//!   previous response, then its complete head within `header_read` of that first byte.
//!
//! Both are deadlines, not inactivity timers: a head dripped a byte at a time is cut at
//! the same moment as one that never comes. While a request is in flight the body has its
//! own rule (`body::MinRate`) and writes have theirs (a client that stops reading the
//! response is cut after `write_stall`). Once the connection is upgraded (WebSocket) none
//! of this applies: the socket has pings and its own rules.
//!
//! A timeout surfaces as an I/O error (`TimedOut`) from `poll_read`/`poll_write`; hyper
//! then closes the connection.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The connection timeouts (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct IoTimeouts {
    /// A request head must be complete this long after the accept, or after its first byte
    /// on a kept-alive connection.
    pub header_read: Duration,
    /// An idle kept-alive connection is closed when no new request starts within this.
    pub keep_alive: Duration,
    /// A response write that makes no progress for this long (the client stopped reading)
    /// cuts the connection.
    pub write_stall: Duration,
}

#[derive(Debug, Default)]
struct Phase {
    /// Requests whose response has not been fully written yet.
    in_flight: usize,
    /// Bumped each time the connection becomes idle again (a new wait for a head starts).
    idle_since_response: u64,
    /// Switched protocols: no HTTP timeouts any more.
    upgraded: bool,
    /// The task last blocked reading the socket. hyper does not poll a socket again when
    /// a response ends (it waits for readability), so going idle wakes it to arm the
    /// keep-alive deadline.
    reader: Option<Waker>,
}

/// What the service tells the socket about the connection's requests.
#[derive(Debug, Clone, Default)]
pub struct ConnState(Arc<Mutex<Phase>>);

impl ConnState {
    fn with<T>(&self, f: impl FnOnce(&mut Phase) -> T) -> T {
        // A poisoned lock only means another task panicked mid-update of three plain
        // fields; the values are still meaningful.
        let mut p = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut p)
    }

    /// A request head was parsed; returns the guard that ends it when dropped (with the
    /// response body, so "in flight" lasts until the response is written).
    pub fn request_started(&self) -> InFlight {
        self.with(|p| p.in_flight += 1);
        InFlight(self.clone())
    }

    /// The connection switched protocols (101): HTTP timeouts stop.
    pub fn upgraded(&self) {
        self.with(|p| p.upgraded = true);
    }

    fn snapshot(&self) -> (bool, u64) {
        self.with(|p| (p.upgraded || p.in_flight > 0, p.idle_since_response))
    }
}

/// Marks one request in flight until dropped.
#[derive(Debug)]
pub struct InFlight(ConnState);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.with(|p| {
            p.in_flight = p.in_flight.saturating_sub(1);
            if p.in_flight == 0 {
                p.idle_since_response += 1;
                if let Some(reader) = p.reader.take() {
                    reader.wake();
                }
            }
        });
    }
}

/// Where the wait for the next request head stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A request is in flight or the connection is upgraded: no head deadline.
    None,
    /// Waiting for the first byte (keep-alive) or, on a fresh connection, the whole head.
    Idle,
    /// Some bytes of the next head have arrived.
    Head,
}

/// A socket with the connection timeouts (see the module docs).
pub struct TimedIo<T> {
    inner: T,
    state: ConnState,
    timeouts: IoTimeouts,
    /// The `idle_since_response` this wait belongs to (`None`: the fresh connection's).
    epoch: Option<u64>,
    wait: Wait,
    read_deadline: Pin<Box<Sleep>>,
    write_deadline: Pin<Box<Sleep>>,
    write_stalled: bool,
}

impl<T> TimedIo<T> {
    /// Wraps an accepted socket; the fresh connection's head deadline starts now.
    pub fn new(inner: T, state: ConnState, timeouts: IoTimeouts) -> Self {
        let now = Instant::now();
        Self {
            inner,
            state,
            timeouts,
            epoch: None,
            wait: Wait::Idle,
            read_deadline: Box::pin(tokio::time::sleep_until(now + timeouts.header_read)),
            write_deadline: Box::pin(tokio::time::sleep_until(now + timeouts.write_stall)),
            write_stalled: false,
        }
    }

    /// Brings `wait` up to date with the service's view of the connection.
    fn refresh(&mut self) {
        let (busy, epoch) = self.state.snapshot();
        if busy {
            self.wait = Wait::None;
            return;
        }
        let fresh = self.epoch.is_none() && epoch == 0;
        if !fresh && self.epoch != Some(epoch) {
            // The previous response is done: the keep-alive wait starts now.
            self.epoch = Some(epoch);
            self.wait = Wait::Idle;
            self.read_deadline
                .as_mut()
                .reset(Instant::now() + self.timeouts.keep_alive);
        }
    }

    fn timed_out(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.refresh();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.wait == Wait::Idle && buf.filled().len() > before && this.epoch.is_some() {
                    // The first byte of the next request on a kept-alive connection: the
                    // head is now due within header_read. (A fresh connection's deadline
                    // already counts from the accept.)
                    this.wait = Wait::Head;
                    this.read_deadline
                        .as_mut()
                        .reset(Instant::now() + this.timeouts.header_read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.wait == Wait::None {
                    // Checked again under the lock: the request may have ended since
                    // `refresh`, and then no one would wake us.
                    let parked = this.state.with(|p| {
                        let busy = p.upgraded || p.in_flight > 0;
                        if busy {
                            p.reader = Some(cx.waker().clone());
                        }
                        busy
                    });
                    if !parked {
                        cx.waker().wake_by_ref();
                    }
                } else if this.read_deadline.as_mut().poll(cx).is_ready() {
                    let what = match (this.wait, this.epoch) {
                        (Wait::Idle, Some(_)) => "idle keep-alive connection timed out",
                        _ => "request head not received in time",
                    };
                    tracing::debug!(reason = what, "closing connection");
                    return Poll::Ready(Err(Self::timed_out(what)));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> TimedIo<T> {
    /// Runs a write, cutting it when it makes no progress for `write_stall` (HTTP only).
    fn poll_stall<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Ready(r) => {
                self.write_stalled = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.state.with(|p| p.upgraded) {
                    return Poll::Pending;
                }
                if !self.write_stalled {
                    self.write_stalled = true;
                    self.write_deadline
                        .as_mut()
                        .reset(Instant::now() + self.timeouts.write_stall);
                }
                ready!(self.write_deadline.as_mut().poll(cx));
                tracing::debug!("closing connection: the client stopped reading the response");
                Poll::Ready(Err(Self::timed_out(
                    "the client stopped reading the response",
                )))
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_stall(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_stall(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_stall(cx, AsyncWrite::poll_flush)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
