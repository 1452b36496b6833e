//! The AsyncAPI document of the WebSockets: served as printed, AsyncAPI-3-shaped with
//! every `$ref` resolving, and describing the frames a live socket really sends (and the
//! frames a client sends), checked with a small JSON Schema validator below (the subset
//! of keywords the document uses; an unknown keyword fails the test rather than being
//! skipped).

use serde_json::{Value, json};

use crate::chat::{
    SERVER_KEY, Socket, chat_app, connect, fake_with, is_router, last_is_tool, last_user, next,
    send, token,
};
use crate::helpers::spawn_app;
use adiuva_adapters::llm::fake::Reply;

#[tokio::test]
async fn the_served_document_is_the_printed_asyncapi_3_document() {
    let app = spawn_app().await;
    let resp = app.get("/asyncapi.json").await;
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.expect("json");
    let printed: Value =
        serde_json::from_str(&adiuva_server::asyncapi::asyncapi_json()).expect("json");
    assert_eq!(doc, printed);
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let channel = &doc["channels"]["chatStream"];
    assert_eq!(channel["address"], "/api/v1/chat/stream");
    let ops = doc["operations"].as_object().expect("operations");
    let actions: Vec<&str> = ops.values().filter_map(|o| o["action"].as_str()).collect();
    assert!(
        actions.contains(&"send") && actions.contains(&"receive"),
        "{actions:?}"
    );
    assert_eq!(
        doc["channels"]["deviceSocket"]["address"],
        "/api/v1/ws/device"
    );
    assert_eq!(ops.len(), 4, "send and receive for each socket");
    for op in ops.values() {
        let channel = op["channel"]["$ref"].as_str().expect("channel");
        assert!(
            ["#/channels/chatStream", "#/channels/deviceSocket"].contains(&channel),
            "{channel}"
        );
        for m in op["messages"].as_array().expect("messages") {
            let r = m["$ref"].as_str().expect("$ref");
            assert!(r.starts_with(&format!("{channel}/messages/")), "{r}");
        }
    }
    assert!(
        doc["channels"]["deviceSocket"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("drops any frame whose `id` it has already processed")),
        "the exactly-once rule is documented"
    );
    let messages = doc["components"]["messages"].as_object().expect("messages");
    for name in [
        "chat_request",
        "user_request",
        "tool_result",
        "text_chunk",
        "tool_call",
        "final",
        "ai_response",
        "ask_user_clarification",
        "error",
    ] {
        let m = &messages[name];
        assert!(m["payload"]["$ref"].is_string(), "{name} has a payload");
    }
    assert!(
        doc["components"]["schemas"]
            .as_object()
            .is_some_and(|s| !s.is_empty())
    );
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 20, "{refs:?}");
    for r in refs {
        assert!(resolve(&doc, &r).is_some(), "$ref {r} resolves");
    }
    // `tool_call.arguments` is an object.
    let tool_call = schema_of(&doc, "tool_call");
    assert!(
        validate(
            &doc,
            &tool_call,
            &json!({"type": "tool_call", "id": "tc_1", "name": "x", "arguments": {}})
        )
        .is_ok()
    );
    assert!(
        validate(
            &doc,
            &tool_call,
            &json!({"type": "tool_call", "id": "tc_1", "name": "x", "arguments": "{}"})
        )
        .is_err()
    );
    // The validator rejects what the schemas exclude.
    let text_chunk = schema_of(&doc, "text_chunk");
    assert!(validate(&doc, &text_chunk, &json!({"type": "text_chunk"})).is_err());
    assert!(validate(&doc, &text_chunk, &json!({"type": "final", "text": "x"})).is_err());
}

