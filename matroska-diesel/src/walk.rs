//! Walking loaded rows and relations down a depth map.

use std::collections::HashSet;

use matroska::Dep;

use crate::depth::Depth;
use crate::entity::{children_in, model_pk_dep, CacheModel};
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

    /// Adds a row: its primary-key dependency and its table's switch
    /// ([`entity_dep`](crate::entity_dep)).
    pub fn row<M: CacheModel>(&mut self, model: &M) {
        self.push(model_pk_dep(model));
        self.push(Dep::invalidate_all(M::table_name()));
    }

    /// The dependencies.
    pub fn into_deps(self) -> Vec<Dep> {
        self.deps
    }
}

/// A value whose dependencies can be gathered by walking it down a [`Depth`].
///
/// Implemented for models by [`derive(CacheModel)`](crate::CacheModel), for
/// your own structs by [`derive(Walk)`](crate::Walk), and here for the
/// shapes Diesel queries return: `Vec`, slices, `Option`, `Box`,
/// references, and tuples of two to four.
///
/// A tuple is what a join returns (`(Post, User)`, `(Post, Option<User>)`)
/// and what `grouped_by` is zipped into (`(User, Vec<Post>)`): the first
/// element is walked with the map, each other one under the table name of
/// its model (`users`, `posts`). Those are included unless the map says
/// `that_table: 0`; a nested map under that name walks on from them. When a
/// later element holds rows of a table with a `belongs_to` the first
/// element's model (the children `belonging_to` loaded), the cached value
/// also depends on who those children are: a child inserted, moved or
/// deleted drops it.
pub trait Walk {
    /// Adds the dependencies of `self` under `depth` to `out`.
    ///
    /// # Errors
    /// [`Error::UnknownRelation`] if `depth` names a relation `self` lacks.
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error>;

    /// The name a tuple's later element is known by in a depth map (its
    /// model's table name).
    fn relation_name() -> Option<&'static str>
    where
        Self: Sized,
    {
        None
    }

    /// For a row: adds the membership of its children in table
    /// `child_table` (what a cached parent with its children depends on).
    ///
    /// # Errors
    /// None here; implementations may fail.
    fn children_in(&self, child_table: &str, out: &mut Collector) -> Result<(), Error> {
        let _ = (child_table, out);
        Ok(())
    }
}

/// The dependencies of `value`: the primary key of every row reached (once),
/// following the relations `depth` names, the switch of every table reached,
/// and the memberships of children loaded with their parents.
///
/// ```ignore
/// let users = users::table.load::<User>(&mut conn).await?;
/// let posts = Post::belonging_to(&users).load::<Post>(&mut conn).await?;
/// let grouped: Vec<(User, Vec<Post>)> = users.into_iter().zip(posts.grouped_by(&users)).collect();
/// let deps = matroska_diesel::dependencies(&grouped, depth! {})?;
/// ```
///
/// # Errors
/// [`Error::UnknownRelation`] if `depth` names a relation that does not exist.
pub fn dependencies<T: Walk + ?Sized>(value: &T, depth: Depth) -> Result<Vec<Dep>, Error> {
    let mut out = Collector::new();
    value.walk(&depth, &mut out)?;
    Ok(out.into_deps())
}

/// Walks a model's row (for the derive): the row and its table's switch.
/// A model has no relation fields: a depth map naming one is an error.
#[doc(hidden)]
pub fn walk_row<M: CacheModel>(model: &M, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
    depth.check_known(M::table_name(), &[])?;
    out.row(model);
    Ok(())
}

/// [`Walk::children_in`] of a model's row (for the derive).
#[doc(hidden)]
pub fn row_children_in<M: CacheModel>(model: &M, child_table: &str, out: &mut Collector) -> Result<(), Error> {
    for d in children_in(M::table_name(), &model.key(), child_table) {
        out.push(d);
    }
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
    fn children_in(&self, child_table: &str, out: &mut Collector) -> Result<(), Error> {
        (**self).children_in(child_table, out)
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

/// Walks a later element of a tuple whose first element is `head`.
fn walk_related<A: Walk, B: Walk>(head: &A, b: &B, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
    match B::relation_name() {
        Some(name) => {
            if depth.descend(name).is_some() || !depth.mentions(name) {
                // the tuple may hold the first element's children of that table
                head.children_in(name, out)?;
            }
            if !depth.mentions(name) {
                b.walk(&Depth::new(), out)
            } else if let Some(inner) = depth.descend(name) {
                b.walk(inner, out)
            } else {
                Ok(())
            }
        }
        None => b.walk(&Depth::new(), out),
    }
}

fn without_related<B: Walk>(depth: &Depth) -> Depth {
    match B::relation_name() {
        Some(name) => depth.without(name),
        None => depth.clone(),
    }
}

impl<A: Walk, B: Walk> Walk for (A, B) {
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
        self.0.walk(&without_related::<B>(depth), out)?;
        walk_related(&self.0, &self.1, depth, out)
    }
}

impl<A: Walk, B: Walk, C: Walk> Walk for (A, B, C) {
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
        self.0.walk(&without_related::<C>(&without_related::<B>(depth)), out)?;
        walk_related(&self.0, &self.1, depth, out)?;
        walk_related(&self.0, &self.2, depth, out)
    }
}

impl<A: Walk, B: Walk, C: Walk, D: Walk> Walk for (A, B, C, D) {
    fn walk(&self, depth: &Depth, out: &mut Collector) -> Result<(), Error> {
        let head = without_related::<D>(&without_related::<C>(&without_related::<B>(depth)));
        self.0.walk(&head, out)?;
        walk_related(&self.0, &self.1, depth, out)?;
        walk_related(&self.0, &self.2, depth, out)?;
        walk_related(&self.0, &self.3, depth, out)
    }
}

/// The element type reached through a field, for compile-time checks of
/// typed depth maps.
#[doc(hidden)]
pub trait RelationField {
    type Target;
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
