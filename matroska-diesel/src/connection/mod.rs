//! The integration at the connection: [`CachedConnection`] wraps a
//! diesel-async connection, and everything the application does through it
//! (queries, writes of every kind, transactions) keeps the cache correct.
//! See the [crate docs](crate) for the rules.

pub(crate) mod conn;
pub(crate) mod raw;
mod transaction;
pub(crate) mod write;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use matroska::{Cache, Codec, Dep};
use matroska_sql::Analyses;
use tracing::{debug, warn};

pub use conn::CachedConnection;
pub use transaction::{CachedTransactionManager, Committed, Levels};

use crate::outbox::{Outbox, OutboxConfig};

/// A cache as the connection sees it: something that invalidates
/// dependencies. Implemented for every [`Cache`]; implement it to put a
/// wrapper (one that records or filters invalidations) in between.
pub trait Invalidator: Send + Sync + 'static {
    /// Invalidates `deps` (one backend call); returns the entries dropped.
    /// On failure the dependencies must stay pending in the cache (as
    /// [`Cache::invalidate`] keeps them) and be applied before it serves
    /// reads again.
    fn invalidate(&self, deps: Vec<Dep>) -> Pin<Box<dyn Future<Output = Result<u64, matroska::Error>> + Send + '_>>;

    /// How many invalidations are pending after failures.
    fn pending(&self) -> usize {
        0
    }

    /// Applies pending invalidations now; returns how many are left.
    fn flush(&self) -> Pin<Box<dyn Future<Output = Result<usize, matroska::Error>> + Send + '_>> {
        Box::pin(async { Ok(0) })
    }

    /// Installs what the cache must run before serving reads, at first and
    /// after an outage (the outbox: see [`Cache::set_recovery`]).
    fn set_recovery(&self, recovery: &Arc<dyn matroska::Recovery>) {
        let _ = recovery;
    }
}

impl<C: Codec> Invalidator for Cache<C> {
    fn invalidate(&self, deps: Vec<Dep>) -> Pin<Box<dyn Future<Output = Result<u64, matroska::Error>> + Send + '_>> {
        Box::pin(Cache::invalidate(self, deps))
    }

    fn pending(&self) -> usize {
        self.pending_invalidations()
    }

    fn flush(&self) -> Pin<Box<dyn Future<Output = Result<usize, matroska::Error>> + Send + '_>> {
        Box::pin(self.flush_pending())
    }

    fn set_recovery(&self, recovery: &Arc<dyn matroska::Recovery>) {
        Cache::set_recovery(self, recovery);
    }
}

/// What the connection does with a statement it cannot parse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnparsedStatements {
    /// Refuse it before it runs, with an error naming the statement
    /// ([`Refusal::Unparsed`]); nothing is written. The default: a statement
    /// the cache cannot read may write anything.
    #[default]
    Refuse,
    /// Run it, then invalidate every cached model (every model with
    /// `derive(CacheModel)` in the program): correct, but it empties the
    /// cache of those models each time.
    InvalidateEverything,
}

/// Why the connection refused a statement before running it (nothing was
/// written). It arrives inside a `diesel::result::Error`
/// (`QueryBuilderError`), since Diesel's APIs return one; read it back with
/// [`Refusal::of`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Transaction control as SQL text (`BEGIN`, `COMMIT`, `ROLLBACK`,
    /// `SAVEPOINT`): it would bypass the transaction bookkeeping of both the
    /// cache and Diesel. Use `transaction(..)`, which the cache follows.
    #[error("matroska-diesel refused `{0}` sent as SQL: use the connection's transaction API (transaction, begin_test_transaction), which the cache follows")]
    TransactionControl(String),
    /// The statement could not be parsed, so what it writes is unknown (see
    /// [`UnparsedStatements`]).
    #[error("matroska-diesel cannot parse this statement, so it cannot tell what it writes; nothing was run ({0}). Rewrite it, or run it with CachedConnection::execute_touching naming the tables it writes")]
    Unparsed(String),
}

