//! The built `confab` binary, run as an operator would.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Closed, TestApp};

/// Runs `confab ARGS --data-dir DIR`, with `stdin` fed in, off the test's
/// runtime thread (the server under test runs there). Password hashing is
/// made cheap for the CLI's own process too.
async fn confab(dir: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || confab_blocking(&dir, &args, &stdin))
        .await
        .expect("confab runs")
}

fn confab_blocking(dir: &std::path::Path, args: &[String], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("CONFAB_AUTH_ARGON2_MEMORY_KIB", "64")
        .env("CONFAB_AUTH_ARGON2_ITERATIONS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("confab runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    child.wait_with_output().expect("confab finishes")
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "confab failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn login(t: &TestApp, name: &str, password: &str) -> (u16, Value) {
    t.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"username": name, "password": password})),
    )
    .await
}

#[tokio::test]
async fn user_add_without_a_server_then_login() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(confab(
        dir.path(),
        &["user", "add", "root", "--role", "admin", "--password-stdin"],
        "correct-horse\n",
    )
    .await);
    assert!(out.contains("root (admin)"), "{out}");
    let t = TestApp::spawn_in(dir, |_| {}).await;
    let (status, body) = login(&t, "root", "correct-horse").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["role"], "admin");
}

#[tokio::test]
async fn user_commands_work_while_the_server_runs() {
    let t = TestApp::spawn().await;
    let dir = t.dir.path();
    // Added through the admin socket: the running server knows at once.
    ok(confab(
        dir,
        &[
            "user",
            "add",
            "mod1",
            "--role",
            "moderator",
            "--password-stdin",
        ],
        "mod1-password\n",
    )
    .await);
    let (status, body) = login(&t, "mod1", "mod1-password").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["role"], "moderator");

    let list = ok(confab(dir, &["user", "list", "--json"], "").await);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["users"][0]["username"], "mod1");
    let table = ok(confab(dir, &["user", "list"], "").await);
    assert!(table.starts_with("USERNAME"), "{table}");
    assert!(
        table.contains("mod1") && table.contains("moderator"),
        "{table}"
    );

    ok(confab(
        dir,
        &["user", "passwd", "mod1", "--password-stdin"],
        "new-password-1\n",
    )
    .await);
    assert_eq!(login(&t, "mod1", "mod1-password").await.0, 401);
    assert_eq!(login(&t, "mod1", "new-password-1").await.0, 200);

    ok(confab(dir, &["user", "role", "mod1", "admin"], "").await);
    let show = ok(confab(dir, &["user", "show", "mod1"], "").await);
    assert!(show.contains("admin"), "{show}");

    // Errors are clear and the exit code says so.
    let out = confab(
        dir,
        &["user", "add", "x", "--password-stdin"],
        "long-enough\n",
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("username"));
    let out = confab(
        dir,
        &["user", "add", "mod1", "--password-stdin"],
        "long-enough\n",
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken"));
}

#[tokio::test]
async fn user_delete_while_running_ends_tokens_and_connections() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("doomed").await;
    let mut ws = t.ws(&token).await;
    assert_eq!(t.get("/api/me", &token).await.0, 200);
    ok(confab(t.dir.path(), &["user", "delete", "doomed"], "").await);
    assert_eq!(t.get("/api/me", &token).await.0, 401);
    assert_eq!(ws.closed().await, Closed::Code(4001));
    assert_eq!(login(&t, "doomed", "password-doomed").await.0, 401);
}

