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
//! authors served by the query and served from the cache; and the cost of the
//! connection-level integration: a read, a list, saves of an unwatched and a
//! watched column, and a committed 2-write transaction through the plain
//! `DatabaseConnection` and through a `CachedDatabase`.
//!
//! Reads are measured in interleaved rounds (query, then each cache, then the
//! parts of a hit) and reported as medians, so load from other processes
//! weighs on every variant alike. A hit is split into the backend's `get`
//! (for Redis the round trip, next to a plain `PING` as its floor) and
//! decoding. `--current-thread` runs everything on one thread.

use std::time::{Duration, Instant};

use matroska::{params, Cache};
use matroska_seaorm::depth;
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

/// The published articles of category 1 with their authors.
async fn rows(db: &DatabaseConnection) -> Result<Vec<article::ModelEx>, DbErr> {
    article::Entity::load()
        .filter(article::Column::CategoryId.eq(1))
        .filter(article::Column::Published.eq(true))
        .with(author::Entity)
        .all(db)
        .await
}

/// The list as served: the query and the mapping to `Item`s.
async fn query(db: &DatabaseConnection) -> Result<Vec<Item>, DbErr> {
    Ok(items(&rows(db).await?))
}

fn items(rows: &[article::ModelEx]) -> Vec<Item> {
    rows.iter()
        .map(|a| Item {
            id: a.id,
            title: a.title.clone(),
            body: a.body.clone(),
            author: a.author.as_ref().map(|x| x.name.clone()).unwrap_or_default(),
            views: a.views,
        })
        .collect()
}

