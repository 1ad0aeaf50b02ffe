//! The shared behaviour suite and Redis-specific tests for `RedisBackend`.
//!
//! Each test spawns its own `redis-server` on a free loopback port (binary:
//! `MATROSKA_REDIS_SERVER`, default `redis-server` on the PATH), or uses
//! `MATROSKA_REDIS_URL` with a fresh namespace. Without a server the tests are
//! skipped with a message, unless `MATROSKA_REQUIRE_REDIS=1`.
//!
//! ```text
//! cargo test -p matroska --test redis
//! MATROSKA_REDIS_URL=redis://127.0.0.1:6379/ cargo test -p matroska --test redis
//! ```

mod common;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use matroska::backend::redis::{MAX_DEPENDENCIES, MAX_TTL};
use matroska::{Backend, BackendErrorKind, Cache, Dep, Error, Lookup, PutOutcome, PutRequest, RedisBackend, Ticket};
use proptest::prelude::*;
use redis::aio::ConnectionManager;
use redis_server::{builder, target, RedisServer, Target};

backend_suite!(redis_server::served_backend());

const TTL: Duration = Duration::from_secs(60);

async fn backend(target: &Target) -> RedisBackend {
    builder(target).build().await.expect("connect to Redis")
}

async fn put(b: &RedisBackend, key: &str, deps: &[&str], ttl: Duration, ticket: Option<Ticket>) -> PutOutcome {
    let deps: Vec<String> = deps.iter().map(|d| d.to_string()).collect();
    b.put(PutRequest { key, value: Bytes::from_static(b"value"), deps: &deps, ttl, ticket }).await.unwrap()
}

async fn store(b: &RedisBackend, key: &str, deps: &[&str], ttl: Duration) {
    assert_eq!(put(b, key, deps, ttl, None).await, PutOutcome::Stored);
}

async fn query<T: redis::FromRedisValue>(conn: &mut ConnectionManager, cmd: &redis::Cmd) -> T {
    cmd.query_async(conn).await.unwrap()
}

async fn members(b: &RedisBackend, key: &str) -> Vec<String> {
    let mut conn = b.connection().expect("a single-node backend");
    query(&mut conn, redis::cmd("ZRANGE").arg(key).arg(0).arg(-1)).await
}

async fn card(b: &RedisBackend, key: &str) -> usize {
    let mut conn = b.connection().expect("a single-node backend");
    query(&mut conn, redis::cmd("ZCARD").arg(key)).await
}

async fn pttl(b: &RedisBackend, key: &str) -> i64 {
    let mut conn = b.connection().expect("a single-node backend");
    query(&mut conn, redis::cmd("PTTL").arg(key)).await
}

async fn exists(b: &RedisBackend, key: &str) -> bool {
    let mut conn = b.connection().expect("a single-node backend");
    query::<i64>(&mut conn, redis::cmd("EXISTS").arg(key)).await == 1
}

#[tokio::test]
async fn layout_and_expiries() {
    let Some(t) = target() else { return };
    let b = builder(&t).tombstone_window(Duration::from_secs(30)).build().await.unwrap();
    let started = Instant::now();
    assert_eq!(put(&b, "k", &["a", "b"], TTL, None).await, PutOutcome::Stored);
    store(&b, "short", &["a"], Duration::from_secs(5)).await;

    let entry = b.entry_key("k");
    assert!(entry.contains(":e:k") && entry.contains('{'));
    let ttl = pttl(&b, &entry).await;
    // the entry's expiry counts down from 60 s since the put
    let elapsed = started.elapsed().as_millis() as i64;
    assert!((60_000 - elapsed - 1..=60_000).contains(&ttl), "entry PTTL {ttl} after {elapsed} ms");

    // bookkeeping has no expiry: eviction under volatile-* never drops it
    for dep in ["a", "b"] {
        assert_eq!(pttl(&b, &b.index_key(dep)).await, -1, "index {dep} has no expiry");
    }
    assert_eq!(members(&b, &b.index_key("a")).await.len(), 2);
    let m = &members(&b, &b.index_key("b")).await[0];
    assert_eq!(&m[16..], entry, "member = generation ‖ entry key");

    assert_eq!(b.invalidate(&["a".into()]).await.unwrap().dropped, 2);
    assert!(!exists(&b, &entry).await);
    // the dropped entry is gone from its other index too (an empty index is
    // deleted)
    assert!(!exists(&b, &b.index_key("b")).await);
    assert_eq!(pttl(&b, &b.tombstone_key("a")).await, -1, "tombstones have no expiry (the sweep deletes them)");
}

#[tokio::test]
async fn tickets_are_server_time_and_expire_with_the_window() {
    let Some(t) = target() else { return };
    let window = Duration::from_millis(300);
    let b = builder(&t).tombstone_window(window).build().await.unwrap();
    let Lookup::Miss(ticket) = b.get("k").await.unwrap() else { panic!("miss expected") };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    assert!(ticket.value().abs_diff(now) < 5_000_000, "ticket in µs");
    assert!(b.ticket().await.unwrap() >= ticket);

    // sleeping longer than the window only makes the ticket older
    tokio::time::sleep(window + Duration::from_millis(100)).await;
    assert_eq!(put(&b, "k", &["a"], TTL, Some(ticket)).await, PutOutcome::Refused);
    // a fresh ticket, an invalidation after it, then a put with it: refused
    let fresh = b.ticket().await.unwrap();
    b.invalidate(&["a".into()]).await.unwrap();
    assert_eq!(put(&b, "k", &["a"], TTL, Some(fresh)).await, PutOutcome::Refused);
    // a ticket after the tombstone stores, unless the put came later than
    // the window after its ticket (a loaded machine): then try again
    loop {
        let issued = Instant::now();
        let newer = b.ticket().await.unwrap();
        match put(&b, "k", &["a"], TTL, Some(newer)).await {
            PutOutcome::Stored => break,
            PutOutcome::Refused => assert!(issued.elapsed() >= window, "a fresh ticket refused"),
        }
    }
    // a ticket from the future (not this server's) is refused
    let future = Ticket::new(b.ticket().await.unwrap().value() + 60_000_000);
    assert_eq!(put(&b, "k2", &["a"], TTL, Some(future)).await, PutOutcome::Refused);
}

