//! Connection permits: at most `--max-connections` clients are served at once.
//!
//! The accept loop takes a [`Permit`] for each client before starting its thread; the permit
//! travels with the connection and gives its place back when dropped — when the connection
//! thread ends, whichever way it ends (a panic included). The count of permits out is also
//! what a graceful shutdown waits for.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The permits of one listener; clones share the count.
#[derive(Debug, Clone)]
pub struct Permits {
    out: Arc<AtomicUsize>,
    max: usize,
}

/// One client's place; given back when dropped.
#[derive(Debug)]
pub struct Permit(Arc<AtomicUsize>);

impl Permits {
    pub fn new(max: usize) -> Permits {
        Permits {
            out: Arc::default(),
            max,
        }
    }

    /// A permit, unless `max` are out already.
    pub fn try_take(&self) -> Option<Permit> {
        self.out
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(Arc::clone(&self.out)))
    }

    /// How many permits are out: the connections being served.
    pub fn out(&self) -> usize {
        self.out.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_permits_and_dropping_one_gives_its_place_back() {
        let permits = Permits::new(2);
        let first = permits.try_take().expect("first");
        let _second = permits.try_take().expect("second");
        assert!(permits.try_take().is_none(), "a third is refused");
        assert_eq!(permits.out(), 2);
        drop(first);
        assert_eq!(permits.out(), 1);
        assert!(permits.try_take().is_some(), "a place is free again");
    }
}
