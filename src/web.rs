//! The built-in web client: the files of `assets/web/`, embedded in the
//! binary at compile time and served at `/` and `/assets/{name}`, so a
//! fresh `confab serve` can be used from a browser with nothing else
//! installed. The client is plain HTML, CSS and JavaScript and speaks only
//! the public protocol (REST and WebSocket), like any other client.
//!
//! Caching: the page links each asset under a name carrying a hash of its
//! content (`app.3f9c1a2b4d5e6f70.js`), served as immutable for a year, so
//! a new binary can never be mixed with a stale script. The page itself and
//! the plain names are served with an ETag and `no-cache`: a browser
//! revalidates them on every load and gets a 304 when nothing changed.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response;

use crate::app::AppError;

/// No inline script or style anywhere (the client has none, so injected
/// markup cannot run); images also from `blob:` (the preview of an upload
/// before it is sent) and `data:`; connections to this server, including
/// its WebSocket, which older browsers do not count as `'self'`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' blob: data:; connect-src 'self' ws: wss:; \
font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// One embedded file: its plain name and its Content-Type.
struct Embedded {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

const INDEX: Embedded = Embedded {
    name: "index.html",
    mime: "text/html; charset=utf-8",
    body: include_bytes!("../assets/web/index.html"),
};

const ASSETS: &[Embedded] = &[
    Embedded {
        name: "app.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/web/app.js"),
    },
    Embedded {
        name: "style.css",
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../assets/web/style.css"),
    },
    Embedded {
        name: "notify.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/web/notify.js"),
    },
    Embedded {
        name: "icon.svg",
        mime: "image/svg+xml",
        body: include_bytes!("../assets/web/icon.svg"),
    },
];

/// A file ready to serve: the versioned name it is linked under and the
/// ETag of its body.
struct Served {
    name: &'static str,
    versioned: String,
    mime: &'static str,
    body: &'static [u8],
    etag: String,
}

struct Site {
    index: Vec<u8>,
    index_etag: String,
    assets: Vec<Served>,
}

fn digest(body: &[u8]) -> String {
    let hash = Sha256::digest(body);
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `app.js` with hash `h` is `app.h.js`.
fn versioned_name(name: &str, hash: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{name}.{hash}"),
    }
}

/// Built once, on the first request: hashing the few embedded files costs
/// microseconds, and doing it at run time keeps the client free of any
/// build step.
fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let assets: Vec<Served> = ASSETS
            .iter()
            .map(|a| {
                let hash = digest(a.body);
                Served {
                    name: a.name,
                    versioned: versioned_name(a.name, &hash),
                    mime: a.mime,
                    body: a.body,
                    etag: format!("\"{hash}\""),
                }
            })
            .collect();
        // The page names its assets as "/assets/app.js" (quotes included,
        // so no longer name is touched); each becomes its versioned name.
        let mut index = String::from_utf8_lossy(INDEX.body).into_owned();
        for a in &assets {
            index = index.replace(
                &format!("\"/assets/{}\"", a.name),
                &format!("\"/assets/{}\"", a.versioned),
            );
        }
        let index_etag = format!("\"{}\"", digest(index.as_bytes()));
        Site {
            index: index.into_bytes(),
            index_etag,
            assets,
        }
    })
}

/// `GET /`: the client's page.
pub fn index(headers: &HeaderMap) -> Result<Response, AppError> {
    let site = site();
    Ok(respond(
        headers,
        INDEX.mime,
        &site.index,
        &site.index_etag,
        false,
    ))
}

/// The service worker (assets/web/sw.js) at `/sw.js`: a worker's scope is
/// the folder it is served from, so it lives at the root to cover the
/// page. Revalidated on every check, so an update reaches browsers at once.
pub fn service_worker(headers: &HeaderMap) -> Result<Response, AppError> {
    static SW: &[u8] = include_bytes!("../assets/web/sw.js");
    static ETAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let etag = ETAG.get_or_init(|| format!("\"{}\"", digest(SW)));
    let mut resp = respond(headers, "text/javascript; charset=utf-8", SW, etag, false);
    resp.headers_mut().insert(
        header::HeaderName::from_static("service-worker-allowed"),
        HeaderValue::from_static("/"),
    );
    Ok(resp)
}

/// `GET /assets/{name}`, by versioned name (immutable) or plain name
/// (revalidated).
pub fn asset(headers: &HeaderMap, name: &str) -> Result<Response, AppError> {
    let site = site();
    let (file, immutable) = site
        .assets
        .iter()
        .find_map(|a| {
            if a.versioned == name {
                Some((a, true))
            } else if a.name == name {
                Some((a, false))
            } else {
                None
            }
        })
        .ok_or(AppError::NotFound("route"))?;
    Ok(respond(
        headers, file.mime, file.body, &file.etag, immutable,
    ))
}

fn respond(
    headers: &HeaderMap,
    mime: &'static str,
    body: &'static [u8],
    etag: &str,
    immutable: bool,
) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        let mut r = Response::new(Vec::<u8>::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(body.into());
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_every_asset_by_its_versioned_name() {
        let site = site();
        let page = String::from_utf8_lossy(&site.index);
        for a in &site.assets {
            assert!(
                page.contains(&format!("\"/assets/{}\"", a.versioned)),
                "{} is not linked by its versioned name",
                a.name
            );
            assert!(!page.contains(&format!("\"/assets/{}\"", a.name)));
        }
    }

    #[test]
    fn versioned_names_keep_the_extension() {
        assert_eq!(versioned_name("app.js", "abc"), "app.abc.js");
        assert_eq!(versioned_name("LICENSE", "abc"), "LICENSE.abc");
    }

    #[test]
    fn an_unchanged_file_is_not_sent_again() {
        let site = site();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&site.index_etag).unwrap(),
        );
        let resp = index(&headers).unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        let resp = asset(&HeaderMap::new(), "missing.js");
        assert!(resp.is_err());
    }
}
