//! Link previews: after a message is stored, the node that took it reads
//! the pages its first links point at and attaches what they say about
//! themselves (`SetPreviews`, which every node applies and which tells the
//! room with `message_updated`).
//!
//! Only the node that took the message fetches, so a cluster fetches each
//! page once, with no claim to agree on. The price: a message whose node
//! stops between storing it and recording its previews gets none (the
//! queue lives in memory). Pages are cached per URL in the store, so a
//! link posted again, on any node, is not fetched again until its row
//! expires; its image is fetched once, re-encoded like an upload's
//! thumbnail and served by confab (`/previews/{hash}`).
//!
//! Every request goes through `Outbound` (public addresses only, checked
//! after resolution; https unless the host is in
//! `server.fetch_allowed_hosts`), and each redirect is a new request
//! vetted the same way. A page is read up to `previews.max_html_bytes` and
//! an image up to `previews.max_image_bytes`: a larger one gets nothing.
//! Only HTML pages and the re-encoded image types are read.

use super::*;
use crate::domain::LinkPreview;
use crate::outbound::{Outbound, OutboundError};
use crate::store::previews::{PreviewCache, PreviewImage};

/// A message waiting for its previews.
struct Job {
    message: Id,
    links: Vec<String>,
}

/// The queue of messages waiting for previews and what fetches them.
pub struct Previews {
    queue: tokio::sync::mpsc::Sender<Job>,
    waiting: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Job>>>,
    outbound: Option<Outbound>,
    /// Pages (with their images) fetched at once.
    fetches: Arc<tokio::sync::Semaphore>,
}

