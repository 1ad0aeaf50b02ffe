//! The [`Cache`] facade.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, trace, warn, Instrument};

use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, Invalidated, Lookup, PutOutcome, PutRequest, Ticket};
use crate::clock::{Clock, SystemClock};
use crate::codec::{self, Codec, DecodeFailure, MessagePack};
use crate::dep::{encode_parts, Dep};
use crate::error::{BackendError, BackendErrorKind, ConfigError, Error};

mod deps;
mod events;
mod flight;
mod options;
mod pending;
mod uncommitted;

use deps::{bubble, bubble_uncacheable, in_loader, COLLECTOR};
pub use deps::{mark_uncacheable, Deps};
pub use events::{record_request, RequestStats};
use events::{Event, Timer};
use flight::{Flight, Flights, Joined, Role};
pub use options::{EntryInfo, LoadOptions, Ttl};
use pending::Pending;
pub use uncommitted::{read_in_transaction, TransactionToken};

/// The default largest TTL a cache accepts: 365 days.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The default largest encoded value: 8 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 8 << 20;
/// The default largest key: 2 MiB.
pub const DEFAULT_MAX_KEY_BYTES: usize = 2 << 20;

/// Configures a [`Cache`].
#[must_use]
pub struct CacheBuilder<C: Codec = MessagePack> {
    backend: Option<Arc<dyn Backend>>,
    prefix: String,
    codec: C,
    max_ttl: Duration,
    max_value_bytes: usize,
    max_key_bytes: usize,
    max_pending: usize,
    ttls: TtlPolicy,
    clock: Arc<dyn Clock>,
}

/// Default TTLs and jitter.
#[derive(Clone, Debug, Default)]
struct TtlPolicy {
    default: Option<Duration>,
    entities: HashMap<String, Duration>,
    jitter: f64,
}

/// The largest TTL jitter accepted: half the TTL.
pub const MAX_TTL_JITTER: f64 = 0.5;

/// The default bound on invalidations kept for retry after transient
/// failures: 100,000 dependencies.
pub const DEFAULT_MAX_PENDING_INVALIDATIONS: usize = 100_000;

impl<C: Codec> fmt::Debug for CacheBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder").field("backend", &self.backend).field("prefix", &self.prefix).finish()
    }
}

impl<C: Codec> CacheBuilder<C> {
    /// The backend (default: a [`MemoryBackend`] with its defaults).
    pub fn backend(mut self, backend: impl Backend) -> Self {
        self.backend = Some(Arc::new(backend));
        self
    }

    /// A backend already shared with other caches.
    pub fn shared_backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// A namespace for this cache's keys and dependencies (default: empty).
    /// Caches with different prefixes share a backend without seeing each
    /// other's entries or invalidations.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The value codec (default: [`MessagePack`]).
    pub fn codec<D: Codec>(self, codec: D) -> CacheBuilder<D> {
        CacheBuilder {
            backend: self.backend,
            prefix: self.prefix,
            codec,
            max_ttl: self.max_ttl,
            max_value_bytes: self.max_value_bytes,
            max_key_bytes: self.max_key_bytes,
            max_pending: self.max_pending,
            ttls: self.ttls,
            clock: self.clock,
        }
    }

    /// The TTL of entries stored with [`Ttl::Default`] that depend on no
    /// entity with an [`entity_ttl`](Self::entity_ttl) (default: none; such
    /// a put is then an [`Error::InvalidTtl`]).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.ttls.default = Some(ttl);
        self
    }

    /// The TTL of entries stored with [`Ttl::Default`] that depend on
    /// `entity` (one of its rows, lists or ids: the object type of their
    /// dependencies). An entry depending on several such entities gets the
    /// shortest. Repeatable.
    pub fn entity_ttl(mut self, entity: impl Into<String>, ttl: Duration) -> Self {
        self.ttls.entities.insert(entity.into(), ttl);
        self
    }

    /// Shortens every TTL by a random fraction of at most `fraction` (in
    /// `0.0 ..= `[`MAX_TTL_JITTER`]; default 0), so that entries stored
    /// together do not all expire at once.
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.ttls.jitter = fraction;
        self
    }

    /// The clock the cache reads wall-clock time from, for freshness
    /// deadlines (default: the system clock; tests use a
    /// [`MockClock`](crate::clock::MockClock)).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The largest TTL accepted (default [`DEFAULT_MAX_TTL`]).
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// The largest encoded value accepted (default [`DEFAULT_MAX_VALUE_BYTES`]).
    /// Larger values are refused with [`Error::ValueTooLarge`] before anything
    /// is sent to the backend.
    pub fn max_value_bytes(mut self, n: usize) -> Self {
        self.max_value_bytes = n;
        self
    }

    /// The largest key accepted, in bytes (default [`DEFAULT_MAX_KEY_BYTES`]).
    pub fn max_key_bytes(mut self, n: usize) -> Self {
        self.max_key_bytes = n;
        self
    }

    /// How many dependencies whose invalidation failed with a transient
    /// error are kept for retry (default
    /// [`DEFAULT_MAX_PENDING_INVALIDATIONS`]). Beyond it, further failed
    /// invalidations are only reported to their caller (and traced as
    /// errors): entries depending on them may stay until they expire.
    pub fn max_pending_invalidations(mut self, n: usize) -> Self {
        self.max_pending = n;
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    /// [`ConfigError`] if `max_ttl` is outside `1 ms ..= `[`MAX_TTL_LIMIT`],
    /// or `max_value_bytes`, `max_key_bytes` or `max_pending_invalidations`
    /// is 0.
    pub fn build(self) -> Result<Cache<C>, ConfigError> {
        if self.max_ttl < Duration::from_millis(1) || self.max_ttl > MAX_TTL_LIMIT {
            return Err(ConfigError::new(
                "max_ttl",
                format!("{:?} is outside the accepted range 1ms..={MAX_TTL_LIMIT:?}", self.max_ttl),
            ));
        }
        let ttl_ok = |d: Duration| d >= Duration::from_millis(1) && d <= self.max_ttl;
        if let Some(d) = self.ttls.default {
            if !ttl_ok(d) {
                return Err(ConfigError::new(
                    "default_ttl",
                    format!("{d:?} is outside 1ms..=max_ttl ({:?})", self.max_ttl),
                ));
            }
        }
        for (entity, d) in &self.ttls.entities {
            if !ttl_ok(*d) {
                return Err(ConfigError::new(
                    "entity_ttl",
                    format!("{d:?} for {entity:?} is outside 1ms..=max_ttl ({:?})", self.max_ttl),
                ));
            }
        }
        if !(0.0..=MAX_TTL_JITTER).contains(&self.ttls.jitter) {
            return Err(ConfigError::new(
                "ttl_jitter",
                format!("{} is outside 0.0..={MAX_TTL_JITTER}", self.ttls.jitter),
            ));
        }
        for (setting, n) in [
            ("max_value_bytes", self.max_value_bytes),
            ("max_key_bytes", self.max_key_bytes),
            ("max_pending_invalidations", self.max_pending),
        ] {
            if n == 0 {
                return Err(ConfigError::new(setting, "must be at least 1"));
            }
        }
        Ok(self.build_unchecked())
    }

    fn build_unchecked(self) -> Cache<C> {
        let backend = self.backend.unwrap_or_else(|| Arc::new(MemoryBackend::new()));
        Cache {
            inner: Arc::new(Inner {
                backend,
                key_prefix: encode_parts([self.prefix.as_str(), ""]),
                codec: self.codec,
                max_ttl: self.max_ttl,
                max_value_bytes: self.max_value_bytes,
                max_key_bytes: self.max_key_bytes,
                prefix: self.prefix,
                flights: Flights::default(),
                stats: Counters::default(),
                pending: Pending::new(self.max_pending),
                flushing: tokio::sync::Mutex::new(()),
                recovery: std::sync::RwLock::new(None),
                needs_recovery: std::sync::atomic::AtomicBool::new(false),
                ttls: self.ttls,
                clock: self.clock,
            }),
        }
    }
}

