//! The device socket `WS /api/v1/ws/device`, `GET/DELETE /devices` and `POST /chat` with
//! `device_id` (issue 11): a real server on SQLite, real sockets, a test client playing
//! the desktop app.

use std::time::Duration;

use adiuva_core::domain::UserId;
use futures::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::chat::{
    SERVER_KEY, Socket, chat_app, fake_with, next, post_chat, send, token, tool_script,
};
use crate::helpers::{TestApp, assert_error, spawn_app, spawn_app_with};

/// Longest wait for anything the server does on its own (a close, presence).
const BOUND: Duration = Duration::from_secs(15);

/// Opens the device socket as the holder of `token`.
pub async fn connect_device(app: &TestApp, token: &str) -> Socket {
    let url = format!("ws://127.0.0.1:{}/api/v1/ws/device", app.port);
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .expect("device socket connects")
        .0
}

/// A `device_hello` for `device_id`.
pub fn hello(device_id: &str) -> Value {
    json!({
        "type": "device_hello",
        "device_id": device_id,
        "name": "Work laptop",
        "platform": "linux",
        "app_version": "1.4.2",
        "capabilities": ["tools", "files"],
    })
}

/// Opens the socket and says hello; returns the socket and its `hello_ack`.
pub async fn online(app: &TestApp, token: &str, device_id: &str) -> (Socket, Value) {
    let mut ws = connect_device(app, token).await;
    send(&mut ws, hello(device_id)).await;
    let ack = next(&mut ws).await;
    assert_eq!(ack["type"], "hello_ack", "{ack}");
    (ws, ack)
}

/// Reads until the server closes; its close frame's code and reason.
async fn closed(ws: &mut Socket) -> Option<(CloseCode, String)> {
    tokio::time::timeout(BOUND, async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(WsMessage::Close(frame)) => {
                    return frame.map(|f| (f.code, f.reason.to_string()));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the server closed the socket in time")
}

/// The user id behind `token`.
pub async fn user_of(app: &TestApp, token: &str) -> UserId {
    let me = app.me_json(token).await;
    UserId(me["id"].as_str().expect("id").parse().expect("uuid"))
}

/// `GET /devices` as the holder of `token`.
async fn devices(app: &TestApp, token: &str) -> Vec<Value> {
    let resp = app.get_as("/devices", token).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

/// Polls `GET /devices` until `device_id`'s `online` is `online`; returns the device.
pub async fn until_online(app: &TestApp, token: &str, device_id: &str, online: bool) -> Value {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let found = devices(app, token)
            .await
            .into_iter()
            .find(|d| d["device_id"] == device_id);
        if let Some(d) = found
            && d["online"] == online
        {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{device_id} online={online} in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_upgrade_is_refused_without_a_valid_token() {
    let app = spawn_app().await;
    let url = format!("ws://127.0.0.1:{}/api/v1/ws/device", app.port);
    for token in [None, Some("not-a-token")] {
        let mut req = url.clone().into_client_request().expect("request");
        if let Some(t) = token {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().expect("h"));
        }
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401, "{token:?}");
                let body: Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}")).expect("json");
                assert_eq!(body["code"], "unauthorized", "{body}");
            }
            other => panic!("the upgrade went through with {token:?}: {other:?}"),
        }
    }
    // `?token=` works like the header.
    let t = token(&app).await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("{url}?token={t}"))
        .await
        .expect("?token= upgrades");
    drop(ws);
}

#[tokio::test]
async fn hello_is_answered_with_hello_ack() {
    let app = spawn_app().await;
    let t = token(&app).await;
    let before = chrono_ms();
    let (_ws, ack) = online(&app, &t, "laptop-1").await;
    let session: uuid::Uuid = ack["session_id"]
        .as_str()
        .expect("session_id")
        .parse()
        .expect("a UUID");
    assert!(!session.is_nil());
    let server_time = ack["server_time"].as_i64().expect("server_time");
    assert!(
        server_time >= before - 1000 && server_time <= chrono_ms() + 1000,
        "{ack}"
    );
    assert_eq!(ack["pending"], 0);
    assert_eq!(ack["expired"], 0);
    assert_eq!(
        ack.as_object().map(|o| o.len()),
        Some(5),
        "type, session_id, server_time, pending, expired: {ack}"
    );
}