/// Waits until none of `keys` exists any more (their TTL ran out): Redis
/// decides, not a sleep racing with it.
async fn wait_expired(b: &RedisBackend, keys: &[String]) {
    let mut conn = b.connection().expect("a single-node backend");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut left = 0i64;
        for part in keys.chunks(1000) {
            left += query::<i64>(&mut conn, redis::cmd("EXISTS").arg(part)).await;
        }
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{left} keys still exist");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_dependency_index_holds_only_live_members() {
    let Some(t) = target() else { return };
    let b = backend(&t).await;
    store(&b, "long", &["hot"], TTL).await;
    let short = Duration::from_secs(2);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..625 {
                store(&b, &format!("short:{w}:{i}"), &["hot"], short).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let grown = card(&b, &b.index_key("hot")).await;
    if started.elapsed() < short {
        // nothing has expired yet: every registration is there
        assert_eq!(grown, 10_001, "the index holds every member");
    } else {
        eprintln!("writing took {:?}, longer than the short TTL: not checking the full index", started.elapsed());
    }
    // once every short-lived entry has expired, one more touch prunes them
    let keys: Vec<String> =
        (0..16).flat_map(|w| (0..625).map(move |i| format!("short:{w}:{i}"))).map(|k| b.entry_key(&k)).collect();
    wait_expired(&b, &keys).await;
    store(&b, "another", &["hot"], Duration::from_secs(30)).await;
    let live = members(&b, &b.index_key("hot")).await;
    assert_eq!(live.len(), 2, "only live members remain");
    assert_eq!(pttl(&b, &b.index_key("hot")).await, -1, "the index has no expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_100_000_dependents_is_complete_and_chunked() {
    let Some(t) = target() else { return };
    // (a loaded machine may take longer than a second for some calls: this
    // test checks completeness and chunking, not speed)
    let b = builder(&t).chunk_size(1000).response_timeout(Duration::from_secs(30)).build().await.unwrap();
    // long enough that no entry expires while a slow machine writes them
    const TTL: Duration = Duration::from_secs(3600);
    let n_tasks = 32;
    let per_task = 100_000 / n_tasks;
    let mut tasks = Vec::new();
    for w in 0..n_tasks {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                let key = format!("e:{w}:{i}");
                store(&b, &key, &["big"], TTL).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total = (n_tasks * per_task) as u64;
    assert_eq!(card(&b, &b.index_key("big")).await as u64, total);

    let mut conn = b.connection().expect("a single-node backend");
    let _: () = query(&mut conn, redis::cmd("CONFIG").arg("SET").arg("slowlog-log-slower-than").arg(20_000)).await;
    let _: () = query(&mut conn, redis::cmd("SLOWLOG").arg("RESET")).await;
    let calls_before = script_calls(&mut conn).await;

    // a reader missed before the invalidation; its put races with the drain
    let Lookup::Miss(ticket) = b.get("e:racer").await.unwrap() else { panic!() };
    let inv = {
        let b = b.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let n = b.invalidate(&["big".into()]).await.unwrap().dropped;
            (n, started.elapsed())
        })
    };
    let mut refused = 0;
    let mut racing = 0;
    while !inv.is_finished() {
        racing += 1;
        if put(&b, "e:racer", &["big"], TTL, Some(ticket)).await == PutOutcome::Refused {
            refused += 1;
        }
    }
    let (dropped, took) = inv.await.unwrap();
    assert!(dropped >= total, "dropped {dropped} of {total}");
    // once the invalidation has returned, the stale put is refused (those
    // racing with it were refused or dropped)
    assert_eq!(put(&b, "e:racer", &["big"], TTL, Some(ticket)).await, PutOutcome::Refused);
    eprintln!("{refused} of {racing} racing puts refused");
    assert!(matches!(b.get("e:racer").await.unwrap(), Lookup::Miss(_)));
    for i in [0, 1, per_task / 2, per_task - 1] {
        assert!(matches!(b.get(&format!("e:0:{i}")).await.unwrap(), Lookup::Miss(_)));
    }
    assert!(!exists(&b, &b.index_key("big")).await);
    assert!(!exists(&b, &b.drain_key("big")).await);
    let dbsize: i64 = query(&mut conn, &redis::cmd("DBSIZE")).await;
    assert!(dbsize <= 2, "only the tombstone (and racer leftovers) remain: {dbsize}");

    // chunked: one call drops at most a chunk, so it took at least
    // total / chunk calls (the racing puts are calls too)
    let calls = script_calls(&mut conn).await - calls_before;
    assert!(calls >= 100, "{calls} script calls for {total} dependents");
    // calls that ran 20 ms or more (server time, which a loaded machine
    // stretches): reported, not asserted
    let slow: Vec<redis::Value> = query(&mut conn, redis::cmd("SLOWLOG").arg("GET").arg(100)).await;
    eprintln!("invalidated {dropped} dependents in {took:?}; {} calls of 20 ms or more", slow.len());
}

#[tokio::test]
async fn overwrite_with_other_dependencies_leaves_no_registration() {
    let Some(t) = target() else { return };
    let b = backend(&t).await;
    store(&b, "k", &["a", "b"], TTL).await;
    store(&b, "k", &["b", "c"], TTL).await;
    assert!(!exists(&b, &b.index_key("a")).await, "old dep unregistered");
    let in_b = members(&b, &b.index_key("b")).await;
    let in_c = members(&b, &b.index_key("c")).await;
    assert_eq!(in_b.len(), 1);
    assert_eq!(in_b, in_c, "one generation, registered under both");

    // invalidating the old dependency does not drop the newer version
    assert_eq!(b.invalidate(&["a".into()]).await.unwrap().dropped, 0);
    assert!(matches!(b.get("k").await.unwrap(), Lookup::Hit(_)));

    // a stray old-generation member (as after a failed cleanup) is ignored
    let mut conn = b.connection().expect("a single-node backend");
    let stray = format!("0000000000000000{}", b.entry_key("k"));
    let _: i64 = query(&mut conn, redis::cmd("ZADD").arg(b.index_key("z")).arg("+inf").arg(&stray)).await;
    assert_eq!(b.invalidate(&["z".into()]).await.unwrap().dropped, 0);
    assert!(matches!(b.get("k").await.unwrap(), Lookup::Hit(_)));

    assert!(b.delete("k").await.unwrap());
    for dep in ["a", "b", "c"] {
        assert!(!exists(&b, &b.index_key(dep)).await, "index {dep} removed");
    }
    assert!(!b.delete("k").await.unwrap());
}

#[tokio::test]
async fn foreign_data_is_a_typed_error_naming_the_key() {
    let Some(t) = target() else { return };
    let b = backend(&t).await;
    let cache = Cache::builder().backend(b.clone()).build().unwrap();
    let key_of = |k: &str| format!(":{k}"); // the cache's empty prefix
    let mut conn = b.connection().expect("a single-node backend");

    // a list where an entry should be
    let entry = b.entry_key(&key_of("listed"));
    let _: i64 = query(&mut conn, redis::cmd("RPUSH").arg(&entry).arg("x")).await;
    let err = cache.get::<u32>("listed").await.unwrap_err();
    let Error::Backend(e) = &err else { panic!("{err:?}") };
    assert_eq!(e.kind(), BackendErrorKind::ForeignData);
    assert_eq!(e.key(), Some(entry.as_str()));
    assert!(!err.is_transient());
    let err = cache.put("listed", &1u32, [Dep::tag("t")], TTL).await;
    assert!(matches!(&err, Err(Error::Backend(e)) if e.kind() == BackendErrorKind::ForeignData), "{err:?}");
    let loaded: u32 = cache.get_or_load("listed", TTL, |_| async { Ok::<_, Error>(7) }).await.unwrap();
    assert_eq!(loaded, 7);
    assert!(cache.has("listed").await.is_err());
    // delete removes it, and the key is usable again
    assert!(cache.delete("listed").await.unwrap());
    cache.put("listed", &1u32, [Dep::tag("t")], TTL).await.unwrap();
    assert_eq!(cache.get::<u32>("listed").await.unwrap(), Some(1));

    // a string where a dependency's index should be: put and invalidate fail,
    // nothing is written
    let dep = Dep::tag("bad");
    let index = b.index_key(&format!(":{}", dep.as_str()));
    let _: () = query(&mut conn, redis::cmd("SET").arg(&index).arg("foreign")).await;
    let err = cache.put("x", &1u32, [dep.clone()], TTL).await.unwrap_err();
    let Error::Backend(e) = &err else { panic!("{err:?}") };
    assert_eq!(e.kind(), BackendErrorKind::ForeignData);
    assert_eq!(e.key(), Some(index.as_str()));
    assert_eq!(cache.get::<u32>("x").await.unwrap(), None);
    let err = cache.invalidate([dep.clone()]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalidation { source: e, failed, kept: false }
            if e.kind() == BackendErrorKind::ForeignData && e.key() == Some(index.as_str()) && failed == &vec![dep.clone()]),
        "{err:?}"
    );

    // foreign bytes in our own format's place: a decode error, dropped by
    // get_or_load
    let entry = b.entry_key(&key_of("garbled"));
    let _: i64 = query(&mut conn, redis::cmd("HSET").arg(&entry).arg("v").arg(&[0xffu8, 0, 1][..])).await;
    assert!(matches!(cache.get::<u32>("garbled").await, Err(Error::Decode { .. })));
    let v: u32 = cache.get_or_load("garbled", TTL, |_| async { Ok::<_, Error>(3) }).await.unwrap();
    assert_eq!(v, 3);
    assert_eq!(cache.get::<u32>("garbled").await.unwrap(), Some(3));
}

