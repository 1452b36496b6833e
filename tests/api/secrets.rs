//! Issue #9 items 7 and 10: secrets never come back in a response or a log line — a
//! BYOK or server key with stray whitespace echoed by the provider, and credentials in
//! the database URL.

use std::time::Duration;

use adiuva_adapters::llm::fake::{FakeOpenAi, Reply};
use serde_json::{Value, json};

use crate::chat::{chat_app, connect, fake_with, next, post_chat, send, token};
use crate::helpers::{
    TestApp, assert_validation_error, log_lines, log_text, spawn_app_on_postgres_with,
};

/// A provider that answers every call with an error quoting `key`, as OpenAI's
/// "Incorrect API key provided: sk-…" does.
async fn echoing_provider(key: &'static str) -> FakeOpenAi {
    fake_with(move |_| {
        Some(Reply::error(
            400,
            &format!("Incorrect API key provided: {key}. Find your key at …"),
        ))
    })
    .await
}

/// Asserts `key` (and its hex form, as a WebSocket library prints frame payloads) is
/// nowhere in `text`.
fn assert_absent(text: &str, key: &str, what: &str) {
    assert!(!text.contains(key), "{what} contains the key: {text}");
    assert!(
        !text.contains(&hex::encode(key)),
        "{what} contains the key in hex"
    );
}

/// Sends `request` on a fresh socket as `token` and returns the answer, asserting it
/// is an error frame.
async fn error_frame(app: &TestApp, token: &str, request: Value) -> Value {
    let mut ws = connect(app, token).await;
    send(&mut ws, request).await;
    let frame = next(&mut ws).await;
    assert_eq!(frame["type"], "error", "{frame}");
    frame
}

#[tokio::test]
async fn a_padded_byok_key_echoed_by_the_provider_never_reaches_a_response_or_log() {
    const KEY: &str = "sk-byok-padded-never-echoed-0000000007";
    let fake = echoing_provider(KEY).await;
    let app = chat_app(&fake, None).await;
    let t = token(&app).await;
    for padded in [format!("{KEY} "), format!(" {KEY}"), format!("\t{KEY}\n")] {
        let resp = post_chat(&app, &t, json!({"message": "hello", "api_key": padded})).await;
        assert!(!resp.status().is_success(), "the provider refused");
        let body = resp.text().await.expect("body");
        assert_absent(&body, KEY, "the REST response");

        let request = json!({"type": "user_request", "message": "hi", "api_key": padded});
        let frame = error_frame(&app, &t, request).await;
        assert_absent(&frame.to_string(), KEY, "the WebSocket error frame");
    }
    // What was sent is the trimmed key (so the scrubbed value is the sent value).
    let sent = fake.requests();
    assert!(
        !sent.is_empty() && sent.iter().all(|r| r.bearer() == Some(KEY)),
        "every call carried the trimmed key"
    );
    assert_absent(&log_text(), KEY, "the log");
}

#[tokio::test]
async fn a_server_key_with_a_trailing_newline_is_scrubbed_as_sent() {
    const KEY: &str = "sk-server-key-from-a-file-000000000008";
    let fake = echoing_provider(KEY).await;
    let app = chat_app(&fake, Some(&format!("{KEY}\n"))).await;
    let t = token(&app).await;
    let resp = post_chat(&app, &t, json!({"message": "hello"})).await;
    assert!(!resp.status().is_success());
    assert_absent(&resp.text().await.expect("body"), KEY, "the response");
    assert!(
        fake.requests().iter().all(|r| r.bearer() == Some(KEY)),
        "sent trimmed"
    );
    assert_absent(&log_text(), KEY, "the log");
}

/// A key no provider could issue (control characters, NUL, inner spaces, oversize) is
/// refused at the edge with 422 — and the refusal does not quote it.
#[tokio::test]
async fn malformed_byok_keys_are_422_and_not_echoed() {
    let fake = fake_with(|_| Some(Reply::text("ok"))).await;
    let app = chat_app(&fake, None).await;
    let t = token(&app).await;
    for bad in [
        "sk-has\u{0}nul".to_owned(),
        "sk-has\u{1b}escape".to_owned(),
        "sk-has inner-space".to_owned(),
        format!("sk-{}", "x".repeat(600)),
    ] {
        let resp = post_chat(&app, &t, json!({"message": "hello", "api_key": bad})).await;
        let body = assert_validation_error(resp).await;
        assert!(!body.to_string().contains("sk-has"), "{body}");

        let request = json!({"type": "chat_request", "message": "hi", "api_key": bad});
        let frame = error_frame(&app, &t, request).await;
        assert!(!frame.to_string().contains("sk-has"), "{frame}");
    }
    assert!(fake.requests().is_empty(), "no model call with a bad key");
}

/// Item 10: credentials in the database URL — user info and `?password=` — are not in
/// the "adiuva listening" line (nor any other).
#[tokio::test]
async fn database_url_credentials_never_reach_the_log() {
    const USERINFO_SECRET: &str = "userinfo-pw-never-logged-0010";
    const QUERY_SECRET: &str = "query-pw-never-logged-0010";
    // A parameter sqlx does not know: its URL parser warns about it, value included.
    const SSL_SECRET: &str = "sslpassword-never-logged-0010";
    let mut db_name = String::new();
    let Some(app) = spawn_app_on_postgres_with(|s| {
        let url = s.database_url.as_ref().expect("a PostgreSQL URL").0.clone();
        db_name = url.rsplit('/').next().expect("db").to_owned();
        // Trust authentication on the test server ignores both passwords.
        let url = url.replacen("@", &format!(":{USERINFO_SECRET}@"), 1);
        s.database_url = Some(adiuva_server::settings::RedactedUrl(format!(
            "{url}?password={QUERY_SECRET}&sslpassword={SSL_SECRET}&application_name=adiuva-test"
        )));
    })
    .await
    else {
        return;
    };
    assert_eq!(app.get("/health").await.status(), 200);
    // The line is written when the server task starts; wait for it (not a timing assert).
    let mut listening = None;
    for _ in 0..100 {
        listening = log_lines().into_iter().find(|l: &Value| {
            l["fields"]["message"] == "adiuva listening"
                && l["fields"]["database"]
                    .as_str()
                    .is_some_and(|d| d.contains(&db_name))
        });
        if listening.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = listening.expect("this server's listening line").to_string();
    assert!(line.contains("password=***"), "{line}");
    for secret in [USERINFO_SECRET, QUERY_SECRET, SSL_SECRET] {
        assert!(!line.contains(secret), "{line}");
        assert!(!log_text().contains(secret), "a log line holds {secret}");
    }
}
