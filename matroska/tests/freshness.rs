//! Default TTLs, jitter, stale-while-revalidate, stale-on-error, negative
//! entries, inspection and per-request statistics. Time is a `MockClock`
//! shared by the cache and its memory backend: nothing here waits on the
//! machine's speed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use matroska::clock::MockClock;
use matroska::{record_request, Cache, Dep, Error, LoadOptions, MemoryBackend, Ttl};

fn cache_with(clock: &MockClock, configure: impl FnOnce(matroska::CacheBuilder) -> matroska::CacheBuilder) -> Cache {
    let backend = MemoryBackend::builder().clock(clock.clone()).build().unwrap();
    configure(Cache::builder().backend(backend).clock(Arc::new(clock.clone()))).build().unwrap()
}

const SEC: Duration = Duration::from_secs(1);

#[tokio::test]
async fn default_ttls_by_entity_and_for_the_cache() {
    let clock = MockClock::new();
    // no default: asking for one is a typed error, nothing stored
    let bare = cache_with(&clock, |b| b);
    let err = bare.put("k", &1u8, [Dep::id("article", 1)], Ttl::Default).await.unwrap_err();
    assert!(matches!(err, Error::NoDefaultTtl { .. }), "{err}");
    let err = bare.get_or_load("k", Ttl::Default, |_| async { Ok::<_, Error>(1u8) }).await.unwrap_err();
    assert!(matches!(err, Error::NoDefaultTtl { .. }), "{err}");
    assert!(!bare.has("k").await.unwrap());

    let cache =
        cache_with(&clock, |b| b.default_ttl(600 * SEC).entity_ttl("article", 60 * SEC).entity_ttl("author", 30 * SEC));
    cache.put("plain", &1u8, [Dep::tag("x")], Ttl::Default).await.unwrap();
    cache.put("article", &1u8, [Dep::primary_key("article", [1])], Ttl::Default).await.unwrap();
    cache.put("both", &1u8, [Dep::id("article", 1), Dep::id("author", 2)], Ttl::Default).await.unwrap();
    // a fixed TTL still wins
    cache.put("fixed", &1u8, [Dep::id("author", 2)], 5 * SEC).await.unwrap();
    let left = |k: &'static str| {
        let cache = cache.clone();
        async move { cache.inspect(k).await.unwrap().unwrap().expires_in.unwrap() }
    };
    assert_eq!(left("plain").await, 600 * SEC);
    assert_eq!(left("article").await, 60 * SEC);
    assert_eq!(left("both").await, 30 * SEC, "the shortest of its entities");
    assert_eq!(left("fixed").await, 5 * SEC);
    let n: u8 = cache
        .get_or_load("loaded", Ttl::Default, |deps| async move {
            deps.push(Dep::condition("article", matroska::Params::new()));
            Ok::<_, Error>(3)
        })
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(left("loaded").await, 60 * SEC, "a list of articles gets the article TTL");
}

#[tokio::test]
async fn settings_out_of_range_are_config_errors() {
    let base = || Cache::builder().max_ttl(3600 * SEC);
    for (setting, builder) in [
        ("ttl_jitter", base().ttl_jitter(0.51)),
        ("ttl_jitter", base().ttl_jitter(-0.1)),
        ("ttl_jitter", base().ttl_jitter(f64::NAN)),
        ("default_ttl", base().default_ttl(Duration::ZERO)),
        ("default_ttl", base().default_ttl(7200 * SEC)),
        ("entity_ttl", base().entity_ttl("a", Duration::ZERO)),
    ] {
        let err = builder.build().unwrap_err();
        assert_eq!(err.setting(), setting, "{err}");
    }
    assert!(base().ttl_jitter(0.5).default_ttl(3600 * SEC).build().is_ok());
}

