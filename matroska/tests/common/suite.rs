//! Behaviour tests every backend must pass, written once against the `Backend`
//! trait through `Cache`.
//!
//! Use: `backend_suite!(async { <an Arc<dyn Backend>, fresh and isolated> });`
//! in a test file that declares `mod common;`. Each test gets its own backend
//! from the factory (the expression is evaluated once per test) and returns
//! early if the factory yields `None` (backend not available and not required).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use matroska::{params, Backend, Cache, Dep, Error, Fetched, Mode, PutOutcome, Scopes};
use serde::{Deserialize, Serialize};

pub const TTL: Duration = Duration::from_secs(60);

pub fn cache(backend: &Arc<dyn Backend>, prefix: &str) -> Cache {
    Cache::builder().shared_backend(Arc::clone(backend)).prefix(prefix).build().unwrap()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Article {
    pub id: u64,
    pub title: String,
    pub category: String,
    pub published: bool,
}

fn article(id: u64, category: &str) -> Article {
    Article { id, title: format!("article {id}"), category: category.into(), published: true }
}

pub async fn miss_is_none(b: Arc<dyn Backend>) {
    let c = cache(&b, "t");
    assert_eq!(c.get::<String>("nothing").await.unwrap(), None);
    assert!(!c.has("nothing").await.unwrap());
    assert!(matches!(c.lookup::<String>("nothing").await.unwrap(), Fetched::Miss(_)));
}

pub async fn put_get_has_delete(b: Arc<dyn Backend>) {
    let c = cache(&b, "t");
    let a = article(1, "python");
    c.put("a1", &a, [Dep::id("article", 1)], TTL).await.unwrap();
    assert_eq!(c.get::<Article>("a1").await.unwrap(), Some(a.clone()));
    assert!(c.has("a1").await.unwrap());
    c.put("s", "plain string", Vec::<Dep>::new(), TTL).await.unwrap();
    assert_eq!(c.get::<String>("s").await.unwrap().as_deref(), Some("plain string"));
    assert!(c.delete("a1").await.unwrap());
    assert!(!c.delete("a1").await.unwrap());
    assert_eq!(c.get::<Article>("a1").await.unwrap(), None);
    // a deleted entry's registrations are gone: invalidating its dep drops nothing
    assert_eq!(c.invalidate([Dep::id("article", 1)]).await.unwrap(), 0);
}

pub async fn invalidate_drops_dependents_only(b: Arc<dyn Backend>) {
    let c = cache(&b, "t");
    c.put("list", &vec![1, 2], [Dep::id("article", 1), Dep::id("article", 2), Dep::id("author", 1)], TTL)
        .await
        .unwrap();
    c.put("other", &vec![3], [Dep::id("article", 3)], TTL).await.unwrap();
    c.put("third", &vec![4], [Dep::id("author", 1)], TTL).await.unwrap();
    let dropped = c.invalidate([Dep::id("author", 1)]).await.unwrap();
    assert_eq!(dropped, 2);
    assert_eq!(c.get::<Vec<u32>>("list").await.unwrap(), None);
    assert_eq!(c.get::<Vec<u32>>("third").await.unwrap(), None);
    assert_eq!(c.get::<Vec<u32>>("other").await.unwrap(), Some(vec![3]));
    assert_eq!(c.invalidate(Vec::<Dep>::new()).await.unwrap(), 0);
    // many deps at once
    c.put("x", &1, [Dep::tag("a")], TTL).await.unwrap();
    c.put("y", &2, [Dep::tag("b")], TTL).await.unwrap();
    assert_eq!(c.invalidate([Dep::tag("a"), Dep::tag("b"), Dep::tag("c")]).await.unwrap(), 2);
    assert_eq!(c.get::<Vec<u32>>("other").await.unwrap(), Some(vec![3]));
}

pub async fn overwrite_replaces_dependencies(b: Arc<dyn Backend>) {
    let c = cache(&b, "t");
    c.put("k", &1, [Dep::tag("old")], TTL).await.unwrap();
    c.put("k", &2, [Dep::tag("new")], TTL).await.unwrap();
    c.invalidate([Dep::tag("old")]).await.unwrap();
    assert_eq!(c.get::<u32>("k").await.unwrap(), Some(2), "the old dependency no longer applies");
    c.invalidate([Dep::tag("new")]).await.unwrap();
    assert_eq!(c.get::<u32>("k").await.unwrap(), None);
}

pub async fn stale_put_is_refused(b: Arc<dyn Backend>) {
    let c = cache(&b, "t");
    let Fetched::Miss(ticket) = c.lookup::<u32>("k").await.unwrap() else { panic!("expected a miss") };
    c.invalidate([Dep::id("row", 1)]).await.unwrap();
    let out = c.put_with_ticket("k", &1, [Dep::id("row", 1)], TTL, ticket).await.unwrap();
    assert_eq!(out, PutOutcome::Refused);
    assert_eq!(c.get::<u32>("k").await.unwrap(), None);
    // unrelated dependencies do not refuse
    let out = c.put_with_ticket("k", &1, [Dep::id("row", 2)], TTL, ticket).await.unwrap();
    assert_eq!(out, PutOutcome::Stored);
    // a ticket issued after the invalidation is accepted
    c.delete("k").await.unwrap();
    let Fetched::Miss(fresh) = c.lookup::<u32>("k").await.unwrap() else { panic!("expected a miss") };
    let out = c.put_with_ticket("k", &2, [Dep::id("row", 1)], TTL, fresh).await.unwrap();
    assert_eq!(out, PutOutcome::Stored);
    assert_eq!(c.stats().refused_puts, 1);
}

pub async fn get_or_load_refuses_data_loaded_across_invalidation(b: Arc<dyn Backend>) {
    let c = cache(&b, "t");
    let c2 = c.clone();
    let v: u32 = c
        .get_or_load("k", TTL, |deps| async move {
            deps.push(Dep::id("row", 1));
            // a writer commits and invalidates while we load
            c2.invalidate([Dep::id("row", 1)]).await?;
            Ok::<_, Error>(41)
        })
        .await
        .unwrap();
    assert_eq!(v, 41, "the loaded value is still returned");
    assert_eq!(c.get::<u32>("k").await.unwrap(), None, "but not stored");
    assert_eq!(c.stats().refused_puts, 1);
    let v: u32 = c
        .get_or_load("k", TTL, |deps| async move {
            deps.push(Dep::id("row", 1));
            Ok::<_, Error>(42)
        })
        .await
        .unwrap();
    assert_eq!(v, 42);
    assert_eq!(c.get::<u32>("k").await.unwrap(), Some(42));
}

pub async fn single_flight(b: Arc<dyn Backend>) {
    let c = cache(&b, "t");
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (c, runs, gate) = (c.clone(), runs.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_load("hot", TTL, |deps| async move {
                runs.fetch_add(1, Ordering::SeqCst);
                deps.push(Dep::tag("hot"));
                gate.notified().await;
                Ok::<_, Error>(7u32)
            })
            .await
        }));
    }
    // let every task reach the cache, then release the loader
    for _ in 0..50 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    gate.notify_waiters();
    gate.notify_one();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 7);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one loader for concurrent misses");
}

