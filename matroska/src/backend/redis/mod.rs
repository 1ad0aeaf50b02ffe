//! The Redis backend: several application processes sharing one cache.
//!
//! Built on redis-rs with tokio: a [`ConnectionManager`] (one multiplexed
//! connection that reconnects by itself) and Lua scripts run with `EVALSHA`
//! (reloaded on `NOSCRIPT`, for example after a server restart).
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
//! # Round trips
//!
//! On a single node, `get` (a hit, or a miss with its ticket) is one plain
//! command (with `TIME` pipelined every 200 ms), and `put` with any
//! number of dependencies (ticket check included) and `invalidate` of any
//! number of dependencies are one script call each. Two cases add calls:
//!
//! * a `put` that overwrites an entry whose *previous* dependencies are not all
//!   among the new ones, and a `delete` of an entry with dependencies, make a
//!   second call that unregisters the previous generation (see the protocol);
//! * an `invalidate` whose dependents exceed the
//!   [chunk size](RedisBackendBuilder::chunk_size) drains the large indexes in
//!   further calls of one chunk each, so that no script blocks Redis for long.
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
//! | `N:{h(D)}:i:D` | sorted set | members `generation ‖ entry key`, scored by the entry's expiry (ms, server time) | the latest live expiry |
//! | `N:{h(D)}:t:D` | string | server time (µs) of the last invalidation of `D` | the tombstone window |
//! | `N:{h(D)}:x:D` | sorted set | an index being drained by a chunked invalidation | the latest expiry in it |
//!
//! The braces are a Redis Cluster hash tag chosen by this backend: an entry's
//! keys share a slot, and so do a dependency's index, tombstone and drain key,
//! whatever braces the names themselves contain. Every key a script reads or
//! writes is passed in `KEYS`, never assembled by the script, with one
//! exception: the single-node invalidation follows the index members to the
//! entries they name (see below).
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
//!   concurrent hits). A miss's ticket is Redis server time in µs (comparable
//!   across the nodes of a cluster up to their clock skew): the backend
//!   pipelines `TIME` with the `HGET` every 200 ms and, in between,
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
//!   window or a dependency's tombstone is at or after the ticket; checks the
//!   type of every key before its first write (foreign data: nothing written);
//!   prunes each index of expired members; reads the previous generation and
//!   its dependencies from the entry, unregisters it from the indexes it shares
//!   with the new put, writes the entry, registers the new generation and sets
//!   each index's expiry to its latest member's. About 4 + 3 per dependency
//!   Redis calls inside the script: tombstones are read with one `MGET` (plus
//!   an `EXISTS` that detects a tombstone key of another type, which `MGET`
//!   would read as absent); the prune (`ZREMRANGEBYSCORE`) doubles as the
//!   type check of its index; and since pruning removes only expired members,
//!   an index's expiry is raised with `PEXPIREAT … GT` (`NX` for a new index)
//!   instead of reading its latest member, except in an index from which the
//!   put removed the entry's previous generation. `GT`/`NX` need Redis 7.0
//!   or later (or Valkey). An index may outlive its live members when a
//!   `delete` or an invalidation of another dependency removed its latest
//!   member; the dead members it then holds are pruned on its next touch or
//!   expire with it. The previous generation's
//!   *other* indexes are not declared keys, so the script returns them and the
//!   client removes that generation from them in a second call
//!   (`unregister.lua`), only when the dependencies changed. If that call
//!   fails, the stray member is harmless (its generation no longer matches) and
//!   is pruned when it expires.
//! * **delete** (`delete.lua` + `unregister.lua`): the same two steps.
//! * **invalidate** (`invalidate.lua`): checks the types of the indexes, writes
//!   every tombstone (value: server time, expiry: the window) *before* dropping
//!   anything, then, for indexes whose members fit in the chunk budget, drops
//!   each member whose entry still has that generation and removes it from the
//!   entry's other indexes (one `HMGET` per member; the removals are batched:
//!   one `UNLINK` per 256 entries, one `ZREM` per other index). A larger index is renamed to its drain key (merged
//!   into it if a drain is already pending) and emptied one chunk per call
//!   (`drain.lua`); puts racing with the drain are refused by the tombstone
//!   already written, and new registrations go to a fresh index. An
//!   interrupted drain is resumed by the next invalidation of that dependency.
//!   The entries named by index members are the keys the scripts do not
//!   declare: on a single node that is what makes the common invalidation one
//!   round trip; on Redis Cluster the same step is a per-slot call (below).
//!
//! # Redis Cluster
//!
//! [`RedisBackend::cluster_builder`] (seed URLs) or
//! [`RedisBackend::from_cluster_connection`] give the same [`Backend`] over a
//! redis-rs cluster connection, with the same layout plus one key per entry
//! slot, `N:{h(K)}:m:K`, a sorted set of *dead generations* (score: until
//! when, ms). Every script declares every key it touches, and all of them
//! lie in one slot; calls for different slots are sent at once (calls to one
//! node share its multiplexed connection, so they are pipelined). `get`,
//! `has` and `delete`'s first step are the single-node commands.
//!
//! **put** (two round trips, plus one on overwrite):
//!
//! 1. *Register* (`cluster/register.lua`, one call per dependency slot, all
//!    at once, together with a `TIME` read on the entry's node): adds the
//!    member `g ‖ entry key` to each index (pruning expired members first)
//!    and returns each dependency's tombstone and the node's time. The client
//!    refuses the put if a tombstone may be younger than the ticket (below).
//! 2. *Write* (`cluster/write.lua`, the entry's slot), only if every
//!    registration succeeded and nothing refused: refuses if generation `g`
//!    is marked dead or the step comes later than the ticket plus the window
//!    (the deadline is computed from the `TIME` read in step 1, on the
//!    entry node's clock); otherwise writes `v`, `g`, `d` with an expiry no
//!    later than the registrations' (also from that reading), and returns the
//!    previous generation, which the client then unregisters from its indexes
//!    (one call per slot).
//!
//! A refused or failed put removes its registrations again (best effort; a
//! leftover names a generation no entry has and is pruned when it expires).
//!
//! **invalidate**:
//!
//! 1. *Collect* (`cluster/collect.lua`, one call per dependency slot, all at
//!    once): writes the tombstones, then *reads* the live members of each
//!    index (larger indexes go to their drain key, read one chunk per call
//!    by `cluster/pop.lua`). Reading instead of removing makes the call safe
//!    to repeat: redis-rs retries a call whose reply was lost in a failover,
//!    and a removing call repeated on the promoted replica would find
//!    nothing and lose the invalidation.
//! 2. *Drop* (`cluster/drop.lua`, one call per entry slot, all at once):
//!    for each member, deletes the entry if it still has that generation;
//!    otherwise marks the generation dead for the window (its put may be
//!    between its two steps).
//! 3. Removes the members read from the invalidated indexes and the dropped
//!    entries from their other indexes (one call per slot; best effort, as
//!    above). `invalidate` returns after step 2 succeeded everywhere, or an
//!    error.
//!
//! **Tickets.** A cluster ticket is the local monotonic time (µs) taken
//! before the `get` is sent, so it precedes the miss. A register reply gives
//! a tombstone's age on its own node's clock (`now - tombstone`); the client
//! knows an upper bound of the time since the ticket (local time at the
//! reply minus the ticket). An invalidation after the miss has an age below
//! that bound, so the put is refused whenever the age is not above the bound
//! widened by 0.1 % (clock rate difference) + 2 µs. Only *rates* of clocks
//! are compared, never two nodes' readings: **clock skew between nodes does
//! not matter**. A clock that steps forward makes ages look larger (this
//! could let a racing put through, like a single node's clock stepping
//! back); a clock that steps back only refuses more. The one false refusal
//! this leaves, a reload right after one's own invalidation (the age and the
//! bound differ by a reply's transit), is avoided by remembering the
//! tombstones this backend wrote and received before the ticket.
//!
//! **Proof of invariant 1.** Let put `P` (generation `g`, ticket `c`) and
//! invalidation `I` share dependency `D`. `P`'s register call `R` and `I`'s
//! collect call `C` run atomically in `D`'s slot, so one comes first:
//!
//! * `C` before `R`: `C`'s tombstone is seen by `R`. If `I` began after the
//!   miss, its age is below the bound and `P` is refused before writing
//!   anything (the tombstone lives for the window, and a put whose register
//!   reply comes later than the window after its ticket is refused too). If
//!   `I` began before the miss, the loaded data is not older than `I`.
//! * `R` before `C`: `C` reads `g ‖ K` (the member expires no earlier than
//!   the entry, so it is not pruned while the entry lives). `I`'s drop call
//!   `X` for `K` comes after `C`. If `P`'s write `W` came before `X`, `X`
//!   finds generation `g` and deletes it (a newer generation in between
//!   means a newer put, itself covered by this argument). If `W` comes after
//!   `X`, `X` found no `g`, marked `g` dead until the window has passed, and
//!   `W` (which must run before the ticket plus the window) sees the mark and
//!   is refused.
//!
//! So when `invalidate` returns, no entry it covers is readable, and none
//! can be written later; a value refused by a ticket is *never* readable
//! (unlike a write-then-delete scheme, there is no window in which a value
//! about to be refused is visible). Between `R` and `W`, the registrations
//! exist without the entry (about one round trip; harmless).
//!
//! **Invariant 2.** `invalidate` returns `Ok` only after every collect,
//! drain and drop call succeeded; otherwise an error (some tombstones or
//! drops may have taken effect). Every step is safe to repeat.
//!
//! **Invariant 3.** Indexes hold live registrations, plus leftovers of
//! refused, failed or crashed puts and missed cleanups, each pruned on the
//! first touch after it expires; dead-generation marks and tombstones expire
//! after the window.
//!
//! **What remains.**
//!
//! * Redis replication is asynchronous: a write acknowledged by a master
//!   that crashes before sending it to its replica is lost with the
//!   failover. A lost registration, tombstone, drop or mark can leave a
//!   stale entry. The exposure is the replication lag, measured by
//!   `redis_bench --cluster` at about 20–30 µs on loopback (`WAIT 1` after a
//!   `SET`); in the failover test (a master killed under load) it showed as
//!   a stale entry in 1 run of 8 with the default, and in none of 14 with
//!   [`replica_acks(1)`](RedisBackendBuilder::replica_acks), which closes
//!   it at the cost of a `WAIT` after each step.
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
//!   dependencies may be refused by a dead-generation mark.
//! * On a cluster, `delete`, a put that replaces different dependencies and
//!   the last step of `invalidate` take one more round trip; foreign data
//!   found by a later slot's call does not undo what earlier slots' calls
//!   did (the put's registrations are removed again).
//!
//! # Tombstone window
//!
//! A tombstone is kept for the [window](RedisBackendBuilder::tombstone_window)
//! (default 60 s), and tickets older than the window are refused, so a load
//! that takes longer than the window is never stored. A longer window lets slow
//! loads be cached and costs one small string per dependency invalidated within
//! the window; a shorter one saves that memory and refuses more slow loads.
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
//!   hash slot, so a failing master (or a slot moving during a failover)
//!   stops only the calls to its slots.
//! * `invalidate` returns an error unless every tombstone was written and every
//!   dependent dropped; a timeout means it may have taken effect partly.
//! * A key under the namespace holding another Redis type, or an unreadable
//!   index, gives [`ForeignData`](BackendErrorKind::ForeignData) naming that
//!   Redis key; nothing is written by the failed call.
//! * Redis server time is assumed not to step backwards by more than the gap
//!   between a miss and an invalidation; a clock stepped back could let a put
//!   with a ticket from "the future" through.
//!
//! # TLS
//!
//! `rediss://` URLs need redis-rs built with one of its TLS features (for
//! example `tls-rustls` + `tokio-rustls-comp`); enable it in your own
//! `Cargo.toml` next to matroska.
//!
//! [`ConnectionManager`]: redis::aio::ConnectionManager

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, RedisError, Script, ServerErrorKind, Value};
use tracing::warn;

