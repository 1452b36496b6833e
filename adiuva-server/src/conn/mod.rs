//! The HTTP connection layer: accepts sockets and serves them with hyper, under the
//! limits a server on the open internet needs (issue #9, item 3).
//!
//! poem's `Server` cannot do this: it gives hyper no timer (so hyper's own header
//! timeout is off), and its only knob, `idle_timeout`, is an inactivity timer over the
//! whole socket — a header dripped a byte every few seconds resets it, it cannot tell a
//! kept-alive connection from one in the middle of a request body, and it would cut an
//! upgraded WebSocket. So [`serve`] drives hyper-util's auto (HTTP/1.1 + h2c) connection
//! itself — the same thing poem's `Server` does, in the same few lines — and adds:
//!
//! - [`io::TimedIo`]: the request-head deadline, the idle keep-alive timeout and the
//!   write-stall timeout, enforced on the socket while no request is in flight (the
//!   service marks requests), never on an upgraded connection;
//! - [`body::MinRate`]: a minimum average rate for every request body;
//! - a cap on open connections per client IP, checked at accept: a connection over it
//!   gets a best-effort `429 too_many_connections` and is closed before anything is
//!   spawned for it.
//!
//! Graceful shutdown is poem's: stop accepting, let every connection finish its
//! in-flight requests (hyper closes idle ones at once), and cut what is left after the
//! drain timeout.

pub mod body;
pub mod io;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt as _;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::http::StatusCode;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Body, Endpoint, EndpointExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use body::BodyRate;
pub use io::IoTimeouts;

use io::{ConnState, InFlight, TimedIo};

/// Every limit of the connection layer.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Head, keep-alive and write-stall timeouts.
    pub io: IoTimeouts,
    /// The minimum request-body rate.
    pub body: BodyRate,
    /// Open connections allowed per client IP (0: no cap).
    pub max_per_ip: usize,
}

/// Open connections per client IP.
#[derive(Debug, Clone, Default)]
struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection counted against its IP until dropped.
#[derive(Debug)]
struct IpSlot {
    table: PerIp,
    ip: IpAddr,
}

impl PerIp {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Only counters live here; a panic elsewhere cannot leave them half-updated.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn try_acquire(&self, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut table = self.table();
        let open = table.entry(ip).or_insert(0);
        if max > 0 && *open >= max {
            return None;
        }
        *open += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut table = self.table.table();
        if let Some(open) = table.get_mut(&self.ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                table.remove(&self.ip);
            }
        }
    }
}

/// What a connection over the per-IP cap is sent before it is closed.
const REFUSAL: &str = concat!(
    "HTTP/1.1 429 Too Many Requests\r\n",
    "content-type: application/json\r\n",
    "connection: close\r\n",
    "content-length: 86\r\n",
    "\r\n",
    r#"{"detail":"too many open connections from this address","code":"too_many_connections"}"#,
);

/// A response body that keeps its request "in flight" until hyper has written it all.
struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: HttpBody + Unpin> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `ep` on `listener` under `limits` until `shutdown` resolves, then drains for
/// at most `drain`.
pub async fn serve<E>(
    listener: TcpListener,
    ep: E,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()>
where
    E: Endpoint + 'static,
{
    let ep = Arc::new(ep.map_to_response());
    let local = listener.local_addr()?;
    let per_ip = PerIp::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "a connection task panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(slot) = per_ip.try_acquire(peer.ip(), limits.max_per_ip) else {
                        refuse(stream, peer);
                        continue;
                    };
                    connections.spawn(connection(
                        stream, local, peer, ep.clone(), limits, stop_rx.clone(), slot,
                    ));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "drain timeout passed; closing the remaining connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Says why and closes. `try_write` never blocks: a fresh socket's send buffer is empty,
/// and if even that fails the client just sees the connection closed.
fn refuse(stream: TcpStream, peer: SocketAddr) {
    tracing::warn!(client_ip = %peer.ip(), "refused a connection: too many open connections from this address");
    let _ = stream.try_write(REFUSAL.as_bytes());
}

async fn connection<E>(
    stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    ep: Arc<E>,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
    _slot: IpSlot,
) where
    E: Endpoint<Output = poem::Response> + 'static,
{
    let state = ConnState::default();
    let io = TimedIo::new(stream, state.clone(), limits.io);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let (ep, state) = (ep.clone(), state.clone());
        let in_flight = state.request_started();
        let has_body = !req.body().is_end_stream();
        let mut req: poem::Request = (
            req,
            LocalAddr(local.into()),
            RemoteAddr(peer.into()),
            Scheme::HTTP,
        )
            .into();
        if has_body {
            let body = req.take_body().into_bytes_stream().boxed();
            req.set_body(Body::from_bytes_stream(body::MinRate::new(
                body,
                limits.body,
            )));
        }
        async move {
            let resp = ep.get_response(req).await;
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                state.upgraded();
            }
            let resp: hyper::Response<_> = resp.into();
            Ok::<_, Infallible>(resp.map(|inner| Tracked {
                inner,
                _in_flight: in_flight,
            }))
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                tracing::debug!(error = %e, client_ip = %peer.ip(), "connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|stop| *stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
