//! The test harness: start a server, make users, speak WebSocket.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::Duration;

use confab::config::Config;
use confab::server::Running;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long a test waits for an event before it fails. Not a sleep: the
/// wait ends as soon as the event arrives.
pub const WAIT: Duration = Duration::from_secs(10);

/// A config for tests: port 0, the given data dir, and cheap password
/// hashing (production keeps OWASP's parameters).
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.bind = "127.0.0.1:0".into();
    c.server.data_dir = dir.to_path_buf();
    c.server.log_level = "warn".into();
    c.auth.argon2_memory_kib = 64;
    c.auth.argon2_iterations = 1;
    // Tests send quickly from one address; the limits have tests of their
    // own, which set them back.
    c.limits.messages_per_sec = 100_000;
    c.limits.messages_burst = 100_000;
    c.limits.auth_attempts_per_ip_per_min = 100_000;
    c.limits.room_creations_per_hour = 100_000;
    c
}

pub struct TestApp {
    pub running: Option<Running>,
    pub url: String,
    pub ws_url: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// Cluster mode: the nodes besides the first, each with its own data
    /// directory. HTTP calls and WebSocket connections take the nodes in
    /// turn, so a suite run this way crosses nodes all the time.
    pub others: Vec<(Running, tempfile::TempDir)>,
    turn: std::sync::atomic::AtomicUsize,
    namespace: String,
}

/// How many confab nodes each test runs: 0 (the default) is a single node
/// without an engine; `CONFAB_TEST_CLUSTER=2` runs the same tests against
/// two nodes on a 3-member NATS cluster shared by the whole test run.
pub fn cluster_nodes() -> usize {
    std::env::var("CONFAB_TEST_CLUSTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The NATS cluster the tests of this run share; every test has a
/// namespace of its own in it.
pub fn shared_nats() -> Vec<String> {
    static NATS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NATS.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let cluster = rt
                .block_on(confab::natsctl::NatsCluster::start(3))
                .expect("a 3-member nats-server cluster starts");
            let urls = cluster.urls();
            // Lives as long as the test process; its members die with it.
            std::mem::forget(cluster);
            urls
        })
        .join()
        .expect("nats starts")
    })
    .clone()
}

/// A room's whole history as the server at `base` holds it, walking
/// forward page by page.
pub async fn history_at(http: &reqwest::Client, base: &str, token: &str, room: &str) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    loop {
        let after = all.last().and_then(|m| m["seq"].as_u64()).unwrap_or(0);
        let resp = http
            .get(format!(
                "{base}/api/rooms/{room}/messages?after={after}&limit=200"
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("history read");
        let status = resp.status().as_u16();
        let page: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "{page}");
        all.extend(page["messages"].as_array().cloned().unwrap_or_default());
        if page["has_more"] != true {
            return all;
        }
    }
}

