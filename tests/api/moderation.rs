//! Moderation over HTTP and the admin socket, the audit log, and /metrics.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Closed, TestApp, Ws, moderated_room};

async fn login(t: &TestApp, name: &str) -> (u16, Value) {
    t.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"username": name, "password": format!("password-{name}")})),
    )
    .await
}

#[tokio::test]
async fn kick_sends_kicked_then_4003_and_is_audited() {
    let t = TestApp::spawn().await;
    let (moderator, member, _) = moderated_room(&t).await;
    let mut one = t.ws(&member).await;
    let mut two = t.ws(&member).await;
    let (status, body) = t
        .post(
            "/api/moderation/kick",
            &moderator,
            json!({"username": "troll", "reason": "cool off"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connections_closed"], 2);
    for ws in [&mut one, &mut two] {
        assert_eq!(ws.closed().await, Closed::Code(4003));
        let kicked = ws
            .buffered
            .iter()
            .find(|f| f["type"] == "kicked")
            .expect("kicked first");
        assert_eq!(kicked["data"]["reason"], "cool off");
    }
    // A kick is not a ban: they may come back.
    let mut back = t.ws(&member).await;
    // A reason longer than a close frame can carry still closes cleanly.
    let long = "é".repeat(300);
    t.post(
        "/api/moderation/kick",
        &moderator,
        json!({"username": "troll", "reason": long}),
    )
    .await;
    assert_eq!(back.closed().await, Closed::Code(4003));
    let kicked = back
        .buffered
        .iter()
        .find(|f| f["type"] == "kicked")
        .unwrap();
    assert_eq!(kicked["data"]["reason"], long.as_str());
    let (_, audit) = t.get("/api/moderation/audit", &moderator).await;
    let entries = audit["entries"].as_array().unwrap();
    let last = entries[entries.len() - 2].clone();
    assert_eq!(last["action"], "kick");
    assert_eq!(last["actor"], "mod");
    assert_eq!(last["target"], "troll");
    assert_eq!(last["reason"], "cool off");
}

#[tokio::test]
async fn a_ban_stops_login_tokens_and_connections_at_once() {
    let t = TestApp::spawn().await;
    let (moderator, member, _) = moderated_room(&t).await;
    let mut ws = t.ws(&member).await;
    let (status, body) = t
        .post(
            "/api/moderation/ban",
            &moderator,
            json!({"username": "troll", "reason": "spam"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ws.closed().await, Closed::Code(4003));
    assert!(ws.buffered.iter().any(|f| f["type"] == "kicked"));

    let (status, body) = login(&t, "troll").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("banned")
    );
    assert_eq!(t.get("/api/me", &member).await.0, 403);
    let mut again = Ws::connect(&format!("{}?token={member}", t.ws_url)).await;
    assert_eq!(again.closed().await, Closed::Code(4003));
    // A wrong password still says only that.
    let (status, _) = t
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "troll", "password": "not-the-password"})),
        )
        .await;
    assert_eq!(status, 401);

    let (status, _) = t
        .post(
            "/api/moderation/unban",
            &moderator,
            json!({"username": "troll"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(login(&t, "troll").await.0, 200);
    // The ban ended the tokens issued before it, for good.
    assert_eq!(t.get("/api/me", &member).await.0, 401);
}

#[tokio::test]
async fn only_staff_moderate_and_only_those_below_them() {
    let t = TestApp::spawn().await;
    let (moderator, member, _) = moderated_room(&t).await;
    let (status, _) = t
        .post("/api/moderation/kick", &member, json!({"username": "mod"}))
        .await;
    assert_eq!(status, 403);
    t.register("boss").await;
    t.sync().await;
    t.app()
        .set_role("boss", confab::domain::Role::Admin)
        .await
        .unwrap();
    let (status, body) = t
        .post(
            "/api/moderation/ban",
            &moderator,
            json!({"username": "boss"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = t
        .post(
            "/api/moderation/ban",
            &moderator,
            json!({"username": "nobody"}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(t.get("/api/moderation/audit", &member).await.0, 403);
}

#[tokio::test]
async fn muted_users_cannot_send() {
    let t = TestApp::spawn().await;
    let (moderator, member, room) = moderated_room(&t).await;
    let other = t.create_room(&moderator, "elsewhere", "public").await;
    let other = other["id"].as_str().unwrap().to_string();
    let mut ws = t.ws(&member).await;
    let (status, _) = t
        .post(
            "/api/moderation/mute",
            &moderator,
            json!({"username": "troll", "room": "town"}),
        )
        .await;
    assert_eq!(status, 204);
    let answer = ws
        .request("send_message", json!({"room": room, "text": "hey"}))
        .await;
    assert_eq!(answer["data"]["code"], "forbidden", "{answer}");
    ws.ok(
        "send_message",
        json!({"room": other, "text": "still talking here"}),
    )
    .await;

    let (status, _) = t
        .post(
            "/api/moderation/mute",
            &moderator,
            json!({"username": "troll", "duration_secs": 3600}),
        )
        .await;
    assert_eq!(status, 204);
    for target in [
        json!({"room": other, "text": "x"}),
        json!({"to": "mod", "text": "x"}),
    ] {
        let answer = ws.request("send_message", target).await;
        assert_eq!(answer["data"]["code"], "forbidden", "{answer}");
    }
    let (status, _) = t
        .post(
            &format!("/api/rooms/{other}/messages"),
            &member,
            json!({"text": "http"}),
        )
        .await;
    assert_eq!(status, 403);

    t.post(
        "/api/moderation/unmute",
        &moderator,
        json!({"username": "troll"}),
    )
    .await;
    ws.ok("send_message", json!({"room": other, "text": "back"}))
        .await;
    let answer = ws
        .request("send_message", json!({"room": room, "text": "hey"}))
        .await;
    assert_eq!(answer["data"]["code"], "forbidden", "the room mute stays");
    t.post(
        "/api/moderation/unmute",
        &moderator,
        json!({"username": "troll", "room": "town"}),
    )
    .await;
    ws.ok("send_message", json!({"room": room, "text": "hey"}))
        .await;
}

#[tokio::test]
async fn staff_delete_and_announcements_reach_clients() {
    let t = TestApp::spawn().await;
    let (moderator, member, room) = moderated_room(&t).await;
    let mut m = t.ws(&moderator).await;
    let mut ws = t.ws(&member).await;
    let sent = ws
        .ok(
            "send_message",
            json!({"room": room, "text": "something rude"}),
        )
        .await;
    let mid = sent["message"]["id"].as_str().unwrap();
    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/messages/{mid}"),
            Some(&moderator),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let gone = m.next_of("message_deleted").await;
    assert_eq!(gone["data"]["message_id"], mid);
    // Over the WebSocket too, and closing someone else's room.
    let sent = ws
        .ok("send_message", json!({"room": room, "text": "again"}))
        .await;
    m.ok(
        "delete_message",
        json!({"message_id": sent["message"]["id"]}),
    )
    .await;

    let (status, _) = t
        .post(
            "/api/moderation/announce",
            &moderator,
            json!({"text": "maintenance at noon"}),
        )
        .await;
    assert_eq!(status, 204);
    let a = ws.next_of("announcement").await;
    assert_eq!(
        a["data"],
        json!({"text": "maintenance at noon", "room": null})
    );
    t.post(
        "/api/moderation/announce",
        &moderator,
        json!({"text": "room rules", "room": "town"}),
    )
    .await;
    let a = ws.next_of("announcement").await;
    assert_eq!(a["data"], json!({"text": "room rules", "room": room}));
    let (status, _) = t
        .post(
            "/api/moderation/announce",
            &member,
            json!({"text": "I am in charge"}),
        )
        .await;
    assert_eq!(status, 403);

    let (_, audit) = t.get("/api/moderation/audit", &moderator).await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["delete_message", "delete_message", "announce", "announce"]
    );
}

/// `name{labels} value` lines of the exposition, by metric name.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (name.to_string(), value)
        })
        .collect()
}

#[tokio::test]
async fn metrics_parse_and_move_when_messages_flow() {
    let t = TestApp::spawn().await;
    let (moderator, member, room) = moderated_room(&t).await;
    let get = || async {
        let resp = t
            .http
            .get(format!("{}/metrics", t.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .contains("text"),
            "text exposition"
        );
        resp.text().await.unwrap()
    };
    let value = |text: &str, name: &str| {
        samples(text)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("{name} missing from {text}"))
    };
    let before = get().await;
    assert!(before.trim_end().ends_with("# EOF"));
    assert!(before.contains("# TYPE confab_commit_latency_seconds histogram"));
    // Metrics are each node's own: both clients on the node they are read
    // from.
    let mut a = t.ws_first(&moderator).await;
    let mut b = t.ws_first(&member).await;
    for i in 0..5 {
        a.ok(
            "send_message",
            json!({"room": room, "text": format!("m{i}")}),
        )
        .await;
    }
    for _ in 0..5 {
        b.next_of("message").await;
    }
    let after = get().await;
    assert_eq!(
        value(&after, "confab_messages_total") - value(&before, "confab_messages_total"),
        5.0
    );
    assert!(
        value(&after, "confab_deliveries_total")
            >= value(&before, "confab_deliveries_total") + 10.0
    );
    assert_eq!(value(&after, "confab_connections"), 2.0);
    assert!(value(&after, "confab_commit_latency_seconds_count") > 0.0);
    assert!(value(&after, "confab_process_resident_memory_bytes") > 0.0);
    b.send_text("{broken".into()).await;
    b.next_of("error").await;
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let t = TestApp::spawn_with(|c| c.server.metrics_token = "scrape-secret".into()).await;
    let resp = t
        .http
        .get(format!("{}/metrics", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = t
        .http
        .get(format!("{}/metrics", t.url))
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
