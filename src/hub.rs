//! Sessions, subscriptions, presence, typing and fan-out. Knows nothing of
//! warp or sockets: a session is an outbox, a bounded queue of serialized
//! frames and a close request, that its connection task drains.
//!
//! Locking: one `RwLock` over the whole state, held only for in-memory work
//! (never across an `.await` or a disk write). Fan-out takes it for reading
//! and only `try_send`s, so a slow connection never blocks a room: when its
//! queue is full it is told to close with 4009.

use std::collections::VecDeque;

// Fan-out hashes a user and a session id per delivery. Every key here is
// made by the server (ULIDs, counters), never chosen by a client, so a
// fast hash needs no protection against crafted collisions.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use serde_json::json;

use crate::domain::{Id, Room, User, Visibility, now_ms};
use crate::metrics::Metrics;
use crate::protocol::{close, frame};
use crate::store::{Change, Revocation};

pub type SessionId = u64;
pub type IdMap<V> = HashMap<Id, V>;
pub type Frame = Arc<str>;

/// A request to close a session, with an optional last frame to send.
#[derive(Debug, Clone)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
    pub last_frame: Option<Frame>,
}

/// A session's outbox: frames queued by fan-out and a close request
/// that takes effect even when the queue is full. Nothing is allocated
/// while it is empty, which is most of an idle connection's life (a
/// channel would keep a block of slots per connection).
pub struct SessionControl {
    outbox: Mutex<Outbox>,
    waker: AtomicWaker,
    /// When the client was last heard from (ms), for the heartbeat.
    last_seen: AtomicI64,
    /// The client said its page is hidden (`presence_state`): the
    /// connection does not count as active, so pushes go out. A client
    /// that never says counts as active.
    hidden: std::sync::atomic::AtomicBool,
}

impl Default for SessionControl {
    fn default() -> Self {
        SessionControl {
            outbox: Mutex::default(),
            waker: AtomicWaker::new(),
            last_seen: AtomicI64::new(now_ms()),
            hidden: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

#[derive(Default)]
struct Outbox {
    frames: VecDeque<Frame>,
    /// When the oldest frame waiting was queued.
    since: Option<Instant>,
    /// The heartbeat asks for a ping.
    ping: bool,
    /// Boxed: rare, and inline it would cost every session its size.
    close: Option<Box<CloseRequest>>,
    /// Set once the connection is gone: nothing more is queued.
    ended: bool,
}

/// What wakes a connection: something to write, or a close.
pub enum Wake {
    Out(Out),
    Close(CloseRequest),
}

/// Everything waiting for a connection, taken at once.
pub struct Out {
    pub frames: VecDeque<Frame>,
    /// When the oldest of `frames` was queued (for the delivery latency
    /// histogram: one reading per write, not one per frame).
    pub since: Option<Instant>,
    pub ping: bool,
}

impl SessionControl {
    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the connection to close; the first request wins.
    pub fn close(&self, req: CloseRequest) {
        let mut o = self.outbox();
        if o.close.is_none() {
            o.close = Some(Box::new(req));
        }
        drop(o);
        self.waker.wake();
    }

    /// Queues a frame unless `limit` frames already wait, in which case the
    /// reader fell too far behind and is asked to close instead.
    fn push(&self, f: Frame, limit: usize) -> Push {
        let mut o = self.outbox();
        if o.ended {
            return Push::Gone;
        }
        if o.frames.len() >= limit {
            let first = o.close.is_none();
            if first {
                o.close = Some(Box::new(too_slow()));
            }
            drop(o);
            self.waker.wake();
            return Push::Full { first };
        }
        let was_empty = o.frames.is_empty();
        if was_empty {
            o.since = Some(Instant::now());
        }
        o.frames.push_back(f);
        drop(o);
        // A non-empty outbox has already woken its task.
        if was_empty {
            self.waker.wake();
        }
        Push::Queued
    }

    /// Everything queued (taken whole), or a close request, which comes
    /// first. Polled by hand: a connection's task waits on it beside its
    /// socket without keeping a future for it.
    pub fn poll_next(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Wake> {
        self.waker.register(cx.waker());
        let mut o = self.outbox();
        if let Some(req) = o.close.take() {
            return std::task::Poll::Ready(Wake::Close(*req));
        }
        if !o.frames.is_empty() || o.ping {
            return std::task::Poll::Ready(Wake::Out(Out {
                frames: std::mem::take(&mut o.frames),
                since: o.since.take(),
                ping: std::mem::take(&mut o.ping),
            }));
        }
        std::task::Poll::Pending
    }

    /// A close request, ignoring queued frames (while a write is blocked).
    pub async fn closed(&self) -> CloseRequest {
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            match self.outbox().close.take() {
                Some(req) => std::task::Poll::Ready(*req),
                None => std::task::Poll::Pending,
            }
        })
        .await
    }

    /// Frames waiting, for tests.
    pub fn try_take(&self) -> VecDeque<Frame> {
        std::mem::take(&mut self.outbox().frames)
    }

    /// Records whether the client's page is visible; true if that changed.
    pub fn set_active(&self, active: bool) -> bool {
        // Was hidden == now active: a change.
        self.hidden.swap(!active, Ordering::Relaxed) == active
    }

    pub fn is_active(&self) -> bool {
        !self.hidden.load(Ordering::Relaxed)
    }

    /// The client was heard from (any frame, pongs included).
    pub fn seen(&self) {
        self.last_seen.store(now_ms(), Ordering::Relaxed);
    }

    fn ping(&self) {
        self.outbox().ping = true;
        self.waker.wake();
    }

    fn end(&self) {
        let mut o = self.outbox();
        o.ended = true;
        o.frames = VecDeque::new();
    }
}

enum Push {
    Queued,
    /// `first`: this push is the one that asked for the close.
    Full {
        first: bool,
    },
    Gone,
}

struct Session {
    user: Id,
    ctl: Arc<SessionControl>,
    addr: Option<SocketAddr>,
    /// The id of the token the connection signed in with, so revoking
    /// that one token ends the connections it opened.
    token: Option<u128>,
}

struct Online {
    user: User,
    /// With each session's outbox, so fan-out needs no second lookup.
    sessions: Vec<(SessionId, Arc<SessionControl>)>,
    /// The rooms this user is a member of, so presence and fan-out need no
    /// store read.
    rooms: IdSet,
    /// This user's friends, online or not: presence reaches them with no
    /// room in common.
    friends: IdSet,
    /// Users who block this one: their presence is kept from this user.
    blocked_by: IdSet,
    since: i64,
    /// Other nodes of a cluster where this user is connected, with how
    /// many connections each. A user is online while connected anywhere:
    /// with no session here, the entry stays for presence and routing, and
    /// fan-out finds no one to send to.
    elsewhere: HashMap<Arc<str>, usize>,
}

/// A small set of ids, sorted in one allocation: a user's rooms, friends
/// and blockers are read far more often than changed, and a hash set's
/// table costs an online user with one room about 100 bytes where this
/// costs 16.
#[derive(Default)]
struct IdSet(Vec<Id>);

impl IdSet {
    fn insert(&mut self, id: Id) -> bool {
        match self.0.binary_search(&id) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, id);
                true
            }
        }
    }

    fn remove(&mut self, id: &Id) -> bool {
        match self.0.binary_search(id) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    fn contains(&self, id: &Id) -> bool {
        self.0.binary_search(id).is_ok()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> std::slice::Iter<'_, Id> {
        self.0.iter()
    }
}

