//! Starting and stopping the whole server: store, hub, HTTP/WebSocket
//! listener and admin socket, with a designed shutdown.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
    #[error("cluster: {0}")]
    Cluster(#[from] crate::store::engine::EngineError),
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
        // Only now: a write still in flight (a retention pass that began
        // before the stop) finishes when this node applies it, so the log
        // is followed until the app's other holders have let go.
        if let Some(link) = app.store.link() {
            link.stop();
        }
        // The indexer commits what it holds and lets go of the store file.
        let indexer = app.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(s) = indexer.search_index() {
                s.stop();
            }
        })
        .await;
        drop(app);
        let _ = tokio::task::spawn_blocking(move || closed.wait(Duration::from_secs(5))).await;
    }
}

/// A cluster node serves once it has applied the log as far as it reached
/// when the node started: before that, its answers would be older than
/// what clients already saw elsewhere.
async fn catch_up(app: &Arc<App>, engine: &crate::store::engine::Engine) -> Result<(), ServeError> {
    let target = engine.last_position().await?;
    let Some(link) = app.store.link() else {
        return Ok(());
    };
    if link.applied() < target {
        tracing::info!(
            from = link.applied(),
            to = target,
            "cluster: applying the log before serving"
        );
    }
    link.wait_applied(target).await;
    Ok(())
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
    let tightened =
        crate::perms::secure_dir(&config.server.data_dir).map_err(|e| ServeError::Bind {
            addr: config.server.data_dir.display().to_string(),
            source: e,
        })?;
    for l in &tightened {
        tracing::warn!(
            path = %l.path.display(),
            was = format!("{:o}", l.mode),
            "others could reach this path in the data directory; access taken away"
        );
    }
    let (app, cluster) = if config.cluster.enabled() {
        let engine = crate::store::engine::Engine::connect(config.cluster.engine()).await?;
        let (app, peers) = App::open_in_cluster(config, engine.clone()).await?;
        catch_up(&app, &engine).await?;
        (app, Some((engine, peers)))
    } else {
        (App::open(config)?, None)
    };
    app.start_search()?;
    app.start_previews();
    let listener = listen(addr).map_err(|source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let (stop, stopped) = watch::channel(false);
    if let Some((engine, peers)) = cluster {
        let url = format!(
            "{}://{addr}",
            if app.config.server.tls_cert.is_some() {
                "https"
            } else {
                "http"
            }
        );
        crate::cluster::start(app.clone(), engine, url, peers, stopped.clone()).await?;
    }
    if app.config.push.enabled {
        app.push_init().await?;
        crate::app::push::spawn_delivery(app.clone(), stopped.clone());
    }
    crate::app::webhooks::spawn_delivery(app.clone(), stopped.clone());
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
    let http = tokio::spawn(accept_loop(
        listener,
        app.clone(),
        routes,
        tls.clone(),
        stopped.clone(),
    ));
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
/// runs, count connections per address before reading from them, and keep
/// each connection's clocks.
async fn accept_loop<F>(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
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
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    let clocks = Clocks::new(&app.config.server);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // hyper starts this clock whenever it waits for a request head: after
    // the version is known, and again each time a keep-alive connection
    // goes idle, so it also bounds the wait for the next request.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(clocks.header);
    let builder = Arc::new(builder);
    let refusing = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Every connection task holds a sender; `recv` ends when the last goes.
    let (alive, mut all_ended) = tokio::sync::mpsc::channel::<()>(1);
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
        // An IPv4 client of a dual-stack listener is the same client, for
        // the limits and `trusted_proxies`, as over IPv4.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        // A proxy's connections carry many clients: they count toward the
        // total only (ws.rs holds an upgrade through one to the forwarded
        // client's address).
        let key = (!app.config.server.trusted_proxies.contains(&peer.ip())).then_some(peer.ip());
        let slot = match app.limits.connections.open(key) {
            Ok(slot) => Arc::new(slot),
            Err(why) => {
                app.metrics.reject("connection_limit");
                tracing::debug!(%peer, why, "connection refused");
                refuse(tcp, why, tls.is_some(), &refusing);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(
            Accepted { tcp, peer, slot },
            builder.clone(),
            routes.clone(),
            tls.clone(),
            clocks,
            stop.clone(),
            alive.clone(),
        ));
    }
    drop(listener);
    drop(alive);
    // Idle keep-alive connections close at once; busy ones finish first.
    let _ = tokio::time::timeout(Duration::from_secs(10), all_ended.recv()).await;
}

/// Refused connections answered at once; past this many, more are
/// dropped unanswered, so a crowd cannot hold descriptors through refusals.
const MAX_REFUSING: usize = 64;

/// Ends a connection over the limits. A plain HTTP client (a WebSocket
/// upgrade included) is told why with a 429, as it would be for any other
/// limit, before it has even finished its request; what it sends is then
/// read and dropped for a moment, because closing a socket with unread
/// data resets it and the answer can be lost. Over TLS, or when many
/// refusals are already in flight, it is simply closed.
fn refuse(
    mut tcp: tokio::net::TcpStream,
    why: &str,
    tls: bool,
    refusing: &Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if tls || refusing.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSING {
        if !tls {
            refusing.fetch_sub(1, Ordering::Relaxed);
        }
        return;
    }
    let code = crate::protocol::ErrorCode::RateLimited;
    let body = crate::edge::error_body(code, why).to_string();
    let answer = format!(
        "HTTP/1.1 {} Too Many Requests\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        code.status(),
        body.len()
    );
    let refusing = refusing.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let mut buf = [0u8; 2048];
            tcp.write_all(answer.as_bytes()).await?;
            tcp.shutdown().await?;
            while tcp.read(&mut buf).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
        refusing.fetch_sub(1, Ordering::Relaxed);
    });
}

