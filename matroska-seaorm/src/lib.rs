//! SeaORM 2.0 integration for [`matroska`]: a connection that keeps the cache
//! correct whatever SeaORM API writes through it, dependencies from entities
//! and loaded relations, and typed list conditions.
//!
//! ```
//! # include!("../doc/blog.rs");
//! use std::time::Duration;
//!
//! use matroska::{Cache, MemoryBackend};
//! use matroska_seaorm::{depth, CachedDatabase};
//! use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityLoaderTrait, EntityTrait};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     // at start-up: the connection holds the cache
//!     let cache = Cache::new(MemoryBackend::new());
//!     let db = CachedDatabase::new(blog().await?, cache.clone());
//!
//!     // a cached list: the rows, their authors, and the list's condition
//!     let ttl = Duration::from_secs(600);
//!     let list = cache
//!         .get_or_load("category:2", ttl, |deps| {
//!             let db = db.clone();
//!             async move {
//!                 let rows = article::Entity::load().with(author::Entity).all(&db).await?;
//!                 deps.extend(matroska_seaorm::dependencies(&rows, depth! { author: 1 })?);
//!                 deps.extend(
//!                     matroska_seaorm::list::<article::Entity>()
//!                         .eq(article::Column::Published, true)
//!                         .eq(article::Column::CategoryId, 2)
//!                         .deps()?,
//!                 );
//!                 Ok::<_, Box<dyn std::error::Error + Send + Sync>>(rows)
//!             }
//!         })
//!         .await?;
//!     assert_eq!(list.len(), 1);
//!
//!     // plain SeaORM: every write through `db` invalidates what it changed
//!     let art = article::Entity::find_by_id(1).one(&db).await?.ok_or("no article 1")?;
//!     let mut a: article::ActiveModel = art.into();
//!     a.category_id = Set(3);
//!     a.update(&db).await?; // drops the row's key and the lists of categories 2 AND 3
//!     assert!(!cache.has("category:2").await?);
//!     Ok(())
//! }
//! ```
//!
//! # The connection
//!
//! [`CachedDatabase`] wraps a `DatabaseConnection` and implements
//! `ConnectionTrait`, `TransactionTrait` and `StreamTrait`, so it goes
//! wherever SeaORM takes a connection. It reads every statement (with the
//! [`sqlparser`](https://docs.rs/sqlparser) crate, in the connection's
//! dialect; analyses are cached by statement text) and follows every
//! transaction, whichever API opened it.
//!
//! Why a wrapper, and not SeaORM's hooks or its proxy connection:
//! `ActiveModelBehavior` hooks run on only some write paths (not
//! `delete_by_id`, `update_many`, `insert_many`, upserts, raw SQL), cannot
//! tell whether they run in a transaction, and have no after-commit hook.
//! SeaORM's proxy connection (`ProxyDatabaseTrait`) sees statements but is
//! synchronous and sees no transaction identity. A wrapper sees every
//! statement, every begin, commit and rollback, and can run its own reads in
//! the same transaction as the write. Its cost is measured in
//! `BENCHMARKS.md`.
//!
//! ## Every write API, and what it invalidates
//!
//! *Precise*: the rows' keys, the lists (scopes) of the old **and** new
//! values of the columns they watch, the relations the rows leave and join.
//! *Coarse*: every cached list, relation and row of the table (every entry
//! whose dependencies carry the table's switch: the cache adds it to every
//! entry that depends on a row of the table, and every list helper of this
//! crate adds it). *Refused*: an error before anything is written.
//!
//! | write | through a `CachedDatabase` |
//! |---|---|
//! | `ActiveModel::insert`, `save` (new), `Entity::insert(..).exec*`, `insert_many(..).exec*` | precise (new rows from `RETURNING`, their keys, or a read by key; on MySQL a multi-row insert's keys are unknown: its lists by value are coarse, "not found" entries dropped) |
//! | `ActiveModel::update`, `save`, `update_without_returning`, `Entity::update(..).exec*` | precise (the old row read `FOR UPDATE` first when a watched, key or foreign-key column changes) |
//! | `update_many().col_expr(..).filter(..).exec*` | precise (the matching rows read `FOR UPDATE` first; new values from the parameters or a read by key); coarse as well when it changed more rows than were read (a row entered the condition meanwhile: PostgreSQL's `READ COMMITTED`) or its condition has a subquery |
//! | `ActiveModel::delete`, `Model::delete`, `delete_by_id`, `Entity::delete(..)`, `delete_many().filter(..).exec*` | precise (the rows read first when the entity has lists by value or relations) |
//! | upserts (`on_conflict`, `ON DUPLICATE KEY UPDATE`, `REPLACE`) | precise for the new rows, coarse for the rows they may overwrite |
//! | rows written by the database through foreign-key actions declared on the entities (`on_delete`/`on_update` = `Cascade`, `SetNull`, `SetDefault` on a `belongs_to`) | coarse for each referencing table, down the references |
//! | rows written by triggers, rules, or foreign-key actions the entities do not declare | not seen: declare them with [`CachedDatabaseBuilder::trigger`] (then coarse for the tables named) |
//! | `ActiveModelEx` builders (`ActiveModel::builder()..insert/save`), `ModelEx::delete`, `cascade_delete`, junction maintenance | precise (they are the statements above, inside a transaction the connection follows) |
//! | raw SQL (`execute_unprepared`, `execute_raw`, `query_*_raw`) that parses | as the statement kinds above, parameters brought to their columns' types (`"1"` for an integer key is row `1`); `INSERT .. SELECT`, `UPDATE .. FROM`, multi-table deletes (aliases resolved), `TRUNCATE`, SQLite's `UPDATE OR REPLACE`, `EXPLAIN ANALYZE` of a write, DDL, several statements in one string (even when one fails half-way), writing CTEs: coarse |
//! | `CALL`, `DO`, `MERGE`, `COPY`, `TRUNCATE .. CASCADE` and other statements whose writes cannot be told | coarse for every cached entity |
//! | text the parser cannot read | refused ([`Refusal::Unparsed`]), or coarse for every cached entity with [`UnparsedStatements::InvalidateEverything`]; [`CachedDatabase::execute_touching`] runs it naming its tables |
//! | `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT` as SQL text | refused ([`Refusal::TransactionControl`]) |
//! | tables of entities without `derive(CacheEntity)` | coarse for that table |
//! | migrations (they need the inner connection) | [`CachedDatabase::migrate`]: coarse for every cached entity after they ran |
//! | an `ActiveModel` write through another connection while a `CachedDatabase` exists | refused by the entity's hook ([`Refusal::UncachedConnection`]; see [`allow_uncached_writes`]) |
//! | any other write through another connection ([`CachedDatabase::inner`], a second pool, another program) | not seen: SeaORM runs no hook for them |
//!
//! A plain `SELECT` (one statement) is never parsed. A function called from
//! a `SELECT` that writes is not seen.
//!
//! Scope values are compared as the cache encodes them: a column the
//! database compares case- or accent-insensitively (MySQL's and MariaDB's
//! default collations, SQLite `NOCASE`, PostgreSQL `citext`) must be
//! declared `#[matroska(collated("field"))]`, which makes its lists coarse on
//! that column (see [`matroska::Scopes::collated`]).
//!
//! ## Transactions
//!
//! Writes inside a transaction are invalidated right after the outermost
//! commit, whichever API opened it (`begin`, `transaction`, nested
//! savepoints, `ActiveModelEx`). Savepoints rolled back invalidate nothing
//! of theirs. Nothing read inside a transaction is cached: a
//! [`Cache::get_or_load`](matroska::Cache::get_or_load) whose loader reads
//! through a transaction returns its value without storing it or sharing it
//! with other callers, so no reader outside ever sees uncommitted data, and
//! a rollback, an error, a panic or a dropped transaction leaves nothing of
//! it in the cache. A write whose caller stops waiting (a cancelled future)
//! may still run: the transaction keeps a coarse invalidation for it.
//! Outside a transaction, a write runs to completion in a task of its own,
//! invalidation included; so does the outermost commit (a request timeout
//! that drops the future after the database committed cannot skip the
//! invalidation). A transaction committed while a savepoint of it is still
//! open (the driver then only releases the savepoint) hands its
//! invalidations to that savepoint, whose end is the real one
//! ([`Committed::Deferred`]). Values cached by hand
//! ([`Cache::put`](matroska::Cache::put),
//! [`put_with_ticket`](matroska::Cache::put_with_ticket)) from a task that
//! read through a transaction still open are refused. A write that must read rows first runs in a short
//! transaction of its own (SQLite: `BEGIN IMMEDIATE`), with `FOR UPDATE` on
//! PostgreSQL and MySQL, so concurrent writers moving the same row are
//! serialised and each invalidates the lists it really moved the row
//! between.
//!
//! ## The cache never breaks a write
//!
//! * No cache: use the plain `DatabaseConnection` (seeders, tests,
//!   migrations): entities' hooks let writes through while no
//!   `CachedDatabase` exists in the process.
//! * Cache unreachable: the write is committed and returns `Ok`; the cache
//!   keeps its invalidation pending and applies it before it serves reads
//!   again. [`CachedDatabase::pending_invalidations`],
//!   [`CachedDatabase::flush`] and [`CachedTransaction::commit_with_report`]
//!   tell "written and invalidated" from "written, invalidation pending".
//! * Not written: a `DbErr` from the database, or a [`Refusal`] (read back
//!   with [`Refusal::of`]).
//!
//! # Dependencies of cached values
//!
//! * [`dependencies`] walks loaded rows and relations down a [`Depth`]
//!   map: each row's key and its entity's switch, and for each `has_many` /
//!   `has_one` relation walked, the membership of the parent's children, so
//!   a child inserted, moved or deleted drops the parent's entry.
//! * [`list`] and [`list_deps`]: a filtered list's condition.
//! * [`not_found`]: a cached "no such row".
//! * [`pk_dep`], [`pk_dep_of`], [`entity_dep`]: keys and switches by hand.
//!
//! The [`guide`] has worked examples: detail pages, parents with children,
//! filtered lists and aggregates, pagination and top-N lists, "not found",
//! transactions.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod connection;
mod depth;
mod entity;
mod error;
pub mod guide;
mod key;
mod list;
pub mod outbox;
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod test_hooks;
mod value;
mod walk;

