//! Backups over HTTP (plan 8e): streamed uploads, integrity, tiers, retention, 304.

use std::time::Duration;

use adiuva_core::domain::Tier;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use crate::helpers::{
    TestApp, assert_error, assert_pro_required, assert_validation_error, detail, header_text, send,
    spawn_app, spawn_app_with,
};
use crate::records::{orphans, sha, user_on};

/// `PUT /backup` as `token` with the three `X-Backup-*` headers; the caller adds the
/// body (bytes or a stream) and sends it.
pub fn upload(
    app: &TestApp,
    token: &str,
    version: &str,
    timestamp: &str,
    checksum: &str,
) -> RequestBuilder {
    app.request_as(Method::PUT, "/backup", token)
        .header("x-backup-version", version)
        .header("x-backup-timestamp", timestamp)
        .header("x-backup-checksum", checksum)
}

/// A version-3 upload of `body` taken at `timestamp`.
async fn put_backup(
    app: &TestApp,
    token: &str,
    timestamp: i64,
    body: Vec<u8>,
    checksum: &str,
) -> Response {
    send(upload(app, token, "3", &timestamp.to_string(), checksum).body(body)).await
}

/// `GET /backup` as `token`, optionally with `If-Modified-Since`.
async fn get_backup(app: &TestApp, token: &str, if_modified_since: Option<&str>) -> Response {
    let mut req = app.request_as(Method::GET, "/backup", token);
    if let Some(date) = if_modified_since {
        req = req.header("if-modified-since", date);
    }
    send(req).await
}

/// `GET /backup/history` as `token`: the kept backups, newest first.
pub async fn history(app: &TestApp, token: &str) -> Vec<Value> {
    app.get_json_as("/backup/history", token).await
}

/// `DELETE /backup/{id}` as `token`.
async fn delete_backup(app: &TestApp, token: &str, id: &str) -> Response {
    send(app.request_as(Method::DELETE, &format!("/backup/{id}"), token)).await
}

pub async fn backup_flow(app: &TestApp) {
    let token = user_on(app, Tier::Pro).await;
    assert_error(get_backup(app, &token, None).await, 404, "not_found").await;
    let first = b"backup one".to_vec();
    let resp = put_backup(app, &token, 1_700_000_000_000, first.clone(), &sha(&first)).await;
    assert_eq!(resp.status(), 200);
    let second = vec![42u8; 3 * 1024 * 1024 + 7];
    assert_eq!(
        put_backup(
            app,
            &token,
            1_700_000_100_000,
            second.clone(),
            &sha(&second)
        )
        .await
        .status(),
        200
    );

    let latest = get_backup(app, &token, None).await;
    assert_eq!(latest.status(), 200);
    assert_eq!(latest.headers()["x-backup-timestamp"], "1700000100000");
    assert_eq!(latest.headers()["x-backup-version"], "3");
    assert_eq!(latest.headers()["x-backup-checksum"], sha(&second).as_str());
    let last_modified = header_text(&latest, "last-modified");
    assert_eq!(latest.bytes().await.expect("body").len(), second.len());

    // If-Modified-Since: the latest backup's own date → 304; an earlier date → 200.
    let not_modified = get_backup(app, &token, Some(&last_modified)).await;
    assert_eq!(not_modified.status(), 304);
    let earlier = "Tue, 14 Nov 2023 22:13:20 GMT"; // 1_700_000_000 s: before the latest
    let modified = get_backup(app, &token, Some(earlier)).await;
    assert_eq!(modified.status(), 200);

    let h = history(app, &token).await;
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["timestamp"], 1_700_000_100_000i64);
    assert_eq!(h[1]["checksum"], sha(&first).as_str());
    for field in [
        "id",
        "version",
        "timestamp",
        "checksum",
        "chunk_count",
        "size_bytes",
        "created_at",
    ] {
        assert!(h[0].get(field).is_some(), "{field} in {}", h[0]);
    }
    // Same timestamp again → 409, the stored one is untouched.
    assert_error(
        put_backup(app, &token, 1_700_000_000_000, b"x".to_vec(), &sha(b"x")).await,
        409,
        "conflict",
    )
    .await;

    let id = h[0]["id"].as_str().expect("id");
    assert_eq!(delete_backup(app, &token, id).await.status(), 200);
    let latest = get_backup(app, &token, None).await;
    assert_eq!(
        latest.bytes().await.expect("body").as_ref(),
        first.as_slice(),
        "the older one is now the latest"
    );
    assert_error(delete_backup(app, &token, id).await, 404, "not_found").await;
}

#[tokio::test]
async fn upload_download_history_delete() {
    let app = spawn_app().await;
    backup_flow(&app).await;
}

