//! Cached vs uncached reads and hooked vs plain saves with matroska-seaorm.
//!
//! ```sh
//! cargo run --release --example seaorm_bench
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test MATROSKA_REDIS_URL=redis://127.0.0.1/ \
//!     cargo run --release --example seaorm_bench
//! ```
//!
//! For each database (SQLite in memory; PostgreSQL when `DATABASE_URL` is set,
//! in a database of its own, dropped at the end) and each cache (memory;
//! Redis when `MATROSKA_REDIS_URL` is set): a list of 50 articles with their
//! authors served by the query and served from the cache, and an update
//! through an ActiveModel with automatic invalidation vs one without.

use std::time::{Duration, Instant};

use matroska::{params, Cache};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Schema};
use serde::{Deserialize, Serialize};

mod author {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity)]
    #[sea_orm(table_name = "bench_author")]
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

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity)]
    #[sea_orm(table_name = "bench_article")]
    #[matroska(scope(fields("published", "category_id")))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub title: String,
        pub body: String,
        pub author_id: i32,
        pub category_id: i32,
        pub published: bool,
        pub views: i32,
        #[sea_orm(belongs_to, from = "author_id", to = "id")]
        pub author: BelongsTo<super::author::Entity>,
    }
}

/// The same columns, without automatic invalidation.
mod plain {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "bench_plain")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub title: String,
        pub body: String,
        pub author_id: i32,
        pub category_id: i32,
        pub published: bool,
        pub views: i32,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Item {
    id: i32,
    title: String,
    body: String,
    author: String,
    views: i32,
}

async fn query(db: &DatabaseConnection) -> Result<Vec<Item>, DbErr> {
    let rows = article::Entity::load()
        .filter(article::Column::CategoryId.eq(1))
        .filter(article::Column::Published.eq(true))
        .with(author::Entity)
        .all(db)
        .await?;
    Ok(rows
        .iter()
        .map(|a| Item {
            id: a.id,
            title: a.title.clone(),
            body: a.body.clone(),
            author: a.author.as_ref().map(|x| x.name.clone()).unwrap_or_default(),
            views: a.views,
        })
        .collect())
}

#[derive(Debug)]
#[allow(dead_code)]
enum BenchError {
    Db(DbErr),
    Cache(matroska::Error),
}

impl From<matroska::Error> for BenchError {
    fn from(e: matroska::Error) -> Self {
        BenchError::Cache(e)
    }
}

impl From<DbErr> for BenchError {
    fn from(e: DbErr) -> Self {
        BenchError::Db(e)
    }
}

async fn cached(db: &DatabaseConnection, cache: &Cache) -> Result<Vec<Item>, BenchError> {
    cache
        .get_or_load("bench:list", Duration::from_secs(600), |deps| async move {
            let items = query(db).await?;
            deps.extend(
                matroska_seaorm::list_deps::<article::Entity>(params! { "published" => true, "category_id" => 1 })
                    .map_err(|e| BenchError::Db(e.into_db_err()))?,
            );
            for i in &items {
                deps.push(matroska_seaorm::pk_dep_of::<article::Entity>(i.id));
            }
            Ok::<_, BenchError>(items)
        })
        .await
}

/// Mean time per call of `f` over `n` calls (after `n / 10` warm-up calls).
async fn time<F, Fut>(n: u32, mut f: F) -> Duration
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..n / 10 {
        f(i).await;
    }
    let start = Instant::now();
    for i in 0..n {
        f(i).await;
    }
    start.elapsed() / n
}

async fn setup(db: &DatabaseConnection) -> Result<(), DbErr> {
    let schema = Schema::new(db.get_database_backend());
    db.execute(&schema.create_table_from_entity(author::Entity)).await?;
    db.execute(&schema.create_table_from_entity(article::Entity)).await?;
    db.execute(&schema.create_table_from_entity(plain::Entity)).await?;
    for i in 0..10 {
        author::ActiveModel { name: Set(format!("author {i}")), ..Default::default() }.insert(db).await?;
    }
    for i in 0..60 {
        let (author_id, category_id, published) = (i % 10 + 1, if i < 55 { 1 } else { 2 }, i < 50);
        article::ActiveModel {
            title: Set(format!("article {i}")),
            body: Set("lorem ipsum ".repeat(20)),
            author_id: Set(author_id),
            category_id: Set(category_id),
            published: Set(published),
            views: Set(0),
            ..Default::default()
        }
        .insert(db)
        .await?;
        plain::ActiveModel {
            title: Set(format!("article {i}")),
            body: Set("lorem ipsum ".repeat(20)),
            author_id: Set(author_id),
            category_id: Set(category_id),
            published: Set(published),
            views: Set(0),
            ..Default::default()
        }
        .insert(db)
        .await?;
    }
    Ok(())
}

