//! The durable queue: frames that must not be lost are stored first, then delivered in
//! `seq` order while the device is connected, and kept until it acks them.
//!
//! Exactly once, with the device's help: every connection starts delivering from the
//! beginning of the queue, so a frame delivered but not acked before a disconnect (or an
//! instance's death) is sent again; the device drops a frame whose id it has already
//! processed and acks it again. A frame leaves the queue only by its ack, the queue's
//! bound (oldest first) or its age, and the last two are counted for the next hello.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::bus_protocol::BusMessage;
use super::hub::{Inner, Socket, lock};
use super::{MAX_QUEUED_FRAME_BYTES, Queued, ToDevice};
use crate::domain::{Millis, UserId};
use crate::error::Error;
use crate::ports::db::{NewQueuedFrame, RepoError};
use crate::seal::Purpose;

/// Frames read per query: large enough that a long queue costs few queries, small
/// enough that a batch in memory stays small.
const BATCH: u32 = 256;
/// A delivery whose database read failed tries again after this.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Starts the socket's delivery task (stopped when the socket ends).
pub(super) fn start_delivery(inner: Arc<Inner>, socket: Arc<Socket>) {
    // Checked under the delivery lock: `end` marks the socket ended before it takes the
    // task, so either it finds this task or this sees it ended.
    let mut delivery = lock(&socket.delivery);
    if Inner::has_ended(&socket) {
        return;
    }
    let task = tokio::spawn(deliver(inner, socket.clone()));
    *delivery = Some(task.abort_handle());
}

/// Sends the queue's frames in order, then waits to be woken by new ones. `link.deliver`
/// waits while the socket's outgoing queue is full, so a long queue goes at the pace the
/// device reads.
async fn deliver(inner: Arc<Inner>, socket: Arc<Socket>) {
    let mut after = 0;
    loop {
        let now = inner.clock.now_ms();
        let batch = match inner
            .db
            .queued_frames(socket.user, &socket.device_id, after, now, BATCH)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "reading a device's queue failed; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        let more = batch.len() == BATCH as usize;
        for queued in batch {
            after = queued.seq;
            let frame: ToDevice = match inner.open_payload(&queued.payload) {
                Some(f) => f,
                None => {
                    // A key removed from the ring too early, or a corrupt row: skip
                    // rather than block the queue (it expires with its age).
                    tracing::error!(frame = %queued.frame_id, "unreadable queued frame skipped");
                    continue;
                }
            };
            if !socket.link.deliver(&frame).await {
                return;
            }
        }
        if !more {
            // A wake-up that came while the batch was read is kept as a permit.
            socket.wake.notified().await;
        }
    }
}

impl Inner {
    /// A stored payload back to its frame: sealed (this build) or plain JSON (written
    /// before queued payloads were sealed; such a row starts with `{`). `None` when it
    /// neither opens nor parses.
    fn open_payload(&self, payload: &[u8]) -> Option<ToDevice> {
        if payload.first() == Some(&b'{') {
            return serde_json::from_slice(payload).ok();
        }
        let sealed = std::str::from_utf8(payload).ok()?;
        let plain = self.keyring.open(Purpose::DeviceQueue, sealed).ok()?;
        serde_json::from_slice(&plain).ok()
    }

    pub(super) async fn enqueue(
        &self,
        user: UserId,
        device_id: &str,
        frame: Queued,
    ) -> Result<Uuid, Error> {
        let frame_id = Uuid::new_v4();
        self.enqueue_with_id(user, device_id, frame_id, frame)
            .await?;
        Ok(frame_id)
    }

    /// Queues `frame` under `frame_id`; `Ok(false)` when that id is already queued.
    pub(super) async fn enqueue_with_id(
        &self,
        user: UserId,
        device_id: &str,
        frame_id: Uuid,
        frame: Queued,
    ) -> Result<bool, Error> {
        let id = frame_id.to_string();
        let (kind, frame) = match frame {
            Queued::AgentTrigger {
                agent_id,
                run_id,
                input,
            } => (
                "agent_trigger",
                ToDevice::AgentTrigger {
                    id,
                    agent_id,
                    run_id,
                    input,
                },
            ),
            Queued::Notification { kind, payload } => {
                ("notification", ToDevice::Notification { id, kind, payload })
            }
        };
        let payload = serde_json::to_vec(&frame).map_err(Error::internal)?;
        if payload.len() > MAX_QUEUED_FRAME_BYTES {
            return Err(Error::TooLarge {
                code: "frame_too_large",
                detail: format!(
                    "a queued frame may be at most {MAX_QUEUED_FRAME_BYTES} bytes; this one is {}",
                    payload.len()
                ),
            });
        }
        let now = self.clock.now_ms();
        let max_age =
            Millis::try_from(self.config.queue_max_age.as_millis()).unwrap_or(Millis::MAX);
        // Stored sealed: a queued frame may be an agent's result (user content, rule 1).
        let payload = self
            .keyring
            .seal(Purpose::DeviceQueue, &payload)
            .into_bytes();
        let new = NewQueuedFrame {
            frame_id,
            kind: kind.to_owned(),
            payload,
            expires_at: now.saturating_add(max_age),
        };
        match self
            .db
            .enqueue_frame(user, device_id, &new, self.config.queue_max_frames, now)
            .await
        {
            Ok(_) => {}
            Err(RepoError::NotFound) => return Err(Error::NotFound("device")),
            // Queued before (a retried producer): the first copy stands.
            Err(RepoError::Conflict(_)) => return Ok(false),
            Err(other) => return Err(other.into()),
        }
        // Presence is read after the frame is stored: a device that connects meanwhile
        // reads its queue after its hello, so it sees the frame either way.
        self.wake(user, device_id).await;
        Ok(true)
    }

    /// Has the device's holder deliver what is new, if it is online.
    async fn wake(&self, user: UserId, device_id: &str) {
        let device = match self.db.device(user, device_id).await {
            Ok(Some(d)) => d,
            // Forgotten meanwhile, or the database failed: the frame waits for a hello.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "device lookup after enqueue failed");
                return;
            }
        };
        let Some(session) = self.live_session(&device, self.clock.now_ms()) else {
            return;
        };
        if session.instance_id == self.instance_id {
            if let Some(s) = self.socket(session.session_id) {
                s.wake.notify_one();
            }
            return;
        }
        let message = BusMessage::Drain {
            session: session.session_id,
        };
        if let Err(e) = self.send_bus(session.instance_id, &message).await {
            // The frame is stored: the device gets it at its next hello.
            tracing::warn!(error = %e, "could not wake a device's holder");
        }
    }

    pub(super) async fn ack(&self, socket: &Socket, id: &str) -> Result<(), Error> {
        let unknown = || Error::BadRequest {
            code: "unknown_frame",
            detail: "no queued frame has this id".into(),
        };
        let frame_id = Uuid::parse_str(id).map_err(|_| unknown())?;
        if self
            .db
            .ack_frame(socket.user, &socket.device_id, frame_id)
            .await?
        {
            Ok(())
        } else {
            Err(unknown())
        }
    }
}
