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