use super::{Backend, Invalidated, Lookup, PutOutcome, PutRequest, Ticket};
use crate::error::{BackendError, BackendErrorKind};

/// The default tombstone window (60 s).
pub const DEFAULT_TOMBSTONE_WINDOW: Duration = Duration::from_secs(60);
/// The default namespace: the first part of every Redis key this backend uses.
pub const DEFAULT_NAMESPACE: &str = "matroska";
/// The default number of dependents dropped per script call.
pub const DEFAULT_CHUNK_SIZE: usize = 1000;
/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default response timeout.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The default cool-down of the [circuit breaker](self#behavior-on-failures).
pub const DEFAULT_CIRCUIT_COOL_DOWN: Duration = Duration::from_millis(250);

mod breaker;
mod cluster;

const DROP_MEMBER: &str = include_str!("drop_member.lua");

static PUT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("put.lua")));
static DELETE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("delete.lua")));
static UNREGISTER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("unregister.lua")));
static INVALIDATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{DROP_MEMBER}\n{}", include_str!("invalidate.lua"))));
static DRAIN: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{DROP_MEMBER}\n{}", include_str!("drain.lua"))));

/// Where the connection comes from.
enum Source {
    Url(String),
    Connection(ConnectionManager),
    Cluster(Vec<String>),
    ClusterConnection(ClusterConnection),
}

