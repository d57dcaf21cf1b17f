//! `confab bench`: a load generator that speaks only the public protocol,
//! so it can drive confab or any server that implements the part of the
//! contract it uses (register, create rooms, `/ws?token=`, `join_room`,
//! `send_message`, acks).
//!
//! The coordinator (this module) registers the run's users and creates its
//! rooms over HTTP, then hands whole rooms to worker processes (the same
//! binary, `confab bench-worker`), so that no process needs more open
//! files than the machine allows. Workers hold the connections, run each
//! phase at a wall-clock start time the coordinator picks, check every
//! delivery and report counters and latency histograms back.

pub mod chart;
pub mod net;
pub mod search;
pub mod stats;
pub mod worker;

/// `println!` that ends the run quietly when standard output is closed
/// (`confab bench … | head`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if writeln!(out, $($arg)*).and_then(|_| out.flush()).is_err() {
            std::process::exit(0);
        }
    }};
}

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};

use stats::Pcts;
use worker::{Cmd, ConnSpec, Counts, Event, Plan, RoomSpec, RunCmd, unix_us};

/// Hard bounds on a run, whatever the flags say.
const MAX_CONNECTIONS: usize = 100_000;
const MAX_DURATION_MS: u64 = 3_600_000;
/// Connections one worker process holds at most (each is a file).
const PER_WORKER: usize = 8_000;

#[derive(Subcommand, Debug, Clone)]
pub enum BenchCmd {
    /// N connections, each authenticated and in one room, held: server
    /// memory per connection (with --server-pid) and connect rate.
    Idle(IdleArgs),
    /// R rooms of M members, S senders per room at a fixed total rate:
    /// deliveries per second and delivery latency (--find-max: the highest
    /// rate with p99 under the bound and nothing lost).
    Fanout(FanoutArgs),
    /// Concurrent senders, each waiting for its ack before the next:
    /// acknowledged (durably stored) messages per second.
    Durable(DurableArgs),
    /// Connect, authenticate, join, send one, disconnect, in a loop.
    Churn(ChurnArgs),
    /// Fan-out with a share of members that stop reading: the others'
    /// latency and the server's memory.
    Slow(SlowArgs),
    /// Search over a store loaded directly (not over the protocol): query
    /// latency, index size and indexer throughput.
    Search(search::SearchArgs),
    /// Draws an SVG chart from saved results (--out of earlier runs).
    Chart(chart::ChartArgs),
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The server, e.g. http://127.0.0.1:8080. Loopback only.
    #[arg(long)]
    pub url: String,
    /// Another node of the same cluster (repeatable): connections are
    /// spread over `--url` and these in turn, while users and rooms are
    /// made through `--url`.
    #[arg(long = "also", value_name = "URL")]
    pub also: Vec<String>,
    /// Measured time per step, e.g. 10s or 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_ms)]
    pub duration: u64,
    /// Load before measuring starts, per step.
    #[arg(long, default_value = "2s", value_parser = parse_ms)]
    pub warmup: u64,
    /// The server's process id, to read its memory (VmRSS) from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Worker processes (default: one per 8,000 connections).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: Option<u16>,
    /// Loopback source addresses to spread connections over (127.0.0.2, …).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(0..=250))]
    pub source_addrs: u16,
    /// Length of each message's text in bytes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(40..=4000))]
    pub text_len: u32,
    /// Password of the run's users.
    #[arg(long, default_value = "bench-password-1")]
    pub password: String,
    /// Registrations, room creations and connects in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub setup_concurrency: u16,
    /// Also write the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Connect over Socket.IO (`/socket.io/?EIO=4&transport=websocket`,
    /// confab's frames as events) instead of `/ws`.
    #[arg(long)]
    pub socketio: bool,
}

#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to hold, one user each.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub connections: usize,
    /// Members per room.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Memory is read after each of this many equal connect steps.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub steps: u16,
}

#[derive(Args, Debug, Clone)]
pub struct Traffic {
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Senders per room (members too).
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Messages per second, all rooms together.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub traffic: Traffic,
    /// Raise the rate step by step until p99 passes --max-p99-ms (twice
    /// in a row at one rate) or a message is lost; report the last good
    /// rate.
    #[arg(long)]
    pub find_max: bool,
    /// Each step's rate is the previous one times this.
    #[arg(long, default_value_t = 1.25)]
    pub factor: f64,
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u16).range(1..=40))]
    pub max_steps: u16,
    #[arg(long, default_value_t = 50.0)]
    pub max_p99_ms: f64,
    /// Cost of mentions: alternate steps whose messages mention two
    /// members of their room with steps whose messages do not, at the
    /// same rate, and compare the server's CPU time per delivery (needs
    /// --server-pid). Not with --find-max.
    #[arg(long)]
    pub mentions: bool,
    /// With --mentions: how many pairs of steps (in the order plain,
    /// mentions, mentions, plain, …).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub pairs: u16,
}

#[derive(Args, Debug, Clone)]
pub struct DurableArgs {
    #[command(flatten)]
    pub common: Common,
    /// Concurrent senders, one connection and user each.
    #[arg(long, short = 'n', default_value_t = 200)]
    pub connections: usize,
    /// Senders per room (each receives the others' messages).
    #[arg(long, default_value_t = 10)]
    pub members: usize,
}

#[derive(Args, Debug, Clone)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,
    /// Concurrent connect-send-disconnect loops, one user each.
    #[arg(long, short = 'n', default_value_t = 50)]
    pub connections: usize,
    #[arg(long, default_value_t = 10)]
    pub members: usize,
}

#[derive(Args, Debug, Clone)]
pub struct SlowArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub traffic: Traffic,
    /// Share of each room's members (never a sender) that stop reading.
    #[arg(long, default_value_t = 0.01)]
    pub stalled: f64,
    /// Stalled phases, each between two phases of everyone reading.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// "10s", "500ms", "2m", "10" (seconds) → milliseconds.
pub fn parse_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1000)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s or 500ms"))?;
    n.checked_mul(mult)
        .filter(|&ms| ms <= MAX_DURATION_MS)
        .ok_or_else(|| format!("{s:?}: at most an hour"))
}

