//! The engine (store::engine) against a real nats-server cluster started by
//! natsctl. Tests that kill nothing share one 3-member cluster, each in its
//! own namespace; tests that kill members get a cluster of their own.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab::natsctl::NatsCluster;
use confab::store::engine::{Engine, EngineConfig, EngineError};
use futures_util::StreamExt;
use tokio::sync::{OnceCell, mpsc};

/// How long a test waits for something that should happen at once. Not a
/// sleep: the wait ends when it happens.
const WAIT: Duration = Duration::from_secs(10);

/// The cluster the tests that kill nothing share. A static is never
/// dropped: its members die with the test process (natsctl makes sure),
/// and its files live under the target dir, where the next run removes
/// them.
async fn shared() -> &'static NatsCluster {
    static SHARED: OnceCell<NatsCluster> = OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
            remove_stale_dirs(base);
            let dir = base.join(format!("engine-nats-{}", std::process::id()));
            NatsCluster::start_in(3, &dir)
                .await
                .expect("the shared nats-server cluster starts")
        })
        .await
}

/// Shared clusters' dirs left by earlier test processes.
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("engine-nats-") else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A namespace no other test uses.
fn namespace(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("t_{test}_{}", N.fetch_add(1, Ordering::Relaxed))
}

fn config(urls: Vec<String>, node: &str, ns: &str) -> EngineConfig {
    let mut c = EngineConfig::new(urls, node);
    c.namespace = ns.to_string();
    c
}

async fn connect(cfg: EngineConfig) -> Engine {
    Engine::connect(cfg).await.expect("the engine connects")
}

/// The next `n` entries a follower delivers, each within WAIT.
async fn take(rx: &mut mpsc::Receiver<(u64, Bytes)>, n: usize) -> Vec<(u64, Bytes)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let e = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("entry {} of {n} did not arrive; got {out:?}", out.len()))
            .expect("the follower runs");
        out.push(e);
    }
    out
}

#[tokio::test]
async fn appended_entries_follow_in_order_from_any_position() {
    let cluster = shared().await;
    let engine = connect(config(cluster.urls(), "a", &namespace("follow"))).await;
    assert_eq!(engine.last_position().await.unwrap(), 0);

    let mut written = Vec::new();
    for i in 1..=30u128 {
        let payload = Bytes::from(format!("entry {i}"));
        let pos = engine.append(i, payload.clone()).await.expect("append");
        written.push((pos, payload));
    }
    let positions: Vec<u64> = written.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, (1..=30).collect::<Vec<u64>>());
    assert_eq!(engine.last_position().await.unwrap(), 30);

    let mut all = engine.follow(0);
    assert_eq!(take(&mut all, 30).await, written);
    let mut tail = engine.follow(15);
    assert_eq!(take(&mut tail, 15).await, written[15..].to_vec());

    // Nothing extra was waiting behind them: the next entry either
    // follower sees is the next one appended.
    let pos = engine.append(31, Bytes::from("entry 31")).await.unwrap();
    assert_eq!(pos, 31);
    for rx in [&mut all, &mut tail] {
        assert_eq!(take(rx, 1).await, vec![(31, Bytes::from("entry 31"))]);
    }
}

#[tokio::test]
async fn an_id_appended_twice_is_logged_once() {
    let cluster = shared().await;
    let engine = connect(config(cluster.urls(), "a", &namespace("dedupe"))).await;
    let id = 0x0123_4567_89ab_cdef_0123_4567_89ab_cdefu128;
    let first = engine.append(id, Bytes::from("once")).await.unwrap();
    let again = engine.append(id, Bytes::from("once")).await.unwrap();
    assert_eq!(first, again);
    let other = engine.append(id + 1, Bytes::from("other")).await.unwrap();
    assert_eq!(other, first + 1);

    let mut rx = engine.follow(0);
    assert_eq!(
        take(&mut rx, 2).await,
        vec![(first, Bytes::from("once")), (other, Bytes::from("other"))]
    );
}