/// The largest `max_ttl` a cache accepts: 100 years (far below where instant
/// arithmetic could overflow).
pub const MAX_TTL_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A cache whose entries know their dependencies.
///
/// Cheap to clone; clones share everything. See the [crate docs](crate) for
/// an overview.
pub struct Cache<C: Codec = MessagePack> {
    inner: Arc<Inner<C>>,
}

impl<C: Codec> Clone for Cache<C> {
    fn clone(&self) -> Self {
        Cache { inner: Arc::clone(&self.inner) }
    }
}

impl<C: Codec> fmt::Debug for Cache<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("prefix", &self.inner.prefix)
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

struct Inner<C> {
    backend: Arc<dyn Backend>,
    prefix: String,
    /// `escape(prefix) + ":"`: prepended to keys and dependency keys.
    key_prefix: String,
    codec: C,
    max_ttl: Duration,
    max_value_bytes: usize,
    max_key_bytes: usize,
    flights: Flights,
    stats: Counters,
    /// Invalidations that failed transiently, applied again with the next
    /// invalidation, before the next read, and by a background retry.
    pending: Pending,
    /// Held while pending invalidations are being applied before a read.
    flushing: tokio::sync::Mutex<()>,
    /// What must run before reads are served, at first and after an outage.
    recovery: std::sync::RwLock<Option<std::sync::Weak<dyn Recovery>>>,
    /// Set by a transient backend failure (and by `set_recovery`).
    needs_recovery: std::sync::atomic::AtomicBool,
    ttls: TtlPolicy,
    clock: Arc<dyn Clock>,
}

/// Work a cache must have done before it serves reads: when it is first
/// used, and again after its backend failed transiently (an outage, during
/// which invalidations recorded elsewhere, by other processes, may not have
/// reached it). A database integration installs one that applies the
/// invalidation intents it keeps durably (the `matroska-seaorm` outbox).
///
/// While it has not succeeded, reads are not served from the cache (`get`
/// fails, `get_or_load` calls its loader) and puts are refused.
pub trait Recovery: Send + Sync + 'static {
    /// Applies what must be applied; an error keeps the cache from serving.
    fn recover(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<(), crate::BoxError>> + Send + '_>>;
}

/// The answer to [`Cache::lookup`]: a hit, or a miss with the ticket to pass to
/// [`Cache::put_with_ticket`].
#[derive(Debug)]
pub enum Fetched<T> {
    /// The cached value.
    Hit(T),
    /// No value; store the loaded one with this ticket.
    Miss(Ticket),
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    puts: AtomicU64,
    refused_puts: AtomicU64,
    invalidations: AtomicU64,
    entries_invalidated: AtomicU64,
    deletes: AtomicU64,
    decode_errors: AtomicU64,
    backend_errors: AtomicU64,
    uncacheable_loads: AtomicU64,
    stale: AtomicU64,
}

impl Counters {
    /// Counts `event` here, for the request being recorded, and in metrics.
    fn count(&self, event: Event) {
        let field = match event {
            Event::Hit => &self.hits,
            Event::Miss => &self.misses,
            Event::Stale => &self.stale,
            Event::Load => &self.loads,
            Event::Put => &self.puts,
            Event::RefusedPut => &self.refused_puts,
            Event::Invalidation => &self.invalidations,
            Event::Delete => &self.deletes,
            Event::DecodeError => &self.decode_errors,
            Event::BackendError => &self.backend_errors,
            Event::UncacheableLoad => &self.uncacheable_loads,
        };
        field.fetch_add(1, Ordering::Relaxed);
        events::note(event);
    }
}

/// A snapshot of a cache's counters, from [`Cache::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Reads that found a value.
    pub hits: u64,
    /// Reads that found nothing (or an undecodable value).
    pub misses: u64,
    /// Loader runs in `get_or_load`.
    pub loads: u64,
    /// Entries stored.
    pub puts: u64,
    /// Puts refused by stale-set protection.
    pub refused_puts: u64,
    /// Calls to `invalidate` that succeeded.
    pub invalidations: u64,
    /// Entries dropped by invalidations.
    pub entries_invalidated: u64,
    /// Entries deleted by key.
    pub deletes: u64,
    /// Stored values that could not be decoded.
    pub decode_errors: u64,
    /// Backend failures (including those `get_or_load` worked around).
    pub backend_errors: u64,
    /// Loaded values not cached because their loader read uncommitted data
    /// (see [`mark_uncacheable`]).
    pub uncacheable_loads: u64,
    /// Values past their freshness served (stale-while-revalidate,
    /// stale-on-error: see [`LoadOptions`]).
    pub stale_served: u64,
}