/// One measured step of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Step {
    pub label: String,
    /// Offered messages per second (0: closed loop).
    pub target_rate: f64,
    pub seconds: f64,
    pub sent: u64,
    pub msgs_per_sec: f64,
    pub acked: u64,
    pub acked_per_sec: f64,
    pub errors: u64,
    pub delivered: u64,
    pub deliveries_per_sec: f64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub dropped: u64,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub ops_failed: u64,
    pub latency: Pcts,
    pub ack_latency: Pcts,
    pub rss_peak: Option<u64>,
    /// The server's CPU time (user + system, every thread) over the
    /// measured window only (not setup, not warm-up), in µs, and per
    /// delivery, per acknowledged message and per operation of that
    /// window (with --server-pid).
    #[serde(default)]
    pub cpu_us: Option<u64>,
    #[serde(default)]
    pub cpu_us_per_delivery: Option<f64>,
    #[serde(default)]
    pub cpu_us_per_acked: Option<f64>,
    #[serde(default)]
    pub cpu_us_per_op: Option<f64>,
    pub passed: bool,
    pub why: Vec<String>,
    pub first_error: Option<String>,
}

/// `fanout --mentions`: server CPU per delivery with and without
/// mentions, each the median of its steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MentionsOutcome {
    pub plain_cpu_us_per_delivery: f64,
    pub mentions_cpu_us_per_delivery: f64,
    /// mentions / plain.
    pub ratio: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleOutcome {
    pub connections: usize,
    pub connect_secs: f64,
    pub connects_per_sec: f64,
    pub rss_before: Option<u64>,
    pub rss_after: Option<u64>,
    pub rss_per_connection: Option<f64>,
    /// (connections, server RSS in bytes) after each connect step.
    pub memory: Vec<(usize, u64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlowOutcome {
    pub stalled_connections: usize,
    /// Others' p99: the median over the phases of everyone reading.
    pub baseline_p99_ms: f64,
    /// The median over the stalled phases.
    pub stalled_p99_ms: f64,
    pub p99_increase_pct: f64,
    pub rss_before: Option<u64>,
    pub rss_peak: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub scenario: String,
    pub url: String,
    pub params: Value,
    pub users: usize,
    pub rooms: usize,
    pub workers: usize,
    pub setup_secs: f64,
    pub passed: bool,
    pub failures: Vec<String>,
    /// Machine or server limits that capped the run.
    pub bound_by: Vec<String>,
    pub steps: Vec<Step>,
    /// Index in `steps` of the best passing step (find-max).
    pub best: Option<usize>,
    pub idle: Option<IdleOutcome>,
    pub slow: Option<SlowOutcome>,
    #[serde(default)]
    pub mentions: Option<MentionsOutcome>,
}

/// Runs a scenario and prints its result. An error means the run could
/// not be made or failed its checks.
pub async fn run(cmd: BenchCmd, json_out: bool) -> Result<(), String> {
    let (outcome, out) = match cmd {
        BenchCmd::Chart(a) => return chart::run(&a),
        BenchCmd::Search(a) => {
            let out = a.out.clone();
            let v = search::run(a).await?;
            let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
            if let Some(path) = out {
                std::fs::write(&path, &text)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
            if json_out {
                say!("{text}");
            }
            return Ok(());
        }
        BenchCmd::Idle(a) => {
            let out = a.common.out.clone();
            (idle(a).await?, out)
        }
        BenchCmd::Fanout(a) => {
            let out = a.common.out.clone();
            (fanout(a).await?, out)
        }
        BenchCmd::Durable(a) => {
            let out = a.common.out.clone();
            (durable(a).await?, out)
        }
        BenchCmd::Churn(a) => {
            let out = a.common.out.clone();
            (churn(a).await?, out)
        }
        BenchCmd::Slow(a) => {
            let out = a.common.out.clone();
            (slow(a).await?, out)
        }
    };
    let text = serde_json::to_string_pretty(&outcome).map_err(|e| e.to_string())?;
    if let Some(path) = out {
        std::fs::write(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if json_out {
        say!("{text}");
    } else {
        print_table(&outcome);
    }
    if outcome.passed {
        Ok(())
    } else {
        Err(format!("the run failed: {}", outcome.failures.join("; ")))
    }
}

/// Who is in which room, and who sends.
struct Layout {
    /// Per room: its members (user indexes) and how many of the first
    /// members send.
    rooms: Vec<(Vec<usize>, usize)>,
    users: usize,
    /// Members that stop reading in a stalled phase.
    stall: Vec<bool>,
}

impl Layout {
    fn rooms_of(users: usize, members: usize, senders: usize) -> Layout {
        let members = members.max(1);
        let rooms = users.div_ceil(members);
        let rooms = (0..rooms)
            .map(|r| {
                let list: Vec<usize> = (r * members..((r + 1) * members).min(users)).collect();
                let s = senders.min(list.len());
                (list, s)
            })
            .collect();
        Layout {
            rooms,
            users,
            stall: vec![false; users],
        }
    }
}

/// The run's users and rooms, made over HTTP.
struct Setup {
    server: SocketAddr,
    /// Further nodes of a cluster to spread connections over.
    also: Vec<SocketAddr>,
    sources: Vec<IpAddr>,
    tokens: Vec<String>,
    room_ids: Vec<String>,
    /// Usernames are `{prefix}.{index}`.
    prefix: String,
    secs: f64,
}

fn prefix() -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = unix_us() ^ (u64::from(std::process::id()) << 40);
    let mut s = String::from("b");
    for _ in 0..7 {
        s.push(DIGITS[(n % 36) as usize] as char);
        n /= 36;
    }
    s
}

fn check_size(n: usize) -> Result<(), String> {
    if n == 0 || n > MAX_CONNECTIONS {
        return Err(format!(
            "a run holds 1 to {MAX_CONNECTIONS} connections, not {n}"
        ));
    }
    Ok(())
}

async fn setup(common: &Common, layout: &Layout, progress: &mut Progress) -> Result<Setup, String> {
    let server = net::parse_url(&common.url)?;
    let also = common
        .also
        .iter()
        .map(|u| net::parse_url(u))
        .collect::<Result<Vec<_>, _>>()?;
    let sources = net::source_addrs(server, common.source_addrs as usize);
    let began = Instant::now();
    let prefix = prefix();
    let sem = Arc::new(Semaphore::new(common.setup_concurrency as usize));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..layout.users {
        let sem = sem.clone();
        let body = json!({"username": format!("{prefix}.{i}"), "password": common.password});
        let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        set.spawn(async move {
            let _p = sem.acquire_owned().await;
            let r = net::http_json(
                server,
                source,
                "POST",
                "/api/auth/register",
                None,
                Some(&body),
            )
            .await;
            (i, r)
        });
    }
    let mut tokens = vec![String::new(); layout.users];
    let mut done = 0;
    while let Some(r) = set.join_next().await {
        let (i, r) = r.map_err(|e| format!("registration task: {e}"))?;
        let (status, body) = r?;
        match status {
            200 | 201 => {}
            429 => {
                return Err(format!(
                    "the server rate-limited registration after {done} users (confab: raise limits.auth_attempts_per_ip_per_min): {body}"
                ));
            }
            _ => return Err(format!("registering user {i}: HTTP {status}: {body}")),
        }
        tokens[i] = body["token"]
            .as_str()
            .ok_or_else(|| format!("registration answer without a token: {body}"))?
            .to_string();
        done += 1;
        progress.tick(|| format!("registering users: {done}/{}", layout.users));
    }
    let mut room_ids = Vec::with_capacity(layout.rooms.len());
    for (r, (members, _)) in layout.rooms.iter().enumerate() {
        let owner = members.first().ok_or("a room without members")?;
        let body = json!({"name": format!("{prefix}-r{r}")});
        let (status, v) = net::http_json(
            server,
            None,
            "POST",
            "/api/rooms",
            Some(tokens[*owner].as_str()),
            Some(&body),
        )
        .await?;
        match status {
            200 | 201 => {}
            429 => {
                return Err(format!(
                    "the server rate-limited room creation after {r} rooms (confab: raise limits.room_creations_per_hour): {v}"
                ));
            }
            _ => return Err(format!("creating room {r}: HTTP {status}: {v}")),
        }
        room_ids.push(
            v["room"]["id"]
                .as_str()
                .ok_or_else(|| format!("room answer without an id: {v}"))?
                .to_string(),
        );
        progress.tick(|| format!("creating rooms: {}/{}", r + 1, layout.rooms.len()));
    }
    // The other nodes apply what was made here from the cluster's log:
    // connecting there before they have would find no user or room.
    if let (Some(last), Some(token)) = (room_ids.last(), tokens.first()) {
        for node in &also {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let path = format!("/api/rooms/{last}");
                let (status, _) =
                    net::http_json(*node, None, "GET", &path, Some(token), None).await?;
                if status == 200 {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{node} did not catch up with the setup within 60 s"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    progress.done();
    Ok(Setup {
        server,
        also,
        sources,
        tokens,
        room_ids,
        prefix,
        secs: began.elapsed().as_secs_f64(),
    })
}

/// The generator's open-file limit, less what the process needs besides
/// its connections.
fn per_worker_budget() -> usize {
    let limit = net::nofile_limit(None).unwrap_or(1024) as usize;
    PER_WORKER.min(limit.saturating_sub(200)).max(100)
}

/// Splits the rooms over worker processes, whole rooms each.
fn plans(common: &Common, layout: &Layout, s: &Setup, connect_concurrency: usize) -> Vec<Plan> {
    let budget = per_worker_budget();
    let need = layout.users.div_ceil(budget).max(1);
    let workers = common
        .workers
        .map(usize::from)
        .unwrap_or(need)
        .max(need)
        .min(layout.rooms.len().max(1));
    let mut plans: Vec<Plan> = (0..workers)
        .map(|_| Plan {
            server: s.server,
            also: s.also.clone(),
            sources: s.sources.clone(),
            text_len: common.text_len as usize,
            connect_concurrency,
            rooms: Vec::new(),
            conns: Vec::new(),
            socketio: common.socketio,
        })
        .collect();
    let mut sender_no = 0u64;
    for (r, (members, senders)) in layout.rooms.iter().enumerate() {
        let p = &mut plans[r % workers];
        let local = p.rooms.len();
        // The last two members, who never send, are the ones mentioned.
        let mention = members
            .iter()
            .skip(*senders)
            .rev()
            .take(2)
            .map(|u| format!(" @{}.{u}", s.prefix))
            .collect::<String>();
        p.rooms.push(RoomSpec {
            id: s.room_ids[r].clone(),
            senders: *senders as u32,
            mention,
        });
        for (k, &u) in members.iter().enumerate() {
            let sender = (k < *senders).then_some(k as u32);
            // A golden-ratio sequence: any prefix of it is spread evenly.
            let phase = if sender.is_some() {
                sender_no += 1;
                (sender_no as f64 * 0.618_033_988_749_895).fract()
            } else {
                0.0
            };
            p.conns.push(ConnSpec {
                token: s.tokens[u].clone(),
                room: local,
                sender,
                phase,
                stall: layout.stall[u],
            });
        }
    }
    plans
}

/// Worker processes and their event streams.
struct Workers {
    children: Vec<tokio::process::Child>,
    stdins: Vec<tokio::process::ChildStdin>,
    events: mpsc::UnboundedReceiver<(usize, Event)>,
    latest: Vec<Counts>,
    sizes: Vec<usize>,
}

impl Workers {
    async fn spawn(plans: Vec<Plan>) -> Result<Workers, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
        let (tx, events) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        let sizes = plans.iter().map(|p| p.conns.len()).collect();
        for (i, plan) in plans.into_iter().enumerate() {
            let mut child = tokio::process::Command::new(&exe)
                .arg("bench-worker")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("starting a worker: {e}"))?;
            let mut stdin = child.stdin.take().ok_or("worker without stdin")?;
            let stdout = child.stdout.take().ok_or("worker without stdout")?;
            let mut line = serde_json::to_string(&plan).map_err(|e| e.to_string())?;
            line.push('\n');
            stdin
                .write_all(line.as_bytes())
                .await
                .map_err(|e| format!("sending a worker its plan: {e}"))?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    match serde_json::from_str::<Event>(&l) {
                        Ok(ev) => {
                            if tx.send((i, ev)).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send((
                                i,
                                Event::Fatal {
                                    error: format!("unreadable worker output: {e}"),
                                },
                            ));
                        }
                    }
                }
                let _ = tx.send((
                    i,
                    Event::Fatal {
                        error: "worker exited".into(),
                    },
                ));
            });
            children.push(child);
            stdins.push(stdin);
        }
        let n = children.len();
        Ok(Workers {
            children,
            stdins,
            events,
            latest: vec![Counts::default(); n],
            sizes,
        })
    }

    async fn send(&mut self, cmd: impl Fn(usize) -> Cmd) -> Result<(), String> {
        for (i, stdin) in self.stdins.iter_mut().enumerate() {
            let mut line = serde_json::to_string(&cmd(i)).map_err(|e| e.to_string())?;
            line.push('\n');
            stdin
                .write_all(line.as_bytes())
                .await
                .map_err(|e| format!("sending worker {i} a command: {e}"))?;
        }
        Ok(())
    }

    /// Waits for one answer from every worker, passing progress on, while
    /// `sample` runs once a second (memory readings).
    async fn gather(
        &mut self,
        limit: Duration,
        progress: &mut Progress,
        label: &str,
        mut sample: impl FnMut(),
    ) -> Result<Vec<Event>, String> {
        let n = self.children.len();
        let mut got: Vec<Option<Event>> = vec![None; n];
        let deadline = tokio::time::Instant::now() + limit;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut prev: Option<(Instant, Counts)> = None;
        while got.iter().any(Option::is_none) {
            tokio::select! {
                ev = self.events.recv() => {
                    let Some((i, ev)) = ev else { return Err("all workers are gone".into()) };
                    match ev {
                        Event::Progress(c) => {
                            self.latest[i] = c;
                            let total = sum(&self.latest);
                            let now = Instant::now();
                            progress.tick(|| progress_line(label, &total, prev.as_ref(), now));
                            if prev.as_ref().is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_secs(1)) {
                                prev = Some((now, total));
                            }
                        }
                        Event::Fatal { error } => return Err(format!("worker {i}: {error}")),
                        other => got[i] = Some(other),
                    }
                }
                _ = tick.tick() => sample(),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(format!("workers did not answer within {limit:?}"));
                }
            }
        }
        progress.done();
        Ok(got.into_iter().flatten().collect())
    }

    async fn stop(mut self) {
        let _ = self.send(|_| Cmd::Stop).await;
        drop(self.stdins);
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

fn sum(all: &[Counts]) -> Counts {
    let mut t = Counts::default();
    for c in all {
        t.sent += c.sent;
        t.window_sent += c.window_sent;
        t.acked += c.acked;
        t.window_acked += c.window_acked;
        t.errors += c.errors;
        t.delivered += c.delivered;
        t.window_delivered += c.window_delivered;
        t.unique += c.unique;
        t.expected += c.expected;
        t.duplicates += c.duplicates;
        t.out_of_order += c.out_of_order;
        t.foreign += c.foreign;
        t.dropped += c.dropped;
        t.ops += c.ops;
        t.window_ops += c.window_ops;
        t.ops_failed += c.ops_failed;
    }
    t
}

fn progress_line(
    label: &str,
    c: &Counts,
    prev: Option<&(Instant, Counts)>,
    now: Instant,
) -> String {
    let rate = |f: fn(&Counts) -> u64| -> String {
        match prev {
            Some((t, p)) => {
                let secs = now.duration_since(*t).as_secs_f64().max(0.001);
                format!("{:.0}/s", (f(c).saturating_sub(f(p))) as f64 / secs)
            }
            None => "-".into(),
        }
    };
    format!(
        "{label}: sent {} ({}), delivered {} ({}), acked {}, errors {}, ops {} ({})",
        c.sent,
        rate(|c| c.sent),
        c.delivered,
        rate(|c| c.delivered),
        c.acked,
        c.errors,
        c.ops,
        rate(|c| c.ops),
    )
}

/// The progress line on standard error: redrawn in place on a terminal,
/// a line every few seconds otherwise (logs of scripted runs).
struct Progress {
    tty: bool,
    last: Option<Instant>,
    drawn: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            last: None,
            drawn: false,
        }
    }

    fn tick(&mut self, line: impl FnOnce() -> String) {
        let every = if self.tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        };
        if self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        if self.tty {
            eprint!("\r\x1b[2K{}", line());
            self.drawn = true;
        } else {
            eprintln!("{}", line());
        }
    }

    fn done(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
        self.last = None;
    }
}

