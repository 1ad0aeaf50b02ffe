//! What a cache counts: its own statistics ([`Stats`](super::Stats)), the
//! statistics of the request being served ([`record_request`]), and, with
//! the `metrics` feature, the [`metrics`](https://docs.rs/metrics) facade.
//!
//! Metrics (all labelled with `op` and, for outcomes, `outcome`; both take
//! a handful of fixed values, so label sets stay bounded):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `matroska_operation_seconds` | histogram | `op`: `get`, `put`, `invalidate`, `load` |
//! | `matroska_operations_total` | counter | `op`: `get`, `put`, `load`, `invalidate`, `delete`; `outcome`: `hit`, `miss`, `stale`, `stored`, `refused`, `ok`, `error`, `uncacheable` |
//! | `matroska_invalidation_fanout` | histogram | entries dropped by one `invalidate` |
//! | `matroska_pending_invalidations` | gauge | invalidations kept for retry |
//! | `matroska_decode_errors_total` | counter | stored values that could not be read |
//! | `matroska_backend_errors_total` | counter | backend failures |

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
#[cfg(feature = "metrics")]
use std::time::Instant;

/// Something a cache counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Hit,
    Miss,
    /// A value past its freshness served (stale-while-revalidate,
    /// stale-on-error).
    Stale,
    Load,
    Put,
    RefusedPut,
    Invalidation,
    Delete,
    DecodeError,
    BackendError,
    UncacheableLoad,
}

/// The counters of one request.
#[derive(Debug, Default)]
struct RequestCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    loads: AtomicU64,
    puts: AtomicU64,
    refused_puts: AtomicU64,
    invalidations: AtomicU64,
    errors: AtomicU64,
}

tokio::task_local! {
    static REQUEST: Arc<RequestCounters>;
}

/// What the caches did for one request (or any future), from
/// [`record_request`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestStats {
    /// Reads served from a cache.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Reads served a value past its freshness (stale-while-revalidate,
    /// stale-on-error).
    pub stale: u64,
    /// Loader runs.
    pub loads: u64,
    /// Entries stored.
    pub puts: u64,
    /// Puts refused (stale-set protection, pending invalidations, open
    /// transactions).
    pub refused_puts: u64,
    /// Successful invalidations.
    pub invalidations: u64,
    /// Backend and decode errors.
    pub errors: u64,
}

/// Runs `fut` and returns, with its output, what every [`Cache`](super::Cache)
/// did for it: the hits, misses and refused puts this request caused, and
/// only those (a task-local record, not a difference of global counters,
/// which concurrent requests would skew). Tasks `fut` spawns are not
/// followed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), matroska::Error> {
/// let cache = matroska::Cache::new(matroska::MemoryBackend::new());
/// let (value, stats) = matroska::record_request(async {
///     cache.get::<u32>("missing").await
/// })
/// .await;
/// assert_eq!(value?, None);
/// assert_eq!(stats.misses, 1);
/// # Ok(()) }
/// ```
pub async fn record_request<F: Future>(fut: F) -> (F::Output, RequestStats) {
    let counters = Arc::new(RequestCounters::default());
    let out = REQUEST.scope(Arc::clone(&counters), fut).await;
    let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let stats = RequestStats {
        hits: r(&counters.hits),
        misses: r(&counters.misses),
        stale: r(&counters.stale),
        loads: r(&counters.loads),
        puts: r(&counters.puts),
        refused_puts: r(&counters.refused_puts),
        invalidations: r(&counters.invalidations),
        errors: r(&counters.errors),
    };
    (out, stats)
}

/// Counts `event` for the request being recorded, if any, and in the
/// metrics facade.
pub(crate) fn note(event: Event) {
    let _ = REQUEST.try_with(|c| {
        let field = match event {
            Event::Hit => &c.hits,
            Event::Miss => &c.misses,
            Event::Stale => &c.stale,
            Event::Load => &c.loads,
            Event::Put => &c.puts,
            Event::RefusedPut => &c.refused_puts,
            Event::Invalidation => &c.invalidations,
            Event::DecodeError | Event::BackendError => &c.errors,
            Event::Delete | Event::UncacheableLoad => return,
        };
        field.fetch_add(1, Ordering::Relaxed);
    });
    metrics::event(event);
}

/// Times an operation for the metrics facade (without the `metrics`
/// feature it reads no clock and does nothing).
pub(crate) struct Timer {
    #[cfg(feature = "metrics")]
    op: &'static str,
    #[cfg(feature = "metrics")]
    started: Instant,
}

impl Timer {
    #[cfg(feature = "metrics")]
    pub(crate) fn start(op: &'static str) -> Self {
        Timer { op, started: Instant::now() }
    }

    #[cfg(not(feature = "metrics"))]
    pub(crate) fn start(_: &'static str) -> Self {
        Timer {}
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn stop(self) {
        metrics::duration(self.op, self.started);
    }

    #[cfg(not(feature = "metrics"))]
    pub(crate) fn stop(self) {}
}

#[cfg(feature = "metrics")]
pub(crate) mod metrics {
    use std::time::Instant;

    use super::Event;

    pub(crate) fn event(event: Event) {
        let (op, outcome) = match event {
            Event::Hit => ("get", "hit"),
            Event::Miss => ("get", "miss"),
            Event::Stale => ("get", "stale"),
            Event::Load => ("load", "ok"),
            Event::UncacheableLoad => ("load", "uncacheable"),
            Event::Put => ("put", "stored"),
            Event::RefusedPut => ("put", "refused"),
            Event::Invalidation => ("invalidate", "ok"),
            Event::Delete => ("delete", "ok"),
            Event::DecodeError => {
                ::metrics::counter!("matroska_decode_errors_total").increment(1);
                return;
            }
            Event::BackendError => {
                ::metrics::counter!("matroska_backend_errors_total").increment(1);
                return;
            }
        };
        ::metrics::counter!("matroska_operations_total", "op" => op, "outcome" => outcome).increment(1);
    }

    pub(crate) fn duration(op: &'static str, started: Instant) {
        ::metrics::histogram!("matroska_operation_seconds", "op" => op).record(started.elapsed().as_secs_f64());
    }

    pub(crate) fn fanout(dropped: u64) {
        ::metrics::histogram!("matroska_invalidation_fanout").record(dropped as f64);
    }

    pub(crate) fn pending(n: usize) {
        ::metrics::gauge!("matroska_pending_invalidations").set(n as f64);
    }
}

#[cfg(not(feature = "metrics"))]
pub(crate) mod metrics {
    use super::Event;

    pub(crate) fn event(_: Event) {}
    pub(crate) fn fanout(_: u64) {}
    pub(crate) fn pending(_: usize) {}
}
