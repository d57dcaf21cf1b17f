//! A worker process of the generator: holds its share of the connections
//! and runs the phases the coordinator sends it on standard input (one
//! JSON command a line), answering with JSON events on standard output.
//!
//! Rooms are never split between workers, so a worker knows how many
//! messages were sent into each of its rooms and can tell on its own
//! whether every member has received every one of them.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

use super::net::{self, Ws};
use super::stats::{self, Checker, Kind, Seen};

/// Everything a worker is given before its first command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub server: SocketAddr,
    /// Further nodes of a cluster: connection i goes to the i-th server
    /// of `server` and these, in turn.
    #[serde(default)]
    pub also: Vec<SocketAddr>,
    pub sources: Vec<IpAddr>,
    pub text_len: usize,
    pub connect_concurrency: usize,
    pub rooms: Vec<RoomSpec>,
    pub conns: Vec<ConnSpec>,
    /// Speak Socket.IO over `/socket.io/` instead of `/ws`.
    #[serde(default)]
    pub socketio: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomSpec {
    pub id: String,
    /// Senders in this room, numbered 0..senders.
    pub senders: u32,
    /// What a message says after its marker when the phase mentions
    /// (`RunCmd::mentions`): `@name`s of members who do not send.
    #[serde(default)]
    pub mention: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnSpec {
    pub token: String,
    /// Index into `Plan::rooms`.
    pub room: usize,
    pub sender: Option<u32>,
    /// Where in its send interval this sender starts, in [0, 1): spread
    /// over all senders of the run, so rooms do not send in step and the
    /// total rate is even rather than a burst every interval.
    pub phase: f64,
    /// Stops reading in a phase run with `stall`; its deliveries are
    /// never counted.
    pub stall: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunCmd {
    pub rate_per_sender: f64,
    /// Each sender waits for the ack of one message before the next.
    pub closed_loop: bool,
    pub start_us: u64,
    pub warmup_ms: u64,
    pub duration_ms: u64,
    pub stall: bool,
    /// Messages mention members (the room's `mention`).
    #[serde(default)]
    pub mentions: bool,
}

impl RunCmd {
    fn window(&self) -> (u64, u64) {
        let from = self.start_us + self.warmup_ms * 1000;
        (from, from + self.duration_ms * 1000)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Cmd {
    /// Connect (authenticate, join) the first `upto` connections.
    Connect {
        upto: usize,
    },
    Run(RunCmd),
    /// Each connection's user, in a loop: connect, authenticate, join,
    /// send one message, disconnect.
    Churn(RunCmd),
    Stop,
}

/// Cumulative counters of a worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub sent: u64,
    pub window_sent: u64,
    pub acked: u64,
    pub window_acked: u64,
    pub errors: u64,
    pub delivered: u64,
    pub window_delivered: u64,
    pub unique: u64,
    pub expected: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub foreign: u64,
    pub dropped: u64,
    pub ops: u64,
    pub window_ops: u64,
    pub ops_failed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    Connected {
        n: usize,
        failed: usize,
        error: Option<String>,
    },
    Progress(Counts),
    Report {
        counts: Counts,
        first_error: Option<String>,
        latency: Vec<(u64, u64)>,
        ack_latency: Vec<(u64, u64)>,
        drained: bool,
    },
    Fatal {
        error: String,
    },
}

pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The tokio instant at wall-clock time `us`.
fn instant_at(us: u64) -> tokio::time::Instant {
    let now = unix_us();
    let base = tokio::time::Instant::now();
    if us >= now {
        base + Duration::from_micros(us - now)
    } else {
        base.checked_sub(Duration::from_micros(now - us))
            .unwrap_or(base)
    }
}

#[derive(Default)]
struct Shared {
    sent: AtomicU64,
    window_sent: AtomicU64,
    acked: AtomicU64,
    window_acked: AtomicU64,
    errors: AtomicU64,
    delivered: AtomicU64,
    window_delivered: AtomicU64,
    unique: AtomicU64,
    duplicates: AtomicU64,
    out_of_order: AtomicU64,
    foreign: AtomicU64,
    dropped: AtomicU64,
    ops: AtomicU64,
    window_ops: AtomicU64,
    ops_failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    latency: Mutex<Option<Histogram<u64>>>,
    ack_latency: Mutex<Option<Histogram<u64>>>,
}

impl Shared {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Relaxed);
        self.note(e);
    }

    fn note(&self, e: String) {
        if let Ok(mut slot) = self.first_error.lock()
            && slot.is_none()
        {
            *slot = Some(e);
        }
    }

    fn record(slot: &Mutex<Option<Histogram<u64>>>, us: u64) {
        if let Ok(mut h) = slot.lock() {
            stats::record(h.get_or_insert_with(stats::histogram), us);
        }
    }

    fn take(slot: &Mutex<Option<Histogram<u64>>>) -> Vec<(u64, u64)> {
        slot.lock()
            .ok()
            .and_then(|mut h| h.take())
            .map(|h| stats::export(&h))
            .unwrap_or_default()
    }

    fn counts(&self, rooms: &[Arc<RoomShared>]) -> Counts {
        Counts {
            sent: self.sent.load(Relaxed),
            window_sent: self.window_sent.load(Relaxed),
            acked: self.acked.load(Relaxed),
            window_acked: self.window_acked.load(Relaxed),
            errors: self.errors.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            window_delivered: self.window_delivered.load(Relaxed),
            unique: self.unique.load(Relaxed),
            expected: rooms
                .iter()
                .map(|r| r.sent.load(Relaxed) * r.receivers.load(Relaxed))
                .sum(),
            duplicates: self.duplicates.load(Relaxed),
            out_of_order: self.out_of_order.load(Relaxed),
            foreign: self.foreign.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            ops: self.ops.load(Relaxed),
            window_ops: self.window_ops.load(Relaxed),
            ops_failed: self.ops_failed.load(Relaxed),
        }
    }
}

struct RoomShared {
    id: String,
    senders: u32,
    mention: String,
    /// Messages written into this room by this worker's senders.
    sent: AtomicU64,
    /// Connected members whose deliveries are checked.
    receivers: AtomicU64,
}

#[derive(Clone)]
enum Phase {
    Hold,
    Run(Arc<RunCmd>),
    Stop,
}

/// Runs a worker: reads the plan and commands from standard input until
/// `stop` or end of input.
pub async fn main() -> Result<(), String> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await
        .map_err(|e| format!("reading the plan: {e}"))?
        .ok_or("no plan on standard input")?;
    let plan: Plan = serde_json::from_str(&first).map_err(|e| format!("bad plan: {e}"))?;
    net::SOCKETIO.store(plan.socketio, std::sync::atomic::Ordering::Relaxed);
    let mut out = tokio::io::stdout();
    let w = Worker::new(plan);
    // Commands are few (a connect step, a run per rate); the bound only
    // guards against a runaway coordinator.
    for _ in 0..10_000 {
        let Ok(Some(line)) = lines.next_line().await else {
            break;
        };
        let cmd: Cmd = match serde_json::from_str(&line) {
            Ok(c) => c,
            Err(e) => {
                emit(
                    &mut out,
                    &Event::Fatal {
                        error: format!("bad command: {e}"),
                    },
                )
                .await;
                continue;
            }
        };
        match cmd {
            Cmd::Connect { upto } => {
                let ev = w.connect(upto, &mut out).await;
                emit(&mut out, &ev).await;
            }
            Cmd::Run(run) => {
                let ev = w.run(run, &mut out).await;
                emit(&mut out, &ev).await;
            }
            Cmd::Churn(run) => {
                let ev = w.churn(run, &mut out).await;
                emit(&mut out, &ev).await;
            }
            Cmd::Stop => break,
        }
    }
    w.stop().await;
    Ok(())
}

