//! Devices: the desktop app's persistent socket, reached from any instance.
//!
//! A device opens `WS /api/v1/ws/device` on whichever instance the load balancer picks and
//! says `device_hello`; that instance's [`DeviceHub`] records the device and its live
//! session in the database (presence: which instance holds the socket, refreshed by a
//! heartbeat) and keeps the socket's [`DeviceLink`] in memory. Any instance reaches the
//! device through the [`DeviceBus`](crate::ports::DeviceBus): it looks up the holder in
//! the database and sends the holder's mailbox a message; the holder writes the frame to
//! the socket and routes the device's answer back to the caller's mailbox.
//!
//! Two kinds of traffic:
//! - **Calls** ([`DeviceHub::call`]: `tool_call`, `data_request`) wait for an answer and
//!   are never stored: an offline device answers `Err` at once, a silent one at the
//!   timeout, a device that disconnects mid-call at once.
//! - **Queued frames** ([`DeviceHub::enqueue`]: `agent_trigger`, `notification`) must not
//!   be lost: written to the device's durable queue first, then delivered in order while
//!   the device is connected, re-sent after every reconnect until the device `ack`s them.
//!   The device drops a frame whose `id` it has already processed (the exactly-once rule
//!   the device keeps; see the README). Payloads rest sealed with the server's key
//!   (`Purpose::DeviceQueue`: agent results are user content); a plain-JSON row written
//!   before that still delivers. [`DeviceHub::enqueue_once`] takes the frame id from the
//!   producer, so a retried producer queues a frame once.
//! - **Agent answers**: a `data_response` whose id no call waits for is the answer to an
//!   `agent_trigger` (its id is the trigger's `run_id`); it goes to the agents platform
//!   ([`DeviceHub::set_trigger_answers`]) on the instance that received it.
//!
//! The transport (the server's socket) only parses frames into [`FromDevice`] and writes
//! [`ToDevice`]; every rule lives here.

mod bus_protocol;
mod calls;
mod hello;
mod hub;
pub mod memory_bus;
mod peer;
mod queue;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::auth::Principal;
use crate::domain::{Millis, UserId};
use crate::error::Error;
use crate::ports::{Clock, Database, DeviceBus};
use crate::seal::Keyring;

use hub::{Inner, Socket};

pub use memory_bus::MemoryDeviceBus;

/// How devices are reached and how long things wait (from the settings).
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// A live session whose holder has not refreshed it for this long is offline (its
    /// instance died); holders refresh every third of it.
    pub presence_ttl: Duration,
    /// A call without an answer after this fails (the model sees an error result).
    pub call_timeout: Duration,
    /// Frames a device's queue holds; beyond it the oldest expire.
    pub queue_max_frames: u32,
    /// A queued frame not delivered and acked within this expires.
    pub queue_max_age: Duration,
    /// Devices a user may register.
    pub max_devices_per_user: u32,
}

/// Defaults of [`DeviceConfig`] (the settings name them).
pub const DEFAULT_PRESENCE_TTL_SECS: u64 = 45;
/// Default [`DeviceConfig::queue_max_frames`].
pub const DEFAULT_QUEUE_MAX_FRAMES: u32 = 1000;
/// Default [`DeviceConfig::queue_max_age`]: a week.
pub const DEFAULT_QUEUE_MAX_AGE_SECS: u64 = 7 * 24 * 3600;
/// Default [`DeviceConfig::max_devices_per_user`].
pub const DEFAULT_MAX_DEVICES_PER_USER: u32 = 20;

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            presence_ttl: Duration::from_secs(DEFAULT_PRESENCE_TTL_SECS),
            call_timeout: Duration::from_secs(30),
            queue_max_frames: DEFAULT_QUEUE_MAX_FRAMES,
            queue_max_age: Duration::from_secs(DEFAULT_QUEUE_MAX_AGE_SECS),
            max_devices_per_user: DEFAULT_MAX_DEVICES_PER_USER,
        }
    }
}

