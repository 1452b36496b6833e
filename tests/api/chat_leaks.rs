//! Nothing a chat sends bypasses the sanitizer: a model that writes its system prompt
//! into a write tool's arguments gets no 8-word run of any prompt to the client, through
//! REST `actions`, the WebSocket's `tool_call` and `final`, or v2 `mutations`.

use std::collections::HashSet;

use adiuva_adapters::llm::fake::{FakeOpenAi, Reply};
use serde_json::{Value, json};

use crate::chat::{
    SERVER_KEY, chat_app, chat_socket, connect, fake_with, is_router, last_is_tool, play_device,
    post_chat, send, system_text, token,
};

/// The sanitizer's shingle length: 8 consecutive words shared with a prompt.
const RUN: usize = 8;

/// A model whose note agent saves a note holding its own system prompt.
async fn leaking_model() -> FakeOpenAi {
    fake_with(|body: &Value| {
        if is_router(body) {
            return Some(Reply::Text("note_agent".into()));
        }
        if last_is_tool(body) {
            return Some(Reply::Text("Saved.".into()));
        }
        let system = system_text(body);
        Some(Reply::ToolCalls(vec![(
            "create_note".into(),
            json!({"title": "Leak", "content": format!("My notes. {system}"), "project_id": "p2"})
                .to_string(),
        )]))
    })
    .await
}

/// Words as the sanitizer compares them: lowercased, punctuation dropped.
fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Every system prompt the model was sent, as 8-word runs. A system message ends with
/// the device's own data for the request (from `Current time:` on: the time, the profile,
/// the popup's scope); that is the user's, not the server's, and is left out.
fn prompt_runs(fake: &FakeOpenAi) -> HashSet<Vec<String>> {
    let runs: HashSet<Vec<String>> = fake
        .requests()
        .iter()
        .map(|r| {
            let system = system_text(&r.body);
            match system.split_once("\n\nCurrent time:") {
                Some((prompt, _)) => prompt.to_owned(),
                None => system,
            }
        })
        .flat_map(|p| {
            let w = words(&p);
            w.windows(RUN).map(<[String]>::to_vec).collect::<Vec<_>>()
        })
        .collect();
    assert!(!runs.is_empty(), "the model was sent prompts");
    runs
}

/// Asserts no 8-word run of any prompt is in `sent` (every string in it, keys too).
fn assert_no_prompt(fake: &FakeOpenAi, what: &str, sent: &Value) {
    let runs = prompt_runs(fake);
    let text = sent.to_string().replace("\\n", " ");
    let w = words(&text);
    if let Some(run) = w.windows(RUN).find(|r| runs.contains(*r)) {
        panic!("{what} carries prompt text \"{}\": {sent}", run.join(" "));
    }
}

#[tokio::test]
async fn rest_actions_carry_no_prompt_text() {
    let fake = leaking_model().await;
    let app = chat_app(&fake, Some(SERVER_KEY)).await;
    let t = token(&app).await;
    let resp = post_chat(&app, &t, json!({"message": "save a note"})).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    let actions = &body["actions"];
    assert_eq!(actions[0]["type"], "create_record", "{body}");
    let content = actions[0]["data"]["content"].as_str().expect("content");
    assert!(
        content.starts_with("My notes."),
        "the rest is kept: {content}"
    );
    assert_no_prompt(&fake, "POST /chat actions", actions);
    assert_no_prompt(&fake, "POST /chat", &body);
}

#[tokio::test]
async fn websocket_v1_tool_calls_and_final_carry_no_prompt_text() {
    let fake = leaking_model().await;
    let (_app, mut ws) = chat_socket(&fake).await;
    send(
        &mut ws,
        json!({"type": "chat_request", "message": "save a note"}),
    )
    .await;
    let (calls, text, last) = play_device(&mut ws, |_, _| json!({"id": "n1"})).await;
    assert_eq!(last["type"], "final", "{last}");
    assert_eq!(calls.len(), 1);
    assert_no_prompt(&fake, "tool_call", &calls[0]);
    assert_no_prompt(&fake, "final.actions", &last["actions"]);
    assert_no_prompt(&fake, "final", &last);
    assert_no_prompt(&fake, "text_chunk", &Value::String(text));
}

#[tokio::test]
async fn websocket_v2_mutations_carry_no_prompt_text() {
    let fake = leaking_model().await;
    let (_app, mut ws) = chat_socket(&fake).await;
    send(
        &mut ws,
        json!({"type": "user_request", "message": "save a note", "source": "popup", "scope": {"project_id": "p1"}}),
    )
    .await;
    let (calls, _, last) = play_device(&mut ws, |_, _| json!({"id": "n1"})).await;
    assert_eq!(last["type"], "ai_response", "{last}");
    assert_eq!(calls.len(), 1);
    let mutations = &last["mutations"];
    assert_eq!(mutations[0]["action"], "create_record", "{last}");
    let content = mutations[0]["data"]["content"].as_str().expect("content");
    assert!(
        content.starts_with("My notes."),
        "the rest is kept: {content}"
    );
    assert_no_prompt(&fake, "ai_response.mutations", mutations);
    assert_no_prompt(&fake, "ai_response", &last);
    // The write was outside the popup's project: navigation points there.
    assert_eq!(
        last["navigation"][0]["filter"]["project_id"], "p2",
        "{last}"
    );
}

/// A provider whose refusal quotes the prompt it was sent: the error's detail reaches
/// neither a REST client nor a socket with the prompt in it.
#[tokio::test]
async fn error_details_carry_no_prompt_text() {
    let fake = fake_with(|body: &Value| {
        if is_router(body) {
            return Some(Reply::Text("note_agent".into()));
        }
        let system = system_text(body);
        Some(Reply::error(
            400,
            &format!("invalid request near: {system}"),
        ))
    })
    .await;
    let app = chat_app(&fake, Some(SERVER_KEY)).await;
    let t = token(&app).await;
    let resp = post_chat(&app, &t, json!({"message": "save a note"})).await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "llm_rejected", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("invalid request near")),
        "the provider's words are kept: {body}"
    );
    assert_no_prompt(&fake, "POST /chat error", &body);
    let mut ws = connect(&app, &t).await;
    send(
        &mut ws,
        json!({"type": "chat_request", "message": "save a note"}),
    )
    .await;
    let (_, _, last) = play_device(&mut ws, |_, _| json!(null)).await;
    assert_eq!(last["code"], "llm_rejected", "{last}");
    assert_no_prompt(&fake, "error frame", &last);
}
