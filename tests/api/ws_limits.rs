//! The chat WebSocket's limits (issue #9, item 4): a client cannot make a socket hold
//! unbounded memory, and a user cannot hold unbounded sockets.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use crate::chat::{
    SERVER_KEY, chat_app, chat_socket, connect, fake_with, next, token, tool_script,
};
use crate::helpers::{TestApp, log_lines, spawn_app_with};

const BOUND: Duration = Duration::from_secs(10);

/// The user id behind `token`.
async fn user_id(app: &TestApp, token: &str) -> String {
    let me: Value = app.me(token).await.json().await.expect("me");
    me["id"].as_str().expect("id").to_owned()
}

/// Whether the server logged that `user`'s socket closed.
fn socket_closed_logged(user: &str) -> bool {
    log_lines()
        .iter()
        .any(|l| l["fields"]["message"] == "chat socket closed" && l.to_string().contains(user))
}

/// Reads until the server closes; returns its close frame's code, if it sent one.
async fn close_code(ws: &mut crate::chat::Socket) -> Option<CloseCode> {
    tokio::time::timeout(BOUND, async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(WsMessage::Close(frame)) => return frame.map(|f| f.code),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the server closed the socket within 10 s")
}

/// A client that sends frames and never reads what comes back: the error frames fill
/// the server's bounded queue, the server drops the socket (the client's sends start
/// failing) and its session ends. Before, the queue grew for as long as frames came.
#[tokio::test]
async fn a_client_that_never_reads_is_disconnected() {
    let fake = fake_with(tool_script).await;
    let app = chat_app(&fake, Some(SERVER_KEY)).await;
    let t = token(&app).await;
    let user = user_id(&app, &t).await;
    let mut ws = connect(&app, &t).await;
    // Each gets an error frame of ~400 bytes (its unknown id, cut to 300 characters).
    let frame = json!({"type": "tool_result", "id": "x".repeat(2000)}).to_string();
    let mut send_failed = false;
    // 200 MB of error frames: far beyond every socket buffer on the way.
    for _ in 0..500_000 {
        let sent =
            tokio::time::timeout(BOUND, ws.send(WsMessage::Text(frame.clone().into()))).await;
        if !matches!(sent, Ok(Ok(()))) {
            send_failed = true;
            break;
        }
    }
    assert!(
        send_failed,
        "the server kept the non-reading client connected"
    );
    let mut ended = false;
    for _ in 0..100 {
        ended = socket_closed_logged(&user);
        if ended {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended, "the server's session for the socket ended");
    assert_eq!(app.get("/health").await.status(), 200);
}

/// A message over `chat_max_message_bytes` closes the socket with 1009, whether it comes
/// as one frame or as unfinished fragments (which the server would otherwise buffer).
#[tokio::test]
async fn oversized_messages_and_fragments_close_with_1009() {
    let fake = fake_with(tool_script).await;
    let url = fake.url();
    let app = spawn_app_with(move |s| {
        s.openai_base_url = Some(url);
        s.openai_api_key = Some(adiuva_core::Secret::new(SERVER_KEY.to_owned()));
        s.chat_max_message_bytes = 64 * 1024;
    })
    .await;
    let t = token(&app).await;

    let mut ws = connect(&app, &t).await;
    let big = json!({"type": "chat_request", "message": "m".repeat(100 * 1024)}).to_string();
    ws.send(WsMessage::Text(big.into())).await.expect("send");
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));

    // Fragments of 40 KiB each, never finished: the second passes the cap.
    let mut ws = connect(&app, &t).await;
    let piece = vec![b'a'; 40 * 1024];
    let first = Frame::message(piece.clone(), OpCode::Data(Data::Text), false);
    ws.send(WsMessage::Frame(first)).await.expect("send");
    let cont = FrameHeader {
        is_final: false,
        opcode: OpCode::Data(Data::Continue),
        ..FrameHeader::default()
    };
    ws.send(WsMessage::Frame(Frame::from_payload(cont, piece.into())))
        .await
        .expect("send");
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
}

/// A malformed frame carrying a 1 MB id gets an error frame of bounded size (the id is
/// not echoed whole), and the socket stays usable.
#[tokio::test]
async fn error_frames_do_not_echo_huge_client_input() {
    let fake = fake_with(tool_script).await;
    let (_app, mut ws) = chat_socket(&fake).await;
    let id = "i".repeat(1_000_000);
    for frame in [
        json!({"type": "tool_result", "id": id}),
        json!({"type": id}),
        json!({"type": "chat_request", "message": 1, "context": id}),
    ] {
        ws.send(WsMessage::Text(frame.to_string().into()))
            .await
            .expect("send");
        let reply = next(&mut ws).await;
        assert_eq!(reply["type"], "error", "{reply}");
        let size = reply.to_string().len();
        assert!(size <= 1024, "an error frame of {size} bytes");
    }
}

/// With `chat_max_sockets_per_user = 2`, a third socket for the same user is refused
/// with 429 `too_many_sockets` before the upgrade; another user is not affected, and
/// once one socket closes the user may open another.
#[tokio::test]
async fn sockets_per_user_are_capped() {
    let fake = fake_with(tool_script).await;
    let url = fake.url();
    let app = spawn_app_with(move |s| {
        s.openai_base_url = Some(url);
        s.openai_api_key = Some(adiuva_core::Secret::new(SERVER_KEY.to_owned()));
        s.chat_max_sockets_per_user = 2;
    })
    .await;
    let t = token(&app).await;
    let first = connect(&app, &t).await;
    let _second = connect(&app, &t).await;
    let url = format!("ws://127.0.0.1:{}/api/v1/chat/stream?token={t}", app.port);
    let refused =
        tokio_tungstenite::connect_async(url.clone().into_client_request().expect("req")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 429);
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).expect("JSON");
            assert_eq!(body["code"], "too_many_sockets");
        }
        other => panic!("a third socket was not refused: {other:?}"),
    }
    let other = token(&app).await;
    let _theirs = connect(&app, &other).await;
    drop(first);
    let mut reopened = false;
    for _ in 0..100 {
        if tokio_tungstenite::connect_async(url.clone()).await.is_ok() {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened, "a slot is freed when a socket closes");
}

/// A socket that never answers the pings (its client does not read, so it never pongs)
/// is closed after `chat_pong_timeout_secs` (1 s here, pings every 1 s).
#[tokio::test]
async fn a_socket_that_never_pongs_is_closed() {
    let fake = fake_with(tool_script).await;
    let url = fake.url();
    let app = spawn_app_with(move |s| {
        s.openai_base_url = Some(url);
        s.openai_api_key = Some(adiuva_core::Secret::new(SERVER_KEY.to_owned()));
        s.chat_ping_interval_secs = 1;
        s.chat_pong_timeout_secs = 1;
    })
    .await;
    let t = token(&app).await;
    let user = user_id(&app, &t).await;
    let mut ws = connect(&app, &t).await;
    let mut ended = false;
    for _ in 0..100 {
        ended = socket_closed_logged(&user);
        if ended {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended, "the server ended the silent socket's session");
    // What the client finds when it finally reads: pings, then the close (1001).
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Away));
}
