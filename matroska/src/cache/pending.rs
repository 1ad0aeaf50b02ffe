//! Invalidations kept for retry after a transient backend failure.
//!
//! Each kept dependency carries the epoch of its latest failure. A retry that
//! succeeds removes a dependency only if no later failure of it was recorded
//! meanwhile, so a failure racing with a successful retry is never forgotten.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::deps::lock;

/// The set of dependencies (backend keys) whose invalidation is pending.
#[derive(Debug)]
pub(crate) struct Pending {
    state: Mutex<State>,
    /// `state.deps.len()`, readable without the lock (the read path checks it).
    len: AtomicUsize,
    /// More failures than `max` were seen: some were not kept. Stays set
    /// until [`reset`](Self::reset).
    overflowed: AtomicBool,
    max: usize,
}

#[derive(Debug, Default)]
struct State {
    deps: HashMap<String, u64>,
    next_epoch: u64,
    retrying: bool,
}

/// A pending dependency as seen at one moment: its key and failure epoch.
pub(crate) type Snapshot = Vec<(String, u64)>;

impl Pending {
    pub(crate) fn new(max: usize) -> Self {
        Pending { state: Mutex::default(), len: AtomicUsize::new(0), overflowed: AtomicBool::new(false), max }
    }

    /// Whether nothing is pending (and nothing was lost to the bound).
    pub(crate) fn is_clear(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0 && !self.overflowed()
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Records failures of `deps`. Returns `false` if some could not be kept
    /// (the bound was reached); the cache then stops serving reads until it
    /// is cleared.
    pub(crate) fn keep<'a>(&self, deps: impl IntoIterator<Item = &'a str>) -> bool {
        let mut s = lock(&self.state);
        let mut all = true;
        for d in deps {
            s.next_epoch += 1;
            let epoch = s.next_epoch;
            if let Some(e) = s.deps.get_mut(d) {
                *e = epoch;
            } else if s.deps.len() < self.max {
                s.deps.insert(d.to_owned(), epoch);
            } else {
                all = false;
            }
        }
        if !all {
            self.overflowed.store(true, Ordering::Release);
        }
        self.len.store(s.deps.len(), Ordering::Release);
        all
    }

    /// The pending dependencies and their epochs, in key order (so that the
    /// backend sees them in a reproducible order).
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut v: Snapshot = lock(&self.state).deps.iter().map(|(k, e)| (k.clone(), *e)).collect();
        v.sort_unstable();
        v
    }

    /// Forgets dependencies that were invalidated successfully, unless they
    /// failed again after `snapshot` was taken.
    pub(crate) fn applied<'a>(&self, done: impl IntoIterator<Item = &'a (String, u64)>) {
        let mut s = lock(&self.state);
        for (dep, epoch) in done {
            if s.deps.get(dep) == Some(epoch) {
                s.deps.remove(dep);
            }
        }
        self.len.store(s.deps.len(), Ordering::Release);
    }

    /// Whether any of `deps` is pending.
    pub(crate) fn contains_any(&self, deps: &[String]) -> bool {
        if self.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        let s = lock(&self.state);
        deps.iter().any(|d| s.deps.contains_key(d))
    }

    /// Marks the background retry as started; `false` if one already runs.
    pub(crate) fn start_retry(&self) -> bool {
        let mut s = lock(&self.state);
        if s.retrying || s.deps.is_empty() {
            return false;
        }
        s.retrying = true;
        true
    }

    /// Ends the background retry if nothing is left; `false` to go on.
    pub(crate) fn finish_retry(&self) -> bool {
        let mut s = lock(&self.state);
        if s.deps.is_empty() {
            s.retrying = false;
            true
        } else {
            false
        }
    }

    /// Marks the background retry as not running (it could not be started).
    pub(crate) fn stop_retry(&self) {
        lock(&self.state).retrying = false;
    }

    /// Forgets everything (after the backend was cleared).
    pub(crate) fn reset(&self) {
        let mut s = lock(&self.state);
        s.deps.clear();
        self.overflowed.store(false, Ordering::Release);
        self.len.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_after_the_snapshot_survives_the_retry() {
        let p = Pending::new(10);
        assert!(p.keep(["a", "b"]));
        let snap = p.snapshot();
        // "a" fails again while the retry of the snapshot is in flight
        assert!(p.keep(["a"]));
        p.applied(&snap);
        assert_eq!(p.len(), 1);
        assert!(p.contains_any(&["a".to_owned()]));
        assert!(!p.contains_any(&["b".to_owned()]));
    }

    #[test]
    fn the_bound_is_reported() {
        let p = Pending::new(2);
        assert!(p.keep(["a", "b"]));
        assert!(!p.is_clear());
        assert!(!p.keep(["c"]));
        assert!(p.overflowed());
        p.reset();
        assert!(p.is_clear());
    }
}