async fn emit(out: &mut tokio::io::Stdout, ev: &Event) {
    let mut line = serde_json::to_string(ev).unwrap_or_default();
    line.push('\n');
    let _ = out.write_all(line.as_bytes()).await;
    let _ = out.flush().await;
}

struct Worker {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    rooms: Vec<Arc<RoomShared>>,
    phase: watch::Sender<Phase>,
    connected: std::sync::atomic::AtomicUsize,
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after the send window a worker waits for stragglers before
/// it counts them as lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Worker {
    fn new(plan: Plan) -> Worker {
        let rooms = plan
            .rooms
            .iter()
            .map(|r| {
                Arc::new(RoomShared {
                    id: r.id.clone(),
                    senders: r.senders,
                    mention: r.mention.clone(),
                    sent: AtomicU64::new(0),
                    receivers: AtomicU64::new(0),
                })
            })
            .collect();
        Worker {
            plan: Arc::new(plan),
            shared: Arc::default(),
            rooms,
            phase: watch::channel(Phase::Hold).0,
            connected: Default::default(),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
        }
    }

    fn server(&self, i: usize) -> SocketAddr {
        match i % (self.plan.also.len() + 1) {
            0 => self.plan.server,
            n => self.plan.also[n - 1],
        }
    }

    fn source(&self, i: usize) -> Option<IpAddr> {
        let s = &self.plan.sources;
        (!s.is_empty()).then(|| s[i % s.len()])
    }

