//! Exactly-once without deduplication tokens: servers older than 22.2 cannot drop a retried
//! insert, so before one gets an insert again that may already have reached it (a retry
//! after a lost answer, a replay after a restart) its query log is asked whether that
//! insert finished. Inserts to such servers carry their token as `query_id`, with
//! `log_queries=1`.
//!
//! This narrows at-least-once rather than closing it: the answer is only as good as the
//! query log (off in the server's configuration, or lost when the server was killed before
//! flushing it), and then the insert is sent again.

use std::time::Duration;

use clickhouse::Client;

use super::SinkError;

/// Whether the insert with `query_id` finished on the server: `Some(true)` it did (its rows
/// are stored), `Some(false)` it did not, `None` the server cannot tell (no query log, no
/// permission). `Err` when the server could not be asked, or the insert is still running
/// there (retry later).
pub async fn finished(
    client: &Client,
    query_id: &str,
    timeout: Duration,
) -> Result<Option<bool>, SinkError> {
    // The earlier attempt may still be running on the server after its connection broke
    // (while ClickHouse shuts down, say): its outcome is not known yet, so ask again later
    // rather than resend and race it.
    let running = client
        .query("SELECT count() FROM system.processes WHERE query_id = ?")
        .bind(query_id)
        .fetch_one::<u64>();
    if answer(timeout, running)
        .await?
        .is_some_and(|n| n.is_ok_and(|n| n > 0))
    {
        return Err(SinkError::Retryable(format!(
            "insert {query_id} is still running on the server"
        )));
    }
    // The log is written in batches every few seconds: write out what is pending first.
    let flush = client.query("SYSTEM FLUSH LOGS").execute();
    if let Some(result) = answer(timeout, flush).await? {
        result?;
    } else {
        return Ok(None);
    }
    let count = client
        // `type` 2 is QueryFinish (a number before 19.x, an Enum8 after; CAST reads both).
        // An exception (4) never counts, even with `written_rows > 0`: rows are counted as
        // they are buffered, before the part is committed, so it does not prove the insert
        // was stored. Sending it again risks a duplicate; trusting it risks a loss.
        .query(
            "SELECT count() FROM system.query_log WHERE query_id = ? \
             AND CAST(type AS Int8) = 2",
        )
        .bind(query_id)
        .fetch_one::<u64>();
    Ok(answer(timeout, count)
        .await?
        .map(|n| n.is_ok_and(|n| n > 0)))
}

/// Runs `fut` with a timeout. `Err`: the server did not answer (retryable); `Ok(None)`: it
/// answered with an error of its own (it cannot tell); `Ok(Some(_))`: the result.
async fn answer<T>(
    timeout: Duration,
    fut: impl Future<Output = clickhouse::error::Result<T>>,
) -> Result<Option<Result<T, SinkError>>, SinkError> {
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(SinkError::Retryable(format!(
            "no answer within {timeout:?}"
        ))),
        Ok(Ok(value)) => Ok(Some(Ok(value))),
        Ok(Err(e)) => {
            let e = SinkError::from(e);
            match e.code() {
                // The server said why: the log is not there or not ours to read.
                Some(code) => {
                    log::debug!("query log unavailable (code {code}): {e}");
                    Ok(None)
                }
                None => Err(e),
            }
        }
    }
}
