//! [`MemoryDeviceBus`]: the in-process [`DeviceBus`], the default for one instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::ports::device_bus::{BusError, DeviceBus, MAX_BUS_MESSAGE_BYTES};

type Mailboxes = Arc<Mutex<HashMap<Uuid, mpsc::UnboundedSender<Bytes>>>>;

/// Mailboxes in a map; every handle cloned from one bus shares them (tests run two
/// hubs, "two instances", on one).
#[derive(Clone, Default)]
pub struct MemoryDeviceBus {
    mailboxes: Mailboxes,
}

impl MemoryDeviceBus {
    /// A bus with no mailbox.
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for MemoryDeviceBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryDeviceBus")
    }
}

/// Removes the mailbox when its stream is dropped.
struct Listening {
    rx: mpsc::UnboundedReceiver<Bytes>,
    mailboxes: Mailboxes,
    instance: Uuid,
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Ok(mut m) = self.mailboxes.lock() {
            m.remove(&self.instance);
        }
    }
}

#[async_trait]
impl DeviceBus for MemoryDeviceBus {
    async fn listen(&self, instance: Uuid) -> Result<BoxStream<'static, Bytes>, BusError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.mailboxes
            .lock()
            .map_err(|_| BusError::Unavailable("poisoned".into()))?
            .insert(instance, tx);
        let listening = Listening {
            rx,
            mailboxes: self.mailboxes.clone(),
            instance,
        };
        Ok(futures::stream::unfold(listening, |mut l| async move {
            let m = l.rx.recv().await?;
            Some((m, l))
        })
        .boxed())
    }

    async fn send(&self, instance: Uuid, message: Bytes) -> Result<(), BusError> {
        if message.len() > MAX_BUS_MESSAGE_BYTES {
            return Err(BusError::TooLarge(message.len()));
        }
        let tx = self
            .mailboxes
            .lock()
            .map_err(|_| BusError::Unavailable("poisoned".into()))?
            .get(&instance)
            .cloned();
        if let Some(tx) = tx {
            // A mailbox whose stream was just dropped: the message is dropped too.
            let _ = tx.send(message);
        }
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
