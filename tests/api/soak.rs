//! Soak: many clients connecting, chatting and dropping at random for a
//! while; at the end every acked message is in history exactly once, with
//! gapless seqs. Ignored by default; `.ci/run` runs it briefly with
//! `SOAK_SECS`, and by hand it can run as long as you like.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{TestApp, Ws};

/// xorshift: random enough to shuffle a soak, with no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long-running; run with SOAK_SECS=N cargo test -- --ignored soak"]
async fn soak_loses_and_duplicates_nothing() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let t = TestApp::spawn().await;
    let (owner, _) = t.register("owner").await;
    let mut rooms = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        rooms.push(
            t.create_room(&owner, name, "public").await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for n in 0..16u64 {
        let (token, _) = t.register(&format!("soaker{n}")).await;
        let url = format!("{}?token={token}", t.ws_url);
        let rooms = rooms.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
            let mut acked: Vec<(String, String)> = Vec::new();
            let mut sessions = 0;
            while Instant::now() < deadline {
                sessions += 1;
                let mut ws = Ws::connect(&url).await;
                ws.next_of("authenticated").await;
                for _ in 0..rng.next(8) + 1 {
                    let room = &rooms[rng.next(rooms.len() as u64) as usize];
                    let cid = format!("{n}-{sessions}-{}", acked.len());
                    let ack = ws
                        .ok(
                            "send_message",
                            json!({"room": room, "text": cid, "client_msg_id": cid}),
                        )
                        .await;
                    acked.push((
                        room.clone(),
                        ack["message"]["id"].as_str().unwrap().to_string(),
                    ));
                    if rng.next(10) == 0 {
                        break;
                    }
                }
                // Leave politely or just vanish.
                if rng.next(2) == 0 {
                    let _ = ws.stream.close(None).await;
                }
                drop(ws);
            }
            acked
        }));
    }
    let mut acked: HashMap<String, Vec<String>> = HashMap::new();
    let mut total = 0;
    for task in tasks {
        for (room, id) in task.await.unwrap() {
            acked.entry(room).or_default().push(id);
            total += 1;
        }
    }
    assert!(total > 0);
    for room in &rooms {
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut seqs = Vec::new();
        for m in t.history_all(&owner, room).await {
            *ids.entry(m["id"].as_str().unwrap().to_string())
                .or_default() += 1;
            seqs.push(m["seq"].as_u64().unwrap());
        }
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gapless");
        for id in acked.get(room).into_iter().flatten() {
            assert_eq!(ids.get(id), Some(&1), "acked message {id} once");
        }
        assert_eq!(
            ids.len(),
            acked.get(room).map(Vec::len).unwrap_or(0),
            "nothing unacked stored"
        );
    }
    eprintln!("soak: {total} messages acked over {secs} s");
}