impl Stats {
    /// `hits / (hits + misses)`, or 0 with no reads.
    pub fn hit_rate(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

impl Cache<MessagePack> {
    /// A builder with the defaults: a [`MemoryBackend`], no prefix, the
    /// [`MessagePack`] codec.
    pub fn builder() -> CacheBuilder<MessagePack> {
        CacheBuilder {
            backend: None,
            prefix: String::new(),
            codec: MessagePack,
            max_ttl: DEFAULT_MAX_TTL,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_pending: DEFAULT_MAX_PENDING_INVALIDATIONS,
            ttls: TtlPolicy::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// A cache over `backend` with the other defaults.
    pub fn new(backend: impl Backend) -> Self {
        Self::builder().backend(backend).build_unchecked()
    }
}

impl<C: Codec> Cache<C> {
    /// The prefix given at build time.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.stats;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            hits: r(&c.hits),
            misses: r(&c.misses),
            loads: r(&c.loads),
            puts: r(&c.puts),
            refused_puts: r(&c.refused_puts),
            invalidations: r(&c.invalidations),
            entries_invalidated: r(&c.entries_invalidated),
            deletes: r(&c.deletes),
            decode_errors: r(&c.decode_errors),
            backend_errors: r(&c.backend_errors),
            uncacheable_loads: r(&c.uncacheable_loads),
            stale_served: r(&c.stale),
        }
    }

    fn backend_key(&self, key: &str) -> Result<String, Error> {
        if key.is_empty() {
            return Err(Error::InvalidKey { len: 0, reason: "keys must not be empty" });
        }
        if key.len() > self.inner.max_key_bytes {
            return Err(Error::InvalidKey {
                len: key.len(),
                reason: "key longer than the maximum (see CacheBuilder::max_key_bytes)",
            });
        }
        let mut full = String::with_capacity(self.inner.key_prefix.len() + key.len() + 4);
        full.push_str(&self.inner.key_prefix);
        if key.contains([':', '\\']) {
            full.push_str(&encode_parts([key]));
        } else {
            full.push_str(key);
        }
        Ok(full)
    }

    /// The backend keys of dependencies: the cache prefix, then the encoding.
    fn backend_deps(&self, deps: &[Dep]) -> Vec<String> {
        deps.iter()
            .map(|d| {
                let mut s = String::with_capacity(self.inner.key_prefix.len() + d.as_str().len());
                s.push_str(&self.inner.key_prefix);
                s.push_str(d.as_str());
                s
            })
            .collect()
    }

    fn check_ttl(&self, ttl: Duration) -> Result<(), Error> {
        if ttl < Duration::from_millis(1) || ttl > self.inner.max_ttl {
            return Err(Error::InvalidTtl { ttl, max: self.inner.max_ttl });
        }
        Ok(())
    }

    /// The TTL an entry gets (default TTLs resolved, jitter applied, the
    /// staleness window added) and its freshness deadline (0: none).
    fn resolve_ttl(&self, key: &str, ttl: Ttl, deps: &[Dep], window: Duration) -> Result<(Duration, u64), Error> {
        let policy = &self.inner.ttls;
        let base = match ttl {
            Ttl::Fixed(d) => d,
            Ttl::Default => deps
                .iter()
                .filter_map(Dep::object_type)
                .filter_map(|t| policy.entities.get(&t).copied())
                .min()
                .or(policy.default)
                .ok_or_else(|| Error::NoDefaultTtl { key: key.to_owned() })?,
        };
        self.check_ttl(base)?;
        let ttl = if policy.jitter > 0.0 {
            Ord::max(base.mul_f64(1.0 - policy.jitter * fastrand::f64()), Duration::from_millis(1))
        } else {
            base
        };
        if window.is_zero() {
            return Ok((ttl, 0));
        }
        let fresh_until =
            self.inner.clock.unix_millis().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        Ok((Ord::min(ttl.saturating_add(window), self.inner.max_ttl), fresh_until))
    }

    /// Whether an entry with this freshness deadline is stale now.
    fn is_stale(&self, fresh_until: u64) -> bool {
        fresh_until != 0 && self.inner.clock.unix_millis() >= fresh_until
    }

    fn backend_error(&self, e: crate::error::BackendError) -> Error {
        self.inner.stats.count(Event::BackendError);
        if e.is_transient() {
            self.inner.needs_recovery.store(true, Ordering::Release);
        }
        Error::Backend(e)
    }

    /// Installs the [`Recovery`] to run before this cache serves reads: now
    /// (before the next read) and after every transient backend failure.
    /// The cache keeps only a weak reference: the recovery stops applying
    /// once its owner is dropped.
    pub fn set_recovery(&self, recovery: &Arc<dyn Recovery>) {
        *self.inner.recovery.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::downgrade(recovery));
        self.inner.needs_recovery.store(true, Ordering::Release);
    }

    /// Whether the cache will run its recovery before serving the next read.
    pub fn needs_recovery(&self) -> bool {
        self.inner.needs_recovery.load(Ordering::Acquire) && self.recovery().is_some()
    }

    fn recovery(&self) -> Option<Arc<dyn Recovery>> {
        self.inner.recovery.read().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(std::sync::Weak::upgrade)
    }

    /// Runs the recovery if one is due; `Err` when it failed (or another
    /// task is running it).
    async fn recover(&self) -> Result<(), Error> {
        if !self.inner.needs_recovery.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(recovery) = self.recovery() else { return Ok(()) };
        let Ok(_guard) = self.inner.flushing.try_lock() else {
            return Err(self.unavailable("the cache is recovering (applying invalidations recorded durably)"));
        };
        self.inner.needs_recovery.store(false, Ordering::Release);
        match recovery.recover().await {
            Ok(()) => {
                debug!("recovered: durable invalidations applied before serving reads");
                Ok(())
            }
            Err(e) => {
                self.inner.needs_recovery.store(true, Ordering::Release);
                warn!(error = %e, "recovery failed: reads are not served from the cache");
                Err(self.unavailable("the cache could not apply the invalidations recorded durably"))
            }
        }
    }

    fn unavailable(&self, why: &'static str) -> Error {
        self.inner.stats.count(Event::BackendError);
        Error::Backend(BackendError::new(BackendErrorKind::Unavailable, why))
    }

    /// Decodes a stored value; inside a loader, bubbles its dependencies.
    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, Error> {
        self.decode_fresh(key, bytes).map(|(value, _)| value)
    }

    /// Decodes a stored value, with whether it is past its freshness
    /// deadline; inside a loader, bubbles its dependencies.
    fn decode_fresh<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<(T, bool), Error> {
        let fail = |f: DecodeFailure| {
            self.inner.stats.count(Event::DecodeError);
            match f {
                DecodeFailure::Envelope(reason) => {
                    Error::Decode { key: key.to_owned(), reason: reason.to_owned(), source: None }
                }
                DecodeFailure::Codec(e) => Error::Decode {
                    key: key.to_owned(),
                    reason: "the codec rejected the payload".into(),
                    source: Some(e),
                },
            }
        };
        let env = codec::open(bytes).map_err(fail)?;
        let stale = self.is_stale(env.fresh_until());
        let value = env.value(&self.inner.codec).map_err(fail)?;
        // Dependencies are only needed to bubble into an enclosing loader.
        if in_loader() {
            bubble(&env.deps().map_err(fail)?);
        }
        Ok((value, stale))
    }

    fn encode<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        deps: &[Dep],
        fresh_until: u64,
    ) -> Result<Bytes, Error> {
        let bytes = codec::encode(&self.inner.codec, value, deps, fresh_until)
            .map_err(|source| Error::Encode { key: key.to_owned(), source })?;
        if bytes.len() > self.inner.max_value_bytes {
            return Err(Error::ValueTooLarge {
                key: key.to_owned(),
                size: bytes.len(),
                max: self.inner.max_value_bytes,
            });
        }
        Ok(Bytes::from(bytes))
    }

