//! The Socket.IO session above one Engine.IO session: namespaces joined by
//! CONNECT (with an `auth` payload) and left by DISCONNECT, events and
//! acknowledgements with their binary attachments. What a namespace does
//! is its `Service`'s business (confab's chat, or the compliance
//! harness's echo).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Sleep;

use super::engine::{ConnInfo, Data, End, Handler, Out};
use super::packet::{self, Kind};

/// A refused CONNECT: `44{"message", "data"?}`.
#[derive(Debug)]
pub struct ConnectError {
    pub message: String,
    pub data: Option<Value>,
}

/// What serves the namespaces of a server.
pub trait Service: Send + Sync + 'static {
    /// A client asks to join `nsp` with `auth` (`{}` when it gave none).
    /// On success the namespace must have called `out.connected`, after
    /// anything it sends first.
    fn connect(
        &self,
        nsp: &str,
        auth: Value,
        conn: &ConnInfo,
        out: &mut Emit<'_>,
    ) -> Result<Box<dyn Namespace>, ConnectError>;
}

/// Why a namespace stops.
pub enum Leave {
    /// The namespace alone (the client is told with DISCONNECT).
    Namespace,
    /// The whole connection ends (after DISCONNECT).
    Connection(&'static str),
}

/// One connected namespace of a session.
pub trait Namespace: Send {
    /// An event; `args[0]` is its name (a string). `ack`: the client
    /// waits for an acknowledgement with that id.
    fn on_event(
        &mut self,
        args: Vec<Value>,
        binaries: Vec<Vec<u8>>,
        ack: Option<u64>,
        out: &mut Emit<'_>,
    ) -> Result<(), End>;

    /// Queues what is ready to send; `Ready` to leave.
    fn poll(&mut self, cx: &mut Context<'_>, out: &mut Emit<'_>) -> Poll<Leave>;
}

/// Packets to one namespace of the client.
pub struct Emit<'a> {
    nsp: &'a str,
    out: &'a mut Out,
}

impl Emit<'_> {
    pub fn connected(&mut self, json: &str) {
        self.out
            .text(packet::encode(Kind::Connect, self.nsp, 0, None, json));
        self.out.flush();
    }

    /// An event: `json` is the serialized array of the name and the
    /// arguments.
    pub fn event(&mut self, json: &str, binaries: Vec<Vec<u8>>) {
        let kind = if binaries.is_empty() {
            Kind::Event
        } else {
            Kind::BinaryEvent
        };
        self.out
            .text(packet::encode(kind, self.nsp, binaries.len(), None, json));
        for b in binaries {
            self.out.binary(b);
        }
    }

    /// The acknowledgement `id`, with `json` its serialized arguments.
    pub fn ack(&mut self, id: u64, json: &str, binaries: Vec<Vec<u8>>) {
        let kind = if binaries.is_empty() {
            Kind::Ack
        } else {
            Kind::BinaryAck
        };
        self.out.text(packet::encode(
            kind,
            self.nsp,
            binaries.len(),
            Some(id),
            json,
        ));
        for b in binaries {
            self.out.binary(b);
        }
    }

    fn connect_error(&mut self, e: &ConnectError) {
        let mut body = serde_json::json!({ "message": e.message });
        if let Some(d) = &e.data {
            body["data"] = d.clone();
        }
        self.out.text(packet::encode(
            Kind::ConnectError,
            self.nsp,
            0,
            None,
            &body.to_string(),
        ));
    }

    fn disconnect(&mut self) {
        self.out
            .text(packet::encode(Kind::Disconnect, self.nsp, 0, None, ""));
    }
}

/// A binary event or ack waiting for its attachments.
struct Partial {
    packet: packet::Packet,
    binaries: Vec<Vec<u8>>,
}

pub struct Socket {
    service: Arc<dyn Service>,
    conn: ConnInfo,
    namespaces: Vec<(String, Box<dyn Namespace>)>,
    partial: Option<Partial>,
    /// A client that joins no namespace in time is let go.
    connect_by: Option<Pin<Box<Sleep>>>,
}