impl Refusal {
    /// The refusal a Diesel error carries, if it came from this crate.
    pub fn of(e: &diesel::result::Error) -> Option<&Refusal> {
        match e {
            diesel::result::Error::QueryBuilderError(inner) => inner.downcast_ref::<Refusal>(),
            _ => None,
        }
    }

    pub(crate) fn into_diesel(self) -> diesel::result::Error {
        warn!(refusal = %self, "statement refused");
        diesel::result::Error::QueryBuilderError(Box::new(self))
    }
}

/// Counters of what the connections did with writes.
#[derive(Debug, Default)]
struct Counters {
    writes: AtomicU64,
    coarse: AtomicU64,
    refused: AtomicU64,
    failed_invalidations: AtomicU64,
}

/// A snapshot of a [`CachedDatabase`]'s counters (every connection it
/// wrapped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteStats {
    /// Write statements run (committed or not).
    pub writes: u64,
    /// Of those, written to tables invalidated coarsely (every cached list
    /// and relation of the table).
    pub coarse: u64,
    /// Statements refused before running.
    pub refused: u64,
    /// Committed writes whose invalidation failed and is pending in the
    /// cache.
    pub failed_invalidations: u64,
}

pub(crate) struct Shared {
    cache: Arc<dyn Invalidator>,
    analyses: Analyses,
    unparsed: UnparsedStatements,
    counters: Counters,
    pub(crate) outbox: Option<Arc<Outbox>>,
    /// Tables that writes to a table also write (triggers, views), by
    /// lower-case table name: their coarse dependencies.
    triggers: HashMap<String, Vec<Dep>>,
}

impl Shared {
    /// The plan of a statement's text, or its refusal.
    pub(crate) fn plan(&self, sql: &str, dialect: matroska_sql::Dialect) -> Result<write::Plan, diesel::result::Error> {
        let analysis = self.analyses.get(sql, dialect);
        let also = |w: &matroska_sql::Write| {
            let mut deps = write::referential(&w.table.table, &w.kind);
            if let Some(t) = self.triggers.get(&w.table.table.to_lowercase()) {
                deps.extend(t.iter().cloned());
            }
            deps
        };
        match write::plan(&analysis, self.unparsed == UnparsedStatements::InvalidateEverything, &also) {
            Ok(plan) => {
                match &plan {
                    write::Plan::Plain => {}
                    write::Plan::Coarse(_) | write::Plan::Script(_) => {
                        self.counters.writes.fetch_add(1, Ordering::Relaxed);
                        self.counters.coarse.fetch_add(1, Ordering::Relaxed);
                    }
                    write::Plan::Precise { .. } => {
                        self.counters.writes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(plan)
            }
            Err(r) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Err(r.into_diesel())
            }
        }
    }

    /// Invalidates what a committed write changed (recorded as intent
    /// `intent`, if any), then lets the outbox forget the intent.
    pub(crate) async fn apply(&self, deps: Vec<Dep>, intent: Option<i64>) -> Result<u64, matroska::Error> {
        let r = self.invalidate(deps).await;
        if let (Ok(_), Some(id), Some(outbox)) = (&r, intent, &self.outbox) {
            outbox.applied(id);
        }
        r
    }

    /// Invalidates after a commit. A failure never fails the write: the
    /// cache keeps the dependencies pending and applies them before it
    /// serves reads again.
    pub(crate) async fn invalidate(&self, mut deps: Vec<Dep>) -> Result<u64, matroska::Error> {
        if deps.is_empty() {
            return Ok(0);
        }
        deps.sort_unstable();
        deps.dedup();
        let n = deps.len();
        match self.cache.invalidate(deps).await {
            Ok(dropped) => {
                debug!(deps = n, dropped, "invalidated after the write");
                Ok(dropped)
            }
            Err(e) => {
                self.counters.failed_invalidations.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, deps = n, "committed, but invalidating failed: kept pending in the cache");
                Err(e)
            }
        }
    }

