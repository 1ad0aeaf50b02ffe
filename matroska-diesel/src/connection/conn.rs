//! [`CachedConnection`]: a diesel-async connection that keeps the cache
//! correct.

use std::fmt;
use std::sync::Arc;

use diesel::connection::{CacheSize, Instrumentation, TransactionManagerStatus};
use diesel::query_builder::{AsQuery, QueryFragment, QueryId};
use diesel::QueryResult;
use diesel_async::{AsyncConnection, AsyncConnectionCore, SimpleAsyncConnection, TransactionManager};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use matroska::Dep;
use tracing::warn;

use super::raw::Raw;
use super::transaction::{depth_of, Committed, Levels};
use super::write::{self, complete, decode_rows, precise_deps, Plan};
use super::{CachedTransactionManager, Shared};
use crate::backend::CacheBackend;
use crate::entity::unkeyed_insert;

/// The row type of a connection whose rows own their data (every
/// connection diesel-async provides).
#[doc(hidden)]
pub trait RowOf {
    type R;
}

impl<C: AsyncConnectionCore + 'static> RowOf for C {
    type R = C::Row<'static, 'static>;
}

/// A diesel-async connection that keeps a [`matroska::Cache`] correct: pass
/// `&mut conn` wherever Diesel takes a connection. Made by
/// [`CachedDatabase::wrap`](crate::CachedDatabase::wrap) or
/// [`CachedDatabase::connect`](crate::CachedDatabase::connect).
///
/// * Every statement is read (whatever API sent it: the query builder,
///   `sql_query`, `batch_execute`), and after a write is committed the
///   entries it may have changed are invalidated: precisely (row keys, the
///   lists rows enter and leave, the relations they join and leave) for
///   tables of models with `derive(CacheModel)`, coarsely (every cached list
///   and relation of the table) for other tables and for statements whose
///   rows cannot be told. See the write-path table in the [crate docs](crate).
/// * Transactions (`transaction`, nested ones as savepoints,
///   `begin_test_transaction`) are followed: invalidation happens after the
///   outermost commit; a rollback, an error, a panic or a dropped
///   transaction invalidates nothing of its own and caches nothing of what
///   was read inside (values loaded through `Cache::get_or_load` inside a
///   transaction are returned but not cached).
/// * A write whose invalidation fails (the cache unreachable) still
///   succeeds; the cache keeps the invalidation and applies it before it
///   serves reads again ([`last_commit`](Self::last_commit) tells).
pub struct CachedConnection<C> {
    pub(super) inner: C,
    pub(super) shared: Arc<Shared>,
    pub(super) levels: Levels,
    /// A write of the connection's own that was abandoned (its future
    /// dropped): its own transaction to roll back, its coarse dependencies.
    pub(super) abandoned: Option<Abandoned>,
    pub(super) last_commit: Option<Committed>,
}

/// What an abandoned write leaves for the next use of the connection.
#[derive(Debug)]
pub(super) struct Abandoned {
    pub(super) own_transaction: bool,
}

impl<C> fmt::Debug for CachedConnection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedConnection")
            .field("connection", &std::any::type_name::<C>())
            .field("depth", &self.levels.depth())
            .finish_non_exhaustive()
    }
}

/// Spawns the coarse invalidation of a write whose future is dropped before
/// it finished (it may have committed).
pub(super) struct Guard {
    shared: Arc<Shared>,
    deps: Vec<Dep>,
    armed: bool,
}

impl Guard {
    pub(super) fn new(shared: &Arc<Shared>, deps: Vec<Dep>) -> Self {
        Guard { shared: Arc::clone(shared), deps, armed: true }
    }

    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.armed {
            warn!(
                deps = self.deps.len(),
                "a write was abandoned before it finished; invalidating what it may have changed"
            );
            self.shared.invalidate_detached(std::mem::take(&mut self.deps));
        }
    }
}

/// What a forwarded call returns.
pub(super) enum Want {
    /// `execute`: the count.
    Count,
    /// `load`: the rows.
    Rows,
    /// `batch_execute`: nothing.
    Batch,
}

pub(super) enum Answer<R> {
    Count(usize),
    Rows(Vec<R>),
    Done,
}

