//! The plumbing both WebSockets share: authentication before the upgrade, the caps
//! (message size, sockets per user), the bounded outgoing queue, pings and the pong
//! timeout, and [`drive`], which runs one socket in **one task**.
//!
//! One task per socket keeps an idle socket small: [`drive`] polls the socket's reads,
//! the outgoing queue's writes, the ping timer and the session's deadline together. Writes
//! go through the sink's `poll_ready`/`start_send`/`poll_flush` (a frame handed to the
//! socket stays in its buffer), so a client that stops reading stalls only the writes:
//! reads go on, the queue fills and the client is disconnected ([`Stop::NotReading`]).
//! While the session handles a frame, writes go on and reads wait (a frame at a time).

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use adiuva_core::auth::Principal;
use adiuva_core::domain::UserId;
use futures::{Sink, StreamExt as _};
use poem::http::StatusCode;
use poem::web::websocket::{CloseCode, Message, WebSocketConfig, WebSocketStream};
use poem::{Request, Response};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::error::ApiError;

/// How long a tool call waits for its result, how often the server pings, and when a
/// silent socket is closed (from the settings, their one home; `startup::routes` builds
/// it).
#[derive(Debug, Clone, Copy)]
pub struct WsTimings {
    /// A tool call without a result after this becomes an error result for the model.
    pub tool_timeout: Duration,
    /// Interval of WebSocket pings.
    pub ping_every: Duration,
    /// A socket from which nothing (a pong included) arrives for this long is closed.
    pub pong_timeout: Duration,
}

/// Frames the server may have queued for one socket; a client that lets more pile up
/// is not reading and is disconnected. A chat produces frames as fast as the model
/// streams, which a reading client drains long before this.
pub const OUTBOX_FRAMES: usize = 256;

/// How long a closing socket's last frames may take to leave before it is dropped.
const CLOSE_DRAIN: Duration = Duration::from_secs(5);

/// Size caps of a socket kind, and its open sockets per user.
#[derive(Clone)]
pub struct WsLimits {
    /// Largest message (and frame) a client may send, in bytes.
    pub max_message_bytes: usize,
    /// Open sockets per user on this instance.
    pub max_sockets_per_user: usize,
    /// `chat` or `device`, for the refusal.
    kind: &'static str,
    /// The read buffer tungstenite allocates up front.
    read_buffer: usize,
    open: Arc<Mutex<HashMap<UserId, usize>>>,
}

impl WsLimits {
    /// The chat socket's caps, with no socket open yet.
    pub fn new(max_message_bytes: usize, max_sockets_per_user: usize) -> Self {
        Self {
            max_message_bytes,
            max_sockets_per_user,
            kind: "chat",
            read_buffer: 8 * 1024,
            open: Arc::default(),
        }
    }

    /// The device socket's caps: the chat socket's message size, a smaller read buffer
    /// (an idle device socket is the common case; larger frames are read in more steps).
    pub fn devices(max_message_bytes: usize, max_sockets_per_user: usize) -> Self {
        Self {
            kind: "device",
            read_buffer: 2 * 1024,
            ..Self::new(max_message_bytes, max_sockets_per_user)
        }
    }

    pub(crate) fn config(&self) -> WebSocketConfig {
        let mut c = WebSocketConfig::default();
        // tungstenite's defaults (64 MiB messages, 16 MiB frames) let one socket buffer
        // that much of an unfinished message; a frame needs far less.
        c.max_message_size = Some(self.max_message_bytes);
        c.max_frame_size = Some(self.max_message_bytes);
        // Allocated up front per socket (128 KiB by default); reads of larger frames
        // still work, in more steps.
        c.read_buffer_size = self.read_buffer;
        c.write_buffer_size = self.read_buffer;
        // Every frame is flushed, so this only bounds a failing socket's buffer.
        c.max_write_buffer_size = self.read_buffer + self.max_message_bytes.max(1 << 20);
        c
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, usize>> {
        // Only counters live here; a panic elsewhere cannot leave them half-updated.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a socket for `user`, or the 429 `too_many_sockets` refusal (answer it with
    /// [`refusal`]).
    pub(crate) fn try_open(&self, user: UserId) -> Result<OpenSocket, ApiError> {
        let mut open = self.lock();
        let n = open.entry(user).or_insert(0);
        if *n >= self.max_sockets_per_user {
            drop(open);
            tracing::warn!(user_id = %user, kind = self.kind, "refused a socket: too many open");
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_sockets",
                format!(
                    "at most {} {} sockets per user may be open at once; close one first",
                    self.max_sockets_per_user, self.kind
                ),
            ));
        }
        *n += 1;
        Ok(OpenSocket {
            limits: self.clone(),
            user,
        })
    }
}

