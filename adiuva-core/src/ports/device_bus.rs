//! Reaching a user's device from whichever instance holds its WebSocket.

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::domain::UserId;

/// What the bus can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The bus backend cannot be reached.
    #[error("device bus unavailable: {0}")]
    Unavailable(String),
}

/// Fan-out of JSON frames to a user's connected devices.
///
/// Contract: a frame published for a user reaches every subscription of that user that
/// exists when it is published, on any instance, at most once each; nothing is kept for
/// devices that are offline (`publish` returns how many subscribers were reached, where
/// the backend can tell, so callers can report "device offline").
#[async_trait]
pub trait DeviceBus: Send + Sync {
    /// Sends a frame to the user's devices.
    async fn publish(&self, user_id: UserId, frame: serde_json::Value) -> Result<usize, BusError>;
    /// Frames for this user from now on, until the stream is dropped.
    async fn subscribe(
        &self,
        user_id: UserId,
    ) -> Result<BoxStream<'static, serde_json::Value>, BusError>;
}
