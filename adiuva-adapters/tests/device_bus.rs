//! The device bus adapters: core's conformance suite on each (two handles = two
//! instances), the round-trip figures (printed; run with `--nocapture`), `connect`'s URL
//! rules, and recovery after the backend drops the listening connection. Redis and
//! PostgreSQL run when `ADIUVA_TEST_REDIS_URL` / `ADIUVA_TEST_POSTGRES_URL` are set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adiuva_adapters::AdapterError;
use adiuva_adapters::device_bus::{PgDeviceBus, RedisDeviceBus, connect};
use adiuva_adapters::postgres::testing::TestDatabase;
use adiuva_core::ports::device_bus::DeviceBus;
use adiuva_core::testing::device_bus::{DEADLINE, next, percentile, round_trips, run_all};
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use uuid::Uuid;

const ROUND_TRIPS: usize = 2_000;

fn redis_url() -> Option<String> {
    adiuva_core::testing::services::service("ADIUVA_TEST_REDIS_URL", "Redis device bus")
}

/// Two Redis handles on channels of their own (other tests share the server).
async fn redis_pair(url: &str) -> (RedisDeviceBus, RedisDeviceBus) {
    let prefix = format!("adiuva-test:bus:{}:", Uuid::new_v4().simple());
    let a = RedisDeviceBus::connect(url)
        .await
        .expect("connect a")
        .with_prefix(&prefix);
    let b = RedisDeviceBus::connect(url)
        .await
        .expect("connect b")
        .with_prefix(&prefix);
    (a, b)
}

async fn print_round_trips(backend: &str, a: &dyn DeviceBus, b: &dyn DeviceBus) {
    let started = Instant::now();
    let times = round_trips(a, b, ROUND_TRIPS).await;
    assert_eq!(times.len(), ROUND_TRIPS, "one time per round trip");
    println!(
        "device bus round trip ({backend}, 200 B, a→b→a, n={ROUND_TRIPS}): p50 {:?}, p99 {:?}, max {:?}, total {:?}",
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        percentile(&times, 100.0),
        started.elapsed()
    );
}

