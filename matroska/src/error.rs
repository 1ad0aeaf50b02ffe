//! Error types.

use std::time::Duration;

/// A boxed error from a codec, a backend client or a user extractor.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in a cache operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TTL is zero or above the cache's maximum. Pass a TTL in
    /// `1ms..=max_ttl`, or raise the maximum with `CacheBuilder::max_ttl`.
    #[error("invalid TTL {ttl:?}: it must be greater than zero and at most {max:?} (see CacheBuilder::max_ttl)")]
    InvalidTtl {
        /// The TTL given.
        ttl: Duration,
        /// The largest TTL this cache accepts.
        max: Duration,
    },
    /// [`Ttl::Default`](crate::Ttl::Default) was asked for, but the cache has
    /// no default TTL for this entry (no `CacheBuilder::default_ttl`, and no
    /// `entity_ttl` for what it depends on).
    #[error("no default TTL for key {key:?}: set CacheBuilder::default_ttl or entity_ttl, or pass a TTL")]
    NoDefaultTtl {
        /// The key.
        key: String,
    },
    /// The key is empty or longer than the cache accepts.
    #[error("invalid cache key ({len} bytes): {reason}")]
    InvalidKey {
        /// The key's length in bytes.
        len: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The encoded value is larger than the configured maximum; nothing was sent.
    #[error("value for key {key:?} is {size} bytes, above the maximum of {max} (see CacheBuilder::max_value_bytes)")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The encoded size.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// The value could not be encoded.
    #[error("cannot encode the value for key {key:?}")]
    Encode {
        /// The key.
        key: String,
        /// The codec's error.
        #[source]
        source: BoxError,
    },
    /// The stored value could not be decoded (foreign bytes, another format
    /// version, or a different type). `get_or_load` treats it as a miss and
    /// replaces it.
    #[error("cannot decode the value stored under key {key:?}: {reason}")]
    Decode {
        /// The key.
        key: String,
        /// What was wrong.
        reason: String,
        /// The codec's error, if it was the codec that failed.
        #[source]
        source: Option<BoxError>,
    },
    /// A scope rejected a condition or failed to extract parameters.
    #[error(transparent)]
    Scope(#[from] crate::scope::ScopeError),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// An unconditional [`put`](crate::Cache::put) was not stored: a
    /// concurrent invalidation of one of its dependencies won (a Redis
    /// Cluster marks a generation dead while its put is between its steps),
    /// or one of its dependencies has an invalidation pending that the
    /// backend has not confirmed yet. Nothing is stored; the value may be
    /// stale, so put it again only after reloading it.
    #[error("the value for key {key:?} was not stored: {reason}")]
    NotStored {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// Invalidating some dependencies failed; every other dependency of the
    /// call took full effect. Those that failed transiently are kept and
    /// invalidated again (see [`Cache::invalidate`](crate::Cache::invalidate)).
    #[error("invalidating {} of the dependencies failed ({}): {source}", failed.len(), if *kept { "kept for retry" } else { "not retried" })]
    Invalidation {
        /// The dependencies whose invalidation failed.
        failed: Vec<crate::dep::Dep>,
        /// Whether they are kept and invalidated again until that succeeds
        /// (transient failures, within
        /// [`max_pending_invalidations`](crate::CacheBuilder::max_pending_invalidations)).
        kept: bool,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// A builder was given a setting it cannot work with.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Error {
    /// Whether retrying the same operation later may succeed (a backend that is
    /// unreachable or timed out).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Backend(e) | Error::Invalidation { source: e, .. } => e.is_transient(),
            _ => false,
        }
    }
}

/// A builder setting out of range. The message names the setting and its
/// accepted range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    setting: &'static str,
    reason: String,
}

impl ConfigError {
    /// A new configuration error for the builder method `setting`.
    pub fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        ConfigError { setting, reason: reason.into() }
    }

    /// The builder method whose value is wrong.
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl From<ConfigError> for BackendError {
    fn from(e: ConfigError) -> Self {
        BackendError::new(BackendErrorKind::Config, e.to_string()).with_source(e)
    }
}

/// What kind of backend failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The backend could not be reached (connection refused, dropped, cluster
    /// slot moving). Transient.
    Unavailable,
    /// The backend did not answer in time. Transient: the operation may or may
    /// not have taken effect.
    Timeout,
    /// A key under the cache's prefix holds data this library did not write
    /// (wrong Redis type, malformed index).
    ForeignData,
    /// The backend answered something this library does not understand.
    Protocol,
    /// The backend refused the request (authentication, configuration, script
    /// error).
    Refused,
    /// The backend's configuration is unsafe or out of range (a builder
    /// setting, or a server setting such as an eviction policy that could
    /// drop the bookkeeping invalidation relies on). Not transient.
    Config,
    /// The server is out of memory and refuses writes (Redis `OOM` under
    /// `maxmemory-policy noeviction`). Transient: it may succeed once
    /// entries expire or are invalidated.
    OutOfMemory,
}

/// A backend failure, with the key it concerns when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?} backend error{}: {message}", key.as_ref().map(|k| format!(" on key {k:?}")).unwrap_or_default())]
pub struct BackendError {
    kind: BackendErrorKind,
    message: String,
    key: Option<String>,
    #[source]
    source: Option<BoxError>,
}

impl BackendError {
    /// A new backend error.
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        BackendError { kind, message: message.into(), key: None, source: None }
    }

    /// Attaches the key the error concerns.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Attaches the underlying error.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// The key concerned, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, BackendErrorKind::Unavailable | BackendErrorKind::Timeout | BackendErrorKind::OutOfMemory)
    }
}
