//! The transactional outbox: intents committed with the data, applied by the
//! writer, by any process, and before a cache serves reads after an outage;
//! dead letters and their replay; a writer killed between its commit and its
//! invalidation.
//!
//! ```text
//! cargo test -p matroska-seaorm --test outbox
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-seaorm --test outbox
//! DATABASE_URL=mysql://root@127.0.0.1:3306/test cargo test -p matroska-seaorm --test outbox
//! ```
//!
//! The process-kill and Redis-outage tests spawn their own `redis-server`
//! (skipped without one unless `MATROSKA_REQUIRE_REDIS=1`).

mod common;
#[path = "../../matroska/tests/common/redis_server.rs"]
mod redis_server;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use matroska::{Cache, Dep, MemoryBackend};
use matroska_seaorm::{CachedDatabase, Invalidator, OutboxConfig};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, DatabaseConnection, IntoActiveModel, TransactionSession, TransactionTrait};

/// Waits (up to a minute, however slow the machine) for `cond`.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cache in front of an invalidator that can be switched off.
#[derive(Clone)]
struct Switch {
    cache: Cache,
    down: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
}

impl Switch {
    fn new(cache: Cache) -> Self {
        Switch { cache, down: Arc::default(), calls: Arc::default() }
    }
}

impl Invalidator for Switch {
    fn invalidate(&self, deps: Vec<Dep>) -> Pin<Box<dyn Future<Output = Result<u64, matroska::Error>> + Send + '_>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(matroska::Error::Backend(matroska::BackendError::new(
                    matroska::BackendErrorKind::Unavailable,
                    "switched off",
                )));
            }
            self.cache.invalidate(deps).await
        })
    }

    fn set_recovery(&self, recovery: &Arc<dyn matroska::Recovery>) {
        self.cache.set_recovery(recovery);
    }
}

fn config() -> OutboxConfig {
    // no background drainer: the tests decide when intents are drained
    OutboxConfig::new().drainer(false).grace(Duration::ZERO).backoff(Duration::ZERO, Duration::ZERO).max_attempts(3)
}

async fn outboxed(plain: &DatabaseConnection, inv: Arc<dyn Invalidator>, cfg: OutboxConfig) -> CachedDatabase {
    let db = CachedDatabase::builder_with(plain.clone(), inv).outbox(cfg).build().unwrap();
    db.outbox().unwrap().create_table().await.unwrap();
    db
}

async fn publish_draft_2<C: ConnectionTrait>(db: &C) {
    let a = article::Entity::find_by_id(2).one(db).await.unwrap().unwrap();
    let mut am = a.into_active_model();
    am.published = Set(true);
    am.update(db).await.unwrap();
}

