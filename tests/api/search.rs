//! Message search: words, phrases, prefixes and any script; what a caller
//! may never find; edits, pages, a crash between commit and index, a
//! rebuild, and (with CONFAB_TEST_CLUSTER=2) a search on one node for what
//! was posted on another.

use serde_json::{Value, json};

use crate::common::{TestApp, WAIT, cluster_nodes, send_message, spawn_child};

fn fast(c: &mut confab::config::Config) {
    c.search.commit_interval_ms = 20;
}

/// Waits until every node's index shows everything its store holds.
async fn indexed(t: &TestApp) {
    t.sync().await;
    let apps: Vec<_> = std::iter::once(t.app().clone())
        .chain(t.others.iter().map(|(r, _)| r.app.clone()))
        .collect();
    for app in apps {
        let ok = tokio::task::spawn_blocking(move || {
            let rev = app.store.read().unwrap().message_rev().unwrap();
            app.search_index()
                .expect("the server runs search")
                .wait_indexed(rev, WAIT)
        })
        .await
        .unwrap();
        assert!(ok, "the index caught up with the store");
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn search(t: &TestApp, token: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let qs: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    t.get(&format!("/api/search?{}", qs.join("&")), token).await
}

/// The texts found for `q`, newest first.
async fn texts(t: &TestApp, token: &str, q: &str) -> Vec<String> {
    let (status, body) = search(t, token, &[("q", q)]).await;
    assert_eq!(status, 200, "search {q:?}: {body}");
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"]["text"].as_str().unwrap().to_string())
        .collect()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// The highlighted parts of a result's snippet (offsets in UTF-16 units).
fn marks(result: &Value) -> Vec<String> {
    let text: Vec<u16> = result["snippet"]["text"]
        .as_str()
        .unwrap()
        .encode_utf16()
        .collect();
    result["snippet"]["highlights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let (a, b) = (
                r[0].as_u64().unwrap() as usize,
                r[1].as_u64().unwrap() as usize,
            );
            String::from_utf16(&text[a..b]).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn words_phrases_prefixes_accents_and_any_script() {
    let t = TestApp::spawn_with(fast).await;
    let (token, _) = t.register("ann").await;
    let room = id(&t.create_room(&token, "words", "public").await);
    for text in [
        "The quick brown fox jumps",
        "brown and quick, but not together",
        "Café CRÈME at the station",
        "Deployment finished on staging",
        "東京タワーに行きました",
        "Привет, мир",
        "naïve cafe\u{301} décor",
    ] {
        send_message(&t, &token, &room, text).await;
    }
    indexed(&t).await;

    // Every word must match, anywhere, in any case.
    assert_eq!(
        texts(&t, &token, "QUICK brown").await,
        [
            "brown and quick, but not together",
            "The quick brown fox jumps"
        ]
    );
    // A phrase: those words, in that order.
    assert_eq!(
        texts(&t, &token, "\"quick brown\"").await,
        ["The quick brown fox jumps"]
    );
    assert_eq!(
        texts(&t, &token, "deploy*").await,
        ["Deployment finished on staging"]
    );
    assert!(texts(&t, &token, "deploy").await.is_empty());
    // Accents and case fold both ways, precomposed or not.
    assert_eq!(
        texts(&t, &token, "cafe creme").await,
        ["Café CRÈME at the station"]
    );
    assert_eq!(
        texts(&t, &token, "CAFÉ").await,
        ["naïve cafe\u{301} décor", "Café CRÈME at the station"]
    );
    assert_eq!(
        texts(&t, &token, "naive decor").await,
        ["naïve cafe\u{301} décor"]
    );
    // Scripts without spaces match any run of their characters.
    assert_eq!(texts(&t, &token, "東京").await, ["東京タワーに行きました"]);
    assert_eq!(
        texts(&t, &token, "タワー").await,
        ["東京タワーに行きました"]
    );
    assert!(texts(&t, &token, "京東").await.is_empty());
    assert_eq!(texts(&t, &token, "МИР").await, ["Привет, мир"]);

    // The snippet marks what matched, as the text has it.
    let (_, body) = search(&t, &token, &[("q", "cafe creme")]).await;
    let hit = &body["results"][0];
    assert_eq!(marks(hit), ["Café CRÈME"]);
    assert_eq!(hit["room"]["id"], room.as_str());
    assert_eq!(hit["message"]["room"], room.as_str());
    let (_, body) = search(&t, &token, &[("q", "タワー 東*")]).await;
    assert_eq!(marks(&body["results"][0]), ["東", "タワー"]);
    let (_, body) = search(&t, &token, &[("q", "deploy* staging")]).await;
    assert_eq!(marks(&body["results"][0]), ["Deployment", "staging"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_never_shows_what_the_caller_may_not_read() {
    let t = TestApp::spawn_with(fast).await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let (carol, _) = t.register("carol").await;

    let secret = id(&t.create_room(&alice, "secret", "private").await);
    send_message(&t, &alice, &secret, "zebra secret plan").await;

    let (status, dm) = t
        .post(
            "/api/dm/carol/messages",
            &alice,
            json!({"text": "zebra between us"}),
        )
        .await;
    assert_eq!(status, 201, "{dm}");
    let dm_room = dm["message"]["room"].as_str().unwrap().to_string();

    let lobby = id(&t.create_room(&alice, "lobby", "public").await);
    let left = id(&t.create_room(&alice, "left", "public").await);
    let old = id(&t.create_room(&alice, "old", "public").await);
    let mut ws = t.ws(&bob).await;
    for room in [&lobby, &left, &old] {
        ws.ok("join_room", json!({ "room": room })).await;
    }
    send_message(&t, &alice, &lobby, "zebra in the lobby").await;
    send_message(&t, &bob, &left, "zebra in a room bob left").await;
    ws.ok("leave_room", json!({ "room": left })).await;
    let doomed = send_message(&t, &bob, &lobby, "zebra deleted soon").await;
    let (status, _) = t
        .call(
            reqwest::Method::DELETE,
            &format!("/api/messages/{}", id(&doomed)),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 204);
    // Retention keeps only the last message of "old".
    send_message(&t, &alice, &old, "zebra too old").await;
    send_message(&t, &alice, &old, "the newest word").await;
    t.sync().await;
    t.app()
        .set_retention(
            "old",
            confab::store::Retention {
                max_age_secs: None,
                keep_last: Some(1),
            },
        )
        .await
        .unwrap();
    let removed = t
        .app()
        .apply_retention(confab::domain::now_ms())
        .await
        .unwrap();
    assert_eq!(removed, 1);
    indexed(&t).await;

    assert_eq!(texts(&t, &bob, "zebra").await, ["zebra in the lobby"]);
    assert_eq!(
        texts(&t, &alice, "zebra").await,
        [
            "zebra in a room bob left",
            "zebra in the lobby",
            "zebra between us",
            "zebra secret plan"
        ]
    );
    assert_eq!(texts(&t, &carol, "zebra").await, ["zebra between us"]);
    // Not by naming the room either.
    for room in [&secret, &dm_room] {
        let (status, body) = search(&t, &bob, &[("q", "zebra"), ("room", room)]).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    // Not by author.
    let (status, body) = search(&t, &bob, &[("from", "alice")]).await;
    assert_eq!(status, 200);
    let found: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(found, ["the newest word", "zebra in the lobby"]);
    // The deleted and the removed are gone for their authors too.
    assert!(texts(&t, &alice, "too old").await.is_empty());
    assert!(texts(&t, &bob, "deleted").await.is_empty());
    assert_eq!(texts(&t, &alice, "newest").await, ["the newest word"]);
    // A public room may be named, as its history may be read.
    let (status, body) = search(&t, &bob, &[("q", "zebra"), ("room", &lobby)]).await;
    assert_eq!(status, 200);
    assert_eq!(body["results"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_is_found_by_its_new_words_only() {
    let t = TestApp::spawn_with(fast).await;
    let (token, _) = t.register("edith").await;
    let room = id(&t.create_room(&token, "edits", "public").await);
    let msg = send_message(&t, &token, &room, "alpha draft").await;
    indexed(&t).await;
    assert_eq!(texts(&t, &token, "alpha").await, ["alpha draft"]);
    let mut ws = t.ws(&token).await;
    ws.ok(
        "edit_message",
        json!({"message_id": id(&msg), "text": "omega final"}),
    )
    .await;
    indexed(&t).await;
    assert!(texts(&t, &token, "alpha").await.is_empty());
    assert_eq!(texts(&t, &token, "omega").await, ["omega final"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_walk_every_hit_newest_first_and_times_bound_them() {
    let t = TestApp::spawn_with(fast).await;
    let (token, _) = t.register("pager").await;
    let room = id(&t.create_room(&token, "pages", "public").await);
    let mut sent = Vec::new();
    for i in 0..25 {
        sent.push(send_message(&t, &token, &room, &format!("page item {i}")).await);
    }
    indexed(&t).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = vec![("q", "item"), ("limit", "10")];
        if let Some(c) = &cursor {
            params.push(("cursor", c.as_str()));
        }
        let (status, body) = search(&t, &token, &params).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        for r in body["results"].as_array().unwrap() {
            seen.push(r["message"]["id"].as_str().unwrap().to_string());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "paging ends");
    }
    let newest_first: Vec<String> = sent.iter().rev().map(id).collect();
    assert_eq!(seen, newest_first);
    assert!(pages >= 3);

    // after/before: RFC 3339 or ms, both exclusive.
    let at = |i: usize| sent[i]["created_at"].as_i64().unwrap();
    let (_, body) = search(
        &t,
        &token,
        &[
            ("q", "item"),
            ("after", &at(19).to_string()),
            ("limit", "50"),
        ],
    )
    .await;
    let n = body["results"].as_array().unwrap().len();
    let expected = sent
        .iter()
        .filter(|m| m["created_at"].as_i64().unwrap() > at(19))
        .count();
    assert_eq!(n, expected);
    let (status, body) = search(
        &t,
        &token,
        &[("q", "item"), ("before", "2000-01-01T00:00:00Z")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["results"].as_array().unwrap().is_empty());
    let (_, body) = search(
        &t,
        &token,
        &[
            ("q", "item"),
            ("after", "2000-01-01T00:00:00+02:00"),
            ("limit", "50"),
        ],
    )
    .await;
    assert_eq!(body["results"].as_array().unwrap().len(), 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_get_clear_errors_or_best_effort() {
    let t = TestApp::spawn_with(fast).await;
    let (token, _) = t.register("mallory").await;
    let room = id(&t.create_room(&token, "odd", "public").await);
    send_message(&t, &token, &room, "unclosed quotes and parens").await;
    indexed(&t).await;
    // Operators and stray quotes are text.
    assert_eq!(
        texts(&t, &token, "\"unclosed quotes").await,
        ["unclosed quotes and parens"]
    );
    assert_eq!(
        texts(&t, &token, "(parens) +unclosed -quotes ~ ^ \\ *").await,
        ["unclosed quotes and parens"]
    );
    let long = "x".repeat(501);
    for (params, status, code) in [
        (vec![("q", long.as_str())], 400, "bad_request"),
        (vec![("q", "a"), ("limit", "0")], 400, "bad_request"),
        (vec![("q", "a"), ("limit", "51")], 400, "bad_request"),
        (vec![("q", "a"), ("limit", "x")], 400, "bad_request"),
        (vec![("q", "a"), ("cursor", "zz")], 400, "bad_request"),
        (
            vec![("q", "a"), ("before", "yesterday")],
            400,
            "bad_request",
        ),
        (vec![("q", "!!! ***")], 400, "bad_request"),
        (vec![], 400, "bad_request"),
        (vec![("q", "a"), ("from", "nobody")], 404, "not_found"),
        (
            vec![("q", "a"), ("room", "01ARZ3NDEKTSV4RRFFQ69G5FAV")],
            404,
            "not_found",
        ),
        (vec![("q", "a"), ("room", "nonsense")], 400, "bad_request"),
    ] {
        let (got, body) = search(&t, &token, &params).await;
        assert_eq!(got, status, "{params:?}: {body}");
        assert_eq!(body["error"]["code"], code, "{params:?}");
    }
    let (status, _) = t
        .call(reqwest::Method::GET, "/api/search?q=a", None, None)
        .await;
    assert_eq!(status, 401);

    // The same over WebSocket, answered by the frame's id.
    let mut ws = t.ws(&token).await;
    let data = ws.ok("search", json!({"q": "PARENS", "room": room})).await;
    assert_eq!(
        data["results"][0]["message"]["text"],
        "unclosed quotes and parens"
    );
    assert!(data["next_cursor"].is_null());
    let answer = ws.request("search", json!({ "q": long })).await;
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["data"]["code"], "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_posted_on_one_node_is_found_on_every_node() {
    let t = TestApp::spawn_with(fast).await;
    let (token, _) = t.register("nomad").await;
    let room = id(&t.create_room(&token, "roaming", "public").await);
    // Straight to the first node.
    let resp = t
        .http
        .post(format!("{}/api/rooms/{room}/messages", t.url))
        .bearer_auth(&token)
        .json(&json!({"text": "written on the first node"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    indexed(&t).await;
    let urls: Vec<String> = std::iter::once(t.url.clone())
        .chain(t.others.iter().map(|(r, _)| r.url()))
        .collect();
    assert_eq!(urls.len(), cluster_nodes().max(1));
    for url in urls {
        let body: Value = t
            .http
            .get(format!("{url}/api/search?q=first+node"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            body["results"][0]["message"]["text"], "written on the first node",
            "on {url}: {body}"
        );
    }
}

/// A server as a child process that indexes but never commits its index
/// on its own: killing it leaves the store ahead of the index.
fn start_child(dir: &std::path::Path) -> (std::process::Child, String) {
    spawn_child(dir, &[("CONFAB_SEARCH_COMMIT_INTERVAL_MS", "3600000")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_catches_up_after_a_kill_between_commit_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = start_child(dir.path());
    let http = reqwest::Client::new();
    let token = http
        .post(format!("{url}/api/auth/register"))
        .json(&json!({"username": "crash", "password": "password-crash"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let room: Value = http
        .post(format!("{url}/api/rooms"))
        .bearer_auth(&token)
        .json(&json!({"name": "crashing"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room = room["room"]["id"].as_str().unwrap().to_string();
    for i in 0..20 {
        let resp = http
            .post(format!("{url}/api/rooms/{room}/messages"))
            .bearer_auth(&token)
            .json(&json!({"text": format!("acked before the crash {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    // No search here: a search asks the indexer to commit.
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    // The revision the index's last commit covers, from tantivy's own
    // meta.json (the payload confab writes with each commit).
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("search/meta.json")).unwrap())
            .unwrap();
    let payload: Value = serde_json::from_str(meta["payload"].as_str().unwrap_or("{}")).unwrap();
    let committed = payload["rev"].as_u64().unwrap_or(0);

    let t = TestApp::spawn_in(dir, fast).await;
    let head = t.app().store.read().unwrap().message_rev().unwrap();
    assert!(
        committed < head,
        "the index was behind the store at the kill ({committed} < {head})"
    );
    indexed(&t).await;
    let token = t.login("crash").await;
    let (_, body) = search(&t, &token, &[("q", "crash"), ("limit", "50")]).await;
    assert_eq!(body["results"].as_array().unwrap().len(), 20, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confab_reindex_rebuilds_and_a_broken_index_is_rebuilt_at_start() {
    let mut t = TestApp::spawn_with(fast).await;
    let (token, _) = t.register("rebuild").await;
    let room = id(&t.create_room(&token, "again", "public").await);
    for i in 0..30 {
        send_message(&t, &token, &room, &format!("rebuilt word {i}")).await;
    }
    indexed(&t).await;
    t.stop().await;
    let index = t.dir.path().join("search");
    std::fs::remove_dir_all(&index).unwrap();

    let dir = t.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
            .args(["reindex", "--data-dir"])
            .arg(&dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("reindexed 30 messages"), "{said}");

    // The rebuilt index is current from the first moment of the start.
    t.restart(fast).await;
    let head = t.app().store.read().unwrap().message_rev().unwrap();
    assert_eq!(t.app().search_index().unwrap().indexed(), (head, true));
    let token = t.login("rebuild").await;
    let (_, body) = search(&t, &token, &[("q", "rebuilt"), ("limit", "50")]).await;
    assert_eq!(body["results"].as_array().unwrap().len(), 30);

    // An unreadable index is thrown away and built again.
    t.stop().await;
    std::fs::write(index.join("meta.json"), b"{ not json").unwrap();
    t.restart(fast).await;
    indexed(&t).await;
    let (_, body) = search(&t, &token, &[("q", "rebuilt"), ("limit", "50")]).await;
    assert_eq!(body["results"].as_array().unwrap().len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_right_after_a_send_finds_it() {
    // An interval far longer than the test: only the search's own request
    // to commit can make the message findable in time.
    let t = TestApp::spawn_with(|c| c.search.commit_interval_ms = 600_000).await;
    let (token, _) = t.register("alice").await;
    let room = t.create_room(&token, "lobby", "public").await;
    indexed(&t).await;
    for i in 0..3 {
        let text = format!("kumquat number{i}");
        send_message(&t, &token, &id(&room), &text).await;
        let found = texts(&t, &token, &format!("number{i}")).await;
        assert_eq!(found, vec![text]);
    }
}
