//! Transactions through a wrapped connection: invalidation after the
//! outermost commit only; rollbacks, errors, panics, test transactions and
//! abandoned futures; savepoints; reads inside transactions never cached;
//! and the forced race of two moves of one row.
//!
//! ```text
//! cargo test -p matroska-diesel --test integration transactions::
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-diesel --test integration transactions::
//! ```

use crate::common::schema::*;
use crate::common::*;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use matroska_diesel::Committed;

async fn move_article_1_to_go(db: &mut Db) {
    on!(db, |c| diesel::update(articles::table.find(1)).set(articles::category_id.eq(3)).execute(c).await).unwrap();
}

db_test!(invalidation_waits_for_the_outermost_commit, |db, cache| {
    prepare(db, cache).await;
    let seen_inside = on!(db, |c| c
        .transaction::<_, diesel::result::Error, _>(async |t| {
            diesel::update(articles::table.find(1)).set(articles::category_id.eq(3)).execute(t).await?;
            // not invalidated yet: a reader outside would still see the old row
            Ok(cache.has(&View::Published(1).key()).await.unwrap())
        })
        .await)
    .unwrap();
    assert!(seen_inside, "invalidated before the commit");
    assert!(!cache.has(&View::Published(1).key()).await.unwrap(), "invalidated after the commit");
    assert!(matches!(on!(db, |c| c.last_commit()), Some(Committed::Invalidated { .. })));
    assert_fresh(db, cache).await;
});

db_test!(a_rollback_or_an_error_invalidates_nothing_and_caches_nothing, |db, cache| {
    prepare(db, cache).await;
    let r = on!(db, |c| c
        .transaction::<(), matroska_diesel::Error, _>(async |t| {
            diesel::update(articles::table.find(1)).set(articles::category_id.eq(3)).execute(t).await?;
            // a loader reading inside the transaction: returned, not cached
            let v: i64 = cache
                .get_or_load("inside", TTL, |deps| async move {
                    deps.push(matroska_diesel::pk_dep_of::<Article>(1));
                    Ok::<_, matroska_diesel::Error>(
                        articles::table.filter(articles::category_id.eq(3)).count().get_result::<i64>(t).await?,
                    )
                })
                .await?;
            assert_eq!(v, 1);
            Err(diesel::result::Error::RollbackTransaction.into())
        })
        .await)
    .unwrap_err();
    assert!(matches!(r, matroska_diesel::Error::Db(diesel::result::Error::RollbackTransaction)), "{r}");
    assert!(!cache.has("inside").await.unwrap(), "nothing read inside a transaction is cached");
    assert!(dropped(cache).await.is_empty(), "a rollback invalidates nothing");
    assert_fresh(db, cache).await;
});

db_test!(savepoints_hand_their_writes_to_the_enclosing_transaction, |db, cache| {
    prepare(db, cache).await;
    on!(db, |c| c
        .transaction::<(), diesel::result::Error, _>(async |t| {
            // a savepoint rolled back: its move is gone
            let _ = t
                .transaction::<(), diesel::result::Error, _>(async |s| {
                    diesel::update(articles::table.find(3)).set(articles::category_id.eq(1)).execute(s).await?;
                    Err(diesel::result::Error::RollbackTransaction)
                })
                .await;
            // a savepoint released: its move is the outer transaction's
            t.transaction::<(), diesel::result::Error, _>(async |s| {
                diesel::update(articles::table.find(1)).set(articles::category_id.eq(3)).execute(s).await?;
                Ok(())
            })
            .await?;
            assert_eq!(t.transaction_depth(), 1);
            Ok(())
        })
        .await)
    .unwrap();
    let d = dropped(cache).await;
    assert!(d.contains(&View::Published(3)) && d.contains(&View::Published(1)), "{d:?}");
    assert!(!d.contains(&View::Published(2)), "the rolled-back savepoint invalidates nothing: {d:?}");
    assert_fresh(db, cache).await;
});

