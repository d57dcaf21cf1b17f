//! What an ack promises: the message is on disk. The server runs as a child
//! process and is killed with SIGKILL right after the acks.

use std::process::{Child, Command};

use reqwest::Method;
use serde_json::json;

use crate::common::{Ws, spawn_child};

struct Server {
    child: Child,
    url: String,
}

fn start(dir: &std::path::Path) -> Server {
    let (child, url) = spawn_child(
        dir,
        &[
            ("CONFAB_LIMITS_FRAMES_PER_SEC", "100000"),
            ("CONFAB_LIMITS_FRAMES_BURST", "100000"),
        ],
    );
    Server { child, url }
}

async fn register(http: &reqwest::Client, url: &str, name: &str) -> String {
    let body: serde_json::Value = http
        .request(Method::POST, format!("{url}/api/auth/register"))
        .json(&json!({"username": name, "password": "password-123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["token"].as_str().expect("token").to_string()
}

async fn create_room(http: &reqwest::Client, url: &str, token: &str, name: &str) -> String {
    let body: serde_json::Value = http
        .post(format!("{url}/api/rooms"))
        .bearer_auth(token)
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["room"]["id"].as_str().expect("room id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = tokio::task::block_in_place(|| start(dir.path()));
    let token = register(&http, &server.url, "alice").await;
    let room = create_room(&http, &server.url, &token, "durable").await;

    // Several connections sending at once, so commits carry groups.
    let ws_url = format!(
        "{}/ws?token={token}",
        server.url.replace("http://", "ws://")
    );
    let mut tasks = Vec::new();
    for n in 0..4 {
        let url = ws_url.clone();
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            let mut ws = Ws::connect(&url).await;
            ws.next_of("authenticated").await;
            let mut acked = Vec::new();
            for i in 0..50 {
                let ack = ws
                    .ok(
                        "send_message",
                        json!({"room": room, "text": format!("{n}:{i}")}),
                    )
                    .await;
                acked.push(ack["message"]["id"].as_str().unwrap().to_string());
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();

    let server = tokio::task::block_in_place(|| start(dir.path()));
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page: serde_json::Value = http
            .get(format!(
                "{}/api/rooms/{room}/messages?after={after}&limit=200",
                server.url
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for m in page["messages"].as_array().unwrap() {
            all.push((
                m["seq"].as_u64().unwrap(),
                m["id"].as_str().unwrap().to_string(),
            ));
        }
        after = all.last().map(|(s, _)| *s).unwrap_or(0);
        if page["has_more"] == false {
            break;
        }
    }
    let seqs: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    let ids: std::collections::HashSet<&String> = all.iter().map(|(_, id)| id).collect();
    for id in &acked {
        assert!(ids.contains(id), "acked message {id} was lost");
    }
    let mut server = server;
    server.child.kill().ok();
    server.child.wait().ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_with_1001_and_keeps_every_acked_message() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = tokio::task::block_in_place(|| start(dir.path()));
    let token = register(&http, &server.url, "bob").await;
    let room = create_room(&http, &server.url, &token, "graceful").await;
    let ws_url = format!(
        "{}/ws?token={token}",
        server.url.replace("http://", "ws://")
    );
    let mut ws = Ws::connect(&ws_url).await;
    ws.next_of("authenticated").await;
    for i in 0..100 {
        ws.ok(
            "send_message",
            json!({"room": room, "text": format!("g{i}")}),
        )
        .await;
    }
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    assert_eq!(ws.closed().await, crate::common::Closed::Code(1001));
    let status = server.child.wait().unwrap();
    assert!(status.success(), "clean exit: {status:?}");

    let mut server = tokio::task::block_in_place(|| start(dir.path()));
    let page: serde_json::Value = http
        .get(format!(
            "{}/api/rooms/{room}/messages?limit=200",
            server.url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, (0..100).map(|i| format!("g{i}")).collect::<Vec<_>>());
    server.child.kill().ok();
    server.child.wait().ok();
}