/// A run in progress: workers connected, counters from the last report.
struct Session {
    workers: Workers,
    prev: Counts,
    progress: Progress,
    pid: Option<u32>,
    bound_by: Vec<String>,
}

impl Session {
    async fn start(
        common: &Common,
        layout: &Layout,
        s: &Setup,
        progress: Progress,
    ) -> Result<Session, String> {
        let plans = plans(common, layout, s, common.setup_concurrency as usize);
        let mut bound_by = Vec::new();
        if let Some(pid) = common.server_pid
            && let Some(limit) = net::nofile_limit(Some(pid))
            && layout.users as u64 + 64 > limit
        {
            bound_by.push(format!(
                "the server's open-file limit ({limit}) is below the {} connections asked for",
                layout.users
            ));
        }
        Ok(Session {
            workers: Workers::spawn(plans).await?,
            prev: Counts::default(),
            progress,
            pid: common.server_pid,
            bound_by,
        })
    }

    /// Connects each worker's first `share(i)` connections. Returns how
    /// many are up and the first error.
    async fn connect(
        &mut self,
        share: impl Fn(usize) -> usize,
    ) -> Result<(usize, Option<String>), String> {
        let sizes = self.workers.sizes.clone();
        self.workers
            .send(|i| Cmd::Connect {
                upto: share(i).min(sizes[i]),
            })
            .await?;
        let evs = self
            .workers
            .gather(
                Duration::from_secs(1800),
                &mut self.progress,
                "connecting",
                || {},
            )
            .await?;
        let (mut up, mut first) = (0, None);
        for ev in evs {
            if let Event::Connected { n, failed, error } = ev {
                up += n;
                if failed > 0 {
                    first = first.or(error.map(|e| format!("{failed} connections failed: {e}")));
                }
            }
        }
        Ok((up, first))
    }