/// Frames of a live socket, both protocols, validate against their messages' schemas.
#[tokio::test]
async fn live_frames_match_their_schemas() {
    let fake = fake_with(|body: &Value| {
        if is_router(body) {
            let message = last_user(body);
            if message.contains("clarify") && !body.to_string().contains("Which project?") {
                return Some(Reply::ToolCalls(vec![(
                    "ask_user_clarification".into(),
                    json!({"question": "Which project?"}).to_string(),
                )]));
            }
            return Some(Reply::Text("task_agent".into()));
        }
        if last_is_tool(body) {
            return Some(Reply::Text("Created it in Apollo.".into()));
        }
        Some(Reply::ToolCalls(vec![(
            "create_task".into(),
            json!({"title": "Ship it", "project_id": "p2", "priority": "high"}).to_string(),
        )]))
    })
    .await;
    let app = chat_app(&fake, Some(SERVER_KEY)).await;
    let doc: Value = app.get("/asyncapi.json").await.json().await.expect("json");
    let t = token(&app).await;
    let mut ws = connect(&app, &t).await;
    let mut seen = Vec::new();

    let v1 = json!({"type": "chat_request", "message": "add a task"});
    let last = turn(&doc, &mut ws, v1, &mut seen).await;
    assert_eq!(last["type"], "final", "{last}");

    let plan = json!({"type": "chat_request", "message": "add a task", "execution_mode": "plan"});
    let last = turn(&doc, &mut ws, plan, &mut seen).await;
    assert!(last["plan"].is_object(), "{last}");

    let popup = json!({"type": "user_request", "message": "clarify this", "source": "popup", "scope": {"project_id": "p1"}});
    let last = turn(&doc, &mut ws, popup, &mut seen).await;
    assert_eq!(last["type"], "ask_user_clarification", "{last}");
    let answer = json!({"type": "user_request", "message": "Apollo", "source": "popup", "scope": {"project_id": "p1"}});
    let last = turn(&doc, &mut ws, answer, &mut seen).await;
    assert_eq!(last["context"]["scope_changed"], true, "{last}");

    let home = json!({"type": "user_request", "message": "add a task"});
    let last = turn(&doc, &mut ws, home, &mut seen).await;
    assert!(last["context"]["new_scope"].is_null(), "{last}");

    let rockets = json!({"type": "launch_rockets"});
    send(&mut ws, rockets).await;
    check(&doc, &next(&mut ws).await, &mut seen);
    let stray = json!({"type": "tool_result", "id": "tc_999", "result": 1});
    check_client(&doc, &stray);
    send(&mut ws, stray).await;
    check(&doc, &next(&mut ws).await, &mut seen);

    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "ai_response",
            "ask_user_clarification",
            "error",
            "final",
            "text_chunk",
            "tool_call"
        ],
        "every kind of server frame was checked"
    );
}

/// Frames of a live device socket, both directions, validate against the device
/// channel's schemas.
#[tokio::test]
async fn live_device_frames_match_their_schemas() {
    use adiuva_core::devices::{DeviceRequest, Queued};

    let app = spawn_app().await;
    let doc: Value = app.get("/asyncapi.json").await.json().await.expect("json");
    let t = token(&app).await;
    let me = app.me_json(&t).await;
    let user = adiuva_core::domain::UserId(me["id"].as_str().expect("id").parse().expect("uuid"));
    let mut seen = Vec::new();
    let mut ws = crate::devices::connect_device(&app, &t).await;
    device(&doc, &mut ws, crate::devices::hello("laptop-1")).await;
    check_as(&doc, "device.", &next(&mut ws).await, &mut seen);
    device(&doc, &mut ws, json!({"type": "ping"})).await;
    check_as(&doc, "device.", &next(&mut ws).await, &mut seen);
    device(&doc, &mut ws, json!({"type": "pong"})).await;
    // Not a device frame: refused with an `error` frame.
    send(&mut ws, json!({"type": "launch_rockets"})).await;
    check_as(&doc, "device.", &next(&mut ws).await, &mut seen);

    let hub = app.adiuva.devices().clone();
    let calls = tokio::spawn(async move {
        let tool = hub
            .call(
                user,
                "laptop-1",
                DeviceRequest::Tool {
                    name: "list_tasks".into(),
                    arguments: serde_json::Map::new(),
                },
            )
            .await;
        let data = hub
            .call(
                user,
                "laptop-1",
                DeviceRequest::Data {
                    data_types: vec!["tasks".into()],
                    filter: serde_json::Map::new(),
                },
            )
            .await;
        (tool, data)
    });
    let f = next(&mut ws).await;
    check_as(&doc, "device.", &f, &mut seen);
    device(
        &doc,
        &mut ws,
        json!({"type": "tool_result", "id": f["id"], "result": [{"id": "t1"}]}),
    )
    .await;
    let f = next(&mut ws).await;
    check_as(&doc, "device.", &f, &mut seen);
    device(
        &doc,
        &mut ws,
        json!({"type": "data_response", "id": f["id"], "error": "no access"}),
    )
    .await;
    let (tool, data) = calls.await.expect("calls");
    assert_eq!(tool, Ok(json!([{"id": "t1"}])));
    assert_eq!(data, Err("no access".to_owned()));

    let hub = app.adiuva.devices();
    for frame in [
        Queued::AgentTrigger {
            agent_id: "daily".into(),
            run_id: "r1".into(),
            input: json!({"day": 1}),
        },
        Queued::Notification {
            kind: "message".into(),
            payload: json!({"text": "hi"}),
        },
    ] {
        hub.enqueue(user, "laptop-1", frame).await.expect("enqueue");
        let f = next(&mut ws).await;
        check_as(&doc, "device.", &f, &mut seen);
        device(&doc, &mut ws, json!({"type": "ack", "id": f["id"]})).await;
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "agent_trigger",
            "data_request",
            "error",
            "hello_ack",
            "notification",
            "pong",
            "tool_call"
        ],
        "every kind of device frame was checked"
    );
}

/// Sends a device frame, checked against its schema first.
async fn device(doc: &Value, ws: &mut Socket, frame: Value) {
    check_client_as(doc, "device.", &frame);
    send(ws, frame).await;
}