#[tokio::test]
async fn a_killed_leader_loses_nothing_acked() {
    let mut cluster = NatsCluster::start(3).await.expect("cluster starts");
    let engine = connect(config(cluster.urls(), "a", "faults")).await;
    let status = engine.status().await;
    let log = status.log.expect("the log's state");
    assert_eq!(log.replicas.len(), 2, "the log has 3 replicas: {log:?}");

    // A follower reading through the fault, and one started after it.
    let mut through = engine.follow(0);
    let mut acked = BTreeMap::new();
    for i in 0..10u128 {
        let payload = Bytes::from(format!("before {i}"));
        acked.insert(engine.append(i, payload.clone()).await.unwrap(), payload);
    }
    take(&mut through, 10).await;
    let leader = log.leader.expect("the log has a leader");
    let victim = cluster.index_of(&leader).expect("the leader is a member");
    cluster.kill(victim);

    let started = Instant::now();
    for i in 10..20u128 {
        let payload = Bytes::from(format!("after {i}"));
        let pos = engine
            .append(i, payload.clone())
            .await
            .expect("appends go on with one member down");
        acked.insert(pos, payload);
    }
    eprintln!(
        "ten appends across the leader's death took {:?}",
        started.elapsed()
    );

    // Every acked command is in the log at its position. An append whose
    // ack was lost and was retried is in it once (same id), so the log
    // holds exactly the acked entries.
    let mut after = engine.follow(0);
    let got: BTreeMap<u64, Bytes> = take(&mut after, acked.len()).await.into_iter().collect();
    assert_eq!(got, acked);
    let got: Vec<(u64, Bytes)> = take(&mut through, 10).await;
    assert_eq!(got, acked.clone().into_iter().skip(10).collect::<Vec<_>>());
    let status = engine.status().await;
    let new_leader = status.log.and_then(|l| l.leader);
    assert!(
        new_leader.is_some() && new_leader.as_deref() != Some(leader.as_str()),
        "a new leader took over from {leader}: {new_leader:?}"
    );
}

#[tokio::test]
async fn without_quorum_appends_are_unavailable_until_a_member_returns() {
    let mut cluster = NatsCluster::start(3).await.expect("cluster starts");
    let mut cfg = config(cluster.urls(), "a", "quorum");
    cfg.append_timeout = Duration::from_secs(3);
    let engine = connect(cfg).await;
    let first = engine.append(1, Bytes::from("first")).await.unwrap();
    let mut through = engine.follow(0);
    assert_eq!(
        take(&mut through, 1).await,
        vec![(first, Bytes::from("first"))]
    );

    cluster.kill(1);
    cluster.kill(2);
    for id in [2u128, 3] {
        let started = Instant::now();
        let r = engine.append(id, Bytes::from("lost")).await;
        let took = started.elapsed();
        assert!(
            matches!(r, Err(EngineError::Unavailable(_))),
            "an append without quorum is unavailable, not {r:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "unavailable is answered within the deadline, took {took:?}"
        );
    }

    cluster.restart(1).await.expect("the member restarts");
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(30);
    let resumed = loop {
        match engine.append(4, Bytes::from("resumed")).await {
            Ok(pos) => break pos,
            Err(EngineError::Unavailable(why)) if Instant::now() < deadline => {
                eprintln!("not yet: {why}");
            }
            Err(e) => panic!("appends did not resume: {e}"),
        }
    };
    eprintln!(
        "appends resumed {:?} after the restart",
        restarted.elapsed()
    );
    assert!(resumed > first);

    // The follower that was reading all along goes on without a gap up to
    // the new entry. (The unavailable appends may or may not be in the log
    // before it: their fate was unknown.)
    let mut expect = first + 1;
    loop {
        let (pos, payload) = take(&mut through, 1).await.remove(0);
        assert_eq!(pos, expect, "no gap");
        expect += 1;
        if pos == resumed {
            assert_eq!(payload, Bytes::from("resumed"));
            break;
        }
        assert_eq!(payload, Bytes::from("lost"));
    }
    eprintln!(
        "the follower caught up {:?} after the restart",
        restarted.elapsed()
    );
}

