//! Transactions: invalidating again after the outermost commit.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use matroska::Dep;
use sea_orm::{DbErr, TransactionSession, TransactionTrait};
use tracing::error;

use crate::registry::current;

tokio::task_local! {
    /// The dependencies invalidated by hooks inside the running transaction.
    static COLLECTED: Arc<Mutex<Vec<Dep>>>;
}

/// Whether the current task runs inside [`transaction`].
pub(crate) fn active() -> bool {
    COLLECTED.try_with(|_| ()).is_ok()
}

/// Records `deps` for the post-commit flush, if inside [`transaction`].
pub(crate) fn collect(deps: &[Dep]) {
    let _ = COLLECTED.try_with(|c| c.lock().unwrap_or_else(|p| p.into_inner()).extend(deps.iter().cloned()));
}

/// The failure of [`transaction`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError<E> {
    /// Beginning, committing or rolling back failed; nothing was committed
    /// (except when a commit fails after the server applied it, which the
    /// database cannot tell).
    #[error("transaction failed: {0}")]
    Connection(#[source] DbErr),
    /// The callback failed; the transaction was rolled back.
    #[error("transaction callback failed: {0}")]
    Transaction(E),
    /// The transaction **was committed**, but invalidating what it changed
    /// failed: cached entries may be stale until invalidated again (for
    /// example with [`entity_dep`](crate::entity_dep)) or until they expire.
    #[error("the transaction was committed but invalidating {deps} dependencies failed")]
    Invalidation {
        /// How many dependencies were to be invalidated.
        deps: usize,
        /// The cause.
        #[source]
        source: crate::Error,
    },
}

/// Runs `callback` in a transaction on `db`; after the outermost commit,
/// invalidates again, in one backend call, everything the hooks (and the bulk
/// helpers) invalidated inside it.
///
/// Why: hooks run before the commit. Between a hook's invalidation and the
/// commit, a reader still sees the old committed row and may cache it; the
/// flush after the commit drops that entry. (Stale-set protection cannot help
/// here: the reader's miss comes after the hook's invalidation.)
///
/// * Nested calls (inside another `transaction`) use a savepoint and flush
///   nothing: a savepoint release is not a commit; the outermost call flushes.
/// * On rollback nothing is flushed; the hooks' immediate invalidations may
///   have dropped entries for nothing, which is harmless.
/// * Hooks on a `DatabaseTransaction` opened elsewhere are refused by default
///   ([`UnmanagedTransactions`](crate::UnmanagedTransactions)).
/// * Work spawned onto other tasks inside the callback is not collected.
///
/// ```
/// # include!("../doc/blog.rs");
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let db = blog().await?;
/// # let cache = matroska::Cache::new(matroska::MemoryBackend::new());
/// # matroska_seaorm::register(cache.clone());
/// use sea_orm::{ActiveModelTrait, ActiveValue::Set, DbErr, EntityTrait};
///
/// let art = article::Entity::find_by_id(1).one(&db).await?.ok_or("no article 1")?;
/// matroska_seaorm::transaction(&db, |txn| Box::pin(async move {
///     let mut a: article::ActiveModel = art.into();
///     a.category_id = Set(3);
///     a.update(txn).await?;
///     Ok::<_, DbErr>(())
/// })).await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// See [`TransactionError`].
pub async fn transaction<C, F, T, E>(db: &C, callback: F) -> Result<T, TransactionError<E>>
where
    C: TransactionTrait,
    F: for<'c> FnOnce(&'c C::Transaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
    T: Send,
    E: Send,
{
    if active() {
        return run(db, callback).await;
    }
    let collected = Arc::new(Mutex::new(Vec::new()));
    let value = COLLECTED.scope(Arc::clone(&collected), run(db, callback)).await?;
    let deps = std::mem::take(&mut *collected.lock().unwrap_or_else(|p| p.into_inner()));
    if deps.is_empty() {
        return Ok(value);
    }
    let n = deps.len();
    let flushed = match current() {
        Some(reg) => reg.cache.invalidate(deps).await.map_err(crate::Error::Cache),
        None => Err(crate::Error::NotRegistered { entity: "(transaction flush)" }),
    };
    match flushed {
        Ok(_) => Ok(value),
        Err(source) => {
            error!(error = %crate::error::report(&source), deps = n, "committed, but the post-commit invalidation failed");
            Err(TransactionError::Invalidation { deps: n, source })
        }
    }
}

async fn run<C, F, T, E>(db: &C, callback: F) -> Result<T, TransactionError<E>>
where
    C: TransactionTrait,
    F: for<'c> FnOnce(&'c C::Transaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
{
    let txn = db.begin().await.map_err(TransactionError::Connection)?;
    match callback(&txn).await {
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
