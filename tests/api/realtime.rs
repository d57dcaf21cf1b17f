//! The WebSocket contract: events, acks, errors, ordering and recovery.

use futures_util::SinkExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::common::{Closed, TestApp, Ws};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// Two users, a public room both are in, and a connection each.
async fn two_in_a_room(t: &TestApp) -> (String, Ws, String, Ws, String) {
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let room = id(&t.create_room(&alice, "general", "public").await);
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;
    b.ok("join_room", json!({ "room": room })).await;
    a.next_of("member_joined").await;
    (alice, a, bob, b, room)
}

#[tokio::test]
async fn authenticated_lists_rooms_and_online_users() {
    let t = TestApp::spawn().await;
    let (alice, alice_user) = t.register("alice").await;
    let room = t.create_room(&alice, "general", "public").await;
    let a = t.ws(&alice).await;
    let hello = &a.hello["data"];
    assert_eq!(hello["user"], alice_user);
    assert!(hello["session_id"].is_string());
    assert_eq!(hello["rooms"], json!([room]));
    assert_eq!(hello["online_users"], json!([alice_user]));
    assert!(a.hello["ts"].as_i64().unwrap() > 0);
}

/// `online_users` holds whom the user hears of (room co-members), not
/// everyone online: the same set `user_online` would have announced.
#[tokio::test]
async fn authenticated_lists_only_online_users_sharing_a_room() {
    let t = TestApp::spawn().await;
    let (alice, alice_user) = t.register("alice").await;
    let (bob, bob_user) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;
    let room = id(&t.create_room(&alice, "general", "public").await);
    t.create_room(&carol, "elsewhere", "public").await;
    let mut b = t.ws(&bob).await;
    b.ok("join_room", json!({ "room": room })).await;
    let _c = t.ws(&carol).await;
    let a = t.ws(&alice).await;
    assert_eq!(
        a.hello["data"]["online_users"],
        json!([alice_user, bob_user])
    );
    // Everyone online is still one request away.
    let (status, all) = t.get("/api/users/online", &alice).await;
    assert_eq!(status, 200);
    assert_eq!(all["users"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn auth_by_first_frame_and_refusals() {
    let t = TestApp::spawn_with(|c| c.ws.auth_timeout_ms = 300).await;
    let (token, user) = t.register("alice").await;

    let mut ws = Ws::connect(&t.ws_url).await;
    ws.send_json(json!({"type": "auth", "id": "a1", "data": {"token": token}}))
        .await;
    let ack = ws.next().await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["id"], "a1");
    assert_eq!(ack["data"]["user"], user);
    assert_eq!(ws.next().await["type"], "authenticated");

    // A wrong token: an error, then close 4001.
    let mut ws = Ws::connect(&t.ws_url).await;
    ws.send_json(json!({"type": "auth", "id": "a2", "data": {"token": "forged"}}))
        .await;
    assert_eq!(ws.closed().await, Closed::Code(4001));
    let err = ws.buffered.pop_front().expect("an error before the close");
    assert_eq!(err["type"], "error");
    assert_eq!(err["id"], "a2");
    assert_eq!(err["data"]["code"], "unauthorized");

    // A repeated auth on a signed-in connection still checks its token.
    let mut ws = t.ws(&token).await;
    let answer = ws.request("auth", json!({"token": "forged"})).await;
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["data"]["code"], "unauthorized");
    let answer = ws.request("auth", json!({ "token": token })).await;
    assert_eq!(answer["type"], "ack");

    // A bad ?token= is refused the same way.
    let mut ws = Ws::connect(&format!("{}?token=forged", t.ws_url)).await;
    assert_eq!(ws.closed().await, Closed::Code(4001));

    // Nothing sent in time: 4001.
    let mut ws = Ws::connect(&t.ws_url).await;
    assert_eq!(ws.closed().await, Closed::Code(4001));
}

#[tokio::test]
async fn origin_must_be_the_servers_own_or_configured() {
    let t =
        TestApp::spawn_with(|c| c.server.cors_origins = vec!["https://chat.example".into()]).await;
    let (token, _) = t.register("alice").await;
    let url = format!("{}?token={token}", t.ws_url);
    let with_origin = |origin: &str| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        req
    };
    let refused = tokio_tungstenite::connect_async(with_origin("https://evil.example")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403)
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    let own = format!("http://{}", t.running.as_ref().unwrap().addr);
    assert!(
        tokio_tungstenite::connect_async(with_origin(&own))
            .await
            .is_ok()
    );
    assert!(
        tokio_tungstenite::connect_async(with_origin("https://chat.example"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn two_users_chat_in_order() {
    let t = TestApp::spawn().await;
    let (_, mut a, _, mut b, room) = two_in_a_room(&t).await;
    for i in 0..20 {
        let sender = if i % 2 == 0 { &mut a } else { &mut b };
        let ack = sender
            .ok(
                "send_message",
                json!({"room": room, "text": format!("m{i}")}),
            )
            .await;
        assert_eq!(ack["message"]["seq"], i + 1);
    }
    for ws in [&mut a, &mut b] {
        for i in 0..20 {
            let m = ws.next_of("message").await;
            let msg = &m["data"]["message"];
            assert_eq!(msg["seq"], i + 1);
            assert_eq!(msg["text"], format!("m{i}"));
            assert_eq!(msg["room"], room.as_str());
            assert_eq!(msg["deleted"], false);
            assert_eq!(msg["edited_at"], Value::Null);
            assert_eq!(msg["attachments"], json!([]));
            let sender = if i % 2 == 0 { "alice" } else { "bob" };
            assert_eq!(msg["sender"]["username"], sender);
        }
    }
}

#[tokio::test]
async fn concurrent_senders_get_gapless_ordered_seqs() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let room = id(&t.create_room(&alice, "busy", "public").await);
    let mut watcher = t.ws(&alice).await;
    let mut tasks = Vec::new();
    for n in 0..8 {
        let (token, _) = t.register(&format!("sender{n}")).await;
        let mut ws = t.ws(&token).await;
        ws.ok("join_room", json!({ "room": room })).await;
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                ws.ok(
                    "send_message",
                    json!({"room": room, "text": format!("{n}-{i}")}),
                )
                .await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut per_sender = std::collections::HashMap::<String, Vec<u32>>::new();
    for seq in 1..=200u64 {
        let m = watcher.next_of("message").await;
        assert_eq!(m["data"]["message"]["seq"], seq);
        let text = m["data"]["message"]["text"].as_str().unwrap().to_string();
        let (who, i) = text.split_once('-').unwrap();
        per_sender
            .entry(who.into())
            .or_default()
            .push(i.parse().unwrap());
    }
    // Each sender's own messages kept their order too.
    for (_, seen) in per_sender {
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    }
}

#[tokio::test]
async fn the_senders_other_connections_receive_it() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let room = id(&t.create_room(&alice, "solo", "public").await);
    let mut one = t.ws(&alice).await;
    let mut two = t.ws(&alice).await;
    one.ok("send_message", json!({"room": room, "text": "hi me"}))
        .await;
    for ws in [&mut one, &mut two] {
        let m = ws.next_of("message").await;
        assert_eq!(m["data"]["message"]["text"], "hi me");
    }
}

#[tokio::test]
async fn private_rooms_refuse_non_members() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (mallory, _) = t.register("mallory").await;
    let room = id(&t.create_room(&alice, "secret", "private").await);
    let mut a = t.ws(&alice).await;
    a.ok("send_message", json!({"room": room, "text": "for members"}))
        .await;
    let mut m = t.ws(&mallory).await;
    for (kind, data) in [
        ("join_room", json!({ "room": room })),
        ("send_message", json!({"room": room, "text": "let me in"})),
        ("history", json!({ "room": room })),
        ("presence", json!({ "room": room })),
        ("typing_start", json!({ "room": room })),
        ("mark_read", json!({"room": room, "seq": 1})),
    ] {
        let answer = m.request(kind, data).await;
        assert_eq!(answer["type"], "error", "{kind}: {answer}");
        assert_eq!(answer["data"]["code"], "forbidden", "{kind}: {answer}");
    }
    let (status, _) = t
        .get(&format!("/api/rooms/{room}/messages"), &mallory)
        .await;
    assert_eq!(status, 403);
    // Changes to it are not announced to outsiders either.
    let (status, _) = t
        .call(
            Method::PATCH,
            &format!("/api/rooms/{room}"),
            Some(&alice),
            Some(json!({"topic": "plans"})),
        )
        .await;
    assert_eq!(status, 200);
    a.next_of("room_updated").await;
    m.send_json(json!({"type": "ping", "id": "sync"})).await;
    m.next_of("pong").await;
    assert!(
        m.buffered
            .iter()
            .all(|f| f["type"] != "room_updated" && f["type"] != "message"),
        "{:?}",
        m.buffered
    );
    // A member subscribed from the start: join_room confirms it.
    let ack = a.ok("join_room", json!({ "room": room })).await;
    assert_eq!(ack["last_seq"], 1);
    assert_eq!(ack["room"]["visibility"], "private");
}

#[tokio::test]
async fn direct_messages_reach_only_their_two_users() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;
    let shared = id(&t.create_room(&alice, "all", "public").await);
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;
    let mut c = t.ws(&carol).await;
    b.ok("join_room", json!({ "room": shared })).await;
    c.ok("join_room", json!({ "room": shared })).await;

    let ack = a
        .ok("send_message", json!({"to": "bob", "text": "psst"}))
        .await;
    let dm_room = ack["message"]["room"].as_str().unwrap().to_string();
    let created = b.next_of("room_created").await;
    assert_eq!(created["data"]["room"]["kind"], "dm");
    assert_eq!(created["data"]["room"]["id"], dm_room.as_str());
    let got = b.next_of("message").await;
    assert_eq!(got["data"]["message"]["text"], "psst");
    // Bob answers over HTTP; both see it.
    let (status, body) = t
        .post("/api/dm/alice/messages", &bob, json!({"text": "yes?"}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"]["room"], dm_room.as_str());
    assert_eq!(
        a.next_of("message").await["data"]["message"]["text"],
        "psst"
    );
    assert_eq!(
        a.next_of("message").await["data"]["message"]["text"],
        "yes?"
    );

    // Carol saw neither: the next message she gets is the marker.
    a.ok("send_message", json!({"room": shared, "text": "marker"}))
        .await;
    let next = c.next_of("message").await;
    assert_eq!(next["data"]["message"]["text"], "marker");
    assert!(
        c.buffered.iter().all(|f| f["type"] != "room_created"),
        "{:?}",
        c.buffered
    );
    let answer = c.request("history", json!({ "room": dm_room })).await;
    assert_eq!(answer["data"]["code"], "forbidden");
    let (_, rooms) = t.get("/api/rooms", &carol).await;
    assert!(
        rooms["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["kind"] != "dm")
    );
    let (_, rooms) = t.get("/api/rooms", &bob).await;
    assert!(
        rooms["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == dm_room.as_str())
    );
    let answer = a
        .request("send_message", json!({"to": "nobody", "text": "hello?"}))
        .await;
    assert_eq!(answer["data"]["code"], "not_found");
}

#[tokio::test]
async fn history_pages_both_ways_across_250_messages() {
    let t = TestApp::spawn_with(|c| c.limits.frames_per_sec = 10_000).await;
    let (alice, _) = t.register("alice").await;
    let room = id(&t.create_room(&alice, "long", "public").await);
    let mut a = t.ws(&alice).await;
    for i in 1..=250 {
        a.ok(
            "send_message",
            json!({"room": room, "text": format!("n{i}")}),
        )
        .await;
    }
    let seqs = |msgs: &Value| -> Vec<u64> {
        msgs.as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    // Newest first page, then walk back with `before`.
    let page = a.ok("history", json!({"room": room, "limit": 100})).await;
    assert_eq!(seqs(&page["messages"]), (151..=250).collect::<Vec<_>>());
    assert_eq!(page["has_more"], true);
    let page = a
        .ok(
            "history",
            json!({"room": room, "limit": 100, "before": 151}),
        )
        .await;
    assert_eq!(seqs(&page["messages"]), (51..=150).collect::<Vec<_>>());
    assert_eq!(page["has_more"], true);
    let page = a
        .ok("history", json!({"room": room, "limit": 100, "before": 51}))
        .await;
    assert_eq!(seqs(&page["messages"]), (1..=50).collect::<Vec<_>>());
    assert_eq!(page["has_more"], false);
    // Forward with `after`, over HTTP.
    let mut after = 0;
    let mut all = Vec::new();
    loop {
        let (status, page) = t
            .get(
                &format!("/api/rooms/{room}/messages?after={after}&limit=100"),
                &alice,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let s = seqs(&page["messages"]);
        after = *s.last().unwrap();
        all.extend(s);
        if page["has_more"] == false {
            break;
        }
    }
    assert_eq!(all, (1..=250).collect::<Vec<_>>());
    // Default page size is 50, the newest.
    let (_, page) = t.get(&format!("/api/rooms/{room}/messages"), &alice).await;
    assert_eq!(seqs(&page["messages"]), (201..=250).collect::<Vec<_>>());
    // Both bounds.
    let page = a
        .ok("history", json!({"room": room, "after": 10, "before": 15}))
        .await;
    assert_eq!(seqs(&page["messages"]), vec![11, 12, 13, 14]);
    // Bad limits.
    for limit in [0, 201] {
        let answer = a
            .request("history", json!({"room": room, "limit": limit}))
            .await;
        assert_eq!(answer["data"]["code"], "bad_request");
    }
    let (status, _) = t
        .get(&format!("/api/rooms/{room}/messages?limit=abc"), &alice)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn reconnect_and_recover_exactly_the_missed_messages() {
    let t = TestApp::spawn().await;
    let (_, mut a, bob, b, room) = two_in_a_room(&t).await;
    a.ok("send_message", json!({"room": room, "text": "before"}))
        .await;
    drop(b);
    let mut last_seq = 1;
    for i in 0..7 {
        let ack = a
            .ok(
                "send_message",
                json!({"room": room, "text": format!("missed {i}")}),
            )
            .await;
        last_seq = ack["message"]["seq"].as_u64().unwrap();
    }
    let mut b = t.ws(&bob).await;
    let page = b.ok("history", json!({"room": room, "after": 1})).await;
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        (0..7).map(|i| format!("missed {i}")).collect::<Vec<_>>()
    );
    assert_eq!(page["has_more"], false);
    assert_eq!(last_seq, 8);
}

#[tokio::test]
async fn a_repeated_client_msg_id_returns_the_first_message() {
    let t = TestApp::spawn().await;
    let (alice, mut a, _, mut b, room) = two_in_a_room(&t).await;
    let first = a
        .ok(
            "send_message",
            json!({"room": room, "text": "once", "client_msg_id": "k-1"}),
        )
        .await;
    let again = a
        .ok(
            "send_message",
            json!({"room": room, "text": "once (retry)", "client_msg_id": "k-1"}),
        )
        .await;
    assert_eq!(first["message"], again["message"]);
    assert_eq!(first["message"]["client_msg_id"], "k-1");
    // Over HTTP too.
    let (status, body) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            &alice,
            json!({"text": "again", "client_msg_id": "k-1"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["message"], first["message"]);
    // Stored and delivered once.
    let next = a
        .ok("send_message", json!({"room": room, "text": "next"}))
        .await;
    assert_eq!(next["message"]["seq"], 2);
    assert_eq!(
        b.next_of("message").await["data"]["message"]["text"],
        "once"
    );
    assert_eq!(
        b.next_of("message").await["data"]["message"]["text"],
        "next"
    );
}

#[tokio::test]
async fn http_posts_are_delivered_live() {
    let t = TestApp::spawn().await;
    let (alice, _, _, mut b, room) = two_in_a_room(&t).await;
    let (status, body) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            &alice,
            json!({"text": "from curl"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let m = b.next_of("message").await;
    assert_eq!(m["data"]["message"], body["message"]);
    let (status, body) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            &alice,
            json!({"text": "  "}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn edit_and_delete_fan_out_and_check_the_sender() {
    let t = TestApp::spawn().await;
    let (_, mut a, _, mut b, room) = two_in_a_room(&t).await;
    let sent = a
        .ok("send_message", json!({"room": room, "text": "typo"}))
        .await;
    let mid = sent["message"]["id"].as_str().unwrap().to_string();
    let answer = b
        .request("edit_message", json!({"message_id": mid, "text": "mine"}))
        .await;
    assert_eq!(answer["data"]["code"], "forbidden");
    let answer = b
        .request("delete_message", json!({ "message_id": mid }))
        .await;
    assert_eq!(answer["data"]["code"], "forbidden");

    let edited = a
        .ok("edit_message", json!({"message_id": mid, "text": "fixed"}))
        .await;
    assert_eq!(edited["message"]["text"], "fixed");
    assert!(edited["message"]["edited_at"].as_i64().is_some());
    let up = b.next_of("message_updated").await;
    assert_eq!(up["data"]["message"]["text"], "fixed");
    assert_eq!(up["data"]["message"]["seq"], 1);

    a.ok("delete_message", json!({ "message_id": mid })).await;
    let del = b.next_of("message_deleted").await;
    assert_eq!(
        del["data"],
        json!({"room": room, "message_id": mid, "seq": 1})
    );
    let page = b.ok("history", json!({ "room": room })).await;
    let m = &page["messages"][0];
    assert_eq!(m["deleted"], true);
    assert_eq!(m["text"], "");
    assert_eq!(m["seq"], 1);
    // The next message still gets seq 2.
    let next = a
        .ok("send_message", json!({"room": room, "text": "after"}))
        .await;
    assert_eq!(next["message"]["seq"], 2);
    let answer = a
        .request(
            "edit_message",
            json!({"message_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "text": "x"}),
        )
        .await;
    assert_eq!(answer["data"]["code"], "not_found");
}

#[tokio::test]
async fn join_leave_and_room_events() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, bob_user) = t.register("bob").await;
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;

    let created = a
        .ok("create_room", json!({"name": "town", "topic": "square"}))
        .await;
    let room = id(&created["room"]);
    // Public room: everyone online hears of it.
    let ev = b.next_of("room_created").await;
    assert_eq!(ev["data"]["room"]["name"], "town");

    let ack = b.ok("join_room", json!({ "room": room })).await;
    assert_eq!(ack["last_seq"], 0);
    let joined = a.next_of("member_joined").await;
    assert_eq!(joined["data"], json!({"room": room, "user": bob_user}));

    // A change over HTTP reaches WebSocket clients.
    let (status, _) = t
        .call(
            Method::PATCH,
            &format!("/api/rooms/{room}"),
            Some(&alice),
            Some(json!({"topic": "new topic"})),
        )
        .await;
    assert_eq!(status, 200);
    let up = b.next_of("room_updated").await;
    assert_eq!(up["data"]["room"]["topic"], "new topic");

    b.ok("leave_room", json!({ "room": room })).await;
    let left = a.next_of("member_left").await;
    assert_eq!(left["data"], json!({"room": room, "user": bob_user}));
    // Bob no longer receives the room's messages.
    a.ok("send_message", json!({"room": room, "text": "bob is gone"}))
        .await;
    let answer = b.request("leave_room", json!({ "room": room })).await;
    assert_eq!(answer["data"]["code"], "not_found");

    // Private rooms are announced to members only.
    let private = a
        .ok(
            "create_room",
            json!({"name": "den", "visibility": "private"}),
        )
        .await;
    assert_eq!(
        a.next_of("room_created").await["data"]["room"]["name"],
        "town"
    );
    assert_eq!(
        a.next_of("room_created").await["data"]["room"]["name"],
        "den"
    );

    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/rooms/{room}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let gone = b.next_of("room_deleted").await;
    assert_eq!(gone["data"], json!({ "room_id": room }));
    // Bob never heard of the private room, nor got the message after leaving.
    assert!(
        b.buffered.iter().all(|f| f["type"] != "message"),
        "{:?}",
        b.buffered
    );
    assert!(
        b.buffered
            .iter()
            .all(|f| f["data"]["room"]["id"] != private["room"]["id"]),
        "{:?}",
        b.buffered
    );
    // The operator's changes are announced too.
    t.sync().await;
    t.app()
        .create_room(
            &confab::app::Actor::Operator,
            confab::domain::RoomName::parse("ops").unwrap(),
            confab::domain::Visibility::Public,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        b.next_of("room_created").await["data"]["room"]["name"],
        "ops"
    );
}

#[tokio::test]
async fn typing_is_relayed_and_stops_by_itself() {
    let t = TestApp::spawn_with(|c| c.ws.typing_timeout_ms = 300).await;
    let (_, mut a, _, mut b, room) = two_in_a_room(&t).await;
    a.ok("typing_start", json!({ "room": room })).await;
    let on = b.next_of("typing").await;
    assert_eq!(on["data"]["typing"], true);
    assert_eq!(on["data"]["user"]["username"], "alice");
    assert_eq!(on["data"]["room"], room.as_str());
    let off = b.next_of("typing").await;
    assert_eq!(off["data"]["typing"], false);
    // An explicit stop.
    a.ok("typing_start", json!({ "room": room })).await;
    assert_eq!(b.next_of("typing").await["data"]["typing"], true);
    a.ok("typing_stop", json!({ "room": room })).await;
    assert_eq!(b.next_of("typing").await["data"]["typing"], false);
    // The typist does not hear their own typing.
    a.ok("send_message", json!({"room": room, "text": "done"}))
        .await;
    a.next_of("message").await;
    assert!(
        a.buffered.iter().all(|f| f["type"] != "typing"),
        "{:?}",
        a.buffered
    );
}

#[tokio::test]
async fn read_markers_and_presence() {
    let t = TestApp::spawn().await;
    let (alice, mut a, _, mut b, room) = two_in_a_room(&t).await;
    a.ok("send_message", json!({"room": room, "text": "read me"}))
        .await;
    b.ok("mark_read", json!({"room": room, "seq": 1})).await;
    let read = a.next_of("read").await;
    assert_eq!(read["data"]["seq"], 1);
    assert_eq!(read["data"]["user"]["username"], "bob");
    let answer = b
        .request("mark_read", json!({"room": room, "seq": 99}))
        .await;
    assert_eq!(answer["data"]["code"], "bad_request");

    let p = a.ok("presence", json!({ "room": room })).await;
    let names: Vec<&str> = p["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alice", "bob"]);
    let (status, body) = t.get("/api/users/online", &alice).await;
    assert_eq!(status, 200);
    assert_eq!(body["users"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn online_and_offline_follow_the_first_and_last_connection() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let room = id(&t.create_room(&alice, "general", "public").await);
    t.post(
        &format!("/api/rooms/{room}/members"),
        &bob,
        json!({"username": "bob"}),
    )
    .await;
    let mut a = t.ws(&alice).await;
    let b1 = t.ws(&bob).await;
    assert_eq!(
        a.next_of("user_online").await["data"]["user"]["username"],
        "bob"
    );
    let mut b2 = t.ws(&bob).await;
    drop(b1);
    // A marker through the same queue: no offline (and no second online)
    // came before it.
    b2.ok("send_message", json!({"room": room, "text": "still here"}))
        .await;
    a.next_of("message").await;
    assert!(
        a.buffered
            .iter()
            .all(|f| f["type"] != "user_offline" && f["type"] != "user_online"),
        "{:?}",
        a.buffered
    );
    drop(b2);
    let off = a.next_of("user_offline").await;
    assert_eq!(off["data"]["user"]["username"], "bob");
    let (_, body) = t.get("/api/users/online", &alice).await;
    assert_eq!(body["users"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn many_connections_of_one_user_at_once_keep_presence_consistent() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let room = id(&t.create_room(&alice, "general", "public").await);
    t.post(
        &format!("/api/rooms/{room}/members"),
        &bob,
        json!({"username": "bob"}),
    )
    .await;
    let mut a = t.ws(&alice).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = format!("{}?token={bob}", t.ws_url);
        tasks.push(tokio::spawn(async move {
            let mut ws = Ws::connect(&url).await;
            ws.next_of("authenticated").await;
            ws
        }));
    }
    let mut conns = Vec::new();
    for task in tasks {
        conns.push(task.await.unwrap());
    }
    // Close them all at once.
    let closers: Vec<_> = conns
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { ws.stream.close(None).await }))
        .collect();
    for c in closers {
        let _ = c.await;
    }
    let off = a.next_of("user_offline").await;
    assert_eq!(off["data"]["user"]["username"], "bob");
    let onlines = a
        .buffered
        .iter()
        .filter(|f| f["type"] == "user_online")
        .count();
    assert_eq!(onlines, 1, "{:?}", a.buffered);
    let (_, body) = t.get("/api/users/online", &alice).await;
    assert_eq!(body["users"].as_array().unwrap().len(), 1, "{body}");
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_stays_usable() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let mut a = t.ws(&alice).await;
    a.send_text("{not json".into()).await;
    let e = a.next_of("error").await;
    assert_eq!(e["data"]["code"], "bad_request");
    assert!(e.get("id").is_none());

    a.send_json(json!({"type": "no_such_thing", "id": "u1"}))
        .await;
    let e = a.next_of("error").await;
    assert_eq!(e["id"], "u1");
    assert_eq!(e["data"]["code"], "bad_request");

    a.send_json(json!({"type": "join_room", "id": "u2", "data": {}}))
        .await;
    let e = a.next_of("error").await;
    assert_eq!(e["id"], "u2");
    assert!(
        e["data"]["message"].as_str().unwrap().contains("room"),
        "{e}"
    );

    a.send_json(json!({"type": "send_message", "id": "u3", "data": {"room": 5}}))
        .await;
    let e = a.next_of("error").await;
    assert_eq!(e["id"], "u3");
    assert_eq!(e["data"]["code"], "bad_request");

    a.send_json(json!({"id": "u4", "data": {}})).await;
    let e = a.next_of("error").await;
    assert_eq!(e["id"], "u4");

    a.stream
        .send(WsMessage::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(a.next_of("error").await["data"]["code"], "bad_request");

    // Still usable.
    a.send_json(json!({"type": "ping", "id": "p1"})).await;
    let pong = a.next_of("pong").await;
    assert_eq!(pong["id"], "p1");
    a.ok("create_room", json!({"name": "still-fine"})).await;
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let mut a = t.ws(&alice).await;
    let huge = "x".repeat(70 * 1024);
    let _ = a
        .stream
        .send(WsMessage::text(
            json!({"type": "ping", "data": {"pad": huge}}).to_string(),
        ))
        .await;
    assert_eq!(a.closed().await, Closed::Code(1009));
}

/// A fragmented client message is put back together (with a ping between
/// its pieces); a text message that is not UTF-8 closes with 1007.
#[tokio::test]
async fn fragmented_frames_are_joined_and_bad_utf8_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let mut a = t.ws(&alice).await;
    let text = json!({"type": "ping", "id": "in-pieces"}).to_string();
    let (head, tail) = text.split_at(10);
    let pieces = [
        WsMessage::Frame(Frame::message(
            head.as_bytes().to_vec(),
            OpCode::Data(Data::Text),
            false,
        )),
        WsMessage::Ping(b"between".to_vec().into()),
        WsMessage::Frame(Frame::message(
            tail.as_bytes().to_vec(),
            OpCode::Data(Data::Continue),
            true,
        )),
    ];
    for m in pieces {
        a.stream.send(m).await.expect("sent");
    }
    assert_eq!(a.next_of("pong").await["id"], "in-pieces");

    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    a.stream.send(WsMessage::Frame(bad)).await.expect("sent");
    assert_eq!(a.closed().await, Closed::Code(1007));
}

/// A frame far larger than any socket buffer (a history page) arrives
/// whole, and the connection goes on.
#[tokio::test]
async fn a_large_answer_arrives_whole() {
    let t = TestApp::spawn_with(|c| c.limits.messages_burst = 100).await;
    let (alice, _) = t.register("alice").await;
    let room = id(&t.create_room(&alice, "general", "public").await);
    let mut a = t.ws(&alice).await;
    let long = "y".repeat(3000);
    for _ in 0..40 {
        a.ok("send_message", json!({"room": room, "text": long}))
            .await;
    }
    let page = a.ok("history", json!({"room": room, "limit": 40})).await;
    let messages = page["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 40);
    assert!(messages.iter().all(|m| m["text"] == long.as_str()));
    a.send_json(json!({"type": "ping", "id": "after"})).await;
    assert_eq!(a.next_of("pong").await["id"], "after");
}

#[tokio::test]
async fn flooding_is_rate_limited_then_closed() {
    let t = TestApp::spawn_with(|c| {
        c.limits.frames_per_sec = 5;
        c.limits.frames_burst = 10;
    })
    .await;
    let (alice, _) = t.register("alice").await;
    let mut a = t.ws(&alice).await;
    for i in 0..200 {
        if a.stream
            .send(WsMessage::text(
                json!({"type": "ping", "id": format!("f{i}")}).to_string(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(a.closed().await, Closed::Code(4008));
    assert!(
        a.buffered
            .iter()
            .any(|f| f["type"] == "error" && f["data"]["code"] == "rate_limited"),
        "{:?}",
        a.buffered
    );
    // A client that waits for each answer but keeps pushing past its
    // allowance is flooding too, even when a frame slips through.
    let mut b = t.ws(&alice).await;
    let mut limited = 0;
    let code = loop {
        let sent = b
            .stream
            .send(WsMessage::text(
                json!({"type": "ping", "id": "p"}).to_string(),
            ))
            .await;
        if sent.is_err() {
            break b.closed().await;
        }
        match tokio::time::timeout(
            crate::common::WAIT,
            futures_util::StreamExt::next(&mut b.stream),
        )
        .await
        {
            Ok(Some(Ok(WsMessage::Text(t)))) => {
                if t.contains("rate_limited") {
                    limited += 1;
                }
            }
            Ok(Some(Ok(WsMessage::Close(Some(f))))) => break Closed::Code(f.code.into()),
            other => panic!("unexpected {other:?}"),
        }
        assert!(limited < 1000, "never closed");
    };
    assert_eq!(code, Closed::Code(4008));
}

#[tokio::test]
async fn the_heartbeat_closes_a_peer_that_stops_answering() {
    let t = TestApp::spawn_with(|c| {
        c.ws.heartbeat_interval_ms = 200;
        c.ws.heartbeat_timeout_ms = 1000;
    })
    .await;
    let (_, mut a, _, b, _) = two_in_a_room(&t).await;
    // Bob's client never reads again, so it never answers a ping.
    let _silent = b;
    let off = a.next_of("user_offline").await;
    assert_eq!(off["data"]["user"]["username"], "bob");
    // Alice, who reads (and so answers pings), is still connected.
    a.send_json(json!({"type": "ping", "id": "still-there"}))
        .await;
    assert_eq!(a.next_of("pong").await["id"], "still-there");
}

#[tokio::test]
async fn a_slow_reader_is_closed_and_the_room_keeps_flowing() {
    let t = TestApp::spawn_with(|c| {
        c.limits.outbound_queue = 16;
        c.limits.frames_per_sec = 100_000;
        c.limits.frames_burst = 100_000;
        c.ws.close_grace_ms = 30_000;
        // No heartbeat ping during the test: on a slow disk the sends take
        // longer than one interval, and the pong the slow client sends while
        // it finally reads reaches a socket the server has closed, which
        // resets the connection before the close frame is read.
        c.ws.heartbeat_interval_ms = 3_600_000;
    })
    .await;
    let (alice, _) = t.register("alice").await;
    let (slow_token, _) = t.register("slowpoke").await;
    let (carol, _) = t.register("carol").await;
    let room = id(&t.create_room(&alice, "firehose", "public").await);
    let mut sender = t.ws(&alice).await;
    let mut watcher = t.ws(&carol).await;
    watcher.ok("join_room", json!({ "room": room })).await;

    // The slow client: a tiny receive buffer, and it never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(t.running.as_ref().unwrap().addr)
        .await
        .unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(
        format!("{}?token={slow_token}", t.ws_url),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    use futures_util::StreamExt;
    loop {
        let msg = slow.next().await.unwrap().unwrap();
        if msg.to_text().unwrap_or("").contains("\"authenticated\"") {
            break;
        }
    }
    slow.send(WsMessage::text(
        json!({"type": "join_room", "id": "j", "data": {"room": room}}).to_string(),
    ))
    .await
    .unwrap();
    watcher.next_of("member_joined").await;

    // Watch for the slow user going offline in the background.
    let (tx, mut gone) = tokio::sync::oneshot::channel::<Ws>();
    let watch = tokio::spawn(async move {
        let mut seen = 0u64;
        loop {
            let f = watcher.next().await;
            if f["type"] == "message" {
                seen += 1;
                assert_eq!(f["data"]["message"]["seq"], seen, "in order, none lost");
            }
            if f["type"] == "user_offline" && f["data"]["user"]["username"] == "slowpoke" {
                let _ = tx.send(watcher);
                return seen;
            }
        }
    });
    let text = "y".repeat(3000);
    let mut sent = 0u64;
    let watcher = loop {
        for _ in 0..20 {
            sent += 1;
            sender
                .ok("send_message", json!({"room": room, "text": text}))
                .await;
        }
        sender.buffered.clear();
        if let Ok(w) = gone.try_recv() {
            break w;
        }
        assert!(sent < 20_000, "the slow reader was never closed");
    };
    let seen_before = watch.await.unwrap();
    let mut watcher = watcher;
    // The others keep receiving, in order, with nothing lost.
    sender
        .ok("send_message", json!({"room": room, "text": "after"}))
        .await;
    let mut seq = seen_before;
    loop {
        let f = watcher.next_of("message").await;
        seq += 1;
        assert_eq!(f["data"]["message"]["seq"], seq);
        if f["data"]["message"]["text"] == "after" {
            break;
        }
    }
    assert_eq!(seq, sent + 1);
    // The slow client, reading at last, finds the close: 4009.
    let code = loop {
        match slow.next().await {
            Some(Ok(WsMessage::Close(Some(f)))) => break Some(u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => break None,
        }
    };
    assert_eq!(code, Some(4009));
}

#[tokio::test]
async fn a_client_close_is_answered() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let mut a = t.ws(&alice).await;
    a.stream
        .send(WsMessage::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: 1000.into(),
                reason: "bye".into(),
            },
        )))
        .await
        .unwrap();
    assert_eq!(a.closed().await, Closed::Code(1000));
}

#[tokio::test]
async fn shutdown_tells_clients_1001() {
    let mut t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let mut a = t.ws(&alice).await;
    let stop = tokio::spawn(async move {
        t.stop().await;
        t
    });
    assert_eq!(a.closed().await, Closed::Code(1001));
    stop.await.unwrap();
}

#[tokio::test]
async fn attachments_null_is_read_as_none() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("nulls").await;
    let room = t.create_room(&token, "nulls", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    let (status, body) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            &token,
            json!({"text": "over http", "attachments": null}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut ws = t.ws(&token).await;
    let data = ws
        .ok(
            "send_message",
            json!({"room": room, "text": "over ws", "attachments": null}),
        )
        .await;
    assert_eq!(data["message"]["attachments"], json!([]), "{data}");
}