#[tokio::test]
async fn a_node_leaves_the_list_soon_after_its_last_heartbeat() {
    let cluster = shared().await;
    let ns = namespace("nodes");
    let ttl = Duration::from_secs(2);
    let mut cfg_a = config(cluster.urls(), "a", &ns);
    cfg_a.node_ttl = ttl;
    let mut cfg_b = config(cluster.urls(), "b", &ns);
    cfg_b.node_ttl = ttl;
    let a = connect(cfg_a).await;
    let b = connect(cfg_b).await;
    assert_eq!(a.heartbeat_interval(), ttl / 3);

    let mut watch = a.watch_nodes().await.expect("watch");
    b.heartbeat(Bytes::from("b is up")).await.unwrap();
    let last_beat = Instant::now();
    a.heartbeat(Bytes::from("a is up")).await.unwrap();

    let mut seen = BTreeMap::new();
    while seen.len() < 2 {
        let (node, blob) = tokio::time::timeout(WAIT, watch.next())
            .await
            .expect("the heartbeats are seen")
            .expect("the watch runs");
        seen.insert(node, blob);
    }
    assert_eq!(seen["a"], Some(Bytes::from("a is up")));
    assert_eq!(seen["b"], Some(Bytes::from("b is up")));
    let mut listed = a.nodes().await.unwrap();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("a".to_string(), Bytes::from("a is up")),
            ("b".to_string(), Bytes::from("b is up"))
        ]
    );

    // b stops; a goes on. b's entry goes away by itself.
    let gone = loop {
        let next = tokio::time::timeout(ttl / 3, watch.next()).await;
        match next {
            Ok(Some((node, None))) if node == "b" => break last_beat.elapsed(),
            Ok(Some((node, None))) => panic!("{node} left though it beats"),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the watch ended"),
            Err(_) => {}
        }
        assert!(
            last_beat.elapsed() < ttl + WAIT,
            "b never left the node list"
        );
        a.heartbeat(Bytes::from("a is up")).await.unwrap();
    };
    assert!(
        gone >= ttl - Duration::from_millis(300),
        "b left before its TTL ran out: {gone:?}"
    );
    let listed: Vec<String> = a.nodes().await.unwrap().into_iter().map(|n| n.0).collect();
    assert_eq!(listed, vec!["a".to_string()]);
}

#[tokio::test]
async fn racing_nodes_agree_on_a_shared_value() {
    let cluster = shared().await;
    let ns = namespace("shared");
    // Both also race to create the log and the buckets.
    let (a, b) = tokio::join!(
        connect(config(cluster.urls(), "a", &ns)),
        connect(config(cluster.urls(), "b", &ns))
    );
    let (va, vb) = tokio::join!(
        a.shared_value("jwt_secret", || b"from a".to_vec()),
        b.shared_value("jwt_secret", || b"from b".to_vec())
    );
    let (va, vb) = (va.unwrap(), vb.unwrap());
    assert_eq!(va, vb);
    assert!(va == b"from a" || va == b"from b", "{va:?}");
    let again = a
        .shared_value("jwt_secret", || {
            panic!("an existing value is not made again")
        })
        .await
        .unwrap();
    assert_eq!(again, va);
}

#[tokio::test]
async fn objects_are_stored_read_and_deleted() {
    let cluster = shared().await;
    let engine = connect(config(cluster.urls(), "a", &namespace("objects"))).await;
    // Several chunks (they are 128 KiB).
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    engine.put_object("sha256-abc", &data).await.unwrap();
    assert_eq!(engine.get_object("sha256-abc").await.unwrap(), Some(data));
    assert_eq!(engine.get_object("sha256-missing").await.unwrap(), None);

    engine.delete_object("sha256-abc").await.unwrap();
    assert_eq!(engine.get_object("sha256-abc").await.unwrap(), None);
    engine.delete_object("sha256-abc").await.unwrap();
    engine.delete_object("sha256-never").await.unwrap();
}

#[tokio::test]
async fn events_reach_the_other_nodes_only() {
    let cluster = shared().await;
    let ns = namespace("events");
    let a = connect(config(vec![cluster.url(0)], "a", &ns)).await;
    let b = connect(config(vec![cluster.url(1)], "b", &ns)).await;
    let mut at_a = a.events().await.unwrap();
    a.publish_event("typing.room1", Bytes::from("mine"))
        .await
        .unwrap();
    // a's subscription reaches b's server over a route a moment later:
    // publish until it arrives.
    let deadline = Instant::now() + WAIT;
    let got = loop {
        b.publish_event("typing.room1", Bytes::from("theirs"))
            .await
            .unwrap();
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(100), at_a.next()).await {
            break got.expect("the event stream runs");
        }
        assert!(Instant::now() < deadline, "b's event never reached a");
    };
    assert_eq!(got, ("typing.room1".to_string(), Bytes::from("theirs")));
    assert!(matches!(
        a.publish_event("bad topic", Bytes::new()).await,
        Err(EngineError::Other(_))
    ));
}

