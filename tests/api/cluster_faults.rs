//! Cluster mode under faults: confab nodes killed with SIGKILL, engine
//! members killed and restarted, against real processes (the confab binary
//! and a 3-member nats-server cluster per test). What must hold: nothing
//! acknowledged is lost or duplicated, a room's seq is gap-free and the
//! same on every node, and no write is acknowledged that was not committed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use confab::natsctl::NatsCluster;
use serde_json::{Value, json};

use crate::common::WAIT;

/// A confab node as a process of its own, so that it can be killed.
pub struct Node {
    pub name: String,
    pub url: String,
    pub dir: std::path::PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

impl Node {
    /// Starts `confab serve` on a free port in `dir`, on `nats` under
    /// `namespace`, and waits until it answers.
    pub async fn start(
        name: &str,
        dir: &std::path::Path,
        urls: &[String],
        namespace: &str,
    ) -> Node {
        let env = vec![
            ("CONFAB_CLUSTER_NATS_URLS".to_string(), urls.join(",")),
            ("CONFAB_CLUSTER_NAMESPACE".into(), namespace.into()),
            ("CONFAB_CLUSTER_NODE_NAME".into(), name.into()),
            ("CONFAB_CLUSTER_WRITE_TIMEOUT_MS".into(), "4000".into()),
            ("CONFAB_AUTH_ARGON2_MEMORY_KIB".into(), "64".into()),
            ("CONFAB_AUTH_ARGON2_ITERATIONS".into(), "1".into()),
            ("CONFAB_LIMITS_MESSAGES_PER_SEC".into(), "100000".into()),
            ("CONFAB_LIMITS_MESSAGES_BURST".into(), "100000".into()),
            (
                "CONFAB_LIMITS_AUTH_ATTEMPTS_PER_IP_PER_MIN".into(),
                "100000".into(),
            ),
            ("CONFAB_SERVER_LOG_LEVEL".into(), "warn".into()),
        ];
        let mut node = Node {
            name: name.into(),
            url: String::new(),
            dir: dir.to_path_buf(),
            child: None,
            env,
        };
        node.restart().await;
        node
    }

    /// Starts the process again on the same data directory (a new port).
    pub async fn restart(&mut self) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log_path = self.dir.with_extension(format!("{port}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_confab"))
            .args(["serve", "--data-dir"])
            .arg(&self.dir)
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("confab starts");
        self.child = Some(child);
        self.url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await
                && r.status() == 200
            {
                return;
            }
            if let Some(c) = &mut self.child
                && let Ok(Some(status)) = c.try_wait()
            {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("node {} exited early: {status}\n{log}", self.name);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} never answered",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no last commit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Client {
    http: reqwest::Client,
}

impl Client {
    pub fn new() -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self.http.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let v = resp.json().await.unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// Registers on `base` (retrying while the cluster settles) and
    /// returns the token.
    pub async fn register(&self, base: &str, name: &str) -> String {
        let (s, b) = self
            .call(
                reqwest::Method::POST,
                format!("{base}/api/auth/register"),
                None,
                Some(json!({"username": name, "password": format!("password-{name}")})),
            )
            .await
            .expect("register");
        assert_eq!(s, 201, "{b}");
        b["token"].as_str().unwrap().to_string()
    }

    /// Sends with a client id: `Ok(seq)` on an ack, `Err(status)` otherwise.
    pub async fn send(&self, base: &str, token: &str, room: &str, text: &str) -> Result<u64, u16> {
        match self
            .call(
                reqwest::Method::POST,
                format!("{base}/api/rooms/{room}/messages"),
                Some(token),
                Some(json!({"text": text, "client_msg_id": text})),
            )
            .await
        {
            Ok((201, b)) => Ok(b["message"]["seq"].as_u64().expect("seq")),
            Ok((s, _)) => Err(s),
            Err(_) => Err(0),
        }
    }

