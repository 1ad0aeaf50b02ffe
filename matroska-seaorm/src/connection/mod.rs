//! The integration at the connection: [`CachedDatabase`] wraps a SeaORM
//! `DatabaseConnection`, and everything the application does through it
//! (queries, writes of every kind, transactions opened by any API) keeps the
//! cache correct. See the [crate docs](crate) for the rules.

mod stream;
mod transaction;
pub(crate) mod write;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use matroska::{Cache, Codec, Dep};
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, ExecResult, IsolationLevel, QueryResult,
    SqliteTransactionMode, Statement, TransactionError, TransactionOptions, TransactionTrait,
};
use tracing::{debug, warn};

pub use stream::CachedStream;
pub use transaction::{CachedTransaction, Committed};

use crate::outbox::{Outbox, OutboxConfig};
use matroska_sql::Analyses;
use write::{Answer, Call, Plan, Refused};

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
    /// Run it, then invalidate every cached entity (every entity with
    /// `derive(CacheEntity)` in the program): correct, but it empties the
    /// cache of those entities each time.
    InvalidateEverything,
}

/// Why the connection refused a statement before running it (nothing was
/// written). Carried inside a `DbErr`, since SeaORM's APIs return one; read
/// it back with [`Refusal::of`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Transaction control as SQL text (`BEGIN`, `COMMIT`, `ROLLBACK`,
    /// `SAVEPOINT`): it would bypass the transaction bookkeeping of both the
    /// cache and SeaORM's driver. Use `begin`/`commit`/`rollback` or
    /// `transaction(..)`.
    #[error("matroska-seaorm refused `{0}` sent as SQL: use the transaction API (begin, commit, rollback, transaction), which the cache follows")]
    TransactionControl(String),
    /// The statement could not be parsed, so what it writes is unknown (see
    /// [`UnparsedStatements`]).
    #[error("matroska-seaorm cannot parse this statement, so it cannot tell what it writes; nothing was run ({0}). Rewrite it, or run it with CachedDatabase::execute_touching naming the tables it writes")]
    Unparsed(String),
    /// A write through a connection the cache does not see, while a
    /// [`CachedDatabase`] exists in this process.
    #[error("{entity:?} was written through {connection}, which matroska-seaorm does not see; write through the CachedDatabase (or its transactions), or allow it with matroska_seaorm::allow_uncached_writes(true)")]
    UncachedConnection {
        /// The table written.
        entity: String,
        /// The connection type used.
        connection: String,
    },
}

const REFUSAL_PREFIX: &str = "matroska-seaorm refusal: ";

impl Refusal {
    /// The refusal a `DbErr` carries, if it came from this crate.
    pub fn of(e: &DbErr) -> Option<Refusal> {
        let DbErr::Custom(text) = e else { return None };
        let rest = text.strip_prefix(REFUSAL_PREFIX)?;
        let (kind, detail) = rest.split_once(": ")?;
        let mut parts = detail.splitn(2, '\u{1f}');
        let first = parts.next().unwrap_or_default().to_owned();
        Some(match kind {
            "control" => Refusal::TransactionControl(first),
            "unparsed" => Refusal::Unparsed(first),
            "uncached" => Refusal::UncachedConnection { entity: first, connection: parts.next()?.to_owned() },
            _ => return None,
        })
    }

    pub(crate) fn into_db_err(self) -> DbErr {
        let encoded = match &self {
            Refusal::TransactionControl(s) => format!("control: {s}"),
            Refusal::Unparsed(s) => format!("unparsed: {s}"),
            Refusal::UncachedConnection { entity, connection } => format!("uncached: {entity}\u{1f}{connection}"),
        };
        tracing::warn!(refusal = %self, "statement refused");
        DbErr::Custom(format!("{REFUSAL_PREFIX}{encoded}"))
    }
}

impl From<Refused> for Refusal {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Control(what) => Refusal::TransactionControl(what.to_owned()),
            Refused::Unparsed(msg) => Refusal::Unparsed(msg),
        }
    }
}

