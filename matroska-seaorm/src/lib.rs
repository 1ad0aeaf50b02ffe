//! SeaORM 2.0 integration for [`matroska`]: dependencies from entities,
//! relation walks, scopes declared on entities, and automatic invalidation
//! when rows are saved or deleted.
//!
//! ```
//! # mod author {
//! #     use matroska_seaorm::CacheEntity;
//! #     use sea_orm::entity::prelude::*;
//! #     #[sea_orm::model]
//! #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, serde::Serialize, serde::Deserialize)]
//! #     #[sea_orm(table_name = "author")]
//! #     pub struct Model {
//! #         #[sea_orm(primary_key)]
//! #         pub id: i32,
//! #         pub name: String,
//! #         #[sea_orm(has_many)]
//! #         pub articles: HasMany<super::article::Entity>,
//! #     }
//! # }
//! // on the entity, once
//! mod article {
//!     use matroska_seaorm::CacheEntity;
//!     use sea_orm::entity::prelude::*;
//!
//!     #[sea_orm::model]
//!     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, serde::Serialize, serde::Deserialize)]
//!     #[sea_orm(table_name = "article")]
//!     #[matroska(scope(fields("published", "category_id")))]
//!     pub struct Model {
//!         #[sea_orm(primary_key)]
//!         pub id: i32,
//!         pub title: String,
//!         pub author_id: i32,
//!         pub category_id: i32,
//!         pub published: bool,
//!         #[sea_orm(belongs_to, from = "author_id", to = "id")]
//!         pub author: BelongsTo<super::author::Entity>,
//!     }
//! }
//!
//! use std::time::Duration;
//!
//! use matroska::{params, Cache, MemoryBackend};
//! use matroska_seaorm::depth;
//! use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityLoaderTrait};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let db = sea_orm::Database::connect("sqlite::memory:").await?;
//! #   db.get_schema_builder().register(author::Entity).register(article::Entity).apply(&db).await?;
//!     // at start-up
//!     let cache = Cache::new(MemoryBackend::new());
//!     matroska_seaorm::register(cache.clone());
//! #   let ann = author::ActiveModel { name: Set("Ann".into()), ..Default::default() }.insert(&db).await?;
//! #   let art = article::ActiveModel {
//! #       title: Set("ownership".into()),
//! #       author_id: Set(ann.id),
//! #       category_id: Set(2),
//! #       published: Set(true),
//! #       ..Default::default()
//! #   }
//! #   .insert(&db)
//! #   .await?;
//!
//!     // dependencies from what a query returned (the rows and their authors)
//!     let articles = article::Entity::load().with(author::Entity).all(&db).await?;
//!     let mut deps = matroska_seaorm::dependencies(&articles, depth! { author: 1 })?;
//!     // and from the list the query selects (published articles of category 2)
//!     let list = params! { "published" => true, "category_id" => 2 };
//!     deps.extend(matroska_seaorm::list_deps::<article::Entity>(list)?);
//!     cache.put("category:2", &articles, deps, Duration::from_secs(600)).await?;
//!
//!     // every save and delete through an ActiveModel now invalidates the right entries
//!     let mut a: article::ActiveModel = art.into();
//!     a.category_id = Set(3);
//!     a.update(&db).await?; // drops pk(article, id) and the lists of categories 2 and 3
//!     assert!(!cache.has("category:2").await?);
//!     Ok(())
//! }
//! ```
//!
//! # What is automatic
//!
//! With [`derive(CacheEntity)`](CacheEntity), these invalidate by themselves:
//! `ActiveModel::insert`, `update`, `save` and `delete`, and `Model::delete`.
//!
//! The `ActiveModelEx` operations (the `ActiveModel::builder()` graph's
//! `insert`, `update`, `save`, and `ModelEx::delete`, `Model::cascade_delete`)
//! call those per-row methods, so cascaded children invalidate too, but only
//! when run inside [`transaction`]: they open a transaction of their own, and
//! outside [`transaction`] the first hook refuses it
//! ([`Error::UnmanagedTransaction`], nothing is written). One part of them is
//! never automatic: a delete removes many-to-many junction rows with
//! `delete_many`, which runs no hook, so cached lists of the junction entity
//! stay; follow it with [`bulk::invalidate_entity`] for the junction entity.
//!
//! | write | invalidates |
//! |---|---|
//! | insert | the new row's key, the lists it enters |
//! | update of a watched column | the row's key, the lists of the old **and** new values of the watched columns changed (the old row is re-read by key first, on the same connection) |
//! | update of other columns only (a view counter) | the row's key |
//! | delete | the row's key, the lists it leaves (re-read by key first if the entity has scopes) |
//!
//! **Not automatic**: `insert_many`, `update_many`, `delete_many`,
//! `delete_by_id`, `Entity::insert/update/delete(..).exec*`, upserts,
//! `update_without_returning` (it runs no `after_save`) and raw SQL. Use the
//! [`bulk`] helpers, or [`bulk::invalidate_entity`].
//!
//! # Transactions
//!
//! Hooks run before the commit. Open transactions with [`transaction`]: it
//! invalidates everything again after the outermost commit. A hook running on
//! a `DatabaseTransaction` not opened by it fails by default
//! ([`UnmanagedTransactions`]), because its invalidation could be undone by a
//! reader caching the old row before the commit. `ActiveModelEx` operations
//! open a transaction of their own: run them inside [`transaction`].
//!
//! # Registration
//!
//! Hooks find the cache through [`register`] (process-wide) or
//! [`Registration::scope`] (one task). A write with no cache registered fails
//! with [`Error::NotRegistered`] before any SQL runs; a failed invalidation
//! fails the save or delete (the row is written then) and is traced.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod bulk;
mod depth;
mod error;
mod hooks;
mod key;
mod registry;
mod txn;
mod value;
mod walk;

