//! Health, request ids and logs, CORS, docs, graceful shutdown.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    PASSWORD, TestApp, email, header_text, json_body, log_lines, log_text, refresh_token, send,
    spawn_app, spawn_app_with,
};

/// `GET path` sent with the `header: value` a test is about.
async fn get_with(app: &TestApp, path: &str, header: &str, value: &str) -> reqwest::Response {
    send(app.request(Method::GET, path).header(header, value)).await
}

#[tokio::test]
async fn health_reports_status_version_and_database() {
    let app = spawn_app().await;
    let resp = app.get("/health").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["database"], "ok");
}

#[tokio::test]
async fn health_is_503_when_the_database_is_gone() {
    let app = spawn_app().await;
    // Close the pool underneath the running server.
    app.database.close().await;
    let resp = app.get("/health").await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["database"], "unavailable");
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated_and_on_every_log_line() {
    let app = spawn_app().await;
    let rid = format!("test-{}", uuid::Uuid::new_v4().simple());
    let body = serde_json::json!({"email": email("rid"), "password": PASSWORD});
    let register = app
        .request(Method::POST, "/auth/register")
        .header("x-request-id", &rid);
    let resp = send(register.json(&body)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], rid.as_str(), "echoed");

    // Absent or unacceptable ids are replaced with a generated UUID.
    for sent in [
        None,
        Some("has spaces in it".to_owned()),
        Some("x".repeat(200)),
    ] {
        let mut req = app.request(Method::GET, "/health");
        if let Some(s) = sent {
            req = req.header("x-request-id", s);
        }
        let resp = send(req).await;
        let got = header_text(&resp, "x-request-id");
        assert!(uuid::Uuid::parse_str(&got).is_ok(), "generated: {got}");
    }
    // Errors carry it too.
    let resp = get_with(&app, "/missing", "x-request-id", "err-1").await;
    assert_eq!(resp.headers()["x-request-id"], "err-1");

    // The request's log lines (the registration event and the access line) all carry the id.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lines: Vec<Value> = log_lines()
        .into_iter()
        .filter(|l| l.to_string().contains(&rid))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert!(
        messages.contains(&"user registered"),
        "domain event logged in the request span: {messages:?}"
    );
    assert!(
        messages.contains(&"request finished"),
        "access line: {messages:?}"
    );
    for l in &lines {
        let spans = l["spans"].as_array().expect("span list");
        assert!(spans.iter().any(|s| s["request_id"] == rid.as_str()), "{l}");
    }
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let app = spawn_app().await;
    let e = email("secret");
    let pw = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let registration = serde_json::json!({"email": e, "password": pw});
    let t: Value = json_body(app.post_json("/auth/register", &registration).await).await;
    let _ = app.login(&e, "wrong-password-here").await;
    let refreshed: Value = json_body(app.refresh(refresh_token(&t)).await).await;
    let _ = app.refresh(refresh_token(&t)).await; // reuse: logged as a warning
    tokio::time::sleep(Duration::from_millis(50)).await;
    let logs = log_text();
    for secret in [
        pw.as_str(),
        crate::helpers::access(&t),
        refresh_token(&t),
        refresh_token(&refreshed),
        crate::helpers::JWT_SECRET,
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    assert!(
        logs.contains("refresh token reuse detected"),
        "reuse is logged (without the token)"
    );
}

#[tokio::test]
async fn cors_allows_the_app_localhost_and_configured_origins_only() {
    let app = spawn_app_with(|s| s.cors_origins = vec!["https://web.adiuva.example".into()]).await;
    let preflight = |origin: &str| {
        app.request(Method::OPTIONS, "/auth/login")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, authorization",
            )
            .send()
    };
    for allowed in [
        "app://adiuva",
        "http://localhost:5173",
        "http://localhost:3000",
        "http://127.0.0.1:8081",
        "https://web.adiuva.example",
    ] {
        let resp = preflight(allowed).await.expect("req");
        assert_eq!(resp.status(), 200, "{allowed}");
        assert_eq!(resp.headers()["access-control-allow-origin"], allowed);
        let allow_headers = header_text(&resp, "access-control-allow-headers");
        assert!(allow_headers.contains("authorization"), "{allow_headers}");
    }
    for refused in [
        "http://evil.example",
        "http://localhost.evil.example",
        "https://localhost:3000",
        "app://",
    ] {
        let resp = preflight(refused).await.expect("req");
        assert!(
            resp.headers().get("access-control-allow-origin").is_none(),
            "{refused}"
        );
        crate::helpers::assert_error(resp, 403, "cors_rejected").await;
    }
    // Simple requests get the header and expose the request id.
    let resp = get_with(&app, "/health", "origin", "app://adiuva").await;
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "app://adiuva"
    );
    let exposed = header_text(&resp, "access-control-expose-headers").to_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    // Even error responses carry CORS headers, so the app can read the error.
    let resp = get_with(&app, "/nope", "origin", "http://localhost:5173").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
}

#[tokio::test]
async fn docs_are_served() {
    let app = spawn_app().await;
    let resp = send(app.client.get(format!("{}/docs", app.address))).await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.expect("html");
    assert!(html.contains("swagger"), "interactive docs page");
    assert!(html.contains("/auth/login"), "the page embeds our document");
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let mut app = spawn_app().await;
    let port = app.port;
    let body = serde_json::json!({"email": email("drain"), "password": PASSWORD}).to_string();
    // Start a request and stop half-way through its body.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(&body.as_bytes()[..10])
        .await
        .expect("part");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopping = app.begin_stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "the server waits for the in-flight request"
    );
    // New connections are no longer accepted.
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "listener closed once shutdown began");

    // Finish the request: it completes normally.
    stream
        .write_all(&body.as_bytes()[10..])
        .await
        .expect("rest");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    stopping.await.expect("task").expect("clean exit");
}