async fn pending(db: &CachedDatabase) -> u64 {
    db.outbox().unwrap().stats().await.unwrap().pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_are_committed_with_the_write_and_deleted_once_applied() {
    let tdb = TestDb::with_connections("outbox_basics", Some(4)).await;
    let cache = Cache::new(MemoryBackend::new());
    let db = outboxed(&tdb.db, Arc::new(cache.clone()), config()).await;
    prepare(&db, &cache).await;
    eventually("seeding's intents deleted", || async { pending(&db).await == 0 }).await;
    // an autocommit write
    publish_draft_2(&db).await;
    assert_fresh(&db, &cache).await;
    eventually("the intent deleted", || async { pending(&db).await == 0 }).await;
    // a transaction: one intent for all its writes; a rollback writes none
    let txn = db.begin().await.unwrap();
    let c = comment::Entity::find_by_id(1).one(&txn).await.unwrap().unwrap();
    c.delete(&txn).await.unwrap();
    txn.rollback().await.unwrap();
    assert_eq!(pending(&db).await, 0);
    let (recorded, ..) = db.outbox().unwrap().counters();
    db.transaction::<_, (), DbErr>(|t| {
        Box::pin(async move {
            publish_draft_2(t).await;
            let c = comment::Entity::find_by_id(1).one(t).await?.unwrap();
            c.delete(t).await?;
            Ok(())
        })
    })
    .await
    .unwrap();
    assert_eq!(db.outbox().unwrap().counters().0, recorded + 1, "one intent per transaction");
    assert_fresh(&db, &cache).await;
    eventually("the transaction's intent deleted", || async { pending(&db).await == 0 }).await;
    drop(db);
    tdb.drop_db().await;
}

/// Process A commits while the cache is unreachable for it; process B
/// (another cache on the same backend, as another process on one Redis)
/// applies A's intent before it serves any read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_left_behind_is_applied_before_another_process_reads() {
    let tdb = TestDb::with_connections("outbox_left_behind", Some(4)).await;
    let backend = Arc::new(MemoryBackend::new());
    let cache_a = Cache::builder().shared_backend(backend.clone()).build().unwrap();
    let switch = Switch::new(cache_a.clone());
    let db_a = outboxed(&tdb.db, Arc::new(switch.clone()), config()).await;
    prepare(&db_a, &cache_a).await;
    switch.down.store(true, Ordering::SeqCst);
    publish_draft_2(&db_a).await; // committed; invalidation failed
    assert_eq!(pending(&db_a).await, 1, "the intent is durable");
    // process B starts: its cache shares the backend, which still holds the
    // entries A could not invalidate
    let cache_b = Cache::builder().shared_backend(backend.clone()).build().unwrap();
    let plain_b = Cache::builder().shared_backend(backend.clone()).build().unwrap();
    assert!(
        stale_views(&db_a, &plain_b).await.iter().any(|(v, ..)| *v == View::Published(1)),
        "stale in the shared backend"
    );
    let db_b = outboxed(&tdb.db, Arc::new(cache_b.clone()), config()).await;
    // its first read applies the outbox first
    assert_fresh(&db_b, &cache_b).await;
    assert_eq!(pending(&db_b).await, 0);
    assert_fresh(&db_b, &plain_b).await;
    drop((db_a, db_b));
    tdb.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_drainers_share_the_outbox() {
    let tdb = TestDb::with_connections("outbox_two_drainers", Some(6)).await;
    let cache = Cache::new(MemoryBackend::new());
    let switch = Switch::new(cache.clone());
    let writer = outboxed(&tdb.db, Arc::new(switch.clone()), config()).await;
    seed(&writer).await;
    eventually("seeding's intents deleted", || async { pending(&writer).await == 0 }).await;
    switch.down.store(true, Ordering::SeqCst);
    for i in 0..200 {
        let a = article::Entity::find_by_id(1 + i % 3).one(&writer).await.unwrap().unwrap();
        let mut am = a.into_active_model();
        am.views = Set(i);
        am.update(&writer).await.unwrap();
    }
    assert_eq!(pending(&writer).await, 200);
    let counting = Switch::new(cache.clone());
    let d1 = outboxed(&tdb.db, Arc::new(counting.clone()), config().batch(16)).await;
    let d2 = outboxed(&tdb.db, Arc::new(counting.clone()), config().batch(16)).await;
    let (r1, r2) = tokio::join!(d1.outbox().unwrap().drain(), d2.outbox().unwrap().drain());
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    let left = pending(&writer).await;
    // SQLite serialises the two; PostgreSQL and MySQL skip each other's rows
    assert_eq!(r1.applied + r2.applied + left, 200, "every intent applied once or still pending: {r1:?} {r2:?}");
    let again = d1.outbox().unwrap().drain().await.unwrap();
    assert_eq!(pending(&writer).await, 0, "{again:?}");
    drop((writer, d1, d2));
    tdb.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_kept_and_replayed() {
    let tdb = TestDb::with_connections("outbox_dead", Some(4)).await;
    let cache = Cache::new(MemoryBackend::new());
    let switch = Switch::new(cache.clone());
    let db = outboxed(&tdb.db, Arc::new(switch.clone()), config()).await;
    prepare(&db, &cache).await;
    db.outbox().unwrap().drain_all().await.unwrap();
    switch.down.store(true, Ordering::SeqCst);
    publish_draft_2(&db).await;
    let outbox = db.outbox().unwrap();
    for attempt in 1..=3 {
        let d = outbox.drain().await.unwrap();
        assert_eq!(d.failed, 1, "attempt {attempt}");
        assert_eq!(d.dead, u64::from(attempt == 3));
    }
    let stats = outbox.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 1));
    assert_eq!(outbox.drain().await.unwrap().failed, 0, "dead letters are not retried");
    switch.down.store(false, Ordering::SeqCst);
    assert_eq!(outbox.replay_dead().await.unwrap(), 1);
    assert_eq!(outbox.drain().await.unwrap().applied, 1);
    let stats = outbox.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 0));
    // the core kept it pending meanwhile: reads were never served stale
    assert_fresh(&db, &cache).await;
    drop(db);
    tdb.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_drainer_applies_what_a_writer_left() {
    let tdb = TestDb::with_connections("outbox_drainer", Some(4)).await;
    let backend = Arc::new(MemoryBackend::new());
    let cache_a = Cache::builder().shared_backend(backend.clone()).build().unwrap();
    let switch = Switch::new(cache_a.clone());
    let db_a = outboxed(&tdb.db, Arc::new(switch.clone()), config()).await;
    prepare(&db_a, &cache_a).await;
    switch.down.store(true, Ordering::SeqCst);
    publish_draft_2(&db_a).await;
    // another process with a drainer
    let cache_b = Cache::builder().shared_backend(backend).build().unwrap();
    let cfg = OutboxConfig::new().poll_interval(Duration::from_millis(20)).grace(Duration::ZERO);
    let db_b = outboxed(&tdb.db, Arc::new(cache_b.clone()), cfg).await;
    eventually("the drainer applies the intent", || async { pending(&db_b).await == 0 }).await;
    let plain = Cache::builder().shared_backend(Arc::new(MemoryBackend::new())).build().unwrap();
    drop(plain);
    assert_fresh(&db_b, &cache_b).await;
    drop((db_a, db_b));
    tdb.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_table_name_is_checked_and_configurable() {
    let tdb = TestDb::new("outbox_names").await;
    let cache = Cache::new(MemoryBackend::new());
    let err =
        CachedDatabase::builder(tdb.db.clone(), cache.clone()).outbox(OutboxConfig::new().table("x; DROP")).build();
    assert!(matches!(err, Err(matroska_seaorm::Error::Config(_))));
    let db = CachedDatabase::builder(tdb.db.clone(), cache.clone())
        .outbox(OutboxConfig::new().table("app_cache_intents").drainer(false))
        .build()
        .unwrap();
    db.outbox().unwrap().create_table().await.unwrap();
    db.outbox().unwrap().create_table().await.unwrap(); // idempotent
    seed(&db).await;
    assert_eq!(db.outbox().unwrap().table(), "app_cache_intents");
    drop(db);
    tdb.drop_db().await;
}

// -- processes and Redis ----------------------------------------------------

const CHILD: &str = "MATROSKA_OUTBOX_CHILD";

/// Aborts the process on the first invalidation: a crash between a commit
/// and its invalidation.
struct AbortOnInvalidate;

impl Invalidator for AbortOnInvalidate {
    fn invalidate(&self, _: Vec<Dep>) -> Pin<Box<dyn Future<Output = Result<u64, matroska::Error>> + Send + '_>> {
        std::process::abort()
    }
}

