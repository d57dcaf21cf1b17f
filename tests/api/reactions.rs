//! Reactions and pins: what counts as an emoji, how reactions add up for
//! each reader, who may react and pin, the limits, the events, and what a
//! deletion takes with it.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

fn enc(emoji: &str) -> String {
    emoji
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect::<String>()
}

async fn react(t: &TestApp, token: &str, msg: &str, emoji: &str) -> (u16, Value) {
    let path = format!("/api/messages/{msg}/reactions/{}", enc(emoji));
    t.call(Method::PUT, &path, Some(token), None).await
}

async fn unreact(t: &TestApp, token: &str, msg: &str, emoji: &str) -> (u16, Value) {
    let path = format!("/api/messages/{msg}/reactions/{}", enc(emoji));
    t.call(Method::DELETE, &path, Some(token), None).await
}

async fn pin(t: &TestApp, token: &str, msg: &str, on: bool) -> (u16, Value) {
    let m = if on { Method::POST } else { Method::DELETE };
    t.call(m, &format!("/api/messages/{msg}/pin"), Some(token), None)
        .await
}

/// A public room made by `owner`, with `members` joined.
async fn room_with(t: &TestApp, owner: &str, name: &str, members: &[&str]) -> String {
    let room = t.create_room(owner, name, "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    for m in members {
        let token = t.login(m).await;
        let (status, body) = t
            .post(
                &format!("/api/rooms/{room}/members"),
                &token,
                json!({ "username": m }),
            )
            .await;
        assert_eq!(status, 204, "{m} joins: {body}");
    }
    room
}

/// The message `id` in `room` as `token`'s user reads it.
async fn read_message(t: &TestApp, token: &str, room: &str, id: &str) -> Value {
    t.history_all(token, room)
        .await
        .into_iter()
        .find(|m| m["id"] == id)
        .expect("the message is in the history")
}

#[tokio::test]
async fn a_reaction_is_exactly_one_emoji() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let room = room_with(&t, &alice, "lobby", &[]).await;
    let msg = send_message(&t, &alice, &room, "hello").await;
    let id = msg["id"].as_str().unwrap();
    for bad in ["a", "ok", "7", "#", "👍👍", "👍 ", "🙂x", "🇫", "é"] {
        let (status, body) = react(&t, &alice, id, bad).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
    // The same over the socket, with the body form too.
    let mut ws = t.ws(&alice).await;
    let answer = ws
        .request("react", json!({"message_id": id, "emoji": "two words"}))
        .await;
    assert_eq!(answer["data"]["code"], "bad_request", "{answer}");
    let (status, _) = t
        .post(
            &format!("/api/messages/{id}/reactions"),
            &alice,
            json!({"emoji": "🙂🙂"}),
        )
        .await;
    assert_eq!(status, 400);
    // Skin tones, ZWJ sequences, flags and keycaps are single emoji.
    for good in ["👍🏽", "👩‍💻", "🇫🇷", "1️⃣", "🏳️‍🌈"] {
        let (status, body) = react(&t, &alice, id, good).await;
        assert_eq!(status, 204, "{good:?}: {body}");
    }
    ws.ok("react", json!({"message_id": id, "emoji": "🎉"}))
        .await;
    // An unqualified heart is the same reaction as the qualified one.
    assert_eq!(react(&t, &alice, id, "\u{2764}").await.0, 204);
    assert_eq!(react(&t, &alice, id, "\u{2764}\u{fe0f}").await.0, 204);
    let m = read_message(&t, &alice, &room, id).await;
    let emojis: Vec<&str> = m["reactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["emoji"].as_str().unwrap())
        .collect();
    assert_eq!(
        emojis,
        ["👍🏽", "👩‍💻", "🇫🇷", "1️⃣", "🏳️‍🌈", "🎉", "\u{2764}\u{fe0f}"]
    );
}

#[tokio::test]
async fn reactions_add_up_per_emoji_with_me_for_each_reader() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;
    let (dave, _) = t.register("dave").await;
    let (erin, _) = t.register("erin").await;
    let room = room_with(&t, &alice, "lobby", &["bob", "carol", "dave", "erin"]).await;
    let msg = send_message(&t, &alice, &room, "vote").await;
    let id = msg["id"].as_str().unwrap();
    assert_eq!(msg["reactions"], json!([]));
    assert_eq!(msg["pinned"], false);
    for (token, emoji) in [
        (&bob, "👍"),
        (&carol, "🎉"),
        (&dave, "👍"),
        (&erin, "👍"),
        (&alice, "👍"),
        // Reacting again changes nothing.
        (&bob, "👍"),
    ] {
        let (status, body) = react(&t, token, id, emoji).await;
        assert_eq!(status, 204, "{body}");
    }
    let seen_by_bob = read_message(&t, &bob, &room, id).await;
    assert_eq!(
        seen_by_bob["reactions"],
        json!([
            {"emoji": "👍", "count": 4, "me": true, "users": ["bob", "dave", "erin"]},
            {"emoji": "🎉", "count": 1, "me": false, "users": ["carol"]},
        ])
    );
    let seen_by_carol = read_message(&t, &carol, &room, id).await;
    assert_eq!(seen_by_carol["reactions"][0]["me"], false);
    assert_eq!(seen_by_carol["reactions"][1]["me"], true);
    // Taking one back; taking back one that is not there is no error.
    assert_eq!(unreact(&t, &bob, id, "👍").await.0, 204);
    assert_eq!(unreact(&t, &bob, id, "👍").await.0, 204);
    assert_eq!(unreact(&t, &carol, id, "🎉").await.0, 204);
    let seen_by_bob = read_message(&t, &bob, &room, id).await;
    assert_eq!(
        seen_by_bob["reactions"],
        json!([{"emoji": "👍", "count": 3, "me": false, "users": ["dave", "erin", "alice"]}])
    );
    // The socket's history computes `me` for its own user too.
    let mut ws = t.ws(&dave).await;
    let page = ws.ok("history", json!({"room": room})).await;
    let m = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap()
        .clone();
    assert_eq!(m["reactions"][0]["me"], true);
}