/// One socket counted against its user until dropped (also when the upgrade fails).
pub(crate) struct OpenSocket {
    limits: WsLimits,
    user: UserId,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

/// An error as the upgrade's JSON answer (`WWW-Authenticate` on a 401).
pub(crate) fn reject(e: adiuva_core::Error) -> Response {
    refusal(&ApiError::from(e))
}

/// An [`ApiError`] as the upgrade's JSON answer.
pub(crate) fn refusal(e: &ApiError) -> Response {
    let mut resp = Response::builder()
        .status(e.status)
        .content_type("application/json")
        .body(serde_json::to_vec(&e.body).unwrap_or_default());
    if e.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            poem::http::header::WWW_AUTHENTICATE,
            poem::http::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

/// The upgrade's caller: the bearer token of the `Authorization` header or `?token=`,
/// through the one door every route uses ([`crate::api::authenticate`]); the 401
/// otherwise, before anything is upgraded.
pub(crate) async fn principal(req: &Request, q: TokenQuery) -> Result<Principal, Response> {
    let header = crate::api::bearer_token(req).map(str::to_owned);
    let Some(token) = header.or(q.token) else {
        return Err(reject(adiuva_core::Error::Unauthorized(
            "send the access token in the Authorization header or as ?token=",
        )));
    };
    crate::api::authenticate(req, &token).await.map_err(reject)
}

/// Why the server ends a socket on its own.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The outgoing queue is full: the client does not read.
    NotReading,
    /// Close with this code and reason (replaced, forgotten, the instance stops).
    Close(CloseCode, String),
}

/// The stop request a socket's handles leave for its task (one slot: the first wins).
#[derive(Default)]
struct Signal {
    stop: Mutex<Option<Stop>>,
    notify: Notify,
}

/// A socket's bounded outgoing queue. [`send`](Self::send) never waits: a full queue
/// means the client stopped reading, and the socket is stopped instead.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Message>,
    signal: Arc<Signal>,
}

impl Outbox {
    /// Queues `m`; false when the socket is gone or the client is not reading.
    pub(crate) fn send(&self, m: Message) -> bool {
        match self.tx.try_send(m) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stop(Stop::NotReading);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues JSON text (see [`send`](Self::send)).
    pub(crate) fn text(&self, text: String) -> bool {
        self.send(Message::Text(text))
    }

    /// Queues `m`, waiting while the queue is full; false when the socket is gone.
    pub(crate) async fn deliver(&self, m: Message) -> bool {
        self.tx.send(m).await.is_ok()
    }

    /// Asks the socket's task to stop (the first request wins).
    pub(crate) fn stop(&self, why: Stop) {
        let mut slot = self
            .signal
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(why);
        }
        drop(slot);
        self.signal.notify.notify_one();
    }
}

/// What a socket's session does with what arrives.
#[async_trait::async_trait]
pub(crate) trait Session: Send {
    /// A text frame arrived; [`Flow::Close`] ends the socket.
    async fn text(&mut self, text: String) -> Flow;
    /// When [`expired`](Self::expired) is due, if ever.
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// The deadline passed.
    fn expired(&mut self) -> Flow {
        Flow::Close
    }
}

/// Whether a socket goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Read the next frame.
    Continue,
    /// Close the socket (after the queued frames).
    Close,
}

/// How a socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The client closed it, or its connection went away.
    Client,
    /// A message over the size cap (closed with 1009).
    TooBig,
    /// The client did not read (dropped without a close frame).
    NotReading,
    /// Nothing arrived within the pong timeout (closed with 1001).
    Unresponsive,
    /// The server closed it ([`Stop::Close`]).
    Closed,
    /// The session ended it ([`Flow::Close`]).
    Session,
}

/// A socket about to be driven, with its queue.
pub(crate) struct Socket {
    ws: WebSocketStream,
    rx: mpsc::Receiver<Message>,
    out: Outbox,
}

impl Socket {
    /// Wraps an upgraded socket; the [`Outbox`] is how everything else writes to it.
    pub(crate) fn new(ws: WebSocketStream) -> (Self, Outbox) {
        let (tx, rx) = mpsc::channel(OUTBOX_FRAMES);
        let out = Outbox {
            tx,
            signal: Arc::default(),
        };
        (
            Self {
                ws,
                rx,
                out: out.clone(),
            },
            out,
        )
    }
}

/// What one poll of the socket yields.
enum Io {
    /// A frame (or the end) from the client.
    Read(Option<std::io::Result<Message>>),
    /// Writing failed: the connection is gone.
    Broken,
    /// Everything queued was written (drain only).
    Drained,
}

/// Moves queued frames into the socket and flushes them; with `read`, also returns what
/// the client sent. Once the queue is closed (the socket is ending) and everything in it
/// was written: [`Io::Drained`].
fn poll_io(
    cx: &mut Context<'_>,
    ws: &mut WebSocketStream,
    rx: &mut mpsc::Receiver<Message>,
    dirty: &mut bool,
    read: bool,
) -> Poll<Io> {
    let mut drained = false;
    loop {
        match Pin::new(&mut *ws).poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Io::Broken),
            Poll::Pending => break,
        }
        match rx.poll_recv(cx) {
            Poll::Ready(Some(m)) => {
                if Pin::new(&mut *ws).start_send(m).is_err() {
                    return Poll::Ready(Io::Broken);
                }
                *dirty = true;
            }
            Poll::Ready(None) => {
                drained = true;
                break;
            }
            Poll::Pending => break,
        }
    }
    if *dirty {
        match Pin::new(&mut *ws).poll_flush(cx) {
            Poll::Ready(Ok(())) => *dirty = false,
            Poll::Ready(Err(_)) => return Poll::Ready(Io::Broken),
            Poll::Pending => {}
        }
    }
    if drained && !*dirty {
        return Poll::Ready(Io::Drained);
    }
    if read && let Poll::Ready(item) = ws.poll_next_unpin(cx) {
        return Poll::Ready(Io::Read(item));
    }
    Poll::Pending
}

