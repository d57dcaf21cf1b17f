//! Push notifications end to end: a real push service (plain HTTP on
//! 127.0.0.1, which `server.fetch_allowed_hosts` exempts)
//! receives what confab sends, and `push_check.py` (PyPI `http_ece` and
//! `cryptography`, not confab's code) checks the VAPID token against the
//! public key and decrypts the body.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestApp, WAIT, cluster_nodes};

const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/push_check.py");

async fn python(args: &[&str], input: Option<Value>) -> Value {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(CHECK).args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("python3 runs");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(v) = input {
        stdin
            .write_all(v.to_string().as_bytes())
            .await
            .expect("stdin written");
    }
    drop(stdin);
    let out = child.wait_with_output().await.expect("python3 finishes");
    assert!(
        out.status.success(),
        "push_check.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("push_check.py prints JSON")
}

/// A scripted answer: status and Retry-After.
type Answer = (u16, Option<&'static str>);

/// One request the push service received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A push service: records every request and answers from a script of
/// (status, Retry-After), 201 once the script is used up.
#[derive(Clone)]
struct PushService {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    arrived: Arc<tokio::sync::Notify>,
}

impl PushService {
    async fn start() -> PushService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let svc = PushService {
            port: listener.local_addr().expect("addr").port(),
            got: Default::default(),
            script: Default::default(),
            arrived: Default::default(),
        };
        let s = svc.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move { s.serve(conn).await });
            }
        });
        svc
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
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_string();
        let headers: HashMap<String, String> = lines
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
        let body = buf[head_end..head_end + len].to_vec();
        let (status, retry) = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((201, None));
        let mut resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n");
        if let Some(r) = retry {
            resp.push_str(&format!("retry-after: {r}\r\n"));
        }
        resp.push_str("\r\n");
        self.got.lock().unwrap().push(Received {
            path,
            headers,
            body,
        });
        let _ = conn.write_all(resp.as_bytes()).await;
        let _ = conn.shutdown().await;
        self.arrived.notify_waiters();
    }

    fn endpoint(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/push/{name}", self.port)
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let arrived = self.arrived.notified();
            if self.count() >= n {
                return self.got.lock().unwrap().clone();
            }
            assert!(
                tokio::time::timeout_at(deadline, arrived).await.is_ok(),
                "{n} pushes did not arrive in time (got {})",
                self.count()
            );
        }
    }
}

/// A browser's subscription: the keys push_check.py made, registered with
/// confab for `endpoint`.
struct Browser {
    keys: Value,
    endpoint: String,
}

impl Browser {
    async fn new(endpoint: String) -> Browser {
        Browser {
            keys: python(&["keygen"], None).await,
            endpoint,
        }
    }

    fn subscription(&self) -> Value {
        json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": {"p256dh": self.keys["p256dh"], "auth": self.keys["auth"]},
        })
    }

    async fn subscribe(&self, app: &TestApp, token: &str) -> Value {
        let (status, body) = app
            .post("/api/push/subscriptions", token, self.subscription())
            .await;
        assert_eq!(status, 201, "{body}");
        assert!(body["id"].is_string(), "{body}");
        assert_eq!(body["id"], body["subscription"]["id"], "{body}");
        body["subscription"].clone()
    }

    /// Checks the VAPID token and decrypts, as the browser would.
    async fn open(&self, r: &Received, port: u16) -> Value {
        assert_eq!(
            r.path,
            format!("/push/{}", self.endpoint.rsplit('/').next().unwrap())
        );
        let body = base64_url(&r.body);
        python(
            &["open"],
            Some(json!({
                "authorization": r.headers.get("authorization").cloned().unwrap_or_default(),
                "content_encoding": r.headers.get("content-encoding"),
                "body": body,
                "d": self.keys["d"],
                "auth": self.keys["auth"],
                "aud": format!("http://127.0.0.1:{port}"),
            })),
        )
        .await
    }

    async fn payload(&self, r: &Received, port: u16) -> Value {
        let opened = self.open(r, port).await;
        serde_json::from_str(opened["plaintext"].as_str().expect("a payload"))
            .expect("JSON payload")
    }
}

