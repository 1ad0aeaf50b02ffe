//! The schema, per-test databases and cached views shared by the integration
//! tests.
//!
//! Tests run on SQLite in memory by default; with `DATABASE_URL` set to a
//! PostgreSQL or MySQL/MariaDB server, each test gets a database of its own
//! there, dropped at the end:
//!
//! ```text
//! cargo test -p matroska-seaorm
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-seaorm
//! DATABASE_URL=mysql://root@127.0.0.1:3306/test cargo test -p matroska-seaorm
//! ```

#![allow(dead_code, missing_docs, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::Duration;

use matroska::{Cache, MemoryBackend};
use matroska_seaorm::{depth, CachedDatabase};
use sea_orm::entity::prelude::*;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, EntityLoaderTrait};
use serde_json::Value as Json;

pub const TTL: Duration = Duration::from_secs(300);

pub mod author {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "author")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        #[sea_orm(has_many)]
        pub articles: HasMany<super::article::Entity>,
        #[sea_orm(has_many)]
        pub comments: HasMany<super::comment::Entity>,
    }
}

pub mod category {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "category")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        #[sea_orm(has_many)]
        pub articles: HasMany<super::article::Entity>,
    }
}

pub mod article {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "article")]
    #[matroska(scope(fields("published", "category_id")))]
    #[matroska(scope(fields("published")))]
    #[matroska(scope(fields("category_id"), watch("price")))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub title: String,
        pub author_id: i32,
        pub category_id: i32,
        pub published: bool,
        pub views: i32,
        pub price: i32,
        #[sea_orm(belongs_to, from = "author_id", to = "id")]
        pub author: BelongsTo<super::author::Entity>,
        #[sea_orm(belongs_to, from = "category_id", to = "id")]
        pub category: BelongsTo<super::category::Entity>,
        #[sea_orm(has_many)]
        pub comments: HasMany<super::comment::Entity>,
        #[sea_orm(has_many, via = "article_tag")]
        pub tags: HasMany<super::tag::Entity>,
    }
}

pub mod comment {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "comment")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub body: String,
        pub article_id: i32,
        pub author_id: i32,
        #[sea_orm(belongs_to, from = "article_id", to = "id")]
        pub article: BelongsTo<super::article::Entity>,
        #[sea_orm(belongs_to, from = "author_id", to = "id")]
        pub author: BelongsTo<super::author::Entity>,
    }
}

pub mod tag {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "tag")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        #[sea_orm(has_many, via = "article_tag")]
        pub articles: HasMany<super::article::Entity>,
    }
}

pub mod article_tag {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "article_tag")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub article_id: i32,
        #[sea_orm(primary_key, auto_increment = false)]
        pub tag_id: i32,
        #[sea_orm(belongs_to, from = "article_id", to = "id")]
        pub article: BelongsTo<super::article::Entity>,
        #[sea_orm(belongs_to, from = "tag_id", to = "id")]
        pub tag: BelongsTo<super::tag::Entity>,
    }
}

/// SeaORM's naming options: camelCase columns, and a field named `type_`
/// (column `type`). A product's reviews are its children.
pub mod product {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "product", rename_all = "camelCase")]
    #[matroska(scope(fields("type_")))]
    #[matroska(scope(fields("in_stock"), watch("price_cents")))]
    // MySQL/MariaDB compare `type` case-insensitively (their default collations)
    #[matroska(collated("type_"))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub display_name: String,
        pub type_: String,
        pub in_stock: bool,
        pub price_cents: i32,
        #[sea_orm(has_many)]
        pub reviews: HasMany<super::review::Entity>,
    }
}

pub mod review {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "review")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub product_id: i32,
        pub stars: i32,
        #[sea_orm(belongs_to, from = "product_id", to = "id")]
        pub product: BelongsTo<super::product::Entity>,
    }
}

