//! The OpenAI-compatible chat model and embedder against the fake OpenAI server, over
//! real sockets.

use std::time::{Duration, Instant};

use adiuva_adapters::llm::fake::{FakeOpenAi, Reply};
use adiuva_adapters::llm::openai::CEREBRAS_BASE_URL;
use adiuva_adapters::llm::{OpenAiCompatible, OpenAiConfig};
use adiuva_core::ports::llm::{
    ChatModel, Completion, CompletionRequest, Embedder, LlmError, Message, Role, StreamEvent,
    ToolCall, ToolDefinition,
};
use futures::StreamExt as _;
use serde_json::json;

const SERVER_KEY: &str = "sk-server-secret-0123456789";
const CEREBRAS_KEY: &str = "csk-cerebras-secret-9876543210";
const USER_KEY: &str = "sk-user-byok-secret-5555";
const DIM: usize = 16;

fn config(fake: &FakeOpenAi) -> OpenAiConfig {
    OpenAiConfig {
        base_url: fake.url(),
        api_key: Some(SERVER_KEY.into()),
        embedding_model: "text-embedding-3-small".into(),
        embedding_dimension: DIM,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        max_retries: 2,
        retry_base_delay: Duration::from_millis(10),
        max_retry_delay: Duration::from_millis(300),
        ..OpenAiConfig::default()
    }
}

async fn setup() -> (FakeOpenAi, OpenAiCompatible) {
    let fake = FakeOpenAi::start_with_dimension(DIM)
        .await
        .expect("start fake");
    let model = OpenAiCompatible::new(config(&fake)).expect("adapter");
    (fake, model)
}

fn msg(role: Role, content: &str) -> Message {
    Message {
        role,
        content: content.into(),
        tool_calls: Vec::new(),
        tool_call_id: None,
    }
}

fn request(text: &str) -> CompletionRequest {
    CompletionRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![msg(Role::System, "be brief"), msg(Role::User, text)],
        tools: Vec::new(),
        temperature: Some(0.2),
        max_tokens: None,
        api_key: None,
    }
}

fn tools() -> Vec<ToolDefinition> {
    vec![
        ToolDefinition {
            name: "create_task".into(),
            description: "Creates a task".into(),
            parameters: json!({"type": "object", "properties": {"title": {"type": "string"}}}),
        },
        ToolDefinition {
            name: "search_notes".into(),
            description: "Searches notes".into(),
            parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}}),
        },
    ]
}

