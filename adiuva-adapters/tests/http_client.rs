//! The shared outgoing HTTP client (`adiuva_adapters::http`) against a scripted HTTP
//! server on 127.0.0.1: retries and `Retry-After`, what is never retried, error bodies,
//! secrets, timeouts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use adiuva_adapters::http::{
    HttpClient, HttpConfig, HttpError, MAX_ERROR_BODY, MAX_MESSAGE, RetrySchedule, bearer,
};
use adiuva_core::Secret;
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const KEY: &str = "sk-client-secret-0123456789";
const CALL_KEY: &str = "sk-per-call-secret-424242";

/// One scripted answer: raw head lines, body, and a pause before answering.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    pause: Duration,
    /// Send the head and the first body bytes, then stay silent this long.
    stall_after_head: Option<Duration>,
}

impl Answer {
    fn new(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            pause: Duration::ZERO,
            stall_after_head: None,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A server answering each request with the next scripted answer (the last one repeats),
/// counting requests and keeping what they sent.
struct Scripted {
    url: String,
    count: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(script: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (count.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let n = c.fetch_add(1, Ordering::SeqCst);
                let answer = script[n.min(script.len() - 1)].clone();
                let seen = s.clone();
                tokio::spawn(async move {
                    let request = read_request(&mut sock).await;
                    seen.lock().expect("seen").push(request);
                    tokio::time::sleep(answer.pause).await;
                    let mut head = format!(
                        "HTTP/1.1 {} X\r\nconnection: close\r\ncontent-length: {}\r\n",
                        answer.status,
                        answer.body.len()
                    );
                    for (k, v) in &answer.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = sock.write_all(head.as_bytes()).await;
                    if let Some(stall) = answer.stall_after_head {
                        let _ = sock.write_all(&answer.body[..1]).await;
                        let _ = sock.flush().await;
                        tokio::time::sleep(stall).await;
                    }
                    let _ = sock.write_all(&answer.body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Self { url, count, seen }
    }

    fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// The request head and body (by `content-length`), as text.
async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = sock.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).to_string()
}

fn config(max_retries: u32) -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        retry: RetrySchedule {
            max_retries,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(5),
        },
    }
}

fn client(cfg: HttpConfig) -> HttpClient {
    HttpClient::new(cfg, HeaderMap::new(), [Secret::new(KEY.to_owned())]).expect("client")
}

#[tokio::test]
async fn retry_after_in_seconds_is_honoured() {
    let server = Scripted::start(vec![
        Answer::new(429, "slow down").header("retry-after", "1"),
        Answer::new(200, "ok"),
    ])
    .await;
    let started = Instant::now();
    let body = client(config(2))
        .call(Method::GET, format!("{}/x", server.url))
        .send()
        .await
        .expect("second attempt succeeds");
    assert_eq!(body, Bytes::from_static(b"ok"));
    assert_eq!(server.requests(), 2);
    // Loosely: the one-second wait happened (the backoff alone would be ~10 ms).
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured_and_capped() {
    // HTTP dates have whole seconds: "now + 3 s" means a wait of 2 to 3 s.
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    let server = Scripted::start(vec![
        Answer::new(503, "busy").header("retry-after", &at),
        Answer::new(200, "ok"),
    ])
    .await;
    let started = Instant::now();
    let http = client(config(2));
    http.call(Method::GET, server.url.clone())
        .send()
        .await
        .expect("second attempt succeeds");
    assert_eq!(server.requests(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // An hour's wait is capped by `max_delay` (300 ms here).
    let server = Scripted::start(vec![
        Answer::new(429, "later").header("retry-after", "3600"),
        Answer::new(200, "ok"),
    ])
    .await;
    let mut cfg = config(2);
    cfg.retry.max_delay = Duration::from_millis(300);
    let started = Instant::now();
    client(cfg)
        .call(Method::GET, server.url.clone())
        .send()
        .await
        .expect("second attempt succeeds");
    assert_eq!(server.requests(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_500_is_not_retried_unless_the_adapter_says_so() {
    let server = Scripted::start(vec![Answer::new(500, "boom"), Answer::new(200, "ok")]).await;
    let http = client(config(3));
    let err = http
        .call(Method::GET, server.url.clone())
        .send()
        .await
        .expect_err("a 500 is final by default");
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(server.requests(), 1);
    assert!(!err.to_string().contains("attempts"), "{err}");
    // An adapter whose service's 500s are transient (Pinecone) says so.
    http.call(Method::GET, server.url.clone())
        .retry_when(|s, _| s.is_server_error())
        .send()
        .await
        .expect("then ok");
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn a_post_is_retried_only_when_it_is_safe_to_send_again() {
    let server = Scripted::start(vec![Answer::new(503, "busy")]).await;
    let http = client(config(2));
    let body = || Bytes::from_static(b"{\"charge\":1}");
    let err = http
        .call(Method::POST, server.url.clone())
        .json(body())
        .send()
        .await
        .expect_err("503");
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(
        server.requests(),
        1,
        "a POST's body went out: not sent twice"
    );
    let err = http
        .call(Method::POST, server.url.clone())
        .json(body())
        .replay_safe()
        .send()
        .await
        .expect_err("503");
    assert_eq!(server.requests(), 4, "replay-safe: three attempts");
    assert!(err.to_string().contains("(after 3 attempts)"), "{err}");
    http.call(Method::PUT, server.url.clone())
        .json(body())
        .send()
        .await
        .expect_err("503");
    assert_eq!(server.requests(), 7, "PUT is idempotent");
    assert!(server.seen.lock().expect("seen")[0].ends_with("{\"charge\":1}"));
}

#[tokio::test]
async fn a_refused_connection_is_retried_even_for_a_post() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = client(config(2))
        .call(Method::POST, format!("http://{addr}/v1?api_key={KEY}"))
        .json(Bytes::from_static(b"{}"))
        .send()
        .await
        .expect_err("nobody listens");
    let HttpError::Transport { timed_out, .. } = &err else {
        panic!("a transport error: {err:?}");
    };
    assert!(!timed_out);
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("(after 3 attempts)"),
        "nothing was sent: {text}"
    );
    assert!(!text.contains(KEY), "the URL's key is redacted: {text}");
}

#[tokio::test]
async fn error_bodies_are_extracted_and_bounded() {
    let huge = format!(
        "{{\"error\":{{\"message\":\"{}\",\"type\":\"invalid_request_error\"}}}}",
        "y".repeat(200_000)
    );
    let server = Scripted::start(vec![
        Answer::new(
            400,
            r#"{"error":{"message":"Invalid value for 'temperature'"}}"#,
        ),
        Answer::new(404, r#"{"code":5,"message":"Namespace not found"}"#),
        Answer::new(422, "  plain words  "),
        Answer::new(400, &huge),
    ])
    .await;
    let http = client(config(0));
    let mut messages = Vec::new();
    for _ in 0..4 {
        match http.call(Method::GET, server.url.clone()).send().await {
            Err(HttpError::Status { message, body, .. }) => {
                assert!(body.len() <= MAX_ERROR_BODY, "{}", body.len());
                messages.push(message);
            }
            other => panic!("an error status: {other:?}"),
        }
    }
    assert_eq!(messages[0], "Invalid value for 'temperature'");
    assert_eq!(messages[1], "Namespace not found");
    assert_eq!(messages[2], "plain words");
    // Cut at the bound (a truncated JSON body is quoted as text).
    assert_eq!(messages[3].chars().count(), MAX_MESSAGE + 1);
    assert!(messages[3].ends_with('…'));
}

#[tokio::test]
async fn secrets_never_reach_an_errors_display_or_debug() {
    // A provider echoing what it was sent, in its error message and its body.
    let echo =
        format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY} / {CALL_KEY}"}}}}"#);
    let server = Scripted::start(vec![Answer::new(401, &echo)]).await;
    let err = client(config(0))
        .call(Method::POST, format!("{}/v1?key={CALL_KEY}", server.url))
        .header(AUTHORIZATION, bearer(CALL_KEY).expect("header"))
        .secret(CALL_KEY)
        .send()
        .await
        .expect_err("401");
    let HttpError::Status { body, message, .. } = &err else {
        panic!("a status: {err:?}");
    };
    for text in [
        format!("{err}"),
        format!("{err:?}"),
        body.clone(),
        message.clone(),
    ] {
        assert!(!text.contains(KEY) && !text.contains(CALL_KEY), "{text}");
    }
    assert!(
        message.contains("Incorrect API key provided: *** / ***"),
        "{message}"
    );
    let seen = server.seen.lock().expect("seen")[0].to_ascii_lowercase();
    assert!(seen.contains(&format!("authorization: bearer {CALL_KEY}").to_ascii_lowercase()));
}

#[tokio::test]
async fn timeouts_are_enforced_for_whole_answers_and_for_silence() {
    let slow = Answer {
        pause: Duration::from_secs(10),
        ..Answer::new(200, "late")
    };
    let server = Scripted::start(vec![slow]).await;
    let mut cfg = config(1);
    cfg.timeout = Duration::from_millis(300);
    let http = client(cfg);
    let started = Instant::now();
    let err = http
        .call(Method::GET, server.url.clone())
        .send()
        .await
        .expect_err("too slow");
    assert!(
        matches!(
            err,
            HttpError::Transport {
                timed_out: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("no answer from http://127.0.0.1"),
        "{err}"
    );
    assert_eq!(server.requests(), 2, "a timed-out GET is retried");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "gave up before the answer"
    );

    // A stream that starts, then goes silent, fails while reading.
    let stalled = Answer {
        stall_after_head: Some(Duration::from_secs(10)),
        ..Answer::new(200, "data: x\n\n")
    };
    let server = Scripted::start(vec![stalled]).await;
    let mut resp = http
        .call(Method::GET, server.url.clone())
        .stream()
        .await
        .expect("the answer starts");
    let started = Instant::now();
    let mut failed = false;
    while started.elapsed() < Duration::from_secs(8) {
        match resp.chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                failed = e.is_timeout();
                break;
            }
        }
    }
    assert!(failed, "a silent stream times out");
}
