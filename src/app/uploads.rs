//! Uploads: judging and keeping images, their records, and removing
//! files nothing refers to.

use super::*;

/// At most this many uploads are processed or wait to be, holding their
/// bodies (up to `uploads.max_bytes` each); more are answered 429 at once.
pub(super) const MAX_QUEUED_DECODES: usize = 16;

/// How long an upload waits for room in the decode budget before it is
/// answered 429.
const DECODE_WAIT: Duration = Duration::from_secs(30);

impl App {
    /// Judges, cleans, thumbnails and keeps an image; returns the
    /// attachment that messages can carry.
    pub async fn upload(self: &Arc<Self>, user: &User, data: Vec<u8>) -> Result<UploadRecord> {
        self.upload_image(user, String::new(), data).await
    }

    /// `upload`, keeping the image's (sanitised) file name.
    pub async fn upload_image(
        self: &Arc<Self>,
        user: &User,
        name: String,
        data: Vec<u8>,
    ) -> Result<UploadRecord> {
        self.limits
            .uploads
            .take(&user.id)
            .map_err(|retry| throttled("too many uploads", retry))?;
        let quota = self.config.uploads.quota_bytes_per_user;
        if self.store.read()?.uploaded_bytes(user.id)? >= quota {
            return Err(AppError::QuotaExceeded(format!(
                "upload quota of {} MiB reached",
                quota / (1024 * 1024)
            )));
        }
        let cfg = self.config.uploads.clone();
        let (data, plan) = tokio::task::spawn_blocking(move || {
            let plan = crate::uploads::plan(&data, &cfg);
            (data, plan)
        })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
        let plan = plan?;
        let processed = {
            let busy = || {
                AppError::RateLimited("the server is busy with other images; try again soon".into())
            };
            let _queued = self.decode_queue.try_acquire().map_err(|_| busy())?;
            // The budget first: the semaphore is fair, so a large image
            // waiting for room is not overtaken for ever by small ones. A
            // wait has an end: its body is held in memory meanwhile.
            let budget = kib(plan.cost).min(kib(self.config.uploads.decode_budget_bytes));
            let _memory =
                tokio::time::timeout(DECODE_WAIT, self.decode_budget.acquire_many(budget))
                    .await
                    .map_err(|_| busy())?
                    .map_err(|e| AppError::Internal(e.to_string()))?;
            let _slot = self
                .decode_slots
                .acquire()
                .await
                .map_err(|e| AppError::Internal(e.to_string()))?;
            let cfg = self.config.uploads.clone();
            tokio::task::spawn_blocking(move || plan.run(&data, &cfg))
                .await
                .map_err(|e| AppError::Internal(e.to_string()))??
        };
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| AppError::Internal(e.to_string()))?;
        let processed = Arc::new(processed);
        let mut rec = UploadRecord {
            id: raw.iter().map(|b| format!("{b:02x}")).collect(),
            uploader: user.id,
            file: String::new(),
            thumb: String::new(),
            mime: processed.mime.to_string(),
            thumb_mime: processed.thumb_mime.to_string(),
            width: processed.width,
            height: processed.height,
            size: processed.bytes.len() as u64,
            created_at: crate::domain::now_ms(),
            refs: 0,
            name,
            kind: "image".into(),
        };
        // `put` skips a file already on disk, which may be one whose last
        // record is going away: the record is written only if, on the
        // writer (where files are removed), both files are still there;
        // otherwise they are written again.
        for _ in 0..3 {
            let (files, p) = (self.files.clone(), processed.clone());
            (rec.file, rec.thumb) = tokio::task::spawn_blocking(move || {
                Ok::<_, UploadError>((files.put(&p.bytes)?, files.put(&p.thumb)?))
            })
            .await
            .map_err(|e| AppError::Internal(e.to_string()))??;
            // In a cluster any node serves any upload: the engine holds
            // the files before the record that names them is committed.
            if let Some(link) = self.store.link() {
                for (hash, bytes) in [
                    (&rec.file, &processed.bytes),
                    (&rec.thumb, &processed.thumb),
                ] {
                    link.engine()
                        .put_object(hash, bytes)
                        .await
                        .map_err(|e| AppError::Store(StoreError::Unavailable(e.to_string())))?;
                }
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

    /// The path of a stored file, fetched from the cluster's engine first
    /// if this node has no copy yet (it was uploaded through another node).
    pub async fn stored_file(&self, hash: &str) -> Result<std::path::PathBuf> {
        let path = self.files.path(hash).ok_or(AppError::NotFound("upload"))?;
        if self.files.exists(hash) {
            return Ok(path);
        }
        let Some(link) = self.store.link() else {
            return Err(AppError::NotFound("upload"));
        };
        let bytes = link
            .engine()
            .get_object(hash)
            .await
            .map_err(|e| AppError::Store(StoreError::Unavailable(e.to_string())))?
            .ok_or(AppError::NotFound("upload"))?;
        let files = self.files.clone();
        let stored = tokio::task::spawn_blocking(move || files.put(&bytes))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))??;
        // Content-addressed: what came back must be what was asked for.
        if stored != hash {
            self.files.remove(&stored);
            return Err(AppError::Internal(format!(
                "the engine's copy of {hash} does not match its hash"
            )));
        }
        Ok(path)
    }