fn chrono_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

#[tokio::test]
async fn a_socket_that_never_says_hello_is_told_and_closed() {
    let app = spawn_app().await;
    let t = token(&app).await;
    let mut ws = connect_device(&app, &t).await;
    // Before the hello, other frames are refused and the socket waits for it.
    send(&mut ws, json!({"type": "ack", "id": "x"})).await;
    let refused = next(&mut ws).await;
    assert_eq!(refused["code"], "hello_required", "{refused}");
    // The hello deadline is 10 s: longer than `next`'s own wait.
    let told = tokio::time::timeout(BOUND, async {
        loop {
            match ws.next().await.expect("open").expect("frame") {
                WsMessage::Text(t) => return serde_json::from_str::<Value>(&t).expect("JSON"),
                WsMessage::Ping(_) | WsMessage::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("told in time");
    assert_eq!(told["type"], "error");
    assert_eq!(told["code"], "hello_required", "{told}");
    let (code, reason) = closed(&mut ws).await.expect("a close frame");
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("device_hello"), "{reason}");
}

#[tokio::test]
async fn a_bad_hello_is_refused_and_the_device_may_try_again() {
    let app = spawn_app().await;
    let t = token(&app).await;
    let mut ws = connect_device(&app, &t).await;
    send(&mut ws, hello("not a valid id!")).await;
    let refused = next(&mut ws).await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "validation_error", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .expect("detail")
            .contains("device_id"),
        "{refused}"
    );
    let mut missing = hello("laptop-1");
    missing.as_object_mut().expect("object").remove("name");
    send(&mut ws, missing).await;
    let refused = next(&mut ws).await;
    assert_eq!(refused["code"], "validation_error", "{refused}");
    send(&mut ws, hello("laptop-1")).await;
    assert_eq!(next(&mut ws).await["type"], "hello_ack");
    send(&mut ws, hello("laptop-1")).await;
    assert_eq!(next(&mut ws).await["code"], "hello_already_sent");
}

#[tokio::test]
async fn a_second_connection_replaces_the_first() {
    let app = spawn_app().await;
    let t = token(&app).await;
    let (mut first, ack1) = online(&app, &t, "laptop-1").await;
    let (mut second, ack2) = online(&app, &t, "laptop-1").await;
    assert_ne!(ack1["session_id"], ack2["session_id"]);
    let (code, reason) = closed(&mut first).await.expect("a close frame");
    assert_eq!(code, CloseCode::Normal);
    assert!(reason.contains("replaced"), "{reason}");
    send(&mut second, json!({"type": "ping"})).await;
    assert_eq!(next(&mut second).await["type"], "pong");
    assert_eq!(
        until_online(&app, &t, "laptop-1", true).await["online"],
        true
    );
}

#[tokio::test]
async fn malformed_frames_get_an_error_and_the_socket_stays_usable() {
    let app = spawn_app().await;
    let t = token(&app).await;
    let (mut ws, _) = online(&app, &t, "laptop-1").await;
    let cases: Vec<(WsMessage, &str)> = vec![
        (WsMessage::Text("{not json".into()), "malformed_frame"),
        (WsMessage::Text("[1, 2]".into()), "malformed_frame"),
        (
            WsMessage::Text(json!({"id": "x"}).to_string().into()),
            "malformed_frame",
        ),
        (
            WsMessage::Text(json!({"type": "launch_rockets"}).to_string().into()),
            "unknown_frame_type",
        ),
        (
            WsMessage::Text(json!({"type": "ack"}).to_string().into()),
            "malformed_frame",
        ),
        (
            WsMessage::Text(json!({"type": "tool_result", "id": 7}).to_string().into()),
            "malformed_frame",
        ),
        (
            WsMessage::Text(
                json!({"type": "tool_result", "id": "dc_x_1", "result": 1})
                    .to_string()
                    .into(),
            ),
            "unknown_call",
        ),
        (WsMessage::Binary(vec![1, 2, 3].into()), "malformed_frame"),
    ];
    for (frame, code) in cases {
        let shown = format!("{frame:?}");
        ws.send(frame).await.expect("send");
        let err = next(&mut ws).await;
        assert_eq!(err["type"], "error", "{shown}");
        assert_eq!(err["code"], code, "{shown}: {err}");
        send(&mut ws, json!({"type": "ping"})).await;
        assert_eq!(next(&mut ws).await["type"], "pong", "usable after {shown}");
    }
}

#[tokio::test]
async fn an_oversized_message_closes_the_socket_with_1009() {
    let app = spawn_app_with(|s| s.chat_max_message_bytes = 64 * 1024).await;
    let t = token(&app).await;
    let (mut ws, _) = online(&app, &t, "laptop-1").await;
    let big = json!({"type": "ack", "id": "x".repeat(100 * 1024)}).to_string();
    ws.send(WsMessage::Text(big.into())).await.expect("send");
    let (code, _) = closed(&mut ws).await.expect("a close frame");
    assert_eq!(code, CloseCode::Size);
    until_online(&app, &t, "laptop-1", false).await;
}

#[tokio::test]
async fn devices_are_listed_with_their_presence() {
    let app = spawn_app().await;
    let t = token(&app).await;
    let other = token(&app).await;
    assert!(devices(&app, &t).await.is_empty());
    let (mut ws, _) = online(&app, &t, "laptop-1").await;
    let d = until_online(&app, &t, "laptop-1", true).await;
    assert_eq!(d["name"], "Work laptop");
    assert_eq!(d["platform"], "linux");
    assert_eq!(d["app_version"], "1.4.2");
    assert_eq!(d["capabilities"], json!(["tools", "files"]));
    let created = d["created_at"].as_i64().expect("created_at");
    assert!(
        d["last_seen"].as_i64().expect("last_seen") >= created,
        "{d}"
    );
    assert!(
        devices(&app, &other).await.is_empty(),
        "another user sees none"
    );
    ws.close(None).await.expect("close");
    let d = until_online(&app, &t, "laptop-1", false).await;
    assert!(
        d["last_seen"].as_i64().expect("last_seen") >= created,
        "{d}"
    );
    // Without a token: 401.
    assert_eq!(app.get("/devices").await.status(), 401);
}

#[tokio::test]
async fn delete_forgets_a_device_closes_its_socket_and_is_404_for_others() {
    let app = spawn_app().await;
    let t = token(&app).await;
    let other = token(&app).await;
    let (mut ws, _) = online(&app, &t, "laptop-1").await;
    let del = |token: &str, id: &str| {
        app.request_as(Method::DELETE, &format!("/devices/{id}"), token)
            .send()
    };
    assert_error(
        del(&other, "laptop-1").await.expect("answer"),
        404,
        "device_not_found",
    )
    .await;
    assert_eq!(
        until_online(&app, &t, "laptop-1", true).await["online"],
        true
    );
    let resp = del(&t, "laptop-1").await.expect("answer");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"ok": true})
    );
    let (_, reason) = closed(&mut ws).await.expect("a close frame");
    assert!(reason.contains("forgotten"), "{reason}");
    assert!(devices(&app, &t).await.is_empty());
    assert_error(
        del(&t, "laptop-1").await.expect("answer"),
        404,
        "device_not_found",
    )
    .await;
    assert_error(
        del(&t, "no-such-device").await.expect("answer"),
        404,
        "device_not_found",
    )
    .await;
}

