//! What a person's own client is told so its screens can explain them:
//! the ban that refuses them, the mutes they are under.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Closed, TestApp, Ws, moderated_room};

fn kicked(ws: &Ws) -> Value {
    ws.buffered
        .iter()
        .find(|f| f["type"] == "kicked")
        .cloned()
        .expect("kicked before the close")
}

#[tokio::test]
async fn a_ban_says_until_when_and_why_to_the_banned() {
    let t = TestApp::spawn().await;
    let (moderator, member, _) = moderated_room(&t).await;
    let mut ws = t.ws(&member).await;
    let before = confab::domain::now_ms();
    let (status, body) = t
        .post(
            "/api/moderation/ban",
            &moderator,
            json!({"username": "troll", "reason": "spam", "duration_secs": 3600}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ws.closed().await, Closed::Code(4003));
    let ev = kicked(&ws);
    assert_eq!(ev["data"]["reason"], "spam");
    let until = ev["data"]["ban"]["until"].as_i64().expect("an end");
    assert!(until >= before + 3_600_000 && until <= confab::domain::now_ms() + 3_600_000);
    assert_eq!(ev["data"]["ban"]["reason"], "spam");

    // Coming back with the old token: the refusal carries the same ban.
    let base = t.next_url().replacen("http", "ws", 1);
    let mut again = Ws::connect(&format!("{base}/ws?token={member}")).await;
    let err = again.next_of("error").await;
    assert_eq!(err["data"]["code"], "forbidden");
    assert_eq!(
        err["data"]["ban"],
        json!({"until": until, "reason": "spam"})
    );
    assert_eq!(again.closed().await, Closed::Code(4003));

    // Signing in again is refused with it too.
    let (status, body) = t
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "troll", "password": "password-troll"})),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        body["error"]["ban"],
        json!({"until": until, "reason": "spam"})
    );
}