#[tokio::test]
async fn a_message_takes_at_most_twenty_different_emoji() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let room = room_with(&t, &alice, "lobby", &["bob"]).await;
    let msg = send_message(&t, &alice, &room, "react to me").await;
    let id = msg["id"].as_str().unwrap();
    let twenty = [
        "😀", "😃", "😄", "😁", "😆", "😅", "🤣", "😂", "🙂", "🙃", "😉", "😊", "😇", "🥰", "😍",
        "🤩", "😘", "😗", "😚", "😙",
    ];
    for e in twenty {
        assert_eq!(react(&t, &alice, id, e).await.0, 204, "{e}");
    }
    let (status, body) = react(&t, &bob, id, "🐢").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "limit_reached", "{body}");
    let mut ws = t.ws(&bob).await;
    let answer = ws
        .request("react", json!({"message_id": id, "emoji": "🐢"}))
        .await;
    assert_eq!(answer["data"]["code"], "limit_reached", "{answer}");
    // One of the twenty still takes more people.
    ws.ok("react", json!({"message_id": id, "emoji": "😀"}))
        .await;
    // Making room lets a new one in.
    assert_eq!(unreact(&t, &alice, id, "😙").await.0, 204);
    assert_eq!(react(&t, &bob, id, "🐢").await.0, 204);
}

#[tokio::test]
async fn reaction_events_reach_the_room_but_not_those_who_block_the_reactor() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, bob_user) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;
    let room = room_with(&t, &alice, "lobby", &["bob", "carol"]).await;
    let (status, _) = t
        .post("/api/blocks", &carol, json!({"username": "bob"}))
        .await;
    assert_eq!(status, 204);
    let msg = send_message(&t, &alice, &room, "news").await;
    let id = msg["id"].as_str().unwrap();
    let mut alice_ws = t.ws(&alice).await;
    let mut carol_ws = t.ws(&carol).await;
    let mut bob_ws = t.ws(&bob).await;
    bob_ws
        .ok("react", json!({"message_id": id, "emoji": "👀"}))
        .await;
    let ev = alice_ws.next_of("reaction_added").await;
    assert_eq!(ev["data"]["room"], room.as_str());
    assert_eq!(ev["data"]["message_id"], id);
    assert_eq!(ev["data"]["emoji"], "👀");
    assert_eq!(ev["data"]["user"]["id"], bob_user["id"]);
    assert_eq!(ev["data"]["count"], 1);
    // The reactor's own other connections hear it too.
    let own = bob_ws.next_of("reaction_added").await;
    assert_eq!(own["data"]["emoji"], "👀");
    bob_ws
        .ok("unreact", json!({"message_id": id, "emoji": "👀"}))
        .await;
    let ev = alice_ws.next_of("reaction_removed").await;
    assert_eq!(ev["data"]["emoji"], "👀");
    assert_eq!(ev["data"]["count"], 0);
    assert_eq!(ev["data"]["user"]["username"], "bob");
    // Carol, who blocks bob, heard neither: the first reaction event she
    // gets is alice's, which came after.
    alice_ws
        .ok("react", json!({"message_id": id, "emoji": "✅"}))
        .await;
    let ev = carol_ws
        .next_where(|v| {
            v["type"]
                .as_str()
                .is_some_and(|k| k.starts_with("reaction_"))
        })
        .await;
    assert_eq!(ev["type"], "reaction_added");
    assert_eq!(ev["data"]["user"]["username"], "alice", "{ev}");
    // A reaction is not a message: nobody's unread count moved.
    let (_, unread) = t.get("/api/me/unread", &carol).await;
    let lobby = unread["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == room.as_str())
        .cloned()
        .expect("the room is listed");
    assert_eq!(lobby["unread"], 1, "{unread}");
}