#[tokio::test]
async fn a_wrong_checksum_keeps_nothing() {
    let app = spawn_app().await;
    let token = user_on(&app, Tier::Pro).await;
    let body = vec![7u8; 2 * 1024 * 1024];
    assert_error(
        put_backup(&app, &token, 5, body, &sha(b"something else")).await,
        400,
        "checksum_mismatch",
    )
    .await;
    assert!(history(&app, &token).await.is_empty(), "no row");
    assert!(orphans(&app).await.is_empty(), "no blob");
}

#[tokio::test]
async fn free_tier_is_refused_and_headers_are_checked() {
    let app = spawn_app().await;
    let free = user_on(&app, Tier::Free).await;
    assert_pro_required(put_backup(&app, &free, 1, b"x".to_vec(), &sha(b"x")).await).await;
    let pro = user_on(&app, Tier::Pro).await;
    let missing = send(app.request_as(Method::PUT, "/backup", &pro).body("x")).await;
    assert_validation_error(missing).await;
    assert_validation_error(put_backup(&app, &pro, 1, b"x".to_vec(), "not-hex").await).await;
    let bad_ts = upload(&app, &pro, "1", "yesterday", &sha(b"x")).body("x");
    assert_validation_error(send(bad_ts).await).await;
}

#[tokio::test]
async fn retention_keeps_the_newest() {
    let app = spawn_app_with(|s| s.backup_retention = 2).await;
    let token = user_on(&app, Tier::Power).await;
    for ts in [100, 300, 200, 400] {
        let body = format!("backup {ts}").into_bytes();
        assert_eq!(
            put_backup(&app, &token, ts, body.clone(), &sha(&body))
                .await
                .status(),
            200
        );
    }
    let kept: Vec<i64> = history(&app, &token)
        .await
        .iter()
        .map(|b| b["timestamp"].as_i64().expect("ts"))
        .collect();
    assert_eq!(kept, vec![400, 300]);
    assert!(orphans(&app).await.is_empty(), "old blobs deleted too");
}

#[tokio::test]
async fn a_backup_larger_than_any_buffer_streams_through() {
    let app = spawn_app().await;
    let token = user_on(&app, Tier::Team).await;
    // 40 MiB sent as a chunked stream (no Content-Length), 1 MiB at a time.
    let chunk = vec![0xA5u8; 1024 * 1024];
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    for _ in 0..40 {
        sha2::Digest::update(&mut hasher, &chunk);
    }
    let checksum = hex::encode(sha2::Digest::finalize(hasher));
    let stream =
        futures::stream::iter((0..40).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let streamed =
        upload(&app, &token, "1", "1", &checksum).body(reqwest::Body::wrap_stream(stream));
    assert_eq!(send(streamed).await.status(), 200);
    let h = history(&app, &token).await;
    assert_eq!(h[0]["size_bytes"], 40 * 1024 * 1024);
    let got = get_backup(&app, &token, None).await;
    assert_eq!(got.headers()["x-backup-checksum"], checksum.as_str());
    let body = got.bytes().await.expect("body");
    assert_eq!(sha(&body), checksum);
}

#[tokio::test]
async fn an_upload_cut_off_mid_body_leaves_nothing() {
    let app = spawn_app().await;
    let token = user_on(&app, Tier::Pro).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let head = format!(
        "PUT /api/v1/backup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX-Backup-Version: 1\r\nX-Backup-Timestamp: 77\r\nX-Backup-Checksum: {}\r\nContent-Length: 10485760\r\n\r\n",
        sha(b"whatever")
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(&vec![1u8; 256 * 1024])
        .await
        .expect("part");
    stream.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream); // the client goes away mid-body
    // Give the server a moment to notice and clean up.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let left = orphans(&app).await;
        if left.is_empty() && history(&app, &token).await.is_empty() {
            // And it stays that way: no partial blob appears later.
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(orphans(&app).await.is_empty());
            assert!(history(&app, &token).await.is_empty());
            return;
        }
    }
    panic!("a cut-off upload left a row or a blob behind");
}

#[tokio::test]
async fn another_users_backup_cannot_be_deleted() {
    let app = spawn_app().await;
    let alice = user_on(&app, Tier::Pro).await;
    let bob = user_on(&app, Tier::Pro).await;
    assert_eq!(
        put_backup(&app, &alice, 9, b"alice".to_vec(), &sha(b"alice"))
            .await
            .status(),
        200
    );
    let id = history(&app, &alice).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_error(delete_backup(&app, &bob, &id).await, 404, "not_found").await;
    assert_error(get_backup(&app, &bob, None).await, 404, "not_found").await;
    assert!(history(&app, &bob).await.is_empty());
    assert_eq!(history(&app, &alice).await.len(), 1);
}