pub async fn failed_loader_lets_the_next_try(b: Arc<dyn Backend>) {
    let c = cache(&b, "t");
    let r: Result<u32, Error> =
        c.get_or_load("k", TTL, |_| async { Err(Error::InvalidKey { len: 0, reason: "loader failed" }) }).await;
    assert!(r.is_err());
    let v = c.get_or_load("k", TTL, |_| async { Ok::<_, Error>(5u32) }).await.unwrap();
    assert_eq!(v, 5);
}

pub async fn nested_entries_bubble_dependencies(b: Arc<dyn Backend>) {
    let c = cache(&b, "t");
    // a fragment cached first: the outer entry hits it
    c.put("fragment:2", &2u32, [Dep::id("article", 2)], TTL).await.unwrap();
    let c2 = c.clone();
    let outer: Vec<u32> = c
        .get_or_load("page", TTL, |_deps| async move {
            let one: u32 = c2
                .get_or_load("fragment:1", TTL, |deps| async move {
                    deps.push(Dep::id("article", 1));
                    Ok::<_, Error>(1)
                })
                .await?;
            let two: u32 = c2.get("fragment:2").await?.unwrap_or_default();
            Ok::<_, Error>(vec![one, two])
        })
        .await
        .unwrap();
    assert_eq!(outer, vec![1, 2]);
    assert!(c.has("page").await.unwrap());
    c.invalidate([Dep::id("article", 1)]).await.unwrap();
    assert!(!c.has("page").await.unwrap(), "a loaded fragment's dependency reaches the page");
    // rebuild, then invalidate through the fragment that was a hit
    let c3 = c.clone();
    let _: Vec<u32> = c
        .get_or_load("page", TTL, |_| async move {
            let two: u32 = c3.get("fragment:2").await?.unwrap_or_default();
            Ok::<_, Error>(vec![two])
        })
        .await
        .unwrap();
    assert!(c.has("page").await.unwrap());
    c.invalidate([Dep::id("article", 2)]).await.unwrap();
    assert!(!c.has("page").await.unwrap(), "a hit fragment's dependency reaches the page");
}

