//! How long entries live, and how fresh a loaded value must be.

use std::time::Duration;

/// How long an entry lives: a fixed time, or the cache's default for what
/// the entry depends on ([`CacheBuilder::default_ttl`],
/// [`CacheBuilder::entity_ttl`]).
///
/// Every method taking a TTL takes `impl Into<Ttl>`, so a [`Duration`] works
/// as before.
///
/// [`CacheBuilder::default_ttl`]: super::CacheBuilder::default_ttl
/// [`CacheBuilder::entity_ttl`]: super::CacheBuilder::entity_ttl
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// This long (within `1 ms ..= max_ttl`).
    Fixed(Duration),
    /// The shortest [`entity_ttl`](super::CacheBuilder::entity_ttl) among
    /// the entities the entry depends on (by their rows, lists or ids),
    /// else the cache's [`default_ttl`](super::CacheBuilder::default_ttl).
    Default,
}

impl From<Duration> for Ttl {
    fn from(d: Duration) -> Self {
        Ttl::Fixed(d)
    }
}

/// Options of [`Cache::get_or_load_with`](super::Cache::get_or_load_with).
///
/// Freshness: an entry is *fresh* for its TTL. With a staleness window, it
/// is kept that much longer, *stale*, and may be served in two cases only:
///
/// * **stale-while-revalidate**: while one caller reloads it, other callers
///   get the stale value at once instead of waiting;
/// * **stale-on-error**: when the loader fails, its caller gets the stale
///   value instead of the error.
///
/// Either way an **invalidated** entry is never served: invalidation drops
/// stale entries as it drops fresh ones, so a stale value is one nothing it
/// depends on has changed since it was stored, only older than its TTL.
/// Plain [`get`](super::Cache::get) and [`lookup`](super::Cache::lookup)
/// never return a stale value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct LoadOptions {
    pub(crate) ttl: Ttl,
    pub(crate) while_revalidate: Option<Duration>,
    pub(crate) on_error: Option<Duration>,
}

impl LoadOptions {
    /// Entries live `ttl`; no stale values.
    pub fn new(ttl: impl Into<Ttl>) -> Self {
        LoadOptions { ttl: ttl.into(), while_revalidate: None, on_error: None }
    }

    /// Serves a value at most `max_staleness` past its TTL while one caller
    /// reloads it (refresh-ahead for the others).
    pub fn stale_while_revalidate(mut self, max_staleness: Duration) -> Self {
        self.while_revalidate = Some(max_staleness);
        self
    }

    /// Serves a value at most `max_staleness` past its TTL when the loader
    /// fails.
    pub fn stale_on_error(mut self, max_staleness: Duration) -> Self {
        self.on_error = Some(max_staleness);
        self
    }

    /// How long entries are kept past their TTL (0 without stale serving).
    pub(crate) fn window(&self) -> Duration {
        Ord::max(self.while_revalidate.unwrap_or_default(), self.on_error.unwrap_or_default())
    }
}

/// What is stored under a key, from [`Cache::inspect`](super::Cache::inspect).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// The entry's dependencies.
    pub deps: Vec<crate::Dep>,
    /// Its stored size in bytes (the envelope: value and dependencies).
    pub size: usize,
    /// How long until the backend drops it, if the backend tells.
    pub expires_in: Option<Duration>,
    /// How long it stays fresh (`Some(0)`: stale, served only as
    /// [`LoadOptions`] allow), if it was stored with a staleness window.
    pub fresh_for: Option<Duration>,
}
