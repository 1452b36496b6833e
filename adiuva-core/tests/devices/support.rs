//! Two hubs on shared ports, users, and test devices.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adiuva_core::Error;
use adiuva_core::auth::Principal;
use adiuva_core::devices::{
    DeviceConfig, DeviceConnection, DeviceHub, DeviceLink, FromDevice, Hello, HubTask,
    MemoryDeviceBus, ToDevice,
};
use adiuva_core::domain::{Email, Role, Tier, UserId};
use adiuva_core::ports::db::{User, UserRepo};
use adiuva_core::ports::{Clock, ManualClock};
use adiuva_core::seal::Keyring;
use adiuva_core::testing::MemoryDb;
use serde_json::Value;
use tokio::sync::mpsc;

/// Every wait in these tests ends by this; a hub that hangs fails the test instead.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Awaits `f` or panics naming `what` after [`DEADLINE`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {DEADLINE:?}"))
}

/// Polls `check` until it holds (or panics after [`DEADLINE`]).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A config for tests: short presence TTL (a heartbeat every 100 ms), long call timeout
/// unless a test shortens it.
pub fn config() -> DeviceConfig {
    DeviceConfig {
        presence_ttl: Duration::from_millis(300),
        call_timeout: Duration::from_secs(30),
        ..DeviceConfig::default()
    }
}

/// Two instances: hubs `a` and `b` on one database, one bus and one manual clock.
pub struct Env {
    pub db: Arc<MemoryDb>,
    pub clock: Arc<ManualClock>,
    pub a: DeviceHub,
    pub b: DeviceHub,
    pub _a_task: Option<HubTask>,
    pub b_task: Option<HubTask>,
}

