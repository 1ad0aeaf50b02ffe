//! A statement as text with owned parameters: what the connection runs on
//! the wrapped connection in place of the application's query (the same
//! text and parameters), and the statements it derives from it (a read of
//! the rows first, the write with a `RETURNING` clause).

use std::sync::Arc;

use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::QueryResult;

use crate::backend::CacheBackend;

/// SQL text with the parameters of the statement it came from.
pub(crate) struct Raw<DB: CacheBackend> {
    pub(crate) sql: String,
    pub(crate) binds: Option<Arc<DB::Binds>>,
    /// Whether the wrapped connection may keep it prepared (what the
    /// application's query said).
    pub(crate) cacheable: bool,
}

impl<DB: CacheBackend> Raw<DB> {
    /// The text and parameters of an application's query.
    pub(crate) fn capture<T: QueryFragment<DB> + ?Sized>(query: &T) -> QueryResult<Self> {
        let sql = DB::sql(query)?;
        let binds = DB::binds(query)?;
        let cacheable = query.is_safe_to_cache_prepared(&DB::default())?;
        Ok(Raw { sql, binds: Some(Arc::new(binds)), cacheable })
    }

    /// Text with no parameters (`batch_execute`).
    pub(crate) fn text(sql: &str) -> Self {
        Raw { sql: sql.to_owned(), binds: None, cacheable: false }
    }

    /// Other text with the same parameters.
    pub(crate) fn derived(&self, sql: String) -> Self {
        Raw { sql, binds: self.binds.clone(), cacheable: self.cacheable }
    }
}

impl<DB: CacheBackend> QueryFragment<DB> for Raw<DB> {
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        if !self.cacheable {
            pass.unsafe_to_cache_prepared();
        }
        pass.push_sql(&self.sql);
        if let Some(binds) = &self.binds {
            DB::push_binds(&mut pass, binds)?;
        }
        Ok(())
    }
}

impl<DB: CacheBackend> QueryId for Raw<DB> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: CacheBackend> Query for Raw<DB> {
    type SqlType = diesel::sql_types::Untyped;
}
