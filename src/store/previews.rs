//! Link previews in the store: the cache of what each page said (or that
//! it gave nothing), the preview images confab serves, and attaching
//! previews to a message. Fetching is not done here: the node that took a
//! message fetches its links (app/previews.rs) and records the outcome
//! through one `SetPreviews` command.

use super::*;
use crate::domain::LinkPreview;

/// What a page gave, or that it gave nothing, until `expires_at`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreviewCache {
    pub url: String,
    pub fetched_at: i64,
    pub expires_at: i64,
    /// `None`: the page could not be read or said nothing worth showing.
    pub preview: Option<LinkPreview>,
}

/// A preview image stored under its hash, re-encoded like uploads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreviewImage {
    pub hash: String,
    pub mime: String,
}

impl Tx {
    /// Records fetched pages and images; attaches `previews` to the
    /// message unless it is gone, deleted or already has some. Returns
    /// whether the message changed.
    pub fn set_previews(
        &mut self,
        message: Id,
        previews: Vec<LinkPreview>,
        cache: &[PreviewCache],
        images: &[PreviewImage],
    ) -> Result<bool> {
        {
            let mut t = self.txn.open_table(PREVIEW_URL_TO_CACHE)?;
            for c in cache {
                t.insert(c.url.as_str(), encode(c).as_slice())?;
            }
        }
        {
            let mut t = self.txn.open_table(PREVIEW_IMAGE_TO_MIME)?;
            let mut refs = self.txn.open_table(FILE_TO_REFS)?;
            for img in images {
                if t.get(img.hash.as_str())?.is_some() {
                    continue;
                }
                t.insert(img.hash.as_str(), img.mime.as_str())?;
                // Named like an upload's file, so sweeps of unnamed files
                // keep it.
                let n = refs.get(img.hash.as_str())?.map(|v| v.value()).unwrap_or(0);
                refs.insert(img.hash.as_str(), n + 1)?;
            }
        }
        if previews.is_empty() {
            return Ok(false);
        }
        let Some(mut msg) = self.message(message)? else {
            return Ok(false);
        };
        if msg.deleted || !msg.previews.is_empty() {
            return Ok(false);
        }
        msg.previews = previews;
        self.put_message(&msg)?;
        self.emit(Change::MessageUpdated(msg));
        Ok(true)
    }
}

impl Rx {
    pub fn preview_cache(&self, url: &str) -> Result<Option<PreviewCache>> {
        let t = self.txn.open_table(PREVIEW_URL_TO_CACHE)?;
        match t.get(url)? {
            Some(v) => Ok(Some(decode("preview_url_to_cache", v.value())?)),
            None => Ok(None),
        }
    }

    /// The type of a preview image confab serves, if `hash` is one.
    pub fn preview_image(&self, hash: &str) -> Result<Option<String>> {
        let t = self.txn.open_table(PREVIEW_IMAGE_TO_MIME)?;
        Ok(t.get(hash)?.map(|v| v.value().to_string()))
    }
}