    /// Runs one phase on every worker and turns the answers into a step.
    async fn step(&mut self, label: &str, cmd: Cmd, seconds: f64) -> Result<Step, String> {
        let (target, span) = match &cmd {
            Cmd::Run(r) | Cmd::Churn(r) => (r, r.warmup_ms + r.duration_ms),
            _ => return Err("not a run".into()),
        };
        let target_rate = target.rate_per_sender;
        let limit = Duration::from_millis(span) + Duration::from_secs(60);
        // The workers count the window from start + warm-up to its end:
        // the server's CPU is read at those two moments, so ramp-up and
        // drain are not charged to the window's deliveries.
        let window_start = target.start_us + target.warmup_ms * 1000;
        let window_end = window_start + target.duration_ms * 1000;
        self.workers.send(|_| cmd.clone()).await?;
        let pid = self.pid;
        let cpu_window = pid.map(|pid| {
            tokio::spawn(async move {
                let until = |at: u64| Duration::from_micros(at.saturating_sub(unix_us()));
                tokio::time::sleep(until(window_start)).await;
                let before = net::cpu_us(pid)?;
                tokio::time::sleep(until(window_end)).await;
                Some(net::cpu_us(pid)?.saturating_sub(before))
            })
        });
        let mut peak: Option<u64> = None;
        let evs = self
            .workers
            .gather(limit, &mut self.progress, label, || {
                if let Some(rss) = pid.and_then(net::rss_bytes) {
                    peak = Some(peak.map_or(rss, |p| p.max(rss)));
                }
            })
            .await?;
        let cpu_us = match cpu_window {
            Some(task) => task.await.ok().flatten(),
            None => None,
        };
        let mut latency = stats::histogram();
        let mut ack_latency = stats::histogram();
        let mut counts = Vec::new();
        let mut first_error = None;
        let mut drained = true;
        for ev in evs {
            if let Event::Report {
                counts: c,
                first_error: e,
                latency: l,
                ack_latency: a,
                drained: d,
            } = ev
            {
                counts.push(c);
                first_error = first_error.or(e);
                stats::import(&mut latency, &l);
                stats::import(&mut ack_latency, &a);
                drained &= d;
            }
        }
        let now = sum(&counts);
        let p = std::mem::replace(&mut self.prev, now.clone());
        let d = |f: fn(&Counts) -> u64| f(&now).saturating_sub(f(&p));
        let per_sec = |n: u64| n as f64 / seconds.max(0.001);
        let mut step = Step {
            label: label.to_string(),
            target_rate,
            seconds,
            sent: d(|c| c.sent),
            msgs_per_sec: per_sec(d(|c| c.window_sent)),
            acked: d(|c| c.acked),
            acked_per_sec: per_sec(d(|c| c.window_acked)),
            errors: d(|c| c.errors),
            delivered: d(|c| c.delivered),
            deliveries_per_sec: per_sec(d(|c| c.window_delivered)),
            missing: now.expected.saturating_sub(now.unique),
            duplicates: d(|c| c.duplicates),
            out_of_order: d(|c| c.out_of_order),
            dropped: d(|c| c.dropped),
            ops: d(|c| c.ops),
            ops_per_sec: per_sec(d(|c| c.window_ops)),
            ops_failed: d(|c| c.ops_failed),
            latency: Pcts::of(&latency),
            ack_latency: Pcts::of(&ack_latency),
            rss_peak: peak,
            cpu_us,
            cpu_us_per_delivery: None,
            cpu_us_per_acked: None,
            cpu_us_per_op: None,
            passed: true,
            why: Vec::new(),
            first_error,
        };
        let mut why = Vec::new();
        if step.missing > 0 {
            why.push(format!("{} deliveries missing", step.missing));
        }
        if !drained && step.missing == 0 {
            why.push("sends still unanswered after the drain timeout".into());
        }
        if step.duplicates > 0 {
            why.push(format!("{} duplicated deliveries", step.duplicates));
        }
        if step.out_of_order > 0 {
            why.push(format!("{} deliveries out of order", step.out_of_order));
        }
        if step.errors > 0 {
            why.push(format!(
                "{} error answers (first: {})",
                step.errors,
                step.first_error.as_deref().unwrap_or("?")
            ));
        }
        if step.dropped > 0 {
            why.push(format!(
                "{} connections dropped by the server",
                step.dropped
            ));
        }
        if now.foreign > 0 {
            why.push(format!("{} deliveries from unknown senders", now.foreign));
        }
        let per = |n: u64| cpu_us.filter(|_| n > 0).map(|c| c as f64 / n as f64);
        step.cpu_us_per_delivery = per(d(|c| c.window_delivered));
        step.cpu_us_per_acked = per(d(|c| c.window_acked));
        step.cpu_us_per_op = per(d(|c| c.window_ops));
        step.passed = why.is_empty();
        step.why = why;
        Ok(step)
    }

