//! Durable invalidation: a transactional outbox, the same table and intent
//! format as matroska-seaorm's ([`matroska_sql::outbox`]), so that intents
//! written by one integration are drained by the other.
//!
//! With an outbox ([`CachedDatabaseBuilder::outbox`](crate::CachedDatabaseBuilder::outbox)),
//! every committed write's dependencies are first written to a table **in
//! the same transaction as the write** (one extra statement per transaction;
//! an autocommit write then runs in a transaction of its own). After the
//! commit, the writing process invalidates them and deletes the row. If it
//! cannot (it crashed after the commit, or the cache was unreachable), the
//! intent stays in the table until some process applies it:
//!
//! * **any process drains it**: a background task of every
//!   [`CachedDatabase`](crate::CachedDatabase) with an outbox polls for
//!   intents older than a grace period (the writer applies its own
//!   meanwhile), claiming rows with `FOR UPDATE SKIP LOCKED` on PostgreSQL
//!   (SQLite's single writer serialises drainers);
//! * **before serving reads again**: the outbox is the cache's
//!   [`Recovery`](matroska::Recovery): when a process starts, and whenever
//!   its cache failed transiently (an outage), it applies every intent in
//!   the table before it serves a read from that cache.
//!
//! Applying is idempotent, so intents are applied at least once. An intent
//! that keeps failing is retried with exponential backoff and dead-lettered
//! after [`max_attempts`](OutboxConfig::max_attempts): kept, traced as an
//! error, counted in [`OutboxStats`], and applied again by
//! [`Outbox::replay_dead`].

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diesel::QueryResult;
use diesel_async::{AsyncConnection, AsyncConnectionCore};
use futures_util::TryStreamExt;
use matroska::{Dep, Value};
use matroska_sql::outbox::{decode, encode};
use tokio::sync::Notify;
use tracing::{debug, error, warn};

use crate::backend::CacheBackend;
use crate::connection::conn::RowOf;
use crate::connection::raw::Raw;
use crate::connection::Invalidator;

/// The default outbox table.
pub const DEFAULT_TABLE: &str = matroska_sql::outbox::DEFAULT_TABLE;

/// How an outbox is configured. `OutboxConfig::default()` gives the
/// defaults below.
#[derive(Clone, Debug)]
#[must_use]
pub struct OutboxConfig {
    table: String,
    poll_interval: Duration,
    grace: Duration,
    batch: u64,
    max_attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
    drainer: bool,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            table: DEFAULT_TABLE.to_owned(),
            poll_interval: Duration::from_secs(1),
            grace: Duration::from_secs(2),
            batch: 500,
            max_attempts: 20,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(60),
            drainer: true,
        }
    }
}

impl OutboxConfig {
    /// The defaults: table [`DEFAULT_TABLE`], a poll every second for
    /// intents older than 2 s, batches of 500, dead-lettered after 20
    /// attempts, backoff from 200 ms doubling to 60 s, a background drainer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table's name (letters, digits and `_`; default [`DEFAULT_TABLE`]).
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// How often the background drainer looks for intents left behind
    /// (default 1 s).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// How old an intent must be before the background drainer takes it
    /// (its writer applies it right after the commit; default 2 s).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How many intents one drain step applies at once (default 500).
    pub fn batch(mut self, n: u64) -> Self {
        self.batch = n.max(1);
        self
    }

    /// How many failed attempts dead-letter an intent (default 20).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The first retry delay after a failed attempt, doubled each time up to
    /// `max` (default 200 ms, 60 s).
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// Whether this process runs the background drainer (default on). With
    /// it off, intents left behind are applied by other processes, by
    /// [`Outbox::drain`], and at recovery.
    pub fn drainer(mut self, on: bool) -> Self {
        self.drainer = on;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let ok = !self.table.is_empty()
            && self.table.len() <= 60
            && self.table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !self.table.starts_with(|c: char| c.is_ascii_digit());
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid outbox table name {:?}: letters, digits and '_', not starting with a digit, at most 60",
                self.table
            ))
        }
    }
}

/// Counts of an outbox table, from [`Outbox::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxStats {
    /// Intents waiting to be applied (not dead).
    pub pending: u64,
    /// Dead-lettered intents.
    pub dead: u64,
}

/// What one [`Outbox::drain`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// Intents applied and deleted.
    pub applied: u64,
    /// Intents whose application failed (retried later).
    pub failed: u64,
    /// Of those, dead-lettered now.
    pub dead: u64,
}

