//! Durable invalidation: a transactional outbox.
//!
//! With an outbox ([`CachedDatabaseBuilder::outbox`](crate::CachedDatabaseBuilder::outbox)),
//! every committed write's dependencies are first written to a table **in
//! the same transaction as the write** (one extra statement per
//! transaction; an autocommit write then runs in a transaction of its own).
//! After the commit, the writing process invalidates them and deletes the
//! row. If it cannot (it crashed after the commit, or the cache was
//! unreachable), the intent stays in the table until some process applies
//! it:
//!
//! * **any process drains it**: a background task of every
//!   `CachedDatabase` with an outbox polls for intents older than a grace
//!   period (the writer applies its own meanwhile), claiming rows with
//!   `FOR UPDATE SKIP LOCKED` on PostgreSQL and MySQL (SQLite's single
//!   writer serialises drainers), and on PostgreSQL wakes early on a
//!   `NOTIFY`;
//! * **before serving reads again**: the outbox is the cache's
//!   [`Recovery`](matroska::Recovery): when a process starts, and whenever
//!   its cache failed transiently (an outage), it applies every intent in
//!   the table before it serves a read from that cache.
//!
//! Applying is idempotent (an invalidation applied twice drops nothing more),
//! so intents are applied at least once. Tickets keep working: an intent
//! applied late still writes tombstones, so a put of data loaded before it
//! was applied is refused. An intent that keeps failing is retried with
//! exponential backoff and dead-lettered after
//! [`max_attempts`](OutboxConfig::max_attempts): it is kept, traced as an
//! error, counted in [`OutboxStats`], and applied again by
//! [`Outbox::replay_dead`].
//!
//! Rows are unique per transaction (an auto-increment key): a second write of
//! the same row in another transaction adds another intent, never merges
//! into one already applied.
//!
//! Manual [`Cache::invalidate`](matroska::Cache::invalidate) calls made
//! without a database are not durable: they are retried from memory, by the
//! process that made them, until it stops.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use matroska::Dep;
use sea_orm::sea_query::{Alias, ColumnDef, Expr, ExprTrait, Index, LockBehavior, LockType, Query, Table};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};
use tokio::sync::Notify;
use tracing::{debug, error, warn};

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
    listen: bool,
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
            listen: true,
        }
    }
}