/// A table no entity of this program derives `CacheEntity` for.
pub mod audit {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "audit")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub what: String,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// The schema, created on the plain connection.
pub async fn create_schema(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.get_schema_builder()
        .register(author::Entity)
        .register(category::Entity)
        .register(article::Entity)
        .register(comment::Entity)
        .register(tag::Entity)
        .register(article_tag::Entity)
        .register(product::Entity)
        .register(review::Entity)
        .register(audit::Entity)
        .apply(db)
        .await
}

/// A database of one test: SQLite (in memory, or a file for several
/// connections), or a fresh database on the server of `DATABASE_URL`.
pub struct TestDb {
    pub db: DatabaseConnection,
    admin: Option<(DatabaseConnection, String)>,
    file: Option<std::path::PathBuf>,
    url: String,
}

fn with_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].rfind('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{name}{query}")
}

impl TestDb {
    /// A database with the schema, for the test `name` (unique per binary).
    pub async fn new(name: &str) -> TestDb {
        Self::with_connections(name, None).await
    }

    /// As [`new`](Self::new), with a pool of `max` connections.
    pub async fn with_connections(name: &str, max: Option<u32>) -> TestDb {
        let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
        let t = match url {
            Some(url) if url.starts_with("postgres") || url.starts_with("mysql") => {
                let admin = Database::connect(url.as_str()).await.expect("connect to DATABASE_URL");
                let mut dbname = format!("mseaorm_{}_{}", env!("CARGO_CRATE_NAME"), name);
                if dbname.len() > 60 {
                    // MySQL names are at most 64 characters
                    let h = dbname
                        .bytes()
                        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
                    dbname = format!("{}_{h:016x}", &dbname[..40]);
                }
                let drop_sql = if url.starts_with("postgres") {
                    format!("DROP DATABASE IF EXISTS \"{dbname}\" WITH (FORCE)")
                } else {
                    format!("DROP DATABASE IF EXISTS `{dbname}`")
                };
                admin.execute_unprepared(&drop_sql).await.expect("drop old test database");
                let create = if url.starts_with("postgres") {
                    format!("CREATE DATABASE \"{dbname}\"")
                } else {
                    format!("CREATE DATABASE `{dbname}`")
                };
                admin.execute_unprepared(&create).await.expect("create test database");
                let url = with_db_name(&url, &dbname);
                let mut opts = ConnectOptions::new(url.clone());
                opts.max_connections(max.unwrap_or(4)).sqlx_logging(false);
                let db = Database::connect(opts).await.expect("connect to the test database");
                TestDb { db, admin: Some((admin, dbname)), file: None, url }
            }
            _ => {
                let file = max.map(|_| {
                    std::env::temp_dir().join(format!(
                        "mseaorm-{}-{}-{}.db",
                        env!("CARGO_CRATE_NAME"),
                        name,
                        std::process::id()
                    ))
                });
                let url = match &file {
                    Some(path) => {
                        let _ = std::fs::remove_file(path);
                        format!("sqlite://{}?mode=rwc", path.display())
                    }
                    None => "sqlite::memory:".to_owned(),
                };
                let mut opts = ConnectOptions::new(url.clone());
                opts.max_connections(max.unwrap_or(1)).sqlx_logging(false);
                let db = Database::connect(opts).await.expect("connect to SQLite");
                if file.is_some() {
                    db.execute_unprepared("PRAGMA journal_mode=WAL").await.expect("WAL");
                    db.execute_unprepared("PRAGMA busy_timeout=5000").await.expect("busy timeout");
                }
                TestDb { db, admin: None, file, url }
            }
        };
        create_schema(&t.db).await.expect("schema");
        t
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The URL of this test's database (server databases).
    pub fn url(&self) -> Option<String> {
        (self.admin.is_some()).then(|| self.url.clone())
    }

    /// The URL of this test's SQLite file, if it has one.
    pub fn file_url(&self) -> Option<String> {
        self.file.as_ref().map(|_| self.url.clone())
    }

    /// A cached connection over this database and a fresh memory cache.
    pub fn cached(&self) -> (CachedDatabase, Cache) {
        let cache = Cache::builder().backend(MemoryBackend::new()).build().unwrap();
        (CachedDatabase::new(self.db.clone(), cache.clone()), cache)
    }

    /// Closes the pool and drops the server database.
    pub async fn drop_db(self) {
        let _ = self.db.close().await;
        if let Some((admin, name)) = self.admin {
            let sql = match admin.get_database_backend() {
                DbBackend::Postgres => format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                _ => format!("DROP DATABASE IF EXISTS `{name}`"),
            };
            let _ = admin.execute_unprepared(&sql).await;
        }
        if let Some(f) = self.file {
            let _ = std::fs::remove_file(&f);
            let _ = std::fs::remove_file(f.with_extension("db-wal"));
            let _ = std::fs::remove_file(f.with_extension("db-shm"));
        }
    }
}

/// Runs a test body on a fresh database and cached connection (`pool`: with
/// several connections, an SQLite file in WAL mode).
#[macro_export]
macro_rules! db_test {
    ($name:ident, |$db:ident, $cache:ident| $body:block) => {
        $crate::db_test!($name, None, |$db, $cache| $body);
    };
    ($name:ident, pool, |$db:ident, $cache:ident| $body:block) => {
        $crate::db_test!($name, Some(4), |$db, $cache| $body);
    };
    ($name:ident, $max:expr, |$db:ident, $cache:ident| $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let tdb = $crate::common::TestDb::with_connections(stringify!($name), $max).await;
            {
                let (db, cache) = tdb.cached();
                let $db = &db;
                let $cache = &cache;
                $body
            }
            tdb.drop_db().await;
        }
    };
}

