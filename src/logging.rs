//! Logging: `env_logger`, with a default level per `APP_ENV` that `RUST_LOG` overrides;
//! JSON lines in `prod` (one object per line: `ts`, `level`, `target`, `msg`) for log
//! shippers, plain text elsewhere. Nothing is logged per request or per event at these
//! defaults (a flush is one `debug` line; failures are rate-limited warnings).

use std::io::Write;

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
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    builder.format_timestamp_millis();
    if env == AppEnv::Prod {
        builder.format(|buf, record| {
            let line = serde_json::json!({
                "ts": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    let _ = builder.try_init();
}
