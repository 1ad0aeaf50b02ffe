//! Transactions through a `CachedDatabase`, opened by every SeaORM API:
//! invalidation after the real outermost commit; nothing of a rolled-back,
//! failed, panicking or dropped transaction in the cache; no reader outside
//! ever served uncommitted data; the cache never breaking a write.
//!
//! ```text
//! cargo test -p matroska-seaorm --test transactions
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-seaorm --test transactions
//! DATABASE_URL=mysql://root@127.0.0.1:3306/test cargo test -p matroska-seaorm --test transactions
//! ```

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use matroska::{Cache, Dep, MemoryBackend};
use matroska_seaorm::{CachedDatabase, CachedTransaction, Committed, Invalidator, Refusal};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, IntoActiveModel, TransactionSession, TransactionTrait};

async fn publish_draft_2<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    let a = article::Entity::find_by_id(2).one(db).await?.expect("article 2");
    let mut am = a.into_active_model();
    am.published = Set(true);
    am.update(db).await?;
    Ok(())
}

/// The published list of rust, read through the cache.
async fn rust_list(db: &CachedDatabase, cache: &Cache) -> serde_json::Value {
    View::Published(1).read(db, cache).await
}

fn titles(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|a| a["title"].as_str().unwrap().to_owned()).collect()
}

db_test!(commit_invalidates_after_the_commit, pool, |db, cache| {
    prepare(db, cache).await;
    let txn = db.begin().await.unwrap();
    publish_draft_2(&txn).await.unwrap();
    // not committed: the cached list still shows the committed state, which
    // is what other readers see
    assert_eq!(titles(&rust_list(db, cache).await), ["ownership"]);
    assert_fresh(db, cache).await;
    match txn.commit_with_report().await.unwrap() {
        Committed::Invalidated { dropped } => assert!(dropped > 0),
        other => panic!("{other:?}"),
    }
    assert_fresh(db, cache).await;
    assert_eq!(titles(&rust_list(db, cache).await), ["ownership", "lifetimes"]);
});

db_test!(seaorm_transaction_closure_commits_and_invalidates, |db, cache| {
    prepare(db, cache).await;
    db.transaction::<_, (), DbErr>(|txn| Box::pin(async move { publish_draft_2(txn).await })).await.unwrap();
    assert_fresh(db, cache).await;
    assert_eq!(titles(&rust_list(db, cache).await), ["ownership", "lifetimes"]);
});

db_test!(rollback_after_a_read_inside_leaves_nothing_cached, pool, |db, cache| {
    prepare(db, cache).await;
    cache.delete(&View::Published(1).key()).await.unwrap();
    let txn = db.begin().await.unwrap();
    publish_draft_2(&txn).await.unwrap();
    // a loader reading inside the transaction sees uncommitted data: the
    // value is returned to its caller, but never cached
    let inside: serde_json::Value = cache
        .get_or_load(&View::Published(1).key(), TTL, |deps| {
            let txn = &txn;
            async move {
                let v = View::Published(1).query(txn).await?;
                deps.extend(View::Published(1).deps(txn).await?);
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(v)
            }
        })
        .await
        .unwrap();
    assert_eq!(titles(&inside), ["ownership", "lifetimes"], "the transaction sees its own write");
    assert!(!cache.has(&View::Published(1).key()).await.unwrap(), "uncommitted data is not cached");
    assert_eq!(cache.stats().uncacheable_loads, 1);
    txn.rollback().await.unwrap();
    assert_eq!(titles(&rust_list(db, cache).await), ["ownership"]);
    assert_fresh(db, cache).await;
});

db_test!(an_error_in_the_closure_rolls_back_and_caches_nothing, |db, cache| {
    prepare(db, cache).await;
    cache.delete(&View::Published(1).key()).await.unwrap();
    let c = cache.clone();
    let r = db
        .transaction::<_, (), DbErr>(move |txn| {
            Box::pin(async move {
                publish_draft_2(txn).await?;
                View::Published(1).read_in(txn, &c).await;
                Err(DbErr::Custom("rolled back on purpose".into()))
            })
        })
        .await;
    assert!(r.is_err());
    assert!(!cache.has(&View::Published(1).key()).await.unwrap());
    assert_fresh(db, cache).await;
    assert_eq!(titles(&rust_list(db, cache).await), ["ownership"]);
});

