//! Regression tests for races and failure paths of the `Cache` facade, each
//! written as the interleaving that broke it, on the memory backend wrapped
//! in a backend whose calls can be failed, held or failed per dependency.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use matroska::{
    Backend, BackendError, BackendErrorKind, Cache, Dep, Error, Fetched, Invalidated, Lookup, MemoryBackend,
    PutOutcome, PutRequest, Ticket,
};
use tokio::sync::{oneshot, Notify};

const TTL: Duration = Duration::from_secs(600);

/// A memory backend whose calls can be switched off, whose invalidations
/// can fail for chosen dependencies, and whose next invalidation can be held
/// after it took effect.
#[derive(Debug, Default)]
struct Faulty {
    inner: MemoryBackend,
    down: AtomicBool,
    /// Dependencies (backend keys containing one of these) that fail.
    bad: Mutex<Vec<String>>,
    /// When set, the next invalidation takes effect, then waits for `release`.
    hold_next: AtomicBool,
    held: Notify,
    release: Notify,
    invalidations: AtomicU64,
}

impl Faulty {
    fn check(&self) -> Result<(), BackendError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::new(BackendErrorKind::Unavailable, "switched off"));
        }
        Ok(())
    }
    fn set_bad(&self, parts: &[&str]) {
        *self.bad.lock().unwrap() = parts.iter().map(|s| (*s).to_owned()).collect();
    }
}

#[async_trait]
impl Backend for Faulty {
    async fn get(&self, key: &str) -> Result<Lookup, BackendError> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn has(&self, key: &str) -> Result<bool, BackendError> {
        self.check()?;
        self.inner.has(key).await
    }
    async fn put(&self, req: PutRequest<'_>) -> Result<PutOutcome, BackendError> {
        self.check()?;
        self.inner.put(req).await
    }
    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn invalidate(&self, deps: &[String]) -> Result<Invalidated, BackendError> {
        self.check()?;
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        let bad = self.bad.lock().unwrap().clone();
        let failed: Vec<usize> =
            (0..deps.len()).filter(|&i| bad.iter().any(|b| deps[i].contains(b.as_str()))).collect();
        let good: Vec<String> =
            deps.iter().enumerate().filter(|(i, _)| !failed.contains(i)).map(|(_, d)| d.clone()).collect();
        let dropped = self.inner.invalidate(&good).await?.dropped;
        if self.hold_next.swap(false, Ordering::SeqCst) {
            self.held.notify_one();
            self.release.notified().await;
        }
        Ok(if failed.is_empty() {
            Invalidated::complete(dropped)
        } else {
            Invalidated::partial(dropped, failed, BackendError::new(BackendErrorKind::Unavailable, "slot down"))
        })
    }
    async fn ticket(&self) -> Result<Ticket, BackendError> {
        self.check()?;
        self.inner.ticket().await
    }
    async fn clear(&self, prefix: &str) -> Result<u64, BackendError> {
        self.check()?;
        self.inner.clear(prefix).await
    }
}

fn faulty() -> (Arc<Faulty>, Cache) {
    let b = Arc::new(Faulty::default());
    let cache = Cache::builder().shared_backend(b.clone()).build().unwrap();
    (b, cache)
}

/// A "database" row whose committed version loaders read.
#[derive(Clone, Default)]
struct Row(Arc<AtomicU64>);

