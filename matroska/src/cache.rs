//! The [`Cache`] facade.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, trace, warn, Instrument};

use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, Lookup, PutOutcome, PutRequest, Ticket};
use crate::codec::{self, Codec, DecodeFailure, MessagePack};
use crate::dep::{encode_parts, Dep};
use crate::error::Error;

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
}

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
        }
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
    pub fn build(self) -> Cache<C> {
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
                flights: Mutex::new(HashMap::new()),
                stats: Counters::default(),
                pending: Mutex::new(Pending::default()),
                max_pending: self.max_pending,
            }),
        }
    }
}

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
    flights: Mutex<HashMap<String, Arc<watch::Sender<Flight>>>>,
    stats: Counters,
    pending: Mutex<Pending>,
    max_pending: usize,
}

/// Invalidations that failed with a transient error (backend keys), applied
/// again with the next invalidation and by a background retry until they
/// succeed.
#[derive(Default)]
struct Pending {
    deps: std::collections::BTreeSet<String>,
    retrying: bool,
}

/// The state of one in-flight load, shared with the tasks waiting for it.
#[derive(Clone)]
enum Flight {
    Running,
    Done(Bytes),
    Failed,
}

/// Dependencies collected by a loader. Cloning shares the same list.
///
/// A loader receives one; it adds the dependencies of what it loaded. Values
/// obtained through any cache inside the loader (hits and loads) add their
/// dependencies to it by themselves.
#[derive(Clone, Debug, Default)]
pub struct Deps(Arc<Mutex<Vec<Dep>>>);

impl Deps {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one dependency.
    pub fn push(&self, dep: impl Into<Dep>) {
        lock(&self.0).push(dep.into());
    }

    /// Adds several dependencies.
    pub fn extend<I>(&self, deps: I)
    where
        I: IntoIterator,
        I::Item: Into<Dep>,
    {
        lock(&self.0).extend(deps.into_iter().map(Into::into));
    }

    /// The dependencies collected so far, sorted and deduplicated.
    pub fn to_vec(&self) -> Vec<Dep> {
        let mut v = lock(&self.0).clone();
        v.sort_unstable();
        v.dedup();
        v
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

tokio::task_local! {
    /// The dependency collector of the innermost running loader.
    static COLLECTOR: Deps;
}

/// Adds `deps` to the enclosing loader's collection, if any (Russian doll).
fn bubble(deps: &[Dep]) {
    let _ = COLLECTOR.try_with(|c| c.extend(deps.iter().cloned()));
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

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
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
        }
    }