db_test!(a_panic_inside_rolls_back_and_caches_nothing, |db, cache| {
    prepare(db, cache).await;
    cache.delete(&View::Published(1).key()).await.unwrap();
    let (db2, c2) = (db.clone(), cache.clone());
    let task = tokio::spawn(async move {
        let _ = db2
            .transaction::<_, (), DbErr>(move |txn| {
                Box::pin(async move {
                    publish_draft_2(txn).await?;
                    View::Published(1).read_in(txn, &c2).await;
                    panic!("the handler panics");
                })
            })
            .await;
    });
    assert!(task.await.unwrap_err().is_panic());
    assert!(!cache.has(&View::Published(1).key()).await.unwrap());
    assert_fresh(db, cache).await;
    assert_eq!(titles(&rust_list(db, cache).await), ["ownership"]);
});

db_test!(a_dropped_transaction_rolls_back_and_caches_nothing, pool, |db, cache| {
    prepare(db, cache).await;
    cache.delete(&View::Published(1).key()).await.unwrap();
    {
        let txn = db.begin().await.unwrap();
        publish_draft_2(&txn).await.unwrap();
        View::Published(1).read_in(&txn, cache).await;
        // dropped without commit or rollback
    }
    assert!(!cache.has(&View::Published(1).key()).await.unwrap());
    assert_fresh(db, cache).await;
    assert_eq!(titles(&rust_list(db, cache).await), ["ownership"]);
});

db_test!(savepoints_commit_into_the_outer_transaction, pool, |db, cache| {
    prepare(db, cache).await;
    let outer = db.begin().await.unwrap();
    let inner = outer.begin().await.unwrap();
    assert_eq!(inner.depth(), 2);
    publish_draft_2(&inner).await.unwrap();
    assert!(matches!(inner.commit_with_report().await.unwrap(), Committed::Released));
    // a released savepoint is not a commit
    assert_fresh(db, cache).await;
    assert!(cache.has(&View::Published(1).key()).await.unwrap());
    outer.commit().await.unwrap();
    assert_fresh(db, cache).await;
    assert!(!cache.has(&View::Published(1).key()).await.unwrap());
});

db_test!(a_rolled_back_savepoint_invalidates_nothing_of_its_own, |db, cache| {
    prepare(db, cache).await;
    let outer = db.begin().await.unwrap();
    let inner = outer.begin().await.unwrap();
    publish_draft_2(&inner).await.unwrap();
    inner.rollback().await.unwrap();
    let c = comment::Entity::find_by_id(1).one(&outer).await.unwrap().unwrap();
    let mut am = c.into_active_model();
    am.body = Set("edited".into());
    am.update(&outer).await.unwrap();
    outer.commit().await.unwrap();
    assert_fresh(db, cache).await;
    // the draft's lists were not touched: the savepoint was rolled back
    assert!(cache.has(&View::Published(1).key()).await.unwrap());
    assert!(!cache.has(&View::ArticleWithComments(1).key()).await.unwrap());
});

db_test!(pool_writes_inside_a_failing_transaction_are_invalidated, pool, |db, cache| {
    prepare(db, cache).await;
    let db2 = db.clone();
    let r = db
        .transaction::<_, (), DbErr>(move |txn| {
            Box::pin(async move {
                // written on the pool, not the transaction: committed on its own
                publish_draft_2(&db2).await?;
                let c = comment::Entity::find_by_id(1).one(txn).await?.unwrap();
                c.delete(txn).await?;
                Err(DbErr::Custom("rolled back on purpose".into()))
            })
        })
        .await;
    assert!(r.is_err());
    assert_fresh(db, cache).await;
    assert_eq!(titles(&rust_list(db, cache).await), ["ownership", "lifetimes"]);
    assert!(
        cache.has(&View::ArticleWithComments(1).key()).await.unwrap(),
        "the rolled-back delete invalidates nothing"
    );
});