#[tokio::test]
async fn jitter_only_shortens() {
    let clock = MockClock::new();
    let cache = cache_with(&clock, |b| b.ttl_jitter(0.5));
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..200 {
        let key = format!("k{i}");
        cache.put(&key, &1u8, [Dep::tag("t")], 100 * SEC).await.unwrap();
        let left = cache.inspect(&key).await.unwrap().unwrap().expires_in.unwrap();
        assert!(left <= 100 * SEC && left >= 50 * SEC, "{left:?}");
        seen.insert(left.as_secs());
    }
    assert!(seen.len() > 10, "the TTLs are spread: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_others_while_one_reloads() {
    let clock = MockClock::new();
    let cache = cache_with(&clock, |b| b);
    let options = LoadOptions::new(10 * SEC).stale_while_revalidate(30 * SEC);
    let v: u32 = cache.get_or_load_with("k", options, |_| async { Ok::<_, Error>(1) }).await.unwrap();
    assert_eq!(v, 1);
    let info = cache.inspect("k").await.unwrap().unwrap();
    assert_eq!(info.fresh_for, Some(10 * SEC));
    assert_eq!(info.expires_in, Some(40 * SEC), "kept for the staleness window");

    // fresh: a hit, no load
    let loads = Arc::new(AtomicU32::new(0));
    clock.advance(9 * SEC);
    let v: u32 = cache.get_or_load_with("k", options, |_| async { Ok::<_, Error>(99) }).await.unwrap();
    assert_eq!(v, 1);

    // stale: one caller reloads (held until released), another gets the old value at once
    clock.advance(2 * SEC);
    assert_eq!(cache.get::<u32>("k").await.unwrap(), None, "plain reads never see a stale value");
    let release = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let reloader = {
        let (cache, release, started, loads) = (cache.clone(), release.clone(), started.clone(), loads.clone());
        tokio::spawn(async move {
            cache
                .get_or_load_with("k", options, |_| async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    started.notify_one();
                    release.notified().await;
                    Ok::<_, Error>(2u32)
                })
                .await
        })
    };
    started.notified().await;
    let (v, stats) = record_request(cache.get_or_load_with("k", options, |_| async { Ok::<_, Error>(77u32) })).await;
    assert_eq!(v.unwrap(), 1, "served the stale value while the reload runs");
    assert_eq!(stats.stale, 1);
    assert_eq!(stats.loads, 0);
    release.notify_one();
    assert_eq!(reloader.await.unwrap().unwrap(), 2);
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let v: u32 = cache.get_or_load_with("k", options, |_| async { Ok::<_, Error>(99) }).await.unwrap();
    assert_eq!(v, 2, "the reloaded value is fresh");
    assert_eq!(cache.stats().stale_served, 1);
}

#[tokio::test]
async fn an_invalidated_entry_is_never_served_stale() {
    let clock = MockClock::new();
    let cache = cache_with(&clock, |b| b);
    let options = LoadOptions::new(10 * SEC).stale_while_revalidate(60 * SEC).stale_on_error(60 * SEC);
    let dep = Dep::id("article", 1);
    let load = |n: u32| {
        let dep = dep.clone();
        move |deps: matroska::Deps| async move {
            deps.push(dep);
            Ok::<_, Error>(n)
        }
    };
    assert_eq!(cache.get_or_load_with("k", options, load(1)).await.unwrap(), 1);
    clock.advance(15 * SEC); // stale
    cache.invalidate([dep.clone()]).await.unwrap();
    // a failing loader: no stale value to fall back on, the error comes through
    let err = cache
        .get_or_load_with("k", options, |_| async {
            Err::<u32, _>(Error::NotStored { key: "k".into(), reason: "db down" })
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotStored { .. }));
    assert_eq!(cache.get_or_load_with("k", options, load(2)).await.unwrap(), 2);
    assert_eq!(cache.stats().stale_served, 0);
}

