//! A guide: what to put on a cached value so that every write that changes
//! it drops it. Every example runs (on SQLite in memory) against the schema
//! in `doc/blog.rs`: authors with articles; articles in categories, with a
//! price, tagged through `article_tag`.
//!
//! The rule behind all of them: a cached value depends on **the rows it
//! shows** (their keys: [`dependencies`](crate::dependencies)) and on **which
//! rows it shows** (a list's condition: [`list`](crate::list); a parent's
//! children: the relations walked by `dependencies`; a missing row:
//! [`not_found`](crate::not_found)). A [`CachedDatabase`](crate::CachedDatabase)
//! invalidates both kinds after every write.
//!
//! # A detail page
//!
//! ```
//! # include!("../doc/blog.rs");
//! # use std::time::Duration;
//! # use matroska::{Cache, MemoryBackend};
//! # use matroska_seaorm::{depth, not_found, CachedDatabase};
//! # use sea_orm::{EntityTrait, EntityLoaderTrait};
//! # type E = Box<dyn std::error::Error + Send + Sync>;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), E> {
//! # let cache = Cache::new(MemoryBackend::new());
//! # let db = CachedDatabase::new(blog().await?, cache.clone());
//! # let ttl = Duration::from_secs(60);
//! let id = 1;
//! let page = cache
//!     .get_or_load(&format!("article:{id}"), ttl, |deps| {
//!         let db = db.clone();
//!         async move {
//!             let row = article::Entity::load().filter_by_id(id).with(author::Entity).one(&db).await?;
//!             match &row {
//!                 // the article and its author: a rename of the author drops the page
//!                 Some(a) => deps.extend(matroska_seaorm::dependencies(a, depth! { author: 1 })?),
//!                 // "no such article": an insert of that key drops it
//!                 None => deps.extend(not_found::<article::Entity>(id)),
//!             }
//!             Ok::<_, E>(row.map(|a| a.title))
//!         }
//!     })
//!     .await?;
//! assert_eq!(page.as_deref(), Some("ownership"));
//! # Ok(()) }
//! ```
//!
//! # A parent with its children
//!
//! Walk the loaded relation: `depth! { articles: 1 }` adds each article's key
//! *and* the membership of the author's articles, so an article inserted
//! for the author, moved to another author, or deleted drops the entry, with
//! no scope declared by hand. Many-to-many relations work the same through
//! their junction entity (`depth! { tags: 1 }`: linking and unlinking a tag
//! drops the entry); the junction entity must derive `CacheEntity` too.
//!
//! ```
//! # include!("../doc/blog.rs");
//! # use std::time::Duration;
//! # use matroska::{Cache, MemoryBackend};
//! # use matroska_seaorm::{depth, CachedDatabase};
//! # use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityLoaderTrait, EntityTrait};
//! # type E = Box<dyn std::error::Error + Send + Sync>;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), E> {
//! # let cache = Cache::new(MemoryBackend::new());
//! # let db = CachedDatabase::new(blog().await?, cache.clone());
//! # let ttl = Duration::from_secs(60);
//! let load = |deps: matroska::Deps| {
//!     let db = db.clone();
//!     async move {
//!         let ann = author::Entity::load().filter_by_id(1).with(article::Entity).one(&db).await?;
//!         deps.extend(matroska_seaorm::dependencies(&ann, depth! { articles: 1 })?);
//!         Ok::<_, E>(ann.map(|a| a.articles.len()))
//!     }
//! };
//! assert_eq!(cache.get_or_load("author:1:articles", ttl, load).await?, Some(1));
//! article::ActiveModel {
//!     title: Set("lifetimes".into()),
//!     author_id: Set(1),
//!     category_id: Set(1),
//!     published: Set(false),
//!     price: Set(5),
//!     ..Default::default()
//! }
//! .insert(&db)
//! .await?;
//! assert!(!cache.has("author:1:articles").await?, "a new child drops its parent's entry");
//! # Ok(()) }
//! ```
//!
//! # Filtered lists and aggregates
//!
//! Declare on the entity which columns lists are filtered by
//! (`#[matroska(scope(fields("published", "category_id")))]`), then give
//! the list's condition. A list shows rows: add their keys too. An
//! aggregate (a count, a sum) shows no row: the condition alone is its
//! dependency, and it is dropped exactly when a row enters or leaves it.
//!
//! ```
//! # include!("../doc/blog.rs");
//! # use std::time::Duration;
//! # use matroska::{Cache, MemoryBackend};
//! # use matroska_seaorm::CachedDatabase;
//! # use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter};
//! # type E = Box<dyn std::error::Error + Send + Sync>;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), E> {
//! # let cache = Cache::new(MemoryBackend::new());
//! # let db = CachedDatabase::new(blog().await?, cache.clone());
//! # let ttl = Duration::from_secs(60);
//! let count = |cat: i32| {
//!     let db = db.clone();
//!     move |deps: matroska::Deps| async move {
//!         deps.extend(
//!             matroska_seaorm::list::<article::Entity>()
//!                 .eq(article::Column::Published, true)
//!                 .eq(article::Column::CategoryId, cat)
//!                 .deps()?,
//!         );
//!         let n = article::Entity::find()
//!             .filter(article::Column::Published.eq(true))
//!             .filter(article::Column::CategoryId.eq(cat))
//!             .count(&db)
//!             .await?;
//!         Ok::<_, E>(n)
//!     }
//! };
//! assert_eq!(cache.get_or_load("count:2", ttl, count(2)).await?, 1);
//! assert_eq!(cache.get_or_load("count:3", ttl, count(3)).await?, 0);
//! // moving the article from category 2 to 3 changes both counts
//! let a = article::Entity::find_by_id(1).one(&db).await?.ok_or("no article")?;
//! let mut am = a.into_active_model();
//! am.category_id = Set(3);
//! am.update(&db).await?;
//! assert!(!cache.has("count:2").await? && !cache.has("count:3").await?);
//! # Ok(()) }
//! ```
//!
//! # Pagination and top-N lists
//!
//! A page or a top-N list also depends on the columns it is **ordered**
//! by: a price change can move a row into or out of "the 3 cheapest". Watch
//! those columns in the scope: `#[matroska(scope(fields("category_id"),
//! watch("price")))]`. A write of `price` then drops the lists of that
//! category, while writes of other columns only drop the entries showing the
//! row. The same holds for pages (`LIMIT`/`OFFSET`) of any ordered list.
//!
//! ```
//! # include!("../doc/blog.rs");
//! # use std::time::Duration;
//! # use matroska::{Cache, MemoryBackend};
//! # use matroska_seaorm::CachedDatabase;
//! # use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect};
//! # type E = Box<dyn std::error::Error + Send + Sync>;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), E> {
//! # let cache = Cache::new(MemoryBackend::new());
//! # let db = CachedDatabase::new(blog().await?, cache.clone());
//! # let ttl = Duration::from_secs(60);
//! let cheapest = |deps: matroska::Deps| {
//!     let db = db.clone();
//!     async move {
//!         let rows = article::Entity::find()
//!             .filter(article::Column::CategoryId.eq(2))
//!             .order_by_asc(article::Column::Price)
//!             .limit(3)
//!             .all(&db)
//!             .await?;
//!         deps.extend(matroska_seaorm::list::<article::Entity>().eq(article::Column::CategoryId, 2).deps()?);
//!         deps.extend(matroska_seaorm::dependencies(&rows, matroska_seaorm::depth! {})?);
//!         Ok::<_, E>(rows.into_iter().map(|a| a.title).collect::<Vec<_>>())
//!     }
//! };
//! cache.get_or_load("cheapest:2", ttl, cheapest).await?;
//! let a = article::Entity::find_by_id(1).one(&db).await?.ok_or("no article")?;
//! let mut am = a.into_active_model();
//! am.price = Set(99);
//! am.update(&db).await?;
//! assert!(!cache.has("cheapest:2").await?, "a watched column reorders the list");
//! # Ok(()) }
//! ```
//!
//! # Transactions
//!
//! Write through `db.transaction(..)`, `db.begin()` or any API that opens
//! one: entries are invalidated right after the outermost commit, and
//! nothing is invalidated for a rollback. Reads inside a transaction may see
//! uncommitted rows (or an old snapshot), so a value loaded through the
//! transaction is returned but never cached. Load cached values through the
//! connection, not the transaction, when you want them cached.
//!
//! ```
//! # include!("../doc/blog.rs");
//! # use std::time::Duration;
//! # use matroska::{Cache, MemoryBackend};
//! # use matroska_seaorm::CachedDatabase;
//! # use sea_orm::{ActiveModelTrait, ActiveValue::Set, DbErr, EntityTrait, IntoActiveModel, TransactionTrait};
//! # type E = Box<dyn std::error::Error + Send + Sync>;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), E> {
//! # let cache = Cache::new(MemoryBackend::new());
//! # let db = CachedDatabase::new(blog().await?, cache.clone());
//! db.transaction::<_, (), DbErr>(|txn| {
//!     Box::pin(async move {
//!         let a = article::Entity::find_by_id(1).one(txn).await?.ok_or(DbErr::RecordNotFound("1".into()))?;
//!         let mut am = a.into_active_model();
//!         am.published = Set(false);
//!         am.update(txn).await?;
//!         Ok(())
//!     })
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! Values you cache by hand (`Cache::lookup`, a read, `put_with_ticket`)
//! from a task that read through a transaction still open are refused
//! ([`matroska::PutOutcome::Refused`]): what it read may never be committed.
//!
//! # Writes the database makes by itself
//!
//! Foreign keys declared with an action on the entity are followed: deleting
//! a post whose replies say
//! `#[sea_orm(belongs_to, from = "post_id", to = "id", on_delete = "Cascade")]`
//! drops every cached list, relation and row of replies (coarse: the rows the
//! database deleted are not read). Triggers, rules and actions declared only
//! in the schema are invisible to the connection: declare them once.
//!
//! ```
//! # include!("../doc/blog.rs");
//! # use matroska::{Cache, MemoryBackend};
//! # use matroska_seaorm::CachedDatabase;
//! # type E = Box<dyn std::error::Error + Send + Sync>;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), E> {
//! # let cache = Cache::new(MemoryBackend::new());
//! // a trigger on `article_tag` updates a counter in `tag`
//! let db = CachedDatabase::builder(blog().await?, cache.clone()).trigger("article_tag", &["tag"]).build()?;
//! # let _ = db;
//! # Ok(()) }
//! ```
//!
//! # Case-insensitive columns
//!
//! MySQL's and MariaDB's default collations compare text without regard to
//! case (and accents, and trailing spaces): `WHERE type = 'tool'` also
//! matches `Tool`. The cache compares values exactly, so a list filtered by
//! such a column must say so, or a row of type `Tool` would not invalidate
//! the list of `tool`:
//!
//! ```text
//! #[matroska(scope(fields("type_")))]
//! #[matroska(collated("type_"))]   // lists filtered by `type` are coarse on it
//! ```
//!
//! The same holds for SQLite `COLLATE NOCASE` and PostgreSQL `citext` or
//! nondeterministic collations.
//!
//! # Scope mistakes: development and release builds
//!
//! Asking for a condition no scope describes (a list filtered by `views`,
//! say) is a mistake that would leave the list never invalidated. In debug
//! builds ([`matroska::Mode::Development`]) it is an error
//! ([`Error::Scope`](crate::Error::Scope)), so it shows in tests. In release
//! builds ([`matroska::Mode::Production`]) it logs a warning and the list
//! falls back to the entity's switch: every write of the entity drops it,
//! which is correct, only coarser. A value of the wrong type for its column
//! is always an error ([`Error::ValueMismatch`](crate::Error::ValueMismatch)).
//!
//! ```
//! # include!("../doc/blog.rs");
//! # fn main() {
//! let err = matroska_seaorm::list_deps::<article::Entity>(matroska::params! { "title" => "x" });
//! if cfg!(debug_assertions) {
//!     assert!(matches!(err, Err(matroska_seaorm::Error::Scope(_))));
//! }
//! # }
//! ```
//!
//! # Redis: the safe `maxmemory` policy
//!
//! With the Redis backend, set `maxmemory-policy` to `noeviction` or a
//! `volatile-*` policy: cache entries carry a TTL and may be evicted, while
//! the bookkeeping invalidation relies on (reverse indexes, tombstones) has
//! none and is never evicted. The backend refuses `allkeys-*` policies when
//! it connects, since they could evict that bookkeeping and let a stale
//! entry survive its invalidation. See the `matroska` crate's Redis module.