db_test!(active_model_ex_builders_are_followed, |db, cache| {
    prepare(db, cache).await;
    // a new author with an article in rust, published: its own transaction
    let graph = author::ActiveModel::builder()
        .set_name("Dee")
        .add_article(
            article::ActiveModel::builder()
                .set_title("traits")
                .set_category_id(1)
                .set_published(true)
                .set_views(0)
                .set_price(1),
        )
        .insert(db)
        .await
        .unwrap();
    assert_eq!(graph.name, "Dee");
    assert_fresh(db, cache).await;
    assert!(!cache.has(&View::Published(1).key()).await.unwrap());
    assert!(cache.has(&View::Published(2).key()).await.unwrap());
});

db_test!(cascade_delete_is_followed, |db, cache| {
    prepare(db, cache).await;
    if db.get_database_backend() == sea_orm::DbBackend::MySql {
        // the cascade nulls or deletes children; the schema's FK is not nullable
    }
    let a = article::Entity::find_by_id(3).one(db).await.unwrap().unwrap();
    a.cascade_delete(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert!(cache.has(&View::Published(1).key()).await.unwrap());
});

db_test!(concurrent_saves_of_one_row_in_one_task, |db, cache| {
    prepare(db, cache).await;
    // two saves of the same row joined in one task: both invalidate
    let a = article::Entity::find_by_id(1).one(db).await.unwrap().unwrap();
    let mut x = a.clone().into_active_model();
    x.views = Set(5);
    let mut y = a.into_active_model();
    y.category_id = Set(3);
    let (rx, ry) = tokio::join!(x.update(db), y.update(db));
    rx.unwrap();
    ry.unwrap();
    assert_fresh(db, cache).await;
});

/// An invalidator that can be switched off (a cache that is unreachable).
#[derive(Clone)]
struct Flaky {
    cache: Cache,
    down: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
}

impl Invalidator for Flaky {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cache_never_fails_a_committed_write() {
    let tdb = TestDb::new("unreachable_cache").await;
    let cache = Cache::builder().backend(MemoryBackend::new()).build().unwrap();
    let flaky = Flaky { cache: cache.clone(), down: Arc::default(), calls: Arc::default() };
    let db = CachedDatabase::builder_with(tdb.db.clone(), Arc::new(flaky.clone())).build().unwrap();
    prepare(&db, &cache).await;
    flaky.down.store(true, Ordering::SeqCst);
    // autocommit: written, Ok
    publish_draft_2(&db).await.unwrap();
    assert_eq!(db.write_stats().failed_invalidations, 1);
    // a transaction: committed, reported pending
    let txn = db.begin().await.unwrap();
    let c = comment::Entity::find_by_id(1).one(&txn).await.unwrap().unwrap();
    c.delete(&txn).await.unwrap();
    assert!(matches!(txn.commit_with_report().await.unwrap(), Committed::Pending(_)));
    assert_eq!(comment::Entity::find_by_id(1).one(&db).await.unwrap(), None, "written");
    tdb.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cached_connection_no_refusal_and_then_refusal() {
    // tests, seeders, migrations: the plain connection writes while no
    // CachedDatabase exists in the process... this binary builds many, so
    // only the refusal side is checked here (the other side is the default
    // of a fresh process, exercised by the blog example's migrations)
    let tdb = TestDb::new("uncached").await;
    let (_db, _cache) = tdb.cached();
    let err = author::ActiveModel { name: Set("Eve".into()), ..Default::default() }.insert(&tdb.db).await.unwrap_err();
    assert!(matches!(Refusal::of(&err), Some(Refusal::UncachedConnection { .. })), "{err}");
    tdb.drop_db().await;
}

/// Reading a view through a transaction (a loader inside it).
trait ReadIn {
    fn read_in<'a>(
        self,
        txn: &'a CachedTransaction,
        cache: &'a Cache,
    ) -> Pin<Box<dyn Future<Output = serde_json::Value> + Send + 'a>>;
}

impl ReadIn for View {
    fn read_in<'a>(
        self,
        txn: &'a CachedTransaction,
        cache: &'a Cache,
    ) -> Pin<Box<dyn Future<Output = serde_json::Value> + Send + 'a>> {
        Box::pin(async move {
            cache
                .get_or_load(&self.key(), TTL, |deps| async move {
                    let v = self.query(txn).await?;
                    deps.extend(self.deps(txn).await?);
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(v)
                })
                .await
                .unwrap()
        })
    }
}
