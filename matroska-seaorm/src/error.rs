//! The crate's error type.

use sea_orm::DbErr;

/// Everything that can go wrong in this crate's own API (what a connection
/// refuses arrives as a `DbErr`; see [`Refusal`](crate::Refusal)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A column name is not a column of the entity.
    #[error("{table:?} has no column {column:?}")]
    UnknownColumn {
        /// The entity's table.
        table: &'static str,
        /// The name given.
        column: String,
    },
    /// A condition value cannot be a value of its column.
    #[error("{value} is not a value of column {table}.{column} ({expected})", value = got)]
    ValueMismatch {
        /// The entity's table.
        table: String,
        /// The column.
        column: String,
        /// The column's type.
        expected: String,
        /// The value given.
        got: String,
    },
    /// A value has no canonical form, so it cannot take part in a
    /// dependency (arrays, network addresses, ..., or a type whose feature
    /// of this crate is off: `with-json`, `with-chrono`, `with-time`,
    /// `with-rust_decimal`, `with-uuid`).
    #[error("a {kind} value has no canonical form for a cache dependency (enable the matching with-* feature of matroska-seaorm, or do not use this column in a scope)")]
    UnsupportedValue {
        /// The SeaORM value's kind.
        kind: String,
    },
    /// A column's type has no loosely typed form: give its value as a typed
    /// SeaORM value ([`list`](crate::list)).
    #[error("column {table}.{column} ({kind}) takes no loosely typed value; use matroska_seaorm::list::<Entity>().eq(Column::.., value)")]
    UnsupportedColumn {
        /// The entity's table.
        table: String,
        /// The column.
        column: String,
        /// The column's type.
        kind: String,
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
    /// A builder setting is invalid.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The cache failed.
    #[error("cache error")]
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
