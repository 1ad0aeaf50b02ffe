//! The consistency checker: many writers and readers against a real database
//! through `matroska-seaorm`, then every entry still cached is compared with
//! what the database returns now.
//!
//! ```text
//! cargo run --release --example stress -- [options]
//!   --database-url URL   sqlite::memory: (default) or postgres://...
//!   --backend B          memory (default) | redis://host:port | spawn-redis |
//!                        cluster:redis://a,redis://b,... | spawn-cluster
//!                        (spawn-*: a server or a 3-master cluster of the
//!                        checker's own on loopback ports)
//!   --writers N          concurrent writer tasks (default 8)
//!   --readers N          concurrent reader tasks (default 32)
//!   --ops N              total operations, reads and writes (default 100000)
//!   --seed N             random seed (default 1)
//!   --checkpoints N      times the run pauses (after every task's writes have
//!                        returned) to compare the cache with the database;
//!                        the last is at the end (default 20)
//!   --faults             with spawn-redis: kill the server after a third of the
//!                        checkpoints and restart it after two thirds; with
//!                        spawn-cluster: kill one master (its replica takes
//!                        over) and restart it (it rejoins as a replica)
//!   --no-protection      readers use get + unconditional put instead of
//!                        get_or_load, writers skip the transaction helper:
//!                        shows the stale entries stale-set protection prevents
//!   --expect-stale       exit 0 only if stale entries were found (for
//!                        --no-protection in CI); otherwise exit 1 on any stale
//! ```
//!
//! `stale` and `checked` add up the entries found stale and compared at every
//! checkpoint. During a fault, entries the cache cannot read are not counted
//! (they cannot be served either). It ends with exactly one line:
//! `stale=0 checked=N reads=N writes=N hit_rate=0.87 refused_puts=N errors=N`

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use matroska::{params, Cache, Dep, MemoryBackend, RedisBackend};
use matroska_seaorm::{list_deps, pk_dep, pk_dep_of, CachedDatabase, CachedTransaction};
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DbBackend, DbErr, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, Set, TransactionTrait,
};
use tokio::sync::Barrier;

/// Spawned Redis servers of the test support code, restartable on the same port.
#[path = "../matroska/tests/common/redis_server.rs"]
#[allow(dead_code, missing_docs, unreachable_pub)]
mod redis_server;

/// The spawned Redis Cluster of the test support code (3 masters, 3 replicas).
#[path = "../matroska/tests/common/redis_cluster.rs"]
#[allow(dead_code, missing_docs, unreachable_pub)]
mod redis_cluster;

mod category {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "stress_category")]
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

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "stress_article")]
    #[matroska(scope(fields("published", "category_id")))]
    #[matroska(scope(fields("published")))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub title: String,
        pub category_id: i32,
        pub published: bool,
        pub views: i32,
        #[sea_orm(belongs_to, from = "category_id", to = "id")]
        pub category: BelongsTo<super::category::Entity>,
    }
}

