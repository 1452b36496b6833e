//! `adiuva bench-devices`: the device socket and the device bus under load (issue 11).
//!
//! 1. **Idle sockets.** A server runs as a child process (`adiuva serve` on SQLite, this
//!    very binary) and this process opens device sockets to it, each saying
//!    `device_hello` and then idling (answering pings). The figure is the *server's*
//!    resident memory growth per socket, read from `/proc/<pid>/status`; the clients'
//!    memory is not in it. Both processes need a file descriptor per socket, so the count
//!    is capped by the open-file limit (`ulimit -n`), which the benchmark says.
//! 2. **Round trips across instances.** Two in-process instances, A and B, on one
//!    PostgreSQL database: a device holds a socket on B and answers every `tool_call` at
//!    once; A calls it (`DeviceHub::call`) one call after another. p50/p99 per bus: Redis
//!    and PostgreSQL (`LISTEN`/`NOTIFY`), and the in-process bus on one instance for
//!    reference.
//! 3. **Queue delivery.** Frames queued for an offline device, then the device connects:
//!    the time from its hello to the last frame received (each acked as it arrives).
//!
//! PostgreSQL and Redis parts run when `--postgres-url` / `--redis-url` are given (point
//! them at scratch services: the benchmark registers users and devices there).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use adiuva_core::Adiuva;
use adiuva_core::devices::{DeviceRequest, Queued};
use adiuva_server::settings::{Overrides, RedactedUrl, Settings};
use adiuva_server::startup::Application;
use clap::Args;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::bench_chat::percentile;
use crate::commands::CliResult;

/// Options of `adiuva bench-devices`.
#[derive(Debug, Args)]
pub struct BenchDevicesArgs {
    /// Idle device sockets to hold on one server process (capped by the open-file limit).
    #[arg(long, default_value_t = 20_000)]
    idle: usize,
    /// Calls per round-trip measurement.
    #[arg(long, default_value_t = 2_000)]
    round_trips: usize,
    /// Frames queued for a device before it reconnects.
    #[arg(long, default_value_t = 10_000)]
    pending: usize,
    /// A PostgreSQL database for the cross-instance parts (a scratch one).
    #[arg(long, env = "ADIUVA_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// A Redis server for the Redis bus.
    #[arg(long, env = "ADIUVA_BENCH_REDIS_URL")]
    redis_url: Option<String>,
}

const PASSWORD: &str = "correct horse battery staple";

pub async fn run(args: &BenchDevicesArgs) -> CliResult {
    let base = Settings::load(&Overrides::default())?;
    crate::commands::quiet_logs(&base);
    let mut ok = true;
    if args.idle > 0 {
        ok &= idle_sockets(args.idle).await?;
    }
    if args.round_trips > 0 {
        let one = Pair::start(None, None, None).await?;
        round_trips("in-process bus, one instance", &one, args.round_trips).await?;
        one.stop().await;
        if let Some(pg) = &args.postgres_url {
            if let Some(redis) = &args.redis_url {
                let pair = Pair::start(Some(pg), Some(redis), None).await?;
                round_trips("Redis bus, A → B", &pair, args.round_trips).await?;
                pair.stop().await;
            }
            let pair = Pair::start(Some(pg), None, Some("postgres")).await?;
            round_trips("PostgreSQL bus, A → B", &pair, args.round_trips).await?;
            pair.stop().await;
        } else {
            println!("cross-instance round trips: skipped (no --postgres-url)");
        }
    }
    if args.pending > 0 {
        let one = Pair::start(None, None, None).await?;
        ok &= queue_delivery("SQLite, one instance", &one, args.pending).await?;
        one.stop().await;
        if let Some(pg) = &args.postgres_url {
            let pair = Pair::start(Some(pg), args.redis_url.as_deref(), None).await?;
            ok &= queue_delivery(
                "PostgreSQL, queued through A, delivered by B",
                &pair,
                args.pending,
            )
            .await?;
            pair.stop().await;
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: &str, field: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// This process's soft limit of open files.
fn open_file_limit() -> Option<usize> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// The client side of a device socket: small buffers, so this process can hold many.
fn client_config() -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.read_buffer_size = 4 * 1024;
    c.write_buffer_size = 4 * 1024;
    c
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a device socket and says hello; returns it after `hello_ack`.
async fn device(port: u16, token: &str, device_id: &str) -> Result<(Socket, Value), String> {
    let url = format!("ws://127.0.0.1:{port}/api/v1/ws/device?token={token}");
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(client_config()), false)
            .await
            .map_err(|e| format!("connect: {e}"))?;
    let hello = json!({"type": "device_hello", "device_id": device_id, "name": "bench",
        "platform": "linux", "app_version": "bench", "capabilities": ["tools"]});
    ws.send(WsMessage::Text(hello.to_string().into()))
        .await
        .map_err(|e| format!("hello: {e}"))?;
    let ack = next_json(&mut ws).await?;
    if ack["type"] != "hello_ack" {
        return Err(format!("expected hello_ack, got {ack}"));
    }
    Ok((ws, ack))
}

async fn next_json(ws: &mut Socket) -> Result<Value, String> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .map_err(|_| "no frame within 60 s".to_owned())?
            .ok_or("socket closed")?
            .map_err(|e| e.to_string())?;
        if let WsMessage::Text(t) = m {
            return serde_json::from_str(&t).map_err(|e| e.to_string());
        }
    }
}

