//! A blog on Diesel (diesel-async), cached with matroska: the Diesel twin of
//! `examples/blog.rs`.
//!
//! ```sh
//! cargo run --example blog_diesel                      # SQLite in memory, in-memory cache
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --example blog_diesel
//! cargo run --example blog_diesel -- --redis redis://127.0.0.1/   # Redis cache (or MATROSKA_REDIS_URL)
//! ```
//!
//! It seeds a few rows, reads through repository functions that cache with
//! `get_or_load` (and one manual `put`), writes with plain Diesel through a
//! `CachedConnection` (updates by key and by filter, an insert in a
//! transaction, raw SQL, a delete), and prints each read (hit or miss) and
//! each write (entries invalidated). After every write it compares what the
//! cache serves with the database, and exits non-zero on any difference.

use std::process::ExitCode;
use std::time::Duration;

use diesel::prelude::*;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use matroska::Cache;
use matroska_diesel::{depth, CacheModel, CachedConnection, CachedDatabase};
use serde::{Deserialize, Serialize};

const TTL: Duration = Duration::from_secs(300);

mod schema {
    diesel::table! {
        blog_authors (id) {
            id -> Integer,
            name -> Text,
        }
    }
    diesel::table! {
        blog_articles (id) {
            id -> Integer,
            title -> Text,
            author_id -> Integer,
            category_id -> Integer,
            published -> Bool,
            views -> Integer,
        }
    }
    diesel::joinable!(blog_articles -> blog_authors (author_id));
    diesel::allow_tables_to_appear_in_same_query!(blog_authors, blog_articles);
}

use schema::{blog_articles as articles, blog_authors as authors};

#[derive(Queryable, Selectable, Identifiable, CacheModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[diesel(table_name = authors)]
struct Author {
    id: i32,
    name: String,
}

/// Lists are cached per (published, category); `views` moves nothing.
#[derive(
    Queryable, Selectable, Identifiable, Associations, CacheModel, Serialize, Deserialize, Clone, Debug, PartialEq,
)]
#[diesel(table_name = articles, belongs_to(Author))]
#[matroska(scope(fields("published", "category_id")))]
struct Article {
    id: i32,
    title: String,
    author_id: i32,
    category_id: i32,
    published: bool,
    views: i32,
}

/// What the pages show: an article with its author's name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Item {
    id: i32,
    title: String,
    author: String,
    views: i32,
}

impl Item {
    fn of((a, au): &(Article, Author)) -> Item {
        Item { id: a.id, title: a.title.clone(), author: au.name.clone(), views: a.views }
    }
}

