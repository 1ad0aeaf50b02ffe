//! The Redis backend: several application processes sharing one cache.
//!
//! Built on redis-rs with tokio: a [`ConnectionManager`] (one multiplexed
//! connection that reconnects by itself) and Lua scripts run with `EVALSHA`
//! (reloaded on `NOSCRIPT`, for example after a server restart). Redis 7.0
//! or later (or Valkey) is required: the scripts declare their flags.
//!
//! ```no_run
//! use std::time::Duration;
//! use matroska::{Cache, RedisBackend};
//!
//! # async fn demo() -> Result<(), matroska::BackendError> {
//! let backend = RedisBackend::builder("redis://127.0.0.1:6379/")
//!     .namespace("myapp")
//!     .response_timeout(Duration::from_millis(500))
//!     .build()
//!     .await?;
//! let cache = Cache::new(backend);
//! # let _ = cache; Ok(()) }
//! ```
//!
//! # Round trips and limits
//!
//! On a single node, `get` (a hit, or a miss with its ticket) is one plain
//! command (with `TIME` pipelined every 200 ms), `put` with any number of
//! dependencies (ticket check included) is one script call, and
//! `invalidate` of up to a [chunk](RedisBackendBuilder::chunk_size) of
//! dependencies (1000 by default) is one script call. Beyond that:
//!
//! * `invalidate` of more dependencies sends one call per chunk of them, all
//!   at once (pipelined on the connection: still about one round trip);
//! * an `invalidate` whose dependents exceed a chunk drains the larger
//!   indexes in further calls, each dropping up to a chunk of dependents
//!   across as many drained indexes as it reaches, so that no script blocks
//!   Redis for long: invalidating `K` dependencies with few dependents each
//!   costs about `K / chunk` calls, not `K`;
//! * a `put` that overwrites an entry whose *previous* dependencies are not all
//!   among the new ones, and a `delete` of an entry with dependencies, make a
//!   second call that unregisters the previous generation (see the protocol).
//!
//! A put takes at most [`MAX_DEPENDENCIES`] (100,000) dependencies and a TTL
//! of at most [`MAX_TTL`] (100 years); more is a
//! [`Refused`](BackendErrorKind::Refused) error naming the key. A put's
//! script costs the server 2–4 µs per dependency (measured on Redis 7.0: 100,000
//! dependencies, 0.24 s without a ticket and 0.43 s with one), and it is
//! atomic, so it cannot be split: a single node serves nothing else
//! meanwhile. Dropping such an entry removes it from its other indexes in
//! the same call (0.35–0.39 s for 100,000). Keep entries with tens of
//! thousands of dependencies rare. On a Redis Cluster the per-dependency
//! steps go in [batched calls](#batched-calls), one per master and chunk,
//! so no call holds a node for long.
//!
//! # Layout
//!
//! With `N` the [namespace](RedisBackendBuilder::namespace) (`%`, `{` and `}`
//! percent-encoded), `K` an entry key and `D` a dependency key as the
//! [`Cache`](crate::Cache) passes them (any UTF-8), and `h(x)` sixteen hex
//! digits of the 64-bit FNV-1a hash of `x`:
//!
//! | key | type | contents | expiry |
//! |---|---|---|---|
//! | `N:{h(K)}:e:K` | hash | `v` value, `g` generation, `d` the entry's index keys (MessagePack) | the entry's TTL |
//! | `N:{h(D)}:i:D` | sorted set | members `generation ‖ entry key`, scored by the entry's expiry (ms, server time) | none |
//! | `N:{h(D)}:t:D` | string | server time (µs) of the last invalidation of `D` | none |
//! | `N:{h(D)}:x:D` | sorted set | an index being drained by a chunked invalidation | none |
//! | `N:{h(K)}:m:K` | sorted set | cluster only: dead generations of `K` (score: until when, ms) | none |
//! | `N:{h("")}:c:` | string | single node: server time (µs) of the last [`clear`](Backend::clear) | none |
//! | `N:{s}:c:` | string | cluster: the same, per hash slot (`s`: sixteen hex digits that hash to the slot) | none |
//!
//! The braces are a Redis Cluster hash tag chosen by this backend: an entry's
//! keys share a slot, and so do a dependency's index, tombstone and drain key,
//! whatever braces the names themselves contain. Only entries have an expiry;
//! everything else is *bookkeeping* (see [eviction](#eviction) for why, and
//! [the sweep](#bookkeeping-and-the-sweep) for how it stays bounded).
//!
//! Every key a single-node script reads or writes is passed in `KEYS`, with
//! two exceptions: the invalidation follows the index members to the entries
//! they name (that is what makes it one round trip), and the batched scripts
//! (clear, sweep) take keys found by `SCAN` as arguments. On a cluster, keys
//! declared in `KEYS` must share one slot, so the batched scripts take their
//! keys as arguments and Redis checks that each is served by the node the
//! call was sent to (see [batched calls](#batched-calls)).
//!
//! # Protocol
//!
//! * **Generations.** Each put draws a random 64-bit generation, stored in the
//!   entry (`g`) and prefixed to its index members. Everything that removes a
//!   registration or drops an entry names the generation, so a late cleanup
//!   never removes a newer registration of the same key, and invalidating a
//!   dependency that an *older* version of a key had never drops the newer
//!   version that no longer depends on it.
//! * **get**: a plain `HGET v` (no script: Lua would halve the throughput of
//!   concurrent hits). A miss's ticket is Redis server time in µs: the
//!   backend pipelines `TIME` with the `HGET` every 200 ms and, in between,
//!   issues a *lower bound* of the server's clock: the last reading plus the
//!   local monotonic time elapsed since its reply arrived, minus 100 µs plus
//!   0.1 % of that time for drift. Since the reading was taken before its reply
//!   arrived, the estimate is never later than the server's time at the miss,
//!   so every invalidation after the miss has a tombstone at or after the
//!   ticket; the margin (and the reply's transit) only refuses puts racing with
//!   invalidations made by *other* processes a fraction of a millisecond
//!   before the miss, which is harmless (the value is returned, just not
//!   cached). After its own invalidation or refused put, a backend reads
//!   `TIME` exactly on its next `get`.
//! * **put** (`put.lua`): refuses the put if the ticket is older than the
//!   window or later than the server's clock, if the last clear is at or
//!   after the ticket, or if a dependency's tombstone is at or after the
//!   ticket; checks the type of every key before its first write (foreign
//!   data: nothing written); prunes each index of expired members; reads the
//!   previous generation and its dependencies from the entry, unregisters it
//!   from the indexes it shares with the new put, writes the entry and
//!   registers the new generation. About 7 + 2 per dependency Redis calls
//!   inside the script with a ticket (4 + 2 per dependency without):
//!   tombstones are read with `MGET` (plus an `EXISTS`
//!   that detects a tombstone key of another type, which `MGET` would read
//!   as absent), 1000 keys per call; the prune (`ZREMRANGEBYSCORE`) doubles
//!   as the type check of its index. The previous generation's *other*
//!   indexes are not declared keys, so the script returns them and the
//!   client removes that generation from them in a second call
//!   (`unregister.lua`), only when the dependencies changed. If that call
//!   fails, the stray member is harmless (its generation no longer matches)
//!   and is pruned when it expires.
//! * **delete** (`delete.lua` + `unregister.lua`): the same two steps.
//! * **invalidate** (`invalidate.lua`, one call per chunk of dependencies):
//!   checks the types of each dependency's index and drain key (a dependency
//!   with foreign data there is skipped and reported, nothing is written for
//!   it; the others take full effect), writes every tombstone (value: server
//!   time) *before* dropping anything, then, for indexes whose members fit
//!   in the chunk budget, drops each member whose entry still has that
//!   generation and removes it from the entry's other indexes (one `HMGET`
//!   per member; the removals are batched: one `UNLINK` per 256 entries, one
//!   `ZREM` per other index). A larger index is renamed to its drain key
//!   (merged into it if a drain is already pending) and emptied by
//!   `drain.lua`, whose calls each drop up to a chunk of members across the
//!   pending drain keys; puts racing with the drain are refused by the
//!   tombstone already written, and new registrations go to a fresh index.
//!   An interrupted drain is resumed by the next invalidation of that
//!   dependency, or by the sweep.
//! * **clear** (see [`Backend::clear`]): writes the clear marker (server
//!   time) first, so that every put with an older ticket is refused from
//!   then on, then `SCAN`s for the entries of the prefix and removes them in
//!   batches of a chunk (`batch/clear.lua`), unregistering them from their
//!   indexes (best effort: a leftover member is pruned once it expires).
//!
//! # Eviction
//!
//! Under a `maxmemory` limit, Redis evicts keys according to its
//! `maxmemory-policy`. If it evicted an index or a tombstone, `invalidate`
//! would return while a dependent entry stays readable, or a stale put would
//! be accepted. So **only entries have an expiry**, and the bookkeeping
//! (indexes, tombstones, drain keys, dead-generation marks, clear markers)
//! has none. Then:
//!
//! * `volatile-lru`, `volatile-lfu`, `volatile-random` and `volatile-ttl`
//!   evict among keys with an expiry: entries only. An evicted entry is a
//!   miss; its index members name a generation that no longer exists and are
//!   pruned like expired ones.
//! * `noeviction` evicts nothing: once Redis is full, puts fail with a
//!   transient [`OutOfMemory`](BackendErrorKind::OutOfMemory) error (the
//!   put scripts are declared without `allow-oom`, so Redis refuses them
//!   before they run, and the cluster's write step likewise), until entries
//!   expire or are invalidated. Invalidation, delete, clear, the drains and
//!   the sweep are declared with `#!lua flags=allow-oom`: they run at the
//!   limit, since they free memory (a tombstone is a few bytes). The flag
//!   does not change the single-node invalidation's access to the entries it
//!   does not declare (only cluster mode restricts undeclared keys).
//! * `allkeys-lru`, `allkeys-lfu`, `allkeys-random` (and any policy this
//!   backend does not know) may evict bookkeeping: [`build`](RedisBackendBuilder::build)
//!   refuses them with a [`Config`](BackendErrorKind::Config) error naming
//!   the policy and the safe ones.
//!
//! The policy is read with `CONFIG GET maxmemory-policy`, or from `INFO
//! memory` where `CONFIG` is disabled (managed Redis); on a cluster, from
//! every master. If neither answers, the backend logs a warning and proceeds:
//! make sure the policy is one of the safe ones. Each sweep pass reads it
//! again and logs an error if it has become unsafe (a `CONFIG SET` after
//! the build).
//!
//! # Bookkeeping and the sweep
//!
//! Bookkeeping without an expiry must still stay bounded by the live
//! entries (DESIGN invariant 4):
//!
//! * an index is pruned of expired members whenever a put registers under it,
//!   and Redis deletes a sorted set whose last member is removed (by an
//!   invalidation, a delete, an overwrite or a prune);
//! * a background **sweep** (every [`sweep_interval`](RedisBackendBuilder::sweep_interval),
//!   60 s by default, or on demand with [`RedisBackend::sweep_now`]) walks
//!   the namespace's bookkeeping keys with `SCAN … COUNT 100` on each
//!   master, one batched script call per step: it prunes expired members
//!   from indexes, drain keys and dead-generation marks (Redis deletes those
//!   left empty), deletes tombstones and clear markers older than the window
//!   (plus 1 % and 10 ms: a ticket older than the window is refused anyway,
//!   so such a tombstone can no longer refuse anything), and finishes drains
//!   left behind by an interrupted invalidation (dropping their entries).
//!
//! So the bookkeeping holds the live entries' registrations, plus what
//! expired since the last touch or sweep, plus one tombstone per dependency
//! invalidated within the last window and sweep interval.
//!
//! # Redis Cluster
//!
//! [`RedisBackend::cluster_builder`] (seed URLs) or
//! [`RedisBackend::from_cluster_connection`] give the same [`Backend`] over a
//! redis-rs cluster connection, with the same layout plus the dead
//! generations `N:{h(K)}:m:K` and one clear marker per slot. `get`, `has` and
//! `delete`'s first step are the single-node commands.
//!
//! ## Batched calls
//!
//! The per-dependency and per-entry steps (register, collect, drop, drain,
//! unregister, clear, sweep) are *batched scripts*: their work is a list of
//! items (one dependency, one member, one key), and the backend groups the
//! items by the master serving their slot, from the slot map it reads with
//! `CLUSTER SLOTS`, and sends one call per master and chunk of items, by
//! address, all at once. The scripts carry the flag `allow-cross-slot-keys`,
//! which lets a script touch keys of any slot its node serves; Redis checks
//! every key a script touches and answers an error for a key its node does
//! not serve. Each item reads its keys before writing any, so an item whose
//! slot moved since the map was read writes nothing; it is sent again in a
//! call of its own slot (its key declared in `KEYS`, routed by redis-rs,
//! which follows `MOVED` and `ASK`), and the slot map is read again. Each
//! item is atomic on its node, and items of one slot are never split across
//! nodes, so the arguments below (which need atomicity per dependency slot
//! and per entry slot) hold for batched calls as for per-slot calls; the
//! number of calls grows with the masters and chunks, not with the slots an
//! operation touches (a put with 50,000 dependencies makes about 50
//! register calls, not 15,000).
//!
//! ## put
//!
//! Two round trips, plus one on overwrite:
//!
//! 1. *Register* (`cluster/register.lua`, batched, together with a `TIME`
//!    read on the entry's node): adds the member `g ‖ entry key` to each
//!    index (pruning expired members first) and returns each dependency's
//!    tombstone and the node's time. The client refuses the put if a
//!    tombstone may be younger than the ticket (below).
//! 2. *Write* (`cluster/write.lua`, the entry's slot), only if every
//!    registration succeeded and nothing refused: refuses if generation `g`
//!    is marked dead, if the slot's clear marker may be later than the
//!    ticket, or if the step comes later than the ticket plus the window
//!    (the deadline and the ticket's time on the entry node's clock are
//!    computed from the `TIME` read in step 1); otherwise writes `v`, `g`,
//!    `d` with an expiry no later than the registrations' (also from that
//!    reading), and returns the previous generation, which the client then
//!    unregisters from its indexes (batched).
//!
//! A refused or failed put removes its registrations again (best effort; a
//! leftover names a generation no entry has and is pruned when it expires).
//!
//! ## invalidate
//!
//! 1. *Collect* (`cluster/collect.lua`, batched over the dependencies):
//!    writes the tombstones, then *reads* the live members of each index, up
//!    to a chunk per call (larger indexes go to their drain key, read by
//!    `cluster/pop.lua`, batched across drain keys, up to a chunk of members
//!    per call). Reading instead of removing makes the call safe to repeat:
//!    redis-rs retries a call whose reply was lost in a failover, and a
//!    removing call repeated on the promoted replica would find nothing and
//!    lose the invalidation.
//! 2. *Drop* (`cluster/drop.lua`, batched over the members): for each
//!    member, deletes the entry if it still has that generation; otherwise
//!    marks the generation dead for the window (its put may be between its
//!    two steps).
//! 3. Removes the members read from the invalidated indexes and the dropped
//!    entries from their other indexes (batched; best effort, as above).
//!
//! Every call that succeeds takes effect, whatever happens to the others: a
//! failed collect fails the dependencies it carried; a failed drop fails
//! every dependency whose members named an entry it carried; a failed drain
//! fails its dependency. `invalidate` reports exactly those dependencies
//! (with the first error) and the others have taken full effect.
//!
//! ## clear
//!
//! Writes every slot's clear marker first (one batched call per master),
//! then `SCAN`s each master for the entries of the prefix and removes them
//! (batched). The write step of a put refuses if its slot's marker may be
//! later than its ticket: a put whose write comes after the marker is
//! refused, and one whose write came before it left an entry that the scan,
//! which starts after every marker is written, finds and removes. A clear
//! writes 16,384 small keys; the sweep deletes them once older than the
//! window.
//!
//! ## Tickets
//!
//! A cluster ticket is the local monotonic time (µs) taken before the `get`
//! is sent, so it precedes the miss. A register reply gives a tombstone's
//! age on its own node's clock (`now - tombstone`); the client knows an
//! upper bound of the time since the ticket (local time at the reply minus
//! the ticket). An invalidation after the miss has an age below that bound,
//! so the put is refused whenever the age is not above the bound widened by
//! 0.1 % (clock rate difference) + 2 µs. Only *rates* of clocks are compared,
//! never two nodes' readings: **clock skew between nodes does not matter**.
//! A clock that steps forward makes ages look larger (this could let a
//! racing put through, like a single node's clock stepping back); a clock
//! that steps back only refuses more. The one false refusal this leaves, a
//! reload right after one's own invalidation or clear (the age and the bound
//! differ by a reply's transit), is avoided by remembering the tombstones
//! and clear markers this backend wrote and received before the ticket. A
//! ticket from the future (later than this process's clock) is refused.
//!
//! ## Proof of invariant 1
//!
//! Let put `P` (generation `g`, ticket `c`) and invalidation `I` share
//! dependency `D`. `P`'s register item `R` and `I`'s collect item `C` run
//! atomically on the node serving `D`'s slot, so one comes first:
//!
//! * `C` before `R`: `C`'s tombstone is seen by `R`. If `I` began after the
//!   miss, its age is below the bound and `P` is refused before writing
//!   anything (the tombstone is kept for longer than the window, and a put
//!   whose register reply comes later than the window after its ticket is
//!   refused too). If `I` began before the miss, the loaded data is not
//!   older than `I`.
//! * `R` before `C`: `C` reads `g ‖ K` (the member is scored with the
//!   entry's expiry, so it is not pruned while the entry lives). `I`'s drop
//!   item `X` for `K` comes after `C`. If `P`'s write `W` came before `X`,
//!   `X` finds generation `g` and deletes it (a newer generation in between
//!   means a newer put, itself covered by this argument). If `W` comes after
//!   `X`, `X` found no `g`, marked `g` dead until the window has passed, and
//!   `W` (which must run before the ticket plus the window) sees the mark and
//!   is refused.
//!
//! So when `invalidate` returns, no entry it covers is readable, and none
//! can be written later; a value refused by a ticket is *never* readable
//! (unlike a write-then-delete scheme, there is no window in which a value
//! about to be refused is visible). Between `R` and `W`, the registrations
//! exist without the entry (about one round trip; harmless). None of these
//! keys can be evicted (see [eviction](#eviction)).
//!
//! **Invariant 2.** A dependency is reported as taken effect only after its
//! collect, every drop of its members, and its drain succeeded; every step
//! is safe to repeat, so the [`Cache`](crate::Cache) repeats the failed
//! ones.
//!
//! **Invariant 4.** Indexes hold live registrations, plus leftovers of
//! refused, failed or crashed puts, evicted entries and missed cleanups,
//! each pruned on the first touch or sweep after it expires; tombstones,
//! dead-generation marks and clear markers are deleted by the sweep once
//! older than the window.
//!
//! ## What remains
//!
//! * Redis replication is asynchronous: a write acknowledged by a master
//!   that crashes before sending it to its replica is lost with the
//!   failover. A lost registration, tombstone, drop or mark can leave a
//!   stale entry. The exposure is the replication lag, measured by
//!   `redis_bench --cluster` at about 20–30 µs on loopback (`WAIT 1` after a
//!   `SET`); in the failover test (a master killed under load) it showed as
//!   a stale entry in 1 run of 8 with the default, and in none of 14 with
//!   [`replica_acks(1)`](RedisBackendBuilder::replica_acks), which closes
//!   it at the cost of a `WAIT` after each call.
//! * A write step whose reply is lost (a timeout, a failover) may still run
//!   later: redis-rs retries it. The put then keeps its registrations (it
//!   only removes them when the write was refused), so an invalidation still
//!   finds that entry.
//! * A put that straddles a failover of its entry's slot compares its write
//!   deadline and expiry with the new master's clock: a replica whose clock
//!   is behind the old master's by `δ` lets that entry outlive its
//!   registrations by up to `δ`.
//! * False refusals: an invalidation by *another* process within one reply
//!   transit before a miss refuses the put that follows (the value is still
//!   returned). `redis_bench --cluster` measures 0 % refused reloads after
//!   one's own invalidation, and every stale put refused.
//! * A plain `put` (no ticket) racing with an invalidation of one of its
//!   dependencies may be refused by a dead-generation mark; the
//!   [`Cache`](crate::Cache) reports it as
//!   [`Error::NotStored`](crate::Error::NotStored).
//!
//! # Tombstone window
//!
//! A tombstone is kept for the [window](RedisBackendBuilder::tombstone_window)
//! (default 60 s) and until the next sweep, and tickets older than the window
//! are refused, so a load that takes longer than the window is never stored.
//! A longer window lets slow loads be cached and costs one small string per
//! dependency invalidated within the window; a shorter one saves that memory
//! and refuses more slow loads.
//!
//! # Behavior on failures
//!
//! * Every call is bounded by the connect timeout plus the response timeout;
//!   an unreachable or silent server gives a [`BackendError`] of kind
//!   [`Unavailable`](BackendErrorKind::Unavailable) or
//!   [`Timeout`](BackendErrorKind::Timeout) (`is_transient()`).
//!   [`Cache::get_or_load`](crate::Cache::get_or_load) then calls the loader.
//! * The connection manager reconnects in the background after a dropped
//!   connection; scripts are reloaded after a restart. No restart of the
//!   application is needed.
//! * **Circuit breaker: fail fast while Redis is down.** Once a call fails
//!   with `Unavailable` or `Timeout`, further calls fail at once with a
//!   transient `Unavailable` error, without being sent, for the
//!   [cool-down](RedisBackendBuilder::circuit_cool_down) (250 ms by
//!   default). Then one call at a time is sent as a probe; when it gets an
//!   answer the circuit closes, otherwise it stays open for another
//!   cool-down. So during an outage reads cost nothing (`get_or_load` calls
//!   the loader at once) instead of a timeout each, and the backend notices
//!   the server's return within about a cool-down, by itself. The breaker
//!   only decides whether to send; reconnecting stays the connection's job.
//!   A call that failed fast was not sent: the operation returns the error,
//!   never a success it did not have. On a cluster there is one circuit per
//!   hash slot (calls routed by key) and one per master (batched calls), so
//!   a failing master (or a slot moving during a failover) stops only the
//!   calls to it.
//! * `invalidate` reports every dependency whose tombstone or dependents
//!   could not all be written or dropped (a timeout means it may have taken
//!   effect partly); the others took full effect. One failing dependency or
//!   one dead master does not keep the others from taking effect.
//! * A key under the namespace holding another Redis type, or an unreadable
//!   index, gives [`ForeignData`](BackendErrorKind::ForeignData) naming that
//!   Redis key; nothing is written for that entry or dependency.
//! * Redis at its memory limit under `noeviction`: puts fail with a
//!   transient [`OutOfMemory`](BackendErrorKind::OutOfMemory) error;
//!   invalidations, deletes and clears still run (see [eviction](#eviction)).
//! * Settings out of range are refused by [`build`](RedisBackendBuilder::build)
//!   with a [`Config`](BackendErrorKind::Config) error naming the setting;
//!   a TTL above [`MAX_TTL`] or more than [`MAX_DEPENDENCIES`] dependencies
//!   is a [`Refused`](BackendErrorKind::Refused) error naming the key; a
//!   ticket from the future is refused like a stale one. No setting, TTL or
//!   ticket makes the backend panic: time arithmetic saturates.
//! * Redis server time is assumed not to step backwards by more than the gap
//!   between a miss and an invalidation; a clock stepped back could let a put
//!   with a ticket from "the future" through.
//! * Keys written by an earlier version of this backend, which gave
//!   indexes and tombstones an expiry: a tombstone keeps it (harmless: it
//!   expired with the window), an index or drain key loses it at the first
//!   sweep pass (run [`RedisBackend::sweep_now`] once after upgrading, so
//!   that eviction cannot drop one before).
//!
//! # TLS
//!
//! `rediss://` URLs need redis-rs built with one of its TLS features (for
//! example `tls-rustls` + `tokio-rustls-comp`); enable it in your own
//! `Cargo.toml` next to matroska.
//!
//! [`ConnectionManager`]: redis::aio::ConnectionManager

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Value};