/// Runs a socket until it ends: reads frames into `session` (one at a time; writes go on
/// meanwhile), writes the queue, pings every `ping_every`, closes a socket silent for
/// `pong_timeout` (1001) or sent a message over the cap (1009), and stops when asked
/// ([`Outbox::stop`]). Then writes what is queued (within 5 s) and closes.
pub(crate) async fn drive(socket: Socket, session: &mut dyn Session, timings: WsTimings) -> Ended {
    let Socket {
        mut ws,
        mut rx,
        out,
    } = socket;
    let signal = out.signal.clone();
    let mut dirty = false;
    let mut last_seen = Instant::now();
    let mut ping = tokio::time::interval_at(last_seen + timings.ping_every, timings.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing: Option<Message> = None;
    let ended = 'socket: loop {
        let deadline = session.deadline();
        let frame = tokio::select! {
            biased;
            () = signal.notify.notified() => break 'socket stopped(&signal, &mut closing),
            io = poll_fn(|cx| poll_io(cx, &mut ws, &mut rx, &mut dirty, true)) => match io {
                Io::Read(Some(Ok(frame))) => frame,
                Io::Read(Some(Err(e))) => {
                    // poem passes tungstenite's errors on as text; a capacity error is the
                    // one that means "message too big" (1009), and is raised before the
                    // oversized frame or message is buffered.
                    if e.to_string().starts_with("Space limit exceeded") {
                        // "Space limit exceeded: Message too long: <size> > <max>": well
                        // under a close reason's 123 bytes.
                        closing = Some(Message::close_with(CloseCode::Size, e.to_string()));
                        break 'socket Ended::TooBig;
                    }
                    break 'socket Ended::Client;
                }
                Io::Read(None) | Io::Broken | Io::Drained => break 'socket Ended::Client,
            },
            _ = ping.tick() => {
                if last_seen.elapsed() >= timings.pong_timeout {
                    closing = Some(Message::close_with(
                        CloseCode::Away,
                        "no pong or frame received in time",
                    ));
                    break 'socket Ended::Unresponsive;
                }
                out.send(Message::Ping(Vec::new()));
                continue;
            }
            () = sleep_until(deadline) => {
                if session.expired() == Flow::Close {
                    break 'socket Ended::Session;
                }
                continue;
            }
        };
        last_seen = Instant::now();
        let text = match frame {
            Message::Text(t) => t,
            Message::Close(_) => break Ended::Client,
            // tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) => continue,
            // Both sockets answer it with the same `error` frame.
            Message::Binary(_) => {
                out.text(
                    crate::frames::ServerFrame::error("malformed_frame", "frames are JSON text")
                        .to_text(),
                );
                continue;
            }
        };
        let mut handling = session.text(text);
        let flow = loop {
            tokio::select! {
                biased;
                () = signal.notify.notified() => break 'socket stopped(&signal, &mut closing),
                flow = &mut handling => break flow,
                io = poll_fn(|cx| poll_io(cx, &mut ws, &mut rx, &mut dirty, false)) => {
                    if matches!(io, Io::Broken) {
                        break 'socket Ended::Client;
                    }
                }
            }
        };
        if flow == Flow::Close {
            break Ended::Session;
        }
    };
    drop(out);
    if ended == Ended::NotReading {
        // Nothing more can reach a client that does not read: drop the socket.
        return ended;
    }
    // The last frames (and the close frame, with its reason), then the close handshake.
    rx.close();
    let finish = async {
        if let Some(close) = closing {
            // After what is queued: a replaced socket gets its pending frames first.
            let _ = poll_fn(|cx| poll_io(cx, &mut ws, &mut rx, &mut dirty, false)).await;
            let _ = futures::SinkExt::send(&mut ws, close).await;
        } else {
            let _ = poll_fn(|cx| poll_io(cx, &mut ws, &mut rx, &mut dirty, false)).await;
        }
        let _ = futures::SinkExt::close(&mut ws).await;
    };
    let _ = tokio::time::timeout(CLOSE_DRAIN, finish).await;
    ended
}

/// The stop left in `signal`, as how the socket ended.
fn stopped(signal: &Signal, closing: &mut Option<Message>) -> Ended {
    let why = signal
        .stop
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    match why {
        Some(Stop::Close(code, reason)) => {
            *closing = Some(Message::close_with(code, reason));
            Ended::Closed
        }
        Some(Stop::NotReading) | None => Ended::NotReading,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