    async fn finish(mut self) -> Vec<String> {
        self.progress.done();
        self.workers.stop().await;
        self.bound_by
    }
}

fn run_cmd(common: &Common, rate_per_sender: f64, closed_loop: bool, stall: bool) -> RunCmd {
    RunCmd {
        rate_per_sender,
        closed_loop,
        // A moment for every worker to read the command first.
        start_us: unix_us() + 500_000,
        warmup_ms: common.warmup,
        duration_ms: common.duration.max(1),
        stall,
        mentions: false,
    }
}

fn base_outcome(scenario: &str, common: &Common, layout: &Layout, s: &Setup, p: Value) -> Outcome {
    Outcome {
        scenario: scenario.into(),
        url: common.url.clone(),
        params: p,
        users: layout.users,
        rooms: layout.rooms.len(),
        workers: 0,
        setup_secs: s.secs,
        passed: true,
        ..Outcome::default()
    }
}

/// What every scenario does first: registers the layout's users and
/// rooms, starts the worker processes and opens the outcome.
async fn begin(
    scenario: &str,
    c: &Common,
    layout: &Layout,
    params: Value,
) -> Result<(Outcome, Session), String> {
    let mut progress = Progress::new();
    let s = setup(c, layout, &mut progress).await?;
    let mut out = base_outcome(scenario, c, layout, &s, params);
    let session = Session::start(c, layout, &s, progress).await?;
    out.workers = session.workers.sizes.len();
    Ok((out, session))
}

