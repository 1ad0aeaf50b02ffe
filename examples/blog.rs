//! A blog on SeaORM, cached with matroska.
//!
//! ```sh
//! cargo run --example blog                                   # SQLite in memory, in-memory cache
//! cargo run --example blog -- --redis redis://127.0.0.1/     # Redis cache (or MATROSKA_REDIS_URL)
//! cargo run --example blog -- --database-url postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! It seeds a few rows, reads through repository functions that cache with
//! `get_or_load` (and one manual `put`), writes with plain SeaORM through a
//! `CachedDatabase` (ActiveModels, a transaction, `update_many`,
//! `delete_by_id`, raw SQL), and prints each read (hit or miss) and each write
//! (entries invalidated). After every write it compares what the cache serves
//! with the database, and exits non-zero on any difference.

use std::process::ExitCode;
use std::time::Duration;

use matroska::Cache;
use matroska_seaorm::{depth, CachedDatabase};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ConnectOptions, Database, EntityLoaderTrait, QueryOrder, TransactionTrait};
use sea_orm_migration::MigratorTrait;
use serde::{Deserialize, Serialize};

const TTL: Duration = Duration::from_secs(300);

mod author {
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
    }
}

mod category {
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

mod article {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    /// Lists are cached per (published, category); `views` moves nothing.
    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "article")]
    #[matroska(scope(fields("published", "category_id")))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub title: String,
        pub author_id: i32,
        pub category_id: i32,
        pub published: bool,
        pub views: i32,
        #[sea_orm(belongs_to, from = "author_id", to = "id")]
        pub author: BelongsTo<super::author::Entity>,
        #[sea_orm(belongs_to, from = "category_id", to = "id")]
        pub category: BelongsTo<super::category::Entity>,
    }
}