/// The connection a backend uses.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterHandle),
}

/// A cluster connection that can be replaced by a fresh one.
///
/// redis-rs' async cluster connection, after a connection error to a node,
/// reconnects to that same address and keeps its slot map; it rebuilds the
/// map on `MOVED` replies, not when a master is gone. After a master dies and
/// its replica takes over, calls for its slots would keep failing. So, after
/// a call fails as unreachable or timed out, the backend builds a new
/// connection from the client (which reads the current slot map) and swaps
/// it in: at most one rebuild at a time and one per second.
#[derive(Clone)]
struct ClusterHandle {
    conn: Arc<std::sync::RwLock<ClusterConnection>>,
    /// The client to rebuild from (absent for a connection given by the
    /// application, which is then used as it is).
    client: Option<ClusterClient>,
    rebuild: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    rebuilding: Arc<std::sync::atomic::AtomicBool>,
}

impl ClusterHandle {
    fn new(conn: ClusterConnection, client: Option<ClusterClient>) -> Self {
        ClusterHandle {
            conn: Arc::new(std::sync::RwLock::new(conn)),
            client,
            rebuild: Arc::default(),
            rebuilding: Arc::default(),
        }
    }

    /// The current connection (a clone sharing it).
    fn get(&self) -> ClusterConnection {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Starts building a fresh connection in the background, unless one is
    /// being built or one was built less than a second ago.
    fn rebuild_soon(&self, timeout: Duration) {
        use std::sync::atomic::Ordering;
        let Some(client) = self.client.clone() else { return };
        {
            let mut last = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return;
            }
            if self.rebuilding.swap(true, Ordering::SeqCst) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.rebuilding.store(false, Ordering::SeqCst);
            return;
        };
        let handle = self.clone();
        runtime.spawn(async move {
            match tokio::time::timeout(timeout, client.get_async_connection()).await {
                Ok(Ok(fresh)) => {
                    *handle.conn.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                    tracing::debug!("rebuilt the Redis Cluster connection (fresh slot map)");
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "could not rebuild the Redis Cluster connection"),
                Err(_) => tracing::debug!("rebuilding the Redis Cluster connection timed out"),
            }
            handle.rebuilding.store(false, Ordering::SeqCst);
        });
    }
}

