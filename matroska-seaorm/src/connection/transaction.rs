//! Transactions through a [`CachedDatabase`](super::CachedDatabase).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use matroska::Dep;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, IsolationLevel, QueryResult,
    Statement, TransactionError, TransactionOptions, TransactionSession, TransactionTrait,
};

use super::stream::CachedStream;
use super::write::{self, Answer, Call, Plan};
use super::{all, exec, one, Shared};

/// The invalidations of one transaction level (a transaction or a
/// savepoint), applied after the outermost commit.
#[derive(Debug, Default)]
struct Level {
    entries: Mutex<Vec<(u64, Vec<Dep>)>>,
    next: AtomicU64,
    /// The enclosing level (`None` for the outermost transaction).
    parent: Option<Arc<Level>>,
    /// Savepoints opened on this level and not yet ended.
    open_children: AtomicUsize,
    /// Set when this level was committed while a savepoint of it was still
    /// open: the driver then only released that savepoint, and the real end
    /// of the transaction is the savepoint's. What this level wrote waits
    /// here for it.
    deferred: Mutex<Option<Deferred>>,
}

/// What a level committed before its savepoints ended hands on to them.
#[derive(Debug, Default)]
struct Deferred {
    deps: Vec<Dep>,
    intents: Vec<i64>,
}

/// Ends a savepoint's membership in its parent's open children.
#[derive(Debug)]
struct ChildOf(Arc<Level>);

impl Drop for ChildOf {
    fn drop(&mut self) {
        self.0.open_children.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Level {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Vec<Dep>)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what a write about to run may change (coarse): if the caller
    /// stops waiting, the statement may still run and commit.
    fn reserve(&self, deps: Vec<Dep>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().push((id, deps));
        id
    }

    /// Replaces a reservation by what the write did change.
    fn settle(&self, id: u64, deps: Vec<Dep>) {
        if let Some(e) = self.lock().iter_mut().find(|(i, _)| *i == id) {
            e.1 = deps;
        }
    }

    /// Drops a reservation: the statement failed, so it changed nothing.
    fn cancel(&self, id: u64) {
        self.lock().retain(|(i, _)| *i != id);
    }

    fn take(&self) -> Vec<Dep> {
        let mut deps: Vec<Dep> = std::mem::take(&mut *self.lock()).into_iter().flat_map(|(_, d)| d).collect();
        deps.sort_unstable();
        deps.dedup();
        deps
    }

    fn deferred(&self) -> std::sync::MutexGuard<'_, Option<Deferred>> {
        self.deferred.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn absorb(&self, deps: Vec<Dep>) {
        if !deps.is_empty() {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            self.lock().push((id, deps));
        }
    }
}

/// A transaction on a [`CachedDatabase`](super::CachedDatabase), opened by
/// any API (`begin`, `transaction`, SeaORM's `ActiveModelEx` builders). Its
/// writes are invalidated after the outermost commit; reads and writes made
/// inside it never populate the cache (a value loaded through
/// `Cache::get_or_load` from inside it is returned, not cached). Nested
/// transactions are savepoints: committing one hands its invalidations to
/// the enclosing transaction, rolling one back discards them.
///
/// Dropping it without committing rolls it back (as SeaORM's does).
pub struct CachedTransaction {
    inner: DatabaseTransaction,
    shared: Arc<Shared>,
    level: Arc<Level>,
    depth: usize,
    /// Open while this transaction (or a savepoint of it) is: puts from
    /// tasks that read through it are refused meanwhile.
    token: matroska::TransactionToken,
    /// For a savepoint: its place among the parent's open savepoints.
    _child: Option<ChildOf>,
}

impl fmt::Debug for CachedTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedTransaction").field("depth", &self.depth).finish_non_exhaustive()
    }
}

