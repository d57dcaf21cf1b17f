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
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A running server. Tests start one on `127.0.0.1:0` and read `addr`.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    /// The TLS configuration when serving HTTPS, to reload by hand.
    pub tls: Option<Arc<crate::tls::Tls>>,
    stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    admin: JoinHandle<()>,
}

impl Running {
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
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
/// 1024), plus TCP_NODELAY, which Linux copies to every accepted socket
/// (the accept loop sets it again, in case a platform does not). Without
/// it the second of two small frames written back to back (an ack, then
/// its message event) waits for the client's delayed ACK, about 40 ms.
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
    let scheme = match (&app.config.server.tls_cert, &app.config.server.tls_key) {
        (Some(_), Some(_)) => "https",
        _ => "http",
    };
    let listening = crate::admin::Listening {
        addr,
        url: format!("{scheme}://{addr}"),
    };
    let admin = tokio::spawn(crate::admin::serve(app.clone(), admin_listener, listening));
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
    // The WebSocket heartbeat: pings, and closes for clients gone silent,
    // one slice of the sessions at a time so the pings are spread over
    // the interval.
    const SLICES: u64 = 50;
    let beat_hub = app.hub.clone();
    let interval = app.config.ws.heartbeat_interval_ms.max(1);
    let dead_after = Duration::from_millis(interval + app.config.ws.heartbeat_timeout_ms);
    let every = Duration::from_micros((interval * 1000 / SLICES).max(1000));
    let mut beat_stop = stopped.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut slice = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    beat_hub.heartbeat(slice, SLICES, dead_after);
                    slice = (slice + 1) % SLICES;
                }
                _ = beat_stop.wait_for(|s| *s) => break,
            }
        }
    });
    // Retention and the removal of unused uploads, now and then, in small
    // transactions.
    let keeper = app.clone();
    let mut keeper_stop = stopped.clone();
    tokio::spawn(async move {
        let every = Duration::from_secs(keeper.config.store.retention_interval_secs.max(1));
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = keeper.apply_retention(crate::domain::now_ms()).await {
                        tracing::error!(error = %e, "retention failed");
                    }
                    if let Err(e) = keeper.gc_uploads(keeper.config.uploads.gc_grace_secs).await {
                        tracing::error!(error = %e, "upload clean-up failed");
                    }
                }
                _ = keeper_stop.changed() => break,
            }
        }
    });
    let tls = match (&app.config.server.tls_cert, &app.config.server.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::Tls::open(cert, key)?),
        _ => None,
    };
    if let Some(tls) = &tls {
        watch_certificate(tls.clone(), stopped.clone());
    }
    let routes = crate::http::routes(app.clone());
    let http = tokio::spawn(accept_loop(listener, routes, tls.clone(), stopped.clone()));
    tracing::info!(%addr, data_dir = %app.config.server.data_dir.display(), "confab is listening");
    Ok(Running {
        addr,
        app,
        tls,
        stop,
        http,
        admin,
    })
}

/// Serves HTTP (and WebSocket upgrades) on `listener`, over TLS when
/// configured, until `stop` turns true; then lets open requests finish.
/// confab runs its own accept loop rather than `warp::serve` so that the
/// same loop can terminate TLS with a certificate that changes while it
/// runs.
async fn accept_loop<F>(
    listener: tokio::net::TcpListener,
    routes: F,
    tls: Option<Arc<crate::tls::Tls>>,
    mut stop: watch::Receiver<bool>,
) where
    F: warp::Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
        + Clone
        + Send
        + Sync
        + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(WithPeer {
            inner: warp::service(routes.clone()),
            peer,
        });
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                    watcher.watch(conn.into_owned()).await
                }
                Some(tls) => {
                    let handshake = tls.acceptor().accept(tcp);
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), handshake).await
                    else {
                        return;
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Idle keep-alive connections close at once; busy ones finish first.
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

/// The peer's address, for the filters (`http::peer`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> tower_service::Service<warp::http::Request<B>> for WithPeer<S>
where
    S: tower_service::Service<warp::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: warp::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(Peer(self.peer));
        self.inner.call(req)
    }
}

/// Reloads the certificate on SIGHUP, and when its files change.
fn watch_certificate(tls: Arc<crate::tls::Tls>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut poll = tokio::time::interval(Duration::from_secs(5));
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = hangup => {
                    if let Err(e) = tls.reload() {
                        tracing::error!(error = %e, "SIGHUP: keeping the old TLS certificate");
                    }
                }
                _ = poll.tick() => tls.reload_if_changed(),
                _ = stop.changed() => break,
            }
        }
    });
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
