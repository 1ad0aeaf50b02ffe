//! The schema, per-test databases and cached views shared by the
//! integration tests.
//!
//! Tests run on SQLite (a file per test, so that several connections see
//! one database) by default; with `DATABASE_URL` set to a PostgreSQL server,
//! each test gets a database of its own there, dropped at the end:
//!
//! ```text
//! cargo test -p matroska-diesel
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-diesel
//! ```
//!
//! Diesel is typed per backend, so a test body runs on a [`Db`], an enum of
//! the two wrapped connections, through [`on!`]: the body is compiled once
//! per backend.

#![allow(dead_code, missing_docs, unreachable_pub)]

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use matroska::{Cache, MemoryBackend};
use matroska_diesel::{depth, CacheModel, CachedConnection, CachedDatabase};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub const TTL: Duration = Duration::from_secs(300);

pub type SqliteConn = SyncConnectionWrapper<diesel::SqliteConnection>;

pub mod schema {
    diesel::table! {
        authors (id) {
            id -> Integer,
            name -> Text,
        }
    }
    diesel::table! {
        categories (id) {
            id -> Integer,
            name -> Text,
        }
    }
    diesel::table! {
        articles (id) {
            id -> Integer,
            title -> Text,
            author_id -> Integer,
            category_id -> Integer,
            published -> Bool,
            views -> Integer,
            price -> Integer,
        }
    }
    diesel::table! {
        comments (id) {
            id -> Integer,
            body -> Text,
            article_id -> Integer,
            author_id -> Integer,
        }
    }
    diesel::table! {
        tags (id) {
            id -> Integer,
            name -> Text,
        }
    }
    diesel::table! {
        article_tags (article_id, tag_id) {
            article_id -> Integer,
            tag_id -> Integer,
        }
    }
    diesel::table! {
        audit (id) {
            id -> Integer,
            what -> Text,
        }
    }
    diesel::joinable!(articles -> authors (author_id));
    diesel::joinable!(articles -> categories (category_id));
    diesel::joinable!(comments -> articles (article_id));
    diesel::joinable!(article_tags -> articles (article_id));
    diesel::joinable!(article_tags -> tags (tag_id));
    diesel::allow_tables_to_appear_in_same_query!(authors, categories, articles, comments, tags, article_tags, audit);
}

use schema::*;

#[derive(Queryable, Selectable, Identifiable, CacheModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[diesel(table_name = authors)]
pub struct Author {
    pub id: i32,
    pub name: String,
}

#[derive(Queryable, Selectable, Identifiable, CacheModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[diesel(table_name = categories)]
pub struct Category {
    pub id: i32,
    pub name: String,
}

#[derive(
    Queryable,
    Selectable,
    Identifiable,
    Associations,
    AsChangeset,
    CacheModel,
    Serialize,
    Deserialize,
    Clone,
    Debug,
    PartialEq,
)]
#[diesel(table_name = articles)]
#[diesel(belongs_to(Author))]
#[diesel(belongs_to(Category))]
#[matroska(scope(fields("published", "category_id")))]
#[matroska(scope(fields("published")))]
#[matroska(scope(fields("category_id"), watch("price")))]
pub struct Article {
    pub id: i32,
    pub title: String,
    pub author_id: i32,
    pub category_id: i32,
    pub published: bool,
    pub views: i32,
    pub price: i32,
}

#[derive(Insertable)]
#[diesel(table_name = articles)]
pub struct NewArticle<'a> {
    pub title: &'a str,
    pub author_id: i32,
    pub category_id: i32,
    pub published: bool,
    pub views: i32,
    pub price: i32,
}

#[derive(
    Queryable, Selectable, Identifiable, Associations, CacheModel, Serialize, Deserialize, Clone, Debug, PartialEq,
)]
#[diesel(table_name = comments)]
#[diesel(belongs_to(Article))]
pub struct Comment {
    pub id: i32,
    pub body: String,
    pub article_id: i32,
    pub author_id: i32,
}

#[derive(Queryable, Selectable, Identifiable, CacheModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[diesel(table_name = tags)]
pub struct Tag {
    pub id: i32,
    pub name: String,
}

