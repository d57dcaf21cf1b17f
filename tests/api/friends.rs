//! Friends, blocks and the direct-message policy: requests and their
//! events, presence between friends, what a block hides and refuses.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestApp, Ws};

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|u| {
            // Friends come as {user, online, since}, the rest as plain users.
            let u = if u["user"].is_object() { &u["user"] } else { u };
            u["username"].as_str().expect("username").to_string()
        })
        .collect()
}

/// Waits until every event queued for `ws` before this call has arrived
/// and is buffered. A commit's events are queued before its answer is
/// sent, and a connection writes out its queue before it reads its next
/// frame, so the pong comes after all of them.
async fn settle(ws: &mut Ws) {
    ws.send_json(json!({"type": "ping", "id": "settle"})).await;
    ws.next_where(|v| v["type"] == "pong" && v["id"] == "settle")
        .await;
}

/// Takes every buffered frame of `kind` about `username`.
fn about(ws: &mut Ws, kind: &str, username: &str) -> Vec<Value> {
    let (hit, rest) = ws
        .buffered
        .drain(..)
        .partition(|f| f["type"] == kind && f["data"]["user"]["username"] == username);
    ws.buffered = rest;
    hit.into_iter().collect()
}

async fn friends_of(t: &TestApp, token: &str) -> Value {
    let (status, body) = t.get("/api/friends", token).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn delete(t: &TestApp, path: &str, token: &str) -> (u16, Value) {
    t.call(Method::DELETE, path, Some(token), None).await
}

/// Makes two users friends over HTTP.
async fn befriend(t: &TestApp, a: &str, b: &str, b_name: &str, a_name: &str) {
    let (status, body) = t
        .post("/api/friends/requests", a, json!({ "username": b_name }))
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = t
        .post(
            &format!("/api/friends/requests/{a_name}/accept"),
            b,
            json!({}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
}

#[tokio::test]
async fn request_and_accept_reach_both_sides() {
    let t = TestApp::spawn().await;
    let (alice, alice_user) = t.register("alice").await;
    let (bob, bob_user) = t.register("bob").await;
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;

    assert_eq!(
        a.ok("friend_request", json!({"to": "bob"})).await,
        json!({})
    );
    let req = b.next_of("friend_request").await;
    assert_eq!(req["data"]["user"], alice_user);
    let lists = friends_of(&t, &alice).await;
    assert_eq!(names(&lists["outgoing"]), ["bob"]);
    assert_eq!(lists["incoming"], json!([]));
    assert_eq!(lists["friends"], json!([]));
    assert_eq!(friends_of(&t, &bob).await["incoming"], json!([alice_user]));

    assert_eq!(
        b.ok("friend_accept", json!({"from": "alice"})).await,
        json!({})
    );
    assert_eq!(a.next_of("friend_accepted").await["data"]["user"], bob_user);
    assert_eq!(
        b.next_of("friend_accepted").await["data"]["user"],
        alice_user
    );
    // They share no room; as friends they now see each other online.
    assert_eq!(a.next_of("user_online").await["data"]["user"], bob_user);
    assert_eq!(b.next_of("user_online").await["data"]["user"], alice_user);

    let lists = friends_of(&t, &alice).await;
    assert_eq!(lists["friends"][0]["user"], bob_user);
    assert_eq!(lists["friends"][0]["online"], true);
    assert!(lists["friends"][0]["since"].as_i64().unwrap() > 0);
    assert_eq!(lists["incoming"], json!([]));
    assert_eq!(lists["outgoing"], json!([]));
    assert_eq!(names(&friends_of(&t, &bob).await["friends"]), ["alice"]);

    // A fresh connection is told its friends.
    let again = t.ws(&bob).await;
    assert_eq!(again.hello["data"]["friends"], json!([alice_user]));
    assert_eq!(again.hello["data"]["friend_requests"], json!([]));
}

#[tokio::test]
async fn decline_cancel_and_remove_tell_the_other_side() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;

    // Declined over WebSocket.
    let (status, _) = t
        .post("/api/friends/requests", &alice, json!({"username": "bob"}))
        .await;
    assert_eq!(status, 204);
    b.next_of("friend_request").await;
    b.ok("friend_decline", json!({"from": "alice"})).await;
    let declined = a.next_of("friend_declined").await;
    assert_eq!(declined["data"]["user"]["username"], "bob");
    assert_eq!(friends_of(&t, &alice).await["outgoing"], json!([]));
    assert_eq!(friends_of(&t, &bob).await["incoming"], json!([]));
    let again = b.request("friend_decline", json!({"from": "alice"})).await;
    assert_eq!(again["data"]["code"], "not_found");

    // Withdrawn by its sender.
    a.ok("friend_request", json!({"to": "bob"})).await;
    b.next_of("friend_request").await;
    let (status, _) = delete(&t, "/api/friends/bob", &alice).await;
    assert_eq!(status, 204);
    let cancelled = b.next_of("friend_request_cancelled").await;
    assert_eq!(cancelled["data"]["user"]["username"], "alice");
    assert_eq!(friends_of(&t, &bob).await["incoming"], json!([]));

    // Declined over HTTP.
    a.ok("friend_request", json!({"to": "bob"})).await;
    b.next_of("friend_request").await;
    let (status, _) = delete(&t, "/api/friends/alice", &bob).await;
    assert_eq!(status, 204);
    a.next_of("friend_declined").await;

    // Accepted over HTTP, then removed over WebSocket.
    a.ok("friend_request", json!({"to": "bob"})).await;
    let (status, body) = t
        .post("/api/friends/requests/alice/accept", &bob, json!({}))
        .await;
    assert_eq!(status, 204, "{body}");
    a.next_of("friend_accepted").await;
    a.ok("friend_remove", json!({"username": "bob"})).await;
    let removed = b.next_of("friend_removed").await;
    assert_eq!(removed["data"]["user"]["username"], "alice");
    let removed = a.next_of("friend_removed").await;
    assert_eq!(removed["data"]["user"]["username"], "bob");
    // No room in common: without the friendship they no longer see each
    // other.
    assert_eq!(
        b.next_of("user_offline").await["data"]["user"]["username"],
        "alice"
    );
    assert_eq!(friends_of(&t, &alice).await["friends"], json!([]));
    assert_eq!(friends_of(&t, &bob).await["friends"], json!([]));

    let (status, body) = delete(&t, "/api/friends/bob", &alice).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = t
        .post("/api/friends/requests/bob/accept", &alice, json!({}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn crossing_requests_make_friends() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;
    a.ok("friend_request", json!({"to": "bob"})).await;
    b.next_of("friend_request").await;
    b.ok("friend_request", json!({"to": "alice"})).await;
    let accepted = a.next_of("friend_accepted").await;
    assert_eq!(accepted["data"]["user"]["username"], "bob");
    b.next_of("friend_accepted").await;
    let lists = friends_of(&t, &bob).await;
    assert_eq!(names(&lists["friends"]), ["alice"]);
    assert_eq!(lists["incoming"], json!([]));
    assert_eq!(lists["outgoing"], json!([]));
}

#[tokio::test]
async fn a_pending_request_is_delivered_after_a_restart() {
    let mut t = TestApp::spawn().await;
    let (alice, alice_user) = t.register("alice").await;
    let (bob, bob_user) = t.register("bob").await;
    let (status, _) = t
        .post("/api/friends/requests", &alice, json!({"username": "bob"}))
        .await;
    assert_eq!(status, 204);

    t.restart(|_| {}).await;
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;
    assert_eq!(b.hello["data"]["friend_requests"], json!([alice_user]));
    assert_eq!(b.hello["data"]["friends"], json!([]));
    assert_eq!(names(&friends_of(&t, &alice).await["outgoing"]), ["bob"]);
    b.ok("friend_accept", json!({"from": "alice"})).await;
    assert_eq!(a.next_of("friend_accepted").await["data"]["user"], bob_user);
    drop(a);
    drop(b);

    t.restart(|_| {}).await;
    let a = t.ws(&alice).await;
    assert_eq!(a.hello["data"]["friends"], json!([bob_user]));
    assert_eq!(a.hello["data"]["friend_requests"], json!([]));
}

#[tokio::test]
async fn requests_to_oneself_to_nobody_and_twice() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;

    let own = a.request("friend_request", json!({"to": "Alice"})).await;
    assert_eq!(own["data"]["code"], "bad_request", "{own}");
    let (status, body) = t
        .post(
            "/api/friends/requests",
            &alice,
            json!({"username": "alice"}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad_request"))
    );

    let missing = a.request("friend_request", json!({"to": "nobody"})).await;
    assert_eq!(missing["data"]["code"], "not_found", "{missing}");
    let (status, _) = t
        .post(
            "/api/friends/requests",
            &alice,
            json!({"username": "nobody"}),
        )
        .await;
    assert_eq!(status, 404);
    let bad = a.request("friend_request", json!({"to": "no"})).await;
    assert_eq!(bad["data"]["code"], "bad_request");
    let bad = a
        .request("friend_request", json!({"username": "bob"}))
        .await;
    assert_eq!(bad["data"]["code"], "bad_request");
    let (status, _) = t.post("/api/friends/requests", &alice, json!({})).await;
    assert_eq!(status, 400);

    // Twice: acknowledged both times, delivered once.
    a.ok("friend_request", json!({"to": "bob"})).await;
    a.ok("friend_request", json!({"to": "bob"})).await;
    let (status, _) = t
        .post("/api/friends/requests", &alice, json!({"username": "bob"}))
        .await;
    assert_eq!(status, 204);
    settle(&mut b).await;
    assert_eq!(about(&mut b, "friend_request", "alice").len(), 1);
    assert_eq!(names(&friends_of(&t, &bob).await["incoming"]), ["alice"]);

    // Already friends: a conflict.
    b.ok("friend_accept", json!({"from": "alice"})).await;
    let again = a.request("friend_request", json!({"to": "bob"})).await;
    assert_eq!(again["data"]["code"], "conflict", "{again}");
    let again = b.request("friend_accept", json!({"from": "alice"})).await;
    assert_eq!(again["data"]["code"], "conflict", "{again}");
}

#[tokio::test]
async fn friends_only_policy_refuses_strangers_and_admits_friends() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, bob_user) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;

    let (status, me) = t.get("/api/me", &bob).await;
    assert_eq!(status, 200);
    assert_eq!(me["dm_policy"], "anyone");
    // Carol writes first, while bob takes messages from anyone.
    let (status, body) = t
        .post("/api/dm/bob/messages", &carol, json!({"text": "hi bob"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let dm_room = body["message"]["room"].as_str().unwrap().to_string();

    let (status, body) = t
        .call(
            Method::PATCH,
            "/api/me",
            Some(&bob),
            Some(json!({"dm_policy": "friends"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"user": bob_user, "dm_policy": "friends"}));
    assert_eq!(t.get("/api/me", &bob).await.1["dm_policy"], "friends");
    let (status, _) = t
        .call(
            Method::PATCH,
            "/api/me",
            Some(&bob),
            Some(json!({"dm_policy": "nobody"})),
        )
        .await;
    assert_eq!(status, 400);

    // A stranger is refused, the existing conversation included.
    let (status, body) = t
        .post("/api/dm/bob/messages", &carol, json!({"text": "again"}))
        .await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    let (status, _) = t
        .post(
            &format!("/api/rooms/{dm_room}/messages"),
            &carol,
            json!({"text": "through the room"}),
        )
        .await;
    assert_eq!(status, 403);
    let mut c = t.ws(&carol).await;
    let refused = c
        .request("send_message", json!({"to": "bob", "text": "hello?"}))
        .await;
    assert_eq!(refused["data"]["code"], "forbidden");
    let refused = c
        .request("send_message", json!({"room": dm_room, "text": "hello?"}))
        .await;
    assert_eq!(refused["data"]["code"], "forbidden");
    // The policy is about receiving: bob may still write to carol.
    let (status, _) = t
        .post("/api/dm/carol/messages", &bob, json!({"text": "hi carol"}))
        .await;
    assert_eq!(status, 201);

    // A friend is admitted.
    befriend(&t, &alice, &bob, "bob", "alice").await;
    let (status, body) = t
        .post("/api/dm/bob/messages", &alice, json!({"text": "hi friend"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let mut a = t.ws(&alice).await;
    a.ok("send_message", json!({"to": "bob", "text": "and again"}))
        .await;

    // Back to anyone: carol gets through.
    let (status, _) = t
        .call(
            Method::PATCH,
            "/api/me",
            Some(&bob),
            Some(json!({"dm_policy": "anyone"})),
        )
        .await;
    assert_eq!(status, 200);
    c.ok("send_message", json!({"room": dm_room, "text": "at last"}))
        .await;
}

#[tokio::test]
async fn the_configured_policy_applies_until_a_user_chooses() {
    let t = TestApp::spawn_with(|c| c.server.dm_policy = confab::domain::DmPolicy::Friends).await;
    let (bob, _) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;
    assert_eq!(t.get("/api/me", &bob).await.1["dm_policy"], "friends");
    let (status, _) = t
        .post("/api/dm/bob/messages", &carol, json!({"text": "hi"}))
        .await;
    assert_eq!(status, 403);
    let (status, body) = t
        .call(
            Method::PATCH,
            "/api/me",
            Some(&bob),
            Some(json!({"dm_policy": "anyone"})),
        )
        .await;
    assert_eq!((status, &body["dm_policy"]), (200, &json!("anyone")));
    let (status, _) = t
        .post("/api/dm/bob/messages", &carol, json!({"text": "hi"}))
        .await;
    assert_eq!(status, 201);
}

/// alice and bob in a public room, with a third member, carol, to
/// witness presence that bob must not see.
async fn three_in_a_room(t: &TestApp) -> (String, String, String, String) {
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;
    let room = t.create_room(&carol, "general", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    for token in [&alice, &bob] {
        let (status, _) = t
            .post(
                &format!("/api/rooms/{room}/messages"),
                token,
                json!({"text": "hi"}),
            )
            .await;
        assert_eq!(status, 201);
    }
    (alice, bob, carol, room)
}

/// `three_in_a_room`, then alice blocks bob.
async fn alice_blocks_bob_in_a_room(t: &TestApp) -> (String, String, String, String) {
    let (alice, bob, carol, room) = three_in_a_room(t).await;
    let (status, body) = t
        .post("/api/blocks", &alice, json!({"username": "bob"}))
        .await;
    assert_eq!(status, 204, "{body}");
    (alice, bob, carol, room)
}

/// A block hides what the blocked user does in a shared room (typing,
/// read receipts) from the blocker, as it hides their presence.
#[tokio::test]
async fn a_blocker_gets_no_typing_or_read_events_from_the_blocked_user() {
    let t = TestApp::spawn().await;
    let (alice, bob, carol, room) = alice_blocks_bob_in_a_room(&t).await;
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;
    let mut c = t.ws(&carol).await;

    b.ok("typing_start", json!({ "room": room })).await;
    b.ok("mark_read", json!({"room": room, "seq": 2})).await;
    b.ok("typing_stop", json!({ "room": room })).await;
    for kind in ["typing", "read"] {
        c.next_where(|f| f["type"] == kind && f["data"]["user"]["username"] == "bob")
            .await;
    }
    // Alice's own typing still reaches bob: the block is hers.
    a.ok("typing_start", json!({ "room": room })).await;
    b.next_where(|f| f["type"] == "typing" && f["data"]["user"]["username"] == "alice")
        .await;
    settle(&mut a).await;
    for kind in ["typing", "read"] {
        assert!(about(&mut a, kind, "bob").is_empty(), "{:?}", a.buffered);
    }
}

#[tokio::test]
async fn a_blocker_is_hidden_from_the_blocked_users_presence() {
    let t = TestApp::spawn().await;
    let (alice, bob, carol, room) = alice_blocks_bob_in_a_room(&t).await;

    let mut b = t.ws(&bob).await;
    let mut c = t.ws(&carol).await;
    let a = t.ws(&alice).await;
    // carol hears alice come online; bob does not.
    c.next_where(|f| f["type"] == "user_online" && f["data"]["user"]["username"] == "alice")
        .await;
    settle(&mut b).await;
    assert!(
        about(&mut b, "user_online", "alice").is_empty(),
        "{:?}",
        b.buffered
    );

    // Nor is alice in what bob is told of who is online.
    let b2 = t.ws(&bob).await;
    assert!(!names(&b2.hello["data"]["online_users"]).contains(&"alice".to_string()));
    let (_, online) = t.get("/api/users/online", &bob).await;
    assert_eq!(names(&online["users"]), ["bob", "carol"]);
    let presence = b.ok("presence", json!({ "room": room })).await;
    assert_eq!(names(&presence["users"]), ["bob", "carol"]);
    // The blocker still sees the blocked user.
    assert!(names(&a.hello["data"]["online_users"]).contains(&"bob".to_string()));
    let (_, online) = t.get("/api/users/online", &alice).await;
    assert_eq!(names(&online["users"]), ["alice", "bob", "carol"]);

    // alice leaves: carol hears it, bob does not.
    drop(a);
    c.next_where(|f| f["type"] == "user_offline" && f["data"]["user"]["username"] == "alice")
        .await;
    settle(&mut b).await;
    assert!(
        about(&mut b, "user_offline", "alice").is_empty(),
        "{:?}",
        b.buffered
    );
}

#[tokio::test]
async fn blocking_and_unblocking_while_online_hide_and_show_at_once() {
    let t = TestApp::spawn().await;
    let (alice, bob, _, _) = three_in_a_room(&t).await;
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;
    b.ok("block_user", json!({"username": "alice"})).await;
    // alice is told bob went away, as if he had; bob still sees alice.
    let off = a.next_of("user_offline").await;
    assert_eq!(off["data"]["user"]["username"], "bob");
    settle(&mut b).await;
    assert!(about(&mut b, "user_offline", "alice").is_empty());
    let (_, blocks) = t.get("/api/blocks", &bob).await;
    assert_eq!(names(&blocks["users"]), ["alice"]);

    b.ok("unblock_user", json!({"username": "alice"})).await;
    let on = a.next_of("user_online").await;
    assert_eq!(on["data"]["user"]["username"], "bob");
    assert_eq!(t.get("/api/blocks", &bob).await.1, json!({"users": []}));
    let again = b
        .request("unblock_user", json!({"username": "alice"}))
        .await;
    assert_eq!(again["data"]["code"], "not_found");
    let own = b.request("block_user", json!({"username": "bob"})).await;
    assert_eq!(own["data"]["code"], "bad_request");
    let missing = b.request("block_user", json!({"username": "nobody"})).await;
    assert_eq!(missing["data"]["code"], "not_found");
}

#[tokio::test]
async fn a_blocked_user_cannot_send_direct_messages_or_requests() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let (status, body) = t
        .post("/api/dm/alice/messages", &bob, json!({"text": "hi alice"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let dm_room = body["message"]["room"].as_str().unwrap().to_string();
    let mut a = t.ws(&alice).await;
    a.ok("block_user", json!({"username": "bob"})).await;

    // Direct messages: refused every way, in words that do not say why.
    let (status, body) = t
        .post("/api/dm/alice/messages", &bob, json!({"text": "hello?"}))
        .await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    let words = body["error"]["message"].as_str().unwrap();
    assert!(!words.contains("block"), "{words}");
    let (status, _) = t
        .post(
            &format!("/api/rooms/{dm_room}/messages"),
            &bob,
            json!({"text": "hello?"}),
        )
        .await;
    assert_eq!(status, 403);
    let mut b = t.ws(&bob).await;
    let refused = b
        .request("send_message", json!({"to": "alice", "text": "hello?"}))
        .await;
    assert_eq!(refused["data"]["code"], "forbidden");
    // The blocker cannot write to the blocked user either, until unblocking.
    let (status, _) = t
        .post("/api/dm/bob/messages", &alice, json!({"text": "go away"}))
        .await;
    assert_eq!(status, 403);

    // A request is acknowledged and goes nowhere.
    assert_eq!(
        b.ok("friend_request", json!({"to": "alice"})).await,
        json!({})
    );
    settle(&mut a).await;
    assert!(about(&mut a, "friend_request", "bob").is_empty());
    assert_eq!(friends_of(&t, &alice).await["incoming"], json!([]));
    assert_eq!(names(&friends_of(&t, &bob).await["outgoing"]), ["alice"]);
    let refused = a.request("friend_request", json!({"to": "bob"})).await;
    assert_eq!(refused["data"]["code"], "conflict");

    // Blocking again is no error.
    let (status, _) = t
        .post("/api/blocks", &alice, json!({"username": "bob"}))
        .await;
    assert_eq!(status, 204);
    let (status, _) = delete(&t, "/api/blocks/bob", &alice).await;
    assert_eq!(status, 204);
    let (status, _) = delete(&t, "/api/blocks/bob", &alice).await;
    assert_eq!(status, 404);
    // The request that waited behind the block ends as a decline.
    let declined = b.next_of("friend_declined").await;
    assert_eq!(declined["data"]["user"]["username"], "alice");
    assert_eq!(friends_of(&t, &bob).await["outgoing"], json!([]));

    // Unblocked: asking again delivers, and messages get through.
    b.ok("friend_request", json!({"to": "alice"})).await;
    let req = a.next_of("friend_request").await;
    assert_eq!(req["data"]["user"]["username"], "bob");
    b.ok("send_message", json!({"room": dm_room, "text": "friends?"}))
        .await;
}

#[tokio::test]
async fn blocking_ends_friendships_and_requests() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;
    let (dave, _) = t.register("dave").await;
    befriend(&t, &alice, &bob, "bob", "alice").await;
    let (status, _) = t
        .post(
            "/api/friends/requests",
            &carol,
            json!({"username": "alice"}),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = t
        .post("/api/friends/requests", &alice, json!({"username": "dave"}))
        .await;
    assert_eq!(status, 204);
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;
    let mut c = t.ws(&carol).await;
    let mut d = t.ws(&dave).await;

    // The friendship ends as if alice had removed bob.
    a.ok("block_user", json!({"username": "bob"})).await;
    let removed = b.next_of("friend_removed").await;
    assert_eq!(removed["data"]["user"]["username"], "alice");
    assert_eq!(friends_of(&t, &alice).await["friends"], json!([]));
    assert_eq!(friends_of(&t, &bob).await["friends"], json!([]));

    // carol's request leaves alice's sight; carol is not told.
    a.ok("block_user", json!({"username": "carol"})).await;
    let gone = a.next_of("friend_request_cancelled").await;
    assert_eq!(gone["data"]["user"]["username"], "carol");
    assert_eq!(friends_of(&t, &alice).await["incoming"], json!([]));
    settle(&mut c).await;
    assert!(c.buffered.iter().all(|f| f["type"] != "friend_declined"));
    assert_eq!(names(&friends_of(&t, &carol).await["outgoing"]), ["alice"]);

    // alice's own request to dave is withdrawn.
    a.ok("block_user", json!({"username": "dave"})).await;
    let gone = d.next_of("friend_request_cancelled").await;
    assert_eq!(gone["data"]["user"]["username"], "alice");
    assert_eq!(friends_of(&t, &dave).await["incoming"], json!([]));
    assert_eq!(friends_of(&t, &alice).await["outgoing"], json!([]));

    let (_, blocks) = t.get("/api/blocks", &alice).await;
    assert_eq!(names(&blocks["users"]), ["bob", "carol", "dave"]);
}

#[tokio::test]
async fn friends_see_each_others_presence_without_a_shared_room() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;
    befriend(&t, &alice, &bob, "bob", "alice").await;

    let mut a = t.ws(&alice).await;
    let b = t.ws(&bob).await;
    let on = a.next_of("user_online").await;
    assert_eq!(on["data"]["user"]["username"], "bob");
    assert!(names(&b.hello["data"]["online_users"]).contains(&"alice".to_string()));
    assert_eq!(names(&friends_of(&t, &alice).await["friends"]), ["bob"]);
    assert_eq!(friends_of(&t, &alice).await["friends"][0]["online"], true);

    // A stranger with no room in common is not announced.
    let _c = t.ws(&carol).await;
    settle(&mut a).await;
    assert!(about(&mut a, "user_online", "carol").is_empty());

    drop(b);
    let off = a.next_of("user_offline").await;
    assert_eq!(off["data"]["user"]["username"], "bob");
    assert_eq!(friends_of(&t, &alice).await["friends"][0]["online"], false);
}

#[tokio::test]
async fn deleting_an_account_ends_its_friendships_and_requests() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;
    let (dave, _) = t.register("dave").await;
    befriend(&t, &alice, &bob, "bob", "alice").await;
    t.post(
        "/api/friends/requests",
        &carol,
        json!({"username": "alice"}),
    )
    .await;
    t.post("/api/friends/requests", &alice, json!({"username": "dave"}))
        .await;
    t.post("/api/blocks", &alice, json!({"username": "carol"}))
        .await;
    let mut b = t.ws(&bob).await;
    let mut d = t.ws(&dave).await;

    t.sync().await;
    t.app().delete_user("alice").await.expect("deleted");
    assert_eq!(
        b.next_of("friend_removed").await["data"]["user"]["username"],
        "alice"
    );
    assert_eq!(
        d.next_of("friend_request_cancelled").await["data"]["user"]["username"],
        "alice"
    );
    for token in [&bob, &carol, &dave] {
        let lists = friends_of(&t, token).await;
        assert_eq!(
            lists,
            json!({"friends": [], "incoming": [], "outgoing": []}),
            "{token}"
        );
    }
    // A new account of the same name starts with nothing.
    let (alice2, _) = t.register("alice").await;
    assert_eq!(
        friends_of(&t, &alice2).await,
        json!({"friends": [], "incoming": [], "outgoing": []})
    );
    assert_eq!(t.get("/api/blocks", &alice2).await.1, json!({"users": []}));
}