impl Row {
    fn read(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn commit(&self, v: u64) {
        self.0.store(v, Ordering::SeqCst);
    }
}

/// Starts a `get_or_load` of `key` whose loader reads `row`, then waits for
/// `go` before returning what it read. Returns once the loader has read.
async fn held_leader(
    cache: &Cache,
    key: &'static str,
    row: &Row,
) -> (tokio::task::JoinHandle<u64>, oneshot::Sender<()>) {
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (read_tx, read_rx) = oneshot::channel::<()>();
    let (cache, row) = (cache.clone(), row.clone());
    let leader = tokio::spawn(async move {
        cache
            .get_or_load(key, TTL, |deps| async move {
                deps.push(Dep::id("row", 1));
                let v = row.read();
                let _ = read_tx.send(());
                let _ = go_rx.await;
                Ok::<_, Error>(v)
            })
            .await
            .unwrap()
    });
    read_rx.await.unwrap();
    (leader, go_tx)
}

/// Defect: a single-flight waiter received the leader's value although the
/// leader's put was refused. The leader loads v1; a writer commits v2 and
/// invalidates; a reader starting now joins the running flight. It must get
/// v2, never v1.
#[tokio::test]
async fn a_waiter_never_gets_a_value_loaded_before_an_invalidation_it_follows() {
    let (_b, cache) = faulty();
    let row = Row::default();
    row.commit(1);
    let (leader, go) = held_leader(&cache, "k", &row).await;
    // the writer
    row.commit(2);
    cache.invalidate([Dep::id("row", 1)]).await.unwrap();
    // a reader that starts after the invalidation returned
    let reader = {
        let (cache, row) = (cache.clone(), row.clone());
        tokio::spawn(async move {
            cache
                .get_or_load("k", TTL, |deps| async move {
                    deps.push(Dep::id("row", 1));
                    Ok::<_, Error>(row.read())
                })
                .await
                .unwrap()
        })
    };
    tokio::task::yield_now().await;
    go.send(()).unwrap();
    assert_eq!(leader.await.unwrap(), 1, "the leader's own read began before the write");
    assert_eq!(reader.await.unwrap(), 2, "the reader began after the invalidation returned");
    assert_eq!(cache.get::<u64>("k").await.unwrap(), Some(2));
}

/// The same interleaving inside an outer loader: the stale inner value must
/// not be bubbled into an outer entry that is then stored.
#[tokio::test]
async fn a_waiter_inside_an_outer_loader_does_not_store_a_stale_outer_entry() {
    let (_b, cache) = faulty();
    let row = Row::default();
    row.commit(1);
    let (leader, go) = held_leader(&cache, "inner", &row).await;
    row.commit(2);
    cache.invalidate([Dep::id("row", 1)]).await.unwrap();
    let outer = {
        let (cache, row) = (cache.clone(), row.clone());
        tokio::spawn(async move {
            let c = cache.clone();
            cache
                .get_or_load("outer", TTL, |_deps| async move {
                    let inner: u64 = c
                        .get_or_load("inner", TTL, |deps| async move {
                            deps.push(Dep::id("row", 1));
                            Ok::<_, Error>(row.read())
                        })
                        .await?;
                    Ok::<_, Error>(inner * 10)
                })
                .await
                .unwrap()
        })
    };
    tokio::task::yield_now().await;
    go.send(()).unwrap();
    leader.await.unwrap();
    assert_eq!(outer.await.unwrap(), 20);
    if let Some(stored) = cache.get::<u64>("outer").await.unwrap() {
        assert_eq!(stored, 20, "the outer entry holds the fresh inner value or nothing");
    }
}

/// A waiter that joined before the leader began storing takes the stored
/// value without loading (single flight still saves the loads).
#[tokio::test]
async fn waiters_share_a_stored_value() {
    let (_b, cache) = faulty();
    let row = Row::default();
    row.commit(7);
    let loads = Arc::new(AtomicU64::new(0));
    let (leader, go) = held_leader(&cache, "k", &row).await;
    let mut waiters = Vec::new();
    for _ in 0..8 {
        let (cache, loads) = (cache.clone(), loads.clone());
        waiters.push(tokio::spawn(async move {
            cache
                .get_or_load("k", TTL, |_| async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Error>(0u64)
                })
                .await
                .unwrap()
        }));
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    go.send(()).unwrap();
    assert_eq!(leader.await.unwrap(), 7);
    for w in waiters {
        assert_eq!(w.await.unwrap(), 7);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 0);
}

/// Defect: a retry that succeeded forgot a failure of the same dependency
/// recorded while it was in flight.
#[tokio::test]
async fn a_failure_during_a_retry_is_not_forgotten() {
    let (b, cache) = faulty();
    cache.put("a", &1u32, [Dep::id("row", 1)], TTL).await.unwrap();
    b.down.store(true, Ordering::SeqCst);
    assert!(cache.invalidate([Dep::id("row", 1)]).await.unwrap_err().is_transient());
    assert_eq!(cache.pending_invalidations(), 1);
    b.down.store(false, Ordering::SeqCst);
    // an invalidation of another dependency carries row 1 along; it takes
    // effect and is then held
    b.hold_next.store(true, Ordering::SeqCst);
    let carrier = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.invalidate([Dep::id("row", 2)]).await })
    };
    b.held.notified().await;
    // meanwhile row 1 is written again and its invalidation fails
    cache.put("a", &2u32, [Dep::id("row", 1)], TTL).await.ok();
    b.set_bad(&["row"]);
    assert!(cache.invalidate([Dep::id("row", 1)]).await.is_err());
    b.set_bad(&[]);
    b.release.notify_one();
    carrier.await.unwrap().unwrap();
    assert_eq!(cache.pending_invalidations(), 1, "the later failure is still pending");
    assert_eq!(cache.get::<u32>("a").await.unwrap(), None, "and applied before the next read");
}