#[derive(
    Queryable,
    Selectable,
    Identifiable,
    Associations,
    Insertable,
    CacheModel,
    Serialize,
    Deserialize,
    Clone,
    Debug,
    PartialEq,
)]
#[diesel(table_name = article_tags)]
#[diesel(primary_key(article_id, tag_id))]
#[diesel(belongs_to(Article))]
#[diesel(belongs_to(Tag))]
pub struct ArticleTag {
    pub article_id: i32,
    pub tag_id: i32,
}

/// One of the two wrapped connections.
#[allow(clippy::large_enum_variant)]
pub enum Db {
    Pg(CachedConnection<AsyncPgConnection>),
    Sqlite(CachedConnection<SqliteConn>),
}

/// Runs `$body` with `$c` the wrapped connection of `$db`, whatever its
/// backend (the body is compiled once per backend).
#[macro_export]
macro_rules! on {
    ($db:expr, |$c:ident| $body:expr) => {
        match $db {
            $crate::common::Db::Pg($c) => $body,
            $crate::common::Db::Sqlite($c) => $body,
        }
    };
}

impl Db {
    pub fn is_pg(&self) -> bool {
        matches!(self, Db::Pg(_))
    }
}

/// A database of one test: an SQLite file, or a fresh database on the
/// server of `DATABASE_URL`.
pub struct TestDb {
    pub url: String,
    admin: Option<(String, String)>,
    file: Option<std::path::PathBuf>,
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

const SQLITE_DDL: &str = "
CREATE TABLE authors (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE categories (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE articles (id INTEGER PRIMARY KEY, title TEXT NOT NULL, author_id INTEGER NOT NULL, category_id INTEGER NOT NULL,
    published BOOLEAN NOT NULL, views INTEGER NOT NULL, price INTEGER NOT NULL);
CREATE TABLE comments (id INTEGER PRIMARY KEY, body TEXT NOT NULL, article_id INTEGER NOT NULL, author_id INTEGER NOT NULL);
CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE article_tags (article_id INTEGER NOT NULL, tag_id INTEGER NOT NULL, PRIMARY KEY (article_id, tag_id));
CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT NOT NULL);
";

const PG_DDL: &str = "
CREATE TABLE authors (id SERIAL PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE categories (id SERIAL PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE articles (id SERIAL PRIMARY KEY, title TEXT NOT NULL, author_id INTEGER NOT NULL, category_id INTEGER NOT NULL,
    published BOOLEAN NOT NULL, views INTEGER NOT NULL, price INTEGER NOT NULL);
CREATE TABLE comments (id SERIAL PRIMARY KEY, body TEXT NOT NULL, article_id INTEGER NOT NULL, author_id INTEGER NOT NULL);
CREATE TABLE tags (id SERIAL PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE article_tags (article_id INTEGER NOT NULL, tag_id INTEGER NOT NULL, PRIMARY KEY (article_id, tag_id));
CREATE TABLE audit (id SERIAL PRIMARY KEY, what TEXT NOT NULL);
";

impl TestDb {
    /// A database with the schema, for the test `name` (unique per binary).
    pub async fn new(name: &str) -> TestDb {
        let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty() && u.starts_with("postgres"));
        match url {
            Some(admin_url) => {
                let dbname = format!("mdiesel_{}_{}", env!("CARGO_CRATE_NAME"), name);
                let mut admin = AsyncPgConnection::establish(&admin_url).await.expect("connect to DATABASE_URL");
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{dbname}\" WITH (FORCE)")).await.expect("drop");
                admin.batch_execute(&format!("CREATE DATABASE \"{dbname}\"")).await.expect("create test database");
                let url = with_db_name(&admin_url, &dbname);
                let mut c = AsyncPgConnection::establish(&url).await.expect("connect to the test database");
                c.batch_execute(PG_DDL).await.expect("schema");
                TestDb { url, admin: Some((admin_url, dbname)), file: None }
            }
            None => {
                let path = std::env::temp_dir().join(format!(
                    "mdiesel-{}-{}-{}.db",
                    env!("CARGO_CRATE_NAME"),
                    name,
                    std::process::id()
                ));
                let _ = std::fs::remove_file(&path);
                let url = path.display().to_string();
                let mut c = sqlite(&url).await;
                c.batch_execute(SQLITE_DDL).await.expect("schema");
                TestDb { url, admin: None, file: Some(path) }
            }
        }
    }

    pub fn is_pg(&self) -> bool {
        self.admin.is_some()
    }

    /// A plain (unwrapped) connection, as another program would use.
    pub async fn plain(&self) -> Db {
        // wrapped in a CachedDatabase nobody reads from, to share `on!`
        let unused = CachedDatabase::new(Cache::new(MemoryBackend::new()));
        self.connect(&unused).await
    }

    /// A connection wrapped by `cached`.
    pub async fn connect(&self, cached: &CachedDatabase) -> Db {
        if self.is_pg() {
            Db::Pg(cached.wrap(AsyncPgConnection::establish(&self.url).await.expect("connect")))
        } else {
            Db::Sqlite(cached.wrap(sqlite(&self.url).await))
        }
    }

    /// A wrapped connection over this database and a fresh memory cache.
    pub async fn cached(&self) -> (Db, Cache, CachedDatabase) {
        let cache = Cache::builder().backend(MemoryBackend::new()).build().unwrap();
        let cached = CachedDatabase::new(cache.clone());
        (self.connect(&cached).await, cache, cached)
    }

    pub async fn drop_db(self) {
        if let Some((admin_url, name)) = self.admin {
            if let Ok(mut admin) = AsyncPgConnection::establish(&admin_url).await {
                let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
            }
        }
        if let Some(f) = self.file {
            let _ = std::fs::remove_file(&f);
            let _ = std::fs::remove_file(format!("{}-wal", f.display()));
            let _ = std::fs::remove_file(format!("{}-shm", f.display()));
        }
    }
}

/// An SQLite connection in WAL mode that waits for locks and enforces
/// foreign keys (as an application with `ON DELETE` actions sets it).
pub async fn sqlite(path: &str) -> SqliteConn {
    let mut c = SqliteConn::establish(path).await.expect("open SQLite");
    c.batch_execute("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;")
        .await
        .expect("pragmas");
    c
}

// ---------------------------------------------------------------------------
// Views: what an application caches, each loaded through `get_or_load` with
// the dependencies the crate's helpers give, and checked against a fresh
// query.

/// A cached view of the test schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum View {
    /// An article by key (a row, or "not found").
    Article(i32),
    /// Published articles of a category, with their authors (a join).
    Published(i32),
    /// How many published articles a category has (the condition only).
    CountPublished(i32),
    /// Every published article.
    AllPublished,
    /// Every article (the list of all rows).
    AllArticles,
    /// The three cheapest articles of a category (top-N by price).
    Cheapest(i32),
    /// An author with their articles (belonging_to + grouped_by).
    AuthorWithArticles(i32),
    /// An article with its tags (many-to-many through article_tags).
    ArticleWithTags(i32),
    /// An article with its comments (belonging_to).
    ArticleWithComments(i32),
    /// A tag link by its composite key.
    Link(i32, i32),
}

impl View {
    pub fn key(self) -> String {
        format!("{self:?}")
    }

