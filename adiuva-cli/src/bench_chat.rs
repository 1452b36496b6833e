//! `adiuva bench-chat`: what the orchestrator costs without the model, and many
//! concurrent WebSocket chats with one tool round trip each.
//!
//! The model is an in-process zero-latency stand-in (router → `task_agent`; agent → one
//! `list_tasks` call, then a short text), so the figures are the backend's own work:
//! prompt composition, routing, the tool loop, sanitizing, framing. It also measures the
//! memory an idle authenticated socket costs, and the stream delay: for
//! [`STREAM_MESSAGE`] the stand-in streams a long reply one token every
//! `--token-interval-ms`, and each token's time from leaving the model to arriving at
//! the client inside a `text_chunk` is taken (model and client share this process's
//! clock), with the number of `text_chunk` frames per reply.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adiuva_core::chat::orchestrator::{ModelRoles, Orchestrator};
use adiuva_core::chat::{ChatRequest, ToolExecutor};
use adiuva_core::ports::llm::{
    ChatModel, Completion, CompletionRequest, LlmError, Role, StreamEvent, ToolCall,
};
use adiuva_server::settings::{Overrides, Settings};
use adiuva_server::startup::Application;
use async_trait::async_trait;
use clap::Args;
use futures::stream::BoxStream;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::commands::CliResult;

/// Options of `adiuva bench-chat`.
#[derive(Debug, Args)]
pub struct BenchChatArgs {
    /// Messages for the orchestration-overhead measurement.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Concurrent WebSocket chats.
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Idle authenticated sockets held open at once to measure memory per socket.
    #[arg(long, default_value_t = 1000)]
    idle_sockets: usize,
    /// Replies streamed token by token for the stream-delay measurement (0: skip it).
    #[arg(long, default_value_t = 3)]
    stream_replies: usize,
    /// Pause between two streamed tokens, in milliseconds.
    #[arg(long, default_value_t = 20)]
    token_interval_ms: u64,
}

/// The message for which the stand-in streams [`long_reply`] token by token.
const STREAM_MESSAGE: &str = "tell me about my week in detail";

/// An ordinary ~2,150-character reply (plain prose and a list, nothing the sanitizer
/// removes), so the text the client receives equals what the model sent.
fn long_reply() -> String {
    let para = "Your week looks busy but manageable. On Monday you have the quarterly \
        report due, and the draft is about two thirds done, so finishing it in the \
        morning leaves the afternoon free for the design review with the platform team. ";
    let items = [
        "Tuesday: call the bank about the mortgage papers and send the signed copies back.",
        "Wednesday: the dentist at nine, then the sprint planning meeting at eleven.",
        "Thursday: prepare the slides for the customer workshop and book the meeting room.",
        "Friday: the workshop itself, then a short retrospective with everyone involved.",
    ];
    let mut out = String::new();
    while out.len() < 2_150 {
        out.push_str(para);
        out.push_str("\n\n");
        for i in items {
            out.push_str("- ");
            out.push_str(i);
            out.push('\n');
        }
        out.push('\n');
    }
    let cut = out[..2_150].rfind(' ').unwrap_or(2_150);
    out.truncate(cut);
    out.push('.');
    out
}

/// The reply in tokens of about a word each (a word with the space before it), as an
/// OpenAI-style model streams them.
fn tokens_of(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        if ch.is_whitespace() && !cur.trim().is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(ch);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Answers instantly: the router names `task_agent`; an agent calls `list_tasks` once,
/// then replies with text. For [`STREAM_MESSAGE`] the agent instead streams
/// [`long_reply`] one token per `interval`, noting when each token left.
struct InstantModel {
    interval: Duration,
    sent: Arc<std::sync::Mutex<Vec<Instant>>>,
}

impl InstantModel {
    fn wants_long_reply(req: &CompletionRequest) -> bool {
        let system = req.messages.first().map_or("", |m| m.content.as_str());
        !system.contains("intent classifier")
            && req
                .messages
                .iter()
                .any(|m| m.role == Role::User && m.content.contains(STREAM_MESSAGE))
    }
}

fn reply(req: &CompletionRequest) -> Completion {
    let system = req.messages.first().map_or("", |m| m.content.as_str());
    if system.contains("intent classifier") {
        return Completion {
            content: "task_agent".into(),
            tool_calls: Vec::new(),
        };
    }
    if req.messages.last().is_some_and(|m| m.role == Role::Tool) {
        return Completion {
            content: "You have 2 open tasks; the first is due today.".into(),
            tool_calls: Vec::new(),
        };
    }
    Completion {
        content: String::new(),
        tool_calls: vec![ToolCall {
            id: "call_1".into(),
            name: "list_tasks".into(),
            arguments: r#"{"status":"todo"}"#.into(),
        }],
    }
}

#[async_trait]
impl ChatModel for InstantModel {
    async fn complete(&self, req: CompletionRequest) -> Result<Completion, LlmError> {
        Ok(reply(&req))
    }

    async fn stream(
        &self,
        req: CompletionRequest,
    ) -> Result<BoxStream<'static, Result<StreamEvent, LlmError>>, LlmError> {
        if Self::wants_long_reply(&req) {
            let sent = self.sent.clone();
            if let Ok(mut s) = sent.lock() {
                s.clear();
            }
            let interval = self.interval;
            let tokens = tokens_of(&long_reply()).into_iter();
            return Ok(futures::stream::unfold(tokens, move |mut tokens| {
                let sent = sent.clone();
                async move {
                    let token = tokens.next()?;
                    tokio::time::sleep(interval).await;
                    if let Ok(mut s) = sent.lock() {
                        s.push(Instant::now());
                    }
                    Some((Ok(StreamEvent::Text(token)), tokens))
                }
            })
            .boxed());
        }
        let c = reply(&req);
        let mut events = Vec::new();
        if !c.content.is_empty() {
            events.push(Ok(StreamEvent::Text(c.content)));
        }
        for (index, call) in c.tool_calls.into_iter().enumerate() {
            events.push(Ok(StreamEvent::ToolCallDelta {
                index,
                id: Some(call.id),
                name: Some(call.name),
                arguments: call.arguments,
            }));
        }
        Ok(futures::stream::iter(events).boxed())
    }
}

