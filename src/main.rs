//! The `rbdvol` binary: parses the command line and runs it; `anyhow` only
//! here and in `cli`.

mod cli;

use clap::Parser;

fn main() {
    init_logging();
    // Every rbdvol process may hold the cephx key: none leaves a core dump.
    if let Err(e) = rbdvol::host::sys::forbid_core_dumps() {
        tracing::warn!("{e}");
    }
    if let Err(e) = cli::run(cli::Cli::parse()) {
        // One line, each cause after a colon unless the message already
        // says it: never a backtrace.
        let mut line = e.to_string();
        for cause in e.chain().skip(1).map(|c| c.to_string()) {
            if !line.contains(&cause) {
                line = format!("{line}: {cause}");
            }
        }
        eprintln!("error: {line}");
        std::process::exit(1);
    }
}

/// wetopi's `LOG_LEVEL` (0 error, 1 warn, 2 info, 3 debug) unless `RUST_LOG` is set.
fn init_logging() {
    let level = match std::env::var("LOG_LEVEL").ok().as_deref().map(str::trim) {
        Some("0") => "error",
        Some("1") => "warn",
        Some("3") => "debug",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