/// Plays the device for `POST /chat`: answers each `tool_call` with `answer`, until
/// `done` resolves; returns the calls seen.
async fn answer_calls(ws: &mut Socket, answer: Option<Value>, count: usize) -> Vec<Value> {
    let mut calls = Vec::new();
    while calls.len() < count {
        let f = next(ws).await;
        assert_eq!(f["type"], "tool_call", "{f}");
        if let Some(result) = &answer {
            send(
                ws,
                json!({"type": "tool_result", "id": f["id"], "result": result}),
            )
            .await;
        }
        calls.push(f);
    }
    calls
}

#[tokio::test]
async fn chat_with_device_id_runs_the_tools_on_the_device() {
    let fake = fake_with(tool_script).await;
    let app = chat_app(&fake, Some(SERVER_KEY)).await;
    let t = token(&app).await;
    let (mut ws, _) = online(&app, &t, "laptop-1").await;
    let chat = post_chat(
        &app,
        &t,
        json!({"message": "run create_task", "device_id": "laptop-1"}),
    );
    let (resp, calls) = tokio::join!(chat, answer_calls(&mut ws, Some(json!({"id": "t42"})), 1));
    assert_eq!(calls[0]["name"], "create_task");
    assert_eq!(calls[0]["arguments"]["title"], "Write report");
    assert!(calls[0]["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    let response = body["response"].as_str().expect("response");
    assert!(response.starts_with("done create_task"), "{body}");
    assert!(
        response.contains("t42"),
        "the model saw the device's result: {body}"
    );
    assert_eq!(
        body["actions"],
        json!([]),
        "the device ran the write: {body}"
    );
    let mutations = body["mutations"].as_array().expect("mutations");
    assert_eq!(mutations.len(), 1, "{body}");
    assert_eq!(mutations[0]["table"], "tasks", "{body}");
    // Without device_id the answer has no `mutations`.
    let plain: Value = post_chat(&app, &t, json!({"message": "run create_task"}))
        .await
        .json()
        .await
        .expect("json");
    assert!(plain.get("mutations").is_none(), "{plain}");
    assert_eq!(
        plain["actions"].as_array().map(Vec::len),
        Some(1),
        "{plain}"
    );
}

#[tokio::test]
async fn chat_with_an_offline_or_silent_device_answers_without_hanging() {
    let fake = fake_with(tool_script).await;
    // chat_app sets the tool timeout to 1 s.
    let app = chat_app(&fake, Some(SERVER_KEY)).await;
    let t = token(&app).await;
    let chat = |device: &str| {
        post_chat(
            &app,
            &t,
            json!({"message": "run list_tasks", "device_id": device}),
        )
    };
    assert_error(chat("laptop-1").await, 404, "device_not_found").await;
    let (mut ws, _) = online(&app, &t, "laptop-1").await;
    // Silent: the tool call comes, no answer; the model gets an error at the timeout.
    let (resp, calls) = tokio::join!(chat("laptop-1"), answer_calls(&mut ws, None, 1));
    assert_eq!(calls.len(), 1);
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["response"]
            .as_str()
            .expect("response")
            .contains("did not answer"),
        "{body}"
    );
    // Offline: an error result at once.
    ws.close(None).await.expect("close");
    until_online(&app, &t, "laptop-1", false).await;
    let resp = tokio::time::timeout(BOUND, chat("laptop-1"))
        .await
        .expect("answered in time");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["response"]
            .as_str()
            .expect("response")
            .contains("offline"),
        "{body}"
    );
    // Another user's device is not found.
    let other = token(&app).await;
    let resp = post_chat(
        &app,
        &other,
        json!({"message": "run list_tasks", "device_id": "laptop-1"}),
    )
    .await;
    assert_error(resp, 404, "device_not_found").await;
}

