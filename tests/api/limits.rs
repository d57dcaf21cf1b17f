//! Each limit hit, with its error or close code.

use reqwest::Method;
use serde_json::json;

use crate::common::{Closed, TestApp, Ws};

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

async fn upgrade_status(url: &str, forwarded: Option<&str>) -> Result<Ws, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if let Some(f) = forwarded {
        req.headers_mut()
            .insert("x-forwarded-for", f.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((stream, _)) => Ok(Ws {
            stream,
            buffered: Default::default(),
            hello: serde_json::Value::Null,
            next_id: 1,
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
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
    let url = |tok: &str| format!("{}?token={tok}", t.ws_url);
    let a1 = t.ws(&alice).await;
    let _a2 = t.ws(&alice).await;
    // A third connection of the same account is closed with 4008.
    let mut a3 = upgrade_status(&url(&alice), None).await.unwrap();
    assert_eq!(a3.closed().await, Closed::Code(4008));
    let _b1 = t.ws(&bob).await;
    // A fourth from this address is refused before the upgrade.
    assert_eq!(upgrade_status(&url(&bob), None).await.err(), Some(429));
    // A closed connection gives its slot back.
    drop(a1);
    let mut tries = 0;
    let _b2 = loop {
        match upgrade_status(&url(&bob), None).await {
            Ok(mut ws) => {
                ws.next_of("authenticated").await;
                break ws;
            }
            Err(429) if tries < 200 => {
                tries += 1;
                tokio::task::yield_now().await;
            }
            Err(other) => panic!("status {other}"),
        }
    };
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let t = TestApp::spawn_with(|c| {
        c.limits.max_connections_per_ip = 1;
        c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let (alice, _) = t.register("alice").await;
    let url = format!("{}?token={alice}", t.ws_url);
    let _one = upgrade_status(&url, Some("203.0.113.1")).await.unwrap();
    let _two = upgrade_status(&url, Some("203.0.113.2")).await.unwrap();
    assert_eq!(
        upgrade_status(&url, Some("203.0.113.1")).await.err(),
        Some(429)
    );

    // Untrusted, the header is ignored: all come from 127.0.0.1.
    let t = TestApp::spawn_with(|c| c.limits.max_connections_per_ip = 1).await;
    let (alice, _) = t.register("alice").await;
    let url = format!("{}?token={alice}", t.ws_url);
    let _one = upgrade_status(&url, Some("203.0.113.1")).await.unwrap();
    assert_eq!(
        upgrade_status(&url, Some("203.0.113.2")).await.err(),
        Some(429)
    );
}

#[tokio::test]
async fn the_total_connection_limit_holds() {
    let t = TestApp::spawn_with(|c| c.limits.max_connections = 2).await;
    let (alice, _) = t.register("alice").await;
    let _a = t.ws(&alice).await;
    let _b = t.ws(&alice).await;
    let url = format!("{}?token={alice}", t.ws_url);
    assert_eq!(upgrade_status(&url, None).await.err(), Some(429));
    let mut ws = _a;
    let _ = ws.stream.close(None).await;
}
