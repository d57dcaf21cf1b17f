//! Each limit hit, with its error or close code.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Closed, TestApp, WAIT, Ws};

#[tokio::test]
async fn a_flooding_user_is_limited_and_others_are_not() {
    let t = TestApp::spawn_with(|c| {
        c.limits.messages_per_sec = 1;
        c.limits.messages_burst = 5;
    })
    .await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let room = t.create_room(&alice, "r", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;
    b.ok("join_room", json!({ "room": room })).await;
    let mut limited = 0;
    for i in 0..20 {
        let answer = a
            .request(
                "send_message",
                json!({"room": room, "text": format!("spam {i}")}),
            )
            .await;
        if answer["type"] == "error" {
            assert_eq!(answer["data"]["code"], "rate_limited");
            limited += 1;
        }
    }
    assert!(limited >= 14, "only {limited} of 20 refused");
    // Over HTTP the same allowance applies.
    let (status, _) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            &alice,
            json!({"text": "more"}),
        )
        .await;
    assert_eq!(status, 429);
    // Bob's own allowance is untouched: all five of his go through, and
    // everything accepted reaches Alice.
    for i in 0..5 {
        b.ok(
            "send_message",
            json!({"room": room, "text": format!("bob {i}")}),
        )
        .await;
    }
    let mut from_bob = 0;
    while from_bob < 5 {
        let m = a.next_of("message").await;
        if m["data"]["message"]["sender"]["username"] == "bob" {
            from_bob += 1;
        }
    }
}

#[tokio::test]
async fn login_brute_force_gets_429_with_retry_after() {
    let t = TestApp::spawn_with(|c| c.limits.login_failures_per_account = 3).await;
    t.register("victim").await;
    t.register("bystander").await;
    let attempt = |name: &'static str, pw: &'static str| {
        let http = t.http.clone();
        let url = format!("{}/api/auth/login", t.url);
        async move {
            http.post(url)
                .json(&json!({"username": name, "password": pw}))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(attempt("victim", "guess-guess").await.status(), 401);
    }
    let resp = attempt("victim", "password-victim").await;
    assert_eq!(resp.status(), 429, "locked even with the right password");
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another account is not affected, nor an unknown name told apart.
    assert_eq!(
        attempt("bystander", "password-bystander").await.status(),
        200
    );
    for _ in 0..3 {
        assert_eq!(attempt("ghost", "guess-guess").await.status(), 401);
    }
    assert_eq!(attempt("ghost", "guess-guess").await.status(), 429);
}

#[tokio::test]
async fn attempts_per_address_are_limited() {
    let t = TestApp::spawn_with(|c| c.limits.auth_attempts_per_ip_per_min = 3).await;
    for name in ["one", "two", "three"] {
        t.register(name).await;
    }
    let (status, body) = t
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"username": "four", "password": "password-four"})),
        )
        .await;
    assert_eq!(status, 429, "{body}");
}

#[tokio::test]
async fn room_creation_is_limited_per_user() {
    let t = TestApp::spawn_with(|c| c.limits.room_creations_per_hour = 2).await;
    let (alice, _) = t.register("alice").await;
    t.create_room(&alice, "a1", "public").await;
    t.create_room(&alice, "a2", "public").await;
    let (status, body) = t.post("/api/rooms", &alice, json!({"name": "a3"})).await;
    assert_eq!(status, 429, "{body}");
    let mut ws = t.ws(&alice).await;
    let answer = ws.request("create_room", json!({"name": "a4"})).await;
    assert_eq!(answer["data"]["code"], "rate_limited");
}

/// A raw TCP connection to the server from a loopback address of our
/// choosing (Linux answers on all of 127.0.0.0/8), so that one test can be
/// several clients.
async fn connect_from(t: &TestApp, from: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket
        .connect(t.running.as_ref().unwrap().addr)
        .await
        .unwrap()
}

/// Everything the server sends until it closes the connection (an end of
/// stream or a reset). Fails if it is still open after `WAIT`.
async fn until_closed(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(read.is_ok(), "the server kept the connection open: {got:?}");
    got
}