/// The process-local counters of an outbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxCounters {
    /// Intents recorded by writers of this process.
    pub recorded: u64,
    /// Of those, applied by their writer and deleted.
    pub applied_by_writer: u64,
    /// Intents applied by this process's drains.
    pub drained: u64,
    /// Failed applications.
    pub failed: u64,
    /// Intents dead-lettered.
    pub dead_lettered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    recorded: AtomicU64,
    applied_by_writer: AtomicU64,
    drained: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A SQL string literal (standard quoting: `'` doubled).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The outbox's own connection, whatever its type.
trait Store: Send + Sync {
    /// Runs the steps (a transaction if they begin one).
    fn query<'a>(&'a self, statements: Vec<Step>) -> BoxFut<'a, QueryResult<Vec<Vec<Vec<Value>>>>>;
    /// One drain step, in one transaction holding the claimed rows.
    fn drain_batch<'a>(&'a self, outbox: &'a Outbox, all: bool, wait: bool) -> BoxFut<'a, QueryResult<Drained>>;
    fn dialect(&self) -> matroska_sql::Dialect;
}

/// One statement of a store transaction.
#[derive(Clone, Debug)]
enum Step {
    /// Begin (SQLite: immediate).
    Begin,
    Commit,
    /// A statement returning rows.
    Rows(String),
    /// A statement returning nothing.
    Exec(String),
}

struct ConnStore<C> {
    url: String,
    conn: tokio::sync::Mutex<Option<C>>,
}

impl<C> Store for ConnStore<C>
where
    C: AsyncConnection + RowOf + 'static,
    C::Backend: CacheBackend,
    for<'c> C: AsyncConnectionCore<Row<'c, 'static> = <C as RowOf>::R>,
    <C as RowOf>::R: Send + 'static,
    for<'c> <C as RowOf>::R: diesel::row::Row<'c, C::Backend>,
{
    fn dialect(&self) -> matroska_sql::Dialect {
        <C::Backend as CacheBackend>::DIALECT
    }

    fn query<'a>(&'a self, steps: Vec<Step>) -> BoxFut<'a, QueryResult<Vec<Vec<Vec<Value>>>>> {
        Box::pin(async move {
            let mut guard = self.connection().await?;
            let conn = guard.as_mut().ok_or(diesel::result::Error::BrokenTransactionManager)?;
            let result = run_steps(conn, &steps).await;
            if result.is_err() {
                // a broken transaction or connection: start afresh next time
                *guard = None;
            }
            result
        })
    }

    fn drain_batch<'a>(&'a self, outbox: &'a Outbox, all: bool, wait: bool) -> BoxFut<'a, QueryResult<Drained>> {
        Box::pin(async move {
            let mut guard = self.connection().await?;
            let conn = guard.as_mut().ok_or(diesel::result::Error::BrokenTransactionManager)?;
            let result = drain_on(conn, outbox, all, wait).await;
            if result.is_err() {
                let _ = conn.batch_execute("ROLLBACK").await;
                *guard = None;
            }
            result
        })
    }
}

impl<C> ConnStore<C>
where
    C: AsyncConnection + 'static,
{
    async fn connection(&self) -> QueryResult<tokio::sync::MutexGuard<'_, Option<C>>> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let c = C::establish(&self.url).await.map_err(|e| diesel::result::Error::QueryBuilderError(Box::new(e)))?;
            *guard = Some(c);
        }
        Ok(guard)
    }
}

async fn run_steps<C>(conn: &mut C, steps: &[Step]) -> QueryResult<Vec<Vec<Vec<Value>>>>
where
    C: AsyncConnection + RowOf + 'static,
    C::Backend: CacheBackend,
    for<'c> C: AsyncConnectionCore<Row<'c, 'static> = <C as RowOf>::R>,
    <C as RowOf>::R: Send + 'static,
    for<'c> <C as RowOf>::R: diesel::row::Row<'c, C::Backend>,
{
    use diesel::row::{Field, Row};
    let mut out = Vec::new();
    for step in steps {
        match step {
            Step::Begin => conn.batch_execute(<C::Backend as CacheBackend>::BEGIN_OWN).await?,
            Step::Commit => conn.batch_execute("COMMIT").await?,
            Step::Exec(sql) => conn.batch_execute(sql).await?,
            Step::Rows(sql) => {
                let rows: Vec<<C as RowOf>::R> = conn.load(Raw::<C::Backend>::text(sql)).await?.try_collect().await?;
                let mut table = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut values = Vec::with_capacity(row.field_count());
                    for i in 0..row.field_count() {
                        let Some(field) = row.get(i) else {
                            values.push(Value::Null);
                            continue;
                        };
                        let v = match field.value() {
                            None => Value::Null,
                            // a column this crate does not read (pg_notify's void)
                            Some(raw) => <C::Backend as CacheBackend>::decode(raw).unwrap_or(Value::Null),
                        };
                        values.push(v);
                    }
                    table.push(values);
                }
                out.push(table);
            }
        }
    }
    Ok(out)
}