    /// Reads a value. A miss is `Ok(None)`. Inside a loader, a hit adds the
    /// entry's dependencies to the loader's.
    ///
    /// # Errors
    /// [`Error::Decode`] if the stored bytes cannot be read as a `T`;
    /// [`Error::Backend`] if the backend fails; [`Error::InvalidKey`].
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        Ok(match self.lookup(key).await? {
            Fetched::Hit(v) => Some(v),
            Fetched::Miss(_) => None,
        })
    }

    /// Reads a value; on a miss, returns the ticket for a protected
    /// [`put_with_ticket`](Self::put_with_ticket).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn lookup<T: DeserializeOwned>(&self, key: &str) -> Result<Fetched<T>, Error> {
        let full = self.backend_key(key)?;
        self.ready().await?;
        let timer = Timer::start("get");
        let lookup = self.inner.backend.get(&full).await.map_err(|e| self.backend_error(e));
        timer.stop();
        let lookup = lookup?;
        trace!(key = %Short(key), hit = matches!(lookup, Lookup::Hit(_)), "matroska.get");
        match lookup {
            Lookup::Hit(bytes) => match self.decode_fresh(key, &bytes)? {
                (value, false) => {
                    self.inner.stats.count(Event::Hit);
                    Ok(Fetched::Hit(value))
                }
                // past its freshness: only get_or_load_with serves it
                (_, true) => {
                    self.inner.stats.count(Event::Miss);
                    let ticket = self.inner.backend.ticket().await.map_err(|e| self.backend_error(e))?;
                    Ok(Fetched::Miss(ticket))
                }
            },
            Lookup::Miss(ticket) => {
                self.inner.stats.count(Event::Miss);
                Ok(Fetched::Miss(ticket))
            }
        }
    }

    /// Whether a value is stored under `key`.
    ///
    /// # Errors
    /// [`Error::Backend`], [`Error::InvalidKey`].
    pub async fn has(&self, key: &str) -> Result<bool, Error> {
        let full = self.backend_key(key)?;
        self.ready().await?;
        self.inner.backend.has(&full).await.map_err(|e| self.backend_error(e))
    }

    /// Makes sure no invalidation is pending before a read is served: applies
    /// the pending ones (one backend call), or fails so that the read is not
    /// served from the cache.
    async fn ready(&self) -> Result<(), Error> {
        if self.inner.needs_recovery.load(Ordering::Acquire) {
            self.recover().await?;
        }
        if self.inner.pending.is_clear() {
            return Ok(());
        }
        if self.inner.pending.overflowed() {
            return Err(self.backend_error(BackendError::new(
                BackendErrorKind::Unavailable,
                "more invalidations failed than max_pending_invalidations keeps: the cache serves no reads until \
                 Cache::clear() is called",
            )));
        }
        // One flush at a time; reads arriving meanwhile are not served from
        // the cache (they would have to wait for a backend that just failed).
        let Ok(_guard) = self.inner.flushing.try_lock() else {
            return Err(self.backend_error(BackendError::new(
                BackendErrorKind::Unavailable,
                "invalidations are pending; the cache serves no reads until they are applied",
            )));
        };
        let snapshot = self.inner.pending.snapshot();
        if snapshot.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = snapshot.iter().map(|(k, _)| k.clone()).collect();
        let outcome = self.inner.backend.invalidate(&keys).await;
        let (done, failed, error) = split_outcome(outcome, snapshot.len());
        self.inner.pending.applied(done.iter().map(|&i| &snapshot[i]));
        if failed.is_empty() {
            debug!(deps = snapshot.len(), "pending invalidations applied before a read");
            return Ok(());
        }
        self.keep_for_retry(failed.iter().map(|&i| snapshot[i].0.as_str()), &error);
        Err(self.backend_error(error))
    }

    /// Stores a value with its dependencies, unconditionally (the original's
    /// manual style). Prefer [`get_or_load`](Self::get_or_load), or
    /// [`lookup`](Self::lookup) + [`put_with_ticket`](Self::put_with_ticket),
    /// which refuse data loaded before a concurrent invalidation.
    ///
    /// # Errors
    /// [`Error::InvalidTtl`], [`Error::InvalidKey`], [`Error::Encode`],
    /// [`Error::ValueTooLarge`], [`Error::Backend`], and
    /// [`Error::NotStored`] when the backend did not store it (a concurrent
    /// invalidation of one of its dependencies on a Redis Cluster, or an
    /// invalidation of one of them still pending): `Ok` always means stored.
    pub async fn put<T, I>(&self, key: &str, value: &T, deps: I, ttl: impl Into<Ttl>) -> Result<(), Error>
    where
        T: Serialize + ?Sized,
        I: IntoIterator,
        I::Item: Into<Dep>,
    {
        if uncommitted::in_open_transaction() {
            self.inner.stats.count(Event::RefusedPut);
            return Err(Error::NotStored {
                key: key.to_owned(),
                reason:
                    "this task read inside a database transaction that is still open: what it read may be uncommitted",
            });
        }
        match self.put_inner(key, value, collect(deps), ttl.into(), None).await? {
            PutOutcome::Stored => Ok(()),
            PutOutcome::Refused => Err(Error::NotStored {
                key: key.to_owned(),
                reason: "a concurrent or pending invalidation of one of its dependencies refused it",
            }),
        }
    }

    /// Stores a value unless one of its dependencies was invalidated after
    /// `ticket` was issued (or the ticket is older than the backend's window,
    /// or an invalidation of one of them is still pending).
    ///
    /// # Errors
    /// As [`put`](Self::put), except that a refusal is
    /// `Ok(PutOutcome::Refused)`.
    pub async fn put_with_ticket<T, I>(
        &self,
        key: &str,
        value: &T,
        deps: I,
        ttl: impl Into<Ttl>,
        ticket: Ticket,
    ) -> Result<PutOutcome, Error>
    where
        T: Serialize + ?Sized,
        I: IntoIterator,
        I::Item: Into<Dep>,
    {
        if uncommitted::in_open_transaction() {
            // what this task read may be uncommitted
            self.inner.stats.count(Event::RefusedPut);
            return Ok(PutOutcome::Refused);
        }
        self.put_inner(key, value, collect(deps), ttl.into(), Some(ticket)).await
    }

    async fn put_inner<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        deps: Vec<Dep>,
        ttl: Ttl,
        ticket: Option<Ticket>,
    ) -> Result<PutOutcome, Error> {
        let (ttl, _) = self.resolve_ttl(key, ttl, &deps, Duration::ZERO)?;
        let full = self.backend_key(key)?;
        let bytes = self.encode(key, value, &deps, 0)?;
        self.put_bytes(&full, bytes, &deps, ttl, ticket).await
    }

    async fn put_bytes(
        &self,
        full: &str,
        value: Bytes,
        deps: &[Dep],
        ttl: Duration,
        ticket: Option<Ticket>,
    ) -> Result<PutOutcome, Error> {
        let deps = crate::dep::with_row_switches(deps);
        let backend_deps = self.backend_deps(&deps);
        // A dependency whose invalidation failed has no tombstone yet: the
        // value may predate that invalidation.
        if self.inner.pending.contains_any(&backend_deps) || self.inner.pending.overflowed() || self.needs_recovery() {
            self.inner.stats.count(Event::RefusedPut);
            debug!(key = %Short(full), "put refused: an invalidation of one of its dependencies is pending");
            return Ok(PutOutcome::Refused);
        }
        let req = PutRequest { key: full, value, deps: &backend_deps, ttl, ticket };
        let timer = Timer::start("put");
        let outcome = self.inner.backend.put(req).await.map_err(|e| self.backend_error(e));
        timer.stop();
        let outcome = outcome?;
        trace!(key = %Short(full), deps = deps.len(), ttl_ms = ttl.as_millis() as u64, ?outcome, "matroska.put");
        match outcome {
            PutOutcome::Stored => self.inner.stats.count(Event::Put),
            PutOutcome::Refused => {
                self.inner.stats.count(Event::RefusedPut);
                debug!("put refused: a dependency was invalidated during the load");
            }
        }
        Ok(outcome)
    }

    /// Removes one entry. Returns whether it existed.
    ///
    /// # Errors
    /// [`Error::Backend`], [`Error::InvalidKey`].
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        let full = self.backend_key(key)?;
        let existed = self.inner.backend.delete(&full).await.map_err(|e| self.backend_error(e))?;
        if existed {
            self.inner.stats.count(Event::Delete);
        }
        Ok(existed)
    }

    /// Drops every entry depending on any of `deps`, in one backend call, and
    /// makes puts of data loaded before this call fail. Returns the number of
    /// entries dropped.
    ///
    /// **Behavior on failures.**
    ///
    /// * Invalidations that failed earlier with a transient error travel with
    ///   this call (still one backend call).
    /// * A dependency that fails (a dead node of a Redis Cluster, a transient
    ///   error) does not keep the others from taking full effect: the call
    ///   returns [`Error::Invalidation`] naming only the failed ones.
    /// * Dependencies that failed transiently are kept (bounded by
    ///   [`CacheBuilder::max_pending_invalidations`]) and invalidated again:
    ///   with the next `invalidate`, before this cache serves its next read
    ///   (a read that cannot apply them is not served from the cache: `get`
    ///   fails, `get_or_load` calls the loader), and by a background task (on
    ///   the tokio runtime the call ran on) until that succeeds. Puts of
    ///   values depending on them are refused meanwhile. So through this
    ///   cache, an invalidation that returned an error still holds for every
    ///   read that starts after it returned.
    /// * Other caches sharing the backend (other processes) see a failed
    ///   invalidation only once it is applied; for a durable guarantee across
    ///   processes, record it durably (the `matroska-seaorm` outbox does).
    /// * If more than the bound fail, the cache serves no reads and stores
    ///   nothing until [`clear`](Self::clear) is called.
    ///
    /// # Errors
    /// [`Error::Invalidation`] (some dependencies failed, the others took
    /// effect); never a success it did not have.
    pub async fn invalidate<I>(&self, deps: I) -> Result<u64, Error>
    where
        I: IntoIterator,
        I::Item: Into<Dep>,
    {
        let deps = collect(deps);
        if deps.is_empty() {
            return Ok(0);
        }
        let own = self.backend_deps(&deps);
        let n_own = own.len();
        // earlier invalidations that failed travel with this one
        let snapshot = self.inner.pending.snapshot();
        let mut all = own;
        let mut epochs: Vec<Option<u64>> = vec![None; n_own];
        {
            let own_set: std::collections::HashMap<&str, usize> =
                all.iter().enumerate().map(|(i, d)| (d.as_str(), i)).collect();
            let mut extra = Vec::new();
            for (dep, epoch) in &snapshot {
                match own_set.get(dep.as_str()) {
                    Some(&i) => epochs[i] = Some(*epoch),
                    None => extra.push((dep.clone(), *epoch)),
                }
            }
            for (dep, epoch) in extra {
                all.push(dep);
                epochs.push(Some(epoch));
            }
        }
        let span = tracing::debug_span!("matroska.invalidate", deps = n_own, retried = all.len() - n_own);
        let timer = Timer::start("invalidate");
        let outcome = self.inner.backend.invalidate(&all).instrument(span).await;
        timer.stop();
        let dropped = match &outcome {
            Ok(inv) => inv.dropped,
            Err(_) => 0,
        };
        events::metrics::fanout(dropped);
        let (done, failed, error) = split_outcome(outcome, all.len());
        // forget the pending ones that are now applied
        let applied: Vec<(String, u64)> = done.iter().filter_map(|&i| epochs[i].map(|e| (all[i].clone(), e))).collect();
        self.inner.pending.applied(applied.iter());
        self.inner.stats.entries_invalidated.fetch_add(dropped, Ordering::Relaxed);
        if failed.is_empty() {
            self.inner.stats.count(Event::Invalidation);
            debug!(deps = n_own, dropped, "invalidated");
            return Ok(dropped);
        }
        let kept = self.keep_for_retry(failed.iter().map(|&i| all[i].as_str()), &error);
        let own_failed: Vec<Dep> = failed.iter().filter(|&&i| i < n_own).map(|&i| deps[i].clone()).collect();
        self.inner.stats.count(Event::BackendError);
        if own_failed.is_empty() {
            // only earlier failures failed again; this call took full effect
            self.inner.stats.count(Event::Invalidation);
            return Ok(dropped);
        }
        Err(Error::Invalidation { failed: own_failed, kept, source: error })
    }

    /// Keeps dependencies whose invalidation failed with a transient error,
    /// and starts the background retry if none runs (and a tokio runtime is
    /// at hand). Returns whether they are kept.
    fn keep_for_retry<'a>(&self, deps: impl IntoIterator<Item = &'a str>, error: &BackendError) -> bool {
        if !error.is_transient() {
            tracing::error!(error = %error, "invalidation failed with a non-transient error; not retried");
            return false;
        }
        let all = self.inner.pending.keep(deps);
        events::metrics::pending(self.inner.pending.len());
        if !all {
            tracing::error!(
                max = self.inner.pending.len(),
                "too many failed invalidations pending: the cache serves no reads and stores nothing until \
                 Cache::clear() is called"
            );
        }
        if self.inner.pending.start_retry() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let weak = Arc::downgrade(&self.inner);
                    runtime.spawn(retry_pending(weak));
                }
                Err(_) => {
                    // no runtime: the next invalidate or read applies them
                    self.inner.pending.stop_retry();
                }
            }
        }
        all
    }

    /// The number of dependencies whose invalidation failed with a transient
    /// error and is waiting to be applied.
    pub fn pending_invalidations(&self) -> usize {
        self.inner.pending.len()
    }

    /// Applies the pending invalidations now (one backend call). Returns the
    /// number still pending afterwards.
    ///
    /// # Errors
    /// The backend's error if some could not be applied (they stay pending).
    pub async fn flush_pending(&self) -> Result<usize, Error> {
        let _guard = self.inner.flushing.lock().await;
        let snapshot = self.inner.pending.snapshot();
        if snapshot.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = snapshot.iter().map(|(k, _)| k.clone()).collect();
        let outcome = self.inner.backend.invalidate(&keys).await;
        let (done, failed, error) = split_outcome(outcome, keys.len());
        self.inner.pending.applied(done.iter().map(|&i| &snapshot[i]));
        if failed.is_empty() {
            return Ok(self.inner.pending.len());
        }
        self.keep_for_retry(failed.iter().map(|&i| keys[i].as_str()), &error);
        Err(self.backend_error(error))
    }

    /// Removes every entry of this cache's backend and forgets pending
    /// invalidations (they are moot once nothing is cached). Use it after
    /// more invalidations failed than the cache keeps, or after changing data
    /// behind the cache's back. Returns the number of entries removed.
    ///
    /// # Errors
    /// The backend's error; the pending invalidations are then kept.
    pub async fn clear(&self) -> Result<u64, Error> {
        let _guard = self.inner.flushing.lock().await;
        let removed = self.inner.backend.clear(&self.inner.key_prefix).await.map_err(|e| self.backend_error(e))?;
        self.inner.pending.reset();
        Ok(removed)
    }

    /// Returns the cached value, or runs `load`, stores its result with the
    /// dependencies it recorded, and returns it.
    ///
    /// * **Single flight:** concurrent misses of one key in this process run
    ///   one loader. A waiter takes the leader's value only if it was stored
    ///   and the waiter joined before the leader began storing it (so the
    ///   value is as fresh as the waiter's own read could be); otherwise it
    ///   reads the backend again, and loads if that misses. If the leader
    ///   fails, each waiter tries again.
    /// * **Stale-set protection:** the value is stored only if none of its
    ///   dependencies was invalidated since the miss; otherwise it is still
    ///   returned, just not cached.
    /// * **Nesting:** values read through any cache inside `load` add their
    ///   dependencies to this entry (only within the loader's own task: work
    ///   spawned onto other tasks does not report back).
    /// * **Uncommitted data:** a loader marked uncacheable (see
    ///   [`mark_uncacheable`]) has its value returned but neither stored nor
    ///   shared, and marks the enclosing loaders too.
    /// * **Failures:** an unreachable backend, pending invalidations that
    ///   cannot be applied, or an undecodable stored value never fail the
    ///   call: the loader runs and its value is returned (uncached, and not
    ///   shared with other callers); the error is counted and traced. An
    ///   undecodable value is replaced.
    ///
    /// # Errors
    /// The loader's error, or [`Error::InvalidKey`] / [`Error::InvalidTtl`]
    /// converted into `E`.
    pub async fn get_or_load<T, F, Fut, E>(&self, key: &str, ttl: impl Into<Ttl>, load: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Deps) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        let options = LoadOptions::new(ttl);
        self.fetch(key, &options, &|_: &T| options.ttl, load).await
    }

    /// [`get_or_load`](Self::get_or_load) with [`LoadOptions`]: a TTL, and
    /// optionally serving values past it (stale-while-revalidate,
    /// stale-on-error). An invalidated entry is never served.
    ///
    /// ```
    /// use std::time::Duration;
    /// use matroska::{Cache, LoadOptions, MemoryBackend};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), matroska::Error> {
    /// let cache = Cache::new(MemoryBackend::new());
    /// let options = LoadOptions::new(Duration::from_secs(60))
    ///     .stale_while_revalidate(Duration::from_secs(30)) // others get the old value while one reloads
    ///     .stale_on_error(Duration::from_secs(300)); // the old value if the database is down
    /// let n: u32 = cache.get_or_load_with("front-page", options, |_deps| async { Ok::<_, matroska::Error>(7) }).await?;
    /// assert_eq!(n, 7);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`get_or_load`](Self::get_or_load); with stale-on-error, the
    /// loader's error only when there is no stale value to serve.
    pub async fn get_or_load_with<T, F, Fut, E>(&self, key: &str, options: LoadOptions, load: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Deps) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        self.fetch(key, &options, &|_: &T| options.ttl, load).await
    }

    /// [`get_or_load`](Self::get_or_load) for a lookup that may find
    /// nothing: a `None` is cached too (a negative entry), for
    /// `negative_ttl`, so repeated lookups of a missing row do not reach the
    /// database; a value is cached for `ttl`. Give the loader's dependencies
    /// for both (for a row that does not exist, what would create it: see
    /// `matroska_seaorm::not_found`).
    ///
    /// # Errors
    /// As [`get_or_load`](Self::get_or_load).
    pub async fn get_or_load_optional<T, F, Fut, E>(
        &self,
        key: &str,
        ttl: impl Into<Ttl>,
        negative_ttl: Duration,
        load: F,
    ) -> Result<Option<T>, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Deps) -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
        E: From<Error>,
    {
        self.check_ttl(negative_ttl)?;
        let options = LoadOptions::new(ttl);
        let choose = |v: &Option<T>| if v.is_none() { Ttl::Fixed(negative_ttl) } else { options.ttl };
        self.fetch(key, &options, &choose, load).await
    }

    /// The loop behind every `get_or_load`: `choose` gives the TTL of a
    /// loaded value.
    async fn fetch<T, F, Fut, E>(
        &self,
        key: &str,
        options: &LoadOptions,
        choose: &(dyn Fn(&T) -> Ttl + Sync),
        load: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Deps) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        if let Ttl::Fixed(d) = options.ttl {
            self.check_ttl(d)?;
        }
        let full = self.backend_key(key)?;
        let mut load = Some(load);
        loop {
            let got = match self.ready().await {
                Err(e) => Err(e),
                Ok(()) => {
                    let timer = Timer::start("get");
                    let got = self.inner.backend.get(&full).await.map_err(|e| self.backend_error(e));
                    timer.stop();
                    got
                }
            };
            // a value past its freshness deadline (never an invalidated one:
            // invalidation drops stale entries too), kept for stale-on-error
            let mut stale: Option<T> = None;
            let ticket = match got {
                Ok(Lookup::Hit(bytes)) => match self.decode_fresh::<T>(key, &bytes) {
                    Ok((value, false)) => {
                        self.inner.stats.count(Event::Hit);
                        return Ok(value);
                    }
                    Ok((value, true)) => {
                        if options.while_revalidate.is_some() {
                            match self.inner.flights.join(&full) {
                                // another caller reloads it: serve the old value at once
                                Role::Waiter(_) => {
                                    self.inner.stats.count(Event::Stale);
                                    return Ok(value);
                                }
                                Role::Leader(guard) => {
                                    self.inner.stats.count(Event::Miss);
                                    let Some(load) = load.take() else {
                                        guard.finish(Flight::Failed);
                                        continue;
                                    };
                                    let result = match self.inner.backend.ticket().await {
                                        Ok(ticket) => self.lead(key, &full, options, choose, ticket, load, guard).await,
                                        Err(e) => {
                                            let _ = self.backend_error(e);
                                            guard.finish(Flight::Failed);
                                            self.load_only(key, load).await
                                        }
                                    };
                                    return self.or_stale(result, options.on_error.map(|_| value));
                                }
                            }
                        }
                        if options.on_error.is_some() {
                            stale = Some(value);
                        }
                        self.inner.stats.count(Event::Miss);
                        self.inner.backend.ticket().await.map_err(|e| self.backend_error(e)).ok()
                    }
                    Err(e) => {
                        warn!(error = %e, "discarding undecodable cache entry");
                        self.inner.stats.count(Event::Miss);
                        let _ = self.inner.backend.delete(&full).await;
                        self.inner.backend.ticket().await.map_err(|e| self.backend_error(e)).ok()
                    }
                },
                Ok(Lookup::Miss(ticket)) => {
                    self.inner.stats.count(Event::Miss);
                    Some(ticket)
                }
                Err(e) => {
                    warn!(error = %e, "cache unavailable, loading without caching");
                    self.inner.stats.count(Event::Miss);
                    None
                }
            };
            let Some(ticket) = ticket else {
                // Without a ticket nothing can be stored, and the value could
                // not be vouched for to other callers: load alone.
                let Some(load) = load.take() else { continue };
                let result = self.load_only(key, load).await;
                return self.or_stale(result, stale);
            };
            match self.inner.flights.join(&full) {
                Role::Leader(guard) => {
                    let Some(load) = load.take() else {
                        // Unreachable: only a leader consumes the loader, and it returns.
                        guard.finish(Flight::Failed);
                        continue;
                    };
                    let result = self.lead(key, &full, options, choose, ticket, load, guard).await;
                    return self.or_stale(result, stale);
                }
                Role::Waiter(rx) => {
                    if let Joined::Take(bytes) = flight::wait(rx).await {
                        if let Ok(value) = self.decode::<T>(key, &bytes) {
                            self.inner.stats.count(Event::Hit);
                            return Ok(value);
                        }
                    }
                    // the leader failed (or its value is not ours to take)
                    if let Some(value) = stale {
                        self.inner.stats.count(Event::Stale);
                        return Ok(value);
                    }
                }
            }
        }
    }

    /// A loader's result, or, if it failed and a stale value is at hand
    /// (stale-on-error), that value.
    fn or_stale<T, E>(&self, result: Result<T, E>, stale: Option<T>) -> Result<T, E> {
        match (result, stale) {
            (Err(_), Some(value)) => {
                self.inner.stats.count(Event::Stale);
                debug!("loader failed: serving the stale value (stale-on-error)");
                Ok(value)
            }
            (result, _) => result,
        }
    }

    /// Runs a loader outside single flight, storing nothing.
    async fn load_only<T, F, Fut, E>(&self, key: &str, load: F) -> Result<T, E>
    where
        F: FnOnce(Deps) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.inner.stats.count(Event::Load);
        let deps = Deps::new();
        let span = tracing::debug_span!("matroska.load", key = %Short(key), cached = false);
        let timer = Timer::start("load");
        let value = COLLECTOR.scope(deps.clone(), load(deps.clone())).instrument(span).await;
        timer.stop();
        let value = value?;
        bubble(&deps.to_vec());
        if let Some(reason) = deps.uncacheable() {
            bubble_uncacheable(reason);
        }
        Ok(value)
    }

    #[allow(clippy::too_many_arguments)]
    async fn lead<T, F, Fut, E>(
        &self,
        key: &str,
        full: &str,
        options: &LoadOptions,
        choose: &(dyn Fn(&T) -> Ttl + Sync),
        ticket: Ticket,
        load: F,
        guard: flight::FlightGuard<'_>,
    ) -> Result<T, E>
    where
        T: Serialize,
        F: FnOnce(Deps) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        self.inner.stats.count(Event::Load);
        let deps = Deps::new();
        let span = tracing::debug_span!("matroska.load", key = %Short(key));
        let timer = Timer::start("load");
        let result = COLLECTOR.scope(deps.clone(), load(deps.clone())).instrument(span).await;
        timer.stop();
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                guard.finish(Flight::Failed);
                return Err(e);
            }
        };
        let collected = deps.to_vec();
        bubble(&collected);
        if let Some(reason) = deps.uncacheable() {
            bubble_uncacheable(reason);
            self.inner.stats.count(Event::UncacheableLoad);
            debug!(key = %Short(key), reason, "loaded value not cached: its loader read uncommitted data");
            guard.finish(Flight::Failed);
            return Ok(value);
        }
        let (ttl, fresh_until) = match self.resolve_ttl(key, choose(&value), &collected, options.window()) {
            Ok(t) => t,
            Err(e) => {
                guard.finish(Flight::Failed);
                return Err(e.into());
            }
        };
        let bytes = match self.encode(key, &value, &collected, fresh_until) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "loaded value not cached");
                guard.finish(Flight::Failed);
                return Ok(value);
            }
        };
        guard.storing();
        let stored = match self.put_bytes(full, bytes.clone(), &collected, ttl, Some(ticket)).await {
            Ok(outcome) => outcome == PutOutcome::Stored,
            Err(e) => {
                warn!(error = %e, "loaded value not cached");
                false
            }
        };
        guard.finish(Flight::Done { bytes, stored });
        Ok(value)
    }

    /// What is stored under `key`: its dependencies, size, remaining time
    /// to live and freshness, without counting a read. `None` when nothing
    /// is stored.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::Backend`], [`Error::Decode`] for
    /// bytes that are not a stored entry.
    pub async fn inspect(&self, key: &str) -> Result<Option<EntryInfo>, Error> {
        let full = self.backend_key(key)?;
        let Some((bytes, expires_in)) = self.inner.backend.peek(&full).await.map_err(|e| self.backend_error(e))? else {
            return Ok(None);
        };
        let fail = |reason: &'static str| Error::Decode { key: key.to_owned(), reason: reason.into(), source: None };
        let env = codec::open(&bytes).map_err(|f| match f {
            DecodeFailure::Envelope(reason) => fail(reason),
            DecodeFailure::Codec(e) => {
                Error::Decode { key: key.to_owned(), reason: "the codec rejected the payload".into(), source: Some(e) }
            }
        })?;
        let deps = env.deps().map_err(|_| fail("malformed dependencies"))?;
        let fresh_for = match env.fresh_until() {
            0 => None,
            t => Some(Duration::from_millis(t.saturating_sub(self.inner.clock.unix_millis()))),
        };
        Ok(Some(EntryInfo { deps, size: bytes.len(), expires_in, fresh_for }))
    }
}