/// Defect: one failing dependency (a dead cluster master) failed every
/// invalidation that carried it along.
#[tokio::test]
async fn a_failing_dependency_does_not_block_the_others() {
    let (b, cache) = faulty();
    let other = Cache::builder().shared_backend(b.clone()).build().unwrap();
    cache.put("bad", &1u32, [Dep::id("bad", 1)], TTL).await.unwrap();
    cache.put("good", &2u32, [Dep::id("good", 1)], TTL).await.unwrap();
    cache.put("both", &3u32, [Dep::id("good", 2), Dep::id("bad", 2)], TTL).await.unwrap();
    b.set_bad(&["bad"]);
    let err = cache.invalidate([Dep::id("bad", 1), Dep::id("good", 2)]).await.unwrap_err();
    match &err {
        Error::Invalidation { failed, kept, .. } => {
            assert_eq!(failed, &vec![Dep::id("bad", 1)], "only the failed dependency is reported");
            assert!(kept);
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.is_transient());
    // the healthy dependency took full effect (seen through a cache with
    // nothing pending)
    assert_eq!(other.get::<u32>("both").await.unwrap(), None);
    assert_eq!(other.get::<u32>("good").await.unwrap(), Some(2));
    // while the bad one stays pending, the next invalidation of a healthy
    // dependency succeeds although the pending one fails again
    assert_eq!(cache.invalidate([Dep::id("good", 1)]).await.unwrap(), 1);
    assert_eq!(cache.pending_invalidations(), 1);
    // reads are not served while it is pending and cannot be applied
    assert!(cache.get::<u32>("bad").await.is_err());
    let v = cache.get_or_load("bad", TTL, |_| async { Ok::<_, Error>(9u32) }).await.unwrap();
    assert_eq!(v, 9, "get_or_load loads instead");
    // once the dependency recovers, the next read applies it first
    b.set_bad(&[]);
    assert_eq!(cache.get::<u32>("bad").await.unwrap(), None);
    assert_eq!(cache.pending_invalidations(), 0);
}

/// A read through the cache after a failed invalidation returned never sees
/// the entry it covered, even once the backend is back and before any retry.
#[tokio::test(start_paused = true)]
async fn a_failed_invalidation_holds_for_later_reads() {
    let (b, cache) = faulty();
    cache.put("a", &1u32, [Dep::id("row", 1)], TTL).await.unwrap();
    b.down.store(true, Ordering::SeqCst);
    assert!(cache.invalidate([Dep::id("row", 1)]).await.is_err());
    assert!(cache.get::<u32>("a").await.is_err(), "down: no read is served");
    b.down.store(false, Ordering::SeqCst);
    assert_eq!(cache.get::<u32>("a").await.unwrap(), None, "applied before the first read");
}

/// The background retry applies a failed invalidation with no read or
/// invalidation to carry it: another cache on the same backend sees it.
#[tokio::test(start_paused = true)]
async fn failed_invalidations_are_retried_in_the_background() {
    let (b, cache) = faulty();
    let other = Cache::builder().shared_backend(b.clone()).build().unwrap();
    cache.put("a", &1u32, [Dep::id("row", 1)], TTL).await.unwrap();
    b.down.store(true, Ordering::SeqCst);
    assert!(cache.invalidate([Dep::id("row", 1)]).await.is_err());
    tokio::time::sleep(Duration::from_millis(500)).await; // retries fail meanwhile
    assert_eq!(cache.pending_invalidations(), 1);
    b.down.store(false, Ordering::SeqCst);
    assert_eq!(other.get::<u32>("a").await.unwrap(), Some(1), "another process sees it until the retry runs");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cache.pending_invalidations(), 0);
    assert_eq!(other.get::<u32>("a").await.unwrap(), None, "the retried invalidation took effect");
}

