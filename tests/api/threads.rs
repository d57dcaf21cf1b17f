//! Replies and threads: what a reply may answer, where it shows (its
//! thread, the room only when asked), reading a thread page by page with
//! the rights of reading its room, following with unread counts, read
//! markers and pushes, and what deletion and retention leave.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestApp, Ws, send_message};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

async fn join(t: &TestApp, token: &str, room: &str) {
    let mut ws = t.ws(token).await;
    ws.ok("join_room", json!({ "room": room })).await;
}

/// Posts a reply over HTTP: (status, body).
async fn reply(
    t: &TestApp,
    token: &str,
    room: &str,
    to: &str,
    text: &str,
    also_in_room: bool,
) -> (u16, Value) {
    t.post(
        &format!("/api/rooms/{room}/messages"),
        token,
        json!({ "text": text, "reply_to": to, "also_in_room": also_in_room }),
    )
    .await
}

async fn reply_ok(t: &TestApp, token: &str, room: &str, to: &str, text: &str) -> Value {
    let (status, body) = reply(t, token, room, to, text, false).await;
    assert_eq!(status, 201, "{body}");
    body["message"].clone()
}

async fn thread(t: &TestApp, token: &str, root: &str, query: &str) -> (u16, Value) {
    t.get(&format!("/api/messages/{root}/thread{query}"), token)
        .await
}