#[tokio::test]
async fn tombstones_of_many_dependencies_are_checked_and_typed() {
    let Some(t) = target() else { return };
    let b = backend(&t).await;
    let mut conn = b.connection().expect("a single-node backend");
    let deps = ["d1", "d2", "d3", "d4"];

    // a tombstone among several (read together) refuses a put with an older
    // ticket, whichever dependency it is on
    let ticket = b.ticket().await.unwrap();
    b.invalidate(&["d3".into()]).await.unwrap();
    assert_eq!(put(&b, "k", &deps, TTL, Some(ticket)).await, PutOutcome::Refused);
    let fresh = b.ticket().await.unwrap();
    assert_eq!(put(&b, "k", &deps, TTL, Some(fresh)).await, PutOutcome::Stored);

    // a hash where a tombstone should be: ForeignData naming it, nothing written
    let tomb = b.tombstone_key("d4");
    let _: i64 = query(&mut conn, redis::cmd("HSET").arg(&tomb).arg("f").arg("x")).await;
    let err = b
        .put(PutRequest {
            key: "other",
            value: Bytes::from_static(b"v"),
            deps: &deps.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            ttl: TTL,
            ticket: Some(b.ticket().await.unwrap()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::ForeignData);
    assert_eq!(err.key(), Some(tomb.as_str()));
    assert!(!exists(&b, &b.entry_key("other")).await);
    assert_eq!(members(&b, &b.index_key("d1")).await.len(), 1, "nothing registered");

    // an entry reached through two invalidated dependencies counts once and
    // leaves its other indexes (batched removal)
    store(&b, "k2", &["d1", "d3"], TTL).await;
    assert_eq!(b.invalidate(&["d1".into(), "d2".into()]).await.unwrap().dropped, 2);
    assert!(!exists(&b, &b.entry_key("k")).await);
    assert!(!exists(&b, &b.entry_key("k2")).await);
    assert!(!exists(&b, &b.index_key("d3")).await, "{:?}", members(&b, &b.index_key("d3")).await);
}

#[tokio::test]
async fn huge_keys_and_dependencies_with_braces() {
    let Some(t) = target() else { return };
    let b = builder(&t).namespace("n{s}").build().await.unwrap();
    let key = format!("{{k}}\n{}", "x".repeat(1 << 20));
    let dep = format!("}}{{ dep: {}", "y".repeat(1 << 20));
    store(&b, &key, &[dep.as_str(), "small"], TTL).await;
    assert!(b.entry_key(&key).starts_with("n%7Bs%7D:{"));
    assert!(matches!(b.get(&key).await.unwrap(), Lookup::Hit(_)));
    assert_eq!(b.invalidate(std::slice::from_ref(&dep)).await.unwrap().dropped, 1);
    assert!(matches!(b.get(&key).await.unwrap(), Lookup::Miss(_)));
    assert!(!exists(&b, &b.index_key("small")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_mid_workload() {
    let Some(Target::Spawned(mut server)) = target() else {
        eprintln!("skipping the fault test: it needs a spawned server");
        return;
    };
    let (connect, response) = (Duration::from_millis(200), Duration::from_millis(300));
    // an operation waits at most for connect + response timeout (each of
    // the cache's calls), so these bounds hold on any machine
    let op_timeout = connect + response;
    let b =
        RedisBackend::builder(server.url()).connect_timeout(connect).response_timeout(response).build().await.unwrap();
    let cache = Cache::builder().backend(b.clone()).prefix("f").build().unwrap();

    // a workload running across the outage
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4u32 {
        let (cache, stop) = (cache.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("w{w}:{}", i % 50);
                let v: u32 = cache
                    .get_or_load(&key, TTL, |deps| async move {
                        deps.push(Dep::id("row", i % 10));
                        Ok::<_, Error>(i)
                    })
                    .await
                    .expect("get_or_load never fails on backend errors");
                let _ = v;
                let _ = cache.invalidate([Dep::id("row", i % 10)]).await;
                i += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    cache.put("before", &1u32, [Dep::tag("t")], TTL).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.stop();
    // get/put/invalidate: typed transient errors; get_or_load: the loader's value
    let started = Instant::now();
    let err = cache.get::<u32>("before").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = cache.put("k", &1u32, [Dep::tag("t")], TTL).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = cache.invalidate([Dep::tag("t")]).await.unwrap_err();
    assert!(err.is_transient(), "invalidate never reports false success: {err:?}");
    let loaded: u32 = cache.get_or_load("k", TTL, |_| async { Ok::<_, Error>(42) }).await.unwrap();
    assert_eq!(loaded, 42);
    // four operations, each bounded by the operation timeout (a few calls
    // each at most)
    assert!(started.elapsed() < op_timeout * 4 * 4, "errors come in time: {:?}", started.elapsed());
    assert!(cache.stats().backend_errors >= 4);

    // the circuit breaker: while the server is down, operations fail at once
    // (at most one probe per cool-down waits for a timeout) instead of each
    // waiting up to connect + response timeout (0.5 s here, 100 s for 200)
    let started = Instant::now();
    for i in 0..200u32 {
        let err = cache.get::<u32>("before").await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        let loaded: u32 = cache.get_or_load(&format!("l{i}"), TTL, |_| async move { Ok::<_, Error>(i) }).await.unwrap();
        assert_eq!(loaded, i);
    }
    let err = cache.invalidate([Dep::tag("t")]).await.unwrap_err();
    assert!(err.is_transient(), "an open circuit is an error, never a success: {err:?}");
    let outage = started.elapsed();
    eprintln!("200 gets + 200 get_or_load during the outage: {outage:?}");
    // without the breaker each would wait for the operation timeout (400 ×
    // 0.5 s); with it, only one probe per cool-down does
    assert!(outage < op_timeout * 400 / 8, "operations fail fast during an outage: {outage:?}");

    server.restart();
    let restarted = Instant::now();
    // recovery without a new backend: the connection manager reconnects and
    // the scripts are reloaded
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match cache.put("after", &2u32, [Dep::tag("t")], TTL).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                // transient, or refused while the invalidation of "t" that
                // failed during the outage is still pending
                assert!(e.is_transient() || matches!(e, Error::NotStored { .. }), "{e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no recovery after restart: {e:?}"),
        }
    }
    eprintln!("recovered {:?} after the restart", restarted.elapsed());
    assert_eq!(cache.get::<u32>("after").await.unwrap(), Some(2));
    assert_eq!(cache.invalidate([Dep::tag("t")]).await.unwrap(), 1);
    assert_eq!(cache.get::<u32>("after").await.unwrap(), None);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.expect("no panic in the workload");
    }
}

#[tokio::test]
async fn unreachable_server_at_build_is_a_transient_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = RedisBackend::builder(format!("redis://127.0.0.1:{port}/"))
        .connect_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = RedisBackend::builder("not a url").build().await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Refused);
}

#[test]
fn futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let b: Option<RedisBackend> = None;
    if let Some(b) = b {
        is_send(&b.get("k"));
        is_send(&b.invalidate(&[]));
        is_send(&b.clear(""));
        is_send(&b.sweep_now());
        is_send(&RedisBackend::builder("redis://x/").build());
    }
}

/// Script calls (`EVALSHA` and `EVAL`) the server has run since its last
/// `CONFIG RESETSTAT`, from `INFO commandstats`.
async fn script_calls(conn: &mut ConnectionManager) -> u64 {
    let info: String = query(conn, redis::cmd("INFO").arg("commandstats")).await;
    calls_in(&info)
}

fn calls_in(info: &str) -> u64 {
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// A spawned server (tests that change its configuration or count its
/// calls need their own).
fn spawned(args: &[&str]) -> Option<RedisServer> {
    if std::env::var("MATROSKA_REDIS_URL").is_ok_and(|u| !u.is_empty()) {
        eprintln!("skipping: this test needs a spawned server");
        return None;
    }
    RedisServer::start_with(args)
}

/// One dependency with foreign data must not keep the others from
/// taking full effect.
#[tokio::test]
async fn foreign_data_under_one_dependency_does_not_block_the_others() {
    let Some(t) = target() else { return };
    let b = backend(&t).await;
    let mut conn = b.connection().expect("a single-node backend");
    for (k, d) in [("k1", "d1"), ("k2", "d2"), ("k3", "d3"), ("k4", "d4")] {
        store(&b, k, &[d], TTL).await;
    }
    // a string where d2's index should be, a hash where d4's drain key
    // should be
    let _: () = query(&mut conn, redis::cmd("SET").arg(b.index_key("d2")).arg("foreign")).await;
    let _: i64 = query(&mut conn, redis::cmd("HSET").arg(b.drain_key("d4")).arg("f").arg("x")).await;
    let deps: Vec<String> = ["d1", "d2", "d3", "d4"].iter().map(|d| d.to_string()).collect();
    let out = b.invalidate(&deps).await.expect("the call as a whole succeeds");
    assert_eq!(out.failed, vec![1, 3], "only the dependencies with foreign data are reported");
    let e = out.error.as_ref().expect("an error");
    assert_eq!(e.kind(), BackendErrorKind::ForeignData);
    assert_eq!(e.key(), Some(b.index_key("d2").as_str()), "the error names the key");
    assert_eq!(out.dropped, 2);
    for k in ["k1", "k3"] {
        assert!(matches!(b.get(k).await.unwrap(), Lookup::Miss(_)), "{k} dropped");
    }
    // nothing was written for the skipped dependencies
    assert!(exists(&b, &b.tombstone_key("d1")).await && exists(&b, &b.tombstone_key("d3")).await);
    assert!(!exists(&b, &b.tombstone_key("d2")).await && !exists(&b, &b.tombstone_key("d4")).await);
    assert!(matches!(b.get("k4").await.unwrap(), Lookup::Hit(_)), "k4 untouched");
    // through the cache: only the failed dependencies are named, not kept
    // (foreign data is not transient)
    let cache = Cache::builder().backend(b.clone()).prefix("c").build().unwrap();
    cache.put("x", &1u32, [Dep::tag("fine")], TTL).await.unwrap();
    let bad = Dep::tag("bad");
    let _: () = query(&mut conn, redis::cmd("SET").arg(b.index_key(&format!("c:{}", bad.as_str()))).arg("x")).await;
    let err = cache.invalidate([Dep::tag("fine"), bad.clone()]).await.unwrap_err();
    assert!(matches!(&err, Error::Invalidation { failed, kept: false, .. } if failed == &vec![bad.clone()]), "{err:?}");
    assert_eq!(cache.get::<u32>("x").await.unwrap(), None, "the healthy dependency took effect");
}

/// A put with a ticket and tens of thousands of dependencies is
/// stored (Lua's unpack() stops at about 8,000 values), up to the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_with_tens_of_thousands_of_dependencies() {
    let Some(t) = target() else { return };
    // this test checks that such puts work, not how fast: a loaded machine
    // may take seconds to build and send 100,000 keys
    let b = builder(&t).response_timeout(Duration::from_secs(60)).build().await.unwrap();
    for n in [10_000, 50_000, MAX_DEPENDENCIES] {
        let deps: Vec<String> = (0..n).map(|i| format!("wide{n}:{i}")).collect();
        let key = format!("wide{n}");
        let Lookup::Miss(ticket) = b.get(&key).await.unwrap() else { panic!("a miss") };
        let started = Instant::now();
        let request =
            PutRequest { key: &key, value: Bytes::from_static(b"v"), deps: &deps, ttl: TTL, ticket: Some(ticket) };
        let stored = b.put(request).await;
        eprintln!("put with {n} dependencies and a ticket: {:?} in {:?}", stored, started.elapsed());
        assert_eq!(stored.unwrap(), PutOutcome::Stored);
        assert!(matches!(b.get(&key).await.unwrap(), Lookup::Hit(_)));
        // an invalidation since the ticket refuses the same put
        b.invalidate(&deps[n / 2..n / 2 + 1]).await.unwrap();
        assert!(matches!(b.get(&key).await.unwrap(), Lookup::Miss(_)));
        let request =
            PutRequest { key: &key, value: Bytes::from_static(b"v"), deps: &deps, ttl: TTL, ticket: Some(ticket) };
        assert_eq!(b.put(request).await.unwrap(), PutOutcome::Refused);
        // every one of them drops it, and invalidating all of them at once works
        store(&b, &key, &deps.iter().map(String::as_str).collect::<Vec<_>>(), TTL).await;
        let started = Instant::now();
        let out = b.invalidate(&deps).await.unwrap();
        eprintln!("invalidating {n} dependencies: {:?}", started.elapsed());
        assert!(out.is_complete(), "{:?}", out.error);
        assert_eq!(out.dropped, 1);
        assert!(!exists(&b, &b.index_key(&deps[n - 1])).await);
    }
    // above the limit: a typed error naming the key, nothing written
    let deps: Vec<String> = (0..=MAX_DEPENDENCIES).map(|i| format!("over:{i}")).collect();
    let request = PutRequest { key: "over", value: Bytes::from_static(b"v"), deps: &deps, ttl: TTL, ticket: None };
    let err = b.put(request).await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Refused);
    assert_eq!(err.key(), Some(b.entry_key("over").as_str()));
    assert!(!exists(&b, &b.entry_key("over")).await);
}