pub async fn prefixes_isolate_caches(b: Arc<dyn Backend>) {
    let one = cache(&b, "one");
    let two = cache(&b, "two");
    one.put("k", &1u32, [Dep::tag("t")], TTL).await.unwrap();
    two.put("k", &2u32, [Dep::tag("t")], TTL).await.unwrap();
    assert_eq!(one.get::<u32>("k").await.unwrap(), Some(1));
    assert_eq!(two.get::<u32>("k").await.unwrap(), Some(2));
    one.invalidate([Dep::tag("t")]).await.unwrap();
    assert_eq!(one.get::<u32>("k").await.unwrap(), None);
    assert_eq!(two.get::<u32>("k").await.unwrap(), Some(2));
    // a prefix that contains the separator cannot reach into another cache
    let tricky = cache(&b, "one:k");
    assert_eq!(tricky.get::<u32>("").await.ok().flatten(), None);
}

pub async fn bad_input_is_a_typed_error(b: Arc<dyn Backend>) {
    let c = Cache::builder().shared_backend(Arc::clone(&b)).prefix("t").max_value_bytes(1024).build().unwrap();
    // a bystander that no bad input may disturb
    c.put("bystander", &article(9, "x"), [Dep::tag("bystander")], TTL).await.unwrap();
    assert!(matches!(c.put("", &1, [Dep::tag("a")], TTL).await, Err(Error::InvalidKey { .. })));
    assert!(matches!(c.get::<u32>("").await, Err(Error::InvalidKey { .. })));
    assert!(matches!(c.put("k", &1, [Dep::tag("a")], Duration::ZERO).await, Err(Error::InvalidTtl { .. })));
    let years = Duration::from_secs(20 * 365 * 24 * 3600);
    let err = c.put("k", &1, [Dep::tag("a")], years).await.unwrap_err();
    assert!(matches!(err, Error::InvalidTtl { .. }));
    assert!(err.to_string().contains("max_ttl"), "the message names the fix: {err}");
    let big = "x".repeat(4096);
    let err = c.put("big", &big, [Dep::tag("a")], TTL).await.unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { ref key, .. } if key == "big"));
    assert!(!c.has("big").await.unwrap());
    // undecodable for the requested type: an error naming the key
    c.put("num", "not a number", [Dep::tag("a")], TTL).await.unwrap();
    let err = c.get::<u64>("num").await.unwrap_err();
    assert!(matches!(err, Error::Decode { ref key, .. } if key == "num"), "{err}");
    // get_or_load treats it as a miss and replaces it
    let v = c.get_or_load("num", TTL, |_| async { Ok::<_, Error>(9u64) }).await.unwrap();
    assert_eq!(v, 9);
    assert_eq!(c.get::<u64>("num").await.unwrap(), Some(9));
    // a key longer than the maximum
    let small = Cache::builder().shared_backend(Arc::clone(&b)).prefix("t").max_key_bytes(16).build().unwrap();
    let err = small.put(&"k".repeat(17), &1, [Dep::tag("a")], TTL).await.unwrap_err();
    assert!(matches!(err, Error::InvalidKey { len: 17, .. }), "{err}");
    // invalidating tags of failed puts drops only what was stored under them
    c.invalidate([Dep::tag("a")]).await.unwrap();
    assert_eq!(c.get::<Article>("bystander").await.unwrap(), Some(article(9, "x")));
}

pub async fn any_key_and_dependency_text(b: Arc<dyn Backend>) {
    let c = cache(&b, "we:ird{pre}fix\n");
    let long = "k".repeat(1 << 20);
    let keys = ["a:b", "a\\:b", "{tag}", "}{", " spaced key ", "line\nbreak", "ünïcødé ✓", "\u{0}nul", long.as_str()];
    for (i, k) in keys.iter().enumerate() {
        let dep = Dep::id(*k, k);
        c.put(k, &(i as u32), [dep.clone(), Dep::tag(k)], TTL).await.unwrap();
        assert_eq!(c.get::<u32>(k).await.unwrap(), Some(i as u32), "key #{i}");
    }
    // the keys are distinct entries
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(c.get::<u32>(k).await.unwrap(), Some(i as u32), "key #{i}");
    }
    for k in keys {
        c.invalidate([Dep::id(k, k)]).await.unwrap();
        assert_eq!(c.get::<u32>(k).await.unwrap(), None);
    }
}

pub async fn many_dependencies_on_one_entry(b: Arc<dyn Backend>) {
    let c = cache(&b, "t");
    let deps: Vec<Dep> = (0..2000).map(|i| Dep::id("row", i)).collect();
    c.put("wide", &1u32, deps, TTL).await.unwrap();
    c.put("bystander", &2u32, [Dep::id("row", 5000)], TTL).await.unwrap();
    assert_eq!(c.invalidate([Dep::id("row", 1999)]).await.unwrap(), 1);
    assert!(!c.has("wide").await.unwrap());
    assert!(c.has("bystander").await.unwrap());
}

