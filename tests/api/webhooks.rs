//! Outgoing webhooks end to end: a receiver in the test (plain HTTP on
//! 127.0.0.1, which `server.fetch_allowed_hosts` exempts)
//! records what confab POSTs, and `webhook_check.py` verifies every
//! signature with PyPI's `standardwebhooks`, the Standard Webhooks
//! reference library, never with confab's own code.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use confab::domain::Role;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestApp, WAIT, cluster_nodes, send_message, spawn_child};

const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/webhook_check.py");

/// Verifies every delivery with the reference library; gives the payloads.
async fn verify(secret: &str, got: &[Got]) -> Vec<Value> {
    let input = json!({
        "secret": secret,
        "deliveries": got.iter().map(|g| json!({
            "headers": {
                "webhook-id": g.header("webhook-id"),
                "webhook-timestamp": g.header("webhook-timestamp"),
                "webhook-signature": g.header("webhook-signature"),
            },
            "body": g.body,
        })).collect::<Vec<_>>(),
    });
    let mut child = tokio::process::Command::new("python3")
        .arg(CHECK)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.to_string().as_bytes())
        .await
        .expect("stdin written");
    drop(stdin);
    let out = child.wait_with_output().await.expect("python3 finishes");
    assert!(
        out.status.success(),
        "webhook_check.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("webhook_check.py prints JSON")
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    headers: HashMap<String, String>,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> String {
        self.headers.get(name).cloned().unwrap_or_default()
    }
}

/// A webhook receiver: records every request and answers from a script of
/// statuses, then `always`. The request numbered `hold` (1-based) gets no
/// answer at all: it stays open until the sender goes away.
#[derive(Clone)]
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    always: Arc<Mutex<u16>>,
    hold: Arc<Mutex<Option<usize>>>,
    arrived: Arc<tokio::sync::Notify>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let r = Receiver {
            port: listener.local_addr().expect("addr").port(),
            got: Default::default(),
            script: Default::default(),
            always: Arc::new(Mutex::new(200)),
            hold: Default::default(),
            arrived: Default::default(),
        };
        let s = r.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move { s.serve(conn).await });
            }
        });
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    async fn serve(&self, mut conn: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let headers: HashMap<String, String> = head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
        let n = {
            let mut got = self.got.lock().unwrap();
            got.push(Got { headers, body });
            got.len()
        };
        self.arrived.notify_waiters();
        if *self.hold.lock().unwrap() == Some(n) {
            // No answer: wait until the sender closes (or dies).
            while let Ok(k) = conn.read(&mut chunk).await {
                if k == 0 {
                    break;
                }
            }
            return;
        }
        let status = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(*self.always.lock().unwrap());
        let answer = format!("answer {n}");
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        let _ = conn.write_all(resp.as_bytes()).await;
        let _ = conn.shutdown().await;
    }

    fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what arrived; gives it all.
    async fn wait_until(&self, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        loop {
            let arrived = self.arrived.notified();
            let got = self.all();
            if done(&got) {
                return got;
            }
            assert!(
                tokio::time::timeout_at(deadline, arrived).await.is_ok(),
                "{what}: not there in time (got {} requests)",
                got.len()
            );
        }
    }

    async fn wait_for(&self, n: usize) -> Vec<Got> {
        self.wait_until(&format!("{n} deliveries"), |g| g.len() >= n)
            .await
    }
}

fn fast(c: &mut confab::config::Config) {
    c.server.fetch_allowed_hosts = vec!["127.0.0.1".into()];
    c.webhooks.retry_base_ms = 50;
    c.webhooks.retry_max_ms = 200;
}

async fn admin(t: &TestApp) -> String {
    t.register("root").await;
    t.set_role("root", Role::Admin).await
}