/// Counters of what the connection did with writes.
#[derive(Debug, Default)]
struct Counters {
    writes: AtomicU64,
    coarse: AtomicU64,
    refused: AtomicU64,
    failed_invalidations: AtomicU64,
}

/// A snapshot of a [`CachedDatabase`]'s counters.
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
    /// Tables that writes to a table also write (triggers), by lower-case
    /// table name: their coarse dependencies.
    triggers: HashMap<String, Vec<Dep>>,
}

impl Shared {
    fn plan(&self, sql: &str, backend: DbBackend) -> Result<Plan, DbErr> {
        let analysis = self.analyses.get(sql, dialect(backend));
        let extra = |w: &matroska_sql::Write| {
            let mut deps = write::referential(&w.table.table, &w.kind);
            if let Some(t) = self.triggers.get(&w.table.table.to_lowercase()) {
                deps.extend(t.iter().cloned());
            }
            deps
        };
        match write::plan(&analysis, self.unparsed == UnparsedStatements::InvalidateEverything, &extra) {
            Ok(plan) => {
                if let Plan::Writes(ws) | Plan::Script(ws) = &plan {
                    self.counters.writes.fetch_add(1, Ordering::Relaxed);
                    if ws.iter().any(|w| matches!(w, write::Planned::Coarse(_))) {
                        self.counters.coarse.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(plan)
            }
            Err(r) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Err(Refusal::from(r).into_db_err())
            }
        }
    }

    /// Invalidates what a committed write recorded as intent `intent` (if
    /// any), then deletes the intent.
    pub(crate) async fn apply(&self, deps: Vec<Dep>, intent: Option<i64>) -> Result<u64, matroska::Error> {
        let r = self.invalidate(deps).await;
        if let (Ok(_), Some(id), Some(outbox)) = (&r, intent, &self.outbox) {
            let outbox = Arc::clone(outbox);
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move { outbox.applied(id).await });
                }
                Err(_) => outbox.applied(id).await,
            }
        }
        r
    }

    /// Invalidates what a committed transaction recorded as `intents`, then
    /// deletes them.
    pub(crate) async fn apply_all(&self, deps: Vec<Dep>, intents: Vec<i64>) -> Result<u64, matroska::Error> {
        let mut intents = intents.into_iter();
        let first = intents.next();
        let r = self.apply(deps, first).await;
        if r.is_ok() {
            for id in intents {
                self.apply(Vec::new(), Some(id)).await.ok();
            }
        }
        r
    }

    /// Records `deps` as an intent in `txn` when there is an outbox.
    pub(crate) async fn record(&self, txn: &sea_orm::DatabaseTransaction, deps: &[Dep]) -> Result<Option<i64>, DbErr> {
        match &self.outbox {
            Some(outbox) if !deps.is_empty() => Ok(Some(outbox.record(txn, deps).await?)),
            _ => Ok(None),
        }
    }

    /// Invalidates after a commit. A failure never fails the write: the
    /// cache keeps the dependencies pending and applies them before it
    /// serves reads again.
    pub(crate) async fn invalidate(&self, deps: Vec<Dep>) -> Result<u64, matroska::Error> {
        if deps.is_empty() {
            return Ok(0);
        }
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
}

/// Whether a `CachedDatabase` was built in this process (writes through
/// other connections are then refused by the entities' hooks).
static BUILT: AtomicBool = AtomicBool::new(false);
static ALLOW_UNCACHED: AtomicBool = AtomicBool::new(false);

/// Lets ActiveModel writes through connections other than a
/// [`CachedDatabase`] proceed even when one exists in this process (a
/// seeding script sharing a binary with the server, say). Their
/// invalidations are then the caller's job.
pub fn allow_uncached_writes(allow: bool) {
    ALLOW_UNCACHED.store(allow, Ordering::SeqCst);
}

