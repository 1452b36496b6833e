//! Plan step 24 through the real server: `ui_directive` (task card, chart, diagram) and
//! navigation across entities come out of `POST /chat` and the v2 `ai_response` for the
//! cases `adiuva_core::chat::directives` defines, and stay null otherwise.

use adiuva_adapters::llm::fake::{FakeOpenAi, Reply};
use serde_json::{Value, json};

use crate::chat::{
    SERVER_KEY, chat_app, chat_socket, fake_with, is_router, play_device, post_chat, send, token,
};

fn after_tool(body: &Value) -> bool {
    body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .is_some_and(|m| m["role"] == "tool")
}

/// The router sends everything to `agent`, which calls `tool` with `args` once and then
/// says "Done.".
async fn one_call(agent: &'static str, tool: &'static str, args: Value) -> FakeOpenAi {
    fake_with(move |body| {
        Some(if is_router(body) {
            Reply::text(agent)
        } else if after_tool(body) {
            Reply::text("Done.")
        } else if tool.is_empty() {
            Reply::text("Hello! How can I help?")
        } else {
            Reply::ToolCalls(vec![(tool.into(), args.to_string())])
        })
    })
    .await
}

fn tasks() -> Value {
    json!([
        {"id": "t1", "title": "Write report", "status": "todo", "project_id": "p1"},
        {"id": "t2", "title": "Call the bank", "status": "done", "project_id": "p2"},
        {"id": "t3", "title": "Book the room", "status": "todo", "project_id": "p2"}
    ])
}

async fn rest(agent: &'static str, tool: &'static str, args: Value, body: Value) -> Value {
    let fake = one_call(agent, tool, args).await;
    let app = chat_app(&fake, Some(SERVER_KEY)).await;
    let t = token(&app).await;
    let resp = post_chat(&app, &t, body).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

#[tokio::test]
async fn rest_answers_about_one_task_carry_a_task_card() {
    let out = rest(
        "task_agent",
        "list_tasks",
        json!({"search": "report"}),
        json!({"message": "what about the report?", "context": {"recent_tasks": tasks()}}),
    )
    .await;
    assert_eq!(out["response"], "Done.");
    assert_eq!(out["ui_directive"]["type"], "task_card", "{out}");
    assert_eq!(out["ui_directive"]["task"]["id"], "t1");
    assert_eq!(out["ui_directive"]["task"]["title"], "Write report");
    assert_eq!(out["navigation"], json!([]));
    assert_eq!(
        out["context"],
        json!({"scope_changed": false, "new_scope": null})
    );
}

#[tokio::test]
async fn rest_counts_carry_a_chart_and_a_project_a_diagram() {
    let out = rest(
        "task_agent",
        "list_tasks",
        json!({}),
        json!({"message": "How many tasks do I have?", "context": {"recent_tasks": tasks()}}),
    )
    .await;
    assert_eq!(
        out["ui_directive"],
        json!({"type": "chart", "chart": "bar", "title": "tasks by status", "series": [
            {"label": "todo", "value": 2}, {"label": "done", "value": 1}
        ]}),
        "{out}"
    );
    let out = rest(
        "project_agent",
        "get_project",
        json!({"project_id": "p1"}),
        json!({"message": "show me Apollo", "context": {"projects": [{"id": "p1", "name": "Apollo"}]}}),
    )
    .await;
    assert_eq!(out["ui_directive"]["type"], "diagram", "{out}");
    assert_eq!(
        out["ui_directive"]["nodes"][0],
        json!({"id": "p1", "kind": "project", "label": "Apollo"})
    );
}

#[tokio::test]
async fn rest_navigates_when_the_answer_is_about_another_project() {
    let out = rest(
        "task_agent",
        "list_tasks",
        json!({"project_id": "p2"}),
        json!({"message": "what is left in the other project?", "source": "popup",
               "scope": {"project_id": "p1"}, "context": {"recent_tasks": tasks()}}),
    )
    .await;
    assert_eq!(
        out["navigation"],
        json!([{"action": "navigate", "target": "project", "filter": {"project_id": "p2"}}]),
        "{out}"
    );
    assert_eq!(
        out["context"],
        json!({"scope_changed": true, "new_scope": {"project_id": "p2"}})
    );
    // two tasks, no question about numbers: no directive
    assert_eq!(out["ui_directive"], Value::Null);
    // the same read inside the popup's own project: no navigation
    let out = rest(
        "task_agent",
        "list_tasks",
        json!({"project_id": "p2"}),
        json!({"message": "what is left here?", "source": "popup",
               "scope": {"project_id": "p2"}, "context": {"recent_tasks": tasks()}}),
    )
    .await;
    assert_eq!(out["navigation"], json!([]), "{out}");
    assert_eq!(out["context"]["scope_changed"], false);
}

#[tokio::test]
async fn rest_small_talk_has_no_directives() {
    let out = rest(
        "task_agent",
        "",
        json!({}),
        json!({"message": "hello", "scope": {"project_id": "p1"}}),
    )
    .await;
    assert_eq!(out["response"], "Hello! How can I help?");
    assert_eq!(out["ui_directive"], Value::Null, "{out}");
    assert_eq!(out["navigation"], json!([]));
    assert_eq!(
        out["context"],
        json!({"scope_changed": false, "new_scope": null})
    );
}

#[tokio::test]
async fn ws_v2_ai_response_carries_the_card_and_the_navigation() {
    let fake = one_call(
        "task_agent",
        "create_task",
        json!({"title": "Ship it", "project_id": "p2"}),
    )
    .await;
    let (_app, mut ws) = chat_socket(&fake).await;
    send(
        &mut ws,
        json!({"type": "user_request", "message": "add ship it to Hermes", "source": "popup", "scope": {"project_id": "p1"}}),
    )
    .await;
    let (calls, _, last) = play_device(&mut ws, |_, _| json!({"id": "t9"})).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(last["type"], "ai_response", "{last}");
    assert_eq!(
        last["response"]["ui_directive"],
        json!({"type": "task_card", "task": {"title": "Ship it", "project_id": "p2", "id": "t9"}})
    );
    assert_eq!(
        last["navigation"],
        json!([{"action": "navigate", "target": "project", "filter": {"project_id": "p2"}}])
    );
    assert_eq!(
        last["context"],
        json!({"scope_changed": true, "new_scope": {"project_id": "p2"}})
    );
}

#[tokio::test]
async fn ws_v2_small_talk_has_no_directives() {
    let fake = one_call("task_agent", "", json!({})).await;
    let (_app, mut ws) = chat_socket(&fake).await;
    send(
        &mut ws,
        json!({"type": "user_request", "message": "hello", "source": "popup", "scope": {"project_id": "p1"}}),
    )
    .await;
    let (_, text, last) = play_device(&mut ws, |_, _| json!({})).await;
    assert_eq!(text, "Hello! How can I help?");
    assert_eq!(last["type"], "ai_response", "{last}");
    assert_eq!(last["response"]["ui_directive"], Value::Null);
    assert_eq!(last["navigation"], json!([]));
    assert_eq!(
        last["context"],
        json!({"scope_changed": false, "new_scope": null})
    );
}
