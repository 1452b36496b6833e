//! The hub's state and its rules for sockets and presence. (Calls are in `calls.rs`,
//! the durable queue in `queue.rs`, the messages between instances in `bus_protocol.rs`.)
//!
//! Each instance keeps its own sockets in a registry (`session → Socket`); which
//! instance holds a device is presence, in the database. A call looks the holder up once
//! and either writes to its own socket or sends the holder a `Deliver` on the bus; the
//! holder remembers, per socket, which call ids the device must answer and to which
//! instance, so an answer (or the socket's end) is routed back to the waiting caller.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::bus_protocol::BusMessage;
use super::{
    DeviceConfig, DeviceLink, DeviceStatus, FromDevice, Hello, ToDevice, TriggerAnswers, hello,
};
use crate::domain::{Millis, UserId};
use crate::error::Error;
use crate::ports::db::{Device, DeviceSession, RepoError};
use crate::ports::{Clock, Database, DeviceBus};
use crate::seal::Keyring;

/// What the model reads when the device has no live socket.
pub(super) const OFFLINE: &str = "the device is offline";
/// What the model reads when the socket ended before the device answered.
pub(super) const DISCONNECTED: &str = "the device disconnected before it answered";
/// Why a socket was closed because another hello replaced it.
const REPLACED: &str = "replaced by a newer connection";
/// Why a socket was closed because its device was forgotten.
const FORGOTTEN: &str = "device forgotten";
/// Calls one socket may be answering at once: a device that stops answering cannot make
/// its holder remember ids without bound (each entry also expires with its call).
pub(super) const MAX_CALLS_IN_FLIGHT: usize = 256;
/// The longest one bus send may take.
pub(super) const BUS_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// A session end the database refused is tried again this many times, this far apart.
const DISCONNECT_RETRIES: u32 = 5;
const DISCONNECT_RETRY_AFTER: Duration = Duration::from_secs(2);
/// Revocations are looked up again this far back: another instance's clock, or a
/// revocation committed while the last check ran, may date it slightly before that check.
const REVOCATION_OVERLAP_MS: Millis = 60_000;
/// How often queue expiry runs (on every instance; the delete is idempotent).
const EXPIRY_EVERY: Duration = Duration::from_secs(60);

/// A mutex whose holder panicked still guards consistent maps here (every critical
/// section is a single insert or remove), so poisoning is ignored.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything a hub shares between its clones.
pub(crate) struct Inner {
    pub(super) instance_id: Uuid,
    /// The instance id's first 8 hex digits, in call ids (for logs: who asked).
    pub(super) short: String,
    pub(super) db: Arc<dyn Database>,
    pub(super) bus: Arc<dyn DeviceBus>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) config: DeviceConfig,
    /// Seals queued payloads (`Purpose::DeviceQueue`): agent results are user content.
    pub(super) keyring: Arc<Keyring>,
    /// Where `data_response`s that answer no call go (an `agent_trigger`'s answer).
    pub(super) trigger_answers: Mutex<Option<Weak<dyn TriggerAnswers>>>,
    pub(super) next_call: AtomicU64,
    sockets: Mutex<Registry>,
    /// Calls made from this instance, waiting for their answer.
    pub(super) waiting: Mutex<HashMap<String, oneshot::Sender<Result<Value, String>>>>,
}

/// This instance's sockets, by session. Which session is a device's live one is the
/// database's to say (the last hello wins across instances), never this map's.
type Registry = HashMap<Uuid, Arc<Socket>>;

/// One socket this instance holds. Kept small: an idle socket costs this plus the
/// transport's buffers.
pub(crate) struct Socket {
    pub(super) user: UserId,
    /// The sign-in session (token family) that opened the socket: revoking it closes
    /// the socket ([`Inner::close_revoked`]).
    pub(super) auth_session: Option<Uuid>,
    pub(super) device_id: String,
    pub(super) session_id: Uuid,
    pub(super) link: Arc<dyn DeviceLink>,
    /// Wakes the delivery task (frames were queued).
    pub(super) wake: Notify,
    /// Call id → who waits for its answer; `None` once the socket has ended, so a call
    /// racing the end is refused instead of remembered forever.
    pub(super) answering: Mutex<Option<HashMap<String, Answering>>>,
    /// The delivery task, stopped when the socket ends.
    pub(super) delivery: Mutex<Option<tokio::task::AbortHandle>>,
}

pub(super) struct Answering {
    pub(super) reply_to: Uuid,
    /// After this the caller has given up; the entry only makes room.
    pub(super) until: Millis,
}