/// Part 1: a server process holding `wanted` idle device sockets.
async fn idle_sockets(wanted: usize) -> Result<bool, Box<dyn std::error::Error>> {
    // Each end needs a descriptor per socket; leave room for the rest of each process.
    let limit = open_file_limit().unwrap_or(1024);
    let n = wanted.min(limit.saturating_sub(150));
    if n < wanted {
        println!(
            "idle device sockets: {wanted} asked, {n} opened — the open-file limit here is {limit} per process (ulimit -n; not raisable in this container), and the server needs one descriptor per socket"
        );
    }
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Server(
        std::process::Command::new(std::env::current_exe()?)
            .arg("serve")
            .env("ADIUVA_DATA_DIR", dir.path())
            .env("ADIUVA_BIND", format!("127.0.0.1:{port}"))
            .env("ADIUVA_JWT_SECRET", "bench-devices-secret-0123456789abcdef")
            .env("ADIUVA_RATE_LIMIT_ENABLED", "false")
            .env("ADIUVA_MAX_CONNECTIONS_PER_IP", "0")
            .env("ADIUVA_DEVICE_MAX_PER_USER", (n + 10).to_string())
            .env("ADIUVA_LOG", "warn")
            .spawn()?,
    );
    let pid = child.0.id().to_string();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while http
        .get(format!("{base}/health"))
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false)
        .then_some(())
        .is_none()
    {
        if Instant::now() > deadline {
            return Err("the server did not start within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tokens: Value = http
        .post(format!("{base}/auth/register"))
        .json(&json!({"email": "bench-devices@example.com", "password": PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    let token = tokens["access_token"]
        .as_str()
        .ok_or("no token")?
        .to_owned();

    // Warm up: the first sockets pull in code paths and pools every later one shares.
    let warm = 100.min(n);
    let mut held = Vec::with_capacity(n);
    for i in 0..warm {
        held.push(device(port, &token, &format!("warm-{i}")).await?.0);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = status_kib(&pid, "VmRSS:").ok_or("server RSS unreadable")?;
    let started = Instant::now();
    let rest: Vec<usize> = (warm..n).collect();
    for batch in rest.chunks(64) {
        let opened = futures::future::join_all(batch.iter().map(|i| {
            let (token, id) = (&token, format!("idle-{i}"));
            async move { device(port, token, &id).await }
        }))
        .await;
        for socket in opened {
            held.push(socket?.0);
        }
    }
    let took = started.elapsed();
    // Idle sockets still answer the server's pings: keep reading each.
    let readers: Vec<_> = held
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = status_kib(&pid, "VmRSS:").ok_or("server RSS unreadable")?;
    let peak = status_kib(&pid, "VmHWM:").unwrap_or(after);
    let counted = (n - warm).max(1) as f64;
    let per = (after - before) / counted;
    println!(
        "{n} idle device sockets on one server process: opened (hello → hello_ack) in {:.1} s ({:.0}/s); server RSS {:.1} → {:.1} MB (peak {:.1} MB), {per:.1} KiB per idle socket (goal ≤ 16 KiB)",
        took.as_secs_f64(),
        counted / took.as_secs_f64(),
        before / 1024.0,
        after / 1024.0,
        peak / 1024.0,
    );
    let alive = child.0.try_wait()?.is_none();
    for r in readers {
        r.abort();
    }
    Ok(alive)
}

/// The server's child process, killed when the measurement ends (or fails).
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two instances (or one) sharing a database and a device bus.
struct Pair {
    /// The instance that calls and queues.
    a: Adiuva,
    /// The port of the instance devices connect to (A itself when there is one).
    b_port: u16,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    servers: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Pair {
    /// One instance on SQLite and the in-process bus (`postgres = None`), or two on
    /// `postgres` sharing the Redis bus (`redis`) or `device_bus`.
    async fn start(
        postgres: Option<&str>,
        redis: Option<&str>,
        device_bus: Option<&str>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let count = if postgres.is_some() { 2 } else { 1 };
        let mut apps = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..count {
            let dir = tempfile::tempdir()?;
            let mut s = Settings::load(&Overrides::default())?;
            s.data_dir = dir.path().to_path_buf();
            s.database_url = postgres.map(|u| RedactedUrl(u.to_owned()));
            s.blob_url = Some("memory://".into());
            s.redis_url = redis.map(|u| RedactedUrl(u.to_owned()));
            s.device_bus_url = device_bus.map(|u| RedactedUrl(u.to_owned()));
            s.rate_limit_enabled = false;
            s.max_connections_per_ip = 0;
            s.device_queue_max_frames = u32::MAX;
            s.jwt_secret = Some(adiuva_core::Secret::new(
                "bench-devices-secret-0123456789abcdef".to_owned(),
            ));
            s.bind = "127.0.0.1:0".parse()?;
            apps.push(Application::build(s).await?);
            dirs.push(dir);
        }
        let a = apps[0].backend().adiuva.clone();
        let b_port = apps[apps.len() - 1].port();
        let mut stops = Vec::new();
        let mut servers = Vec::new();
        for app in apps {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            servers.push(tokio::spawn(app.run_until_stopped(async move {
                let _ = stopped.await;
            })));
        }
        Ok(Pair {
            a,
            b_port,
            stops,
            servers,
            _dirs: dirs,
        })
    }

    /// A new user: its access token and id.
    async fn user(
        &self,
        tag: &str,
    ) -> Result<(String, adiuva_core::domain::UserId), Box<dyn std::error::Error>> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let tokens = self
            .a
            .auth()
            .register(&format!("bench-{tag}-{nanos}@example.com"), PASSWORD)
            .await?;
        let id = self.a.auth().verify_access_token(&tokens.access_token)?;
        Ok((tokens.access_token, id))
    }

    /// Waits (at most 30 s) until A sees `device_id` online (`true`) or offline.
    async fn wait_online(
        &self,
        user: adiuva_core::domain::UserId,
        device_id: &str,
        online: bool,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.a.devices().list(user).await?;
            if now
                .iter()
                .any(|d| d.device_id == device_id && d.online == online)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{device_id} never became online={online}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for h in self.servers {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }
}

/// Part 2: `n` calls from A to a device on B, one after another.
async fn round_trips(label: &str, pair: &Pair, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (token, user) = pair.user("rt").await?;
    let (mut ws, _) = device(pair.b_port, &token, "bench-rt").await?;
    // The device answers every tool call at once.
    let answering = tokio::spawn(async move {
        while let Ok(frame) = next_json(&mut ws).await {
            if frame["type"] == "tool_call" {
                let result =
                    json!({"type": "tool_result", "id": frame["id"], "result": {"tasks": []}});
                if ws
                    .send(WsMessage::Text(result.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    pair.wait_online(user, "bench-rt", true).await?;
    let call = || {
        pair.a.devices().call(
            user,
            "bench-rt",
            DeviceRequest::Tool {
                name: "list_tasks".into(),
                arguments: Map::new(),
            },
        )
    };
    for _ in 0..50.min(n) {
        call().await.map_err(|e| format!("warm-up call: {e}"))?;
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        call().await.map_err(|e| format!("call: {e}"))?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat.sort_unstable();
    println!(
        "device round trip ({label}; tool_call → tool_result, {n} calls one after another): p50 {:.3} ms, p99 {:.3} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    answering.abort();
    Ok(())
}

/// Part 3: `n` frames queued through A for an offline device, then it connects to B.
async fn queue_delivery(
    label: &str,
    pair: &Pair,
    n: usize,
) -> Result<bool, Box<dyn std::error::Error>> {
    let (token, user) = pair.user("queue").await?;
    // A first hello registers the device; then it goes offline.
    let (ws, _) = device(pair.b_port, &token, "bench-queue").await?;
    drop(ws);
    pair.wait_online(user, "bench-queue", false).await?;
    let started = Instant::now();
    for i in 0..n {
        pair.a
            .devices()
            .enqueue(
                user,
                "bench-queue",
                Queued::Notification {
                    kind: "message".into(),
                    payload: json!({"n": i, "text": "a queued notification of ordinary size"}),
                },
            )
            .await?;
    }
    let queued = started.elapsed();
    let started = Instant::now();
    let (mut ws, ack) = device(pair.b_port, &token, "bench-queue").await?;
    let mut received = 0usize;
    let mut in_order = true;
    while received < n {
        let frame = next_json(&mut ws).await?;
        if frame["type"] != "notification" {
            continue;
        }
        in_order &= frame["payload"]["n"] == json!(received);
        received += 1;
        let ack = json!({"type": "ack", "id": frame["id"]});
        ws.send(WsMessage::Text(ack.to_string().into())).await?;
    }
    let delivered = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while pair
        .a
        .database()
        .queued_count(user, "bench-queue", pair.a.clock().now_ms())
        .await?
        > 0
    {
        if Instant::now() > deadline {
            return Err("the acks did not empty the queue within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acked = started.elapsed();
    println!(
        "queue delivery ({label}): {n} frames queued in {:.2} s ({:.0}/s); after the reconnect (hello_ack pending {}): all received in {:.2} s ({:.0} frames/s){}, all acked and removed in {:.2} s",
        queued.as_secs_f64(),
        n as f64 / queued.as_secs_f64(),
        ack["pending"],
        delivered.as_secs_f64(),
        n as f64 / delivered.as_secs_f64(),
        if in_order {
            ", in order"
        } else {
            ", OUT OF ORDER"
        },
        acked.as_secs_f64(),
    );
    Ok(in_order)
}