    /// The view's value and dependencies, as the database gives them now.
    pub async fn load(
        self,
        db: &mut Db,
    ) -> Result<(Json, Vec<matroska::Dep>), Box<dyn std::error::Error + Send + Sync>> {
        use matroska_diesel::{dependencies, list, list_deps, not_found};
        let j = |v: &dyn erased::Ser| v.ser();
        let mut deps = Vec::new();
        let value = match self {
            View::Article(id) => {
                let row: Option<Article> = on!(db, |c| articles::table.find(id).first(c).await.optional())?;
                match &row {
                    Some(a) => deps.extend(dependencies(a, depth! {})?),
                    None => deps.extend(not_found::<Article>(id)),
                }
                j(&row)
            }
            View::Published(cat) => {
                let rows: Vec<(Article, Author)> = on!(db, |c| articles::table
                    .inner_join(authors::table)
                    .filter(articles::category_id.eq(cat))
                    .filter(articles::published.eq(true))
                    .order(articles::id)
                    .select((Article::as_select(), Author::as_select()))
                    .load(c)
                    .await)?;
                deps.extend(list::<Article>().eq(articles::published, true).eq(articles::category_id, cat).deps()?);
                deps.extend(dependencies(&rows, depth! { authors: 1 })?);
                j(&rows)
            }
            View::CountPublished(cat) => {
                let n: i64 = on!(db, |c| articles::table
                    .filter(articles::category_id.eq(cat))
                    .filter(articles::published.eq(true))
                    .count()
                    .get_result(c)
                    .await)?;
                deps.extend(list::<Article>().eq(articles::published, true).eq(articles::category_id, cat).deps()?);
                j(&n)
            }
            View::AllPublished => {
                let rows: Vec<Article> = on!(db, |c| articles::table
                    .filter(articles::published.eq(true))
                    .order(articles::id)
                    .select(Article::as_select())
                    .load(c)
                    .await)?;
                deps.extend(list::<Article>().eq(articles::published, true).deps()?);
                deps.extend(dependencies(&rows, depth! {})?);
                j(&rows)
            }
            View::AllArticles => {
                let rows: Vec<Article> =
                    on!(db, |c| articles::table.order(articles::id).select(Article::as_select()).load(c).await)?;
                deps.extend(list_deps::<Article>(matroska::Params::new())?);
                deps.extend(dependencies(&rows, depth! {})?);
                j(&rows)
            }
            View::Cheapest(cat) => {
                let rows: Vec<Article> = on!(db, |c| articles::table
                    .filter(articles::category_id.eq(cat))
                    .order((articles::price, articles::id))
                    .limit(3)
                    .select(Article::as_select())
                    .load(c)
                    .await)?;
                deps.extend(list::<Article>().eq(articles::category_id, cat).deps()?);
                deps.extend(dependencies(&rows, depth! {})?);
                j(&rows)
            }
            View::AuthorWithArticles(id) => {
                let authors_: Vec<Author> =
                    on!(db, |c| authors::table.filter(authors::id.eq(id)).select(Author::as_select()).load(c).await)?;
                let arts: Vec<Article> = on!(db, |c| Article::belonging_to(&authors_)
                    .order(articles::id)
                    .select(Article::as_select())
                    .load(c)
                    .await)?;
                let grouped: Vec<(Author, Vec<Article>)> =
                    authors_.clone().into_iter().zip(arts.grouped_by(&authors_)).collect();
                if grouped.is_empty() {
                    deps.extend(not_found::<Author>(id));
                }
                deps.extend(dependencies(&grouped, depth! {})?);
                j(&grouped)
            }
            View::ArticleWithTags(id) => {
                let art: Option<Article> = on!(db, |c| articles::table.find(id).first(c).await.optional())?;
                let tags_: Vec<(ArticleTag, Tag)> = on!(db, |c| article_tags::table
                    .inner_join(tags::table)
                    .filter(article_tags::article_id.eq(id))
                    .order(tags::id)
                    .select((ArticleTag::as_select(), Tag::as_select()))
                    .load(c)
                    .await)?;
                match &art {
                    Some(a) => {
                        let links: Vec<ArticleTag> = tags_.iter().map(|(l, _)| l.clone()).collect();
                        deps.extend(dependencies(&(a.clone(), links), depth! {})?);
                        deps.extend(dependencies(&tags_, depth! {})?);
                    }
                    None => deps.extend(not_found::<Article>(id)),
                }
                j(&(art, tags_.into_iter().map(|(_, t)| t).collect::<Vec<_>>()))
            }
            View::ArticleWithComments(id) => {
                let art: Option<Article> = on!(db, |c| articles::table.find(id).first(c).await.optional())?;
                match art {
                    Some(a) => {
                        let cs: Vec<Comment> = on!(db, |c| Comment::belonging_to(&a)
                            .order(comments::id)
                            .select(Comment::as_select())
                            .load(c)
                            .await)?;
                        let pair = (a, cs);
                        deps.extend(dependencies(&pair, depth! {})?);
                        j(&Some(pair))
                    }
                    None => {
                        deps.extend(not_found::<Article>(id));
                        j(&None::<(Article, Vec<Comment>)>)
                    }
                }
            }
            View::Link(a, t) => {
                let row: Option<ArticleTag> = on!(db, |c| article_tags::table.find((a, t)).first(c).await.optional())?;
                match &row {
                    Some(l) => deps.extend(dependencies(l, depth! {})?),
                    None => deps.extend(not_found::<ArticleTag>((a, t))),
                }
                j(&row)
            }
        };
        Ok((value, deps))
    }