/// Configures a [`RedisBackend`]; made by [`RedisBackend::builder`] or
/// [`RedisBackend::from_connection`].
#[must_use]
pub struct RedisBackendBuilder {
    source: Source,
    namespace: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    window: Duration,
    chunk_size: usize,
    replica_acks: usize,
    cool_down: Duration,
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field(
                "source",
                &match &self.source {
                    Source::Url(_) => "url",
                    Source::Connection(_) => "connection",
                    Source::Cluster(_) => "cluster seeds",
                    Source::ClusterConnection(_) => "cluster connection",
                },
            )
            .field("namespace", &self.namespace)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("window", &self.window)
            .field("chunk_size", &self.chunk_size)
            .field("replica_acks", &self.replica_acks)
            .field("cool_down", &self.cool_down)
            .finish()
    }
}

impl RedisBackendBuilder {
    /// The first part of every Redis key (default [`DEFAULT_NAMESPACE`]).
    /// Backends with different namespaces share a server without seeing each
    /// other. Any text; `%`, `{` and `}` are percent-encoded in key names.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long connecting may take (default 1 s). Only used with URLs.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long Redis may take to answer one call (default 1 s). Every
    /// operation is also bounded by connect + response timeout as a whole, so
    /// that calls waiting for a reconnection fail in time.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long tombstones are kept and tickets stay valid (default 60 s).
    /// See [the trade-off](self#tombstone-window).
    pub fn tombstone_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How many dependents one script call drops at most (default 1000;
    /// minimum 1). An invalidation with more dependents runs in several calls
    /// so that Redis is never blocked for long (about a millisecond per 1000).
    pub fn chunk_size(mut self, n: usize) -> Self {
        self.chunk_size = n.max(1);
        self
    }

    /// Redis Cluster only: how many replicas must acknowledge the writes of
    /// a put's registrations and entry and of an invalidation's tombstones
    /// and drops before the call goes on (`WAIT`; default 0, not waiting).
    /// Replication is asynchronous, so a master that crashes can lose writes
    /// it acknowledged in the last moments (about the replication lag); with
    /// 1, an invalidation that returned survives the failover of a master
    /// with one replica. The price: one more round trip per step, and
    /// [`Unavailable`](BackendErrorKind::Unavailable) errors while a master
    /// has fewer replicas (for example after a failover, until the old
    /// master is back as a replica).
    pub fn replica_acks(mut self, n: usize) -> Self {
        self.replica_acks = n;
        self
    }

    /// How long operations fail at once after Redis was found unreachable
    /// (default [`DEFAULT_CIRCUIT_COOL_DOWN`], 250 ms), before one call is let
    /// through to probe whether it is back; `Duration::ZERO` disables the
    /// breaker. See [the behavior on failures](self#behavior-on-failures).
    pub fn circuit_cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }

    /// Connects (for a URL) and loads the scripts.
    ///
    /// # Errors
    /// [`BackendErrorKind::Refused`] for an invalid URL or a refused
    /// authentication; [`BackendErrorKind::Unavailable`] or
    /// [`BackendErrorKind::Timeout`] if the server cannot be reached.
    pub async fn build(self) -> Result<RedisBackend, BackendError> {
        let op_timeout = self.connect_timeout + self.response_timeout;
        let conn = match self.source {
            Source::Connection(conn) => Conn::Single(conn),
            Source::ClusterConnection(conn) => Conn::Cluster(ClusterHandle::new(conn, None)),
            Source::Cluster(seeds) => {
                let client = ClusterClient::builder(seeds.iter().map(String::as_str))
                    .connection_timeout(self.connect_timeout)
                    .response_timeout(self.response_timeout)
                    .retries(3)
                    .min_retry_wait(20)
                    .max_retry_wait(saturating_u64(self.connect_timeout.as_millis()).max(20))
                    .build()
                    .map_err(|e| {
                        BackendError::new(BackendErrorKind::Refused, format!("invalid Redis Cluster seeds: {e}"))
                            .with_source(e)
                    })?;
                match tokio::time::timeout(op_timeout, client.get_async_connection()).await {
                    Ok(Ok(conn)) => Conn::Cluster(ClusterHandle::new(conn, Some(client))),
                    Ok(Err(e)) => return Err(map_error(e, None)),
                    Err(_) => {
                        return Err(BackendError::new(
                            BackendErrorKind::Timeout,
                            format!("could not connect to Redis Cluster within {op_timeout:?}"),
                        ))
                    }
                }
            }
            Source::Url(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| {
                    BackendError::new(BackendErrorKind::Refused, format!("invalid Redis URL: {e}")).with_source(e)
                })?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.response_timeout))
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(self.connect_timeout);
                let connect = ConnectionManager::new_with_config(client, config);
                match tokio::time::timeout(op_timeout, connect).await {
                    Ok(Ok(conn)) => Conn::Single(conn),
                    Ok(Err(e)) => return Err(map_error(e, None)),
                    Err(_) => {
                        return Err(BackendError::new(
                            BackendErrorKind::Timeout,
                            format!("could not connect to Redis within {op_timeout:?}"),
                        ))
                    }
                }
            }
        };
        let backend = RedisBackend {
            conn,
            namespace: escape_namespace(&self.namespace),
            window_us: saturating_u64(self.window.as_micros()).max(1).to_string(),
            window_us_n: saturating_u64(self.window.as_micros()).max(1),
            marker_ms: {
                let w = saturating_u64(self.window.as_millis()).max(1);
                w + w / 100 + 10
            },
            window_ms: saturating_u64(self.window.as_millis()).max(1).to_string(),
            chunk_size: self.chunk_size,
            op_timeout,
            gens: Generations::new(),
            clock: std::sync::Arc::default(),
            own_tombstones: std::sync::Arc::default(),
            replica_acks: self.replica_acks,
            response_timeout: self.response_timeout,
            breaker: std::sync::Arc::new(breaker::Breaker::new(self.cool_down)),
        };
        backend.load_scripts().await?;
        Ok(backend)
    }
}

/// A [`Backend`] storing entries in Redis. Cheap to clone; clones share the
/// connection. See the [module docs](self) for the layout, the protocol and
/// the behavior on failures.
#[derive(Clone)]
pub struct RedisBackend {
    conn: Conn,
    namespace: String,
    window_us: String,
    window_us_n: u64,
    marker_ms: u64,
    window_ms: String,
    chunk_size: usize,
    op_timeout: Duration,
    gens: std::sync::Arc<Generations>,
    clock: std::sync::Arc<ServerClock>,
    replica_acks: usize,
    response_timeout: Duration,
    /// Cluster only: tombstones this backend wrote, by key.
    own_tombstones: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>>,
    /// Fails calls fast while Redis is unreachable.
    breaker: std::sync::Arc<breaker::Breaker>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("namespace", &self.namespace)
            .field("window_ms", &self.window_ms)
            .field("chunk_size", &self.chunk_size)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// A builder connecting to `url` (`redis://[user:password@]host:port/db`,
    /// or `rediss://` with a TLS feature of redis-rs enabled).
    pub fn builder(url: impl Into<String>) -> RedisBackendBuilder {
        Self::with_source(Source::Url(url.into()))
    }

    /// A builder over an existing connection manager (its own timeouts and
    /// reconnection settings apply; the builder's timeouts still bound each
    /// operation as a whole).
    pub fn from_connection(conn: ConnectionManager) -> RedisBackendBuilder {
        Self::with_source(Source::Connection(conn))
    }