#[tokio::test]
async fn room_commands_with_and_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    ok(confab(
        dir.path(),
        &["room", "create", "lobby", "--topic", "say hi"],
        "",
    )
    .await);
    ok(confab(
        dir.path(),
        &["user", "add", "ann", "--password-stdin"],
        "ann-password\n",
    )
    .await);
    let t = TestApp::spawn_in(dir, |_| {}).await;
    let dir = t.dir.path();
    ok(confab(dir, &["room", "create", "staff", "--private"], "").await);
    ok(confab(dir, &["room", "add-member", "staff", "ann"], "").await);
    let list = ok(confab(dir, &["room", "list"], "").await);
    assert!(list.contains("lobby") && list.contains("say hi"), "{list}");
    assert!(list.contains("staff") && list.contains("private"), "{list}");
    let show: Value =
        serde_json::from_str(&ok(
            confab(dir, &["room", "show", "staff", "--json"], "").await
        ))
        .unwrap();
    assert_eq!(show["members"][0]["username"], "ann");

    let (_, body) = login(&t, "ann", "ann-password").await;
    let token = body["token"].as_str().unwrap().to_string();
    let (_, rooms) = t.get("/api/rooms", &token).await;
    assert_eq!(rooms["rooms"].as_array().unwrap().len(), 2, "{rooms}");

    ok(confab(dir, &["room", "delete", "staff"], "").await);
    let (_, rooms) = t.get("/api/rooms", &token).await;
    assert_eq!(rooms["rooms"].as_array().unwrap().len(), 1, "{rooms}");
    let out = confab(dir, &["room", "show", "staff"], "").await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[tokio::test]
async fn user_friends_lists_friends_with_and_without_a_server() {
    let mut t = TestApp::spawn().await;
    let (ann, _) = t.register("ann").await;
    let (bo, _) = t.register("bo.b").await;
    t.register("cyd").await;
    let (status, _) = t
        .post("/api/friends/requests", &ann, json!({"username": "bo.b"}))
        .await;
    assert_eq!(status, 204);
    let (status, _) = t
        .post("/api/friends/requests/ann/accept", &bo, json!({}))
        .await;
    assert_eq!(status, 204);
    let _online = t.ws(&bo).await;

    let dir = t.dir.path().to_path_buf();
    let out: Value =
        serde_json::from_str(&ok(
            confab(&dir, &["user", "friends", "ann", "--json"], "").await
        ))
        .unwrap();
    assert_eq!(out["friends"][0]["user"]["username"], "bo.b");
    assert_eq!(out["friends"][0]["online"], true);
    let table = ok(confab(&dir, &["user", "friends", "ann"], "").await);
    assert!(table.starts_with("USERNAME"), "{table}");
    assert!(table.contains("bo.b") && table.contains("yes"), "{table}");
    assert!(!table.contains("cyd"), "{table}");
    let none = ok(confab(&dir, &["user", "friends", "cyd"], "").await);
    assert!(none.contains("(none)"), "{none}");

    t.stop().await;
    let table = ok(confab(&dir, &["user", "friends", "bo.b"], "").await);
    assert!(table.contains("ann") && table.contains("no"), "{table}");
    let out = confab(&dir, &["user", "friends", "nobody"], "").await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[tokio::test]
async fn a_bad_config_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nbindd = \"127.0.0.1:1\"\n").unwrap();
    let out = confab(
        dir.path(),
        &["user", "list", "--config", path.to_str().unwrap()],
        "",
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.bindd"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn help_explains_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_confab"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "user", "room"] {
        assert!(text.contains(cmd), "{text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["user", "add", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--password-stdin") && text.contains("--role"),
        "{text}"
    );
}

