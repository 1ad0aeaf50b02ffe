//! The embedded in-process backend (the default).
//!
//! Storage, expiry and capacity-bounded eviction are [moka]'s; this module adds
//! the dependency index and stale-set protection on top:
//!
//! * **Atomicity.** `put`, `delete` and `invalidate` take one index lock, and
//!   the store is written under it, so an invalidation and a put never
//!   interleave: either the entry is stored first and then dropped, or the put
//!   sees the tombstone and is refused.
//! * **Bounded index.** Entries evicted or expired by moka are reported through
//!   its eviction listener and unregistered on the next operation; each
//!   dependency's member set is also ordered by expiry and pruned of expired
//!   members whenever a put touches it (amortised O(log n) per member).
//! * **Tickets** are nanoseconds of a strictly increasing logical clock derived
//!   from the backend's [`Clock`]. Tombstones live for the configured window;
//!   tickets older than the window are refused.
//!
//! [moka]: https://docs.rs/moka

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::notification::RemovalCause;

/// The index's maps hash strings with foldhash: several lookups per put make
/// SipHash a measurable share of the put's cost.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Entries moka evicted or expired, as (key, generation), waiting to be
/// unregistered from the index.
type EvictedQueue = Arc<Mutex<Vec<(Arc<str>, u64)>>>;

/// An entry's generation and dependencies.
type Registration = (u64, Arc<[Arc<str>]>);

use super::{Backend, Invalidated, Lookup, PutOutcome, PutRequest, Ticket};
use crate::clock::{Clock, SystemClock};
use crate::error::{BackendError, ConfigError};

/// The default tombstone window: how long an invalidation is remembered to
/// refuse puts carrying older tickets, and how old a ticket may get.
pub const DEFAULT_TOMBSTONE_WINDOW: Duration = Duration::from_secs(60);

/// The largest tombstone window a backend accepts: 7 days.
pub const MAX_TOMBSTONE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// How the memory backend bounds its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capacity {
    Entries(u64),
    Bytes(u64),
}

/// Configures a [`MemoryBackend`].
#[derive(Debug)]
#[must_use]
pub struct MemoryBackendBuilder {
    capacity: Capacity,
    window: Duration,
    clock: Arc<dyn Clock>,
    system_clock: bool,
}

impl MemoryBackendBuilder {
    /// Bounds the number of entries (default 100,000). Replaces a byte bound.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.capacity = Capacity::Entries(n);
        self
    }

    /// Bounds the total size of keys, values and dependency lists in bytes.
    /// Replaces an entry bound.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.capacity = Capacity::Bytes(n);
        self
    }

    /// How long tombstones are kept and tickets stay valid (default 60 s). A
    /// load that takes longer than this never gets stored; a shorter window uses
    /// less memory for tombstones.
    pub fn tombstone_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Reads time from `clock` instead of the system clock (for tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self.system_clock = false;
        self
    }

    /// Builds the backend.
    ///
    /// # Errors
    /// [`ConfigError`] if `max_entries`/`max_bytes` is 0 or the tombstone
    /// window is outside `1 ms ..= 7 days`.
    pub fn build(self) -> Result<MemoryBackend, ConfigError> {
        match self.capacity {
            Capacity::Entries(0) => return Err(ConfigError::new("max_entries", "must be at least 1")),
            Capacity::Bytes(0) => return Err(ConfigError::new("max_bytes", "must be at least 1")),
            _ => {}
        }
        if self.window < Duration::from_millis(1) || self.window > MAX_TOMBSTONE_WINDOW {
            return Err(ConfigError::new(
                "tombstone_window",
                format!("{:?} is outside the accepted range 1ms..={MAX_TOMBSTONE_WINDOW:?}", self.window),
            ));
        }
        Ok(self.build_unchecked())
    }

    fn build_unchecked(self) -> MemoryBackend {
        let evicted: EvictedQueue = Arc::default();
        let sink = Arc::clone(&evicted);
        let mut builder = moka::sync::Cache::builder().expire_after(PerEntryTtl).eviction_listener(
            move |key: Arc<Arc<str>>, entry: Arc<Entry>, cause| {
                if matches!(cause, RemovalCause::Expired | RemovalCause::Size) {
                    lock(&sink).push(((*key).clone(), entry.gen));
                }
            },
        );
        builder = match self.capacity {
            Capacity::Entries(n) => builder.max_capacity(n),
            Capacity::Bytes(n) => builder.max_capacity(n).weigher(|k: &Arc<str>, e: &Arc<Entry>| {
                let deps: usize = e.deps.iter().map(|d| d.len() + 16).sum();
                u32::try_from(k.len() + e.value.len() + deps + 64).unwrap_or(u32::MAX)
            }),
        };
        let origin = self.clock.now();
        MemoryBackend {
            inner: Arc::new(Inner {
                data: builder.build(),
                index: Mutex::new(Index::default()),
                evicted,
                clock: self.clock,
                system_clock: self.system_clock,
                origin,
                last_tick: AtomicU64::new(0),
                window: self.window,
                next_gen: AtomicU64::new(1),
            }),
        }
    }
}