use super::{Backend, Invalidated, Lookup, PutOutcome, PutRequest, Ticket};
use crate::error::{BackendError, BackendErrorKind};

mod batch;
mod breaker;
mod builder;
mod clock;
mod cluster;
mod maintenance;
mod policy;
mod reply;
mod single;
mod topology;

pub use builder::{RedisBackendBuilder, MAX_CHUNK_SIZE, MAX_REPLICA_ACKS, MAX_TIMEOUT, MIN_SWEEP_INTERVAL};
pub use maintenance::SweepReport;

use breaker::Circuit;
use builder::Source;
use clock::{Generations, ServerClock};
use reply::{parse_time, protocol};
use topology::ClusterHandle;

/// The default tombstone window (60 s).
pub const DEFAULT_TOMBSTONE_WINDOW: Duration = Duration::from_secs(60);
/// The default namespace: the first part of every Redis key this backend uses.
pub const DEFAULT_NAMESPACE: &str = "matroska";
/// The default number of dependents dropped, and of items carried, per
/// script call.
pub const DEFAULT_CHUNK_SIZE: usize = 1000;
/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default response timeout.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The default cool-down of the [circuit breaker](self#behavior-on-failures).
pub const DEFAULT_CIRCUIT_COOL_DOWN: Duration = Duration::from_millis(250);
/// The default rest between two passes of the [sweep](self#bookkeeping-and-the-sweep).
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// The longest TTL a put may carry (100 years).
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// The most dependencies one entry may have.
pub const MAX_DEPENDENCIES: usize = 100_000;

/// The connection a backend uses.
#[derive(Clone)]
enum Conn {
    Single(Box<ConnectionManager>),
    Cluster(Arc<ClusterHandle>),
}

/// Shared by a backend and its clones: when the last of them is dropped,
/// the background sweep stops.
#[derive(Debug, Default)]
struct Life {
    stop: Arc<tokio::sync::Notify>,
}

impl Drop for Life {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

/// A [`Backend`] storing entries in Redis. Cheap to clone; clones share the
/// connection. See the [module docs](self) for the layout, the protocol and
/// the behavior on failures.
#[derive(Clone)]
pub struct RedisBackend {
    conn: Conn,
    namespace: String,
    /// The tombstone window, µs.
    window_us: u64,
    /// How long a dead-generation mark lives, ms (the window and a margin).
    marker_ms: u64,
    /// Age after which the sweep deletes a tombstone or clear marker, µs.
    keep_us: u64,
    chunk_size: usize,
    op_timeout: Duration,
    gens: Arc<Generations>,
    clock: Arc<ServerClock>,
    replica_acks: usize,
    response_timeout: Duration,
    /// Cluster only: tombstones this backend wrote, by key: (time on their
    /// node, local instant the reply arrived).
    own_tombstones: Arc<Mutex<HashMap<String, (u64, u64)>>>,
    /// Cluster only: clear markers this backend wrote, by slot.
    own_clears: Arc<Mutex<HashMap<u16, (u64, u64)>>>,
    /// Fails calls fast while Redis is unreachable.
    breaker: Arc<breaker::Breaker>,
    life: Arc<Life>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("namespace", &self.namespace)
            .field("window_us", &self.window_us)
            .field("chunk_size", &self.chunk_size)
            .field("op_timeout", &self.op_timeout)
            .field("cluster", &self.is_cluster())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// A builder connecting to `url` (`redis://[user:password@]host:port/db`,
    /// or `rediss://` with a TLS feature of redis-rs enabled).
    pub fn builder(url: impl Into<String>) -> RedisBackendBuilder {
        RedisBackendBuilder::new(Source::Url(url.into()))
    }

    /// A builder over an existing connection manager (its own timeouts and
    /// reconnection settings apply; the builder's timeouts still bound each
    /// operation as a whole).
    pub fn from_connection(conn: ConnectionManager) -> RedisBackendBuilder {
        RedisBackendBuilder::new(Source::Connection(conn))
    }

    /// A builder connecting to a Redis Cluster through `seeds` (URLs of some
    /// of its nodes; the others are discovered). See [the cluster
    /// protocol](self#redis-cluster).
    pub fn cluster_builder<I, S>(seeds: I) -> RedisBackendBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisBackendBuilder::new(Source::Cluster(seeds.into_iter().map(Into::into).collect()))
    }

    /// A builder over an existing Redis Cluster connection (its own timeouts
    /// and retry settings apply; the builder's timeouts still bound each call
    /// as a whole).
    pub fn from_cluster_connection(conn: ClusterConnection) -> RedisBackendBuilder {
        RedisBackendBuilder::new(Source::ClusterConnection(conn))
    }

    /// The single-node connection this backend uses (a clone sharing it), or
    /// `None` for a cluster backend.
    pub fn connection(&self) -> Option<ConnectionManager> {
        match &self.conn {
            Conn::Single(c) => Some((**c).clone()),
            Conn::Cluster(_) => None,
        }
    }

    /// The cluster connection this backend uses (a clone sharing it), or
    /// `None` for a single-node backend.
    pub fn cluster_connection(&self) -> Option<ClusterConnection> {
        match &self.conn {
            Conn::Cluster(c) => Some(c.get()),
            Conn::Single(_) => None,
        }
    }

    /// Whether this backend talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// The Redis key of the hash holding the entry stored under `key` (a key as
    /// the [`Cache`](crate::Cache) passes it to the backend).
    pub fn entry_key(&self, key: &str) -> String {
        self.redis_key("e", key)
    }

    /// The Redis key of the reverse index (sorted set) of dependency `dep`.
    pub fn index_key(&self, dep: &str) -> String {
        self.redis_key("i", dep)
    }

    /// The Redis key of the tombstone of dependency `dep`.
    pub fn tombstone_key(&self, dep: &str) -> String {
        self.redis_key("t", dep)
    }

    /// The Redis key where a chunked invalidation of `dep` drains its index.
    pub fn drain_key(&self, dep: &str) -> String {
        self.redis_key("x", dep)
    }

    /// Cluster only: the Redis key of the dead generations of the entry
    /// stored under `key`.
    fn marker_key(&self, key: &str) -> String {
        self.redis_key("m", key)
    }

    /// The single node's clear marker.
    fn clear_key(&self) -> String {
        self.redis_key("c", "")
    }

    /// A cluster slot's clear marker.
    fn slot_clear_key(&self, slot: u16) -> String {
        let tag = &topology::SLOT_TAGS[usize::from(slot) % topology::SLOTS];
        format!("{}:{{{tag}}}:c:", self.namespace)
    }

    fn redis_key(&self, kind: &str, name: &str) -> String {
        let mut k = String::with_capacity(self.namespace.len() + name.len() + 24);
        k.push_str(&self.namespace);
        k.push_str(":{");
        k.push_str(&format!("{:016x}", fnv1a(name.as_bytes())));
        k.push_str("}:");
        k.push_str(kind);
        k.push(':');
        k.push_str(name);
        k
    }

    async fn load_scripts(&self) -> Result<(), BackendError> {
        let scripts = match &self.conn {
            Conn::Single(_) => single::scripts(),
            Conn::Cluster(_) => cluster::scripts(),
        };
        for script in scripts.into_iter().chain(maintenance::scripts()) {
            match &self.conn {
                Conn::Single(c) => {
                    let mut conn = (**c).clone();
                    self.bounded(async move { script.load_async(&mut conn).await }, None).await?;
                }
                Conn::Cluster(h) => {
                    let mut conn = h.get();
                    self.bounded(async move { script.load_async(&mut conn).await }, None).await?;
                }
            }
        }
        Ok(())
    }

    /// Runs one call within the operation timeout and maps its error; fails
    /// at once, without sending it, while the call's circuit is open (single
    /// node: one circuit; cluster: one per slot of `key`, keyless calls pass).
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
        key: Option<&str>,
    ) -> Result<T, BackendError> {
        let circuit = match (&self.conn, key) {
            (Conn::Single(_), _) => Some(Circuit::Server),
            (Conn::Cluster(_), Some(k)) => Some(Self::slot_circuit(k)),
            (Conn::Cluster(_), None) => None,
        };
        self.guarded(call, circuit, key).await
    }

    /// [`bounded`](Self::bounded) on an explicit circuit (`None`: no
    /// breaker).
    async fn guarded<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
        circuit: Option<Circuit>,
        key: Option<&str>,
    ) -> Result<T, BackendError> {
        let Some(circuit) = circuit else {
            return self.timed(call, key).await;
        };
        let permit = match self.breaker.admit(circuit) {
            Ok(p) => p,
            Err(e) => {
                return Err(match key {
                    Some(k) => e.with_key(k),
                    None => e,
                })
            }
        };
        let outcome = self.timed(call, key).await;
        permit.done(&outcome);
        if let (Err(e), Conn::Cluster(handle)) = (&outcome, &self.conn) {
            if matches!(e.kind(), BackendErrorKind::Unavailable | BackendErrorKind::Timeout) {
                handle.rebuild_soon(self.op_timeout);
            }
        }
        outcome
    }

    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
        key: Option<&str>,
    ) -> Result<T, BackendError> {
        match tokio::time::timeout(self.op_timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(reply::map_error(e, key)),
            Err(_) => {
                let e = BackendError::new(
                    BackendErrorKind::Timeout,
                    format!("Redis did not answer within {:?}", self.op_timeout),
                );
                Err(match key {
                    Some(k) => e.with_key(k),
                    None => e,
                })
            }
        }
    }

    /// Checks what a put asks for against this backend's limits.
    fn check_put(&self, req: &PutRequest<'_>) -> Result<(), BackendError> {
        let refuse = |message: String| {
            Err(BackendError::new(BackendErrorKind::Refused, message).with_key(self.entry_key(req.key)))
        };
        if req.ttl > MAX_TTL {
            return refuse(format!("TTL {:?} is above this backend's maximum of {MAX_TTL:?}", req.ttl));
        }
        if req.deps.len() > MAX_DEPENDENCIES {
            return refuse(format!(
                "{} dependencies are more than this backend accepts for one entry ({MAX_DEPENDENCIES})",
                req.deps.len()
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn get(&self, key: &str) -> Result<Lookup, BackendError> {
        let mut conn = match &self.conn {
            Conn::Single(c) => (**c).clone(),
            Conn::Cluster(c) => return self.cluster_get(c.get(), key).await,
        };
        let entry = self.entry_key(key);
        if let Some(estimate) = self.clock.estimate() {
            // calibrated: a plain HGET, the ticket is a lower bound of the
            // server's time now
            let cmd = redis::cmd("HGET").arg(entry.as_str()).arg("v").clone();
            let reply: Value = self.bounded(async { cmd.query_async(&mut conn).await }, Some(&entry)).await?;
            return match reply {
                Value::BulkString(bytes) => Ok(Lookup::Hit(Bytes::from(bytes))),
                Value::Nil => Ok(Lookup::Miss(Ticket::new(estimate))),
                _ => Err(protocol(&entry, "unexpected reply to HGET")),
            };
        }
        // not calibrated (or stale): HGET and TIME in one round trip
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(entry.as_str()).arg("v").cmd("TIME");
        let reply: Vec<Value> = self.bounded(async { pipe.query_async(&mut conn).await }, Some(&entry)).await?;
        let received = Instant::now();
        let mut reply = reply.into_iter();
        let (value, time) = match (reply.next(), reply.next()) {
            (Some(v), Some(Value::Array(t))) => (v, parse_time(&t, &entry)?),
            _ => return Err(protocol(&entry, "unexpected reply to HGET + TIME")),
        };
        self.clock.calibrate(time.value(), received);
        match value {
            Value::BulkString(bytes) => Ok(Lookup::Hit(Bytes::from(bytes))),
            Value::Nil => Ok(Lookup::Miss(time)),
            _ => Err(protocol(&entry, "unexpected reply to HGET")),
        }
    }

    async fn has(&self, key: &str) -> Result<bool, BackendError> {
        let entry = self.entry_key(key);
        let cmd = redis::cmd("HEXISTS").arg(entry.as_str()).arg("v").clone();
        match &self.conn {
            Conn::Single(c) => {
                let mut conn = (**c).clone();
                self.bounded(async { cmd.query_async::<bool>(&mut conn).await }, Some(&entry)).await
            }
            Conn::Cluster(c) => {
                let mut conn = c.get();
                self.bounded(async { cmd.query_async::<bool>(&mut conn).await }, Some(&entry)).await
            }
        }
    }

    async fn put(&self, req: PutRequest<'_>) -> Result<PutOutcome, BackendError> {
        self.check_put(&req)?;
        match &self.conn {
            Conn::Single(c) => self.single_put((**c).clone(), req).await,
            Conn::Cluster(_) => self.cluster_put(req).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        match &self.conn {
            Conn::Single(c) => self.single_delete((**c).clone(), key).await,
            Conn::Cluster(_) => self.cluster_delete(key).await,
        }
    }

    async fn invalidate(&self, deps: &[String]) -> Result<Invalidated, BackendError> {
        if deps.is_empty() {
            return Ok(Invalidated::complete(0));
        }
        match &self.conn {
            Conn::Single(_) => self.single_invalidate(deps).await,
            Conn::Cluster(_) => self.cluster_invalidate(deps).await,
        }
    }

    async fn ticket(&self) -> Result<Ticket, BackendError> {
        let mut conn = match &self.conn {
            Conn::Single(c) => (**c).clone(),
            Conn::Cluster(_) => return Ok(self.cluster_ticket()),
        };
        let cmd = redis::cmd("TIME");
        let reply: Value = self.bounded(async { cmd.query_async(&mut conn).await }, None).await?;
        match reply {
            Value::Array(time) => parse_time(&time, "TIME"),
            _ => Err(BackendError::new(BackendErrorKind::Protocol, "unexpected reply to TIME")),
        }
    }

    /// See [clear](self#protocol) (single node) and [the cluster's
    /// clear](self#clear).
    async fn clear(&self, prefix: &str) -> Result<u64, BackendError> {
        self.clear_prefix(prefix).await
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn escape_namespace(ns: &str) -> String {
    let mut out = String::with_capacity(ns.len());
    for ch in ns.chars() {
        match ch {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_braces_are_escaped() {
        assert_eq!(escape_namespace("a{b}%c"), "a%7Bb%7D%25c");
    }
}
