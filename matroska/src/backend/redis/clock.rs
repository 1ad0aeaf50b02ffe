//! Clocks and generations: the single node's estimate of the server clock,
//! the cluster's local monotonic tickets, and the random generations of
//! puts. All arithmetic saturates: a ticket or a setting at the end of the
//! range gives a refusal, never an overflow.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// An estimate of the Redis server's clock: the last `TIME` reading and the
/// local monotonic instant its reply arrived.
///
/// At a later local instant `c`, the server's clock reads at least
/// `s + (c - received)` (the reading was taken before the reply arrived),
/// minus the drift between the two clocks, bounded here by 100 µs plus 0.1 %
/// of the elapsed time (more than the slew of two NTP-disciplined clocks).
/// Estimates are used for at most [`CALIBRATION_TTL`]; then the next `get`
/// reads `TIME` again in the same round trip. After this backend invalidates
/// or has a put refused, the next `get` reads `TIME` exactly, so that a
/// reload right after an invalidation gets a ticket after it.
#[derive(Debug, Default)]
pub(super) struct ServerClock {
    reading: Mutex<Option<(u64, Instant)>>,
}

/// How long a `TIME` reading is used to estimate tickets.
pub(super) const CALIBRATION_TTL: Duration = Duration::from_millis(200);

impl ServerClock {
    pub(super) fn calibrate(&self, server_us: u64, received: Instant) {
        let mut r = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        *r = Some((server_us, received));
    }

    /// Forgets the reading: the next `get` reads `TIME` exactly.
    pub(super) fn reset(&self) {
        *self.reading.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A lower bound of the server's time now, in µs, if calibrated recently.
    pub(super) fn estimate(&self) -> Option<u64> {
        let reading = *self.reading.lock().unwrap_or_else(|p| p.into_inner());
        let (server_us, received) = reading?;
        let elapsed = received.elapsed();
        if elapsed >= CALIBRATION_TTL {
            return None;
        }
        let elapsed_us = saturating_u64(elapsed.as_micros());
        let margin = 100 + elapsed_us / 1_000;
        Some(server_us.saturating_add(elapsed_us).saturating_sub(margin))
    }
}

/// Random 64-bit generations, distinct within a process and unlikely to
/// collide across processes.
pub(super) struct Generations {
    seed: u64,
    counter: AtomicU64,
}

impl Generations {
    pub(super) fn new() -> Arc<Self> {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
        );
        h.write_u32(std::process::id());
        Arc::new(Generations { seed: h.finish(), counter: AtomicU64::new(0) })
    }

    /// Sixteen lowercase hex digits.
    pub(super) fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}", splitmix64(self.seed.wrapping_add(n)))
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(super) fn saturating_u64(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The bound on the rate difference between the local monotonic clock and a
/// Redis node's clock (0.1 %, far above what NTP-disciplined clocks show).
const DRIFT_PPM: u64 = 1_000;

/// The process-wide origin of cluster tickets.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Local monotonic time in µs since [`EPOCH`] (never 0).
pub(super) fn local_us() -> u64 {
    saturating_u64(EPOCH.elapsed().as_micros()).saturating_add(1)
}

/// `d` enlarged by the drift bound (an upper bound of the same span measured
/// by another clock), plus 2 µs for rounding.
pub(super) fn widen(d: u64) -> u64 {
    d.saturating_add(d / (1_000_000 / DRIFT_PPM)).saturating_add(2)
}

/// A lower bound of a node's clock (µs) at local instant `x`, from a reading
/// `server_us` of that clock whose reply arrived at local instant `received`.
pub(super) fn lower_bound(server_us: u64, received: u64, x: u64) -> u64 {
    if x >= received {
        let d = x - received;
        server_us.saturating_add(d - d / (1_000_000 / DRIFT_PPM))
    } else {
        server_us.saturating_sub(widen(received - x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_sixteen_hex_digits_and_distinct() {
        let g = Generations::new();
        let (a, b) = (g.next(), g.next());
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn lower_bound_never_exceeds_the_elapsed_time() {
        // a reading of 1000 µs received at local 500: at local 1500 the node
        // reads at least 1000 + 1000 - drift
        assert_eq!(lower_bound(1_000, 500, 1_500), 1_999);
        assert!(lower_bound(1_000, 500, 400) <= 900);
        assert!(widen(1_000_000) >= 1_001_000);
    }

    #[test]
    fn extreme_values_saturate() {
        assert_eq!(widen(u64::MAX), u64::MAX);
        assert_eq!(lower_bound(u64::MAX, 0, u64::MAX), u64::MAX);
        assert_eq!(lower_bound(0, u64::MAX, 0), 0);
        let clock = ServerClock::default();
        clock.calibrate(u64::MAX, Instant::now());
        assert!(clock.estimate().is_some());
    }
}
