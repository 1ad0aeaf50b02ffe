//! Time sources. Backends read time through a [`Clock`] so that tests can move
//! time forward without sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A time source: monotonic instants, and wall-clock time for what several
/// processes compare (when a shared entry stops being fresh).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Instant;

    /// Wall-clock time in milliseconds since the Unix epoch (the system
    /// clock by default).
    fn unix_millis(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// The real monotonic clock ([`Instant::now`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to; for tests.
///
/// Clones share the same time.
///
/// ```
/// use matroska::clock::{Clock, MockClock};
/// use std::time::Duration;
/// let clock = MockClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now() - t0, Duration::from_secs(5));
/// ```
#[derive(Clone, Debug)]
pub struct MockClock {
    base: Instant,
    base_unix_millis: u64,
    offset_nanos: Arc<AtomicU64>,
}

impl MockClock {
    /// A clock stopped at the current instant.
    pub fn new() -> Self {
        MockClock {
            base: Instant::now(),
            base_unix_millis: SystemClock.unix_millis(),
            offset_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Default for MockClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MockClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }

    fn unix_millis(&self) -> u64 {
        self.base_unix_millis.saturating_add(self.offset_nanos.load(Ordering::SeqCst) / 1_000_000)
    }
}