/// Invalidating thousands of dependencies with few dependents each
/// takes a handful of script calls, not one per dependency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_thousands_of_dependencies_takes_a_handful_of_calls() {
    let Some(server) = spawned(&[]) else { return };
    for (chunk, dependents, most) in [(1000, 1, 5), (1000, 3, 20), (100, 1, 40)] {
        // (no background sweep: its calls would be counted)
        let b = RedisBackend::builder(server.url())
            .namespace(format!("n{chunk}-{dependents}"))
            .chunk_size(chunk)
            .sweep_interval(Duration::ZERO);
        let b = b.build().await.unwrap();
        let mut conn = b.connection().unwrap();
        let deps: Vec<String> = (0..3000).map(|i| format!("d{i}")).collect();
        let mut tasks = Vec::new();
        for w in 0..8 {
            let (b, deps) = (b.clone(), deps.clone());
            tasks.push(tokio::spawn(async move {
                for i in (w..deps.len()).step_by(8) {
                    for e in 0..dependents {
                        store(&b, &format!("k{i}:{e}"), &[deps[i].as_str()], TTL).await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let _: () = query(&mut conn, redis::cmd("CONFIG").arg("RESETSTAT")).await;
        let out = b.invalidate(&deps).await.unwrap();
        let calls = script_calls(&mut conn).await;
        eprintln!("chunk {chunk}: 3000 dependencies x {dependents} dependents invalidated in {calls} script calls");
        assert!(out.is_complete());
        assert_eq!(out.dropped, 3000 * dependents as u64);
        assert!(calls <= most, "{calls} script calls (at most {most} expected)");
        for i in [0, 1499, 2999] {
            assert!(!exists(&b, &b.index_key(&deps[i])).await);
            assert!(!exists(&b, &b.drain_key(&deps[i])).await);
            assert!(matches!(b.get(&format!("k{i}:0")).await.unwrap(), Lookup::Miss(_)));
        }
    }
}

/// Every builder setting is checked; out of range is a `Config`
/// error naming it, never a panic.
#[tokio::test]
async fn settings_out_of_range_are_config_errors() {
    let Some(t) = target() else { return };
    type Set = fn(matroska::backend::redis::RedisBackendBuilder) -> matroska::backend::redis::RedisBackendBuilder;
    let cases: Vec<(&str, Set)> = vec![
        ("tombstone_window", |b| b.tombstone_window(Duration::MAX)),
        ("tombstone_window", |b| b.tombstone_window(Duration::ZERO)),
        ("tombstone_window", |b| b.tombstone_window(Duration::from_secs(8 * 24 * 3600))),
        ("chunk_size", |b| b.chunk_size(0)),
        ("chunk_size", |b| b.chunk_size(usize::MAX)),
        ("connect_timeout", |b| b.connect_timeout(Duration::ZERO)),
        ("connect_timeout", |b| b.connect_timeout(Duration::MAX)),
        ("response_timeout", |b| b.response_timeout(Duration::ZERO)),
        ("response_timeout", |b| b.response_timeout(Duration::MAX)),
        ("replica_acks", |b| b.replica_acks(usize::MAX)),
        ("circuit_cool_down", |b| b.circuit_cool_down(Duration::MAX)),
        ("sweep_interval", |b| b.sweep_interval(Duration::from_nanos(1))),
        ("sweep_interval", |b| b.sweep_interval(Duration::MAX)),
    ];
    for (setting, set) in cases {
        let err = set(builder(&t)).build().await.unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Config, "{setting}: {err}");
        assert!(err.to_string().contains(setting), "the message names {setting}: {err}");
        assert!(!err.is_transient());
    }
    // the ends of the ranges are accepted
    let b = builder(&t)
        .tombstone_window(Duration::from_secs(7 * 24 * 3600))
        .chunk_size(1)
        .circuit_cool_down(Duration::ZERO)
        .sweep_interval(Duration::ZERO)
        .build()
        .await
        .unwrap();
    store(&b, "k", &["a", "b"], MAX_TTL).await;
    assert_eq!(b.invalidate(&["a".into(), "b".into()]).await.unwrap().dropped, 1);
    let b = builder(&t).tombstone_window(Duration::from_millis(1)).build().await.unwrap();
    store(&b, "k", &["a"], Duration::from_nanos(1)).await;
}

/// A duration: mostly within `lo..=hi` (milliseconds), sometimes at the
/// ends of the type's range.
fn duration_in(lo: u64, hi: u64) -> impl Strategy<Value = Duration> {
    prop_oneof![
        20 => (lo..=hi).prop_map(Duration::from_millis),
        1 => Just(Duration::ZERO),
        1 => Just(Duration::MAX),
        1 => any::<u64>().prop_map(Duration::from_nanos),
        1 => any::<u64>().prop_map(Duration::from_secs),
    ]
}

/// A TTL from the whole range of the type, its edges and a sane range.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_nanos(1)),
        Just(MAX_TTL),
        Just(MAX_TTL + Duration::from_secs(1)),
        any::<u64>().prop_map(Duration::from_nanos),
        any::<u64>().prop_map(Duration::from_secs),
        (1u64..100_000).prop_map(Duration::from_millis),
        (0u64..1_000).prop_map(Duration::from_micros),
    ]
}

fn ticket() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), Just(Some(0)), Just(Some(u64::MAX)), any::<u64>().prop_map(Some), Just(Some(1))]
}