/// `device_hello`: who the device is (validated by [`DeviceHub::connect`]: `device_id`
/// 1–128 characters of `A–Z a–z 0–9 . _ : -`; `name` 1–200 characters, `platform` and
/// `app_version` at most 64, no control characters; at most 32 `capabilities` of at most
/// 64 characters each — else `Validation`, naming the field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Chosen by the device, stable across restarts.
    pub device_id: String,
    /// Display name.
    pub name: String,
    /// `macos`, `windows`, `linux`, …
    pub platform: String,
    /// The app's version.
    pub app_version: String,
    /// What it can do (`tools`, `files`, …).
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// A frame the server sends a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToDevice {
    /// The answer to `device_hello`, always the first frame.
    HelloAck {
        /// This socket's session.
        session_id: Uuid,
        /// The server's clock, ms.
        server_time: Millis,
        /// Queued frames about to be delivered.
        pending: u64,
        /// Queued frames that expired (queue bound or age) since the device's last hello.
        expired: u64,
    },
    /// Run a tool; answer `tool_result` with the same `id`.
    ToolCall {
        /// The call's id.
        id: String,
        /// The tool.
        name: String,
        /// Its arguments (sanitized).
        arguments: Map<String, Value>,
    },
    /// Send local data; answer `data_response` with the same `id`.
    DataRequest {
        /// The request's id.
        id: String,
        /// What kinds of data (`tasks`, `files`, …).
        data_types: Vec<String>,
        /// Which (kind-specific).
        filter: Map<String, Value>,
    },
    /// Run an agent (queued: `ack` it).
    AgentTrigger {
        /// The frame's id (a UUID): ack it, drop it if already processed.
        id: String,
        /// The agent config.
        agent_id: String,
        /// The run.
        run_id: String,
        /// What the run needs (agent-specific).
        input: Value,
    },
    /// Something to show or apply (queued: `ack` it).
    Notification {
        /// The frame's id (a UUID): ack it, drop it if already processed.
        id: String,
        /// What it is (`agent_result`, `message`, …).
        kind: String,
        /// Its content.
        payload: Value,
    },
}

/// A frame a device sends, once parsed (ping/pong are the transport's).
#[derive(Debug, Clone, PartialEq)]
pub enum FromDevice {
    /// The answer to a `tool_call`: the result, or the device's error.
    ToolResult {
        /// The call's id.
        id: String,
        /// `Ok(result)` or `Err(message)`.
        outcome: Result<Value, String>,
    },
    /// The answer to a `data_request`.
    DataResponse {
        /// The request's id.
        id: String,
        /// `Ok(data)` or `Err(message)`.
        outcome: Result<Value, String>,
    },
    /// A queued frame was processed.
    Ack {
        /// Its id.
        id: String,
    },
}

/// What [`DeviceHub::call`] asks a device.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceRequest {
    /// `tool_call`.
    Tool {
        /// The tool.
        name: String,
        /// Its arguments.
        arguments: Map<String, Value>,
    },
    /// `data_request`.
    Data {
        /// What kinds of data.
        data_types: Vec<String>,
        /// Which.
        filter: Map<String, Value>,
    },
}

/// What [`DeviceHub::enqueue`] stores for a device.
#[derive(Debug, Clone, PartialEq)]
pub enum Queued {
    /// `agent_trigger`.
    AgentTrigger {
        /// The agent config.
        agent_id: String,
        /// The run.
        run_id: String,
        /// What the run needs.
        input: Value,
    },
    /// `notification`.
    Notification {
        /// What it is.
        kind: String,
        /// Its content.
        payload: Value,
    },
}

/// A device as `GET /devices` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    /// The device's id.
    pub device_id: String,
    /// Display name.
    pub name: String,
    /// Platform.
    pub platform: String,
    /// App version.
    pub app_version: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// A live session whose holder is alive (see [`DeviceConfig::presence_ttl`]).
    pub online: bool,
    /// Last hello, heartbeat or disconnect, ms.
    pub last_seen: Millis,
    /// First hello, ms.
    pub created_at: Millis,
}

