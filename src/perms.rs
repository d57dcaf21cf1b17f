//! Who may read the data directory: its owner only. The store holds the
//! token signing secret and every password hash, so a copy of it in
//! another local user's hands is an admin token for them; the admin
//! socket in it is the operator's console.
//!
//! Files are created private through the process's umask (set before
//! anything is written), so none is ever readable by others, not even
//! for the moment between creating and restricting it. What an older
//! version or a loose umask left behind is tightened at start.

use std::io;
use std::path::{Path, PathBuf};

/// Directories: the owner only, with search.
pub const DIR_MODE: u32 = 0o700;
/// Files: the owner only.
pub const FILE_MODE: u32 = 0o600;

/// Makes every file and directory this process creates from now on
/// private to its user, whatever umask it was started with.
pub fn private_umask() {
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file mode mask; it cannot
    // fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// A path in the data directory that others may read, write or enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loose {
    pub path: PathBuf,
    pub mode: u32,
}

/// Files and directories under `dir` (itself included) open to anyone but
/// their owner. Symbolic links are not followed.
pub fn loose(dir: &Path) -> io::Result<Vec<Loose>> {
    let mut out = Vec::new();
    // The directory itself may be a link (`/var/lib/confab -> /srv/chat`):
    // what matters is where it leads. Links inside it are left alone.
    let dir = &std::fs::canonicalize(dir)?;
    #[cfg(unix)]
    visit(dir, &mut |path, meta| {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            out.push(Loose {
                path: path.to_path_buf(),
                mode,
            });
        }
    })?;
    Ok(out)
}

/// Creates `dir` (and its parents) if missing, private, and takes from
/// every file and directory under it what others could do with it.
/// Returns what was tightened, for the log.
pub fn secure_dir(dir: &Path) -> io::Result<Vec<Loose>> {
    private_umask();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    let found = loose(dir)?;
    #[cfg(unix)]
    for l in &found {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(&l.path)?;
        // Changing a link's mode would change its target's.
        if meta.file_type().is_symlink() {
            continue;
        }
        let keep = if meta.is_dir() { DIR_MODE } else { FILE_MODE };
        // Only bits are taken away: an owner-only file stays as it was.
        let mode = l.mode & keep;
        std::fs::set_permissions(&l.path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(found)
}

/// Calls `f` on `dir` and everything under it, without following links.
fn visit(dir: &Path, f: &mut dyn FnMut(&Path, &std::fs::Metadata)) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    f(dir, &meta);
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
            if meta.is_dir() {
                visit(&path, f)?;
            } else if !meta.file_type().is_symlink() {
                f(&path, &meta);
            }
        }
    }
    Ok(())
}

/// Whether the process at the other end of a Unix socket runs as this
/// process's user (or as root, who can read the store anyway).
#[cfg(unix)]
pub fn peer_is_trusted(stream: &tokio::net::UnixStream) -> bool {
    // SAFETY: geteuid cannot fail and has no side effects.
    let me = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(cred) => cred.uid() == me || cred.uid() == 0,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn secure_dir_tightens_what_it_finds() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(dir.join("uploads/ab")).unwrap();
        std::fs::write(dir.join("confab.redb"), b"x").unwrap();
        std::fs::write(dir.join("uploads/ab/abcd"), b"x").unwrap();
        for (p, m) in [
            (dir.clone(), 0o755),
            (dir.join("uploads"), 0o777),
            (dir.join("uploads/ab"), 0o750),
            (dir.join("confab.redb"), 0o644),
            (dir.join("uploads/ab/abcd"), 0o666),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
        }
        assert_eq!(loose(&dir).unwrap().len(), 5);
        let fixed = secure_dir(&dir).unwrap();
        assert_eq!(fixed.len(), 5);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("uploads/ab")), 0o700);
        assert_eq!(mode(&dir.join("confab.redb")), 0o600);
        assert_eq!(mode(&dir.join("uploads/ab/abcd")), 0o600);
        assert!(loose(&dir).unwrap().is_empty());
    }

    #[test]
    fn a_linked_data_directory_is_tightened_where_it_leads() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("confab.redb"), b"x").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            real.join("confab.redb"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let link = tmp.path().join("data");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(secure_dir(&link).unwrap().len(), 2);
        assert_eq!(mode(&real), 0o700, "still a directory one can enter");
        assert_eq!(mode(&real.join("confab.redb")), 0o600);
        assert!(loose(&link).unwrap().is_empty());
    }
}