/// An accepted connection and the slot it holds for its whole life.
struct Accepted {
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: Arc<crate::limits::ConnSlot>,
}

type ConnBuilder = hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>;

/// One connection's task: the TLS handshake if any, then HTTP under the
/// connection's clocks. An upgrade ends it; the WebSocket task then holds
/// the slot (it reaches ws.rs in the request's extensions).
async fn serve_connection<F>(
    conn: Accepted,
    builder: Arc<ConnBuilder>,
    routes: F,
    tls: Option<Arc<crate::tls::Tls>>,
    clocks: Clocks,
    stop: watch::Receiver<bool>,
    _alive: tokio::sync::mpsc::Sender<()>,
) where
    F: warp::Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
        + Clone
        + Send
        + Sync
        + 'static,
{
    use hyper_util::rt::TokioIo;
    let Accepted { tcp, peer, slot } = conn;
    let activity = Arc::new(Activity::new());
    let svc = hyper_util::service::TowerToHyperService::new(WithPeer {
        inner: warp::service(routes),
        peer,
        slot,
        activity: activity.clone(),
    });
    let io = Watched {
        io: tcp,
        activity: activity.clone(),
    };
    let result = match tls {
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            keep_clocks(conn, &activity, clocks, stop).await
        }
        Some(tls) => {
            // The handshake counts toward the time allowed for the first
            // request head.
            let handshake = tls.acceptor().accept(io);
            let first_head_by = activity.start + clocks.header;
            let Ok(Ok(stream)) = tokio::time::timeout_at(first_head_by, handshake).await else {
                return;
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            keep_clocks(conn, &activity, clocks, stop).await
        }
    };
    activity.watched.store(false, Ordering::Relaxed);
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The timeouts of an HTTP connection, from `server.*`.
#[derive(Clone, Copy, Debug)]
struct Clocks {
    header: Duration,
    idle: Duration,
}

impl Clocks {
    fn new(c: &crate::config::ServerConfig) -> Clocks {
        Clocks {
            header: Duration::from_millis(c.header_read_timeout_ms),
            idle: Duration::from_millis(c.idle_timeout_ms),
        }
    }
}

/// What the clocks make of a connection at a given moment.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Nothing is due before this instant.
    Fine(tokio::time::Instant),
    /// Stop taking requests: close now if between requests, else after
    /// the answer.
    WindDown,
    /// Drop the connection: nothing is in progress that the client is
    /// still taking part in.
    Close,
}