/// Checks, from an entity's `ActiveModelBehavior` hook, that a write goes
/// through a connection the cache sees: a [`CachedDatabase`] or one of its
/// transactions. Writes through another connection are allowed while no
/// `CachedDatabase` exists in the process (tests, seeders, migrations) or
/// with [`allow_uncached_writes`]; otherwise refused before any SQL runs.
///
/// # Errors
/// [`Refusal::UncachedConnection`], inside a `DbErr`.
pub fn check_connection<C: ?Sized>(entity: &str) -> Result<(), DbErr> {
    let t = typeid::of::<C>();
    if t == typeid::of::<CachedDatabase>()
        || t == typeid::of::<CachedTransaction>()
        || !BUILT.load(Ordering::SeqCst)
        || ALLOW_UNCACHED.load(Ordering::SeqCst)
    {
        return Ok(());
    }
    Err(Refusal::UncachedConnection { entity: entity.to_owned(), connection: std::any::type_name::<C>().to_owned() }
        .into_db_err())
}

/// Configures a [`CachedDatabase`].
#[must_use]
pub struct CachedDatabaseBuilder {
    inner: DatabaseConnection,
    cache: Arc<dyn Invalidator>,
    unparsed: UnparsedStatements,
    analyses: u64,
    outbox: Option<OutboxConfig>,
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

    /// How many statement texts' analyses are kept (default 1024).
    pub fn analysis_cache(mut self, statements: u64) -> Self {
        self.analyses = statements.max(1);
        self
    }

    /// Declares that every write to `table` also writes `tables` (a
    /// trigger, a rule, a foreign-key action not declared on the entities):
    /// they are invalidated coarsely (every cached list, relation and row of
    /// each) after every write to `table`. Names may be schema-qualified.
    /// Repeatable.
    ///
    /// Foreign-key actions declared on entities (`on_delete = "Cascade"`,
    /// `"SetNull"`, `on_update = ...` on a `belongs_to`) need no
    /// declaration.
    pub fn trigger(mut self, table: &str, tables: &[&str]) -> Self {
        let key = table.rsplit('.').next().unwrap_or(table).trim_matches(|c| c == '"' || c == '`').to_lowercase();
        let deps = self.triggers.entry(key).or_default();
        for t in tables {
            deps.extend(touched(t));
        }
        deps.sort_unstable();
        deps.dedup();
        self
    }

    /// Makes invalidation durable with a transactional outbox (see the
    /// [`outbox`](crate::outbox) module): every committed write's intent is
    /// recorded in the same transaction, applied right after the commit, by
    /// any process if this one cannot, and before the cache serves reads
    /// after an outage. The table must exist
    /// ([`Outbox::create_table`], or the migration).
    pub fn outbox(mut self, config: OutboxConfig) -> Self {
        self.outbox = Some(config);
        self
    }

    /// Builds the connection (and, with an outbox, starts its drainer on the
    /// current tokio runtime and installs it as the cache's recovery).
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) for an invalid outbox table
    /// name.
    pub fn build(self) -> Result<CachedDatabase, crate::Error> {
        let outbox = match self.outbox {
            Some(config) => {
                config.validate().map_err(|e| crate::Error::Config(e.to_string()))?;
                Some(Arc::new(Outbox::new(config, self.inner.clone(), Arc::clone(&self.cache))))
            }
            None => None,
        };
        if let Some(o) = &outbox {
            let recovery: Arc<dyn matroska::Recovery> = o.clone();
            self.cache.set_recovery(&recovery);
            o.start();
        }
        BUILT.store(true, Ordering::SeqCst);
        Ok(CachedDatabase {
            inner: self.inner,
            shared: Arc::new(Shared {
                cache: self.cache,
                analyses: Analyses::new(self.analyses),
                unparsed: self.unparsed,
                counters: Counters::default(),
                outbox,
                triggers: self.triggers,
            }),
        })
    }
}

