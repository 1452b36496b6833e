//! `adiuva bench-devices`: what device sockets cost one instance (issue 11, item 7).
//!
//! - **Idle sockets**: `--idle-sockets` devices connect and say hello, then stay idle;
//!   the figure is the growth of the *server's* resident memory per socket. The clients
//!   run in a child process (this binary again, with the hidden `--clients-of`), so their
//!   ends do not count.
//! - **Round trip**: `--calls` calls (`DeviceHub::call`, a `tool_call` → `tool_result`)
//!   to one device, one after another, p50/p99. Same instance, in-process bus: the
//!   cross-instance figures need two instances on a shared Redis or PostgreSQL bus.
//! - **Queue delivery**: `--queued` notifications are queued for an offline device,
//!   which then reconnects and acks each frame as it arrives: frames per second from the
//!   hello to the last frame.

use std::io::{BufRead as _, Write as _};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use adiuva_core::devices::{DeviceRequest, Queued};
use adiuva_core::domain::UserId;
use adiuva_server::settings::{Overrides, Settings};
use adiuva_server::startup::Application;
use clap::Args;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::bench_chat::{percentile, rss_kib};
use crate::commands::CliResult;

/// Options of `adiuva bench-devices`.
#[derive(Debug, Args)]
pub struct BenchDevicesArgs {
    /// Idle device sockets held open at once to measure server memory per socket.
    #[arg(long, default_value_t = 2000)]
    idle_sockets: usize,
    /// Calls for the round-trip measurement.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Frames queued for an offline device before it reconnects.
    #[arg(long, default_value_t = 10_000)]
    queued: usize,
    /// Internal: run as the client process of an idle-socket measurement (URL of the
    /// device socket with `?token=`, then the number of sockets).
    #[arg(long, hide = true, num_args = 2)]
    clients_of: Option<Vec<String>>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A small client: its ends are not what is measured, but they share the machine.
fn client_config() -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.read_buffer_size = 4 * 1024;
    c.write_buffer_size = 4 * 1024;
    c
}

fn hello(device_id: &str) -> WsMessage {
    WsMessage::Text(
        json!({
            "type": "device_hello",
            "device_id": device_id,
            "name": "bench",
            "platform": "linux",
            "app_version": "0.0.0",
        })
        .to_string()
        .into(),
    )
}

/// The next JSON frame, within 30 s.
async fn next(ws: &mut Ws) -> Result<Value, String> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| "no frame within 30 s".to_owned())?
            .ok_or("the socket closed")?
            .map_err(|e| e.to_string())?;
        if let WsMessage::Text(t) = m {
            return serde_json::from_str(&t).map_err(|e| e.to_string());
        }
    }
}

/// Connects device `device_id` and waits for its `hello_ack`.
async fn online(url: &str, device_id: &str) -> Result<(Ws, Value), String> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(client_config()), false)
            .await
            .map_err(|e| e.to_string())?;
    ws.send(hello(device_id)).await.map_err(|e| e.to_string())?;
    let ack = next(&mut ws).await?;
    if ack["type"] != "hello_ack" {
        return Err(format!("expected hello_ack, got {ack}"));
    }
    Ok((ws, ack))
}