#[tokio::test]
async fn upload_commands_list_delete_and_collect() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("pat").await;
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image::RgbImage::new(40, 30))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let part = reqwest::multipart::Part::bytes(png.get_ref().clone()).file_name("p.png");
        let body: Value = t
            .http
            .post(format!("{}/api/uploads", t.url))
            .bearer_auth(&token)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    let dir = t.dir.path();
    let list = ok(confab(dir, &["upload", "list", "--user", "pat"], "").await);
    assert!(list.contains(&ids[0]) && list.contains("40x30"), "{list}");
    assert!(list.contains("bytes of the upload quota used"), "{list}");
    ok(confab(dir, &["upload", "delete", &ids[0]], "").await);
    let list: Value =
        serde_json::from_str(&ok(confab(dir, &["upload", "list", "--json"], "").await)).unwrap();
    assert_eq!(list["uploads"].as_array().unwrap().len(), 1);
    let out = ok(confab(dir, &["upload", "gc", "--grace", "0"], "").await);
    assert!(out.contains("removed 1"), "{out}");
    let list: Value =
        serde_json::from_str(&ok(confab(dir, &["upload", "list", "--json"], "").await)).unwrap();
    assert_eq!(list["uploads"], json!([]));
    let resp = t
        .http
        .get(format!("{}/uploads/{}", t.url, ids[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn moderation_commands_act_live_and_are_audited() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("rowdy").await;
    let mut ws = t.ws(&token).await;
    let dir = t.dir.path();
    ok(confab(dir, &["announce", "hello everyone"], "").await);
    assert_eq!(
        ws.next_of("announcement").await["data"]["text"],
        "hello everyone"
    );
    let out = ok(confab(dir, &["user", "kick", "rowdy", "--reason", "calm down"], "").await);
    assert!(out.contains("1 connections closed"), "{out}");
    assert_eq!(ws.closed().await, Closed::Code(4003));
    ok(confab(dir, &["user", "ban", "rowdy", "--for", "1h"], "").await);
    assert_eq!(login(&t, "rowdy", "password-rowdy").await.0, 403);
    ok(confab(dir, &["user", "unban", "rowdy"], "").await);
    assert_eq!(login(&t, "rowdy", "password-rowdy").await.0, 200);
    let bad = confab(dir, &["user", "ban", "rowdy", "--for", "forever"], "").await;
    assert!(!bad.status.success());
    let audit: Value =
        serde_json::from_str(&ok(confab(dir, &["audit", "--json"], "").await)).unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["announce", "kick", "ban", "unban"]);
    assert_eq!(audit["entries"][1]["reason"], "calm down");
    assert_eq!(audit["entries"][1]["actor"], "operator");
    let table = ok(confab(dir, &["audit", "--since", "1h"], "").await);
    assert!(
        table.starts_with("TIME") && table.contains("kick"),
        "{table}"
    );
}

fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn json_of(out: Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn audit_actions(dir: &std::path::Path) -> Vec<String> {
    let audit = json_of(confab(dir, &["audit", "--json"], "").await);
    audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn bans_and_mutes_show_in_user_show_and_list_and_in_their_own_lists() {
    let mut t = TestApp::spawn().await;
    let (token, _) = t.register("bob").await;
    t.register("carol").await;
    t.create_room(&token, "general", "public").await;
    let dir = t.dir.path().to_path_buf();
    let dir = dir.as_path();
    ok(confab(
        dir,
        &[
            "user",
            "ban",
            "bob",
            "--for",
            "1h",
            "--reason",
            "spam links",
        ],
        "",
    )
    .await);
    ok(confab(
        dir,
        &[
            "user", "mute", "carol", "--room", "general", "--reason", "flooding",
        ],
        "",
    )
    .await);
    ok(confab(dir, &["user", "mute", "carol", "--for", "10m"], "").await);

    let show = ok(confab(dir, &["user", "show", "bob"], "").await);
    assert!(
        show.contains("banned    until 2") && show.contains("(spam links)"),
        "{show}"
    );
    assert!(show.contains("muted     no"), "{show}");
    let show = ok(confab(dir, &["user", "show", "carol"], "").await);
    assert!(show.contains("banned    no"), "{show}");
    assert!(
        show.contains("everywhere until 2") && show.contains("in general until lifted (flooding)"),
        "{show}"
    );
    let show = json_of(confab(dir, &["user", "show", "bob", "--json"], "").await);
    assert_eq!(show["banned"]["reason"], "spam links");
    assert!(show["banned"]["until"].as_i64().is_some(), "{show}");

    let list = ok(confab(dir, &["user", "list"], "").await);
    let line = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        list.starts_with("USERNAME") && list.contains("STATUS"),
        "{list}"
    );
    assert!(line("bob ").contains("banned until"), "{list}");
    assert!(
        line("carol").contains("muted in general until lifted (flooding)"),
        "{list}"
    );
    let list = json_of(confab(dir, &["user", "list", "--json"], "").await);
    let carol = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "carol")
        .unwrap();
    assert_eq!(carol["mutes"].as_array().unwrap().len(), 2, "{carol}");
    assert_eq!(carol["banned"], Value::Null);

    let bans = ok(confab(dir, &["user", "bans"], "").await);
    assert!(bans.starts_with("USERNAME  UNTIL"), "{bans}");
    assert!(
        bans.contains("bob") && bans.contains("spam links"),
        "{bans}"
    );
    assert!(!bans.contains("carol"), "{bans}");
    let mutes = json_of(confab(dir, &["user", "mutes", "--json"], "").await);
    let mutes = mutes["mutes"].as_array().unwrap();
    assert_eq!(mutes.len(), 2);
    assert_eq!(mutes[0]["room"], Value::Null);
    assert_eq!(mutes[1]["room"], "general");
    assert_eq!(mutes[1]["until"], Value::Null);
    assert_eq!(mutes[1]["by"], "operator");

    // The same without a server, from the store.
    t.stop().await;
    let mutes = ok(confab(dir, &["user", "mutes"], "").await);
    assert!(mutes.starts_with("USERNAME  ROOM"), "{mutes}");
    assert!(
        mutes.contains("everywhere") && mutes.contains("general") && mutes.contains("until lifted"),
        "{mutes}"
    );
    let bans = json_of(confab(dir, &["user", "bans", "--json"], "").await);
    assert_eq!(bans["bans"][0]["username"], "bob");
}

#[tokio::test]
async fn lifting_a_ban_or_mute_that_is_not_there_is_an_error_and_not_audited() {
    let t = TestApp::spawn().await;
    t.register("mod").await;
    let moderator = t.set_role("mod", confab::domain::Role::Moderator).await;
    t.register("bob").await;
    t.create_room(&moderator, "general", "public").await;
    let dir = t.dir.path();
    let out = confab(dir, &["user", "unban", "bob"], "").await;
    assert!(!out.status.success());
    assert!(err(&out).contains("bob is not banned"), "{}", err(&out));
    let out = confab(dir, &["user", "unmute", "bob"], "").await;
    assert!(!out.status.success());
    assert!(
        err(&out).contains("bob is not muted everywhere"),
        "{}",
        err(&out)
    );
    ok(confab(dir, &["user", "mute", "bob", "--room", "general"], "").await);
    // A mute in one room is not a mute everywhere.
    let out = confab(dir, &["user", "unmute", "bob"], "").await;
    assert!(!out.status.success());
    let (status, body) = t
        .post(
            "/api/moderation/unban",
            &moderator,
            json!({"username": "bob"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["message"], "bob is not banned", "{body}");
    assert_eq!(audit_actions(dir).await, vec!["mute"]);
    ok(confab(dir, &["user", "unmute", "bob", "--room", "general"], "").await);
    assert_eq!(audit_actions(dir).await, vec!["mute", "unmute"]);
}

#[tokio::test]
async fn kick_and_announce_need_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ok(confab(
        dir,
        &["user", "add", "bob", "--password-stdin"],
        "bob-password\n",
    )
    .await);
    for args in [
        &["announce", "maintenance at noon"][..],
        &["user", "kick", "bob", "--reason", "x"][..],
    ] {
        let out = confab(dir, args, "").await;
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err(&out).contains("error: no server is running: "),
            "{args:?}: {}",
            err(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // The store's own changes still work, and nothing claimed was done.
    assert_eq!(audit_actions(dir).await, vec!["user_add"]);
}

#[tokio::test]
async fn room_set_changes_only_the_options_given_and_room_show_prints_retention() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ok(confab(dir, &["room", "create", "lobby"], "").await);
    let show = ok(confab(dir, &["room", "show", "lobby"], "").await);
    assert!(
        show.contains(
            "retention   age server default (kept forever); count server default (no cap)"
        ),
        "{show}"
    );
    ok(confab(dir, &["room", "set", "lobby", "--retention", "30d"], "").await);
    let out = ok(confab(dir, &["room", "set", "lobby", "--keep-last", "100"], "").await);
    assert_eq!(out.trim(), "lobby: age 30 days; count the newest 100");
    let show = ok(confab(dir, &["room", "show", "lobby"], "").await);
    assert!(
        show.contains("retention   age 30 days; count the newest 100"),
        "{show}"
    );
    ok(confab(dir, &["room", "set", "lobby", "--retention", "default"], "").await);
    let show = json_of(confab(dir, &["room", "show", "lobby", "--json"], "").await);
    assert_eq!(show["retention"]["max_age_secs"], Value::Null);
    assert_eq!(show["retention"]["keep_last"], 100);
    let out = confab(dir, &["room", "set", "lobby"], "").await;
    assert!(!out.status.success());
    assert!(err(&out).contains("nothing to change"), "{}", err(&out));
}

/// Runs confab with standard output a pipe nobody reads any more.
fn confab_into_closed_pipe(dir: &std::path::Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("confab runs")
}

#[tokio::test]
async fn a_closed_standard_output_ends_any_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    ok(confab(&d, &["room", "create", "lobby", "--topic", "hi"], "").await);
    ok(confab(
        &d,
        &["user", "add", "ann", "--password-stdin"],
        "ann-password\n",
    )
    .await);
    let commands: Vec<Vec<&str>> = vec![
        vec!["export", "lobby"],
        vec!["export", "lobby", "--format", "ndjson"],
        vec!["user", "list"],
        vec!["user", "show", "ann"],
        vec!["room", "list", "--json"],
        vec!["room", "show", "lobby"],
        vec!["audit"],
        vec!["check"],
        vec!["check", "--json"],
        vec!["user", "bans"],
    ];
    for args in commands {
        let d = d.clone();
        let out = tokio::task::spawn_blocking(move || confab_into_closed_pipe(&d, &args))
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{:?}: {:?} {}",
            out.status,
            out.status.code(),
            err(&out)
        );
        assert!(err(&out).is_empty(), "{}", err(&out));
    }
}

#[tokio::test]
async fn check_json_is_json_and_reports_where_the_server_listens() {
    let dir = tempfile::tempdir().unwrap();
    let report = json_of(confab(dir.path(), &["check", "--json"], "").await);
    assert_eq!(report["config"]["ok"], true);
    assert_eq!(report["server"]["running"], false);
    assert_eq!(report["store"]["exists"], false);

    let t = TestApp::spawn_in(dir, |_| {}).await;
    let addr = t.running.as_ref().unwrap().addr.to_string();
    let report = json_of(confab(t.dir.path(), &["check", "--json"], "").await);
    assert_eq!(report["server"]["running"], true);
    assert_eq!(report["server"]["listen"], addr.as_str(), "{report}");
    assert_eq!(report["server"]["url"], t.url.as_str());
    // The configured address is the CLI's config, not the server's.
    assert_eq!(report["config"]["listen"], "127.0.0.1:8080");
    let table = ok(confab(t.dir.path(), &["check"], "").await);
    assert!(table.contains(&format!("listening on {addr}")), "{table}");
}

#[tokio::test]
async fn json_says_what_mute_unmute_passwd_and_announce_did() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("bob").await;
    t.create_room(&token, "general", "public").await;
    let dir = t.dir.path();
    let v = json_of(
        confab(
            dir,
            &["user", "mute", "bob", "--reason", "flooding", "--json"],
            "",
        )
        .await,
    );
    assert_eq!(
        v,
        json!({"muted": "bob", "room": null, "until": null, "reason": "flooding"})
    );
    let v = json_of(
        confab(
            dir,
            &[
                "user", "mute", "bob", "--room", "general", "--for", "1h", "--json",
            ],
            "",
        )
        .await,
    );
    assert_eq!(v["room"], "general");
    assert!(
        v["until"].as_i64().unwrap() > confab::domain::now_ms(),
        "{v}"
    );
    let v = json_of(confab(dir, &["user", "unmute", "bob", "--json"], "").await);
    assert_eq!(v, json!({"unmuted": "bob", "room": null}));
    let v = json_of(
        confab(
            dir,
            &["user", "passwd", "bob", "--password-stdin", "--json"],
            "another-password\n",
        )
        .await,
    );
    assert_eq!(v["password_changed"]["username"], "bob");
    let v = json_of(
        confab(
            dir,
            &["announce", "hello", "--room", "general", "--json"],
            "",
        )
        .await,
    );
    assert_eq!(v, json!({"announced": "hello", "room": "general"}));
    let v = json_of(confab(dir, &["user", "kick", "bob", "--json"], "").await);
    assert_eq!(v["kicked"], "bob");
}