const CATEGORIES: i32 = 6;
const SEED_ARTICLES: i32 = 60;
const TTL: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
struct Options {
    database_url: String,
    backend: String,
    writers: usize,
    readers: usize,
    ops: u64,
    seed: u64,
    checkpoints: u64,
    faults: bool,
    protection: bool,
    expect_stale: bool,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        database_url: "sqlite::memory:".into(),
        backend: "memory".into(),
        writers: 8,
        readers: 32,
        ops: 100_000,
        seed: 1,
        checkpoints: 20,
        faults: false,
        protection: true,
        expect_stale: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--database-url" => o.database_url = val(&a)?,
            "--backend" => o.backend = val(&a)?,
            "--writers" => o.writers = val(&a)?.parse().map_err(|e| format!("--writers: {e}"))?,
            "--readers" => o.readers = val(&a)?.parse().map_err(|e| format!("--readers: {e}"))?,
            "--ops" => o.ops = val(&a)?.parse().map_err(|e| format!("--ops: {e}"))?,
            "--seed" => o.seed = val(&a)?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--checkpoints" => o.checkpoints = val(&a)?.parse().map_err(|e| format!("--checkpoints: {e}"))?,
            "--faults" => o.faults = true,
            "--no-protection" => o.protection = false,
            "--expect-stale" => o.expect_stale = true,
            "-h" | "--help" => return Err("see the header of examples/stress.rs for the options".into()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if o.faults && o.backend != "spawn-redis" && o.backend != "spawn-cluster" {
        return Err(
            "--faults needs --backend spawn-redis or spawn-cluster (the checker must own the servers it kills)".into(),
        );
    }
    if o.writers == 0 || o.readers == 0 {
        return Err("--writers and --readers must be at least 1".into());
    }
    Ok(o)
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
}

/// The key of a cached list of category `cat` (0: every category) and
/// published flag.
fn list_key(cat: i32) -> String {
    if cat == 0 {
        "list:published".into()
    } else {
        format!("list:{cat}:published")
    }
}

async fn query_list(db: &CachedDatabase, cat: i32) -> Result<Vec<article::Model>, DbErr> {
    let mut q = article::Entity::find().filter(article::Column::Published.eq(true));
    if cat != 0 {
        q = q.filter(article::Column::CategoryId.eq(cat));
    }
    q.order_by_asc(article::Column::Id).all(db).await
}

fn list_dependencies(cat: i32, rows: &[article::Model]) -> Result<Vec<Dep>, matroska_seaorm::Error> {
    let mut deps = if cat == 0 {
        list_deps::<article::Entity>(params! { "published" => true })?
    } else {
        list_deps::<article::Entity>(params! { "published" => true, "category_id" => cat })?
    };
    deps.extend(rows.iter().map(pk_dep));
    Ok(deps)
}

#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Cache(#[from] matroska::Error),
    #[error(transparent)]
    Seaorm(#[from] matroska_seaorm::Error),
}

/// One read, through `get_or_load` (or, without protection, get + put).
async fn read(cache: &Cache, db: &CachedDatabase, protection: bool, detail: bool, n: i32) -> Result<(), AppError> {
    if detail {
        let key = format!("article:{n}");
        let load = |deps: matroska::Deps| {
            let db = db.clone();
            async move {
                deps.push(pk_dep_of::<article::Entity>(n));
                Ok::<_, AppError>(article::Entity::find_by_id(n).one(&db).await?)
            }
        };
        if protection {
            cache.get_or_load(&key, TTL, load).await?;
        } else if cache.get::<Option<article::Model>>(&key).await?.is_none() {
            let deps = matroska::Deps::new();
            let row = load(deps.clone()).await?;
            tokio::task::yield_now().await;
            cache.put(&key, &row, deps.to_vec(), TTL).await?;
        }
    } else {
        let key = list_key(n);
        let load = |deps: matroska::Deps| {
            let db = db.clone();
            async move {
                let rows = query_list(&db, n).await?;
                deps.extend(list_dependencies(n, &rows)?);
                Ok::<_, AppError>(rows)
            }
        };
        if protection {
            cache.get_or_load(&key, TTL, load).await?;
        } else if cache.get::<Vec<article::Model>>(&key).await?.is_none() {
            let deps = matroska::Deps::new();
            let rows = load(deps.clone()).await?;
            tokio::task::yield_now().await;
            cache.put(&key, &rows, deps.to_vec(), TTL).await?;
        }
    }
    Ok(())
}

/// A tiny deterministic generator per task (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn pick_article(
    db: &CachedDatabase,
    rng: &mut Rng,
    max_id: &AtomicU64,
) -> Result<Option<article::Model>, DbErr> {
    let id = 1 + rng.below(Ord::max(max_id.load(Ordering::Relaxed), 1)) as i32;
    article::Entity::find_by_id(id).one(db).await
}

#[derive(Debug, thiserror::Error)]
#[error("rolled back on purpose")]
struct Rollback;

type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// Moves `a` to category `cat` and flips `b`'s published flag, in `txn`;
/// fails on purpose unless `commit`, so that the transaction rolls back.
fn moves(
    txn: &CachedTransaction,
    a: Option<article::Model>,
    b: Option<article::Model>,
    cat: i32,
    commit: bool,
) -> BoxFuture<'_, Result<(), AppError>> {
    Box::pin(async move {
        if let Some(a) = a {
            let mut am = a.into_active_model();
            am.category_id = Set(cat);
            am.update(txn).await?;
        }
        if let Some(b) = b {
            let published = !b.published;
            let mut am = b.into_active_model();
            am.published = Set(published);
            am.update(txn).await?;
        }
        if commit {
            Ok(())
        } else {
            Err(AppError::Db(DbErr::Custom(Rollback.to_string())))
        }
    })
}