/// Extreme settings, TTLs and tickets give a backend or a clear error,
/// results or typed errors; never a panic. (One server for every case,
/// dropped with the test.)
#[test]
fn extreme_settings_ttls_and_tickets_never_panic() {
    let Some(target) = target() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;
    let settings = (
        duration_in(1, WEEK_MS),
        prop_oneof![20 => 1usize..3000, 1 => Just(0usize), 1 => Just(usize::MAX)],
        (duration_in(1, 10_000), duration_in(1, 10_000), duration_in(0, 3_600_000), duration_in(100, WEEK_MS)),
        prop_oneof![20 => 0usize..4, 1 => Just(usize::MAX)],
        proptest::collection::vec(duration(), 1..4),
        proptest::collection::vec(ticket(), 1..4),
    );
    let config = ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let result =
        runner.run(&settings, |(window, chunk, (connect, response, cool_down, sweep), acks, ttls, tickets)| {
            runtime.block_on(async {
                let built = builder(&target)
                    .tombstone_window(window)
                    .chunk_size(chunk)
                    .connect_timeout(connect)
                    .response_timeout(response)
                    .circuit_cool_down(cool_down)
                    .sweep_interval(sweep)
                    .replica_acks(acks)
                    .build()
                    .await;
                let b = match built {
                    Ok(b) => b,
                    Err(e) => {
                        // a clear error: a setting out of range (or a server
                        // that did not answer within a tiny timeout)
                        assert!(
                            e.kind() == BackendErrorKind::Config || e.is_transient(),
                            "unexpected build error: {e}"
                        );
                        return;
                    }
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let deps = vec!["a".to_string(), "b".to_string()];
                for (i, (ttl, ticket)) in ttls.iter().zip(tickets.iter().cycle()).enumerate() {
                    let key = format!("k{i}");
                    let request = PutRequest {
                        key: &key,
                        value: Bytes::from_static(b"v"),
                        deps: &deps,
                        ttl: *ttl,
                        ticket: ticket.map(Ticket::new),
                    };
                    if let Err(e) = b.put(request).await {
                        assert!(
                            matches!(
                                e.kind(),
                                BackendErrorKind::Refused | BackendErrorKind::Timeout | BackendErrorKind::Unavailable
                            ),
                            "{e}"
                        );
                    }
                    let _ = b.get(&key).await;
                    let _ = b.has(&key).await;
                }
                let _ = b.invalidate(&deps).await;
                let _ = b.delete("k0").await;
                let _ = b.ticket().await;
                let _ = b.clear("k").await;
                let _ = b.sweep_now().await;
            });
            Ok(())
        });
    if let Err(e) = result {
        panic!("{e}");
    }
    let accepted = accepted.into_inner();
    eprintln!("{accepted} of 96 cases built a backend");
    assert!(accepted > 0, "some settings are in range");
}

/// Eviction policies that could drop the bookkeeping are refused at
/// build, read from `CONFIG GET` or, where `CONFIG` is disabled, from
/// `INFO memory`; the safe ones are accepted.
#[tokio::test]
async fn unsafe_eviction_policies_are_refused_at_build() {
    let Some(server) = spawned(&[]) else { return };
    let mut admin = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    for policy in [
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "noeviction",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    ] {
        let _: () =
            redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg(policy).query_async(&mut admin).await.unwrap();
        let built = RedisBackend::builder(server.url()).build().await;
        if policy.starts_with("allkeys-") {
            let err = built.unwrap_err();
            assert_eq!(err.kind(), BackendErrorKind::Config, "{policy}: {err}");
            assert!(err.to_string().contains(policy) && err.to_string().contains("volatile-lru"), "{err}");
        } else {
            built.unwrap_or_else(|e| panic!("{policy} refused: {e}"));
        }
    }
    // CONFIG disabled (as on managed Redis): the policy comes from INFO
    let Some(managed) = spawned(&["--rename-command", "CONFIG", "", "--maxmemory-policy", "allkeys-lru"]) else {
        return;
    };
    let err = RedisBackend::builder(managed.url()).build().await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Config, "{err}");
    let Some(managed) = spawned(&["--rename-command", "CONFIG", "", "--maxmemory-policy", "volatile-ttl"]) else {
        return;
    };
    RedisBackend::builder(managed.url()).build().await.unwrap();
    // neither readable: a warning, and the backend is built
    let Some(hidden) = spawned(&["--rename-command", "CONFIG", "", "--rename-command", "INFO", ""]) else { return };
    RedisBackend::builder(hidden.url()).build().await.unwrap();
}

