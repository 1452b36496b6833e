//! [`DevicePeer`]: a chat turn's tools, run on a device through the hub.

use async_trait::async_trait;
use serde_json::Value;

use super::{DeviceHub, DevicePeer, DeviceRequest};
use crate::chat::{ChatEvent, ChatPeer, ToolCall};
use crate::domain::UserId;

use super::hub::lock;

impl DevicePeer {
    pub(super) fn new(hub: DeviceHub, user: UserId, device_id: &str) -> Self {
        Self {
            hub,
            user,
            device_id: device_id.to_owned(),
            last: std::sync::Mutex::new(None),
        }
    }

    /// The turn's last event other than text (its outcome), once it has run.
    pub(crate) fn take_outcome(&self) -> Option<ChatEvent> {
        lock(&self.last).take()
    }
}

impl std::fmt::Debug for DevicePeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevicePeer")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ChatPeer for DevicePeer {
    fn event(&self, event: ChatEvent) {
        // REST answers once, at the end: the streamed text is also in the final reply.
        if !matches!(event, ChatEvent::Text(_)) {
            *lock(&self.last) = Some(event);
        }
    }

    async fn run_tool(&self, call: ToolCall) -> Result<Value, String> {
        self.hub
            .call(
                self.user,
                &self.device_id,
                DeviceRequest::Tool {
                    name: call.name,
                    arguments: call.arguments,
                },
            )
            .await
    }
}