/// Adds a webhook over the admin API; gives (id, secret).
async fn add(t: &TestApp, token: &str, body: Value) -> (String, String) {
    let (status, v) = t.post("/api/admin/webhooks", token, body).await;
    assert_eq!(status, 201, "{v}");
    let secret = v["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (v["id"].as_str().expect("id").to_string(), secret)
}

async fn hook_state(t: &TestApp, token: &str, id: &str) -> Value {
    let (status, v) = t.get("/api/admin/webhooks", token).await;
    assert_eq!(status, 200, "{v}");
    v["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn deliveries(t: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let (status, v) = t
        .get(&format!("/api/admin/webhooks/{id}/deliveries"), token)
        .await;
    assert_eq!(status, 200, "{v}");
    v["deliveries"].as_array().cloned().unwrap_or_default()
}

/// Polls `check` until it holds (state kept by the server, not an event
/// the test can await).
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: never");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn types(payloads: &[Value]) -> Vec<String> {
    payloads
        .iter()
        .map(|p| p["type"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn events_of_a_room_arrive_signed_in_order_and_filtered() {
    let rx = Receiver::start().await;
    let t = TestApp::spawn_with(fast).await;
    let root = admin(&t).await;
    let room = t.create_room(&root, "hooked", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    let other = t.create_room(&root, "elsewhere", "public").await;
    let other = other["id"].as_str().unwrap().to_string();
    let (id, secret) = add(
        &t,
        &root,
        json!({
            "url": rx.url(),
            "events": ["message.created", "message.updated", "message.deleted", "member.joined"],
            "room": "hooked",
        }),
    )
    .await;
    // The secret is shown once: the list never carries it.
    let listed = hook_state(&t, &root, &id).await;
    assert_eq!(listed["url"], rx.url());
    assert!(!listed.to_string().contains(&secret));

    let (bob, _) = t.register("bob").await;
    let mut ws = t.ws(&bob).await;
    ws.ok("join_room", json!({ "room": room })).await;
    let m1 = send_message(&t, &bob, &room, "one").await;
    send_message(&t, &bob, &other, "not for this hook").await;
    let m2 = send_message(&t, &bob, &room, "two").await;
    ws.ok(
        "edit_message",
        json!({"message_id": m1["id"], "text": "one, edited"}),
    )
    .await;
    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/messages/{}", m2["id"].as_str().unwrap()),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 204);
    // Not subscribed: leaving sends nothing.
    ws.ok("leave_room", json!({ "room": room })).await;

    let got = rx.wait_for(5).await;
    let payloads = verify(&secret, &got).await;
    assert_eq!(
        types(&payloads),
        [
            "member.joined",
            "message.created",
            "message.created",
            "message.updated",
            "message.deleted"
        ]
    );
    assert_eq!(payloads[1]["data"]["message"]["text"], "one");
    assert_eq!(payloads[3]["data"]["message"]["text"], "one, edited");
    assert_eq!(payloads[4]["data"]["message_id"], m2["id"]);
    for p in &payloads {
        assert!(p["timestamp"].as_str().unwrap_or("").ends_with('Z'), "{p}");
    }
    let seqs: Vec<u64> = payloads
        .iter()
        .map(|p| p["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let ids: HashSet<String> = got.iter().map(|g| g.header("webhook-id")).collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(got[0].header("content-type"), "application/json");
    // Nothing else waits: the other room and member.left were never queued.
    eventually("the attempts are recorded", || async {
        deliveries(&t, &root, &id).await.len() == 5
    })
    .await;
    let state = hook_state(&t, &root, &id).await;
    assert_eq!(state["pending"], 0, "{state}");
    assert_eq!(rx.all().len(), 5);
    let d = deliveries(&t, &root, &id).await;
    assert!(
        d.iter().all(|a| a["status"] == 200 && a["ok"] == true),
        "{d:?}"
    );
    assert_eq!(d[0]["answer"], "answer 1");
}

#[tokio::test]
async fn a_failing_delivery_is_retried_and_holds_back_the_rooms_next_event() {
    let rx = Receiver::start().await;
    rx.script.lock().unwrap().extend([500, 503]);
    let t = TestApp::spawn_with(fast).await;
    let root = admin(&t).await;
    let room = t.create_room(&root, "retry", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    let (id, secret) = add(
        &t,
        &root,
        json!({"url": rx.url(), "events": ["message.created"]}),
    )
    .await;
    let a = send_message(&t, &root, &room, "first").await;
    let b = send_message(&t, &root, &room, "second").await;
    let got = rx.wait_for(4).await;
    let payloads = verify(&secret, &got).await;
    let order: Vec<&Value> = payloads
        .iter()
        .map(|p| &p["data"]["message"]["id"])
        .collect();
    assert_eq!(order, [&a["id"], &a["id"], &a["id"], &b["id"]]);
    // The same event keeps its id across attempts.
    assert_eq!(got[0].header("webhook-id"), got[2].header("webhook-id"));
    eventually("four attempts recorded", || async {
        deliveries(&t, &root, &id).await.len() == 4
    })
    .await;
    let statuses: Vec<Value> = deliveries(&t, &root, &id)
        .await
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(statuses, [json!(500), json!(503), json!(200), json!(200)]);
}

#[tokio::test]
async fn an_endpoint_failing_for_its_whole_retry_window_is_disabled_and_audited() {
    let rx = Receiver::start().await;
    *rx.always.lock().unwrap() = 500;
    let t = TestApp::spawn_with(|c| {
        fast(c);
        c.webhooks.retry_window_secs = 1;
    })
    .await;
    let root = admin(&t).await;
    let room = t.create_room(&root, "dead", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    let (id, secret) = add(
        &t,
        &root,
        json!({"url": rx.url(), "events": ["message.created"]}),
    )
    .await;
    let m = send_message(&t, &root, &room, "anyone?").await;
    eventually("the endpoint is disabled", || async {
        hook_state(&t, &root, &id).await["enabled"] == false
    })
    .await;
    let state = hook_state(&t, &root, &id).await;
    assert!(
        state["disabled_reason"]
            .as_str()
            .unwrap_or("")
            .contains("500"),
        "{state}"
    );
    let tries = rx.all().len();
    assert!(tries >= 2, "retried before giving up ({tries})");
    let (status, audit) = t.get("/api/moderation/audit", &root).await;
    assert_eq!(status, 200);
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "webhook_disabled"),
        "{audit}"
    );
    // Disabled: a new event is not even queued.
    send_message(&t, &root, &room, "still there?").await;
    assert_eq!(hook_state(&t, &root, &id).await["pending"], 1);
    // Enabled again: what waited goes out.
    *rx.always.lock().unwrap() = 200;
    let (status, v) = t
        .post(
            &format!("/api/admin/webhooks/{id}/enable"),
            &root,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let got = rx
        .wait_until("the first message, delivered", |g| g.len() > tries)
        .await;
    let last = verify(&secret, &got[tries..tries + 1]).await;
    assert_eq!(last[0]["data"]["message"]["id"], m["id"]);
}

#[tokio::test]
async fn a_rotated_secret_signs_alongside_the_old_one() {
    let rx = Receiver::start().await;
    let t = TestApp::spawn_with(fast).await;
    let root = admin(&t).await;
    let room = t.create_room(&root, "rotating", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    let (id, old) = add(
        &t,
        &root,
        json!({"url": rx.url(), "events": ["message.created"]}),
    )
    .await;
    let (status, v) = t
        .post(
            &format!("/api/admin/webhooks/{id}/rotate"),
            &root,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let new = v["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(v["webhook"]["previous_secret_until"].is_i64(), "{v}");
    send_message(&t, &root, &room, "rotated").await;
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].header("webhook-signature").split(' ').count(), 2);
    // Either secret verifies it, with the reference library.
    assert_eq!(verify(&new, &got).await.len(), 1);
    assert_eq!(verify(&old, &got).await.len(), 1);
}

#[tokio::test]
async fn replay_sends_history_again_under_the_same_ids() {
    let rx = Receiver::start().await;
    let t = TestApp::spawn_with(fast).await;
    let root = admin(&t).await;
    let room = t.create_room(&root, "replayed", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    let (id, secret) = add(
        &t,
        &root,
        json!({"url": rx.url(), "events": ["message.created"]}),
    )
    .await;
    for text in ["a", "b", "c"] {
        send_message(&t, &root, &room, text).await;
    }
    let first = rx.wait_for(3).await;
    let payloads = verify(&secret, &first).await;
    let since = payloads[1]["seq"].as_u64().unwrap();
    let (status, v) = t
        .post(
            &format!("/api/admin/webhooks/{id}/replay"),
            &root,
            json!({ "since": since.to_string() }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["queued"], 2);
    let got = rx.wait_for(5).await;
    let again = verify(&secret, &got[3..]).await;
    assert_eq!(
        again
            .iter()
            .map(|p| p["data"]["message"]["text"].clone())
            .collect::<Vec<_>>(),
        [json!("b"), json!("c")]
    );
    assert_eq!(got[3].header("webhook-id"), first[1].header("webhook-id"));
    assert_eq!(got[4].header("webhook-id"), first[2].header("webhook-id"));
    // By time: everything from a minute ago.
    let (status, v) = t
        .post(
            &format!("/api/admin/webhooks/{id}/replay"),
            &root,
            json!({ "since": "1m" }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["queued"], 3);
    rx.wait_for(8).await;
}

#[tokio::test]
async fn private_addresses_are_refused_when_added_and_when_delivering() {
    let rx = Receiver::start().await;
    // No allowlist: 127.0.0.1 and other private addresses are refused.
    let mut t = TestApp::spawn().await;
    let root = admin(&t).await;
    for url in [
        rx.url(),
        "https://127.0.0.1/hook".to_string(),
        "https://10.1.2.3/hook".to_string(),
        "https://169.254.169.254/latest/meta-data".to_string(),
    ] {
        let (status, v) = t
            .post(
                "/api/admin/webhooks",
                &root,
                json!({"url": url, "events": ["message.created"]}),
            )
            .await;
        assert_eq!(status, 400, "{url}: {v}");
    }
    // Only admins manage webhooks.
    let (member, _) = t.register("member").await;
    let (status, _) = t.get("/api/admin/webhooks", &member).await;
    assert_eq!(status, 403);
    let (status, v) = t
        .post(
            "/api/admin/webhooks",
            &root,
            json!({"url": "https://example.com/", "events": ["no.such.event"]}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    if cluster_nodes() > 0 {
        // The other node keeps its own configuration across a restart of
        // the first; the refusal at delivery is a single node's test.
        return;
    }
    // Added while allowlisted, refused once the allowlist is gone: the
    // address is checked again at every delivery.
    t.restart(fast).await;
    let root = t.login("root").await;
    let (id, _) = add(
        &t,
        &root,
        json!({"url": rx.url(), "events": ["message.created"]}),
    )
    .await;
    t.restart(|_| {}).await;
    let root = t.login("root").await;
    let room = t.create_room(&root, "ssrf", "public").await;
    send_message(&t, &root, room["id"].as_str().unwrap(), "hi").await;
    eventually("a refused attempt", || async {
        deliveries(&t, &root, &id)
            .await
            .iter()
            .any(|a| a["answer"].as_str().unwrap_or("").contains("refused"))
    })
    .await;
    assert!(rx.all().is_empty(), "nothing reached the private address");
}

#[tokio::test]
async fn the_cli_adds_lists_and_shows_deliveries() {
    let rx = Receiver::start().await;
    let t = TestApp::spawn_with(fast).await;
    let root = admin(&t).await;
    let room = t.create_room(&root, "cli", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    let dir = t.dir.path().to_path_buf();
    let cli = |args: Vec<String>| {
        let dir = dir.clone();
        async move {
            let shown = args.join(" ");
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
                    .args(&args)
                    .arg("--data-dir")
                    .arg(&dir)
                    .output()
                    .expect("confab runs")
            })
            .await
            .expect("joined");
            assert!(
                out.status.success(),
                "confab {shown}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    };
    let out = cli(vec![
        "webhook".into(),
        "add".into(),
        rx.url(),
        "--events".into(),
        "message.created,member.joined".into(),
        "--room".into(),
        "cli".into(),
        "--json".into(),
    ])
    .await;
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let id = v["id"].as_str().expect("id").to_string();
    let secret = v["secret"].as_str().expect("secret").to_string();
    // Without --json: the id and the secret, one per line.
    let listed = cli(vec!["webhook".into(), "list".into()]).await;
    assert!(
        listed.contains(&id) && listed.contains("message.created"),
        "{listed}"
    );
    assert!(!listed.contains(&secret));
    send_message(&t, &root, &room, "from the cli").await;
    let got = rx.wait_for(1).await;
    verify(&secret, &got).await;
    eventually("the attempt is recorded", || async {
        !deliveries(&t, &root, &id).await.is_empty()
    })
    .await;
    let out = cli(vec![
        "webhook".into(),
        "deliveries".into(),
        id.clone(),
        "--json".into(),
    ])
    .await;
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["deliveries"][0]["status"], 200, "{v}");
    let out = cli(vec!["webhook".into(), "rotate".into(), id.clone()]).await;
    assert!(out.contains("whsec_"), "{out}");
    cli(vec!["webhook".into(), "disable".into(), id.clone()]).await;
    assert_eq!(hook_state(&t, &root, &id).await["enabled"], false);
    cli(vec!["webhook".into(), "remove".into(), id.clone()]).await;
    assert!(hook_state(&t, &root, &id).await.is_null());
}

/// Kills the server (SIGKILL) while a delivery is in flight, restarts
/// it, and checks that every event arrives, each room's in order
/// (repeats allowed, recognisable by `webhook-id`).
#[tokio::test]
async fn a_kill_mid_delivery_loses_and_reorders_nothing() {
    if cluster_nodes() > 0 {
        // A child process is a single node.
        return;
    }
    let rx = Receiver::start().await;
    *rx.hold.lock().unwrap() = Some(6);
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("CONFAB_SERVER_FETCH_ALLOWED_HOSTS", "127.0.0.1"),
        ("CONFAB_WEBHOOKS_RETRY_BASE_MS", "50"),
    ];
    let (mut child, url) = spawn_child(dir.path(), &env);
    let http = reqwest::Client::new();
    let post = |url: String, token: Option<String>, body: Value| {
        let http = http.clone();
        async move {
            let mut req = http.post(url).json(&body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.expect("sent");
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(status < 300, "{status} {v}");
            v
        }
    };
    let token = post(
        format!("{url}/api/auth/register"),
        None,
        json!({"username": "writer", "password": "password-123"}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut rooms = Vec::new();
    for name in ["left", "right"] {
        let v = post(
            format!("{url}/api/rooms"),
            Some(token.clone()),
            json!({"name": name}),
        )
        .await;
        rooms.push(v["room"]["id"].as_str().unwrap().to_string());
    }
    let add = {
        let dir = dir.path().to_path_buf();
        let hook = rx.url();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
                .args([
                    "webhook",
                    "add",
                    &hook,
                    "--events",
                    "message.created",
                    "--json",
                ])
                .arg("--data-dir")
                .arg(&dir)
                .output()
                .expect("confab runs")
        })
        .await
        .expect("joined")
    };
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let added: Value = serde_json::from_slice(&add.stdout).expect("JSON");
    let secret = added["secret"].as_str().unwrap().to_string();
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..20 {
        let room = &rooms[i % 2];
        let v = post(
            format!("{url}/api/rooms/{room}/messages"),
            Some(token.clone()),
            json!({"text": format!("m{i}")}),
        )
        .await;
        sent.entry(room.clone())
            .or_default()
            .push(v["message"]["id"].as_str().unwrap().to_string());
    }
    // The sixth request is held unanswered: kill the server now.
    rx.wait_for(6).await;
    child.kill().expect("killed");
    child.wait().expect("reaped");
    let (mut child, _) = spawn_child(dir.path(), &env);
    let want: usize = sent.values().map(Vec::len).sum();
    let got = rx
        .wait_until("every event at least once", |g| {
            g.iter()
                .map(|d| d.header("webhook-id"))
                .collect::<HashSet<_>>()
                .len()
                >= want
        })
        .await;
    let _ = child.kill();
    let _ = child.wait();
    let payloads = verify(&secret, &got).await;
    // Per room, the first arrival of each event follows the send order.
    let mut seen = HashSet::new();
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    for (g, p) in got.iter().zip(&payloads) {
        if seen.insert(g.header("webhook-id")) {
            let m = &p["data"]["message"];
            order
                .entry(m["room"].as_str().unwrap().to_string())
                .or_default()
                .push(m["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(order, sent);
    assert!(got.len() > want, "the held delivery was sent again");
}