pub use connection::{
    allow_uncached_writes, check_connection, CachedDatabase, CachedDatabaseBuilder, CachedStream, CachedTransaction,
    Committed, Invalidator, Refusal, UnparsedStatements, WriteStats,
};
pub use depth::Depth;
pub use entity::CacheEntity;
pub use error::Error;
pub use key::{active_pk_dep, changed_columns, entity_dep, entity_name, pk_dep, pk_dep_of};
pub use list::{list, list_deps, not_found, ListCondition};
pub use matroska;
/// Derives on an entity's `Model` (and the `ModelEx` of `#[sea_orm::model]`):
/// see the [crate docs](crate) and the `matroska` attribute below.
///
/// ```text
/// #[matroska(scope(fields("published", "category_id")))]   // a list filtered by these fields; repeatable
/// #[matroska(scope(fields("category_id"), watch("price")))] // ... whose order or cut also depends on `price` (top-N)
/// #[matroska(scopes = path::to::fn)]                       // fn() -> matroska::Scopes<Model>, extended by scope(..)
/// #[matroska(collated("type_"))]                         // compared by a case-insensitive collation: lists coarse on it
/// #[matroska(manual_behavior)]                             // do not implement ActiveModelBehavior
/// ```
///
/// It implements [`CacheEntity`] for `Entity` (scope parameters named by
/// the columns' database names, as SeaORM names them), registers the entity
/// with every [`CachedDatabase`], implements [`Walk`] for `Model` and
/// `ModelEx` (relation fields `HasOne`, `HasMany`, `BelongsTo` by name), and
/// `ActiveModelBehavior` for `ActiveModel` with [`check_connection`] in
/// `before_save` and `before_delete`.
pub use matroska_seaorm_macros::CacheEntity;
/// Derives [`Walk`] for your own struct: each field is a relation by its name
/// in a depth map (`#[matroska(skip)]` leaves a field out).
pub use matroska_seaorm_macros::Walk;
pub use outbox::{Outbox, OutboxConfig};
pub use value::to_value;
pub use walk::{dependencies, Collector, Walk};