    /// A cache over `backend` with the other defaults.
    pub fn new(backend: impl Backend) -> Self {
        Self::builder().backend(backend).build()
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

    fn backend_error(&self, e: crate::error::BackendError) -> Error {
        bump(&self.inner.stats.backend_errors);
        Error::Backend(e)
    }

    /// Decodes a stored value; inside a loader, bubbles its dependencies.
    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, Error> {
        let fail = |f: DecodeFailure| {
            bump(&self.inner.stats.decode_errors);
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
        let value = env.value(&self.inner.codec).map_err(fail)?;
        // Dependencies are only needed to bubble into an enclosing loader.
        if COLLECTOR.try_with(|_| ()).is_ok() {
            bubble(&env.deps().map_err(fail)?);
        }
        Ok(value)
    }

    fn encode<T: Serialize + ?Sized>(&self, key: &str, value: &T, deps: &[Dep]) -> Result<Bytes, Error> {
        let bytes = codec::encode(&self.inner.codec, value, deps)
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
        let lookup = self.inner.backend.get(&full).await.map_err(|e| self.backend_error(e))?;
        trace!(key = %Short(key), hit = matches!(lookup, Lookup::Hit(_)), "matroska.get");
        match lookup {
            Lookup::Hit(bytes) => {
                let value = self.decode(key, &bytes)?;
                bump(&self.inner.stats.hits);
                Ok(Fetched::Hit(value))
            }
            Lookup::Miss(ticket) => {
                bump(&self.inner.stats.misses);
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
        self.inner.backend.has(&full).await.map_err(|e| self.backend_error(e))
    }

    /// Stores a value with its dependencies, unconditionally (the original's
    /// manual style). Prefer [`get_or_load`](Self::get_or_load), or
    /// [`lookup`](Self::lookup) + [`put_with_ticket`](Self::put_with_ticket),
    /// which refuse data loaded before a concurrent invalidation.
    ///
    /// # Errors
    /// [`Error::InvalidTtl`], [`Error::InvalidKey`], [`Error::Encode`],
    /// [`Error::ValueTooLarge`], [`Error::Backend`].
    pub async fn put<T, I>(&self, key: &str, value: &T, deps: I, ttl: Duration) -> Result<(), Error>
    where
        T: Serialize + ?Sized,
        I: IntoIterator,
        I::Item: Into<Dep>,
    {
        let outcome = self.put_inner(key, value, collect(deps), ttl, None).await?;
        debug_assert_eq!(outcome, PutOutcome::Stored);
        Ok(())
    }

    /// Stores a value unless one of its dependencies was invalidated after
    /// `ticket` was issued (or the ticket is older than the backend's window).
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub async fn put_with_ticket<T, I>(
        &self,
        key: &str,
        value: &T,
        deps: I,
        ttl: Duration,
        ticket: Ticket,
    ) -> Result<PutOutcome, Error>
    where
        T: Serialize + ?Sized,
        I: IntoIterator,
        I::Item: Into<Dep>,
    {
        self.put_inner(key, value, collect(deps), ttl, Some(ticket)).await
    }

    async fn put_inner<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        deps: Vec<Dep>,
        ttl: Duration,
        ticket: Option<Ticket>,
    ) -> Result<PutOutcome, Error> {
        self.check_ttl(ttl)?;
        let full = self.backend_key(key)?;
        let bytes = self.encode(key, value, &deps)?;
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
        let backend_deps = self.backend_deps(deps);
        let req = PutRequest { key: full, value, deps: &backend_deps, ttl, ticket };
        let outcome = self.inner.backend.put(req).await.map_err(|e| self.backend_error(e))?;
        trace!(key = %Short(full), deps = deps.len(), ttl_ms = ttl.as_millis() as u64, ?outcome, "matroska.put");
        match outcome {
            PutOutcome::Stored => bump(&self.inner.stats.puts),
            PutOutcome::Refused => {
                bump(&self.inner.stats.refused_puts);
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
            bump(&self.inner.stats.deletes);
        }
        Ok(existed)
    }

    /// Drops every entry depending on any of `deps`, in one backend call, and
    /// makes puts of data loaded before this call fail. Returns the number of
    /// entries dropped.
    ///
    /// If the backend fails with a transient error (unreachable, timed out),
    /// the call returns that error and the dependencies are kept (bounded by
    /// [`CacheBuilder::max_pending_invalidations`]): they are invalidated
    /// again with the next `invalidate` and by a background task (on the
    /// tokio runtime the call ran on) until that succeeds, so an
    /// invalidation that failed during an outage still takes effect once the
    /// backend is back.
    ///
    /// # Errors
    /// [`Error::Backend`]: the invalidation may not have taken full effect;
    /// it never reports success it did not have.
    pub async fn invalidate<I>(&self, deps: I) -> Result<u64, Error>
    where
        I: IntoIterator,
        I::Item: Into<Dep>,
    {
        let deps = collect(deps);
        if deps.is_empty() {
            return Ok(0);
        }
        let mut backend_deps = self.backend_deps(&deps);
        // earlier invalidations that failed travel with this one
        let retried: Vec<String> = lock(&self.inner.pending).deps.iter().cloned().collect();
        backend_deps.extend(retried.iter().cloned());
        backend_deps.sort_unstable();
        backend_deps.dedup();
        let span = tracing::debug_span!("matroska.invalidate", deps = deps.len(), retried = retried.len());
        match self.inner.backend.invalidate(&backend_deps).instrument(span).await {
            Ok(dropped) => {
                if !retried.is_empty() {
                    let mut pending = lock(&self.inner.pending);
                    for d in &retried {
                        pending.deps.remove(d);
                    }
                }
                bump(&self.inner.stats.invalidations);
                self.inner.stats.entries_invalidated.fetch_add(dropped, Ordering::Relaxed);
                debug!(deps = deps.len(), dropped, "invalidated");
                Ok(dropped)
            }
            Err(e) => {
                if e.is_transient() {
                    self.keep_for_retry(backend_deps);
                }
                Err(self.backend_error(e))
            }
        }
    }

    /// Keeps dependencies whose invalidation failed transiently, and starts the
    /// background retry if none runs (and a tokio runtime is at hand).
    fn keep_for_retry(&self, deps: Vec<String>) {
        let mut pending = lock(&self.inner.pending);
        for d in deps {
            if pending.deps.len() >= self.inner.max_pending {
                tracing::error!(
                    max = self.inner.max_pending,
                    "too many failed invalidations pending; not keeping more for retry"
                );
                break;
            }
            pending.deps.insert(d);
        }
        if pending.retrying || pending.deps.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        pending.retrying = true;
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(retry_pending(weak));
    }

    /// The number of dependencies whose invalidation failed with a transient
    /// error and is waiting to be retried.
    pub fn pending_invalidations(&self) -> usize {
        lock(&self.inner.pending).deps.len()
    }

    /// Returns the cached value, or runs `load`, stores its result with the
    /// dependencies it recorded, and returns it.
    ///
    /// * **Single flight:** concurrent misses of one key in this process run
    ///   one loader; the others wait for its value. If it fails, each waiter
    ///   tries again.
    /// * **Stale-set protection:** the value is stored only if none of its
    ///   dependencies was invalidated since the miss; otherwise it is still
    ///   returned, just not cached.
    /// * **Nesting:** values read through any cache inside `load` add their
    ///   dependencies to this entry (only within the loader's own task: work
    ///   spawned onto other tasks does not report back).
    /// * **Failures:** an unreachable backend or an undecodable stored value
    ///   never fails the call: the loader runs and its value is returned; the
    ///   error is counted and traced. An undecodable value is replaced.
    ///
    /// # Errors
    /// The loader's error, or [`Error::InvalidKey`] / [`Error::InvalidTtl`]
    /// converted into `E`.
    pub async fn get_or_load<T, F, Fut, E>(&self, key: &str, ttl: Duration, load: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Deps) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        self.check_ttl(ttl)?;
        let full = self.backend_key(key)?;
        let mut load = Some(load);
        loop {
            let ticket = match self.inner.backend.get(&full).await {
                Ok(Lookup::Hit(bytes)) => match self.decode::<T>(key, &bytes) {
                    Ok(value) => {
                        bump(&self.inner.stats.hits);
                        return Ok(value);
                    }
                    Err(e) => {
                        warn!(error = %e, "discarding undecodable cache entry");
                        bump(&self.inner.stats.misses);
                        let _ = self.inner.backend.delete(&full).await;
                        self.inner.backend.ticket().await.map_err(|e| self.backend_error(e)).ok()
                    }
                },
                Ok(Lookup::Miss(ticket)) => {
                    bump(&self.inner.stats.misses);
                    Some(ticket)
                }
                Err(e) => {
                    let e = self.backend_error(e);
                    warn!(error = %e, "cache unavailable, loading without caching");
                    bump(&self.inner.stats.misses);
                    None
                }
            };

            let role = {
                let mut flights = lock(&self.inner.flights);
                match flights.get(&full) {
                    Some(tx) => Err(tx.subscribe()),
                    None => {
                        let (tx, _) = watch::channel(Flight::Running);
                        let tx = Arc::new(tx);
                        flights.insert(full.clone(), Arc::clone(&tx));
                        Ok(tx)
                    }
                }
            };
            match role {
                Ok(tx) => {
                    let guard = FlightGuard { cache: &self.inner.flights, key: &full, tx };
                    let Some(load) = load.take() else {
                        // Unreachable: only a leader consumes the loader, and it returns.
                        guard.finish(Flight::Failed);
                        continue;
                    };
                    return self.lead(key, &full, ttl, ticket, load, guard).await;
                }
                Err(mut rx) => {
                    let outcome = loop {
                        let state = rx.borrow_and_update().clone();
                        match state {
                            Flight::Running => {
                                if rx.changed().await.is_err() {
                                    break Flight::Failed;
                                }
                            }
                            other => break other,
                        }
                    };
                    if let Flight::Done(bytes) = outcome {
                        if let Ok(value) = self.decode::<T>(key, &bytes) {
                            bump(&self.inner.stats.hits);
                            return Ok(value);
                        }
                    }
                    // The leader failed or was cancelled: try again.
                }
            }
        }
    }

    async fn lead<T, F, Fut, E>(
        &self,
        key: &str,
        full: &str,
        ttl: Duration,
        ticket: Option<Ticket>,
        load: F,
        guard: FlightGuard<'_>,
    ) -> Result<T, E>
    where
        T: Serialize,
        F: FnOnce(Deps) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        bump(&self.inner.stats.loads);
        let deps = Deps::new();
        let span = tracing::debug_span!("matroska.load", key = %Short(key));
        let result = COLLECTOR.scope(deps.clone(), load(deps.clone())).instrument(span).await;
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                guard.finish(Flight::Failed);
                return Err(e);
            }
        };
        let deps = deps.to_vec();
        bubble(&deps);
        let bytes = match self.encode(key, &value, &deps) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "loaded value not cached");
                guard.finish(Flight::Failed);
                return Ok(value);
            }
        };
        if let Some(ticket) = ticket {
            if let Err(e) = self.put_bytes(full, bytes.clone(), &deps, ttl, Some(ticket)).await {
                warn!(error = %e, "loaded value not cached");
            }
        }
        guard.finish(Flight::Done(bytes));
        Ok(value)
    }
}