/// A put of a value depending on a pending invalidation is refused: no
/// tombstone protects it yet.
#[tokio::test]
async fn puts_depending_on_a_pending_invalidation_are_refused() {
    let (b, cache) = faulty();
    let Fetched::Miss(ticket) = cache.lookup::<u32>("k").await.unwrap() else { panic!("expected a miss") };
    b.set_bad(&["row"]);
    assert!(cache.invalidate([Dep::id("row", 1)]).await.is_err());
    let out = cache.put_with_ticket("k", &1u32, [Dep::id("row", 1)], TTL, ticket).await.unwrap();
    assert_eq!(out, PutOutcome::Refused);
    // defect: an unconditional put reported success for nothing
    let err = cache.put("k", &1u32, [Dep::id("row", 1)], TTL).await.unwrap_err();
    assert!(matches!(err, Error::NotStored { .. }), "{err}");
    // unrelated dependencies are stored
    cache.put("j", &1u32, [Dep::id("row", 2)], TTL).await.unwrap();
}

/// Beyond the bound, the cache serves nothing until cleared.
#[tokio::test]
async fn an_overflow_of_pending_invalidations_stops_reads_until_clear() {
    let b = Arc::new(Faulty::default());
    let cache = Cache::builder().shared_backend(b.clone()).max_pending_invalidations(10).build().unwrap();
    cache.put("a", &1u32, [Dep::id("keep", 1)], TTL).await.unwrap();
    b.set_bad(&["row"]);
    for i in 0..20 {
        let err = cache.invalidate([Dep::id("row", i)]).await.unwrap_err();
        if let Error::Invalidation { kept, .. } = err {
            assert_eq!(kept, i < 10, "kept within the bound only");
        }
    }
    assert_eq!(cache.pending_invalidations(), 10);
    b.set_bad(&[]);
    assert!(cache.get::<u32>("a").await.is_err(), "lost invalidations: nothing is served");
    assert!(matches!(cache.put("b", &1u32, [Dep::tag("x")], TTL).await, Err(Error::NotStored { .. })));
    assert_eq!(cache.clear().await.unwrap(), 1);
    assert_eq!(cache.pending_invalidations(), 0);
    assert_eq!(cache.get::<u32>("a").await.unwrap(), None);
    cache.put("b", &1u32, [Dep::tag("x")], TTL).await.unwrap();
    assert_eq!(cache.get::<u32>("b").await.unwrap(), Some(1));
}

/// A load whose loader read uncommitted data is returned but neither stored
/// nor shared, and marks the enclosing loader too.
#[tokio::test]
async fn uncacheable_loads_are_returned_but_not_stored() {
    let (_b, cache) = faulty();
    let c = cache.clone();
    let v: u32 = cache
        .get_or_load("outer", TTL, |_| async move {
            let inner: u32 = c
                .get_or_load("inner", TTL, |deps| async move {
                    deps.push(Dep::id("row", 1));
                    assert!(matroska::mark_uncacheable("read inside a transaction"));
                    Ok::<_, Error>(5)
                })
                .await?;
            Ok::<_, Error>(inner + 1)
        })
        .await
        .unwrap();
    assert_eq!(v, 6);
    assert_eq!(cache.get::<u32>("inner").await.unwrap(), None);
    assert_eq!(cache.get::<u32>("outer").await.unwrap(), None);
    assert_eq!(cache.stats().uncacheable_loads, 2);
    assert!(!matroska::mark_uncacheable("outside any loader"));
}

/// Defect: a cluster put without a ticket could be refused and reported as
/// stored; a clear refuses puts of loads that began before it.
#[tokio::test]
async fn clear_refuses_loads_that_began_before_it() {
    let (_b, cache) = faulty();
    cache.put("a", &1u32, [Dep::tag("t")], TTL).await.unwrap();
    let Fetched::Miss(ticket) = cache.lookup::<u32>("b").await.unwrap() else { panic!("expected a miss") };
    assert_eq!(cache.clear().await.unwrap(), 1);
    assert_eq!(cache.put_with_ticket("b", &1u32, [Dep::tag("t")], TTL, ticket).await.unwrap(), PutOutcome::Refused);
    let Fetched::Miss(ticket) = cache.lookup::<u32>("b").await.unwrap() else { panic!("expected a miss") };
    assert_eq!(cache.put_with_ticket("b", &1u32, [Dep::tag("t")], TTL, ticket).await.unwrap(), PutOutcome::Stored);
}

