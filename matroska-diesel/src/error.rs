//! The crate's error type.

/// Everything that can go wrong in this crate's own API. What a
/// [`CachedConnection`](crate::CachedConnection) refuses arrives as a
/// `diesel::result::Error`, since Diesel's APIs return one; read it back
/// with [`Refusal::of`](crate::Refusal::of).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A column name is not a column of the model.
    #[error("{table:?} has no column {column:?}")]
    UnknownColumn {
        /// The model's table.
        table: &'static str,
        /// The name given.
        column: String,
    },
    /// A condition value cannot be a value of its column.
    #[error("{got} is not a value of column {table}.{column} ({expected})")]
    ValueMismatch {
        /// The model's table.
        table: String,
        /// The column.
        column: String,
        /// The column's kind.
        expected: String,
        /// The value given.
        got: String,
    },
    /// A value kind has no canonical form in this build (a chrono or uuid
    /// column without the `with-chrono` / `with-uuid` feature).
    #[error("a {kind} value has no canonical form for a cache dependency (enable the matching with-* feature of matroska-diesel)")]
    UnsupportedValue {
        /// The kind.
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
        known: Vec<String>,
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
    Db(#[from] diesel::result::Error),
    /// A connection could not be established.
    #[error(transparent)]
    Connection(#[from] diesel::ConnectionError),
}

impl From<matroska::Error> for Error {
    fn from(e: matroska::Error) -> Self {
        Error::Cache(e)
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
