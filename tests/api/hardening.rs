//! What a hostile user or a hostile local account tries: powers kept after
//! a demotion, tokens that outlive a password, edits past a mute, races on
//! the login limit, overflowing durations, a readable data directory.

use reqwest::Method;
use serde_json::json;

use crate::common::{Closed, TestApp};
use confab::domain::Role;

fn id(v: &serde_json::Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn a_demoted_moderator_loses_staff_powers_on_an_open_socket() {
    let t = TestApp::spawn().await;
    let (owner, _) = t.register("owner").await;
    t.register("mod").await;
    let moderator = t.set_role("mod", Role::Moderator).await;
    let private = id(&t.create_room(&owner, "secret", "private").await);
    let mut ws = t.ws(&moderator).await;
    // Staff read private rooms to moderate them.
    ws.ok("history", json!({"room": private})).await;
    ws.ok("presence", json!({"room": private})).await;

    t.app().set_role("mod", Role::User).await.unwrap();
    // The open connection ends at once and its token with it.
    assert_eq!(ws.closed().await, Closed::Code(4001));
    assert_eq!(t.get("/api/me", &moderator).await.0, 401);
    let user = t.login("mod").await;
    let mut ws = t.ws(&user).await;
    let answer = ws.request("history", json!({"room": private})).await;
    assert_eq!(answer["data"]["code"], "forbidden", "{answer}");
}

#[tokio::test]
async fn a_demoted_moderator_cannot_delete_through_a_stale_connection() {
    // The connection's copy of the user still says "moderator" between
    // the role change's commit and its close: the rule reads the store.
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    t.register("mod").await;
    t.set_role("mod", Role::Moderator).await;
    let room = id(&t.create_room(&alice, "town", "public").await);
    let mut ws = t.ws(&alice).await;
    let msg = ws
        .ok("send_message", json!({"room": room, "text": "mine"}))
        .await;
    let stale = confab::domain::User {
        role: Role::Moderator,
        ..t.app().user_by_name("mod").unwrap().public()
    };
    t.app().set_role("mod", Role::User).await.unwrap();
    let msg_id = confab::domain::Id::parse("m", msg["message"]["id"].as_str().unwrap()).unwrap();
    let err = t
        .app()
        .moderate_delete(&confab::app::Actor::User(stale.clone()), msg_id, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), confab::protocol::ErrorCode::Forbidden);
    let private = id(&t.create_room(&alice, "hidden", "private").await);
    let private = confab::domain::Id::parse("r", &private).unwrap();
    t.sync().await;
    let err = t
        .app()
        .history(
            &confab::app::Actor::User(stale),
            private,
            confab::app::page(None, None, None).unwrap(),
        )
        .unwrap_err();
    assert_eq!(err.code(), confab::protocol::ErrorCode::Forbidden);
}

