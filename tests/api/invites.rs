//! Room invites, and registration that needs one.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestApp, WAIT};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

async fn invite(t: &TestApp, token: &str, room: &str, body: Value) -> Value {
    let (status, v) = t
        .post(&format!("/api/rooms/{room}/invites"), token, body)
        .await;
    assert_eq!(status, 201, "{v}");
    v["invite"].clone()
}

async fn accept(t: &TestApp, token: &str, code: &str) -> (u16, Value) {
    t.post(&format!("/api/invites/{code}/accept"), token, json!({}))
        .await
}

fn code(inv: &Value) -> String {
    inv["code"].as_str().expect("code").to_string()
}

#[tokio::test]
async fn an_invite_lets_a_user_into_a_private_room() {
    let t = TestApp::spawn().await;
    let (alice, alice_user) = t.register("alice").await;
    let room = id(&t.create_room(&alice, "secret", "private").await);
    let (bob, _) = t.register("bob").await;
    let (status, _) = t.get(&format!("/api/rooms/{room}/messages"), &bob).await;
    assert_eq!(status, 403);

    let inv = invite(&t, &alice, &room, json!({})).await;
    let c = code(&inv);
    assert_eq!(inv["url"], format!("/invite/{c}"));
    assert_eq!(inv["room"], room);
    assert_eq!(inv["uses"], 0);
    assert_eq!(inv["created_by"], alice_user["id"]);
    assert_eq!(inv["max_uses"], Value::Null);

    // The preview needs no sign-in: the code is the key.
    let (status, preview) = t
        .call(Method::GET, &format!("/api/invites/{c}"), None, None)
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["invite"]["room_name"], "secret");
    assert_eq!(preview["invite"]["valid"], true);
    let (status, _) = t
        .call(Method::GET, "/api/invites/nosuchcode", None, None)
        .await;
    assert_eq!(status, 404);

    let (status, body) = accept(&t, &bob, &c).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"]["id"], room);
    let (status, _) = t.get(&format!("/api/rooms/{room}/messages"), &bob).await;
    assert_eq!(status, 200);
    // A member opening it again spends nothing.
    let (status, _) = accept(&t, &bob, &c).await;
    assert_eq!(status, 200);
    let (_, list) = t.get(&format!("/api/rooms/{room}/invites"), &alice).await;
    assert_eq!(list["invites"][0]["uses"], 1, "{list}");

    // Without a token, no joining.
    let (status, _) = t
        .call(
            Method::POST,
            &format!("/api/invites/{c}/accept"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn max_uses_revocation_and_expiry() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let room = id(&t.create_room(&alice, "club", "private").await);
    let (bob, _) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;

    let once = code(&invite(&t, &alice, &room, json!({"max_uses": 1})).await);
    assert_eq!(accept(&t, &bob, &once).await.0, 200);
    let (status, body) = accept(&t, &carol, &once).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("used up"),
        "{body}"
    );

    let revoked = code(&invite(&t, &alice, &room, json!({})).await);
    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/rooms/{room}/invites/{revoked}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(accept(&t, &carol, &revoked).await.0, 404);
    let (_, list) = t.get(&format!("/api/rooms/{room}/invites"), &alice).await;
    let codes: Vec<&str> = list["invites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, vec![once.as_str()]);

    // Expiry: refused once its time has passed (read from the preview,
    // which says when it stops being valid).
    let (status, body) = t
        .post(
            &format!("/api/rooms/{room}/invites"),
            &alice,
            json!({"expires_in_secs": 0}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let short = invite(&t, &alice, &room, json!({"expires_in_secs": 1})).await;
    assert!(short["expires_at"].as_i64().unwrap() > short["created_at"].as_i64().unwrap());
    let c = code(&short);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, p) = t
            .call(Method::GET, &format!("/api/invites/{c}"), None, None)
            .await;
        if p["invite"]["valid"] == false {
            assert_eq!(p["invite"]["reason"], "this invite has expired");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, body) = accept(&t, &carol, &c).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = t.get(&format!("/api/rooms/{room}/messages"), &carol).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn who_may_invite_and_revoke() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;
    t.register("mod").await;
    let moderator = t.set_role("mod", confab::domain::Role::Moderator).await;
    let private = id(&t.create_room(&alice, "inner", "private").await);
    let public = id(&t.create_room(&alice, "outer", "public").await);
    // Bob is a member of both, owner of neither.
    for r in [&private, &public] {
        let (s, _) = t
            .post(
                &format!("/api/rooms/{r}/members"),
                &alice,
                json!({"username": "bob"}),
            )
            .await;
        assert_eq!(s, 204);
    }
    let (status, _) = t
        .post(&format!("/api/rooms/{private}/invites"), &bob, json!({}))
        .await;
    assert_eq!(status, 403, "a member of a private room may not invite");
    let bobs = code(&invite(&t, &bob, &public, json!({})).await);
    let (status, _) = t
        .post(&format!("/api/rooms/{public}/invites"), &carol, json!({}))
        .await;
    assert_eq!(status, 403, "a non-member may not invite");
    invite(&t, &moderator, &private, json!({"max_uses": 5})).await;

    // Carol, no member, may not revoke Bob's; Bob and the owner may.
    let path = format!("/api/rooms/{public}/invites/{bobs}");
    let (status, _) = t.call(Method::DELETE, &path, Some(&carol), None).await;
    assert_eq!(status, 403);
    let (status, _) = t.call(Method::DELETE, &path, Some(&bob), None).await;
    assert_eq!(status, 204);
    let (status, _) = t.call(Method::DELETE, &path, Some(&alice), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_banned_user_cannot_use_an_invite() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let room = id(&t.create_room(&alice, "secret", "private").await);
    let (bob, _) = t.register("bob").await;
    let c = code(&invite(&t, &alice, &room, json!({})).await);
    t.sync().await;
    t.app()
        .ban(
            &confab::app::Actor::Operator,
            "bob",
            Some("spam".into()),
            None,
        )
        .await
        .expect("banned");
    let (status, body) = accept(&t, &bob, &c).await;
    assert_eq!(status, 403, "{body}");
    let (_, list) = t.get(&format!("/api/rooms/{room}/invites"), &alice).await;
    assert_eq!(list["invites"][0]["uses"], 0);
}

#[tokio::test]
async fn two_users_racing_for_the_last_use_get_one_seat() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let room = id(&t.create_room(&alice, "tiny", "private").await);
    let (bob, _) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;
    let c = code(&invite(&t, &alice, &room, json!({"max_uses": 1})).await);
    t.sync().await;
    // In a cluster the two go to different nodes.
    let base = |i: usize| {
        if i == 0 || t.others.is_empty() {
            t.url.clone()
        } else {
            t.others[0].0.url()
        }
    };
    let go = |i: usize, token: String| {
        let url = format!("{}/api/invites/{c}/accept", base(i));
        let http = t.http.clone();
        async move {
            http.post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (a, b) = tokio::join!(go(0, bob), go(1, carol));
    let mut got = [a, b];
    got.sort();
    assert_eq!(got, [200, 403]);
    let (_, list) = t.get(&format!("/api/rooms/{room}/invites"), &alice).await;
    assert_eq!(list["invites"][0]["uses"], 1);
}

#[tokio::test]
async fn registration_by_invite_only() {
    let t =
        TestApp::spawn_with(|c| c.auth.registration = confab::config::Registration::Invite).await;
    let reg = |body: Value| async {
        t.call(Method::POST, "/api/auth/register", None, Some(body))
            .await
    };
    let (status, body) = reg(json!({"username": "eve", "password": "password-eve"})).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invite")
    );

    t.app()
        .create_user(
            confab::domain::Username::parse("admin").unwrap(),
            confab::domain::Password::parse("password-admin").unwrap(),
            confab::domain::Role::Admin,
        )
        .await
        .unwrap();
    let admin = t.login("admin").await;
    let room = id(&t.create_room(&admin, "members", "private").await);
    let c = code(&invite(&t, &admin, &room, json!({"max_uses": 1})).await);

    let (status, _) =
        reg(json!({"username": "eve", "password": "password-eve", "invite": "nosuchcode"})).await;
    assert_eq!(status, 404);
    let (status, body) =
        reg(json!({"username": "eve", "password": "password-eve", "invite": c})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["room"]["id"], room);
    let eve = body["token"].as_str().unwrap().to_string();
    let (status, _) = t.get(&format!("/api/rooms/{room}/messages"), &eve).await;
    assert_eq!(status, 200);
    // Used up: nobody else gets in with it, and no account is left behind.
    let (status, _) =
        reg(json!({"username": "mallory", "password": "password-mallory", "invite": c})).await;
    assert_eq!(status, 403);
    let (status, _) = t
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "mallory", "password": "password-mallory"})),
        )
        .await;
    assert_eq!(status, 401);
}