/// The embedded in-memory backend. Cheap to clone; clones share the store.
///
/// ```
/// use matroska::backend::memory::MemoryBackend;
/// let backend = MemoryBackend::builder().max_entries(10_000).build()?;
/// # let _ = backend;
/// # Ok::<(), matroska::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    data: moka::sync::Cache<Arc<str>, Arc<Entry>>,
    index: Mutex<Index>,
    evicted: EvictedQueue,
    clock: Arc<dyn Clock>,
    /// Whether `clock` is the system clock, whose expiry moka already enforces.
    system_clock: bool,
    origin: Instant,
    last_tick: AtomicU64,
    window: Duration,
    next_gen: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    value: Bytes,
    deps: Arc<[Arc<str>]>,
    gen: u64,
    ttl: Duration,
    expires_at: Instant,
    /// Whether `expires_at` is on the system clock (moka's).
    system_clock: bool,
}

#[derive(Debug)]
struct PerEntryTtl;

/// moka expires an entry at its `expires_at` exactly (with the system clock,
/// moka's clock), so that an entry is never readable after its index
/// registrations expire and are pruned. With another clock, `get` checks
/// `expires_at` itself and moka's expiry (the TTL) only frees the memory.
impl moka::Expiry<Arc<str>, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(&self, _: &Arc<str>, e: &Arc<Entry>, created: Instant) -> Option<Duration> {
        Some(e.lifetime(created))
    }
    fn expire_after_update(
        &self,
        _: &Arc<str>,
        e: &Arc<Entry>,
        updated: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.lifetime(updated))
    }
}

impl Entry {
    /// How long moka keeps the entry, counted from moka's `at`.
    fn lifetime(&self, at: Instant) -> Duration {
        if self.system_clock {
            self.expires_at.saturating_duration_since(at)
        } else {
            self.ttl
        }
    }
}

/// The members registered under one dependency, with a min-heap of expiries
/// so that expired members are pruned from the front on every touch (as
/// Redis' `ZREMRANGEBYSCORE` does for the Redis backend). Heap items of
/// members that were re-registered or removed are skipped when popped, and the
/// heap is rebuilt when it holds more than twice the members, so it stays
/// proportional to the live members.
#[derive(Debug, Default)]
struct Members {
    /// key -> (generation, expiry)
    keys: HashMap<Arc<str>, (u64, Instant)>,
    by_expiry: BinaryHeap<Reverse<(Instant, u64, Arc<str>)>>,
}

impl Members {
    fn insert(&mut self, key: Arc<str>, gen: u64, expires_at: Instant) {
        self.keys.insert(key.clone(), (gen, expires_at));
        self.by_expiry.push(Reverse((expires_at, gen, key)));
        if self.by_expiry.len() > 2 * self.keys.len() + 16 {
            self.by_expiry = self.keys.iter().map(|(k, (g, e))| Reverse((*e, *g, k.clone()))).collect();
        }
    }

