//! Regression tests from an adversarial review of `matroska-seaorm`: each
//! test is a plausible piece of application code (plain SeaORM 2.0 through a
//! `CachedDatabase`) that once left the cache serving stale data, lost an
//! invalidation or let uncommitted data escape, on the databases its comment
//! names. Each now checks the fix.
//!
//! ```text
//! cargo test -p matroska-seaorm --test adversarial
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-seaorm --test adversarial
//! DATABASE_URL=mysql://root@127.0.0.1:3306/test cargo test -p matroska-seaorm --test adversarial
//! ```
//!
//! The tests of this file run one at a time (a global lock): one of them
//! arms the crate's test-only pause point, which catches the next write of
//! any test in the process.

#![allow(missing_docs, unreachable_pub)]

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use matroska::{Cache, Dep};
use matroska_seaorm::{CachedDatabase, Invalidator};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DbBackend, IntoActiveModel, Statement, TransactionSession, TransactionTrait,
};

/// Serialises the tests of this file (see the module docs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `db_test!`, one test at a time.
macro_rules! adv_test {
    ($(#[$meta:meta])* $name:ident, $max:expr, |$tdb:ident, $db:ident, $cache:ident| $body:block) => {
        $(#[$meta])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let _serial = SERIAL.lock().await;
            let $tdb = TestDb::with_connections(stringify!($name), $max).await;
            {
                let (db, cache) = $tdb.cached();
                let $db = &db;
                let $cache = &cache;
                $body
            }
            $tdb.drop_db().await;
        }
    };
}

// ---------------------------------------------------------------------------
// 1. Foreign keys with ON DELETE CASCADE (and SET NULL, ON UPDATE CASCADE,
//    triggers): the database writes child rows the connection never sees.

pub mod post {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "adv_post")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub title: String,
        #[sea_orm(has_many)]
        pub replies: HasMany<super::reply::Entity>,
    }
}

pub mod reply {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "adv_reply")]
    #[matroska(scope(fields("post_id")))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub post_id: i32,
        pub body: String,
        #[sea_orm(belongs_to, from = "post_id", to = "id", on_delete = "Cascade")]
        pub post: BelongsTo<super::post::Entity>,
    }
}

async fn reply_views(db: &CachedDatabase, cache: &Cache) -> (serde_json::Value, serde_json::Value) {
    use matroska_seaorm::{dependencies, depth, list};
    // the detail page of reply 1
    let detail = cache
        .get_or_load("reply:1", TTL, |deps| async move {
            let r = reply::Entity::find_by_id(1).one(db).await?;
            if let Some(r) = &r {
                deps.extend(dependencies(r, depth! {})?);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(serde_json::to_value(&r)?)
        })
        .await
        .unwrap();
    // "the replies of post 1", a filtered list of the child entity
    let listed = cache
        .get_or_load("replies-of-post:1", TTL, |deps| async move {
            deps.extend(list::<reply::Entity>().eq(reply::Column::PostId, 1).deps()?);
            let rows = reply::Entity::find().filter(reply::Column::PostId.eq(1)).all(db).await?;
            deps.extend(dependencies(&rows, depth! {})?);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(serde_json::to_value(&rows)?)
        })
        .await
        .unwrap();
    (detail, listed)
}

adv_test!(
    /// Scenario: a forum whose schema has `reply.post_id REFERENCES post ON
    /// DELETE CASCADE` (SeaORM's own `on_delete = "Cascade"`). A moderator
    /// deletes post 1 with plain `delete_by_id` through the `CachedDatabase`.
    /// The database deletes its replies; the cache keeps serving reply 1's page
    /// and "the replies of post 1". The write-path table claims `delete_by_id`
    /// is precise; nothing says cascades (or SET NULL, ON UPDATE CASCADE,
    /// triggers) are invisible.
    /// Was stale on SQLite, PostgreSQL and MariaDB.
    on_delete_cascade_leaves_deleted_children_cached, None, |tdb, db, cache| {
    tdb.db.get_schema_builder().register(post::Entity).register(reply::Entity).apply(&tdb.db).await.unwrap();
    post::ActiveModel { title: Set("hello".into()), ..Default::default() }.insert(db).await.unwrap();
    reply::ActiveModel { post_id: Set(1), body: Set("first!".into()), ..Default::default() }.insert(db).await.unwrap();
    let (detail, listed) = reply_views(db, cache).await;
    assert!(!detail.is_null());
    assert_eq!(listed.as_array().map(Vec::len), Some(1));

    post::Entity::delete_by_id(1).exec(db).await.unwrap();
    assert_eq!(reply::Entity::find().all(db).await.unwrap().len(), 0, "the database cascaded");

    let (detail, listed) = reply_views(db, cache).await;
    assert!(detail.is_null(), "reply 1 was deleted by the cascade, the cache still serves it: {detail}");
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "the cached list of post 1's replies is stale: {listed}");
});

