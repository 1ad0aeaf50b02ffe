//! Diesel 2 integration for [`matroska`], on diesel-async: a connection that
//! keeps the cache correct whatever Diesel API writes through it,
//! dependencies from models and loaded relations, and typed list conditions.
//! The same concepts, guarantees and dependency keys as matroska-seaorm, so
//! one cache can serve both.
//!
//! ```ignore
//! use matroska::{Cache, MemoryBackend};
//! use matroska_diesel::{depth, CacheModel, CachedDatabase};
//!
//! #[derive(Queryable, Selectable, Identifiable, Associations, CacheModel, Serialize, Deserialize)]
//! #[diesel(table_name = posts, belongs_to(User))]
//! #[matroska(scope(fields("published", "category_id")))]   // lists filtered by these columns
//! struct Post { id: i32, user_id: i32, category_id: i32, published: bool, title: String }
//!
//! // at start-up: the cache, and every connection wrapped
//! let cached = CachedDatabase::new(cache.clone());
//! let mut conn = cached.wrap(pool.get().await?);            // or cached.connect::<AsyncPgConnection>(url)
//!
//! // a cached list: the rows, their authors, and the list's condition
//! let list = cache.get_or_load("category:2", ttl, |deps| async move {
//!     let rows: Vec<(Post, User)> = posts::table.inner_join(users::table)
//!         .filter(posts::category_id.eq(2)).filter(posts::published.eq(true))
//!         .select((Post::as_select(), User::as_select())).load(&mut conn).await?;
//!     deps.extend(matroska_diesel::dependencies(&rows, depth! { users: 1 })?);
//!     deps.extend(matroska_diesel::list::<Post>().eq(posts::published, true).eq(posts::category_id, 2).deps()?);
//!     Ok::<_, AppError>(rows)
//! }).await?;
//!
//! // plain Diesel: every write through the connection invalidates what it changed
//! diesel::update(posts::table.find(1)).set(posts::category_id.eq(3)).execute(&mut conn).await?;
//! // dropped: post 1, and the lists of categories 2 AND 3
//! ```
//!
//! # Why diesel-async, and why a wrapping connection
//!
//! Measured (`examples/diesel_bench.rs`, one run, point reads and updates by
//! key, each task with its own connection): diesel-async against the
//! synchronous API on `spawn_blocking`, async/sync throughput 0.85–1.01 on
//! SQLite (diesel-async's SQLite connection is itself the synchronous one on
//! `spawn_blocking`) and 1.05–3.28 on PostgreSQL (reads 3.3× at one task,
//! 2.4× at eight). matroska is async too: its invalidation is awaited and its
//! "not cacheable inside a transaction" mark is task-local, which a
//! `spawn_blocking` thread would lose. So this crate wraps diesel-async's
//! connections; a synchronous application can use
//! `diesel_async::async_connection_wrapper`.
//!
//! Diesel has no per-row hooks, and its `Instrumentation` is synchronous and
//! sees the commit *before* `COMMIT` runs. A wrapping connection sees every
//! statement with its parameters (it implements diesel-async's connection
//! traits, which opt into Diesel's `i-implement-a-third-party-backend` API:
//! this crate pins Diesel to `~2.3`), runs its own reads in the same
//! transaction as the write, and its transaction manager wraps the
//! connection's own, so it knows when the outermost commit really happened.
//!
//! ## Every write API, and what it invalidates
//!
//! *Precise*: the rows' keys, the lists (scopes) of the old **and** new
//! values of the columns they watch, the relations (`belongs_to`) the rows
//! leave and join. *Coarse*: every cached list and relation of the table
//! (every entry whose dependencies carry the table's switch, which every
//! helper of this crate adds). *Refused*: an error before anything is
//! written.
//!
//! | write | through a `CachedConnection` |
//! |---|---|
//! | `insert_into(t).values(..)` (one row, a batch, `get_result`, `returning`) | precise: the statement runs with `RETURNING` the key, scope and foreign-key columns (the application's own `RETURNING` rows are used when they hold them), so new keys and lists come from the database |
//! | upserts: `on_conflict(..).do_update()`, `do_nothing()`, `replace_into`, `insert_or_ignore_into` | precise for the rows inserted; coarse for the rows an update on conflict or a replace may overwrite (their old values are unknown) |
//! | `update(..).set(..)`: by key (`find`), with filters, `AsChangeset` structs, `update(&model).set(&model)`, expressions (`col.eq(col + 1)`) | precise: new values from `RETURNING`; when a column that moves rows (scope field, watched column, foreign key, key) changes, the rows are read first with the statement's own condition and parameters, `FOR UPDATE` on PostgreSQL, in a transaction of the connection's own (SQLite: `BEGIN IMMEDIATE`); if `RETURNING` names a row the read did not see (it entered the condition meanwhile, under PostgreSQL's READ COMMITTED), also coarse |
//! | `delete(..)`: by key, with filters | precise: the deleted rows from `RETURNING` |
//! | writes the database makes by itself: foreign-key actions (`ON DELETE CASCADE`, `SET NULL`, `ON UPDATE CASCADE`), triggers, views | coarse for the referencing models, when declared on the model (`#[matroska(belongs_to(Parent, on_delete = "cascade"))]`, down the references); coarse for the tables declared with [`CachedDatabaseBuilder::trigger`]; **not seen** when not declared |
//! | `sql_query(..)` with or without binds, `batch_execute` of one statement | as the statement kinds above, when it parses (the table named in any case, aliases, comments after the final `;`); `INSERT .. SELECT`, `UPDATE .. FROM`, `UPDATE OR REPLACE`, `WITH` writes, `LIMIT`, `TRUNCATE`, `EXPLAIN ANALYZE` of a write, DDL: coarse for each table named |
//! | several statements in one string (`batch_execute`, `SELECT 1; UPDATE ..` included) | coarse for each table named, **even when a later statement fails** (SQLite has committed those before it outside a transaction, and a transaction may go on) |
//! | `CALL`, `DO`, `MERGE`, `COPY`, `TRUNCATE .. CASCADE` and other statements whose writes cannot be told | coarse for every cached model |
//! | text the parser cannot read | refused ([`Refusal::Unparsed`]), or coarse for every cached model with [`UnparsedStatements::InvalidateEverything`]; [`CachedConnection::execute_touching`] runs it naming its tables (schema-qualified or not, in any case) |
//! | `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT` as SQL text (`batch_execute`, `sql_query`) | refused ([`Refusal::TransactionControl`]) |
//! | `transaction(..)`, nested `transaction` (savepoints), `begin_test_transaction`, `test_transaction` | followed: invalidated after the outermost commit; rolled-back savepoints, rollbacks, errors, panics, test transactions invalidate nothing of theirs |
//! | tables of no model with `derive(CacheModel)` | coarse for that table |
//! | a write whose caller stops waiting (a dropped future) | coarse, from a task of its own, at once and once more a second later; inside a transaction, kept for its commit; a commit dropped while its invalidation is in flight still invalidates; the connection's own transaction, even one whose `BEGIN` was in flight, is rolled back at the next call (a pool sees the connection broken meanwhile) |
//! | the wrapped connection ([`CachedConnection::inner`]), or any connection or pool not wrapped | **not seen**: the application invalidates what they changed (`Cache::clear`, or [`entity_dep`] of each table) |
//!
//! A plain `SELECT` is never parsed. A function called from a `SELECT` that
//! writes is not seen. MySQL/MariaDB is not supported: the precise paths
//! need `RETURNING`, which MySQL lacks (MariaDB lacks it for `UPDATE`).
//!
//! ## Transactions
//!
//! Writes inside a transaction are invalidated right after the outermost
//! commit. Nothing read inside a transaction is cached: a
//! [`Cache::get_or_load`](matroska::Cache::get_or_load) whose loader reads
//! through a transaction returns its value without storing it or sharing it
//! with other callers, and a task that read through an open transaction (or
//! one of its savepoints) has its manual puts
//! ([`Cache::put`](matroska::Cache::put),
//! [`Cache::put_with_ticket`](matroska::Cache::put_with_ticket)) refused
//! until the transaction ends ([`matroska::read_in_transaction`]). A write outside a transaction that must read rows
//! first runs in a short transaction of its own, so concurrent writers
//! moving the same row are serialised and each invalidates the lists it
//! really moved the row between.
//!
//! ## The cache never breaks a write
//!
//! * Cache unreachable: the write is committed and returns `Ok`; the cache
//!   keeps its invalidation pending and applies it before it serves reads
//!   again. [`CachedConnection::last_commit`] ([`Committed`]),
//!   [`CachedDatabase::pending_invalidations`] and
//!   [`CachedDatabase::flush`] tell "written and invalidated" from
//!   "written, invalidation pending".
//! * Durable: with an [`outbox`], the intent is recorded in the same
//!   transaction as the write and applied by any process (the same table and
//!   format as matroska-seaorm's).
//! * Not written: Diesel's error from the database, or a [`Refusal`] (read
//!   back with [`Refusal::of`]).
//!
//! # Dependencies of cached values
//!
//! * [`dependencies`] walks rows down a [`Depth`] map: each row's key (from
//!   its `Identifiable` key, composite keys included) and its table's switch;
//!   tuples from joins and from `grouped_by` (`(User, Vec<Post>)`); and for
//!   children loaded with their parent (`belonging_to`), the parent's
//!   membership in the children's table, so a child inserted, moved or
//!   deleted drops the parent's entry.
//! * [`list`] and [`list_deps`]: a filtered list's condition.
//! * [`not_found`]: a cached "no such row".
//! * [`pk_dep`], [`pk_dep_of`], [`entity_dep`]: keys and switches by hand.
//!
//! Keys and scope values are canonical ([`ToValue`]) and equal to
//! matroska-seaorm's for the same table, key and values.

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
/// #[matroska(belongs_to(Post, on_delete = "cascade"))]      // the referential actions of a `belongs_to` foreign key
/// #[matroska(collated("kind"))]                              // scope fields the database compares by a collation
/// ```
///
/// `belongs_to(Parent, [foreign_key = col,] on_delete = "..", on_update =
/// "..")` repeats the schema's `REFERENCES .. ON DELETE .. ON UPDATE ..` for
/// one of the model's `#[diesel(belongs_to(..))]` (actions `"cascade"`,
/// `"set_null"`, `"set_default"`, `"restrict"`, `"no_action"`): a delete of
/// the parent row, or a change of its key, then invalidates this model's
/// lists, relations and rows coarsely (and those of models referencing it in
/// turn). Diesel's schema does not carry the actions, so undeclared ones are
/// not seen. Triggers are declared with
/// [`CachedDatabaseBuilder::trigger`].
///
/// `collated("field", ..)`: scope fields whose values the database compares
/// by a collation the cache does not model (SQLite `COLLATE NOCASE`,
/// PostgreSQL `citext` or a nondeterministic collation, trailing spaces of
/// `CHAR`): a list filtered by `kind = 'tool'` also holds rows of kind
/// `Tool`. Lists filtered by such a field depend on every value of it
/// ([`Scopes::collated`](matroska::Scopes::collated)): precise on the other
/// fields, coarse on these.
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
    pub use crate::entity::{table_name_of, Action, ModelInfoBuilder, Registered};
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