/// Retries pending invalidations with backoff (50 ms doubling to 2 s) until
/// none is left or the cache is dropped.
async fn retry_pending<C: Codec>(cache: std::sync::Weak<Inner<C>>) {
    let mut delay = Duration::from_millis(50);
    loop {
        tokio::time::sleep(delay).await;
        let Some(inner) = cache.upgrade() else { return };
        let batch: Vec<String> = {
            let mut pending = lock(&inner.pending);
            if pending.deps.is_empty() {
                pending.retrying = false;
                return;
            }
            pending.deps.iter().cloned().collect()
        };
        match inner.backend.invalidate(&batch).await {
            Ok(dropped) => {
                let mut pending = lock(&inner.pending);
                for d in &batch {
                    pending.deps.remove(d);
                }
                inner.stats.entries_invalidated.fetch_add(dropped, Ordering::Relaxed);
                debug!(deps = batch.len(), dropped, "failed invalidations applied on retry");
                delay = Duration::from_millis(50);
            }
            Err(e) => {
                debug!(error = %e, deps = batch.len(), "retrying failed invalidations later");
                delay = (delay * 2).min(Duration::from_secs(2));
            }
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

/// Removes a flight from the table when its leader finishes or is dropped.
struct FlightGuard<'a> {
    cache: &'a Mutex<HashMap<String, Arc<watch::Sender<Flight>>>>,
    key: &'a str,
    tx: Arc<watch::Sender<Flight>>,
}

impl FlightGuard<'_> {
    fn finish(self, state: Flight) {
        self.tx.send_replace(state);
        // Drop removes the table entry.
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut flights = lock(self.cache);
        if flights.get(self.key).is_some_and(|tx| Arc::ptr_eq(tx, &self.tx)) {
            flights.remove(self.key);
        }
        drop(flights);
        if matches!(*self.tx.borrow(), Flight::Running) {
            self.tx.send_replace(Flight::Failed);
        }
    }
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
