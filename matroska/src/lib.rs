//! A cache whose entries know what they were built from.
//!
//! `put` stores a value together with its *dependencies* (an object id, a tag,
//! the primary key of a database row, or a *scope condition* such as "published
//! articles of category X"); `invalidate(dep)` drops every entry that depends on
//! `dep`, wherever it is stored.
//!
//! ```
//! use std::time::Duration;
//! use matroska::{Cache, Dep, MemoryBackend};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), matroska::Error> {
//! let cache = Cache::builder()
//!     .backend(MemoryBackend::builder().max_entries(100_000).build()?)
//!     .prefix("app")
//!     .build()?;
//!
//! cache.put("articles-list", &vec!["a", "b"], [Dep::id("article", 1), Dep::id("author", 1)], Duration::from_secs(60)).await?;
//! assert!(cache.get::<Vec<String>>("articles-list").await?.is_some());
//!
//! cache.invalidate([Dep::id("author", 1)]).await?;
//! assert!(cache.get::<Vec<String>>("articles-list").await?.is_none());
//!
//! // load on miss; the loader records what it read
//! let list: Vec<u32> = cache
//!     .get_or_load("articles:python", Duration::from_secs(60), |deps| async move {
//!         deps.push(Dep::id("article", 7));
//!         Ok::<_, matroska::Error>(vec![7])
//!     })
//!     .await?;
//! assert_eq!(list, vec![7]);
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! * **No surviving stale entry.** Once `invalidate` returns, no entry depending
//!   on its dependencies is readable, and a [`Cache::get_or_load`] whose load
//!   began before it cannot store its (possibly stale) result: misses carry a
//!   [`Ticket`], and puts with tickets older than an invalidation of one of
//!   their dependencies are refused.
//! * **No lost invalidation.** `invalidate` succeeds fully or returns an error;
//!   dependencies whose invalidation failed transiently are kept (bounded) and
//!   invalidated again once the backend answers.
//! * **Bounded memory.** Reverse indexes hold only live entries, pruned lazily.
//! * **Injective keys.** Distinct dependencies never share a key ([`dep`]).
//! * **Clear errors.** Bad input is a typed [`Error`], never a panic.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backend;
mod cache;
pub mod clock;
pub mod codec;
pub mod dep;
mod error;
pub mod scope;

pub use backend::memory::MemoryBackend;
#[cfg(feature = "redis")]
pub use backend::redis::RedisBackend;
pub use backend::{Backend, Invalidated, Lookup, PutOutcome, PutRequest, Ticket};
pub use cache::{
    mark_uncacheable, read_in_transaction, record_request, Cache, CacheBuilder, Deps, EntryInfo, Fetched, LoadOptions,
    Recovery, RequestStats, Stats, TransactionToken, Ttl, DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_PENDING_INVALIDATIONS,
    DEFAULT_MAX_TTL, DEFAULT_MAX_VALUE_BYTES, MAX_TTL_JITTER, MAX_TTL_LIMIT,
};
pub use codec::{Codec, Json, MessagePack};
pub use dep::{Condition, Dep, Dependency, Id, InvalidateAll, NTag, Params, PrimaryKey, Tag, Value};
pub use error::{BackendError, BackendErrorKind, BoxError, ConfigError, Error};
pub use scope::{Mode, ScopeError, Scopes};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
