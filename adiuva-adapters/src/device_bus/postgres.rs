//! [`PgDeviceBus`]: mailboxes in a PostgreSQL table, woken by `NOTIFY`.
//!
//! A `NOTIFY` payload is limited to 8000 bytes, so a message is a row of
//! `device_bus_messages` and the notification on `adiuva_bus_<instance hex>` only wakes
//! the listener. One statement inserts the row and queues the notification; PostgreSQL
//! delivers it at commit, so the listener always finds the row. The listener takes its rows
//! with `DELETE … RETURNING` and yields them in id order — one sender's sends commit one
//! after the other, so its ids rise and its order holds.
//!
//! Leftovers (the contract drops messages for instances that do not listen; a table
//! would keep them): `listen` discards rows already waiting for its instance, a dropped
//! mailbox discards its own, and every listener deletes rows older than
//! [`LEFTOVER_AGE_MS`] for *any* instance — at most once a minute per bus handle — which
//! catches sends to instances that died.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adiuva_core::ports::device_bus::{BusError, DeviceBus, MAX_BUS_MESSAGE_BYTES};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{BACKOFF_MAX, BACKOFF_MIN, MAILBOX_CAPACITY};
use crate::AdapterError;

/// Connecting, acquiring a connection, and each statement (a 16 MiB insert included).
const TIMEOUT: Duration = Duration::from_secs(10);
/// Rows older than this are leftovers of instances that no longer listen.
pub const LEFTOVER_AGE_MS: i64 = 5 * 60 * 1000;
/// How often a bus handle deletes leftovers.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Rows one `DELETE … RETURNING` takes, bounding what a listener holds at once.
const TAKE_BATCH: i64 = 16;
/// Mailboxes one bus handle can listen on at once (each holds a connection; an instance
/// listens on one).
const MAX_LISTENERS: u32 = 64;
/// Serialises the schema setup of instances starting together (`CREATE … IF NOT EXISTS`
/// is not safe against a concurrent create).
const SCHEMA_LOCK: i64 = 0x6164_6975_7661_6275; // "adiuvabu"

/// The PostgreSQL device bus: a small pool of its own for sends and takes, and one
/// listening connection per mailbox.
#[derive(Clone)]
pub struct PgDeviceBus {
    shared: Arc<Shared>,
}

struct Shared {
    pool: PgPool,
    listen_pool: PgPool,
    last_sweep: Mutex<Option<Instant>>,
    location: String,
}

impl std::fmt::Debug for PgDeviceBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDeviceBus")
            .field("location", &self.shared.location)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("postgres {what}: {e}"))
}

impl PgDeviceBus {
    /// Connects to a `postgres://` URL and creates the message table if it is missing.
    pub async fn connect(url: &str) -> Result<Self, AdapterError> {
        let location = crate::postgres::redact(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| {
                AdapterError::Unsupported(format!(
                    "'{location}' is not a usable PostgreSQL URL: {e}"
                ))
            })?
            .application_name("adiuva-device-bus");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(TIMEOUT)
            // Delivery is at most once, so a message need not survive a database crash:
            // not waiting for the WAL flush at each commit cuts a send and a take to
            // a fraction (a round trip is four commits). Set per connection, not in the
            // startup options, which connection poolers may refuse.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET synchronous_commit = off")
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(|e| {
                AdapterError::Connect(format!("cannot connect to PostgreSQL at '{location}': {e}"))
            })?;
        // Listening connections live as long as their mailbox: no lifetime or idle limit.
        let listen_pool = PgPoolOptions::new()
            .max_connections(MAX_LISTENERS)
            .min_connections(0)
            .acquire_timeout(TIMEOUT)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(options);
        create_schema(&pool).await.map_err(|e| {
            AdapterError::Migrate(format!(
                "creating the device bus table at '{location}' failed: {e}"
            ))
        })?;
        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                listen_pool,
                last_sweep: Mutex::new(None),
                location,
            }),
        })
    }

    /// Where the bus is, credentials hidden (for logs).
    pub fn location(&self) -> &str {
        &self.shared.location
    }
}

async fn create_schema(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS device_bus_messages (
            id BIGSERIAL PRIMARY KEY,
            instance_id UUID NOT NULL,
            payload BYTEA NOT NULL,
            created_at BIGINT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "CREATE INDEX IF NOT EXISTS device_bus_messages_instance \
         ON device_bus_messages (instance_id, id)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

fn channel(instance: Uuid) -> String {
    format!("adiuva_bus_{}", instance.simple())
}

/// `fut`, or an error after [`TIMEOUT`].
async fn timed<T>(
    what: &str,
    fut: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(result) => result.map_err(|e| unavailable(what, e)),
        Err(_) => Err(unavailable(what, format!("no answer within {TIMEOUT:?}"))),
    }
}

/// A listener on `instance`'s channel, on its own connection.
async fn listener(shared: &Shared, instance: Uuid) -> Result<PgListener, BusError> {
    timed("listen", async {
        let mut listener = PgListener::connect_with(&shared.listen_pool).await?;
        listener.listen(&channel(instance)).await?;
        Ok(listener)
    })
    .await
}

/// Deletes every row waiting for `instance`, unread.
async fn discard(shared: &Shared, instance: Uuid) -> Result<(), BusError> {
    timed(
        "discard",
        sqlx::query("DELETE FROM device_bus_messages WHERE instance_id = $1")
            .bind(instance)
            .execute(&shared.pool),
    )
    .await
    .map(|_| ())
}

/// Takes the rows waiting for `instance` and forwards them in id order. `Ok(false)`: the
/// mailbox was dropped.
async fn take(shared: &Shared, instance: Uuid, tx: &mpsc::Sender<Bytes>) -> Result<bool, BusError> {
    loop {
        let mut rows: Vec<(i64, Vec<u8>)> = timed(
            "take",
            sqlx::query_as(
                "DELETE FROM device_bus_messages WHERE id IN (
                    SELECT id FROM device_bus_messages WHERE instance_id = $1
                    ORDER BY id LIMIT $2
                 ) RETURNING id, payload",
            )
            .bind(instance)
            .bind(TAKE_BATCH)
            .fetch_all(&shared.pool),
        )
        .await?;
        let full = rows.len() as i64 == TAKE_BATCH;
        rows.sort_unstable_by_key(|(id, _)| *id);
        for (_, payload) in rows {
            if tx.send(Bytes::from(payload)).await.is_err() {
                return Ok(false);
            }
        }
        if !full {
            return Ok(true);
        }
    }
}

