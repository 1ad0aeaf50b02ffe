//! The shared behaviour suite and memory-specific tests for `MemoryBackend`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use matroska::clock::MockClock;
use matroska::{Backend, Cache, Dep, Error, Fetched, MemoryBackend, PutOutcome};

backend_suite!(async { Some(Arc::new(MemoryBackend::new()) as Arc<dyn Backend>) });

fn mocked(window: Duration) -> (MemoryBackend, MockClock) {
    let clock = MockClock::new();
    let backend = MemoryBackend::builder().clock(clock.clone()).tombstone_window(window).build().unwrap();
    (backend, clock)
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let (backend, clock) = mocked(Duration::from_secs(60));
    let cache = Cache::new(backend);
    cache.put("short", &1u32, [Dep::tag("t")], Duration::from_secs(5)).await.unwrap();
    cache.put("long", &2u32, [Dep::tag("t")], Duration::from_secs(50)).await.unwrap();
    clock.advance(Duration::from_secs(4));
    assert_eq!(cache.get::<u32>("short").await.unwrap(), Some(1));
    clock.advance(Duration::from_secs(2));
    assert_eq!(cache.get::<u32>("short").await.unwrap(), None);
    assert!(!cache.has("short").await.unwrap());
    assert_eq!(cache.get::<u32>("long").await.unwrap(), Some(2));
}

#[tokio::test]
async fn tickets_older_than_the_window_are_refused() {
    let (backend, clock) = mocked(Duration::from_secs(10));
    let cache = Cache::new(backend);
    let Fetched::Miss(ticket) = cache.lookup::<u32>("k").await.unwrap() else { panic!() };
    clock.advance(Duration::from_secs(11));
    let out = cache.put_with_ticket("k", &1u32, [Dep::tag("t")], Duration::from_secs(60), ticket).await.unwrap();
    assert_eq!(out, PutOutcome::Refused);
}

#[tokio::test]
async fn tombstones_are_forgotten_after_the_window() {
    let (backend, clock) = mocked(Duration::from_secs(10));
    let cache = Cache::new(backend.clone());
    for i in 0..1000 {
        cache.invalidate([Dep::id("row", i)]).await.unwrap();
    }
    assert_eq!(backend.tombstone_count(), 1000);
    clock.advance(Duration::from_secs(11));
    assert_eq!(backend.tombstone_count(), 0, "tombstones are bounded by the window");
}

/// The original kept 10,001 dead members for one hot dependency after 10,000
/// short-lived puts; here the index holds only live members after expiry and
/// one more touch.
#[tokio::test]
async fn hot_dependency_index_stays_bounded() {
    let (backend, clock) = mocked(Duration::from_secs(60));
    let cache = Cache::new(backend.clone());
    let hot = Dep::tag("hot");
    cache.put("long-lived", &0u32, [hot.clone()], Duration::from_secs(3600)).await.unwrap();
    for i in 0..10_000u32 {
        cache.put(&format!("short:{i}"), &i, [hot.clone()], Duration::from_secs(1)).await.unwrap();
    }
    clock.advance(Duration::from_secs(2));
    // one more touch of the dependency
    cache.put("touch", &1u32, [hot.clone()], Duration::from_secs(3600)).await.unwrap();
    let dep_key = format!(":{}", hot.as_str());
    let members = backend.dependents(&dep_key);
    assert_eq!(members, 2, "index holds {members} members for 2 live entries");
    assert_eq!(cache.invalidate([hot]).await.unwrap(), 2);
    assert_eq!(backend.index_len(), 0);
}

