//! Transactions through a [`CachedConnection`]: the transaction manager
//! wraps the connection's own, keeps the invalidations of each level
//! (transaction or savepoint), and applies them after the outermost commit.

use std::sync::Arc;

use diesel::connection::TransactionManagerStatus;
use diesel::QueryResult;
use diesel_async::{AsyncConnection, AsyncConnectionCore, TransactionManager};
use matroska::Dep;

use super::conn::{CachedConnection, Guard, RowOf};
use super::Shared;
use crate::backend::CacheBackend;

/// The invalidations of each open transaction level of a connection
/// (Diesel's `TransactionStateData` of a [`CachedConnection`]).
#[derive(Debug, Default)]
pub struct Levels {
    levels: Vec<Level>,
    next: u64,
    /// The open transaction, as the cache sees it: puts from tasks that
    /// read through it (or its savepoints) are refused until it ends.
    token: Option<matroska::TransactionToken>,
}

#[derive(Debug, Default)]
struct Level {
    entries: Vec<(u64, Vec<Dep>)>,
}

impl Levels {
    pub(crate) fn depth(&self) -> usize {
        self.levels.len()
    }

    fn push(&mut self) {
        if self.token.is_none() {
            self.token = Some(matroska::TransactionToken::new());
        }
        self.levels.push(Level::default());
    }

    /// The open transaction's token (`None` outside a transaction).
    pub(crate) fn token(&self) -> Option<&matroska::TransactionToken> {
        self.token.as_ref()
    }

    /// Records what a write about to run may change (coarse): if its caller
    /// stops waiting, the statement may still run and commit.
    pub(crate) fn reserve(&mut self, deps: Vec<Dep>) -> u64 {
        let id = self.next;
        self.next += 1;
        if let Some(level) = self.levels.last_mut() {
            level.entries.push((id, deps));
        }
        id
    }

    /// Replaces a reservation by what the write did change.
    pub(crate) fn settle(&mut self, id: u64, deps: Vec<Dep>) {
        for level in self.levels.iter_mut().rev() {
            if let Some(e) = level.entries.iter_mut().find(|(i, _)| *i == id) {
                e.1 = deps;
                return;
            }
        }
    }

    /// Drops a reservation: the statement failed, so it changed nothing.
    pub(crate) fn cancel(&mut self, id: u64) {
        for level in &mut self.levels {
            level.entries.retain(|(i, _)| *i != id);
        }
    }

    /// Closes the innermost level; returns its dependencies.
    fn pop(&mut self) -> Vec<Dep> {
        self.levels.pop().map(|l| l.entries.into_iter().flat_map(|(_, d)| d).collect()).unwrap_or_default()
    }

    /// Ends the transaction as the cache sees it, once no level is open.
    fn end_if_closed(&mut self) {
        if self.levels.is_empty() {
            self.token = None;
        }
    }

    fn absorb(&mut self, deps: Vec<Dep>) {
        if deps.is_empty() {
            return;
        }
        let id = self.next;
        self.next += 1;
        if let Some(level) = self.levels.last_mut() {
            level.entries.push((id, deps));
        }
    }

    /// Brings the levels in line with the wrapped connection's depth after
    /// an error left them apart: levels closed without our knowledge hand
    /// their invalidations down, or, when no transaction is left, apply them
    /// (their fate is unknown; invalidating is harmless).
    pub(crate) fn reconcile(&mut self, inner_depth: usize, shared: &Arc<Shared>) {
        while self.levels.len() > inner_depth {
            let deps = self.pop();
            if self.levels.is_empty() {
                shared.invalidate_detached(deps);
            } else {
                self.absorb(deps);
            }
        }
        while self.levels.len() < inner_depth {
            self.push();
        }
        self.end_if_closed();
    }
}

/// The transaction depth a status says.
pub(crate) fn depth_of(status: &mut TransactionManagerStatus) -> usize {
    match status.transaction_depth() {
        Ok(Some(d)) => d.get() as usize,
        _ => 0,
    }
}