/// Defect: extreme settings panicked (`Instant + Duration::MAX`). Builders
/// now refuse them with an error naming the setting.
#[test]
fn extreme_settings_are_refused_by_the_builders() {
    let err = Cache::builder().max_ttl(Duration::MAX).build().unwrap_err();
    assert_eq!(err.setting(), "max_ttl");
    assert!(err.to_string().contains("max_ttl"), "{err}");
    assert_eq!(Cache::builder().max_ttl(Duration::ZERO).build().unwrap_err().setting(), "max_ttl");
    assert_eq!(Cache::builder().max_value_bytes(0).build().unwrap_err().setting(), "max_value_bytes");
    assert_eq!(Cache::builder().max_key_bytes(0).build().unwrap_err().setting(), "max_key_bytes");
    assert_eq!(
        Cache::builder().max_pending_invalidations(0).build().unwrap_err().setting(),
        "max_pending_invalidations"
    );
    let err = MemoryBackend::builder().tombstone_window(Duration::MAX).build().unwrap_err();
    assert_eq!(err.setting(), "tombstone_window");
    assert_eq!(MemoryBackend::builder().max_entries(0).build().unwrap_err().setting(), "max_entries");
    assert_eq!(MemoryBackend::builder().max_bytes(0).build().unwrap_err().setting(), "max_bytes");
}

mod builder_properties {
    use super::*;
    use proptest::prelude::*;

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            (0u64..u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            (0u64..10_000_000).prop_map(Duration::from_millis),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        /// Whatever the settings, building gives a cache or an error, and a
        /// built cache's operations give values or errors, never a panic.
        #[test]
        fn any_settings_build_or_fail_cleanly(
            max_ttl in duration(),
            window in duration(),
            ttl in duration(),
            entries in prop_oneof![Just(0u64), 1u64..1_000, Just(u64::MAX)],
            value_bytes in prop_oneof![Just(0usize), 1usize..64, Just(usize::MAX)],
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let Ok(backend) = MemoryBackend::builder().max_entries(entries).tombstone_window(window).build() else {
                    return;
                };
                let Ok(cache) = Cache::builder().backend(backend).max_ttl(max_ttl).max_value_bytes(value_bytes).build()
                else {
                    return;
                };
                let _ = cache.put("k", &"value", [Dep::tag("t")], ttl).await;
                let _ = cache.get::<String>("k").await;
                let _ = cache.get_or_load("j", ttl, |_| async { Ok::<_, Error>(1u8) }).await;
                let _ = cache.invalidate([Dep::tag("t")]).await;
            });
        }
    }
}

/// A recovery that counts its runs and can be made to fail.
struct Counting {
    runs: AtomicU64,
    fail: AtomicBool,
}

impl matroska::Recovery for Counting {
    fn recover(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), matroska::BoxError>> + Send + '_>> {
        Box::pin(async move {
            self.runs.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                Err("the durable intents cannot be read".into())
            } else {
                Ok(())
            }
        })
    }
}

/// A recovery runs before the first read and after every outage; while it
/// fails, nothing is served from the cache and nothing is stored.
#[tokio::test]
async fn a_recovery_runs_before_serving_reads_after_an_outage() {
    let (b, cache) = faulty();
    cache.put("a", &1u32, [Dep::tag("t")], TTL).await.unwrap();
    let counting = Arc::new(Counting { runs: AtomicU64::new(0), fail: AtomicBool::new(true) });
    let recovery: Arc<dyn matroska::Recovery> = counting.clone();
    cache.set_recovery(&recovery);
    assert!(cache.needs_recovery());
    assert!(cache.get::<u32>("a").await.is_err(), "not served while the recovery fails");
    assert!(matches!(cache.put("b", &1u32, [Dep::tag("t")], TTL).await, Err(Error::NotStored { .. })));
    let v = cache.get_or_load("a", TTL, |_| async { Ok::<_, Error>(7u32) }).await.unwrap();
    assert_eq!(v, 7, "get_or_load loads instead");
    counting.fail.store(false, Ordering::SeqCst);
    assert_eq!(cache.get::<u32>("a").await.unwrap(), Some(1));
    let runs = counting.runs.load(Ordering::SeqCst);
    assert_eq!(cache.get::<u32>("a").await.unwrap(), Some(1));
    assert_eq!(counting.runs.load(Ordering::SeqCst), runs, "not again while the backend answers");
    // an outage: the next read recovers first
    b.down.store(true, Ordering::SeqCst);
    assert!(cache.get::<u32>("a").await.is_err());
    b.down.store(false, Ordering::SeqCst);
    assert_eq!(cache.get::<u32>("a").await.unwrap(), Some(1));
    assert_eq!(counting.runs.load(Ordering::SeqCst), runs + 1);
    // the cache holds it weakly
    drop(recovery);
    drop(counting);
    assert!(!cache.needs_recovery());
}