    /// The view as the database gives it now.
    pub async fn query(self, db: &mut Db) -> Json {
        self.load(db).await.expect("view").0
    }

    /// Reads the view through the cache (loading it on a miss).
    pub async fn read(self, db: &mut Db, cache: &Cache) -> Json {
        cache
            .get_or_load(&self.key(), TTL, |deps| async move {
                let (value, d) = self.load(db).await?;
                deps.extend(d);
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(value)
            })
            .await
            .expect("view")
    }
}

/// Every view over the seeded rows.
pub fn all_views() -> Vec<View> {
    let mut v = vec![View::AllPublished, View::AllArticles, View::Link(1, 1), View::Link(3, 2)];
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
    }
    v
}

/// Reads every view through the cache (filling it).
pub async fn fill(db: &mut Db, cache: &Cache) {
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
pub async fn stale_views(db: &mut Db, cache: &Cache) -> Vec<(View, Json, Json)> {
    let mut out = Vec::new();
    for v in all_views() {
        if let Some(cached) = cache.get::<Json>(&v.key()).await.expect("get") {
            let fresh = v.query(db).await;
            if cached != fresh {
                out.push((v, cached, fresh));
            }
        }
    }
    out
}

/// Fails the test with the stale views, if any.
pub async fn assert_fresh(db: &mut Db, cache: &Cache) {
    let stale = stale_views(db, cache).await;
    assert!(stale.is_empty(), "stale views: {stale:#?}");
}

/// The views no longer cached.
pub async fn dropped(cache: &Cache) -> Vec<View> {
    let now = cached_views(cache).await;
    all_views().into_iter().filter(|v| !now.contains(v)).collect()
}

/// Seeds: authors 1 Ann, 2 Bob, 3 Cy; categories 1 rust, 2 python, 3 go;
/// articles 1 (rust, published, Ann, 30), 2 (rust, draft, Bob, 10),
/// 3 (python, published, Ann, 20); a comment on 1; tags 1, 2 with article 1
/// tagged 1.
pub async fn seed(db: &mut Db) {
    on!(db, |c| {
        for name in ["Ann", "Bob", "Cy"] {
            diesel::insert_into(authors::table).values(authors::name.eq(name)).execute(c).await.unwrap();
        }
        for name in ["rust", "python", "go"] {
            diesel::insert_into(categories::table).values(categories::name.eq(name)).execute(c).await.unwrap();
        }
        for (title, author, cat, published, price) in
            [("ownership", 1, 1, true, 30), ("lifetimes", 2, 1, false, 10), ("asyncio", 1, 2, true, 20)]
        {
            diesel::insert_into(articles::table)
                .values(NewArticle { title, author_id: author, category_id: cat, published, views: 0, price })
                .execute(c)
                .await
                .unwrap();
        }
        diesel::insert_into(comments::table)
            .values((comments::body.eq("nice"), comments::article_id.eq(1), comments::author_id.eq(2)))
            .execute(c)
            .await
            .unwrap();
        for name in ["systems", "web"] {
            diesel::insert_into(tags::table).values(tags::name.eq(name)).execute(c).await.unwrap();
        }
        diesel::insert_into(article_tags::table)
            .values(ArticleTag { article_id: 1, tag_id: 1 })
            .execute(c)
            .await
            .unwrap();
    });
}

/// Seeds, fills the cache, and checks every view is cached and fresh.
pub async fn prepare(db: &mut Db, cache: &Cache) {
    seed(db).await;
    fill(db, cache).await;
    assert_eq!(cached_views(cache).await.len(), all_views().len(), "every view cached");
    assert_fresh(db, cache).await;
}

/// Runs a test body on a fresh database and wrapped connection.
#[macro_export]
macro_rules! db_test {
    ($name:ident, |$db:ident, $cache:ident| $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let tdb = $crate::common::TestDb::new(stringify!($name)).await;
            {
                let (mut __db, __cache, _cached) = tdb.cached().await;
                let $db = &mut __db;
                let $cache = &__cache;
                $body
            }
            tdb.drop_db().await;
        }
    };
}

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

/// The table name the derive found.
pub fn table_of<M: CacheModel>() -> &'static str {
    M::table_name()
}
