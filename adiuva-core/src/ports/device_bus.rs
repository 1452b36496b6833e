//! Reaching a user's device from whichever instance holds its WebSocket.
//!
//! The bus only carries opaque messages between *instances*; which instance holds a
//! device's socket is presence, kept in the database ([`DeviceRepo`](super::db::DeviceRepo)),
//! and what the messages mean is core's (`devices`). So an adapter needs one thing: a
//! mailbox per running instance.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use uuid::Uuid;

/// What the bus can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The bus backend cannot be reached.
    #[error("device bus unavailable: {0}")]
    Unavailable(String),
    /// The message is larger than [`MAX_BUS_MESSAGE_BYTES`].
    #[error("device bus message too large: {0} bytes")]
    TooLarge(usize),
}

/// The largest message any adapter must carry (a device frame is capped well below it).
pub const MAX_BUS_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// One mailbox per running server instance, shared by every instance of a deployment.
///
/// Contract (checked by `testing::device_bus::run_all` on every adapter):
/// - [`listen`](Self::listen) returns once the mailbox is live: a message sent to
///   `instance` after it returns — from this handle or another handle on the same
///   backend (another instance) — is yielded by the stream, intact, byte for byte.
/// - Messages from one sender to one instance arrive in the order they were sent.
/// - A mailbox only receives messages addressed to its own instance id.
/// - Delivery is at most once and not acknowledged: a message for an instance that does
///   not listen (it died, or never existed) is dropped — an adapter that stores messages
///   must discard such leftovers on its own, never deliver them to another instance.
///   Callers that need more keep it themselves (core's durable queue, call timeouts).
/// - Messages up to [`MAX_BUS_MESSAGE_BYTES`] are carried; larger ones are refused with
///   [`BusError::TooLarge`] and nothing is sent.
/// - Dropping the stream stops listening and frees what the mailbox held.
/// - The stream ends only when the backend is gone for good; an adapter reconnects on
///   its own after transient failures (messages sent meanwhile may be lost).
#[async_trait]
pub trait DeviceBus: Send + Sync {
    /// The messages addressed to `instance`, from now until the stream is dropped.
    /// One listener per instance id.
    async fn listen(&self, instance: Uuid) -> Result<BoxStream<'static, Bytes>, BusError>;
    /// Sends `message` to `instance`'s mailbox (see the contract: at most once).
    async fn send(&self, instance: Uuid, message: Bytes) -> Result<(), BusError>;
    /// A short name for logs and `doctor` (`memory`, `redis`, `postgres`).
    fn backend(&self) -> &'static str;
}
