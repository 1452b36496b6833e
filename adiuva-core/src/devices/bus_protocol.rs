//! What hubs say to each other over the [`DeviceBus`](crate::ports::DeviceBus): a
//! private enum as JSON bytes. Only hubs of the same build read it; a message that does
//! not parse is logged and dropped (a rolling deploy mixing versions loses at most
//! calls, which time out, and wake-ups, which the next hello repeats).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::ToDevice;
use crate::domain::UserId;

/// One message between instances.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(super) enum BusMessage {
    /// Write this call to the socket of `session`; its answer goes to `reply_to`.
    Deliver {
        session: Uuid,
        user: UserId,
        device: String,
        call_id: String,
        frame: ToDevice,
        reply_to: Uuid,
    },
    /// The answer to a call this instance is waiting for.
    Answer {
        call_id: String,
        outcome: Result<Value, String>,
    },
    /// New frames are queued for `session`'s device: deliver them.
    Drain { session: Uuid },
    /// Close `session`'s socket (replaced or forgotten).
    Close { session: Uuid, reason: String },
}

impl BusMessage {
    pub(super) fn encode(&self) -> Bytes {
        // A derived Serialize of strings, ids and JSON values cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        match serde_json::from_slice(bytes) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, len = bytes.len(), "unreadable device bus message dropped");
                None
            }
        }
    }
}
