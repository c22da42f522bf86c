//! The bytes waiting in the send queues of all connections together (`[limits]
//! max_queued_bytes`): decides whether one more message may wait to be written. A peer that
//! does not read makes its connection's queue fill up; without a bound in bytes, 256 large
//! messages per connection times every connection could hold the box's memory. Past the bound
//! the message is dropped (and counted by the caller): SIP over a stream has its transaction
//! timers, and a stuck peer is not waited for.
//!
//! A [`Queued`] message holds its share of the budget from [`SendBudget::reserve`] until it is
//! dropped, whichever way it leaves: written, or thrown away with its connection's queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The bound and what is held against it.
#[derive(Debug)]
pub struct SendBudget {
    max: usize,
    used: AtomicUsize,
}

impl SendBudget {
    pub fn new(max: usize) -> Arc<SendBudget> {
        Arc::new(SendBudget {
            max,
            used: AtomicUsize::new(0),
        })
    }

    /// Takes `bytes.len()` from the budget for a message about to be queued; `None` (and the
    /// message dropped) when it does not fit.
    pub fn reserve(self: &Arc<Self>, bytes: Vec<u8>) -> Option<Queued> {
        let len = bytes.len();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(len).filter(|&total| total <= self.max)
            })
            .ok()?;
        Some(Queued {
            bytes,
            budget: Arc::clone(self),
        })
    }

    /// Bytes queued now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One message waiting in a send queue, holding its bytes of the budget.
#[derive(Debug)]
pub struct Queued {
    bytes: Vec<u8>,
    budget: Arc<SendBudget>,
}

impl Queued {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.budget
            .used
            .fetch_sub(self.bytes.len(), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_past_the_bound_are_refused_and_bytes_come_back_when_dropped() {
        let budget = SendBudget::new(100);
        let a = budget.reserve(vec![0; 60]).unwrap();
        assert!(budget.reserve(vec![0; 41]).is_none());
        let b = budget.reserve(vec![0; 40]).unwrap();
        assert_eq!(budget.used(), 100);
        assert!(budget.reserve(vec![0; 1]).is_none());
        drop(a);
        assert_eq!(budget.used(), 40);
        assert_eq!(b.bytes().len(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
        // One message larger than the whole budget never fits.
        assert!(budget.reserve(vec![0; 101]).is_none());
        assert_eq!(budget.used(), 0);
    }
}
