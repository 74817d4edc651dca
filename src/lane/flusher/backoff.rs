//! Capped exponential back-off with jitter, shared by every retry-forever path of the
//! flusher: inserts, checkpoint writes, spool reads and quarantine writes.
//!
//! Jitter spreads the retries of many instances over `±jitter` of each delay, so a fleet
//! does not hit a recovering server (or a recovering disk) in lockstep.

use std::time::Duration;

use rand::Rng;

/// The delays before successive retries: `initial`, then `factor` times the previous one,
/// capped at `max`; each spread by up to `±jitter` (a share: `0.25` is ±25%).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: u32,
    jitter: f64,
    /// The next delay, before jitter.
    next: Duration,
}

impl Backoff {
    /// A back-off starting at `initial`.
    pub const fn new(initial: Duration, max: Duration, factor: u32, jitter: f64) -> Self {
        Self {
            initial,
            max,
            factor,
            jitter,
            next: initial,
        }
    }

    /// The delay before the next retry; the one after is longer, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.saturating_mul(self.factor).min(self.max);
        if self.jitter <= 0.0 {
            return base;
        }
        let spread = rand::rng().random_range(-self.jitter..=self.jitter);
        base.mul_f64(1.0 + spread)
    }

    /// Starts over at `initial` (a success, or a change that deserves a quick retry).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The longest delay (before jitter).
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_cap_and_reset_starts_over() {
        let mut b = Backoff::new(100 * MS, 1_000 * MS, 2, 0.0);
        let delays: Vec<Duration> = (0..7).map(|_| b.next_delay()).collect();
        let expected = [100, 200, 400, 800, 1_000, 1_000, 1_000].map(|ms| ms * MS);
        assert_eq!(delays, expected);
        b.reset();
        assert_eq!(b.next_delay(), 100 * MS);
    }

    #[test]
    fn jitter_stays_within_its_share_and_varies() {
        let mut b = Backoff::new(1_000 * MS, 1_000 * MS, 3, 0.25);
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| (750 * MS..=1_250 * MS).contains(d)));
        let first = delays[0];
        assert!(delays.iter().any(|&d| d != first), "not all the same");
    }
}