/// One HTTP/1.1 answer from a keep-alive connection: its status, or
/// `None` when the server closed the connection instead.
async fn answer(s: &mut TcpStream) -> Option<u16> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(WAIT, async {
        loop {
            let text = String::from_utf8_lossy(&got);
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    return text.get(9..12).and_then(|c| c.parse().ok());
                }
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.expect("an answer or a close in time")
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: confab\r\n\r\n";

async fn healthz_from(t: &TestApp, from: &str) -> Option<u16> {
    let mut s = connect_from(t, from).await;
    s.write_all(HEALTHZ).await.ok()?;
    answer(&mut s).await
}

/// Why a WebSocket could not be opened.
#[derive(Debug, PartialEq)]
enum Refused {
    /// The upgrade was answered with this status.
    Status(u16),
    /// The connection was closed before any answer.
    Closed,
}

/// Opens a WebSocket from `from`, with an `X-Forwarded-For` if given.
async fn upgrade(
    t: &TestApp,
    from: &str,
    token: &str,
    forwarded: Option<&str>,
) -> Result<Ws, Refused> {
    use tokio_tungstenite::tungstenite::{Error, client::IntoClientRequest};
    let mut req = format!("{}?token={token}", t.ws_url)
        .into_client_request()
        .unwrap();
    if let Some(f) = forwarded {
        req.headers_mut()
            .insert("x-forwarded-for", f.parse().unwrap());
    }
    let tcp = connect_from(t, from).await;
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    match tokio_tungstenite::client_async(req, stream).await {
        Ok((stream, _)) => {
            let mut ws = Ws {
                stream,
                buffered: Default::default(),
                hello: serde_json::Value::Null,
                next_id: 1,
            };
            ws.hello = ws.next_of("authenticated").await;
            Ok(ws)
        }
        Err(Error::Http(resp)) => Err(Refused::Status(resp.status().as_u16())),
        Err(_) => Err(Refused::Closed),
    }
}

/// Tries until the server has noticed a close and given its slot back.
async fn served_again(t: &TestApp, from: &str) {
    let deadline = Instant::now() + WAIT;
    while healthz_from(t, from).await != Some(200) {
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn connections_per_address_and_per_account() {
    let t = TestApp::spawn_with(|c| {
        c.limits.max_connections_per_ip = 3;
        c.limits.max_connections_per_user = 2;
    })
    .await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    // The WebSockets come from an address of their own, apart from the
    // HTTP client's connections.
    let here = "127.0.0.2";
    let a1 = upgrade(&t, here, &alice, None).await.unwrap();
    let _a2 = upgrade(&t, here, &alice, None).await.unwrap();
    // A third connection of the same account is closed with 4008.
    let tcp = connect_from(&t, here).await;
    let url = format!("{}?token={alice}", t.ws_url);
    let (stream, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    let mut a3 = Ws {
        stream,
        buffered: Default::default(),
        hello: serde_json::Value::Null,
        next_id: 1,
    };
    assert_eq!(a3.closed().await, Closed::Code(4008));
    drop(a3);
    let _b1 = upgrade(&t, here, &bob, None).await.unwrap();
    // A fourth from this address is refused as soon as it is accepted.
    assert_eq!(
        upgrade(&t, here, &bob, None).await.err(),
        Some(Refused::Status(429))
    );
    // A closed connection gives its slot back.
    drop(a1);
    served_again(&t, here).await;
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let t = TestApp::spawn_with(|c| {
        c.limits.max_connections_per_ip = 1;
        c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let (alice, _) = t.register("alice").await;
    // The proxy's own connections count toward the total only; each
    // upgrade through it counts for the client it forwards.
    let _one = upgrade(&t, "127.0.0.1", &alice, Some("203.0.113.1"))
        .await
        .unwrap();
    let _two = upgrade(&t, "127.0.0.1", &alice, Some("203.0.113.2"))
        .await
        .unwrap();
    assert_eq!(
        upgrade(&t, "127.0.0.1", &alice, Some("203.0.113.1"))
            .await
            .err(),
        Some(Refused::Status(429))
    );

    // Untrusted, the header is ignored: both come from 127.0.0.2.
    let t = TestApp::spawn_with(|c| c.limits.max_connections_per_ip = 1).await;
    let (alice, _) = t.register("alice").await;
    let _one = upgrade(&t, "127.0.0.2", &alice, Some("203.0.113.1"))
        .await
        .unwrap();
    assert_eq!(
        upgrade(&t, "127.0.0.2", &alice, Some("203.0.113.2"))
            .await
            .err(),
        Some(Refused::Status(429))
    );
}

#[tokio::test]
async fn the_total_connection_limit_holds() {
    let t = TestApp::spawn_with(|c| c.limits.max_connections = 2).await;
    // Two clients hold connections open halfway through a request.
    let mut held = Vec::new();
    for from in ["127.0.0.2", "127.0.0.3"] {
        let mut s = connect_from(&t, from).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    // A third client is turned away at once.
    assert_eq!(healthz_from(&t, "127.0.0.4").await, Some(429));
    // The two were held, not refused: they finish and are answered.
    for s in &mut held {
        s.write_all(b"Host: confab\r\n\r\n").await.unwrap();
        assert_eq!(answer(s).await, Some(200));
    }
}

#[tokio::test]
async fn a_slowloris_crowd_from_one_address_is_capped_and_healthz_still_answers() {
    let t = TestApp::spawn_with(|c| {
        c.limits.max_connections_per_ip = 4;
        // Long enough that the crowd is not cleared by its own clock here.
        c.server.header_read_timeout_ms = 60_000;
    })
    .await;
    // Each sends half a request head and stops.
    let mut crowd = Vec::new();
    for _ in 0..20 {
        let mut s = connect_from(&t, "127.0.0.1").await;
        // A refused connection may already be gone.
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: confab\r\n")
            .await;
        crowd.push(s);
    }
    let mut held: Vec<TcpStream> = crowd.drain(..4).collect();
    for s in &mut crowd {
        let got = until_closed(s).await;
        assert!(got.starts_with("HTTP/1.1 429 "), "refused at once: {got:?}");
        assert!(got.contains("rate_limited"), "{got}");
    }
    // Another address is served while the crowd is held.
    assert_eq!(healthz_from(&t, "127.0.0.2").await, Some(200));
    // The first four were held, not refused.
    for s in &mut held {
        s.write_all(b"\r\n").await.unwrap();
        assert_eq!(answer(s).await, Some(200));
    }
    drop(held);
    served_again(&t, "127.0.0.1").await;
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_timeout() {
    let t = TestApp::spawn_with(|c| {
        c.server.header_read_timeout_ms = 300;
        c.server.idle_timeout_ms = 60_000;
    })
    .await;
    let timeout = Duration::from_millis(300);
    // Half a request line.
    let start = Instant::now();
    let mut half = connect_from(&t, "127.0.0.1").await;
    half.write_all(b"GET /heal").await.unwrap();
    assert_eq!(until_closed(&mut half).await, "");
    assert!(start.elapsed() >= timeout);
    // Nothing at all.
    let mut silent = connect_from(&t, "127.0.0.1").await;
    assert_eq!(until_closed(&mut silent).await, "");
    // The clock runs again for each request on a kept-alive connection.
    let mut kept = connect_from(&t, "127.0.0.1").await;
    kept.write_all(HEALTHZ).await.unwrap();
    assert_eq!(answer(&mut kept).await, Some(200));
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: c")
        .await
        .unwrap();
    assert_eq!(until_closed(&mut kept).await, "");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let t = TestApp::spawn_with(|c| {
        c.server.header_read_timeout_ms = 60_000;
        c.server.idle_timeout_ms = 300;
    })
    .await;
    let (alice, _) = t.register("alice").await;
    let mut ws = t.ws(&alice).await;
    let mut s = connect_from(&t, "127.0.0.1").await;
    s.write_all(HEALTHZ).await.unwrap();
    assert_eq!(answer(&mut s).await, Some(200));
    let answered = Instant::now();
    assert_eq!(until_closed(&mut s).await, "");
    assert!(answered.elapsed() >= Duration::from_millis(300));
    // The WebSocket, silent all that time, is still open: it has its own
    // heartbeat.
    ws.send_json(json!({"type": "ping", "id": "still-there"}))
        .await;
    ws.next_of("pong").await;
}

#[tokio::test]
async fn a_stalled_or_late_body_is_answered_408() {
    let t = TestApp::spawn_with(|c| {
        c.server.body_timeout_ms = 300;
        c.server.body_deadline_ms = 1_500;
    })
    .await;
    let (alice, _) = t.register("alice").await;
    let timed_out = |got: &str| {
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(got.contains(r#""code":"timeout""#), "{got}");
    };
    // A JSON body that stops halfway.
    let mut json = connect_from(&t, "127.0.0.1").await;
    json.write_all(
        b"POST /api/auth/login HTTP/1.1\r\nHost: confab\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"username\"",
    )
    .await
    .unwrap();
    let got = until_closed(&mut json).await;
    timed_out(&got);
    assert!(got.contains("no data for 300 ms"), "{got}");
    // An upload that stops halfway.
    let mut upload = connect_from(&t, "127.0.0.1").await;
    let head = format!(
        "POST /api/uploads HTTP/1.1\r\nHost: confab\r\nAuthorization: Bearer {alice}\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 100000\r\n\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\
         Content-Type: image/png\r\n\r\nPNG"
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    timed_out(&until_closed(&mut upload).await);
    // A body that keeps trickling, a byte at a time, but never ends.
    let mut slow = connect_from(&t, "127.0.0.1").await;
    slow.write_all(
        b"POST /api/auth/login HTTP/1.1\r\nHost: confab\r\nContent-Length: 1000\r\n\r\n",
    )
    .await
    .unwrap();
    let (mut rx, mut tx) = slow.into_split();
    let trickle = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        while tx.write_all(b" ").await.is_ok() {
            every.tick().await;
        }
    });
    let got = until_closed(&mut rx).await;
    trickle.abort();
    timed_out(&got);
    assert!(got.contains("not complete within 1500 ms"), "{got}");
}