#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    #[error(transparent)]
    Connection(#[from] diesel::ConnectionError),
    #[error(transparent)]
    Cache(#[from] matroska::Error),
    #[error(transparent)]
    Diesel(#[from] matroska_diesel::Error),
}

/// One of the two wrapped connections: Diesel is typed per backend.
enum Db {
    Pg(CachedConnection<AsyncPgConnection>),
    Sqlite(CachedConnection<SyncConnectionWrapper<diesel::SqliteConnection>>),
}

/// Runs `$body` with `$c` the wrapped connection, whatever its backend.
macro_rules! on {
    ($db:expr, |$c:ident| $body:expr) => {
        match $db {
            Db::Pg($c) => $body,
            Db::Sqlite($c) => $body,
        }
    };
}

async fn load_list(db: &mut Db, category: i32, published: bool) -> Result<Vec<(Article, Author)>, AppError> {
    Ok(on!(db, |c| articles::table
        .inner_join(authors::table)
        .filter(articles::category_id.eq(category))
        .filter(articles::published.eq(published))
        .order(articles::id)
        .select((Article::as_select(), Author::as_select()))
        .load(c)
        .await)?)
}

async fn load_detail(db: &mut Db, id: i32) -> Result<Option<(Article, Author)>, AppError> {
    Ok(on!(db, |c| articles::table
        .inner_join(authors::table)
        .filter(articles::id.eq(id))
        .select((Article::as_select(), Author::as_select()))
        .first(c)
        .await
        .optional())?)
}

/// The repository: every read goes through the cache.
async fn list(db: &mut Db, cache: &Cache, category: i32, published: bool) -> Result<Vec<Item>, AppError> {
    let key = format!("articles:cat={category}:published={published}");
    cache
        .get_or_load(&key, TTL, |deps| async move {
            let rows = load_list(db, category, published).await?;
            deps.extend(
                matroska_diesel::list::<Article>()
                    .eq(articles::published, published)
                    .eq(articles::category_id, category)
                    .deps()?,
            );
            deps.extend(matroska_diesel::dependencies(&rows, depth! { blog_authors: 1 })?);
            Ok::<_, AppError>(rows.iter().map(Item::of).collect())
        })
        .await
}

async fn detail(db: &mut Db, cache: &Cache, id: i32) -> Result<Option<Item>, AppError> {
    cache
        .get_or_load(&format!("article:{id}"), TTL, |deps| async move {
            let row = load_detail(db, id).await?;
            match &row {
                Some(pair) => deps.extend(matroska_diesel::dependencies(pair, depth! {})?),
                None => deps.extend(matroska_diesel::not_found::<Article>(id)),
            }
            Ok::<_, AppError>(row.as_ref().map(Item::of))
        })
        .await
}

/// An author's name, cached by hand with `get` and `put`.
async fn author(db: &mut Db, cache: &Cache, id: i32) -> Result<Option<String>, AppError> {
    let key = format!("author:{id}");
    if let Some(name) = cache.get::<Option<String>>(&key).await? {
        return Ok(name);
    }
    let name: Option<String> = on!(db, |c| authors::table.find(id).select(authors::name).first(c).await.optional())?;
    cache.put(&key, &name, [matroska_diesel::pk_dep_of::<Author>(id)], TTL).await?;
    Ok(name)
}

/// Prints reads and writes, and counts mismatches between cache and database.
struct Trace {
    cache: Cache,
    mismatches: u32,
}

impl Trace {
    fn hits(&self) -> u64 {
        self.cache.stats().hits
    }

    fn read<T: std::fmt::Debug>(&self, what: &str, hits_before: u64, value: &T) {
        let mark = if self.hits() > hits_before { "hit " } else { "miss" };
        println!("  read  {mark}  {what:<28} {value:?}");
    }

    fn check<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, cached: &T, fresh: &T) {
        if cached != fresh {
            self.mismatches += 1;
            println!("  STALE {what}: cache {cached:?} != database {fresh:?}");
        }
    }
}

async fn read_all(db: &mut Db, cache: &Cache, trace: &mut Trace, ids: &[i32]) -> Result<(), AppError> {
    for (cat, name, published) in [(1, "rust", true), (1, "rust", false), (2, "go", true)] {
        let h = trace.hits();
        let items = list(db, cache, cat, published).await?;
        let what = format!("list {name} {}", if published { "published" } else { "drafts" });
        trace.read(&what, h, &items.iter().map(|i| i.title.as_str()).collect::<Vec<_>>());
        let fresh: Vec<Item> = load_list(db, cat, published).await?.iter().map(Item::of).collect();
        trace.check(&what, &items, &fresh);
    }
    for &id in ids {
        let h = trace.hits();
        let item = detail(db, cache, id).await?;
        trace.read(&format!("article {id}"), h, &item.as_ref().map(|i| (&i.title, i.views)));
        let fresh = load_detail(db, id).await?.as_ref().map(Item::of);
        trace.check(&format!("article {id}"), &item, &fresh);
    }
    let h = trace.hits();
    let name = author(db, cache, 1).await?;
    trace.read("author 1 (manual put)", h, &name);
    let fresh: Option<String> = on!(db, |c| authors::table.find(1).select(authors::name).first(c).await.optional())?;
    trace.check("author 1", &name, &fresh);
    Ok(())
}

fn write(cache: &Cache, what: &str, before: u64) {
    let dropped = cache.stats().entries_invalidated - before;
    println!("write {what}  -> {dropped} entries invalidated");
}

const PG_DDL: &str = "DROP TABLE IF EXISTS blog_articles; DROP TABLE IF EXISTS blog_authors;
CREATE TABLE blog_authors (id SERIAL PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE blog_articles (id SERIAL PRIMARY KEY, title TEXT NOT NULL, author_id INTEGER NOT NULL,
    category_id INTEGER NOT NULL, published BOOLEAN NOT NULL, views INTEGER NOT NULL);";
const SQLITE_DDL: &str = "
CREATE TABLE blog_authors (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE blog_articles (id INTEGER PRIMARY KEY, title TEXT NOT NULL, author_id INTEGER NOT NULL,
    category_id INTEGER NOT NULL, published BOOLEAN NOT NULL, views INTEGER NOT NULL);";

async fn run() -> Result<u32, AppError> {
    let mut redis = std::env::var("MATROSKA_REDIS_URL").ok().filter(|s| !s.is_empty());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--redis" => redis = args.next(),
            other => {
                eprintln!("unknown argument {other:?}; usage: blog_diesel [--redis URL] (DATABASE_URL for PostgreSQL)");
                std::process::exit(2);
            }
        }
    }
    let cache = match &redis {
        Some(url) => {
            let backend = matroska::RedisBackend::builder(url.clone())
                .build()
                .await
                .map_err(|e| AppError::Cache(matroska::Error::Backend(e)))?;
            println!("cache: Redis at {url}");
            Cache::builder()
                .backend(backend)
                .prefix(format!("blog-diesel-{}", std::process::id()))
                .build()
                .map_err(|e| AppError::Cache(e.into()))?
        }
        None => {
            println!("cache: in memory");
            Cache::new(matroska::MemoryBackend::new())
        }
    };
    let cached = CachedDatabase::new(cache.clone());
    let url = std::env::var("DATABASE_URL").ok().filter(|u| u.starts_with("postgres"));
    // the schema on the plain connection; then every access goes through
    // the cached one
    let mut db = match &url {
        Some(url) => {
            println!("database: PostgreSQL");
            let mut plain = AsyncPgConnection::establish(url).await?;
            plain.batch_execute(PG_DDL).await?;
            Db::Pg(cached.wrap(plain))
        }
        None => {
            println!("database: SQLite in memory");
            let mut plain = SyncConnectionWrapper::<diesel::SqliteConnection>::establish(":memory:").await?;
            plain.batch_execute(SQLITE_DDL).await?;
            Db::Sqlite(cached.wrap(plain))
        }
    };

    println!("== seed");
    on!(&mut db, |c| {
        for name in ["Ann", "Bob"] {
            diesel::insert_into(authors::table).values(authors::name.eq(name)).execute(c).await?;
        }
        for (title, who, cat, published) in
            [("Ownership", 1, 1, true), ("Lifetimes", 2, 1, false), ("Goroutines", 1, 2, true)]
        {
            diesel::insert_into(articles::table)
                .values((
                    articles::title.eq(title),
                    articles::author_id.eq(who),
                    articles::category_id.eq(cat),
                    articles::published.eq(published),
                    articles::views.eq(0),
                ))
                .execute(c)
                .await?;
        }
    });
    let mut ids = vec![1, 2, 3];
    let mut trace = Trace { cache: cache.clone(), mismatches: 0 };
    println!("== first reads (misses), then the same reads (hits)");
    read_all(&mut db, &cache, &mut trace, &ids).await?;
    read_all(&mut db, &cache, &mut trace, &ids).await?;

    let n = cache.stats().entries_invalidated;
    on!(&mut db, |c| diesel::update(articles::table.find(2)).set(articles::published.eq(true)).execute(c).await)?;
    write(&cache, "publish 'Lifetimes' (watched column: leaves drafts, enters published)", n);
    read_all(&mut db, &cache, &mut trace, &ids).await?;

    let n = cache.stats().entries_invalidated;
    on!(&mut db, |c| diesel::update(articles::table.find(1)).set(articles::views.eq(42)).execute(c).await)?;
    write(&cache, "count a view of 'Ownership' (unwatched column: key only)", n);
    read_all(&mut db, &cache, &mut trace, &ids).await?;

    let n = cache.stats().entries_invalidated;
    on!(&mut db, |c| diesel::update(articles::table.find(3)).set(articles::category_id.eq(1)).execute(c).await)?;
    write(&cache, "move 'Goroutines' from go to rust (old and new lists)", n);
    read_all(&mut db, &cache, &mut trace, &ids).await?;

    let n = cache.stats().entries_invalidated;
    on!(&mut db, |c| diesel::update(authors::table.find(1)).set(authors::name.eq("Annabel")).execute(c).await)?;
    write(&cache, "rename author Ann (everything embedding her)", n);
    read_all(&mut db, &cache, &mut trace, &ids).await?;

    let n = cache.stats().entries_invalidated;
    let new_id: i32 = on!(&mut db, |c| c
        .transaction::<_, diesel::result::Error, _>(async |t| {
            diesel::insert_into(articles::table)
                .values((
                    articles::title.eq("Channels"),
                    articles::author_id.eq(2),
                    articles::category_id.eq(2),
                    articles::published.eq(true),
                    articles::views.eq(0),
                ))
                .execute(t)
                .await?;
            articles::table.select(diesel::dsl::max(articles::id)).first::<Option<i32>>(t).await.map(|m| m.unwrap_or(0))
        })
        .await)?;
    ids.push(new_id);
    write(&cache, "insert 'Channels' into go, in a transaction (invalidated after the commit)", n);
    read_all(&mut db, &cache, &mut trace, &ids).await?;

    let n = cache.stats().entries_invalidated;
    let count = on!(&mut db, |c| diesel::update(articles::table.filter(articles::category_id.eq(1)))
        .set(articles::published.eq(false))
        .execute(c)
        .await)?;
    write(&cache, &format!("update with a filter: unpublish all {count} rust articles"), n);
    read_all(&mut db, &cache, &mut trace, &ids).await?;

    let n = cache.stats().entries_invalidated;
    on!(&mut db, |c| diesel::sql_query("UPDATE blog_articles SET views = views + 1 WHERE id = 1").execute(c).await)?;
    write(&cache, "raw SQL: count a view of 'Ownership'", n);
    read_all(&mut db, &cache, &mut trace, &ids).await?;

    let n = cache.stats().entries_invalidated;
    on!(&mut db, |c| diesel::delete(articles::table.find(new_id)).execute(c).await)?;
    write(&cache, "delete 'Channels'", n);
    read_all(&mut db, &cache, &mut trace, &ids).await?;

    let s = cache.stats();
    println!(
        "== counters: hits {} misses {} loads {} puts {} refused puts {} invalidations {} entries invalidated {} (hit rate {:.0}%)",
        s.hits,
        s.misses,
        s.loads,
        s.puts,
        s.refused_puts,
        s.invalidations,
        s.entries_invalidated,
        s.hit_rate() * 100.0
    );
    if let Db::Pg(c) = &mut db {
        c.inner().batch_execute("DROP TABLE IF EXISTS blog_articles; DROP TABLE IF EXISTS blog_authors").await?;
    }
    Ok(trace.mismatches)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(0) => {
            println!("every read after a write matched the database");
            ExitCode::SUCCESS
        }
        Ok(n) => {
            eprintln!("{n} reads differed from the database");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