#[doc(hidden)]
pub mod __private {
    pub use crate::entity::{EntityInfoHandle, Registered};
    pub use crate::walk::{children, children_via, row_children_in, walk_row, RelationField};
    pub use async_trait::async_trait;
    pub use inventory;
    pub use sea_orm;

    /// Type-checks a typed depth map; never called at run time.
    pub fn check<T>(_: impl FnOnce(&T)) {}

    /// Type-checks one relation of a typed depth map.
    pub fn field<R: RelationField>(_: &R, _: impl FnOnce(&R::Target)) {}

    /// A field's value as a scope parameter.
    ///
    /// # Errors
    /// [`Error::UnsupportedValue`](crate::Error::UnsupportedValue).
    pub fn value<T: Clone + Into<sea_orm::Value>>(v: &T) -> Result<matroska::Value, crate::Error> {
        crate::to_value(&v.clone().into())
    }

    /// A column's database name.
    pub fn column_name<C: sea_orm::IdenStatic>(c: C) -> &'static str {
        c.as_str()
    }

    /// Adds the list of every row (no parameters) to scopes given by hand.
    pub fn with_all_rows<T: 'static>(scopes: matroska::Scopes<T>) -> matroska::Scopes<T> {
        scopes.describes(Vec::<String>::new(), |_: &T| Some(matroska::Params::new()))
    }

    /// A new scope set for `E`, named after its table, with the list of
    /// every row (no parameters).
    pub fn new_scopes<E: sea_orm::EntityTrait>() -> matroska::Scopes<E::Model> {
        matroska::Scopes::new(crate::entity_name::<E>(), matroska::Mode::default())
            .describes(Vec::<String>::new(), |_: &E::Model| Some(matroska::Params::new()))
    }
}
