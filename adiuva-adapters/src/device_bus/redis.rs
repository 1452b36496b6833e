//! [`RedisDeviceBus`]: mailboxes as Redis pub/sub channels `{prefix}{instance}`.
//!
//! Pub/sub stores nothing, so a message for an instance that does not listen is dropped
//! by Redis itself — exactly the contract. Sends share one `ConnectionManager`
//! (multiplexed, reconnects on its own); each mailbox has a dedicated pub/sub connection
//! kept alive by a task that re-subscribes with backoff when it drops.
//!
//! A mailbox whose reader stalls stops reading its connection; Redis then buffers for it
//! up to its `client-output-buffer-limit pubsub` (default 32 MiB hard) and closes the
//! connection past it — the task re-subscribes and what was in flight is lost, which at
//! most once allows.

use std::time::Duration;

use adiuva_core::ports::device_bus::{BusError, DeviceBus, MAX_BUS_MESSAGE_BYTES};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{BACKOFF_MAX, BACKOFF_MIN, MAILBOX_CAPACITY};
use crate::AdapterError;

/// Connecting, and each command's answer (a 16 MiB PUBLISH included).
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle pub/sub connection is pinged: a peer that vanished without closing
/// the socket is noticed within this plus [`TIMEOUT`].
const PING_EVERY: Duration = Duration::from_secs(30);

/// The Redis device bus. Cheap to share behind an `Arc`.
#[derive(Clone)]
pub struct RedisDeviceBus {
    client: ::redis::Client,
    conn: ::redis::aio::ConnectionManager,
    prefix: String,
    location: String,
}

impl std::fmt::Debug for RedisDeviceBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDeviceBus")
            .field("location", &self.location)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisDeviceBus {
    /// Connects to a `redis://` URL; channels are `adiuva:bus:<instance>`. Fails with a
    /// sentence when the URL is unusable or Redis does not answer within ten seconds.
    pub async fn connect(url: &str) -> Result<Self, AdapterError> {
        let location = crate::postgres::redact(url);
        if url.starts_with("rediss://") {
            // The workspace builds redis without TLS (see the rate limiter, same rule).
            return Err(AdapterError::Unsupported(format!(
                "'{location}': TLS Redis (rediss://) is not supported by this build; use redis://"
            )));
        }
        let client = ::redis::Client::open(url).map_err(|e| {
            AdapterError::Unsupported(format!("'{location}' is not a usable Redis URL: {e}"))
        })?;
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let conn = tokio::time::timeout(TIMEOUT, client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| {
                AdapterError::Connect(format!("Redis at '{location}' did not answer within 10 s"))
            })?
            .map_err(|e| {
                AdapterError::Connect(format!("cannot connect to Redis at '{location}': {e}"))
            })?;
        Ok(Self {
            client,
            conn,
            prefix: "adiuva:bus:".into(),
            location,
        })
    }

    /// A bus whose channels live under another prefix (tests isolate runs with it).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// Where the bus is, credentials hidden (for logs).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn channel(&self, instance: Uuid) -> String {
        format!("{}{}", self.prefix, instance.simple())
    }
}

/// A pub/sub connection subscribed to `channel`, or why not (the error text carries no
/// credentials: redis errors name the command, not the URL).
async fn subscribe(
    client: &::redis::Client,
    channel: &str,
) -> Result<::redis::aio::PubSub, String> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        // Returns once Redis confirmed the subscription: from here on, PUBLISH reaches us.
        pubsub.subscribe(channel).await?;
        Ok::<_, ::redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(TIMEOUT, attempt).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
    }
}

/// Forwards `pubsub`'s messages to `tx` until the connection fails (returns) or `tx`'s
/// receiver is dropped (returns `true`: stop for good).
async fn forward(pubsub: ::redis::aio::PubSub, tx: &mpsc::Sender<Bytes>) -> bool {
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            () = tx.closed() => return true,
            message = messages.next() => {
                let Some(message) = message else { return false };
                let payload = Bytes::copy_from_slice(message.get_payload_bytes());
                // Waits while the mailbox is full: Redis buffers meanwhile (and drops the
                // connection past its pub/sub output limit — at most once allows that).
                if tx.send(payload).await.is_err() {
                    return true;
                }
            }
            _ = ping.tick() => {
                let answer = tokio::time::timeout(TIMEOUT, sink.ping::<::redis::Value>()).await;
                if !matches!(answer, Ok(Ok(_))) {
                    return false;
                }
            }
        }
    }
}

/// Keeps `channel` subscribed until `tx`'s receiver is dropped, re-subscribing with
/// backoff after the connection drops.
async fn keep_listening(
    client: ::redis::Client,
    channel: String,
    first: ::redis::aio::PubSub,
    tx: mpsc::Sender<Bytes>,
) {
    let mut pubsub = first;
    loop {
        if forward(pubsub, &tx).await {
            return;
        }
        tracing::warn!(
            backend = "redis",
            "device bus: the pub/sub connection dropped; re-subscribing"
        );
        let mut backoff = BACKOFF_MIN;
        loop {
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            match subscribe(&client, &channel).await {
                Ok(p) => {
                    pubsub = p;
                    break;
                }
                Err(e) => {
                    tracing::warn!(backend = "redis", error = %e, "device bus: re-subscribing failed");
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

#[async_trait]
impl DeviceBus for RedisDeviceBus {
    async fn listen(&self, instance: Uuid) -> Result<BoxStream<'static, Bytes>, BusError> {
        let channel = self.channel(instance);
        let pubsub = subscribe(&self.client, &channel)
            .await
            .map_err(|e| BusError::Unavailable(format!("redis subscribe: {e}")))?;
        let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
        tokio::spawn(keep_listening(self.client.clone(), channel, pubsub, tx));
        Ok(super::receiver_stream(rx))
    }

    async fn send(&self, instance: Uuid, message: Bytes) -> Result<(), BusError> {
        if message.len() > MAX_BUS_MESSAGE_BYTES {
            return Err(BusError::TooLarge(message.len()));
        }
        let mut conn = self.conn.clone();
        // PUBLISH answers how many subscribers got it; zero is fine (nobody listens: dropped).
        ::redis::cmd("PUBLISH")
            .arg(self.channel(instance))
            .arg(message.as_ref())
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| BusError::Unavailable(format!("redis publish: {e}")))
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
