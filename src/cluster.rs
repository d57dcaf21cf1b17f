//! What a node of a cluster says to the others besides the log, and hears
//! from them: who is connected where (presence), typing, and each node's
//! status for `confab cluster status`. None of it is durable: a node that
//! misses some of it is right again at the next heartbeat.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::app::{App, PeerEvent};
use crate::domain::{Id, now_ms};
use crate::store::engine::{Engine, EngineStatus};

/// One node's heartbeat: what `cluster status` shows, and the users
/// connected to it, from which every other node derives presence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub address: String,
    pub started: i64,
    pub connections: usize,
    pub users_online: usize,
    pub last_heartbeat: i64,
    /// How far this node has applied the log.
    #[serde(default)]
    pub applied: u64,
    /// Who is connected here, with how many connections.
    #[serde(default)]
    pub users: Vec<(Id, usize)>,
    /// Who has an active connection here (a visible page), with how many:
    /// pushes skip them.
    #[serde(default)]
    pub active: Vec<(Id, usize)>,
}

/// Starts the node's tasks: heartbeats, the node watch that turns other
/// nodes' heartbeats into presence here, and typing both ways.
pub async fn start(
    app: Arc<App>,
    engine: Engine,
    address: String,
    mut outgoing: tokio::sync::mpsc::UnboundedReceiver<PeerEvent>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), crate::store::engine::EngineError> {
    let started = now_ms();
    let changed = app.hub.local_presence.clone();

    // Heartbeats: on a timer, and soon after this node's own presence
    // changes, so others see a user come or go within a moment.
    let (hb_app, hb_engine, hb_address) = (app.clone(), engine.clone(), address.clone());
    until_stopped(stop.clone(), async move {
        let every = hb_engine.heartbeat_interval();
        loop {
            let status = status_of(&hb_app, &hb_engine, &hb_address, started);
            let blob = serde_json::to_vec(&status).unwrap_or_default();
            if let Err(e) = hb_engine.heartbeat(Bytes::from(blob)).await {
                tracing::warn!(error = %e, "cluster: heartbeat failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = changed.notified() => {
                    // A burst of connects is one heartbeat.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });

    let mut nodes = engine.watch_nodes().await?;
    let (watch_app, me) = (app.clone(), engine.node().to_string());
    until_stopped(stop.clone(), async move {
        while let Some((node, blob)) = nodes.next().await {
            if node == me {
                continue;
            }
            let there: crate::hub::IdMap<usize> = match blob {
                Some(b) => match serde_json::from_slice::<NodeStatus>(&b) {
                    Ok(s) => {
                        watch_app.remote_active(&node, Some(s.active));
                        s.users.into_iter().collect()
                    }
                    Err(e) => {
                        tracing::warn!(%node, error = %e, "cluster: unreadable heartbeat");
                        continue;
                    }
                },
                None => {
                    watch_app.remote_active(&node, None);
                    Default::default()
                }
            };
            let app = watch_app.clone();
            watch_app.hub.remote_presence(&node, &there, |user| {
                let rec = app.store.read().ok()?.user(user).ok()??;
                let ties = app.ties(user).ok()?;
                Some((rec.public(), ties))
            });
        }
    });

    let pub_engine = engine.clone();
    until_stopped(stop.clone(), async move {
        while let Some(ev) = outgoing.recv().await {
            let topic = match &ev {
                PeerEvent::Typing { .. } => "typing",
            };
            let Ok(payload) = serde_json::to_vec(&ev) else {
                continue;
            };
            if let Err(e) = pub_engine.publish_event(topic, payload.into()).await {
                tracing::debug!(error = %e, "cluster: an event was not sent");
            }
        }
    });

    let mut incoming = engine.events().await?;
    until_stopped(stop, async move {
        while let Some((_topic, payload)) = incoming.next().await {
            match serde_json::from_slice::<PeerEvent>(&payload) {
                Ok(PeerEvent::Typing { room, user, on }) => app.hub.typing(room, &user, on),
                Err(e) => tracing::debug!(error = %e, "cluster: an unreadable event"),
            }
        }
    });
    Ok(())
}

/// Runs `task` until the server stops: these tasks hold the app, which a
/// shutdown waits to be let go.
fn until_stopped(
    mut stop: tokio::sync::watch::Receiver<bool>,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = task => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    });
}

fn status_of(app: &App, engine: &Engine, address: &str, started: i64) -> NodeStatus {
    let users = app.hub.local_users();
    NodeStatus {
        name: engine.node().to_string(),
        address: address.to_string(),
        started,
        connections: app.hub.session_count(),
        users_online: users.len(),
        last_heartbeat: now_ms(),
        applied: app.store.link().map(|l| l.applied()).unwrap_or(0),
        users,
        active: app.hub.local_active(),
    }
}

/// What `confab cluster status` shows.
#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    pub nodes: Vec<NodeStatus>,
    pub engine: EngineStatus,
}

/// The cluster as any node (or any client of the engine) sees it.
pub async fn status(engine: &Engine) -> ClusterStatus {
    let mut nodes: Vec<NodeStatus> = engine
        .nodes()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, b)| serde_json::from_slice(&b).ok())
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    // The user lists are for presence, not for reading.
    for n in &mut nodes {
        n.users.clear();
    }
    ClusterStatus {
        nodes,
        engine: engine.status().await,
    }
}
