//! Bounded model work (issue #9 item 12): every model call carries a `max_tokens` for its
//! role, a chat turn has a deadline, prompts are fitted to the model's context window,
//! and a provider's refusal that a retry cannot change is answered at once. Against
//! `FakeOpenAi`, playing a model that never stops and providers that reject long prompts.

use std::time::Duration;

use adiuva_adapters::llm::fake::{FakeOpenAi, Reply};
use adiuva_server::settings::Settings;
use serde_json::{Value, json};

use crate::chat::{
    SERVER_KEY, connect, fake_with, is_router, last_user, next, post_chat, send, system_text, token,
};
use crate::helpers::{TestApp, assert_error, spawn_app_with};

/// Distinct from the defaults, so a request that carries them got them from settings.
const AGENT_MAX: u64 = 333;
const SYNTHESIS_MAX: u64 = 444;
/// `adiuva_core::chat::orchestrator::ROUTER_MAX_TOKENS`.
const ROUTER_MAX: u64 = 24;
/// A liveness bound so that a test on code without a deadline fails instead of hanging.
/// Not a timing assertion: the deadline under test is 1 s.
const NO_HANG: Duration = Duration::from_secs(30);

fn is_synthesis(body: &Value) -> bool {
    system_text(body).starts_with("You merge the results")
}

/// Characters of every message's content: what a provider counts against its window.
fn prompt_chars(body: &Value) -> usize {
    body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["content"].as_str().map_or(0, |c| c.chars().count()))
                .sum()
        })
        .unwrap_or(0)
}

async fn app_with(fake: &FakeOpenAi, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let url = fake.url();
    spawn_app_with(move |s| {
        s.openai_base_url = Some(url);
        s.openai_api_key = Some(adiuva_core::Secret::new(SERVER_KEY.to_owned()));
        s.chat_tool_timeout_secs = 1;
        s.chat_ping_interval_secs = 1;
        s.agent_max_tokens = AGENT_MAX as u32;
        s.synthesis_max_tokens = SYNTHESIS_MAX as u32;
        adjust(s);
    })
    .await
}

/// The router answers `task_agent`; the agent never stops writing "again and again ".
fn endless_model(body: &Value) -> Option<Reply> {
    if is_router(body) {
        return Some(Reply::text("task_agent"));
    }
    if last_user(body).contains("endless") {
        Some(Reply::endless("again and again "))
    } else {
        Some(Reply::text("a short answer"))
    }
}

/// REST: a model that never stops is cut at the deadline; the client gets 504
/// `chat_timeout` with the text written so far; both calls carried their limits.
#[tokio::test]
async fn an_endless_reply_ends_at_the_deadline_over_rest() {
    let fake = fake_with(endless_model).await;
    let app = app_with(&fake, |s| s.chat_turn_timeout_secs = 1).await;
    let t = token(&app).await;
    let resp = tokio::time::timeout(
        NO_HANG,
        post_chat(&app, &t, json!({"message": "write something endless"})),
    )
    .await
    .expect("the chat ended (at its deadline)");
    assert_eq!(resp.status().as_u16(), 504);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "chat_timeout", "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    let partial = body["partial_response"].as_str().expect("partial_response");
    assert!(
        partial.starts_with("again and again again"),
        "the text written before the deadline: {partial:?}"
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "router, then the agent's endless stream");
    assert!(is_router(&requests[0].body));
    assert_eq!(requests[0].body["max_tokens"], ROUTER_MAX);
    assert_eq!(requests[1].body["max_tokens"], AGENT_MAX);
    assert_eq!(requests[1].body["stream"], true);
}

/// WebSocket: the text chunks already sent, then an `error` frame `chat_timeout`; the
/// socket stays usable for the next chat.
#[tokio::test]
async fn an_endless_reply_ends_at_the_deadline_over_the_websocket() {
    let fake = fake_with(endless_model).await;
    let app = app_with(&fake, |s| s.chat_turn_timeout_secs = 1).await;
    let t = token(&app).await;
    let mut ws = connect(&app, &t).await;
    send(
        &mut ws,
        json!({"type": "chat_request", "message": "write something endless"}),
    )
    .await;
    let mut text = String::new();
    let last = tokio::time::timeout(NO_HANG, async {
        loop {
            let f = next(&mut ws).await;
            match f["type"].as_str() {
                Some("text_chunk") => text.push_str(f["text"].as_str().expect("text")),
                _ => return f,
            }
        }
    })
    .await
    .expect("the chat ended (at its deadline)");
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["code"], "chat_timeout", "{last}");
    assert!(
        text.starts_with("again and again again"),
        "text chunks came before the error: {text:?}"
    );

    send(
        &mut ws,
        json!({"type": "chat_request", "message": "and now briefly"}),
    )
    .await;
    let mut last = next(&mut ws).await;
    while last["type"] == "text_chunk" {
        last = next(&mut ws).await;
    }
    assert_eq!(last["type"], "final", "{last}");
    assert_eq!(last["response"], "a short answer");
    for r in fake.requests() {
        let expected = if is_router(&r.body) {
            ROUTER_MAX
        } else {
            AGENT_MAX
        };
        assert_eq!(r.body["max_tokens"], expected, "{}", r.body);
    }
}