    /// A builder connecting to a Redis Cluster through `seeds` (URLs of some
    /// of its nodes; the others are discovered). See [the cluster
    /// protocol](self#redis-cluster).
    pub fn cluster_builder<I, S>(seeds: I) -> RedisBackendBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_source(Source::Cluster(seeds.into_iter().map(Into::into).collect()))
    }

    /// A builder over an existing Redis Cluster connection (its own timeouts
    /// and retry settings apply; the builder's timeouts still bound each call
    /// as a whole).
    pub fn from_cluster_connection(conn: ClusterConnection) -> RedisBackendBuilder {
        Self::with_source(Source::ClusterConnection(conn))
    }

    fn with_source(source: Source) -> RedisBackendBuilder {
        RedisBackendBuilder {
            source,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            window: DEFAULT_TOMBSTONE_WINDOW,
            chunk_size: DEFAULT_CHUNK_SIZE,
            replica_acks: 0,
            cool_down: DEFAULT_CIRCUIT_COOL_DOWN,
        }
    }

    /// The single-node connection this backend uses (a clone sharing it), or
    /// `None` for a cluster backend.
    pub fn connection(&self) -> Option<ConnectionManager> {
        match &self.conn {
            Conn::Single(c) => Some(c.clone()),
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

    /// The single-node connection; a protocol error on a cluster backend
    /// (never happens: cluster calls take their own path).
    fn single(&self) -> Result<ConnectionManager, BackendError> {
        self.connection().ok_or_else(|| BackendError::new(BackendErrorKind::Protocol, "not a single-node backend"))
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
        match &self.conn {
            Conn::Single(conn) => {
                for script in [&*PUT, &*DELETE, &*UNREGISTER, &*INVALIDATE, &*DRAIN] {
                    let mut conn = conn.clone();
                    self.bounded(async move { script.load_async(&mut conn).await }, None).await?;
                }
            }
            Conn::Cluster(handle) => {
                for script in cluster::scripts() {
                    let mut conn = handle.get();
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
            (Conn::Single(_), _) => Some(None),
            (Conn::Cluster(_), Some(k)) => Some(Some(redis::cluster_routing::Slot::for_key(k))),
            (Conn::Cluster(_), None) => None,
        };
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
            if e.is_transient() {
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
            Ok(Err(e)) => Err(map_error(e, key)),
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

    async fn unregister(&self, member: &[u8], indexes: &[Vec<u8>]) {
        let mut inv = UNREGISTER.prepare_invoke();
        for index in indexes {
            inv.key(index.as_slice());
        }
        inv.arg(member);
        let Ok(mut conn) = self.single() else { return };
        let result = self.bounded(async { inv.invoke_async::<Value>(&mut conn).await }, None).await;
        if let Err(e) = result {
            // Harmless: the stray registration names an old generation and is
            // pruned once it expires.
            warn!(error = %e, "could not unregister a previous generation");
        }
    }

    /// Drains one dependency's drain key, chunk by chunk.
    async fn drain(&self, dep: &str) -> Result<u64, BackendError> {
        let drain = self.drain_key(dep);
        let index = self.index_key(dep);
        let mut dropped = 0;
        loop {
            let mut conn = self.single()?;
            let mut inv = DRAIN.key(drain.as_str());
            inv.arg(self.chunk_size).arg(index.as_str());
            let reply: Value = self.bounded(async { inv.invoke_async(&mut conn).await }, Some(&drain)).await?;
            let items = array(reply, &drain)?;
            let (n, left) = match items.as_slice() {
                [n, left] => (int(n, &drain)?, int(left, &drain)?),
                _ => return Err(protocol(&drain, "unexpected drain reply")),
            };
            dropped += u64::try_from(n).unwrap_or(0);
            if left == 0 {
                return Ok(dropped);
            }
        }
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn get(&self, key: &str) -> Result<Lookup, BackendError> {
        let mut conn = match &self.conn {
            Conn::Single(c) => c.clone(),
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
                let mut conn = c.clone();
                self.bounded(async { cmd.query_async::<bool>(&mut conn).await }, Some(&entry)).await
            }
            Conn::Cluster(c) => {
                let mut conn = c.get();
                self.bounded(async { cmd.query_async::<bool>(&mut conn).await }, Some(&entry)).await
            }
        }
    }

    async fn put(&self, req: PutRequest<'_>) -> Result<PutOutcome, BackendError> {
        let mut conn = match &self.conn {
            Conn::Single(c) => c.clone(),
            Conn::Cluster(_) => return self.cluster_put(req).await,
        };
        let entry = self.entry_key(req.key);
        let indexes: Vec<String> = req.deps.iter().map(|d| self.index_key(d)).collect();
        let mut inv = PUT.key(entry.as_str());
        for index in &indexes {
            inv.key(index.as_str());
        }
        let tombstones: Vec<String> = match req.ticket {
            Some(_) => req.deps.iter().map(|d| self.tombstone_key(d)).collect(),
            None => Vec::new(),
        };
        for t in &tombstones {
            inv.key(t.as_str());
        }
        let ttl_ms = saturating_u64(req.ttl.as_millis()).max(1);
        let ticket = req.ticket.map(|t| t.value().to_string()).unwrap_or_default();
        let gen = self.gens.next();
        inv.arg(req.value.as_ref())
            .arg(ttl_ms)
            .arg(ticket)
            .arg(self.window_us.as_str())
            .arg(gen.as_str())
            .arg(req.deps.len());
        let reply: Value = self.bounded(async { inv.invoke_async(&mut conn).await }, Some(&entry)).await?;
        let mut items = array(reply, &entry)?.into_iter();
        let status = match items.next() {
            Some(v) => int(&v, &entry)?,
            None => return Err(protocol(&entry, "empty reply to put")),
        };
        match status {
            0 => {
                self.clock.reset();
                Ok(PutOutcome::Refused)
            }
            1 => {
                if let Some(member) = items.next() {
                    let member = bulk(member, &entry)?;
                    let stale = items.map(|v| bulk(v, &entry)).collect::<Result<Vec<_>, _>>()?;
                    self.unregister(&member, &stale).await;
                }
                Ok(PutOutcome::Stored)
            }
            -1 => {
                let i = items.next().map(|v| int(&v, &entry)).transpose()?;
                let n = indexes.len() as i64;
                let name = match i {
                    Some(1) => entry.as_str(),
                    Some(i) if i >= 2 && i <= n + 1 => indexes[(i - 2) as usize].as_str(),
                    Some(i) if i > n + 1 && i <= 2 * n + 1 => tombstones[(i - n - 2) as usize].as_str(),
                    _ => entry.as_str(),
                };
                Err(foreign(name))
            }
            _ => Err(protocol(&entry, "unexpected status in reply to put")),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let mut conn = match &self.conn {
            Conn::Single(c) => c.clone(),
            Conn::Cluster(_) => return self.cluster_delete(key).await,
        };
        let entry = self.entry_key(key);
        let inv = DELETE.key(entry.as_str());
        let reply: Value = self.bounded(async { inv.invoke_async(&mut conn).await }, Some(&entry)).await?;
        let mut items = array(reply, &entry)?.into_iter();
        let existed = match items.next() {
            Some(v) => int(&v, &entry)? > 0,
            None => return Err(protocol(&entry, "empty reply to delete")),
        };
        if let Some(member) = items.next() {
            let member = bulk(member, &entry)?;
            let indexes = items.map(|v| bulk(v, &entry)).collect::<Result<Vec<_>, _>>()?;
            if !indexes.is_empty() {
                self.unregister(&member, &indexes).await;
            }
        }
        Ok(existed)
    }

    async fn invalidate(&self, deps: &[String]) -> Result<Invalidated, BackendError> {
        if deps.is_empty() {
            return Ok(Invalidated::complete(0));
        }
        let mut conn = match &self.conn {
            Conn::Single(c) => c.clone(),
            Conn::Cluster(_) => return self.cluster_invalidate(deps).await.map(Invalidated::complete),
        };
        let mut keys = Vec::with_capacity(deps.len() * 3);
        for dep in deps {
            keys.push(self.tombstone_key(dep));
            keys.push(self.index_key(dep));
            keys.push(self.drain_key(dep));
        }
        let mut inv = INVALIDATE.prepare_invoke();
        for k in &keys {
            inv.key(k.as_str());
        }
        inv.arg(self.window_ms.as_str()).arg(self.chunk_size);
        self.clock.reset();
        let first = &keys[1];
        let reply: Value = self.bounded(async { inv.invoke_async(&mut conn).await }, Some(first)).await?;
        let items = array(reply, first)?;
        let mut items = items.iter();
        let status = match items.next() {
            Some(v) => int(v, first)?,
            None => return Err(protocol(first, "empty reply to invalidate")),
        };
        if status < 0 {
            let i = items.next().map(|v| int(v, first)).transpose()?;
            let name = i.and_then(|i| usize::try_from(i - 1).ok()).and_then(|i| keys.get(i)).unwrap_or(first);
            return Err(foreign(name));
        }
        let mut dropped = u64::try_from(status).unwrap_or(0);
        for j in items {
            let j = int(j, first)?;
            let dep = usize::try_from(j - 1)
                .ok()
                .and_then(|j| deps.get(j))
                .ok_or_else(|| protocol(first, "invalidate named an unknown dependency"))?;
            dropped += self.drain(dep).await?;
        }
        Ok(Invalidated::complete(dropped))
    }

    async fn ticket(&self) -> Result<Ticket, BackendError> {
        let mut conn = match &self.conn {
            Conn::Single(c) => c.clone(),
            Conn::Cluster(_) => return Ok(self.cluster_ticket()),
        };
        let cmd = redis::cmd("TIME");
        let reply: Value = self.bounded(async { cmd.query_async(&mut conn).await }, None).await?;
        match reply {
            Value::Array(time) => parse_time(&time, "TIME"),
            _ => Err(BackendError::new(BackendErrorKind::Protocol, "unexpected reply to TIME")),
        }
    }
}

/// An estimate of the Redis server's clock: the last `TIME` reading and the
/// local monotonic instant its reply arrived.
///
/// At a later local instant `c`, the server's clock reads at least
/// `s + (c - received)` (the reading was taken before the reply arrived),
/// minus the drift between the two clocks, bounded here by 100 µs plus 0.1 %
/// of the elapsed time (more than the slew of two NTP-disciplined clocks). Estimates are used for at most [`CALIBRATION_TTL`]; then the next
/// `get` reads `TIME` again in the same round trip. After this backend
/// invalidates or has a put refused, the next `get` reads `TIME` exactly, so
/// that a reload right after an invalidation gets a ticket after it.
#[derive(Debug, Default)]
struct ServerClock {
    reading: std::sync::Mutex<Option<(u64, Instant)>>,
}

/// How long a `TIME` reading is used to estimate tickets.
const CALIBRATION_TTL: Duration = Duration::from_millis(200);

impl ServerClock {
    fn calibrate(&self, server_us: u64, received: Instant) {
        let mut r = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        *r = Some((server_us, received));
    }

    /// Forgets the reading: the next `get` reads `TIME` exactly.
    fn reset(&self) {
        *self.reading.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A lower bound of the server's time now, in µs, if calibrated recently.
    fn estimate(&self) -> Option<u64> {
        let reading = *self.reading.lock().unwrap_or_else(|p| p.into_inner());
        let (server_us, received) = reading?;
        let elapsed = received.elapsed();
        if elapsed >= CALIBRATION_TTL {
            return None;
        }
        let elapsed_us = saturating_u64(elapsed.as_micros());
        let margin = 100 + elapsed_us / 1_000;
        Some((server_us + elapsed_us).saturating_sub(margin))
    }
}

/// Random 64-bit generations, distinct within a process and unlikely to
/// collide across processes.
struct Generations {
    seed: u64,
    counter: AtomicU64,
}

impl Generations {
    fn new() -> std::sync::Arc<Self> {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
        );
        h.write_u32(std::process::id());
        std::sync::Arc::new(Generations { seed: h.finish(), counter: AtomicU64::new(0) })
    }

    /// Sixteen lowercase hex digits.
    fn next(&self) -> String {
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

fn saturating_u64(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn protocol(key: &str, message: &str) -> BackendError {
    BackendError::new(BackendErrorKind::Protocol, message).with_key(key)
}

fn foreign(key: &str) -> BackendError {
    BackendError::new(
        BackendErrorKind::ForeignData,
        "the key holds data this library did not write (wrong Redis type or malformed)",
    )
    .with_key(key)
}

fn array(v: Value, key: &str) -> Result<Vec<Value>, BackendError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(protocol(key, "expected an array reply")),
    }
}

fn int(v: &Value, key: &str) -> Result<i64, BackendError> {
    match v {
        Value::Int(n) => Ok(*n),
        _ => Err(protocol(key, "expected an integer in the reply")),
    }
}

fn bulk(v: Value, key: &str) -> Result<Vec<u8>, BackendError> {
    match v {
        Value::BulkString(b) => Ok(b),
        _ => Err(protocol(key, "expected a string in the reply")),
    }
}

/// Turns a `TIME` reply into a ticket in microseconds.
fn parse_time(parts: &[Value], key: &str) -> Result<Ticket, BackendError> {
    let num = |v: &Value| -> Option<u64> {
        match v {
            Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        }
    };
    match parts {
        [s, us] => match (num(s), num(us)) {
            (Some(s), Some(us)) => Ok(Ticket::new(s.saturating_mul(1_000_000) + us)),
            _ => Err(protocol(key, "malformed server time")),
        },
        _ => Err(protocol(key, "malformed server time")),
    }
}

/// Maps a redis-rs error to a backend error kind.
fn map_error(e: RedisError, key: Option<&str>) -> BackendError {
    let kind = if e.is_timeout() {
        BackendErrorKind::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_cluster_error() {
        BackendErrorKind::Unavailable
    } else {
        match e.kind() {
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask,
            )
            | ErrorKind::ClusterConnectionNotFound => BackendErrorKind::Unavailable,
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => BackendErrorKind::Protocol,
            ErrorKind::Extension => {
                // the first server error's code (a pipeline error has no code
                // of its own)
                let code = e
                    .clone()
                    .into_server_errors()
                    .and_then(|errors| errors.first().map(|(_, server)| server.code().to_owned()));
                match code.as_deref() {
                    Some("WRONGTYPE") => BackendErrorKind::ForeignData,
                    // a long-running script elsewhere; retrying later may succeed
                    Some("BUSY") => BackendErrorKind::Unavailable,
                    _ => BackendErrorKind::Refused,
                }
            }
            _ => BackendErrorKind::Refused,
        }
    };
    let message = match kind {
        BackendErrorKind::ForeignData => "the key holds data this library did not write (wrong Redis type)".to_owned(),
        _ => format!("Redis: {e}"),
    };
    let err = BackendError::new(kind, message).with_source(e);
    match key {
        Some(k) => err.with_key(k),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_braces_are_escaped() {
        assert_eq!(escape_namespace("a{b}%c"), "a%7Bb%7D%25c");
    }

    #[test]
    fn generations_are_sixteen_hex_digits_and_distinct() {
        let g = Generations::new();
        let (a, b) = (g.next(), g.next());
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn time_parses_to_microseconds() {
        let t =
            parse_time(&[Value::BulkString(b"1700000000".to_vec()), Value::BulkString(b"42".to_vec())], "k").unwrap();
        assert_eq!(t.value(), 1_700_000_000_000_042);
    }
}