// ---------------------------------------------------------------------------
// Views: what an application caches, each loaded through `get_or_load` with
// the dependencies the crate's helpers give, and checked against a fresh
// query.

/// A cached view of the test schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum View {
    /// `find_by_id` on article (a row, or "not found").
    Article(i32),
    /// Published articles of a category, with their authors.
    Published(i32),
    /// How many published articles a category has (the condition only).
    CountPublished(i32),
    /// Every published article.
    AllPublished,
    /// Every article (the list of all rows).
    AllArticles,
    /// The three cheapest articles of a category (top-N by price).
    Cheapest(i32),
    /// An author with their articles (has_many).
    AuthorWithArticles(i32),
    /// An article with its tags (many-to-many through article_tag).
    ArticleWithTags(i32),
    /// An article with its comments (find_with_related pairs).
    ArticleWithComments(i32),
    /// A product with its reviews.
    ProductWithReviews(i32),
    /// Products of a type (a camelCase table, the `type` column).
    ProductsOfType(&'static str),
    /// The cheapest product in stock (top-N over a renamed column).
    CheapestInStock,
    /// `find_by_id` on product.
    Product(i32),
}

impl View {
    pub fn key(self) -> String {
        format!("{self:?}")
    }

    /// The view as the database gives it now.
    pub async fn query<C: ConnectionTrait>(self, db: &C) -> Result<Json, DbErr> {
        use sea_orm::QueryOrder;
        let j = |v: &dyn erased::Ser| serde_json::to_value(v.ser()).unwrap();
        Ok(match self {
            View::Article(id) => j(&article::Entity::find_by_id(id).one(db).await?),
            View::Published(cat) => j(&article::Entity::load()
                .filter(article::Column::CategoryId.eq(cat))
                .filter(article::Column::Published.eq(true))
                .order_by_asc(article::Column::Id)
                .with(author::Entity)
                .all(db)
                .await?),
            View::CountPublished(cat) => j(&sea_orm::PaginatorTrait::count(
                article::Entity::find()
                    .filter(article::Column::CategoryId.eq(cat))
                    .filter(article::Column::Published.eq(true)),
                db,
            )
            .await?),
            View::AllPublished => j(&article::Entity::find()
                .filter(article::Column::Published.eq(true))
                .order_by_asc(article::Column::Id)
                .all(db)
                .await?),
            View::AllArticles => j(&article::Entity::find().order_by_asc(article::Column::Id).all(db).await?),
            View::Cheapest(cat) => j(&sea_orm::QuerySelect::limit(
                article::Entity::find()
                    .filter(article::Column::CategoryId.eq(cat))
                    .order_by_asc(article::Column::Price)
                    .order_by_asc(article::Column::Id),
                3,
            )
            .all(db)
            .await?),
            View::AuthorWithArticles(id) => {
                j(&author::Entity::load().filter_by_id(id).with(article::Entity).one(db).await?.map(|mut a| {
                    if let sea_orm::entity::prelude::HasMany::Loaded(v) = &mut a.articles {
                        v.sort_by_key(|x| x.id);
                    }
                    a
                }))
            }
            View::ArticleWithTags(id) => {
                j(&article::Entity::load().filter_by_id(id).with(tag::Entity).one(db).await?.map(|mut a| {
                    if let sea_orm::entity::prelude::HasMany::Loaded(v) = &mut a.tags {
                        v.sort_by_key(|x| x.id);
                    }
                    a
                }))
            }
            View::ArticleWithComments(id) => j(&article::Entity::find_by_id(id)
                .find_with_related(comment::Entity)
                .order_by_asc(comment::Column::Id)
                .all(db)
                .await?),
            View::ProductWithReviews(id) => {
                j(&product::Entity::load().filter_by_id(id).with(review::Entity).one(db).await?.map(|mut p| {
                    if let sea_orm::entity::prelude::HasMany::Loaded(v) = &mut p.reviews {
                        v.sort_by_key(|x| x.id);
                    }
                    p
                }))
            }
            View::ProductsOfType(t) => j(&product::Entity::find()
                .filter(product::Column::Type.eq(t))
                .order_by_asc(product::Column::Id)
                .all(db)
                .await?),
            View::CheapestInStock => j(&product::Entity::find()
                .filter(product::Column::InStock.eq(true))
                .order_by_asc(product::Column::PriceCents)
                .order_by_asc(product::Column::Id)
                .one(db)
                .await?),
            View::Product(id) => j(&product::Entity::find_by_id(id).one(db).await?),
        })
    }