impl OutboxConfig {
    /// The defaults: table [`DEFAULT_TABLE`], a poll every second for
    /// intents older than 2 s, batches of 500, dead-lettered after 20
    /// attempts, backoff from 200 ms doubling to 60 s, a background drainer,
    /// and `LISTEN` on PostgreSQL.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table's name (letters, digits and `_`; default
    /// [`DEFAULT_TABLE`]).
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
        self.batch = Ord::max(n, 1);
        self
    }

    /// How many failed attempts dead-letter an intent (default 20).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Ord::max(n, 1);
        self
    }

    /// The first retry delay after a failed attempt, doubled each time up to
    /// `max` (default 200 ms, 60 s).
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = Ord::max(max, first);
        self
    }

    /// Whether this process runs the background drainer (default on). With
    /// it off, intents left behind are applied by other processes, by
    /// [`Outbox::drain`], and at recovery.
    pub fn drainer(mut self, on: bool) -> Self {
        self.drainer = on;
        self
    }

    /// Whether the drainer listens for `NOTIFY` on PostgreSQL (default on).
    pub fn listen(mut self, on: bool) -> Self {
        self.listen = on;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), DbErr> {
        let ok = !self.table.is_empty()
            && self.table.len() <= 60
            && self.table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !self.table.starts_with(|c: char| c.is_ascii_digit());
        if ok {
            Ok(())
        } else {
            Err(DbErr::Custom(format!(
                "matroska-seaorm: invalid outbox table name {:?}: letters, digits and '_', not starting with a digit, at most 60",
                self.table
            )))
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
    /// Age of the oldest pending intent (the lag), in milliseconds.
    pub oldest_ms: u64,
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

#[derive(Debug, Default)]
struct Counters {
    recorded: AtomicU64,
    applied_by_writer: AtomicU64,
    drained: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
}

/// The outbox of a [`CachedDatabase`](crate::CachedDatabase).
pub struct Outbox {
    config: OutboxConfig,
    db: DatabaseConnection,
    cache: Arc<dyn Invalidator>,
    counters: Counters,
    wake: Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("config", &self.config).field("counters", &self.counters).finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

use matroska_sql::outbox::{decode, encode};

fn col(name: &str) -> Alias {
    Alias::new(name)
}

impl Outbox {
    pub(crate) fn new(config: OutboxConfig, db: DatabaseConnection, cache: Arc<dyn Invalidator>) -> Self {
        Outbox { config, db, cache, counters: Counters::default(), wake: Notify::new() }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.config.table
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Creates the outbox table (and its index) if it does not exist, on the
    /// plain connection. The `migration` module (feature `migration`) offers the same as a
    /// sea-orm-migration migration.
    ///
    /// # Errors
    /// The database's error.
    pub async fn create_table(&self) -> Result<(), DbErr> {
        create_table(&self.db, &self.config.table).await
    }

    /// Writes an intent for `deps` in `txn`; returns its id.
    pub(crate) async fn record(&self, txn: &DatabaseTransaction, deps: &[Dep]) -> Result<i64, DbErr> {
        let now = now_ms();
        let mut insert = Query::insert();
        insert
            .into_table(col(&self.config.table))
            .columns([col("deps"), col("created_at"), col("next_attempt_at"), col("attempts"), col("dead")])
            .values([encode(deps).into(), now.into(), now.into(), 0i32.into(), false.into()])
            .map_err(|e| DbErr::Custom(format!("matroska-seaorm outbox: {e}")))?;
        let backend = self.backend();
        let id = if backend == DbBackend::MySql {
            let r = txn.execute_raw(backend.build(&insert)).await?;
            i64::try_from(r.last_insert_id()).unwrap_or(i64::MAX)
        } else {
            insert.returning_col(col("id"));
            if backend == DbBackend::Postgres && self.config.listen {
                // wake drainers of other processes (after the commit)
                insert.returning(Query::returning().exprs([
                    Expr::col(col("id")),
                    Expr::cust(format!("pg_notify('{}', '')", matroska_sql::outbox::CHANNEL)),
                ]));
            }
            let row = txn
                .query_one_raw(backend.build(&insert))
                .await?
                .ok_or_else(|| DbErr::Custom("matroska-seaorm outbox: no id returned".into()))?;
            row.try_get_by_index::<i64>(0)?
        };
        self.counters.recorded.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Deletes an intent its writer applied.
    pub(crate) async fn applied(&self, id: i64) {
        let mut delete = Query::delete();
        delete.from_table(col(&self.config.table)).and_where(Expr::col(col("id")).eq(id));
        match self.db.execute_raw(self.backend().build(&delete)).await {
            Ok(_) => {
                self.counters.applied_by_writer.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => debug!(error = %e, id, "could not delete an applied intent; a drainer will apply it again"),
        }
    }

    /// Applies every intent due now (older than the grace period unless
    /// `all`), batch by batch, and returns what it did.
    ///
    /// # Errors
    /// The database's error (intents stay in the table).
    pub async fn drain(&self) -> Result<Drained, DbErr> {
        self.drain_with(false, false).await
    }

    /// Applies every intent in the table now, whatever its age or backoff,
    /// waiting for rows other drainers hold: what the cache's recovery runs.
    ///
    /// # Errors
    /// The database's error; a failed application is reported in
    /// [`Drained::failed`].
    pub async fn drain_all(&self) -> Result<Drained, DbErr> {
        self.drain_with(true, true).await
    }

    async fn drain_with(&self, all: bool, wait: bool) -> Result<Drained, DbErr> {
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

    async fn drain_batch(&self, all: bool, wait: bool) -> Result<Drained, DbErr> {
        let backend = self.backend();
        let options = TransactionOptions {
            sqlite_transaction_mode: (backend == DbBackend::Sqlite).then_some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        let txn = self.db.begin_with_options(options).await?;
        let now = now_ms();
        let mut select = Query::select();
        select
            .columns([col("id"), col("deps"), col("attempts")])
            .from(col(&self.config.table))
            .and_where(Expr::col(col("dead")).eq(false))
            .order_by(col("id"), sea_orm::sea_query::Order::Asc)
            .limit(self.config.batch);
        if !all {
            select
                .and_where(Expr::col(col("next_attempt_at")).lte(now))
                .and_where(Expr::col(col("created_at")).lte(now - ms(self.config.grace)));
        }
        if backend != DbBackend::Sqlite {
            if wait {
                select.lock(LockType::Update);
            } else {
                select.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
            }
        }
        let rows = txn.query_all_raw(backend.build(&select)).await?;
        if rows.is_empty() {
            txn.commit().await?;
            return Ok(Drained::default());
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut deps: BTreeSet<Dep> = BTreeSet::new();
        let mut attempts = 0i32;
        for r in &rows {
            let id: i64 = r.try_get("", "id")?;
            let text: String = r.try_get("", "deps")?;
            attempts = Ord::max(attempts, r.try_get::<i32>("", "attempts").unwrap_or(0));
            match decode(&text) {
                Some(d) => deps.extend(d),
                None => {
                    // unreadable: cannot be applied; dead-letter it at once
                    error!(id, table = %self.config.table, "unreadable outbox intent; dead-lettered");
                    let mut update = Query::update();
                    update
                        .table(col(&self.config.table))
                        .values([(col("dead"), true.into()), (col("last_error"), "unreadable dependencies".into())])
                        .and_where(Expr::col(col("id")).eq(id));
                    txn.execute_raw(backend.build(&update)).await?;
                    continue;
                }
            }
            ids.push(id);
        }
        let mut report = Drained::default();
        if !ids.is_empty() {
            match self.cache.invalidate(deps.into_iter().collect()).await {
                Ok(_) => {
                    let mut delete = Query::delete();
                    delete.from_table(col(&self.config.table)).and_where(Expr::col(col("id")).is_in(ids.clone()));
                    txn.execute_raw(backend.build(&delete)).await?;
                    report.applied = ids.len() as u64;
                    self.counters.drained.fetch_add(report.applied, Ordering::Relaxed);
                }
                Err(e) => {
                    let next_attempts = attempts.saturating_add(1);
                    let dead = u32::try_from(next_attempts).unwrap_or(u32::MAX) >= self.config.max_attempts;
                    let delay = self
                        .config
                        .backoff
                        .saturating_mul(1u32 << next_attempts.clamp(0, 20))
                        .min(self.config.max_backoff);
                    let mut update = Query::update();
                    update
                        .table(col(&self.config.table))
                        .values([
                            (col("attempts"), Expr::col(col("attempts")).add(1)),
                            (col("next_attempt_at"), Expr::val(now + ms(delay))),
                            (col("last_error"), Expr::val(crate::error::report(&e))),
                            (col("dead"), Expr::val(dead)),
                        ])
                        .and_where(Expr::col(col("id")).is_in(ids.clone()));
                    txn.execute_raw(backend.build(&update)).await?;
                    report.failed = ids.len() as u64;
                    self.counters.failed.fetch_add(report.failed, Ordering::Relaxed);
                    if dead {
                        report.dead = report.failed;
                        self.counters.dead_lettered.fetch_add(report.dead, Ordering::Relaxed);
                        error!(
                            intents = ids.len(),
                            attempts = next_attempts,
                            error = %e,
                            "outbox intents dead-lettered after repeated failures; replay them with Outbox::replay_dead"
                        );
                    } else {
                        warn!(intents = ids.len(), error = %e, retry_in = ?delay, "applying outbox intents failed; retrying later");
                    }
                }
            }
        }
        txn.commit().await?;
        Ok(report)
    }

    /// Gives dead-lettered intents another round of attempts; returns how
    /// many.
    ///
    /// # Errors
    /// The database's error.
    pub async fn replay_dead(&self) -> Result<u64, DbErr> {
        let mut update = Query::update();
        update
            .table(col(&self.config.table))
            .values([
                (col("dead"), Expr::val(false)),
                (col("attempts"), Expr::val(0i32)),
                (col("next_attempt_at"), Expr::val(now_ms())),
            ])
            .and_where(Expr::col(col("dead")).eq(true));
        let r = self.db.execute_raw(self.backend().build(&update)).await?;
        Ok(r.rows_affected())
    }

    /// The table's counts.
    ///
    /// # Errors
    /// The database's error.
    pub async fn stats(&self) -> Result<OutboxStats, DbErr> {
        let t = &self.config.table;
        let q = |dead: bool| {
            let mut s = Query::select();
            s.expr(Expr::col(col("id")).count())
                .expr(Expr::col(col("created_at")).min())
                .from(col(t))
                .and_where(Expr::col(col("dead")).eq(dead));
            s
        };
        let backend = self.backend();
        let mut out = OutboxStats::default();
        for dead in [false, true] {
            let row = self.db.query_one_raw(backend.build(&q(dead))).await?;
            let (n, oldest) = match row {
                Some(r) => {
                    (r.try_get_by_index::<i64>(0).unwrap_or(0), r.try_get_by_index::<Option<i64>>(1).ok().flatten())
                }
                None => (0, None),
            };
            if dead {
                out.dead = u64::try_from(n).unwrap_or(0);
            } else {
                out.pending = u64::try_from(n).unwrap_or(0);
                out.oldest_ms = oldest.map_or(0, |o| u64::try_from(now_ms() - o).unwrap_or(0));
            }
        }
        Ok(out)
    }

    /// The process-local counters: intents recorded, applied by their
    /// writer, drained, failed and dead-lettered.
    pub fn counters(&self) -> (u64, u64, u64, u64, u64) {
        let c = &self.counters;
        (
            c.recorded.load(Ordering::Relaxed),
            c.applied_by_writer.load(Ordering::Relaxed),
            c.drained.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.dead_lettered.load(Ordering::Relaxed),
        )
    }

    /// Starts the background drainer (and the PostgreSQL listener), holding
    /// the outbox weakly: it stops when the last `CachedDatabase` goes.
    pub(crate) fn start(self: &Arc<Self>) {
        if !self.config.drainer {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            warn!("no tokio runtime: the outbox drainer does not run in this process");
            return;
        };
        let weak = Arc::downgrade(self);
        let every = self.config.poll_interval;
        rt.spawn(drainer(weak.clone(), every));
        #[cfg(feature = "postgres")]
        if self.config.listen && self.backend() == DbBackend::Postgres {
            rt.spawn(listener(weak, self.db.get_postgres_connection_pool().clone(), self.config.grace));
        }
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

#[cfg(feature = "postgres")]
async fn listener(outbox: Weak<Outbox>, pool: sqlx::PgPool, grace: Duration) {
    let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
        Ok(l) => l,
        Err(e) => {
            debug!(error = %e, "no LISTEN connection; the outbox drainer polls");
            return;
        }
    };
    if let Err(e) = listener.listen(matroska_sql::outbox::CHANNEL).await {
        debug!(error = %e, "LISTEN failed; the outbox drainer polls");
        return;
    }
    loop {
        match listener.recv().await {
            Ok(_) => {
                // the writer applies its own intent first: look after the grace
                tokio::time::sleep(grace).await;
                let Some(o) = outbox.upgrade() else { return };
                o.wake.notify_one();
            }
            Err(e) => {
                debug!(error = %e, "LISTEN connection lost; reconnecting");
                if outbox.upgrade().is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

impl matroska::Recovery for Outbox {
    fn recover(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), matroska::BoxError>> + Send + '_>> {
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

/// Creates an outbox table named `table` if it does not exist.
///
/// # Errors
/// The database's error, or an invalid table name.
pub async fn create_table<C: ConnectionTrait>(db: &C, table: &str) -> Result<(), DbErr> {
    OutboxConfig::new().table(table).validate()?;
    let backend = db.get_database_backend();
    let mut create = Table::create();
    create
        .table(col(table))
        .if_not_exists()
        .col(ColumnDef::new(col("id")).big_integer().not_null().auto_increment().primary_key())
        .col(ColumnDef::new(col("deps")).text().not_null())
        .col(ColumnDef::new(col("created_at")).big_integer().not_null())
        .col(ColumnDef::new(col("next_attempt_at")).big_integer().not_null())
        .col(ColumnDef::new(col("attempts")).integer().not_null().default(0))
        .col(ColumnDef::new(col("dead")).boolean().not_null().default(false))
        .col(ColumnDef::new(col("last_error")).text().null());
    if backend == DbBackend::Sqlite {
        // SQLite: an auto-increment key must be INTEGER PRIMARY KEY
        let mut sqlite = Table::create();
        sqlite
            .table(col(table))
            .if_not_exists()
            .col(ColumnDef::new(col("id")).integer().not_null().auto_increment().primary_key())
            .col(ColumnDef::new(col("deps")).text().not_null())
            .col(ColumnDef::new(col("created_at")).big_integer().not_null())
            .col(ColumnDef::new(col("next_attempt_at")).big_integer().not_null())
            .col(ColumnDef::new(col("attempts")).integer().not_null().default(0))
            .col(ColumnDef::new(col("dead")).boolean().not_null().default(false))
            .col(ColumnDef::new(col("last_error")).text().null());
        create = sqlite;
    }
    db.execute_raw(backend.build(&create)).await?;
    let mut index = Index::create();
    index.name(format!("{table}_due")).table(col(table)).col(col("dead")).col(col("next_attempt_at")).if_not_exists();
    if backend == DbBackend::MySql {
        // MySQL has no CREATE INDEX IF NOT EXISTS
        let exists = db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                "SELECT COUNT(*) AS n FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?",
                [table.into(), format!("{table}_due").into()],
            ))
            .await?
            .map(|r| r.try_get::<i64>("", "n").unwrap_or(0) > 0)
            .unwrap_or(false);
        if exists {
            return Ok(());
        }
        let mut index = Index::create();
        index.name(format!("{table}_due")).table(col(table)).col(col("dead")).col(col("next_attempt_at"));
        db.execute_raw(backend.build(&index)).await?;
        return Ok(());
    }
    db.execute_raw(backend.build(&index)).await?;
    Ok(())
}

/// The outbox table as a sea-orm-migration migration (feature `migration`).
///
/// ```ignore
/// fn migrations() -> Vec<Box<dyn MigrationTrait>> {
///     vec![Box::new(matroska_seaorm::outbox::migration::CreateOutbox::default()), /* yours */]
/// }
/// ```
#[cfg(feature = "migration")]
pub mod migration {
    use sea_orm_migration::prelude::*;

    /// Creates the outbox table (and drops it on `down`).
    #[derive(Clone, Debug)]
    pub struct CreateOutbox {
        table: String,
    }

    impl Default for CreateOutbox {
        fn default() -> Self {
            CreateOutbox { table: super::DEFAULT_TABLE.to_owned() }
        }
    }

    impl CreateOutbox {
        /// A migration for a table of another name (as in
        /// [`OutboxConfig::table`](super::OutboxConfig::table)).
        pub fn named(table: impl Into<String>) -> Self {
            CreateOutbox { table: table.into() }
        }
    }

    impl MigrationName for CreateOutbox {
        fn name(&self) -> &str {
            "m20261125_000001_create_matroska_outbox"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for CreateOutbox {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            super::create_table(manager.get_connection(), &self.table).await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager.drop_table(Table::drop().table(Alias::new(self.table.as_str())).if_exists().to_owned()).await
        }
    }
}
