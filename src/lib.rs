//! confab: a self-hosted real-time chat server. See ARCHITECTURE.md for the
//! map of these modules and the rules between them.

pub mod admin;
pub mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod domain;
pub mod edge;
pub mod files;
pub mod gate;
pub mod http;
pub mod hub;
pub mod jwks;
pub mod limits;
pub mod metrics;
pub mod natsctl;
pub mod outbound;
pub mod perms;
pub mod previews;
pub mod protocol;
pub mod search;
pub mod server;
pub mod sio;
pub mod store;
pub mod term;
pub mod tls;
pub mod uploads;
pub mod web;
pub mod webpush;
pub mod ws;
pub mod wsio;

/// Sets up logging: `RUST_LOG` if set, else the given default level.
/// Logs go to standard error, in colour only when a person reads them
/// there (see [`use_colour`]).
pub fn init_tracing(default_level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Colour escapes belong on a terminal only: in a file, a pipe or a
/// journal they are noise. `NO_COLOR` set to anything but the empty
/// string turns them off everywhere (no-color.org).
pub fn use_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
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

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(super::use_colour(true, None));
        assert!(super::use_colour(true, Some(OsStr::new(""))));
        assert!(!super::use_colour(true, Some(OsStr::new("1"))));
        assert!(!super::use_colour(false, None));
    }
}