#[tokio::test]
async fn conformance_in_memory_through_connect() {
    let (bus, location) = connect("memory", "sqlite://unused.db")
        .await
        .expect("memory");
    assert_eq!((bus.backend(), location.as_str()), ("memory", "memory"));
    // Two `Arc`s of one bus: the in-process bus only reaches this process.
    run_all(bus.as_ref(), bus.clone().as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_redis_and_round_trips() {
    let Some(url) = redis_url() else { return };
    let (a, b) = redis_pair(&url).await;
    run_all(&a, &b).await;
    print_round_trips("redis", &a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_postgres_and_round_trips() {
    let Some(db) = TestDatabase::create("device_bus").await else {
        return;
    };
    let a = PgDeviceBus::connect(db.url()).await.expect("connect a");
    let b = PgDeviceBus::connect(db.url()).await.expect("connect b");
    run_all(&a, &b).await;
    print_round_trips("postgres", &a, &b).await;
    drop((a, b));
    db.drop_now().await;
}

fn unsupported(result: Result<(Arc<dyn DeviceBus>, String), AdapterError>) -> String {
    match result {
        Err(AdapterError::Unsupported(m)) => m,
        Err(other) => panic!("expected a configuration error, got: {other}"),
        Ok((bus, _)) => panic!(
            "expected a configuration error, got a {} bus",
            bus.backend()
        ),
    }
}

#[tokio::test]
async fn connect_refuses_what_it_cannot_serve_and_says_why() {
    for bad in ["", "memroy", "ftp://x", "redis", "amqp://user:secret@host/"] {
        let m = unsupported(connect(bad, "postgres://db/x").await);
        assert!(
            m.contains("memory") && m.contains("redis://") && m.contains("postgres://"),
            "{bad:?}: the accepted forms are named: {m}"
        );
        assert!(!m.contains("secret"), "no credentials in errors: {m}");
    }
    let m = unsupported(connect("postgres", "sqlite:///var/lib/adiuva/adiuva.db").await);
    assert!(
        m.contains("not PostgreSQL"),
        "postgres on a SQLite database: {m}"
    );
    let m = unsupported(connect("rediss://user:secret@cache:6380", "").await);
    assert!(m.contains("rediss://") && !m.contains("secret"), "{m}");
    let m = unsupported(connect("postgres://user:secret@db:5432/x?sslmode=nonsense", "").await);
    assert!(m.contains("PostgreSQL URL") && !m.contains("secret"), "{m}");
    for down in [
        "redis://:secret@127.0.0.1:1",
        "postgres://user:secret@127.0.0.1:1/x",
    ] {
        match connect(down, "").await {
            Err(AdapterError::Connect(m)) => {
                assert!(
                    m.contains("127.0.0.1:1") && !m.contains("secret"),
                    "{down}: {m}"
                )
            }
            Err(other) => panic!("{down}: expected a connect error, got: {other}"),
            Ok(_) => panic!("{down}: nothing listens there"),
        }
    }
}

#[tokio::test]
async fn connect_serves_redis_and_the_postgres_database() {
    if let Some(url) = redis_url() {
        let (bus, location) = connect(&url, "").await.expect("redis");
        assert_eq!(bus.backend(), "redis");
        assert_eq!(location, adiuva_core::secret::redact_url(&url));
    }
    if let Some(db) = TestDatabase::create("device_bus_connect").await {
        let (bus, location) = connect("postgres", db.url()).await.expect("postgres");
        assert_eq!(bus.backend(), "postgres");
        assert_eq!(location, adiuva_core::secret::redact_url(db.url()));
        let (other, _) = connect(db.url(), "sqlite://unused.db")
            .await
            .expect("postgres://");
        assert_eq!(other.backend(), "postgres");
        // `postgres` and the database's own URL are one bus.
        let id = Uuid::new_v4();
        let mut mailbox = bus.listen(id).await.expect("listen");
        other
            .send(id, Bytes::from_static(b"one bus"))
            .await
            .expect("send");
        assert_eq!(
            &next(&mut mailbox, "across the two forms").await[..],
            b"one bus"
        );
        drop((bus, other, mailbox));
        db.drop_now().await;
    }
}

/// A TCP forwarder to `target` whose connections the test can cut, standing in for a
/// network failure or a server restart.
struct Proxy {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (count, held) = (accepted.clone(), links.clone());
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let target = target.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().expect("links").push(link);
            }
        });
        Self {
            addr,
            accepted,
            links,
            accepting,
        }
    }

    /// Cuts every open connection (both sides see the socket close).
    fn cut(&self) {
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

/// Sends to `instance` every 100 ms until one arrives, within [`DEADLINE`] of the last
/// recovery step; returns how many sends it took. Sends may fail while the sender
/// reconnects.
async fn until_one_arrives(
    sender: &dyn DeviceBus,
    instance: Uuid,
    mailbox: &mut BoxStream<'static, Bytes>,
    what: &str,
) -> usize {
    let deadline = Instant::now() + DEADLINE * 2;
    let mut attempts = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "{what}: no message got through within {:?}",
            DEADLINE * 2
        );
        attempts += 1;
        let _ = sender
            .send(instance, Bytes::from(format!("after the cut {attempts}")))
            .await;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), mailbox.next()).await
        {
            assert!(
                m.starts_with(b"after the cut "),
                "{what}: an unexpected message"
            );
            return attempts;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mailbox_and_sends_recover_after_the_connections_drop() {
    let Some(url) = redis_url() else { return };
    let target = url::Url::parse(&url).expect("redis URL");
    let target = format!(
        "{}:{}",
        target.host_str().expect("host"),
        target.port().unwrap_or(6379)
    );
    let proxy = Proxy::start(target).await;
    let mut through = url::Url::parse(&url).expect("redis URL");
    through.set_port(Some(proxy.addr.port())).expect("port");
    through.set_host(Some("127.0.0.1")).expect("host");
    let prefix = format!("adiuva-test:bus:{}:", Uuid::new_v4().simple());
    let proxied = RedisDeviceBus::connect(through.as_str())
        .await
        .expect("connect")
        .with_prefix(&prefix);
    let direct = RedisDeviceBus::connect(&url)
        .await
        .expect("connect")
        .with_prefix(&prefix);

    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    let mut at_x = proxied.listen(x).await.expect("listen through the proxy");
    let mut at_y = direct.listen(y).await.expect("listen directly");
    direct
        .send(x, Bytes::from_static(b"before"))
        .await
        .expect("send");
    assert_eq!(&next(&mut at_x, "before the cut").await[..], b"before");

    let before = proxy.accepted.load(Ordering::SeqCst);
    proxy.cut();
    // The mailbox re-subscribes on its own; messages flow in again...
    until_one_arrives(&direct, x, &mut at_x, "to the re-subscribed mailbox").await;
    // ...and out: the shared send connection reconnects on its own too.
    until_one_arrives(&proxied, y, &mut at_y, "from the reconnected sender").await;
    assert!(
        proxy.accepted.load(Ordering::SeqCst) >= before + 2,
        "the mailbox and the sender opened new connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_mailbox_recovers_after_its_connection_is_terminated() {
    let Some(db) = TestDatabase::create("device_bus_reconnect").await else {
        return;
    };
    let a = PgDeviceBus::connect(db.url()).await.expect("connect a");
    let b = PgDeviceBus::connect(db.url()).await.expect("connect b");
    let x = Uuid::new_v4();
    let mut at_x = a.listen(x).await.expect("listen");
    b.send(x, Bytes::from_static(b"before"))
        .await
        .expect("send");
    assert_eq!(&next(&mut at_x, "before the kill").await[..], b"before");

    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .expect("admin");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND application_name = 'adiuva-device-bus'",
    )
    .fetch_all(&mut admin)
    .await
    .expect("terminate the bus's connections");
    assert!(
        killed.iter().filter(|k| **k).count() >= 2,
        "the listener and the pools were connected"
    );
    drop(admin);
    // Sent while the listener may still be reconnecting: the row waits in the table and
    // the reconnected listener takes it (not lost, unlike pub/sub).
    let mut sent = false;
    let deadline = Instant::now() + DEADLINE;
    while !sent {
        assert!(
            Instant::now() < deadline,
            "the sender's pool did not reconnect"
        );
        sent = b
            .send(x, Bytes::from_static(b"after the kill"))
            .await
            .is_ok();
    }
    assert_eq!(
        &next(&mut at_x, "after the kill").await[..],
        b"after the kill"
    );
    drop((a, b, at_x));
    db.drop_now().await;
}
