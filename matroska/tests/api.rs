//! The public surface of the core, value by value: defaults and limits at
//! their boundaries, counters, `Debug`/`Display` forms, parameter sets and
//! scope accessors. (Each of these was a surviving mutant of the mutation
//! run recorded in `RELIABILITY.md`.)

use std::sync::Arc;
use std::time::Duration;

use matroska::{
    params, Backend, Cache, Dep, Error, MemoryBackend, Mode, Params, Scopes, Stats, Value, DEFAULT_MAX_KEY_BYTES,
    DEFAULT_MAX_TTL, DEFAULT_MAX_VALUE_BYTES, MAX_TTL_LIMIT,
};

#[test]
fn defaults_and_limits() {
    assert_eq!(DEFAULT_MAX_TTL, Duration::from_secs(365 * 24 * 3600));
    assert_eq!(DEFAULT_MAX_VALUE_BYTES, 8 * 1024 * 1024);
    assert_eq!(DEFAULT_MAX_KEY_BYTES, 2 * 1024 * 1024);
    assert_eq!(MAX_TTL_LIMIT, Duration::from_secs(100 * 365 * 24 * 3600));
    assert_eq!(matroska::backend::memory::DEFAULT_TOMBSTONE_WINDOW, Duration::from_secs(60));
    assert_eq!(matroska::backend::memory::MAX_TOMBSTONE_WINDOW, Duration::from_secs(7 * 24 * 3600));
    // the bounds themselves are accepted
    assert!(Cache::builder().max_ttl(MAX_TTL_LIMIT).build().is_ok());
    assert!(Cache::builder().max_ttl(Duration::from_millis(1)).build().is_ok());
    assert!(Cache::builder().max_ttl(MAX_TTL_LIMIT + Duration::from_millis(1)).build().is_err());
    let window = matroska::backend::memory::MAX_TOMBSTONE_WINDOW;
    assert!(MemoryBackend::builder().tombstone_window(window).build().is_ok());
    assert!(MemoryBackend::builder().tombstone_window(Duration::from_millis(1)).build().is_ok());
    assert!(MemoryBackend::builder().tombstone_window(window + Duration::from_millis(1)).build().is_err());
    assert!(MemoryBackend::builder().tombstone_window(Duration::from_micros(999)).build().is_err());
}