/// A pipeline: the router, each agent and the synthesis each carry their role's limit.
#[tokio::test]
async fn every_model_call_carries_its_roles_max_tokens() {
    let fake = fake_with(|body: &Value| {
        Some(if is_router(body) {
            Reply::text("task_agent, note_agent")
        } else if is_synthesis(body) {
            Reply::text("merged")
        } else {
            Reply::text("agent done")
        })
    })
    .await;
    let app = app_with(&fake, |_| {}).await;
    let t = token(&app).await;
    let resp = post_chat(&app, &t, json!({"message": "plan my week and note it"})).await;
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["response"], "merged");
    let requests = fake.requests();
    assert_eq!(requests.len(), 4, "router, two agents, synthesis");
    let roles: Vec<(&str, Value)> = requests
        .iter()
        .map(|r| {
            let role = if is_router(&r.body) {
                "router"
            } else if is_synthesis(&r.body) {
                "synthesis"
            } else {
                "agent"
            };
            (role, r.body["max_tokens"].clone())
        })
        .collect();
    assert_eq!(
        roles,
        vec![
            ("router", json!(ROUTER_MAX)),
            ("agent", json!(AGENT_MAX)),
            ("agent", json!(AGENT_MAX)),
            ("synthesis", json!(SYNTHESIS_MAX)),
        ]
    );
}

/// The most prompt characters a model with a `window`-token context accepts beside a
/// reply of `max_tokens`, at 3 characters a token (ASCII): the server's estimate without
/// its per-message margins.
fn accepted_chars(window: usize, max_tokens: usize) -> usize {
    window.saturating_sub(max_tokens) * 3
}

/// A provider whose model has a `window`-token context: it refuses, in `dialect`, a
/// prompt that does not fit beside the reply's `max_tokens`.
fn rejecting(window: usize, dialect: &'static str) -> impl Fn(&Value) -> Option<Reply> {
    move |body: &Value| {
        let max_tokens = body["max_tokens"].as_u64().unwrap_or(0) as usize;
        let chars = prompt_chars(body);
        if chars > accepted_chars(window, max_tokens) {
            return Some(match dialect {
                "llama.cpp" => Reply::llama_cpp_context_exceeded(chars / 3 + max_tokens, window),
                _ => Reply::openai_context_length_exceeded(window, chars / 3 + max_tokens),
            });
        }
        Some(if is_router(body) {
            Reply::text("task_agent")
        } else {
            Reply::text("fits")
        })
    }
}

/// The provider's context-length refusal (llama.cpp: HTTP 500; OpenAI: HTTP 400) is
/// answered at once with its own code, after exactly one model call: REST 502
/// `context_length_exceeded`, WebSocket an error frame with that code.
#[tokio::test]
async fn a_context_length_refusal_is_answered_at_once_without_retries() {
    for dialect in ["llama.cpp", "OpenAI"] {
        // The model's real window (1,000 tokens) is far smaller than the configured one
        // (the default 8,192): fitting cannot help, the provider refuses.
        let fake = fake_with(rejecting(1_000, dialect)).await;
        let app = app_with(&fake, |_| {}).await;
        let t = token(&app).await;
        let message = format!("please read this: {}", "words ".repeat(600));
        let resp = tokio::time::timeout(NO_HANG, post_chat(&app, &t, json!({"message": message})))
            .await
            .expect("answered");
        let body = assert_error(resp, 502, "context_length_exceeded").await;
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("context")),
            "{dialect}: {body}"
        );
        assert_eq!(fake.request_count(), 1, "{dialect}: one call, no retries");

        let mut ws = connect(&app, &t).await;
        send(&mut ws, json!({"type": "chat_request", "message": message})).await;
        let f = next(&mut ws).await;
        assert_eq!(f["type"], "error", "{dialect}: {f}");
        assert_eq!(f["code"], "context_length_exceeded", "{dialect}: {f}");
        assert_eq!(
            fake.request_count(),
            2,
            "{dialect}: one more call, no retries"
        );
    }
}