    /// A room's whole history on one node.
    pub async fn history(&self, base: &str, token: &str, room: &str) -> Vec<Value> {
        crate::common::history_at(&self.http, base, token, room).await
    }
}

/// Every acked text appears exactly once, seqs run 1.. with no gap, and
/// (if `others` are given) every node holds the very same history.
pub async fn check_histories(
    c: &Client,
    token: &str,
    room: &str,
    bases: &[String],
    acked: &[String],
) {
    // A node may still be applying the tail of the log: wait until all
    // agree on the length before comparing.
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    let histories = loop {
        let mut hs = Vec::new();
        for b in bases {
            hs.push(c.history(b, token, room).await);
        }
        if hs.windows(2).all(|w| w[0] == w[1]) || tokio::time::Instant::now() > deadline {
            break hs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (i, h) in histories.iter().enumerate() {
        assert_eq!(h, &histories[0], "node {i} differs from node 0");
    }
    let h = &histories[0];
    for (i, m) in h.iter().enumerate() {
        assert_eq!(m["seq"].as_u64(), Some(i as u64 + 1), "gap-free seqs: {m}");
    }
    let texts: Vec<&str> = h.iter().filter_map(|m| m["text"].as_str()).collect();
    let mut unique = texts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), texts.len(), "a message is stored twice");
    for a in acked {
        assert!(texts.contains(&a.as_str()), "acked message {a} is missing");
    }
}

fn namespace() -> String {
    format!("f{}", confab::domain::Id::new().to_string().to_lowercase())
}

async fn room(c: &Client, base: &str, token: &str, name: &str) -> String {
    let (s, b) = c
        .call(
            reqwest::Method::POST,
            format!("{base}/api/rooms"),
            Some(token),
            Some(json!({"name": name, "visibility": "public"})),
        )
        .await
        .expect("room");
    assert_eq!(s, 201, "{b}");
    b["room"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_killed_node_loses_nothing_acked_and_its_clients_go_on_elsewhere() {
    let nats = NatsCluster::start(3).await.expect("nats");
    let dir = tempfile::tempdir().unwrap();
    let ns = namespace();
    let mut a = Node::start("a", &dir.path().join("a"), &nats.urls(), &ns).await;
    let b = Node::start("b", &dir.path().join("b"), &nats.urls(), &ns).await;
    let c = Client::new();
    let token = c.register(&a.url, "alice").await;
    let room = room(&c, &a.url, &token, "town").await;
    // Bob, on b, shares the room with alice, who is connected to a: her
    // presence reaches him through a's heartbeats, and must end when a
    // dies without a word.
    let bob = c.register(&b.url, "bob").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while c
        .call(
            reqwest::Method::GET,
            format!("{}/api/rooms/{room}", b.url),
            Some(&bob),
            None,
        )
        .await
        .map(|(s, _)| s)
        .unwrap_or(0)
        != 200
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never learnt of the room"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ws =
        |base: &str, token: &str| format!("{}/ws?token={token}", base.replacen("http", "ws", 1));
    let mut watcher = crate::common::Ws::connect(&ws(&b.url, &bob)).await;
    watcher.ok("join_room", json!({ "room": room })).await;
    // Alice also reads the room on a, live, until a dies under her.
    let mut reader = crate::common::Ws::connect(&ws(&a.url, &token)).await;
    let is_alice = |kind: &'static str| {
        move |f: &Value| f["type"] == kind && f["data"]["user"]["username"] == "alice"
    };
    watcher.next_where(is_alice("user_online")).await;
    // Sends through a, in flight when it dies.
    let sender = {
        let (url, token, room) = (a.url.clone(), token.clone(), room.clone());
        tokio::spawn(async move {
            let c = Client::new();
            let mut acked = Vec::new();
            let mut unacked = Vec::new();
            for i in 0.. {
                let text = format!("m{i}");
                match c.send(&url, &token, &room, &text).await {
                    Ok(_) => acked.push(text),
                    Err(_) => {
                        unacked.push(text);
                        break;
                    }
                }
            }
            (acked, unacked)
        })
    };
    // Let some commits through, then kill.
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.history(&b.url, &token, &room).await.len() < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sends went through"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();
    watcher.next_where(is_alice("user_offline")).await;
    assert_eq!(reader.closed().await, crate::common::Closed::NoFrame);
    let mut seen: Vec<u64> = reader
        .buffered
        .iter()
        .filter(|f| f["type"] == "message")
        .filter_map(|f| f["data"]["message"]["seq"].as_u64())
        .collect();
    let (mut acked, unacked) = sender.await.unwrap();
    assert!(!acked.is_empty());
    // The client goes on at b, resending what had no answer: the same
    // client id never stores it twice.
    for text in unacked.iter().chain(["after".to_string()].iter()) {
        c.send(&b.url, &token, &room, text)
            .await
            .expect("b takes the resend");
        acked.push(text.clone());
    }
    // Her reader reconnects to b and asks for what came after the last
    // message it saw: with what it saw live, that is the whole room.
    let mut reader = crate::common::Ws::connect(&ws(&b.url, &token)).await;
    loop {
        let after = seen.last().copied().unwrap_or(0);
        let page = reader
            .ok(
                "history",
                json!({ "room": room, "after": after, "limit": 200 }),
            )
            .await;
        seen.extend(
            page["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["seq"].as_u64()),
        );
        if page["has_more"] != true {
            break;
        }
    }
    let total = c.history(&b.url, &token, &room).await.len() as u64;
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "live and recovered, in order, no gap"
    );
    // The killed node comes back and catches up from where it stopped.
    a.restart().await;
    check_histories(&c, &token, &room, &[a.url.clone(), b.url.clone()], &acked).await;
}

#[tokio::test]
async fn the_engine_losing_members_and_quorum_never_loses_or_falsely_acks() {
    let mut nats = NatsCluster::start(3).await.expect("nats");
    let dir = tempfile::tempdir().unwrap();
    let ns = namespace();
    let a = Node::start("a", &dir.path().join("a"), &nats.urls(), &ns).await;
    let b = Node::start("b", &dir.path().join("b"), &nats.urls(), &ns).await;
    let c = Client::new();
    let token = c.register(&a.url, "alice").await;
    let room = room(&c, &a.url, &token, "town").await;
    let mut acked = Vec::new();
    let mut n = 0;
    let mut send = |base: String| {
        n += 1;
        let text = format!("m{n}");
        let (c, token, room) = (&c, token.clone(), room.clone());
        async move { (text.clone(), c.send(&base, &token, &room, &text).await) }
    };
    for _ in 0..10 {
        let (t, r) = send(a.url.clone()).await;
        r.expect("healthy cluster acks");
        acked.push(t);
    }
    // One member of three down: sends go on after the re-election.
    nats.kill(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut ok = 0;
    while ok < 10 {
        let base = if ok % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        let (t, r) = send(base).await;
        match r {
            Ok(_) => {
                acked.push(t);
                ok += 1;
            }
            Err(s) => {
                assert_eq!(s, 503, "a failed write is unavailable");
                assert!(tokio::time::Instant::now() < deadline, "no re-election");
            }
        }
    }
    // Two down: no quorum. Every send is refused, none acked; history is
    // still served.
    nats.kill(1);
    let mut refused = Vec::new();
    for _ in 0..3 {
        let (t, r) = send(b.url.clone()).await;
        match r {
            Err(s) => {
                assert_eq!(s, 503);
                refused.push(t);
            }
            // The write was committed before the quorum went: a true ack.
            Ok(_) => acked.push(t),
        }
    }
    assert!(!refused.is_empty(), "writes without a quorum were acked");
    assert!(!c.history(&a.url, &token, &room).await.is_empty());
    // Quorum back: sends resume by themselves, no node restarted.
    nats.restart(1).await.expect("member restarts");
    nats.restart(0).await.expect("member restarts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (t, r) = send(a.url.clone()).await;
        if r.is_ok() {
            acked.push(t);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes never resumed"
        );
    }
    let (t, r) = send(b.url.clone()).await;
    r.expect("both nodes write again");
    acked.push(t);
    // What was refused is absent or, after a lost ack, present once:
    // check_histories finds any message stored twice.
    check_histories(&c, &token, &room, &[a.url.clone(), b.url.clone()], &acked).await;
}

/// The property: random sends from clients on random nodes while confab
/// nodes and engine members are killed and restarted at random; after it
/// all, every node holds the same history, gap-free, with every acked
/// message exactly once. The seed is printed and `CLUSTER_SEED` replays
/// it; `CLUSTER_STEPS` makes the run longer.
#[tokio::test]
async fn random_sends_under_random_kills_keep_one_history() {
    let seed: u64 = std::env::var("CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| confab::domain::now_ms() as u64);
    let steps: usize = std::env::var("CLUSTER_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    eprintln!("cluster property: CLUSTER_SEED={seed} CLUSTER_STEPS={steps}");
    // xorshift: small, and the same sequence for the same seed.
    let mut state = seed | 1;
    let mut rand = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut nats = NatsCluster::start(3).await.expect("nats");
    let dir = tempfile::tempdir().unwrap();
    let ns = namespace();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(Node::start(name, &dir.path().join(name), &nats.urls(), &ns).await);
    }
    let c = Client::new();
    let token = c.register(&nodes[0].url, "alice").await;
    let rooms = [
        room(&c, &nodes[0].url, &token, "town").await,
        room(&c, &nodes[1].url, &token, "harbour").await,
    ];
    let mut acked: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    let mut unanswered: Vec<(usize, String)> = Vec::new();
    let mut node_down: Option<usize> = None;
    let mut member_down: Option<usize> = None;
    let mut n = 0;
    for step in 0..steps {
        // A fault, or its repair: at most one node and one engine member
        // down at a time, so a quorum and a live node always remain.
        match rand(4) {
            0 if node_down.is_none() => {
                let i = rand(nodes.len());
                nodes[i].kill();
                node_down = Some(i);
            }
            1 if member_down.is_none() => {
                let i = rand(3);
                nats.kill(i);
                member_down = Some(i);
            }
            2 => {
                if let Some(i) = node_down.take() {
                    nodes[i].restart().await;
                }
            }
            _ => {
                if let Some(i) = member_down.take() {
                    nats.restart(i).await.expect("member restarts");
                }
            }
        }
        let live: Vec<usize> = (0..nodes.len()).filter(|i| Some(*i) != node_down).collect();
        for _ in 0..8 {
            n += 1;
            let r = rand(2);
            let text = format!("s{step}-{n}");
            let base = &nodes[live[rand(live.len())]].url;
            match c.send(base, &token, &rooms[r], &text).await {
                Ok(_) => acked[r].push(text),
                Err(_) => unanswered.push((r, text)),
            }
        }
    }
    // Repair everything; what had no answer is resent, as a client would.
    if let Some(i) = member_down.take() {
        nats.restart(i).await.expect("member restarts");
    }
    if let Some(i) = node_down.take() {
        nodes[i].restart().await;
    }
    for (r, text) in unanswered {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match c.send(&nodes[0].url, &token, &rooms[r], &text).await {
                Ok(_) => break,
                Err(s) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "resend of {text} keeps failing ({s}); seed {seed}"
                ),
            }
        }
        acked[r].push(text);
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    for (r, room) in rooms.iter().enumerate() {
        check_histories(&c, &token, room, &bases, &acked[r]).await;
    }
}