    /// The dependencies of the view's value, from the crate's helpers.
    pub async fn deps<C: ConnectionTrait>(
        self,
        db: &C,
    ) -> Result<Vec<matroska::Dep>, Box<dyn std::error::Error + Send + Sync>> {
        use matroska_seaorm::{dependencies, list, not_found};
        use sea_orm::QueryOrder;
        let mut deps = Vec::new();
        match self {
            View::Article(id) => match article::Entity::find_by_id(id).one(db).await? {
                Some(row) => deps.extend(dependencies(&row, depth! {})?),
                None => deps.extend(not_found::<article::Entity>(id)),
            },
            View::Published(cat) => {
                deps.extend(
                    list::<article::Entity>()
                        .eq(article::Column::Published, true)
                        .eq(article::Column::CategoryId, cat)
                        .deps()?,
                );
                let rows = article::Entity::load()
                    .filter(article::Column::CategoryId.eq(cat))
                    .filter(article::Column::Published.eq(true))
                    .with(author::Entity)
                    .all(db)
                    .await?;
                deps.extend(dependencies(&rows, depth! { author: 1 })?);
            }
            View::CountPublished(cat) => {
                deps.extend(
                    list::<article::Entity>()
                        .eq(article::Column::Published, true)
                        .eq(article::Column::CategoryId, cat)
                        .deps()?,
                );
            }
            View::AllPublished => {
                deps.extend(list::<article::Entity>().eq(article::Column::Published, true).deps()?);
                let rows = article::Entity::find().filter(article::Column::Published.eq(true)).all(db).await?;
                deps.extend(dependencies(&rows, depth! {})?);
            }
            View::AllArticles => {
                deps.extend(matroska_seaorm::list_deps::<article::Entity>(matroska::Params::new())?);
                let rows = article::Entity::find().all(db).await?;
                deps.extend(dependencies(&rows, depth! {})?);
            }
            View::Cheapest(cat) => {
                deps.extend(list::<article::Entity>().eq(article::Column::CategoryId, cat).deps()?);
                let rows = sea_orm::QuerySelect::limit(
                    article::Entity::find()
                        .filter(article::Column::CategoryId.eq(cat))
                        .order_by_asc(article::Column::Price),
                    3,
                )
                .all(db)
                .await?;
                deps.extend(dependencies(&rows, depth! {})?);
            }
            View::AuthorWithArticles(id) => {
                match author::Entity::load().filter_by_id(id).with(article::Entity).one(db).await? {
                    Some(a) => deps.extend(dependencies(&a, depth! { articles: 1 })?),
                    None => deps.extend(not_found::<author::Entity>(id)),
                }
            }
            View::ArticleWithTags(id) => {
                match article::Entity::load().filter_by_id(id).with(tag::Entity).one(db).await? {
                    Some(a) => deps.extend(dependencies(&a, depth! { tags: 1 })?),
                    None => deps.extend(not_found::<article::Entity>(id)),
                }
            }
            View::ArticleWithComments(id) => {
                deps.extend(not_found::<article::Entity>(id));
                let pairs = article::Entity::find_by_id(id).find_with_related(comment::Entity).all(db).await?;
                deps.extend(dependencies(&pairs, depth! {})?);
            }
            View::ProductWithReviews(id) => {
                match product::Entity::load().filter_by_id(id).with(review::Entity).one(db).await? {
                    Some(p) => deps.extend(dependencies(&p, depth! { reviews: 1 })?),
                    None => deps.extend(not_found::<product::Entity>(id)),
                }
            }
            View::ProductsOfType(t) => {
                deps.extend(list::<product::Entity>().eq(product::Column::Type, t).deps()?);
                let rows = product::Entity::find().filter(product::Column::Type.eq(t)).all(db).await?;
                deps.extend(dependencies(&rows, depth! {})?);
            }
            View::CheapestInStock => {
                deps.extend(list::<product::Entity>().eq(product::Column::InStock, true).deps()?);
                if let Some(p) = product::Entity::find()
                    .filter(product::Column::InStock.eq(true))
                    .order_by_asc(product::Column::PriceCents)
                    .one(db)
                    .await?
                {
                    deps.extend(dependencies(&p, depth! {})?);
                }
            }
            View::Product(id) => match product::Entity::find_by_id(id).one(db).await? {
                Some(row) => deps.extend(dependencies(&row, depth! {})?),
                None => deps.extend(not_found::<product::Entity>(id)),
            },
        }
        Ok(deps)
    }

