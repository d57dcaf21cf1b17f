//! Everything confab says to NATS in cluster mode.
//!
//! In cluster mode several confab nodes share one NATS JetStream cluster.
//! Every write becomes a command appended to one replicated log (a
//! JetStream stream); every node follows that log in order and applies it
//! to its own redb, so the nodes' stores are projections of the same log.
//! Beside the log the engine keeps what is not part of that projection:
//! the list of live nodes (a KV bucket whose entries expire), values every
//! node must share (a replicated KV bucket), upload files (an object store)
//! and ephemeral events between nodes (core NATS, no persistence).
//!
//! This module knows nothing of what a command means: payloads are bytes.
//! Its errors say only what the caller must decide on: `Unavailable` (no
//! quorum, nothing reachable in time: answer the client `unavailable` and
//! let it retry), `TooOld`, and everything else.
//!
//! Names: every resource carries the namespace, so several confab clusters
//! (or many tests) can share one NATS cluster. For namespace `confab` the
//! log is stream `CONFAB_LOG` on subject `confab.log`, the buckets are
//! `confab_nodes`, `confab_meta` and `confab_uploads`, events go on
//! `confab.ev.<topic>`.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::{
    self, ErrorCode,
    consumer::{DeliverPolicy, pull},
    context::{CreateStreamErrorKind, GetStreamErrorKind, PublishErrorKind},
    kv,
    message::PublishMessage,
    object_store,
    stream::{self, StorageType},
};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};

/// The oldest nats-server confab works with, and why: the node list needs
/// KV limit markers (2.11) to see a node's entry expire.
const MIN_SERVER: (u32, u32) = (2, 11);
/// How long the log remembers a command id (`Nats-Msg-Id`): a retried
/// append within this window is recognised and answered with the first
/// append's position instead of being logged twice. Retries stop after
/// `append_timeout` (seconds), so two minutes is ample.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The header that names the node an event came from, so a node does not
/// hear its own events (it has fanned them out locally already).
const EVENT_NODE_HEADER: &str = "Confab-Node";
/// Entries a follower may have read ahead of the applier. Bounded so a slow
/// applier slows the reading instead of filling memory.
const FOLLOW_BUFFER: usize = 1024;
/// Longest pause between two attempts to (re)create the log's consumer.
const FOLLOW_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest pause between two append attempts.
const APPEND_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How to reach the engine and what to call things in it.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Client URLs of some or all NATS members (`nats://host:port`). The
    /// client learns the others from the server.
    pub urls: Vec<String>,
    /// This node's name: its key in the node list and the origin of its
    /// events. Letters, digits, `-`, `_`, `=`, `/` and inner dots.
    pub node: String,
    /// How many copies the engine keeps of the log, the shared values and
    /// the uploads. Capped to what the NATS cluster can hold (1 on a
    /// server outside a cluster). Only applies when the resources are
    /// first created: an existing log keeps its replica count.
    pub replicas: usize,
    /// Prefix of every resource name, so several confab clusters can share
    /// one NATS cluster. "confab" unless a test or an operator says
    /// otherwise.
    pub namespace: String,
    /// How long [`Engine::append`] keeps retrying before it answers
    /// `Unavailable`: a leader election takes about 5 s, so 10 s rides
    /// one out.
    pub append_timeout: Duration,
    /// How long one append attempt waits for its acknowledgement. Short,
    /// because a lost ack (a member killed mid-publish) is only ever
    /// answered by this timeout, and the retry with the same id is safe.
    pub ack_timeout: Duration,
    /// Bound of every other JetStream request (info, KV, object store).
    pub request_timeout: Duration,
    /// How long [`Engine::connect`] tries to reach a server and create the
    /// resources before it answers `Unavailable`.
    pub connect_timeout: Duration,
    /// How long a node stays in the node list after its last heartbeat.
    /// Only applies when the node bucket is first created.
    pub node_ttl: Duration,
    /// Bound of one whole object upload or download.
    pub object_timeout: Duration,
}

impl EngineConfig {
    /// The defaults for a node named `node` reaching the engine at `urls`.
    pub fn new(urls: Vec<String>, node: impl Into<String>) -> EngineConfig {
        EngineConfig {
            urls,
            node: node.into(),
            replicas: 3,
            namespace: "confab".into(),
            append_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(15),
            node_ttl: Duration::from_secs(5),
            object_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "nats-server {found} is too old: confab needs 2.11 or newer (the node list relies on KV limit markers, new in 2.11, to see a node's entry expire)"
    )]
    TooOld { found: String },
    /// No quorum, or nothing reachable in time. The caller answers its
    /// client `unavailable`; nothing was decided.
    #[error("the engine is unavailable: {0}")]
    Unavailable(String),
    #[error("engine error: {0}")]
    Other(String),
}

/// Resource names derived from the namespace.
#[derive(Debug, Clone)]
struct Names {
    log_stream: String,
    log_subject: String,
    nodes_bucket: String,
    meta_bucket: String,
    uploads_bucket: String,
    events_prefix: String,
}

impl Names {
    /// Stream and bucket names allow letters, digits, `_` and `-`, and
    /// subjects split on dots, so everything else becomes `_`. Streams are
    /// upper-case by JetStream custom, buckets and subjects lower-case.
    fn new(namespace: &str) -> Result<Names, EngineError> {
        if namespace.is_empty() || namespace.len() > 64 {
            return Err(EngineError::Other(format!(
                "the namespace must be 1 to 64 characters, not {namespace:?}"
            )));
        }
        let ns: String = namespace
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        Ok(Names {
            log_stream: format!("{}_LOG", ns.to_ascii_uppercase()),
            log_subject: format!("{ns}.log"),
            nodes_bucket: format!("{ns}_nodes"),
            meta_bucket: format!("{ns}_meta"),
            uploads_bucket: format!("{ns}_uploads"),
            events_prefix: format!("{ns}.ev."),
        })
    }
}

