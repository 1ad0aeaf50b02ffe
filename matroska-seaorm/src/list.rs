//! The dependencies of cached lists, relations and "not found" lookups.

use std::marker::PhantomData;
use std::str::FromStr;

use matroska::{Dep, Params};
use sea_orm::{ColumnTrait, EntityTrait, IdenStatic, Iterable, PrimaryKeyTrait};

use crate::entity::{unkeyed_insert, CacheEntity};
use crate::key::{entity_dep, entity_name, pk_dep_of};
use crate::value::{coerce, to_value};
use crate::Error;

/// The dependencies of a cached list of `E` filtered by `params`: the scope
/// condition and `E`'s switch. Parameter names are column names
/// (`Column::as_str()`, or any spelling `Column::from_str` accepts: the
/// field name works too); each value is brought to its column's type, so
/// `1` meets `true` in a boolean column and `"2"` meets `2` in an integer
/// one. An empty `params` is the list of every row of `E`.
///
/// For a form checked at compile time, see [`list`].
///
/// # Errors
/// [`Error::UnknownColumn`], [`Error::ValueMismatch`], or
/// [`Error::Scope`] if no scope of `E` describes exactly these columns
/// (in development mode; production mode falls back to `E`'s switch).
pub fn list_deps<E: CacheEntity>(params: Params) -> Result<Vec<Dep>, Error> {
    let table = entity_name::<E>();
    let mut canonical = Params::new();
    for (name, value) in params.iter() {
        let column = column_of::<E>(name)?;
        let v = coerce(table, column.as_str(), column.def().get_column_type(), value.clone())?;
        canonical.insert(column.as_str(), v);
    }
    Ok(E::scopes().condition(canonical)?)
}

fn column_of<E: EntityTrait>(name: &str) -> Result<E::Column, Error> {
    E::Column::iter()
        .find(|c| c.as_str() == name)
        .or_else(|| E::Column::from_str(name).ok())
        // a field name: `type_` is the variant `Type`
        .or_else(|| E::Column::from_str(name.trim_start_matches("r#").trim_end_matches('_')).ok())
        .ok_or_else(|| Error::UnknownColumn { table: entity_name::<E>(), column: name.to_owned() })
}

/// A list condition over `E`'s typed columns: a misspelled column is a
/// compile error, and values are SeaORM values canonicalised exactly as the
/// connection canonicalises the rows it writes.
///
/// ```
/// # include!("../doc/blog.rs");
/// # fn main() -> Result<(), matroska_seaorm::Error> {
/// let deps = matroska_seaorm::list::<article::Entity>()
///     .eq(article::Column::Published, true)
///     .eq(article::Column::CategoryId, 2)
///     .deps()?;
/// assert_eq!(deps, matroska_seaorm::list_deps::<article::Entity>(matroska::params! { "published" => 1, "category_id" => "2" })?);
/// # Ok(()) }
/// ```
#[must_use]
pub struct ListCondition<E: EntityTrait> {
    params: Vec<(E::Column, sea_orm::Value)>,
    _e: PhantomData<fn() -> E>,
}

impl<E: EntityTrait> std::fmt::Debug for ListCondition<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.params.iter().map(|(c, v)| (c.as_str(), v))).finish()
    }
}

/// Starts a typed list condition over `E` (see [`ListCondition`]).
pub fn list<E: CacheEntity>() -> ListCondition<E> {
    ListCondition { params: Vec::new(), _e: PhantomData }
}

impl<E: CacheEntity> ListCondition<E> {
    /// Adds `column = value`.
    pub fn eq(mut self, column: E::Column, value: impl Into<sea_orm::Value>) -> Self {
        self.params.push((column, value.into()));
        self
    }

    /// The dependencies of the list (as [`list_deps`]).
    ///
    /// # Errors
    /// As [`list_deps`], and [`Error::UnsupportedValue`] for a value with no
    /// canonical form.
    pub fn deps(self) -> Result<Vec<Dep>, Error> {
        let table = entity_name::<E>();
        let mut params = Params::new();
        for (column, value) in self.params {
            let v = coerce(table, column.as_str(), column.def().get_column_type(), to_value(&value)?)?;
            params.insert(column.as_str(), v);
        }
        Ok(E::scopes().condition(params)?)
    }
}

/// The dependencies of a cached "not found" (`find_by_id(key)` gave
/// nothing): the row's key, and the inserts into `E` whose key the
/// connection cannot learn (a multi-row insert without `RETURNING` on
/// MySQL), and `E`'s switch. Every insert path of a
/// [`CachedDatabase`](crate::CachedDatabase) then drops the entry when a
/// row with that key appears.
pub fn not_found<E: CacheEntity>(key: impl Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>) -> Vec<Dep> {
    vec![pk_dep_of::<E>(key), unkeyed_insert(entity_name::<E>()), entity_dep::<E>()]
}