    /// Reads the view through the cache (loading it on a miss).
    pub async fn read(self, db: &CachedDatabase, cache: &Cache) -> Json {
        cache
            .get_or_load(&self.key(), TTL, |deps| async move {
                let value = self.query(db).await?;
                deps.extend(self.deps(db).await?);
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(value)
            })
            .await
            .expect("view")
    }
}

/// Every view over the seeded rows.
pub fn all_views() -> Vec<View> {
    let mut v = vec![View::AllPublished, View::AllArticles, View::CheapestInStock];
    for id in 1..=5 {
        v.push(View::Article(id));
        v.push(View::ArticleWithTags(id));
        v.push(View::ArticleWithComments(id));
    }
    for cat in 1..=3 {
        v.push(View::Published(cat));
        v.push(View::CountPublished(cat));
        v.push(View::Cheapest(cat));
    }
    for id in 1..=3 {
        v.push(View::AuthorWithArticles(id));
        v.push(View::ProductWithReviews(id));
        v.push(View::Product(id));
    }
    v.push(View::ProductsOfType("tool"));
    v.push(View::ProductsOfType("toy"));
    v
}

/// Reads every view through the cache (filling it).
pub async fn fill(db: &CachedDatabase, cache: &Cache) {
    for v in all_views() {
        v.read(db, cache).await;
    }
}

