//! `confab cluster status` and the CLI's other rules in cluster mode, run
//! as the built binary against a real three-member nats-server cluster.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::test_config;

/// How long a node may take to show up in the engine's node list.
const SHOW_UP: Duration = Duration::from_secs(30);

/// Runs `confab ARGS` with `envs` off the test's runtime thread (the node
/// under test runs there). No CONFAB_* variable comes from the test's own
/// environment.
async fn confab(args: &[&str], envs: &[(&str, String)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CONFAB_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(&args)
            .envs(envs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("confab runs")
    })
    .await
    .expect("confab finishes")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn namespace() -> String {
    format!("t{}", confab::domain::Id::new().to_string().to_lowercase())
}

#[tokio::test]
async fn cluster_status_shows_the_live_nodes_and_the_engine() {
    let nats = confab::natsctl::NatsCluster::start(3)
        .await
        .expect("a 3-member nats-server cluster starts");
    let ns = namespace();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.cluster.nats_urls = nats.urls();
    config.cluster.namespace = ns.clone();
    config.cluster.node_name = "alpha".into();
    let node = confab::server::start(config)
        .await
        .expect("the node starts");

    let other = tempfile::tempdir().unwrap();
    let envs = [
        ("CONFAB_CLUSTER_NATS_URLS", nats.urls().join(",")),
        ("CONFAB_CLUSTER_NAMESPACE", ns.clone()),
    ];
    let data_dir = other.path().to_str().unwrap();
    // The node's first heartbeat may not be in yet: ask until it is.
    let deadline = Instant::now() + SHOW_UP;
    let status = loop {
        let out = confab(
            &["cluster", "status", "--json", "--data-dir", data_dir],
            &envs,
        )
        .await;
        assert!(out.status.success(), "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let has_node = v["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["name"] == "alpha"));
        let has_leader = v["engine"]["log"]["leader"].is_string();
        if has_node && has_leader {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "node alpha and a log leader within {SHOW_UP:?}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The CLI's own connection is not a node: it sends no heartbeat.
    let names: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["alpha"], "{status:#}");
    let alpha = &status["nodes"][0];
    assert_eq!(alpha["address"], node.url(), "{status:#}");
    assert!(alpha["last_heartbeat"].as_i64().unwrap() > 0, "{status:#}");
    let engine = &status["engine"];
    let servers: Vec<&str> = engine["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert_eq!(servers, ["n1", "n2", "n3"], "{status:#}");
    assert_eq!(engine["namespace"], ns.as_str());
    assert_eq!(
        engine["log"]["stream"],
        format!("{}_LOG", ns.to_uppercase())
    );
    assert!(
        engine["log"]["replicas"]
            .as_array()
            .is_some_and(|r| r.len() == 2),
        "a leader and two followers: {status:#}"
    );

    // The readable form names the same things.
    let out = confab(&["cluster", "status", "--data-dir", data_dir], &envs).await;
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("NODE"), "{table}");
    assert!(table.contains("alpha"), "{table}");
    assert!(table.contains("n1, n2, n3"), "{table}");
    assert!(table.contains("leader     n"), "{table}");

    // A change made while no node runs here would be written to this
    // node's store alone: refused. Reads of the store are fine.
    node.shutdown().await;
    let node_dir = dir.path().to_str().unwrap();
    let out = confab(&["room", "create", "lobby", "--data-dir", node_dir], &envs).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cluster mode"),
        "{}",
        text(&out)
    );
    let out = confab(&["room", "list", "--json", "--data-dir", node_dir], &envs).await;
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test]
async fn cluster_status_outside_cluster_mode_says_how_to_enter_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = confab(
        &[
            "cluster",
            "status",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not in cluster mode")
            && err.contains("CONFAB_CLUSTER_NATS_URLS")
            && err.contains("[cluster] nats_urls"),
        "{}",
        text(&out)
    );
}