/// Sends `request` (checked against its schema), plays the device until the chat's last
/// frame, checking every frame; returns the last.
async fn turn(doc: &Value, ws: &mut Socket, request: Value, seen: &mut Vec<String>) -> Value {
    check_client(doc, &request);
    send(ws, request).await;
    loop {
        let f = next(ws).await;
        check(doc, &f, seen);
        match f["type"].as_str() {
            Some("tool_call") => {
                let result = json!({"type": "tool_result", "id": f["id"], "result": {"id": "t9"}});
                check_client(doc, &result);
                send(ws, result).await;
            }
            Some("text_chunk") => {}
            _ => return f,
        }
    }
}

/// The payload schema of message `name`.
fn schema_of(doc: &Value, name: &str) -> Value {
    let m = &doc["components"]["messages"][name];
    assert!(m.is_object(), "the document has a message `{name}`");
    m["payload"].clone()
}

fn check(doc: &Value, frame: &Value, seen: &mut Vec<String>) {
    check_as(doc, "", frame, seen);
}

/// Checks a server frame against the message `{prefix}{type}`.
fn check_as(doc: &Value, prefix: &str, frame: &Value, seen: &mut Vec<String>) {
    let kind = frame["type"].as_str().expect("a frame has a type");
    let schema = schema_of(doc, &format!("{prefix}{kind}"));
    if let Err(e) = validate(doc, &schema, frame) {
        panic!("server frame {frame} does not match `{kind}`: {e}");
    }
    // Nothing is sent that the document does not name.
    let mut named = Vec::new();
    property_names(doc, &schema, &mut named);
    for key in frame.as_object().expect("object").keys() {
        assert!(
            named.contains(key),
            "`{kind}` sends `{key}`, which its schema does not name"
        );
    }
    seen.push(kind.to_owned());
}

/// The top-level property names of `schema`, through `$ref` and `allOf`.
fn property_names(doc: &Value, schema: &Value, out: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str()
        && let Some(target) = resolve(doc, r)
    {
        property_names(doc, target, out);
    }
    for sub in schema["allOf"].as_array().into_iter().flatten() {
        property_names(doc, sub, out);
    }
    out.extend(
        schema["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.clone()),
    );
}

fn check_client(doc: &Value, frame: &Value) {
    check_client_as(doc, "", frame);
}

/// Checks a client frame against the message `{prefix}{type}`.
fn check_client_as(doc: &Value, prefix: &str, frame: &Value) {
    let kind = frame["type"].as_str().expect("a frame has a type");
    if let Err(e) = validate(doc, &schema_of(doc, &format!("{prefix}{kind}")), frame) {
        panic!("client frame {frame} does not match `{kind}`: {e}");
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(x, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

fn resolve<'a>(doc: &'a Value, r: &str) -> Option<&'a Value> {
    doc.pointer(r.strip_prefix('#')?)
}

/// Validates `value` against `schema` (JSON Schema: the keywords the document uses).
fn validate(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    let Some(s) = schema.as_object() else {
        return match schema {
            Value::Bool(true) => Ok(()),
            _ => Err(format!("not a schema: {schema}")),
        };
    };
    for key in s.keys() {
        let known = [
            "$ref",
            "allOf",
            "anyOf",
            "oneOf",
            "type",
            "enum",
            "required",
            "properties",
            "additionalProperties",
            "items",
            "format",
            "description",
            "title",
            "example",
            "default",
            "discriminator",
            "readOnly",
            "writeOnly",
            "deprecated",
        ];
        if !known.contains(&key.as_str()) {
            return Err(format!("the checker does not know `{key}`"));
        }
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let target = resolve(doc, r).ok_or_else(|| format!("$ref {r} does not resolve"))?;
        validate(doc, target, value).map_err(|e| format!("{r}: {e}"))?;
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            validate(doc, sub, value)?;
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|sub| validate(doc, sub, value).is_ok())
    {
        return Err(format!("{value} matches none of anyOf"));
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let n = one
            .iter()
            .filter(|sub| validate(doc, sub, value).is_ok())
            .count();
        if n != 1 {
            return Err(format!("{value} matches {n} of oneOf"));
        }
    }
    if let Some(ty) = s.get("type") {
        let types: Vec<&str> = match ty {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return Err(format!("bad type {ty}")),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{value} is not of type {ty}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(value)
    {
        return Err(format!("{value} is not one of {e:?}"));
    }
    if let Value::Object(obj) = value {
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                return Err(format!("`{r}` is required"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(p) => validate(doc, p, v).map_err(|e| format!("{k}: {e}"))?,
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => return Err(format!("`{k}` is not allowed")),
                    Some(extra) => validate(doc, extra, v).map_err(|e| format!("{k}: {e}"))?,
                    None => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(item)) = (value, s.get("items")) {
        for (i, x) in items.iter().enumerate() {
            validate(doc, item, x).map_err(|e| format!("[{i}]: {e}"))?;
        }
    }
    Ok(())
}
