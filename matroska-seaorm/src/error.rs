//! The crate's error type.

use sea_orm::DbErr;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An entity with automatic invalidation was saved or deleted while no
    /// cache was registered. Call [`register`](crate::register) at start-up,
    /// or run the code inside [`Registration::scope`](crate::Registration::scope).
    #[error("no matroska cache is registered for automatic invalidation of {entity:?}; call matroska_seaorm::register(cache) at start-up (or run inside Registration::scope)")]
    NotRegistered {
        /// The table of the entity being written.
        entity: &'static str,
    },
    /// A hook ran on a `DatabaseTransaction` opened outside
    /// [`transaction`](crate::transaction): its invalidations would take effect
    /// before the commit, so a reader could cache the old row for good.
    #[error("{entity:?} was written on a transaction ({connection}) not opened by matroska_seaorm::transaction; open it with matroska_seaorm::transaction(&db, |txn| ...) so the cache is invalidated after commit, or allow it with Registration::unmanaged_transactions(UnmanagedTransactions::Warn)")]
    UnmanagedTransaction {
        /// The table of the entity being written.
        entity: &'static str,
        /// The connection type the hook received.
        connection: &'static str,
    },
    /// A depth map names a relation the walked value does not have.
    #[error("{owner} has no relation {name:?} (known: {known:?})")]
    UnknownRelation {
        /// The type (or table) being walked.
        owner: &'static str,
        /// The unknown name.
        name: String,
        /// The relations it has.
        known: &'static [&'static str],
    },
    /// A scope extractor failed or a condition is not described.
    #[error(transparent)]
    Scope(#[from] matroska::ScopeError),
    /// The cache failed; the invalidation may not have taken effect.
    #[error("cache invalidation failed")]
    Cache(#[source] matroska::Error),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl From<matroska::Error> for Error {
    fn from(e: matroska::Error) -> Self {
        Error::Cache(e)
    }
}

impl Error {
    /// This error as a `DbErr`, for hooks and helpers that must return one.
    /// A `DbErr` passes through unchanged.
    pub fn into_db_err(self) -> DbErr {
        match self {
            Error::Db(e) => e,
            other => DbErr::Custom(format!("matroska-seaorm: {}", report(&other))),
        }
    }
}

/// The error and its sources, joined with ": ".
pub(crate) fn report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