async fn redis_cache(url: &str, namespace: &str) -> Cache {
    let backend = matroska::RedisBackend::builder(url).namespace(namespace).build().await.expect("connect to Redis");
    Cache::builder().backend(backend).prefix("t").build().unwrap()
}

/// The child's part of the kill test (run by the parent as a separate
/// process; a no-op in a normal test run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writer_killed_after_commit() {
    let Ok(url) = std::env::var(CHILD) else { return };
    let db = sea_orm::Database::connect(url.as_str()).await.unwrap();
    let cached = CachedDatabase::builder_with(db, Arc::new(AbortOnInvalidate)).outbox(config()).build().unwrap();
    publish_draft_2(&cached).await; // commits, then aborts
    unreachable!("the invalidation aborts the process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_between_commit_and_invalidation_loses_nothing() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let Some(server) = redis_server::RedisServer::start() else { return };
    // the child connects by URL: a file database (SQLite) or the server's
    let tdb = TestDb::with_connections("outbox_kill", Some(4)).await;
    let url = match tdb.backend() {
        sea_orm::DbBackend::Sqlite => tdb.file_url().unwrap(),
        _ => tdb.url().unwrap(),
    };
    let namespace = format!("kill-{}", std::process::id());
    let cache = redis_cache(&server.url(), &namespace).await;
    let db = outboxed(&tdb.db, Arc::new(cache.clone()), config()).await;
    prepare(&db, &cache).await;
    db.outbox().unwrap().drain_all().await.unwrap();
    // the child writer commits and dies before invalidating
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer_killed_after_commit", "--nocapture", "--test-threads", "1"])
        .env(CHILD, &url)
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die");
    // the shared cache is stale now: that is what a crash leaves
    let other = redis_cache(&server.url(), &namespace).await;
    let stale = stale_views(&tdb.db, &other).await;
    assert!(stale.iter().any(|(v, ..)| *v == View::Published(1)), "a crash leaves stale entries: {stale:?}");
    assert_eq!(pending(&db).await, 1, "but the intent is in the table");
    // a process (re)starting with the outbox applies it before serving
    let restarted = redis_cache(&server.url(), &namespace).await;
    let db2 = outboxed(&tdb.db, Arc::new(restarted.clone()), config()).await;
    assert_fresh(&db2, &restarted).await;
    assert_fresh(&db2, &other).await;
    assert_eq!(pending(&db2).await, 0);
    drop((db, db2));
    tdb.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_while_redis_is_down_and_reads_wait_for_their_intents() {
    let Some(mut server) = redis_server::RedisServer::start() else { return };
    let tdb = TestDb::with_connections("outbox_redis_down", Some(4)).await;
    let namespace = format!("down-{}", std::process::id());
    let backend = matroska::RedisBackend::builder(server.url())
        .namespace(namespace.as_str())
        .connect_timeout(Duration::from_millis(200))
        .response_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let cache = Cache::builder().backend(backend).prefix("t").build().unwrap();
    let db = outboxed(&tdb.db, Arc::new(cache.clone()), config()).await;
    prepare(&db, &cache).await;
    db.outbox().unwrap().drain_all().await.unwrap();
    server.stop();
    // writes succeed; their intents are durable
    publish_draft_2(&db).await;
    let c = comment::Entity::find_by_id(1).one(&db).await.unwrap().unwrap();
    c.delete(&db).await.unwrap();
    assert_eq!(pending(&db).await, 2);
    // reads are not served from the unreachable cache (they load)
    assert_eq!(View::Published(1).read(&db, &cache).await, View::Published(1).query(&db).await.unwrap());
    server.restart();
    // another process connects after the outage: it applies the intents
    // before its first read
    let fresh = redis_cache(&server.url(), &namespace).await;
    let db2 = outboxed(&tdb.db, Arc::new(fresh.clone()), config()).await;
    assert_fresh(&db2, &fresh).await;
    assert_eq!(pending(&db2).await, 0);
    // and the first process serves nothing stale either
    eventually("the first cache recovers", || async { cache.get::<serde_json::Value>("probe").await.is_ok() }).await;
    assert_fresh(&db, &cache).await;
    drop((db, db2));
    tdb.drop_db().await;
}