/// The handle every part of a node shares: cheap to clone (one connection
/// underneath, reconnecting by itself).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: EngineConfig,
    names: Names,
    client: async_nats::Client,
    /// For API requests, KV and objects: bounded by `request_timeout`.
    js: jetstream::Context,
    /// For appends: bounded by `ack_timeout` per attempt.
    js_append: jetstream::Context,
    nodes: kv::Store,
    meta: kv::Store,
    uploads: object_store::ObjectStore,
    /// The replica count asked of the NATS cluster for new resources.
    replicas: usize,
    /// The highest position this engine's appends were acknowledged at: a
    /// follower that has not delivered it soon after is stuck.
    appended: AtomicU64,
}

impl Engine {
    /// Connects to the engine and makes sure the log, the buckets and the
    /// object store exist (creating what is missing; another node creating
    /// them at the same moment is fine). Keeps trying for
    /// `connect_timeout` while nothing answers or there is no quorum, so
    /// nodes and NATS can start in any order; then `Unavailable`.
    pub async fn connect(cfg: EngineConfig) -> Result<Engine, EngineError> {
        let names = Names::new(&cfg.namespace)?;
        if !valid_key(&cfg.node) {
            return Err(EngineError::Other(format!(
                "node name {:?} is not usable as a key: use letters, digits, '-', '_', '=', '/' and inner dots",
                cfg.node
            )));
        }
        if cfg.urls.is_empty() {
            return Err(EngineError::Other("no NATS url given".into()));
        }
        let deadline = Instant::now() + cfg.connect_timeout;
        let node = cfg.node.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("confab-{}", cfg.node))
            // Keep trying while no member is up yet: a node may start
            // before the engine does.
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .event_callback(move |event| {
                let node = node.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(node, "connected to the engine")
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(node, "disconnected from the engine, reconnecting")
                        }
                        other => tracing::warn!(node, "engine connection: {other}"),
                    }
                }
            })
            .connect(cfg.urls.as_slice())
            .await
            .map_err(|e| EngineError::Other(format!("connecting to {:?}: {e}", cfg.urls)))?;
        // With retry_on_initial_connect, connect returns before the
        // handshake and server_info is empty until a flush went through.
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            client.flush(),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(EngineError::Unavailable(format!("connecting: {e}"))),
            Err(_) => {
                return Err(EngineError::Unavailable(format!(
                    "no NATS server answered at {:?} within {:?}",
                    cfg.urls, cfg.connect_timeout
                )));
            }
        }
        let info = client.server_info();
        check_version(&info.version)?;
        if !info.jetstream {
            return Err(EngineError::Other(format!(
                "JetStream is not enabled on nats-server {} ({}): start it with a jetstream block",
                info.server_name, info.version
            )));
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(cfg.request_timeout)
            .build(client.clone());
        let js_append = jetstream::ContextBuilder::new()
            .timeout(cfg.ack_timeout)
            .build(client.clone());

        let mut backoff = Duration::from_millis(100);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = timeout(left, create_resources(&js, &cfg, &names, &info))
                .await
                .unwrap_or_else(|_| Err(EngineError::Unavailable("no answer in time".into())));
            match attempt {
                Ok((replicas, nodes, meta, uploads)) => {
                    return Ok(Engine {
                        inner: Arc::new(Inner {
                            cfg,
                            names,
                            client,
                            js,
                            js_append,
                            nodes,
                            meta,
                            uploads,
                            replicas,
                            appended: AtomicU64::new(0),
                        }),
                    });
                }
                Err(EngineError::Unavailable(why)) => {
                    if Instant::now() + backoff >= deadline {
                        return Err(EngineError::Unavailable(format!(
                            "setting up the log and buckets: {why}"
                        )));
                    }
                    tracing::debug!("engine not ready yet: {why}");
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends one command and returns its log position once a quorum of
    /// the engine holds it (the PubAck). `id` goes in `Nats-Msg-Id`, so an
    /// attempt whose ack was lost can be retried without logging the
    /// command twice: the log answers a duplicate with the first position.
    /// Retries with backoff on timeouts and on "no responders" (no stream
    /// leader during an election) for up to `append_timeout`, then
    /// `Unavailable`: the command may or may not be in the log then, and an
    /// append with the same id within the duplicate window finds out.
    pub async fn append(&self, id: u128, payload: Bytes) -> Result<u64, EngineError> {
        let i = &self.inner;
        let msg_id = format!("{id:032x}");
        let deadline = Instant::now() + i.cfg.append_timeout;
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = async {
                i.js_append
                    .send_publish(
                        i.names.log_subject.clone(),
                        PublishMessage::build()
                            .payload(payload.clone())
                            .message_id(&msg_id),
                    )
                    .await?
                    .await
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let why = match timeout(left, attempt).await {
                Ok(Ok(ack)) => {
                    i.appended.fetch_max(ack.sequence, Ordering::Relaxed);
                    return Ok(ack.sequence);
                }
                Ok(Err(e)) => match e.kind() {
                    // Never better on a retry.
                    PublishErrorKind::MaxPayloadExceeded
                    | PublishErrorKind::WrongLastSequence
                    | PublishErrorKind::WrongLastMessageId => {
                        return Err(EngineError::Other(format!("appending: {e}")));
                    }
                    // StreamNotFound is "no responders": no leader for the
                    // log right now, not a deleted stream.
                    _ => e.to_string(),
                },
                Err(_) => "no acknowledgement".to_string(),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(EngineError::Unavailable(format!(
                    "the log did not take the command within {:?} (last: {why})",
                    i.cfg.append_timeout
                )));
            }
            tracing::debug!("append {msg_id} failed, retrying: {why}");
            sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(APPEND_MAX_BACKOFF);
        }
    }

    /// Every log entry after position `after`, in order and without gaps,
    /// forever: `(position, payload)`. A spawned task reads the log with an
    /// ordered consumer (ephemeral, no acks; the position the caller
    /// applied lives in its own store) and recreates it from the last
    /// delivered position after any error, so an outage is a pause, never
    /// a gap or a repeat; a consumer that is stuck without an error is
    /// noticed too (see `Watchdog`). The task ends when the receiver is
    /// dropped. The buffer is bounded: a slow reader slows the reading.
    /// Call it inside a Tokio runtime: the task is spawned on it.
    pub fn follow(&self, after: u64) -> mpsc::Receiver<(u64, Bytes)> {
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        let engine = self.clone();
        tokio::spawn(async move { engine.follow_task(after, tx).await });
        rx
    }

    async fn follow_task(self, after: u64, tx: mpsc::Sender<(u64, Bytes)>) {
        let i = &self.inner;
        let mut last = after;
        let mut backoff = Duration::from_millis(100);
        loop {
            let deliver_policy = if last == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: last + 1,
                }
            };
            let opened = async {
                let stream = i.js.get_stream_no_info(&i.names.log_stream).await?;
                let consumer = stream
                    .create_consumer(pull::OrderedConfig {
                        deliver_policy,
                        ..Default::default()
                    })
                    .await?;
                Ok::<_, async_nats::Error>(consumer.messages().await?)
            };
            let mut watchdog = Watchdog::new();
            let why = match tokio::select! {
                _ = tx.closed() => return,
                opened = opened => opened,
            } {
                Err(e) => format!("opening the log from {}: {e}", last + 1),
                Ok(mut messages) => loop {
                    let next = tokio::select! {
                        _ = tx.closed() => return,
                        next = messages.next() => next,
                        _ = watchdog.tick() => match watchdog.stalled(&self, last).await {
                            Some(why) => break why,
                            None => continue,
                        },
                    };
                    let message = match next {
                        None => break "the log's consumer ended".to_string(),
                        Some(Err(e)) => break format!("reading the log after {last}: {e}"),
                        Some(Ok(m)) => m,
                    };
                    let seq = match message.info() {
                        Ok(info) => info.stream_sequence,
                        Err(e) => break format!("a log entry without metadata: {e}"),
                    };
                    if seq <= last {
                        // Read again after a recreation: already delivered.
                        continue;
                    }
                    if seq != last + 1 {
                        // Only if entries were removed from the log, which
                        // confab never does: say so loudly, go on.
                        tracing::error!(
                            "the log skips from {last} to {seq}: entries were removed from stream {}",
                            i.names.log_stream
                        );
                    }
                    last = seq;
                    watchdog.progress();
                    backoff = Duration::from_millis(100);
                    if tx.send((seq, message.payload.clone())).await.is_err() {
                        return;
                    }
                },
            };
            tracing::warn!("following the log: {why}; reopening in {backoff:?}");
            tokio::select! {
                _ = tx.closed() => return,
                _ = sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(FOLLOW_MAX_BACKOFF);
        }
    }

    /// The highest position an append of this engine was acknowledged at.
    fn appended(&self) -> u64 {
        self.inner.appended.load(Ordering::Relaxed)
    }

    /// The log's last position: the caller is caught up once it has
    /// applied this far. 0 for an empty log.
    pub async fn last_position(&self) -> Result<u64, EngineError> {
        let i = &self.inner;
        let stream =
            i.js.get_stream(&i.names.log_stream)
                .await
                .map_err(|e| match e.kind() {
                    GetStreamErrorKind::JetStream(je) if !transient(&je) => {
                        EngineError::Other(format!("reading the log's state: {e}"))
                    }
                    _ => EngineError::Unavailable(format!("reading the log's state: {e}")),
                })?;
        Ok(stream.cached_info().state.last_sequence)
    }

    /// Publishes an ephemeral event to the other nodes on
    /// `<ns>.ev.<topic>`: core NATS, no persistence, no acknowledgement.
    /// A node that is disconnected misses it; typing and presence nudges
    /// are fine with that. `topic` is one or more dot-separated tokens.
    pub async fn publish_event(&self, topic: &str, payload: Bytes) -> Result<(), EngineError> {
        let i = &self.inner;
        if !valid_topic(topic) {
            return Err(EngineError::Other(format!(
                "event topic {topic:?} is not dot-separated tokens without spaces or wildcards"
            )));
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(EVENT_NODE_HEADER, i.cfg.node.as_str());
        i.client
            .publish_with_headers(
                format!("{}{topic}", i.names.events_prefix),
                headers,
                payload,
            )
            .await
            .map_err(|e| EngineError::Unavailable(format!("publishing an event: {e}")))
    }

    /// Events from the other nodes, as `(topic, payload)`, from now on. This
    /// node's own events are left out: it fanned them out locally. The
    /// subscription survives reconnects; events published while it was
    /// disconnected are lost.
    pub async fn events(
        &self,
    ) -> Result<impl futures_util::Stream<Item = (String, Bytes)> + Send + Unpin + use<>, EngineError>
    {
        let i = &self.inner;
        let subscriber = i
            .client
            .subscribe(format!("{}>", i.names.events_prefix))
            .await
            .map_err(|e| EngineError::Unavailable(format!("subscribing to events: {e}")))?;
        // Once the server has the subscription, events published through it
        // afterwards reach us; other servers learn of it over their routes
        // a moment later.
        match timeout(i.cfg.request_timeout, i.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(EngineError::Unavailable(format!(
                    "subscribing to events: {e}"
                )));
            }
            Err(_) => {
                return Err(EngineError::Unavailable(
                    "subscribing to events: timed out".into(),
                ));
            }
        }
        let prefix = i.names.events_prefix.clone();
        let node = i.cfg.node.clone();
        Ok(subscriber.filter_map(move |m| {
            let from_self = m
                .headers
                .as_ref()
                .and_then(|h| h.get(EVENT_NODE_HEADER))
                .is_some_and(|v| v.as_str() == node);
            let topic = m.subject.as_str().strip_prefix(prefix.as_str());
            let item = match topic {
                Some(topic) if !from_self => Some((topic.to_string(), m.payload)),
                _ => None,
            };
            futures_util::future::ready(item)
        }))
    }

    /// Puts this node's status blob under its name in the node list. The
    /// entry expires `node_ttl` after the last heartbeat (call this every
    /// third of that, see [`Engine::heartbeat_interval`]), so a node that
    /// stops or is cut off leaves the list by itself.
    pub async fn heartbeat(&self, blob: Bytes) -> Result<(), EngineError> {
        let i = &self.inner;
        with_retries(i.cfg.request_timeout, "heartbeat", || async {
            match i.nodes.put(&i.cfg.node, blob.clone()).await {
                Ok(_) => Try::Done(()),
                Err(e) => Try::Again(e.to_string()),
            }
        })
        .await
    }

    /// How often to call [`Engine::heartbeat`]: a third of the node TTL, so
    /// one or two lost heartbeats do not drop a live node.
    pub fn heartbeat_interval(&self) -> Duration {
        self.inner.cfg.node_ttl / 3
    }

    /// The nodes in the list now, with their latest status blob.
    pub async fn nodes(&self) -> Result<Vec<(String, Bytes)>, EngineError> {
        let i = &self.inner;
        with_retries(i.cfg.request_timeout, "listing nodes", || async {
            let list = async {
                let mut keys = i.nodes.keys().await?;
                let mut out = Vec::new();
                while let Some(key) = keys.next().await {
                    let key = key?;
                    // Gone between the listing and the read: not live.
                    if let Some(blob) = i.nodes.get(key.as_str()).await? {
                        out.push((key, blob));
                    }
                }
                Ok::<_, async_nats::Error>(out)
            };
            match list.await {
                Ok(list) => Try::Done(list),
                Err(e) => Try::Again(e.to_string()),
            }
        })
        .await
    }

    /// The node list as it changes: first every node's current entry, then
    /// `(node, Some(blob))` on each heartbeat and `(node, None)` when its
    /// entry is deleted, purged or expires. A spawned task keeps the watch
    /// open across errors, and checks the nodes it believes live against
    /// the bucket's listing after a reopen and every two node TTLs, so the
    /// stream is right again after an outage even if it missed a node's
    /// expiry. A node may be reported live more than once.
    pub async fn watch_nodes(
        &self,
    ) -> Result<
        impl futures_util::Stream<Item = (String, Option<Bytes>)> + Send + Unpin + use<>,
        EngineError,
    > {
        let watch = self.open_node_watch().await?;
        let (tx, rx) = mpsc::channel(256);
        let engine = self.clone();
        tokio::spawn(async move { engine.watch_nodes_task(watch, tx).await });
        Ok(Feed { rx })
    }

    async fn open_node_watch(&self) -> Result<kv::Watch, EngineError> {
        let i = &self.inner;
        match timeout(i.cfg.request_timeout, i.nodes.watch_with_history(">")).await {
            Ok(Ok(w)) => Ok(w),
            Ok(Err(e)) => Err(EngineError::Unavailable(format!("watching nodes: {e}"))),
            Err(_) => Err(EngineError::Unavailable("watching nodes: timed out".into())),
        }
    }

    async fn watch_nodes_task(
        self,
        mut watch: kv::Watch,
        tx: mpsc::Sender<(String, Option<Bytes>)>,
    ) {
        // Each node the stream last said is live, and when its latest
        // entry came.
        let mut live: HashMap<String, Instant> = HashMap::new();
        let mut backoff = Duration::from_millis(200);
        let mut audit = tokio::time::interval(self.inner.cfg.node_ttl * 2);
        audit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = watch.next() => next,
                    _ = audit.tick() => {
                        if !self.report_gone(&mut live, &tx).await {
                            return;
                        }
                        continue;
                    }
                };
                let entry = match next {
                    None => {
                        tracing::warn!("the node watch ended; reopening");
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::warn!("watching nodes: {e}; reopening");
                        break;
                    }
                    Some(Ok(entry)) => entry,
                };
                backoff = Duration::from_millis(200);
                let item = match entry.operation {
                    kv::Operation::Put => {
                        live.insert(entry.key.clone(), Instant::now());
                        (entry.key, Some(entry.value))
                    }
                    kv::Operation::Delete | kv::Operation::Purge => {
                        live.remove(&entry.key);
                        (entry.key, None)
                    }
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
            watch = loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                if let Ok(w) = self.open_node_watch().await {
                    break w;
                }
            };
            // The reopened watch replays the entries that exist, and expiry
            // markers only for a while: a node that left while we were
            // blind may have no marker left to see.
            if !self.report_gone(&mut live, &tx).await {
                return;
            }
        }
    }

    /// Reports gone the nodes believed live that the bucket no longer
    /// lists. The watch alone can miss an expiry: its consumer recreates
    /// itself after a hiccup from where it was, and the server removes an
    /// expiry marker after a while, so a node that expired meanwhile would
    /// stay live for good. A node whose entry came after the listing began
    /// is left alone (the listing may predate it). False when the receiver
    /// is gone.
    async fn report_gone(
        &self,
        live: &mut HashMap<String, Instant>,
        tx: &mpsc::Sender<(String, Option<Bytes>)>,
    ) -> bool {
        if live.is_empty() {
            return true;
        }
        let started = Instant::now();
        let Ok(listed) = self.nodes().await else {
            return true;
        };
        let listed: HashSet<String> = listed.into_iter().map(|(n, _)| n).collect();
        let gone: Vec<String> = live
            .iter()
            .filter(|(node, seen)| **seen < started && !listed.contains(*node))
            .map(|(node, _)| node.clone())
            .collect();
        for node in gone {
            live.remove(&node);
            if tx.send((node, None)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// A value every node must share, such as the token signing secret:
    /// read it, or create it with `make()` if there is none yet. Creation is
    /// only-if-absent, so when nodes race the first write wins and the
    /// others read the winner's value.
    pub async fn shared_value(
        &self,
        key: &str,
        make: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, EngineError> {
        let i = &self.inner;
        if !valid_key(key) {
            return Err(EngineError::Other(format!(
                "shared value key {key:?} is not a valid key"
            )));
        }
        if let Some(v) = self.read_shared(key).await? {
            return Ok(v);
        }
        let value = make();
        let deadline = Instant::now() + i.cfg.request_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let why = match i.meta.create(key, Bytes::from(value.clone())).await {
                Ok(_) => return Ok(value),
                Err(e) => e.to_string(),
            };
            // Lost the race, or the answer was lost: whatever is there now
            // is the value. The loser can also be refused while the
            // winner's write is still in flight (error 10164, which the
            // client does not map to AlreadyExists); then there is nothing
            // to read yet, so look again shortly, and try again should the
            // winner's write have failed after all.
            if let Some(v) = self.read_shared(key).await? {
                return Ok(v);
            }
            if Instant::now() + pause >= deadline {
                return Err(EngineError::Unavailable(format!(
                    "creating shared value {key}: {why}"
                )));
            }
            sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// A shared value as the bucket's leader has it. Not the KV client's
    /// `get`: that reads from any replica, and a follower that has not yet
    /// applied the winner's write answers "absent" to the race's loser.
    async fn read_shared(&self, key: &str) -> Result<Option<Vec<u8>>, EngineError> {
        let i = &self.inner;
        let subject = format!("{}{key}", i.meta.prefix);
        match i
            .meta
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(m) => {
                let op = m.headers.get("KV-Operation").map(|v| v.as_str());
                if matches!(op, Some("DEL" | "PURGE")) {
                    Ok(None)
                } else {
                    Ok(Some(m.payload.to_vec()))
                }
            }
            Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => {
                Ok(None)
            }
            Err(e) => Err(EngineError::Unavailable(format!(
                "reading shared value {key}: {e}"
            ))),
        }
    }

    /// Stores an upload file under its (content-derived) name. Storing the
    /// same name again replaces it, which for content-addressed names
    /// changes nothing.
    pub async fn put_object(&self, name: &str, bytes: &[u8]) -> Result<(), EngineError> {
        let i = &self.inner;
        let what = format!("storing object {name}");
        with_retries(i.cfg.object_timeout, &what, || async {
            let mut reader = bytes;
            match i.uploads.put(name, &mut reader).await {
                Ok(_) => Try::Done(()),
                Err(e) if e.kind() == object_store::PutErrorKind::InvalidName => {
                    Try::Fatal(EngineError::Other(format!("object name {name:?}: {e}")))
                }
                Err(e) => Try::Again(e.to_string()),
            }
        })
        .await
    }

    /// An upload file's bytes, or `None` if there is no such object.
    pub async fn get_object(&self, name: &str) -> Result<Option<Vec<u8>>, EngineError> {
        let i = &self.inner;
        let what = format!("reading object {name}");
        with_retries(i.cfg.object_timeout, &what, || async {
            let mut object = match i.uploads.get(name).await {
                Ok(o) => o,
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => {
                    return Try::Done(None);
                }
                Err(e) => return Try::Again(e.to_string()),
            };
            let mut out = Vec::new();
            match object.read_to_end(&mut out).await {
                Ok(_) => Try::Done(Some(out)),
                Err(e) => Try::Again(e.to_string()),
            }
        })
        .await
    }

    /// Removes an upload file. Removing one that is not there is not an
    /// error: the caller wants it gone, and it is.
    pub async fn delete_object(&self, name: &str) -> Result<(), EngineError> {
        let i = &self.inner;
        let what = format!("deleting object {name}");
        with_retries(i.cfg.request_timeout, &what, || async {
            match i.uploads.delete(name).await {
                Ok(()) => Try::Done(()),
                Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Try::Done(()),
                Err(e) => Try::Again(e.to_string()),
            }
        })
        .await
    }

    /// What `confab cluster status` shows: the server this node talks to,
    /// the servers it knows of, and the log's leader and replicas. Bounded
    /// by `request_timeout`; what could not be read is named in `errors`
    /// instead of failing the whole report.
    pub async fn status(&self) -> EngineStatus {
        let i = &self.inner;
        let si = i.client.server_info();
        let mut status = EngineStatus {
            node: i.cfg.node.clone(),
            namespace: i.cfg.namespace.clone(),
            connected: self.is_connected(),
            server_name: si.server_name,
            server_version: si.version,
            cluster: si.cluster,
            server_urls: si.connect_urls,
            servers: Vec::new(),
            replicas_wanted: i.replicas,
            log: None,
            errors: Vec::new(),
        };
        match timeout(i.cfg.request_timeout, i.js.get_stream(&i.names.log_stream)).await {
            Ok(Ok(stream)) => {
                let info = stream.cached_info();
                let mut log = LogStatus {
                    stream: i.names.log_stream.clone(),
                    leader: None,
                    replicas: Vec::new(),
                    messages: info.state.messages,
                    first_position: info.state.first_sequence,
                    last_position: info.state.last_sequence,
                };
                if let Some(c) = &info.cluster {
                    log.leader = c.leader.clone();
                    if let Some(leader) = &c.leader {
                        status.servers.push(leader.clone());
                    }
                    for p in &c.replicas {
                        status.servers.push(p.name.clone());
                        log.replicas.push(ReplicaStatus {
                            name: p.name.clone(),
                            current: p.current,
                            offline: p.offline,
                            lag: p.lag,
                            active_ms: p.active.as_millis().try_into().unwrap_or(u64::MAX),
                        });
                    }
                }
                status.log = Some(log);
            }
            Ok(Err(e)) => status.errors.push(format!("the log's state: {e}")),
            Err(_) => status.errors.push(format!(
                "the log's state: no answer within {:?}",
                i.cfg.request_timeout
            )),
        }
        if !status.server_name.is_empty() && !status.servers.contains(&status.server_name) {
            status.servers.push(status.server_name.clone());
        }
        status.servers.sort();
        status.servers.dedup();
        status
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.cfg.node
    }

    /// Whether the connection to the engine is up right now (it reconnects
    /// by itself; this is for health reports).
    pub fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// `confab cluster status`'s view of the engine.
#[derive(Debug, Clone, Serialize)]
pub struct EngineStatus {
    pub node: String,
    pub namespace: String,
    pub connected: bool,
    /// The server this node is connected to, and its version.
    pub server_name: String,
    pub server_version: String,
    /// The NATS cluster's name; `None` for a server outside a cluster.
    pub cluster: Option<String>,
    /// Client URLs of the cluster's servers, as the server advertises them.
    pub server_urls: Vec<String>,
    /// Names of the servers known: the log's peers and the one connected to.
    pub servers: Vec<String>,
    /// The replica count this node asks for new resources.
    pub replicas_wanted: usize,
    /// `None` when the log's state could not be read (see `errors`).
    pub log: Option<LogStatus>,
    /// What could not be read.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogStatus {
    pub stream: String,
    /// `None` during an election or without quorum (or outside a cluster).
    pub leader: Option<String>,
    /// The followers (the leader is not listed here).
    pub replicas: Vec<ReplicaStatus>,
    pub messages: u64,
    pub first_position: u64,
    pub last_position: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    pub name: String,
    /// Caught up with the leader. A dead member shows up as not current
    /// with a growing `active_ms`; `offline` stays false for long.
    pub current: bool,
    pub offline: bool,
    /// Operations behind the leader, when known.
    pub lag: Option<u64>,
    /// Since the leader last heard from it.
    pub active_ms: u64,
}

/// One attempt of an operation [`with_retries`] repeats.
enum Try<T> {
    Done(T),
    /// A refusal a retry would meet again.
    Fatal(EngineError),
    /// Worth another attempt: a timeout, no responders during an election.
    Again(String),
}

/// Repeats `attempt` with backoff until it is done or fails for good, for
/// at most `limit` in all; then `Unavailable` with the last reason. The
/// engine's refusals during a failover or right after a resource was
/// created (its leader not yet elected) last a moment, and the callers'
/// operations (heartbeat, object put/get/delete, listing) are idempotent.
async fn with_retries<T, F, Fut>(
    limit: Duration,
    what: &str,
    mut attempt: F,
) -> Result<T, EngineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Try<T>>,
{
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let why = match timeout(left, attempt()).await {
            Ok(Try::Done(v)) => return Ok(v),
            Ok(Try::Fatal(e)) => return Err(e),
            Ok(Try::Again(why)) => why,
            Err(_) => format!("no answer within {limit:?}"),
        };
        if Instant::now() + pause >= deadline {
            return Err(EngineError::Unavailable(format!("{what}: {why}")));
        }
        tracing::debug!("{what}: {why}; trying again");
        sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Tells a follower that its consumer is stuck. The ordered consumer
/// recreates itself after errors, but with its own backoff (up to 10 s
/// between attempts, each bounded by the request timeout), and while it
/// waits its stream yields nothing, not even an error. After a leader
/// failover or a quorum outage that made a node's own writes wait 10 s
/// and more for their apply. So the follower watches for the two signs
/// that entries exist which it has not delivered, and then recreates the
/// consumer itself at once:
/// - an append of this engine was acknowledged beyond what it delivered,
///   and nothing came for [`OWN_STALL`];
/// - nothing came for [`IDLE_CHECK`] and the log's last position (asked
///   at most that often) is beyond what it delivered.
struct Watchdog {
    tick: tokio::time::Interval,
    progress_at: Instant,
    checked_at: Instant,
}

/// How long a follower may sit on an entry this node appended.
const OWN_STALL: Duration = Duration::from_secs(2);
/// How often an idle follower asks whether the log went on without it.
const IDLE_CHECK: Duration = Duration::from_secs(5);

impl Watchdog {
    fn new() -> Watchdog {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Watchdog {
            tick,
            progress_at: Instant::now(),
            checked_at: Instant::now(),
        }
    }

    async fn tick(&mut self) {
        self.tick.tick().await;
    }

    fn progress(&mut self) {
        self.progress_at = Instant::now();
    }

    /// Why the consumer counts as stuck, if it does.
    async fn stalled(&mut self, engine: &Engine, last: u64) -> Option<String> {
        let idle = self.progress_at.elapsed();
        let appended = engine.appended();
        if appended > last && idle >= OWN_STALL {
            return Some(format!(
                "position {appended} was appended here but the follower is at {last} for {idle:?}"
            ));
        }
        if idle < IDLE_CHECK || self.checked_at.elapsed() < IDLE_CHECK {
            return None;
        }
        self.checked_at = Instant::now();
        match engine.last_position().await {
            Ok(end) if end > last => Some(format!(
                "the log is at {end} but the follower is at {last} for {idle:?}"
            )),
            _ => None,
        }
    }
}

/// A stream over a channel fed by a spawned task.
struct Feed<T> {
    rx: mpsc::Receiver<T>,
}

impl<T> futures_util::Stream for Feed<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }
}

/// Refuses servers older than [`MIN_SERVER`]. The version is the connected
/// server's; members of a cluster are expected to run the same one.
fn check_version(version: &str) -> Result<(), EngineError> {
    let v = version.trim_start_matches('v');
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) if (major, minor) >= MIN_SERVER => Ok(()),
        (Some(Ok(_)), Some(Ok(_))) => Err(EngineError::TooOld {
            found: version.to_string(),
        }),
        _ => Err(EngineError::Other(format!(
            "cannot read the nats-server version {version:?}"
        ))),
    }
}

type Resources = (usize, kv::Store, kv::Store, object_store::ObjectStore);

/// Creates (or finds) the log, the buckets and the object store. Any
/// transient failure is `Unavailable`, for [`Engine::connect`] to retry.
async fn create_resources(
    js: &jetstream::Context,
    cfg: &EngineConfig,
    names: &Names,
    info: &async_nats::ServerInfo,
) -> Result<Resources, EngineError> {
    let replicas = ensure_log(js, cfg, names, info).await?;
    let nodes = ensure_kv(
        js,
        kv::Config {
            bucket: names.nodes_bucket.clone(),
            description: "confab: live nodes, each entry expires unless refreshed".into(),
            history: 1,
            max_age: cfg.node_ttl,
            storage: StorageType::Memory,
            num_replicas: replicas,
            // The server writes a marker when an entry ages out, so
            // watchers see a node leave instead of it vanishing silently.
            limit_markers: Some(cfg.node_ttl.max(Duration::from_secs(1))),
            ..Default::default()
        },
    )
    .await?;
    let meta = ensure_kv(
        js,
        kv::Config {
            bucket: names.meta_bucket.clone(),
            description: "confab: values every node shares".into(),
            history: 1,
            storage: StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    let uploads = ensure_objects(
        js,
        object_store::Config {
            bucket: names.uploads_bucket.clone(),
            description: Some("confab: upload files".into()),
            storage: StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    Ok((replicas, nodes, meta, uploads))
}

/// Whether a JetStream API error is the cluster being in no state to
/// answer (no quorum, no leader, not enough live peers) rather than a
/// refusal that a retry would meet again.
fn transient(e: &jetstream::Error) -> bool {
    e.code() == 503
        || e.code() == 408
        || [
            ErrorCode::CLUSTER_NOT_AVAILABLE,
            ErrorCode::INSUFFICIENT_RESOURCES,
            ErrorCode::CLUSTER_NO_PEERS,
        ]
        .contains(&e.error_code())
}

/// The stream if it exists, `None` if it does not; `Unavailable` when
/// that cannot be told.
async fn find_stream(
    js: &jetstream::Context,
    name: &str,
) -> Result<Option<jetstream::stream::Stream>, EngineError> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(je) if je.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                Ok(None)
            }
            GetStreamErrorKind::JetStream(je) if !transient(&je) => {
                Err(EngineError::Other(format!("looking up stream {name}: {e}")))
            }
            _ => Err(EngineError::Unavailable(format!(
                "looking up stream {name}: {e}"
            ))),
        },
    }
}

/// The log: file storage, fsynced by the servers, replicated; a duplicate
/// window for the command ids. Returns the replica count to use for the
/// other resources: the log's own when it exists already.
///
/// The count asked is `cfg.replicas`; a server outside a cluster gets 1,
/// and a cluster too small for the count gets as many as it has servers
/// (by the client URLs it advertises). We ask for the full count first
/// and only cap on the cluster's refusal: right after a cluster starts its
/// advertised URLs can lag behind its routes, and a log created with too
/// few replicas stays that way.
async fn ensure_log(
    js: &jetstream::Context,
    cfg: &EngineConfig,
    names: &Names,
    info: &async_nats::ServerInfo,
) -> Result<usize, EngineError> {
    if let Some(stream) = find_stream(js, &names.log_stream).await? {
        return Ok(stream.cached_info().config.num_replicas.max(1));
    }
    let wanted = if info.cluster.is_none() {
        1
    } else {
        cfg.replicas.max(1)
    };
    let config = |replicas: usize| stream::Config {
        name: names.log_stream.clone(),
        description: Some("confab: the replicated command log".into()),
        subjects: vec![names.log_subject.clone()],
        storage: StorageType::File,
        num_replicas: replicas,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    let err = match js.create_stream(config(wanted)).await {
        Ok(_) => return Ok(wanted),
        Err(e) => e,
    };
    let capped = info.connect_urls.len().clamp(1, wanted);
    let too_few_peers = matches!(
        err.kind(),
        CreateStreamErrorKind::JetStream(ref je)
            if je.error_code() == ErrorCode::INSUFFICIENT_RESOURCES
                || je.error_code() == ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED
    );
    if too_few_peers && capped < wanted {
        tracing::warn!(
            "the NATS cluster cannot hold {wanted} replicas of the log; creating it with {capped}"
        );
        if js.create_stream(config(capped)).await.is_ok() {
            return Ok(capped);
        }
    }
    // Another node may have created it meanwhile (with other settings).
    if let Ok(stream) = js.get_stream(&names.log_stream).await {
        return Ok(stream.cached_info().config.num_replicas.max(1));
    }
    Err(match err.kind() {
        CreateStreamErrorKind::JetStream(ref je) if !transient(je) => {
            EngineError::Other(format!("creating the log {}: {err}", names.log_stream))
        }
        _ => EngineError::Unavailable(format!("creating the log {}: {err}", names.log_stream)),
    })
}

async fn ensure_kv(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, EngineError> {
    let bucket = config.bucket.clone();
    if find_stream(js, &format!("KV_{bucket}")).await?.is_some() {
        return js
            .get_key_value(&bucket)
            .await
            .map_err(|e| EngineError::Unavailable(format!("opening bucket {bucket}: {e}")));
    }
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(err) => {
            if let Ok(store) = js.get_key_value(&bucket).await {
                return Ok(store);
            }
            Err(match err.kind() {
                jetstream::context::CreateKeyValueErrorKind::LimitMarkersNotSupported
                | jetstream::context::CreateKeyValueErrorKind::InvalidStoreName
                | jetstream::context::CreateKeyValueErrorKind::TooLongHistory => {
                    EngineError::Other(format!("creating bucket {bucket}: {err}"))
                }
                _ => EngineError::Unavailable(format!("creating bucket {bucket}: {err}")),
            })
        }
    }
}

async fn ensure_objects(
    js: &jetstream::Context,
    config: object_store::Config,
) -> Result<object_store::ObjectStore, EngineError> {
    let bucket = config.bucket.clone();
    if find_stream(js, &format!("OBJ_{bucket}")).await?.is_some() {
        return js
            .get_object_store(&bucket)
            .await
            .map_err(|e| EngineError::Unavailable(format!("opening object store {bucket}: {e}")));
    }
    match js.create_object_store(config).await {
        Ok(store) => Ok(store),
        Err(err) => {
            if let Ok(store) = js.get_object_store(&bucket).await {
                return Ok(store);
            }
            Err(EngineError::Unavailable(format!(
                "creating object store {bucket}: {err}"
            )))
        }
    }
}

/// A KV key: the characters JetStream allows, no empty dot-separated part.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c))
        && key.split('.').all(|part| !part.is_empty())
}

/// A subject suffix: dot-separated tokens, none empty, without whitespace
/// or wildcards.
fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.split('.').all(|token| {
            !token.is_empty()
                && !token
                    .chars()
                    .any(|c| c.is_whitespace() || c == '*' || c == '>')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_below_2_11_are_refused() {
        assert!(check_version("2.15.1").is_ok());
        assert!(check_version("2.11.0").is_ok());
        assert!(check_version("2.11.0-RC.1").is_ok());
        assert!(check_version("3.0.0").is_ok());
        assert!(matches!(
            check_version("2.10.24"),
            Err(EngineError::TooOld { found }) if found == "2.10.24"
        ));
        assert!(matches!(
            check_version("1.4.1"),
            Err(EngineError::TooOld { .. })
        ));
        assert!(matches!(check_version(""), Err(EngineError::Other(_))));
    }

    #[test]
    fn names_are_valid_for_nats() {
        let n = Names::new("confab").unwrap();
        assert_eq!(n.log_stream, "CONFAB_LOG");
        assert_eq!(n.log_subject, "confab.log");
        assert_eq!(n.nodes_bucket, "confab_nodes");
        assert_eq!(n.meta_bucket, "confab_meta");
        assert_eq!(n.uploads_bucket, "confab_uploads");
        assert_eq!(n.events_prefix, "confab.ev.");
        let n = Names::new("Test.ns-1 x*>").unwrap();
        assert_eq!(n.log_stream, "TEST_NS_1_X___LOG");
        assert_eq!(n.log_subject, "test_ns_1_x__.log");
        assert_eq!(n.nodes_bucket, "test_ns_1_x___nodes");
        assert!(Names::new("").is_err());
        assert!(Names::new(&"x".repeat(65)).is_err());
    }

    #[test]
    fn keys_and_topics() {
        assert!(valid_key("node-1"));
        assert!(valid_key("host.example"));
        assert!(!valid_key(""));
        assert!(!valid_key(".a"));
        assert!(!valid_key("a..b"));
        assert!(!valid_key("a b"));
        assert!(!valid_key("a*"));
        assert!(valid_topic("typing"));
        assert!(valid_topic("typing.room1"));
        assert!(!valid_topic(""));
        assert!(!valid_topic("a..b"));
        assert!(!valid_topic("a.>"));
        assert!(!valid_topic("a b"));
    }
}
