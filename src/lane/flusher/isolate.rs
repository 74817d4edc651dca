//! Finding the rows ClickHouse rejects without storing the rest piecemeal: the halves are
//! sent to the sink's probe (for ClickHouse an `ENGINE = Null` copy of the table: it runs
//! the same conversions and `MATERIALIZED` expressions, and stores nothing), and only then
//! are the good rows written, in one insert.
//!
//! Splitting real inserts instead would store every good half as its own insert: a batch
//! with a few dozen bad rows would become hundreds of small parts (and, without tokens,
//! hundreds of inserts to resend after a crash). Real splitting stays as the fallback when
//! the sink cannot probe, or the probe disagrees with the table.

use std::ops::Range;

use super::Flusher;
use crate::format::Rows;
use crate::sink::{Sink, SinkError};

/// What probing found in a range.
pub(super) struct Isolated {
    /// The rows to write (in order), less those in the `done` ranges given.
    pub kept: Rows,
    /// The rejected rows, by index in the batch, with the sink's error.
    pub bad: Vec<(usize, SinkError)>,
}

impl<S: Sink> Flusher<S> {
    /// Probes `range` of `rows` in halves until the rejected rows are single. `None` when
    /// probing is not possible (unsupported, failing for another reason, or the shutdown
    /// deadline passed): the caller splits real inserts instead.
    pub(super) fn isolate(
        &self,
        rows: &Rows,
        range: Range<usize>,
        done: &[Range<usize>],
        refused: &SinkError,
    ) -> Option<Isolated> {
        let searched = self.search(rows, range, refused);
        if let Some(Err(e)) = self.bounded(self.sink.end_probe()) {
            log::warn!("could not drop the probe table: {e}");
        }
        let (good, bad) = searched?;
        let mut kept = Rows::default();
        for i in good.into_iter().flatten() {
            if !done.iter().any(|d| d.contains(&i)) {
                kept.push_encoded(rows.row(i));
            }
        }
        Some(Isolated { kept, bad })
    }

    /// The search itself: the good ranges and the single bad rows, or `None` as above. A
    /// probe refused with `refused`'s code is a refusal of its rows, whatever the code.
    #[allow(clippy::type_complexity)]
    fn search(
        &self,
        rows: &Rows,
        range: Range<usize>,
        refused: &SinkError,
    ) -> Option<(Vec<Range<usize>>, Vec<(usize, SinkError)>)> {
        let mut stack = vec![range];
        let mut good: Vec<Range<usize>> = Vec::new();
        let mut bad = Vec::new();
        let mut fresh = true;
        while let Some(r) = stack.pop() {
            let result = self.bounded(self.sink.probe(rows.slice(r.clone()), fresh))?;
            fresh = false;
            let result = match result {
                Err(e) if e.code().is_some() && e.code() == refused.code() => Err(e.into_data()),
                other => other,
            };
            match result {
                Ok(()) => good.push(r),
                Err(e) if e.is_retryable() => {
                    log::debug!("cannot probe for rejected rows ({e}); splitting inserts");
                    return None;
                }
                Err(e) if r.len() == 1 => bad.push((r.start, e)),
                Err(_) => {
                    let mid = r.start + r.len() / 2;
                    stack.push(mid..r.end);
                    stack.push(r.start..mid);
                }
            }
        }
        Some((good, bad))
    }
}
