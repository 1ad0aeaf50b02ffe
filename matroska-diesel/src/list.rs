//! Keys, switches, and the dependencies of cached lists and "not found"
//! lookups.

use std::marker::PhantomData;

use matroska::{Dep, Params};

use crate::entity::{model_pk_dep, unkeyed_insert, CacheModel};
use crate::value::{KeyParts, ToValue};
use crate::Error;

/// The name a model's dependencies use: its table's SQL name.
pub fn entity_name<M: CacheModel>() -> &'static str {
    M::table_name()
}

/// The primary-key dependency of a row (from `Identifiable`'s key: composite
/// keys keep their column order). Equal to matroska-seaorm's `pk_dep` of
/// the same row.
pub fn pk_dep<M: CacheModel>(model: &M) -> Dep {
    model_pk_dep(model)
}

/// The primary-key dependency of the row of `M` with key `key` (a value, or
/// a tuple for a composite key), equal to [`pk_dep`] of that row.
///
/// ```ignore
/// let dep = pk_dep_of::<Post>(7);
/// let dep = pk_dep_of::<PostTag>((7, 3));
/// ```
pub fn pk_dep_of<M: CacheModel>(key: impl KeyParts) -> Dep {
    Dep::primary_key(M::table_name(), key.key_parts())
}

/// Every entry built from rows of `M` by [`dependencies`](crate::dependencies),
/// and every cached list of `M`, depends on this one: invalidating it is the
/// coarse "anything about this table" switch.
pub fn entity_dep<M: CacheModel>() -> Dep {
    Dep::invalidate_all(M::table_name())
}

/// The dependencies of a cached "not found" (a lookup by key found
/// nothing): the row's key, inserts whose key the connection could not
/// learn, and `M`'s switch. Every insert path then drops the entry when a
/// row with that key appears.
pub fn not_found<M: CacheModel>(key: impl KeyParts) -> Vec<Dep> {
    vec![pk_dep_of::<M>(key), unkeyed_insert(M::table_name()), entity_dep::<M>()]
}

/// The dependencies of a cached list of `M` filtered by `params` (loosely
/// typed: column names, values brought to each column's type, so `1` meets
/// `true` in a boolean column). An empty `params` is the list of every row.
/// For a form checked at compile time, see [`list`].
///
/// # Errors
/// [`Error::UnknownColumn`], [`Error::ValueMismatch`], or [`Error::Scope`]
/// if no scope of `M` describes exactly these columns (in development mode;
/// production mode falls back to `M`'s switch).
pub fn list_deps<M: CacheModel>(params: Params) -> Result<Vec<Dep>, Error> {
    let info = M::info();
    let mut canonical = Params::new();
    for (name, value) in params.iter() {
        let Some(i) = info.column(name) else {
            return Err(Error::UnknownColumn { table: info.table, column: name.to_owned() });
        };
        canonical.insert(info.columns[i].name, info.canonical(i, value.clone())?);
    }
    Ok(info.scopes.condition(canonical)?)
}

/// A list condition over `M`'s typed columns: a column of another table,
/// or a value of the wrong SQL type, is a compile error; values are
/// canonicalised exactly as the connection canonicalises the rows it
/// writes.
///
/// ```ignore
/// let deps = matroska_diesel::list::<Post>()
///     .eq(posts::published, true)
///     .eq(posts::category_id, 2)
///     .deps()?;
/// ```
#[must_use]
pub struct ListCondition<M> {
    params: Vec<(&'static str, matroska::Value)>,
    _m: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for ListCondition<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.params.iter()).finish()
    }
}

/// Starts a typed list condition over `M` (see [`ListCondition`]).
pub fn list<M: CacheModel>() -> ListCondition<M> {
    ListCondition { params: Vec::new(), _m: PhantomData }
}

impl<M: CacheModel> ListCondition<M> {
    /// Adds `column = value`.
    pub fn eq<C, V>(mut self, _column: C, value: V) -> Self
    where
        C: diesel::Column<Table = M::Table>,
        <C as diesel::Expression>::SqlType: diesel::sql_types::SqlType + diesel::expression::TypedExpressionType,
        V: ToValue + diesel::expression::AsExpression<<C as diesel::Expression>::SqlType>,
    {
        self.params.push((C::NAME, value.to_value()));
        self
    }

    /// The dependencies of the list (as [`list_deps`]).
    ///
    /// # Errors
    /// As [`list_deps`].
    pub fn deps(self) -> Result<Vec<Dep>, Error> {
        let info = M::info();
        let mut params = Params::new();
        for (name, value) in self.params {
            let Some(i) = info.column(name) else {
                return Err(Error::UnknownColumn { table: info.table, column: name.to_owned() });
            };
            params.insert(name, info.canonical(i, value)?);
        }
        Ok(info.scopes.condition(params)?)
    }
}