/// Connects everyone; a connection that fails fails the run, naming the
/// limit that stopped it.
async fn connect_all(session: &mut Session, outcome: &mut Outcome) -> Result<bool, String> {
    let sizes = session.workers.sizes.clone();
    let (up, err) = session.connect(|i| sizes[i]).await?;
    if let Some(e) = err {
        outcome.passed = false;
        outcome.failures.push(format!(
            "only {up} of {} connections came up",
            outcome.users
        ));
        outcome.bound_by.push(e);
        return Ok(false);
    }
    Ok(true)
}

async fn idle(a: IdleArgs) -> Result<Outcome, String> {
    check_size(a.connections)?;
    let c = &a.common;
    let layout = Layout::rooms_of(a.connections, a.members, 0);
    let (mut out, mut session) = begin(
        "idle",
        c,
        &layout,
        json!({"connections": a.connections, "members": a.members, "steps": a.steps}),
    )
    .await?;
    let pid = c.server_pid;
    let settle = Duration::from_millis(1500);
    tokio::time::sleep(settle).await;
    let rss_before = pid.and_then(net::rss_bytes);
    let mut idle = IdleOutcome {
        rss_before,
        ..IdleOutcome::default()
    };
    if let Some(r) = rss_before {
        idle.memory.push((0, r));
    }
    let sizes = session.workers.sizes.clone();
    let steps = a.steps as usize;
    let mut up = 0;
    let mut connect_secs = 0.0;
    for k in 1..=steps {
        let began = Instant::now();
        let (n, err) = session.connect(|i| (sizes[i] * k).div_ceil(steps)).await?;
        connect_secs += began.elapsed().as_secs_f64();
        up += n;
        tokio::time::sleep(settle).await;
        if let Some(r) = pid.and_then(net::rss_bytes) {
            idle.memory.push((up, r));
            idle.rss_after = Some(r);
        }
        if let Some(e) = err {
            out.passed = false;
            out.failures.push(format!(
                "only {up} of {} connections came up",
                a.connections
            ));
            out.bound_by.push(e);
            break;
        }
    }
    idle.connections = up;
    idle.connect_secs = connect_secs;
    idle.connects_per_sec = up as f64 / connect_secs.max(0.001);
    if let (Some(b), Some(after)) = (idle.rss_before, idle.rss_after)
        && up > 0
    {
        idle.rss_per_connection = Some((after as f64 - b as f64) / up as f64);
    }
    out.idle = Some(idle);
    out.bound_by.extend(session.finish().await);
    Ok(out)
}

fn traffic_layout(t: &Traffic) -> Result<Layout, String> {
    if t.rooms == 0 || t.members == 0 || t.senders == 0 || t.senders > t.members {
        return Err("need rooms ≥ 1, members ≥ 1 and 1 ≤ senders ≤ members".into());
    }
    if !(t.rate.is_finite() && t.rate > 0.0) {
        return Err("--rate must be positive".into());
    }
    let users = t
        .rooms
        .checked_mul(t.members)
        .ok_or("rooms × members is too large")?;
    check_size(users)?;
    Ok(Layout::rooms_of(users, t.members, t.senders))
}

async fn fanout(a: FanoutArgs) -> Result<Outcome, String> {
    let c = &a.common;
    let t = &a.traffic;
    let layout = traffic_layout(t)?;
    if a.find_max && !(a.factor.is_finite() && a.factor > 1.0) {
        return Err("--factor must be above 1".into());
    }
    if a.mentions && (a.find_max || c.server_pid.is_none()) {
        return Err("--mentions needs --server-pid and a fixed rate (no --find-max)".into());
    }
    let (mut out, mut session) = begin(
        "fanout",
        c,
        &layout,
        json!({"rooms": t.rooms, "members": t.members, "senders": t.senders, "rate": t.rate,
               "find_max": a.find_max, "factor": a.factor, "max_p99_ms": a.max_p99_ms,
               "duration_ms": c.duration, "warmup_ms": c.warmup}),
    )
    .await?;
    if !connect_all(&mut session, &mut out).await? {
        out.bound_by.extend(session.finish().await);
        return Ok(out);
    }
    let senders = (t.rooms * t.senders) as f64;
    if a.mentions {
        mentions_steps(&a, &mut session, &mut out, t.rate / senders).await?;
        out.bound_by.extend(session.finish().await);
        return Ok(out);
    }
    let steps = if a.find_max { a.max_steps as usize } else { 1 };
    let mut rate = t.rate;
    let mut retried = false;
    let mut k = 0;
    while k < steps {
        let label = if retried {
            format!("{rate:.0} msg/s again")
        } else {
            format!("{rate:.0} msg/s")
        };
        let cmd = Cmd::Run(run_cmd(c, rate / senders, false, false));
        let mut step = session
            .step(&label, cmd, c.duration as f64 / 1000.0)
            .await?;
        step.target_rate = rate;
        let lossless = step.passed;
        if a.find_max && step.latency.p99_ms > a.max_p99_ms {
            step.why.push(format!(
                "p99 {:.1} ms is over {} ms",
                step.latency.p99_ms, a.max_p99_ms
            ));
            step.passed = false;
        }
        let passed = step.passed;
        out.steps.push(step);
        if passed {
            out.best = Some(out.steps.len() - 1);
        } else if a.find_max && lossless && !retried {
            // Too slow but nothing lost: the same rate once more before
            // the search ends, so that one stall of a shared machine
            // (a slow fsync, another process) does not end it.
            retried = true;
            continue;
        } else {
            break;
        }
        retried = false;
        rate *= a.factor;
        k += 1;
    }
    if a.find_max {
        if out.best.is_none() {
            out.passed = false;
            out.failures
                .push("even the first rate failed (see its step)".into());
        }
    } else if let Some(s) = out.steps.first()
        && !s.passed
    {
        out.passed = false;
        out.failures.extend(s.why.clone());
    }
    out.bound_by.extend(session.finish().await);
    Ok(out)
}

