//! `/socket.io/` at the edge and against the hub: the guards it shares
//! with `/ws` (Origin, flood control) and a Socket.IO client and a `/ws`
//! client in one room, spoken to at the packet level. The official client
//! and the protocol suites judge the rest (e2e/).

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::TestApp;

const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A Socket.IO client over WebSocket, signed in.
struct Sio {
    stream: Stream,
    /// Socket.IO packets read while waiting for another.
    seen: Vec<String>,
}

impl Sio {
    async fn connect(base: &str, token: &str) -> (Sio, Value) {
        let url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            base.replacen("http", "ws", 1)
        );
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        let mut s = Sio {
            stream,
            seen: Vec::new(),
        };
        let open = s.raw().await;
        assert!(open.starts_with("0{"), "{open}");
        s.send(&format!("40{}", json!({ "token": token }))).await;
        // CONNECT (0) or CONNECT_ERROR (4), on the main namespace.
        let connect = s.packet(|p| p.starts_with('0') || p.starts_with('4')).await;
        let reply: Value = serde_json::from_str(&connect[1..]).expect("JSON");
        (s, reply)
    }

    async fn send(&mut self, text: &str) {
        self.stream
            .send(Message::text(text.to_string()))
            .await
            .expect("sent");
    }

    /// The next Engine.IO text packet; pings are answered.
    async fn raw(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a packet in time")
                .expect("open")
                .expect("a valid frame");
            if let Message::Text(t) = msg {
                if t.as_str() == "2" {
                    self.send("3").await;
                    continue;
                }
                return t.to_string();
            }
        }
    }

    /// The first Socket.IO packet (the Engine.IO `4` taken off) that
    /// satisfies `want`; others are kept.
    async fn packet(&mut self, want: impl Fn(&str) -> bool) -> String {
        if let Some(i) = self.seen.iter().position(|p| want(p)) {
            return self.seen.remove(i);
        }
        loop {
            let raw = self.raw().await;
            let p = raw.strip_prefix('4').expect("a message packet").to_string();
            if want(&p) {
                return p;
            }
            self.seen.push(p);
        }
    }

    /// The arguments of the next event `name`.
    async fn event(&mut self, name: &str) -> Vec<Value> {
        let head = format!("2[\"{name}\"");
        let p = self.packet(|p| p.starts_with(&head)).await;
        let Value::Array(mut args) = serde_json::from_str(&p[1..]).expect("JSON") else {
            panic!("not an array: {p}");
        };
        args.remove(0);
        args
    }

    /// Emits `name` with `data` and an ack id; the acknowledgement's
    /// argument.
    async fn call(&mut self, ack: u64, name: &str, data: Value) -> Value {
        self.send(&format!("42{ack}{}", json!([name, data]))).await;
        let head = format!("3{ack}[");
        let p = self.packet(|p| p.starts_with(&head)).await;
        let Value::Array(mut args) = serde_json::from_str(&p[head.len() - 1..]).expect("JSON")
        else {
            panic!("not an array: {p}");
        };
        args.remove(0)
    }
}

#[tokio::test]
async fn a_foreign_origin_is_refused_on_both_transports() {
    let app = TestApp::spawn().await;
    let resp = app
        .http
        .get(format!("{}/socket.io/?EIO=4&transport=polling", app.url))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 403);
    let ok = app
        .http
        .get(format!("{}/socket.io/?EIO=4&transport=polling", app.url))
        .send()
        .await
        .expect("answer");
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.expect("body").starts_with("0{"));
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            app.url.replacen("http", "ws", 1)
        ))
        .expect("request");
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().expect("header"));
    let refused = tokio_tungstenite::connect_async(req).await;
    assert!(refused.is_err(), "a foreign origin got a WebSocket");
}

