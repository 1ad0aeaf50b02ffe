//! Primary-key dependencies of any entity, without code per entity.

use matroska::Dep;
use sea_orm::sea_query::IntoValueTuple;
use sea_orm::{ActiveModelTrait, EntityTrait, ModelTrait, PrimaryKeyTrait};

use crate::value::key_value;

/// The name an entity's dependencies use: its table name.
pub fn entity_name<E: EntityTrait>() -> &'static str {
    E::default().table_name()
}

/// The primary-key dependency of a row, from its `Model` or `ModelEx`.
///
/// `Dep::primary_key(table, key components)`: composite keys keep their
/// column order; values are typed ([`to_value`](crate::to_value)). A cached
/// entry that depends on it also depends on the table's switch (the cache adds
/// it), so writes the connection invalidates coarsely drop it too.
pub fn pk_dep<M: ModelTrait>(model: &M) -> Dep {
    Dep::primary_key(entity_name::<M::Entity>(), model.get_primary_key_value().iter().map(key_value))
}

/// The primary-key dependency of an `ActiveModel`, or `None` while a key
/// column is `NotSet` (an insert with an auto-increment key).
pub fn active_pk_dep<A: ActiveModelTrait>(am: &A) -> Option<Dep> {
    let key = am.get_primary_key_value()?;
    Some(Dep::primary_key(entity_name::<A::Entity>(), key.iter().map(key_value)))
}

/// The primary-key dependency of the row of `E` with key `key` (a scalar,
/// or a tuple for a composite key), equal to [`pk_dep`] of that row.
///
/// ```
/// # include!("../doc/blog.rs");
/// # fn main() {
/// use matroska_seaorm::{pk_dep, pk_dep_of};
///
/// let dep = pk_dep_of::<article::Entity>(7);
/// let dep = pk_dep_of::<article_tag::Entity>((7, 3));
/// assert_eq!(dep, pk_dep(&article_tag::Model { article_id: 7, tag_id: 3 }));
/// # }
/// ```
pub fn pk_dep_of<E: EntityTrait>(key: impl Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>) -> Dep {
    let tuple = key.into().into_value_tuple();
    Dep::primary_key(entity_name::<E>(), tuple.iter().map(key_value))
}

/// Every entry built from rows of `E` by [`dependencies`](crate::dependencies),
/// and every cached list of `E` declared through its scopes, depends on this
/// one: invalidating it is the coarse "anything about this table" switch.
pub fn entity_dep<E: EntityTrait>() -> Dep {
    Dep::invalidate_all(entity_name::<E>())
}

/// The database names of the columns of `am` in state `Set`: what a save
/// will write (the original's `sa_modified_names`).
pub fn changed_columns<A: sea_orm::ActiveModelTrait>(am: &A) -> Vec<&'static str> {
    use sea_orm::{IdenStatic, Iterable};
    <A::Entity as EntityTrait>::Column::iter().filter(|c| am.get(*c).is_set()).map(|c| c.as_str()).collect()
}
