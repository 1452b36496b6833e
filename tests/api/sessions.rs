//! Issue #9 item 11 and the refresh-reuse note: every authenticated route — REST, the
//! WebSocket upgrade and each chat on an open socket — refuses a token whose account was
//! deleted or whose session was revoked, through one check (`AuthService::authenticate`).

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::chat::{
    SERVER_KEY, chat_app, connect, fake_with, get_as, next, post_chat, send, tool_script,
};
use crate::helpers::{
    PASSWORD, TestApp, access, assert_unauthorized, email, json_body, refresh_token, spawn_app,
};

/// The WebSocket upgrade's HTTP status for `token` (101 when accepted).
async fn upgrade_status(app: &TestApp, token: &str) -> u16 {
    let url = format!("ws://127.0.0.1:{}/api/v1/chat/stream", app.port);
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("upgrade failed oddly: {e}"),
    }
}

#[tokio::test]
async fn a_deleted_account_is_refused_on_every_route_and_on_an_open_socket() {
    let fake = fake_with(tool_script).await;
    let app = chat_app(&fake, Some(SERVER_KEY)).await;
    let e = email("deleted");
    let t = app.register_ok(&e).await;
    let token = access(&t).to_owned();
    // A socket opened while the account existed.
    let mut open = connect(&app, &token).await;

    app.adiuva.accounts().delete(&e).await.expect("delete");

    let resp = post_chat(&app, &token, json!({"message": "run list_tasks"})).await;
    assert_unauthorized(resp).await;
    for path in ["/auth/me", "/storage/records", "/plans/playbook", "/backup"] {
        assert_unauthorized(get_as(&app, &token, path).await).await;
    }
    assert_eq!(
        upgrade_status(&app, &token).await,
        401,
        "WS upgrade refused"
    );

    send(
        &mut open,
        json!({"type": "chat_request", "message": "run list_tasks"}),
    )
    .await;
    let frame = next(&mut open).await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], "unauthorized", "{frame}");
    // Then the server closes the socket.
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = open.next().await {
            if let WsMessage::Text(t) = m {
                return Some(t);
            }
        }
        None
    })
    .await
    .expect("closed within 10 s");
    assert_eq!(rest, None, "no chat ran after the refusal");
    assert!(
        fake.requests().is_empty(),
        "the model was never called for a deleted account: {:?}",
        fake.requests().len()
    );
}

/// Replaying a used refresh token revokes its session: the refresh tokens and the access
/// tokens issued in it, at once; another login's session is untouched.
#[tokio::test]
async fn refresh_reuse_revokes_the_sessions_access_tokens_too() {
    let app = spawn_app().await;
    let e = email("reuse");
    let first = app.register_ok(&e).await;
    let (a1, r1) = (access(&first), refresh_token(&first));
    let second: Value = json_body(app.refresh(r1).await).await;
    let a2 = access(&second);
    let other: Value = json_body(app.login(&e, PASSWORD).await).await;
    let a_other = access(&other);
    assert_eq!(app.me(a2).await.status(), 200);

    assert_unauthorized(app.refresh(r1).await).await;

    for (name, access) in [("first", a1), ("rotated", a2)] {
        let resp = app.me(access).await;
        assert_eq!(
            resp.status(),
            401,
            "{name} access token of the revoked session"
        );
        assert_unauthorized(resp).await;
    }
    assert_eq!(upgrade_status(&app, a2).await, 401);
    assert_eq!(
        app.me(a_other).await.status(),
        200,
        "another session lives on"
    );
}