/// What became of a committed transaction's invalidation, from
/// [`CachedTransaction::commit_with_report`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Committed {
    /// Committed, and every entry it changed is invalidated.
    Invalidated {
        /// The entries dropped.
        dropped: u64,
    },
    /// Committed, but the invalidation failed; the cache keeps it pending
    /// and applies it before serving reads again
    /// ([`CachedDatabase::flush`](super::CachedDatabase::flush) waits).
    Pending(matroska::Error),
    /// A savepoint was released: the enclosing transaction invalidates at
    /// its commit.
    Released,
    /// Committed while a savepoint of it was still open: the driver then
    /// only releases that savepoint, and the transaction really ends with
    /// the savepoint's commit (or rollback), which invalidates what both
    /// wrote.
    Deferred,
}

impl CachedTransaction {
    pub(super) fn outermost(inner: DatabaseTransaction, shared: Arc<Shared>) -> Self {
        CachedTransaction {
            inner,
            shared,
            level: Arc::default(),
            depth: 1,
            token: matroska::TransactionToken::new(),
            _child: None,
        }
    }

    fn nested(&self, inner: DatabaseTransaction) -> Self {
        self.level.open_children.fetch_add(1, Ordering::SeqCst);
        CachedTransaction {
            inner,
            shared: Arc::clone(&self.shared),
            level: Arc::new(Level { parent: Some(Arc::clone(&self.level)), ..Level::default() }),
            depth: self.depth + 1,
            token: self.token.clone(),
            _child: Some(ChildOf(Arc::clone(&self.level))),
        }
    }

    /// The database backend.
    pub fn get_database_backend(&self) -> DbBackend {
        ConnectionTrait::get_database_backend(&self.inner)
    }

    /// How deep this transaction is nested (1 for the outermost).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Commits, and reports what became of the invalidation.
    ///
    /// # Errors
    /// The database's error if the commit failed (its outcome may then be
    /// unknown: the invalidation is applied anyway, which is harmless).
    pub async fn commit_with_report(self) -> Result<Committed, DbErr> {
        let CachedTransaction { inner, shared, level, token, _child, .. } = self;
        let mut deps = level.take();
        let mut intents = Vec::new();
        if level.open_children.load(Ordering::SeqCst) > 0 {
            // a savepoint of this level is still open: the driver releases
            // it and the transaction goes on; the savepoint's end is the
            // real one, and carries what this level wrote
            if level.parent.is_none() {
                intents.extend(shared.record(&inner, &deps).await?);
            }
            *level.deferred() = Some(Deferred { deps, intents });
            inner.commit().await?;
            return Ok(Committed::Deferred);
        }
        // the levels above that committed before this one take effect now
        let mut parent = level.parent.clone();
        while let Some(p) = parent.clone() {
            let Some(d) = p.deferred().take() else { break };
            deps.extend(d.deps);
            intents.extend(d.intents);
            parent = p.parent.clone();
        }
        if let Some(parent) = parent {
            // a savepoint: the enclosing transaction invalidates at its
            // commit (handed over first: a caller that stops waiting
            // during the release loses nothing)
            parent.absorb(deps);
            inner.commit().await?;
            return Ok(Committed::Released);
        }
        deps.sort_unstable();
        deps.dedup();
        // the outermost commit: record, commit and invalidate in a task of
        // their own, so that a caller that stops waiting (a request timeout)
        // cannot leave the commit done and the invalidation undone
        super::spawn_write(async move {
            let _token = token;
            intents.extend(shared.record(&inner, &deps).await?);
            let committed = inner.commit().await;
            // applied even when the commit's outcome is unknown (harmless);
            // the intents stay for the drainer unless the commit succeeded
            let keep = if committed.is_ok() { intents } else { Vec::new() };
            let invalidated = shared.apply_all(deps, keep).await;
            committed?;
            Ok(match invalidated {
                Ok(dropped) => Committed::Invalidated { dropped },
                Err(e) => Committed::Pending(e),
            })
        })
        .await
    }