/// One drain step on the store's connection.
async fn drain_on<C>(conn: &mut C, outbox: &Outbox, all: bool, wait: bool) -> QueryResult<Drained>
where
    C: AsyncConnection + RowOf + 'static,
    C::Backend: CacheBackend,
    for<'c> C: AsyncConnectionCore<Row<'c, 'static> = <C as RowOf>::R>,
    <C as RowOf>::R: Send + 'static,
    for<'c> <C as RowOf>::R: diesel::row::Row<'c, C::Backend>,
{
    let t = &outbox.config.table;
    let now = now_ms();
    let mut select = format!("SELECT id, deps, attempts FROM {t} WHERE dead = FALSE");
    if !all {
        select.push_str(&format!(" AND next_attempt_at <= {now} AND created_at <= {}", now - ms(outbox.config.grace)));
    }
    select.push_str(&format!(" ORDER BY id LIMIT {}", outbox.config.batch));
    if <C::Backend as CacheBackend>::DIALECT == matroska_sql::Dialect::Postgres {
        select.push_str(if wait { " FOR UPDATE" } else { " FOR UPDATE SKIP LOCKED" });
    }
    // the claim and the outcome in one transaction: the rows stay locked
    // while the cache is invalidated
    let rows = run_steps(conn, &[Step::Begin, Step::Rows(select)]).await?.pop().unwrap_or_default();
    if rows.is_empty() {
        run_steps(conn, &[Step::Commit]).await?;
        return Ok(Drained::default());
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut deps: BTreeSet<Dep> = BTreeSet::new();
    let mut attempts = 0i64;
    let mut unreadable = Vec::new();
    for r in &rows {
        let id = r.first().map(int).unwrap_or_default();
        let text = match r.get(1) {
            Some(Value::Str(s)) => s.clone(),
            _ => String::new(),
        };
        attempts = attempts.max(r.get(2).map(int).unwrap_or(0));
        match decode(&text) {
            Some(d) => {
                deps.extend(d);
                ids.push(id);
            }
            None => unreadable.push(id),
        }
    }
    let mut steps = Vec::new();
    for id in &unreadable {
        error!(id, table = %t, "unreadable outbox intent; dead-lettered");
        steps.push(Step::Exec(format!(
            "UPDATE {t} SET dead = TRUE, last_error = 'unreadable dependencies' WHERE id = {id}"
        )));
    }
    let mut report = Drained::default();
    if !ids.is_empty() {
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        let list = list.join(", ");
        match outbox.cache.invalidate(deps.into_iter().collect()).await {
            Ok(_) => {
                steps.push(Step::Exec(format!("DELETE FROM {t} WHERE id IN ({list})")));
                report.applied = ids.len() as u64;
                outbox.counters.drained.fetch_add(report.applied, Ordering::Relaxed);
            }
            Err(e) => {
                let next_attempts = attempts + 1;
                let dead = next_attempts >= i64::from(outbox.config.max_attempts);
                let factor = 2u32.saturating_pow(u32::try_from(attempts.clamp(0, 30)).unwrap_or(30));
                let delay = outbox.config.backoff.saturating_mul(factor).min(outbox.config.max_backoff);
                steps.push(Step::Exec(format!(
                        "UPDATE {t} SET attempts = attempts + 1, next_attempt_at = {}, last_error = {}, dead = {} WHERE id IN ({list})",
                        now + ms(delay),
                        literal(&crate::error::report(&e)),
                        if dead { "TRUE" } else { "FALSE" },
                    )));
                report.failed = ids.len() as u64;
                outbox.counters.failed.fetch_add(report.failed, Ordering::Relaxed);
                if dead {
                    report.dead = report.failed;
                    outbox.counters.dead_lettered.fetch_add(report.dead, Ordering::Relaxed);
                    error!(intents = ids.len(), attempts = next_attempts, error = %e,
                            "outbox intents dead-lettered after repeated failures; replay them with Outbox::replay_dead");
                } else {
                    warn!(intents = ids.len(), error = %e, retry_in = ?delay, "applying outbox intents failed; retrying later");
                }
            }
        }
    }
    steps.push(Step::Commit);
    run_steps(conn, &steps).await?;
    Ok(report)
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Bool(b) => i64::from(*b),
        _ => 0,
    }
}

