//! Every failure path answers `{"detail", "code"}` with the right status.

use reqwest::{Method, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    PASSWORD, TestApp, assert_error, assert_validation_error, email, send, spawn_app,
    spawn_app_with,
};

/// POSTs `body` to `path` labelled `content_type`, bytes as given.
async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> Response {
    let req = app
        .request(Method::POST, path)
        .header("content-type", content_type);
    send(req.body(body)).await
}

#[tokio::test]
async fn unknown_routes_are_404() {
    let app = spawn_app().await;
    for path in ["/api/v1/nope", "/api/v1/auth", "/nope", "/api/v2/health"] {
        let resp = send(app.client.get(format!("{}{path}", app.address))).await;
        assert_error(resp, 404, "not_found").await;
    }
}

#[tokio::test]
async fn wrong_methods_are_405() {
    let app = spawn_app().await;
    for (method, path) in [
        ("DELETE", "/health"),
        ("GET", "/auth/login"),
        ("PUT", "/auth/me"),
    ] {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let resp = send(app.request(method, path)).await;
        assert_error(resp, 405, "method_not_allowed").await;
    }
}

#[tokio::test]
async fn malformed_json_and_wrong_shapes_are_422() {
    let app = spawn_app().await;
    let send_json = |body: &'static str| post_raw(&app, "/auth/register", "application/json", body);
    for broken in [
        "{",
        "{\"email\": ",
        "not json",
        "{\"email\": \"a@b.com\", \"password\": \"x\",}",
    ] {
        assert_error(send_json(broken).await, 422, "malformed_json").await;
    }
    for wrong in [
        "{}",
        "[]",
        "{\"email\": 5, \"password\": \"0123456789\"}",
        "{\"email\": \"a@example.com\"}",
        "null",
    ] {
        assert_validation_error(send_json(wrong).await).await;
    }
    let empty = app
        .request(Method::POST, "/auth/login")
        .header("content-type", "application/json");
    assert_validation_error(send(empty).await).await;
}

#[tokio::test]
async fn non_json_bodies_are_415() {
    let app = spawn_app().await;
    let body = json!({"email": email("ct"), "password": PASSWORD}).to_string();
    let resp = post_raw(&app, "/auth/register", "text/plain", body).await;
    assert_error(resp, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_declared_or_chunked() {
    let app = spawn_app_with(|s| s.body_limit_bytes = 1024).await;
    // Declared length over the limit.
    let big = json!({"email": email("big"), "password": "x".repeat(2000)}).to_string();
    let resp = post_raw(&app, "/auth/register", "application/json", big.clone()).await;
    assert_error(resp, 413, "payload_too_large").await;

    // Chunked: no Content-Length, so the limit must be enforced while reading.
    let raw = raw_request(
        app.port,
        &format!(
            "POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
            big.len()
        ),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    let body: Value =
        serde_json::from_str(raw.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    assert_eq!(body["code"], "payload_too_large");

    // Under the limit, the same route works.
    let e = email("small");
    let ok = app
        .post_json("/auth/register", &json!({"email": e, "password": PASSWORD}))
        .await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn the_default_limit_is_ten_mebibytes() {
    let app = spawn_app().await;
    let just_over = vec![b' '; 10 * 1024 * 1024 + 1];
    let resp = post_raw(&app, "/auth/login", "application/json", just_over).await;
    assert_error(resp, 413, "payload_too_large").await;
    // Exactly at the limit is read (and is then merely bad JSON).
    let mut at = vec![b' '; 10 * 1024 * 1024 - 2];
    at.extend_from_slice(b"{}");
    let resp = post_raw(&app, "/auth/login", "application/json", at).await;
    assert_validation_error(resp).await;
}

/// Sends raw bytes and reads until the server closes.
pub async fn raw_request(port: u16, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}