impl Env {
    pub async fn new(config: DeviceConfig) -> Env {
        let db = Arc::new(MemoryDb::new());
        let bus = MemoryDeviceBus::new();
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        // One server key for every instance, as in production.
        let keyring = Arc::new(Keyring::random());
        let hub = || {
            DeviceHub::new(
                db.clone(),
                Arc::new(bus.clone()),
                clock.clone(),
                config.clone(),
                keyring.clone(),
            )
        };
        let (a, b) = (hub(), hub());
        let a_task = Some(a.start().await.expect("hub a starts"));
        let b_task = Some(b.start().await.expect("hub b starts"));
        Env {
            db,
            clock,
            a,
            b,
            _a_task: a_task,
            b_task,
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A new user, as a token check would give them.
    pub async fn user(&self) -> Principal {
        user(&*self.db, self.now()).await
    }
}

pub async fn user(db: &dyn UserRepo, now: i64) -> Principal {
    let id = UserId::new();
    let user = User {
        id,
        email: Email::parse(&format!("{}@example.com", id.0.simple())).expect("email"),
        password_hash: "not used".into(),
        role: Role::User,
        tier: Tier::Free,
        stripe_customer_id: None,
        created_at: now,
        updated_at: now,
    };
    db.insert_user(&user).await.expect("user");
    Principal {
        user,
        session: None,
    }
}

pub fn hello(device_id: &str) -> Hello {
    Hello {
        device_id: device_id.into(),
        name: "Work laptop".into(),
        platform: "linux".into(),
        app_version: "1.2.3".into(),
        capabilities: vec!["tools".into()],
    }
}

/// The socket as the hub sees it: a bounded outgoing queue (like the transport's) that
/// the test device reads.
struct TestLink {
    tx: mpsc::Sender<ToDevice>,
    closed: Arc<Mutex<Option<String>>>,
}

#[async_trait::async_trait]
impl DeviceLink for TestLink {
    fn send(&self, frame: &ToDevice) -> bool {
        self.closed.lock().expect("lock").is_none() && self.tx.try_send(frame.clone()).is_ok()
    }

    async fn deliver(&self, frame: &ToDevice) -> bool {
        self.closed.lock().expect("lock").is_none() && self.tx.send(frame.clone()).await.is_ok()
    }

    fn close(&self, reason: &str) {
        self.closed
            .lock()
            .expect("lock")
            .get_or_insert_with(|| reason.to_owned());
    }
}

/// A connected test device.
pub struct TestDevice {
    pub conn: DeviceConnection,
    rx: mpsc::Receiver<ToDevice>,
    closed: Arc<Mutex<Option<String>>>,
}

/// Connects `device_id` for `who` to `hub` (outgoing queue of 1024 frames).
pub async fn connect(hub: &DeviceHub, who: &Principal, device_id: &str) -> TestDevice {
    connect_with(hub, who, hello(device_id), 1024)
        .await
        .expect("device connects")
}

pub async fn connect_with(
    hub: &DeviceHub,
    who: &Principal,
    hello: Hello,
    room: usize,
) -> Result<TestDevice, Error> {
    let (tx, rx) = mpsc::channel(room);
    let closed = Arc::new(Mutex::new(None));
    let link = Arc::new(TestLink {
        tx,
        closed: closed.clone(),
    });
    let conn = hub.connect(who, hello, link).await?;
    Ok(TestDevice { conn, rx, closed })
}

impl TestDevice {
    /// The next frame the hub wrote.
    pub async fn next(&mut self) -> ToDevice {
        within("the next frame", self.rx.recv())
            .await
            .expect("the link is open")
    }

    /// The next frame, which must be `hello_ack`: `(pending, expired)`.
    pub async fn hello_ack(&mut self) -> (u64, u64) {
        match self.next().await {
            ToDevice::HelloAck {
                session_id,
                pending,
                expired,
                ..
            } => {
                assert_eq!(session_id, self.conn.session_id);
                (pending, expired)
            }
            other => panic!("expected hello_ack first, got {other:?}"),
        }
    }

    /// A frame already written, if any.
    pub fn try_next(&mut self) -> Option<ToDevice> {
        self.rx.try_recv().ok()
    }

    /// Why the hub closed the link (waits for it).
    pub async fn closed_reason(&self) -> String {
        let closed = self.closed.clone();
        eventually("the link is closed", || {
            let c = closed.clone();
            async move { c.lock().expect("lock").is_some() }
        })
        .await;
        self.closed
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_default()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.lock().expect("lock").is_some()
    }

    pub async fn receive(&self, frame: FromDevice) -> Result<(), Error> {
        self.conn.receive(frame).await
    }

    /// The socket closes (the transport's side).
    pub async fn close(self) {
        self.conn.close().await;
    }

    /// Answers every `tool_call` / `data_request` with `answer(frame)` and acks every
    /// queued frame, in the background; the frames after `hello_ack` are recorded.
    pub fn answer_calls(
        self,
        answer: impl Fn(&ToDevice) -> Result<Value, String> + Send + 'static,
    ) -> Answering {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let TestDevice {
            conn,
            mut rx,
            closed,
        } = self;
        let task = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if matches!(frame, ToDevice::HelloAck { .. }) {
                    continue;
                }
                record.lock().expect("lock").push(frame.clone());
                let reply = match &frame {
                    ToDevice::ToolCall { id, .. } => FromDevice::ToolResult {
                        id: id.clone(),
                        outcome: answer(&frame),
                    },
                    ToDevice::DataRequest { id, .. } => FromDevice::DataResponse {
                        id: id.clone(),
                        outcome: answer(&frame),
                    },
                    ToDevice::AgentTrigger { id, .. } | ToDevice::Notification { id, .. } => {
                        FromDevice::Ack { id: id.clone() }
                    }
                    ToDevice::HelloAck { .. } => unreachable!("skipped above"),
                };
                conn.receive(reply).await.expect("the hub takes the answer");
            }
        });
        Answering { task, seen, closed }
    }
}

/// A device answering in the background.
pub struct Answering {
    task: tokio::task::JoinHandle<()>,
    pub seen: Arc<Mutex<Vec<ToDevice>>>,
    closed: Arc<Mutex<Option<String>>>,
}

impl Drop for Answering {
    fn drop(&mut self) {
        // The device stops answering (its connection is dropped without a close).
        self.task.abort();
    }
}

impl Answering {
    pub fn seen(&self) -> Vec<ToDevice> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.lock().expect("lock").is_some()
    }
}

/// The id of a call or queued frame.
pub fn frame_id(frame: &ToDevice) -> String {
    match frame {
        ToDevice::ToolCall { id, .. }
        | ToDevice::DataRequest { id, .. }
        | ToDevice::AgentTrigger { id, .. }
        | ToDevice::Notification { id, .. } => id.clone(),
        ToDevice::HelloAck { session_id, .. } => session_id.to_string(),
    }
}

/// A notification's payload.
pub fn payload(frame: &ToDevice) -> Value {
    match frame {
        ToDevice::Notification { payload, .. } => payload.clone(),
        other => panic!("expected a notification, got {other:?}"),
    }
}
