//! The transactional outbox: intents committed with the data, applied by the
//! writer, by any process, and before a cache serves reads after an outage;
//! dead letters and their replay; a writer killed between its commit and its
//! invalidation; Redis down during writes.
//!
//! ```text
//! cargo test -p matroska-diesel --test integration outbox::
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-diesel --test integration outbox::
//! ```
//!
//! The process-kill and Redis-outage tests spawn their own `redis-server`
//! (skipped without one unless `MATROSKA_REQUIRE_REDIS=1`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::schema::*;
use crate::common::*;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use matroska::{Cache, Dep, MemoryBackend};
use matroska_diesel::{CachedDatabase, Invalidator, OutboxConfig};

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
}

impl Switch {
    fn new(cache: Cache) -> Self {
        Switch { cache, down: Arc::default() }
    }
}

impl Invalidator for Switch {
    fn invalidate(&self, deps: Vec<Dep>) -> Pin<Box<dyn Future<Output = Result<u64, matroska::Error>> + Send + '_>> {
        Box::pin(async move {
            if AtomicBool::load(&self.down, Ordering::SeqCst) {
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

/// A `CachedDatabase` with an outbox over the test database.
async fn outboxed(tdb: &TestDb, inv: Arc<dyn Invalidator>, cfg: OutboxConfig) -> CachedDatabase {
    let b = CachedDatabase::builder_with(inv);
    let b =
        if tdb.is_pg() { b.outbox::<AsyncPgConnection>(cfg, &tdb.url) } else { b.outbox::<SqliteConn>(cfg, &tdb.url) };
    let cached = b.build().unwrap();
    cached.outbox().unwrap().create_table().await.unwrap();
    cached
}

async fn publish_draft_2(db: &mut Db) {
    on!(db, |c| diesel::update(articles::table.find(2)).set(articles::published.eq(true)).execute(c).await).unwrap();
}

async fn pending(cached: &CachedDatabase) -> u64 {
    cached.outbox().unwrap().stats().await.unwrap().pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_are_committed_with_the_write_and_deleted_once_applied() {
    let tdb = TestDb::new("outbox_basics").await;
    let cache = Cache::new(MemoryBackend::new());
    let cached = outboxed(&tdb, Arc::new(cache.clone()), config()).await;
    let mut db = tdb.connect(&cached).await;
    prepare(&mut db, &cache).await;
    eventually("seeding's intents deleted", || async { pending(&cached).await == 0 }).await;
    publish_draft_2(&mut db).await;
    assert_fresh(&mut db, &cache).await;
    eventually("the intent deleted", || async { pending(&cached).await == 0 }).await;
    // a transaction: one intent for all its writes; a rollback writes none
    let recorded = cached.outbox().unwrap().counters().recorded;
    let _ = on!(&mut db, |c| c
        .transaction::<(), diesel::result::Error, _>(async |t| {
            diesel::delete(comments::table.find(1)).execute(t).await?;
            Err(diesel::result::Error::RollbackTransaction)
        })
        .await);
    assert_eq!(cached.outbox().unwrap().counters().recorded, recorded, "a rollback records nothing");
    on!(&mut db, |c| c
        .transaction::<(), diesel::result::Error, _>(async |t| {
            diesel::update(articles::table.find(3)).set(articles::category_id.eq(1)).execute(t).await?;
            diesel::delete(comments::table.find(1)).execute(t).await?;
            Ok(())
        })
        .await)
    .unwrap();
    assert_eq!(cached.outbox().unwrap().counters().recorded, recorded + 1, "one intent per transaction");
    assert_fresh(&mut db, &cache).await;
    eventually("the transaction's intent deleted", || async { pending(&cached).await == 0 }).await;
    drop(db);
    tdb.drop_db().await;
}

/// Process A commits while the cache is unreachable for it; process B
/// (another cache on the same backend) applies A's intent before it serves
/// any read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_left_behind_is_applied_before_another_process_reads() {
    let tdb = TestDb::new("outbox_left_behind").await;
    let backend = Arc::new(MemoryBackend::new());
    let cache_a = Cache::builder().shared_backend(backend.clone()).build().unwrap();
    let switch = Switch::new(cache_a.clone());
    let cached_a = outboxed(&tdb, Arc::new(switch.clone()), config()).await;
    let mut db_a = tdb.connect(&cached_a).await;
    prepare(&mut db_a, &cache_a).await;
    cached_a.outbox().unwrap().drain_all().await.unwrap();
    switch.down.store(true, Ordering::SeqCst);
    publish_draft_2(&mut db_a).await; // committed; invalidation failed
    assert!(on!(&mut db_a, |c| c.last_commit().is_some_and(matroska_diesel::Committed::is_pending)));
    assert_eq!(pending(&cached_a).await, 1, "the intent is durable");
    let plain = Cache::builder().shared_backend(backend.clone()).build().unwrap();
    assert!(
        stale_views(&mut db_a, &plain).await.iter().any(|(v, ..)| *v == View::CountPublished(1)),
        "stale in the shared backend"
    );
    // process B starts: its first read applies the outbox first
    let cache_b = Cache::builder().shared_backend(backend.clone()).build().unwrap();
    let cached_b = outboxed(&tdb, Arc::new(cache_b.clone()), config()).await;
    let mut db_b = tdb.connect(&cached_b).await;
    assert_fresh(&mut db_b, &cache_b).await;
    assert_eq!(pending(&cached_b).await, 0);
    assert_fresh(&mut db_b, &plain).await;
    drop((db_a, db_b));
    tdb.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_kept_and_replayed() {
    let tdb = TestDb::new("outbox_dead").await;
    let cache = Cache::new(MemoryBackend::new());
    let switch = Switch::new(cache.clone());
    let cached = outboxed(&tdb, Arc::new(switch.clone()), config()).await;
    let mut db = tdb.connect(&cached).await;
    prepare(&mut db, &cache).await;
    cached.outbox().unwrap().drain_all().await.unwrap();
    switch.down.store(true, Ordering::SeqCst);
    publish_draft_2(&mut db).await;
    let outbox = cached.outbox().unwrap();
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
    assert_fresh(&mut db, &cache).await;
    drop(db);
    tdb.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_drainer_applies_what_a_writer_left() {
    let tdb = TestDb::new("outbox_drainer").await;
    let backend = Arc::new(MemoryBackend::new());
    let cache_a = Cache::builder().shared_backend(backend.clone()).build().unwrap();
    let switch = Switch::new(cache_a.clone());
    let cached_a = outboxed(&tdb, Arc::new(switch.clone()), config()).await;
    let mut db_a = tdb.connect(&cached_a).await;
    prepare(&mut db_a, &cache_a).await;
    cached_a.outbox().unwrap().drain_all().await.unwrap();
    switch.down.store(true, Ordering::SeqCst);
    publish_draft_2(&mut db_a).await;
    let cache_b = Cache::builder().shared_backend(backend).build().unwrap();
    let cfg = OutboxConfig::new().poll_interval(Duration::from_millis(20)).grace(Duration::ZERO);
    let cached_b = outboxed(&tdb, Arc::new(cache_b.clone()), cfg).await;
    eventually("the drainer applies the intent", || async { pending(&cached_b).await == 0 }).await;
    let mut db_b = tdb.connect(&cached_b).await;
    assert_fresh(&mut db_b, &cache_b).await;
    drop((db_a, db_b));
    tdb.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_table_name_is_checked() {
    let tdb = TestDb::new("outbox_names").await;
    let cache = Cache::new(MemoryBackend::new());
    let b = CachedDatabase::builder(cache.clone());
    let b = if tdb.is_pg() {
        b.outbox::<AsyncPgConnection>(OutboxConfig::new().table("x; DROP"), &tdb.url)
    } else {
        b.outbox::<SqliteConn>(OutboxConfig::new().table("x; DROP"), &tdb.url)
    };
    assert!(matches!(b.build(), Err(matroska_diesel::Error::Config(_))));
    let cached = outboxed(&tdb, Arc::new(cache.clone()), config().table("app_cache_intents")).await;
    cached.outbox().unwrap().create_table().await.unwrap(); // idempotent
    let mut db = tdb.connect(&cached).await;
    seed(&mut db).await;
    assert_eq!(cached.outbox().unwrap().table(), "app_cache_intents");
    drop(db);
    tdb.drop_db().await;
}

// -- processes and Redis ----------------------------------------------------

const CHILD: &str = "MATROSKA_DIESEL_OUTBOX_CHILD";

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
    let b = CachedDatabase::builder_with(Arc::new(AbortOnInvalidate));
    let (cached, mut db) = if url.starts_with("postgres") {
        let cached = b.outbox::<AsyncPgConnection>(config(), &url).build().unwrap();
        let db = Db::Pg(cached.wrap(AsyncPgConnection::establish(&url).await.unwrap()));
        (cached, db)
    } else {
        let cached = b.outbox::<SqliteConn>(config(), &url).build().unwrap();
        let db = Db::Sqlite(cached.wrap(sqlite(&url).await));
        (cached, db)
    };
    let _ = cached;
    publish_draft_2(&mut db).await; // commits, then aborts
    unreachable!("the invalidation aborts the process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_between_commit_and_invalidation_loses_nothing() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let Some(server) = crate::redis_server::RedisServer::start() else { return };
    let tdb = TestDb::new("outbox_kill").await;
    let namespace = format!("dkill-{}", std::process::id());
    let cache = redis_cache(&server.url(), &namespace).await;
    let cached = outboxed(&tdb, Arc::new(cache.clone()), config()).await;
    let mut db = tdb.connect(&cached).await;
    prepare(&mut db, &cache).await;
    cached.outbox().unwrap().drain_all().await.unwrap();
    // the child writer commits and dies before invalidating
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "outbox::child_writer_killed_after_commit", "--nocapture", "--test-threads", "1"])
        .env(CHILD, &tdb.url)
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die");
    // the shared cache is stale now: that is what a crash leaves
    let other = redis_cache(&server.url(), &namespace).await;
    let stale = stale_views(&mut db, &other).await;
    assert!(stale.iter().any(|(v, ..)| *v == View::CountPublished(1)), "a crash leaves stale entries: {stale:?}");
    assert_eq!(pending(&cached).await, 1, "but the intent is in the table");
    // a process (re)starting with the outbox applies it before serving
    let restarted = redis_cache(&server.url(), &namespace).await;
    let cached2 = outboxed(&tdb, Arc::new(restarted.clone()), config()).await;
    let mut db2 = tdb.connect(&cached2).await;
    assert_fresh(&mut db2, &restarted).await;
    assert_fresh(&mut db2, &other).await;
    assert_eq!(pending(&cached2).await, 0);
    drop((db, db2));
    tdb.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_while_redis_is_down_and_reads_wait_for_their_intents() {
    let Some(mut server) = crate::redis_server::RedisServer::start() else { return };
    let tdb = TestDb::new("outbox_redis_down").await;
    let namespace = format!("ddown-{}", std::process::id());
    let backend = matroska::RedisBackend::builder(server.url())
        .namespace(namespace.as_str())
        .connect_timeout(Duration::from_millis(200))
        .response_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let cache = Cache::builder().backend(backend).prefix("t").build().unwrap();
    let cached = outboxed(&tdb, Arc::new(cache.clone()), config()).await;
    let mut db = tdb.connect(&cached).await;
    prepare(&mut db, &cache).await;
    cached.outbox().unwrap().drain_all().await.unwrap();
    server.stop();
    // writes succeed; their intents are durable
    publish_draft_2(&mut db).await;
    assert!(on!(&mut db, |c| c.last_commit().is_some_and(matroska_diesel::Committed::is_pending)));
    on!(&mut db, |c| diesel::delete(comments::table.find(1)).execute(c).await).unwrap();
    assert_eq!(pending(&cached).await, 2);
    // reads are not served from the unreachable cache (they load)
    assert_eq!(View::CountPublished(1).read(&mut db, &cache).await, View::CountPublished(1).query(&mut db).await);
    server.restart();
    // another process connects after the outage: it applies the intents
    // before its first read
    let fresh = redis_cache(&server.url(), &namespace).await;
    let cached2 = outboxed(&tdb, Arc::new(fresh.clone()), config()).await;
    let mut db2 = tdb.connect(&cached2).await;
    assert_fresh(&mut db2, &fresh).await;
    assert_eq!(pending(&cached2).await, 0);
    // and the first process serves nothing stale either
    eventually("the first cache recovers", || async { cache.get::<serde_json::Value>("probe").await.is_ok() }).await;
    assert_fresh(&mut db, &cache).await;
    drop((db, db2));
    tdb.drop_db().await;
}