pub async fn scopes_invalidate_old_and_new_lists(b: Arc<dyn Backend>) {
    let c = cache(&b, "t");
    let scopes = Scopes::<Article>::new("article", Mode::Development)
        .describes(["published", "category"], |a: &Article| {
            Some(params! { "published" => a.published, "category" => &a.category })
        });
    for cat in ["a", "b", "c"] {
        let deps = scopes.condition(params! { "category" => cat, "published" => true }).unwrap();
        c.put(&format!("list:{cat}"), &vec![cat], deps, TTL).await.unwrap();
    }
    let old = article(1, "a");
    let new = article(1, "b");
    scopes.invalidate_change(&c, &old, &new, &["category"]).await.unwrap();
    assert!(!c.has("list:a").await.unwrap(), "the list it left");
    assert!(!c.has("list:b").await.unwrap(), "the list it entered");
    assert!(c.has("list:c").await.unwrap());
    // a modification no extractor watches touches no list
    scopes.invalidate_change(&c, &new, &new, &["views"]).await.unwrap();
    assert!(c.has("list:c").await.unwrap());
    // the kill switch drops every list
    c.invalidate([Dep::invalidate_all("article")]).await.unwrap();
    assert!(!c.has("list:c").await.unwrap());
}

/// Invariant 1 under concurrency: writers bump a row's version (the "database")
/// and then invalidate; readers load through `get_or_load`. Once every writer
/// has returned, every cached value must equal the current version.
pub async fn concurrent_writers_leave_nothing_stale(b: Arc<dyn Backend>) {
    const ROWS: u64 = 8;
    let c = cache(&b, "t");
    let db: Arc<Vec<AtomicU64>> = Arc::new((0..ROWS).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (c, db) = (c.clone(), db.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..150u64 {
                let row = (w * 7 + i) % ROWS;
                db[row as usize].fetch_add(1, Ordering::SeqCst);
                c.invalidate([Dep::id("row", row)]).await.unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    for r in 0..16u64 {
        let (c, db) = (c.clone(), db.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..150u64 {
                let row = (r + i) % ROWS;
                let db2 = db.clone();
                let _: u64 = c
                    .get_or_load(&format!("row:{row}"), TTL, |deps| async move {
                        deps.push(Dep::id("row", row));
                        let v = db2[row as usize].load(Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        Ok::<_, Error>(v)
                    })
                    .await
                    .unwrap();
                // a list over all rows
                let db3 = db.clone();
                let _: Vec<u64> = c
                    .get_or_load("all", TTL, |deps| async move {
                        deps.extend((0..ROWS).map(|r| Dep::id("row", r)));
                        let v: Vec<u64> = db3.iter().map(|a| a.load(Ordering::SeqCst)).collect();
                        tokio::task::yield_now().await;
                        Ok::<_, Error>(v)
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut checked = 0;
    for row in 0..ROWS {
        if let Some(v) = c.get::<u64>(&format!("row:{row}")).await.unwrap() {
            assert_eq!(v, db[row as usize].load(Ordering::SeqCst), "stale row {row}");
            checked += 1;
        }
    }
    if let Some(all) = c.get::<Vec<u64>>("all").await.unwrap() {
        let now: Vec<u64> = db.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        assert_eq!(all, now, "stale list");
    }
    let s = c.stats();
    assert!(s.loads > 0 && s.invalidations == 600, "{s:?}");
    let _ = checked;
}

/// Generates one `#[tokio::test]` per behaviour test. `$factory` is an async
/// expression yielding `Option<Arc<dyn Backend>>` (None: skip).
#[macro_export]
macro_rules! backend_suite {
    ($factory:expr) => {
        $crate::backend_suite!(@tests $factory;
            miss_is_none, put_get_has_delete, invalidate_drops_dependents_only,
            overwrite_replaces_dependencies, stale_put_is_refused,
            get_or_load_refuses_data_loaded_across_invalidation, single_flight,
            failed_loader_lets_the_next_try, nested_entries_bubble_dependencies,
            prefixes_isolate_caches, bad_input_is_a_typed_error, any_key_and_dependency_text,
            many_dependencies_on_one_entry, scopes_invalidate_old_and_new_lists,
            concurrent_writers_leave_nothing_stale);
    };
    (@tests $factory:expr; $($name:ident),*) => {
        mod suite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backend) = $factory.await else { return };
                    $crate::common::suite::$name(backend).await;
                }
            )*
        }
    };
}