impl Previews {
    pub fn new(config: &Config) -> Previews {
        let (queue, waiting) = tokio::sync::mpsc::channel(config.previews.queue.max(1));
        let outbound = match Outbound::from_config(config) {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(error = %e, "link previews are off: no outbound client");
                None
            }
        };
        Previews {
            queue,
            waiting: std::sync::Mutex::new(Some(waiting)),
            outbound,
            fetches: Arc::new(tokio::sync::Semaphore::new(
                config.previews.max_concurrent.max(1),
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    /// The answer is not one to preview; asking again will not change it.
    #[error("{0}")]
    Refused(String),
}

impl FetchError {
    fn transient(&self) -> bool {
        match self {
            FetchError::Outbound(e) => e.transient(),
            FetchError::Refused(_) => false,
        }
    }
}

/// How long a transient failure (a timeout, a site down) keeps a page
/// from being asked again.
const RETRY_AFTER_MS: i64 = 5 * 60 * 1000;

impl App {
    /// Queues a freshly stored message for its previews, if the server
    /// makes them and its text has links. Never waits: a full queue
    /// means no previews for this message.
    pub(super) fn queue_previews(&self, msg: &Message) {
        let cfg = &self.config.previews;
        if !cfg.enabled || msg.deleted || !msg.previews.is_empty() {
            return;
        }
        let links = crate::previews::links(&msg.text, cfg.max_per_message);
        if links.is_empty() {
            return;
        }
        let job = Job {
            message: msg.id,
            links,
        };
        if self.previews.queue.try_send(job).is_err() {
            tracing::debug!(message = %msg.id, "link previews: queue full, skipped");
        }
    }

    /// Starts the task that fetches previews for queued messages (servers
    /// only; once).
    pub fn start_previews(self: &Arc<Self>) {
        let Some(mut waiting) = self.previews.waiting.lock().ok().and_then(|mut w| w.take()) else {
            return;
        };
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(job) = waiting.recv().await {
                let Some(app) = app.upgrade() else { break };
                let Ok(permit) = app.previews.fetches.clone().acquire_owned().await else {
                    break;
                };
                tokio::spawn(async move {
                    if let Err(e) = app.preview_message(job).await {
                        tracing::warn!(error = %e, "link previews: not recorded");
                    }
                    drop(permit);
                });
            }
        });
    }

    async fn preview_message(&self, job: Job) -> Result<()> {
        let Some(outbound) = self.previews.outbound.clone() else {
            return Ok(());
        };
        let mut previews = Vec::new();
        let mut cache = Vec::new();
        let mut images = Vec::new();
        for url in job.links {
            let now = crate::domain::now_ms();
            if let Some(row) = self.store.read()?.preview_cache(&url)?
                && row.expires_at > now
            {
                previews.extend(row.preview);
                continue;
            }
            let ttl = (self.config.previews.cache_secs as i64).saturating_mul(1000);
            match self.fetch_preview(&outbound, &url).await {
                Ok((preview, image)) => {
                    images.extend(image);
                    cache.push(PreviewCache {
                        url: url.clone(),
                        fetched_at: now,
                        expires_at: now.saturating_add(ttl),
                        preview: preview.clone(),
                    });
                    previews.extend(preview);
                }
                Err(e) => {
                    tracing::debug!(%url, error = %e, "link preview: nothing");
                    let ttl = if e.transient() {
                        RETRY_AFTER_MS.min(ttl)
                    } else {
                        ttl
                    };
                    cache.push(PreviewCache {
                        url: url.clone(),
                        fetched_at: now,
                        expires_at: now.saturating_add(ttl),
                        preview: None,
                    });
                }
            }
        }
        let _: bool = self
            .store
            .run(Command::SetPreviews {
                message: job.message,
                previews,
                cache,
                images,
            })
            .await?;
        Ok(())
    }

    /// Reads a page and, if it names one, its image.
    async fn fetch_preview(
        &self,
        outbound: &Outbound,
        url: &str,
    ) -> std::result::Result<(Option<LinkPreview>, Option<PreviewImage>), FetchError> {
        let cfg = &self.config.previews;
        let (page_url, resp) = self
            .get(
                outbound,
                url,
                cfg.max_html_bytes,
                "text/html,application/xhtml+xml;q=0.9",
            )
            .await?;
        let ctype = content_type(&resp.headers);
        if !matches!(ctype.as_str(), "text/html" | "application/xhtml+xml") {
            return Err(FetchError::Refused(format!("not a page: {ctype:?}")));
        }
        let meta = crate::previews::parse(&String::from_utf8_lossy(&resp.body));
        if meta.is_empty() {
            return Ok((None, None));
        }
        let mut preview = LinkPreview {
            url: url.to_string(),
            title: meta.title,
            description: meta.description,
            site_name: meta.site_name,
            image_url: None,
            image_width: None,
            image_height: None,
        };
        let mut stored = None;
        let image = meta.image.and_then(|i| {
            let base = url::Url::parse(&page_url).ok()?;
            let joined = base.join(&i).ok()?;
            matches!(joined.scheme(), "http" | "https").then(|| joined.to_string())
        });
        if let Some(image) = image {
            match self.fetch_image(outbound, &image).await {
                Ok((img, w, h)) => {
                    preview.image_url = Some(format!("/previews/{}", img.hash));
                    preview.image_width = Some(w);
                    preview.image_height = Some(h);
                    stored = Some(img);
                }
                // The page is still worth its card without the picture.
                Err(e) => tracing::debug!(%image, error = %e, "link preview: no image"),
            }
        }
        Ok((Some(preview), stored))
    }

    /// Fetches an image, judges and re-encodes it like an upload (its
    /// thumbnail is what is kept) and stores it.
    async fn fetch_image(
        &self,
        outbound: &Outbound,
        url: &str,
    ) -> std::result::Result<(PreviewImage, u32, u32), AppError> {
        let refused = |m: String| AppError::UnsupportedMediaType(m);
        let cfg = &self.config.previews;
        let (_, resp) = self
            .get(
                outbound,
                url,
                cfg.max_image_bytes,
                "image/webp,image/png,image/jpeg,image/gif",
            )
            .await
            .map_err(|e| refused(e.to_string()))?;
        let ctype = content_type(&resp.headers);
        if !matches!(
            ctype.as_str(),
            "image/jpeg" | "image/png" | "image/gif" | "image/webp"
        ) {
            return Err(refused(format!("not an image: {ctype:?}")));
        }
        let data = resp.body.to_vec();
        let ucfg = self.config.uploads.clone();
        let (data, plan) = tokio::task::spawn_blocking(move || {
            let plan = crate::uploads::plan(&data, &ucfg);
            (data, plan)
        })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
        let plan = plan?;
        let processed = {
            let budget = kib(plan.cost).min(kib(self.config.uploads.decode_budget_bytes));
            let _memory = self
                .decode_budget
                .acquire_many(budget)
                .await
                .map_err(|e| AppError::Internal(e.to_string()))?;
            let _slot = self
                .decode_slots
                .acquire()
                .await
                .map_err(|e| AppError::Internal(e.to_string()))?;
            let ucfg = self.config.uploads.clone();
            tokio::task::spawn_blocking(move || plan.run(&data, &ucfg))
                .await
                .map_err(|e| AppError::Internal(e.to_string()))??
        };
        let (w, h) = image::ImageReader::new(std::io::Cursor::new(&processed.thumb))
            .with_guessed_format()
            .ok()
            .and_then(|r| r.into_dimensions().ok())
            .unwrap_or((processed.width, processed.height));
        let files = self.files.clone();
        let thumb = Arc::new(processed.thumb);
        let t = thumb.clone();
        let hash = tokio::task::spawn_blocking(move || files.put(&t))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))??;
        if let Some(link) = self.store.link() {
            link.engine()
                .put_object(&hash, &thumb)
                .await
                .map_err(|e| AppError::Store(StoreError::Unavailable(e.to_string())))?;
        }
        Ok((
            PreviewImage {
                hash,
                mime: processed.thumb_mime.to_string(),
            },
            w,
            h,
        ))
    }

    /// GETs `url`, following up to `previews.max_redirects` redirects,
    /// each a new vetted request. Only a complete 200 answer within `cap`
    /// bytes is returned, with the URL it came from.
    async fn get(
        &self,
        outbound: &Outbound,
        url: &str,
        cap: usize,
        accept: &str,
    ) -> std::result::Result<(String, crate::outbound::Response), FetchError> {
        let mut url = url.to_string();
        for _ in 0..=self.config.previews.max_redirects {
            let resp = outbound
                .send_capped(
                    hyper::Method::GET,
                    &url,
                    true,
                    vec![("accept", accept.to_string())],
                    bytes::Bytes::new(),
                    cap,
                )
                .await?;
            if (300..400).contains(&resp.status) {
                let next = resp
                    .headers
                    .get(hyper::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| url::Url::parse(&url).ok()?.join(l).ok())
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| FetchError::Refused("a redirect to nowhere".into()))?;
                url = next.to_string();
                continue;
            }
            if resp.status != 200 {
                return Err(FetchError::Refused(format!("status {}", resp.status)));
            }
            let declared = resp
                .headers
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if resp.truncated || declared.is_some_and(|n| n > cap as u64) {
                return Err(FetchError::Refused(format!("larger than {cap} bytes")));
            }
            return Ok((url, resp));
        }
        Err(FetchError::Refused("too many redirects".into()))
    }
}

/// The media type of an answer, lower case, without parameters.
fn content_type(headers: &hyper::HeaderMap) -> String {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}