    /// Invalidates `deps` from a task of its own, now and once more a
    /// second later: what a write whose caller stopped waiting may have
    /// committed (the second pass covers a commit that lands after the
    /// first).
    pub(crate) fn invalidate_detached(self: &Arc<Self>, deps: Vec<Dep>) {
        if deps.is_empty() {
            return;
        }
        let shared = Arc::clone(self);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = shared.invalidate(deps.clone()).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = shared.invalidate(deps).await;
                });
            }
            Err(_) => {
                warn!(deps = deps.len(), "a write was abandoned outside a tokio runtime: its invalidation is lost")
            }
        }
    }
}

/// Configures a [`CachedDatabase`].
#[must_use]
pub struct CachedDatabaseBuilder {
    cache: Arc<dyn Invalidator>,
    unparsed: UnparsedStatements,
    analyses: u64,
    outbox: Option<Arc<Outbox>>,
    outbox_error: Option<String>,
    triggers: HashMap<String, Vec<Dep>>,
}

impl fmt::Debug for CachedDatabaseBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedDatabaseBuilder").field("unparsed", &self.unparsed).finish_non_exhaustive()
    }
}

impl CachedDatabaseBuilder {
    /// What to do with statements that cannot be parsed (default
    /// [`UnparsedStatements::Refuse`]).
    pub fn unparsed_statements(mut self, policy: UnparsedStatements) -> Self {
        self.unparsed = policy;
        self
    }

    /// Declares that every write to `table` also writes `tables`: a
    /// trigger, a rule, a foreign-key action not declared on the models, a
    /// model over a view of `table`. They are invalidated coarsely (every
    /// cached list, relation and row of each) after every write to `table`,
    /// with it. Names may be schema-qualified; repeatable.
    ///
    /// Referential actions declared on models
    /// (`#[matroska(belongs_to(Parent, on_delete = "cascade"))]`) need no
    /// declaration here.
    ///
    /// ```ignore
    /// // CREATE TRIGGER comment_counts AFTER INSERT ON comments ... UPDATE posts SET comment_count = ...
    /// let cached = CachedDatabase::builder(cache).trigger("comments", &["posts"]).build()?;
    /// ```
    pub fn trigger(mut self, table: &str, tables: &[&str]) -> Self {
        let key = table.rsplit('.').next().unwrap_or(table).trim_matches(|c| c == '"' || c == '`').to_lowercase();
        let deps = self.triggers.entry(key).or_default();
        for t in tables {
            deps.extend(write::touched(t));
        }
        deps.sort_unstable();
        deps.dedup();
        self
    }

    /// How many statement texts' analyses are kept (default 1024).
    pub fn analysis_cache(mut self, statements: u64) -> Self {
        self.analyses = statements.max(1);
        self
    }

    /// Makes invalidation durable with a transactional outbox (see the
    /// [`outbox`](crate::outbox) module) in the database at `database_url`,
    /// reached through connections of type `C` (the same type as the
    /// application's): every committed write's intent is recorded in the
    /// same transaction, applied right after the commit, by any process if
    /// this one cannot, and before the cache serves reads after an outage.
    /// The table must exist ([`Outbox::create_table`](crate::Outbox::create_table)).
    pub fn outbox<C>(mut self, config: OutboxConfig, database_url: impl Into<String>) -> Self
    where
        C: diesel_async::AsyncConnection + 'static,
        C::Backend: crate::CacheBackend,
        for<'c> C: diesel_async::AsyncConnectionCore<Row<'c, 'static> = <C as conn::RowOf>::R>,
        C: conn::RowOf,
        <C as conn::RowOf>::R: Send + 'static,
        for<'c> <C as conn::RowOf>::R: diesel::row::Row<'c, C::Backend>,
    {
        match config.validate() {
            Ok(()) => {
                self.outbox = Some(Arc::new(Outbox::new::<C>(config, database_url.into(), Arc::clone(&self.cache))));
            }
            Err(e) => self.outbox_error = Some(e),
        }
        self
    }