/// A SeaORM connection that keeps a [`Cache`] correct: pass `&db` wherever
/// SeaORM takes a connection.
///
/// * Every write statement is read (whatever API sent it), and after it is
///   committed the entries it may have changed are invalidated: precisely
///   (row keys, the lists rows enter and leave, the relations they join and
///   leave) for entities with `derive(CacheEntity)`, coarsely (every cached
///   list and relation of the table) for others and for statements whose
///   rows cannot be told. See the write-path table in the [crate docs](crate).
/// * Transactions, opened by any API (`begin`, `transaction`, the
///   `ActiveModelEx` builders), are followed: invalidation happens after the
///   outermost commit; a rollback, an error, a panic or a dropped
///   transaction invalidates nothing and caches nothing of what was read
///   inside (values loaded through `Cache::get_or_load` inside a transaction
///   are returned but not cached).
/// * A write whose invalidation fails (the cache unreachable) still
///   succeeds; the cache keeps the invalidation and applies it before it
///   serves reads again. [`pending_invalidations`](Self::pending_invalidations)
///   and [`flush`](Self::flush) tell and wait.
///
/// Cheap to clone; clones share the connection pool and the cache.
#[derive(Clone)]
pub struct CachedDatabase {
    inner: DatabaseConnection,
    shared: Arc<Shared>,
}

impl fmt::Debug for CachedDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedDatabase")
            .field("backend", &self.inner.get_database_backend())
            .field("unparsed", &self.shared.unparsed)
            .finish_non_exhaustive()
    }
}

impl CachedDatabase {
    /// Wraps `db`, invalidating `cache`, with the defaults (no outbox).
    pub fn new<C: Codec>(db: DatabaseConnection, cache: Cache<C>) -> Self {
        BUILT.store(true, Ordering::SeqCst);
        CachedDatabase {
            inner: db,
            shared: Arc::new(Shared {
                cache: Arc::new(cache),
                analyses: Analyses::new(1024),
                unparsed: UnparsedStatements::default(),
                counters: Counters::default(),
                outbox: None,
                triggers: HashMap::new(),
            }),
        }
    }

    /// The outbox, if the connection was built with one.
    pub fn outbox(&self) -> Option<&Arc<Outbox>> {
        self.shared.outbox.as_ref()
    }

    /// A builder wrapping `db` and invalidating `cache`.
    pub fn builder<C: Codec>(db: DatabaseConnection, cache: Cache<C>) -> CachedDatabaseBuilder {
        Self::builder_with(db, Arc::new(cache))
    }

    /// A builder invalidating through any [`Invalidator`].
    pub fn builder_with(db: DatabaseConnection, cache: Arc<dyn Invalidator>) -> CachedDatabaseBuilder {
        CachedDatabaseBuilder {
            inner: db,
            cache,
            unparsed: UnparsedStatements::default(),
            analyses: 1024,
            outbox: None,
            triggers: HashMap::new(),
        }
    }

    /// The wrapped connection. **Writes through it are not seen**: use it
    /// only for what needs the concrete type (migrations: see
    /// [`migrate`](Self::migrate)) and clear what it may have changed.
    pub fn inner(&self) -> &DatabaseConnection {
        &self.inner
    }