/// The socket, as the hub writes to it. Implemented by the transport, whose outgoing
/// queue is bounded.
#[async_trait::async_trait]
pub trait DeviceLink: Send + Sync {
    /// Queues `frame` without waiting (`hello_ack`, calls); false when the socket is gone
    /// or its queue is full — the client does not read, and the transport closes it.
    fn send(&self, frame: &ToDevice) -> bool;
    /// Queues `frame`, waiting while the queue is full (delivery of a long durable queue
    /// goes at the pace the client reads); false when the socket is gone.
    async fn deliver(&self, frame: &ToDevice) -> bool;
    /// Closes the socket with `reason` (another connection replaced it, the device was
    /// forgotten, the instance stops).
    fn close(&self, reason: &str);
}

/// Receives a device's `data_response` to an `agent_trigger` (see
/// [`DeviceHub::set_trigger_answers`]).
#[async_trait::async_trait]
pub trait TriggerAnswers: Send + Sync {
    /// `run_id` is the response's id as sent; `outcome` the device's data or error.
    /// Called in a task of its own; the device has been told nothing yet (an unknown
    /// run is the sink's to ignore).
    async fn answer(
        &self,
        user: UserId,
        device_id: &str,
        run_id: Uuid,
        outcome: Result<Value, String>,
    );
}

/// Device sockets and the device bus of one instance. Cheap to clone (shared state).
#[derive(Clone)]
pub struct DeviceHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DeviceHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceHub")
            .field("instance_id", &self.inner.instance_id)
            .finish_non_exhaustive()
    }
}

/// The hub's background work (bus listener, presence heartbeat, queue expiry); stops
/// when dropped.
#[derive(Debug)]
pub struct HubTask {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for HubTask {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl DeviceHub {
    /// A hub for a new instance (a fresh instance id) over these ports; `keyring` seals
    /// the durable queue's payloads.
    pub fn new(
        db: Arc<dyn Database>,
        bus: Arc<dyn DeviceBus>,
        clock: Arc<dyn Clock>,
        config: DeviceConfig,
        keyring: Arc<Keyring>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner::new(Uuid::new_v4(), db, bus, clock, config, keyring)),
        }
    }

    /// This instance's id (its bus mailbox).
    pub fn instance_id(&self) -> Uuid {
        self.inner.instance_id
    }