/// Splits an invalidation's answer into the positions that took effect, the
/// ones that failed, and the error behind them.
fn split_outcome(outcome: Result<Invalidated, BackendError>, n: usize) -> (Vec<usize>, Vec<usize>, BackendError) {
    match outcome {
        Err(e) => (Vec::new(), (0..n).collect(), e),
        Ok(inv) => {
            let mut failed: Vec<usize> = inv.failed.into_iter().filter(|&i| i < n).collect();
            failed.sort_unstable();
            failed.dedup();
            let done = (0..n).filter(|i| failed.binary_search(i).is_err()).collect();
            let error = inv.error.unwrap_or_else(|| {
                BackendError::new(
                    BackendErrorKind::Protocol,
                    "the backend reported failed dependencies without an error",
                )
            });
            (done, failed, error)
        }
    }
}

/// Retries pending invalidations with backoff (50 ms doubling to 2 s) until
/// none is left or the cache is dropped.
async fn retry_pending<C: Codec>(cache: std::sync::Weak<Inner<C>>) {
    let mut delay = Duration::from_millis(50);
    loop {
        tokio::time::sleep(delay).await;
        let Some(inner) = cache.upgrade() else { return };
        if inner.pending.finish_retry() {
            return;
        }
        let snapshot = inner.pending.snapshot();
        let keys: Vec<String> = snapshot.iter().map(|(k, _)| k.clone()).collect();
        let outcome = inner.backend.invalidate(&keys).await;
        let dropped = outcome.as_ref().map(|i| i.dropped).unwrap_or(0);
        let (done, failed, error) = split_outcome(outcome, keys.len());
        inner.pending.applied(done.iter().map(|&i| &snapshot[i]));
        inner.stats.entries_invalidated.fetch_add(dropped, Ordering::Relaxed);
        if failed.is_empty() {
            debug!(deps = keys.len(), dropped, "failed invalidations applied on retry");
            delay = Duration::from_millis(50);
        } else {
            if error.is_transient() {
                inner.pending.keep(failed.iter().map(|&i| keys[i].as_str()));
            } else {
                tracing::error!(error = %error, "a retried invalidation failed with a non-transient error; dropped");
                inner.pending.applied(failed.iter().map(|&i| &snapshot[i]));
            }
            debug!(error = %error, deps = failed.len(), "retrying failed invalidations later");
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

fn collect<I>(deps: I) -> Vec<Dep>
where
    I: IntoIterator,
    I::Item: Into<Dep>,
{
    let mut v: Vec<Dep> = deps.into_iter().map(Into::into).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Displays at most 64 bytes of a key in traces.
struct Short<'a>(&'a str);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= 64 {
            return f.write_str(self.0);
        }
        let mut end = 64;
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}…({} bytes)", &self.0[..end], self.0.len())
    }
}