    /// The database backend.
    pub fn get_database_backend(&self) -> DbBackend {
        self.inner.get_database_backend()
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

    /// Runs a statement the parser cannot read (or any statement), declaring
    /// the tables it writes: they are invalidated coarsely after it
    /// committed.
    ///
    /// # Errors
    /// The database's error.
    pub async fn execute_touching(&self, stmt: Statement, tables: &[&str]) -> Result<ExecResult, DbErr> {
        let deps: Vec<Dep> = tables.iter().flat_map(|t| touched(t)).collect();
        let db = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        spawn_write(async move {
            let txn = db.begin().await?;
            let r = txn.execute_raw(stmt).await?;
            let intent = shared.record(&txn, &deps).await?;
            let committed = sea_orm::TransactionSession::commit(txn).await;
            // applied even when the commit's outcome is unknown (harmless)
            let _ = shared.apply(deps, intent.filter(|_| committed.is_ok())).await;
            committed?;
            Ok(r)
        })
        .await
    }

    /// Runs migrations (or anything needing the concrete connection) on the
    /// inner connection, then invalidates every cached entity, whether they
    /// succeeded or not (a failed migration may have applied some steps).
    ///
    /// ```ignore
    /// db.migrate(|conn| async move { Migrator::up(conn, None).await }).await?;
    /// ```
    ///
    /// # Errors
    /// The migration's error.
    pub async fn migrate<'a, F, Fut, T>(&'a self, run: F) -> Result<T, DbErr>
    where
        F: FnOnce(&'a DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, DbErr>>,
    {
        let result = run(&self.inner).await;
        let deps = crate::entity::every_entity();
        let intent = match &self.shared.outbox {
            Some(_) => {
                let txn = self.inner.begin().await?;
                let intent = self.shared.record(&txn, &deps).await?;
                match sea_orm::TransactionSession::commit(txn).await {
                    Ok(()) => intent,
                    Err(e) => {
                        let _ = self.shared.apply(deps, None).await;
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let _ = self.shared.apply(deps, intent).await;
        result
    }

    /// Runs one call: reads pass through; writes go through the plan, in a
    /// task of their own so that a caller that stops waiting (a cancelled
    /// request) cannot leave a write committed and not invalidated.
    async fn call(&self, call: Call) -> Result<Answer, DbErr> {
        let backend = self.inner.get_database_backend();
        let plan = self.shared.plan(call.sql(), backend)?;
        if matches!(plan, Plan::Plain) {
            return call.run(&self.inner).await;
        }
        let db = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        spawn_write(async move {
            let values: Vec<sea_orm::Value> = match &call {
                Call::Execute(s) | Call::QueryOne(s) | Call::QueryAll(s) => {
                    s.values.clone().map(|v| v.0).unwrap_or_default()
                }
                Call::Unprepared(_) => Vec::new(),
            };
            let (answer, deps, intent) = if plan.reads_first(&values) || shared.outbox.is_some() {
                // read, write and read again in one transaction of our own
                // (with the intent, when there is an outbox)
                let options = TransactionOptions {
                    sqlite_transaction_mode: (backend == DbBackend::Sqlite).then_some(SqliteTransactionMode::Immediate),
                    ..TransactionOptions::default()
                };
                let txn = db.begin_with_options(options).await?;
                let (answer, deps) = write::run(&txn, &plan, call).await?;
                let intent = shared.record(&txn, &deps).await?;
                if let Err(e) = sea_orm::TransactionSession::commit(txn).await {
                    // the outcome of a failed COMMIT may be unknown:
                    // invalidating is harmless (the intent, if committed,
                    // stays for the drainer)
                    let _ = shared.apply(deps, None).await;
                    return Err(e);
                }
                (answer, deps, intent)
            } else {
                match write::run(&db, &plan, call).await {
                    Ok((answer, deps)) => (answer, deps, None),
                    Err(e) => {
                        if plan.script() {
                            // statements before the failing one ran and
                            // committed (SQLite runs them one by one)
                            let _ = shared.apply(plan.coarse(), None).await;
                        }
                        return Err(e);
                    }
                }
            };
            let _ = shared.apply(deps, intent).await;
            Ok(answer)
        })
        .await
    }
}

/// The coarse dependencies of a table named by hand (`"article"`,
/// `"public.article"`): the registered entity's, or the table's switch.
fn touched(name: &str) -> Vec<Dep> {
    let (schema, table) = match name.rsplit_once('.') {
        Some((schema, table)) => (Some(schema.trim_matches('"').to_owned()), table),
        None => (None, name),
    };
    let table = table.trim_matches(|c| c == '"' || c == '`').to_owned();
    let name = matroska_sql::TableName { schema, table, quoted: false };
    match crate::entity::lookup(&name) {
        Some(info) => vec![info.everything(), crate::entity::unkeyed_insert(info.table)],
        None => write::table_switch(&name),
    }
}

/// Runs a write to completion in a task of its own (on the current tokio
/// runtime; without one, in place).
async fn spawn_write<T, F>(fut: F) -> Result<T, DbErr>
where
    T: Send + 'static,
    F: Future<Output = Result<T, DbErr>> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => match rt.spawn(fut).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(DbErr::Custom(format!("matroska-seaorm: the write task was cancelled: {e}"))),
        },
        Err(_) => fut.await,
    }
}

fn exec(a: Answer) -> Result<ExecResult, DbErr> {
    match a {
        Answer::Exec(r) => Ok(r),
        _ => Err(DbErr::Custom("matroska-seaorm: unexpected answer to execute".into())),
    }
}

fn one(a: Answer) -> Result<Option<QueryResult>, DbErr> {
    match a {
        Answer::One(r) => Ok(r),
        _ => Err(DbErr::Custom("matroska-seaorm: unexpected answer to query_one".into())),
    }
}

fn all(a: Answer) -> Result<Vec<QueryResult>, DbErr> {
    match a {
        Answer::All(r) => Ok(r),
        _ => Err(DbErr::Custom("matroska-seaorm: unexpected answer to query_all".into())),
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for CachedDatabase {
    fn get_database_backend(&self) -> DbBackend {
        self.inner.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        exec(self.call(Call::Execute(stmt)).await?)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        exec(self.call(Call::Unprepared(sql.to_owned())).await?)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        one(self.call(Call::QueryOne(stmt)).await?)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        all(self.call(Call::QueryAll(stmt)).await?)
    }

    fn support_returning(&self) -> bool {
        self.inner.support_returning()
    }

    fn is_mock_connection(&self) -> bool {
        self.inner.is_mock_connection()
    }
}

#[async_trait::async_trait]
impl TransactionTrait for CachedDatabase {
    type Transaction = CachedTransaction;

    async fn begin(&self) -> Result<CachedTransaction, DbErr> {
        Ok(CachedTransaction::outermost(self.inner.begin().await?, Arc::clone(&self.shared)))
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<CachedTransaction, DbErr> {
        Ok(CachedTransaction::outermost(
            self.inner.begin_with_config(isolation_level, access_mode).await?,
            Arc::clone(&self.shared),
        ))
    }

    async fn begin_with_options(&self, options: TransactionOptions) -> Result<CachedTransaction, DbErr> {
        Ok(CachedTransaction::outermost(self.inner.begin_with_options(options).await?, Arc::clone(&self.shared)))
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c CachedTransaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self.begin().await.map_err(TransactionError::Connection)?;
        transaction::run_callback(txn, callback).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c CachedTransaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self.begin_with_config(isolation_level, access_mode).await.map_err(TransactionError::Connection)?;
        transaction::run_callback(txn, callback).await
    }
}

impl sea_orm::StreamTrait for CachedDatabase {
    type Stream<'a> = CachedStream<<DatabaseConnection as sea_orm::StreamTrait>::Stream<'a>>;

    fn get_database_backend(&self) -> DbBackend {
        self.inner.get_database_backend()
    }

    fn stream_raw<'a>(
        &'a self,
        stmt: Statement,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Stream<'a>, DbErr>> + 'a + Send>> {
        Box::pin(async move {
            let backend = self.inner.get_database_backend();
            if matches!(self.shared.plan(&stmt.sql, backend)?, Plan::Plain) {
                return Ok(CachedStream::Inner(sea_orm::StreamTrait::stream_raw(&self.inner, stmt).await?));
            }
            // a write sent as a stream: run it as a query, stream its rows
            let rows = all(self.call(Call::QueryAll(stmt)).await?)?;
            Ok(CachedStream::Buffered(rows.into_iter()))
        })
    }
}

/// The statement dialect of a SeaORM backend.
pub(crate) fn dialect(backend: sea_orm::DbBackend) -> matroska_sql::Dialect {
    match backend {
        sea_orm::DbBackend::Postgres => matroska_sql::Dialect::Postgres,
        sea_orm::DbBackend::MySql => matroska_sql::Dialect::MySql,
        _ => matroska_sql::Dialect::Sqlite,
    }
}
