//! The `event-ingest` binary: read the environment, run, exit non-zero if anything
//! accepted could not be written.

use std::process::ExitCode;

use event_ingest::config::{SETTINGS, help_text};
use event_ingest::{Application, Config, logging};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    if matches!(arg.as_deref(), Some("--help" | "-h")) {
        print!("{}", help_text(SETTINGS));
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("event-ingest: {e}");
            return ExitCode::from(2);
        }
    };
    match arg.as_deref() {
        None => {}
        Some("--print-config") => {
            print!("{}", config.print());
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("event-ingest: unknown argument {other:?}; see --help");
            return ExitCode::from(2);
        }
    }
    logging::init(config.app_env);
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped().await {
        Ok(report) if report.is_clean() => ExitCode::SUCCESS,
        Ok(report) => {
            log::error!("exiting with {} events not written", report.unwritten);
            ExitCode::FAILURE
        }
        Err(e) => {
            log::error!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