/// A device that answers at once.
struct InstantDevice;

#[async_trait]
impl ToolExecutor for InstantDevice {
    async fn execute(&self, _id: &str, _name: &str, _args: &Value) -> Result<Value, String> {
        Ok(json!([{"id": "t1", "title": "Write report", "status": "todo"}]))
    }
}

pub(crate) fn percentile(sorted_us: &[u64], p: f64) -> f64 {
    let i = ((sorted_us.len().max(1) as f64 - 1.0) * p).round() as usize;
    sorted_us.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

/// This process's resident memory now (VmRSS), in KiB.
pub(crate) fn rss_kib() -> Option<f64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
}

fn peak_rss_mb() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0}", kb / 1024.0))
}

pub async fn run(args: &BenchChatArgs) -> CliResult {
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let model: Arc<dyn ChatModel> = Arc::new(InstantModel {
        interval: Duration::from_millis(args.token_interval_ms),
        sent: sent.clone(),
    });
    let orchestrator = Arc::new(Orchestrator::new(model.clone(), ModelRoles::default())?);

    // 1. Orchestration overhead per message (one route, one tool round trip, sanitizing).
    let request = ChatRequest {
        message: "what is open today?".into(),
        ..Default::default()
    };
    for _ in 0..100 {
        orchestrator
            .orchestrate(&request, &InstantDevice, None, false)
            .await?;
    }
    let mut lat = Vec::with_capacity(args.messages);
    for _ in 0..args.messages {
        let t = Instant::now();
        orchestrator
            .orchestrate(&request, &InstantDevice, None, false)
            .await?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat.sort_unstable();
    println!(
        "orchestration overhead ({} messages, zero-latency model, 3 model calls + 1 tool call each): p50 {:.3} ms, p99 {:.3} ms",
        args.messages,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    // 2. Concurrent WebSocket chats through the real server.
    let dir = tempfile::tempdir()?;
    let mut settings = Settings::load(&Overrides::default())?;
    crate::commands::quiet_logs(&settings);
    settings.data_dir = dir.path().to_path_buf();
    settings.database_url = None;
    settings.blob_url = None;
    settings.rate_limit_enabled = false;
    // Every benchmark socket is one user on 127.0.0.1: lift the caps meant for the
    // open internet (per-IP connections, sockets per user).
    settings.max_connections_per_ip = 0;
    settings.chat_max_sockets_per_user = usize::MAX;
    settings.bind = "127.0.0.1:0".parse()?;
    let app = Application::build_with_model(settings, model).await?;
    let port = app.port();
    let adiuva = app.backend().adiuva.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let tokens = adiuva
        .auth()
        .register("bench-chat@example.com", "correct horse battery staple")
        .await?;
    let url = format!(
        "ws://127.0.0.1:{port}/api/v1/chat/stream?token={}",
        tokens.access_token
    );
    idle_sockets(&url, args.idle_sockets).await?;
    stream_delay(&url, args, &sent).await?;
    let rss_before = peak_rss_mb();
    let started = Instant::now();
    let chats = (0..args.sockets).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { one_chat(&url).await })
    });
    let results = futures::future::join_all(chats).await;
    let took = started.elapsed();
    let ok = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let mut per_chat: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok()?.as_ref().ok().map(|d| d.as_micros() as u64))
        .collect();
    per_chat.sort_unstable();
    println!(
        "{} concurrent WebSocket chats (connect, chat_request, tool_call → tool_result, final): {ok} ok in {:.2} s; per chat p50 {:.1} ms, p99 {:.1} ms; process peak RSS {} MB (before: {rss_before} MB)",
        args.sockets,
        took.as_secs_f64(),
        percentile(&per_chat, 0.5),
        percentile(&per_chat, 0.99),
        peak_rss_mb()
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    Ok(if ok == args.sockets {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Opens `n` authenticated sockets that stay idle, and reports the growth of this
/// process's resident memory per socket. Server and clients share the process, so the
/// figure includes the client's end; the clients use a 4 KiB read buffer (tungstenite
/// allocates it up front, 128 KiB by default) to keep their share small.
async fn idle_sockets(url: &str, n: usize) -> CliResult {
    if n == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    config.read_buffer_size = 4 * 1024;
    config.write_buffer_size = 4 * 1024;
    // Warm up: the first socket pulls in code paths and pools every later one shares.
    let (warm, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib();
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(config), false).await?;
        open.push(ws);
    }
    // Let every session task start and settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    match (before, after) {
        (Some(b), Some(a)) => println!(
            "{n} idle authenticated WebSocket sockets: RSS {:.1} → {:.1} MB, {:.1} KiB per socket (server and client ends)",
            b / 1024.0,
            a / 1024.0,
            (a - b) / n as f64
        ),
        _ => println!("{n} idle sockets opened; RSS is not readable on this system"),
    }
    drop(open);
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(ExitCode::SUCCESS)
}

async fn one_chat(url: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    let send = |v: Value| WsMessage::Text(v.to_string().into());
    ws.send(send(
        json!({"type": "chat_request", "message": "what is open today?"}),
    ))
    .await
    .map_err(|e| e.to_string())?;
    while let Some(frame) = ws.next().await {
        let WsMessage::Text(text) = frame.map_err(|e| e.to_string())? else {
            continue;
        };
        let f: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        match f["type"].as_str() {
            Some("tool_call") => {
                ws.send(send(json!({"type": "tool_result", "id": f["id"], "result": [{"id": "t1", "title": "Write report"}]})))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Some("final") => {
                let _ = ws.close(None).await;
                return Ok(t.elapsed());
            }
            Some("error") => return Err(f.to_string()),
            _ => {}
        }
    }
    Err("closed before the final frame".into())
}

/// Streams `args.stream_replies` long replies, one at a time, and prints each token's
/// delay from leaving the model to reaching the client (p50/p99) and the `text_chunk`
/// frames per reply.
async fn stream_delay(
    url: &str,
    args: &BenchChatArgs,
    sent: &std::sync::Mutex<Vec<Instant>>,
) -> CliResult {
    if args.stream_replies == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let reply = long_reply();
    // Where each token ends in the reply: it has arrived once that many bytes have.
    let ends: Vec<usize> = tokens_of(&reply)
        .iter()
        .scan(0, |at, t| {
            *at += t.len();
            Some(*at)
        })
        .collect();
    let mut delays_us = Vec::new();
    let mut frames = Vec::new();
    for _ in 0..args.stream_replies {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
        ws.send(WsMessage::Text(
            json!({"type": "chat_request", "message": STREAM_MESSAGE})
                .to_string()
                .into(),
        ))
        .await?;
        let mut text = String::new();
        let mut arrived: Vec<Instant> = Vec::with_capacity(ends.len());
        let mut chunks = 0usize;
        while let Some(frame) = ws.next().await {
            let WsMessage::Text(raw) = frame? else {
                continue;
            };
            let now = Instant::now();
            let f: Value = serde_json::from_str(&raw)?;
            match f["type"].as_str() {
                Some("text_chunk") => {
                    chunks += 1;
                    text.push_str(f["text"].as_str().unwrap_or_default());
                    while arrived.len() < ends.len() && ends[arrived.len()] <= text.len() {
                        arrived.push(now);
                    }
                }
                Some("final") => break,
                _ => return Err(format!("unexpected frame while streaming: {f}").into()),
            }
        }
        let _ = ws.close(None).await;
        if text != reply {
            return Err("the streamed reply differs from what the model sent".into());
        }
        let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
        delays_us.extend(
            sent.iter()
                .zip(&arrived)
                .map(|(s, a)| a.saturating_duration_since(*s).as_micros() as u64),
        );
        frames.push(chunks);
    }
    delays_us.sort_unstable();
    frames.sort_unstable();
    println!(
        "stream delay ({} replies of {} chars, {} tokens each, one token every {} ms): token leaves the model → its text_chunk reaches the client p50 {:.1} ms, p99 {:.1} ms; text_chunk frames per reply {}–{}",
        args.stream_replies,
        reply.chars().count(),
        ends.len(),
        args.token_interval_ms,
        percentile(&delays_us, 0.5),
        percentile(&delays_us, 0.99),
        frames.first().copied().unwrap_or(0),
        frames.last().copied().unwrap_or(0),
    );
    Ok(ExitCode::SUCCESS)
}