pub(super) fn ms(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// A hello that did not finish (an error, or its future dropped): its socket is ended
/// and its session closed in the background. Disarmed by taking `inner`.
struct Abandoned {
    inner: Option<Arc<Inner>>,
    user: UserId,
    device_id: String,
    session_id: Uuid,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let (user, session_id) = (self.user, self.session_id);
        let device_id = std::mem::take(&mut self.device_id);
        tokio::spawn(async move {
            if let Some(s) = inner.detach(session_id) {
                s.link.close("the connection could not be set up");
                inner.end(&s, None).await;
            }
            let now = inner.clock.now_ms();
            if let Err(e) = inner
                .db
                .disconnect_device(user, &device_id, session_id, now)
                .await
            {
                tracing::warn!(error = %e, "could not end an abandoned device session");
            }
        });
    }
}

impl Inner {
    pub(super) fn new(
        instance_id: Uuid,
        db: Arc<dyn Database>,
        bus: Arc<dyn DeviceBus>,
        clock: Arc<dyn Clock>,
        config: DeviceConfig,
        keyring: Arc<Keyring>,
    ) -> Self {
        Self {
            short: instance_id.simple().to_string()[..8].to_owned(),
            instance_id,
            db,
            bus,
            clock,
            config,
            keyring,
            trigger_answers: Mutex::default(),
            next_call: AtomicU64::new(1),
            sockets: Mutex::default(),
            waiting: Mutex::default(),
        }
    }

    // ---- background work -------------------------------------------------------------

