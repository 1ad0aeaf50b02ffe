//! Walking loaded rows and relations down a depth map.

use std::collections::HashSet;
use std::str::FromStr;

use matroska::{Dep, Params};
use sea_orm::entity::prelude::{BelongsTo, HasMany, HasOne};
use sea_orm::entity::BelongsToCardinality;
use sea_orm::sea_query::TableRef;
use sea_orm::{EntityTrait, Iterable, ModelTrait, Related, RelationDef, RelationTrait};

use crate::depth::Depth;
use crate::key::{entity_dep, entity_name, pk_dep};
use crate::value::to_value;
use crate::Error;

/// The dependencies gathered by a walk: each row once, in the order reached.
#[derive(Debug, Default)]
pub struct Collector {
    seen: HashSet<Dep>,
    deps: Vec<Dep>,
}

impl Collector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a dependency unless it is already there.
    pub fn push(&mut self, dep: Dep) {
        if self.seen.insert(dep.clone()) {
            self.deps.push(dep);
        }
    }

    /// Adds a row: its primary-key dependency and its entity's switch
    /// ([`entity_dep`](crate::entity_dep)).
    pub fn row<M: ModelTrait>(&mut self, model: &M) {
        self.push(pk_dep(model));
        self.push(entity_dep::<M::Entity>());
    }

    /// The dependencies.
    pub fn into_deps(self) -> Vec<Dep> {
        self.deps
    }
}

/// A value whose dependencies can be gathered by walking it down a [`Depth`].
///
/// Implemented for entity `Model`s and `ModelEx`s by
/// [`derive(CacheEntity)`](crate::CacheEntity), for your own structs by
/// [`derive(Walk)`](crate::Walk), and here for the shapes queries return:
/// `Vec`, slices, `Option`, `Box`, references, SeaORM's `HasOne`, `HasMany`
/// and `BelongsTo` (unloaded: nothing), and pairs.
///
/// A pair `(A, B)` is what `find_also_related` (`(Model, Option<R>)`) and
/// `find_with_related` (`(Model, Vec<R>)`) return: `A` is walked with the map,
/// `B` under the table name of its entity. `B` is included unless the map
/// says `that_table: 0`; a nested map under that name walks on from `B`.
pub trait Walk {
    /// Adds the dependencies of `self` under `depth` to `out`.
    ///
    /// # Errors
    /// [`Error::UnknownRelation`] if `depth` names a relation `self` lacks.
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error>;

    /// The name a pair's second element is known by in a depth map (the
    /// entity's table name for rows).
    fn relation_name() -> Option<&'static str>
    where
        Self: Sized,
    {
        None
    }

    /// For a row: adds the membership of its children in table
    /// `child_table` (the relation a cached parent-with-children depends
    /// on). Called for the first element of a pair whose second holds such
    /// children (`find_with_related`).
    ///
    /// # Errors
    /// [`Error::UnsupportedValue`] if a key has no canonical form.
    fn children_in(&self, child_table: &str, out: &mut Collector) -> Result<(), Error> {
        let _ = (child_table, out);
        Ok(())
    }
}

fn table_of(t: &TableRef) -> String {
    match t {
        TableRef::Table(name, _) => name.1.to_string(),
        _ => String::new(),
    }
}

/// Adds the membership dependency of `parent`'s children through relation
/// `def` (from the parent to the table holding the foreign key): the
/// condition `(that table, {fk columns: the parent's key})`, which every
/// write moving a row into or out of the relation invalidates, and that
/// table's switch.
fn membership<P: ModelTrait>(parent: &P, def: &RelationDef, out: &mut Collector) -> Result<(), Error> {
    let child_table = table_of(&def.to_tbl);
    let mut params = Params::new();
    for (from, to) in def.from_col.iter().zip(def.to_col.iter()) {
        let name = from.to_string();
        let column = <P::Entity as EntityTrait>::Column::from_str(&name)
            .map_err(|_| Error::UnknownColumn { table: entity_name::<P::Entity>(), column: name.clone() })?;
        let v = to_value(&parent.get(column))?;
        if v == matroska::Value::Null {
            return Ok(());
        }
        params.insert(to.to_string(), v);
    }
    out.push(Dep::condition(&child_table, params));
    out.push(Dep::invalidate_all(&child_table));
    Ok(())
}

/// Whether a relation field holds loaded rows (only then does the cached
/// value depend on who the children are).
#[doc(hidden)]
pub trait LoadedRelation {
    /// Whether the relation was loaded.
    fn is_loaded(&self) -> bool;
}

impl<E: EntityTrait> LoadedRelation for HasMany<E> {
    fn is_loaded(&self) -> bool {
        matches!(self, HasMany::Loaded(_))
    }
}

impl<E: EntityTrait> LoadedRelation for HasOne<E> {
    fn is_loaded(&self) -> bool {
        matches!(self, HasOne::Loaded(_))
    }
}

/// The children of `parent` in entity `C` (a loaded `has_many` or `has_one`
/// field): every relation of `P` whose other side holds a foreign key into
/// `P` and is `C`'s table.
#[doc(hidden)]
pub fn children<P: ModelTrait, C: EntityTrait>(
    parent: &P,
    field: &impl LoadedRelation,
    out: &mut Collector,
) -> Result<(), Error> {
    if !field.is_loaded() {
        return Ok(());
    }
    children_in_table(parent, entity_name::<C>(), out)
}

fn children_in_table<P: ModelTrait>(parent: &P, table: &str, out: &mut Collector) -> Result<(), Error> {
    for def in <P::Entity as EntityTrait>::Relation::iter().map(|r| r.def()) {
        if def.is_owner && table_of(&def.to_tbl) == table {
            membership(parent, &def, out)?;
        }
    }
    Ok(())
}

