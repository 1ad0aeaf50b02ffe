//! What a `CachedDatabase` invalidates, precisely: a parent cached with its
//! children when a child joins, moves or leaves; many-to-many links; "not
//! found" lookups; SeaORM's column naming options; concurrent moves of one
//! row; loosely and strictly typed list conditions.
//!
//! ```text
//! cargo test -p matroska-seaorm --test precision
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-seaorm --test precision
//! DATABASE_URL=mysql://root@127.0.0.1:3306/test cargo test -p matroska-seaorm --test precision
//! ```

mod common;

use common::*;
use matroska::params;
use matroska_seaorm::{list, list_deps, not_found, pk_dep_of};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, IntoActiveModel};

async fn is_cached(cache: &matroska::Cache, v: View) -> bool {
    cache.has(&v.key()).await.unwrap()
}

// -- relations -------------------------------------------------------------

db_test!(a_child_inserted_drops_its_cached_parent, |db, cache| {
    prepare(db, cache).await;
    review::ActiveModel { product_id: Set(1), stars: Set(5), ..Default::default() }.insert(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert!(!is_cached(cache, View::ProductWithReviews(1)).await);
    assert!(is_cached(cache, View::ProductWithReviews(2)).await, "another parent stays");
    assert!(is_cached(cache, View::Product(1)).await, "the parent alone (no children) stays");
});

db_test!(a_child_moved_drops_both_parents, |db, cache| {
    prepare(db, cache).await;
    let r = review::Entity::find_by_id(1).one(db).await.unwrap().unwrap();
    let mut am = r.into_active_model();
    am.product_id = Set(2);
    am.update(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert!(!is_cached(cache, View::ProductWithReviews(1)).await);
    assert!(!is_cached(cache, View::ProductWithReviews(2)).await);
    assert!(is_cached(cache, View::ProductWithReviews(3)).await);
    // editing the moved child later still reaches its new parent
    View::ProductWithReviews(2).read(db, cache).await;
    let r = review::Entity::find_by_id(1).one(db).await.unwrap().unwrap();
    let mut am = r.into_active_model();
    am.stars = Set(1);
    am.update(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert!(!is_cached(cache, View::ProductWithReviews(2)).await);
});

db_test!(a_child_deleted_drops_its_parent, |db, cache| {
    prepare(db, cache).await;
    review::Entity::delete_by_id(1).exec(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert!(!is_cached(cache, View::ProductWithReviews(1)).await);
    assert!(is_cached(cache, View::ProductWithReviews(2)).await);
});

db_test!(children_written_by_bulk_statements, |db, cache| {
    prepare(db, cache).await;
    review::Entity::insert_many([
        review::ActiveModel { product_id: Set(2), stars: Set(3), ..Default::default() },
        review::ActiveModel { product_id: Set(3), stars: Set(2), ..Default::default() },
    ])
    .exec(db)
    .await
    .unwrap();
    assert_fresh(db, cache).await;
    fill(db, cache).await;
    review::Entity::update_many()
        .col_expr(review::Column::ProductId, sea_orm::sea_query::Expr::value(1))
        .filter(review::Column::ProductId.eq(3))
        .exec(db)
        .await
        .unwrap();
    assert_fresh(db, cache).await;
    assert!(is_cached(cache, View::ProductWithReviews(2)).await, "product 2's reviews did not change");
});

db_test!(many_to_many_links_drop_the_linked_parent, |db, cache| {
    prepare(db, cache).await;
    // tag article 2 with tag 2: a junction insert
    article_tag::ActiveModel { article_id: Set(2), tag_id: Set(2) }.insert(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert!(!is_cached(cache, View::ArticleWithTags(2)).await);
    assert!(is_cached(cache, View::ArticleWithTags(1)).await);
    // untag article 1: a junction delete
    article_tag::Entity::delete_many().filter(article_tag::Column::ArticleId.eq(1)).exec(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert!(!is_cached(cache, View::ArticleWithTags(1)).await);
    // renaming a tag drops what shows it
    fill(db, cache).await;
    View::ArticleWithTags(2).read(db, cache).await;
    let t = tag::Entity::find_by_id(2).one(db).await.unwrap().unwrap();
    let mut am = t.into_active_model();
    am.name = Set("networking".into());
    am.update(db).await.unwrap();
    assert_fresh(db, cache).await;
});

db_test!(not_found_is_dropped_by_every_insert_path, |db, cache| {
    prepare(db, cache).await;
    // article 4 is cached as "not found"; each path inserts a row with that key
    let inserts: Vec<Box<dyn Fn() -> article::ActiveModel>> = vec![Box::new(|| article::ActiveModel {
        id: Set(4),
        title: Set("t".into()),
        author_id: Set(1),
        category_id: Set(1),
        published: Set(false),
        views: Set(0),
        price: Set(1),
    })];
    let make = &inserts[0];
    for path in 0..4 {
        assert_eq!(View::Article(4).read(db, cache).await, serde_json::Value::Null);
        assert!(is_cached(cache, View::Article(4)).await);
        match path {
            0 => {
                make().insert(db).await.unwrap();
            }
            1 => {
                article::Entity::insert(make()).exec(db).await.unwrap();
            }
            2 => {
                article::Entity::insert_many([make()]).exec(db).await.unwrap();
            }
            _ => {
                let (ph, n) =
                    if db.get_database_backend() == sea_orm::DbBackend::Postgres { ("$1", "$1") } else { ("?", "?") };
                let _ = n;
                let stmt = sea_orm::Statement::from_sql_and_values(
                    db.get_database_backend(),
                    format!("INSERT INTO article (id, title, author_id, category_id, published, views, price) VALUES ({ph}, 't', 1, 1, FALSE, 0, 1)"),
                    [4.into()],
                );
                db.execute_raw(stmt).await.unwrap();
            }
        }
        assert!(!is_cached(cache, View::Article(4)).await, "insert path {path}");
        assert_fresh(db, cache).await;
        article::Entity::delete_by_id(4).exec(db).await.unwrap();
        assert_fresh(db, cache).await;
    }
    // the helper's dependencies: the key, unkeyed inserts, the switch
    assert_eq!(not_found::<article::Entity>(4)[0], pk_dep_of::<article::Entity>(4));
});

// -- SeaORM's column names --------------------------------------------------

db_test!(camel_case_columns_and_a_type_field, |db, cache| {
    prepare(db, cache).await;
    // the scope is on `type_` (column "type") of a camelCase table
    let deps = list::<product::Entity>().eq(product::Column::Type, "tool").deps().unwrap();
    assert_eq!(deps, list_deps::<product::Entity>(params! { "type" => "tool" }).unwrap());
    // the field's name works too
    assert_eq!(deps, list_deps::<product::Entity>(params! { "type_" => "tool" }).unwrap());
    let stock = list::<product::Entity>().eq(product::Column::InStock, true).deps().unwrap();
    assert_eq!(stock, list_deps::<product::Entity>(params! { "inStock" => true }).unwrap());
    assert_eq!(stock, list_deps::<product::Entity>(params! { "in_stock" => 1 }).unwrap());
    let p = product::Entity::find_by_id(2).one(db).await.unwrap().unwrap();
    let mut am = p.into_active_model();
    am.type_ = Set("tool".into());
    am.update(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert!(!is_cached(cache, View::ProductsOfType("tool")).await);
    assert!(!is_cached(cache, View::ProductsOfType("toy")).await);
    assert!(is_cached(cache, View::Product(1)).await);
});

db_test!(a_watched_order_column_refreshes_a_top_n, |db, cache| {
    prepare(db, cache).await;
    // the cheapest in stock is the ball (300); the saw gets cheaper
    assert_eq!(View::CheapestInStock.read(db, cache).await["display_name"], "ball");
    let p = product::Entity::find_by_id(1).one(db).await.unwrap().unwrap();
    let mut am = p.into_active_model();
    am.price_cents = Set(100);
    am.update(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert_eq!(View::CheapestInStock.read(db, cache).await["display_name"], "saw");
    // a column no scope watches leaves the top-N alone
    let p = product::Entity::find_by_id(2).one(db).await.unwrap().unwrap();
    let mut am = p.into_active_model();
    am.display_name = Set("balloon".into());
    am.update(db).await.unwrap();
    assert!(is_cached(cache, View::CheapestInStock).await);
    assert_fresh(db, cache).await;
});

// -- concurrent moves -------------------------------------------------------

db_test!(a_stale_active_model_still_invalidates_where_the_row_really_was, |db, cache| {
    prepare(db, cache).await;
    // writer 1 reads the row (rust)
    let w1 = article::Entity::find_by_id(1).one(db).await.unwrap().unwrap();
    // writer 2 moves it to python and commits
    let mut w2 = w1.clone().into_active_model();
    w2.category_id = Set(2);
    w2.update(db).await.unwrap();
    // a reader caches python's count, which includes the row
    View::CountPublished(2).read(db, cache).await;
    assert!(is_cached(cache, View::CountPublished(2)).await);
    // writer 1, with its stale copy, moves the row to go
    let mut am = w1.into_active_model();
    am.category_id = Set(3);
    am.update(db).await.unwrap();
    // the row left python, not rust: python's count must be dropped
    assert_fresh(db, cache).await;
    assert!(!is_cached(cache, View::CountPublished(2)).await);
});

db_test!(concurrent_movers_of_one_row_leave_no_count_stale, pool, |db, cache| {
    prepare(db, cache).await;
    let movers: Vec<_> = (0..4)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut errors = 0;
                for i in 0..25 {
                    let cat = 1 + ((w + i) % 3);
                    let row = article::Entity::find_by_id(1).one(&db).await.unwrap().unwrap();
                    let mut am = row.into_active_model();
                    am.category_id = Set(cat);
                    // SQLite may answer "database is locked" under write
                    // contention: a failed write, never a stale cache
                    if am.update(&db).await.is_err() {
                        errors += 1;
                    }
                }
                errors
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (db, cache) = (db.clone(), cache.clone());
            tokio::spawn(async move {
                for i in 0..60 {
                    View::CountPublished(1 + i % 3).read(&db, &cache).await;
                    View::Published(1 + i % 3).read(&db, &cache).await;
                }
            })
        })
        .collect();
    let mut errors = 0;
    for m in movers {
        errors += m.await.unwrap();
    }
    for r in readers {
        r.await.unwrap();
    }
    assert!(errors < 100, "some moves must succeed");
    assert_fresh(db, cache).await;
});

// -- typed conditions ------------------------------------------------------

#[test]
fn loose_and_typed_conditions_meet() {
    let typed = list::<article::Entity>()
        .eq(article::Column::Published, true)
        .eq(article::Column::CategoryId, 2i64)
        .deps()
        .unwrap();
    for loose in [
        params! { "published" => true, "category_id" => 2 },
        params! { "published" => 1, "category_id" => "2" },
        params! { "category_id" => 2u8, "published" => "true" },
    ] {
        assert_eq!(list_deps::<article::Entity>(loose).unwrap(), typed);
    }
}

#[test]
fn bad_conditions_are_clear_errors() {
    let err = list_deps::<article::Entity>(params! { "publishd" => true }).unwrap_err();
    assert!(matches!(err, matroska_seaorm::Error::UnknownColumn { .. }), "{err}");
    assert!(err.to_string().contains("publishd"), "{err}");
    let err = list_deps::<article::Entity>(params! { "published" => 2, "category_id" => 1 }).unwrap_err();
    assert!(matches!(err, matroska_seaorm::Error::ValueMismatch { .. }), "{err}");
    let err = list_deps::<article::Entity>(params! { "published" => true, "category_id" => "two" }).unwrap_err();
    assert!(err.to_string().contains("category_id"), "{err}");
    // an undescribed condition (debug builds: development mode)
    let err = list_deps::<article::Entity>(params! { "views" => 1 }).unwrap_err();
    assert!(matches!(err, matroska_seaorm::Error::Scope(_)), "{err}");
}

/// Whether another connection waits for a row lock now (PostgreSQL, MySQL).
async fn someone_waits_for_a_lock(db: &sea_orm::DatabaseConnection) -> bool {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let sql = match db.get_database_backend() {
        DbBackend::Postgres => "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        // a waiting locking read may not be listed in innodb_trx yet (MariaDB
        // waits in the optimizer's `Statistics` phase): look for it running
        _ => {
            "SELECT (SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT') \
             + (SELECT COUNT(*) FROM information_schema.processlist WHERE db = DATABASE() \
                AND id <> CONNECTION_ID() AND command IN ('Query', 'Execute') AND info LIKE '%FOR UPDATE%') AS n"
        }
    };
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap().unwrap();
    row.try_get::<i64>("", "n").unwrap() > 0
}

/// The race of concurrent moves, forced: writer 1 has read the row (in
/// rust) and is about to move it to go when writer 2 moves it to python.
/// Writer 2 must wait for writer 1 (the row is locked from the read on), so
/// a reader caching python's count in between cannot be left stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_waits_for_a_concurrent_move_of_the_same_row() {
    let tdb = TestDb::with_connections("forced_move_race", Some(4)).await;
    if tdb.backend() == sea_orm::DbBackend::Sqlite {
        // SQLite serialises writers with BEGIN IMMEDIATE; there is no lock
        // wait to observe from outside
        tdb.drop_db().await;
        return;
    }
    let (db, cache) = tdb.cached();
    prepare(&db, &cache).await;
    let paused = std::sync::Arc::new(tokio::sync::Notify::new());
    let resume = std::sync::Arc::new(tokio::sync::Notify::new());
    matroska_seaorm::test_hooks::pause_next_write_after_read(paused.clone(), resume.clone());
    let w1 = {
        let db = db.clone();
        tokio::spawn(async move {
            let a = article::Entity::find_by_id(1).one(&db).await.unwrap().unwrap();
            let mut am = a.into_active_model();
            am.category_id = Set(3);
            am.update(&db).await.unwrap();
        })
    };
    paused.notified().await; // writer 1 read the row (locked) and waits
    let w2 = {
        let db = db.clone();
        tokio::spawn(async move {
            let a = article::Entity::find_by_id(1).one(&db).await.unwrap().unwrap();
            let mut am = a.into_active_model();
            am.category_id = Set(2);
            am.update(&db).await.unwrap();
        })
    };
    // writer 2 either finished (no lock: the bug) or waits for the row
    let waited = loop {
        if w2.is_finished() {
            break false;
        }
        if someone_waits_for_a_lock(&tdb.db).await {
            break true;
        }
        tokio::task::yield_now().await;
    };
    // a reader caches python's count meanwhile
    View::CountPublished(2).read(&db, &cache).await;
    resume.notify_one();
    w1.await.unwrap();
    w2.await.unwrap();
    assert!(waited, "the second move must wait for the row the first one read");
    assert_fresh(&db, &cache).await;
    drop(db);
    tdb.drop_db().await;
}