/// The caller's entry for `root` in `GET /api/me/threads`, if they follow it.
async fn followed(t: &TestApp, token: &str, root: &str) -> Option<Value> {
    let (status, body) = t.get("/api/me/threads", token).await;
    assert_eq!(status, 200, "{body}");
    body["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .find(|e| e["root"]["id"] == root)
        .cloned()
}

fn unread_of(entry: &Option<Value>) -> u64 {
    entry
        .as_ref()
        .expect("a followed thread")
        .get("unread")
        .and_then(Value::as_u64)
        .expect("unread")
}

/// Waits until every event queued for `ws` so far has arrived.
async fn settle(t: &TestApp, ws: &mut Ws) {
    t.sync().await;
    ws.send_json(json!({"type": "ping", "id": "settle"})).await;
    ws.next_where(|v| v["type"] == "pong" && v["id"] == "settle")
        .await;
}

/// alice owns a public room bob and carol joined; dave is in no room.
async fn setup(t: &TestApp) -> ([(String, String); 4], String) {
    let mut users = Vec::new();
    for name in ["alice", "bob", "carol", "dave"] {
        let (token, user) = t.register(name).await;
        users.push((token, id(&user)));
    }
    let room = id(&t.create_room(&users[0].0, "general", "public").await);
    join(t, &users[1].0, &room).await;
    join(t, &users[2].0, &room).await;
    (users.try_into().expect("four"), room)
}

#[tokio::test]
async fn replies_form_a_thread_and_only_those_asked_for_show_in_the_room() {
    let t = TestApp::spawn().await;
    let ([(alice, _), (bob, _), (carol, _), _], room) = setup(&t).await;
    let mut watcher = t.ws(&carol).await;
    let root = send_message(&t, &alice, &room, "lunch?").await;
    let root_id = id(&root);
    assert_eq!(root["reply_to"], Value::Null);
    assert_eq!(root["reply_count"], 0);
    watcher.next_where(|v| v["type"] == "message").await;

    let quiet = reply_ok(&t, &bob, &room, &root_id, "yes").await;
    assert_eq!(quiet["reply_to"], root_id.as_str());
    assert_eq!(quiet["also_in_room"], false);
    // A reply kept to its thread arrives as thread_reply, never as a room
    // message; its root's new count follows as message_updated.
    let ev = watcher
        .next_where(|v| v["type"] == "thread_reply" || v["type"] == "message")
        .await;
    assert_eq!(ev["type"], "thread_reply", "{ev}");
    assert_eq!(ev["data"]["message"]["id"], quiet["id"]);
    let up = watcher.next_of("message_updated").await;
    assert_eq!(up["data"]["message"]["id"], root_id.as_str());
    assert_eq!(up["data"]["message"]["reply_count"], 1);

    let (status, loud) = reply(&t, &carol, &room, &root_id, "me too", true).await;
    assert_eq!(status, 201, "{loud}");
    let loud = loud["message"].clone();
    assert_eq!(loud["also_in_room"], true);
    let ev = watcher
        .next_where(|v| v["type"] == "thread_reply" || v["type"] == "message")
        .await;
    assert_eq!(ev["type"], "message", "{ev}");
    assert_eq!(ev["data"]["message"]["reply_to"], root_id.as_str());

    // A reply to a reply joins the same thread: threads are one level deep.
    let nested = reply_ok(&t, &alice, &room, &id(&loud), "noon then").await;
    assert_eq!(nested["reply_to"], root_id.as_str());

    let history = t.history_all(&alice, &room).await;
    let ids: Vec<&str> = history.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [root_id.as_str(), loud["id"].as_str().unwrap()]);
    assert_eq!(history[0]["reply_count"], 3);
    assert!(history[0]["last_reply_at"].as_i64().unwrap() >= root["created_at"].as_i64().unwrap());

    let (status, page) = thread(&t, &carol, &root_id, "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["root"]["id"], root_id.as_str());
    let replies: Vec<&Value> = page["messages"].as_array().unwrap().iter().collect();
    assert_eq!(
        replies
            .iter()
            .map(|m| m["text"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["yes", "me too", "noon then"]
    );
    assert_eq!(page["has_more"], false);
    assert_eq!(page["following"], true);

    // An edit keeps a reply in its thread.
    let mut ws = t.ws(&bob).await;
    let edited = ws
        .ok(
            "edit_message",
            json!({"message_id": quiet["id"], "text": "yes!"}),
        )
        .await;
    assert_eq!(edited["message"]["reply_to"], root_id.as_str());
    let (_, page) = thread(&t, &carol, &root_id, "").await;
    assert_eq!(page["messages"][0]["text"], "yes!");
    assert_eq!(t.history_all(&alice, &room).await.len(), 2);

    // Over the socket too, with the same shape.
    let frame = ws
        .ok("thread", json!({"message_id": root_id, "limit": 2}))
        .await;
    assert_eq!(frame["root"]["id"], root_id.as_str());
    assert_eq!(frame["messages"].as_array().unwrap().len(), 2);
    assert_eq!(frame["has_more"], true);
    let sent = ws
        .ok(
            "send_message",
            json!({"room": room, "text": "by socket", "reply_to": root_id}),
        )
        .await;
    assert_eq!(sent["message"]["reply_to"], root_id.as_str());
}

#[tokio::test]
async fn reply_to_must_name_a_live_message_of_the_same_room() {
    let t = TestApp::spawn().await;
    let ([(alice, _), (bob, _), _, (dave, _)], room) = setup(&t).await;
    let other = id(&t.create_room(&alice, "elsewhere", "public").await);
    let theirs = send_message(&t, &alice, &other, "over here").await;
    let (status, body) = reply(&t, &alice, &room, &id(&theirs), "cross", false).await;
    assert_eq!(status, 400, "{body}");
    let cross = body["error"]["message"].clone();
    // Another room's message is refused with the words of one that does
    // not exist, so the answer tells nothing about it.
    let unknown = "00000000000000000000000000";
    let (status, body) = reply(&t, &alice, &room, unknown, "nothing", false).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["message"], cross);
    let (status, body) = reply(&t, &alice, &room, "not an id!", "bad", false).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");

    // A private room's message, from outside it.
    let secret = id(&t.create_room(&alice, "secret", "private").await);
    let hidden = send_message(&t, &alice, &secret, "psst").await;
    let (status, body) = reply(&t, &dave, &room, &id(&hidden), "peek", false).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["message"], cross);
    let (status, _) = reply(&t, &dave, &secret, &id(&hidden), "peek", false).await;
    assert_eq!(status, 403);
    // Nothing was written by the refusals: dave did not join the room.
    let (_, unread) = t.get("/api/me/unread", &dave).await;
    assert_eq!(unread["rooms"], json!([]), "a refused reply joined a room");
    let (_, page) = thread(&t, &alice, &id(&hidden), "").await;
    assert_eq!(page["messages"], json!([]));
    assert_eq!(page["root"]["reply_count"], 0);

    // A deleted message is answered no more.
    let gone = send_message(&t, &bob, &room, "soon gone").await;
    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/messages/{}", id(&gone)),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = reply(&t, &alice, &room, &id(&gone), "late", false).await;
    assert_eq!(status, 400);

    // In a direct conversation, with the DM's own messages.
    let (status, dm) = t
        .post("/api/dm/bob/messages", &alice, json!({"text": "hey"}))
        .await;
    assert_eq!(status, 201, "{dm}");
    let (status, r) = t
        .post(
            "/api/dm/alice/messages",
            &bob,
            json!({"text": "hi", "reply_to": dm["message"]["id"]}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["message"]["reply_to"], dm["message"]["id"]);
    let (status, _) = t
        .post(
            "/api/dm/alice/messages",
            &dave,
            json!({"text": "hi", "reply_to": dm["message"]["id"]}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_thread_reads_page_by_page() {
    let t = TestApp::spawn().await;
    let ([(alice, _), (bob, _), ..], room) = setup(&t).await;
    let root = id(&send_message(&t, &alice, &room, "count").await);
    let mut sent = Vec::new();
    for n in 0..7 {
        sent.push(reply_ok(&t, &bob, &room, &root, &format!("{n}")).await);
    }
    let mut seen = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let (status, page) = thread(&t, &alice, &root, &format!("?after={after}&limit=3")).await;
        assert_eq!(status, 200, "{page}");
        let msgs = page["messages"].as_array().unwrap();
        pages += 1;
        for m in msgs {
            seen.push(m["text"].as_str().unwrap().to_string());
            after = m["seq"].as_u64().unwrap();
        }
        if page["has_more"] == false {
            break;
        }
        assert_eq!(msgs.len(), 3);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["0", "1", "2", "3", "4", "5", "6"]);
    let (status, _) = thread(&t, &alice, &root, "?limit=0").await;
    assert_eq!(status, 400);
    let (status, _) = thread(&t, &alice, &root, "?after=x").await;
    assert_eq!(status, 400);
    // A reply's id names its thread.
    let (status, page) = thread(&t, &alice, &id(&sent[3]), "?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(page["root"]["id"], root.as_str());
    let (status, _) = thread(&t, &alice, "00000000000000000000000000", "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_private_rooms_thread_is_not_read_from_outside() {
    let t = TestApp::spawn().await;
    let ([(alice, _), (bob, _), _, (dave, _)], public) = setup(&t).await;
    let secret = id(&t.create_room(&alice, "secret", "private").await);
    let (status, _) = t
        .post(
            &format!("/api/rooms/{secret}/members"),
            &alice,
            json!({"username": "bob"}),
        )
        .await;
    assert_eq!(status, 204);
    let root = id(&send_message(&t, &alice, &secret, "plans").await);
    let r = reply_ok(&t, &bob, &secret, &root, "the secret plan").await;
    let (status, page) = thread(&t, &bob, &root, "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"][0]["text"], "the secret plan");

    // dave is answered as if the message did not exist, by root or reply.
    for target in [&root, &id(&r)] {
        let (status, body) = thread(&t, &dave, target, "").await;
        assert_eq!(status, 404, "{body}");
        assert!(!body.to_string().contains("secret plan"));
    }
    let mut ws = t.ws(&dave).await;
    let answer = ws.request("thread", json!({"message_id": root})).await;
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["data"]["code"], "not_found");
    for kind in ["follow_thread", "unfollow_thread"] {
        let answer = ws.request(kind, json!({"message_id": root})).await;
        assert_eq!(answer["data"]["code"], "not_found", "{kind}: {answer}");
    }
    let (status, _) = t
        .call(
            Method::PUT,
            &format!("/api/messages/{root}/follow"),
            Some(&dave),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert!(followed(&t, &dave, &root).await.is_none());
    // A public room's thread is read like its history, member or not.
    let open = id(&send_message(&t, &alice, &public, "open").await);
    reply_ok(&t, &bob, &public, &open, "for all").await;
    let (status, page) = thread(&t, &dave, &open, "").await;
    assert_eq!(status, 200);
    assert_eq!(page["following"], false);
    // A thread-only reply is not dave's to see in the room either.
    let (status, body) = t.get(&format!("/api/rooms/{secret}/messages"), &dave).await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn followers_count_unread_replies_mark_them_read_and_may_stop() {
    let t = TestApp::spawn().await;
    let ([(alice, _), (bob, _), (carol, _), (dave, _)], room) = setup(&t).await;
    let root = id(&send_message(&t, &alice, &room, "who is in?").await);
    let mut alice_ws = t.ws(&alice).await;
    // Nobody follows a thread with no replies.
    assert!(followed(&t, &alice, &root).await.is_none());

    reply_ok(&t, &bob, &room, &root, "me").await;
    let ev = alice_ws.next_of("thread_unread").await;
    assert_eq!(ev["data"]["root"], root.as_str());
    assert_eq!(ev["data"]["room"], room.as_str());
    assert_eq!(ev["data"]["unread"], 1);
    // The root's author and the replier follow; the replier has read it.
    assert_eq!(unread_of(&followed(&t, &alice, &root).await), 1);
    assert_eq!(unread_of(&followed(&t, &bob, &root).await), 0);
    assert!(followed(&t, &carol, &root).await.is_none());
    // A thread-only reply is no room unread.
    let (_, unread) = t.get("/api/me/unread", &carol).await;
    let entry = unread["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == room.as_str())
        .cloned()
        .unwrap();
    assert_eq!(entry["unread"], 1, "only the root: {entry}");

    // A mention draws a member in, with the reply unread and a mention.
    let r2 = reply_ok(&t, &bob, &room, &root, "@carol @dave you too?").await;
    assert_eq!(unread_of(&followed(&t, &alice, &root).await), 2);
    let carols = followed(&t, &carol, &root).await;
    assert_eq!(unread_of(&carols), 1);
    assert_eq!(carols.unwrap()["mentions"], 1);
    // dave is no member: a mention is as if not written.
    assert!(followed(&t, &dave, &root).await.is_none());

    // Marking read, over HTTP and over the socket.
    let seq = r2["seq"].as_u64().unwrap();
    let (status, _) = t
        .post(
            &format!("/api/messages/{root}/thread/read"),
            &alice,
            json!({"seq": seq}),
        )
        .await;
    assert_eq!(status, 204);
    let ev = alice_ws
        .next_where(|v| v["type"] == "thread_unread" && v["data"]["unread"] == 0)
        .await;
    assert_eq!(ev["data"]["last_read_seq"], seq);
    assert_eq!(unread_of(&followed(&t, &alice, &root).await), 0);
    let mut carol_ws = t.ws(&carol).await;
    let answer = carol_ws
        .request(
            "mark_thread_read",
            json!({"message_id": root, "seq": seq + 1000}),
        )
        .await;
    assert_eq!(answer["data"]["code"], "bad_request");
    carol_ws
        .ok("mark_thread_read", json!({"message_id": root, "seq": seq}))
        .await;
    let listed = carol_ws.ok("threads", json!({})).await;
    assert_eq!(listed["threads"][0]["root"]["id"], root.as_str());
    assert_eq!(listed["threads"][0]["unread"], 0);

    // Unfollowing sticks through new replies; replying follows again.
    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/messages/{root}/follow"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(followed(&t, &alice, &root).await.is_none());
    reply_ok(&t, &carol, &room, &root, "anyone?").await;
    assert!(followed(&t, &alice, &root).await.is_none());
    let (_, page) = thread(&t, &alice, &root, "").await;
    assert_eq!(page["following"], false);
    assert_eq!(unread_of(&followed(&t, &bob, &root).await), 1);
    reply_ok(&t, &alice, &room, &root, "back").await;
    assert_eq!(unread_of(&followed(&t, &alice, &root).await), 0);
    // Following by hand starts with everything read.
    carol_ws
        .ok("unfollow_thread", json!({"message_id": root}))
        .await;
    reply_ok(&t, &bob, &room, &root, "later").await;
    carol_ws
        .ok("follow_thread", json!({"message_id": root}))
        .await;
    assert_eq!(unread_of(&followed(&t, &carol, &root).await), 0);
    settle(&t, &mut alice_ws).await;
}

#[tokio::test]
async fn deleting_a_root_blanks_it_and_keeps_its_thread() {
    let t = TestApp::spawn().await;
    let ([(alice, _), (bob, _), (carol, _), _], room) = setup(&t).await;
    let root = id(&send_message(&t, &alice, &room, "original").await);
    let first = reply_ok(&t, &bob, &room, &root, "one").await;
    reply_ok(&t, &carol, &room, &root, "two").await;
    assert_eq!(unread_of(&followed(&t, &alice, &root).await), 2);

    // A deleted reply leaves the count and the unread, not the thread.
    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/messages/{}", id(&first)),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(unread_of(&followed(&t, &alice, &root).await), 1);
    let (_, page) = thread(&t, &alice, &root, "").await;
    assert_eq!(page["root"]["reply_count"], 1);
    assert_eq!(page["messages"][0]["deleted"], true);
    assert_eq!(page["messages"][0]["text"], "");
    assert_eq!(page["messages"][1]["text"], "two");

    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/messages/{root}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, page) = thread(&t, &carol, &root, "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["root"]["deleted"], true);
    assert_eq!(page["root"]["text"], "");
    assert_eq!(page["root"]["reply_count"], 1);
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
    let (status, _) = reply(&t, &bob, &room, &root, "too late", false).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn retention_takes_a_thread_with_its_root() {
    let t = TestApp::spawn().await;
    let ([(alice, _), (bob, _), ..], room) = setup(&t).await;
    let old = send_message(&t, &alice, &room, "old").await;
    let keep = id(&send_message(&t, &alice, &room, "keep").await);
    let (status, loud) = reply(&t, &bob, &room, &id(&old), "loud", true).await;
    assert_eq!(status, 201);
    reply_ok(&t, &bob, &room, &id(&old), "quiet").await;
    reply_ok(&t, &bob, &room, &keep, "stays").await;
    assert!(followed(&t, &alice, &id(&old)).await.is_some());

    let room_id = confab::domain::Id::parse("room", &room).unwrap();
    t.app()
        .store
        .run::<usize>(confab::store::Command::PruneRoom {
            room: room_id,
            before: None,
            up_to: Some(old["seq"].as_u64().unwrap()),
            max: 100,
        })
        .await
        .unwrap();
    let (status, _) = thread(&t, &alice, &id(&old), "").await;
    assert_eq!(status, 404);
    assert!(followed(&t, &alice, &id(&old)).await.is_none());
    let history = t.history_all(&alice, &room).await;
    let texts: Vec<&str> = history
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["keep"], "the thread went with its root");
    let (status, _) = thread(&t, &alice, &id(&loud["message"]), "").await;
    assert_eq!(status, 404);
    let (_, page) = thread(&t, &alice, &keep, "").await;
    assert_eq!(page["messages"][0]["text"], "stays");
    assert_eq!(unread_of(&followed(&t, &alice, &keep).await), 1);
}

#[tokio::test]
async fn a_follower_is_pushed_a_reply_and_the_room_is_not() {
    let app = crate::push::spawn().await;
    let svc = crate::push::PushService::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let (carol, _) = app.register("carol").await;
    let room = id(&app.create_room(&alice, "lobby", "public").await);
    join(&app, &bob, &room).await;
    join(&app, &carol, &room).await;
    // carol wants every message of the room, but follows no thread.
    let (status, _) = app
        .call(
            Method::PUT,
            &format!("/api/rooms/{room}/notifications"),
            Some(&carol),
            Some(json!({"level": "all"})),
        )
        .await;
    assert_eq!(status, 200);
    let bobs = crate::push::Browser::new(svc.endpoint("bob")).await;
    bobs.subscribe(&app, &bob).await;
    let carols = crate::push::Browser::new(svc.endpoint("carol")).await;
    carols.subscribe(&app, &carol).await;

    let root = id(&send_message(&app, &bob, &room, "thoughts?").await);
    let got = svc.wait_for(1).await;
    assert!(got[0].path.ends_with("/carol"), "the root reaches carol");
    reply_ok(&app, &alice, &room, &root, "a reply in the thread").await;
    let got = svc.wait_for(2).await;
    assert!(got[1].path.ends_with("/bob"), "{:?}", got[1].path);
    let p = bobs.payload(&got[1], svc.port).await;
    assert_eq!(p["reason"], "thread");
    assert_eq!(p["preview"], "a reply in the thread");
    // The reply was kept to its thread: carol, who follows none of it, is
    // not pushed. A later room message is, and it is the next to come.
    send_message(&app, &alice, &room, "in the room").await;
    let got = svc.wait_for(3).await;
    assert!(got[2].path.ends_with("/carol"));
    let p = carols.payload(&got[2], svc.port).await;
    assert_eq!(p["preview"], "in the room");
}