/// A tiny deterministic generator (xorshift), so that a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Under a memory limit, with every eviction policy this backend
/// accepts, a workload that overfills memory never reads a stale value
/// (each read is checked against a model of what was invalidated),
/// invalidations always succeed, and under `noeviction` puts fail with a
/// transient `OutOfMemory` error when Redis is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_never_serves_stale_reads() {
    for policy in ["volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl", "noeviction"] {
        let Some(server) = spawned(&["--maxmemory", "3mb", "--maxmemory-policy", policy]) else { return };
        let b = RedisBackend::builder(server.url()).sweep_interval(Duration::ZERO).build().await.unwrap();
        let mut conn = b.connection().unwrap();
        const KEYS: u64 = 1_000;
        const ROWS: u64 = 100;
        let rows_of = |k: u64| -> Vec<u64> { vec![k % ROWS, (k * 7 + 3) % ROWS] };
        let row = |r: u64| format!("row:{r}");
        let mut version = vec![0u64; ROWS as usize];
        // a load in flight: its ticket and the versions it read
        let mut loads: HashMap<u64, (Ticket, Vec<u64>)> = HashMap::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ policy.len() as u64);
        let (mut hits, mut stored, mut refused, mut oom, mut invalidations) = (0, 0, 0, 0, 0);
        // 1,000 keys of 8 KB: more than the 3 MB Redis may use
        let fat = vec![b'x'; 8 * 1024];
        let value = |versions: &[u64]| {
            let mut v = versions.iter().map(|x| format!("{x},")).collect::<String>().into_bytes();
            v.push(b'|');
            v.extend_from_slice(&fat);
            Bytes::from(v)
        };
        let decode = |bytes: &[u8]| -> Vec<u64> {
            let end = bytes.iter().position(|c| *c == b'|').expect("a value of this test");
            std::str::from_utf8(&bytes[..end])
                .unwrap()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect()
        };
        for step in 0..8_000 {
            let k = rng.below(KEYS);
            let key = format!("k{k}");
            let deps: Vec<String> = rows_of(k).into_iter().map(row).collect();
            let current: Vec<u64> = rows_of(k).into_iter().map(|r| version[r as usize]).collect();
            let ttl = Duration::from_secs(1 + rng.below(60));
            let put_result = |r: Result<PutOutcome, matroska::BackendError>, oom: &mut u64| match r {
                Ok(o) => Some(o),
                Err(e) => {
                    assert_eq!(e.kind(), BackendErrorKind::OutOfMemory, "{policy}, step {step}: {e}");
                    assert!(e.is_transient());
                    *oom += 1;
                    None
                }
            };
            match rng.below(20) {
                0..=7 => match b.get(&key).await.unwrap() {
                    Lookup::Hit(bytes) => {
                        hits += 1;
                        assert_eq!(decode(&bytes), current, "{policy}, step {step}: stale read of {key}");
                    }
                    Lookup::Miss(ticket) => {
                        loads.insert(k, (ticket, current));
                    }
                },
                8..=13 => {
                    if let Some((ticket, read)) = loads.remove(&k) {
                        let request =
                            PutRequest { key: &key, value: value(&read), deps: &deps, ttl, ticket: Some(ticket) };
                        match put_result(b.put(request).await, &mut oom) {
                            Some(PutOutcome::Stored) => {
                                stored += 1;
                                assert_eq!(read, current, "{policy}, step {step}: a stale put of {key} was accepted");
                            }
                            Some(PutOutcome::Refused) => refused += 1,
                            None => {}
                        }
                    }
                }
                14 => {
                    let r = rng.below(ROWS);
                    version[r as usize] += 1;
                    let out = b.invalidate(&[row(r)]).await.unwrap_or_else(|e| panic!("{policy}: invalidate: {e}"));
                    assert!(out.is_complete(), "{policy}, step {step}: invalidation failed: {:?}", out.error);
                    invalidations += 1;
                }
                _ => {
                    let request = PutRequest { key: &key, value: value(&current), deps: &deps, ttl, ticket: None };
                    if put_result(b.put(request).await, &mut oom) == Some(PutOutcome::Stored) {
                        stored += 1;
                    }
                }
            }
        }
        let info: String = query(&mut conn, redis::cmd("INFO").arg("stats")).await;
        let evicted: u64 =
            info.lines().find_map(|l| l.strip_prefix("evicted_keys:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        eprintln!(
            "{policy}: {hits} hits, {stored} stored, {refused} refused, {oom} out of memory, {invalidations} invalidations, {evicted} evicted"
        );
        if policy == "noeviction" {
            assert!(oom > 0, "the workload filled memory");
            assert_eq!(evicted, 0);
            // full to the limit: puts fail, while delete, clear, the sweep
            // and invalidate still run (they free memory), each at the limit
            let fill = |start: usize| {
                let b = b.clone();
                let value = value(&[]);
                async move {
                    let mut i = start;
                    loop {
                        let key = format!("fill{i}");
                        let request = PutRequest { key: &key, value: value.clone(), deps: &[], ttl: TTL, ticket: None };
                        match b.put(request).await {
                            Ok(_) => i += 1,
                            Err(e) => {
                                assert_eq!(e.kind(), BackendErrorKind::OutOfMemory, "{e}");
                                return i;
                            }
                        }
                    }
                }
            };
            let filled = fill(0).await;
            assert!(b.delete("k1").await.is_ok(), "delete at the limit");
            let filled = fill(filled).await;
            b.clear("fill").await.expect("clear at the limit");
            let filled = fill(filled).await;
            b.sweep_now().await.expect("the sweep at the limit");
            fill(filled).await;
            let rows: Vec<String> = (0..ROWS).map(row).collect();
            let out = b.invalidate(&rows).await.expect("invalidate at the limit");
            assert!(out.is_complete(), "{:?}", out.error);
            eprintln!("at the limit: {} entries dropped by one invalidation", out.dropped);
        } else {
            assert!(evicted > 0, "{policy}: the workload made Redis evict");
        }
        // bookkeeping is never evicted: every index and tombstone key has no
        // expiry
        let keys: Vec<String> = query(&mut conn, redis::cmd("KEYS").arg("matroska:*")).await;
        for key in keys.iter().filter(|k| !k.contains("}:e:")) {
            assert_eq!(query::<i64>(&mut conn, redis::cmd("PTTL").arg(key)).await, -1, "{key} has an expiry");
        }
    }
}