adv_test!(
    /// Scenario: a denormalised counter maintained by a trigger (common on
    /// SQLite and PostgreSQL): inserting a comment bumps `article.views`. The
    /// comment is inserted through the `CachedDatabase`; the article's cached
    /// detail page keeps the old count forever.
    /// Was stale on SQLite (the trigger is created in SQLite syntax only).
    trigger_writes_to_other_tables_are_not_invalidated, None, |tdb, db, cache| {
    if tdb.backend() != DbBackend::Sqlite {
        return;
    }
    prepare(db, cache).await;
    tdb.db
        .execute_unprepared(
            "CREATE TRIGGER comment_counts AFTER INSERT ON comment BEGIN \
             UPDATE article SET views = views + 1 WHERE id = NEW.article_id; END",
        )
        .await
        .unwrap();
    // the trigger declared to the connection
    let db = &CachedDatabase::builder(tdb.db.clone(), cache.clone()).trigger("comment", &["article"]).build().unwrap();
    comment::ActiveModel { body: Set("+1".into()), article_id: Set(1), author_id: Set(3), ..Default::default() }
        .insert(db)
        .await
        .unwrap();
    assert_fresh(db, cache).await;
});

// ---------------------------------------------------------------------------
// 2. PostgreSQL READ COMMITTED: the rows read (FOR UPDATE) before a bulk
//    write are not the rows the write then changes.