#[tokio::test]
async fn limits_accept_their_own_value() {
    let cache = Cache::builder().max_ttl(Duration::from_secs(10)).max_key_bytes(8).max_value_bytes(64).build().unwrap();
    let t = Duration::from_secs(10);
    cache.put("12345678", &1u8, [Dep::tag("t")], t).await.unwrap();
    assert!(matches!(cache.put("123456789", &1u8, [Dep::tag("t")], t).await, Err(Error::InvalidKey { .. })));
    assert!(cache.put("k", &1u8, [Dep::tag("t")], Duration::from_millis(1)).await.is_ok());
    assert!(matches!(
        cache.put("k", &1u8, [Dep::tag("t")], t + Duration::from_millis(1)).await,
        Err(Error::InvalidTtl { .. })
    ));
    // a value of exactly the maximum is stored; one byte more is refused
    let mut size = 1;
    loop {
        let v = "x".repeat(size);
        match cache.put("v", &v, Vec::<Dep>::new(), t).await {
            Ok(()) => size += 1,
            Err(Error::ValueTooLarge { size: s, max, .. }) => {
                assert_eq!(max, 64);
                assert_eq!(s, 65, "the first refused value is one byte over");
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn hit_rate() {
    let s = Stats::default();
    assert_eq!(s.hit_rate(), 0.0);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let cache = Cache::new(MemoryBackend::new());
        cache.put("a", &1u8, [Dep::tag("t")], Duration::from_secs(5)).await.unwrap();
        for _ in 0..3 {
            cache.get::<u8>("a").await.unwrap();
        }
        cache.get::<u8>("missing").await.unwrap();
        assert_eq!(cache.stats().hit_rate(), 0.75);
        assert_eq!(cache.stats().hits, 3);
        assert_eq!(cache.stats().misses, 1);
    });
}

#[test]
fn debug_and_display_forms() {
    let cache = Cache::builder().prefix("app").build().unwrap();
    assert_eq!(cache.prefix(), "app");
    let dbg = format!("{cache:?}");
    assert!(dbg.contains("Cache") && dbg.contains("app"), "{dbg}");
    let dbg = format!("{:?}", Cache::builder().prefix("p"));
    assert!(dbg.contains("CacheBuilder") && dbg.contains("\"p\""), "{dbg}");
    let d = Dep::id("article", 7);
    assert_eq!(d.to_string(), d.as_str());
    assert_eq!(format!("{d:?}"), format!("Dep({:?})", d.as_str()));
    let r: &str = d.as_ref();
    assert_eq!(r, d.as_str());
    assert_eq!(Value::Int(3).to_string(), "3");
    assert_eq!(Value::Str("x".into()).to_string(), "\"x\"");
    assert_eq!(Value::Null.to_string(), "null");
    assert_eq!(Value::Bool(true).to_string(), "true");
    let t = matroska::NTag::<u32>::new("n");
    assert!(format!("{t:?}").contains("NTag"), "{t:?}");
    let s = Scopes::<u32>::new("thing", Mode::Production).describes(["a"], |_: &u32| params! { "a" => 1 });
    let dbg = format!("{s:?}");
    assert!(dbg.contains("thing") && dbg.contains("Production"), "{dbg}");
}

#[test]
fn params_accessors() {
    let p = Params::new().with("b", 2).with("a", "x");
    assert_eq!(p.len(), 2);
    assert!(!p.is_empty());
    assert!(Params::new().is_empty());
    assert_eq!(p.get("a"), Some(&Value::Str("x".into())));
    assert_eq!(p.get("z"), None);
    assert_eq!(p.names().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(p, params! { "a" => "x", "b" => 2 });
}

#[tokio::test]
async fn scope_accessors_and_invalidate_for() {
    #[derive(Clone)]
    struct A {
        cat: u32,
        price: u32,
    }
    let s = Scopes::<A>::new("a", Mode::Development)
        .describes(["cat"], |a: &A| params! { "cat" => a.cat })
        .describes_watching(["cheap"], ["price"], |a: &A| params! { "cheap" => a.price < 10 });
    assert_eq!(s.object_type(), "a");
    assert_eq!(s.mode(), Mode::Development);
    assert!(s.watches("cat") && s.watches("price") && !s.watches("cheap") && !s.watches("x"));
    assert_eq!(s.watched_fields().into_iter().collect::<Vec<_>>(), ["cat", "price"]);
    // a Params extractor returns that one set
    let cache = Cache::new(MemoryBackend::new());
    let list = s.condition(params! { "cat" => 1 }).unwrap();
    cache.put("list", &1u8, list, Duration::from_secs(5)).await.unwrap();
    cache.put("other", &1u8, s.condition(params! { "cat" => 2 }).unwrap(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(s.invalidate_for(&cache, &A { cat: 1, price: 20 }, None).await.unwrap(), 1);
    assert!(cache.get::<u8>("list").await.unwrap().is_none());
    assert_eq!(cache.get::<u8>("other").await.unwrap(), Some(1));
}

/// Prefixes are injective with keys: prefix `a` + key `bc` never meets
/// prefix `ab` + key `c`.
#[tokio::test]
async fn prefix_and_key_do_not_run_into_each_other() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let a = Cache::builder().shared_backend(backend.clone()).prefix("a").build().unwrap();
    let ab = Cache::builder().shared_backend(backend.clone()).prefix("ab").build().unwrap();
    a.put("bc", &1u8, [Dep::tag("t")], Duration::from_secs(5)).await.unwrap();
    assert_eq!(ab.get::<u8>("c").await.unwrap(), None);
    ab.put("c", &2u8, [Dep::tag("t")], Duration::from_secs(5)).await.unwrap();
    assert_eq!(a.get::<u8>("bc").await.unwrap(), Some(1));
    // and dependencies: invalidating tag t in one leaves the other
    assert_eq!(ab.invalidate([Dep::tag("t")]).await.unwrap(), 1);
    assert_eq!(a.get::<u8>("bc").await.unwrap(), Some(1));
}

/// A non-transient failure is reported, not kept for retry.
#[tokio::test]
async fn non_transient_failures_are_not_kept() {
    #[derive(Debug)]
    struct Foreign(MemoryBackend);
    #[async_trait::async_trait]
    impl Backend for Foreign {
        async fn get(&self, key: &str) -> Result<matroska::Lookup, matroska::BackendError> {
            self.0.get(key).await
        }
        async fn has(&self, key: &str) -> Result<bool, matroska::BackendError> {
            self.0.has(key).await
        }
        async fn put(&self, r: matroska::PutRequest<'_>) -> Result<matroska::PutOutcome, matroska::BackendError> {
            self.0.put(r).await
        }
        async fn delete(&self, key: &str) -> Result<bool, matroska::BackendError> {
            self.0.delete(key).await
        }
        async fn invalidate(&self, deps: &[String]) -> Result<matroska::Invalidated, matroska::BackendError> {
            Ok(matroska::Invalidated::partial(
                0,
                (0..deps.len()).collect(),
                matroska::BackendError::new(matroska::BackendErrorKind::ForeignData, "foreign"),
            ))
        }
        async fn ticket(&self) -> Result<matroska::Ticket, matroska::BackendError> {
            self.0.ticket().await
        }
    }
    let cache = Cache::new(Foreign(MemoryBackend::new()));
    let err = cache.invalidate([Dep::tag("t")]).await.unwrap_err();
    assert!(matches!(err, Error::Invalidation { kept: false, .. }), "{err}");
    assert!(!err.is_transient());
    assert_eq!(cache.pending_invalidations(), 0);
    // a backend without clear says so
    assert!(cache.clear().await.is_err());
}

#[test]
fn deps_collect_extend_and_read_back() {
    let deps: matroska::Deps = [Dep::id("a", 1), Dep::id("a", 2)].into_iter().collect();
    deps.extend([Dep::tag("t")]);
    let mut more = matroska::Deps::new();
    Extend::extend(&mut more, [Dep::tag("u")]);
    assert_eq!(deps.to_vec(), vec![Dep::id("a", 1), Dep::id("a", 2), Dep::tag("t")]);
    assert_eq!(more.to_vec(), vec![Dep::tag("u")]);
}

#[test]
fn dependency_encoding_is_exact_and_injective() {
    assert_eq!(Dep::id("a:b", "c").as_str(), "id:a\\:b:c");
    assert_eq!(Dep::id("a", "b:c").as_str(), "id:a:b\\:c");
    assert_eq!(AsRef::<str>::as_ref(&Dep::tag("x")), "tag:x");
    assert_ne!(Dep::id("a", "bc"), Dep::id("ab", "c"));
    assert_ne!(Dep::id("a", "b"), Dep::tag("a:b"));
}

/// A backend that counts reads and can report impossible answers.
#[derive(Debug)]
struct Counting {
    inner: MemoryBackend,
    gets: std::sync::atomic::AtomicU64,
    /// Report this position (out of range) as failed on every invalidation.
    bogus_failure: Option<usize>,
}

#[async_trait::async_trait]
impl Backend for Counting {
    async fn get(&self, key: &str) -> Result<matroska::Lookup, matroska::BackendError> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn has(&self, key: &str) -> Result<bool, matroska::BackendError> {
        self.inner.has(key).await
    }
    async fn put(&self, r: matroska::PutRequest<'_>) -> Result<matroska::PutOutcome, matroska::BackendError> {
        self.inner.put(r).await
    }
    async fn delete(&self, key: &str) -> Result<bool, matroska::BackendError> {
        self.inner.delete(key).await
    }
    async fn invalidate(&self, deps: &[String]) -> Result<matroska::Invalidated, matroska::BackendError> {
        let mut inv = self.inner.invalidate(deps).await?;
        if let Some(i) = self.bogus_failure {
            inv.failed.push(i);
            inv.error = Some(matroska::BackendError::new(matroska::BackendErrorKind::Unavailable, "bogus"));
        }
        Ok(inv)
    }
    async fn ticket(&self) -> Result<matroska::Ticket, matroska::BackendError> {
        self.inner.ticket().await
    }
}

// one thread: each waiter runs from its read to its wait for the flight
// without interruption, so all have joined before the loader is released
#[tokio::test]
async fn waiters_joined_during_the_load_take_the_stored_value_without_reading_again() {
    let backend =
        Arc::new(Counting { inner: MemoryBackend::new(), gets: Default::default(), bogus_failure: None });
    let cache = Cache::builder().shared_backend(backend.clone()).build().unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let leader = {
        let (cache, release, started) = (cache.clone(), release.clone(), started.clone());
        tokio::spawn(async move {
            cache
                .get_or_load("k", Duration::from_secs(60), |_| async move {
                    started.notify_one();
                    release.notified().await;
                    Ok::<_, Error>(1u8)
                })
                .await
        })
    };
    started.notified().await;
    let mut waiters = Vec::new();
    for _ in 0..4 {
        let cache = cache.clone();
        waiters.push(tokio::spawn(async move {
            cache.get_or_load("k", Duration::from_secs(60), |_| async { Ok::<_, Error>(2u8) }).await
        }));
    }
    // every waiter has read (and missed) before the loader is released
    while backend.gets.load(std::sync::atomic::Ordering::SeqCst) < 5 {
        tokio::task::yield_now().await;
    }
    release.notify_one();
    assert_eq!(leader.await.unwrap().unwrap(), 1);
    for w in waiters {
        assert_eq!(w.await.unwrap().unwrap(), 1, "the leader's stored value");
    }
    assert_eq!(cache.stats().loads, 1);
    assert_eq!(backend.gets.load(std::sync::atomic::Ordering::SeqCst), 5, "no waiter read the backend again");
}

#[tokio::test]
async fn a_backend_reporting_positions_out_of_range_does_not_panic() {
    let backend =
        Arc::new(Counting { inner: MemoryBackend::new(), gets: Default::default(), bogus_failure: Some(7) });
    let cache = Cache::builder().shared_backend(backend).build().unwrap();
    cache.put("k", &1u8, [Dep::tag("t")], Duration::from_secs(60)).await.unwrap();
    // the impossible position is ignored: every dependency took effect
    assert_eq!(cache.invalidate([Dep::tag("t")]).await.unwrap(), 1);
    assert_eq!(cache.pending_invalidations(), 0);
}

mod memory_boundaries {
    use std::time::Duration;

    use bytes::Bytes;
    use matroska::clock::MockClock;
    use matroska::{Backend, Lookup, MemoryBackend, PutOutcome, PutRequest};

    fn put<'a>(key: &'a str, value: &'static [u8], deps: &'a [String], ttl: Duration) -> PutRequest<'a> {
        PutRequest { key, value: Bytes::from_static(value), deps, ttl, ticket: None }
    }

    #[tokio::test]
    async fn an_entry_expires_at_its_instant_exactly() {
        let clock = MockClock::new();
        let b = MemoryBackend::builder().clock(clock.clone()).build().unwrap();
        let deps = vec!["d".to_owned()];
        assert_eq!(b.put(put("k", b"v", &deps, Duration::from_secs(10))).await.unwrap(), PutOutcome::Stored);
        clock.advance(Duration::from_millis(9_999));
        assert!(matches!(b.get("k").await.unwrap(), Lookup::Hit(_)));
        assert!(b.has("k").await.unwrap());
        assert_eq!(b.peek("k").await.unwrap().map(|(_, left)| left), Some(Some(Duration::from_millis(1))));
        clock.advance(Duration::from_millis(1));
        assert!(matches!(b.get("k").await.unwrap(), Lookup::Miss(_)));
        assert!(!b.has("k").await.unwrap());
        assert_eq!(b.peek("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_second_put_with_more_dependencies_registers_them_all() {
        let b = MemoryBackend::new();
        let (a, ab) = (["a".to_owned()], ["a".to_owned(), "b".to_owned()]);
        assert_eq!(b.put(put("k", b"v", &a, Duration::from_secs(60))).await.unwrap(), PutOutcome::Stored);
        assert_eq!(b.put(put("k", b"v", &ab, Duration::from_secs(60))).await.unwrap(), PutOutcome::Stored);
        assert_eq!(b.invalidate(&["b".to_owned()]).await.unwrap().dropped, 1);
        assert!(!b.has("k").await.unwrap());
    }

    #[tokio::test]
    async fn a_load_after_an_invalidation_at_the_same_instant_is_stored() {
        let clock = MockClock::new();
        let b = MemoryBackend::builder().clock(clock.clone()).build().unwrap();
        let deps = vec!["d".to_owned()];
        b.invalidate(&deps).await.unwrap();
        let Lookup::Miss(ticket) = b.get("k").await.unwrap() else { panic!("a miss") };
        let req = PutRequest { ticket: Some(ticket), ..put("k", b"v", &deps, Duration::from_secs(60)) };
        assert_eq!(b.put(req).await.unwrap(), PutOutcome::Stored, "the read began after the invalidation");
    }

    #[tokio::test]
    async fn a_ticket_is_good_for_exactly_the_window() {
        let clock = MockClock::new();
        let window = Duration::from_secs(5);
        let b = MemoryBackend::builder().clock(clock.clone()).tombstone_window(window).build().unwrap();
        let deps = vec!["d".to_owned()];
        let Lookup::Miss(t1) = b.get("k1").await.unwrap() else { panic!("a miss") };
        let Lookup::Miss(t2) = b.get("k2").await.unwrap() else { panic!("a miss") };
        clock.advance(window);
        let at = |key, ticket| PutRequest { ticket: Some(ticket), ..put(key, b"v", &deps, Duration::from_secs(60)) };
        // t1 is now (at most) exactly the window old
        assert_eq!(b.put(at("k1", t1)).await.unwrap(), PutOutcome::Stored);
        clock.advance(Duration::from_millis(1));
        assert_eq!(b.put(at("k2", t2)).await.unwrap(), PutOutcome::Refused, "older than the window");
    }

    #[tokio::test]
    async fn max_bytes_counts_key_value_and_dependencies() {
        // weight = key + value + (dependency + 16) each + 64 = 3 + 37 + 18 + 64 = 122
        let b = MemoryBackend::builder().max_bytes(5 * 122).build().unwrap();
        let deps = vec!["d0".to_owned()];
        let value: &'static [u8] = &[7u8; 37];
        for i in 0..5 {
            let key = format!("k{i:02}");
            assert_eq!(b.put(put(&key, value, &deps, Duration::from_secs(60))).await.unwrap(), PutOutcome::Stored);
        }
        b.run_pending_tasks();
        assert_eq!(b.entry_count(), 5, "exactly five fit");
        let _ = b.put(put("k05", value, &deps, Duration::from_secs(60))).await.unwrap();
        b.run_pending_tasks();
        assert!(b.entry_count() <= 5, "a sixth does not fit: {}", b.entry_count());
    }
}