/// Bookkeeping without expiry stays bounded: once entries expired,
/// the sweep prunes their registrations, deletes their indexes, and deletes
/// tombstones older than the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_bounds_the_bookkeeping() {
    let Some(t) = target() else { return };
    let window = Duration::from_millis(200);
    let b = builder(&t).tombstone_window(window).sweep_interval(Duration::ZERO).build().await.unwrap();
    let mut conn = b.connection().unwrap();
    let short = Duration::from_millis(300);
    const N: usize = 2_000;
    for i in 0..N {
        store(&b, &format!("short:{i}"), &[&format!("d{i}"), "shared"], short).await;
    }
    for i in 0..10 {
        store(&b, &format!("long:{i}"), &[&format!("live{i}"), "shared"], TTL).await;
    }
    // tombstones: invalidate dependencies that have no live dependents
    let gone: Vec<String> = (0..500).map(|i| format!("gone{i}")).collect();
    b.invalidate(&gone).await.unwrap();
    let invalidated = Instant::now();
    // a drain left behind by an interrupted invalidation: a drain key whose
    // entry is live
    store(&b, "stranded", &["stranded-dep"], TTL).await;
    let _: () =
        query(&mut conn, redis::cmd("RENAME").arg(b.index_key("stranded-dep")).arg(b.drain_key("stranded-dep"))).await;
    // an index as an earlier version wrote it, with an expiry
    let _: i64 = query(&mut conn, redis::cmd("PEXPIRE").arg(b.index_key("live0")).arg(3_600_000)).await;

    let namespace_of = |key: String| key[..key.find(":{").unwrap()].to_string();
    let ns = namespace_of(b.index_key("x"));
    let count = |kind: char| {
        let mut conn = conn.clone();
        let pattern = format!("{ns}:{{*}}:{kind}:*");
        async move { query::<Vec<String>>(&mut conn, redis::cmd("KEYS").arg(pattern)).await.len() }
    };
    assert_eq!(count('i').await, N + 10 + 1, "an index per dependency");
    assert_eq!(count('t').await, 500);

    // wait until Redis expired every short entry and the tombstones are
    // older than the window (plus its margin): measured, not guessed
    let keys: Vec<String> = (0..N).map(|i| b.entry_key(&format!("short:{i}"))).collect();
    wait_expired(&b, &keys).await;
    let keep = window + window / 100 + Duration::from_millis(10);
    if let Some(rest) = keep.checked_sub(invalidated.elapsed()) {
        tokio::time::sleep(rest + Duration::from_millis(5)).await;
    }
    let report = b.sweep_now().await.unwrap();
    eprintln!("{report:?}");
    // what is left is what is live
    assert_eq!(count('i').await, 10 + 1, "the live dependencies' indexes and the shared one");
    assert_eq!(members(&b, &b.index_key("shared")).await.len(), 10);
    assert_eq!(count('t').await, 0, "tombstones older than the window are deleted");
    assert_eq!(count('x').await, 0, "the stranded drain was finished");
    assert_eq!(pttl(&b, &b.index_key("live0")).await, -1, "an index's old expiry is removed");
    assert!(matches!(b.get("stranded").await.unwrap(), Lookup::Miss(_)), "its entry dropped");
    // each short dependency's own index (the shared one may have been
    // pruned by the puts that followed, on a slow machine)
    assert!(report.members_pruned >= N as u64, "{report:?}");
    assert_eq!(report.drains_finished, 1);
    for i in 0..10 {
        assert!(matches!(b.get(&format!("long:{i}")).await.unwrap(), Lookup::Hit(_)));
    }
    // a second pass finds nothing more to do
    let again = b.sweep_now().await.unwrap();
    assert_eq!((again.members_pruned, again.keys_deleted, again.drains_finished), (0, 0, 0));
}