/// What became of a committed write's invalidation, from
/// [`CachedConnection::last_commit`].
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
    /// ([`CachedDatabase::flush`](crate::CachedDatabase::flush) waits).
    Pending(matroska::Error),
}

impl Committed {
    pub(crate) fn from_result(r: Result<u64, matroska::Error>) -> Self {
        match r {
            Ok(dropped) => Committed::Invalidated { dropped },
            Err(e) => Committed::Pending(e),
        }
    }

    /// Whether the invalidation is pending (it failed).
    pub fn is_pending(&self) -> bool {
        matches!(self, Committed::Pending(_))
    }
}

/// The transaction manager of a [`CachedConnection`]: the wrapped
/// connection's own, plus the bookkeeping of invalidations.
#[derive(Debug, Default, Clone, Copy)]
pub struct CachedTransactionManager;

impl<C> TransactionManager<CachedConnection<C>> for CachedTransactionManager
where
    C: AsyncConnection + RowOf + 'static,
    C::Backend: CacheBackend,
    for<'c> C: AsyncConnectionCore<Row<'c, 'static> = <C as RowOf>::R>,
    <C as RowOf>::R: Send + 'static,
    for<'c> <C as RowOf>::R: diesel::row::Row<'c, C::Backend>,
{
    type TransactionStateData = Levels;

    async fn begin_transaction(conn: &mut CachedConnection<C>) -> QueryResult<()> {
        conn.recover().await?;
        C::TransactionManager::begin_transaction(&mut conn.inner).await?;
        conn.levels.push();
        Ok(())
    }

    async fn rollback_transaction(conn: &mut CachedConnection<C>) -> QueryResult<()> {
        let r = C::TransactionManager::rollback_transaction(&mut conn.inner).await;
        // what the rolled-back levels wrote is gone
        let after = conn.inner_depth();
        while conn.levels.depth() > after {
            drop(conn.levels.pop());
        }
        conn.levels.reconcile(after, &conn.shared);
        r
    }

    async fn commit_transaction(conn: &mut CachedConnection<C>) -> QueryResult<()> {
        if conn.levels.depth() > 1 {
            // a savepoint: its invalidations go to the enclosing level
            let r = C::TransactionManager::commit_transaction(&mut conn.inner).await;
            let after = conn.inner_depth();
            if after < conn.levels.depth() {
                let deps = conn.levels.pop();
                conn.levels.absorb(deps);
            }
            conn.levels.reconcile(after, &conn.shared);
            return r;
        }
        let mut deps = conn.levels.pop();
        deps.sort_unstable();
        deps.dedup();
        let intent = match conn.record(&deps).await {
            Ok(intent) => intent,
            Err(e) => {
                // not committed: the transaction stays open with its writes
                conn.levels.push();
                conn.levels.absorb(deps);
                return Err(e);
            }
        };
        let guard = Guard::new(&conn.shared, deps.clone());
        let committed = C::TransactionManager::commit_transaction(&mut conn.inner).await;
        let after = conn.inner_depth();
        if committed.is_err() && after > 0 {
            // still open (the commit failed before it ran): keep the writes
            conn.levels.push();
            conn.levels.absorb(deps);
            guard.disarm();
            return committed;
        }
        // committed, or its outcome is unknown: invalidating is harmless
        let r = conn.shared.apply(deps, intent.filter(|_| committed.is_ok())).await;
        guard.disarm();
        conn.last_commit = Some(Committed::from_result(r));
        conn.levels.reconcile(after, &conn.shared);
        committed
    }

    fn transaction_manager_status_mut(conn: &mut CachedConnection<C>) -> &mut TransactionManagerStatus {
        C::TransactionManager::transaction_manager_status_mut(&mut conn.inner)
    }

    fn is_broken_transaction_manager(conn: &mut CachedConnection<C>) -> bool {
        conn.abandoned.is_some() || C::TransactionManager::is_broken_transaction_manager(&mut conn.inner)
    }
}