/// Counts a view on every article of category `cat`: a bulk write through the
/// helper.
fn bulk_views(txn: &CachedTransaction, cat: i32) -> BoxFuture<'_, Result<(), DbErr>> {
    Box::pin(async move {
        article::Entity::update_many()
            .col_expr(article::Column::Views, Expr::col(article::Column::Views).add(1))
            .filter(Condition::all().add(article::Column::CategoryId.eq(cat)))
            .exec(txn)
            .await?;
        Ok(())
    })
}

/// One write, chosen at random among the kinds the checker exercises.
async fn write(db: &CachedDatabase, rng: &mut Rng, max_id: &AtomicU64, protection: bool) -> Result<(), AppError> {
    let kind = rng.below(100);
    let cat = 1 + rng.below(CATEGORIES as u64) as i32;
    match kind {
        // move between categories (a scope column)
        0..=24 => {
            if let Some(a) = pick_article(db, rng, max_id).await? {
                let mut am = a.into_active_model();
                am.category_id = Set(cat);
                am.update(db).await?;
            }
        }
        // publish / unpublish (a scope column)
        25..=39 => {
            if let Some(a) = pick_article(db, rng, max_id).await? {
                let published = !a.published;
                let mut am = a.into_active_model();
                am.published = Set(published);
                am.update(db).await?;
            }
        }
        // a view counter (no scope watches it) and the title (primary data)
        40..=59 => {
            if let Some(a) = pick_article(db, rng, max_id).await? {
                let (views, title) = (a.views + 1, format!("title {}", rng.next() % 1000));
                let mut am = a.into_active_model();
                am.views = Set(views);
                if kind >= 50 {
                    am.title = Set(title);
                }
                am.update(db).await?;
            }
        }
        60..=69 => {
            let am = article::ActiveModel {
                title: Set(format!("new {}", rng.next() % 1000)),
                category_id: Set(cat),
                published: Set(rng.below(2) == 0),
                views: Set(0),
                ..Default::default()
            };
            let row = am.insert(db).await?;
            max_id.fetch_max(row.id as u64, Ordering::Relaxed);
        }
        70..=77 => {
            if let Some(a) = pick_article(db, rng, max_id).await? {
                a.into_active_model().delete(db).await?;
            }
        }
        // two writes in one transaction, committed; or rolled back
        78..=93 => {
            let commit = kind <= 87;
            let (a, b) = (pick_article(db, rng, max_id).await?, pick_article(db, rng, max_id).await?);
            let _ = protection;
            let result = db.transaction(|txn| moves(txn, a, b, cat, commit)).await.map_err(|e| match e {
                sea_orm::TransactionError::Transaction(e) => e,
                sea_orm::TransactionError::Connection(e) => AppError::Db(e),
            });
            match result {
                Err(AppError::Db(DbErr::Custom(m))) if m == Rollback.to_string() => {}
                other => other?,
            }
        }
        // a bulk write through the helper, in a transaction
        _ => {
            db.transaction(|txn| bulk_views(txn, cat)).await.map_err(|e| AppError::Db(DbErr::Custom(e.to_string())))?;
        }
    }
    Ok(())
}

/// Counts an error; prints the first few to stderr.
fn report(counters: &Counters, what: &str, e: &AppError) -> u64 {
    let n = counters.errors.fetch_add(1, Ordering::Relaxed);
    if n < 5 {
        eprintln!("{what} failed: {e}");
    }
    n
}

async fn setup(db: &CachedDatabase) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    for table in ["stress_article", "stress_category"] {
        db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}")).await?;
    }
    let schema = sea_orm::Schema::new(backend);
    db.execute(&schema.create_table_from_entity(category::Entity)).await?;
    db.execute(&schema.create_table_from_entity(article::Entity)).await?;
    for c in 1..=CATEGORIES {
        category::ActiveModel { id: Set(c), name: Set(format!("category {c}")) }.insert(db).await?;
    }
    for i in 1..=SEED_ARTICLES {
        article::ActiveModel {
            title: Set(format!("article {i}")),
            category_id: Set(1 + i % CATEGORIES),
            published: Set(i % 3 != 0),
            views: Set(0),
            ..Default::default()
        }
        .insert(db)
        .await?;
    }
    Ok(())
}