pub use depth::Depth;
pub use error::Error;
pub use hooks::{after_delete, after_save, before_delete, before_save, changed_columns, list_deps, CacheEntity};
pub use key::{active_pk_dep, entity_dep, entity_name, pk_dep, pk_dep_of};
pub use matroska;
/// Derives on an entity's `Model` (and the `ModelEx` of `#[sea_orm::model]`):
/// see the [crate docs](crate) and the `matroska` attribute below.
///
/// ```text
/// #[matroska(scope(fields("published", "category_id")))]   // a list filtered by these columns; repeatable
/// #[matroska(scopes = path::to::fn)]                       // fn() -> matroska::Scopes<Model>, extended by scope(..)
/// #[matroska(manual_behavior)]                             // do not implement ActiveModelBehavior
/// ```
///
/// It implements [`CacheEntity`] for `Entity`, [`Walk`] for `Model` and
/// `ModelEx` (relation fields `HasOne`, `HasMany`, `BelongsTo` by name), and
/// `ActiveModelBehavior` for `ActiveModel` calling [`before_save`],
/// [`after_save`], [`before_delete`] and [`after_delete`].
pub use matroska_seaorm_macros::CacheEntity;
/// Derives [`Walk`] for your own struct: each field is a relation by its name
/// in a depth map (`#[matroska(skip)]` leaves a field out).
pub use matroska_seaorm_macros::Walk;
pub use registry::{register, unregister, Invalidator, Registration, UnmanagedTransactions};
pub use txn::{transaction, TransactionError};
pub use value::to_value;
pub use walk::{dependencies, Collector, Walk};

#[doc(hidden)]
pub mod __private {
    pub use crate::walk::{walk_row, RelationField};
    pub use async_trait::async_trait;
    pub use sea_orm;

    /// Type-checks a typed depth map; never called at run time.
    pub fn check<T>(_: impl FnOnce(&T)) {}

    /// Type-checks one relation of a typed depth map.
    pub fn field<R: RelationField>(_: &R, _: impl FnOnce(&R::Target)) {}

    /// A field's value as a scope parameter.
    pub fn value<T: Clone + Into<sea_orm::Value>>(v: &T) -> matroska::Value {
        crate::to_value(&v.clone().into())
    }

    /// A new scope set for `E`, named after its table.
    pub fn new_scopes<E: sea_orm::EntityTrait>() -> matroska::Scopes<E::Model> {
        matroska::Scopes::new(crate::entity_name::<E>(), matroska::Mode::default())
    }
}
