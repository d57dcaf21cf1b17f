use clap::Parser;
use confab::cli::{self, Cli, Command};

/// Under load the server allocates and frees small buffers at a high rate
/// from several threads (frames, fan-out, the store writer); glibc's
/// malloc spent about a fifth of a core on it. See docs/benchmarks.md.
/// `--features system-alloc` leaves it out, for heap profilers that see
/// only the C allocator (valgrind's DHAT: bench/heap.sh).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Before anything is written: the store, its backups, uploads and logs
    // are for the server's user alone, whatever umask it was started with.
    confab::perms::private_umask();
    let cli = Cli::parse();
    // The server logs at its configured level; admin commands stay quiet
    // unless RUST_LOG asks otherwise.
    match &cli.command {
        // The console owns the terminal: logs go to a file beside the store.
        Command::Serve { console: true, .. } => match cli::load_config(&cli.global, None) {
            Ok(c) => confab::init_tracing_to_file(
                &c.server.log_level,
                &c.server.data_dir.join("confab.log"),
            ),
            Err(_) => confab::init_tracing("info"),
        },
        Command::Serve { .. } => confab::init_tracing(
            &cli::load_config(&cli.global, None)
                .map(|c| c.server.log_level)
                .unwrap_or_else(|_| "info".into()),
        ),
        _ => confab::init_tracing("warn"),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
