//! A circuit breaker: fail fast while Redis is unreachable.
//!
//! Without it, every operation made while the server is down waits for the
//! connection manager's reconnection attempts and the timeouts, so an
//! application doing many reads stalls on each of them. The breaker only
//! decides whether a call is *sent*; reconnecting stays the connection's job.
//!
//! Per circuit (the single node; on a cluster one hash slot, for calls
//! routed by key, or one node, for the batched calls sent to a node):
//!
//! * **Closed**: every call is sent. A call failing with a
//!   [`Unavailable`](BackendErrorKind::Unavailable) or
//!   [`Timeout`](BackendErrorKind::Timeout) error opens the circuit.
//! * **Open**: calls fail at once with a transient `Unavailable` error,
//!   without being sent, until the cool-down has passed.
//! * **Probing**: after the cool-down, one call at a time (the *probe*) is
//!   sent; the others still fail at once. If the probe gets an answer (any
//!   answer but `Unavailable`/`Timeout`: a wrong-type error also proves the
//!   server is there), the circuit closes; otherwise it stays open for
//!   another cool-down.
//!
//! A call that failed fast never reached Redis: nothing it would have written
//! was written, and an `invalidate` that fails fast returns its error like
//! any other failed invalidation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::cluster_routing::Slot;

use crate::error::{BackendError, BackendErrorKind};

/// Which circuit a call belongs to: the single node, or on a cluster the
/// key's slot or the node a batched call is sent to (so that one failing
/// master does not stop calls to the others).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Circuit {
    /// The single node.
    Server,
    /// A cluster hash slot.
    Slot(Slot),
    /// A cluster node, by address.
    Node(std::sync::Arc<str>),
}

/// The state of the open circuits; closed circuits have no entry.
#[derive(Debug)]
pub(super) struct Breaker {
    cool_down: Duration,
    /// Number of entries in `open`, read without the lock on the fast path.
    open_count: AtomicUsize,
    open: Mutex<HashMap<Circuit, Open>>,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    /// Calls fail fast until then.
    until: Instant,
    /// A probe is in flight.
    probing: bool,
}

/// Permission to send one call; report its outcome with [`Permit::done`].
/// Dropped without a report (the call was cancelled), a probe frees its
/// place for the next call.
#[derive(Debug)]
pub(super) struct Permit<'a> {
    breaker: &'a Breaker,
    circuit: Circuit,
    probe: bool,
    reported: bool,
}