#[test]
fn server_logs_carry_no_colour_when_stderr_is_not_a_terminal() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("confab serve runs");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("confab listening on"), "{line:?}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("confab is listening"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs:?}");
}

#[tokio::test]
async fn reasons_with_control_characters_are_refused_and_old_ones_print_escaped() {
    let t = TestApp::spawn().await;
    t.register("mod").await;
    let moderator = t.set_role("mod", confab::domain::Role::Moderator).await;
    let (member, _) = t.register("bob").await;
    let room = t.create_room(&member, "general", "public").await;
    let (_, sent) = t
        .post(
            &format!("/api/rooms/{}/messages", room["id"].as_str().unwrap()),
            &member,
            json!({"text": "hi"}),
        )
        .await;
    let message = sent["message"]["id"].as_str().unwrap().to_string();
    let evil = "\u{1b}]0;pwned\u{7}\u{1b}[2J";
    for action in ["kick", "ban", "mute"] {
        let (status, body) = t
            .post(
                &format!("/api/moderation/{action}"),
                &moderator,
                json!({"username": "bob", "reason": evil}),
            )
            .await;
        assert_eq!(status, 400, "{action}: {body}");
        assert!(body.to_string().contains("reason"), "{body}");
    }
    let long = "x".repeat(501);
    let (status, _) = t
        .post(
            "/api/moderation/ban",
            &moderator,
            json!({"username": "bob", "reason": long}),
        )
        .await;
    assert_eq!(status, 400);
    let dir = t.dir.path();
    for args in [
        &["user", "ban", "bob", "--reason", evil][..],
        &["user", "mute", "bob", "--reason", evil][..],
        &["user", "kick", "bob", "--reason", evil][..],
        &["message", "delete", &message, "--reason", evil][..],
    ] {
        let out = confab(dir, args, "").await;
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err(&out).contains("reason: must not contain control characters"),
            "{}",
            err(&out)
        );
    }
    assert_eq!(login(&t, "bob", "password-bob").await.0, 200);
    assert!(audit_actions(dir).await.is_empty());

    // A reason stored before reasons were checked still cannot reach the
    // operator's terminal raw.
    t.app()
        .store
        .run::<()>(confab::store::Command::Audit(confab::store::AuditEntry {
            seq: 0,
            at: confab::domain::now_ms(),
            actor: "operator".into(),
            action: "ban".into(),
            target: "bob".into(),
            reason: Some(evil.into()),
            details: Value::Null,
        }))
        .await
        .unwrap();
    let out = confab(dir, &["audit"], "").await;
    let table = ok(out);
    assert!(
        !table.contains('\u{1b}') && !table.contains('\u{7}'),
        "{table:?}"
    );
    assert!(table.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"), "{table}");
}

