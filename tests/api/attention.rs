//! Mentions and unread state: who a message mentions (and who it must
//! not), the counts per user and room over HTTP and in `authenticated`,
//! the `unread` frames that keep every device of a user in step, and a
//! property: whatever happens, the counts equal a recount from history.

use std::collections::HashMap;

use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestApp, Ws, send_message};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_str().expect("an id").to_string())
        .collect()
}

async fn join(t: &TestApp, token: &str, room: &str) {
    let mut ws = t.ws(token).await;
    ws.ok("join_room", json!({ "room": room })).await;
}

/// The caller's entry for `room` in `GET /api/me/unread`.
async fn unread(t: &TestApp, token: &str, room: &str) -> Value {
    let (status, body) = t.get("/api/me/unread", token).await;
    assert_eq!(status, 200, "{body}");
    body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|r| r["room"] == room)
        .cloned()
        .unwrap_or_else(|| panic!("no entry for {room} in {body}"))
}

/// (unread, mentions) of an entry.
fn counts(v: &Value) -> (u64, u64) {
    (
        v["unread"].as_u64().expect("unread"),
        v["mentions"].as_u64().expect("mentions"),
    )
}

/// Waits until every event queued for `ws` so far has arrived (see
/// friends.rs): the pong comes after them.
async fn settle(t: &TestApp, ws: &mut Ws) {
    t.sync().await;
    ws.send_json(json!({"type": "ping", "id": "settle"})).await;
    ws.next_where(|v| v["type"] == "pong" && v["id"] == "settle")
        .await;
}

/// alice owns a public room that bob and carol joined; dave has an
/// account and is in no room.
async fn room_of_three(t: &TestApp) -> ([(String, String); 4], String) {
    let mut users: Vec<(String, String)> = Vec::new();
    for name in ["alice", "bob", "carol", "dave"] {
        let (token, user) = t.register(name).await;
        users.push((token, id(&user)));
    }
    let room = id(&t.create_room(&users[0].0, "general", "public").await);
    join(t, &users[1].0, &room).await;
    join(t, &users[2].0, &room).await;
    let users: [(String, String); 4] = users.try_into().expect("four");
    (users, room)
}

#[tokio::test]
async fn a_mention_names_members_only_and_leaks_nobody_else() {
    let t = TestApp::spawn().await;
    let ([(alice, _), (bob, bob_id), (carol, carol_id), (_, dave_id)], room) =
        room_of_three(&t).await;
    let mut b = t.ws(&bob).await;
    // carol blocks alice: a mention of her names nobody.
    let (status, _) = t
        .post("/api/blocks", &carol, json!({"username": "alice"}))
        .await;
    assert_eq!(status, 204);
    let msg = send_message(
        &t,
        &alice,
        &room,
        "@Bob, @carol and @dave: see mail@bob.example and @nobody_here",
    )
    .await;
    assert_eq!(ids(&msg["mentions"]), vec![bob_id.clone()]);
    // The live message says the same, and nobody else's id is anywhere.
    let live = b.next_of("message").await;
    assert_eq!(ids(&live["data"]["message"]["mentions"]), vec![bob_id]);
    for text in [msg.to_string(), live.to_string()] {
        assert!(!text.contains(&carol_id), "{text}");
        assert!(!text.contains(&dave_id), "{text}");
    }
    // History carries them too; a plain message has an empty list.
    let plain = send_message(&t, &alice, &room, "no one in particular").await;
    assert_eq!(plain["mentions"], json!([]));
    let all = t.history_all(&bob, &room).await;
    assert_eq!(all[0]["mentions"], msg["mentions"]);
    assert_eq!(all[1]["mentions"], json!([]));
    // Only bob counts a mention.
    assert_eq!(counts(&unread(&t, &bob, &room).await), (2, 1));
    assert_eq!(counts(&unread(&t, &carol, &room).await), (2, 0));
    // A mention of oneself is no mention.
    let own = send_message(&t, &alice, &room, "note to @alice").await;
    assert_eq!(own["mentions"], json!([]));
}