/// More namespaces than a client has reason to join at once.
const MAX_NAMESPACES: usize = 8;

impl Socket {
    pub fn new(service: Arc<dyn Service>, conn: ConnInfo, connect_timeout: Duration) -> Socket {
        Socket {
            service,
            conn,
            namespaces: Vec::new(),
            partial: None,
            connect_by: Some(Box::pin(tokio::time::sleep(connect_timeout))),
        }
    }

    fn on_packet(
        &mut self,
        p: packet::Packet,
        binaries: Vec<Vec<u8>>,
        out: &mut Out,
    ) -> Result<(), End> {
        let at = self.namespaces.iter().position(|(n, _)| *n == p.nsp);
        match p.kind {
            Kind::Connect => {
                if at.is_some() {
                    return Ok(());
                }
                let mut emit = Emit { nsp: &p.nsp, out };
                if self.namespaces.len() >= MAX_NAMESPACES {
                    emit.connect_error(&ConnectError {
                        message: "Too many namespaces".into(),
                        data: None,
                    });
                    return Ok(());
                }
                let auth = p.data.unwrap_or_else(|| Value::Object(Default::default()));
                match self.service.connect(&p.nsp, auth, &self.conn, &mut emit) {
                    Ok(ns) => {
                        self.namespaces.push((p.nsp, ns));
                        self.connect_by = None;
                    }
                    Err(e) => emit.connect_error(&e),
                }
                Ok(())
            }
            Kind::Disconnect => {
                if let Some(i) = at {
                    self.namespaces.remove(i);
                }
                Ok(())
            }
            Kind::Event | Kind::BinaryEvent => {
                let Some(i) = at else { return Ok(()) };
                let Some(Value::Array(args)) = p.data else {
                    return Err(End("invalid payload"));
                };
                let (nsp, ns) = &mut self.namespaces[i];
                let mut emit = Emit { nsp, out };
                ns.on_event(args, binaries, p.id, &mut emit)
            }
            // The server asks for no acknowledgements.
            Kind::Ack | Kind::BinaryAck => Ok(()),
            Kind::ConnectError => Err(End("invalid packet")),
        }
    }
}

impl Handler for Socket {
    fn on_message(&mut self, data: Data, out: &mut Out) -> Result<(), End> {
        match data {
            Data::Text(t) => {
                if self.partial.is_some() {
                    return Err(End("attachments expected"));
                }
                let p = packet::decode(&t).map_err(|e| End(e.0))?;
                if p.attachments > 0 {
                    self.partial = Some(Partial {
                        packet: p,
                        binaries: Vec::new(),
                    });
                    return Ok(());
                }
                self.on_packet(p, Vec::new(), out)
            }
            Data::Binary(b) => {
                let Some(partial) = &mut self.partial else {
                    return Err(End("unexpected binary"));
                };
                partial.binaries.push(b);
                if partial.binaries.len() < partial.packet.attachments {
                    return Ok(());
                }
                let Some(Partial { packet, binaries }) = self.partial.take() else {
                    return Ok(());
                };
                self.on_packet(packet, binaries, out)
            }
        }
    }

    fn poll_out(&mut self, cx: &mut Context<'_>, out: &mut Out) -> Poll<End> {
        if let Some(t) = &mut self.connect_by
            && t.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(End("no namespace joined in time"));
        }
        let mut i = 0;
        while i < self.namespaces.len() {
            let (nsp, ns) = &mut self.namespaces[i];
            let mut emit = Emit { nsp, out };
            match ns.poll(cx, &mut emit) {
                Poll::Pending => i += 1,
                Poll::Ready(leave) => {
                    emit.disconnect();
                    self.namespaces.remove(i);
                    if let Leave::Connection(why) = leave {
                        return Poll::Ready(End(why));
                    }
                }
            }
        }
        Poll::Pending
    }
}

use std::future::Future;
