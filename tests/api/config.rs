//! Start-up configuration errors, as an operator sees them from the binary.

use std::process::Command;

#[test]
fn bad_env_values_stop_start_up_naming_the_variable() {
    for (var, value) in [
        ("BUFFER_SIZE", "abc"),
        ("BUFFER_MODE", "fast"),
        ("HTTP_PORT", "-1"),
        ("BUFFER_FLUSH_MS", "0"),
        ("APP_ENV", "staging"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_event-ingest"))
            .env_clear()
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}