/// Concatenates a stream as the port's contract says: text, and per index the id, name
/// and argument pieces.
async fn collect(model: &OpenAiCompatible, req: CompletionRequest) -> Completion {
    let mut stream = model.stream(req).await.expect("stream starts");
    let mut out = Completion {
        content: String::new(),
        tool_calls: Vec::new(),
    };
    let mut events = 0;
    while let Some(event) = stream.next().await {
        events += 1;
        match event.expect("stream event") {
            StreamEvent::Text(t) => out.content.push_str(&t),
            StreamEvent::ToolCallDelta {
                index,
                id,
                name,
                arguments,
            } => {
                while out.tool_calls.len() <= index {
                    out.tool_calls.push(ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                let call = &mut out.tool_calls[index];
                if let Some(id) = id {
                    call.id = id;
                }
                if let Some(name) = name {
                    call.name = name;
                }
                call.arguments.push_str(&arguments);
            }
        }
    }
    assert!(events > 0, "the stream ended without an event");
    out
}

#[tokio::test]
async fn a_text_completion() {
    let (fake, model) = setup().await;
    fake.push(Reply::text("Hello there"));
    let reply = model.complete(request("hi")).await.expect("complete");
    assert_eq!(reply.content, "Hello there");
    assert!(reply.tool_calls.is_empty());

    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/chat/completions");
    assert_eq!(sent[0].bearer(), Some(SERVER_KEY));
    let body = &sent[0].body;
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(body["temperature"], json!(0.2));
    assert!(
        body.get("tools").is_none(),
        "no tools key when none are offered"
    );
    assert!(body.get("stream").is_none());
}

#[tokio::test]
async fn tool_calls_are_offered_and_parsed() {
    let (fake, model) = setup().await;
    fake.push(Reply::tool_calls(&[
        ("create_task", r#"{"title":"Buy milk"}"#),
        ("search_notes", r#"{"q":"milk"}"#),
    ]));
    let mut req = request("remember milk");
    req.tools = tools();
    let reply = model.complete(req).await.expect("complete");
    assert_eq!(reply.content, "");
    let names: Vec<&str> = reply.tool_calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["create_task", "search_notes"]);
    assert_eq!(reply.tool_calls[0].arguments, r#"{"title":"Buy milk"}"#);
    assert!(reply.tool_calls.iter().all(|c| c.id.starts_with("call_")));
    assert_ne!(reply.tool_calls[0].id, reply.tool_calls[1].id);

    let body = &fake.requests()[0].body;
    assert_eq!(
        body["tools"][0],
        json!({"type": "function", "function": {
            "name": "create_task",
            "description": "Creates a task",
            "parameters": {"type": "object", "properties": {"title": {"type": "string"}}},
        }})
    );
    assert_eq!(body["tools"][1]["function"]["name"], "search_notes");
}

#[tokio::test]
async fn a_second_turn_carries_the_assistant_calls_and_tool_results() {
    let (fake, model) = setup().await;
    fake.push(Reply::tool_calls(&[(
        "create_task",
        r#"{"title":"Buy milk"}"#,
    )]));
    fake.push(Reply::text("Done: task created."));
    let mut req = request("remember milk");
    req.tools = tools();
    let first = model.complete(req.clone()).await.expect("first turn");
    let call = first.tool_calls[0].clone();

    req.messages.push(Message {
        role: Role::Assistant,
        content: String::new(),
        tool_calls: first.tool_calls.clone(),
        tool_call_id: None,
    });
    req.messages.push(Message {
        role: Role::Tool,
        content: r#"{"id":"t1"}"#.into(),
        tool_calls: Vec::new(),
        tool_call_id: Some(call.id.clone()),
    });
    // The fake refuses (400) a tool message that answers no earlier call, so success
    // here means the ids and shapes line up as OpenAI requires.
    let second = model.complete(req).await.expect("second turn");
    assert_eq!(second.content, "Done: task created.");

    let messages = &fake.requests()[1].body["messages"];
    assert_eq!(
        messages[2],
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": call.id, "type": "function",
            "function": {"name": "create_task", "arguments": r#"{"title":"Buy milk"}"#},
        }]})
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "content": r#"{"id":"t1"}"#, "tool_call_id": call.id})
    );
}

#[tokio::test]
async fn streams_concatenate_to_the_same_reply_as_complete() {
    let (fake, model) = setup().await;
    let text = "Streaming works — piece by piece, even with ünïcödé.";
    let calls = [
        (
            "create_task",
            r#"{"title":"Write the report","due":"friday"}"#,
        ),
        ("search_notes", r#"{"q":"report"}"#),
    ];
    let mut req = request("go");
    req.tools = tools();

    fake.push(Reply::text(text));
    let whole = model.complete(req.clone()).await.expect("complete");
    fake.push(Reply::text(text));
    let mut stream = model.stream(req.clone()).await.expect("stream");
    let mut pieces = 0;
    while let Some(event) = stream.next().await {
        assert!(matches!(event, Ok(StreamEvent::Text(_))), "{event:?}");
        pieces += 1;
    }
    assert!(pieces > 5, "the text arrived in pieces ({pieces})");

    fake.push(Reply::text(text));
    let streamed = collect(&model, req.clone()).await;
    assert_eq!(streamed, whole);
    assert_eq!(streamed.content, text);

    fake.push(Reply::tool_calls(&calls));
    let whole = model.complete(req.clone()).await.expect("complete");
    fake.push(Reply::tool_calls(&calls));
    let streamed = collect(&model, req).await;
    assert_eq!(streamed.tool_calls.len(), 2);
    assert_eq!(streamed.content, whole.content);
    for (s, w) in streamed.tool_calls.iter().zip(&whole.tool_calls) {
        // Ids differ per request at the fake; names and arguments must match exactly.
        assert_eq!((&s.name, &s.arguments), (&w.name, &w.arguments));
        assert!(s.id.starts_with("call_"));
    }
    assert_eq!(fake.requests()[4].body["stream"], json!(true));
}

#[tokio::test]
async fn a_stream_is_retried_before_it_starts() {
    let (fake, model) = setup().await;
    fake.push(Reply::error(503, "overloaded"));
    fake.push(Reply::text("after a retry"));
    let streamed = collect(&model, request("go")).await;
    assert_eq!(streamed.content, "after a retry");
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn embeddings_come_back_in_input_order() {
    let (fake, model) = setup().await;
    assert_eq!(model.dimension(), DIM);
    let texts: Vec<String> = ["alpha", "beta", "gamma", "delta"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let vectors = model.embed(&texts, None).await.expect("embed");
    assert_eq!(vectors.len(), 4);
    for (text, v) in texts.iter().zip(&vectors) {
        assert_eq!(v, &fake.embedding(text), "vector of {text}");
    }
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(
        sent.body,
        json!({"model": "text-embedding-3-small", "input": texts})
    );
    assert_eq!(sent.bearer(), Some(SERVER_KEY));

    // No texts, no request.
    assert!(model.embed(&[], None).await.expect("empty").is_empty());
    assert_eq!(fake.request_count(), 1);

    // A model answering another dimension than configured is an error, not bad data.
    let wrong = OpenAiCompatible::new(OpenAiConfig {
        embedding_dimension: DIM + 1,
        ..config(&fake)
    })
    .expect("adapter");
    match wrong.embed(&texts, None).await {
        Err(LlmError::Protocol(m)) => assert!(m.contains("dimension"), "{m}"),
        other => panic!("expected Protocol, got {other:?}"),
    }
}

#[tokio::test]
async fn a_429_is_retried_then_succeeds() {
    let (fake, model) = setup().await;
    fake.push(Reply::error(429, "slow down"));
    fake.push(Reply::text("ok"));
    let reply = model.complete(request("hi")).await.expect("complete");
    assert_eq!(reply.content, "ok");
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn retry_after_is_honoured_within_the_cap() {
    let fake = FakeOpenAi::start().await.expect("start fake");
    let model = OpenAiCompatible::new(OpenAiConfig {
        max_retry_delay: Duration::from_secs(5),
        ..config(&fake)
    })
    .expect("adapter");
    fake.push(Reply::error(429, "slow down").retry_after(1));
    fake.push(Reply::text("ok"));
    let started = Instant::now();
    model.complete(request("hi")).await.expect("complete");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured (waited {waited:?})"
    );

    // An hour's Retry-After is capped (300 ms here).
    let capped = OpenAiCompatible::new(config(&fake)).expect("adapter");
    fake.push(Reply::error(429, "slow down").retry_after(3600));
    fake.push(Reply::text("ok"));
    let started = Instant::now();
    capped.complete(request("hi")).await.expect("complete");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "the wait was not capped at 300 ms (waited {waited:?})"
    );
    assert_eq!(fake.request_count(), 4);
}

#[tokio::test]
async fn two_transient_errors_then_success() {
    let (fake, model) = setup().await;
    fake.push(Reply::error(502, "bad gateway"));
    fake.push(Reply::error(503, "overloaded"));
    fake.push(Reply::text("third time lucky"));
    let reply = model.complete(request("hi")).await.expect("complete");
    assert_eq!(reply.content, "third time lucky");
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn giving_up_after_max_retries() {
    let (fake, model) = setup().await;
    fake.set_handler(|_| Some(Reply::error(429, "slow down")));
    let err = model
        .complete(request("hi"))
        .await
        .expect_err("rate limited");
    assert!(matches!(err, LlmError::RateLimited), "{err:?}");
    assert_eq!(fake.request_count(), 3, "max_retries 2 → 3 attempts");

    let (fake, model) = setup().await;
    fake.set_handler(|_| Some(Reply::error(502, "bad gateway")));
    let err = model
        .complete(request("hi"))
        .await
        .expect_err("unavailable");
    match &err {
        LlmError::Unavailable(m) => {
            assert!(m.contains("502") && m.contains("bad gateway"), "{m}");
            assert!(m.contains("3 attempts"), "{m}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(fake.request_count(), 3);

    // Embeddings follow the same rules.
    let err = model
        .embed(&["x".to_owned()], None)
        .await
        .expect_err("unavailable");
    assert!(matches!(err, LlmError::Unavailable(_)), "{err:?}");
    assert_eq!(fake.request_count(), 6);
}

#[tokio::test]
async fn a_refused_key_is_not_retried() {
    let (fake, model) = setup().await;
    fake.set_handler(|_| Some(Reply::error(401, "Incorrect API key provided")));
    let err = model
        .complete(request("hi"))
        .await
        .expect_err("unauthorized");
    assert!(matches!(err, LlmError::Unauthorized), "{err:?}");
    let err = model.stream(request("hi")).await.err();
    assert!(matches!(err, Some(LlmError::Unauthorized)), "{err:?}");
    assert_eq!(fake.request_count(), 2, "one attempt each");
}

#[tokio::test]
async fn a_400_is_rejected_at_once_with_the_providers_message() {
    let (fake, model) = setup().await;
    fake.push(Reply::error(400, "Invalid value for 'temperature'"));
    match model.complete(request("hi")).await {
        Err(LlmError::Rejected(m)) => assert!(m.contains("Invalid value for 'temperature'"), "{m}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    fake.push(Reply::Status(200, "this is not json".into()));
    let err = model.complete(request("hi")).await.expect_err("protocol");
    assert!(matches!(err, LlmError::Protocol(_)), "{err:?}");
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn a_timeout_is_unavailable() {
    let fake = FakeOpenAi::start().await.expect("start fake");
    let model = OpenAiCompatible::new(OpenAiConfig {
        timeout: Duration::from_millis(200),
        max_retries: 1,
        ..config(&fake)
    })
    .expect("adapter");
    fake.set_handler(|_| Some(Reply::text("too late").delayed(Duration::from_secs(3))));
    let started = Instant::now();
    let err = model.complete(request("hi")).await.expect_err("timeout");
    assert!(matches!(err, LlmError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "gave up promptly"
    );
    assert_eq!(fake.request_count(), 2, "a timeout is retried");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let fake = FakeOpenAi::start().await.expect("start fake");
    let cfg = config(&fake);
    fake.shutdown().await;
    let model = OpenAiCompatible::new(cfg).expect("adapter");
    let err = model.complete(request("hi")).await.expect_err("refused");
    assert!(matches!(err, LlmError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn a_byok_key_is_used_for_that_call_only() {
    let (fake, model) = setup().await;
    fake.set_handler(|_| Some(Reply::text("ok")));
    let mut byok = request("hi");
    byok.api_key = Some(USER_KEY.into());
    model.complete(byok.clone()).await.expect("byok call");
    model
        .complete(request("hi"))
        .await
        .expect("server-key call");
    collect(&model, byok).await;
    model
        .embed(&["x".to_owned()], Some(USER_KEY))
        .await
        .expect("byok embed");
    model.embed(&["x".to_owned()], None).await.expect("embed");
    let keys: Vec<Option<String>> = fake
        .requests()
        .iter()
        .map(|r| r.bearer().map(str::to_owned))
        .collect();
    assert_eq!(
        keys,
        [USER_KEY, SERVER_KEY, USER_KEY, USER_KEY, SERVER_KEY].map(|k| Some(k.to_owned()))
    );
}

#[tokio::test]
async fn cerebras_models_go_to_cerebras_with_its_key() {
    let main = FakeOpenAi::start().await.expect("start fake");
    let cerebras = FakeOpenAi::start().await.expect("start fake");
    let model = OpenAiCompatible::new(OpenAiConfig {
        cerebras_base_url: cerebras.url(),
        cerebras_api_key: Some(CEREBRAS_KEY.into()),
        ..config(&main)
    })
    .expect("adapter");
    cerebras.set_handler(|_| Some(Reply::text("fast")));
    let mut req = request("hi");
    req.model = "cerebras/llama3.1-8b".into();
    assert_eq!(
        model.complete(req.clone()).await.expect("complete").content,
        "fast"
    );
    req.api_key = Some(USER_KEY.into());
    model.complete(req).await.expect("byok complete");

    assert_eq!(main.request_count(), 0);
    let sent = cerebras.requests();
    assert_eq!(sent[0].body["model"], "llama3.1-8b");
    assert_eq!(sent[0].bearer(), Some(CEREBRAS_KEY));
    assert_eq!(sent[1].bearer(), Some(USER_KEY));
}

#[tokio::test]
async fn a_keyless_local_server_gets_no_authorization_header() {
    let fake = FakeOpenAi::start().await.expect("start fake");
    let model = OpenAiCompatible::new(OpenAiConfig {
        api_key: None,
        ..config(&fake)
    })
    .expect("adapter");
    assert!(model.is_configured_for("llama3.2", false));
    fake.set_handler(|_| Some(Reply::text("local")));
    let mut req = request("hi");
    req.model = "llama3.2".into();
    model.complete(req.clone()).await.expect("complete");
    collect(&model, req).await;
    model.embed(&["x".to_owned()], None).await.expect("embed");
    assert_eq!(fake.request_count(), 3);
    assert!(fake.requests().iter().all(|r| r.authorization.is_none()));
}

#[tokio::test]
async fn hosted_apis_without_a_key_are_not_configured() {
    let model = OpenAiCompatible::new(OpenAiConfig::default()).expect("adapter");
    assert!(!model.is_configured_for("gpt-4o-mini", false));
    assert!(model.is_configured_for("gpt-4o-mini", true));
    assert!(!model.is_configured_for("cerebras/llama3.1-8b", false));

    // No request is attempted: these would otherwise go to the real APIs.
    match model.complete(request("hi")).await {
        Err(LlmError::NotConfigured(m)) => assert!(m.contains("OpenAI API key"), "{m}"),
        other => panic!("expected NotConfigured, got {other:?}"),
    }
    let mut req = request("hi");
    req.model = "cerebras/llama3.1-8b".into();
    match model.stream(req).await.err() {
        Some(LlmError::NotConfigured(m)) => assert!(m.contains("Cerebras API key"), "{m}"),
        other => panic!("expected NotConfigured, got {other:?}"),
    }
    let err = model
        .embed(&["x".to_owned()], None)
        .await
        .expect_err("no key");
    assert!(matches!(err, LlmError::NotConfigured(_)), "{err:?}");

    // A server key for OpenAI does not make Cerebras models configured.
    let openai_only = OpenAiCompatible::new(OpenAiConfig {
        api_key: Some(SERVER_KEY.into()),
        ..OpenAiConfig::default()
    })
    .expect("adapter");
    assert!(openai_only.is_configured_for("gpt-4o", false));
    assert!(!openai_only.is_configured_for("cerebras/llama3.1-8b", false));
    assert_eq!(CEREBRAS_BASE_URL, "https://api.cerebras.ai/v1");
}

#[tokio::test]
async fn keys_never_appear_in_errors_or_debug_output() {
    let (fake, _) = setup().await;
    let model = OpenAiCompatible::new(OpenAiConfig {
        cerebras_api_key: Some(CEREBRAS_KEY.into()),
        ..config(&fake)
    })
    .expect("adapter");
    let secrets = [SERVER_KEY, CEREBRAS_KEY, USER_KEY];
    let assert_clean = |what: &str, text: String| {
        for s in secrets {
            assert!(!text.contains(s), "{what} leaks a key: {text}");
        }
    };
    assert_clean("adapter Debug", format!("{model:?}"));
    assert_clean("config Debug", format!("{:?}", config(&fake)));
    assert!(format!("{model:?}").contains("***"));

    // A provider that echoes the key back in its messages.
    let mut errors = Vec::new();
    for key in [None, Some(USER_KEY)] {
        let echo = format!("bad request for key {}", key.unwrap_or(SERVER_KEY));
        fake.push(Reply::error(400, &echo));
        fake.push(Reply::error(401, &echo));
        fake.push(Reply::Status(500, echo));
        let mut req = request("hi");
        req.api_key = key.map(str::to_owned);
        for _ in 0..3 {
            errors.push(model.complete(req.clone()).await.expect_err("fails"));
        }
    }
    // Transport failures and a missing key.
    let gone = FakeOpenAi::start().await.expect("start fake");
    let gone_model = OpenAiCompatible::new(config(&gone)).expect("adapter");
    gone.shutdown().await;
    errors.push(gone_model.complete(request("hi")).await.expect_err("down"));
    let unconfigured = OpenAiCompatible::new(OpenAiConfig::default()).expect("adapter");
    errors.push(
        unconfigured
            .complete(request("hi"))
            .await
            .expect_err("no key"),
    );

    assert!(errors.iter().any(|e| matches!(e, LlmError::Rejected(_))));
    assert!(errors.iter().any(|e| matches!(e, LlmError::Unavailable(_))));
    for e in &errors {
        assert_clean("error Display", e.to_string());
        assert_clean("error Debug", format!("{e:?}"));
    }
    // The echoed message is still there, with the key masked.
    let masked = errors
        .iter()
        .find_map(|e| match e {
            LlmError::Rejected(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_default();
    assert!(masked.contains("bad request for key ***"), "{masked}");
}

/// A prompt too long for the model's context is refused at once, in llama.cpp's dialect
/// (HTTP 500!) and OpenAI's (HTTP 400), streamed or not: one request each, no retry.
#[tokio::test]
async fn a_context_overflow_is_answered_at_once_without_retries() {
    for (name, reply) in [
        ("llama.cpp", Reply::llama_cpp_context_exceeded(5000, 4096)),
        ("OpenAI", Reply::openai_context_length_exceeded(4096, 5000)),
    ] {
        let (fake, model) = setup().await;
        fake.set_handler(move |_| Some(reply.clone()));
        let err = model.complete(request("hi")).await.expect_err("too long");
        assert!(
            matches!(err, LlmError::ContextLengthExceeded(_)),
            "{name}: {err:?}"
        );
        assert_eq!(fake.request_count(), 1, "{name}: complete was retried");
        let err = model.stream(request("hi")).await.err();
        assert!(
            matches!(err, Some(LlmError::ContextLengthExceeded(_))),
            "{name}: {err:?}"
        );
        assert_eq!(fake.request_count(), 2, "{name}: stream was retried");
    }
}

/// A plain 500 is the provider failing on this request: answered at once, not retried.
#[tokio::test]
async fn a_500_is_not_retried() {
    let (fake, model) = setup().await;
    fake.set_handler(|_| Some(Reply::error(500, "oops")));
    let err = model.complete(request("hi")).await.expect_err("fails");
    assert!(matches!(err, LlmError::Unavailable(_)), "{err:?}");
    assert_eq!(fake.request_count(), 1);
}

/// An unknown model (404) is rejected at once.
#[tokio::test]
async fn an_unknown_model_is_rejected_at_once() {
    let (fake, model) = setup().await;
    fake.set_handler(|_| Some(Reply::error(404, "The model `nope` does not exist")));
    let err = model.complete(request("hi")).await.expect_err("fails");
    assert!(
        matches!(&err, LlmError::Rejected(m) if m.contains("does not exist")),
        "{err:?}"
    );
    assert_eq!(fake.request_count(), 1);
}

/// `max_tokens` reaches a local OpenAI-compatible server as `max_tokens`.
#[tokio::test]
async fn max_tokens_reaches_the_wire() {
    let (fake, model) = setup().await;
    fake.push(Reply::text("ok"));
    fake.push(Reply::text("ok"));
    let mut req = request("hi");
    req.max_tokens = Some(42);
    model.complete(req.clone()).await.expect("complete");
    collect(&model, req).await;
    for r in fake.requests() {
        assert_eq!(r.body["max_tokens"], 42, "{}", r.body);
        assert!(r.body.get("max_completion_tokens").is_none());
    }
}
