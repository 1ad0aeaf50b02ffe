//! Walking loaded rows and relations down a depth map.

use std::collections::HashSet;

use matroska::Dep;
use sea_orm::entity::prelude::{BelongsTo, HasMany, HasOne};
use sea_orm::entity::BelongsToCardinality;
use sea_orm::{EntityTrait, ModelTrait};

use crate::depth::Depth;
use crate::key::{entity_dep, entity_name, pk_dep};
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