#[tokio::test]
async fn a_single_server_gets_one_replica() {
    let cluster = NatsCluster::start(1).await.expect("a single server starts");
    let engine = connect(config(cluster.urls(), "solo", "single")).await;
    let status = engine.status().await;
    assert_eq!(status.replicas_wanted, 1, "{status:?}");
    assert!(status.errors.is_empty(), "{status:?}");
    assert_eq!(status.cluster, None);
    assert_eq!(status.server_version, "2.15.1");

    let pos = engine.append(1, Bytes::from("solo")).await.unwrap();
    let mut rx = engine.follow(0);
    assert_eq!(take(&mut rx, 1).await, vec![(pos, Bytes::from("solo"))]);
    engine.heartbeat(Bytes::from("up")).await.unwrap();
    assert_eq!(engine.nodes().await.unwrap().len(), 1);
    let v = engine.shared_value("k", || b"v".to_vec()).await.unwrap();
    assert_eq!(v, b"v");
    engine.put_object("o", b"bytes").await.unwrap();
    assert_eq!(
        engine.get_object("o").await.unwrap(),
        Some(b"bytes".to_vec())
    );
}

#[tokio::test]
async fn status_names_the_leader_and_replicas() {
    let cluster = shared().await;
    let engine = connect(config(cluster.urls(), "a", &namespace("status"))).await;
    engine.append(1, Bytes::from("x")).await.unwrap();
    let status = engine.status().await;
    assert!(status.connected);
    assert!(status.errors.is_empty(), "{status:?}");
    assert_eq!(status.cluster.as_deref(), Some("confab"));
    assert_eq!(status.servers, vec!["n1", "n2", "n3"]);
    assert_eq!(status.server_urls.len(), 3, "{status:?}");
    let log = status.log.expect("the log's state");
    assert_eq!(log.last_position, 1);
    assert_eq!(log.messages, 1);
    assert!(log.leader.is_some());
    assert_eq!(log.replicas.len(), 2);
    // It serializes for `confab cluster status --json`.
    let json = serde_json::to_value(engine.status().await).unwrap();
    assert_eq!(json["log"]["last_position"], 1);
}

/// A server that speaks just enough of the NATS protocol to introduce
/// itself as 2.10: the engine must refuse it by name.
#[tokio::test]
async fn a_server_older_than_2_11_is_refused() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let info = format!(
                    "INFO {{\"server_id\":\"OLD\",\"server_name\":\"old\",\"version\":\"2.10.24\",\"proto\":1,\"host\":\"127.0.0.1\",\"port\":{port},\"headers\":true,\"max_payload\":1048576,\"jetstream\":true}}\r\n"
                );
                if write.write_all(info.as_bytes()).await.is_err() {
                    return;
                }
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with("PING") && write.write_all(b"PONG\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let r = Engine::connect(config(vec![format!("nats://127.0.0.1:{port}")], "a", "old")).await;
    match r {
        Err(e @ EngineError::TooOld { .. }) => {
            let text = e.to_string();
            assert!(text.contains("2.10.24") && text.contains("2.11"), "{text}");
        }
        Err(e) => panic!("refused for the wrong reason: {e}"),
        Ok(_) => panic!("a 2.10 server was accepted"),
    }
    server.abort();
}

#[tokio::test]
async fn no_server_is_unavailable_within_the_connect_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = config(vec![format!("nats://127.0.0.1:{port}")], "a", "none");
    cfg.connect_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let r = Engine::connect(cfg).await;
    assert!(
        matches!(r, Err(EngineError::Unavailable(_))),
        "{:?}",
        r.err()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Node entries are kept in memory only: when every member restarts, they
/// are gone without an expiry marker for the watch to see. The watcher
/// must still learn that the node left.
#[tokio::test]
async fn a_node_lost_with_the_whole_cluster_is_reported_gone() {
    let mut cluster = NatsCluster::start(3).await.expect("cluster starts");
    let ttl = Duration::from_secs(2);
    let mut cfg_a = config(cluster.urls(), "a", "restart");
    cfg_a.node_ttl = ttl;
    let mut cfg_b = config(cluster.urls(), "b", "restart");
    cfg_b.node_ttl = ttl;
    let a = connect(cfg_a).await;
    let b = connect(cfg_b).await;
    let mut watch = a.watch_nodes().await.expect("watch");
    b.heartbeat(Bytes::from("b is up")).await.unwrap();
    loop {
        let (node, blob) = tokio::time::timeout(WAIT, watch.next())
            .await
            .expect("b's heartbeat is seen")
            .expect("the watch runs");
        if node == "b" && blob.is_some() {
            break;
        }
    }

    for i in 0..3 {
        cluster.kill(i);
    }
    let restarted = Instant::now();
    for i in 0..3 {
        cluster.restart(i).await.expect("the member restarts");
    }
    let deadline = restarted + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watch.next()).await {
            Ok(Some((node, None))) if node == "b" => break,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the watch ended"),
            Err(_) => panic!("b was never reported gone"),
        }
    }
    eprintln!(
        "b reported gone {:?} after the restart",
        restarted.elapsed()
    );
}