impl<C> CachedConnection<C> {
    pub(crate) fn new(inner: C, shared: Arc<Shared>) -> Self {
        CachedConnection { inner, shared, levels: Levels::default(), abandoned: None, last_commit: None }
    }

    /// The wrapped connection. **Writes through it are not seen**: use it
    /// only for what needs the concrete type, and invalidate what it
    /// changed yourself.
    pub fn inner(&mut self) -> &mut C {
        &mut self.inner
    }

    /// Unwraps the connection (to return it to a pool, say).
    pub fn into_inner(self) -> C {
        self.inner
    }

    /// What became of the invalidation of the last write committed through
    /// this connection: an autocommit statement's, or the outermost commit
    /// of a transaction's.
    pub fn last_commit(&self) -> Option<&Committed> {
        self.last_commit.as_ref()
    }

    /// How deep the open transactions are (0 outside a transaction).
    pub fn transaction_depth(&self) -> usize {
        self.levels.depth()
    }
}

impl<C> CachedConnection<C>
where
    C: AsyncConnection + RowOf + 'static,
    C::Backend: CacheBackend,
    for<'c> C: AsyncConnectionCore<Row<'c, 'static> = <C as RowOf>::R>,
    <C as RowOf>::R: Send + 'static,
    for<'c> <C as RowOf>::R: diesel::row::Row<'c, C::Backend>,
{
    /// The inner transaction depth.
    pub(super) fn inner_depth(&mut self) -> usize {
        depth_of(C::TransactionManager::transaction_manager_status_mut(&mut self.inner))
    }

    /// Cleans up after an abandoned write: rolls back its own transaction.
    pub(super) async fn recover(&mut self) -> QueryResult<()> {
        if let Some(a) = self.abandoned.take() {
            let in_error = matches!(
                C::TransactionManager::transaction_manager_status_mut(&mut self.inner),
                TransactionManagerStatus::InError
            );
            if a.own_transaction && in_error && self.levels.depth() == 0 {
                // its BEGIN was abandoned before its outcome was known: the
                // database may be in a transaction nobody knows of; end it
                // (an error or a warning when there is none)
                let _ = self.inner.batch_execute("ROLLBACK").await;
                *C::TransactionManager::transaction_manager_status_mut(&mut self.inner) =
                    TransactionManagerStatus::default();
            } else if a.own_transaction && self.inner_depth() > self.levels.depth() {
                C::TransactionManager::rollback_transaction(&mut self.inner).await?;
            }
            let depth = self.inner_depth();
            self.levels.reconcile(depth, &self.shared);
        }
        Ok(())
    }

    /// Begins a transaction of the connection's own (SQLite: `BEGIN
    /// IMMEDIATE`, which takes the write lock at once).
    ///
    /// While `BEGIN` runs, the wrapped connection's transaction state says
    /// "in error": if this future is dropped before the outcome is known
    /// (the `BEGIN` may have gone through), the next call rolls back
    /// ([`recover`](Self::recover)) and a pool sees a broken connection
    /// (diesel-async's `is_broken`) instead of one in a transaction nobody
    /// knows of.
    async fn begin_own(&mut self) -> QueryResult<()> {
        let status = C::TransactionManager::transaction_manager_status_mut(&mut self.inner);
        if depth_of(status) != 0 {
            return Err(diesel::result::Error::AlreadyInTransaction);
        }
        status.set_in_error();
        let begun = self.inner.batch_execute(<C::Backend as CacheBackend>::BEGIN_OWN).await;
        let status = C::TransactionManager::transaction_manager_status_mut(&mut self.inner);
        *status = TransactionManagerStatus::default();
        begun?;
        match status {
            TransactionManagerStatus::Valid(valid) => {
                valid.change_transaction_depth(diesel::connection::TransactionDepthChange::IncreaseDepth)
            }
            TransactionManagerStatus::InError => Err(diesel::result::Error::BrokenTransactionManager),
        }
    }

    async fn load_rows(&mut self, raw: Raw<C::Backend>) -> QueryResult<Vec<<C as RowOf>::R>> {
        self.inner.load(raw).await?.try_collect().await
    }

    /// Runs a statement: reads pass through, writes follow their plan.
    pub(super) async fn run(&mut self, raw: Raw<C::Backend>, want: Want) -> QueryResult<Answer<<C as RowOf>::R>> {
        self.recover().await?;
        let plan = self.shared.plan(&raw.sql, <C::Backend as CacheBackend>::DIALECT)?;
        self.run_planned(plan, raw, want).await
    }

    /// Runs a statement whose plan is made.
    pub(super) async fn run_planned(
        &mut self,
        plan: Plan,
        raw: Raw<C::Backend>,
        want: Want,
    ) -> QueryResult<Answer<<C as RowOf>::R>> {
        let in_transaction = self.levels.depth() > 0;
        if let Some(token) = self.levels.token() {
            // whatever a loader, or this task's manual puts, read here may be
            // uncommitted (or an old snapshot)
            matroska::read_in_transaction(token, "read inside a database transaction");
        }
        if matches!(plan, Plan::Plain) {
            return self.forward(raw, want).await;
        }
        if in_transaction {
            let id = self.levels.reserve(plan.coarse());
            match self.write(&plan, raw, want).await {
                Ok((answer, deps)) => {
                    self.levels.settle(id, deps);
                    Ok(answer)
                }
                Err(e) if plan.script() => {
                    // several statements: those before the failing one may
                    // have written, and stay in the transaction
                    self.levels.settle(id, plan.coarse());
                    Err(e)
                }
                Err(e) => {
                    // one statement fails whole: it changed nothing
                    self.levels.cancel(id);
                    Err(e)
                }
            }
        } else {
            self.autocommit(plan, raw, want).await
        }
    }

    async fn forward(&mut self, raw: Raw<C::Backend>, want: Want) -> QueryResult<Answer<<C as RowOf>::R>> {
        Ok(match want {
            Want::Count => Answer::Count(self.inner.execute_returning_count(raw).await?),
            Want::Rows => Answer::Rows(self.load_rows(raw).await?),
            Want::Batch => {
                self.inner.batch_execute(&raw.sql).await?;
                Answer::Done
            }
        })
    }

    /// A write outside a transaction: in a transaction of its own when rows
    /// are read first or intents are recorded, invalidated once committed.
    async fn autocommit(
        &mut self,
        plan: Plan,
        raw: Raw<C::Backend>,
        want: Want,
    ) -> QueryResult<Answer<<C as RowOf>::R>> {
        let guard = Guard::new(&self.shared, plan.coarse());
        let own = plan.reads_first() || self.shared.outbox.is_some();
        if !own {
            let (answer, deps) = match self.write(&plan, raw, want).await {
                Ok(done) => done,
                Err(e) if plan.script() => {
                    // statements before the failing one ran and committed
                    // (SQLite runs them one by one)
                    let r = self.shared.apply(plan.coarse(), None).await;
                    guard.disarm();
                    self.last_commit = Some(Committed::from_result(r));
                    return Err(e);
                }
                Err(e) => {
                    // the statement failed: it changed nothing
                    guard.disarm();
                    return Err(e);
                }
            };
            let r = self.shared.apply(deps, None).await;
            guard.disarm();
            self.last_commit = Some(Committed::from_result(r));
            return Ok(answer);
        }
        self.abandoned = Some(Abandoned { own_transaction: true });
        if let Err(e) = self.begin_own().await {
            guard.disarm();
            self.abandoned = None;
            return Err(e);
        }
        let result = match self.write(&plan, raw, want).await {
            Ok((answer, deps)) => match self.record(&deps).await {
                Ok(intent) => Ok((answer, deps, intent)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok((answer, deps, intent)) => {
                let committed = C::TransactionManager::commit_transaction(&mut self.inner).await;
                self.abandoned = None;
                let r = self.shared.apply(deps, intent.filter(|_| committed.is_ok())).await;
                guard.disarm();
                committed?;
                self.last_commit = Some(Committed::from_result(r));
                Ok(answer)
            }
            Err(e) => {
                let rolled_back = C::TransactionManager::rollback_transaction(&mut self.inner).await;
                self.abandoned = None;
                guard.disarm();
                if let Err(r) = rolled_back {
                    warn!(error = %r, "rolling back the connection's own transaction failed");
                }
                Err(e)
            }
        }
    }

    /// Records `deps` as an outbox intent in the open transaction.
    pub(super) async fn record(&mut self, deps: &[Dep]) -> QueryResult<Option<i64>> {
        match self.shared.outbox.clone() {
            Some(outbox) if !deps.is_empty() => Ok(Some(outbox.record(&mut self.inner, deps).await?)),
            _ => Ok(None),
        }
    }

    /// Runs a write (in whatever transaction is open) and learns what it
    /// changed.
    async fn write(
        &mut self,
        plan: &Plan,
        raw: Raw<C::Backend>,
        want: Want,
    ) -> QueryResult<(Answer<<C as RowOf>::R>, Vec<Dep>)> {
        let (info, w, also) = match plan {
            Plan::Precise { info, write, also } => (*info, write, also),
            other => {
                let deps = other.coarse();
                return Ok((self.forward(raw, want).await?, deps));
            }
        };
        // before: the rows an update that moves them will change
        let before = if plan.reads_first() {
            let filter = match &w.kind {
                matroska_sql::WriteKind::Update { filter, .. } => Some(filter),
                _ => None,
            };
            match filter.and_then(|f| write::read_first(&raw, info, &w.target, f)) {
                Some(select) => {
                    let rows = self.load_rows(select).await?;
                    match decode_rows::<C::Backend, _>(info, &rows) {
                        Ok(r) if complete(info, &r) => Some(r),
                        Ok(_) | Err(_) => None,
                    }
                }
                None => None,
            }
        } else {
            None
        };
        #[cfg(feature = "test-hooks")]
        if before.is_some() {
            crate::test_hooks::after_read_first(&self.shared).await;
        }
        // the statement, returning the rows it wrote
        let (answer, returned) = if w.returning {
            let rows = self.load_rows(raw).await?;
            let decoded = decode_rows::<C::Backend, _>(info, &rows).ok().filter(|r| complete(info, r));
            let answer = match want {
                Want::Count => Answer::Count(rows.len()),
                Want::Rows => Answer::Rows(rows),
                Want::Batch => Answer::Done,
            };
            (answer, decoded)
        } else {
            let rows = self.load_rows(write::with_returning(&raw, info)).await?;
            let decoded = decode_rows::<C::Backend, _>(info, &rows).ok().filter(|r| complete(info, r));
            let answer = match want {
                Want::Count => Answer::Count(rows.len()),
                Want::Rows => Answer::Rows(Vec::new()),
                Want::Batch => Answer::Done,
            };
            (answer, decoded)
        };
        let mut deps = match returned {
            Some(after) => match precise_deps(info, w, before.as_deref(), &after) {
                Ok(deps) => deps,
                Err(e) => {
                    warn!(table = info.table, error = %e, "cannot tell which lists a write changed; invalidating the whole table");
                    vec![info.everything(), unkeyed_insert(info.table)]
                }
            },
            None => {
                warn!(table = info.table, "the rows a write returned lack columns; invalidating the whole table");
                vec![info.everything(), unkeyed_insert(info.table)]
            }
        };
        deps.extend(also.iter().cloned());
        Ok((answer, deps))
    }

    /// Runs a statement the parser cannot read (or any statement), declaring
    /// the tables it writes: they are invalidated coarsely after it
    /// committed.
    ///
    /// # Errors
    /// The database's error.
    pub async fn execute_touching<T>(&mut self, query: T, tables: &[&str]) -> QueryResult<usize>
    where
        T: QueryFragment<C::Backend> + QueryId + Send,
    {
        let raw = Raw::capture(&query)?;
        // (qualified names, and names in any case, resolve to the model)
        let deps: Vec<Dep> = tables.iter().flat_map(|t| write::touched(t)).collect();
        self.recover().await?;
        if self.levels.depth() > 0 {
            let id = self.levels.reserve(deps.clone());
            return match self.inner.execute_returning_count(raw).await {
                Ok(n) => Ok(n),
                Err(e) => {
                    self.levels.cancel(id);
                    Err(e)
                }
            };
        }
        match self.autocommit(Plan::Coarse(deps), raw, Want::Count).await? {
            Answer::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }
}

impl<C> SimpleAsyncConnection for CachedConnection<C>
where
    C: AsyncConnection + RowOf + 'static,
    C::Backend: CacheBackend,
    for<'c> C: AsyncConnectionCore<Row<'c, 'static> = <C as RowOf>::R>,
    <C as RowOf>::R: Send + 'static,
    for<'c> <C as RowOf>::R: diesel::row::Row<'c, C::Backend>,
{
    async fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        self.run(Raw::text(query), Want::Batch).await.map(|_| ())
    }
}

impl<C> AsyncConnectionCore for CachedConnection<C>
where
    C: AsyncConnection + RowOf + 'static,
    C::Backend: CacheBackend,
    for<'c> C: AsyncConnectionCore<Row<'c, 'static> = <C as RowOf>::R>,
    <C as RowOf>::R: Send + 'static,
    for<'c> <C as RowOf>::R: diesel::row::Row<'c, C::Backend>,
{
    type ExecuteFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<usize>>;
    type LoadFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<Self::Stream<'conn, 'query>>>;
    type Stream<'conn, 'query> = BoxStream<'conn, QueryResult<Self::Row<'conn, 'query>>>;
    type Row<'conn, 'query> = <C as RowOf>::R;
    type Backend = C::Backend;

    fn load<'conn, 'query, T>(&'conn mut self, source: T) -> Self::LoadFuture<'conn, 'query>
    where
        T: AsQuery + 'query,
        T::Query: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        let raw = Raw::capture(&source.as_query());
        async move {
            let raw = raw?;
            self.recover().await?;
            let plan = self.shared.plan(&raw.sql, <C::Backend as CacheBackend>::DIALECT)?;
            if matches!(plan, Plan::Plain) {
                if let Some(token) = self.levels.token() {
                    matroska::read_in_transaction(token, "read inside a database transaction");
                }
                // a read streams from the wrapped connection
                return Ok(self.inner.load(raw).await?.boxed());
            }
            match self.run_planned(plan, raw, Want::Rows).await? {
                Answer::Rows(rows) => Ok(futures_util::stream::iter(rows.into_iter().map(Ok)).boxed()),
                _ => Ok(futures_util::stream::empty().boxed()),
            }
        }
        .boxed()
    }

    fn execute_returning_count<'conn, 'query, T>(&'conn mut self, source: T) -> Self::ExecuteFuture<'conn, 'query>
    where
        T: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        let raw = Raw::capture(&source);
        async move {
            match self.run(raw?, Want::Count).await? {
                Answer::Count(n) => Ok(n),
                _ => Ok(0),
            }
        }
        .boxed()
    }
}

impl<C> AsyncConnection for CachedConnection<C>
where
    C: AsyncConnection + RowOf + 'static,
    C::Backend: CacheBackend,
    for<'c> C: AsyncConnectionCore<Row<'c, 'static> = <C as RowOf>::R>,
    <C as RowOf>::R: Send + 'static,
    for<'c> <C as RowOf>::R: diesel::row::Row<'c, C::Backend>,
{
    type TransactionManager = CachedTransactionManager;

    /// A `CachedConnection` needs its cache: use
    /// [`CachedDatabase::connect`](crate::CachedDatabase::connect) or
    /// [`CachedDatabase::wrap`](crate::CachedDatabase::wrap).
    async fn establish(_database_url: &str) -> diesel::ConnectionResult<Self> {
        Err(diesel::ConnectionError::BadConnection(
            "a CachedConnection needs its cache: use CachedDatabase::connect or CachedDatabase::wrap".into(),
        ))
    }

    fn transaction_state(&mut self) -> &mut Levels {
        &mut self.levels
    }

    fn instrumentation(&mut self) -> &mut dyn Instrumentation {
        self.inner.instrumentation()
    }

    fn set_instrumentation(&mut self, instrumentation: impl Instrumentation) {
        self.inner.set_instrumentation(instrumentation);
    }

    fn set_prepared_statement_cache_size(&mut self, size: CacheSize) {
        self.inner.set_prepared_statement_cache_size(size);
    }
}
