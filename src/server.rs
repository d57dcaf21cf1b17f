//! Starting and stopping the whole server: store, hub, HTTP/WebSocket
//! listener and admin socket, with a designed shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::{App, AppError};
use crate::config::Config;
use crate::protocol::close;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    App(#[from] AppError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("admin socket: {0}")]
    Admin(std::io::Error),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}

/// A running server. Tests start one on `127.0.0.1:0` and read `addr`.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    admin: JoinHandle<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes in-flight requests, closes WebSockets with
    /// 1001, lets pending commits finish and closes the store.
    pub async fn shutdown(self) {
        let Running {
            app,
            stop,
            http,
            admin,
            ..
        } = self;
        let _ = stop.send(true);
        app.hub.close_all(close::GOING_AWAY, "server shutting down");
        let _ = http.await;
        admin.abort();
        let _ = admin.await;
        // WebSocket tasks hold the app; give them a moment to say goodbye.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while app.hub.session_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let closed = app.store.closed();
        while Arc::strong_count(&app) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(app);
        let _ = tokio::task::spawn_blocking(move || closed.wait(Duration::from_secs(5))).await;
    }
}

/// Binds the listener as `TcpListener::bind` would (SO_REUSEADDR, backlog
/// 1024), plus TCP_NODELAY, which Linux copies to every accepted socket:
/// warp gives no hook to set it per connection. Without it the second of
/// two small frames written back to back (an ack, then its message event)
/// waits for the client's delayed ACK, about 40 ms.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Opens the store, binds the listener and the admin socket, and serves
/// until `shutdown` is called.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let addr = config.bind_addr()?;
    std::fs::create_dir_all(&config.server.data_dir).map_err(|e| ServeError::Bind {
        addr: config.server.data_dir.display().to_string(),
        source: e,
    })?;
    let app = App::open(config)?;
    let listener = listen(addr).map_err(|source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let (stop, stopped) = watch::channel(false);
    let admin_listener =
        crate::admin::bind(&app.config.socket_path()).map_err(ServeError::Admin)?;
    let admin = tokio::spawn(crate::admin::serve(app.clone(), admin_listener));
    // Once a second: throughput samples and per-room rates for the console.
    let sampler_metrics = app.metrics.clone();
    let sampler_hub = app.hub.clone();
    let mut sampler_stop = stopped.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    sampler_metrics.tick();
                    sampler_metrics.rooms_active.set(sampler_hub.room_online_counts().len() as i64);
                }
                _ = sampler_stop.wait_for(|s| *s) => break,
            }
        }
    });
    let routes = crate::http::routes(app.clone());
    let mut stop_rx = stopped.clone();
    let http = tokio::spawn(async move {
        warp::serve(routes)
            .incoming(listener)
            .graceful(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .run()
            .await;
    });
    tracing::info!(%addr, data_dir = %app.config.server.data_dir.display(), "confab is listening");
    Ok(Running {
        addr,
        app,
        stop,
        http,
        admin,
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