    fn remove(&mut self, key: &Arc<str>, gen: u64) {
        if self.keys.get(key).is_some_and(|(g, _)| *g == gen) {
            self.keys.remove(key);
        }
    }

    fn prune(&mut self, now: Instant) {
        while let Some(Reverse((exp, _, _))) = self.by_expiry.peek() {
            if *exp > now {
                break;
            }
            if let Some(Reverse((_, gen, key))) = self.by_expiry.pop() {
                self.remove(&key, gen);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Index {
    /// dependency -> entries depending on it
    reverse: HashMap<Arc<str>, Members>,
    /// entry -> (generation, its dependencies)
    forward: HashMap<Arc<str>, Registration>,
    /// dependency -> tick of its last invalidation
    tombstones: HashMap<Arc<str>, u64>,
    /// (tick, dependency) in order of invalidation, to expire tombstones
    tombstone_order: VecDeque<(u64, Arc<str>)>,
    /// tick of the last `clear`: puts with older tickets are refused
    cleared_at: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the index half-updated in a
    // way that serves stale data (entries are removed before registrations), so
    // poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Index {
    fn unregister(&mut self, key: &Arc<str>, gen: u64) {
        let Some((current, deps)) = self.forward.get(key) else {
            return;
        };
        if *current != gen {
            return;
        }
        let deps = deps.clone();
        self.forward.remove(key);
        for dep in deps.iter() {
            if let Some(members) = self.reverse.get_mut(dep) {
                members.remove(key, gen);
                if members.keys.is_empty() {
                    self.reverse.remove(dep);
                }
            }
        }
    }
}

impl MemoryBackend {
    /// A builder with the defaults: 100,000 entries, a 60 s tombstone window,
    /// the system clock.
    pub fn builder() -> MemoryBackendBuilder {
        MemoryBackendBuilder {
            capacity: Capacity::Entries(100_000),
            window: DEFAULT_TOMBSTONE_WINDOW,
            clock: Arc::new(SystemClock),
            system_clock: true,
        }
    }

    /// A backend with the default settings.
    pub fn new() -> Self {
        Self::builder().build_unchecked()
    }

    /// Runs moka's pending maintenance (expiry, eviction) and unregisters what
    /// it removed. Maintenance also runs by itself; call this to observe a
    /// settled state.
    pub fn run_pending_tasks(&self) {
        self.inner.data.run_pending_tasks();
        let mut index = lock(&self.inner.index);
        self.drain_evicted(&mut index);
    }

    /// The number of (entry, dependency) registrations in the reverse index.
    pub fn index_len(&self) -> usize {
        lock(&self.inner.index).reverse.values().map(|m| m.keys.len()).sum()
    }

    /// The number of entries registered under one encoded dependency key.
    pub fn dependents(&self, dep: &str) -> usize {
        lock(&self.inner.index).reverse.get(dep).map_or(0, |m| m.keys.len())
    }

    /// The number of tombstones currently remembered.
    pub fn tombstone_count(&self) -> usize {
        let now = self.tick();
        let mut index = lock(&self.inner.index);
        self.expire_tombstones(&mut index, now);
        index.tombstones.len()
    }

    /// The number of entries in the store, after pending maintenance.
    pub fn entry_count(&self) -> u64 {
        self.inner.data.run_pending_tasks();
        self.inner.data.entry_count()
    }

    /// A strictly increasing logical time in nanoseconds since the backend was
    /// built.
    fn tick(&self) -> u64 {
        self.tick_at(self.inner.clock.now())
    }

    fn tick_at(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.inner.origin);
        let now = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX - 1);
        let mut last = self.inner.last_tick.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.inner.last_tick.compare_exchange_weak(last, next, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    fn window_nanos(&self) -> u64 {
        u64::try_from(self.inner.window.as_nanos()).unwrap_or(u64::MAX)
    }

    fn drain_evicted(&self, index: &mut Index) {
        let evicted = {
            let mut queue = lock(&self.inner.evicted);
            if queue.is_empty() {
                return;
            }
            std::mem::take(&mut *queue)
        };
        for (key, gen) in evicted {
            index.unregister(&key, gen);
        }
    }

    fn expire_tombstones(&self, index: &mut Index, now: u64) {
        let horizon = now.saturating_sub(self.window_nanos());
        while let Some((tick, _)) = index.tombstone_order.front() {
            if *tick >= horizon {
                break;
            }
            let Some((tick, dep)) = index.tombstone_order.pop_front() else {
                break;
            };
            if index.tombstones.get(&dep) == Some(&tick) {
                index.tombstones.remove(&dep);
            }
        }
    }

    fn remove_entry(&self, index: &mut Index, key: &Arc<str>) -> bool {
        let existed = match index.forward.get(key) {
            Some((gen, _)) => {
                let gen = *gen;
                index.unregister(key, gen);
                true
            }
            None => false,
        };
        let removed = self.inner.data.remove(key).is_some();
        existed || removed
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, key: &str) -> Result<Lookup, BackendError> {
        if let Some(entry) = self.inner.data.get(key) {
            if self.inner.system_clock || entry.expires_at > self.inner.clock.now() {
                return Ok(Lookup::Hit(entry.value.clone()));
            }
        }
        Ok(Lookup::Miss(Ticket::new(self.tick())))
    }

    async fn has(&self, key: &str) -> Result<bool, BackendError> {
        Ok(self.inner.data.get(key).is_some_and(|e| self.inner.system_clock || e.expires_at > self.inner.clock.now()))
    }

    async fn peek(&self, key: &str) -> Result<Option<(Bytes, Option<Duration>)>, BackendError> {
        let now = self.inner.clock.now();
        Ok(self.inner.data.get(key).and_then(|e| {
            let left = e.expires_at.checked_duration_since(now).filter(|d| !d.is_zero() || self.inner.system_clock)?;
            Some((e.value.clone(), Some(left)))
        }))
    }

    async fn put(&self, req: PutRequest<'_>) -> Result<PutOutcome, BackendError> {
        let mut index = lock(&self.inner.index);
        // The clock is read under the lock: a put that waited for it must not
        // get an expiry (and an index registration) earlier than its entry's.
        let now_instant = self.inner.clock.now();
        let now = self.tick_at(now_instant);
        let Some(expires_at) = now_instant.checked_add(req.ttl) else {
            return Err(BackendError::new(
                crate::error::BackendErrorKind::Refused,
                format!("TTL {:?} is too large for this platform's clock", req.ttl),
            )
            .with_key(req.key));
        };
        self.drain_evicted(&mut index);
        self.expire_tombstones(&mut index, now);
        if let Some(ticket) = req.ticket {
            let too_old =
                now.saturating_sub(ticket.value()) > self.window_nanos() || ticket.value() <= index.cleared_at;
            let invalidated =
                req.deps.iter().any(|d| index.tombstones.get(d.as_str()).is_some_and(|t| *t >= ticket.value()));
            if too_old || invalidated {
                return Ok(PutOutcome::Refused);
            }
        }
        // Reuse the index's own copies of the key and dependencies.
        let (key, old) = match index.forward.get_key_value(req.key) {
            Some((k, (gen, deps))) => (k.clone(), Some((*gen, deps.clone()))),
            None => (Arc::from(req.key), None),
        };
        let deps: Arc<[Arc<str>]> = match &old {
            Some((_, old_deps))
                if old_deps.len() == req.deps.len() && old_deps.iter().zip(req.deps).all(|(a, b)| **a == **b) =>
            {
                old_deps.clone()
            }
            _ => {
                if let Some((old_gen, _)) = old {
                    index.unregister(&key, old_gen);
                }
                req.deps
                    .iter()
                    .map(|d| {
                        index
                            .reverse
                            .get_key_value(d.as_str())
                            .map_or_else(|| Arc::from(d.as_str()), |(k, _)| k.clone())
                    })
                    .collect()
            }
        };
        let gen = self.inner.next_gen.fetch_add(1, Ordering::Relaxed);
        for dep in deps.iter() {
            let members = match index.reverse.get_mut(dep) {
                Some(m) => m,
                None => index.reverse.entry(dep.clone()).or_default(),
            };
            members.prune(now_instant);
            members.insert(key.clone(), gen, expires_at);
        }
        index.forward.insert(key.clone(), (gen, deps.clone()));
        let entry =
            Entry { value: req.value, deps, gen, ttl: req.ttl, expires_at, system_clock: self.inner.system_clock };
        self.inner.data.insert(key, Arc::new(entry));
        Ok(PutOutcome::Stored)
    }

    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let key: Arc<str> = Arc::from(key);
        let mut index = lock(&self.inner.index);
        self.drain_evicted(&mut index);
        Ok(self.remove_entry(&mut index, &key))
    }

    async fn invalidate(&self, deps: &[String]) -> Result<Invalidated, BackendError> {
        let mut index = lock(&self.inner.index);
        let now = self.tick();
        self.drain_evicted(&mut index);
        self.expire_tombstones(&mut index, now);
        let mut dropped = 0;
        for dep in deps {
            let dep: Arc<str> = Arc::from(dep.as_str());
            index.tombstones.insert(dep.clone(), now);
            index.tombstone_order.push_back((now, dep.clone()));
            let Some(members) = index.reverse.remove(&dep) else {
                continue;
            };
            for (key, (gen, _)) in members.keys {
                if index.forward.get(&key).is_some_and(|(g, _)| *g == gen) {
                    index.unregister(&key, gen);
                    if self.inner.data.remove(&key).is_some() {
                        dropped += 1;
                    }
                }
            }
        }
        Ok(Invalidated::complete(dropped))
    }

    async fn ticket(&self) -> Result<Ticket, BackendError> {
        Ok(Ticket::new(self.tick()))
    }

    async fn clear(&self, prefix: &str) -> Result<u64, BackendError> {
        let mut index = lock(&self.inner.index);
        index.cleared_at = self.tick();
        self.drain_evicted(&mut index);
        let keys: Vec<Arc<str>> =
            self.inner.data.iter().map(|(k, _)| (*k).clone()).filter(|k| k.starts_with(prefix)).collect();
        let mut removed = 0;
        for key in keys {
            if self.remove_entry(&mut index, &key) {
                removed += 1;
            }
        }
        // registrations whose entry moka already dropped
        let stray: Vec<(Arc<str>, u64)> =
            index.forward.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, (g, _))| (k.clone(), *g)).collect();
        for (key, gen) in stray {
            index.unregister(&key, gen);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect: the clock was read before the index lock, so a put that waited
    /// for the lock got an expiry (and index registrations) earlier than its
    /// entry's real lifetime in moka; pruned from the index while readable,
    /// the entry escaped invalidation.
    #[test]
    fn a_put_that_waits_for_the_lock_expires_no_earlier_than_its_entry() {
        let backend = MemoryBackend::new();
        let ttl = Duration::from_secs(60);
        let guard = lock(&backend.inner.index);
        let b = backend.clone();
        let put = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let deps = ["d".to_owned()];
            let req = PutRequest { key: "k", value: Bytes::from_static(b"v"), deps: &deps, ttl, ticket: None };
            rt.block_on(b.put(req)).unwrap()
        });
        // the put is now blocked on the lock (or about to be)
        std::thread::sleep(Duration::from_millis(20));
        let released = Instant::now();
        drop(guard);
        assert_eq!(put.join().unwrap(), PutOutcome::Stored);
        let entry = backend.inner.data.get("k").unwrap();
        assert!(entry.expires_at >= released + ttl, "the expiry counts from when the put held the lock");
        let index = lock(&backend.inner.index);
        let (_, member_expiry) = index.reverse.get("d").unwrap().keys.get("k").copied().unwrap();
        assert_eq!(member_expiry, entry.expires_at, "the index expires with the entry");
        // moka keeps the entry exactly until then, not longer than the index
        assert_eq!(entry.lifetime(released), entry.expires_at - released);
    }
}
