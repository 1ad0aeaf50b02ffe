//! Diesel 2 integration for [`matroska`], on diesel-async: a connection that
//! keeps the cache correct whatever Diesel API writes through it,
//! dependencies from models and loaded relations, and typed list conditions.
//! The same concepts, guarantees and dependency keys as matroska-seaorm, so
//! one cache can serve both.
//!
//! (Crate documentation, with the write-path table, below.)

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod connection;
mod depth;
mod entity;
mod error;
mod list;
pub mod outbox;
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod test_hooks;
mod value;
mod walk;

pub use backend::CacheBackend;
pub use connection::{
    CachedConnection, CachedDatabase, CachedDatabaseBuilder, CachedTransactionManager, Committed, Invalidator, Levels,
    Refusal, UnparsedStatements, WriteStats,
};
pub use depth::Depth;
pub use entity::{CacheModel, ModelInfo};
pub use error::Error;
pub use list::{entity_dep, entity_name, list, list_deps, not_found, pk_dep, pk_dep_of, ListCondition};
pub use matroska;
pub use outbox::{Outbox, OutboxConfig};
pub use value::{KeyParts, Kind, ToValue};
pub use walk::{dependencies, Collector, Walk};

/// Derives [`CacheModel`] and [`Walk`] on a Diesel model (a struct with
/// `#[diesel(table_name = ..)]`, usually `Queryable` + `Identifiable`):
///
/// ```text
/// #[matroska(scope(fields("published", "category_id")))]   // a list filtered by these fields; repeatable
/// #[matroska(scope(fields("category_id"), watch("price")))] // ... whose order or cut also depends on `price` (top-N)
/// ```
///
/// It reads Diesel's own attributes: `table_name`, `primary_key(..)`
/// (default `id`), `belongs_to(Parent)` / `belongs_to(Parent, foreign_key =
/// col)` (the relations), and `column_name` on fields. Scope field names
/// are the struct's field names; dependencies use the columns' SQL names.
/// The model registers itself with every [`CachedConnection`].
pub use matroska_diesel_macros::CacheModel;
/// Derives [`Walk`] for your own struct: each field is a relation by its
/// name in a depth map (`#[matroska(skip)]` leaves a field out).
pub use matroska_diesel_macros::Walk;

#[doc(hidden)]
pub mod __private {
    pub use crate::entity::{table_name_of, ModelInfoBuilder, Registered};
    pub use crate::walk::{row_children_in, walk_row, RelationField};
    pub use diesel;
    pub use inventory;

    /// Type-checks a typed depth map; never called at run time.
    pub fn check<T>(_: impl FnOnce(&T)) {}

    /// Type-checks one relation of a typed depth map.
    pub fn field<R: RelationField>(_: &R, _: impl FnOnce(&R::Target)) {}

    /// The kind of a field's type.
    pub const fn kind<T: crate::ToValue + ?Sized>() -> crate::Kind {
        T::KIND
    }
}