#[cfg(unix)]
#[tokio::test]
async fn check_reports_a_data_directory_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let t = TestApp::spawn_in(dir, |_| {}).await;
    let data = t.dir.path();
    let report = json_of(confab(data, &["check", "--json"], "").await);
    assert_eq!(report["data_dir"]["private"], true, "{report}");
    // What a copy made under a loose umask would look like.
    let db = data.join("confab.redb");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let report = json_of(confab(data, &["check", "--json"], "").await);
    assert_eq!(report["data_dir"]["private"], false, "{report}");
    let loose = report["data_dir"]["loose"].as_array().unwrap();
    assert!(
        loose
            .iter()
            .any(|l| l["mode"] == "644" && l["path"].as_str().unwrap().ends_with("confab.redb")),
        "{report}"
    );
    let table = ok(confab(data, &["check"], "").await);
    assert!(table.contains("open to other users"), "{table}");
    assert!(table.contains("644"), "{table}");
}

#[tokio::test]
async fn bot_and_hook_commands_with_and_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    ok(confab(dir.path(), &["room", "create", "ops", "--private"], "").await);
    ok(confab(dir.path(), &["bot", "add", "robot", "--rooms", "ops"], "").await);
    let made = json_of(
        confab(
            dir.path(),
            &[
                "bot",
                "token",
                "add",
                "robot",
                "--scopes",
                "read,send",
                "--json",
            ],
            "",
        )
        .await,
    );
    let offline_token = made["token"].as_str().unwrap().to_string();
    assert_eq!(made["info"]["actions"], json!(["read", "send"]));
    let bad = confab(
        dir.path(),
        &["bot", "token", "add", "robot", "--scopes", "read,fly"],
        "",
    )
    .await;
    assert!(!bad.status.success());
    assert!(err(&bad).contains("fly"), "{}", err(&bad));

    let t = TestApp::spawn_in(dir, |_| {}).await;
    let dir = t.dir.path();
    let room = t.app().find_room("ops").unwrap().id.to_string();
    let (status, body) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            &offline_token,
            json!({"text": "made offline"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // While the server runs: a token shown once, listed by id only.
    let out = ok(confab(dir, &["bot", "token", "add", "robot"], "").await);
    let live_token = out
        .lines()
        .find(|l| l.starts_with("cfb_"))
        .expect("the token is printed")
        .to_string();
    let list = ok(confab(dir, &["bot", "list"], "").await);
    assert!(
        list.contains("robot") && list.contains("read,send,react"),
        "{list}"
    );
    assert!(!list.contains(&live_token[4..]), "{list}");
    let bots = json_of(confab(dir, &["bot", "list", "--json"], "").await);
    let first = bots["bots"][0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["actions"] == json!(["read", "send"]))
        .expect("the offline token")["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(confab(dir, &["bot", "token", "revoke", &first], "").await);
    let (status, _) = t.get("/api/me", &offline_token).await;
    assert_eq!(status, 401);
    let (status, _) = t.get("/api/me", &live_token).await;
    assert_eq!(status, 200);

    // A hook's URL is whole when the server runs.
    let hook = json_of(confab(dir, &["room", "hook", "add", "ops", "--json"], "").await);
    let url = hook["hook"]["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&t.url), "{url}");
    let resp = t
        .http
        .post(&url)
        .json(&json!({"text": "from the hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let hooks = ok(confab(dir, &["room", "hook", "list", "ops"], "").await);
    assert!(hooks.contains("hook-"), "{hooks}");
    let hook_id = hook["hook"]["id"].as_str().unwrap().to_string();
    ok(confab(dir, &["room", "hook", "remove", &hook_id], "").await);
    ok(confab(dir, &["bot", "remove", "robot"], "").await);
    let (status, _) = t.get("/api/me", &live_token).await;
    assert_eq!(status, 401);
    let actions = audit_actions(dir).await;
    for a in [
        "bot_add",
        "bot_token_add",
        "bot_token_revoke",
        "hook_add",
        "hook_remove",
        "bot_remove",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} audited: {actions:?}");
    }
}