/// A dependency with 100,000 dependents is invalidated completely, and an
/// unrelated entry stays.
#[tokio::test]
async fn hundred_thousand_dependents() {
    let backend = MemoryBackend::builder().max_entries(200_000).build().unwrap();
    let cache = Cache::new(backend.clone());
    let hot = Dep::tag("hot");
    for i in 0..100_000u32 {
        cache.put(&format!("k{i}"), &i, [hot.clone()], Duration::from_secs(600)).await.unwrap();
    }
    cache.put("bystander", &1u32, [Dep::tag("other")], Duration::from_secs(600)).await.unwrap();
    assert_eq!(cache.invalidate([hot]).await.unwrap(), 100_000);
    assert_eq!(cache.get::<u32>("k99999").await.unwrap(), None);
    assert_eq!(cache.get::<u32>("bystander").await.unwrap(), Some(1));
    assert_eq!(backend.index_len(), 1);
}

#[tokio::test]
async fn capacity_evicts_and_unregisters() {
    let backend = MemoryBackend::builder().max_entries(100).build().unwrap();
    let cache = Cache::new(backend.clone());
    for i in 0..1000u32 {
        cache.put(&format!("k{i}"), &i, [Dep::id("row", i), Dep::tag("all")], Duration::from_secs(60)).await.unwrap();
    }
    backend.run_pending_tasks();
    let entries = backend.entry_count();
    assert!(entries <= 100, "{entries} entries for a bound of 100");
    backend.run_pending_tasks();
    assert!(backend.index_len() as u64 <= 2 * 100, "index {} for {} entries", backend.index_len(), entries);
    let dropped = cache.invalidate([Dep::tag("all")]).await.unwrap();
    assert_eq!(dropped, entries);
}

#[tokio::test]
async fn byte_bound_limits_total_size() {
    let backend = MemoryBackend::builder().max_bytes(64 * 1024).build().unwrap();
    let cache = Cache::new(backend.clone());
    let value = vec![7u8; 1024];
    for i in 0..500u32 {
        cache.put(&format!("k{i}"), &value, [Dep::id("row", i)], Duration::from_secs(60)).await.unwrap();
    }
    let entries = backend.entry_count();
    assert!(entries > 0 && entries < 64, "{entries} entries of ~1 KiB in 64 KiB");
}

#[tokio::test]
async fn delete_and_overwrite_leave_no_registrations() {
    let backend = MemoryBackend::new();
    let cache = Cache::new(backend.clone());
    cache.put("k", &1u32, [Dep::tag("a"), Dep::tag("b")], Duration::from_secs(60)).await.unwrap();
    cache.put("k", &2u32, [Dep::tag("c")], Duration::from_secs(60)).await.unwrap();
    assert_eq!(backend.index_len(), 1);
    cache.delete("k").await.unwrap();
    assert_eq!(backend.index_len(), 0);
}

#[tokio::test]
async fn loader_errors_convert_from_cache_errors() {
    #[derive(Debug)]
    enum AppError {
        Cache(Error),
    }
    impl From<Error> for AppError {
        fn from(e: Error) -> Self {
            AppError::Cache(e)
        }
    }
    let cache = Cache::new(MemoryBackend::new());
    let r: Result<u32, AppError> = cache.get_or_load("k", Duration::ZERO, |_| async { Ok(1) }).await;
    assert!(matches!(r, Err(AppError::Cache(Error::InvalidTtl { .. }))));
}

#[test]
fn public_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let cache = Cache::new(MemoryBackend::new());
    let ttl = Duration::from_secs(1);
    is_send(&cache.get::<u32>("k"));
    is_send(&cache.lookup::<u32>("k"));
    is_send(&cache.has("k"));
    is_send(&cache.put("k", &1u32, [Dep::tag("t")], ttl));
    is_send(&cache.delete("k"));
    is_send(&cache.invalidate([Dep::tag("t")]));
    is_send(&cache.get_or_load("k", ttl, |_| async { Ok::<u32, Error>(1) }));
    let scopes = matroska::Scopes::<u32>::new("n", matroska::Mode::Production);
    is_send(&scopes.invalidate_for(&cache, &1, None));
    is_send(&scopes.invalidate_change(&cache, &1, &2, &["x"]));
    fn clone_send_sync<T: Clone + Send + Sync>() {}
    clone_send_sync::<Cache>();
}
