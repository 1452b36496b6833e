//! The connection layer under slow and greedy clients (issue #9, item 3): head
//! deadlines, idle keep-alive, slow bodies, the per-IP cap. Raw TCP, because a
//! well-behaved HTTP client cannot misbehave on purpose.
//!
//! Every timeout is set to about a second and the tests only ask that the server closed
//! the socket within a generous 10 s; before these limits the sockets stayed open for
//! minutes.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, send, spawn_app_with};

const BOUND: Duration = Duration::from_secs(10);

async fn open(app: &TestApp) -> TcpStream {
    TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect")
}

/// Reads until the server closes the socket (EOF or reset) and returns what it sent;
/// panics if it is still open after [`BOUND`].
async fn read_until_closed(read: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut got = Vec::new();
    let outcome = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 4096];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the server did not close the socket within {BOUND:?} (it sent {:?})",
        String::from_utf8_lossy(&got)
    );
    String::from_utf8_lossy(&got).into_owned()
}

/// A head dripped a byte every 200 ms is cut at the head deadline (1 s): the deadline
/// is not reset by activity, so the drip does not keep the socket alive.
#[tokio::test]
async fn a_head_dripped_slowly_is_cut_at_the_header_deadline() {
    let app = spawn_app_with(|s| s.header_read_timeout_secs = 1).await;
    let (mut read, mut write) = open(&app).await.into_split();
    let drip = tokio::spawn(async move {
        write
            .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        // X-Slow: aaaa… for as long as the socket takes it.
        let _ = write.write_all(b"X-Slow: ").await;
        while write.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let answer = read_until_closed(&mut read).await;
    drip.abort();
    assert!(!answer.contains("200 OK"), "{answer}");
}

/// A connection that never sends a byte is closed at the head deadline.
#[tokio::test]
async fn an_idle_new_connection_is_closed() {
    let app = spawn_app_with(|s| s.header_read_timeout_secs = 1).await;
    let mut socket = open(&app).await;
    assert_eq!(read_until_closed(&mut socket).await, "");
}

/// A kept-alive connection that served a request and then idles is closed at the
/// keep-alive timeout (1 s; the head deadline is 60 s, so it is the keep-alive rule).
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn_app_with(|s| {
        s.keep_alive_timeout_secs = 1;
        s.header_read_timeout_secs = 60;
    })
    .await;
    let mut socket = open(&app).await;
    socket
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = read_until_closed(&mut socket).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the request was served on the kept-alive connection first: {answer}"
    );
    assert!(!answer.contains("connection: close"), "{answer}");
}

/// A backup body dripped at 5 bytes/s (the minimum is 1,000/s with 1 s of patience) is
/// cut: the client gets 400 `upload_incomplete`, the socket is closed, and neither a
/// backup row nor a blob is left.
#[tokio::test]
async fn a_backup_body_dripped_slowly_is_cut_and_leaves_nothing() {
    let app = spawn_app_with(|s| {
        s.min_body_rate_bytes_per_sec = 1000;
        s.body_read_timeout_secs = 1;
    })
    .await;
    let (_, token) = app.account_on("drip", adiuva_core::domain::Tier::Pro).await;
    let body = vec![7u8; 2000];
    let checksum = crate::records::sha(&body);
    let head = format!(
        "PUT /api/v1/backup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         X-Backup-Version: 1\r\nX-Backup-Timestamp: 1700000000000\r\n\
         X-Backup-Checksum: {checksum}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (mut read, mut write) = open(&app).await.into_split();
    let drip = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await.expect("head");
        for b in body {
            if write.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let answer = read_until_closed(&mut read).await;
    drip.abort();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("upload_incomplete"), "{answer}");
    let history = crate::backups::history(&app, &token).await;
    assert!(history.is_empty(), "{history:?}");
    let blobs = adiuva_core::ports::BlobStore::list(&app.blobs, "")
        .await
        .expect("list blobs");
    assert!(blobs.is_empty(), "no blob is left: {blobs:?}");
}

/// With a cap of 2 connections per IP, a third is answered 429 `too_many_connections`
/// and closed at once; the server keeps serving, and once one of the two closes a fresh
/// connection gets `/health`.
#[tokio::test]
async fn connections_over_the_per_ip_cap_are_refused() {
    let app = spawn_app_with(|s| s.max_connections_per_ip = 2).await;
    let first = open(&app).await;
    let mut second = open(&app).await;
    // The second is served: the cap counts open connections, not requests.
    second
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 12];
    second.read_exact(&mut buf).await.expect("answer");
    assert_eq!(&buf, b"HTTP/1.1 200");
    let mut third = open(&app).await;
    let answer = read_until_closed(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    let body: Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("body")).expect("JSON body");
    assert_eq!(body["code"], "too_many_connections");
    drop(first);
    // The server notices the close when it reads EOF; give it a moment.
    let fresh = reqwest::Client::new();
    let mut status = None;
    for _ in 0..50 {
        if let Ok(r) = fresh.get(app.url("/health")).send().await {
            status = Some(r.status().as_u16());
            if status == Some(200) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(200));
}

/// A connection from a given loopback address (all of 127.0.0.0/8 is this machine), so a
/// test can be several clients at once for the per-IP rules.
async fn open_from(app: &TestApp, ip: [u8; 4], recv_buffer: Option<u32>) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((ip, 0)))
        .expect("bind a loopback source address");
    if let Some(size) = recv_buffer {
        // A small fixed receive buffer (no autotuning), so a client that does not read
        // stalls the server's writes quickly.
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], app.port)))
        .await
        .expect("connect")
}