impl FromIterator<Id> for IdSet {
    fn from_iter<I: IntoIterator<Item = Id>>(ids: I) -> Self {
        let mut v: Vec<Id> = ids.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        v.shrink_to_fit();
        IdSet(v)
    }
}

impl<'a> IntoIterator for &'a IdSet {
    type Item = &'a Id;
    type IntoIter = std::slice::Iter<'a, Id>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// What a user's first connection loads from the store: everything the
/// hub needs to route that user's presence without reading the store on
/// the fan-out path. Later changes arrive as `Change`s.
#[derive(Debug, Default)]
pub struct Ties {
    pub rooms: Vec<Id>,
    pub friends: Vec<Id>,
    pub blocked_by: Vec<Id>,
}

struct State {
    /// Here as well as on the hub so the free fan-out functions, which
    /// take only the state, can count deliveries.
    metrics: Arc<Metrics>,
    /// Frames a session may have waiting before it is closed as too slow.
    queue_len: usize,
    // Boxed: a table keeps room for a quarter to a half more entries than
    // it holds, and these are large; a box per entry costs a pointer.
    sessions: HashMap<SessionId, Box<Session>>,
    users: HashMap<Id, Box<Online>>,
    /// Online members of each room.
    rooms: HashMap<Id, HashSet<Id>>,
    /// (room, user) → generation of the latest typing_start.
    typing: HashMap<(Id, Id), u64>,
}

/// A snapshot of one online user, for `/api/users/online` and the console.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OnlineUser {
    pub user: User,
    pub connections: usize,
    pub rooms: usize,
    pub since: i64,
    pub addr: Option<SocketAddr>,
}

pub struct Hub {
    state: RwLock<State>,
    next_session: AtomicU64,
    next_typing: AtomicU64,
    typing_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Told when a connection to this node opens or closes: a cluster node
    /// then says so to the others.
    pub local_presence: Arc<tokio::sync::Notify>,
}

/// What `connect` returns to the new connection.
pub struct Connected {
    pub session: SessionId,
    pub ctl: Arc<SessionControl>,
}

