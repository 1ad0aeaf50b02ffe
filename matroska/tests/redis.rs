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

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use matroska::{Backend, BackendErrorKind, Cache, Dep, Error, Lookup, PutOutcome, PutRequest, RedisBackend, Ticket};
use redis::aio::ConnectionManager;
use redis_server::{builder, target, Target};

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
    let grown = members(&b, &b.index_key("hot")).await.len();
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
    let b = builder(&t).chunk_size(1000).build().await.unwrap();
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
    assert_eq!(members(&b, &b.index_key("big")).await.len() as u64, total);

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
    let b = RedisBackend::builder(server.url())
        .connect_timeout(connect)
        .response_timeout(response)
        .build()
        .await
        .unwrap();
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
    let deadline = Instant::now() + Duration::from_secs(10);
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