    /// The record behind `/uploads/{id}`; ids are 32 hex digits.
    pub fn upload_record(&self, id: &str) -> Result<UploadRecord> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AppError::NotFound("upload"));
        }
        self.store
            .read()?
            .upload(id)?
            .ok_or(AppError::NotFound("upload"))
    }

    pub fn uploads(&self, of: Option<&str>) -> Result<Vec<UploadRecord>> {
        let user = of.map(|n| self.user_by_name(n)).transpose()?;
        Ok(self.store.read()?.uploads(user.map(|u| u.id))?)
    }

    /// Removes an upload (an operator's call): its files go when no other
    /// upload names them. Messages that carried it keep a dead link.
    pub async fn delete_upload(&self, id: &str) -> Result<UploadRecord> {
        let id = id.to_string();
        let removed: Option<(UploadRecord, Vec<String>)> =
            self.store.run(Command::DeleteUpload { id }).await?;
        let (rec, orphaned) = removed.ok_or(AppError::NotFound("upload"))?;
        self.remove_files(orphaned).await?;
        Ok(rec)
    }

    /// Removes the stored files among `hashes` that no record names. The
    /// check and the removal run inside write operations, on the store's
    /// single writer, which is also where an upload checks that its files
    /// exist before its record is written: so a file never goes between
    /// an upload finding it on disk and its record being committed.
    /// Returns how many files went.
    pub(super) async fn remove_files(&self, hashes: Vec<String>) -> Result<usize> {
        let mut removed = 0;
        // A few at a time: chat waits behind each of these operations.
        for some in hashes.chunks(64) {
            let (files, some) = (self.files.clone(), some.to_vec());
            let unnamed: Vec<(String, bool)> = self
                .store
                .on_writer(move |tx| {
                    let mut unnamed = Vec::new();
                    for hash in some {
                        if tx.file_unreferenced(&hash)? {
                            let here = files.remove(&hash);
                            unnamed.push((hash, here));
                        }
                    }
                    Ok(unnamed)
                })
                .await?;
            removed += unnamed.iter().filter(|(_, here)| *here).count();
            // The engine's copy goes too, whichever node held a local one.
            if let Some(link) = self.store.link() {
                for (hash, _) in unnamed {
                    if let Err(e) = link.engine().delete_object(&hash).await {
                        tracing::warn!(%hash, error = %e, "cluster: a stored file stays in the engine");
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Removes uploads that no message carries and that are older than
    /// `grace_secs`, then files that no upload names (left by a crash
    /// between writing a file and recording it). Returns what went.
    pub async fn gc_uploads(&self, grace_secs: u64) -> Result<(Vec<UploadRecord>, usize)> {
        let cutoff = crate::domain::now_ms() - (grace_secs as i64).saturating_mul(1000);
        let stale: Vec<UploadRecord> = self
            .store
            .read()?
            .uploads(None)?
            .into_iter()
            .filter(|u| u.refs == 0 && u.created_at < cutoff)
            .collect();
        let mut removed = Vec::new();
        for rec in stale {
            // Attached since the scan: its count is no longer zero, keep it.
            let gone: Option<(UploadRecord, Vec<String>)> = self
                .store
                .run(Command::DeleteUnusedUpload { id: rec.id.clone() })
                .await?;
            if let Some((rec, orphaned)) = gone {
                self.remove_files(orphaned).await?;
                removed.push(rec);
            }
        }
        // Candidates only: `remove_files` decides again on the writer.
        let rx = self.store.read()?;
        let mut unnamed = Vec::new();
        for hash in self.files.list() {
            let old = self
                .files
                .path(&hash)
                .and_then(|p| std::fs::metadata(p).ok())
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() >= grace_secs);
            if old && !rx.file_in_use(&hash)? {
                unnamed.push(hash);
            }
        }
        drop(rx);
        let swept = self.remove_files(unnamed).await?;
        Ok((removed, swept))
    }
}

/// Bytes in whole KiB, the decode budget's unit (a tokio semaphore takes
/// at most `u32::MAX` permits at once).
pub(super) fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}