db_test!(a_test_transaction_never_commits_and_never_invalidates, |db, cache| {
    prepare(db, cache).await;
    on!(db, |c| c.begin_test_transaction().await).unwrap();
    move_article_1_to_go(db).await;
    // the reads inside see the move, and are not cached
    let inside = View::Published(3).query(db).await;
    assert_eq!(inside.as_array().map(Vec::len), Some(1));
    assert!(dropped(cache).await.is_empty());
});

db_test!(a_panic_inside_a_transaction_leaves_nothing, |db, cache| {
    prepare(db, cache).await;
    let caught = on!(db, |c| {
        let fut = c.transaction::<(), diesel::result::Error, _>(async |t| {
            diesel::update(articles::table.find(1)).set(articles::category_id.eq(3)).execute(t).await?;
            panic!("the application panics mid-transaction");
        });
        futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(fut)).await
    });
    assert!(caught.is_err(), "the panic propagates");
    assert!(dropped(cache).await.is_empty(), "nothing committed, nothing invalidated");
});

db_test!(an_abandoned_write_is_invalidated_or_rolled_back, |db, cache| {
    prepare(db, cache).await;
    // the caller stops waiting (a request timeout) right after the write
    // was sent: it may have committed
    on!(db, |c| {
        let f = diesel::update(articles::table.find(1)).set(articles::category_id.eq(3)).execute(c);
        let _ = tokio::time::timeout(std::time::Duration::ZERO, f).await;
    });
    // either way, the connection works and nothing is stale
    let _ = View::Article(2).query(db).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_fresh(db, cache).await;
});

/// The race of concurrent moves, forced: writer 1 has read the row (in
/// rust) and is about to move it to go when writer 2 moves it to python.
/// Writer 2 must wait for writer 1 (the row is locked from the read on), so
/// a reader caching python's count in between cannot be left stale.
/// Without `FOR UPDATE` in the read this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_waits_for_a_concurrent_move_of_the_same_row() {
    let tdb = TestDb::new("forced_move_race").await;
    if !tdb.is_pg() {
        // SQLite serialises writers with BEGIN IMMEDIATE; there is no lock
        // wait to observe from outside
        tdb.drop_db().await;
        return;
    }
    let (mut db, cache, cached) = tdb.cached().await;
    prepare(&mut db, &cache).await;
    let paused = std::sync::Arc::new(tokio::sync::Notify::new());
    let resume = std::sync::Arc::new(tokio::sync::Notify::new());
    matroska_diesel::test_hooks::pause_next_write_after_read(&cached, paused.clone(), resume.clone());
    let mut w1c = tdb.connect(&cached).await;
    let w1 = tokio::spawn(async move {
        on!(&mut w1c, |c| diesel::update(articles::table.find(1)).set(articles::category_id.eq(3)).execute(c).await)
            .unwrap();
    });
    paused.notified().await; // writer 1 read the row (locked) and waits
    let mut w2c = tdb.connect(&cached).await;
    let w2 = tokio::spawn(async move {
        on!(&mut w2c, |c| diesel::update(articles::table.find(1)).set(articles::category_id.eq(2)).execute(c).await)
            .unwrap();
    });
    // writer 2 either finished (no lock: the bug) or waits for the row
    let mut probe = tdb.plain().await;
    let waited = loop {
        if w2.is_finished() {
            break false;
        }
        let n: i64 = on!(&mut probe, |c| diesel::sql_query("SELECT COUNT(*) AS n FROM pg_locks WHERE NOT granted")
            .get_result::<Count>(c)
            .await)
        .unwrap()
        .n;
        if n > 0 {
            break true;
        }
        tokio::task::yield_now().await;
    };
    // a reader caches python's count meanwhile
    View::CountPublished(2).read(&mut db, &cache).await;
    resume.notify_one();
    w1.await.unwrap();
    w2.await.unwrap();
    assert!(waited, "the second move must wait for the row the first one read");
    assert_fresh(&mut db, &cache).await;
    drop((db, probe));
    tdb.drop_db().await;
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}