    pub(super) async fn start(self: &Arc<Self>) -> Result<Vec<JoinHandle<()>>, Error> {
        let mut mailbox = self.bus.listen(self.instance_id).await.map_err(|e| {
            // The adapter's words may name its server; they go to the log only.
            tracing::error!(error = %e, "device bus: cannot listen");
            Error::Unavailable {
                code: "device_bus_unavailable",
                detail: "the device bus is unavailable".into(),
            }
        })?;
        let me = self.clone();
        let listener = tokio::spawn(async move {
            while let Some(bytes) = mailbox.next().await {
                if let Some(message) = BusMessage::decode(&bytes) {
                    me.on_bus(message).await;
                }
            }
            tracing::error!(
                "device bus mailbox ended: this instance's devices cannot be reached from others"
            );
        });
        let me = self.clone();
        let heartbeat = tokio::spawn(async move {
            // A third of the TTL: two heartbeats may be late before others see us dead.
            let every = (me.config.presence_ttl / 3).max(Duration::from_millis(10));
            let mut revocations_since = me.clock.now_ms();
            loop {
                tokio::time::sleep(every).await;
                let now = me.clock.now_ms();
                revocations_since = me.close_revoked(revocations_since, now).await;
                match me.db.touch_instance_devices(me.instance_id, now).await {
                    Ok(touched) => me.reconcile(touched).await,
                    Err(e) => tracing::warn!(error = %e, "device presence heartbeat failed"),
                }
                me.sweep_queues(now).await;
            }
        });
        let me = self.clone();
        let expiry = tokio::spawn(async move {
            loop {
                tokio::time::sleep(EXPIRY_EVERY).await;
                match me.db.expire_frames(me.clock.now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "queued device frames expired"),
                    Err(e) => tracing::warn!(error = %e, "device queue expiry failed"),
                }
            }
        });
        Ok(vec![listener, heartbeat, expiry])
    }

    pub(super) async fn shutdown(&self) {
        let all: Vec<Arc<Socket>> = lock(&self.sockets).drain().map(|(_, s)| s).collect();
        for socket in all {
            self.end(&socket, Some("server shutting down")).await;
        }
        let now = self.clock.now_ms();
        if let Err(e) = self
            .db
            .release_instance_devices(self.instance_id, now)
            .await
        {
            tracing::warn!(error = %e, "could not release this instance's device sessions");
        }
    }

    async fn on_bus(&self, message: BusMessage) {
        match message {
            BusMessage::Deliver {
                session,
                user,
                device,
                call_id,
                frame,
                reply_to,
            } => {
                let socket = self
                    .socket(session)
                    .filter(|s| s.user == user && s.device_id == device);
                let written = match socket {
                    Some(s) => self.write_call(&s, &call_id, &frame, reply_to),
                    None => Err(DISCONNECTED.to_owned()),
                };
                if let Err(why) = written {
                    self.route_answer(reply_to, call_id, Err(why)).await;
                }
            }
            BusMessage::Answer { call_id, outcome } => self.resolve(&call_id, outcome),
            BusMessage::Drain { session } => {
                if let Some(s) = self.socket(session) {
                    s.wake.notify_one();
                }
            }
            BusMessage::Close { session, reason } => {
                if let Some(s) = self.detach(session) {
                    self.end(&s, Some(&reason)).await;
                }
            }
        }
    }

    // ---- sockets -----------------------------------------------------------------------

    pub(super) async fn connect(
        self: &Arc<Self>,
        user: UserId,
        auth_session: Option<Uuid>,
        hello: Hello,
        link: Arc<dyn DeviceLink>,
    ) -> Result<Arc<Socket>, Error> {
        let (device_id, info) = hello::validate(hello)?;
        let session_id = Uuid::new_v4();
        let now = self.clock.now_ms();
        let session = DeviceSession {
            session_id,
            instance_id: self.instance_id,
        };
        let max = self.config.max_devices_per_user;
        let connected = self
            .db
            .connect_device(user, &device_id, &info, session, max, now)
            .await
            .map_err(|e| match e {
                RepoError::Conflict(what) if what == "devices.limit" => Error::Forbidden {
                    code: "too_many_devices",
                    detail: format!(
                        "this account already has {max} devices; forget one before adding another"
                    ),
                },
                RepoError::NotFound => Error::Unauthorized("the account no longer exists"),
                other => other.into(),
            })?;
        // From here until it returns the connection, a failure or a transport that gives
        // up waiting must not leave a session the heartbeat would keep online.
        let mut guard = Abandoned {
            inner: Some(self.clone()),
            user,
            device_id: device_id.clone(),
            session_id,
        };
        let pending = self.db.queued_count(user, &device_id, now).await?;
        let socket = Arc::new(Socket {
            user,
            auth_session,
            device_id,
            session_id,
            link,
            wake: Notify::new(),
            answering: Mutex::new(Some(HashMap::new())),
            delivery: Mutex::new(None),
        });
        // hello_ack goes out before the socket is registered: nothing (a call from the
        // bus, a queued frame) can be written to it first.
        socket.link.send(&ToDevice::HelloAck {
            session_id,
            server_time: now,
            pending,
            expired: u64::try_from(connected.expired).unwrap_or(0),
        });
        lock(&self.sockets).insert(session_id, socket.clone());
        if let Some(replaced) = connected.replaced {
            self.close_session(replaced, REPLACED).await;
        }
        // A newer hello may have replaced this session before it was registered, and the
        // `Close` it sent found nothing here: read it back once now that it is.
        let ended = match self.db.device(user, &socket.device_id).await {
            Ok(Some(d)) if d.session.is_some_and(|s| s.session_id == session_id) => None,
            Ok(Some(_)) => Some(REPLACED),
            Ok(None) => Some(FORGOTTEN),
            Err(e) => {
                tracing::warn!(error = %e, "could not re-read a device after its hello");
                None
            }
        };
        if let Some(reason) = ended {
            // The transport sees a closed link and closes the socket.
            if let Some(s) = self.detach(session_id) {
                self.end(&s, Some(reason)).await;
            }
            guard.inner = None;
            return Ok(socket);
        }
        super::queue::start_delivery(self.clone(), socket.clone());
        guard.inner = None;
        tracing::debug!(user = %user.0, session = %session_id, "device connected");
        Ok(socket)
    }

    pub(super) async fn receive(&self, socket: &Socket, frame: FromDevice) -> Result<(), Error> {
        let (id, outcome, is_data) = match frame {
            FromDevice::ToolResult { id, outcome } => (id, outcome, false),
            FromDevice::DataResponse { id, outcome } => (id, outcome, true),
            FromDevice::Ack { id } => return self.ack(socket, &id).await,
        };
        let entry = lock(&socket.answering).as_mut().and_then(|a| a.remove(&id));
        if let Some(entry) = entry {
            self.route_answer(entry.reply_to, id, outcome).await;
            return Ok(());
        }
        // A `data_response` no call waits for answers an `agent_trigger` (its id is the
        // run's id): the agents platform takes it, in a task of its own so a slow run
        // never holds up the socket's reader.
        if is_data && let (Some(sink), Ok(run_id)) = (self.trigger_sink(), Uuid::parse_str(&id)) {
            let (user, device_id) = (socket.user, socket.device_id.clone());
            tokio::spawn(async move {
                sink.answer(user, &device_id, run_id, outcome).await;
            });
            return Ok(());
        }
        Err(Error::BadRequest {
            code: "unknown_call",
            detail: "no call with this id is waiting for an answer".into(),
        })
    }

    /// The agents platform's sink, while it lives.
    fn trigger_sink(&self) -> Option<Arc<dyn TriggerAnswers>> {
        lock(&self.trigger_answers).as_ref().and_then(Weak::upgrade)
    }

    pub(super) fn set_trigger_answers(&self, sink: Weak<dyn TriggerAnswers>) {
        *lock(&self.trigger_answers) = Some(sink);
    }

    pub(super) async fn close(&self, socket: &Socket) {
        // Whoever detaches a socket ends it; a socket already replaced, forgotten or
        // shut down was ended then.
        if let Some(s) = self.detach(socket.session_id) {
            self.end(&s, None).await;
        }
        let now = self.clock.now_ms();
        let (user, session) = (socket.user, socket.session_id);
        if let Err(e) = self
            .db
            .disconnect_device(user, &socket.device_id, session, now)
            .await
        {
            // The heartbeat touches every session this instance holds in the database, so
            // a session left there would look online for as long as we run: try again.
            tracing::warn!(error = %e, "could not end a device session; retrying");
            let (db, clock, device) = (
                self.db.clone(),
                self.clock.clone(),
                socket.device_id.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..DISCONNECT_RETRIES {
                    tokio::time::sleep(DISCONNECT_RETRY_AFTER).await;
                    let now = clock.now_ms();
                    if db
                        .disconnect_device(user, &device, session, now)
                        .await
                        .is_ok()
                    {
                        return;
                    }
                }
                tracing::error!(
                    "gave up ending a device session: it shows online until this instance stops"
                );
            });
        }
    }

    /// Whether the socket has ended (replaced, forgotten, closed, shut down).
    pub(super) fn has_ended(socket: &Socket) -> bool {
        lock(&socket.answering).is_none()
    }

    pub(super) fn socket(&self, session: Uuid) -> Option<Arc<Socket>> {
        lock(&self.sockets).get(&session).cloned()
    }

    /// Takes the socket out of the registry (the caller ends it).
    fn detach(&self, session: Uuid) -> Option<Arc<Socket>> {
        lock(&self.sockets).remove(&session)
    }

    /// Closes the sockets opened by a sign-in session revoked since `since` (refresh-token
    /// reuse, sign-out): a revoked session's access tokens are refused at once, and its
    /// open device sockets go at the next heartbeat. One query per heartbeat, over the
    /// revoked rows only. Returns where the next check starts: a little before `now`, so
    /// a revocation committed while this ran is not missed (closing twice is harmless).
    async fn close_revoked(&self, since: Millis, now: Millis) -> Millis {
        if self.holds_no_socket() {
            return now.saturating_sub(REVOCATION_OVERLAP_MS);
        }
        let revoked = match self.db.families_revoked_since(since).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "checking revoked sessions failed");
                return since;
            }
        };
        if !revoked.is_empty() {
            let revoked: std::collections::HashSet<Uuid> = revoked.into_iter().collect();
            let gone: Vec<Arc<Socket>> = lock(&self.sockets)
                .values()
                .filter(|s| s.auth_session.is_some_and(|a| revoked.contains(&a)))
                .cloned()
                .collect();
            for socket in gone {
                if let Some(s) = self.detach(socket.session_id) {
                    // The transport then closes its connection, which ends the session
                    // in the database.
                    self.end(&s, Some("session revoked")).await;
                }
            }
        }
        now.saturating_sub(REVOCATION_OVERLAP_MS)
    }

    /// An instance without device sockets (a CLI, a server no device reached) has
    /// nothing for the heartbeat's checks to close or wake: they skip their query.
    fn holds_no_socket(&self) -> bool {
        lock(&self.sockets).is_empty()
    }

    /// Wakes the delivery of every socket here whose device has frames waiting. The bus
    /// is at most once: a `Drain` lost on the way (a Redis reconnect, a dead sender) would
    /// otherwise leave a new frame waiting until the device reconnects; with this it
    /// waits at most a heartbeat. A woken delivery reads only frames after the last one
    /// it sent, so frames sent and not yet acked are not sent twice. One query per
    /// heartbeat, whatever the number of sockets.
    async fn sweep_queues(&self, now: Millis) {
        if self.holds_no_socket() {
            return;
        }
        let waiting = match self
            .db
            .devices_with_queued_frames(self.instance_id, now)
            .await
        {
            Ok(w) if w.is_empty() => return,
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "device queue sweep failed");
                return;
            }
        };
        let waiting: std::collections::HashSet<(UserId, &str)> =
            waiting.iter().map(|(u, d)| (*u, d.as_str())).collect();
        for socket in lock(&self.sockets).values() {
            if waiting.contains(&(socket.user, socket.device_id.as_str())) {
                socket.wake.notify_one();
            }
        }
    }

    /// After a heartbeat that refreshed `touched` live sessions: when this instance holds
    /// more sockets than that, some of them are no longer their device's live session —
    /// the account was deleted (its devices went with it), the device was forgotten or
    /// replaced while the bus message saying so was lost — and each such socket is
    /// closed. One read per socket, and only when the counts differ.
    async fn reconcile(&self, touched: u64) {
        let held: Vec<Arc<Socket>> = lock(&self.sockets).values().cloned().collect();
        if held.len() as u64 <= touched {
            return;
        }
        for socket in held {
            let live = match self.db.device(socket.user, &socket.device_id).await {
                Ok(Some(d)) => d.session.is_some_and(|s| s.session_id == socket.session_id),
                Ok(None) => false,
                // Unknown: keep the socket; the next heartbeat looks again.
                Err(_) => true,
            };
            if !live && let Some(s) = self.detach(socket.session_id) {
                self.end(&s, Some("this device session is no longer live"))
                    .await;
            }
        }
    }

    /// Stops a detached socket: its delivery, its link (with `reason`, unless the
    /// transport closed it), and the calls it was answering, which fail at once.
    async fn end(&self, socket: &Socket, reason: Option<&str>) {
        // Marked ended first: a delivery starting meanwhile sees it (`start_delivery`).
        let calls = lock(&socket.answering).take().unwrap_or_default();
        if let Some(task) = lock(&socket.delivery).take() {
            task.abort();
        }
        if let Some(reason) = reason {
            socket.link.close(reason);
        }
        for (call_id, a) in calls {
            self.route_answer(a.reply_to, call_id, Err(DISCONNECTED.into()))
                .await;
        }
    }

    /// Closes a live session wherever it is held.
    async fn close_session(&self, session: DeviceSession, reason: &str) {
        if session.instance_id == self.instance_id {
            if let Some(s) = self.detach(session.session_id) {
                self.end(&s, Some(reason)).await;
            }
            return;
        }
        let message = BusMessage::Close {
            session: session.session_id,
            reason: reason.to_owned(),
        };
        // A holder that is gone has no socket left to close.
        if let Err(e) = self.send_bus(session.instance_id, &message).await {
            tracing::warn!(error = %e, "could not ask another instance to close a device socket");
        }
    }

    // ---- presence ----------------------------------------------------------------------

    /// The device's session when its holder is alive (refreshed within the TTL).
    pub(super) fn live_session(&self, device: &Device, now: Millis) -> Option<DeviceSession> {
        let ttl = ms(self.config.presence_ttl);
        device
            .session
            .filter(|_| device.last_seen >= now.saturating_sub(ttl))
    }

    fn status(&self, device: Device, now: Millis) -> DeviceStatus {
        DeviceStatus {
            online: self.live_session(&device, now).is_some(),
            device_id: device.device_id,
            name: device.info.name,
            platform: device.info.platform,
            app_version: device.info.app_version,
            capabilities: device.info.capabilities,
            last_seen: device.last_seen,
            created_at: device.created_at,
        }
    }

    pub(super) async fn list(&self, user: UserId) -> Result<Vec<DeviceStatus>, Error> {
        let devices = self.db.list_devices(user).await?;
        let now = self.clock.now_ms();
        Ok(devices.into_iter().map(|d| self.status(d, now)).collect())
    }

    pub(super) async fn require(
        &self,
        user: UserId,
        device_id: &str,
    ) -> Result<DeviceStatus, Error> {
        let device = self
            .db
            .device(user, device_id)
            .await?
            .ok_or(Error::NotFound("device"))?;
        Ok(self.status(device, self.clock.now_ms()))
    }

    pub(super) async fn forget(&self, user: UserId, device_id: &str) -> Result<(), Error> {
        let device = self
            .db
            .delete_device(user, device_id)
            .await
            .map_err(|e| match e {
                RepoError::NotFound => Error::NotFound("device"),
                other => other.into(),
            })?;
        if let Some(session) = device.session {
            self.close_session(session, FORGOTTEN).await;
        }
        Ok(())
    }
}