/// Three hundred idle sockets from one address (once, before these limits, they made
/// `/health` time out) do not starve anyone else: past the per-IP cap (default 256) that
/// address's connections are refused, and a client at another address is answered.
#[tokio::test]
async fn three_hundred_idle_sockets_from_one_address_starve_no_one_else() {
    let app = spawn_app_with(|s| s.header_read_timeout_secs = 60).await;
    let cap = adiuva_server::settings::Settings::for_data_dir(".").max_connections_per_ip;
    assert!(
        cap > 0 && cap < 300,
        "the test exercises the default cap ({cap})"
    );
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(open_from(&app, [127, 0, 0, 2], None).await);
    }
    // The ones over the cap are answered 429 and closed; the first 256 stay open.
    let mut refused = 0;
    for socket in idle.iter_mut().skip(cap) {
        let answer = read_until_closed(socket).await;
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
        refused += 1;
    }
    assert_eq!(refused, 300 - cap);
    // Another client is served at once (within the bound), while the 256 still idle.
    let mut other = open_from(&app, [127, 0, 0, 3], None).await;
    other
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = read_until_closed(&mut other).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle);
}

/// A client that asks for a large download and never reads stalls the server's writes;
/// the connection is closed after `send_timeout_secs` (1 s here) instead of being held
/// with its buffers for as long as the client likes. Seen from the client: the body
/// stops short of its length and the socket is closed.
#[tokio::test]
async fn a_client_that_does_not_read_a_download_is_cut_off() {
    let app = spawn_app_with(|s| s.send_timeout_secs = 1).await;
    let (_, token) = app
        .account_on("stall", adiuva_core::domain::Tier::Pro)
        .await;
    // Larger than what the kernel buffers on both ends (the server's send buffer grows
    // to a few MiB; the client's is pinned at 4 KiB).
    let body: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    let checksum = crate::records::sha(&body);
    let put = crate::backups::upload(&app, &token, "1", "1700000000000", &checksum);
    assert_eq!(send(put.body(body.clone())).await.status(), 200);
    let mut socket = open_from(&app, [127, 0, 0, 4], Some(4096)).await;
    socket
        .write_all(
            format!(
                "GET /api/v1/backup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    // Not reading for a while: the server's write makes no progress for > 1 s.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut got = 0usize;
    let outcome = tokio::time::timeout(BOUND, async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the connection was still open {BOUND:?} after the client started reading ({got} bytes read)"
    );
    assert!(
        got < body.len(),
        "the server gave up before sending the whole body ({got} of {} bytes arrived)",
        body.len()
    );
}
