//! `WS /api/v1/ws/device`: the desktop app's persistent socket (issue 11).
//!
//! The token is checked before the upgrade, like the chat socket's (`Authorization:
//! Bearer` or `?token=`; a 401 otherwise) and not per frame: the socket outlives the
//! access token, as a chat socket does between chats (the hub's heartbeat closes it when
//! its sign-in session is revoked or the account deleted). The first frame must be `device_hello`
//! within [`HELLO_TIMEOUT`] (else an `error` frame `hello_required` and a close, 1008);
//! core's [`DeviceHub::connect`](adiuva_core::devices::DeviceHub::connect) registers the
//! device and answers `hello_ack` through this socket's [`DeviceLink`]. Then the device
//! answers `tool_call`s and `data_request`s (`tool_result`, `data_response`), `ack`s
//! queued frames (`agent_trigger`, `notification`) and may `ping` (answered `pong`).
//! Every rule is the hub's; this module parses frames ([`DeviceIncoming`]) and writes
//! [`ToDevice`] ones. A malformed frame gets an `error` frame and the socket stays
//! usable. The chat socket's caps apply ([`super::socket`]): message size (1009), a
//! bounded outgoing queue, pings and the pong timeout, sockets per user.
//!
//! A socket another connection replaced, whose device was forgotten, or whose instance
//! stops is closed by the hub ([`DeviceLink::close`]) with a close frame and reason;
//! whatever ends the socket, its [`DeviceConnection`] is closed.

use std::sync::Arc;
use std::time::Duration;

use adiuva_core::Adiuva;
use adiuva_core::auth::Principal;
use adiuva_core::devices::{DeviceConnection, DeviceHub, DeviceLink, ToDevice};
use async_trait::async_trait;
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketStream};
use poem::web::{Data, Query};
use poem::{IntoResponse, Request, Response, handler};
use tokio::time::Instant;

use super::socket::{self, Flow, Outbox, Session, Socket, Stop, TokenQuery, WsLimits, WsTimings};
use crate::error::ApiError;
use crate::frames::device::{DeviceIncoming, DeviceServerFrame, Pong};

/// How long a new socket may take to say `device_hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest close reason, in bytes (the protocol's limit is 123).
const MAX_CLOSE_REASON: usize = 120;

/// The upgrade: authenticates (header or `?token=`) before accepting the socket.
#[handler]
pub async fn device_socket(
    req: &Request,
    ws: WebSocket,
    Query(q): Query<TokenQuery>,
    Data(app): Data<&Adiuva>,
    Data(timings): Data<&WsTimings>,
    Data(limits): Data<&WsLimits>,
) -> Response {
    let principal = match socket::principal(req, q).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let slot = match limits.try_open(principal.id()) {
        Ok(slot) => slot,
        Err(e) => return socket::refusal(&e),
    };
    let (hub, timings) = (app.devices().clone(), *timings);
    ws.config(limits.config())
        .on_upgrade(move |ws| async move {
            let _slot = slot;
            session(hub, principal, ws, timings).await;
        })
        .into_response()
}

/// The socket as the hub writes to it.
struct Link(Outbox);

#[async_trait]
impl DeviceLink for Link {
    fn send(&self, frame: &ToDevice) -> bool {
        self.0.text(DeviceServerFrame::from(frame).to_text())
    }

    async fn deliver(&self, frame: &ToDevice) -> bool {
        self.0
            .deliver(Message::Text(DeviceServerFrame::from(frame).to_text()))
            .await
    }

    fn close(&self, reason: &str) {
        let mut reason = reason.to_owned();
        if reason.len() > MAX_CLOSE_REASON {
            let mut cut = MAX_CLOSE_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        self.0.stop(Stop::Close(CloseCode::Normal, reason));
    }
}

/// The device socket's state between frames: before the hello, who is calling and by
/// when the hello must come; after it, the hub's side of the connection (the principal —
/// the user's row — is dropped then: an idle socket keeps only what it uses).
struct DeviceSocket {
    hub: DeviceHub,
    principal: Option<Principal>,
    link: Arc<Link>,
    hello_by: Instant,
    connection: Option<DeviceConnection>,
}

impl DeviceSocket {
    fn send(&self, frame: &DeviceServerFrame) {
        self.link.0.text(frame.to_text());
    }

    fn error(&self, e: adiuva_core::Error) {
        let e = ApiError::from(e);
        self.send(&DeviceServerFrame::error(&e.body.code, e.body.detail));
    }
}

#[async_trait]
impl Session for DeviceSocket {
    async fn text(&mut self, text: String) -> Flow {
        let frame = match DeviceIncoming::parse(&text) {
            Ok(frame) => frame,
            Err((code, detail)) => {
                self.send(&DeviceServerFrame::error(code, detail));
                return Flow::Continue;
            }
        };
        match (frame, &self.connection) {
            (DeviceIncoming::Ping, _) => self.send(&DeviceServerFrame::Pong(Pong {})),
            (DeviceIncoming::Pong, _) => {}
            (DeviceIncoming::Hello(_), Some(_)) => self.send(&DeviceServerFrame::error(
                "hello_already_sent",
                "this socket has said device_hello already; open a new socket to change it",
            )),
            (DeviceIncoming::Hello(hello), None) => {
                let Some(principal) = &self.principal else {
                    return Flow::Close;
                };
                let link: Arc<dyn DeviceLink> = self.link.clone();
                match self.hub.connect(principal, hello, link).await {
                    Ok(connection) => {
                        tracing::info!(user_id = %principal.id(), device_id = %connection.device_id, session_id = %connection.session_id, "device connected");
                        self.connection = Some(connection);
                        self.principal = None;
                    }
                    Err(e) => {
                        // The account is gone: nothing this socket sends can succeed.
                        let unauthorized = matches!(e, adiuva_core::Error::Unauthorized(_));
                        self.error(e);
                        if unauthorized {
                            self.link
                                .0
                                .stop(Stop::Close(CloseCode::Policy, "unauthorized".into()));
                        }
                    }
                }
            }
            (DeviceIncoming::Frame(_), None) => self.send(&DeviceServerFrame::error(
                "hello_required",
                "say device_hello first",
            )),
            (DeviceIncoming::Frame(frame), Some(connection)) => {
                if let Err(e) = connection.receive(frame).await {
                    self.error(e);
                }
            }
        }
        Flow::Continue
    }

    fn deadline(&self) -> Option<Instant> {
        self.connection.is_none().then_some(self.hello_by)
    }

    fn expired(&mut self) -> Flow {
        self.send(&DeviceServerFrame::error(
            "hello_required",
            format!("no device_hello within {} s", HELLO_TIMEOUT.as_secs()),
        ));
        self.link.0.stop(Stop::Close(
            CloseCode::Policy,
            "no device_hello in time".into(),
        ));
        Flow::Continue
    }
}

async fn session(hub: DeviceHub, principal: Principal, ws: WebSocketStream, timings: WsTimings) {
    let (socket, out) = Socket::new(ws);
    let user = principal.id();
    let mut state = DeviceSocket {
        hub,
        principal: Some(principal),
        link: Arc::new(Link(out)),
        hello_by: Instant::now() + HELLO_TIMEOUT,
        connection: None,
    };
    let ended = socket::drive(socket, &mut state, timings).await;
    match state.connection.take() {
        Some(connection) => {
            let device_id = connection.device_id.clone();
            connection.close().await;
            tracing::info!(user_id = %user, device_id = %device_id, how = ?ended, "device socket closed");
        }
        None => {
            tracing::info!(user_id = %user, how = ?ended, "device socket closed before its hello")
        }
    }
}