#[tokio::test]
async fn outsiders_muted_and_blocked_users_cannot_react() {
    let t = TestApp::spawn().await;
    let (moderator, member, town) = moderated_room(&t).await;
    let (outsider, _) = t.register("outsider").await;
    let secret = t.create_room(&moderator, "secret", "private").await;
    let secret = secret["id"].as_str().unwrap().to_string();
    let hidden = send_message(&t, &moderator, &secret, "inside only").await;
    let hidden = hidden["id"].as_str().unwrap();
    let (status, _) = react(&t, &outsider, hidden, "👍").await;
    assert_eq!(status, 403);
    let (status, _) = unreact(&t, &outsider, hidden, "👍").await;
    assert_eq!(status, 403);
    let (status, _) = t.get(&format!("/api/rooms/{secret}/pins"), &outsider).await;
    assert_eq!(status, 403);
    let (status, _) = pin(&t, &outsider, hidden, true).await;
    assert_eq!(status, 404, "a room one cannot see hides its messages");
    // An unknown message is not found.
    let (status, _) = react(&t, &member, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "👍").await;
    assert_eq!(status, 404);

    let msg = send_message(&t, &moderator, &town, "behave").await;
    let id = msg["id"].as_str().unwrap();
    assert_eq!(react(&t, &member, id, "👍").await.0, 204);
    let (status, _) = t
        .post(
            "/api/moderation/mute",
            &moderator,
            json!({"username": "troll", "room": "town"}),
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = react(&t, &member, id, "👎").await;
    assert_eq!(status, 403, "{body}");
    // Taking one's own reaction back is still allowed.
    assert_eq!(unreact(&t, &member, id, "👍").await.0, 204);

    // Someone who blocks you does not get your reactions on their messages.
    let (bob, _) = t.register("bob").await;
    let (status, _) = t
        .post("/api/blocks", &moderator, json!({"username": "bob"}))
        .await;
    assert_eq!(status, 204);
    let (status, _) = t
        .post(
            &format!("/api/rooms/{town}/members"),
            &bob,
            json!({"username": "bob"}),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = react(&t, &bob, id, "👍").await;
    assert_eq!(status, 403);
    assert!(
        read_message(&t, &moderator, &town, id).await["reactions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_creator_and_staff_pin_and_everyone_reads_the_pins() {
    let t = TestApp::spawn().await;
    let (owner, _) = t.register("owner").await;
    let (member, _) = t.register("member").await;
    t.register("mod").await;
    let moderator = t.set_role("mod", confab::domain::Role::Moderator).await;
    let room = room_with(&t, &owner, "club", &["member"]).await;
    let first = send_message(&t, &member, &room, "first").await;
    let first = first["id"].as_str().unwrap().to_string();
    let second = send_message(&t, &member, &room, "second").await;
    let second = second["id"].as_str().unwrap().to_string();
    let mut member_ws = t.ws(&member).await;

    let (status, body) = pin(&t, &member, &first, true).await;
    assert_eq!(status, 403, "{body}");
    let answer = member_ws.request("pin", json!({"message_id": first})).await;
    assert_eq!(answer["data"]["code"], "forbidden");

    assert_eq!(pin(&t, &owner, &first, true).await.0, 204);
    let ev = member_ws.next_of("message_pinned").await;
    assert_eq!(ev["data"]["room"], room.as_str());
    assert_eq!(ev["data"]["message_id"], first.as_str());
    assert_eq!(ev["data"]["by"]["username"], "owner");
    assert_eq!(ev["data"]["message"]["text"], "first");
    assert_eq!(ev["data"]["message"]["pinned"], true);
    // Pinning again changes nothing.
    assert_eq!(pin(&t, &owner, &first, true).await.0, 204);

    // Staff pin in a room that is not theirs, and it is audited.
    let mut mod_ws = t.ws(&moderator).await;
    mod_ws.ok("pin", json!({"message_id": second})).await;
    let (_, audit) = t.get("/api/moderation/audit", &moderator).await;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "pin_message")
        .cloned()
        .expect("the pin is audited");
    assert_eq!(entry["actor"], "mod");
    assert_eq!(entry["details"]["message_id"], second.as_str());

    // Newest pin first, for any reader of the room.
    let (status, body) = t.get(&format!("/api/rooms/{room}/pins"), &member).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    assert_eq!(body["pins"][0]["by"]["username"], "mod");
    assert!(body["messages"][0]["pinned"].as_bool().unwrap());
    let page = member_ws.ok("pins", json!({"room": room})).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
    assert_eq!(
        read_message(&t, &member, &room, &first).await["pinned"],
        true
    );

    // Unpinning.
    let (status, _) = pin(&t, &member, &first, false).await;
    assert_eq!(status, 403);
    member_ws.buffered.clear();
    assert_eq!(pin(&t, &owner, &first, false).await.0, 204);
    let ev = member_ws.next_of("message_unpinned").await;
    assert_eq!(ev["data"]["message_id"], first.as_str());
    assert_eq!(ev["data"]["by"]["username"], "owner");
    assert_eq!(
        read_message(&t, &member, &room, &first).await["pinned"],
        false
    );
    let (_, body) = t.get(&format!("/api/rooms/{room}/pins"), &member).await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_room_holds_at_most_fifty_pins() {
    let t = TestApp::spawn().await;
    let (owner, _) = t.register("owner").await;
    let room = room_with(&t, &owner, "archive", &[]).await;
    let mut ws = t.ws(&owner).await;
    let mut ids = Vec::new();
    for i in 0..51 {
        let sent = ws
            .ok(
                "send_message",
                json!({"room": room, "text": format!("note {i}")}),
            )
            .await;
        ids.push(sent["message"]["id"].as_str().unwrap().to_string());
    }
    for id in &ids[..50] {
        ws.ok("pin", json!({"message_id": id})).await;
    }
    let (status, body) = pin(&t, &owner, &ids[50], true).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "limit_reached");
    ws.ok("unpin", json!({"message_id": ids[0]})).await;
    assert_eq!(pin(&t, &owner, &ids[50], true).await.0, 204);
}

#[tokio::test]
async fn deleting_a_message_takes_its_reactions_and_pin() {
    let t = TestApp::spawn().await;
    let (owner, _) = t.register("owner").await;
    let (member, _) = t.register("member").await;
    let room = room_with(&t, &owner, "club", &["member"]).await;
    let msg = send_message(&t, &member, &room, "soon gone").await;
    let id = msg["id"].as_str().unwrap();
    assert_eq!(react(&t, &owner, id, "🔥").await.0, 204);
    assert_eq!(pin(&t, &owner, id, true).await.0, 204);

    // An edit keeps them, and its event carries them.
    let mut owner_ws = t.ws(&owner).await;
    let mut member_ws = t.ws(&member).await;
    let edited = member_ws
        .ok("edit_message", json!({"message_id": id, "text": "edited"}))
        .await;
    assert_eq!(edited["message"]["reactions"][0]["emoji"], "🔥");
    let ev = owner_ws.next_of("message_updated").await;
    assert_eq!(ev["data"]["message"]["reactions"][0]["count"], 1);
    assert_eq!(ev["data"]["message"]["pinned"], true);

    member_ws
        .ok("delete_message", json!({"message_id": id}))
        .await;
    let ev = owner_ws.next_of("message_unpinned").await;
    assert_eq!(ev["data"]["message_id"], id);
    assert_eq!(ev["data"]["by"], Value::Null);
    let m = read_message(&t, &owner, &room, id).await;
    assert_eq!(m["deleted"], true);
    assert_eq!(m["reactions"], json!([]));
    assert_eq!(m["pinned"], false);
    let (_, body) = t.get(&format!("/api/rooms/{room}/pins"), &owner).await;
    assert_eq!(body["messages"], json!([]));
    let (status, _) = react(&t, &owner, id, "🔥").await;
    assert_eq!(status, 404);
    let (status, _) = pin(&t, &owner, id, true).await;
    assert_eq!(status, 404);
}