/// Which views are cached now.
pub async fn cached_views(cache: &Cache) -> Vec<View> {
    let mut out = Vec::new();
    for v in all_views() {
        if cache.has(&v.key()).await.expect("has") {
            out.push(v);
        }
    }
    out
}

/// The views that are cached and differ from the database: must be empty.
pub async fn stale_views<C: ConnectionTrait>(db: &C, cache: &Cache) -> Vec<(View, Json, Json)> {
    let mut out = Vec::new();
    for v in all_views() {
        if let Some(cached) = cache.get::<Json>(&v.key()).await.expect("get") {
            let fresh = v.query(db).await.expect("query");
            if cached != fresh {
                out.push((v, cached, fresh));
            }
        }
    }
    out
}

/// Fails the test with the stale views, if any.
pub async fn assert_fresh<C: ConnectionTrait>(db: &C, cache: &Cache) {
    let stale = stale_views(db, cache).await;
    assert!(stale.is_empty(), "stale views: {stale:#?}");
}

/// The views dropped since `before` (which were all cached).
pub async fn dropped(cache: &Cache) -> Vec<View> {
    let now = cached_views(cache).await;
    all_views().into_iter().filter(|v| !now.contains(v)).collect()
}

/// Seeds: authors 1 Ann, 2 Bob, 3 Cy; categories 1 rust, 2 python, 3 go;
/// articles 1 (rust, published, Ann, 30), 2 (rust, draft, Bob, 10),
/// 3 (python, published, Ann, 20); comments on 1; tags 1, 2 with article 1
/// tagged 1; products 1 (tool, in stock, 500), 2 (toy, in stock, 300),
/// 3 (tool, out of stock, 100); reviews of product 1.
pub async fn seed(db: &CachedDatabase) {
    use sea_orm::ActiveValue::Set;
    for name in ["Ann", "Bob", "Cy"] {
        author::ActiveModel { name: Set(name.into()), ..Default::default() }.insert(db).await.unwrap();
    }
    for name in ["rust", "python", "go"] {
        category::ActiveModel { name: Set(name.into()), ..Default::default() }.insert(db).await.unwrap();
    }
    for (title, author, cat, published, price) in
        [("ownership", 1, 1, true, 30), ("lifetimes", 2, 1, false, 10), ("asyncio", 1, 2, true, 20)]
    {
        article::ActiveModel {
            title: Set(title.into()),
            author_id: Set(author),
            category_id: Set(cat),
            published: Set(published),
            views: Set(0),
            price: Set(price),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
    }
    comment::ActiveModel { body: Set("nice".into()), article_id: Set(1), author_id: Set(2), ..Default::default() }
        .insert(db)
        .await
        .unwrap();
    for name in ["systems", "web"] {
        tag::ActiveModel { name: Set(name.into()), ..Default::default() }.insert(db).await.unwrap();
    }
    article_tag::ActiveModel { article_id: Set(1), tag_id: Set(1) }.insert(db).await.unwrap();
    for (name, t, stock, price) in
        [("saw", "tool", true, 500), ("ball", "toy", true, 300), ("drill", "tool", false, 100)]
    {
        product::ActiveModel {
            display_name: Set(name.into()),
            type_: Set(t.into()),
            in_stock: Set(stock),
            price_cents: Set(price),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
    }
    review::ActiveModel { product_id: Set(1), stars: Set(4), ..Default::default() }.insert(db).await.unwrap();
}

/// Seeds, fills the cache, and checks every view is cached and fresh.
pub async fn prepare(db: &CachedDatabase, cache: &Cache) {
    seed(db).await;
    fill(db, cache).await;
    assert_eq!(cached_views(cache).await.len(), all_views().len(), "every view cached");
    assert_fresh(db, cache).await;
}

/// A tiny helper to serialise any `Serialize` value through a trait object.
pub mod erased {
    pub trait Ser {
        fn ser(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn ser(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }
}

/// Views grouped by what they show, for readable expectations.
pub fn by_key(views: &[View]) -> BTreeMap<String, View> {
    views.iter().map(|v| (v.key(), *v)).collect()
}