#[tokio::test]
async fn device_sockets_per_user_are_capped_before_the_upgrade() {
    // One device per user: two sockets (a replacing one overlaps the old), not three.
    let app = spawn_app_with(|s| s.device_max_per_user = 1).await;
    let t = token(&app).await;
    let mut first = connect_device(&app, &t).await;
    let mut second = connect_device(&app, &t).await;
    let url = format!("ws://127.0.0.1:{}/api/v1/ws/device?token={t}", app.port);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 429);
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}")).expect("json");
            assert_eq!(body["code"], "too_many_sockets", "{body}");
        }
        other => panic!("a third socket was accepted: {other:?}"),
    }
    // A second device is refused at its hello: the account has its one device.
    send(&mut first, hello("laptop-1")).await;
    assert_eq!(next(&mut first).await["type"], "hello_ack");
    send(&mut second, hello("laptop-2")).await;
    let refused = next(&mut second).await;
    assert_eq!(refused["code"], "too_many_devices", "{refused}");
}

#[tokio::test]
async fn a_graceful_stop_closes_device_sockets_with_a_reason() {
    let mut app = spawn_app().await;
    let t = token(&app).await;
    let (mut ws, _) = online(&app, &t, "laptop-1").await;
    let stopping = app.begin_stop();
    let (_, reason) = closed(&mut ws).await.expect("a close frame");
    assert!(reason.contains("shutting down"), "{reason}");
    let stopped = tokio::time::timeout(BOUND, stopping)
        .await
        .expect("the server stopped in time")
        .expect("joined");
    assert!(stopped.is_ok(), "{stopped:?}");
}