impl Hub {
    pub fn new(queue_len: usize, typing_timeout: Duration, metrics: Arc<Metrics>) -> Arc<Hub> {
        Arc::new(Hub {
            state: RwLock::new(State {
                metrics: metrics.clone(),
                queue_len,
                sessions: HashMap::default(),
                users: HashMap::default(),
                rooms: HashMap::default(),
                typing: HashMap::default(),
            }),
            next_session: AtomicU64::new(1),
            next_typing: AtomicU64::new(1),
            typing_timeout,
            metrics,
            local_presence: Arc::new(tokio::sync::Notify::new()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still
        // usable: recover rather than take every connection down with it.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection of `user`. `load` runs under the hub's lock
    /// when this is the user's first connection, so no membership,
    /// friendship or block can change between reading it and the hub
    /// knowing it. `token` is the id of the token it signed in with, so
    /// that revoking that token finds the connection.
    pub fn connect<E>(
        &self,
        user: User,
        addr: Option<SocketAddr>,
        token: Option<u128>,
        load: impl FnOnce() -> Result<Ties, E>,
    ) -> Result<Connected, E> {
        let ctl = Arc::new(SessionControl::default());
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let mut st = self.write();
        if !st.users.contains_key(&user.id) {
            let ties = load()?;
            go_online(&mut st, user.clone(), ties, HashMap::default());
        }
        if let Some(online) = st.users.get_mut(&user.id) {
            online.sessions.push((session, ctl.clone()));
            self.local_presence.notify_one();
        }
        st.sessions.insert(
            session,
            Box::new(Session {
                user: user.id,
                ctl: ctl.clone(),
                addr,
                token,
            }),
        );
        self.metrics.connections.set(st.sessions.len() as i64);
        self.metrics.online_users.set(st.users.len() as i64);
        self.metrics.event(
            "connect",
            match addr {
                Some(a) => format!("{} connected from {}", user.username, a.ip()),
                None => format!("{} connected", user.username),
            },
        );
        Ok(Connected { session, ctl })
    }

    /// Forgets a connection; after a user's last one, tells the others.
    pub fn disconnect(&self, session: SessionId) {
        let mut st = self.write();
        let Some(s) = st.sessions.remove(&session) else {
            return;
        };
        s.ctl.end();
        self.metrics.connections.set(st.sessions.len() as i64);
        let name = st
            .users
            .get(&s.user)
            .map(|o| o.user.username.clone())
            .unwrap_or_default();
        self.metrics
            .event("disconnect", format!("{name} disconnected"));
        let Some(online) = st.users.get_mut(&s.user) else {
            return;
        };
        online.sessions.retain(|(x, _)| *x != session);
        self.local_presence.notify_one();
        if !online.sessions.is_empty() || !online.elsewhere.is_empty() {
            return;
        }
        go_offline(&mut st, s.user);
        self.metrics.online_users.set(st.users.len() as i64);
    }

    /// The users with a connection to this node (not those online only
    /// elsewhere in a cluster), with how many connections each.
    pub fn local_users(&self) -> Vec<(Id, usize)> {
        self.read()
            .users
            .iter()
            .filter(|(_, o)| !o.sessions.is_empty())
            .map(|(id, o)| (*id, o.sessions.len()))
            .collect()
    }

    /// Every user online, here or on another node of a cluster, with
    /// their connections everywhere (those elsewhere as last heard).
    pub fn online_counts(&self) -> Vec<(Id, usize)> {
        self.read()
            .users
            .iter()
            .map(|(id, o)| (*id, o.sessions.len() + o.elsewhere.values().sum::<usize>()))
            .collect()
    }

    /// A user's connections on the cluster's other nodes, as last heard.
    pub fn sessions_elsewhere(&self, user: Id) -> usize {
        self.read()
            .users
            .get(&user)
            .map(|o| o.elsewhere.values().sum())
            .unwrap_or(0)
    }

    /// What another node of a cluster says is connected there now: users
    /// who appear there come online here (if not already), users who went
    /// go offline unless connected somewhere else. `load` gives a newly
    /// seen user's account and ties, or None if this node does not know
    /// the account yet (it has not applied its creation): that user is
    /// left out and picked up from the node's next report.
    pub fn remote_presence(
        &self,
        node: &str,
        there: &HashMap<Id, usize>,
        load: impl Fn(Id) -> Option<(User, Ties)>,
    ) {
        let node: Arc<str> = Arc::from(node);
        let mut st = self.write();
        let gone: Vec<Id> = st
            .users
            .iter()
            .filter(|(id, o)| o.elsewhere.contains_key(&node) && !there.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        for user in gone {
            let Some(online) = st.users.get_mut(&user) else {
                continue;
            };
            online.elsewhere.remove(&node);
            if online.sessions.is_empty() && online.elsewhere.is_empty() {
                go_offline(&mut st, user);
            }
        }
        for (user, count) in there {
            if let Some(online) = st.users.get_mut(user) {
                online.elsewhere.insert(node.clone(), *count);
                continue;
            }
            let Some((account, ties)) = load(*user) else {
                continue;
            };
            let elsewhere = std::iter::once((node.clone(), *count)).collect();
            go_online(&mut st, account, ties, elsewhere);
        }
        self.metrics.online_users.set(st.users.len() as i64);
    }

    /// Open connections of one user.
    /// The user's active connections to this node (see
    /// `SessionControl::set_active`).
    pub fn active_here(&self, user: Id) -> usize {
        self.read()
            .users
            .get(&user)
            .map(|o| o.sessions.iter().filter(|(_, c)| c.is_active()).count())
            .unwrap_or(0)
    }

    /// Users with an active connection to this node, with how many.
    pub fn local_active(&self) -> Vec<(Id, usize)> {
        self.read()
            .users
            .iter()
            .map(|(id, o)| {
                (
                    *id,
                    o.sessions.iter().filter(|(_, c)| c.is_active()).count(),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn sessions_of(&self, user: Id) -> usize {
        self.read()
            .users
            .get(&user)
            .map(|o| o.sessions.len())
            .unwrap_or(0)
    }

    pub fn is_online(&self, user: Id) -> bool {
        self.read().users.contains_key(&user)
    }

    pub fn online_users(&self) -> Vec<OnlineUser> {
        let st = self.read();
        let mut out: Vec<OnlineUser> = st
            .users
            .values()
            .map(|o| OnlineUser {
                user: o.user.clone(),
                connections: o.sessions.len(),
                rooms: o.rooms.len(),
                since: o.since,
                addr: o
                    .sessions
                    .first()
                    .and_then(|(s, _)| st.sessions.get(s))
                    .and_then(|s| s.addr),
            })
            .collect();
        out.sort_by(|a, b| a.user.username.cmp(&b.user.username));
        out
    }

    /// The online users `viewer` hears of (see [`sees`]), the viewer
    /// first and the rest by username: what `authenticated` lists, so a
    /// fresh connection starts from the same picture that `user_online`
    /// and `user_offline` then keep current. Bounded by the viewer's rooms
    /// and friends, not by how many are online server-wide.
    pub fn visible_to(&self, viewer: Id) -> Vec<User> {
        let st = self.read();
        let Some(v) = st.users.get(&viewer) else {
            return Vec::new();
        };
        let mut ids: HashSet<Id> = v.friends.iter().copied().collect();
        for room in &v.rooms {
            if let Some(members) = st.rooms.get(room) {
                ids.extend(members.iter().copied());
            }
        }
        let mut others: Vec<User> = ids
            .into_iter()
            .filter(|s| *s != viewer && !v.blocked_by.contains(s))
            .filter_map(|s| st.users.get(&s).map(|o| o.user.clone()))
            .collect();
        others.sort_by(|a, b| a.username.cmp(&b.username));
        let mut out = Vec::with_capacity(others.len() + 1);
        out.push(v.user.clone());
        out.extend(others);
        out
    }

    /// Online members of a room.
    pub fn room_presence(&self, room: Id) -> Vec<User> {
        let st = self.read();
        let mut out: Vec<User> = st
            .rooms
            .get(&room)
            .into_iter()
            .flatten()
            .filter_map(|u| st.users.get(u).map(|o| o.user.clone()))
            .collect();
        out.sort_by(|a, b| a.username.cmp(&b.username));
        out
    }

    pub fn session_count(&self) -> usize {
        self.read().sessions.len()
    }

    /// Counts of online members per room, for the console.
    pub fn room_online_counts(&self) -> std::collections::HashMap<Id, usize> {
        self.read()
            .rooms
            .iter()
            .map(|(r, s)| (*r, s.len()))
            .collect()
    }

    /// Sends a frame to one session (answers, `authenticated`). False when
    /// its queue is full, in which case the session is being closed.
    pub fn send_to_session(&self, session: SessionId, f: Frame) -> bool {
        let st = self.read();
        let Some(s) = st.sessions.get(&session) else {
            return false;
        };
        deliver(&s.ctl, f, &st)
    }

    /// Closes the connections `user` opened with `token`.
    fn close_token(&self, user: Id, token: u128, code: u16, reason: &str) {
        let st = self.read();
        let Some(online) = st.users.get(&user) else {
            return;
        };
        for (sid, _) in &online.sessions {
            if let Some(s) = st.sessions.get(sid)
                && s.token == Some(token)
            {
                s.ctl.close(CloseRequest {
                    code,
                    reason: reason.to_string(),
                    last_frame: None,
                });
            }
        }
    }

    /// Closes every connection of `user`, sending `last_frame` first.
    pub fn close_user(
        &self,
        user: Id,
        code: u16,
        reason: &str,
        last_frame: Option<Frame>,
    ) -> usize {
        let st = self.read();
        let Some(online) = st.users.get(&user) else {
            return 0;
        };
        for (sid, _) in &online.sessions {
            if let Some(s) = st.sessions.get(sid) {
                s.ctl.close(CloseRequest {
                    code,
                    reason: reason.to_string(),
                    last_frame: last_frame.clone(),
                });
            }
        }
        online.sessions.len()
    }

    /// One slice of the heartbeat (one timer for the server, not one per
    /// connection): a ping to each session in `slice` of `slices`, and a
    /// close for those not heard from within `dead_after`. Called for each
    /// slice in turn, so every session is visited once per round; pinging
    /// every connection at once would write tens of thousands of frames in
    /// one burst and stall everything else for that long.
    pub fn heartbeat(&self, slice: u64, slices: u64, dead_after: Duration) {
        let oldest = now_ms() - dead_after.as_millis() as i64;
        let st = self.read();
        for (id, s) in &st.sessions {
            if id % slices.max(1) != slice {
                continue;
            }
            if s.ctl.last_seen.load(Ordering::Relaxed) < oldest {
                s.ctl.close(CloseRequest {
                    code: close::TOO_SLOW,
                    reason: "heartbeat timeout".into(),
                    last_frame: None,
                });
            } else {
                s.ctl.ping();
            }
        }
    }

    /// Closes every connection (server shutdown).
    pub fn close_all(&self, code: u16, reason: &str) {
        let st = self.read();
        for s in st.sessions.values() {
            s.ctl.close(CloseRequest {
                code,
                reason: reason.to_string(),
                last_frame: None,
            });
        }
    }

    pub fn broadcast(&self, f: &Frame) {
        let st = self.read();
        let all: Vec<Id> = st.users.keys().copied().collect();
        send_to_users(&st, all.iter(), f, None);
    }

    pub fn send_to_room(&self, room: Id, f: &Frame, except: Option<Id>) {
        let st = self.read();
        send_to_room(&st, room, f, except);
    }

    /// typing_start / typing_stop. A start is followed by a stop on its
    /// own after the typing timeout unless another start renews it.
    pub fn typing(self: &Arc<Self>, room: Id, user: &User, on: bool) {
        let mut st = self.write();
        let key = (room, user.id);
        let was = st.typing.contains_key(&key);
        if on {
            let generation = self.next_typing.fetch_add(1, Ordering::Relaxed);
            st.typing.insert(key, generation);
            let hub = Arc::downgrade(self);
            let user2 = user.clone();
            let timeout = self.typing_timeout;
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                if let Some(hub) = hub.upgrade() {
                    hub.typing_expired(room, &user2, generation);
                }
            });
        } else {
            st.typing.remove(&key);
        }
        // Repeated starts are not repeated to others: the first said it.
        if on != was {
            let f = frame(
                "typing",
                None,
                &json!({"room": room, "user": user, "typing": on}),
            );
            send_typing(&st, room, &f, user.id);
        }
    }

    fn typing_expired(&self, room: Id, user: &User, generation: u64) {
        let mut st = self.write();
        if st.typing.get(&(room, user.id)) != Some(&generation) {
            return;
        }
        st.typing.remove(&(room, user.id));
        let f = frame(
            "typing",
            None,
            &json!({"room": room, "user": user, "typing": false}),
        );
        send_typing(&st, room, &f, user.id);
    }

    /// Applies committed changes, in commit order: keeps subscriptions in
    /// step with memberships and fans out the events they mean.
    pub fn apply(&self, changes: &[Change]) {
        for change in changes {
            self.apply_one(change);
        }
    }

    fn apply_one(&self, change: &Change) {
        match change {
            Change::PushQueued => {}
            Change::WebhookQueued | Change::UserRegistered(_) => {}
            Change::MessageCreated(m) => {
                self.metrics.room_message(m.room);
                // A reply kept to its thread is not a room message: clients
                // that know threads place it; others pass over the type.
                let kind = if m.thread_only() {
                    "thread_reply"
                } else {
                    "message"
                };
                let f = frame(kind, None, &json!({ "message": m }));
                self.send_to_room(m.room, &f, None);
            }
            Change::MessageUpdated(m) => {
                let f = frame("message_updated", None, &json!({ "message": m }));
                self.send_to_room(m.room, &f, None);
            }
            Change::MessageDeleted { room, id, seq } => {
                let f = frame(
                    "message_deleted",
                    None,
                    &json!({"room": room, "message_id": id, "seq": seq}),
                );
                self.send_to_room(*room, &f, None);
            }
            Change::Read {
                room,
                user,
                seq,
                hidden_from,
            } => {
                let f = frame(
                    "read",
                    None,
                    &json!({"room": room, "user": user, "seq": seq}),
                );
                let st = self.read();
                send_to_room_unless(&st, *room, &f, |u| hidden_from.contains(&u));
            }
            Change::RoomCreated { room, members } => {
                if room.kind == crate::domain::RoomKind::Room {
                    self.metrics
                        .event("room", format!("room {} created", room.name));
                }
                let mut st = self.write();
                for m in members {
                    subscribe(&mut st, room.id, m.id);
                }
                let f = frame("room_created", None, &json!({ "room": room }));
                room_audience_send(&st, room, &f);
            }
            Change::RoomUpdated(room) => {
                let st = self.read();
                let f = frame("room_updated", None, &json!({ "room": room }));
                room_audience_send(&st, room, &f);
            }
            Change::RoomDeleted { room, members } => {
                self.metrics.forget_room(room.id);
                self.metrics
                    .event("room", format!("room {} deleted", room.name));
                let mut st = self.write();
                let f = frame("room_deleted", None, &json!({ "room_id": room.id }));
                if room.visibility == Visibility::Public {
                    let all: Vec<Id> = st.users.keys().copied().collect();
                    send_to_users(&st, all.iter(), &f, None);
                } else {
                    send_to_users(&st, members.iter(), &f, None);
                }
                for m in members {
                    unsubscribe(&mut st, room.id, *m);
                }
                st.rooms.remove(&room.id);
            }
            Change::MemberAdded { room, user } => {
                self.metrics
                    .event("join", format!("{} joined {}", user.username, room.name));
                let mut st = self.write();
                subscribe(&mut st, room.id, user.id);
                let f = frame(
                    "member_joined",
                    None,
                    &json!({"room": room.id, "user": user}),
                );
                send_to_room(&st, room.id, &f, None);
            }
            Change::MemberRemoved { room, user } => {
                self.metrics
                    .event("leave", format!("{} left {}", user.username, room.name));
                let mut st = self.write();
                let f = frame("member_left", None, &json!({"room": room.id, "user": user}));
                send_to_room(&st, room.id, &f, None);
                unsubscribe(&mut st, room.id, user.id);
            }
            Change::UserUpdated(user) => {
                let mut st = self.write();
                let Some(o) = st.users.get_mut(&user.id) else {
                    return;
                };
                if o.user == *user {
                    return;
                }
                o.user = user.clone();
                // A new picture (or name or role) reaches whoever sees the
                // user online, and the user's own other tabs.
                let f = frame("user_updated", None, &json!({ "user": user }));
                let mut audience = audience_of(&st, user.id);
                audience.insert(user.id);
                send_to_users(&st, audience.iter(), &f, None);
            }
            Change::UserDeleted(id) => {
                self.close_user(*id, close::UNAUTHORIZED, "account deleted", None);
            }
            Change::TokensRevoked { user, why } => {
                let (code, reason, last) = match why {
                    Revocation::Banned { reason: why, until } => {
                        let reason = why.as_deref().unwrap_or("banned");
                        let ban = crate::domain::BanInfo::new(*until, why.clone());
                        let f = frame("kicked", None, &json!({ "reason": reason, "ban": ban }));
                        (close::KICKED, reason, Some(f))
                    }
                    Revocation::PasswordChanged => (close::UNAUTHORIZED, "password changed", None),
                    Revocation::RoleChanged => (close::UNAUTHORIZED, "role changed", None),
                    Revocation::LoggedOutEverywhere => (close::UNAUTHORIZED, "logged out", None),
                };
                self.close_user(*user, code, reason, last);
            }
            Change::TokenRevoked { user, token } => {
                self.close_token(*user, *token, close::UNAUTHORIZED, "logged out");
            }
            Change::FriendRequested {
                requester,
                recipient,
            } => {
                let f = frame("friend_request", None, &json!({ "user": requester }));
                self.send_to_user(recipient.id, &f);
            }
            Change::FriendRequestEnded {
                requester,
                recipient,
                declined,
            } => {
                if *declined {
                    let f = frame("friend_declined", None, &json!({ "user": recipient }));
                    self.send_to_user(requester.id, &f);
                } else {
                    let f = frame(
                        "friend_request_cancelled",
                        None,
                        &json!({ "user": requester }),
                    );
                    self.send_to_user(recipient.id, &f);
                }
            }
            Change::FriendAdded {
                accepter,
                requester,
            } => {
                let mut st = self.write();
                for (to, other) in [(requester, accepter), (accepter, requester)] {
                    let f = frame("friend_accepted", None, &json!({ "user": other }));
                    send_to_users(&st, std::iter::once(&to.id), &f, None);
                }
                let (a, b) = (accepter.id, requester.id);
                relink(&mut st, a, b, |st| {
                    for (me, friend) in [(a, b), (b, a)] {
                        if let Some(o) = st.users.get_mut(&me) {
                            o.friends.insert(friend);
                        }
                    }
                });
            }
            Change::FriendRemoved { by, other } => {
                let mut st = self.write();
                for (to, about) in [(by, other), (other, by)] {
                    let f = frame("friend_removed", None, &json!({ "user": about }));
                    send_to_users(&st, std::iter::once(&to.id), &f, None);
                }
                let (a, b) = (by.id, other.id);
                relink(&mut st, a, b, |st| {
                    for (me, friend) in [(a, b), (b, a)] {
                        if let Some(o) = st.users.get_mut(&me) {
                            o.friends.remove(&friend);
                        }
                    }
                });
            }
            Change::Blocked { blocker, blocked } => {
                let mut st = self.write();
                relink(&mut st, *blocker, *blocked, |st| {
                    if let Some(o) = st.users.get_mut(blocked) {
                        o.blocked_by.insert(*blocker);
                    }
                });
            }
            Change::Unblocked { blocker, blocked } => {
                let mut st = self.write();
                relink(&mut st, *blocker, *blocked, |st| {
                    if let Some(o) = st.users.get_mut(blocked) {
                        o.blocked_by.remove(blocker);
                    }
                });
            }
            Change::Kicked { user, reason } => {
                let f = frame("kicked", None, &json!({ "reason": reason }));
                self.close_user(*user, close::KICKED, reason, Some(f));
            }
            Change::Announced { text, room } => {
                let f = frame("announcement", None, &json!({ "text": text, "room": room }));
                match room {
                    Some(r) => self.send_to_room(*r, &f, None),
                    None => self.broadcast(&f),
                }
            }
            // Every connection of the user, so a room read on one device
            // clears on the others at once.
            Change::Unread { user, state } => {
                let f = frame("unread", None, state);
                self.send_to_user(*user, &f);
            }
            Change::Muted { user, room, mute } => {
                let f = frame(
                    "muted",
                    None,
                    &crate::domain::MuteInfo::new(*room, mute.until, mute.reason.clone()),
                );
                self.send_to_user(*user, &f);
            }
            Change::Unmuted { user, room } => {
                let f = frame("unmuted", None, &json!({ "room": room }));
                self.send_to_user(*user, &f);
            }
            Change::ThreadUnread { user, state } => {
                let f = frame("thread_unread", None, state);
                self.send_to_user(*user, &f);
            }
            // Hidden from those who block the reactor, like their typing.
            Change::ReactionAdded {
                room,
                message,
                emoji,
                user,
                count,
                hidden_from,
            }
            | Change::ReactionRemoved {
                room,
                message,
                emoji,
                user,
                count,
                hidden_from,
            } => {
                let kind = match change {
                    Change::ReactionAdded { .. } => "reaction_added",
                    _ => "reaction_removed",
                };
                let f = frame(
                    kind,
                    None,
                    &json!({"room": room, "message_id": message, "emoji": emoji,
                            "user": user, "count": count}),
                );
                let st = self.read();
                send_to_room_unless(&st, *room, &f, |u| hidden_from.contains(&u));
            }
            Change::MessagePinned { message, by } => {
                let f = frame(
                    "message_pinned",
                    None,
                    &json!({"room": message.room, "message_id": message.id, "by": by,
                            "message": message}),
                );
                self.send_to_room(message.room, &f, None);
            }
            Change::MessageUnpinned { room, message, by } => {
                let f = frame(
                    "message_unpinned",
                    None,
                    &json!({"room": room, "message_id": message, "by": by}),
                );
                self.send_to_room(*room, &f, None);
            }
        }
    }

    fn send_to_user(&self, user: Id, f: &Frame) {
        let st = self.read();
        send_to_users(&st, std::iter::once(&user), f, None);
    }
}

/// Takes in a user who was offline everywhere, with what routes their
/// presence, and tells those who see them.
fn go_online(st: &mut State, user: User, ties: Ties, elsewhere: HashMap<Arc<str>, usize>) {
    let rooms: IdSet = ties.rooms.into_iter().collect();
    for room in &rooms {
        st.rooms.entry(*room).or_default().insert(user.id);
    }
    let f = frame("user_online", None, &json!({ "user": user }));
    let id = user.id;
    st.users.insert(
        id,
        Box::new(Online {
            user,
            // Most users keep one connection.
            sessions: Vec::with_capacity(1),
            rooms,
            friends: ties.friends.into_iter().collect(),
            blocked_by: ties.blocked_by.into_iter().collect(),
            since: now_ms(),
            elsewhere,
        }),
    );
    let audience = audience_of(st, id);
    send_to_users(st, audience.iter(), &f, None);
}

/// Forgets an online user who has no connection anywhere any more, and
/// tells those who saw them.
fn go_offline(st: &mut State, user: Id) {
    let audience = audience_of(st, user);
    let Some(online) = st.users.remove(&user) else {
        return;
    };
    for room in &online.rooms {
        if let Some(set) = st.rooms.get_mut(room) {
            set.remove(&user);
            if set.is_empty() {
                st.rooms.remove(room);
            }
        }
    }
    // A user who leaves mid-sentence stops typing.
    let typing: Vec<Id> = st
        .typing
        .keys()
        .filter(|(_, u)| *u == user)
        .map(|(r, _)| *r)
        .collect();
    for room in typing {
        st.typing.remove(&(room, user));
        let f = frame(
            "typing",
            None,
            &json!({"room": room, "user": online.user, "typing": false}),
        );
        let hidden = |u: Id| u == user || online.blocked_by.contains(&u);
        send_to_room_unless(st, room, &f, hidden);
    }
    let f = frame("user_offline", None, &json!({ "user": online.user }));
    send_to_users(st, audience.iter(), &f, None);
}

/// Whether `viewer` hears of `subject`'s presence: both online, sharing a
/// room or friends, and `subject` does not block `viewer`.
fn sees(st: &State, viewer: Id, subject: Id) -> bool {
    if viewer == subject {
        return false;
    }
    let (Some(v), Some(s)) = (st.users.get(&viewer), st.users.get(&subject)) else {
        return false;
    };
    if v.blocked_by.contains(&subject) {
        return false;
    }
    if s.friends.contains(&viewer) {
        return true;
    }
    let (small, big) = if v.rooms.len() <= s.rooms.len() {
        (&v.rooms, &s.rooms)
    } else {
        (&s.rooms, &v.rooms)
    };
    small.iter().any(|r| big.contains(r))
}

/// Applies `change` to what links `a` and `b`, then tells each of them
/// about the other where that changed what they may see: a new friend who
/// is already online appears at once, a blocker disappears at once. The
/// client's picture of who is online stays what a fresh connection would
/// be told.
fn relink(st: &mut State, a: Id, b: Id, change: impl FnOnce(&mut State)) {
    let before = [sees(st, a, b), sees(st, b, a)];
    change(st);
    let after = [sees(st, a, b), sees(st, b, a)];
    for (i, (viewer, subject)) in [(a, b), (b, a)].into_iter().enumerate() {
        if before[i] == after[i] {
            continue;
        }
        let Some(s) = st.users.get(&subject) else {
            continue;
        };
        let kind = if after[i] {
            "user_online"
        } else {
            "user_offline"
        };
        let f = frame(kind, None, &json!({ "user": s.user }));
        send_to_users(st, std::iter::once(&viewer), &f, None);
    }
}

fn too_slow() -> CloseRequest {
    CloseRequest {
        code: close::TOO_SLOW,
        reason: "too slow".into(),
        last_frame: None,
    }
}

/// Queues a frame; a full queue means the reader fell too far behind, so
/// its connection is closed instead of letting the queue grow.
fn deliver(ctl: &SessionControl, f: Frame, st: &State) -> bool {
    match ctl.push(f, st.queue_len) {
        Push::Queued => {
            st.metrics.deliveries.inc();
            true
        }
        Push::Full { first } => {
            if first {
                st.metrics.slow_closed.inc();
            }
            false
        }
        Push::Gone => false,
    }
}

fn subscribe(st: &mut State, room: Id, user: Id) {
    if let Some(o) = st.users.get_mut(&user) {
        o.rooms.insert(room);
        st.rooms.entry(room).or_default().insert(user);
    }
}

fn unsubscribe(st: &mut State, room: Id, user: Id) {
    if let Some(o) = st.users.get_mut(&user) {
        o.rooms.remove(&room);
    }
    if let Some(set) = st.rooms.get_mut(&room) {
        set.remove(&user);
        if set.is_empty() {
            st.rooms.remove(&room);
        }
    }
    st.typing.remove(&(room, user));
}

/// Everyone for a public room; its online members for a private one.
fn room_audience_send(st: &State, room: &Room, f: &Frame) {
    if room.visibility == Visibility::Public {
        let all: Vec<Id> = st.users.keys().copied().collect();
        send_to_users(st, all.iter(), f, None);
    } else {
        send_to_room(st, room.id, f, None);
    }
}

/// Online users who hear of `user`'s presence (see [`sees`]): those who
/// share a room with `user` or are friends, minus those `user` blocks.
fn audience_of(st: &State, user: Id) -> HashSet<Id> {
    let mut out = HashSet::default();
    if let Some(o) = st.users.get(&user) {
        for room in &o.rooms {
            if let Some(members) = st.rooms.get(room) {
                out.extend(members.iter().copied());
            }
        }
        out.extend(o.friends.iter().filter(|f| st.users.contains_key(f)));
    }
    out.retain(|v| {
        *v != user
            && st
                .users
                .get(v)
                .is_some_and(|o| !o.blocked_by.contains(&user))
    });
    out
}

fn send_to_room(st: &State, room: Id, f: &Frame, except: Option<Id>) {
    if let Some(members) = st.rooms.get(&room) {
        send_to_users(st, members.iter(), f, except);
    }
}

/// A room's subscribers, less those `hidden` names.
fn send_to_room_unless(st: &State, room: Id, f: &Frame, hidden: impl Fn(Id) -> bool) {
    if let Some(members) = st.rooms.get(&room) {
        send_to_users(st, members.iter().filter(|u| !hidden(**u)), f, None);
    }
}

/// Typing goes to the room's other subscribers, but not to those who
/// block the typist: a block hides what the blocked user does, not only
/// what they say to you directly.
fn send_typing(st: &State, room: Id, f: &Frame, typist: Id) {
    let blockers = st.users.get(&typist).map(|o| &o.blocked_by);
    send_to_room_unless(st, room, f, |u| {
        u == typist || blockers.is_some_and(|b| b.contains(&u))
    });
}

fn send_to_users<'a>(
    st: &State,
    users: impl Iterator<Item = &'a Id>,
    f: &Frame,
    except: Option<Id>,
) {
    for uid in users {
        if Some(*uid) == except {
            continue;
        }
        let Some(o) = st.users.get(uid) else {
            continue;
        };
        for (_, ctl) in &o.sessions {
            deliver(ctl, f.clone(), st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn user(name: &str) -> User {
        User {
            id: Id::new(),
            username: name.into(),
            role: Role::User,
            avatar_url: None,
            bot: false,
        }
    }

    fn join(hub: &Hub, u: &User, ties: Ties) -> Connected {
        hub.connect(u.clone(), None, None, || Ok::<_, ()>(ties))
            .expect("connects")
    }

    /// The (type, user) of every frame queued so far.
    fn drain(c: &mut Connected) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for f in c.ctl.try_take() {
            let v: serde_json::Value = serde_json::from_str(&f).expect("json");
            let name = v["data"]["user"]["username"].as_str().unwrap_or_default();
            out.push((v["type"].as_str().unwrap_or_default().into(), name.into()));
        }
        out
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn presence_reaches_friends_and_skips_those_the_subject_blocks() {
        let hub = Hub::new(64, Duration::from_secs(6), Default::default());
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let room = Id::new();
        // bob is alice's friend with no room in common; carol shares a
        // room with alice, who blocks her.
        let mut a = join(
            &hub,
            &alice,
            Ties {
                rooms: vec![room],
                friends: vec![bob.id],
                blocked_by: vec![],
            },
        );
        let mut b = join(
            &hub,
            &bob,
            Ties {
                friends: vec![alice.id],
                ..Ties::default()
            },
        );
        let mut c = join(
            &hub,
            &carol,
            Ties {
                rooms: vec![room],
                blocked_by: vec![alice.id],
                ..Ties::default()
            },
        );
        assert_eq!(
            drain(&mut a),
            pairs(&[("user_online", "bob"), ("user_online", "carol")])
        );
        assert_eq!(drain(&mut b), pairs(&[]));
        assert_eq!(drain(&mut c), pairs(&[]));

        hub.apply(&[Change::Unblocked {
            blocker: alice.id,
            blocked: carol.id,
        }]);
        assert_eq!(drain(&mut c), pairs(&[("user_online", "alice")]));
        assert_eq!(drain(&mut a), pairs(&[]));

        hub.apply(&[Change::FriendRemoved {
            by: alice.clone(),
            other: bob.clone(),
        }]);
        assert_eq!(
            drain(&mut a),
            pairs(&[("friend_removed", "bob"), ("user_offline", "bob")])
        );
        assert_eq!(
            drain(&mut b),
            pairs(&[("friend_removed", "alice"), ("user_offline", "alice")])
        );

        hub.apply(&[Change::Blocked {
            blocker: alice.id,
            blocked: carol.id,
        }]);
        assert_eq!(drain(&mut c), pairs(&[("user_offline", "alice")]));
        hub.disconnect(a.session);
        assert_eq!(drain(&mut b), pairs(&[]));
        assert_eq!(drain(&mut c), pairs(&[]));
    }

    #[test]
    fn a_new_friendship_shows_a_friend_already_online() {
        let hub = Hub::new(64, Duration::from_secs(6), Default::default());
        let (alice, bob) = (user("alice"), user("bob"));
        let mut a = join(&hub, &alice, Ties::default());
        let mut b = join(&hub, &bob, Ties::default());
        assert_eq!(drain(&mut a), pairs(&[]));
        hub.apply(&[Change::FriendAdded {
            accepter: bob.clone(),
            requester: alice.clone(),
        }]);
        assert_eq!(
            drain(&mut a),
            pairs(&[("friend_accepted", "bob"), ("user_online", "bob")])
        );
        assert_eq!(
            drain(&mut b),
            pairs(&[("friend_accepted", "alice"), ("user_online", "alice")])
        );
        hub.disconnect(b.session);
        assert_eq!(drain(&mut a), pairs(&[("user_offline", "bob")]));
    }
}
