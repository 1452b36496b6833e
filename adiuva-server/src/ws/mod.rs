//! The WebSockets: `WS /api/v1/chat/stream` ([`chat`]) and `WS /api/v1/ws/device`
//! ([`device`]), on one set of plumbing ([`socket`]: authentication before the upgrade,
//! caps, the bounded outgoing queue, pings, one task per socket). Their frames are typed
//! in [`crate::frames`] and described by `/api/v1/asyncapi.json`.

pub mod chat;
pub mod device;
pub mod socket;

pub use crate::frames::MAX_DETAIL_CHARS;
pub use chat::chat_stream;
pub use device::device_socket;
pub use socket::{OUTBOX_FRAMES, WsLimits, WsTimings};
