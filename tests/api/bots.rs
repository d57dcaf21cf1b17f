//! Bots with scoped API tokens, and incoming room webhooks.

use confab::admin::{Request, execute};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Closed, TestApp, send_message};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

async fn admin(t: &TestApp, req: Request) -> Value {
    t.sync().await;
    let v = execute(t.app(), req).await.expect("admin request");
    t.sync().await;
    v
}

async fn add_bot(t: &TestApp, name: &str, rooms: &[&str]) {
    admin(
        t,
        Request::BotAdd {
            name: name.into(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
        },
    )
    .await;
}

/// A token for the bot: `rooms` none for any room, `scopes` the actions.
async fn token(t: &TestApp, bot: &str, rooms: Option<&[&str]>, scopes: Option<&str>) -> String {
    let v = admin(
        t,
        Request::BotTokenAdd {
            name: bot.into(),
            rooms: rooms.map(|rs| rs.iter().map(|r| r.to_string()).collect()),
            scopes: scopes.map(String::from),
        },
    )
    .await;
    let token = v["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("cfb_") && token.len() > 40, "{token}");
    token
}

#[tokio::test]
async fn a_bot_posts_with_its_token_and_cannot_sign_in_with_a_password() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let room = id(&t.create_room(&alice, "town", "private").await);
    add_bot(&t, "robot", &["town"]).await;
    let bot = token(&t, "robot", None, None).await;

    // A private room's member by `--rooms`, posting over REST.
    let msg = send_message(&t, &bot, &room, "beep").await;
    assert_eq!(msg["bot"], true, "{msg}");
    assert_eq!(msg["sender"]["bot"], true, "{msg}");
    assert_eq!(msg["sender"]["username"], "robot");
    // People's messages say they are not from a bot.
    let mine = send_message(&t, &alice, &room, "hello robot").await;
    assert_eq!(mine["bot"], false);
    assert!(mine["sender"].get("bot").is_none(), "{mine}");
    let history = t.history_all(&alice, &room).await;
    assert_eq!(history[0]["bot"], true);
    assert_eq!(history[1]["bot"], false);

    let (status, me) = t.get("/api/me", &bot).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["bot"], true);

    // No password signs a bot in, not even an empty one.
    for pw in ["", "password-robot", "anything-at-all"] {
        let (status, body) = t
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"username": "robot", "password": pw})),
            )
            .await;
        assert_eq!(status, 401, "{body}");
    }

    // Over WebSocket like anyone, and its live messages carry `bot`.
    let mut ws = t.ws(&bot).await;
    assert_eq!(ws.hello["data"]["user"]["bot"], true);
    let mut watcher = t.ws(&alice).await;
    let sent = ws
        .ok("send_message", json!({"room": room, "text": "over ws"}))
        .await;
    assert_eq!(sent["message"]["bot"], true);
    let seen = watcher
        .next_where(|f| f["type"] == "message" && f["data"]["message"]["text"] == "over ws")
        .await;
    assert_eq!(seen["data"]["message"]["bot"], true, "{seen}");

    // An unknown token of the bot form is simply unauthorized.
    let (status, _) = t
        .get("/api/me", "cfb_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn scopes_bind_a_token_to_rooms_and_actions() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let a = id(&t.create_room(&alice, "aaa", "public").await);
    let b = id(&t.create_room(&alice, "bbb", "public").await);
    add_bot(&t, "robot", &["aaa", "bbb"]).await;
    let only_a = token(&t, "robot", Some(&["aaa"]), Some("read,send")).await;
    let read_only = token(&t, "robot", None, Some("read")).await;

    // Room scope: A yes, B no (over REST and WebSocket).
    send_message(&t, &only_a, &a, "in a").await;
    let (status, body) = t
        .post(
            &format!("/api/rooms/{b}/messages"),
            &only_a,
            json!({"text": "in b"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = t.get(&format!("/api/rooms/{b}/messages"), &only_a).await;
    assert_eq!(status, 403);
    let (status, _) = t.get(&format!("/api/rooms/{a}/messages"), &only_a).await;
    assert_eq!(status, 200);
    // A search that names no room would reach B too.
    let (status, _) = t.get("/api/search?q=in", &only_a).await;
    assert_eq!(status, 403);
    let (status, _) = t.get(&format!("/api/search?q=in&room={a}"), &only_a).await;
    assert_eq!(status, 200);
    let mut ws = t.ws(&only_a).await;
    let err = ws
        .request("send_message", json!({"room": b, "text": "ws in b"}))
        .await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["data"]["code"], "forbidden");
    ws.ok("send_message", json!({"room": a, "text": "ws in a"}))
        .await;
    // Actions it was not given: joining, direct messages.
    let err = ws.request("join_room", json!({"room": b})).await;
    assert_eq!(err["data"]["code"], "forbidden", "{err}");
    let err = ws
        .request("send_message", json!({"to": "alice", "text": "psst"}))
        .await;
    assert_eq!(err["data"]["code"], "forbidden", "{err}");

    // Read-only: reads, never sends, edits or deletes.
    let (status, _) = t.get(&format!("/api/rooms/{b}/messages"), &read_only).await;
    assert_eq!(status, 200);
    let (status, _) = t
        .post(
            &format!("/api/rooms/{a}/messages"),
            &read_only,
            json!({"text": "nope"}),
        )
        .await;
    assert_eq!(status, 403);
    let mut ro = t.ws(&read_only).await;
    let err = ro
        .request("send_message", json!({"room": a, "text": "nope"}))
        .await;
    assert_eq!(err["data"]["code"], "forbidden", "{err}");
    let h = ro.ok("history", json!({"room": a})).await;
    assert!(!h["messages"].as_array().unwrap().is_empty());

    // What no bot token may do at all.
    let (status, _) = t
        .post("/api/rooms", &only_a, json!({"name": "botroom"}))
        .await;
    assert_eq!(status, 403);
    let (status, _) = t
        .post(
            "/api/friends/requests",
            &only_a,
            json!({"username": "alice"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = t
        .post(&format!("/api/rooms/{a}/invites"), &only_a, json!({}))
        .await;
    assert_eq!(status, 403);
    let err = ws.request("friend_request", json!({"to": "alice"})).await;
    assert_eq!(err["data"]["code"], "forbidden", "{err}");
}

#[tokio::test]
async fn a_revoked_token_ends_at_once_and_closes_its_connections() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let room = id(&t.create_room(&alice, "town", "public").await);
    add_bot(&t, "robot", &["town"]).await;
    let keep = token(&t, "robot", None, None).await;
    let gone = token(&t, "robot", None, None).await;
    let mut ws = t.ws_first(&gone).await;
    let mut other_ws = t.ws_first(&keep).await;

    let bots = admin(&t, Request::BotList).await;
    let tokens = bots["bots"][0]["tokens"].as_array().unwrap().clone();
    assert_eq!(tokens.len(), 2, "{bots}");
    // Listed without the tokens themselves.
    assert!(!bots.to_string().contains(&gone[4..]));
    assert!(!bots.to_string().contains(&keep[4..]));
    let gone_id = token_id(&t, &gone).await;
    assert!(tokens.iter().any(|x| id(x) == gone_id));
    admin(&t, Request::BotTokenRevoke { id: gone_id }).await;

    assert_eq!(ws.closed().await, Closed::Code(4001));
    let (status, _) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            &gone,
            json!({"text": "gone"}),
        )
        .await;
    assert_eq!(status, 401);
    // The other token and its connection go on.
    send_message(&t, &keep, &room, "still here").await;
    other_ws
        .ok("send_message", json!({"room": room, "text": "me too"}))
        .await;

    // Removing the bot ends everything it had.
    admin(
        &t,
        Request::BotRemove {
            name: "robot".into(),
        },
    )
    .await;
    let (status, _) = t.get("/api/me", &keep).await;
    assert_eq!(status, 401);
    let bots = admin(&t, Request::BotList).await;
    assert_eq!(bots["bots"], json!([]));
    // A person is no bot to remove.
    let err = execute(
        t.app(),
        Request::BotRemove {
            name: "alice".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code().as_str(), "not_found");
}

/// The id of a token, found the way an operator would: the one of the
/// bot's listed tokens that is not in the list made before it... here
/// simply by the hash the store keys it by.
async fn token_id(t: &TestApp, token: &str) -> String {
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let rec = t
        .app()
        .store
        .read()
        .unwrap()
        .bot_token(&hash)
        .unwrap()
        .expect("stored by its hash");
    rec.id.to_string()
}

async fn hook_post(body: reqwest::RequestBuilder) -> (u16, String) {
    let resp = body.send().await.expect("sent");
    (resp.status().as_u16(), resp.text().await.expect("text"))
}

#[tokio::test]
async fn a_hook_posts_as_its_identity_under_the_name_it_gives() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let room = id(&t.create_room(&alice, "builds", "private").await);
    let v = admin(
        &t,
        Request::HookAdd {
            room: "builds".into(),
            name: Some("ci-hook".into()),
        },
    )
    .await;
    let path = v["hook"]["url"].as_str().expect("url").to_string();
    assert!(path.starts_with("/hooks/"), "{path}");
    let url = format!("{}{path}", t.next_url());

    let (status, text) = hook_post(
        t.http
            .post(&url)
            .json(&json!({"text": "build #1 passed", "username": "CI"})),
    )
    .await;
    assert_eq!((status, text.trim()), (200, "ok"));
    // Slack's form encoding, `payload=` holding the JSON.
    let (status, _) = hook_post(
        t.http
            .post(&url)
            .form(&[("payload", r#"{"text": "build #2 passed"}"#)]),
    )
    .await;
    assert_eq!(status, 200);

    let history = t.history_all(&alice, &room).await;
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0]["text"], "build #1 passed");
    assert_eq!(history[0]["bot"], true);
    assert_eq!(history[0]["display_name"], "CI");
    assert_eq!(history[0]["sender"]["username"], "ci-hook");
    assert_eq!(history[0]["sender"]["bot"], true);
    assert!(history[1].get("display_name").is_none());

    // A wrong secret and an unknown hook look the same.
    let wrong = format!("{}x", url);
    let (status, text) = hook_post(t.http.post(&wrong).json(&json!({"text": "x"}))).await;
    assert_eq!(status, 404);
    assert!(text.starts_with("no_service"), "{text}");
    // No text, bad JSON.
    let (status, text) = hook_post(t.http.post(&url).json(&json!({"username": "x"}))).await;
    assert_eq!(status, 400);
    assert!(text.starts_with("no_text"), "{text}");
    let (status, text) = hook_post(t.http.post(&url).body("{nope")).await;
    assert_eq!(status, 400);
    assert!(text.starts_with("invalid_payload"), "{text}");

    // Listed without its secret, and removed for good.
    let list = admin(
        &t,
        Request::HookList {
            room: Some("builds".into()),
        },
    )
    .await;
    let hooks = list["hooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1);
    assert!(hooks[0].get("url").is_none());
    let secret = path.rsplit('/').next().unwrap();
    assert!(!list.to_string().contains(secret));
    admin(&t, Request::HookRemove { id: id(&hooks[0]) }).await;
    let (status, _) = hook_post(t.http.post(&url).json(&json!({"text": "x"}))).await;
    assert_eq!(status, 404);
    // Its messages stay.
    assert_eq!(t.history_all(&alice, &room).await.len(), 2);
}

#[tokio::test]
async fn a_hook_is_held_to_a_users_message_rate() {
    let t = TestApp::spawn_with(|c| {
        c.limits.messages_per_sec = 1;
        c.limits.messages_burst = 3;
    })
    .await;
    let (alice, _) = t.register("alice").await;
    t.create_room(&alice, "noisy", "public").await;
    let v = admin(
        &t,
        Request::HookAdd {
            room: "noisy".into(),
            name: None,
        },
    )
    .await;
    // The limits are each node's: all posts go to one.
    let url = format!("{}{}", t.url, v["hook"]["url"].as_str().unwrap());
    let mut codes = Vec::new();
    for i in 0..8 {
        let resp = t
            .http
            .post(&url)
            .json(&json!({"text": format!("spam {i}")}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        if status == 429 {
            assert!(text.starts_with("rate_limited"), "{text}");
        }
        codes.push(status);
    }
    let ok = codes.iter().filter(|c| **c == 200).count();
    assert!((3..=5).contains(&ok), "{codes:?}");
    assert!(codes.contains(&429), "{codes:?}");
}

#[tokio::test]
async fn admins_manage_bots_and_hooks_over_http() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let room = id(&t.create_room(&alice, "ops", "public").await);
    t.register("boss").await;
    let boss = t.set_role("boss", confab::domain::Role::Admin).await;

    let (status, _) = t
        .post("/api/admin/bots", &alice, json!({"name": "robot"}))
        .await;
    assert_eq!(status, 403, "only admins");
    let (status, body) = t
        .post(
            "/api/admin/bots",
            &boss,
            json!({"name": "robot", "rooms": ["ops"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["bot"]["bot"], true);
    let (status, body) = t
        .post(
            "/api/admin/bots/robot/tokens",
            &boss,
            json!({"scopes": ["read", "send"], "rooms": ["ops"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let token_id = body["info"]["id"].as_str().unwrap().to_string();
    send_message(&t, &token, &room, "hello from http").await;
    let (_, list) = t.get("/api/admin/bots", &boss).await;
    assert_eq!(list["bots"][0]["tokens"][0]["id"], token_id.as_str());
    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/admin/bots/tokens/{token_id}"),
            Some(&boss),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = t.get("/api/me", &token).await;
    assert_eq!(status, 401);
    // A bot token reaches no admin route, whatever its scopes.
    let (_, body) = t
        .post("/api/admin/bots/robot/tokens", &boss, json!({}))
        .await;
    let other = body["token"].as_str().unwrap().to_string();
    let (status, _) = t.get("/api/admin/bots", &other).await;
    assert_eq!(status, 403);

    let (status, body) = t
        .post("/api/admin/hooks", &boss, json!({"room": "ops"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let url = format!("{}{}", t.next_url(), body["hook"]["url"].as_str().unwrap());
    let resp = t
        .http
        .post(&url)
        .json(&json!({"text": "hooked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (_, hooks) = t.get(&format!("/api/admin/hooks?room={room}"), &boss).await;
    let hook_id = id(&hooks["hooks"][0]);
    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/admin/hooks/{hook_id}"),
            Some(&boss),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = t
        .call(Method::DELETE, "/api/admin/bots/robot", Some(&boss), None)
        .await;
    assert_eq!(status, 204);
    let (_, audit) = t.get("/api/moderation/audit", &boss).await;
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "bot_add" && e["actor"] == "boss"),
        "{audit}"
    );
}
