//! Optional TLS in the binary: the certificate and key come from PEM files
//! and are loaded again, without a restart, on SIGHUP and when the files
//! change (a certbot renewal). Connections already open keep the
//! certificate they started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the certificate and key do not fit together: {0}")]
    Config(String),
}

/// The current TLS configuration, swapped whole on reload.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
    /// Modification times seen at the last load, to notice renewals.
    seen: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let read_err = |path: &Path, e: &dyn std::fmt::Display| TlsError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read_err(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_err(cert, &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // WebSocket upgrades are HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<Tls>, TlsError> {
        let config = load(cert, key)?;
        Ok(Arc::new(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(config)),
            seen: RwLock::new((modified(cert), modified(key))),
        }))
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Loads the files again. On failure the old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        *self.seen.write().unwrap_or_else(|e| e.into_inner()) =
            (modified(&self.cert), modified(&self.key));
        tracing::info!(cert = %self.cert.display(), "TLS certificate loaded");
        Ok(())
    }

    /// Reloads if either file changed since the last load.
    pub fn reload_if_changed(&self) {
        let now = (modified(&self.cert), modified(&self.key));
        let changed = *self.seen.read().unwrap_or_else(|e| e.into_inner()) != now;
        if changed && let Err(e) = self.reload() {
            tracing::error!(error = %e, "TLS certificate changed but could not be loaded; keeping the old one");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path) -> (PathBuf, PathBuf) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    fn current(tls: &Tls) -> Arc<ServerConfig> {
        tls.current.read().unwrap().clone()
    }

    #[test]
    fn a_renewed_file_is_noticed_and_an_unchanged_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path());
        let tls = Tls::open(&cert, &key).unwrap();
        let before = current(&tls);
        tls.reload_if_changed();
        assert!(Arc::ptr_eq(&before, &current(&tls)));
        // Make sure the new files get a later modification time.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        write_pair(dir.path());
        for p in [&cert, &key] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        tls.reload_if_changed();
        assert!(!Arc::ptr_eq(&before, &current(&tls)));
    }

    #[test]
    fn mismatched_or_missing_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = write_pair(dir.path());
        let other = tempfile::tempdir().unwrap();
        let (_, wrong_key) = write_pair(other.path());
        let e = Tls::open(&cert, &wrong_key).err().unwrap().to_string();
        assert!(e.contains("do not fit"), "{e}");
        let e = Tls::open(&dir.path().join("nope.pem"), &wrong_key)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nope.pem"), "{e}");
    }
}