impl Breaker {
    /// A breaker with the given cool-down; `Duration::ZERO` disables it.
    pub(super) fn new(cool_down: Duration) -> Self {
        Breaker { cool_down, open_count: AtomicUsize::new(0), open: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Circuit, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call on `circuit` may be sent now; an `Unavailable` error
    /// if the circuit is open.
    pub(super) fn admit(&self, circuit: Circuit) -> Result<Permit<'_>, BackendError> {
        let mut permit = Permit { breaker: self, circuit, probe: false, reported: false };
        if self.cool_down.is_zero() || self.open_count.load(Ordering::Acquire) == 0 {
            return Ok(permit);
        }
        let mut open = self.lock();
        let Some(state) = open.get_mut(&permit.circuit) else {
            return Ok(permit);
        };
        let now = Instant::now();
        if now >= state.until && !state.probing {
            state.probing = true;
            permit.probe = true;
            return Ok(permit);
        }
        let wait = state.until.saturating_duration_since(now);
        Err(BackendError::new(
            BackendErrorKind::Unavailable,
            format!("Redis is unreachable: not sent (circuit open after a connection failure; next probe in {wait:?})"),
        ))
    }

    fn trip(&self, circuit: &Circuit) {
        if self.cool_down.is_zero() {
            return;
        }
        let mut open = self.lock();
        let until = Instant::now() + self.cool_down;
        if open.insert(circuit.clone(), Open { until, probing: false }).is_none() {
            self.open_count.fetch_add(1, Ordering::Release);
        }
    }

    fn close(&self, circuit: &Circuit) {
        let mut open = self.lock();
        if open.remove(circuit).is_some() {
            self.open_count.fetch_sub(1, Ordering::Release);
        }
    }
}

impl Permit<'_> {
    /// Reports the call's outcome: `Unavailable` and `Timeout` errors open
    /// the circuit (again); any other outcome after a probe closes it.
    pub(super) fn done<T>(mut self, outcome: &Result<T, BackendError>) {
        self.reported = true;
        let failed =
            matches!(outcome, Err(e) if matches!(e.kind(), BackendErrorKind::Unavailable | BackendErrorKind::Timeout));
        if failed {
            self.breaker.trip(&self.circuit);
        } else if self.probe {
            self.breaker.close(&self.circuit);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut open = self.breaker.lock();
            if let Some(state) = open.get_mut(&self.circuit) {
                state.probing = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> Result<(), BackendError> {
        Err(BackendError::new(BackendErrorKind::Unavailable, "down"))
    }

    // A thread may stall for any time on a loaded machine: what must hold
    // *within* the cool-down is asserted only when the check came within it
    // (sleeping longer than asked is always fine).

    #[test]
    fn opens_on_failure_then_lets_one_probe_through() {
        let cool = Duration::from_millis(100);
        let b = Breaker::new(cool);
        b.admit(Circuit::Server).unwrap().done(&unavailable());
        let tripped = Instant::now();
        let refused = b.admit(Circuit::Server);
        if tripped.elapsed() < cool {
            let err = refused.unwrap_err();
            assert_eq!(err.kind(), BackendErrorKind::Unavailable);
        } else {
            drop(refused);
        }
        std::thread::sleep(cool + Duration::from_millis(10));
        let probe = b.admit(Circuit::Server).unwrap();
        assert!(b.admit(Circuit::Server).is_err(), "one probe at a time");
        probe.done(&Ok::<(), BackendError>(()));
        assert!(b.admit(Circuit::Server).is_ok(), "closed after a successful probe");
    }

    #[test]
    fn a_failed_probe_reopens_and_a_cancelled_probe_frees_its_place() {
        let cool = Duration::from_millis(100);
        let b = Breaker::new(cool);
        b.admit(Circuit::Server).unwrap().done(&unavailable());
        std::thread::sleep(cool + Duration::from_millis(10));
        b.admit(Circuit::Server).unwrap().done(&unavailable());
        let reopened = Instant::now();
        let refused = b.admit(Circuit::Server);
        if reopened.elapsed() < cool {
            assert!(refused.is_err(), "a failed probe starts another cool-down");
        } else {
            drop(refused);
        }
        std::thread::sleep(cool + Duration::from_millis(10));
        drop(b.admit(Circuit::Server).unwrap());
        assert!(b.admit(Circuit::Server).is_ok(), "a cancelled probe lets the next call probe");
    }

    #[test]
    fn circuits_are_independent_and_other_errors_do_not_trip() {
        let b = Breaker::new(Duration::from_secs(60));
        let slot = Circuit::Slot(Slot::for_key(b"a"));
        b.admit(slot.clone()).unwrap().done(&unavailable());
        assert!(b.admit(slot).is_err());
        assert!(b.admit(Circuit::Slot(Slot::for_key(b"b"))).is_ok());
        let node = Circuit::Node("127.0.0.1:7000".into());
        b.admit(node.clone()).unwrap().done(&unavailable());
        assert!(b.admit(node).is_err());
        assert!(b.admit(Circuit::Node("127.0.0.1:7001".into())).is_ok());
        let foreign: Result<(), BackendError> = Err(BackendError::new(BackendErrorKind::ForeignData, "x"));
        b.admit(Circuit::Server).unwrap().done(&foreign);
        assert!(b.admit(Circuit::Server).is_ok());
        let off = Breaker::new(Duration::ZERO);
        off.admit(Circuit::Server).unwrap().done(&unavailable());
        assert!(off.admit(Circuit::Server).is_ok(), "a zero cool-down disables the breaker");
    }
}