#[tokio::test]
async fn the_backup_quota_counts_all_kept_backups() {
    // pro: 5 "GB" of 1000 bytes = 5000 bytes of backups.
    let app = spawn_app_with(|s| s.quota_gb_bytes = 1000).await;
    let token = user_on(&app, Tier::Pro).await;
    let three_k = vec![1u8; 3000];
    assert_eq!(
        put_backup(&app, &token, 1, three_k.clone(), &sha(&three_k))
            .await
            .status(),
        200
    );
    // Declared too large: refused before the body is read.
    assert_error(
        put_backup(&app, &token, 2, three_k.clone(), &sha(&three_k)).await,
        403,
        "quota_exceeded",
    )
    .await;
    // Streamed (no Content-Length) and too large: refused while streaming, nothing kept.
    let chunks = futures::stream::iter((0..3).map(|_| Ok::<_, std::io::Error>(vec![2u8; 1000])));
    let streamed =
        upload(&app, &token, "1", "3", &sha(&[2u8; 3000])).body(reqwest::Body::wrap_stream(chunks));
    assert_error(send(streamed).await, 403, "quota_exceeded").await;
    assert_eq!(history(&app, &token).await.len(), 1);
    assert!(orphans(&app).await.is_empty());
    // Concurrent uploads that each fit but not together: the quota still holds.
    let one_k = vec![3u8; 1000];
    let one_k_sum = sha(&one_k);
    let results = futures::future::join_all(
        (10..14).map(|ts| put_backup(&app, &token, ts, one_k.clone(), &one_k_sum)),
    )
    .await;
    let ok = results.iter().filter(|r| r.status() == 200).count();
    assert_eq!(
        ok,
        2,
        "{:?}",
        results.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
    let total: i64 = history(&app, &token)
        .await
        .iter()
        .map(|b| b["size_bytes"].as_i64().expect("size"))
        .sum();
    assert_eq!(total, 5000);
}

/// A backup upload driven by hand over TCP, so a test can stop it half-way.
struct RawUpload {
    stream: tokio::net::TcpStream,
    rest: Vec<u8>,
}

impl RawUpload {
    /// Sends the head and the first half of `body`.
    async fn start(app: &TestApp, token: &str, timestamp: i64, body: &[u8]) -> Self {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .expect("connect");
        let head = format!(
            "PUT /api/v1/backup HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nX-Backup-Version: 1\r\nX-Backup-Timestamp: {timestamp}\r\nX-Backup-Checksum: {}\r\nContent-Length: {}\r\n\r\n",
            sha(body),
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        let half = body.len() / 2;
        stream.write_all(&body[..half]).await.expect("first half");
        stream.flush().await.expect("flush");
        Self {
            stream,
            rest: body[half..].to_vec(),
        }
    }

    /// Sends the rest; returns the status and the JSON body of the answer.
    async fn finish(mut self) -> (u16, Value) {
        use tokio::io::AsyncReadExt as _;
        self.stream.write_all(&self.rest).await.expect("rest");
        self.stream.flush().await.expect("flush");
        let mut answer = Vec::new();
        self.stream.read_to_end(&mut answer).await.expect("answer");
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("an HTTP answer: {text:?}"));
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

/// Waits until the server is streaming an upload to the blob store (its staging file
/// exists), so the upload has passed every check made before the body.
async fn until_an_upload_is_streaming(app: &TestApp) {
    use adiuva_core::ports::BlobStore as _;
    for _ in 0..400 {
        if !app
            .blobs
            .unfinished_uploads()
            .await
            .expect("unfinished")
            .is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the half-sent upload never started streaming");
}

#[tokio::test]
async fn same_timestamp_uploads_one_wins_and_what_is_served_matches() {
    // pro: 5 "GB" of 100 kB = 500 kB of backups.
    let app = spawn_app_with(|s| s.quota_gb_bytes = 100_000).await;
    let token = user_on(&app, Tier::Pro).await;
    let mut kept = 0i64;
    for round in 0..6i64 {
        let timestamp = 1_700_000_000_000 + round;
        // The loser's bytes are larger, so a mix-up shows in every number.
        let loser = vec![0xAA ^ round as u8; 60_000];
        let winner = vec![0x55 ^ round as u8; 40_000];
        let half_sent = RawUpload::start(&app, &token, timestamp, &loser).await;
        until_an_upload_is_streaming(&app).await;
        let resp = put_backup(&app, &token, timestamp, winner.clone(), &sha(&winner)).await;
        assert_eq!(
            resp.status(),
            200,
            "round {round}: the complete upload wins"
        );
        let (status, body) = half_sent.finish().await;
        assert_eq!(status, 409, "round {round}: the other one loses: {body}");
        assert_eq!(body["code"], "conflict", "{body}");
        kept += winner.len() as i64;

        let got = get_backup(&app, &token, None).await;
        assert_eq!(got.status(), 200);
        let checksum = header_text(&got, "x-backup-checksum");
        let bytes = got.bytes().await.expect("body");
        assert_eq!(sha(&bytes), checksum, "round {round}: served bytes match");
        assert_eq!(bytes.as_ref(), winner.as_slice());

        let h = history(&app, &token).await;
        assert_eq!(h.len() as i64, round + 1);
        assert_eq!(h[0]["timestamp"], timestamp);
        assert_eq!(h[0]["size_bytes"], winner.len());
        assert_eq!(h[0]["checksum"], sha(&winner).as_str());
        // The blob store holds exactly what the rows describe: no more, no other.
        let files = crate::records::stored_files(&app);
        let on_disk: u64 = files.iter().map(|(_, n)| n).sum();
        let described: i64 = h
            .iter()
            .map(|b| b["size_bytes"].as_i64().expect("size"))
            .sum();
        assert_eq!(described, kept, "history sizes are the kept bytes");
        assert_eq!(
            files.len(),
            h.len(),
            "round {round}: one file per row: {files:?}"
        );
        assert_eq!(
            on_disk as i64, kept,
            "round {round}: bytes on disk = bytes counted"
        );
        assert!(on_disk <= 500_000, "never more than the quota");
        assert!(orphans(&app).await.is_empty());
    }
}

#[tokio::test]
async fn far_future_timestamps_are_422_and_get_backup_keeps_working() {
    let app = spawn_app().await;
    let token = user_on(&app, Tier::Pro).await;
    let max = adiuva_core::backup::MAX_TIMESTAMP_MS;
    for bad in [max + 1, 300_000_000_000_000, i64::MAX, -1] {
        let body =
            assert_validation_error(put_backup(&app, &token, bad, b"x".to_vec(), &sha(b"x")).await)
                .await;
        assert!(
            detail(&body).contains("9999"),
            "the detail states the range: {body}"
        );
    }
    assert!(history(&app, &token).await.is_empty(), "nothing was kept");
    // The last accepted instant formats as an HTTP date.
    assert_eq!(
        put_backup(&app, &token, max, b"last".to_vec(), &sha(b"last"))
            .await
            .status(),
        200
    );
    let got = get_backup(&app, &token, None).await;
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.headers()["last-modified"],
        "Fri, 31 Dec 9999 23:59:59 GMT"
    );
    let not_modified = get_backup(&app, &token, Some("Fri, 31 Dec 9999 23:59:59 GMT")).await;
    assert_eq!(not_modified.status(), 304);
    for junk in [
        "Sat, 01 Jan 10000 00:00:00 GMT",
        "yesterday",
        "Thu, 01 Jan 1969 00:00:00 GMT",
    ] {
        let ignored = get_backup(&app, &token, Some(junk)).await;
        assert_eq!(ignored.status(), 200, "an invalid date is ignored: {junk}");
    }

    // A row an older server accepted (year 11476): served, without a Last-Modified it
    // cannot have, instead of a panic that drops the connection.
    let old = user_on(&app, Tier::Pro).await;
    let me = app.me_json(&old).await;
    let user = adiuva_core::domain::UserId(me["id"].as_str().expect("id").parse().expect("uuid"));
    let key = format!("{user}/300000000000000");
    adiuva_core::ports::BlobStore::put(
        &app.blobs,
        &key,
        futures::StreamExt::boxed(futures::stream::iter([Ok(bytes::Bytes::from_static(
            b"legacy",
        ))])),
        None,
    )
    .await
    .expect("blob");
    let row = adiuva_core::ports::db::BackupMeta {
        id: uuid::Uuid::now_v7(),
        user_id: user,
        blob_key: key,
        version: 1,
        timestamp: 300_000_000_000_000,
        checksum: sha(b"legacy"),
        size_bytes: 6,
        created_at: 1,
    };
    assert!(
        app.adiuva
            .database()
            .insert_backup_within_quota(&row, None)
            .await
            .expect("row")
    );
    let got = get_backup(&app, &old, None).await;
    assert_eq!(got.status(), 200);
    assert!(got.headers().get("last-modified").is_none());
    assert_eq!(got.headers()["x-backup-timestamp"], "300000000000000");
    assert_eq!(got.bytes().await.expect("body").as_ref(), b"legacy");
}
