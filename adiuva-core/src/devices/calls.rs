//! Calls (`tool_call`, `data_request`): asked from any instance, answered by the
//! device through whichever instance holds its socket, never stored, never a hang.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::bus_protocol::BusMessage;
use super::hub::{
    Answering, BUS_SEND_TIMEOUT, DISCONNECTED, Inner, MAX_CALLS_IN_FLIGHT, OFFLINE, Socket, lock,
    ms,
};
use super::{DeviceRequest, ToDevice};
use crate::domain::UserId;
use crate::ports::device_bus::BusError;

/// Removes a call's waiter however the call ends (answer, timeout, or the caller's
/// future dropped).
struct Waiter<'a> {
    inner: &'a Inner,
    call_id: &'a str,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        lock(&self.inner.waiting).remove(self.call_id);
    }
}

/// "30 seconds", or "250 ms" for a short test timeout.
fn human(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} seconds", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

impl Inner {
    /// The whole call — lookup, the bus, the device — is bounded by `call_timeout`.
    pub(super) async fn call(
        &self,
        user: UserId,
        device_id: &str,
        request: DeviceRequest,
    ) -> Result<Value, String> {
        let timeout = self.config.call_timeout;
        match tokio::time::timeout(timeout, self.ask(user, device_id, request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "the device did not answer within {}",
                human(timeout)
            )),
        }
    }

    async fn ask(
        &self,
        user: UserId,
        device_id: &str,
        request: DeviceRequest,
    ) -> Result<Value, String> {
        let device = match self.db.device(user, device_id).await {
            Ok(Some(d)) => d,
            Ok(None) => return Err("no such device is registered".into()),
            Err(e) => {
                tracing::warn!(error = %e, "device lookup failed");
                return Err("the device cannot be reached right now".into());
            }
        };
        let Some(session) = self.live_session(&device, self.clock.now_ms()) else {
            return Err(OFFLINE.into());
        };
        let n = self.next_call.fetch_add(1, Ordering::Relaxed);
        let call_id = format!("dc_{}_{n}", self.short);
        let frame = match request {
            DeviceRequest::Tool { name, arguments } => ToDevice::ToolCall {
                id: call_id.clone(),
                name,
                arguments,
            },
            DeviceRequest::Data { data_types, filter } => ToDevice::DataRequest {
                id: call_id.clone(),
                data_types,
                filter,
            },
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(call_id.clone(), tx);
        let _waiter = Waiter {
            inner: self,
            call_id: &call_id,
        };
        if session.instance_id == self.instance_id {
            let socket = self
                .socket(session.session_id)
                .ok_or_else(|| OFFLINE.to_owned())?;
            self.write_call(&socket, &call_id, &frame, self.instance_id)?;
        } else {
            let message = BusMessage::Deliver {
                session: session.session_id,
                user,
                device: device.device_id,
                call_id: call_id.clone(),
                frame,
                reply_to: self.instance_id,
            };
            self.send_bus(session.instance_id, &message)
                .await
                .map_err(|e| match e {
                    BusError::TooLarge(_) => "the request is too large to send to the device",
                    _ => {
                        tracing::warn!(error = %e, "device bus send failed");
                        "the device cannot be reached right now"
                    }
                })?;
        }
        // The sender is only dropped with its entry, i.e. never before an answer.
        rx.await.unwrap_or_else(|_| Err(DISCONNECTED.into()))
    }

    /// Writes a call to a socket this instance holds, remembering who waits for it.
    pub(super) fn write_call(
        &self,
        socket: &Socket,
        call_id: &str,
        frame: &ToDevice,
        reply_to: Uuid,
    ) -> Result<(), String> {
        let now = self.clock.now_ms();
        {
            let mut answering = lock(&socket.answering);
            let Some(a) = answering.as_mut() else {
                return Err(DISCONNECTED.into());
            };
            a.retain(|_, x| x.until > now);
            if a.len() >= MAX_CALLS_IN_FLIGHT {
                return Err("the device has too many requests in flight; try again later".into());
            }
            let until = now.saturating_add(ms(self.config.call_timeout));
            a.insert(call_id.to_owned(), Answering { reply_to, until });
        }
        if !socket.link.send(frame) {
            if let Some(a) = lock(&socket.answering).as_mut() {
                a.remove(call_id);
            }
            return Err("the device's connection is not accepting requests".into());
        }
        Ok(())
    }

    /// Gives a call's outcome to its caller, here or on another instance.
    pub(super) async fn route_answer(
        &self,
        reply_to: Uuid,
        call_id: String,
        outcome: Result<Value, String>,
    ) {
        if reply_to == self.instance_id {
            self.resolve(&call_id, outcome);
            return;
        }
        let message = BusMessage::Answer { call_id, outcome };
        match self.send_bus(reply_to, &message).await {
            Ok(()) => {}
            Err(BusError::TooLarge(n)) => {
                let BusMessage::Answer { call_id, .. } = message else {
                    return;
                };
                tracing::warn!(bytes = n, "a device's answer is too large for the bus");
                let refusal = BusMessage::Answer {
                    call_id,
                    outcome: Err("the device's answer is too large".into()),
                };
                let _ = self.send_bus(reply_to, &refusal).await;
            }
            // The caller times out.
            Err(e) => tracing::warn!(error = %e, "could not route a device's answer"),
        }
    }

    /// Sends on the bus, bounded in time: a stalled backend must not hold a socket's
    /// close or a device's answer (the messages are at most once anyway).
    pub(super) async fn send_bus(&self, to: Uuid, message: &BusMessage) -> Result<(), BusError> {
        tokio::time::timeout(BUS_SEND_TIMEOUT, self.bus.send(to, message.encode()))
            .await
            .unwrap_or_else(|_| Err(BusError::Unavailable("send timed out".into())))
    }

    pub(super) fn resolve(&self, call_id: &str, outcome: Result<Value, String>) {
        if let Some(tx) = lock(&self.waiting).remove(call_id) {
            // The caller may have just timed out.
            let _ = tx.send(outcome);
        }
    }
}