/// The outbox of a [`CachedDatabase`](crate::CachedDatabase).
pub struct Outbox {
    config: OutboxConfig,
    store: Box<dyn Store>,
    cache: Arc<dyn Invalidator>,
    counters: Counters,
    wake: Notify,
    /// Intents applied by their writers, to delete.
    applied: Mutex<Vec<i64>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("config", &self.config).field("counters", &self.counters).finish_non_exhaustive()
    }
}

impl Outbox {
    pub(crate) fn new<C>(config: OutboxConfig, url: String, cache: Arc<dyn Invalidator>) -> Self
    where
        C: AsyncConnection + RowOf + 'static,
        C::Backend: CacheBackend,
        for<'c> C: AsyncConnectionCore<Row<'c, 'static> = <C as RowOf>::R>,
        <C as RowOf>::R: Send + 'static,
        for<'c> <C as RowOf>::R: diesel::row::Row<'c, C::Backend>,
    {
        Outbox {
            config,
            store: Box::new(ConnStore::<C> { url, conn: tokio::sync::Mutex::new(None) }),
            cache,
            counters: Counters::default(),
            wake: Notify::new(),
            applied: Mutex::new(Vec::new()),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.config.table
    }

    /// Creates the outbox table (and its index) if it does not exist: the
    /// same table as matroska-seaorm's.
    ///
    /// # Errors
    /// The database's error.
    pub async fn create_table(&self) -> QueryResult<()> {
        let t = &self.config.table;
        let id = match self.store.dialect() {
            matroska_sql::Dialect::Postgres => "id BIGSERIAL NOT NULL PRIMARY KEY",
            _ => "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT",
        };
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {t} ({id}, deps TEXT NOT NULL, created_at BIGINT NOT NULL, \
             next_attempt_at BIGINT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, dead BOOLEAN NOT NULL DEFAULT FALSE, \
             last_error TEXT NULL)"
        );
        let index = format!("CREATE INDEX IF NOT EXISTS {t}_due ON {t} (dead, next_attempt_at)");
        self.store.query(vec![Step::Exec(create), Step::Exec(index)]).await.map(|_| ())
    }