    /// The bus adapter's name, for logs.
    pub fn bus_backend(&self) -> &'static str {
        self.inner.bus.backend()
    }

    /// The settings in effect.
    pub fn config(&self) -> &DeviceConfig {
        &self.inner.config
    }

    /// Starts listening on the bus, the presence heartbeat and queue expiry. Once per
    /// process, before serving (the server's `run_until_stopped` does it).
    pub async fn start(&self) -> Result<HubTask, Error> {
        let tasks = self.inner.start().await?;
        Ok(HubTask { tasks })
    }

    /// A graceful stop: closes this instance's sockets and ends their sessions in the
    /// database, so other instances see the devices offline at once.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
    }

    /// A socket said `device_hello`: validates it, registers the device and its new
    /// session (closing a session it replaces, wherever it is), sends `hello_ack`
    /// through `link`, then starts delivering the device's queue.
    ///
    /// A new device beyond [`DeviceConfig::max_devices_per_user`] →
    /// `Forbidden { code: "too_many_devices" }`.
    pub async fn connect(
        &self,
        principal: &Principal,
        hello: Hello,
        link: Arc<dyn DeviceLink>,
    ) -> Result<DeviceConnection, Error> {
        let socket = self
            .inner
            .connect(principal.user.id, principal.session, hello, link)
            .await?;
        Ok(DeviceConnection {
            session_id: socket.session_id,
            device_id: socket.device_id.clone(),
            inner: self.inner.clone(),
            socket,
        })
    }

    /// The user's devices with their presence.
    pub async fn list(&self, user: UserId) -> Result<Vec<DeviceStatus>, Error> {
        self.inner.list(user).await
    }

    /// Forgets a device and its queue and closes its socket wherever it is;
    /// `NotFound("device")` when the user has no such device.
    pub async fn forget(&self, user: UserId, device_id: &str) -> Result<(), Error> {
        self.inner.forget(user, device_id).await
    }

    /// Whether the user has this device (`NotFound("device")` otherwise); online or not.
    pub async fn require(&self, user: UserId, device_id: &str) -> Result<DeviceStatus, Error> {
        self.inner.require(user, device_id).await
    }

    /// Asks the device and waits for its answer, wherever its socket is: `Err(why)` — a
    /// sentence for the model — at once when it is offline or disconnects, or at
    /// `call_timeout`. Never stored.
    pub async fn call(
        &self,
        user: UserId,
        device_id: &str,
        request: DeviceRequest,
    ) -> Result<Value, String> {
        self.inner.call(user, device_id, request).await
    }

    /// Stores a frame in the device's durable queue and, when the device is online,
    /// has its holder deliver it; the frame's id. `NotFound("device")` when the user
    /// has no such device; `TooLarge` (`frame_too_large`) beyond
    /// [`MAX_QUEUED_FRAME_BYTES`].
    pub async fn enqueue(
        &self,
        user: UserId,
        device_id: &str,
        frame: Queued,
    ) -> Result<Uuid, Error> {
        self.inner.enqueue(user, device_id, frame).await
    }

    /// Like [`DeviceHub::enqueue`] with the frame id chosen by the caller, so a retried
    /// producer (a run taken over after its instance died) queues a frame at most once:
    /// an id already queued is `Ok(false)` and nothing changes (the device drops a
    /// duplicate it already acked by the same id).
    pub async fn enqueue_once(
        &self,
        user: UserId,
        device_id: &str,
        frame_id: Uuid,
        frame: Queued,
    ) -> Result<bool, Error> {
        self.inner
            .enqueue_with_id(user, device_id, frame_id, frame)
            .await
    }

    /// Gives `data_response`s that answer no call to `sink` (an `agent_trigger`'s answer:
    /// its id is the run's id), on the instance that received them. Set once, by the
    /// agents platform.
    pub fn set_trigger_answers(&self, sink: std::sync::Weak<dyn TriggerAnswers>) {
        self.inner.set_trigger_answers(sink);
    }

    /// A chat peer that runs a turn's tools on the device (`POST /chat` with `device_id`).
    pub fn chat_peer(&self, user: UserId, device_id: &str) -> DevicePeer {
        DevicePeer::new(self.clone(), user, device_id)
    }
}

/// The largest serialized frame [`DeviceHub::enqueue`] stores (a notification or a
/// trigger carries a result or an input, not a file).
pub const MAX_QUEUED_FRAME_BYTES: usize = 1024 * 1024;

/// One connected socket's side of the hub, held by the transport until it closes.
pub struct DeviceConnection {
    /// This socket's session.
    pub session_id: Uuid,
    /// The device.
    pub device_id: String,
    inner: Arc<Inner>,
    socket: Arc<Socket>,
}

impl std::fmt::Debug for DeviceConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceConnection")
            .field("session_id", &self.session_id)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl DeviceConnection {
    /// A frame from the device: resolves a waiting call (wherever its caller is), acks
    /// a queued frame, or hands an `agent_trigger`'s answer (a `data_response` whose id
    /// is a UUID no call waits for) to the agents platform. An id nothing waits for →
    /// `BadRequest` (`unknown_call` / `unknown_frame`), which the transport reports as
    /// an error frame.
    pub async fn receive(&self, frame: FromDevice) -> Result<(), Error> {
        self.inner.receive(&self.socket, frame).await
    }

    /// The socket closed: ends the session (unless another replaced it), and fails the
    /// calls it was answering at once.
    pub async fn close(self) {
        self.inner.close(&self.socket).await;
    }
}

/// Runs a chat turn's tools on a device through the hub (see [`DeviceHub::chat_peer`]);
/// collects the turn's last event for [`ChatService::device_turn`](crate::chat::ChatService).
pub struct DevicePeer {
    hub: DeviceHub,
    user: UserId,
    device_id: String,
    last: std::sync::Mutex<Option<crate::chat::ChatEvent>>,
}