    async fn connect(&self, upto: usize, out: &mut tokio::io::Stdout) -> Event {
        let from = self.connected.load(Relaxed);
        let upto = upto.min(self.plan.conns.len());
        let sem = Arc::new(Semaphore::new(self.plan.connect_concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for i in from..upto {
            let spec = self.plan.conns[i].clone();
            let room = self.rooms[spec.room].clone();
            let source = self.source(i);
            let server = self.server(i);
            let sem = sem.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let r = setup(server, source, &spec, &room).await;
                r.map(|ws| (ws, spec, room))
            });
        }
        let (mut ok, mut failed, mut first) = (0usize, 0usize, None);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // Bounded by the number of connections spawned above.
        loop {
            tokio::select! {
                next = set.join_next() => {
                    let Some(res) = next else { break };
                    match res {
                        Ok(Ok((ws, spec, room))) => {
                            ok += 1;
                            self.start_conn(ws, spec, room);
                        }
                        Ok(Err(e)) => {
                            failed += 1;
                            first.get_or_insert(e);
                        }
                        Err(e) => {
                            failed += 1;
                            first.get_or_insert(format!("connection task failed: {e}"));
                        }
                    }
                }
                _ = tick.tick() => {
                    let mut c = self.shared.counts(&self.rooms);
                    c.ops = (from + ok) as u64;
                    emit(out, &Event::Progress(c)).await;
                }
            }
        }
        self.connected.store(upto, Relaxed);
        Event::Connected {
            n: ok,
            failed,
            error: first,
        }
    }

