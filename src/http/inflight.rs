//! The in-flight body budget (`INFLIGHT_BODY_MAX_BYTES`): bytes held by request bodies that
//! are being received, decompressed or decoded, summed over all connections.
//!
//! `BODY_MAX_BYTES` bounds one body; without a sum, 200 clients each sending 9.99 MB of a
//! 10 MB body held 2 GB until they timed out. Past the budget a request gets `503` with
//! `Retry-After` before its body is read (when it states its length) or as soon as its
//! chunks cross the budget (when it does not).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The shared budget.
#[derive(Debug)]
pub struct InflightBudget {
    used: AtomicUsize,
    max: usize,
}

impl InflightBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether `n` more bytes would fit now (a hint: nothing is reserved).
    pub fn would_fit(&self, n: usize) -> bool {
        let used = self.used();
        used == 0 || used.saturating_add(n) <= self.max
    }

    /// An empty reservation, grown as bytes arrive.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

/// Bytes one request holds; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<InflightBudget>,
    bytes: usize,
}

impl Reservation {
    /// Adds `n` bytes; `false` (nothing added) when the budget cannot hold them. A request
    /// alone always fits (when it is all that is reserved), so a budget below what one body
    /// needs slows large bodies down to one at a time instead of refusing them forever.
    pub fn grow(&mut self, n: usize) -> bool {
        let (max, mine) = (self.budget.max, self.bytes);
        let fits = self
            .budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let after = used.checked_add(n)?;
                (after <= max || used == mine).then_some(after)
            })
            .is_ok();
        if fits {
            self.bytes += n;
        }
        fits
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = InflightBudget::new(100);
        let mut a = budget.reservation();
        assert!(a.grow(60));
        let mut b = budget.reservation();
        assert!(!b.grow(60), "over the budget");
        assert!(b.grow(40));
        assert!(!a.grow(1));
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn one_request_alone_always_fits() {
        let budget = InflightBudget::new(10);
        let mut big = budget.reservation();
        assert!(big.grow(1000));
        assert!(!budget.reservation().grow(1));
        drop(big);
        assert_eq!(budget.used(), 0);
    }
}