#[tokio::test]
async fn a_dm_mentions_its_other_party() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, bob_user) = t.register("bob").await;
    let (_, carol_user) = t.register("carol").await;
    let (status, body) = t
        .post(
            "/api/dm/bob/messages",
            &alice,
            json!({"text": "@bob @carol look"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let m = &body["message"];
    assert_eq!(ids(&m["mentions"]), vec![id(&bob_user)]);
    assert!(!m.to_string().contains(&id(&carol_user)));
    let room = m["room"].as_str().unwrap();
    assert_eq!(counts(&unread(&t, &bob, room).await), (1, 1));
}

#[tokio::test]
async fn at_room_is_for_the_creator_and_staff() {
    let t = TestApp::spawn().await;
    let ([(alice, alice_id), (bob, bob_id), (_, carol_id), _], room) = room_of_three(&t).await;
    // bob neither created the room nor is staff: plain text.
    let m = send_message(&t, &bob, &room, "@room hello").await;
    assert_eq!(m["mentions"], json!([]));
    // The creator mentions every member but herself.
    let m = send_message(&t, &alice, &room, "@room hello").await;
    let mut got = ids(&m["mentions"]);
    got.sort();
    let mut want = vec![bob_id.clone(), carol_id.clone()];
    want.sort();
    assert_eq!(got, want);
    // A moderator may too.
    let carol = t.set_role("carol", confab::domain::Role::Moderator).await;
    let m = send_message(&t, &carol, &room, "@ROOM.").await;
    let mut got = ids(&m["mentions"]);
    got.sort();
    let mut want = vec![alice_id, bob_id];
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn at_here_is_the_members_online() {
    let t = TestApp::spawn().await;
    let ([(alice, _), (bob, bob_id), _, _], room) = room_of_three(&t).await;
    // bob is online, carol is not.
    let _b = t.ws(&bob).await;
    let m = send_message(&t, &alice, &room, "@here quick question").await;
    assert_eq!(ids(&m["mentions"]), vec![bob_id]);
}

#[tokio::test]
async fn unread_counts_markers_and_every_device() {
    let t = TestApp::spawn().await;
    let ([(alice, _), (bob, _), _, (dave, _)], room) = room_of_three(&t).await;
    // Joining starts a member at the room's end.
    let (status, body) = t.get(&format!("/api/rooms/{room}/read"), &bob).await;
    assert_eq!((status, &body), (200, &json!({"seq": 0})));
    assert_eq!(counts(&unread(&t, &bob, &room).await), (0, 0));
    // Two devices of bob's, on two nodes in a cluster.
    let mut b1 = t.ws(&bob).await;
    let mut b2 = t.ws(&bob).await;
    send_message(&t, &alice, &room, "one").await;
    send_message(&t, &alice, &room, "two @bob").await;
    send_message(&t, &bob, &room, "mine").await;
    send_message(&t, &alice, &room, "three").await;
    let entry = unread(&t, &bob, &room).await;
    assert_eq!(counts(&entry), (3, 1));
    assert_eq!(entry["last_read_seq"], 0);
    assert_eq!(entry["last_seq"], 4);
    // A new connection is told the same.
    let b3 = t.ws(&bob).await;
    let hello: Vec<Value> = b3.hello["data"]["unread"].as_array().unwrap().clone();
    assert_eq!(hello, vec![entry.clone()]);
    // Reading on one device clears the others at once.
    b1.ok("mark_read", json!({"room": room, "seq": 2})).await;
    for ws in [&mut b1, &mut b2] {
        let f = ws.next_of("unread").await;
        assert_eq!(
            f["data"],
            json!({"room": room, "unread": 1, "mentions": 0, "last_read_seq": 2, "last_seq": 4})
        );
    }
    let (_, body) = t.get(&format!("/api/rooms/{room}/read"), &bob).await;
    assert_eq!(body, json!({"seq": 2}));
    // The marker never goes back, and says nothing when it does not move.
    b2.ok("mark_read", json!({"room": room, "seq": 1})).await;
    settle(&t, &mut b1).await;
    assert!(b1.buffered.iter().all(|f| f["type"] != "unread"));
    // Outsiders have no marker to read.
    let (status, _) = t.get(&format!("/api/rooms/{room}/read"), &dave).await;
    assert_eq!(status, 403);
    let (status, _) = t
        .get("/api/rooms/01M82K9KYPB0TTAXJ0YA2VGWKC/read", &dave)
        .await;
    assert_eq!(status, 404);
    let (status, body) = t.get("/api/me/unread", &dave).await;
    assert_eq!((status, body), (200, json!({"rooms": []})));
}

#[tokio::test]
async fn edits_and_deletions_move_the_counts() {
    let t = TestApp::spawn().await;
    let ([(alice, _), (bob, bob_id), (carol, carol_id), _], room) = room_of_three(&t).await;
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;
    let mut c = t.ws(&carol).await;
    let m = send_message(&t, &alice, &room, "hi @bob").await;
    let mid = id(&m);
    assert_eq!(counts(&unread(&t, &bob, &room).await), (1, 1));
    // Moving the mention from bob to carol: each is told, only carol is
    // newly mentioned.
    let edited = a
        .ok(
            "edit_message",
            json!({"message_id": mid, "text": "hi @carol (and @bob's idea)"}),
        )
        .await;
    let mut got = ids(&edited["message"]["mentions"]);
    got.sort();
    let mut want = vec![bob_id.clone(), carol_id.clone()];
    want.sort();
    assert_eq!(got, want);
    // bob still mentioned: no frame for him; carol gets one.
    let f = c.next_of("unread").await;
    assert_eq!(counts(&f["data"]), (1, 1));
    let edited = a
        .ok(
            "edit_message",
            json!({"message_id": mid, "text": "hi @carol"}),
        )
        .await;
    assert_eq!(ids(&edited["message"]["mentions"]), vec![carol_id]);
    let f = b.next_of("unread").await;
    assert_eq!(counts(&f["data"]), (1, 0));
    assert_eq!(counts(&unread(&t, &bob, &room).await), (1, 0));
    // A deletion takes the message out of everyone's count.
    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/messages/{mid}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 204);
    for ws in [&mut b, &mut c] {
        let f = ws
            .next_where(|f| f["type"] == "unread" && f["data"]["unread"] == 0)
            .await;
        assert_eq!(counts(&f["data"]), (0, 0));
    }
    let all = t.history_all(&bob, &room).await;
    assert_eq!(all[0]["mentions"], json!([]));
    // The sender's own count never held it.
    settle(&t, &mut a).await;
    assert!(
        a.buffered.iter().all(|f| f["type"] != "unread"),
        "{:?}",
        a.buffered
    );
}

// The property: random sends (mentioning random users), reads, edits and
// deletes by three members of a room; after every step each user's
// counts from `GET /api/me/unread` equal a recount from history, and
// every message mentions exactly the members its text names.

#[derive(Debug, Clone)]
enum Op {
    /// user, the users named (a bit mask)
    Send(usize, u8),
    /// user, which of their messages, the new mask
    Edit(usize, usize, u8),
    Delete(usize, usize),
    /// user, how far: a fraction of the room's last seq, in eighths
    Read(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..3usize, 0..8u8).prop_map(|(u, m)| Op::Send(u, m)),
        2 => (0..3usize, 0..8usize, 0..8u8).prop_map(|(u, i, m)| Op::Edit(u, i, m)),
        1 => (0..3usize, 0..8usize).prop_map(|(u, i)| Op::Delete(u, i)),
        2 => (0..3usize, 0..=8u8).prop_map(|(u, f)| Op::Read(u, f)),
    ]
}

const NAMES: [&str; 3] = ["ann", "ben", "cat"];

fn text_naming(mask: u8) -> String {
    let mut text = String::from("hey");
    for (i, name) in NAMES.iter().enumerate() {
        if mask & (1 << i) != 0 {
            text.push_str(&format!(" @{name}"));
        }
    }
    text
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let t = TestApp::spawn().await;
    let mut tokens = Vec::new();
    let mut user_ids = Vec::new();
    for name in NAMES {
        let (token, user) = t.register(name).await;
        tokens.push(token);
        user_ids.push(id(&user));
    }
    let room = id(&t.create_room(&tokens[0], "proptest", "public").await);
    let mut conns = Vec::new();
    for token in &tokens {
        let mut ws = t.ws(token).await;
        ws.ok("join_room", json!({ "room": room })).await;
        conns.push(ws);
    }
    // Each user's messages, by id, and the room's last seq.
    let mut own: Vec<Vec<String>> = vec![Vec::new(); 3];
    let mut last = 0u64;
    let expected = |sender: usize, mask: u8| -> Vec<String> {
        (0..3)
            .filter(|i| *i != sender && mask & (1 << i) != 0)
            .map(|i| user_ids[i].clone())
            .collect()
    };
    for op in ops {
        match op {
            Op::Send(u, mask) => {
                let m = conns[u]
                    .ok(
                        "send_message",
                        json!({"room": room, "text": text_naming(mask)}),
                    )
                    .await;
                last = m["message"]["seq"].as_u64().unwrap();
                own[u].push(id(&m["message"]));
                prop_assert_eq!(ids(&m["message"]["mentions"]), expected(u, mask));
            }
            Op::Edit(u, i, mask) if !own[u].is_empty() => {
                let mid = own[u][i % own[u].len()].clone();
                let answer = conns[u]
                    .request(
                        "edit_message",
                        json!({"message_id": mid, "text": text_naming(mask)}),
                    )
                    .await;
                if answer["type"] == "ack" {
                    let m = &answer["data"]["message"];
                    prop_assert_eq!(ids(&m["mentions"]), expected(u, mask));
                } else {
                    // Only a deleted message refuses an edit.
                    prop_assert_eq!(&answer["data"]["code"], "not_found");
                }
            }
            Op::Delete(u, i) if !own[u].is_empty() => {
                let mid = own[u][i % own[u].len()].clone();
                conns[u]
                    .ok("delete_message", json!({ "message_id": mid }))
                    .await;
            }
            Op::Read(u, eighths) => {
                let seq = last * u64::from(eighths) / 8;
                conns[u]
                    .ok("mark_read", json!({"room": room, "seq": seq}))
                    .await;
            }
            _ => {}
        }
        let history = t.history_all(&tokens[0], &room).await;
        for (u, token) in tokens.iter().enumerate() {
            let entry = unread(&t, token, &room).await;
            let marker = entry["last_read_seq"].as_u64().unwrap();
            let (_, read) = t.get(&format!("/api/rooms/{room}/read"), token).await;
            prop_assert_eq!(read["seq"].as_u64(), Some(marker));
            let counted: Vec<&Value> = history
                .iter()
                .filter(|m| {
                    m["seq"].as_u64().unwrap() > marker
                        && m["deleted"] == false
                        && m["sender"]["id"] != user_ids[u].as_str()
                })
                .collect();
            let mentioned = counted
                .iter()
                .filter(|m| ids(&m["mentions"]).contains(&user_ids[u]))
                .count();
            prop_assert_eq!(
                counts(&entry),
                (counted.len() as u64, mentioned as u64),
                "user {} after marker {}",
                NAMES[u],
                marker
            );
            prop_assert_eq!(entry["last_seq"].as_u64(), Some(last));
        }
    }
    // Every device's live picture, from `authenticated` and the rule in
    // docs/protocol.md, ends where the server's does.
    for (u, ws) in conns.iter_mut().enumerate() {
        settle(&t, ws).await;
        let mut state: HashMap<String, Value> = HashMap::new();
        for entry in ws.hello["data"]["unread"].as_array().unwrap() {
            state.insert(entry["room"].as_str().unwrap().into(), entry.clone());
        }
        for f in ws.buffered.drain(..) {
            apply_live(&mut state, &user_ids[u], &f);
        }
        let live = state.get(&room).cloned().unwrap_or(Value::Null);
        let server = unread(&t, &tokens[u], &room).await;
        prop_assert_eq!(live, server, "user {}", NAMES[u]);
    }
    Ok(())
}

/// The client's rule (docs/protocol.md, "Unread state"): an `unread`
/// frame replaces the room's entry; a `message` past the entry's
/// `last_seq` moves it and, if by someone else and past the marker,
/// counts one unread, and one mention if it mentions me.
fn apply_live(state: &mut HashMap<String, Value>, me: &str, f: &Value) {
    match f["type"].as_str() {
        Some("unread") => {
            let room = f["data"]["room"].as_str().unwrap().to_string();
            state.insert(room, f["data"].clone());
        }
        Some("message") => {
            let m = &f["data"]["message"];
            let Some(entry) = state.get_mut(m["room"].as_str().unwrap()) else {
                return;
            };
            let seq = m["seq"].as_u64().unwrap();
            if seq <= entry["last_seq"].as_u64().unwrap() {
                return;
            }
            entry["last_seq"] = json!(seq);
            if m["sender"]["id"] != me && seq > entry["last_read_seq"].as_u64().unwrap() {
                entry["unread"] = json!(entry["unread"].as_u64().unwrap() + 1);
                if ids(&m["mentions"]).iter().any(|i| i == me) {
                    entry["mentions"] = json!(entry["mentions"].as_u64().unwrap() + 1);
                }
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn unread_counts_always_equal_a_recount_from_history(
        ops in proptest::collection::vec(op(), 1..24)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_case(ops))?;
    }
}
