//! Attachments that are any file: kept as sent (content-addressed and
//! fsynced like images), typed from their name, counted against the
//! uploader's quota. Images keep their own path (`upload`): judged,
//! cleaned and re-encoded.

use super::*;

impl App {
    /// A place among the uploads received at once
    /// (`uploads.max_concurrent_files`); 429 after a short wait.
    pub async fn file_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(Duration::from_secs(10), self.file_slots.acquire())
            .await
            .map_err(|_| {
                AppError::RateLimited("the server is busy receiving files; try again soon".into())
            })?
            .map_err(|e| AppError::Internal(e.to_string()))
    }

    /// Takes an upload from the edge: an image (by its bytes) goes through
    /// the image path; anything else is kept as a file. A name that claims
    /// an image type on bytes that are not such an image is refused, so a
    /// download never passes for an image.
    pub async fn upload_any(
        self: &Arc<Self>,
        user: &User,
        name: Option<&str>,
        data: Vec<u8>,
    ) -> Result<UploadRecord> {
        let name = crate::files::sanitize_name(name.unwrap_or(""));
        let magic = image::guess_format(&data)
            .ok()
            .and_then(crate::uploads::mime_of)
            .is_some();
        if magic || crate::files::claims_image(&name) {
            if data.len() > self.config.uploads.max_bytes {
                return Err(AppError::TooLarge(format!(
                    "file: larger than {} bytes",
                    self.config.uploads.max_bytes
                )));
            }
            return self.upload_image(user, name, data).await;
        }
        self.upload_file(user, name, data).await
    }

    async fn upload_file(
        self: &Arc<Self>,
        user: &User,
        name: String,
        data: Vec<u8>,
    ) -> Result<UploadRecord> {
        let cfg = &self.config.uploads;
        if data.len() > cfg.max_file_bytes {
            return Err(AppError::TooLarge(format!(
                "file: larger than {} bytes",
                cfg.max_file_bytes
            )));
        }
        let mime = crate::files::mime_for(&name);
        if !crate::files::allowed(&cfg.allowed_types, &name, mime) {
            return Err(AppError::UnsupportedMediaType(format!(
                "file: this server does not accept {mime} files"
            )));
        }
        self.limits
            .uploads
            .take(&user.id)
            .map_err(|retry| throttled("too many uploads", retry))?;
        let quota = cfg.quota_bytes_per_user;
        let used = self.store.read()?.uploaded_bytes(user.id)?;
        if used.saturating_add(data.len() as u64) > quota {
            return Err(AppError::QuotaExceeded(format!(
                "upload quota of {} MiB reached ({} MiB used)",
                quota / (1024 * 1024),
                used / (1024 * 1024)
            )));
        }
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| AppError::Internal(e.to_string()))?;
        let data = Arc::new(data);
        let mut rec = UploadRecord {
            id: raw.iter().map(|b| format!("{b:02x}")).collect(),
            uploader: user.id,
            file: String::new(),
            thumb: String::new(),
            mime: mime.to_string(),
            thumb_mime: String::new(),
            width: 0,
            height: 0,
            size: data.len() as u64,
            created_at: crate::domain::now_ms(),
            refs: 0,
            name,
            kind: crate::files::kind_of(mime).to_string(),
        };
        // As for images: the record is written only if the file is still
        // there on the writer; otherwise it is written again.
        for _ in 0..3 {
            let (files, d) = (self.files.clone(), data.clone());
            rec.file = tokio::task::spawn_blocking(move || files.put(&d))
                .await
                .map_err(|e| AppError::Internal(e.to_string()))??;
            if let Some(link) = self.store.link() {
                link.engine()
                    .put_object(&rec.file, &data)
                    .await
                    .map_err(|e| AppError::Store(StoreError::Unavailable(e.to_string())))?;
            }
            let recorded: bool = self.store.run(Command::InsertUpload(rec.clone())).await?;
            if recorded {
                return Ok(rec);
            }
        }
        Err(AppError::Internal(
            "uploaded files were removed three times before their record".into(),
        ))
    }
}