adv_test!(
    /// Scenario: two requests at once. Request A unpublishes every article of
    /// category 1 (`update_many().col_expr(..).filter(category_id = 1)`);
    /// request B moves article 3 into category 1. A reads and locks the rows of
    /// category 1 (articles 1 and 2), B (not blocked: row 3 was not locked)
    /// commits, a reader caches article 3 (category 1, published), then A's
    /// UPDATE runs: under READ COMMITTED it sees and unpublishes article 3 too,
    /// but A invalidates only the rows it had read. Article 3's page stays
    /// "published" in the cache. The same holds for `delete_many` (a deleted row
    /// stays cached). SQLite (BEGIN IMMEDIATE) and MariaDB (next-key locks on
    /// the category index) block B instead.
    /// Was stale on PostgreSQL.
    pg_bulk_update_misses_rows_that_entered_its_filter_after_the_pre_read, Some(4), |tdb, db, cache| {
    let _ = &tdb;
    prepare(db, cache).await;
    let paused = Arc::new(tokio::sync::Notify::new());
    let resume = Arc::new(tokio::sync::Notify::new());
    matroska_seaorm::test_hooks::pause_next_write_after_read(paused.clone(), resume.clone());
    let a = {
        let db = db.clone();
        tokio::spawn(async move {
            article::Entity::update_many()
                .col_expr(article::Column::Published, Expr::value(false))
                .filter(article::Column::CategoryId.eq(1))
                .exec(&db)
                .await
                .unwrap()
                .rows_affected
        })
    };
    paused.notified().await; // A read (and locked) articles 1 and 2
    let b = {
        let db = db.clone();
        tokio::spawn(async move {
            let a3 = article::Entity::find_by_id(3).one(&db).await.unwrap().unwrap();
            let mut am = a3.into_active_model();
            am.category_id = Set(1);
            am.update(&db).await.unwrap();
        })
    };
    // B finishes at once on PostgreSQL; elsewhere it waits for A
    for _ in 0..100 {
        if b.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if b.is_finished() {
        // a reader caches article 3 as B left it
        View::Article(3).read(db, cache).await;
    }
    resume.notify_one();
    let changed = a.await.unwrap();
    b.await.unwrap();
    let _ = changed;
    assert_fresh(db, cache).await;
});

// ---------------------------------------------------------------------------
// 3. Statement texts the analysis misreads.

adv_test!(
    /// Scenario: a maintenance endpoint sends a small script with
    /// `execute_unprepared`, starting with a harmless SELECT (an advisory lock,
    /// a sanity check): `SELECT 1; UPDATE article ...`. The text starts with
    /// `SELECT`, so the fast path (`is_plain_select`) treats the whole string as
    /// a read: nothing is invalidated, not even coarsely. The docs promise
    /// "several statements in one string: coarse".
    /// Was stale on SQLite and PostgreSQL (the MySQL driver sends one statement).
    a_script_starting_with_select_is_taken_for_a_read, None, |tdb, db, cache| {
    let _ = &tdb;
    prepare(db, cache).await;
    if db.get_database_backend() == DbBackend::MySql {
        return;
    }
    db.execute_unprepared("SELECT 1; UPDATE article SET published = FALSE WHERE id = 1").await.unwrap();
    assert_fresh(db, cache).await;
});

adv_test!(
    /// Scenario: an SQLite script of two statements run outside a transaction:
    /// the first (an UPDATE) runs and autocommits, the second fails (a unique
    /// violation on an audit row). The connection returns the error before
    /// invalidating anything, so the committed UPDATE is never invalidated.
    /// Inside a transaction the same happens when the application handles the
    /// error and commits (the reservation is cancelled on error).
    /// Was stale on SQLite (PostgreSQL runs a multi-statement string atomically;
    /// the MySQL driver sends one statement).
    a_statement_that_fails_after_writing_loses_its_invalidation, None, |tdb, db, cache| {
    prepare(db, cache).await;
    if tdb.backend() != DbBackend::Sqlite {
        return;
    }
    audit::ActiveModel { id: Set(1), what: Set("x".into()) }.insert(db).await.unwrap();
    let r = db
        .execute_unprepared("UPDATE article SET published = FALSE WHERE id = 1; INSERT INTO audit (id, what) VALUES (1, 'dup')")
        .await;
    assert!(r.is_err(), "the second statement fails");
    let a1 = article::Entity::find_by_id(1).one(db).await.unwrap().unwrap();
    assert!(!a1.published, "the first statement was committed");
    assert_fresh(db, cache).await;
});

adv_test!(
    /// The same inside a transaction the application commits after handling
    /// the error (SQLite lets a transaction go on after a failed statement).
    /// Was stale on SQLite.
    a_failed_statement_inside_a_transaction_cancels_what_it_wrote, None, |tdb, db, cache| {
    prepare(db, cache).await;
    if tdb.backend() != DbBackend::Sqlite {
        return;
    }
    audit::ActiveModel { id: Set(1), what: Set("x".into()) }.insert(db).await.unwrap();
    let txn = db.begin().await.unwrap();
    let r = txn
        .execute_unprepared("UPDATE article SET published = FALSE WHERE id = 1; INSERT INTO audit (id, what) VALUES (1, 'dup')")
        .await;
    assert!(r.is_err());
    txn.commit().await.unwrap();
    let a1 = article::Entity::find_by_id(1).one(db).await.unwrap().unwrap();
    assert!(!a1.published, "the first statement was committed");
    assert_fresh(db, cache).await;
});

adv_test!(
    /// Scenario: MySQL's multi-table DELETE written with table aliases, as
    /// MySQL code usually is: `DELETE c FROM comment AS c JOIN article AS a ...`.
    /// The analysis takes the alias `c` for the table written, finds no entity
    /// and invalidates the switch of a table called `c`. The comments' cached
    /// views stay. (Multi-table deletes are documented as coarse.)
    /// Was stale on MariaDB.
    mysql_multi_table_delete_through_an_alias_invalidates_nothing, None, |tdb, db, cache| {
    prepare(db, cache).await;
    if tdb.backend() != DbBackend::MySql {
        return;
    }
    db.execute_unprepared(
        "DELETE c FROM comment AS c JOIN article AS a ON c.article_id = a.id WHERE a.title = 'ownership'",
    )
    .await
    .unwrap();
    assert_fresh(db, cache).await;
});

adv_test!(
    /// Scenario: raw SQL naming the table in another case, quoted (ported from
    /// code written for a case-insensitive setup). SQLite treats quoted
    /// identifiers case-insensitively; the analysis compares quoted names
    /// exactly, finds no entity and invalidates a switch called `ARTICLE`.
    /// Was stale on SQLite.
    sqlite_quoted_table_name_in_another_case_invalidates_nothing, None, |tdb, db, cache| {
    prepare(db, cache).await;
    if tdb.backend() != DbBackend::Sqlite {
        return;
    }
    db.execute_unprepared(r#"UPDATE "ARTICLE" SET published = FALSE WHERE id = 1"#).await.unwrap();
    assert_fresh(db, cache).await;
});

// ---------------------------------------------------------------------------
// 4. Values that coerce: what the statement says is not what is stored.

adv_test!(
    /// Scenario: the id comes from a URL path segment and is passed as it came,
    /// a string: `update_many().col_expr(title, ..).filter(Column::Id.eq(id))`
    /// with `id: &str` (SeaORM's `eq` takes any value). SQLite and MySQL
    /// compare `id = '1'` numerically and update row 1; the connection takes the
    /// key from the parameter, `"1"`, whose dependency is not the one of row 1
    /// (`1`). Article 1's page keeps the old title.
    /// Was stale on SQLite and MariaDB (PostgreSQL rejects the text parameter).
    a_string_key_in_a_filter_invalidates_another_key, None, |tdb, db, cache| {
    prepare(db, cache).await;
    if tdb.backend() == DbBackend::Postgres {
        return;
    }
    let id: &str = "1";
    let r = article::Entity::update_many()
        .col_expr(article::Column::Title, Expr::value("renamed"))
        .filter(article::Column::Id.eq(id))
        .exec(db)
        .await
        .unwrap();
    assert_eq!(r.rows_affected, 1);
    assert_fresh(db, cache).await;
});

adv_test!(
    /// The same with `delete_many` on an entity whose deletes are not read
    /// first (no list by value): a tag deleted by a string id stays cached.
    /// Was stale on SQLite and MariaDB.
    a_string_key_in_a_delete_filter_invalidates_another_key, None, |tdb, db, cache| {
    prepare(db, cache).await;
    if tdb.backend() == DbBackend::Postgres {
        return;
    }
    let load = |deps: matroska::Deps| async move {
        let t = tag::Entity::find_by_id(2).one(db).await?;
        if let Some(t) = &t {
            deps.extend(matroska_seaorm::dependencies(t, matroska_seaorm::depth! {})?);
        } else {
            deps.extend(matroska_seaorm::not_found::<tag::Entity>(2));
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(t.map(|t| t.name))
    };
    assert_eq!(cache.get_or_load("tag:2", TTL, load).await.unwrap().as_deref(), Some("web"));
    let r = tag::Entity::delete_many().filter(tag::Column::Id.eq("2")).exec(db).await.unwrap();
    assert_eq!(r.rows_affected, 1);
    let again = cache.get_or_load("tag:2", TTL, load).await.unwrap();
    assert_eq!(again, None, "tag 2 was deleted; the cache still serves it");
});

adv_test!(
    /// Scenario: a bulk import with raw SQL on SQLite/MySQL, where booleans are
    /// integers: `INSERT INTO article (..., published, category_id) VALUES (?, ?, ...)`
    /// bound with `1` for `published` (and `"3"` for the category, as read from
    /// a CSV). The database stores `true` and `3`; the connection derives the
    /// lists the row enters from the raw parameters, `{published: 1,
    /// category_id: "3"}`, which no list condition (canonicalised to
    /// `{published: true, category_id: 3}`) meets. The count of published
    /// articles of category 3 stays 0.
    /// Was stale on SQLite and MariaDB.
    loosely_typed_insert_parameters_miss_the_lists_the_row_enters, None, |tdb, db, cache| {
    prepare(db, cache).await;
    let backend = tdb.backend();
    if backend == DbBackend::Postgres {
        return;
    }
    let sql = "INSERT INTO article (title, author_id, category_id, published, views, price) VALUES (?, ?, ?, ?, ?, ?)";
    let stmt = Statement::from_sql_and_values(
        backend,
        sql,
        ["imported".into(), 3.into(), "3".into(), 1.into(), 0.into(), 7.into()],
    );
    db.execute_raw(stmt).await.unwrap();
    assert_fresh(db, cache).await;
});

// ---------------------------------------------------------------------------
// 5. Cancellation: a commit whose caller stops waiting.

/// An invalidator with the latency of a remote cache (a Redis round trip
/// under load), switchable.
struct Slow {
    cache: Cache,
    slow: AtomicBool,
    /// Notified when a slow invalidation starts.
    entered: tokio::sync::Notify,
}

impl Invalidator for Slow {
    fn invalidate(&self, deps: Vec<Dep>) -> Pin<Box<dyn Future<Output = Result<u64, matroska::Error>> + Send + '_>> {
        Box::pin(async move {
            if self.slow.load(Ordering::SeqCst) {
                self.entered.notify_one();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            self.cache.invalidate(deps).await
        })
    }

    fn pending(&self) -> usize {
        self.cache.pending_invalidations()
    }
}

adv_test!(
    /// Scenario: a web handler runs `db.transaction(..)` under a request
    /// timeout (tower's `TimeoutLayer`, or the client disconnects and axum drops
    /// the handler's future). The database commit completes; the invalidation
    /// round trip to the cache is still in flight when the future is dropped.
    /// The write is committed, the invalidation is never applied, nothing is
    /// pending, and the cache serves the old rows until they expire. (Outside a
    /// transaction a write runs in a task of its own; a transaction's commit
    /// does not.) With an outbox, the drainer would apply the intent after its
    /// grace period; without one (the default) it is lost.
    /// Was stale on SQLite, PostgreSQL and MariaDB.
    a_commit_cancelled_after_the_database_commit_loses_its_invalidation, None, |tdb, db, cache| {
    let _ = db;
    let slow = Arc::new(Slow { cache: cache.clone(), slow: AtomicBool::new(false), entered: tokio::sync::Notify::new() });
    let db = CachedDatabase::builder_with(tdb.db.clone(), slow.clone()).build().unwrap();
    prepare(&db, cache).await;
    slow.slow.store(true, Ordering::SeqCst);
    let handler = db.transaction::<_, (), DbErr>(|txn| {
        Box::pin(async move {
            let a = article::Entity::find_by_id(2).one(txn).await?.ok_or(DbErr::RecordNotFound("2".into()))?;
            let mut am = a.into_active_model();
            am.published = Set(true);
            am.update(txn).await?;
            Ok(())
        })
    });
    // the request's timeout fires while the invalidation is in flight (the
    // database commit has returned): the handler's future is dropped
    let mut handler = handler;
    tokio::select! {
        r = &mut handler => panic!("the handler finished before its timeout: {r:?}"),
        () = slow.entered.notified() => {}
    }
    drop(handler);
    slow.slow.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let a2 = article::Entity::find_by_id(2).one(&db).await.unwrap().unwrap();
    assert!(a2.published, "the write was committed");
    assert_eq!(db.pending_invalidations(), 0, "and nothing is pending");
    assert_fresh(&db, cache).await;
});

// ---------------------------------------------------------------------------
// 6. Uncommitted data through the manual cache API.

adv_test!(
    /// Scenario: code that caches by hand with the API the core recommends for
    /// manual use (`lookup` + `put_with_ticket`, "which refuse data loaded
    /// before a concurrent invalidation"), called from a helper that happens to
    /// run inside `db.transaction(..)`. The transaction's write is invalidated
    /// only at commit, so nothing refuses the put; the transaction then rolls
    /// back (a validation error) and the cache serves data that never existed.
    /// `mark_uncacheable` only works inside `get_or_load`.
    /// Was stale on SQLite, PostgreSQL and MariaDB.
    a_manual_put_with_ticket_inside_a_rolled_back_transaction_escapes, None, |tdb, db, cache| {
    let _ = &tdb;
    prepare(db, cache).await;
    cache.delete(&View::Article(2).key()).await.unwrap();
    let c = cache.clone();
    let r = db
        .transaction::<_, (), DbErr>(move |txn| {
            Box::pin(async move {
                let a = article::Entity::find_by_id(2).one(txn).await?.ok_or(DbErr::RecordNotFound("2".into()))?;
                let mut am = a.into_active_model();
                am.published = Set(true);
                am.update(txn).await?;
                // a helper: show the article, caching it by hand
                let key = View::Article(2).key();
                if let matroska::Fetched::Miss(ticket) = c.lookup::<serde_json::Value>(&key).await.unwrap() {
                    let value = View::Article(2).query(txn).await?;
                    let deps = View::Article(2).deps(txn).await.unwrap();
                    let outcome = c.put_with_ticket(&key, &value, deps, TTL, ticket).await.unwrap();
                    // refused: this task read inside a transaction that is still open
                    assert!(matches!(outcome, matroska::PutOutcome::Refused));
                }
                Err(DbErr::Custom("validation failed".into()))
            })
        })
        .await;
    assert!(r.is_err(), "rolled back");
    let a2 = article::Entity::find_by_id(2).one(db).await.unwrap().unwrap();
    assert!(!a2.published, "nothing was committed");
    assert_fresh(db, cache).await;
});

// ---------------------------------------------------------------------------
// 7. Coarse invalidation versus the documented key helpers.

adv_test!(
    /// Scenario: a detail page cached with the documented hand helper
    /// `pk_dep_of` (crate docs: "pk_dep, pk_dep_of, entity_dep: keys and
    /// switches by hand"), then a write the connection handles coarsely
    /// (`UPDATE .. FROM`, documented "coarse"). Coarse is documented as "every
    /// entry whose dependencies carry the table's switch, which every helper of
    /// this crate adds", but `pk_dep_of` does not add it: the page stays stale.
    /// Was stale on SQLite and PostgreSQL (MariaDB: `UPDATE .. JOIN`, same result).
    a_coarse_write_misses_entries_keyed_with_pk_dep_of, None, |tdb, db, cache| {
    prepare(db, cache).await;
    let key = "article-title:1";
    let load = |deps: matroska::Deps| async move {
        deps.push(matroska_seaorm::pk_dep_of::<article::Entity>(1));
        let a = article::Entity::find_by_id(1).one(db).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(a.map(|a| a.title))
    };
    assert_eq!(cache.get_or_load(key, TTL, load).await.unwrap().as_deref(), Some("ownership"));
    let sql = match tdb.backend() {
        DbBackend::MySql => {
            "UPDATE article JOIN author ON article.author_id = author.id SET article.title = 'borrowing' WHERE author.name = 'Ann' AND article.id = 1"
        }
        _ => "UPDATE article SET title = 'borrowing' FROM author WHERE article.author_id = author.id AND author.name = 'Ann' AND article.id = 1",
    };
    db.execute_unprepared(sql).await.unwrap();
    assert_eq!(cache.get_or_load(key, TTL, load).await.unwrap().as_deref(), Some("borrowing"));
});

// ---------------------------------------------------------------------------
// 8. More statement forms.

adv_test!(
    /// Scenario: SQLite's `UPDATE OR REPLACE` (an "upsert by update" used to
    /// rename into a unique slot). Renaming tag 1 to `web` deletes tag 2,
    /// which held that unique name. The analysis ignores the `OR REPLACE`
    /// clause: it is a plain update of an unwatched column by key, so only
    /// tag 1's key is invalidated; tag 2's cached page keeps serving a row
    /// that no longer exists. (`INSERT OR REPLACE` is treated as an upsert
    /// and invalidated coarsely; `UPDATE OR REPLACE` is not.)
    /// Was stale on SQLite.
    sqlite_update_or_replace_deletes_a_row_it_does_not_invalidate, None, |tdb, db, cache| {
    prepare(db, cache).await;
    if tdb.backend() != DbBackend::Sqlite {
        return;
    }
    tdb.db.execute_unprepared("CREATE UNIQUE INDEX tag_name ON tag (name)").await.unwrap();
    let load = |deps: matroska::Deps| async move {
        let t = tag::Entity::find_by_id(2).one(db).await?;
        match &t {
            Some(t) => deps.extend(matroska_seaorm::dependencies(t, matroska_seaorm::depth! {})?),
            None => deps.extend(matroska_seaorm::not_found::<tag::Entity>(2)),
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(t.map(|t| t.name))
    };
    assert_eq!(cache.get_or_load("tag:2", TTL, load).await.unwrap().as_deref(), Some("web"));
    let stmt = Statement::from_sql_and_values(DbBackend::Sqlite, "UPDATE OR REPLACE tag SET name = ? WHERE id = ?", ["web".into(), 1.into()]);
    db.execute_raw(stmt).await.unwrap();
    assert!(tag::Entity::find_by_id(2).one(db).await.unwrap().is_none(), "tag 2 was replaced away");
    assert_eq!(cache.get_or_load("tag:2", TTL, load).await.unwrap(), None, "the cache still serves tag 2");
});

adv_test!(
    /// Scenario: `execute_touching`, the documented escape hatch for text
    /// the parser cannot read, given the table as a PostgreSQL user writes it,
    /// schema-qualified (`public.article`). The name is turned into a switch
    /// verbatim, `public.article`, which no entity uses: nothing cached is
    /// invalidated.
    /// Was stale on SQLite, PostgreSQL and MariaDB.
    execute_touching_with_a_schema_qualified_name_invalidates_nothing, None, |tdb, db, cache| {
    prepare(db, cache).await;
    let backend = tdb.backend();
    let stmt = Statement::from_string(backend, "UPDATE article SET published = FALSE WHERE id = 1");
    let name = match backend {
        DbBackend::Postgres => "public.article",
        DbBackend::Sqlite => "main.article",
        _ => {
            let row = tdb.db.query_one_raw(Statement::from_string(backend, "SELECT DATABASE() AS d")).await.unwrap().unwrap();
            let d: String = row.try_get("", "d").unwrap();
            Box::leak(format!("{d}.article").into_boxed_str())
        }
    };
    db.execute_touching(stmt, &[name]).await.unwrap();
    assert_fresh(db, cache).await;
});

// ---------------------------------------------------------------------------
// 9. Transactions.

async fn publish_draft_2<C: ConnectionTrait>(db: &C) {
    let a = article::Entity::find_by_id(2).one(db).await.unwrap().unwrap();
    let mut am = a.into_active_model();
    am.published = Set(true);
    am.update(db).await.unwrap();
}

adv_test!(
    /// Scenario: a savepoint opened by a helper (`txn.begin()`) whose handle
    /// the caller commits *after* the outer transaction (both calls compile
    /// and both return `Ok`: `CachedTransaction::begin` borrows nothing).
    /// sqlx keeps one depth counter per connection, so the outer "commit"
    /// only releases the savepoint and the savepoint's "commit" is the real
    /// COMMIT. The cache applies the outer level's invalidations at the
    /// first call (before anything is committed) and, at the second, hands
    /// the savepoint's to a parent level that was already taken: article 2 is
    /// published in the database, every view of it stays stale.
    /// Was stale on SQLite, PostgreSQL and MariaDB.
    committing_the_outer_transaction_before_its_savepoint_loses_the_savepoint_writes, None, |tdb, db, cache| {
    let _ = &tdb;
    prepare(db, cache).await;
    let txn = db.begin().await.unwrap();
    let sp = txn.begin().await.unwrap();
    publish_draft_2(&sp).await;
    txn.commit().await.unwrap();
    sp.commit().await.unwrap();
    let a2 = article::Entity::find_by_id(2).one(db).await.unwrap().unwrap();
    assert!(a2.published, "the savepoint's write is committed");
    assert_fresh(db, cache).await;
});

adv_test!(
    /// Scenario: a developer profiles a slow write in production through the
    /// application's connection: `EXPLAIN (ANALYZE, BUFFERS) UPDATE ...`.
    /// PostgreSQL executes the UPDATE. sqlparser puts the parenthesised
    /// options in `options` and leaves `analyze == false`, so the analysis
    /// classifies the statement as a plain EXPLAIN, a read: nothing is
    /// invalidated, not even coarsely.
    /// Was stale on PostgreSQL.
    pg_explain_analyze_with_options_runs_a_write_taken_for_a_read, None, |tdb, db, cache| {
    prepare(db, cache).await;
    if tdb.backend() != DbBackend::Postgres {
        return;
    }
    db.execute_unprepared("EXPLAIN (ANALYZE, BUFFERS) UPDATE article SET published = FALSE WHERE id = 1").await.unwrap();
    let a1 = article::Entity::find_by_id(1).one(db).await.unwrap().unwrap();
    assert!(!a1.published, "EXPLAIN ANALYZE ran the update");
    assert_fresh(db, cache).await;
});

adv_test!(
    /// Scenario: MySQL/MariaDB with their default case-insensitive
    /// collations (`utf8mb4_general_ci` and the like). The shop caches "the
    /// products of type tool"; an editor adds a product typed `Tool` with
    /// plain `ActiveModel::insert`. The database's `type = 'tool'` now
    /// matches it, but the connection invalidates the list `{type: "Tool"}`,
    /// byte for byte, and the cached list of "tool" stays stale. (Trailing
    /// spaces under PAD SPACE collations, SQLite `COLLATE NOCASE` columns and
    /// PostgreSQL `citext` do the same.)
    /// Was stale on MariaDB.
    mysql_case_insensitive_collation_misses_the_list_a_row_enters, None, |tdb, db, cache| {
    prepare(db, cache).await;
    if tdb.backend() != DbBackend::MySql {
        return;
    }
    product::ActiveModel {
        display_name: Set("hammer".into()),
        type_: Set("Tool".into()),
        in_stock: Set(false),
        price_cents: Set(900),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap();
    assert_fresh(db, cache).await;
});

adv_test!(
    /// Scenario: an admin "reset" endpoint on PostgreSQL runs `TRUNCATE
    /// article CASCADE` through the application's connection. PostgreSQL
    /// also empties every table with a foreign key to `article` (`comment`,
    /// `article_tag`). The analysis sees one table written, `article`, and
    /// invalidates its switch only: a cached comment stays.
    /// Was stale on PostgreSQL.
    pg_truncate_cascade_leaves_the_cascaded_tables_cached, None, |tdb, db, cache| {
    prepare(db, cache).await;
    if tdb.backend() != DbBackend::Postgres {
        return;
    }
    let load = |deps: matroska::Deps| async move {
        let c = comment::Entity::find_by_id(1).one(db).await?;
        match &c {
            Some(c) => deps.extend(matroska_seaorm::dependencies(c, matroska_seaorm::depth! {})?),
            None => deps.extend(matroska_seaorm::not_found::<comment::Entity>(1)),
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(c.map(|c| c.body))
    };
    assert_eq!(cache.get_or_load("comment:1", TTL, load).await.unwrap().as_deref(), Some("nice"));
    db.execute_unprepared("TRUNCATE article CASCADE").await.unwrap();
    assert_eq!(cache.get_or_load("comment:1", TTL, load).await.unwrap(), None, "comment 1 was truncated away");
});
