use clap::Parser;
use confab::cli::{self, Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The server logs at its configured level; admin commands stay quiet
    // unless RUST_LOG asks otherwise.
    let level = match &cli.command {
        Command::Serve { .. } => cli::load_config(&cli.global, None)
            .map(|c| c.server.log_level)
            .unwrap_or_else(|_| "info".into()),
        _ => "warn".into(),
    };
    confab::init_tracing(&level);
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