#[tokio::test]
async fn socketio_and_ws_clients_share_a_room() {
    let app = TestApp::spawn().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let room = app.create_room(&bob, "lobby", "public").await;
    let room_id = room["id"].as_str().expect("id").to_string();
    let mut bob_ws = app.ws(&bob).await;

    app.sync().await;
    let (mut sio, reply) = Sio::connect(&app.next_url(), &alice).await;
    // Recovery is off by default, as in Socket.IO's own server: no pid,
    // and every event has its data as its one argument.
    assert!(
        reply["sid"].is_string() && reply["pid"].is_null(),
        "{reply}"
    );
    let hello = sio.event("authenticated").await;
    assert_eq!(hello[0]["user"]["username"], "alice");
    let joined = sio.call(1, "join_room", json!({ "room": room_id })).await;
    assert_eq!(joined["ok"], true, "{joined}");
    app.sync().await;

    bob_ws
        .ok("send_message", json!({"room": room_id, "text": "from ws"}))
        .await;
    let sent = sio
        .call(
            2,
            "send_message",
            json!({"room": room_id, "text": "from sio"}),
        )
        .await;
    assert_eq!(sent["ok"], true, "{sent}");

    let mut seen_by_sio = Vec::new();
    for _ in 0..2 {
        let args = sio.event("message").await;
        assert_eq!(args.len(), 1, "{args:?}");
        let m = &args[0]["message"];
        seen_by_sio.push((m["seq"].clone(), m["text"].clone()));
    }
    let mut seen_by_ws = Vec::new();
    for _ in 0..2 {
        let m = bob_ws.next_of("message").await["data"]["message"].clone();
        seen_by_ws.push((m["seq"].clone(), m["text"].clone()));
    }
    assert_eq!(seen_by_sio, seen_by_ws);
    assert_eq!(seen_by_sio[0], (json!(1), json!("from ws")));

    let refused = sio.call(3, "join_room", json!({"room": "nope"})).await;
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_bad_token_is_a_connect_error() {
    let app = TestApp::spawn().await;
    let (_, reply) = Sio::connect(&app.url, "not-a-token").await;
    assert_eq!(reply["data"]["code"], "unauthorized", "{reply}");
    assert!(reply["message"].is_string());
}

#[tokio::test]
async fn a_flood_of_events_is_answered_rate_limited() {
    let app = TestApp::spawn_with(|c| {
        c.limits.frames_per_sec = 1;
        c.limits.frames_burst = 3;
    })
    .await;
    let (alice, _) = app.register("alice").await;
    let (mut sio, _) = Sio::connect(&app.url, &alice).await;
    let mut limited = false;
    for ack in 1..=6 {
        let r = sio.call(ack, "ping", json!({})).await;
        if r["ok"] == false {
            assert_eq!(r["error"]["code"], "rate_limited", "{r}");
            limited = true;
        }
    }
    assert!(limited, "six events at once passed a burst of three");
}

#[tokio::test]
async fn with_recovery_on_the_answer_has_a_pid_and_events_an_offset() {
    let app = TestApp::spawn_with(|c| c.socketio.recovery = true).await;
    let (alice, _) = app.register("alice").await;
    let (mut sio, reply) = Sio::connect(&app.next_url(), &alice).await;
    assert!(
        reply["sid"].is_string() && reply["pid"].is_string(),
        "{reply}"
    );
    let hello = sio.event("authenticated").await;
    assert_eq!(hello[0]["user"]["username"], "alice");
    assert!(hello[1].is_string(), "an offset follows: {hello:?}");
}

#[tokio::test]
async fn a_ping_without_an_ack_is_answered_by_a_pong_event() {
    let app = TestApp::spawn().await;
    let (alice, _) = app.register("alice").await;
    let (mut sio, _) = Sio::connect(&app.next_url(), &alice).await;
    sio.event("authenticated").await;
    sio.send(&format!("42{}", json!(["ping", {}]))).await;
    let pong = sio.event("pong").await;
    assert_eq!(pong.len(), 1, "{pong:?}");
}