#[tokio::test]
async fn a_ban_without_end_or_reason_says_so() {
    let t = TestApp::spawn().await;
    let (moderator, member, _) = moderated_room(&t).await;
    let mut ws = t.ws(&member).await;
    let (status, _) = t
        .post(
            "/api/moderation/ban",
            &moderator,
            json!({"username": "troll"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(ws.closed().await, Closed::Code(4003));
    assert_eq!(
        kicked(&ws)["data"]["ban"],
        json!({"until": null, "reason": null})
    );
    // A kick is no ban, and says none.
    t.post(
        "/api/moderation/unban",
        &moderator,
        json!({"username": "troll"}),
    )
    .await;
    let member = t.login("troll").await;
    let mut ws = t.ws(&member).await;
    t.post(
        "/api/moderation/kick",
        &moderator,
        json!({"username": "troll"}),
    )
    .await;
    assert_eq!(ws.closed().await, Closed::Code(4003));
    assert!(kicked(&ws)["data"].get("ban").is_none());
}

#[tokio::test]
async fn the_muted_are_told_at_once_and_when_they_connect() {
    let t = TestApp::spawn().await;
    let (moderator, member, room) = moderated_room(&t).await;
    let mut ws = t.ws(&member).await;
    assert_eq!(ws.hello["data"]["mutes"], json!([]));

    let (status, _) = t
        .post(
            "/api/moderation/mute",
            &moderator,
            json!({"username": "troll", "room": room, "reason": "calm down", "duration_secs": 600}),
        )
        .await;
    assert_eq!(status, 204);
    let muted = ws.next_of("muted").await;
    let until = muted["data"]["until"].as_i64().expect("an end");
    assert_eq!(
        muted["data"],
        json!({"room": room, "until": until, "reason": "calm down"})
    );
    let (status, _) = t
        .post(
            "/api/moderation/mute",
            &moderator,
            json!({"username": "troll"}),
        )
        .await;
    assert_eq!(status, 204);
    let everywhere = ws.next_of("muted").await;
    assert_eq!(
        everywhere["data"],
        json!({"room": null, "until": null, "reason": null})
    );

    // A new connection and GET /api/me list both.
    let fresh = t.ws(&member).await;
    let mut listed = fresh.hello["data"]["mutes"].as_array().unwrap().clone();
    listed.sort_by_key(|m| m["room"].is_null());
    assert_eq!(
        listed,
        vec![muted["data"].clone(), everywhere["data"].clone()]
    );
    let (_, me) = t.get("/api/me", &member).await;
    assert_eq!(me["mutes"].as_array().unwrap().len(), 2);

    // Lifting one tells every connection of theirs which.
    let (status, _) = t
        .post(
            "/api/moderation/unmute",
            &moderator,
            json!({"username": "troll", "room": "town"}),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(ws.next_of("unmuted").await["data"], json!({"room": room}));
    let (_, me) = t.get("/api/me", &member).await;
    assert_eq!(me["mutes"], json!([everywhere["data"].clone()]));
    // Every connection of theirs is told, in order.
    let mut other = fresh;
    t.post(
        "/api/moderation/unmute",
        &moderator,
        json!({"username": "troll"}),
    )
    .await;
    assert_eq!(
        other.next_of("unmuted").await["data"],
        json!({"room": room})
    );
    assert_eq!(
        other.next_of("unmuted").await["data"],
        json!({"room": null})
    );
    // Others are not told of someone else's mute.
    let mut watcher = t.ws(&moderator).await;
    t.post(
        "/api/moderation/mute",
        &moderator,
        json!({"username": "troll"}),
    )
    .await;
    ws.next_of("muted").await;
    // Every node has applied the mute; an answer after it comes after any
    // event it caused.
    t.sync().await;
    watcher.ok("presence", json!({"room": room})).await;
    assert!(!watcher.buffered.iter().any(|f| f["type"] == "muted"));
}

async fn patch(t: &TestApp, id: &str, token: &str, body: Value) -> (u16, Value) {
    t.call(
        Method::PATCH,
        &format!("/api/rooms/{id}"),
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn a_room_is_renamed_by_its_owner_and_names_stay_unique() {
    let t = TestApp::spawn().await;
    let (owner, _) = t.register("olga").await;
    let (other, _) = t.register("pete").await;
    let room = t.create_room(&owner, "garden", "public").await;
    let id = room["id"].as_str().unwrap().to_string();
    t.create_room(&other, "kitchen", "public").await;
    let mut watcher = t.ws(&other).await;
    // Not the owner: refused, nothing changes.
    let (status, _) = patch(&t, &id, &other, json!({"name": "yard"})).await;
    assert_eq!(status, 403);
    // A name that is taken, or not a name.
    let (status, body) = patch(&t, &id, &owner, json!({"name": "kitchen"})).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = patch(&t, &id, &owner, json!({"name": "Not A Name!"})).await;
    assert_eq!(status, 400);

    let (status, body) = patch(&t, &id, &owner, json!({"name": "yard", "topic": "outside"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"]["name"], "yard");
    assert_eq!(body["room"]["topic"], "outside");
    let ev = watcher.next_of("room_updated").await;
    assert_eq!(ev["data"]["room"]["name"], "yard");

    // The old name is free and the new one taken, on every node.
    t.sync().await;
    let (_, rooms) = t.get("/api/rooms", &other).await;
    let names: Vec<&str> = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kitchen", "yard"]);
    let (status, _) = t.post("/api/rooms", &other, json!({"name": "yard"})).await;
    assert_eq!(status, 409);
    let (status, _) = t
        .post("/api/rooms", &other, json!({"name": "garden"}))
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn a_picture_of_ones_own_goes_beside_ones_messages() {
    use crate::uploads::{picture, upload};
    use image::ImageFormat;
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let room = t.create_room(&alice, "porch", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    t.post(
        &format!("/api/rooms/{room}/members"),
        &bob,
        json!({"username": "bob"}),
    )
    .await;
    let (status, _) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            &alice,
            json!({"text": "before"}),
        )
        .await;
    assert_eq!(status, 201);
    // Both online: those who see her online hear of a new picture.
    let mut seen_by_bob = t.ws(&bob).await;
    let mut her_own = t.ws(&alice).await;
    // No picture: the user object is as it always was.
    let (_, me) = t.get("/api/me", &alice).await;
    assert!(me["user"].get("avatar_url").is_none(), "{me}");

    let (_, mine) = upload(
        &t,
        &alice,
        "me.png",
        "image/png",
        picture(ImageFormat::Png, 64, 48),
    )
    .await;
    let (_, theirs) = upload(
        &t,
        &bob,
        "b.png",
        "image/png",
        picture(ImageFormat::Png, 20, 20),
    )
    .await;
    // Someone else's upload, or none, is no picture.
    for id in [
        theirs["id"].clone(),
        json!("0123456789abcdef0123456789abcdef"),
    ] {
        let (status, body) = t
            .post("/api/me/avatar", &alice, json!({"upload": id}))
            .await;
        assert_eq!(status, 400, "{body}");
    }
    let (status, body) = t
        .post("/api/me/avatar", &alice, json!({"upload": mine["id"]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let url = format!("/uploads/{}/thumb", mine["id"].as_str().unwrap());
    assert_eq!(body["user"]["avatar_url"], url.as_str());

    // Others hear of it, and every message of hers carries it, old ones too.
    let ev = seen_by_bob
        .next_where(|f| f["type"] == "user_updated" && f["data"]["user"]["username"] == "alice")
        .await;
    assert_eq!(ev["data"]["user"]["avatar_url"], url.as_str());
    let ev = her_own.next_of("user_updated").await;
    assert_eq!(ev["data"]["user"]["avatar_url"], url.as_str());
    let history = t.history_all(&bob, &room).await;
    assert_eq!(history[0]["sender"]["avatar_url"], url.as_str());
    let (_, me) = t.get("/api/me", &alice).await;
    assert_eq!(me["user"]["avatar_url"], url.as_str());
    let (_, found) = t.get("/api/users/alice", &bob).await;
    assert_eq!(found["user"]["avatar_url"], url.as_str());

    // The picture is a use of its upload: collection keeps it.
    t.sync().await;
    let (removed, _) = t.app().gc_uploads(0).await.unwrap();
    let ids: Vec<&str> = removed.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, vec![theirs["id"].as_str().unwrap()]);

    // Taken away, it is gone from her messages, and its upload is free again.
    let (status, body) = t
        .call(Method::DELETE, "/api/me/avatar", Some(&alice), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["user"].get("avatar_url").is_none());
    let history = t.history_all(&bob, &room).await;
    assert!(history[0]["sender"].get("avatar_url").is_none());
    t.sync().await;
    let (removed, _) = t.app().gc_uploads(0).await.unwrap();
    assert_eq!(removed.len(), 1);
}
