//! Link previews: read by the server from a local site allowed through
//! the configuration, cached, their images served by confab; refused for
//! private addresses, redirects to them, large or mistyped answers; seen
//! only with the message they belong to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use image::ImageFormat;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestApp, send_message};
use crate::uploads::picture;

/// The address the site serves on: allowed by the configuration. Its
/// twin on 127.0.0.1 (any other port's listener too) is not.
const SITE_IP: &str = "127.0.0.2";

/// A tiny HTTP/1.1 site: fixed answers by path, and how often each path
/// was asked for.
struct Site {
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

type Answer = (u16, Vec<(String, String)>, Vec<u8>);

impl Site {
    async fn start(ip: &str, routes: HashMap<String, Answer>) -> Site {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("binds");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (routes, counted) = (Arc::new(routes), hits.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (routes, hits) = (routes.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let (status, headers, body) =
                        routes
                            .get(&path)
                            .cloned()
                            .unwrap_or((404, vec![], b"no".to_vec()));
                    let mut out = format!("HTTP/1.1 {status} X\r\nconnection: close\r\n");
                    if !headers.iter().any(|(k, _)| k == "content-length") {
                        out.push_str(&format!("content-length: {}\r\n", body.len()));
                    }
                    for (k, v) in headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let _ = sock.write_all(out.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Site { base, hits }
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn html(body: &str) -> Answer {
    (
        200,
        vec![("content-type".into(), "text/html; charset=utf-8".into())],
        body.as_bytes().to_vec(),
    )
}

fn page(title: &str, image: Option<&str>) -> String {
    let image = image
        .map(|i| format!(r#"<meta property="og:image" content="{i}">"#))
        .unwrap_or_default();
    format!(
        r#"<!doctype html><html><head><title>ignored</title>
        <meta property="og:title" content="{title}">
        <meta property="og:description" content="What &amp; why">
        <meta property="og:site_name" content="Local">
        {image}</head><body>hello</body></html>"#
    )
}

/// A server that may fetch from `SITE_IP` only, one page at a time (so a
/// message queued before another is done before it).
async fn server() -> TestApp {
    TestApp::spawn_with(|c| {
        c.server.fetch_allowed_hosts = vec![SITE_IP.into()];
        c.previews.max_concurrent = 1;
        c.previews.max_html_bytes = 64 * 1024;
        c.previews.max_image_bytes = 256 * 1024;
    })
    .await
}

/// Waits until the store has a cache row for `url` (fetched or refused).
async fn cached(t: &TestApp, url: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        t.sync().await;
        if let Some(row) = t.app().store.read().unwrap().preview_cache(url).unwrap() {
            return serde_json::to_value(row.preview).unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no cache row for {url}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn updated_with_previews(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v: &Value| {
        v["type"] == "message_updated"
            && v["data"]["message"]["id"] == id
            && v["data"]["message"]["previews"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
    }
}

async fn message_in_history(t: &TestApp, token: &str, room: &str, id: &str) -> Value {
    t.sync().await;
    t.history_all(token, room)
        .await
        .into_iter()
        .find(|m| m["id"] == id)
        .expect("in history")
}

#[tokio::test]
async fn a_link_gets_a_preview_whose_image_confab_serves() {
    let png = picture(ImageFormat::Png, 40, 30);
    let routes = HashMap::from([
        ("/page".to_string(), html(&page("A page", Some("/img.png")))),
        (
            "/img.png".to_string(),
            (200, vec![("content-type".into(), "image/png".into())], png),
        ),
    ]);
    let site = Site::start(SITE_IP, routes).await;
    let t = server().await;
    let (alice, _) = t.register("alice").await;
    let room = t.create_room(&alice, "r", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    let mut ws = t.ws(&alice).await;
    let link = format!("{}/page", site.base);
    let m = send_message(&t, &alice, &room, &format!("look: {link}.")).await;
    assert_eq!(m["previews"], json!([]), "attached later, not at once");
    let id = m["id"].as_str().unwrap().to_string();
    let up = ws.next_where(updated_with_previews(&id)).await;
    let p = &up["data"]["message"]["previews"][0];
    assert_eq!(p["url"], link.as_str());
    assert_eq!(p["title"], "A page");
    assert_eq!(p["description"], "What & why");
    assert_eq!(p["site_name"], "Local");
    assert_eq!(p["image_width"], 40);
    assert_eq!(p["image_height"], 30);
    let image = p["image_url"].as_str().unwrap();
    assert!(image.starts_with("/previews/"), "{image}");
    // Any node serves the image, inert, from confab's own copy.
    t.sync().await;
    let r = t
        .http
        .get(format!("{}{image}", t.next_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("image/"), "{ctype}");
    assert_eq!(
        r.headers()["content-security-policy"],
        "default-src 'none'; sandbox"
    );
    let bytes = r.bytes().await.unwrap();
    image::load_from_memory(&bytes).expect("a real image");
    // An unknown hash is not served.
    let r = t
        .http
        .get(format!("{}/previews/{}", t.url, "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // History carries it too.
    let stored = message_in_history(&t, &alice, &room, &id).await;
    assert_eq!(stored["previews"], up["data"]["message"]["previews"]);

    // The same link again comes from the cache: the site is not asked.
    let m2 = send_message(&t, &alice, &room, &link).await;
    let id2 = m2["id"].as_str().unwrap().to_string();
    let up2 = ws.next_where(updated_with_previews(&id2)).await;
    assert_eq!(up2["data"]["message"]["previews"][0]["title"], "A page");
    assert_eq!(site.hits("/page"), 1);
    assert_eq!(site.hits("/img.png"), 1);
}

#[tokio::test]
async fn refused_fetches_attach_nothing() {
    let inside = Site::start(
        "127.0.0.1",
        HashMap::from([("/page".to_string(), html(&page("Inside", None)))]),
    )
    .await;
    let huge = format!(
        "{}{}",
        page("Huge", None),
        "<p>padding</p>".repeat(100 * 1024 / 14)
    );
    let routes = HashMap::from([
        ("/ok".to_string(), html(&page("Fine", None))),
        ("/ok2".to_string(), html(&page("Fine too", None))),
        (
            "/redirect".to_string(),
            (
                302,
                vec![("location".into(), format!("{}/page", inside.base))],
                vec![],
            ),
        ),
        ("/huge".to_string(), html(&huge)),
        (
            "/typed".to_string(),
            (
                200,
                vec![("content-type".into(), "application/octet-stream".into())],
                page("Mistyped", None).into_bytes(),
            ),
        ),
    ]);
    let site = Site::start(SITE_IP, routes).await;
    let t = server().await;
    let (alice, _) = t.register("alice").await;
    let room = t.create_room(&alice, "r", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    let mut ws = t.ws(&alice).await;

    for url in [
        format!("{}/page", inside.base),
        "http://10.0.0.1/x".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("{}/redirect", site.base),
        format!("{}/huge", site.base),
        format!("{}/typed", site.base),
    ] {
        let m = send_message(&t, &alice, &room, &format!("see {url}")).await;
        assert_eq!(cached(&t, &url).await, Value::Null, "{url}");
        let stored = message_in_history(&t, &alice, &room, m["id"].as_str().unwrap()).await;
        assert_eq!(stored["previews"], json!([]), "{url}");
    }
    assert_eq!(inside.hits("/page"), 0, "never reached through a redirect");
    assert_eq!(site.hits("/redirect"), 1);

    // Per message: `previews: false` over HTTP, `no_previews` over the
    // WebSocket. The message after each is previewed, and the queue keeps
    // order, so by then the first would have been done.
    let off = format!("{}/ok", site.base);
    let (status, body) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            &alice,
            json!({"text": off, "previews": false}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let quiet = body["message"]["id"].as_str().unwrap().to_string();
    let ack = ws
        .ok(
            "send_message",
            json!({"room": room, "text": format!("{off} again"), "no_previews": true}),
        )
        .await;
    let quiet2 = ack["message"]["id"].as_str().unwrap().to_string();
    let on = send_message(&t, &alice, &room, &format!("{}/ok2", site.base)).await;
    ws.next_where(updated_with_previews(on["id"].as_str().unwrap()))
        .await;
    assert_eq!(site.hits("/ok"), 0);
    for id in [quiet, quiet2] {
        let stored = message_in_history(&t, &alice, &room, &id).await;
        assert_eq!(stored["previews"], json!([]));
    }
    assert!(
        !ws.buffered.iter().any(|f| f["type"] == "message_updated"),
        "nothing else was updated"
    );
}

#[tokio::test]
async fn only_those_who_can_read_a_message_see_its_previews() {
    let routes = HashMap::from([("/p".to_string(), html(&page("Secret plans", None)))]);
    let site = Site::start(SITE_IP, routes).await;
    let t = server().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let secret = t.create_room(&alice, "secret", "private").await;
    let secret = secret["id"].as_str().unwrap().to_string();
    let open = t.create_room(&bob, "open", "public").await;
    let open = open["id"].as_str().unwrap().to_string();
    let mut a = t.ws(&alice).await;
    let mut b = t.ws(&bob).await;
    let m = send_message(&t, &alice, &secret, &format!("{}/p", site.base)).await;
    let id = m["id"].as_str().unwrap().to_string();
    let up = a.next_where(updated_with_previews(&id)).await;
    assert_eq!(
        up["data"]["message"]["previews"][0]["title"],
        "Secret plans"
    );
    // Bob's own message reaches him after the update went out.
    t.sync().await;
    let mine = send_message(&t, &bob, &open, "hi").await;
    b.next_where(|v| v["type"] == "message" && v["data"]["message"]["id"] == mine["id"])
        .await;
    assert!(
        !b.buffered
            .iter()
            .any(|f| f.to_string().contains("Secret plans")),
        "bob saw the preview: {:?}",
        b.buffered
    );
    let (status, _) = t.get(&format!("/api/rooms/{secret}/messages"), &bob).await;
    assert_eq!(status, 403);
    let (status, body) = t.get("/api/search?q=plans", &bob).await;
    assert!(
        !body.to_string().contains("Secret plans"),
        "{status} {body}"
    );
}