async fn bench(label: &str, db: &DatabaseConnection, caches: &[(&str, Cache)]) -> Result<(), BenchError> {
    setup(db).await?;
    assert_eq!(query(db).await?.len(), 50);
    let q = time(300, |_| async {
        query(db).await.expect("query");
    })
    .await;
    println!("{label}: list of 50 articles with authors, query          {:>10.1?}", q);
    for (name, cache) in caches {
        let c = time(3000, |_| async {
            cached(db, cache).await.expect("cached");
        })
        .await;
        println!(
            "{label}: list of 50 articles with authors, cached ({name:<6}) {:>10.1?}   {:>6.1}x faster",
            c,
            q.as_secs_f64() / c.as_secs_f64()
        );
    }
    for (name, cache) in caches {
        matroska_seaorm::Registration::new(cache.clone())
            .scope(async {
                let plain_row = plain::Entity::find_by_id(1).one(db).await.expect("q").expect("row");
                let hooked_row = article::Entity::find_by_id(1).one(db).await.expect("q").expect("row");
                let plain_save = time(300, |i| {
                    let mut a: plain::ActiveModel = plain_row.clone().into();
                    a.views = Set(i as i32);
                    async move {
                        a.update(db).await.expect("update");
                    }
                })
                .await;
                let hooked_save = time(300, |i| {
                    let mut a: article::ActiveModel = hooked_row.clone().into();
                    a.views = Set(i as i32);
                    async move {
                        a.update(db).await.expect("update");
                    }
                })
                .await;
                let plain_move = time(300, |i| {
                    let mut a: plain::ActiveModel = plain_row.clone().into();
                    a.category_id = Set(1 + (i as i32 % 2) * 2);
                    async move {
                        a.update(db).await.expect("update");
                    }
                })
                .await;
                let hooked_move = time(300, |i| {
                    let mut a: article::ActiveModel = hooked_row.clone().into();
                    a.category_id = Set(1 + (i as i32 % 2) * 2);
                    async move {
                        a.update(db).await.expect("update");
                    }
                })
                .await;
                println!(
                    "{label}: save, unwatched column ({name:<6}): plain {:>9.1?}  hooked {:>9.1?}  ({:.2}x, +{:.1?})",
                    plain_save,
                    hooked_save,
                    hooked_save.as_secs_f64() / plain_save.as_secs_f64(),
                    hooked_save.saturating_sub(plain_save)
                );
                println!(
                    "{label}: save, watched column   ({name:<6}): plain {:>9.1?}  hooked {:>9.1?}  ({:.2}x, +{:.1?}: old-row read + invalidation)",
                    plain_move,
                    hooked_move,
                    hooked_move.as_secs_f64() / plain_move.as_secs_f64(),
                    hooked_move.saturating_sub(plain_move)
                );
            })
            .await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut caches = vec![("memory", Cache::builder().backend(matroska::MemoryBackend::new()).build())];
    if let Some(url) = std::env::var("MATROSKA_REDIS_URL").ok().filter(|s| !s.is_empty()) {
        let backend = matroska::RedisBackend::builder(url).build().await?;
        caches
            .push(("redis", Cache::builder().backend(backend).prefix(format!("bench-{}", std::process::id())).build()));
    }
    matroska_seaorm::register(caches[0].1.clone());
    let sqlite = Database::connect("sqlite::memory:").await?;
    bench("sqlite", &sqlite, &caches).await.map_err(|e| format!("{e:?}"))?;

    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| u.starts_with("postgres")) {
        let admin = Database::connect(url.as_str()).await?;
        let name = format!("matroska_bench_{}", std::process::id());
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
        let (base, _) = url.rsplit_once('/').ok_or("DATABASE_URL has no database name")?;
        let mut opts = ConnectOptions::new(format!("{base}/{name}"));
        opts.sqlx_logging(false).max_connections(2);
        let pg = Database::connect(opts).await?;
        for (_, c) in &caches {
            c.invalidate([matroska_seaorm::entity_dep::<article::Entity>()]).await?;
        }
        let result = bench("postgres", &pg, &caches).await;
        pg.close().await?;
        admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await?;
        result.map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}