#[tokio::test]
async fn a_hello_from_a_deleted_account_is_refused_and_the_socket_closed() {
    let app = spawn_app().await;
    let e = crate::helpers::email("gone");
    let t = crate::helpers::access(&app.register_ok(&e).await).to_owned();
    let mut ws = connect_device(&app, &t).await;
    app.adiuva.accounts().delete(&e).await.expect("delete");
    send(&mut ws, hello("laptop-1")).await;
    let refused = next(&mut ws).await;
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    let (code, _) = closed(&mut ws).await.expect("a close frame");
    assert_eq!(code, CloseCode::Policy);
}

/// An account deleted while its device is connected: the device rows go with it, and
/// the instance's next presence heartbeat (a third of the TTL) finds the socket's session
/// gone and closes it — a deleted account keeps no open socket.
#[tokio::test]
async fn a_connected_device_of_a_deleted_account_is_closed() {
    let app = spawn_app_with(|s| s.device_presence_ttl_secs = 3).await;
    let e = crate::helpers::email("gone");
    let t = crate::helpers::access(&app.register_ok(&e).await).to_owned();
    let (mut ws, _) = online(&app, &t, "laptop-1").await;
    app.adiuva.accounts().delete(&e).await.expect("delete");
    let (code, reason) = closed(&mut ws).await.expect("a close frame");
    assert_eq!(code, CloseCode::Normal);
    assert!(reason.contains("no longer live"), "{reason}");
}

/// Revoking the sign-in session that opened a device socket (a replayed refresh token)
/// closes the socket at the instance's next heartbeat; the socket another session of the
/// same user opened stays.
#[tokio::test]
async fn a_revoked_sessions_device_socket_is_closed() {
    use crate::helpers::{PASSWORD, access, email, json_body, refresh_token};
    let app = spawn_app_with(|s| s.device_presence_ttl_secs = 3).await;
    let e = email("revoked");
    let first = app.register_ok(&e).await;
    let (a1, r1) = (access(&first).to_owned(), refresh_token(&first).to_owned());
    let other: Value = json_body(app.login(&e, PASSWORD).await).await;
    let (mut ws, _) = online(&app, &a1, "laptop-1").await;
    let (mut kept, _) = online(&app, access(&other), "laptop-2").await;
    assert_eq!(app.refresh(&r1).await.status(), 200);
    // The replay revokes the first session.
    assert_eq!(app.refresh(&r1).await.status(), 401);
    let (code, reason) = closed(&mut ws).await.expect("a close frame");
    assert_eq!(code, CloseCode::Normal);
    assert!(reason.contains("revoked"), "{reason}");
    send(&mut kept, json!({"type": "ping"})).await;
    assert_eq!(
        next(&mut kept).await["type"],
        "pong",
        "another session's socket lives on"
    );
}

/// The device routes in the OpenAPI document: the answer's fields are all there, and the
/// 404s name `device_not_found` (also `POST /chat`'s, for its `device_id`).
#[tokio::test]
async fn the_document_describes_the_device_routes() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.expect("json");
    let schema = |name: &str| spec["components"]["schemas"][name].clone();
    let required = schema("DeviceOut")["required"].clone();
    for field in [
        "device_id",
        "name",
        "platform",
        "app_version",
        "capabilities",
        "online",
        "last_seen",
        "created_at",
    ] {
        assert!(
            required
                .as_array()
                .is_some_and(|r| r.contains(&json!(field))),
            "DeviceOut.{field} is required: {required}"
        );
    }
    let codes_404 = |path: &str, method: &str| {
        let r = spec["paths"][path][method]["responses"]["404"]["content"]["application/json; charset=utf-8"]
            ["schema"]["$ref"]
            .as_str()
            .expect("a 404 body")
            .trim_start_matches("#/components/schemas/")
            .to_owned();
        schema(&r)["properties"]["code"]["enum"].clone()
    };
    assert_eq!(
        codes_404("/devices/{device_id}", "delete"),
        json!(["device_not_found"])
    );
    assert_eq!(codes_404("/chat", "post"), json!(["device_not_found"]));
    let op = &spec["paths"]["/devices"]["get"];
    assert_eq!(op["operationId"], "list_devices");
    assert_eq!(op["tags"], json!(["Devices"]));
    assert!(schema("ChatPostIn")["properties"]["device_id"].is_object());
}
