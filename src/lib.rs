//! confab: a self-hosted real-time chat server. See ARCHITECTURE.md for the
//! map of these modules and the rules between them.

pub mod admin;
pub mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub mod console;
pub mod domain;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod perms;
pub mod protocol;
pub mod server;
pub mod store;
pub mod tls;
pub mod uploads;
pub mod web;
pub mod ws;
pub mod wsio;

/// Sets up logging: `RUST_LOG` if set, else the given default level.
/// Logs go to standard error.
pub fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Logging into a file (for `serve --console`, whose screen must not be
/// written over). Falls back to standard error if the file cannot open.
pub fn init_tracing_to_file(default_level: &str, path: &std::path::Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    let Ok(file) = file else {
        return init_tracing(default_level);
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
}