#[derive(Debug)]
#[allow(dead_code)]
enum BenchError {
    Db(DbErr),
    Cache(matroska::Error),
    Redis(String),
    Seaorm(matroska_seaorm::Error),
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

/// The cached list's key.
const KEY: &str = "benchlist";

async fn cached(db: &DatabaseConnection, cache: &Cache) -> Result<Vec<Item>, BenchError> {
    cache
        .get_or_load(KEY, Duration::from_secs(600), |deps| async move {
            let rows = rows(db).await?;
            // the list (which rows belong to it) and each row with its author
            // (the names are embedded)
            let list = params! { "published" => true, "category_id" => 1 };
            deps.extend(matroska_seaorm::list_deps::<article::Entity>(list).map_err(BenchError::Seaorm)?);
            deps.extend(
                matroska_seaorm::dependencies(&rows, depth!(article::ModelEx => { author: 1 }))
                    .map_err(BenchError::Seaorm)?,
            );
            Ok::<_, BenchError>(items(&rows))
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

/// Rounds of the read measurements. Each round times every variant once, one
/// after the other, so a change of load on the machine (other builds, the
/// database, Redis) hits every variant alike; the report gives medians.
const ROUNDS: usize = 15;

/// The median of `v`.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One cache's read measurements, per round (µs).
#[derive(Default)]
struct CacheReads {
    /// `get_or_load` hits: what a caller pays.
    hit: Vec<f64>,
    /// The backend's `get` alone (for Redis: the round trip).
    get: Vec<f64>,
    /// `Cache::get`: the backend's `get` and decoding, no single-flight.
    cache_get: Vec<f64>,
    /// Speed-up of the hit over the query, in the same round.
    ratio: Vec<f64>,
}

/// A cached list of 50 articles against the query, with where the time of a
/// hit goes: the backend's `get`, decoding the value, and for Redis the floor
/// of a plain `PING` on a connection of the bench's own.
async fn reads(
    label: &str,
    db: &DatabaseConnection,
    caches: &[(&str, Cache)],
    redis_url: Option<&str>,
) -> Result<(), BenchError> {
    use matroska::{Codec, Lookup};

    let mut stored = Vec::new();
    for (name, cache) in caches {
        cached(db, cache).await?;
        let full = format!("{}:{}", cache.prefix(), KEY);
        match cache.backend().get(&full).await.map_err(matroska::Error::Backend)? {
            Lookup::Hit(bytes) => stored.push((full, bytes.len())),
            Lookup::Miss(_) => return Err(BenchError::Redis(format!("{name}: backend key {full:?} not found"))),
        }
    }
    let value = cached(db, &caches[0].1).await?;
    let mut payload = Vec::new();
    matroska::MessagePack.encode(&value, &mut payload).map_err(|e| BenchError::Redis(e.to_string()))?;
    let mut ping_conn = match redis_url {
        Some(url) => Some(
            redis::Client::open(url)
                .map_err(|e| BenchError::Redis(e.to_string()))?
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| BenchError::Redis(e.to_string()))?,
        ),
        None => None,
    };

    let (mut query_t, mut decode_t, mut ping_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_cache: Vec<CacheReads> = caches.iter().map(|_| CacheReads::default()).collect();
    for _ in 0..ROUNDS {
        let q = micros(
            time(30, |_| async {
                query(db).await.expect("query");
            })
            .await,
        );
        query_t.push(q);
        for ((_, cache), (r, (full, _))) in caches.iter().zip(per_cache.iter_mut().zip(&stored)) {
            let hit = micros(
                time(300, |_| async {
                    cached(db, cache).await.expect("cached");
                })
                .await,
            );
            r.hit.push(hit);
            r.ratio.push(q / hit);
            r.get.push(micros(
                time(300, |_| async {
                    cache.backend().get(full).await.expect("backend get");
                })
                .await,
            ));
            r.cache_get.push(micros(
                time(300, |_| async {
                    let v: Option<Vec<Item>> = cache.get(KEY).await.expect("cache get");
                    std::hint::black_box(v);
                })
                .await,
            ));
        }
        decode_t.push(micros(
            time(300, |_| async {
                let v: Vec<Item> = matroska::MessagePack.decode(&payload).expect("decode");
                std::hint::black_box(v);
            })
            .await,
        ));
        if let Some(conn) = ping_conn.as_mut() {
            ping_t.push(micros(
                time(300, |_| {
                    let mut c = conn.clone();
                    async move {
                        let _: String = redis::cmd("PING").query_async(&mut c).await.expect("PING");
                    }
                })
                .await,
            ));
        }
    }

    let decode = median(&mut decode_t);
    println!(
        "{label}: list of 50 articles with authors, median of {ROUNDS} interleaved rounds \
         (value {} B, decode {decode:.1}µs)",
        payload.len()
    );
    println!("{label}:   query                  {:>8.1}µs", median(&mut query_t));
    for ((name, _), (mut r, (_, size))) in caches.iter().zip(per_cache.into_iter().zip(&stored)) {
        println!(
            "{label}:   cached ({name:<6})        {:>8.1}µs  {:>5.1}x faster   (stored {size} B; backend get {:.1}µs, Cache::get {:.1}µs)",
            median(&mut r.hit),
            median(&mut r.ratio),
            median(&mut r.get),
            median(&mut r.cache_get),
        );
    }
    if !ping_t.is_empty() {
        println!("{label}:   plain redis-rs PING    {:>8.1}µs   (the round-trip floor)", median(&mut ping_t));
    }
    Ok(())
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

async fn bench(
    label: &str,
    db: &DatabaseConnection,
    caches: &[(&str, Cache)],
    redis_url: Option<&str>,
) -> Result<(), BenchError> {
    setup(db).await?;
    assert_eq!(query(db).await?.len(), 50);
    reads(label, db, caches, redis_url).await?;
    for (name, cache) in caches {
        writes(label, name, db, cache).await?;
    }
    // six processes starting: three with an empty outbox, three with 10,000 intents
    let mut fresh = Vec::new();
    for _ in 0..6 {
        fresh.push(Cache::new(matroska::MemoryBackend::new()));
    }
    recovery(label, "memory", db, fresh).await?;
    if let Some(url) = redis_url {
        let mut fresh = Vec::new();
        for _ in 0..6 {
            let backend =
                matroska::RedisBackend::builder(url).build().await.map_err(|e| BenchError::Redis(e.to_string()))?;
            let cache = Cache::builder().backend(backend).prefix(format!("bench-{}", std::process::id()));
            fresh.push(cache.build().map_err(|e| BenchError::Redis(e.to_string()))?);
        }
        recovery(label, "redis", db, fresh).await?;
    }
    Ok(())
}

/// The cost of the connection-level integration: the same statements through
/// the plain `DatabaseConnection`, through a `CachedDatabase`, and through a
/// `CachedDatabase` with an outbox, in interleaved rounds (medians).
async fn writes(label: &str, name: &str, db: &DatabaseConnection, cache: &Cache) -> Result<(), BenchError> {
    use matroska_seaorm::{CachedDatabase, OutboxConfig};
    use sea_orm::TransactionTrait;

    let cached = CachedDatabase::new(db.clone(), cache.clone());
    let table = "bench_outbox";
    matroska_seaorm::outbox::create_table(db, table).await?;
    let outboxed = CachedDatabase::builder(db.clone(), cache.clone())
        .outbox(OutboxConfig::new().table(table).drainer(false))
        .build()
        .map_err(BenchError::Seaorm)?;
    let row = article::Entity::find_by_id(1).one(db).await?.expect("row 1");
    let other = article::Entity::find_by_id(2).one(db).await?.expect("row 2");
    let (row, other) = (&row, &other);
    let mut t: [Vec<f64>; 15] = Default::default();
    for _ in 0..ROUNDS {
        let mut k = 0;
        // the same body on the three connections, one after the other
        macro_rules! three {
            ($n:expr, |$c:ident, $i:ident| $body:expr) => {{
                let plain = micros(
                    time($n, |$i| {
                        let $c = db;
                        async move { $body }
                    })
                    .await,
                );
                let via = micros(
                    time($n, |$i| {
                        let $c = &cached;
                        async move { $body }
                    })
                    .await,
                );
                let with_outbox = micros(
                    time($n, |$i| {
                        let $c = &outboxed;
                        async move { $body }
                    })
                    .await,
                );
                t[k].push(plain);
                t[k + 1].push(via);
                t[k + 2].push(with_outbox);
                k += 3;
            }};
        }
        three!(300, |c, _i| {
            article::Entity::find_by_id(1).one(c).await.expect("read");
        });
        three!(100, |c, _i| {
            query_on(c).await.expect("list");
        });
        three!(200, |c, i| {
            let mut a: article::ActiveModel = row.clone().into();
            a.views = Set(i as i32);
            a.update(c).await.expect("update");
        });
        three!(200, |c, i| {
            let mut a: article::ActiveModel = row.clone().into();
            a.category_id = Set(1 + (i as i32 % 2) * 2);
            a.update(c).await.expect("update");
        });
        three!(100, |c, i| {
            let (a1, a2) = (row.clone(), other.clone());
            c.transaction::<_, (), DbErr>(move |txn| {
                Box::pin(async move {
                    let mut a: article::ActiveModel = a1.into();
                    a.views = Set(i as i32);
                    a.update(txn).await?;
                    let mut b: article::ActiveModel = a2.into();
                    b.views = Set(i as i32);
                    b.update(txn).await?;
                    Ok(())
                })
            })
            .await
            .expect("transaction");
        });
        let _ = k;
    }
    let names = [
        "read by key",
        "list of 50 with authors",
        "save, unwatched column",
        "save, watched column",
        "committed 2-write transaction",
    ];
    for (j, what) in names.iter().enumerate() {
        let plain = median(&mut t[3 * j]);
        let via = median(&mut t[3 * j + 1]);
        let with_outbox = median(&mut t[3 * j + 2]);
        println!(
            "{label}: {what:<30} ({name:<6}): plain {plain:>8.1}µs  cached {via:>8.1}µs ({:+6.1}%)  cached+outbox {with_outbox:>8.1}µs ({:+6.1}% vs plain, {:+6.1}% vs cached)",
            (via / plain - 1.0) * 100.0,
            (with_outbox / plain - 1.0) * 100.0,
            (with_outbox / via - 1.0) * 100.0,
        );
    }
    Ok(())
}

/// How long the first read of a process takes when the outbox holds
/// `pending` intents (each with three dependencies): the cache applies them
/// all before it serves it. Against the same first read with an empty
/// outbox, in alternating rounds (medians).
async fn recovery(label: &str, name: &str, db: &DatabaseConnection, mut fresh: Vec<Cache>) -> Result<(), BenchError> {
    use matroska_seaorm::{CachedDatabase, OutboxConfig};

    const PENDING: usize = 10_000;
    let table = "bench_outbox_recovery";
    matroska_seaorm::outbox::create_table(db, table).await?;
    let (mut empty_t, mut full_t) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        for pending in [0, PENDING] {
            db.execute_unprepared(&format!("DELETE FROM {table}")).await?;
            let mut i = 0;
            while i < pending {
                let rows: Vec<String> = (i..Ord::min(i + 500, pending))
                    .map(|k| {
                        let deps = matroska_sql::outbox::encode(&[
                            matroska::Dep::id("bench_article", k),
                            matroska::Dep::id("bench_author", k % 10),
                            matroska::Dep::tag(format!("bench_article:list:{}", k % 7)),
                        ]);
                        format!("('{}', 0, 0, 0, false)", deps.replace('\'', "''"))
                    })
                    .collect();
                db.execute_unprepared(&format!(
                    "INSERT INTO {table} (deps, created_at, next_attempt_at, attempts, dead) VALUES {}",
                    rows.join(", ")
                ))
                .await?;
                i += 500;
            }
            // a process starting: a new cache, a new connection with the outbox
            let cache = fresh.pop().expect("a fresh cache per round");
            let _db = CachedDatabase::builder(db.clone(), cache.clone())
                .outbox(OutboxConfig::new().table(table).drainer(false))
                .build()
                .map_err(BenchError::Seaorm)?;
            let start = Instant::now();
            let _: Option<Vec<Item>> = cache.get("first read").await?;
            let took = micros(start.elapsed());
            let left = db
                .query_one_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    format!("SELECT COUNT(*) AS n FROM {table}"),
                ))
                .await?
                .and_then(|r| r.try_get::<i64>("", "n").ok())
                .unwrap_or(-1);
            assert_eq!(left, 0, "recovery left intents behind");
            if pending == 0 {
                empty_t.push(took)
            } else {
                full_t.push(took)
            }
        }
    }
    let (empty, full) = (median(&mut empty_t), median(&mut full_t));
    println!(
        "{label}: first read after start-up ({name:<6}): empty outbox {:>9.1}ms  {PENDING} pending intents {:>9.1}ms  (+{:.1}ms)",
        empty / 1000.0,
        full / 1000.0,
        (full - empty) / 1000.0
    );
    Ok(())
}

async fn query_on<C: ConnectionTrait>(db: &C) -> Result<Vec<article::ModelEx>, DbErr> {
    article::Entity::load()
        .filter(article::Column::CategoryId.eq(1))
        .filter(article::Column::Published.eq(true))
        .with(author::Entity)
        .all(db)
        .await
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `--current-thread`: one thread for the bench, the Redis connection's
    // driver and the database pool (no cross-thread wake-up per round trip)
    let current = std::env::args().any(|a| a == "--current-thread");
    let runtime = if current {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()?
    };
    println!("runtime: {}", if current { "current_thread" } else { "multi_thread" });
    runtime.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut caches = vec![("memory", Cache::new(matroska::MemoryBackend::new()))];
    let redis_url = std::env::var("MATROSKA_REDIS_URL").ok().filter(|s| !s.is_empty());
    if let Some(url) = redis_url.clone() {
        let backend = matroska::RedisBackend::builder(url).build().await?;
        caches.push((
            "redis",
            Cache::builder().backend(backend).prefix(format!("bench-{}", std::process::id())).build()?,
        ));
    }
    // the plain connection is measured too: let its writes through
    matroska_seaorm::allow_uncached_writes(true);
    let sqlite = Database::connect("sqlite::memory:").await?;
    bench("sqlite", &sqlite, &caches, redis_url.as_deref()).await.map_err(|e| format!("{e:?}"))?;

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
        let result = bench("postgres", &pg, &caches, redis_url.as_deref()).await;
        pg.close().await?;
        admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await?;
        result.map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}