    async fn call(&self, call: Call) -> Result<Answer, DbErr> {
        // whatever a loader reads here may be uncommitted (or an old snapshot)
        matroska::read_in_transaction(&self.token, "read inside a database transaction");
        let plan = self.shared.plan(call.sql(), self.get_database_backend())?;
        if matches!(plan, Plan::Plain) {
            return call.run(&self.inner).await;
        }
        let id = self.level.reserve(plan.coarse());
        match write::run(&self.inner, &plan, call).await {
            Ok((answer, deps)) => {
                self.level.settle(id, deps);
                Ok(answer)
            }
            Err(e) if plan.script() => {
                // several statements: those before the failing one may
                // have written, and stay in the transaction
                Err(e)
            }
            Err(e) => {
                // one statement fails whole: it changed nothing
                self.level.cancel(id);
                Err(e)
            }
        }
    }
}

/// Runs a transaction callback: commit on `Ok`, roll back on `Err`.
pub(super) async fn run_callback<F, T, E>(txn: CachedTransaction, callback: F) -> Result<T, TransactionError<E>>
where
    F: for<'c> FnOnce(&'c CachedTransaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
    T: Send,
    E: std::fmt::Display + std::fmt::Debug + Send,
{
    let result = callback(&txn).await;
    match result {
        Ok(v) => {
            txn.commit().await.map_err(TransactionError::Connection)?;
            Ok(v)
        }
        Err(e) => {
            txn.rollback().await.map_err(TransactionError::Connection)?;
            Err(TransactionError::Transaction(e))
        }
    }
}

#[async_trait::async_trait]
impl TransactionSession for CachedTransaction {
    async fn commit(self) -> Result<(), DbErr> {
        self.commit_with_report().await.map(|_| ())
    }

    async fn rollback(self) -> Result<(), DbErr> {
        let CachedTransaction { inner, level, .. } = self;
        drop(level.take());
        // levels above that committed before this savepoint (`Deferred`):
        // the driver now rolls back the real transaction, theirs included
        inner.rollback().await
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for CachedTransaction {
    fn get_database_backend(&self) -> DbBackend {
        ConnectionTrait::get_database_backend(&self.inner)
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
impl TransactionTrait for CachedTransaction {
    type Transaction = CachedTransaction;

    async fn begin(&self) -> Result<CachedTransaction, DbErr> {
        Ok(self.nested(self.inner.begin().await?))
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<CachedTransaction, DbErr> {
        Ok(self.nested(self.inner.begin_with_config(isolation_level, access_mode).await?))
    }

    async fn begin_with_options(&self, options: TransactionOptions) -> Result<CachedTransaction, DbErr> {
        Ok(self.nested(self.inner.begin_with_options(options).await?))
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c CachedTransaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self.begin().await.map_err(TransactionError::Connection)?;
        run_callback(txn, callback).await
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
        run_callback(txn, callback).await
    }
}

impl sea_orm::StreamTrait for CachedTransaction {
    type Stream<'a> = CachedStream<<DatabaseTransaction as sea_orm::StreamTrait>::Stream<'a>>;

    fn get_database_backend(&self) -> DbBackend {
        ConnectionTrait::get_database_backend(&self.inner)
    }

    fn stream_raw<'a>(
        &'a self,
        stmt: Statement,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Stream<'a>, DbErr>> + 'a + Send>> {
        Box::pin(async move {
            matroska::read_in_transaction(&self.token, "read inside a database transaction");
            let backend = ConnectionTrait::get_database_backend(&self.inner);
            if matches!(self.shared.plan(&stmt.sql, backend)?, Plan::Plain) {
                return Ok(CachedStream::Inner(sea_orm::StreamTrait::stream_raw(&self.inner, stmt).await?));
            }
            let rows = all(self.call(Call::QueryAll(stmt)).await?)?;
            Ok(CachedStream::Buffered(rows.into_iter()))
        })
    }
}
