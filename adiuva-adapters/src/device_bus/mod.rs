//! The device bus adapters, chosen by URL ([`connect`]): in-process (core's
//! `MemoryDeviceBus`), Redis pub/sub ([`RedisDeviceBus`]), PostgreSQL `LISTEN`/`NOTIFY`
//! plus a table ([`PgDeviceBus`]). All run core's `testing::device_bus` suite.

use std::sync::Arc;
use std::time::Duration;

use adiuva_core::devices::MemoryDeviceBus;
use adiuva_core::ports::device_bus::DeviceBus;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::AdapterError;

pub mod postgres;
pub mod redis;

pub use self::postgres::PgDeviceBus;
pub use self::redis::RedisDeviceBus;

/// Messages a mailbox holds between the backend and the stream's reader. When it is full
/// the adapter stops reading its connection, so a stalled reader costs bounded memory
/// here (the backend buffers or drops — at most once allows either).
pub(crate) const MAILBOX_CAPACITY: usize = 256;
/// Reconnect backoff of a mailbox's listening connection: doubles from the first to the
/// last, then stays.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The mailbox stream over a listener task's channel. Dropping it closes the channel,
/// which the task watches to stop (and free its connection) at once.
pub(crate) fn receiver_stream(rx: mpsc::Receiver<Bytes>) -> BoxStream<'static, Bytes> {
    futures::stream::unfold(rx, |mut rx| async move {
        let m = rx.recv().await?;
        Some((m, rx))
    })
    .boxed()
}

/// The bus `url` names (`device_bus_url`), and where it is for logs (credentials hidden):
/// `memory`; `redis://…`; `postgres` (the database itself: `database_url` must then be
/// PostgreSQL); `postgres://…` / `postgresql://…` (another PostgreSQL server).
pub async fn connect(
    url: &str,
    database_url: &str,
) -> Result<(Arc<dyn DeviceBus>, String), AdapterError> {
    let url = url.trim();
    if url == "memory" {
        return Ok((Arc::new(MemoryDeviceBus::new()), "memory".into()));
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        let bus = RedisDeviceBus::connect(url).await?;
        let location = bus.location().to_owned();
        return Ok((Arc::new(bus), location));
    }
    let pg_url = if url == "postgres" {
        if !is_postgres_url(database_url) {
            return Err(AdapterError::Unsupported(format!(
                "device_bus_url 'postgres' uses the database, but the database is not \
                 PostgreSQL ('{}'); set device_bus_url to memory, redis://… or postgres://…",
                crate::postgres::redact(database_url)
            )));
        }
        database_url
    } else if is_postgres_url(url) {
        url
    } else {
        return Err(AdapterError::Unsupported(format!(
            "device_bus_url '{}' is not one of: memory, redis://…, postgres (the database), \
             postgres://…",
            crate::postgres::redact(url)
        )));
    };
    let bus = PgDeviceBus::connect(pg_url).await?;
    let location = bus.location().to_owned();
    Ok((Arc::new(bus), location))
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}
