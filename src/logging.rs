//! Logging: `env_logger`, with a default level per `APP_ENV` that `RUST_LOG` overrides.
//! Nothing is logged per request or per event at these defaults (a flush is one `debug`
//! line; failures are rate-limited warnings).

use crate::config::AppEnv;

/// Installs the global logger. Safe to call more than once (later calls do nothing), which
/// tests that build several applications rely on.
pub fn init(env: AppEnv) {
    // The `clickhouse` crate logs every query at info (through `tracing`'s log bridge);
    // that is per flush and per health check, so it is held to warnings by default.
    let default = match env {
        AppEnv::Dev | AppEnv::Prod => "info,clickhouse=warn",
        AppEnv::Test => "warn",
    };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp_millis()
        .try_init();
}