/// Puts `config` on the shared engine under `namespace`, as node `name`.
pub fn clustered(config: &mut Config, namespace: &str, name: &str) {
    config.cluster.nats_urls = shared_nats();
    config.cluster.namespace = namespace.into();
    config.cluster.node_name = name.into();
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_in(tempfile::tempdir().expect("tempdir"), tweak).await
    }

    /// Starts a server on an existing data directory.
    pub async fn spawn_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let nodes = cluster_nodes();
        let namespace = format!("t{}", confab::domain::Id::new().to_string().to_lowercase());
        if nodes > 0 {
            clustered(&mut config, &namespace, &format!("{namespace}-0"));
        }
        let template = config.clone();
        let running = confab::server::start(config).await.expect("server starts");
        let mut others = Vec::new();
        for i in 1..nodes {
            let other = tempfile::tempdir().expect("tempdir");
            let mut c = template.clone();
            c.server.data_dir = other.path().to_path_buf();
            c.cluster.node_name = format!("{namespace}-{i}");
            let r = confab::server::start(c).await.expect("node starts");
            others.push((r, other));
        }
        let url = running.url();
        let ws_url = format!("ws://{}/ws", running.addr);
        TestApp {
            running: Some(running),
            url,
            ws_url,
            dir,
            http: reqwest::Client::new(),
            others,
            turn: Default::default(),
            namespace,
        }
    }

    /// The base URL of the node whose turn it is (always the first on a
    /// single node).
    pub fn next_url(&self) -> String {
        if self.others.is_empty() {
            return self.url.clone();
        }
        let n =
            self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % (self.others.len() + 1);
        match n {
            0 => self.url.clone(),
            i => self.others[i - 1].0.url(),
        }
    }

    /// Cluster mode: waits until every node has applied the log as far as
    /// the furthest one, so what one node answered is what the next
    /// request finds on any node. A test's convenience: clients of a real
    /// cluster see each node catch up on its own.
    pub async fn sync(&self) {
        if self.others.is_empty() {
            return;
        }
        let apps: Vec<_> = std::iter::once(self.app())
            .chain(self.others.iter().map(|(r, _)| &r.app))
            .collect();
        let links: Vec<_> = apps.iter().filter_map(|a| a.store.link()).collect();
        let furthest = links.iter().map(|l| l.applied()).max().unwrap_or(0);
        for l in &links {
            tokio::time::timeout(WAIT, l.wait_applied(furthest))
                .await
                .expect("every node catches up");
        }
        // Presence travels by heartbeat, not by the log: wait until every
        // node sees everyone connected anywhere, and no one who left.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut connected = std::collections::BTreeMap::new();
            for (user, n) in apps.iter().flat_map(|a| a.hub.local_users()) {
                *connected.entry(user).or_insert(0) += n;
            }
            let agree = apps.iter().all(|a| {
                let seen: std::collections::BTreeMap<_, _> =
                    a.hub.online_counts().into_iter().collect();
                seen == connected
            });
            if agree {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "presence did not settle across nodes"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub fn app(&self) -> &std::sync::Arc<confab::app::App> {
        &self.running.as_ref().expect("running").app
    }

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(&mut self, tweak: impl FnOnce(&mut Config)) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        let mut config = test_config(self.dir.path());
        tweak(&mut config);
        if !self.others.is_empty() {
            let ns = self.namespace.clone();
            clustered(&mut config, &ns, &format!("{ns}-0"));
        }
        let running = confab::server::start(config)
            .await
            .expect("server restarts");
        self.url = running.url();
        self.ws_url = format!("ws://{}/ws", running.addr);
        self.running = Some(running);
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        for (r, _) in self.others.drain(..) {
            r.shutdown().await;
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.sync().await;
        let mut req = self
            .http
            .request(method, format!("{}{}", self.next_url(), path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body read");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    /// A room's whole history over HTTP, walking forward page by page.
    pub async fn history_all(&self, token: &str, room: &str) -> Vec<Value> {
        self.sync().await;
        history_at(&self.http, &self.next_url(), token, room).await
    }

    /// Registers `name` (password "password-<name>") and returns its token
    /// and user object.
    pub async fn register(&self, name: &str) -> (String, Value) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/auth/register",
                None,
                Some(json!({"username": name, "password": format!("password-{name}")})),
            )
            .await;
        assert_eq!(status, 201, "register {name}: {body}");
        (
            body["token"].as_str().expect("token").to_string(),
            body["user"].clone(),
        )
    }

    /// Logs `name` in (password "password-<name>"); returns the token.
    pub async fn login(&self, name: &str) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"username": name, "password": format!("password-{name}")})),
            )
            .await;
        assert_eq!(status, 200, "login {name}: {body}");
        body["token"].as_str().expect("token").to_string()
    }

    /// Gives `name` a role and returns a fresh token: a role change ends
    /// the tokens issued before it.
    pub async fn set_role(&self, name: &str, role: confab::domain::Role) -> String {
        self.sync().await;
        self.app().set_role(name, role).await.expect("role set");
        self.login(name).await
    }

    pub async fn create_room(&self, token: &str, name: &str, visibility: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/rooms",
                token,
                json!({"name": name, "visibility": visibility}),
            )
            .await;
        assert_eq!(status, 201, "create room {name}: {body}");
        body["room"].clone()
    }

    /// Opens a WebSocket with `?token=` and waits for `authenticated`.
    /// A WebSocket to the first node, whatever the turn.
    pub async fn ws_first(&self, token: &str) -> Ws {
        self.sync().await;
        let mut ws = Ws::connect(&format!("{}?token={token}", self.ws_url)).await;
        ws.hello = ws.next_of("authenticated").await;
        self.sync().await;
        ws
    }

    pub async fn ws(&self, token: &str) -> Ws {
        self.sync().await;
        let base = self.next_url().replacen("http", "ws", 1);
        let mut ws = Ws::connect(&format!("{base}/ws?token={token}")).await;
        let hello = ws.next_of("authenticated").await;
        ws.hello = hello;
        self.sync().await;
        ws
    }
}

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket test client. Frames read while waiting for something else
/// are kept, in order, for later calls.
pub struct Ws {
    pub stream: Stream,
    pub buffered: VecDeque<Value>,
    pub hello: Value,
    pub next_id: u64,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq)]