    /// Writes an intent for `deps` in the open transaction of `conn`;
    /// returns its id.
    pub(crate) async fn record<C>(&self, conn: &mut C, deps: &[Dep]) -> QueryResult<i64>
    where
        C: AsyncConnection + RowOf + 'static,
        C::Backend: CacheBackend,
        for<'c> C: AsyncConnectionCore<Row<'c, 'static> = <C as RowOf>::R>,
        <C as RowOf>::R: Send + 'static,
        for<'c> <C as RowOf>::R: diesel::row::Row<'c, C::Backend>,
    {
        let now = now_ms();
        let notify = match <C::Backend as CacheBackend>::DIALECT {
            matroska_sql::Dialect::Postgres => format!(", pg_notify('{}', '')", matroska_sql::outbox::CHANNEL),
            _ => String::new(),
        };
        let sql = format!(
            "INSERT INTO {} ({}, {}, {}, {}, {}) VALUES ({}, {now}, {now}, 0, FALSE) RETURNING {}{notify}",
            self.config.table,
            matroska_sql::outbox::DEPS,
            matroska_sql::outbox::CREATED_AT,
            matroska_sql::outbox::NEXT_ATTEMPT_AT,
            matroska_sql::outbox::ATTEMPTS,
            matroska_sql::outbox::DEAD,
            literal(&encode(deps)),
            matroska_sql::outbox::ID,
        );
        let rows = run_steps(conn, &[Step::Rows(sql)]).await?;
        let id = rows.first().and_then(|r| r.first()).and_then(|r| r.first()).map(int).ok_or_else(|| {
            diesel::result::Error::DeserializationError("matroska-diesel outbox: no id returned".into())
        })?;
        self.counters.recorded.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Notes an intent its writer applied; it is deleted soon (in batches).
    pub(crate) fn applied(self: &Arc<Self>, id: i64) {
        self.applied.lock().unwrap_or_else(|p| p.into_inner()).push(id);
        self.counters.applied_by_writer.fetch_add(1, Ordering::Relaxed);
        let me = Arc::clone(self);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { me.delete_applied().await });
        }
    }

    async fn delete_applied(&self) {
        let ids: Vec<i64> = std::mem::take(&mut *self.applied.lock().unwrap_or_else(|p| p.into_inner()));
        if ids.is_empty() {
            return;
        }
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        let sql = format!("DELETE FROM {} WHERE id IN ({})", self.config.table, list.join(", "));
        if let Err(e) = self.store.query(vec![Step::Exec(sql)]).await {
            debug!(error = %e, "could not delete applied intents; a drainer will apply them again");
        }
    }

    /// Applies every intent due now (older than the grace period), batch by
    /// batch, and returns what it did.
    ///
    /// # Errors
    /// The database's error (intents stay in the table).
    pub async fn drain(&self) -> QueryResult<Drained> {
        self.drain_with(false, false).await
    }

    /// Applies every intent in the table now, whatever its age or backoff,
    /// waiting for rows other drainers hold: what the cache's recovery runs.
    ///
    /// # Errors
    /// The database's error; a failed application is reported in
    /// [`Drained::failed`].
    pub async fn drain_all(&self) -> QueryResult<Drained> {
        self.drain_with(true, true).await
    }

    async fn drain_with(&self, all: bool, wait: bool) -> QueryResult<Drained> {
        self.delete_applied().await;
        let mut total = Drained::default();
        loop {
            let step = self.drain_batch(all, wait).await?;
            total.applied += step.applied;
            total.failed += step.failed;
            total.dead += step.dead;
            if step.applied + step.failed < self.config.batch || step.failed > 0 {
                return Ok(total);
            }
        }
    }

    async fn drain_batch(&self, all: bool, wait: bool) -> QueryResult<Drained> {
        self.store.drain_batch(self, all, wait).await
    }

    /// Gives dead-lettered intents another round of attempts; returns how
    /// many.
    ///
    /// # Errors
    /// The database's error.
    pub async fn replay_dead(&self) -> QueryResult<u64> {
        let t = &self.config.table;
        let rows = self
            .store
            .query(vec![
                Step::Begin,
                Step::Rows(format!("SELECT COUNT(*) FROM {t} WHERE dead = TRUE")),
                Step::Exec(format!(
                    "UPDATE {t} SET dead = FALSE, attempts = 0, next_attempt_at = {} WHERE dead = TRUE",
                    now_ms()
                )),
                Step::Commit,
            ])
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(|r| r.first())
            .map_or(0, |v| u64::try_from(int(v)).unwrap_or(0)))
    }

    /// The table's counts.
    ///
    /// # Errors
    /// The database's error.
    pub async fn stats(&self) -> QueryResult<OutboxStats> {
        let t = &self.config.table;
        let rows = self
            .store
            .query(vec![
                Step::Rows(format!("SELECT COUNT(*) FROM {t} WHERE dead = FALSE")),
                Step::Rows(format!("SELECT COUNT(*) FROM {t} WHERE dead = TRUE")),
            ])
            .await?;
        let n = |i: usize| {
            rows.get(i)
                .and_then(|r| r.first())
                .and_then(|r| r.first())
                .map_or(0, |v| u64::try_from(int(v)).unwrap_or(0))
        };
        Ok(OutboxStats { pending: n(0), dead: n(1) })
    }

    /// The process-local counters.
    pub fn counters(&self) -> OutboxCounters {
        let c = &self.counters;
        OutboxCounters {
            recorded: c.recorded.load(Ordering::Relaxed),
            applied_by_writer: c.applied_by_writer.load(Ordering::Relaxed),
            drained: c.drained.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
        }
    }

    /// Starts the background drainer, holding the outbox weakly: it stops
    /// when the last `CachedDatabase` goes.
    pub(crate) fn start(self: &Arc<Self>) {
        if !self.config.drainer {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            warn!("no tokio runtime: the outbox drainer does not run in this process");
            return;
        };
        rt.spawn(drainer(Arc::downgrade(self), self.config.poll_interval));
    }
}

async fn drainer(outbox: Weak<Outbox>, every: Duration) {
    loop {
        {
            let Some(o) = outbox.upgrade() else { return };
            let woken = o.wake.notified();
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(every) => {}
            }
        }
        let Some(o) = outbox.upgrade() else { return };
        match o.drain().await {
            Ok(d) if d.applied + d.failed > 0 => debug!(applied = d.applied, failed = d.failed, "outbox drained"),
            Ok(_) => {}
            Err(e) => debug!(error = %e, "outbox drain failed; trying again later"),
        }
    }
}

impl matroska::Recovery for Outbox {
    fn recover(&self) -> Pin<Box<dyn Future<Output = Result<(), matroska::BoxError>> + Send + '_>> {
        Box::pin(async move {
            let d = self.drain_all().await?;
            if d.failed > 0 {
                return Err(format!("{} outbox intents could not be applied", d.failed).into());
            }
            if d.applied > 0 {
                debug!(applied = d.applied, "outbox applied before serving reads");
            }
            Ok(())
        })
    }
}
