//! The server the official Engine.IO and Socket.IO protocol test suites
//! (`e2e/socketio-protocol/`) expect, over confab's own Engine.IO and
//! Socket.IO code (`confab::sio`, the code behind `/socket.io/`), as their
//! reference server does: on port 3000, `/engine.io/` echoes every
//! message, and `/socket.io/` serves the namespaces `/` and `/custom`,
//! each emitting `auth` with the CONNECT payload, `/` answering `message`
//! with `message-back` and `message-with-ack` with its acknowledgement.
//! Not part of the product: no authentication, any origin.
//!
//! ```text
//! cargo run --example socketio_protocol -- [ADDR...]
//! ```
//!
//! The suites ask for `localhost:3000`, which Node may resolve to either
//! loopback address: by default both are served.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use confab::sio::engine::{ConnInfo, Data, End, Engine, EngineConfig, Handler, Out};
use confab::sio::socket::{ConnectError, Emit, Leave, Namespace, Service, Socket};
use confab::sio::{Gate, route};
use serde_json::Value;
use warp::Filter;

/// What the suites check in the handshake.
fn config() -> EngineConfig {
    EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        max_buffered: 1000,
        // The suites read the Socket.IO handshake and the packet after it
        // with two listeners, one set after the other: on a busy machine
        // both could arrive in one read and the second be missed.
        flush_gap: Duration::from_millis(15),
    }
}

/// `/engine.io/`: every message comes back as it came.
struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, data: Data, out: &mut Out) -> Result<(), End> {
        match data {
            Data::Text(t) => out.text(t),
            Data::Binary(b) => out.binary(b),
        }
        Ok(())
    }

    fn poll_out(&mut self, _: &mut Context<'_>, _: &mut Out) -> Poll<End> {
        Poll::Pending
    }
}

struct Suite;

impl Service for Suite {
    fn connect(
        &self,
        nsp: &str,
        auth: Value,
        _: &ConnInfo,
        out: &mut Emit<'_>,
    ) -> Result<Box<dyn Namespace>, ConnectError> {
        if nsp != "/" && nsp != "/custom" {
            return Err(ConnectError {
                message: "Invalid namespace".into(),
                data: None,
            });
        }
        out.connected(&serde_json::json!({ "sid": confab::sio::engine::new_id() }).to_string());
        out.event(&serde_json::json!(["auth", auth]).to_string(), Vec::new());
        Ok(Box::new(SuiteNsp { main: nsp == "/" }))
    }
}

struct SuiteNsp {
    main: bool,
}

impl Namespace for SuiteNsp {
    fn on_event(
        &mut self,
        mut args: Vec<Value>,
        binaries: Vec<Vec<u8>>,
        ack: Option<u64>,
        out: &mut Emit<'_>,
    ) -> Result<(), End> {
        if !self.main {
            return Ok(());
        }
        match args.first().and_then(Value::as_str) {
            Some("message") => {
                args[0] = Value::String("message-back".into());
                out.event(&Value::Array(args).to_string(), binaries);
            }
            Some("message-with-ack") => {
                if let Some(id) = ack {
                    args.remove(0);
                    out.ack(id, &Value::Array(args).to_string(), binaries);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn poll(&mut self, _: &mut Context<'_>, _: &mut Emit<'_>) -> Poll<Leave> {
        Poll::Pending
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut addrs: Vec<String> = std::env::args().skip(1).collect();
    if addrs.is_empty() {
        addrs = vec!["127.0.0.1:3000".into(), "[::1]:3000".into()];
    }
    let echo = Engine::new(
        config(),
        Box::new(|_: &ConnInfo| Box::new(Echo) as Box<dyn Handler>),
    );
    let service: Arc<dyn Service> = Arc::new(Suite);
    let sio = Engine::new(
        config(),
        Box::new(move |info: &ConnInfo| {
            Box::new(Socket::new(
                service.clone(),
                info.clone(),
                Duration::from_millis(1000),
            )) as Box<dyn Handler>
        }),
    );
    let routes = route("engine.io", echo, Gate::Open).or(route("socket.io", sio, Gate::Open));
    let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(
        hyper_util::rt::TokioExecutor::new(),
    ));
    let mut tasks = Vec::new();
    for addr in addrs {
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            // A machine without IPv6 still serves the suites on IPv4.
            Err(e) if addr.starts_with('[') => {
                eprintln!("{addr}: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        println!("listening on {}", listener.local_addr()?);
        let routes = routes.clone();
        let builder = builder.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let svc =
                    hyper_util::service::TowerToHyperService::new(warp::service(routes.clone()));
                let builder = builder.clone();
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = builder.serve_connection_with_upgrades(io, svc).await;
                });
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
