//! Faults: a store that cannot write must fail sends with `unavailable`,
//! never acknowledge one falsely, and keep serving.

use std::io::Write;
use std::process::Command;

use serde_json::json;

use crate::common::TestApp;

/// A small tmpfs to fill up. Needs root (CI runs as root); elsewhere the
/// test says so and passes without running.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?
            .success();
        ok.then_some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_sends_and_acks_nothing_it_lost() {
    let Some(disk) = SmallDisk::mount("16m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let data = disk.0.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let holder = tempfile::tempdir_in(disk.0.path()).unwrap();
    let t = TestApp::spawn_with(|c| c.server.data_dir = data.clone()).await;
    let (token, _) = t.register("alice").await;
    let room = t.create_room(&token, "full", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    let mut ws = t.ws(&token).await;
    ws.ok("send_message", json!({"room": room, "text": "before"}))
        .await;

    // Fill the disk, leaving no room for the store to grow.
    let mut filler = std::fs::File::create(holder.path().join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while filler.write_all(&chunk).is_ok() {}
    let _ = filler.flush();

    let text = "x".repeat(3000);
    let mut acked = vec!["before".to_string()];
    let mut failed = 0;
    for i in 0..3000 {
        let body = format!("{i}{text}");
        let answer = ws
            .request("send_message", json!({"room": room, "text": body}))
            .await;
        if answer["type"] == "ack" {
            acked.push(body);
        } else {
            assert_eq!(answer["data"]["code"], "unavailable", "{answer}");
            failed += 1;
            if failed == 3 {
                break;
            }
        }
    }
    assert!(failed > 0, "the disk never filled");
    eprintln!("full disk: {} acked, {failed} refused", acked.len());
    // The server is still up, and what it acknowledged is there.
    let (status, _) = t.get("/api/me", &token).await;
    assert_eq!(status, 200);
    let stored: Vec<String> = t
        .history_all(&token, &room)
        .await
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        stored, acked,
        "exactly the acknowledged messages are stored"
    );
    drop(filler);
    drop(holder);
    let mut t = t;
    t.stop().await;
    drop(disk);
}