/// Deletes leftovers of any instance, unless this handle did within [`SWEEP_EVERY`].
async fn sweep_leftovers(shared: &Shared) {
    {
        let Ok(mut last) = shared.last_sweep.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            return;
        }
        *last = Some(Instant::now());
    }
    let deleted = timed(
        "sweep",
        // The database's clock, like the inserts': instances' clocks may differ.
        sqlx::query(
            "DELETE FROM device_bus_messages \
             WHERE created_at < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1",
        )
        .bind(LEFTOVER_AGE_MS)
        .execute(&shared.pool),
    )
    .await;
    match deleted {
        Ok(done) if done.rows_affected() > 0 => tracing::info!(
            backend = "postgres",
            rows = done.rows_affected(),
            "device bus: deleted messages nobody took within 5 minutes"
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(backend = "postgres", error = %e, "device bus: sweeping leftovers failed")
        }
    }
}

/// Takes the rows of each notification until the connection fails (returns) or the
/// mailbox is dropped (returns `true`).
async fn receive(
    shared: &Shared,
    instance: Uuid,
    mut listener: PgListener,
    tx: &mpsc::Sender<Bytes>,
) -> bool {
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => {}
            // The connection was lost and is back, listening again (eager reconnect):
            // what was sent meanwhile is in the table, so take it like a notification.
            Ok(None) => tracing::warn!(
                backend = "postgres",
                "device bus: the listening connection was re-established"
            ),
            Err(e) => {
                tracing::warn!(backend = "postgres", error = %e, "device bus: the listening connection failed");
                return false;
            }
        }
        match take(shared, instance, tx).await {
            Ok(true) => {}
            Ok(false) => return true,
            Err(e) => {
                // Reconnecting takes what is waiting once the database answers again.
                tracing::warn!(backend = "postgres", error = %e, "device bus: taking messages failed");
                return false;
            }
        }
    }
}

/// Listens until the mailbox is dropped: reconnects with backoff after failures and takes
/// what waits after each reconnect; meanwhile sweeps leftovers once a minute.
async fn keep_listening(
    shared: Arc<Shared>,
    instance: Uuid,
    first: PgListener,
    tx: mpsc::Sender<Bytes>,
) {
    let listening = async {
        let mut listener = first;
        loop {
            if receive(&shared, instance, listener, &tx).await {
                return;
            }
            let mut backoff = BACKOFF_MIN;
            listener = loop {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                let l = match self::listener(&shared, instance).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(backend = "postgres", error = %e, "device bus: re-listening failed");
                        continue;
                    }
                };
                match take(&shared, instance, &tx).await {
                    Ok(true) => break l,
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(backend = "postgres", error = %e, "device bus: taking messages failed")
                    }
                }
            };
        }
    };
    let sweeping = async {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            sweep_leftovers(&shared).await;
        }
    };
    tokio::select! {
        () = tx.closed() => {}
        () = listening => {}
        () = sweeping => {}
    }
    // The mailbox is gone: what still waits for it is for nobody.
    if let Err(e) = discard(&shared, instance).await {
        tracing::warn!(backend = "postgres", error = %e, "device bus: discarding a dropped mailbox failed");
    }
}

#[async_trait]
impl DeviceBus for PgDeviceBus {
    async fn listen(&self, instance: Uuid) -> Result<BoxStream<'static, Bytes>, BusError> {
        let listener = listener(&self.shared, instance).await?;
        // Listening from here on; rows from before were sent to no listener: dropped.
        discard(&self.shared, instance).await?;
        let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
        tokio::spawn(keep_listening(self.shared.clone(), instance, listener, tx));
        Ok(super::receiver_stream(rx))
    }

    async fn send(&self, instance: Uuid, message: Bytes) -> Result<(), BusError> {
        if message.len() > MAX_BUS_MESSAGE_BYTES {
            return Err(BusError::TooLarge(message.len()));
        }
        timed(
            "send",
            sqlx::query(
                "WITH m AS (
                    INSERT INTO device_bus_messages (instance_id, payload, created_at)
                    VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                    RETURNING id
                 ) SELECT pg_notify($3, '') FROM m",
            )
            .bind(instance)
            .bind(message.as_ref())
            .bind(channel(instance))
            .execute(&self.shared.pool),
        )
        .await
        .map(|_| ())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