/// When bytes last moved on a connection, kept by [`Watched`] and read by
/// [`keep_clocks`].
struct Activity {
    start: tokio::time::Instant,
    /// Milliseconds from `start` to the last byte read or written.
    last_ms: AtomicU64,
    /// The last write waited for the client to read.
    write_blocked: AtomicBool,
    /// A request head has arrived (set by [`WithPeer`]).
    requested: AtomicBool,
    /// The clocks still run: false once the HTTP connection has ended,
    /// most often by becoming a WebSocket, whose every read and write would
    /// otherwise pay for a clock nobody looks at.
    watched: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            requested: AtomicBool::new(false),
            watched: AtomicBool::new(true),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn verdict(&self, now: tokio::time::Instant, clocks: Clocks) -> Verdict {
        let requested = self.requested.load(Ordering::Relaxed);
        // hyper's header clock starts only once the protocol is known (the
        // auto builder reads the first bytes itself), so the first head's
        // deadline is kept here: a client that sends nothing, or a few
        // bytes, is not waited for.
        let first_head_by = self.start + clocks.header;
        if !requested && now >= first_head_by {
            return Verdict::Close;
        }
        let idle_at =
            self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + clocks.idle;
        if now >= idle_at {
            // A client that stopped reading its answer would hold a
            // graceful close open forever.
            return if self.write_blocked.load(Ordering::Relaxed) {
                Verdict::Close
            } else {
                Verdict::WindDown
            };
        }
        Verdict::Fine(if requested {
            idle_at
        } else {
            idle_at.min(first_head_by)
        })
    }
}

/// Drives an HTTP connection to its end, applying the clocks hyper does
/// not keep (see [`Activity::verdict`]) and the server's stop.
async fn keep_clocks<C>(
    conn: C,
    activity: &Activity,
    clocks: Clocks,
    mut stop: watch::Receiver<bool>,
) -> Result<(), C::Error>
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    let check = tokio::time::sleep_until(activity.start + clocks.header.min(clocks.idle));
    let mut check = std::pin::pin!(check);
    let mut winding_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => return result,
            _ = stop.wait_for(|s| *s), if !winding_down => {
                conn.as_mut().graceful_shutdown();
                winding_down = true;
            }
            _ = check.as_mut() => {
                let now = tokio::time::Instant::now();
                match activity.verdict(now, clocks) {
                    Verdict::Fine(next) => check.as_mut().reset(next),
                    Verdict::Close => return Ok(()),
                    Verdict::WindDown => {
                        if !winding_down {
                            conn.as_mut().graceful_shutdown();
                            winding_down = true;
                        }
                        // A request still in progress is the server's
                        // work; look again only for a client that stops
                        // reading its answer.
                        check.as_mut().reset(now + clocks.idle);
                    }
                }
            }
        }
    }
}

/// A connection's socket that records in [`Activity`] when bytes move.
/// It stays under an upgraded WebSocket too, where it records nothing.
struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && self.activity.watched.load(Ordering::Relaxed)
        {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> Watched<T> {
    fn wrote(&self, polled: &Poll<std::io::Result<usize>>) {
        if !self.activity.watched.load(Ordering::Relaxed) {
            return;
        }
        match polled {
            Poll::Pending => self.activity.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(result) => {
                self.activity.write_blocked.store(false, Ordering::Relaxed);
                if matches!(result, Ok(n) if *n > 0) {
                    self.activity.touch();
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Tags each request with its connection's peer address and connection
/// slot (`Arc<ConnSlot>`, which a WebSocket upgrade keeps), and notes that
/// a request head arrived.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
    slot: Arc<crate::limits::ConnSlot>,
    activity: Arc<Activity>,
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
        self.activity.requested.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(crate::edge::Peer(self.peer));
        req.extensions_mut().insert(self.slot.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    const CLOCKS: Clocks = Clocks {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[test]
    fn a_connection_without_a_request_goes_at_the_header_deadline() {
        let a = Activity::new();
        let at = |s| a.start + Duration::from_secs(s);
        assert_eq!(a.verdict(at(9), CLOCKS), Verdict::Fine(at(10)));
        // Bytes that are not a whole head do not buy time.
        a.last_ms.store(9_000, Ordering::Relaxed);
        assert_eq!(a.verdict(at(10), CLOCKS), Verdict::Close);
        a.requested.store(true, Ordering::Relaxed);
        assert_eq!(a.verdict(at(10), CLOCKS), Verdict::Fine(at(69)));
    }

    #[test]
    fn silence_winds_down_unless_the_client_stopped_reading() {
        let a = Activity::new();
        let at = |s| a.start + Duration::from_secs(s);
        a.requested.store(true, Ordering::Relaxed);
        a.last_ms.store(5_000, Ordering::Relaxed);
        assert_eq!(a.verdict(at(64), CLOCKS), Verdict::Fine(at(65)));
        assert_eq!(a.verdict(at(65), CLOCKS), Verdict::WindDown);
        a.write_blocked.store(true, Ordering::Relaxed);
        assert_eq!(a.verdict(at(65), CLOCKS), Verdict::Close);
    }
}