#[tokio::test]
async fn stale_on_error_within_its_window_only() {
    let clock = MockClock::new();
    let cache = cache_with(&clock, |b| b);
    let options = LoadOptions::new(10 * SEC).stale_on_error(20 * SEC);
    let failing = |_| async { Err::<u32, _>(Error::NotStored { key: "k".into(), reason: "db down" }) };
    assert_eq!(cache.get_or_load_with("k", options, |_| async { Ok::<_, Error>(1u32) }).await.unwrap(), 1);
    // fresh: the loader is not called
    assert_eq!(cache.get_or_load_with("k", options, failing).await.unwrap(), 1);
    clock.advance(15 * SEC);
    let (v, stats) = record_request(cache.get_or_load_with("k", options, failing)).await;
    assert_eq!(v.unwrap(), 1, "the loader failed: the stale value");
    assert_eq!((stats.stale, stats.loads), (1, 1));
    // a loader that succeeds replaces it
    assert_eq!(cache.get_or_load_with("k", options, |_| async { Ok::<_, Error>(2u32) }).await.unwrap(), 2);
    // past the window the entry is gone: the error comes through
    clock.advance(31 * SEC);
    assert!(cache.get_or_load_with("k", options, failing).await.is_err());
    // without the option a stale entry is never kept
    let plain = LoadOptions::new(10 * SEC);
    cache.get_or_load_with("p", plain, |_| async { Ok::<_, Error>(1u32) }).await.unwrap();
    assert_eq!(cache.inspect("p").await.unwrap().unwrap().fresh_for, None);
    clock.advance(11 * SEC);
    assert!(cache.get_or_load_with("p", plain, failing).await.is_err());
}

#[tokio::test]
async fn negative_entries_live_their_own_ttl() {
    let clock = MockClock::new();
    let cache = cache_with(&clock, |b| b);
    let calls = Arc::new(AtomicU32::new(0));
    let find = |found: Option<u32>| {
        let calls = calls.clone();
        move |deps: matroska::Deps| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            deps.push(Dep::tag("article:not-found:9"));
            Ok::<_, Error>(found)
        }
    };
    assert_eq!(cache.get_or_load_optional("article:9", 600 * SEC, 5 * SEC, find(None)).await.unwrap(), None);
    assert_eq!(cache.get_or_load_optional("article:9", 600 * SEC, 5 * SEC, find(Some(1))).await.unwrap(), None);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the miss is cached");
    assert_eq!(cache.inspect("article:9").await.unwrap().unwrap().expires_in, Some(5 * SEC));
    clock.advance(6 * SEC);
    assert_eq!(cache.get_or_load_optional("article:9", 600 * SEC, 5 * SEC, find(Some(1))).await.unwrap(), Some(1));
    assert_eq!(cache.inspect("article:9").await.unwrap().unwrap().expires_in, Some(600 * SEC));
    let err = cache.get_or_load_optional("x", 600 * SEC, Duration::ZERO, find(None)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidTtl { .. }));
}

#[tokio::test]
async fn inspect_tells_dependencies_size_and_expiry() {
    let clock = MockClock::new();
    let cache = cache_with(&clock, |b| b);
    assert_eq!(cache.inspect("nothing").await.unwrap(), None);
    cache.put("k", &"hello", [Dep::id("article", 1), Dep::tag("t")], 60 * SEC).await.unwrap();
    clock.advance(10 * SEC);
    let info = cache.inspect("k").await.unwrap().unwrap();
    assert!(info.deps.contains(&Dep::id("article", 1)) && info.deps.contains(&Dep::tag("t")));
    assert_eq!(info.expires_in, Some(50 * SEC));
    assert_eq!(info.fresh_for, None);
    assert!(info.size > 5);
    // inspecting counts no read
    assert_eq!(cache.stats().hits + cache.stats().misses, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_statistics_are_per_request() {
    let cache = Cache::new(MemoryBackend::new());
    cache.put("hit", &1u8, [Dep::tag("t")], 60 * SEC).await.unwrap();
    let a = {
        let cache = cache.clone();
        tokio::spawn(record_request(async move {
            for _ in 0..3 {
                cache.get::<u8>("hit").await.unwrap();
            }
        }))
    };
    let b = {
        let cache = cache.clone();
        tokio::spawn(record_request(async move {
            cache.get::<u8>("miss").await.unwrap();
            cache.get_or_load("loaded", 60 * SEC, |_| async { Ok::<_, Error>(1u8) }).await.unwrap();
        }))
    };
    let ((), sa) = a.await.unwrap();
    let ((), sb) = b.await.unwrap();
    assert_eq!((sa.hits, sa.misses, sa.loads, sa.puts), (3, 0, 0, 0));
    assert_eq!((sb.hits, sb.misses, sb.loads, sb.puts), (0, 2, 1, 1));
    // outside any recorded request nothing is attributed
    cache.get::<u8>("hit").await.unwrap();
    assert_eq!(cache.stats().hits, 4);
}