fn base64_url(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn allow_local(c: &mut confab::config::Config) {
    c.server.fetch_allowed_hosts = vec!["127.0.0.1".into()];
    c.push.coalesce_ms = 300;
    c.push.retry_base_ms = 200;
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(allow_local).await
}

/// Every node of the app: the first and the others.
fn nodes(app: &TestApp) -> Vec<&Arc<confab::app::App>> {
    std::iter::once(app.app())
        .chain(app.others.iter().map(|(r, _)| &r.app))
        .collect()
}

/// Waits until every node's push queue is empty.
async fn queue_drained(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        app.sync().await;
        let empty = nodes(app)
            .iter()
            .all(|a| a.store.read().unwrap().push_queue(10).unwrap().is_empty());
        if empty {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the push queue did not drain"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn dm(app: &TestApp, from: &str, to: &str, text: &str) -> Value {
    let (status, body) = app
        .post(
            &format!("/api/dm/{to}/messages"),
            from,
            json!({"text": text}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["message"].clone()
}

#[tokio::test]
async fn the_vapid_key_and_subscriptions_are_served_and_checked() {
    let app = TestApp::spawn_with(|c| {
        allow_local(c);
        c.push.max_subscriptions = 2;
    })
    .await;
    let svc = PushService::start().await;
    let (bob, _) = app.register("bob").await;
    let (carol, _) = app.register("carol").await;

    // The key is public, 65 bytes uncompressed, and the same on every node.
    let (status, v) = app
        .call(reqwest::Method::GET, "/api/push/vapid", None, None)
        .await;
    assert_eq!(status, 200, "{v}");
    let key = v["public_key"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 87, "{key}");
    for _ in 0..nodes(&app).len() {
        let (_, again) = app
            .call(reqwest::Method::GET, "/api/push/vapid", None, None)
            .await;
        assert_eq!(again["public_key"], key.as_str());
    }

    let one = Browser::new(svc.endpoint("one")).await;
    let s1 = one.subscribe(&app, &bob).await;
    assert_eq!(s1["endpoint"], one.endpoint.as_str());
    assert!(s1.get("keys").is_none(), "keys stay with the server: {s1}");
    // The same browser again: still one subscription.
    one.subscribe(&app, &bob).await;
    let two = Browser::new(svc.endpoint("two")).await;
    let s2 = two.subscribe(&app, &bob).await;
    let (_, list) = app.get("/api/push/subscriptions", &bob).await;
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 2, "{list}");
    // A third browser is past the cap.
    let three = Browser::new(svc.endpoint("three")).await;
    let (status, body) = app
        .post("/api/push/subscriptions", &bob, three.subscription())
        .await;
    assert_eq!(status, 409, "{body}");
    // Others see none of them, and cannot remove them.
    let (_, theirs) = app.get("/api/push/subscriptions", &carol).await;
    assert_eq!(theirs["subscriptions"], json!([]));
    let path = format!("/api/push/subscriptions/{}", s2["id"].as_str().unwrap());
    let (status, _) = app
        .call(reqwest::Method::DELETE, &path, Some(&carol), None)
        .await;
    assert_eq!(status, 404);
    // Removed by id, and by endpoint.
    let (status, _) = app
        .call(reqwest::Method::DELETE, &path, Some(&bob), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            "/api/push/subscriptions",
            Some(&bob),
            Some(json!({"endpoint": one.endpoint})),
        )
        .await;
    assert_eq!(status, 204);
    let (_, list) = app.get("/api/push/subscriptions", &bob).await;
    assert_eq!(list["subscriptions"], json!([]));

    // Validation: keys, scheme, addresses.
    let mut bad = one.subscription();
    bad["keys"]["p256dh"] = json!("AAAA");
    let (status, _) = app.post("/api/push/subscriptions", &bob, bad).await;
    assert_eq!(status, 400);
    let mut bad = one.subscription();
    bad["keys"]["auth"] = json!(one.keys["p256dh"]);
    let (status, _) = app.post("/api/push/subscriptions", &bob, bad).await;
    assert_eq!(status, 400);
    for endpoint in [
        "ftp://push.example/x",
        "http://10.0.0.1/x",
        "https://169.254.169.254/latest",
        "https://[::1]/x",
        "https://127.0.0.2/x",
    ] {
        let mut bad = one.subscription();
        bad["endpoint"] = json!(endpoint);
        let (status, body) = app.post("/api/push/subscriptions", &bob, bad).await;
        assert_eq!(status, 400, "{endpoint}: {body}");
    }
    let (status, _) = app
        .call(reqwest::Method::GET, "/api/push/subscriptions", None, None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_direct_message_is_pushed_encrypted_signed_and_padded() {
    let app = spawn().await;
    let svc = PushService::start().await;
    let (alice, alice_user) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let browser = Browser::new(svc.endpoint("bob")).await;
    browser.subscribe(&app, &bob).await;
    let (_, vapid) = app
        .call(reqwest::Method::GET, "/api/push/vapid", None, None)
        .await;

    let m = dm(&app, &alice, "bob", "hello bob").await;
    let got = svc.wait_for(1).await;
    let r = &got[0];
    let opened = browser.open(r, svc.port).await;
    assert_eq!(opened["key"], vapid["public_key"]);
    assert!(
        opened["claims"]["sub"]
            .as_str()
            .unwrap()
            .starts_with("mailto:")
    );
    let p: Value = serde_json::from_str(opened["plaintext"].as_str().unwrap()).unwrap();
    assert_eq!(p["room"]["id"], m["room"]);
    assert_eq!(p["room"]["name"], "alice");
    assert_eq!(p["sender"]["id"], alice_user["id"]);
    assert_eq!(p["preview"], "hello bob");
    assert_eq!(p["count"], 1);
    assert_eq!(p["reason"], "dm");
    assert_eq!(r.headers["ttl"], "3600");
    assert_eq!(r.headers["urgency"], "high");
    assert_eq!(r.headers["content-encoding"], "aes128gcm");
    assert!(r.headers["user-agent"].starts_with("confab/"));
    queue_drained(&app).await;

    // A burst within the window is one push with a count, and a longer
    // text gives a body of the same length (padding).
    for i in 0..3 {
        dm(
            &app,
            &alice,
            "bob",
            &format!("{i} {}", "long words ".repeat(20)),
        )
        .await;
    }
    let got = svc.wait_for(2).await;
    let p = browser.payload(&got[1], svc.port).await;
    assert_eq!(p["count"], 3, "{p}");
    assert!(p["preview"].as_str().unwrap().starts_with("2 long words"));
    assert!(p["preview"].as_str().unwrap().chars().count() <= 121);
    assert_eq!(got[0].body.len(), got[1].body.len());
    queue_drained(&app).await;
    assert_eq!(svc.count(), 2, "one push per burst");
    let sent: u64 = nodes(&app)
        .iter()
        .map(|a| {
            let text = a.metrics.render();
            text.lines()
                .find(|l| l.starts_with("confab_pushes_total{outcome=\"sent\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(sent, 2);
}

#[tokio::test]
async fn preferences_mutes_and_active_connections_hold_pushes_back() {
    let app = spawn().await;
    let svc = PushService::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, bob_user) = app.register("bob").await;
    let browser = Browser::new(svc.endpoint("bob")).await;
    browser.subscribe(&app, &bob).await;
    let room = app.create_room(&alice, "lobby", "public").await;
    let rid = room["id"].as_str().unwrap();
    let say = |who: &str, text: &str| {
        let (who, text) = (who.to_string(), text.to_string());
        let app = &app;
        async move {
            let (status, body) = app
                .post(
                    &format!("/api/rooms/{rid}/messages"),
                    &who,
                    json!({"text": text}),
                )
                .await;
            assert_eq!(status, 201, "{body}");
        }
    };
    say(&bob, "hi").await;
    let notif = format!("/api/rooms/{rid}/notifications");

    // The default in a room is mentions only: a plain message is not pushed.
    let (_, d) = app.get(&notif, &bob).await;
    assert_eq!(d["level"], "mentions");
    assert_eq!(d["default"], true);
    say(&alice, "no push for this").await;
    // Level all: every message.
    let (status, d) = app
        .call(
            reqwest::Method::PUT,
            &notif,
            Some(&bob),
            Some(json!({"level": "all"})),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["level"], "all");
    say(&alice, "first pushed").await;
    let got = svc.wait_for(1).await;
    let p = browser.payload(&got[0], svc.port).await;
    assert_eq!(p["preview"], "first pushed");
    assert_eq!(p["reason"], "all");
    assert_eq!(p["room"]["name"], "lobby");
    assert_eq!(got[0].headers["urgency"], "normal");
    queue_drained(&app).await;

    // Muted: nothing, whatever the level; level nothing: nothing.
    app.call(
        reqwest::Method::PUT,
        &notif,
        Some(&bob),
        Some(json!({"level": "all", "muted": true})),
    )
    .await;
    say(&alice, "muted").await;
    app.call(
        reqwest::Method::PUT,
        &notif,
        Some(&bob),
        Some(json!({"level": "nothing"})),
    )
    .await;
    say(&alice, "nothing").await;
    let (_, all) = app.get("/api/me/notifications", &bob).await;
    assert_eq!(all["rooms"][0]["level"], "nothing", "{all}");
    // DND covering the whole day but the minute boundary: a DM is held back.
    let (status, _) = app
        .call(
            reqwest::Method::PUT,
            "/api/me/notifications",
            Some(&bob),
            Some(json!({"dnd": {"start_min": 0, "end_min": 1439, "utc_offset_min": 0}})),
        )
        .await;
    assert_eq!(status, 200);
    let minute = (confab::domain::now_ms() / 60_000) % 1440;
    if minute < 1438 {
        dm(&app, &alice, "bob", "during dnd").await;
        queue_drained(&app).await;
    }
    app.call(
        reqwest::Method::PUT,
        "/api/me/notifications",
        Some(&bob),
        Some(json!({"dnd": null})),
    )
    .await;

    // An active connection (one that never said otherwise) holds a DM back.
    let mut ws = app.ws(&bob).await;
    dm(&app, &alice, "bob", "seen live").await;
    queue_drained(&app).await;
    // The page is hidden: the next DM is pushed, and it is the first push
    // since the room's: nothing muted, held back or seen live went out.
    ws.ok("presence_state", json!({"active": false})).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let bob_id = confab::domain::Id::parse("id", bob_user["id"].as_str().unwrap()).unwrap();
    while nodes(&app).iter().any(|a| a.active_anywhere(bob_id)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "inactivity did not spread"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    dm(&app, &alice, "bob", "while away").await;
    let got = svc.wait_for(2).await;
    let p = browser.payload(&got[1], svc.port).await;
    assert_eq!(p["preview"], "while away");
    assert_eq!(p["count"], 1);
    queue_drained(&app).await;
    assert_eq!(svc.count(), 2);

    // A blocked sender's messages are never pushed: in the room where
    // bob wants everything...
    app.call(
        reqwest::Method::PUT,
        &notif,
        Some(&bob),
        Some(json!({"level": "all"})),
    )
    .await;
    let (status, body) = app
        .post("/api/blocks", &bob, json!({"username": "alice"}))
        .await;
    assert!(status < 300, "{body}");
    say(&alice, "from a blocked sender").await;
    queue_drained(&app).await;
    // ...while someone else's message there still is.
    let (carol, _) = app.register("carol").await;
    say(&carol, "from carol").await;
    let got = svc.wait_for(3).await;
    let p = browser.payload(&got[2], svc.port).await;
    assert_eq!(p["preview"], "from carol");
    queue_drained(&app).await;
    assert_eq!(svc.count(), 3);
    drop(ws);
}

#[tokio::test]
async fn a_gone_subscription_is_removed_and_a_throttled_push_retried() {
    let app = spawn().await;
    let svc = PushService::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let browser = Browser::new(svc.endpoint("bob")).await;
    browser.subscribe(&app, &bob).await;

    // 429 with Retry-After, then 503: tried again each time, then sent.
    svc.script
        .lock()
        .unwrap()
        .extend([(429, Some("1")), (503, None)]);
    dm(&app, &alice, "bob", "eventually").await;
    let got = svc.wait_for(3).await;
    let p = browser.payload(&got[2], svc.port).await;
    assert_eq!(p["preview"], "eventually");
    queue_drained(&app).await;
    assert_eq!(svc.count(), 3);
    let (_, list) = app.get("/api/push/subscriptions", &bob).await;
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 1);

    // 410: the browser unsubscribed; confab forgets the subscription.
    svc.script.lock().unwrap().push_back((410, None));
    dm(&app, &alice, "bob", "gone").await;
    svc.wait_for(4).await;
    queue_drained(&app).await;
    let (_, list) = app.get("/api/push/subscriptions", &bob).await;
    assert_eq!(list["subscriptions"], json!([]), "{list}");
}

#[tokio::test]
async fn queued_pushes_survive_a_restart() {
    let mut app = TestApp::spawn_with(|c| {
        allow_local(c);
        c.push.coalesce_ms = 1500;
    })
    .await;
    let svc = PushService::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let browser = Browser::new(svc.endpoint("bob")).await;
    browser.subscribe(&app, &bob).await;
    dm(&app, &alice, "bob", "before the restart").await;
    // Stopped well inside the window: nothing was sent yet.
    app.restart(allow_local).await;
    assert!(svc.count() <= 1);
    let got = svc.wait_for(1).await;
    let p = browser.payload(&got[0], svc.port).await;
    assert_eq!(p["preview"], "before the restart");
    queue_drained(&app).await;
    assert_eq!(svc.count(), 1);
}

#[tokio::test]
async fn private_endpoints_are_refused_at_subscription_and_at_send() {
    // A single node: every node of a cluster would need the same change.
    if cluster_nodes() > 0 {
        return;
    }
    let mut app = spawn().await;
    let svc = PushService::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let browser = Browser::new(svc.endpoint("bob")).await;
    browser.subscribe(&app, &bob).await;
    // The same endpoint, once the allowlist is gone, is refused...
    app.restart(|c| c.push.coalesce_ms = 100).await;
    let (status, body) = app
        .post("/api/push/subscriptions", &bob, browser.subscription())
        .await;
    assert_eq!(status, 400, "{body}");
    let mut https = browser.subscription();
    https["endpoint"] = json!(format!("https://127.0.0.1:{}/push/x", svc.port));
    let (status, _) = app.post("/api/push/subscriptions", &bob, https).await;
    assert_eq!(status, 400);
    // ...and at send time: never contacted, and the subscription dropped.
    dm(&app, &alice, "bob", "to nowhere").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, list) = app.get("/api/push/subscriptions", &bob).await;
        if list["subscriptions"] == json!([]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not dropped: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    queue_drained(&app).await;
    assert_eq!(svc.count(), 0);
}

#[tokio::test]
async fn content_none_sends_an_empty_push() {
    let app = TestApp::spawn_with(|c| {
        allow_local(c);
        c.push.content = "none".into();
    })
    .await;
    let svc = PushService::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let browser = Browser::new(svc.endpoint("bob")).await;
    browser.subscribe(&app, &bob).await;
    dm(&app, &alice, "bob", "a secret").await;
    let got = svc.wait_for(1).await;
    assert!(got[0].body.is_empty());
    assert!(!got[0].headers.contains_key("content-encoding"));
    let opened = browser.open(&got[0], svc.port).await;
    assert_eq!(opened["plaintext"], Value::Null);
}

/// On a cluster every node runs delivery; each push still goes out once.
#[tokio::test]
async fn each_push_is_sent_once() {
    let app = spawn().await;
    let svc = PushService::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let browser = Browser::new(svc.endpoint("bob")).await;
    browser.subscribe(&app, &bob).await;
    for i in 0..4 {
        dm(&app, &alice, "bob", &format!("number {i}")).await;
        let got = svc.wait_for(i + 1).await;
        let p = browser.payload(&got[i], svc.port).await;
        assert_eq!(p["preview"], format!("number {i}"));
        queue_drained(&app).await;
    }
    assert_eq!(svc.count(), 4);
}

#[tokio::test]
async fn pushes_past_the_rate_cap_wait_for_the_next_minute() {
    let app = TestApp::spawn_with(|c| {
        allow_local(c);
        c.push.max_per_minute = 1;
    })
    .await;
    let svc = PushService::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, bob_user) = app.register("bob").await;
    let browser = Browser::new(svc.endpoint("bob")).await;
    browser.subscribe(&app, &bob).await;
    dm(&app, &alice, "bob", "the first").await;
    svc.wait_for(1).await;
    queue_drained(&app).await;
    let sent_at = confab::domain::now_ms();
    dm(&app, &alice, "bob", "the second").await;
    // Held back: put off to the end of the minute that began with the
    // first push, not sent.
    let bob_id = confab::domain::Id::parse("id", bob_user["id"].as_str().unwrap()).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let held = loop {
        app.sync().await;
        let q = app.app().store.read().unwrap().push_queue(10).unwrap();
        if let Some(p) = q.into_iter().find(|p| p.user == bob_id && p.attempt > 0) {
            break p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second push was not put off"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        held.due >= sent_at - 5_000 + 55_000,
        "put off until {}",
        held.due
    );
    assert_eq!(svc.count(), 1);
}

#[tokio::test]
async fn a_deleted_account_leaves_no_subscription_behind() {
    let app = spawn().await;
    let svc = PushService::start().await;
    let (bob, bob_user) = app.register("bob").await;
    let browser = Browser::new(svc.endpoint("bob")).await;
    browser.subscribe(&app, &bob).await;
    app.call(
        reqwest::Method::PUT,
        "/api/me/notifications",
        Some(&bob),
        Some(json!({"dnd": {"start_min": 60, "end_min": 120}})),
    )
    .await;
    app.app().delete_user("bob").await.expect("deleted");
    app.sync().await;
    let bob_id = confab::domain::Id::parse("id", bob_user["id"].as_str().unwrap()).unwrap();
    for node in nodes(&app) {
        let rx = node.store.read().unwrap();
        assert!(rx.push_subscriptions(bob_id).unwrap().is_empty());
        assert_eq!(rx.user_notify(bob_id).unwrap().dnd, None);
    }
    // The endpoint is free for whoever subscribes with it next.
    let (carol, _) = app.register("carol").await;
    browser.subscribe(&app, &carol).await;
}

#[tokio::test]
async fn a_mention_is_pushed_and_an_edit_tells_only_the_newly_mentioned() {
    let app = spawn().await;
    let svc = PushService::start().await;
    let (alice, alice_user) = app.register("alice").await;
    let (bob, bob_user) = app.register("bob").await;
    let (carol, _) = app.register("carol").await;
    let room = app.create_room(&alice, "plans", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    for token in [&bob, &carol] {
        let mut ws = app.ws(token).await;
        ws.ok("join_room", json!({ "room": room })).await;
    }
    let bob_browser = Browser::new(svc.endpoint("bob")).await;
    bob_browser.subscribe(&app, &bob).await;
    let carol_browser = Browser::new(svc.endpoint("carol")).await;
    carol_browser.subscribe(&app, &carol).await;
    app.sync().await;

    // A room's default level is mentions: a plain message tells nobody,
    // a mention tells the one named.
    let (status, _) = app
        .post(
            &format!("/api/rooms/{room}/messages"),
            &alice,
            json!({"text": "morning all"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, sent) = app
        .post(
            &format!("/api/rooms/{room}/messages"),
            &alice,
            json!({"text": "@bob can you look?"}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["message"]["mentions"], json!([bob_user["id"]]));
    let got = svc.wait_for(1).await;
    assert_eq!(got[0].path, "/push/bob");
    let p = bob_browser.payload(&got[0], svc.port).await;
    assert_eq!(p["reason"], "mention", "{p}");
    assert_eq!(p["count"], 1, "{p}");
    queue_drained(&app).await;
    assert_eq!(
        svc.count(),
        1,
        "a plain message in a mentions-level room is not pushed"
    );

    // The edit adds carol: she is told, bob (already told) is not again.
    let id = sent["message"]["id"].as_str().unwrap();
    let mut ws = app.ws(&alice).await;
    let edited = ws
        .ok(
            "edit_message",
            json!({"message_id": id, "text": "@bob and @carol can you look?"}),
        )
        .await;
    assert_eq!(
        edited["message"]["mentions"].as_array().map(Vec::len),
        Some(2),
        "{edited}"
    );
    let got = svc.wait_for(2).await;
    assert_eq!(got[1].path, "/push/carol");
    let p = carol_browser.payload(&got[1], svc.port).await;
    assert_eq!(p["reason"], "mention", "{p}");
    assert_eq!(p["sender"]["id"], alice_user["id"]);
    queue_drained(&app).await;
    assert_eq!(svc.count(), 2, "bob is not told twice");
}
