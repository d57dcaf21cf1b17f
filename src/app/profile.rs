//! A user's own profile: the picture shown beside their messages.

use super::*;

impl App {
    /// Makes one of the caller's uploads their picture (`None`: no picture)
    /// and returns them as others now see them.
    pub async fn set_avatar(&self, user: &User, upload: Option<String>) -> Result<User> {
        if let Some(id) = &upload {
            // The same answer for someone else's upload as for a missing one.
            let mine = self
                .store
                .read()?
                .upload(id)?
                .is_some_and(|u| u.uploader == user.id);
            if !mine {
                return Err(AppError::BadRequest(format!(
                    "upload: unknown upload id {id:?}"
                )));
            }
        }
        let rec: UserRecord = self
            .store
            .run(Command::SetAvatar {
                user: user.id,
                upload,
            })
            .await?;
        Ok(rec.public())
    }
}
