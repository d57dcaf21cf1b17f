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