mod migration {
    use sea_orm::Schema;
    use sea_orm_migration::prelude::*;

    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(CreateBlog)]
        }
        fn migration_table_name() -> DynIden {
            Alias::new("matroska_blog_migrations").into_iden()
        }
    }

    pub struct CreateBlog;

    impl MigrationName for CreateBlog {
        fn name(&self) -> &str {
            "m0001_create_blog"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for CreateBlog {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let schema = Schema::new(manager.get_database_backend());
            manager.create_table(schema.create_table_from_entity(super::author::Entity)).await?;
            manager.create_table(schema.create_table_from_entity(super::category::Entity)).await?;
            manager.create_table(schema.create_table_from_entity(super::article::Entity)).await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for t in ["article", "category", "author"] {
                manager.drop_table(Table::drop().table(Alias::new(t)).if_exists().to_owned()).await?;
            }
            Ok(())
        }
    }
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
    fn from_ex(a: &article::ModelEx) -> Item {
        Item {
            id: a.id,
            title: a.title.clone(),
            author: a.author.as_ref().map(|au| au.name.clone()).unwrap_or_default(),
            views: a.views,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Cache(#[from] matroska::Error),
    #[error(transparent)]
    Seaorm(#[from] matroska_seaorm::Error),
    #[error("{0}")]
    Usage(String),
}

/// The repository: every read goes through the cache.
struct Repo {
    db: CachedDatabase,
    cache: Cache,
}

impl Repo {
    /// Published (or draft) articles of a category, with their authors.
    async fn list(&self, category: i32, published: bool) -> Result<Vec<Item>, AppError> {
        let key = format!("articles:cat={category}:published={published}");
        let db = self.db.clone();
        self.cache
            .get_or_load(&key, TTL, |deps| async move {
                let rows = load_list(&db, category, published).await?;
                deps.extend(
                    matroska_seaorm::list::<article::Entity>()
                        .eq(article::Column::Published, published)
                        .eq(article::Column::CategoryId, category)
                        .deps()?,
                );
                deps.extend(matroska_seaorm::dependencies(&rows, depth!(article::ModelEx => { author: 1 }))?);
                Ok::<_, AppError>(rows.iter().map(Item::from_ex).collect())
            })
            .await
    }

    /// One article with its author.
    async fn detail(&self, id: i32) -> Result<Option<Item>, AppError> {
        let db = self.db.clone();
        self.cache
            .get_or_load(&format!("article:{id}"), TTL, |deps| async move {
                let row = load_detail(&db, id).await?;
                match &row {
                    Some(ex) => deps.extend(matroska_seaorm::dependencies(ex, depth! { author: 1 })?),
                    None => deps.extend(matroska_seaorm::not_found::<article::Entity>(id)),
                }
                Ok::<_, AppError>(row.as_ref().map(Item::from_ex))
            })
            .await
    }

    /// An author's name, cached by hand with `get` and `put`.
    async fn author(&self, id: i32) -> Result<Option<String>, AppError> {
        let key = format!("author:{id}");
        if let Some(name) = self.cache.get::<Option<String>>(&key).await? {
            return Ok(name);
        }
        let name = author::Entity::find_by_id(id).one(&self.db).await?.map(|a| a.name);
        self.cache.put(&key, &name, [matroska_seaorm::pk_dep_of::<author::Entity>(id)], TTL).await?;
        Ok(name)
    }
}

async fn load_list(db: &CachedDatabase, category: i32, published: bool) -> Result<Vec<article::ModelEx>, DbErr> {
    article::Entity::load()
        .filter(article::Column::CategoryId.eq(category))
        .filter(article::Column::Published.eq(published))
        .order_by_asc(article::Column::Id)
        .with(author::Entity)
        .all(db)
        .await
}

async fn load_detail(db: &CachedDatabase, id: i32) -> Result<Option<article::ModelEx>, DbErr> {
    article::Entity::load().filter_by_id(id).with(author::Entity).one(db).await
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

async fn read_all(repo: &Repo, trace: &mut Trace, rust: i32, go: i32, ids: &[i32]) -> Result<(), AppError> {
    for (cat, name, published) in [(rust, "rust", true), (rust, "rust", false), (go, "go", true)] {
        let h = trace.hits();
        let items = repo.list(cat, published).await?;
        let what = format!("list {name} {}", if published { "published" } else { "drafts" });
        trace.read(&what, h, &items.iter().map(|i| i.title.as_str()).collect::<Vec<_>>());
        let fresh: Vec<Item> = load_list(&repo.db, cat, published).await?.iter().map(Item::from_ex).collect();
        trace.check(&what, &items, &fresh);
    }
    for &id in ids {
        let h = trace.hits();
        let item = repo.detail(id).await?;
        trace.read(&format!("article {id}"), h, &item.as_ref().map(|i| (&i.title, i.views)));
        let fresh = load_detail(&repo.db, id).await?.as_ref().map(Item::from_ex);
        trace.check(&format!("article {id}"), &item, &fresh);
    }
    let h = trace.hits();
    let name = repo.author(1).await?;
    trace.read("author 1 (manual put)", h, &name);
    let fresh = author::Entity::find_by_id(1).one(&repo.db).await?.map(|a| a.name);
    trace.check("author 1", &name, &fresh);
    Ok(())
}

fn write(cache: &Cache, what: &str, before: u64) {
    let dropped = cache.stats().entries_invalidated - before;
    println!("write {what}  -> {dropped} entries invalidated");
}

struct Args {
    redis: Option<String>,
    database_url: String,
}

fn parse_args() -> Result<Args, AppError> {
    let mut args = Args {
        redis: std::env::var("MATROSKA_REDIS_URL").ok().filter(|s| !s.is_empty()),
        database_url: "sqlite::memory:".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--redis" => args.redis = Some(it.next().ok_or_else(|| AppError::Usage("--redis needs a URL".into()))?),
            "--database-url" => {
                args.database_url = it.next().ok_or_else(|| AppError::Usage("--database-url needs a URL".into()))?
            }
            other => {
                return Err(AppError::Usage(format!(
                    "unknown argument {other:?}; usage: blog [--redis URL] [--database-url URL]"
                )))
            }
        }
    }
    Ok(args)
}

async fn run() -> Result<u32, AppError> {
    let args = parse_args()?;
    let cache = match &args.redis {
        Some(url) => {
            let backend = matroska::RedisBackend::builder(url.clone())
                .build()
                .await
                .map_err(|e| AppError::Cache(matroska::Error::Backend(e)))?;
            println!("cache: Redis at {url}");
            Cache::builder()
                .backend(backend)
                .prefix(format!("blog-example-{}", std::process::id()))
                .build()
                .map_err(|e| AppError::Cache(e.into()))?
        }
        None => {
            println!("cache: in memory");
            Cache::new(matroska::MemoryBackend::new())
        }
    };
    let mut opts = ConnectOptions::new(args.database_url.clone());
    opts.sqlx_logging(false);
    let plain = Database::connect(opts).await?;
    println!("database: {:?}", plain.get_database_backend());
    // migrations need the plain connection; then every access goes through
    // the cached one
    migration::Migrator::down(&plain, None).await.ok();
    migration::Migrator::up(&plain, None).await?;
    let db = CachedDatabase::new(plain, cache.clone());

    println!("== seed");
    let ann = author::ActiveModel { name: Set("Ann".into()), ..Default::default() }.insert(&db).await?;
    let bob = author::ActiveModel { name: Set("Bob".into()), ..Default::default() }.insert(&db).await?;
    let rust = category::ActiveModel { name: Set("rust".into()), ..Default::default() }.insert(&db).await?;
    let go = category::ActiveModel { name: Set("go".into()), ..Default::default() }.insert(&db).await?;
    let mut ids = Vec::new();
    for (title, who, cat, published) in [
        ("Ownership", ann.id, rust.id, true),
        ("Lifetimes", bob.id, rust.id, false),
        ("Goroutines", ann.id, go.id, true),
    ] {
        let a = article::ActiveModel {
            title: Set(title.into()),
            author_id: Set(who),
            category_id: Set(cat),
            published: Set(published),
            views: Set(0),
            ..Default::default()
        }
        .insert(&db)
        .await?;
        ids.push(a.id);
    }

    let repo = Repo { db: db.clone(), cache: cache.clone() };
    let mut trace = Trace { cache: cache.clone(), mismatches: 0 };
    println!("== first reads (misses), then the same reads (hits)");
    read_all(&repo, &mut trace, rust.id, go.id, &ids).await?;
    read_all(&repo, &mut trace, rust.id, go.id, &ids).await?;

    let n = cache.stats().entries_invalidated;
    let mut a: article::ActiveModel = article::Entity::find_by_id(ids[1]).one(&db).await?.expect("seeded").into();
    a.published = Set(true);
    a.update(&db).await?;
    write(&cache, "publish 'Lifetimes' (watched column: leaves drafts, enters published)", n);
    read_all(&repo, &mut trace, rust.id, go.id, &ids).await?;

    let n = cache.stats().entries_invalidated;
    let mut a: article::ActiveModel = article::Entity::find_by_id(ids[0]).one(&db).await?.expect("seeded").into();
    a.views = Set(42);
    a.update(&db).await?;
    write(&cache, "count a view of 'Ownership' (unwatched column: key only)", n);
    read_all(&repo, &mut trace, rust.id, go.id, &ids).await?;

    let n = cache.stats().entries_invalidated;
    let mut a: article::ActiveModel = article::Entity::find_by_id(ids[2]).one(&db).await?.expect("seeded").into();
    a.category_id = Set(rust.id);
    a.update(&db).await?;
    write(&cache, "move 'Goroutines' from go to rust (old and new lists)", n);
    read_all(&repo, &mut trace, rust.id, go.id, &ids).await?;

    let n = cache.stats().entries_invalidated;
    let mut au: author::ActiveModel = ann.clone().into();
    au.name = Set("Annabel".into());
    au.update(&db).await?;
    write(&cache, "rename author Ann (everything embedding her)", n);
    read_all(&repo, &mut trace, rust.id, go.id, &ids).await?;

    let n = cache.stats().entries_invalidated;
    let new_id = db
        .transaction::<_, i32, DbErr>(|txn| {
            Box::pin(async move {
                let a = article::ActiveModel {
                    title: Set("Channels".into()),
                    author_id: Set(bob.id),
                    category_id: Set(go.id),
                    published: Set(true),
                    views: Set(0),
                    ..Default::default()
                }
                .insert(txn)
                .await?;
                Ok(a.id)
            })
        })
        .await
        .map_err(|e| AppError::Usage(e.to_string()))?;
    ids.push(new_id);
    write(&cache, "insert 'Channels' into go, in a transaction (invalidated after the commit)", n);
    read_all(&repo, &mut trace, rust.id, go.id, &ids).await?;

    let n = cache.stats().entries_invalidated;
    let res = article::Entity::update_many()
        .col_expr(article::Column::Published, Expr::value(false))
        .filter(article::Column::CategoryId.eq(rust.id))
        .exec(&db)
        .await?;
    write(&cache, &format!("update_many: unpublish all {} rust articles", res.rows_affected), n);
    read_all(&repo, &mut trace, rust.id, go.id, &ids).await?;

    let n = cache.stats().entries_invalidated;
    db.execute_unprepared(&format!("UPDATE article SET views = views + 1 WHERE id = {}", ids[0])).await?;
    write(&cache, "raw SQL: count a view of 'Ownership'", n);
    read_all(&repo, &mut trace, rust.id, go.id, &ids).await?;

    let n = cache.stats().entries_invalidated;
    article::Entity::delete_by_id(ids[3]).exec(&db).await?;
    write(&cache, "delete_by_id 'Channels'", n);
    read_all(&repo, &mut trace, rust.id, go.id, &ids).await?;

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
    if !args.database_url.starts_with("sqlite") {
        db.migrate(|plain| async move { migration::Migrator::down(plain, None).await }).await?;
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