/// Compares every entry still cached with the database. Returns (stale,
/// checked). Entries the cache cannot read (a backend down) are not counted.
async fn check(cache: &Cache, db: &CachedDatabase, max_id: u64) -> Result<(u64, u64), AppError> {
    let (mut stale, mut checked) = (0, 0);
    for id in 1..=max_id as i32 + 1 {
        if let Ok(Some(cached)) = cache.get::<Option<article::Model>>(&format!("article:{id}")).await {
            checked += 1;
            if cached != article::Entity::find_by_id(id).one(db).await? {
                stale += 1;
                eprintln!("stale: article:{id}");
            }
        }
    }
    for cat in 0..=CATEGORIES {
        if let Ok(Some(cached)) = cache.get::<Vec<article::Model>>(&list_key(cat)).await {
            checked += 1;
            if cached != query_list(db, cat).await? {
                stale += 1;
                eprintln!("stale: {}", list_key(cat));
            }
        }
    }
    Ok((stale, checked))
}

async fn run(o: Options) -> Result<ExitCode, String> {
    let mut spawned = None;
    let mut cluster: Option<redis_cluster::RedisCluster> = None;
    let namespace = format!("stress{}", o.seed);
    let cache = match o.backend.as_str() {
        "memory" => Cache::builder().backend(MemoryBackend::new()).prefix("stress").build().map_err(|e| e.to_string())?,
        b if b == "spawn-cluster" || b.starts_with("cluster:") => {
            let seeds: Vec<String> = if b == "spawn-cluster" {
                let c = redis_cluster::RedisCluster::start().ok_or("cannot start a Redis Cluster")?;
                let urls = c.urls();
                cluster = Some(c);
                urls
            } else {
                b["cluster:".len()..].split(',').map(str::to_owned).collect()
            };
            let backend = RedisBackend::cluster_builder(seeds.clone())
                .namespace(namespace)
                .response_timeout(Duration::from_millis(500))
                .connect_timeout(Duration::from_millis(500))
                .build()
                .await
                .map_err(|e| format!("cannot connect to the cluster {seeds:?}: {e}"))?;
            Cache::builder().backend(backend).prefix("stress").build().map_err(|e| e.to_string())?
        }
        other => {
            let url = if other == "spawn-redis" {
                let s = redis_server::RedisServer::start().ok_or("cannot start redis-server")?;
                let url = s.url();
                spawned = Some(s);
                url
            } else {
                other.to_owned()
            };
            let backend = RedisBackend::builder(url.clone())
                .namespace(namespace)
                .response_timeout(Duration::from_millis(500))
                .connect_timeout(Duration::from_millis(500))
                .build()
                .await
                .map_err(|e| format!("cannot connect to {url}: {e}"))?;
            Cache::builder().backend(backend).prefix("stress").build().map_err(|e| e.to_string())?
        }
    };

    let mut opts = ConnectOptions::new(o.database_url.clone());
    opts.sqlx_logging(false);
    if o.database_url.starts_with("sqlite") {
        opts.max_connections(1);
    } else {
        opts.max_connections(16);
    }
    let plain = Database::connect(opts).await.map_err(|e| format!("cannot connect to {}: {e}", o.database_url))?;
    if plain.get_database_backend() == DbBackend::MySql {
        return Err("MySQL is not supported by the checker".into());
    }
    let db = CachedDatabase::new(plain, cache.clone());
    setup(&db).await.map_err(|e| format!("schema: {e}"))?;

    let counters = Arc::new(Counters::default());
    let max_id = Arc::new(AtomicU64::new(SEED_ARTICLES as u64));
    let epochs = Ord::max(o.checkpoints, 1);
    let tasks_n = o.writers + o.readers;
    // every task stops at the end of each epoch; the checker compares the
    // cache with the database while nothing runs, then lets them go on
    let arrive = Arc::new(Barrier::new(tasks_n + 1));
    let resume = Arc::new(Barrier::new(tasks_n + 1));
    let write_share = o.ops * o.writers as u64 / tasks_n as u64;
    let mut tasks = Vec::new();
    for w in 0..o.writers {
        let (db, counters, max_id) = (db.clone(), counters.clone(), max_id.clone());
        let (arrive, resume) = (arrive.clone(), resume.clone());
        let mut rng = Rng(o.seed.wrapping_mul(1000).wrapping_add(w as u64));
        let per_epoch = write_share / o.writers as u64 / epochs;
        let protection = o.protection;
        tasks.push(tokio::spawn(async move {
            for _ in 0..epochs {
                for _ in 0..per_epoch {
                    match write(&db, &mut rng, &max_id, protection).await {
                        // another writer deleted the row first: a write that found nothing to do
                        Ok(()) | Err(AppError::Db(DbErr::RecordNotUpdated)) => {
                            counters.writes.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => report(&counters, "write", &e),
                    };
                }
                arrive.wait().await;
                resume.wait().await;
            }
        }));
    }
    let read_share = o.ops - write_share;
    for r in 0..o.readers {
        let (db, cache, counters, max_id) = (db.clone(), cache.clone(), counters.clone(), max_id.clone());
        let (arrive, resume) = (arrive.clone(), resume.clone());
        let mut rng = Rng(o.seed.wrapping_mul(7919).wrapping_add(1_000_000 + r as u64));
        let per_epoch = read_share / o.readers as u64 / epochs;
        let protection = o.protection;
        tasks.push(tokio::spawn(async move {
            for _ in 0..epochs {
                for _ in 0..per_epoch {
                    let detail = rng.below(2) == 0;
                    let n = if detail {
                        1 + rng.below(max_id.load(Ordering::Relaxed) + 1) as i32
                    } else {
                        rng.below(CATEGORIES as u64 + 1) as i32
                    };
                    match read(&cache, &db, protection, detail, n).await {
                        Ok(()) => counters.reads.fetch_add(1, Ordering::Relaxed),
                        Err(e) => report(&counters, "read", &e),
                    };
                }
                arrive.wait().await;
                resume.wait().await;
            }
        }));
    }

    let (mut stale, mut checked) = (0, 0);
    let mut killed = None;
    let started = std::time::Instant::now();
    for epoch in 1..=epochs {
        arrive.wait().await;
        if o.faults {
            eprintln!(
                "checkpoint {epoch}: {:.1?} since start, {} errors so far",
                started.elapsed(),
                counters.errors.load(Ordering::Relaxed)
            );
        }
        let (s, c) =
            check(&cache, &db, max_id.load(Ordering::Relaxed)).await.map_err(|e| format!("check failed: {e}"))?;
        stale += s;
        checked += c;
        if let Some(server) = spawned.as_mut().filter(|_| o.faults) {
            if epoch == epochs / 3 {
                server.stop();
                eprintln!("fault: redis-server killed after epoch {epoch}");
            } else if epoch == 2 * epochs / 3 {
                server.restart();
                eprintln!("fault: redis-server restarted after epoch {epoch}");
            }
        }
        if let Some(c) = cluster.as_mut().filter(|_| o.faults) {
            if epoch == epochs / 3 {
                let port = *c.master_ports().first().ok_or("the cluster has no master")?;
                c.kill(port);
                killed = Some(port);
                eprintln!("fault: cluster master on port {port} killed after epoch {epoch}");
            } else if epoch == 2 * epochs / 3 {
                if let Some(port) = killed.take() {
                    c.restart(port)?;
                    eprintln!("fault: node on port {port} restarted after epoch {epoch}");
                }
            }
        }
        resume.wait().await;
    }
    for t in tasks {
        t.await.map_err(|e| format!("a task panicked: {e}"))?;
    }

    let s = cache.stats();
    println!(
        "stale={stale} checked={checked} reads={} writes={} hit_rate={:.2} refused_puts={} errors={}",
        counters.reads.load(Ordering::Relaxed),
        counters.writes.load(Ordering::Relaxed),
        s.hit_rate(),
        s.refused_puts,
        counters.errors.load(Ordering::Relaxed),
    );
    let ok = if o.expect_stale { stale > 0 } else { stale == 0 };
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("stress: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stress: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(o)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stress: {e}");
            ExitCode::from(2)
        }
    }
}