/// `clear` removes every entry of a prefix (and only those, whatever
/// glob characters the prefix holds), and refuses puts whose ticket is
/// older than the clear.
#[tokio::test]
async fn clear_removes_the_prefix_and_refuses_older_tickets() {
    let Some(t) = target() else { return };
    let b = backend(&t).await;
    for key in ["a:1", "a:2", "a*[x]1", "a*[x]2", "ab", "b:1", "x}:e:a:trick"] {
        store(&b, key, &["d", key], TTL).await;
    }
    let before = b.ticket().await.unwrap();
    assert_eq!(b.clear("a*[x]").await.unwrap(), 2, "the glob characters are literal");
    assert!(matches!(b.get("ab").await.unwrap(), Lookup::Hit(_)));
    assert_eq!(b.clear("a:").await.unwrap(), 2);
    for key in ["a:1", "a:2", "a*[x]1", "a*[x]2"] {
        assert!(matches!(b.get(key).await.unwrap(), Lookup::Miss(_)), "{key} cleared");
        assert!(!exists(&b, &b.index_key(key)).await, "{key} unregistered");
    }
    for key in ["ab", "b:1", "x}:e:a:trick"] {
        assert!(matches!(b.get(key).await.unwrap(), Lookup::Hit(_)), "{key} kept");
    }
    assert_eq!(members(&b, &b.index_key("d")).await.len(), 3, "the shared index holds the others only");
    // a put whose ticket is older than the clear is refused, whatever its key
    assert_eq!(put(&b, "c:1", &["e"], TTL, Some(before)).await, PutOutcome::Refused);
    let after = b.ticket().await.unwrap();
    assert_eq!(put(&b, "c:1", &["e"], TTL, Some(after)).await, PutOutcome::Stored);
    // everything, through the cache
    let cache = Cache::builder().backend(b.clone()).prefix("p").build().unwrap();
    cache.put("k", &1u32, [Dep::tag("t")], TTL).await.unwrap();
    assert_eq!(cache.clear().await.unwrap(), 1);
    assert_eq!(cache.get::<u32>("k").await.unwrap(), None);
    assert!(matches!(b.get("b:1").await.unwrap(), Lookup::Hit(_)), "another prefix is kept");
    assert_eq!(b.clear("").await.unwrap(), 4);
}