pub async fn run(args: &BenchDevicesArgs) -> CliResult {
    if let Some(client) = &args.clients_of {
        return clients(client).await;
    }
    let dir = tempfile::tempdir()?;
    let mut settings = Settings::load(&Overrides::default())?;
    crate::commands::quiet_logs(&settings);
    settings.data_dir = dir.path().to_path_buf();
    settings.database_url = None;
    settings.blob_url = None;
    settings.device_bus_url = None;
    settings.redis_url = None;
    settings.rate_limit_enabled = false;
    // Every benchmark socket is one user on 127.0.0.1: lift the caps meant for the open
    // internet (per-IP connections, devices per user, the queue's bound).
    settings.max_connections_per_ip = 0;
    settings.device_max_per_user = u32::MAX / 2;
    settings.device_queue_max_frames = u32::MAX;
    settings.bind = "127.0.0.1:0".parse()?;
    let app = Application::build(settings).await?;
    let port = app.port();
    let adiuva = app.backend().adiuva.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let tokens = adiuva
        .auth()
        .register("bench-devices@example.com", "correct horse battery staple")
        .await?;
    let me = adiuva.auth().authenticate(&tokens.access_token).await?;
    let user = me.id();
    let url = format!(
        "ws://127.0.0.1:{port}/api/v1/ws/device?token={}",
        tokens.access_token
    );
    let mut ok = true;
    if args.idle_sockets > 0 {
        ok &= idle_sockets(&url, args.idle_sockets).await?;
    }
    if args.calls > 0 {
        ok &= round_trips(&adiuva, user, &url, args.calls).await?;
    }
    if args.queued > 0 {
        ok &= queue_delivery(&adiuva, user, &url, args.queued).await?;
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The server's RSS growth per idle device socket, the clients in a child process.
async fn idle_sockets(url: &str, n: usize) -> Result<bool, Box<dyn std::error::Error>> {
    // Warm up: the first sockets pull in code paths and pools every later one shares.
    let mut warm = Vec::new();
    for i in 0..8 {
        warm.push(online(url, &format!("warm-{i}")).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["bench-devices", "--clients-of", url, &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await??;
    let ready = line.trim() == "ready";
    // Let every socket settle (its first ping has not come yet: 30 s).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    match (ready, before, after) {
        (true, Some(b), Some(a)) => println!(
            "{n} idle device sockets (hello said, one instance): server RSS {:.1} → {:.1} MB, {:.1} KiB per socket (the clients run in another process)",
            b / 1024.0,
            a / 1024.0,
            (a - b) / n as f64
        ),
        (true, _, _) => {
            println!("{n} idle device sockets held; RSS is not readable on this system")
        }
        (false, _, _) => println!("idle device sockets: the client process failed: {line}"),
    }
    // Closing stdin ends the child, and with it its sockets.
    drop(child.stdin.take());
    let _ = child.wait();
    drop(warm);
    Ok(ready)
}

/// The child: opens `n` device sockets, says hello on each, prints `ready`, then holds
/// them until stdin closes.
async fn clients(args: &[String]) -> CliResult {
    let [url, n] = args else {
        return Err("--clients-of URL N".into());
    };
    let n: usize = n.parse()?;
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        open.push(online(url, &format!("idle-{i}")).await?);
    }
    println!("ready");
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        let _ = std::io::stdin().read_line(&mut sink);
    })
    .await?;
    drop(open);
    Ok(ExitCode::SUCCESS)
}

/// Sequential calls to one device that answers each at once.
async fn round_trips(
    adiuva: &adiuva_core::Adiuva,
    user: UserId,
    url: &str,
    calls: usize,
) -> Result<bool, Box<dyn std::error::Error>> {
    let (mut ws, _) = online(url, "round-trip").await?;
    let device = tokio::spawn(async move {
        while let Ok(f) = next(&mut ws).await {
            if f["type"] == "tool_call" {
                let answer = json!({"type": "tool_result", "id": f["id"], "result": {"ok": true}});
                if ws
                    .send(WsMessage::Text(answer.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    let hub = adiuva.devices();
    let call = || {
        hub.call(
            user,
            "round-trip",
            DeviceRequest::Tool {
                name: "list_tasks".into(),
                arguments: serde_json::Map::new(),
            },
        )
    };
    for _ in 0..50 {
        call().await?;
    }
    let mut lat = Vec::with_capacity(calls);
    let mut failed = 0;
    for _ in 0..calls {
        let t = Instant::now();
        if call().await.is_err() {
            failed += 1;
        }
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat.sort_unstable();
    println!(
        "device round trip (tool_call → tool_result, same instance, in-process bus, {calls} calls): p50 {:.3} ms, p99 {:.3} ms, {failed} failed",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    // COORDINATOR (h-bus): the cross-instance figures (Redis and PostgreSQL buses) run
    // two Applications on one database and bus and call from one to a device the other
    // holds; with `adiuva_adapters::device_bus::connect` they go here.
    device.abort();
    Ok(failed == 0)
}

/// Queues `n` frames for an offline device, then reconnects it and reads them all,
/// acking each.
async fn queue_delivery(
    adiuva: &adiuva_core::Adiuva,
    user: UserId,
    url: &str,
    n: usize,
) -> Result<bool, Box<dyn std::error::Error>> {
    let (ws, _) = online(url, "queue").await?;
    drop(ws);
    // Offline once the server has seen the close.
    let hub = adiuva.devices();
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub.require(user, "queue").await?.online {
        if Instant::now() > deadline {
            return Err("the device stayed online".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    for i in 0..n {
        hub.enqueue(
            user,
            "queue",
            Queued::Notification {
                kind: "message".into(),
                payload: json!({"n": i}),
            },
        )
        .await?;
    }
    let queued = t.elapsed();
    let t = Instant::now();
    let (mut ws, ack) = online(url, "queue").await?;
    let mut got = 0;
    let mut in_order = true;
    while got < n {
        let f = next(&mut ws).await?;
        if f["type"] != "notification" {
            continue;
        }
        in_order &= f["payload"]["n"] == json!(got);
        got += 1;
        let ack = json!({"type": "ack", "id": f["id"]});
        ws.send(WsMessage::Text(ack.to_string().into())).await?;
    }
    let took = t.elapsed();
    println!(
        "queue: {n} notifications queued for an offline device in {:.2} s ({:.0}/s); after its reconnect (hello_ack pending {}) all delivered {} in {:.2} s, each acked as it arrived: {:.0} frames/s",
        queued.as_secs_f64(),
        n as f64 / queued.as_secs_f64(),
        ack["pending"],
        if in_order { "in order" } else { "OUT OF ORDER" },
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    Ok(in_order && ack["pending"] == json!(n))
}