/// A large context and a small configured window: the model receives a prompt that
/// fits (oldest history and the last context items dropped), the system prompt and the
/// current message intact, and the chat succeeds against a provider that would refuse
/// anything longer.
#[tokio::test]
async fn a_large_context_is_fitted_to_the_window() {
    const WINDOW: usize = 4096;
    const AGENT_REPLY: usize = 512;
    // The model's real window is the configured one.
    let fake = fake_with(rejecting(WINDOW, "llama.cpp")).await;
    let app = app_with(&fake, |s| {
        s.model_context_tokens = WINDOW;
        s.agent_max_tokens = AGENT_REPLY as u32;
        s.synthesis_max_tokens = AGENT_REPLY as u32;
    })
    .await;
    let t = token(&app).await;
    let history: Vec<Value> = (0..20)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            json!({"role": role, "content": format!("history turn {i:02}: {}", "h".repeat(1_500))})
        })
        .collect();
    let tasks: Vec<Value> = (0..50)
        .map(|i| json!({"id": format!("task-{i:02}"), "title": format!("task number {i:02}"), "notes": "n".repeat(300)}))
        .collect();
    let message = "what should I do first? (the current message)";
    let resp = post_chat(
        &app,
        &t,
        json!({
            "message": message,
            "context": {
                "conversation_history": history,
                "recent_tasks": tasks,
                "relevant_documents": ["document zero ".repeat(50)],
            },
        }),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["response"], "fits");

    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "router and agent, each accepted at once");
    for r in &requests {
        let max_tokens = r.body["max_tokens"].as_u64().expect("max_tokens") as usize;
        assert!(prompt_chars(&r.body) <= accepted_chars(WINDOW, max_tokens));
        assert_eq!(last_user(&r.body), message, "the current message is intact");
        let messages = r.body["messages"].as_array().expect("messages");
        assert_eq!(messages[0]["role"], "system");
        let all: String = messages
            .iter()
            .filter_map(|m| m["content"].as_str())
            .collect();
        assert!(
            !all.contains("history turn 00"),
            "the oldest turn is dropped"
        );
    }
    let router = &requests[0].body;
    assert!(
        system_text(router).starts_with("You are an intent classifier"),
        "the router's system prompt is intact"
    );
    let agent = &requests[1].body;
    let system = system_text(agent);
    assert!(
        system.starts_with("You are an assistant inside Adiuva"),
        "the agent's system prompt is intact: {}",
        &system[..80.min(system.len())]
    );
    assert!(system.contains("Current time:"), "the context header stays");
    // The agent's prompt is full: the history went first, then tasks from the end.
    assert!(
        !system.contains("task number 49"),
        "the last task is dropped"
    );
    let messages = agent["messages"].as_array().expect("messages");
    assert!(
        messages.iter().all(|m| !m["content"]
            .as_str()
            .unwrap_or("")
            .starts_with("history turn")),
        "the whole history went before any task"
    );
    assert!(
        system.contains("task number 00"),
        "the first tasks are kept"
    );
}

/// A message that cannot fit the window even with every context item dropped is
/// refused with 413 `message_too_long`, and no model is called (REST and WebSocket).
#[tokio::test]
async fn a_message_too_long_for_the_window_is_refused_before_any_model_call() {
    let fake = fake_with(|_| Some(Reply::text("task_agent"))).await;
    let app = app_with(&fake, |s| {
        s.model_context_tokens = 2048;
        s.agent_max_tokens = 256;
        s.synthesis_max_tokens = 256;
    })
    .await;
    let t = token(&app).await;
    let message = "a very long message ".repeat(600);
    let resp = post_chat(
        &app,
        &t,
        json!({"message": message, "context": {"recent_tasks": [{"id": "t1"}]}}),
    )
    .await;
    let body = assert_error(resp, 413, "message_too_long").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("tokens")),
        "{body}"
    );

    let mut ws = connect(&app, &t).await;
    send(&mut ws, json!({"type": "chat_request", "message": message})).await;
    let f = next(&mut ws).await;
    assert_eq!(f["type"], "error", "{f}");
    assert_eq!(f["code"], "message_too_long", "{f}");
    assert_eq!(fake.request_count(), 0, "no model call");
}