    fn start_conn(&self, ws: Ws, spec: ConnSpec, room: Arc<RoomShared>) {
        if !spec.stall {
            room.receivers.fetch_add(1, Relaxed);
        }
        let conn = Conn {
            ws,
            checker: Checker::new(room.senders as usize),
            spec,
            room,
            shared: self.shared.clone(),
            phase: self.phase.subscribe(),
            text_len: self.plan.text_len,
        };
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.spawn(conn.run());
        }
    }

    async fn run(&self, run: RunCmd, out: &mut tokio::io::Stdout) -> Event {
        let (_, end_us) = run.window();
        let run = Arc::new(run);
        self.phase.send_replace(Phase::Run(run.clone()));
        let end = instant_at(end_us);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // Until the send window closes: progress once a second.
        while tokio::time::Instant::now() < end {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => {}
                _ = tick.tick() => emit(out, &Event::Progress(self.shared.counts(&self.rooms))).await,
            }
        }
        let drained = self.drain(run.closed_loop).await;
        self.report(drained)
    }

    /// Waits until every checked member has every message sent into its
    /// room, and every send has its answer, or the drain timeout.
    async fn drain(&self, closed_loop: bool) -> bool {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        loop {
            let c = self.shared.counts(&self.rooms);
            let answered = c.acked + c.errors >= c.sent || !closed_loop;
            if c.unique >= c.expected && answered {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn report(&self, drained: bool) -> Event {
        Event::Report {
            counts: self.shared.counts(&self.rooms),
            first_error: self.shared.first_error.lock().ok().and_then(|e| e.clone()),
            latency: Shared::take(&self.shared.latency),
            ack_latency: Shared::take(&self.shared.ack_latency),
            drained,
        }
    }

    async fn churn(&self, run: RunCmd, out: &mut tokio::io::Stdout) -> Event {
        let run = Arc::new(run);
        let (_, end_us) = run.window();
        let mut set = tokio::task::JoinSet::new();
        for (i, spec) in self.plan.conns.iter().enumerate() {
            let spec = spec.clone();
            let room = self.rooms[spec.room].clone();
            let source = self.source(i);
            let server = self.server(i);
            let shared = self.shared.clone();
            let run = run.clone();
            let text_len = self.plan.text_len;
            set.spawn(async move {
                churn_loop(server, source, spec, room, shared, run, text_len).await
            });
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let hard_end = instant_at(end_us) + SETUP_TIMEOUT;
        loop {
            tokio::select! {
                next = set.join_next() => if next.is_none() { break },
                _ = tick.tick() => emit(out, &Event::Progress(self.shared.counts(&self.rooms))).await,
                _ = tokio::time::sleep_until(hard_end) => {
                    set.abort_all();
                    break;
                }
            }
        }
        self.report(true)
    }

    async fn stop(&self) {
        self.phase.send_replace(Phase::Stop);
        let tasks = self.tasks.lock().map(|mut t| std::mem::take(&mut *t)).ok();
        if let Some(mut tasks) = tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            tasks.abort_all();
        }
    }
}

fn join_frame(room: &str) -> String {
    format!(r#"{{"type":"join_room","id":"j","data":{{"room":"{room}"}}}}"#)
}

/// Reads frames until one satisfies `want` (Ok(true)), with a deadline.
async fn await_frame(
    ws: &mut Ws,
    what: &str,
    mut want: impl FnMut(&str) -> Result<bool, String>,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("no {what} within {SETUP_TIMEOUT:?}"))?;
        match next {
            None => return Err(format!("the server closed the connection before {what}")),
            Some(Err(e)) => return Err(format!("waiting for {what}: {e}")),
            Some(Ok(Message::Close(c))) => {
                return Err(format!(
                    "the server closed the connection before {what}: {}",
                    c.map(|c| format!("{} {}", u16::from(c.code), c.reason))
                        .unwrap_or_default()
                ));
            }
            Some(Ok(Message::Text(t))) => {
                if want(t.as_str())? {
                    return Ok(());
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

/// The answer to the frame with id `id`: Ok for an ack, the error's text
/// for an error.
fn answer_to(frame: &str, id: &str) -> Result<bool, String> {
    let k = stats::kind(frame);
    if k != Kind::Ack && k != Kind::Error {
        return Ok(false);
    }
    let v: serde_json::Value =
        serde_json::from_str(frame).map_err(|e| format!("unparsable frame: {e}"))?;
    if v["id"].as_str() != Some(id) {
        return Ok(false);
    }
    if k == Kind::Error {
        return Err(format!(
            "the server answered {id} with {}: {}",
            v["data"]["code"].as_str().unwrap_or("?"),
            v["data"]["message"].as_str().unwrap_or("?")
        ));
    }
    Ok(true)
}

/// SO_RCVBUF of members that stall, in bytes.
const STALLED_RECV_BUFFER: u32 = 4096;

/// Connects, waits for `authenticated`, joins the room.
async fn setup(
    server: SocketAddr,
    source: Option<IpAddr>,
    spec: &ConnSpec,
    room: &RoomShared,
) -> Result<Ws, String> {
    // Members that will stall get a small receive buffer (see connect_ws).
    let recv_buffer = spec.stall.then_some(STALLED_RECV_BUFFER);
    let mut ws = net::connect_ws(server, source, &spec.token, recv_buffer).await?;
    await_frame(&mut ws, "authenticated", |t| {
        if stats::kind(t) == Kind::Error {
            return Err(format!("refused: {t}"));
        }
        Ok(stats::kind(t) == Kind::Authenticated)
    })
    .await?;
    ws.send(Message::text(join_frame(&room.id)))
        .await
        .map_err(|e| format!("sending join_room: {e}"))?;
    await_frame(&mut ws, "the join_room ack", |t| answer_to(t, "j")).await?;
    Ok(ws)
}

struct Conn {
    ws: Ws,
    spec: ConnSpec,
    room: Arc<RoomShared>,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    checker: Checker,
    text_len: usize,
}

/// The send schedule of one sender in the current run.
struct Schedule {
    next: tokio::time::Instant,
    end: tokio::time::Instant,
    interval: Duration,
    /// Closed loop: the seq awaiting its ack and when it was sent.
    outstanding: Option<(u64, Instant, bool)>,
}

impl Conn {
    async fn run(mut self) {
        let mut run: Option<Arc<RunCmd>> = None;
        let mut sched: Option<Schedule> = None;
        let mut seq: u64 = 0;
        let mut alive = true;
        let mut stalled = false;
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        // Ends on Stop, or when the coordinator goes away; every branch
        // either makes progress on the socket or changes phase.
        loop {
            let send_at = sched
                .as_ref()
                .filter(|s| s.outstanding.is_none() && s.next < s.end)
                .map(|s| s.next);
            tokio::select! {
                biased;
                changed = self.phase.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let p = self.phase.borrow_and_update().clone();
                    match p {
                        Phase::Stop => break,
                        Phase::Hold => {
                            run = None;
                            sched = None;
                            stalled = false;
                        }
                        Phase::Run(cmd) => {
                            stalled = cmd.stall && self.spec.stall;
                            sched = self.spec.sender.map(|_| schedule(&cmd, self.spec.phase));
                            run = Some(cmd);
                        }
                    }
                }
                msg = self.ws.next(), if alive && !stalled => {
                    match msg {
                        Some(Ok(Message::Text(t))) => self.on_text(t.as_str(), run.as_deref(), sched.as_mut()),
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            alive = false;
                            if !self.spec.stall {
                                self.shared.dropped.fetch_add(1, Relaxed);
                                self.room.receivers.fetch_sub(1, Relaxed);
                            }
                        }
                        Some(Ok(_)) => {}
                    }
                }
                _ = tokio::time::sleep_until(send_at.unwrap_or(far)), if alive && send_at.is_some() => {
                    let (Some(cmd), Some(s), Some(sender)) = (run.as_deref(), sched.as_mut(), self.spec.sender) else {
                        continue;
                    };
                    let now_us = unix_us();
                    let (from, to) = cmd.window();
                    let in_window = (from..to).contains(&now_us);
                    let mention = if cmd.mentions { self.room.mention.as_str() } else { "" };
                    let text = stats::message_text_with(sender, seq, now_us, self.text_len, mention);
                    let frame = format!(
                        r#"{{"type":"send_message","id":"s{seq}","data":{{"room":"{}","text":"{text}"}}}}"#,
                        self.room.id
                    );
                    if self.ws.send(Message::text(frame)).await.is_err() {
                        alive = false;
                        self.shared.dropped.fetch_add(1, Relaxed);
                        continue;
                    }
                    self.room.sent.fetch_add(1, Relaxed);
                    self.shared.sent.fetch_add(1, Relaxed);
                    if in_window {
                        self.shared.window_sent.fetch_add(1, Relaxed);
                    }
                    if cmd.closed_loop {
                        s.outstanding = Some((seq, Instant::now(), in_window));
                    } else {
                        s.next += s.interval;
                    }
                    seq += 1;
                }
            }
        }
        if alive {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
        }
    }

    fn on_text(&mut self, t: &str, run: Option<&RunCmd>, sched: Option<&mut Schedule>) {
        match stats::kind(t) {
            Kind::Message => {
                if self.spec.stall {
                    return;
                }
                let Some(m) = stats::find_marker(t) else {
                    return;
                };
                let sh = &self.shared;
                sh.delivered.fetch_add(1, Relaxed);
                match self.checker.see(m.sender, m.seq) {
                    Seen::InOrder | Seen::Ahead => sh.unique.fetch_add(1, Relaxed),
                    Seen::Late => {
                        sh.unique.fetch_add(1, Relaxed);
                        sh.out_of_order.fetch_add(1, Relaxed)
                    }
                    Seen::Duplicate => sh.duplicates.fetch_add(1, Relaxed),
                    Seen::Foreign => sh.foreign.fetch_add(1, Relaxed),
                };
                if let Some(cmd) = run {
                    let (from, to) = cmd.window();
                    if (from..to).contains(&m.sent_us) {
                        sh.window_delivered.fetch_add(1, Relaxed);
                        Shared::record(&sh.latency, unix_us().saturating_sub(m.sent_us));
                    }
                }
            }
            k @ (Kind::Ack | Kind::Error) => {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(t) else {
                    self.shared.error(format!("unparsable frame: {t}"));
                    return;
                };
                let id = v["id"].as_str().and_then(|s| s.strip_prefix('s'));
                let seq: Option<u64> = id.and_then(|s| s.parse().ok());
                if k == Kind::Error {
                    self.shared.error(format!(
                        "{}: {}",
                        v["data"]["code"].as_str().unwrap_or("?"),
                        v["data"]["message"].as_str().unwrap_or("?")
                    ));
                } else if seq.is_some() {
                    self.shared.acked.fetch_add(1, Relaxed);
                }
                if let (Some(seq), Some(s)) = (seq, sched)
                    && let Some((want, at, in_window)) = s.outstanding
                    && want == seq
                {
                    s.outstanding = None;
                    s.next = tokio::time::Instant::now();
                    if k == Kind::Ack {
                        Shared::record(&self.shared.ack_latency, at.elapsed().as_micros() as u64);
                        if in_window {
                            self.shared.window_acked.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
            Kind::Authenticated | Kind::Other => {}
        }
    }
}

fn schedule(cmd: &RunCmd, phase: f64) -> Schedule {
    let (_, end_us) = cmd.window();
    let start = instant_at(cmd.start_us);
    let interval = if cmd.closed_loop || cmd.rate_per_sender <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(1.0 / cmd.rate_per_sender)
    };
    Schedule {
        next: start + interval.mul_f64(phase.clamp(0.0, 1.0)),
        end: instant_at(end_us),
        interval,
        outstanding: None,
    }
}

async fn churn_loop(
    server: SocketAddr,
    source: Option<IpAddr>,
    spec: ConnSpec,
    room: Arc<RoomShared>,
    shared: Arc<Shared>,
    run: Arc<RunCmd>,
    text_len: usize,
) {
    let (from, to) = run.window();
    let start = instant_at(run.start_us);
    tokio::time::sleep_until(start).await;
    let end = instant_at(to);
    let mut seq = 0u64;
    // Bounded by the run's end; a failed cycle also waits a little so a
    // refusing server is not hammered.
    while tokio::time::Instant::now() < end {
        let began = Instant::now();
        let began_us = unix_us();
        let r = tokio::time::timeout(
            SETUP_TIMEOUT,
            churn_once(server, source, &spec, &room, seq, text_len),
        )
        .await;
        seq += 1;
        match r {
            Ok(Ok(())) => {
                shared.ops.fetch_add(1, Relaxed);
                let done = unix_us();
                if (from..to).contains(&began_us) && done < to {
                    shared.window_ops.fetch_add(1, Relaxed);
                    Shared::record(&shared.latency, began.elapsed().as_micros() as u64);
                }
            }
            Ok(Err(e)) => {
                shared.ops_failed.fetch_add(1, Relaxed);
                shared.note(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => {
                shared.ops_failed.fetch_add(1, Relaxed);
                shared.note("a connect-join-send cycle timed out".into());
            }
        }
    }
}

async fn churn_once(
    server: SocketAddr,
    source: Option<IpAddr>,
    spec: &ConnSpec,
    room: &RoomShared,
    seq: u64,
    text_len: usize,
) -> Result<(), String> {
    let mut ws = setup(server, source, spec, room).await?;
    let text = stats::message_text(spec.sender.unwrap_or(0), seq, unix_us(), text_len);
    let frame = format!(
        r#"{{"type":"send_message","id":"c","data":{{"room":"{}","text":"{text}"}}}}"#,
        room.id
    );
    ws.send(Message::text(frame))
        .await
        .map_err(|e| format!("sending: {e}"))?;
    await_frame(&mut ws, "the send_message ack", |t| answer_to(t, "c")).await?;
    // The client starts the closing handshake and waits for the server to
    // end the TCP connection, so TIME_WAIT stays on the server's side and
    // the generator's ports are not used up.
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..1000 {
            match ws.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    Ok(())
}