/// Steps with and without mentions, in turn, at one rate; the outcome
/// compares their server CPU per delivery (median of each kind).
async fn mentions_steps(
    a: &FanoutArgs,
    session: &mut Session,
    out: &mut Outcome,
    rate_per_sender: f64,
) -> Result<(), String> {
    let c = &a.common;
    let (mut plain, mut with) = (Vec::new(), Vec::new());
    // ABBA: a drift over the run (the store growing, a neighbour's load)
    // falls on both kinds alike.
    for pair in 0..a.pairs {
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for mentions in order {
            let label = if mentions { "mentions" } else { "plain" };
            let mut cmd = run_cmd(c, rate_per_sender, false, false);
            cmd.mentions = mentions;
            let mut step = session
                .step(label, Cmd::Run(cmd), c.duration as f64 / 1000.0)
                .await?;
            step.target_rate = a.traffic.rate;
            if !step.passed {
                out.passed = false;
                out.failures.extend(step.why.clone());
            }
            if let Some(x) = step.cpu_us_per_delivery {
                if mentions { &mut with } else { &mut plain }.push(x);
            }
            out.steps.push(step);
        }
    }
    let median = |v: &mut Vec<f64>| -> Option<f64> {
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    match (median(&mut plain), median(&mut with)) {
        (Some(p), Some(m)) if p > 0.0 => {
            out.mentions = Some(MentionsOutcome {
                plain_cpu_us_per_delivery: p,
                mentions_cpu_us_per_delivery: m,
                ratio: m / p,
            });
        }
        _ => {
            out.passed = false;
            out.failures
                .push("no CPU reading of the server (is --server-pid right?)".into());
        }
    }
    Ok(())
}

async fn durable(a: DurableArgs) -> Result<Outcome, String> {
    check_size(a.connections)?;
    let c = &a.common;
    let members = a.members.max(1);
    let layout = Layout::rooms_of(a.connections, members, members);
    let (mut out, mut session) = begin(
        "durable",
        c,
        &layout,
        json!({"connections": a.connections, "members": members,
               "duration_ms": c.duration, "warmup_ms": c.warmup}),
    )
    .await?;
    if connect_all(&mut session, &mut out).await? {
        let cmd = Cmd::Run(run_cmd(c, 0.0, true, false));
        let step = session
            .step("closed loop", cmd, c.duration as f64 / 1000.0)
            .await?;
        if !step.passed {
            out.passed = false;
            out.failures.extend(step.why.clone());
        }
        out.steps.push(step);
        out.best = Some(0);
    }
    out.bound_by.extend(session.finish().await);
    Ok(out)
}

async fn churn(a: ChurnArgs) -> Result<Outcome, String> {
    check_size(a.connections)?;
    let c = &a.common;
    let layout = Layout::rooms_of(a.connections, a.members, 0);
    let (mut out, mut session) = begin(
        "churn",
        c,
        &layout,
        json!({"connections": a.connections, "members": a.members,
               "duration_ms": c.duration, "warmup_ms": c.warmup}),
    )
    .await?;
    let cmd = Cmd::Churn(run_cmd(c, 0.0, true, false));
    let step = session
        .step("connect+auth+join+send", cmd, c.duration as f64 / 1000.0)
        .await?;
    if step.ops_failed > 0 {
        out.passed = false;
        out.failures.push(format!(
            "{} cycles failed (first: {})",
            step.ops_failed,
            step.first_error.as_deref().unwrap_or("?")
        ));
    }
    if step.ops == 0 {
        out.passed = false;
        out.failures.push("no cycle completed".into());
    }
    out.steps.push(step);
    out.best = Some(0);
    out.bound_by.extend(session.finish().await);
    Ok(out)
}

async fn slow(a: SlowArgs) -> Result<Outcome, String> {
    let c = &a.common;
    let t = &a.traffic;
    let mut layout = traffic_layout(t)?;
    if !(0.0..=0.5).contains(&a.stalled) {
        return Err("--stalled is a share between 0 and 0.5".into());
    }
    // The stalled members are the last of each room, never its senders.
    let mut stalled = 0;
    for (members, senders) in &layout.rooms {
        let readers = members.len() - senders;
        // At least one per room whenever the share is not zero.
        let n = ((members.len() as f64 * a.stalled).ceil() as usize).min(readers);
        for &u in members.iter().rev().take(n) {
            layout.stall[u] = true;
            stalled += 1;
        }
    }
    let (mut out, mut session) = begin(
        "slow",
        c,
        &layout,
        json!({"rooms": t.rooms, "members": t.members, "senders": t.senders, "rate": t.rate,
               "stalled": a.stalled, "duration_ms": c.duration, "warmup_ms": c.warmup}),
    )
    .await?;
    if connect_all(&mut session, &mut out).await? {
        let per_sender = t.rate / (t.rooms * t.senders) as f64;
        let seconds = c.duration as f64 / 1000.0;
        // Stalled phases alternate with phases of everyone reading, and
        // the medians of their p99s are compared: a p99 of a few
        // milliseconds drifts with the machine's background load by as
        // much as the effect being measured, and one stall of the shared
        // disk (a slow fsync holds every delivery of its commit) can
        // multiply one phase's p99, so one pair of phases is not enough.
        let rss_before = c.server_pid.and_then(net::rss_bytes);
        let mut reading = Vec::new();
        let mut stalled_steps = Vec::new();
        let mut steps = Vec::new();
        for round in 0..=a.rounds.max(1) {
            let label = if round == 0 {
                "all reading".to_string()
            } else {
                format!("all reading {}", round + 1)
            };
            let mut st = session
                .step(
                    &label,
                    Cmd::Run(run_cmd(c, per_sender, false, false)),
                    seconds,
                )
                .await?;
            st.target_rate = t.rate;
            reading.push(st.latency.p99_ms);
            steps.push(st);
            if round == a.rounds.max(1) {
                break;
            }
            let mut st = session
                .step(
                    &format!("{stalled} stalled ({})", round + 1),
                    Cmd::Run(run_cmd(c, per_sender, false, true)),
                    seconds,
                )
                .await?;
            st.target_rate = t.rate;
            stalled_steps.push((st.latency.p99_ms, st.rss_peak));
            steps.push(st);
        }
        let baseline = median(reading);
        let stalled_p99 = median(stalled_steps.iter().map(|s| s.0).collect());
        let pct = if baseline > 0.0 {
            (stalled_p99 / baseline - 1.0) * 100.0
        } else {
            0.0
        };
        out.slow = Some(SlowOutcome {
            stalled_connections: stalled,
            baseline_p99_ms: baseline,
            stalled_p99_ms: stalled_p99,
            p99_increase_pct: pct,
            rss_before,
            rss_peak: stalled_steps.iter().filter_map(|s| s.1).max(),
        });
        for st in &steps {
            if !st.passed {
                out.passed = false;
                out.failures
                    .extend(st.why.iter().map(|w| format!("{}: {w}", st.label)));
            }
        }
        out.steps.extend(steps);
    }
    out.bound_by.extend(session.finish().await);
    Ok(out)
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn print_table(o: &Outcome) {
    say!(
        "confab bench {} against {}: {} users, {} rooms, {} worker(s), setup {:.1}s",
        o.scenario,
        o.url,
        o.users,
        o.rooms,
        o.workers,
        o.setup_secs
    );
    if let Some(i) = &o.idle {
        say!("connections held     {}", i.connections);
        say!(
            "connect rate         {:.0}/s ({:.1}s)",
            i.connects_per_sec,
            i.connect_secs
        );
        if let (Some(b), Some(a)) = (i.rss_before, i.rss_after) {
            say!("server RSS           {} → {}", mib(b), mib(a));
        }
        match i.rss_per_connection {
            Some(p) => say!("RSS per connection   {:.2} KiB", p / 1024.0),
            None => say!("RSS per connection   n/a (give --server-pid)"),
        }
    }
    if !o.steps.is_empty() {
        let headers = [
            "step", "sent/s", "deliv/s", "acked/s", "ops/s", "p50 ms", "p90 ms", "p99 ms",
            "max ms", "missing", "dup", "ooo", "errors", "ok",
        ];
        let rows: Vec<Vec<String>> = o
            .steps
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let lat = if s.ops > 0 || s.latency.count > 0 {
                    &s.latency
                } else {
                    &s.ack_latency
                };
                vec![
                    format!(
                        "{}{}",
                        s.label,
                        if o.best == Some(k) && o.steps.len() > 1 {
                            " *"
                        } else {
                            ""
                        }
                    ),
                    format!("{:.0}", s.msgs_per_sec),
                    format!("{:.0}", s.deliveries_per_sec),
                    format!("{:.0}", s.acked_per_sec),
                    format!("{:.0}", s.ops_per_sec),
                    format!("{:.2}", lat.p50_ms),
                    format!("{:.2}", lat.p90_ms),
                    format!("{:.2}", lat.p99_ms),
                    format!("{:.2}", lat.max_ms),
                    s.missing.to_string(),
                    s.duplicates.to_string(),
                    s.out_of_order.to_string(),
                    s.errors.to_string(),
                    if s.passed { "yes".into() } else { "NO".into() },
                ]
            })
            .collect();
        let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: Vec<String>| {
            let parts: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:>w$}", w = widths[i]))
                .collect();
            say!("{}", parts.join("  "));
        };
        line(headers.iter().map(|h| h.to_string()).collect());
        for r in rows {
            line(r);
        }
        for s in &o.steps {
            let mut per = Vec::new();
            for (v, what) in [
                (s.cpu_us_per_delivery, "delivery"),
                (s.cpu_us_per_acked, "acked message"),
                (s.cpu_us_per_op, "operation"),
            ] {
                if let Some(v) = v {
                    per.push(format!("{v:.2} µs per {what}"));
                }
            }
            if !per.is_empty() {
                say!("{}: server CPU {}", s.label, per.join(", "));
            }
        }
        if let Some(m) = &o.mentions {
            say!(
                "server CPU per delivery: {:.2} µs plain, {:.2} µs with mentions: ratio {:.3}",
                m.plain_cpu_us_per_delivery,
                m.mentions_cpu_us_per_delivery,
                m.ratio
            );
        }
        for s in &o.steps {
            if s.ack_latency.count > 0 && s.latency.count > 0 {
                say!(
                    "{}: ack latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    s.label,
                    s.ack_latency.p50_ms,
                    s.ack_latency.p99_ms,
                    s.ack_latency.max_ms
                );
            }
            if let Some(r) = s.rss_peak {
                say!("{}: server RSS peak {}", s.label, mib(r));
            }
            for w in &s.why {
                say!("{}: {w}", s.label);
            }
        }
    }
    if let Some(s) = &o.slow {
        say!(
            "stalled connections {}: others' p99 {:.2} ms (median of the reading phases) → {:.2} ms (median of the stalled phases, {:+.0}%)",
            s.stalled_connections,
            s.baseline_p99_ms,
            s.stalled_p99_ms,
            s.p99_increase_pct
        );
    }
    if let Some(b) = o.best
        && o.steps.len() > 1
        && let Some(s) = o.steps.get(b)
    {
        say!(
            "best passing step: {} ({:.0} deliveries/s, p99 {:.2} ms)",
            s.label,
            s.deliveries_per_sec,
            s.latency.p99_ms
        );
    }
    for b in &o.bound_by {
        say!("bound by: {b}");
    }
    say!("result: {}", if o.passed { "PASS" } else { "FAIL" });
    for f in &o.failures {
        say!("  {f}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_ms("10s"), Ok(10_000));
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("2m"), Ok(120_000));
        assert_eq!(parse_ms("3"), Ok(3000));
        assert!(parse_ms("2h").is_err());
        assert!(parse_ms("90m").is_err());
    }

    #[test]
    fn medians_ignore_one_outlier() {
        assert_eq!(median(vec![2.0, 208.0, 3.0]), 3.0);
        assert_eq!(median(vec![2.5, 2.0, 3.0, 90.0]), 2.75);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn layouts_keep_rooms_whole() {
        let l = Layout::rooms_of(250, 100, 2);
        assert_eq!(l.rooms.len(), 3);
        assert_eq!(l.rooms[2].0.len(), 50);
        assert_eq!(l.rooms[0].1, 2);
        assert_eq!(l.rooms.iter().map(|r| r.0.len()).sum::<usize>(), 250);
    }
}