pub enum Closed {
    Code(u16),
    NoFrame,
}

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Ws {
            stream,
            buffered: VecDeque::new(),
            hello: Value::Null,
            next_id: 1,
        }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.stream
            .send(WsMessage::text(text))
            .await
            .expect("frame sent");
    }

    /// The next text frame from the socket (not the buffer).
    async fn read(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a frame arrives in time")
                .expect("the connection is open")
                .expect("a valid frame");
            match msg {
                WsMessage::Text(t) => return serde_json::from_str(&t).expect("server sends JSON"),
                WsMessage::Close(c) => panic!("connection closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame, buffered ones first.
    pub async fn next(&mut self) -> Value {
        if let Some(v) = self.buffered.pop_front() {
            return v;
        }
        self.read().await
    }

    /// The next frame of type `kind`; others are kept for later.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        self.next_where(|v| v["type"] == kind).await
    }

    pub async fn next_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(pos) = self.buffered.iter().position(&pred) {
            return self.buffered.remove(pos).expect("present");
        }
        loop {
            let v = self.read().await;
            if pred(&v) {
                return v;
            }
            self.buffered.push_back(v);
        }
    }

    /// Sends a frame with a fresh id and returns its answer (ack or error).
    pub async fn request(&mut self, kind: &str, data: Value) -> Value {
        let id = format!("t-{}", self.next_id);
        self.next_id += 1;
        self.send_json(json!({"type": kind, "id": id, "data": data}))
            .await;
        let answer = self.next_where(|v| v["id"] == id.as_str()).await;
        assert!(
            answer["type"] == "ack" || answer["type"] == "error",
            "answer to {kind}: {answer}"
        );
        answer
    }

    /// Like `request`, but the answer must be an ack; returns its data.
    pub async fn ok(&mut self, kind: &str, data: Value) -> Value {
        let answer = self.request(kind, data.clone()).await;
        assert_eq!(answer["type"], "ack", "{kind} {data}: {answer}");
        answer["data"].clone()
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self) -> Closed {
        loop {
            let next = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("the close arrives in time");
            match next {
                Some(Ok(WsMessage::Close(Some(frame)))) => {
                    // Finish the closing handshake as a real client does:
                    // reading on sends the reply tungstenite queued.
                    let _ = tokio::time::timeout(WAIT, async {
                        while let Some(Ok(_)) = self.stream.next().await {}
                    })
                    .await;
                    return Closed::Code(frame.code.into());
                }
                Some(Ok(WsMessage::Close(None))) | None | Some(Err(_)) => return Closed::NoFrame,
                Some(Ok(WsMessage::Text(t))) => {
                    if let Ok(v) = serde_json::from_str(&t) {
                        self.buffered.push_back(v);
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

/// A moderator, a member, and a public room both are in.
pub async fn moderated_room(t: &TestApp) -> (String, String, String) {
    t.register("mod").await;
    let moderator = t.set_role("mod", confab::domain::Role::Moderator).await;
    let (member, _) = t.register("troll").await;
    let room = t.create_room(&moderator, "town", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    let (status, _) = t
        .post(
            &format!("/api/rooms/{room}/members"),
            &member,
            json!({"username": "troll"}),
        )
        .await;
    assert_eq!(status, 204);
    (moderator, member, room)
}

/// Posts a message over HTTP and gives it back as the server stored it.
pub async fn send_message(t: &TestApp, token: &str, room: &str, text: &str) -> Value {
    let (status, body) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            token,
            json!({ "text": text }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["message"].clone()
}

/// The built binary serving `dir` as a child process (so a test can kill it
/// outright), with cheap hashing, no message rate limit and `env` on top;
/// gives the child and the address it printed.
pub fn spawn_child(dir: &std::path::Path, env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("CONFAB_AUTH_ARGON2_MEMORY_KIB", "64")
        .env("CONFAB_AUTH_ARGON2_ITERATIONS", "1")
        .env("CONFAB_LIMITS_MESSAGES_PER_SEC", "100000")
        .env("CONFAB_LIMITS_MESSAGES_BURST", "100000")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server says where it listens");
    let url = line
        .trim()
        .strip_prefix("confab listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    (child, url)
}