#[tokio::test]
async fn a_password_change_ends_every_earlier_token_and_connection() {
    let t = TestApp::spawn().await;
    let (first, _) = t.register("alice").await;
    let second = t.login("alice").await;
    let mut ws = t.ws(&first).await;

    let (status, body) = t
        .post(
            "/api/me/password",
            &second,
            json!({"current_password": "wrong-password", "new_password": "a new secret"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = t
        .post(
            "/api/me/password",
            &second,
            json!({"current_password": "password-alice", "new_password": "short"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(t.get("/api/me", &first).await.0, 200, "nothing changed yet");

    let (status, body) = t
        .post(
            "/api/me/password",
            &second,
            json!({"current_password": "password-alice", "new_password": "a new secret"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let third = body["token"].as_str().unwrap().to_string();
    assert_eq!(ws.closed().await, Closed::Code(4001));
    assert_eq!(t.get("/api/me", &first).await.0, 401);
    assert_eq!(t.get("/api/me", &second).await.0, 401);
    assert_eq!(t.get("/api/me", &third).await.0, 200);
    t.ws(&third).await;

    // The operator's `user passwd` does the same.
    t.sync().await;
    t.app()
        .set_password(
            "alice",
            confab::domain::Password::parse("third secret").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(t.get("/api/me", &third).await.0, 401);
}

#[tokio::test]
async fn logout_ends_one_token_or_all_of_them() {
    let t = TestApp::spawn().await;
    let (first, _) = t.register("alice").await;
    let second = t.login("alice").await;
    let mut ws_first = t.ws(&first).await;
    let mut ws_second = t.ws(&second).await;

    let (status, _) = t.post("/api/auth/logout", &first, json!({})).await;
    assert_eq!(status, 204);
    assert_eq!(ws_first.closed().await, Closed::Code(4001));
    assert_eq!(t.get("/api/me", &first).await.0, 401);
    assert_eq!(t.get("/api/me", &second).await.0, 200);
    // The other device's connection is untouched.
    ws_second
        .send_json(json!({"type": "ping", "id": "p"}))
        .await;
    ws_second.next_of("pong").await;
    // A logged-out token cannot open a connection either.
    let mut again = crate::common::Ws::connect(&format!("{}?token={first}", t.ws_url)).await;
    assert_eq!(again.closed().await, Closed::Code(4001));

    let third = t.login("alice").await;
    let (status, _) = t
        .post("/api/auth/logout", &second, json!({"everywhere": true}))
        .await;
    assert_eq!(status, 204);
    assert_eq!(ws_second.closed().await, Closed::Code(4001));
    assert_eq!(t.get("/api/me", &second).await.0, 401);
    assert_eq!(t.get("/api/me", &third).await.0, 401);
    t.login("alice").await;
}

#[tokio::test]
async fn a_ban_ends_tokens_for_good_even_after_an_unban() {
    let t = TestApp::spawn().await;
    t.register("boss").await;
    let boss = t.set_role("boss", Role::Admin).await;
    let (troll, _) = t.register("troll").await;
    let mut ws = t.ws(&troll).await;
    let (status, _) = t
        .post(
            "/api/moderation/ban",
            &boss,
            json!({"username": "troll", "reason": "spam"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(ws.closed().await, Closed::Code(4003));
    let (status, _) = t
        .post("/api/moderation/unban", &boss, json!({"username": "troll"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(t.get("/api/me", &troll).await.0, 401);
    t.login("troll").await;
}

#[tokio::test]
async fn edits_and_deletes_obey_the_rules_of_sending() {
    let t = TestApp::spawn().await;
    t.register("boss").await;
    let boss = t.set_role("boss", Role::Admin).await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let room = id(&t.create_room(&boss, "town", "public").await);
    let mut ws = t.ws(&alice).await;
    let say = |text: &str| json!({"room": room, "text": text});
    let one = ws.ok("send_message", say("one")).await["message"]["id"].clone();
    let two = ws.ok("send_message", say("two")).await["message"]["id"].clone();

    // Muted in the room: no edit, no delete.
    let (status, _) = t
        .post(
            "/api/moderation/mute",
            &boss,
            json!({"username": "alice", "room": "town"}),
        )
        .await;
    assert_eq!(status, 204);
    let edit = ws
        .request("edit_message", json!({"message_id": one, "text": "spam"}))
        .await;
    assert_eq!(edit["data"]["code"], "forbidden", "{edit}");
    let del = ws
        .request("delete_message", json!({"message_id": one}))
        .await;
    assert_eq!(del["data"]["code"], "forbidden", "{del}");
    t.post(
        "/api/moderation/unmute",
        &boss,
        json!({"username": "alice", "room": "town"}),
    )
    .await;
    ws.ok("edit_message", json!({"message_id": one, "text": "fine"}))
        .await;

    // Gone from the room: no edit.
    ws.ok("leave_room", json!({"room": room})).await;
    let edit = ws
        .request("edit_message", json!({"message_id": two, "text": "spam"}))
        .await;
    assert_eq!(edit["data"]["code"], "forbidden", "{edit}");

    // In a DM, a block stops edits as it stops sends.
    let dm = ws
        .ok("send_message", json!({"to": "bob", "text": "hello"}))
        .await["message"]["id"]
        .clone();
    let (status, _) = t
        .post("/api/blocks", &bob, json!({"username": "alice"}))
        .await;
    assert_eq!(status, 204);
    let edit = ws
        .request("edit_message", json!({"message_id": dm, "text": "ha"}))
        .await;
    assert_eq!(edit["data"]["code"], "forbidden", "{edit}");

    // Staff delete anyone's message, DMs included (over HTTP too).
    let dm = dm.as_str().unwrap();
    let (status, body) = t
        .call(
            Method::DELETE,
            &format!("/api/messages/{dm}"),
            Some(&boss),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
}

#[tokio::test]
async fn concurrent_wrong_logins_cannot_pass_the_limit_nor_lock_the_owner_out() {
    let t = TestApp::spawn_with(|c| {
        c.limits.login_failures_per_account = 10;
        c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    t.register("victim").await;
    let attempt = |pw: &'static str, from: &'static str| {
        let http = t.http.clone();
        let url = format!("{}/api/auth/login", t.url);
        async move {
            http.post(url)
                .header("x-forwarded-for", from)
                .json(&json!({"username": "victim", "password": pw}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let tries: Vec<_> = (0..25)
        .map(|_| tokio::spawn(attempt("guess-guess", "203.0.113.9")))
        .collect();
    let mut wrong = 0;
    for t in tries {
        match t.await.unwrap() {
            401 => wrong += 1,
            429 => {}
            other => panic!("status {other}"),
        }
    }
    assert_eq!(wrong, 10, "every attempt past the limit is refused");
    assert_eq!(attempt("password-victim", "203.0.113.9").await, 429);
    // The owner, elsewhere, is not locked out.
    assert_eq!(attempt("password-victim", "198.51.100.7").await, 200);
}

#[tokio::test]
async fn a_blocked_user_cannot_add_the_blocker_to_a_room() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    t.post("/api/blocks", &alice, json!({"username": "bob"}))
        .await;
    for vis in ["public", "private"] {
        let room = id(&t.create_room(&bob, &format!("bobs-{vis}"), vis).await);
        let (status, body) = t
            .post(
                &format!("/api/rooms/{room}/members"),
                &bob,
                json!({"username": "alice"}),
            )
            .await;
        assert_eq!(status, 403, "{vis}: {body}");
        let (_, rooms) = t.get("/api/rooms", &alice).await;
        assert!(
            !rooms["rooms"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == room.as_str() && vis == "private"),
            "alice is not in bob's private room"
        );
    }
}

#[tokio::test]
async fn absurd_durations_are_refused_not_wrapped() {
    let t = TestApp::spawn().await;
    t.register("boss").await;
    let boss = t.set_role("boss", Role::Admin).await;
    let (troll, _) = t.register("troll").await;
    for action in ["ban", "mute"] {
        for secs in [u64::MAX, 1u64 << 63, 0] {
            let (status, body) = t
                .post(
                    &format!("/api/moderation/{action}"),
                    &boss,
                    json!({"username": "troll", "duration_secs": secs}),
                )
                .await;
            assert_eq!(status, 400, "{action} {secs}: {body}");
        }
    }
    assert_eq!(t.get("/api/me", &troll).await.0, 200, "not banned");
    let (status, _) = t
        .post(
            "/api/moderation/ban",
            &boss,
            json!({"username": "troll", "duration_secs": 3600}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = t
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "troll", "password": "password-troll"})),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn topics_refuse_direction_overrides_and_invisible_characters() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let room = id(&t.create_room(&alice, "town", "public").await);
    for topic in [
        "evil \u{202E}txt.exe",
        "a\u{200B}b",
        "\u{2066}x",
        "\u{FEFF}",
    ] {
        let (status, body) = t
            .call(
                Method::PATCH,
                &format!("/api/rooms/{room}"),
                Some(&alice),
                Some(json!({"topic": topic})),
            )
            .await;
        assert_eq!(status, 400, "{topic:?}: {body}");
    }
    // Emoji sequences joined by U+200D stay allowed.
    let (status, _) = t
        .call(
            Method::PATCH,
            &format!("/api/rooms/{room}"),
            Some(&alice),
            Some(json!({"topic": "family \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}"})),
        )
        .await;
    assert_eq!(status, 200);
    // Message text keeps them: the web client isolates it.
    let (status, _) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            &alice,
            json!({"text": "\u{202E}olleh"}),
        )
        .await;
    assert_eq!(status, 201);
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_private_whatever_it_was() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    // What an earlier version under a loose umask left behind.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("notes.txt"), b"x").unwrap();
    std::fs::set_permissions(
        data.join("notes.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // And a start under the loosest umask of all.
    // SAFETY: umask swaps the process's mask and touches no memory.
    unsafe { libc::umask(0) };
    let mut t = TestApp::spawn_with(|c| c.server.data_dir = data.clone()).await;
    let (alice, _) = t.register("alice").await;
    // An upload makes the uploads tree.
    let png = {
        let mut out = Vec::new();
        image::RgbImage::new(4, 4)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(png).file_name("a.png"),
    );
    let resp = t
        .http
        .post(format!("{}/api/uploads", t.url))
        .bearer_auth(&alice)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("notes.txt")), 0o600);
    assert_eq!(mode(&data.join("confab.redb")), 0o600);
    assert_eq!(mode(&data.join("confab.sock")) & 0o077, 0);
    let loose = confab::perms::loose(&data).unwrap();
    assert!(loose.is_empty(), "{loose:?}");
    t.stop().await;
}

/// The admin socket answers only the server's own user (or root). Needs
/// root to act as another user; elsewhere it says so and passes.
#[cfg(unix)]
#[tokio::test]
async fn the_admin_socket_refuses_other_users() {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to connect as another user");
        return;
    }
    let t = TestApp::spawn().await;
    // A socket where anyone may reach it, as if the directory were loose:
    // the peer check must hold by itself.
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = open.path().join("admin.sock");
    let listener = confab::admin::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let listening = confab::admin::Listening {
        addr: t.running.as_ref().unwrap().addr,
        url: t.url.clone(),
    };
    let server = tokio::spawn(confab::admin::serve(t.app().clone(), listener, listening));

    let ask = move |as_other: bool| {
        let path = path.clone();
        std::thread::spawn(move || {
            if as_other {
                // The raw system call changes this thread's user only
                // (glibc's setuid would change every thread's).
                // SAFETY: no memory is involved; failure is checked.
                let r = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
                assert_eq!(r, 0, "setresuid");
            }
            let mut s = match std::os::unix::net::UnixStream::connect(&path) {
                Ok(s) => s,
                Err(e) => panic!("connect as_other={as_other}: {e}"),
            };
            s.set_read_timeout(Some(crate::common::WAIT)).unwrap();
            let mut answer = String::new();
            // A refused peer may find the socket closed before it writes.
            if let Err(e) = s.write_all(b"{\"cmd\":\"status\"}\n") {
                assert!(as_other, "the server's own user could not write: {e}");
                return answer;
            }
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
                        if answer.ends_with('\n') {
                            break;
                        }
                    }
                }
            }
            answer
        })
    };
    let (mine, other) = tokio::task::spawn_blocking(move || {
        (ask(false).join().unwrap(), ask(true).join().unwrap())
    })
    .await
    .unwrap();
    assert!(mine.contains("\"ok\""), "{mine}");
    assert_eq!(other, "", "another user got an answer");
    server.abort();
}

#[tokio::test]
async fn an_admin_deletes_a_dm_over_http_a_moderator_does_not() {
    let t = TestApp::spawn().await;
    t.register("boss").await;
    let boss = t.set_role("boss", Role::Admin).await;
    t.register("mod").await;
    let moderator = t.set_role("mod", Role::Moderator).await;
    let (alice, _) = t.register("alice").await;
    t.register("bob").await;
    let (status, body) = t
        .post("/api/dm/bob/messages", &alice, json!({"text": "hi"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let dm = body["message"]["room"].as_str().unwrap().to_string();
    let path = format!("/api/rooms/{dm}");
    // Nobody but its two members reads a DM, staff included.
    assert_eq!(t.get(&path, &boss).await.0, 403);
    assert_eq!(
        t.call(Method::DELETE, &path, Some(&moderator), None)
            .await
            .0,
        403
    );
    let (status, body) = t.call(Method::DELETE, &path, Some(&boss), None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(t.get(&path, &alice).await.0, 404);
}
