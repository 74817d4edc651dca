//! Shutdown: the signal that starts it ([`signal`]); what it achieved is the lanes'
//! [`ShutdownReport`](crate::lane::ShutdownReport). SIGTERM and SIGINT both start the same graceful stop (actix's own
//! handler would drop in-flight requests on SIGINT); the final flush itself is the
//! flusher's guard's job (`flusher::FlusherGuard`).
//!
//! `SHUTDOWN_TIMEOUT_SECS` is one budget, counted from the signal: in-flight requests get
//! the first part ([`request_budget_secs`]) and are cut off after it (a client trickling a
//! body must not use it all), and the final flush keeps the rest.

/// Seconds of a `total`-second shutdown budget in-flight requests may use before they are
/// cut off: half, rounded down, so the final flush keeps at least the other half (all of a
/// 1-second budget). A request cut off was never answered, so nothing it carried counts as
/// accepted.
pub fn request_budget_secs(total: u64) -> u64 {
    total / 2
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C). If a handler cannot be installed it
/// logs why and waits for the other one only.
pub async fn signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                log::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            log::warn!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = terminate => log::info!("SIGTERM received; shutting down"),
        () = interrupt => log::info!("SIGINT received; shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::request_budget_secs;

    #[test]
    fn the_final_flush_keeps_at_least_half_the_budget() {
        for total in [0, 1, 2, 5, 30, 31] {
            let requests = request_budget_secs(total);
            assert!(total - requests >= total.div_ceil(2), "{total}: {requests}");
        }
        assert_eq!(request_budget_secs(30), 15);
    }
}