    /// Builds it (and, with an outbox, starts its drainer on the current
    /// tokio runtime and installs it as the cache's recovery).
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) for an invalid outbox table
    /// name.
    pub fn build(self) -> Result<CachedDatabase, crate::Error> {
        if let Some(e) = self.outbox_error {
            return Err(crate::Error::Config(e));
        }
        if let Some(o) = &self.outbox {
            let recovery: Arc<dyn matroska::Recovery> = o.clone();
            self.cache.set_recovery(&recovery);
            o.start();
        }
        Ok(CachedDatabase {
            shared: Arc::new(Shared {
                cache: self.cache,
                analyses: Analyses::new(self.analyses),
                unparsed: self.unparsed,
                counters: Counters::default(),
                outbox: self.outbox,
                triggers: self.triggers,
            }),
        })
    }
}

/// The cache a program's Diesel connections keep correct, with its settings:
/// wrap each connection (from a pool, or established) with
/// [`wrap`](Self::wrap) or [`connect`](Self::connect), and pass the
/// [`CachedConnection`] wherever Diesel takes a connection.
///
/// Cheap to clone; clones share the cache, the analyses of statements, the
/// counters and the outbox.
#[derive(Clone)]
pub struct CachedDatabase {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for CachedDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedDatabase")
            .field("unparsed", &self.shared.unparsed)
            .field("outbox", &self.shared.outbox.is_some())
            .finish_non_exhaustive()
    }
}

impl CachedDatabase {
    /// Invalidates `cache`, with the defaults (no outbox).
    pub fn new<C: Codec>(cache: Cache<C>) -> Self {
        Self::builder(cache).build().unwrap_or_else(|_| unreachable!("no outbox, nothing to validate"))
    }

    /// A builder invalidating `cache`.
    pub fn builder<C: Codec>(cache: Cache<C>) -> CachedDatabaseBuilder {
        Self::builder_with(Arc::new(cache))
    }

    /// A builder invalidating through any [`Invalidator`].
    pub fn builder_with(cache: Arc<dyn Invalidator>) -> CachedDatabaseBuilder {
        CachedDatabaseBuilder {
            cache,
            unparsed: UnparsedStatements::default(),
            analyses: 1024,
            outbox: None,
            outbox_error: None,
            triggers: HashMap::new(),
        }
    }

    /// Wraps a connection (an established one, or one checked out of a
    /// pool: deadpool's `Object`, bb8's `PooledConnection`).
    pub fn wrap<C>(&self, conn: C) -> CachedConnection<C> {
        CachedConnection::new(conn, Arc::clone(&self.shared))
    }

    /// Establishes a connection of type `C` and wraps it.
    ///
    /// # Errors
    /// Diesel's connection error.
    pub async fn connect<C: diesel_async::AsyncConnection>(
        &self,
        database_url: &str,
    ) -> diesel::ConnectionResult<CachedConnection<C>> {
        Ok(self.wrap(C::establish(database_url).await?))
    }

    /// The outbox, if it was built with one.
    pub fn outbox(&self) -> Option<&Arc<Outbox>> {
        self.shared.outbox.as_ref()
    }

    /// Counters of the writes seen.
    pub fn write_stats(&self) -> WriteStats {
        let c = &self.shared.counters;
        WriteStats {
            writes: c.writes.load(Ordering::Relaxed),
            coarse: c.coarse.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            failed_invalidations: c.failed_invalidations.load(Ordering::Relaxed),
        }
    }

    /// How many invalidations of committed writes are pending in the cache
    /// (it failed; the cache applies them before serving reads again).
    pub fn pending_invalidations(&self) -> usize {
        self.shared.cache.pending()
    }

    /// Applies pending invalidations now.
    ///
    /// # Errors
    /// The cache's error if some are still pending.
    pub async fn flush(&self) -> Result<(), matroska::Error> {
        self.shared.cache.flush().await.map(|_| ())
    }
}
