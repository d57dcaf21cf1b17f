//! The operator's operations: backups, retention and export.

use super::*;

impl App {
    /// Writes a consistent copy of the store to `dest` (and, when asked,
    /// the upload files that copy refers to into `uploads_dir`, in the same
    /// layout as the data directory's `uploads/`).
    pub async fn backup(
        self: &Arc<Self>,
        dest: std::path::PathBuf,
        uploads_dir: Option<std::path::PathBuf>,
    ) -> Result<serde_json::Value> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let (uploads, rows) = app.store.backup(&dest)?;
            let mut files = 0;
            if let Some(dir) = uploads_dir {
                let target = FileStore::new_at(&dir);
                for rec in &uploads {
                    for hash in [&rec.file, &rec.thumb] {
                        if let (Some(from), Some(to)) = (app.files.path(hash), target.path(hash)) {
                            if to.exists() {
                                continue;
                            }
                            if let Some(parent) = to.parent() {
                                std::fs::create_dir_all(parent).map_err(StoreError::from)?;
                            }
                            std::fs::copy(&from, &to).map_err(StoreError::from)?;
                            files += 1;
                        }
                    }
                }
            }
            Ok::<_, AppError>(serde_json::json!({
                "path": dest,
                "rows": rows,
                "uploads": uploads.len(),
                "files_copied": files,
            }))
        })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
    }

    /// Sets a room's own retention (by room name or id).
    pub async fn set_retention(&self, key: &str, r: crate::store::Retention) -> Result<Room> {
        let room = self.find_room(key)?;
        let id = room.id;
        self.store
            .run::<()>(Command::SetRetention {
                room: id,
                retention: r,
            })
            .await?;
        Ok(room)
    }

    /// Applies retention as of `now_ms`: each room's own policy, else the
    /// server's, in transactions of at most a few hundred messages so chat
    /// never waits long behind it. Returns the messages removed.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let cfg = &self.config.store;
        let rooms = self.store.read()?.rooms()?;
        let mut removed = 0;
        for room in rooms {
            let (own, last) = {
                let rx = self.store.read()?;
                (rx.retention(room.id)?, rx.last_seq(room.id)?)
            };
            let age = own.max_age_secs.unwrap_or(cfg.retention_days * 86_400);
            let keep = own.keep_last.unwrap_or(cfg.retention_keep_last);
            let before = (age > 0).then(|| now_ms - (age as i64).saturating_mul(1000));
            let up_to = (keep > 0 && last > keep).then(|| last - keep);
            if before.is_none() && up_to.is_none() {
                continue;
            }
            loop {
                let id = room.id;
                let n: usize = self
                    .store
                    .run(Command::PruneRoom {
                        room: id,
                        before,
                        up_to,
                        max: 500,
                    })
                    .await?;
                removed += n;
                if n < 500 {
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "retention removed old messages");
        }
        // Tokens ended one at a time need remembering only until they
        // would have expired anyway.
        let now_secs = u64::try_from(now_ms / 1000).unwrap_or(0);
        self.store
            .run::<usize>(Command::PruneRevokedTokens { now_secs })
            .await?;
        Ok(removed)
    }

    /// A room's whole history with its members, for `confab export`.
    pub fn export(&self, key: &str) -> Result<serde_json::Value> {
        let room = self.find_room(key)?;
        let rx = self.store.read()?;
        let members = rx.members(room.id)?;
        let mut messages = Vec::new();
        let mut after = 0;
        loop {
            let page = Page {
                before: None,
                after: Some(after),
                limit: 1000,
            };
            let (batch, more) = rx.history(room.id, page)?;
            if let Some(last) = batch.last() {
                after = last.seq;
            }
            messages.extend(batch);
            if !more {
                break;
            }
        }
        Ok(serde_json::json!({ "room": room, "members": members, "messages": messages }))
    }
}
