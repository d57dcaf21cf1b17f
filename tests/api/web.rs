//! The built-in web client: served at `/` with its assets, a strict
//! Content-Security-Policy and caching headers; absent when turned off.

use crate::common::TestApp;

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn get(app: &TestApp, path: &str, etag: Option<&str>) -> Got {
    let mut req = app.http.get(format!("{}{path}", app.url));
    if let Some(etag) = etag {
        req = req.header("if-none-match", etag);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.expect("body read");
    Got {
        status,
        headers,
        body,
    }
}

fn header<'a>(got: &'a Got, name: &str) -> &'a str {
    got.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// The `/assets/...` paths the page links to, in order.
fn linked_assets(html: &str) -> Vec<String> {
    html.split('"')
        .filter(|s| s.starts_with("/assets/"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_page_is_html_under_a_strict_policy() {
    let app = TestApp::spawn().await;
    let page = get(&app, "/", None).await;
    assert_eq!(page.status, 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert!(page.body.starts_with("<!doctype html>"));

    let csp = header(&page, "content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self' ws: wss:",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");

    // Nothing inline, so the policy needs no exception.
    let html = page.body.to_ascii_lowercase();
    assert!(!html.contains("<style"));
    assert!(!html.contains(" style="));
    for tag in html.split("<script").skip(1) {
        let open = tag.split('>').next().unwrap_or("");
        assert!(open.contains(" src="), "inline script: <script{open}>");
    }
    for attr in [" onclick=", " onload=", " onerror=", " onsubmit="] {
        assert!(!html.contains(attr), "inline handler {attr}");
    }
}

#[tokio::test]
async fn the_page_is_revalidated_and_its_assets_cached_for_good() {
    let app = TestApp::spawn().await;
    let page = get(&app, "/", None).await;
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let etag = header(&page, "etag").to_string();
    let again = get(&app, "/", Some(&etag)).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(header(&again, "etag"), etag);

    let assets = linked_assets(&page.body);
    let mut kinds = Vec::new();
    for path in &assets {
        let got = get(&app, path, None).await;
        assert_eq!(got.status, 200, "{path}");
        assert!(!got.body.is_empty(), "{path}");
        let expected = match path.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("unexpected asset type {other:?} in {path}"),
        };
        assert_eq!(header(&got, "content-type"), expected, "{path}");
        assert_eq!(
            header(&got, "cache-control"),
            "public, max-age=31536000, immutable",
            "{path}"
        );
        kinds.push(expected);
    }
    for kind in ["text/javascript", "text/css"] {
        assert!(
            kinds.iter().any(|k| k.starts_with(kind)),
            "the page links no {kind}: {assets:?}"
        );
    }

    // The plain name answers too, but is revalidated: it may change with
    // the next binary.
    let plain = get(&app, "/assets/app.js", None).await;
    assert_eq!(plain.status, 200);
    assert_eq!(
        header(&plain, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&plain, "cache-control"), "no-cache");
    let etag = header(&plain, "etag").to_string();
    assert_eq!(get(&app, "/assets/app.js", Some(&etag)).await.status, 304);

    for missing in [
        "/assets/nope.js",
        "/assets/index.html",
        "/assets/../Cargo.toml",
        "/assets/app.0000000000000000.js",
        "/index.html",
    ] {
        let got = get(&app, missing, None).await;
        assert_eq!(got.status, 404, "{missing}");
        assert_eq!(header(&got, "content-type"), "application/json");
    }
}

#[tokio::test]
async fn the_client_can_be_turned_off() {
    let app = TestApp::spawn_with(|c| c.server.web_client = false).await;
    for path in ["/", "/assets/app.js", "/assets/style.css"] {
        let got = get(&app, path, None).await;
        assert_eq!(got.status, 404, "{path}");
        assert!(got.headers.get("content-security-policy").is_none());
    }
    // The API is unaffected.
    let health = get(&app, "/healthz", None).await;
    assert_eq!(health.status, 200);
}
