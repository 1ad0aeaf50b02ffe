//! The byte-level storage interface and its implementations.
//!
//! A [`Backend`] stores opaque bytes under string keys, keeps a reverse index
//! from dependency keys to entries, and enforces stale-set protection with
//! [`Ticket`]s. Every method is shaped so that a remote backend can do it in one
//! round trip. Backends never see typed values: encoding is the job of
//! [`Cache`](crate::Cache).
//!
//! # Contract
//!
//! * `get` returns the value, or a miss together with a [`Ticket`] issued at the
//!   time of the miss.
//! * `put` with a ticket is refused ([`PutOutcome::Refused`]) if any of its
//!   dependencies was invalidated after the ticket was issued, or if the ticket
//!   is older than the backend's tombstone window. Refusal and storage are
//!   atomic with respect to `invalidate`.
//! * `invalidate` returns only once every entry depending on one of the
//!   dependencies is unreadable, and records tombstones so that puts carrying
//!   older tickets are refused. A dependency whose invalidation failed (a
//!   dead node, foreign data under its key) is reported in
//!   [`Invalidated::failed`]; it must not keep the others from taking full
//!   effect. `Err` means nothing is known to have taken effect (every
//!   dependency counts as failed; some may still have been applied).
//! * Every step is safe to repeat: the [`Cache`](crate::Cache) invalidates a
//!   failed dependency again later.
//! * The reverse index never holds more than the live entries, plus what is
//!   pruned lazily on the next touch of that dependency.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::BackendError;

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

/// A point in the backend's order of events, issued with a miss. A put carrying
/// it is refused if one of its dependencies was invalidated later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

impl Ticket {
    /// A ticket from a backend's own clock or sequence.
    pub const fn new(value: u64) -> Self {
        Ticket(value)
    }

    /// The raw value.
    pub const fn value(self) -> u64 {
        self.0
    }
}

/// The answer to [`Backend::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The stored bytes.
    Hit(Bytes),
    /// No entry; the ticket to pass to the put that follows the load.
    Miss(Ticket),
}

/// The answer to [`Backend::put`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum PutOutcome {
    /// The entry was stored.
    Stored,
    /// The entry was not stored: a dependency was invalidated after the ticket
    /// was issued, or the ticket was too old. The loaded data may be stale.
    Refused,
}

/// The answer to [`Backend::invalidate`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Invalidated {
    /// Entries dropped.
    pub dropped: u64,
    /// Positions (in the request) of the dependencies whose invalidation
    /// failed; every other dependency took full effect.
    pub failed: Vec<usize>,
    /// The first error behind `failed` (`None` when nothing failed).
    pub error: Option<BackendError>,
}

impl Invalidated {
    /// Every dependency took effect; `dropped` entries were dropped.
    pub fn complete(dropped: u64) -> Self {
        Invalidated { dropped, failed: Vec::new(), error: None }
    }

    /// Some dependencies (`failed`, positions in the request) failed with
    /// `error`; the others took effect.
    pub fn partial(dropped: u64, failed: Vec<usize>, error: BackendError) -> Self {
        Invalidated { dropped, failed, error: Some(error) }
    }

    /// Whether every dependency took effect.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// One entry to store.
#[derive(Clone, Debug)]
pub struct PutRequest<'a> {
    /// The backend key (already prefixed by the cache).
    pub key: &'a str,
    /// The encoded value.
    pub value: Bytes,
    /// The encoded dependency keys (already prefixed by the cache), deduplicated.
    pub deps: &'a [String],
    /// Time to live, at least one millisecond.
    pub ttl: Duration,
    /// The ticket of the miss that preceded the load, if any.
    pub ticket: Option<Ticket>,
}

/// A byte-level cache store with a dependency index. See the [module
/// docs](self) for the contract every implementation keeps.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Reads an entry; on a miss, issues a ticket.
    async fn get(&self, key: &str) -> Result<Lookup, BackendError>;

    /// Whether an entry exists.
    async fn has(&self, key: &str) -> Result<bool, BackendError>;

    /// Stores an entry with its dependencies (replacing any previous entry and
    /// its registrations), unless its ticket is refused.
    async fn put(&self, request: PutRequest<'_>) -> Result<PutOutcome, BackendError>;

    /// Removes an entry and its registrations. Returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, BackendError>;

    /// Drops every entry depending on any of `deps` and records tombstones for
    /// them. Dependencies that failed are reported in the answer; `Err` means
    /// the call as a whole failed.
    async fn invalidate(&self, deps: &[String]) -> Result<Invalidated, BackendError>;

    /// Issues a ticket without reading anything (used after a corrupt entry was
    /// discarded).
    async fn ticket(&self) -> Result<Ticket, BackendError>;

    /// Removes every entry whose key starts with `prefix` (every entry for an
    /// empty prefix), and from now on refuses puts carrying a ticket issued
    /// before this call (whatever their key: a clear is rare, and refusing
    /// a put only leaves a value uncached). Returns the number of entries
    /// removed.
    ///
    /// The default implementation returns a
    /// [`Refused`](crate::BackendErrorKind::Refused) error: a backend that
    /// cannot enumerate its entries cannot be cleared.
    async fn clear(&self, prefix: &str) -> Result<u64, BackendError> {
        let _ = prefix;
        Err(BackendError::new(crate::BackendErrorKind::Refused, "this backend does not support clear"))
    }

    /// Reads an entry for inspection: its bytes and, if the backend knows,
    /// how long until it expires. Issues no ticket and counts no read.
    ///
    /// The default implementation reads it with [`get`](Self::get) and does
    /// not tell the expiry.
    async fn peek(&self, key: &str) -> Result<Option<(Bytes, Option<std::time::Duration>)>, BackendError> {
        Ok(match self.get(key).await? {
            Lookup::Hit(bytes) => Some((bytes, None)),
            Lookup::Miss(_) => None,
        })
    }
}
