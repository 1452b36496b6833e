//! Issue 11, item 6: two instances on one PostgreSQL (and one Redis) behave as one
//! server. Each instance runs in a tokio runtime of its own, so killing one
//! (`Instance::kill`: the runtime is torn down at once, its sockets closed by the OS,
//! nothing cleaned up — what `kill -9` leaves) does not touch the other.
//!
//! Every scenario runs twice: with the Redis device bus (the default when `redis_url` is
//! set) and with the PostgreSQL bus (`device_bus_url = postgres`, no Redis at all).

use std::time::Duration;

use adiuva_adapters::llm::fake::FakeOpenAi;
use adiuva_adapters::postgres::testing::TestDatabase;
use adiuva_core::devices::Queued;
use adiuva_server::settings::{RedactedUrl, Settings};
use adiuva_server::startup::Application;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::chat::{SERVER_KEY, Socket, fake_with, next, send, tool_script};
use crate::devices::hello;
use crate::helpers::{JWT_SECRET, email};

/// Which device bus the two instances share.
#[derive(Debug, Clone, Copy)]
enum Bus {
    Redis,
    Postgres,
}

/// One server instance in a runtime of its own.
struct Instance {
    port: u16,
    adiuva: adiuva_core::Adiuva,
    client: reqwest::Client,
    runtime: Option<tokio::runtime::Runtime>,
    _stop: Option<oneshot::Sender<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Instance {
    async fn start(settings: Settings) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        runtime.spawn(async move {
            let app = Application::build(settings)
                .await
                .expect("the instance builds");
            let _ = ready_tx.send((app.port(), app.backend().adiuva.clone()));
            let _ = app
                .run_until_stopped(async move {
                    let _ = stop_rx.await;
                })
                .await;
        });
        let (port, adiuva) = ready_rx.await.expect("the instance starts");
        Self {
            port,
            adiuva,
            client: reqwest::Client::new(),
            runtime: Some(runtime),
            _stop: Some(stop_tx),
            _dir: None,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api/v1{path}", self.port)
    }

    /// What `kill -9` does to a server: every task stops where it is, the OS closes
    /// its sockets, nothing is released in the database.
    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    async fn register(&self) -> String {
        let resp = self
            .client
            .post(self.url("/auth/register"))
            .json(&json!({"email": email("multi"), "password": crate::helpers::PASSWORD}))
            .send()
            .await
            .expect("register");
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("tokens");
        body["access_token"].as_str().expect("access").to_owned()
    }

    /// `POST /chat` with `device_id`, running while the test plays the device.
    fn chat_in_background(
        &self,
        token: &str,
        message: &str,
        device_id: &str,
    ) -> tokio::task::JoinHandle<reqwest::Response> {
        let request = self
            .client
            .post(self.url("/chat"))
            .bearer_auth(token)
            .json(&json!({"message": message, "device_id": device_id}));
        tokio::spawn(async move { request.send().await.expect("chat") })
    }

    async fn devices(&self, token: &str) -> Vec<Value> {
        let resp = self
            .client
            .get(self.url("/devices"))
            .bearer_auth(token)
            .send()
            .await
            .expect("devices");
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("device list")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two instances on one fresh PostgreSQL database sharing `bus`, chat answered by `fake`
/// with a short tool timeout; `None` (SKIPPED) when a service is not configured.
async fn pair(bus: Bus, fake: &FakeOpenAi) -> Option<(Instance, Instance, TestDatabase)> {
    adiuva_adapters::install_crypto_provider();
    let redis = match bus {
        Bus::Redis => Some(adiuva_core::testing::services::service(
            "ADIUVA_TEST_REDIS_URL",
            "the Redis device bus",
        )?),
        Bus::Postgres => None,
    };
    let pg = TestDatabase::create("multi").await?;
    let mut instances = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Settings::for_data_dir(dir.path());
        s.bind = "127.0.0.1:0".parse().expect("addr");
        s.jwt_secret = Some(adiuva_core::Secret::new(JWT_SECRET.to_owned()));
        // One deployment, one token key: a frame one instance queued (sealed), the other
        // delivers.
        s.oauth_token_key = Some(adiuva_core::Secret::new(
            crate::helpers::OAUTH_TOKEN_KEY.to_owned(),
        ));
        s.database_url = Some(RedactedUrl(pg.url().to_owned()));
        s.blob_url = Some("memory://".into());
        s.openai_base_url = Some(fake.url());
        s.openai_api_key = Some(adiuva_core::Secret::new(SERVER_KEY.to_owned()));
        s.chat_tool_timeout_secs = 3;
        s.device_presence_ttl_secs = 3;
        match (&redis, bus) {
            (Some(url), _) => s.redis_url = Some(RedactedUrl(url.clone())),
            (None, _) => s.device_bus_url = Some(RedactedUrl("postgres".into())),
        }
        let mut instance = Instance::start(s).await;
        instance._dir = Some(dir);
        instances.push(instance);
    }
    let b = instances.pop().expect("b");
    let a = instances.pop().expect("a");
    Some((a, b, pg))
}

async fn device_socket(instance: &Instance, token: &str, device_id: &str) -> Socket {
    device_socket_ack(instance, token, device_id).await.0
}

/// The device socket on `instance` after its hello, and the `hello_ack`.
async fn device_socket_ack(instance: &Instance, token: &str, device_id: &str) -> (Socket, Value) {
    let url = format!("ws://127.0.0.1:{}/api/v1/ws/device", instance.port);
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("device socket");
    send(&mut ws, hello(device_id)).await;
    let ack = next(&mut ws).await;
    assert_eq!(ack["type"], "hello_ack", "{ack}");
    (ws, ack)
}

/// Polls `probe` until it holds, for at most 15 s.
async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !probe().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn user_of(token: &str, a: &Instance) -> adiuva_core::domain::UserId {
    a.adiuva
        .auth()
        .verify_access_token(token)
        .expect("a token of ours")
}

/// A device on B runs the tools of a chat posted to A; `GET /devices` on A shows it
/// online; a notification queued through A while it is offline reaches it on B.
async fn one_server_across_two_instances(bus: Bus) {
    let fake = fake_with(tool_script).await;
    let Some((a, b, _pg)) = pair(bus, &fake).await else {
        return;
    };
    let token = a.register().await;
    let mut device = device_socket(&b, &token, "desk-1").await;

    // Presence: A sees what B holds.
    let listed = a.devices(&token).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["device_id"], "desk-1");
    assert_eq!(listed[0]["online"], true, "{listed:?}");

    // A chat posted to A runs its tool on the device held by B.
    let chat = a.chat_in_background(&token, "run list_tasks", "desk-1");
    let call = next(&mut device).await;
    assert_eq!(call["type"], "tool_call", "{call}");
    assert_eq!(call["name"], "list_tasks");
    send(
        &mut device,
        json!({"type": "tool_result", "id": call["id"], "result": {"tasks": [{"title": "from-b"}]}}),
    )
    .await;
    let resp = chat.await.expect("chat task");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("reply");
    let text = body["response"].as_str().expect("response");
    assert!(text.contains("from-b"), "{text}");
    assert_eq!(
        body["actions"],
        json!([]),
        "the device ran the tool: {body}"
    );

    // Offline: the socket closes; a notification queued through A waits for it ...
    device.close(None).await.expect("close");
    eventually("A sees the device offline", || async {
        a.devices(&token).await[0]["online"] == false
    })
    .await;
    let user = user_of(&token, &a);
    let id = a
        .adiuva
        .devices()
        .enqueue(
            user,
            "desk-1",
            Queued::Notification {
                kind: "message".into(),
                payload: json!({"text": "queued through A"}),
            },
        )
        .await
        .expect("queued");
    // ... and reaches it when it reconnects to B, with the pending count in the ack.
    let (mut device, ack) = device_socket_ack(&b, &token, "desk-1").await;
    assert_eq!(ack["pending"], 1, "{ack}");
    let frame = next(&mut device).await;
    assert_eq!(frame["type"], "notification", "{frame}");
    assert_eq!(frame["id"], id.to_string());
    assert_eq!(frame["payload"]["text"], "queued through A");
    send(&mut device, json!({"type": "ack", "id": frame["id"]})).await;
    eventually("the ack empties the queue", || async {
        a.adiuva
            .database()
            .queued_count(user, "desk-1", a.adiuva.clock().now_ms())
            .await
            .expect("count")
            == 0
    })
    .await;
}

/// B dies in the middle of a call A made: A's chat gets an error result for the model
/// within the tool timeout and still answers. A queued frame B delivered but the device
/// had not acked is delivered again after the device reconnects to A: nothing is lost.
async fn an_instance_dying_loses_nothing(bus: Bus) {
    let fake = fake_with(tool_script).await;
    let Some((a, mut b, _pg)) = pair(bus, &fake).await else {
        return;
    };
    let token = a.register().await;
    let user = user_of(&token, &a);
    let mut device = device_socket(&b, &token, "desk-2").await;

    // A frame delivered by B, not acked.
    let id = a
        .adiuva
        .devices()
        .enqueue(
            user,
            "desk-2",
            Queued::Notification {
                kind: "agent_result".into(),
                payload: json!({"n": 1}),
            },
        )
        .await
        .expect("queued");
    let frame = next(&mut device).await;
    assert_eq!(frame["id"], id.to_string(), "{frame}");

    // A call through A, then B dies before the device answers.
    let started = tokio::time::Instant::now();
    let chat = a.chat_in_background(&token, "run list_notes", "desk-2");
    let call = next(&mut device).await;
    assert_eq!(call["type"], "tool_call", "{call}");
    b.kill();
    let resp = tokio::time::timeout(Duration::from_secs(30), chat)
        .await
        .expect("A answers, never hangs")
        .expect("chat task");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("reply");
    let text = body["response"].as_str().expect("response");
    // The model saw an error result (the script echoes the tool result it got).
    assert!(text.starts_with("done list_notes"), "{text}");
    assert!(!text.contains("\"notes\""), "{text}");
    // Not before the timeout's order of magnitude, not long after it (3 s; CI is slow).
    assert!(started.elapsed() < Duration::from_secs(30));

    // The device reconnects — to A this time — and gets the unacked frame again.
    drop(device);
    let mut device = device_socket(&a, &token, "desk-2").await;
    let again = next(&mut device).await;
    assert_eq!(
        again["id"],
        id.to_string(),
        "re-sent after the instance died: {again}"
    );
    send(&mut device, json!({"type": "ack", "id": again["id"]})).await;
    eventually("acked", || async {
        a.adiuva
            .database()
            .queued_count(user, "desk-2", a.adiuva.clock().now_ms())
            .await
            .expect("count")
            == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_redis_behave_as_one() {
    one_server_across_two_instances(Bus::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_the_postgres_bus_behave_as_one() {
    one_server_across_two_instances(Bus::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_dying_mid_call_loses_nothing_on_redis() {
    an_instance_dying_loses_nothing(Bus::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_dying_mid_call_loses_nothing_on_the_postgres_bus() {
    an_instance_dying_loses_nothing(Bus::Postgres).await;
}