/// The children of `parent` in entity `C` through a junction (a `has_many`
/// field with `via`): the junction rows pointing at `parent`.
#[doc(hidden)]
pub fn children_via<P, C>(parent: &P, field: &impl LoadedRelation, out: &mut Collector) -> Result<(), Error>
where
    P: ModelTrait,
    P::Entity: Related<C>,
    C: EntityTrait,
{
    if !field.is_loaded() {
        return Ok(());
    }
    match <P::Entity as Related<C>>::via() {
        Some(def) => membership(parent, &def, out),
        None => children_in_table(parent, entity_name::<C>(), out),
    }
}

/// For the derive: [`Walk::children_in`] of a row.
#[doc(hidden)]
pub fn row_children_in<P: ModelTrait>(parent: &P, table: &str, out: &mut Collector) -> Result<(), Error> {
    children_in_table(parent, table, out)
}

/// The dependencies of `value`: the primary key of every row reached (once),
/// following the relations `depth` names, plus the switch of every entity
/// reached.
///
/// ```
/// # include!("../doc/blog.rs");
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let db = blog().await?;
/// # let cache = matroska::Cache::new(matroska::MemoryBackend::new());
/// # let ttl = std::time::Duration::from_secs(600);
/// use matroska_seaorm::{depth, pk_dep_of};
/// use sea_orm::EntityLoaderTrait;
///
/// let articles = article::Entity::load().with(author::Entity).all(&db).await?;
/// let deps = matroska_seaorm::dependencies(&articles, depth! { author: 1 })?;
/// assert!(deps.contains(&pk_dep_of::<article::Entity>(1)) && deps.contains(&pk_dep_of::<author::Entity>(1)));
/// cache.put("home", &articles, deps, ttl).await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::UnknownRelation`] if `depth` names a relation that does not exist.
pub fn dependencies<T: Walk + ?Sized>(value: &T, depth: Depth) -> Result<Vec<Dep>, Error> {
    let mut out = Collector::new();
    value.walk(&depth, &mut out)?;
    Ok(out.into_deps())
}

/// Walks a row: the row itself, then the relations (`known`) the map names.
#[doc(hidden)]
pub fn walk_row<M: ModelTrait>(
    model: &M,
    depth: &Depth,
    out: &mut Collector,
    known: &'static [&'static str],
) -> Result<(), Error> {
    depth.check_known(entity_name::<M::Entity>(), known)?;
    out.row(model);
    Ok(())
}

impl<T: Walk + ?Sized> Walk for &T {
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
        (**self).walk(depth, out)
    }
    fn children_in(&self, child_table: &str, out: &mut Collector) -> Result<(), Error> {
        (**self).children_in(child_table, out)
    }
}

impl<T: Walk + ?Sized> Walk for Box<T> {
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
        (**self).walk(depth, out)
    }
    fn relation_name() -> Option<&'static str>
    where
        Self: Sized,
    {
        None
    }
}

impl<T: Walk> Walk for [T] {
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
        self.iter().try_for_each(|t| t.walk(depth, out))
    }
}

impl<T: Walk> Walk for Vec<T> {
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
        self.as_slice().walk(depth, out)
    }
    fn relation_name() -> Option<&'static str> {
        T::relation_name()
    }
}

impl<T: Walk> Walk for Option<T> {
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
        self.as_ref().map_or(Ok(()), |t| t.walk(depth, out))
    }
    fn relation_name() -> Option<&'static str> {
        T::relation_name()
    }
}

impl<A: Walk, B: Walk> Walk for (A, B) {
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
        match B::relation_name() {
            Some(name) => {
                self.0.walk(&depth.without(name), out)?;
                if depth.descend(name).is_some() || !depth.mentions(name) {
                    // the pair holds the first element's children of that table
                    self.0.children_in(name, out)?;
                }
                if !depth.mentions(name) {
                    self.1.walk(&Depth::new(), out)
                } else if let Some(inner) = depth.descend(name) {
                    self.1.walk(inner, out)
                } else {
                    Ok(())
                }
            }
            None => {
                self.0.walk(depth, out)?;
                self.1.walk(&Depth::new(), out)
            }
        }
    }
}

impl<E> Walk for HasOne<E>
where
    E: EntityTrait,
    E::ModelEx: Walk,
{
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
        match self {
            HasOne::Loaded(Some(m)) => m.walk(depth, out),
            _ => Ok(()),
        }
    }
}

impl<E> Walk for HasMany<E>
where
    E: EntityTrait,
    E::ModelEx: Walk,
{
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
        match self {
            HasMany::Loaded(v) => v.walk(depth, out),
            HasMany::Unloaded => Ok(()),
        }
    }
}

impl<T> Walk for BelongsTo<T>
where
    T: BelongsToCardinality,
    T::Loaded: Walk,
{
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
        match self {
            BelongsTo::Loaded(m) => m.walk(depth, out),
            BelongsTo::Unloaded => Ok(()),
        }
    }
}

/// The element type reached through a relation field, for compile-time checks
/// of typed depth maps.
#[doc(hidden)]
pub trait RelationField {
    type Target;
}

impl<E: EntityTrait> RelationField for HasOne<E> {
    type Target = E::ModelEx;
}
impl<E: EntityTrait> RelationField for HasMany<E> {
    type Target = E::ModelEx;
}
impl<T: BelongsToCardinality> RelationField for BelongsTo<T> {
    type Target = <T::Entity as EntityTrait>::ModelEx;
}
impl<T: RelationField> RelationField for Vec<T> {
    type Target = T::Target;
}
impl<T: RelationField> RelationField for Option<T> {
    type Target = T::Target;
}
impl<T: RelationField> RelationField for Box<T> {
    type Target = T::Target;
}
