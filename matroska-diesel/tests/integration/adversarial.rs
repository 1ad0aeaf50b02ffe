//! Regression tests from an adversarial review of `matroska-diesel`: each
//! test is a plausible piece of application code (plain Diesel 2.3 and
//! diesel-async through a `CachedConnection`) that once left the cache
//! serving stale data, lost an invalidation, let uncommitted data escape or
//! panicked, on the databases its comment names. Each now checks the fix.
//! The review also checked the defects found in matroska-seaorm for their
//! Diesel analogue; those that held already are at the end, as guards.
//!
//! ```text
//! cargo test -p matroska-diesel --test integration adversarial::
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-diesel --test integration adversarial::
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::schema::*;
use crate::common::*;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use matroska::{Cache, Dep};
use matroska_diesel::{depth, CacheModel, CachedDatabase, Invalidator};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

/// A test on a fresh database (the common schema and this file's): `tdb`
/// the database, `db` a wrapped connection, `cache` its
/// cache, `cached` the `CachedDatabase`.
macro_rules! adv_test {
    ($(#[$meta:meta])* $name:ident, |$tdb:ident, $db:ident, $cache:ident, $cached:ident| $body:block) => {
        $(#[$meta])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let __tdb = TestDb::new(stringify!($name)).await;
            extra_schema(&__tdb).await;
            {
                let $tdb = &__tdb;
                let (mut __db, __cache, __cached) = $tdb.cached().await;
                let $db = &mut __db;
                let $cache = &__cache;
                let $cached = &__cached;
                let _ = ($tdb, $cached);
                $body
            }
            __tdb.drop_db().await;
        }
    };
}

// ---------------------------------------------------------------------------
// This file's schema: posts and replies with ON DELETE / ON UPDATE CASCADE,
// products whose kind compares without regard to case.

pub mod adv {
    diesel::table! {
        adv_posts (id) {
            id -> Integer,
            title -> Text,
        }
    }
    diesel::table! {
        adv_replies (id) {
            id -> Integer,
            post_id -> Integer,
            body -> Text,
        }
    }
    diesel::table! {
        adv_products (id) {
            id -> Integer,
            kind -> Text,
            name -> Text,
        }
    }
    diesel::joinable!(adv_replies -> adv_posts (post_id));
    diesel::allow_tables_to_appear_in_same_query!(adv_posts, adv_replies, adv_products);
}

use adv::*;

#[derive(Queryable, Selectable, Identifiable, CacheModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[diesel(table_name = adv_posts)]
pub struct Post {
    pub id: i32,
    pub title: String,
}

#[derive(
    Queryable, Selectable, Identifiable, Associations, CacheModel, Serialize, Deserialize, Clone, Debug, PartialEq,
)]
#[diesel(table_name = adv_replies, belongs_to(Post))]
#[matroska(scope(fields("post_id")))]
// the schema's `REFERENCES adv_posts ON DELETE CASCADE ON UPDATE CASCADE`
#[matroska(belongs_to(Post, on_delete = "cascade", on_update = "cascade"))]
pub struct Reply {
    pub id: i32,
    pub post_id: i32,
    pub body: String,
}

#[derive(Queryable, Selectable, Identifiable, CacheModel, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[diesel(table_name = adv_products)]
#[matroska(scope(fields("kind")))]
// `kind` compares without regard to case (`COLLATE NOCASE`, a
// nondeterministic collation)
#[matroska(collated("kind"))]
pub struct Product {
    pub id: i32,
    pub kind: String,
    pub name: String,
}

const SQLITE_EXTRA: &str = "
CREATE TABLE adv_posts (id INTEGER PRIMARY KEY, title TEXT NOT NULL);
CREATE TABLE adv_replies (id INTEGER PRIMARY KEY,
    post_id INTEGER NOT NULL REFERENCES adv_posts (id) ON DELETE CASCADE ON UPDATE CASCADE, body TEXT NOT NULL);
CREATE TABLE adv_products (id INTEGER PRIMARY KEY, kind TEXT NOT NULL COLLATE NOCASE, name TEXT NOT NULL);
INSERT INTO adv_posts (id, title) VALUES (1, 'hello'), (2, 'again');
INSERT INTO adv_replies (id, post_id, body) VALUES (1, 1, 'first!'), (2, 2, 'second');
INSERT INTO adv_products (id, kind, name) VALUES (1, 'tool', 'saw');
";

const PG_EXTRA: &str = "
CREATE TABLE adv_posts (id SERIAL PRIMARY KEY, title TEXT NOT NULL);
CREATE TABLE adv_replies (id SERIAL PRIMARY KEY,
    post_id INTEGER NOT NULL REFERENCES adv_posts (id) ON DELETE CASCADE ON UPDATE CASCADE, body TEXT NOT NULL);
CREATE COLLATION adv_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE adv_products (id SERIAL PRIMARY KEY, kind TEXT COLLATE adv_ci NOT NULL, name TEXT NOT NULL);
INSERT INTO adv_posts (title) VALUES ('hello'), ('again');
INSERT INTO adv_replies (post_id, body) VALUES (1, 'first!'), (2, 'second');
INSERT INTO adv_products (kind, name) VALUES ('tool', 'saw');
";

async fn extra_schema(tdb: &TestDb) {
    let mut plain = tdb.plain().await;
    let ddl = if tdb.is_pg() { PG_EXTRA } else { SQLITE_EXTRA };
    on!(&mut plain, |c| c.inner().batch_execute(ddl).await).expect("this file's schema");
}

/// Runs raw SQL on a connection the cache does not watch (setup only).
async fn unwatched(tdb: &TestDb, sql: &str) {
    let mut plain = tdb.plain().await;
    on!(&mut plain, |c| c.inner().batch_execute(sql).await).expect(sql);
}

/// Views over this file's schema, like `common::View`.
#[derive(Clone, Copy, Debug)]
enum Extra {
    /// A reply by key.
    Reply(i32),
    /// The replies of a post (a filtered list).
    RepliesOf(i32),
    /// A post with its replies (belonging_to).
    PostWithReplies(i32),
    /// The products of a kind (a filtered list).
    ProductsOfKind(&'static str),
    /// A tag by key.
    Tag(i32),
}

impl Extra {
    fn key(self) -> String {
        format!("{self:?}")
    }

    async fn load(self, db: &mut Db) -> Result<(Json, Vec<Dep>), BoxErr> {
        use matroska_diesel::{dependencies, list, not_found};
        let mut deps = Vec::new();
        let value = match self {
            Extra::Reply(id) => {
                let r: Option<Reply> = on!(db, |c| adv_replies::table.find(id).first(c).await.optional())?;
                match &r {
                    Some(r) => deps.extend(dependencies(r, depth! {})?),
                    None => deps.extend(not_found::<Reply>(id)),
                }
                serde_json::to_value(&r)?
            }
            Extra::RepliesOf(post) => {
                deps.extend(list::<Reply>().eq(adv_replies::post_id, post).deps()?);
                let rows: Vec<Reply> = on!(db, |c| adv_replies::table
                    .filter(adv_replies::post_id.eq(post))
                    .order(adv_replies::id)
                    .select(Reply::as_select())
                    .load(c)
                    .await)?;
                deps.extend(dependencies(&rows, depth! {})?);
                serde_json::to_value(&rows)?
            }
            Extra::PostWithReplies(id) => {
                let p: Option<Post> = on!(db, |c| adv_posts::table.find(id).first(c).await.optional())?;
                match p {
                    Some(p) => {
                        let rs: Vec<Reply> = on!(db, |c| Reply::belonging_to(&p)
                            .order(adv_replies::id)
                            .select(Reply::as_select())
                            .load(c)
                            .await)?;
                        let pair = (p, rs);
                        deps.extend(dependencies(&pair, depth! {})?);
                        serde_json::to_value(Some(pair))?
                    }
                    None => {
                        deps.extend(not_found::<Post>(id));
                        serde_json::to_value(None::<(Post, Vec<Reply>)>)?
                    }
                }
            }
            Extra::ProductsOfKind(kind) => {
                deps.extend(list::<Product>().eq(adv_products::kind, kind).deps()?);
                let rows: Vec<Product> = on!(db, |c| adv_products::table
                    .filter(adv_products::kind.eq(kind))
                    .order(adv_products::id)
                    .select(Product::as_select())
                    .load(c)
                    .await)?;
                deps.extend(dependencies(&rows, depth! {})?);
                serde_json::to_value(&rows)?
            }
            Extra::Tag(id) => {
                let t: Option<Tag> = on!(db, |c| tags::table.find(id).first(c).await.optional())?;
                match &t {
                    Some(t) => deps.extend(dependencies(t, depth! {})?),
                    None => deps.extend(not_found::<Tag>(id)),
                }
                serde_json::to_value(&t)?
            }
        };
        Ok((value, deps))
    }

    /// Reads the view through the cache.
    async fn read(self, db: &mut Db, cache: &Cache) -> Json {
        cache
            .get_or_load(&self.key(), TTL, |deps| async move {
                let (value, d) = self.load(db).await?;
                deps.extend(d);
                Ok::<_, BoxErr>(value)
            })
            .await
            .expect("view")
    }

    /// Fails if the view is cached and differs from the database.
    async fn assert_fresh(self, db: &mut Db, cache: &Cache) {
        if let Some(cached) = cache.get::<Json>(&self.key()).await.expect("get") {
            let fresh = self.load(db).await.expect("view").0;
            assert_eq!(cached, fresh, "{self:?} is stale");
        }
    }
}

/// Every view of this file's schema.
const EXTRA: [Extra; 7] = [
    Extra::Reply(1),
    Extra::Reply(2),
    Extra::RepliesOf(1),
    Extra::RepliesOf(2),
    Extra::PostWithReplies(1),
    Extra::PostWithReplies(2),
    Extra::ProductsOfKind("tool"),
];

async fn fill_extra(db: &mut Db, cache: &Cache) {
    for v in EXTRA {
        v.read(db, cache).await;
    }
}

async fn assert_extra_fresh(db: &mut Db, cache: &Cache) {
    for v in EXTRA {
        v.assert_fresh(db, cache).await;
    }
}

// ---------------------------------------------------------------------------
// 1. Writes the database makes by itself: foreign-key actions, triggers.

adv_test!(
    /// Scenario: a forum whose schema has `adv_replies.post_id REFERENCES
    /// adv_posts ON DELETE CASCADE`. A moderator deletes post 1 with plain
    /// `diesel::delete(adv_posts::table.find(1))`. The database deletes its
    /// replies; the cache keeps serving reply 1 and "the replies of post 1".
    /// Diesel models declare no referential actions, and the write-path table
    /// called a delete by key precise.
    /// Was stale on SQLite and PostgreSQL.
    on_delete_cascade_leaves_deleted_children_cached,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        fill_extra(db, cache).await;
        on!(db, |c| diesel::delete(adv_posts::table.find(1)).execute(c).await).unwrap();
        let left: i64 = on!(db, |c| adv_replies::table.count().get_result(c).await).unwrap();
        assert_eq!(left, 1, "the database cascaded");
        assert_extra_fresh(db, cache).await;
    }
);

adv_test!(
    /// Scenario: the same schema, `ON UPDATE CASCADE`: an import renumbers
    /// post 2 (`update(adv_posts.find(2)).set(id.eq(20))`). The database
    /// moves its replies to post 20; "the replies of post 2" stays cached
    /// with reply 2 in it.
    /// Was stale on SQLite and PostgreSQL.
    on_update_cascade_leaves_moved_children_cached,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        fill_extra(db, cache).await;
        on!(db, |c| diesel::update(adv_posts::table.find(2)).set(adv_posts::id.eq(20)).execute(c).await).unwrap();
        assert_extra_fresh(db, cache).await;
    }
);

adv_test!(
    /// Scenario: a denormalised counter kept by a trigger: inserting a
    /// comment bumps `articles.views`. The comment is inserted through the
    /// cached connection; the article's cached page keeps the old count.
    /// Was stale on SQLite and PostgreSQL.
    trigger_writes_to_other_tables_are_not_invalidated,
    |tdb, db, cache, cached| {
        let trigger = if tdb.is_pg() {
            "CREATE FUNCTION bump_views() RETURNS trigger AS $$ BEGIN \
             UPDATE articles SET views = views + 1 WHERE id = NEW.article_id; RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER comment_counts AFTER INSERT ON comments FOR EACH ROW EXECUTE FUNCTION bump_views();"
        } else {
            "CREATE TRIGGER comment_counts AFTER INSERT ON comments BEGIN \
             UPDATE articles SET views = views + 1 WHERE id = NEW.article_id; END;"
        };
        unwatched(tdb, trigger).await;
        let _ = db;
        // the trigger declared to the connection
        let cached =
            CachedDatabase::builder(cache.clone()).trigger("comments", &["articles"]).build().unwrap();
        let db = &mut tdb.connect(&cached).await;
        prepare(db, cache).await;
        on!(db, |c| diesel::insert_into(comments::table)
            .values((comments::body.eq("+1"), comments::article_id.eq(1), comments::author_id.eq(3)))
            .execute(c)
            .await)
        .unwrap();
        assert_fresh(db, cache).await;
    }
);

// ---------------------------------------------------------------------------
// 2. PostgreSQL READ COMMITTED: the rows read (FOR UPDATE) before a bulk
//    update are not all the rows the update then changes.

adv_test!(
    /// Scenario: two requests at once. Request A moves every article of
    /// author 2 to category 3 (`update(articles.filter(author_id.eq(2)))
    /// .set(category_id.eq(3))`); request B hands article 3 (python,
    /// published) to author 2. A reads and locks the rows of author 2
    /// (article 2); B is not blocked (row 3 was not locked) and commits;
    /// then A's UPDATE runs and, under READ COMMITTED, sees and moves
    /// article 3 too. `RETURNING` tells A that article 3 changed, but its
    /// old values were never read: the count of published python articles
    /// (a list of its old category) stays 1. SQLite (`BEGIN IMMEDIATE`)
    /// blocks B instead.
    /// Was stale on PostgreSQL.
    pg_bulk_update_moves_a_row_that_entered_its_filter_after_the_pre_read,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        let paused = Arc::new(tokio::sync::Notify::new());
        let resume = Arc::new(tokio::sync::Notify::new());
        matroska_diesel::test_hooks::pause_next_write_after_read(cached, paused.clone(), resume.clone());
        let mut ac = tdb.connect(cached).await;
        let a = tokio::spawn(async move {
            on!(&mut ac, |c| diesel::update(articles::table.filter(articles::author_id.eq(2)))
                .set(articles::category_id.eq(3))
                .execute(c)
                .await)
            .unwrap()
        });
        paused.notified().await; // A read (and locked) article 2
        let mut bc = tdb.connect(cached).await;
        let b = tokio::spawn(async move {
            on!(&mut bc, |c| diesel::update(articles::table.find(3)).set(articles::author_id.eq(2)).execute(c).await)
                .unwrap();
        });
        if tdb.is_pg() {
            // row 3 is not locked: B commits while A waits
            b.await.unwrap();
            resume.notify_one();
            assert_eq!(a.await.unwrap(), 2, "A moved article 3 too");
        } else {
            // B waits for A's write lock
            resume.notify_one();
            assert_eq!(a.await.unwrap(), 1);
            b.await.unwrap();
        }
        assert_fresh(db, cache).await;
    }
);

// ---------------------------------------------------------------------------
// 3. Statement texts.

adv_test!(
    /// Scenario: a maintenance script through `batch_execute` on SQLite: the
    /// first statement (an UPDATE) runs and commits, the second fails (a
    /// duplicate audit row). The connection returned the error before
    /// invalidating anything, so the committed UPDATE was never invalidated.
    /// Was stale on SQLite (PostgreSQL runs a multi-statement string
    /// atomically).
    a_script_failing_half_way_loses_what_ran_before,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        on!(db, |c| diesel::insert_into(audit::table).values((audit::id.eq(1), audit::what.eq("x"))).execute(c).await)
            .unwrap();
        let r = on!(db, |c| c
            .batch_execute(
                "UPDATE articles SET published = FALSE WHERE id = 1; INSERT INTO audit (id, what) VALUES (1, 'dup')"
            )
            .await);
        assert!(r.is_err(), "the second statement fails");
        assert_fresh(db, cache).await;
    }
);

adv_test!(
    /// The same inside a transaction the application commits after handling
    /// the error (SQLite lets a transaction go on after a failed statement):
    /// the reservation of the failed script was cancelled.
    /// Was stale on SQLite.
    a_script_failing_half_way_inside_a_transaction_loses_what_ran_before,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        if tdb.is_pg() {
            // a failed statement aborts a PostgreSQL transaction
            return;
        }
        on!(db, |c| diesel::insert_into(audit::table).values((audit::id.eq(1), audit::what.eq("x"))).execute(c).await)
            .unwrap();
        on!(db, |c| c
            .transaction::<_, diesel::result::Error, _>(async |t| {
                let r = t
                    .batch_execute(
                        "UPDATE articles SET published = FALSE WHERE id = 1; INSERT INTO audit (id, what) VALUES (1, 'dup')",
                    )
                    .await;
                assert!(r.is_err());
                Ok(())
            })
            .await)
        .unwrap();
        assert_fresh(db, cache).await;
    }
);

adv_test!(
    /// Scenario: SQL kept in a file (`include_str!`) ends with a comment
    /// after its semicolon: `UPDATE articles ... WHERE id = $1;\n-- moves
    /// an article\n`. The connection appended its `RETURNING` after the
    /// comment: a second statement. SQLite silently ignores the text after
    /// the first statement, so the update ran, returned no rows, and nothing
    /// was invalidated; PostgreSQL refused the write ("cannot insert multiple
    /// commands into a prepared statement"), which runs fine without the
    /// cache.
    /// Was stale on SQLite; failed a valid write on PostgreSQL.
    a_trailing_comment_after_the_semicolon_swallows_the_returning_clause,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        let sql = if tdb.is_pg() {
            "UPDATE articles SET category_id = 3 WHERE id = $1;\n-- moves an article\n"
        } else {
            "UPDATE articles SET category_id = 3 WHERE id = ?;\n-- moves an article\n"
        };
        let n = on!(db, |c| diesel::sql_query(sql).bind::<diesel::sql_types::Integer, _>(1).execute(c).await)
            .unwrap();
        assert_eq!(n, 1);
        let n = on!(db, |c| diesel::sql_query("DELETE FROM comments WHERE id = 1; /* tidy */")
            .execute(c)
            .await)
        .unwrap();
        assert_eq!(n, 1);
        assert_fresh(db, cache).await;
    }
);

adv_test!(
    /// Scenario: raw SQL naming the table in another case, quoted (ported
    /// from code written for a case-insensitive setup). SQLite finds the
    /// table; the connection compared quoted names exactly, found no model
    /// and invalidated a switch called `ARTICLES`.
    /// Was stale on SQLite.
    sqlite_quoted_table_name_in_another_case_invalidates_nothing,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        if tdb.is_pg() {
            // quoted names are case-sensitive there: no such table
            return;
        }
        on!(db, |c| c.batch_execute(r#"UPDATE "ARTICLES" SET published = FALSE WHERE id = 1"#).await).unwrap();
        assert_fresh(db, cache).await;
    }
);

// ---------------------------------------------------------------------------
// 4. Values the database compares by a collation.

adv_test!(
    /// Scenario: products whose `kind` compares without regard to case
    /// (SQLite `COLLATE NOCASE`, a PostgreSQL nondeterministic collation or
    /// `citext`). "The products of kind tool" is cached; an editor adds a
    /// product of kind `Tool`. The database's `kind = 'tool'` now matches it,
    /// but the connection invalidated the list `{kind: "Tool"}` only.
    /// Was stale on SQLite and PostgreSQL.
    a_case_insensitive_column_misses_the_list_a_row_enters,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        fill_extra(db, cache).await;
        on!(db, |c| diesel::insert_into(adv_products::table)
            .values((adv_products::kind.eq("Tool"), adv_products::name.eq("hammer")))
            .execute(c)
            .await)
        .unwrap();
        assert_extra_fresh(db, cache).await;
    }
);

// ---------------------------------------------------------------------------
// 5. Cancellation.

/// An invalidator with the latency of a remote cache, switchable.
struct Slow {
    cache: Cache,
    slow: AtomicBool,
    /// Notified when a slow invalidation starts.
    entered: tokio::sync::Notify,
}

impl Invalidator for Slow {
    fn invalidate(&self, deps: Vec<Dep>) -> Pin<Box<dyn Future<Output = Result<u64, matroska::Error>> + Send + '_>> {
        Box::pin(async move {
            // the first invalidation after the switch is slow
            if self.slow.swap(false, Ordering::SeqCst) {
                self.entered.notify_one();
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            self.cache.invalidate(deps).await
        })
    }

    fn pending(&self) -> usize {
        self.cache.pending_invalidations()
    }
}

/// Waits (bounded) until `key` is no longer cached.
async fn until_dropped(cache: &Cache, key: &str) -> bool {
    for _ in 0..500 {
        if !cache.has(key).await.unwrap() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

adv_test!(
    /// Scenario: a handler runs `conn.transaction(..)` under a request
    /// timeout; the database commit completes and the invalidation round
    /// trip to the cache is in flight when the handler's future is dropped.
    /// The invalidation must still happen.
    /// (Held: the commit's guard invalidates from a task of its own.)
    a_commit_cancelled_after_the_database_commit_still_invalidates,
    |tdb, db, cache, cached| {
        let _ = db;
        let slow = Arc::new(Slow { cache: cache.clone(), slow: AtomicBool::new(false), entered: Default::default() });
        let cached = CachedDatabase::builder_with(slow.clone()).build().unwrap();
        let mut db = tdb.connect(&cached).await;
        prepare(&mut db, cache).await;
        slow.slow.store(true, Ordering::SeqCst);
        on!(&mut db, |c| {
            let handler = c.transaction::<_, diesel::result::Error, _>(async |t| {
                diesel::update(articles::table.find(2)).set(articles::published.eq(true)).execute(t).await?;
                Ok(())
            });
            tokio::select! {
                r = handler => panic!("the handler finished before its timeout: {r:?}"),
                () = slow.entered.notified() => {}
            }
        });
        assert!(until_dropped(cache, &View::CountPublished(1).key()).await, "the commit's invalidation was lost");
        assert_fresh(&mut db, cache).await;
    }
);

adv_test!(
    /// Scenario: SQLite under write load (another connection holds the
    /// write lock; the application's busy timeout makes statements wait). A
    /// request moving an article times out while the connection's own
    /// `BEGIN IMMEDIATE` waits for the lock; diesel-async finishes the
    /// statement when the future is dropped, and the lock comes free
    /// meanwhile, so the `BEGIN` goes through. The connection never learnt
    /// it: the transaction stayed open, unknown to Diesel and to the
    /// connection. The next request's "autocommit" write went into it, was
    /// invalidated and read back through the connection into the cache, and
    /// was never committed (lost when the connection closed). A pool took
    /// the connection back as healthy.
    /// Lost a write and cached it on SQLite (on PostgreSQL the same abandoned
    /// `BEGIN` over a round trip leaves the transaction open the same way).
    a_write_abandoned_while_its_begin_waits_leaves_a_transaction_open,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        if tdb.is_pg() {
            return;
        }
        let mut holder = tdb.plain().await;
        on!(&mut holder, |c| c.inner().batch_execute("BEGIN IMMEDIATE").await).unwrap();
        on!(db, |c| {
            let mut write =
                Box::pin(diesel::update(articles::table.find(1)).set(articles::category_id.eq(3)).execute(c));
            tokio::select! {
                r = &mut write => panic!("the write did not wait for the lock: {r:?}"),
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            // the lock comes free while the request's timeout drops the write
            let release = tokio::spawn(async move {
                on!(&mut holder, |h| h.inner().batch_execute("ROLLBACK").await).unwrap();
            });
            drop(write);
            release.await.unwrap();
        });
        // the next request on the connection
        on!(db, |c| diesel::update(articles::table.find(2)).set(articles::views.eq(99)).execute(c).await).unwrap();
        View::Article(2).read(db, cache).await;
        // what was committed, as another connection sees it
        let mut other = tdb.plain().await;
        let views: i32 = on!(&mut other, |c| articles::table.find(2).select(articles::views).first(c).await).unwrap();
        assert_eq!(views, 99, "the second request's write was committed");
        let stale = stale_views(&mut other, cache).await;
        assert!(stale.is_empty(), "stale: {stale:#?}");
    }
);

// ---------------------------------------------------------------------------
// 6. Uncommitted data through the manual cache API.

adv_test!(
    /// Scenario: code that caches by hand (`lookup` + `put_with_ticket`)
    /// from a helper that happens to run inside `conn.transaction(..)`. The
    /// transaction's write is invalidated only at commit, so nothing refuses
    /// the put; the transaction then rolls back and the cache serves data
    /// that never existed. (`mark_uncacheable` only works inside
    /// `get_or_load`.)
    /// Was stale on SQLite and PostgreSQL.
    a_manual_put_inside_a_rolled_back_transaction_escapes,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        let key = View::Article(2).key();
        cache.delete(&key).await.unwrap();
        let r = on!(db, |c| c
            .transaction::<(), diesel::result::Error, _>(async |t| {
                diesel::update(articles::table.find(2)).set(articles::published.eq(true)).execute(t).await?;
                // a savepoint's helper shows the article, caching it by hand
                t.transaction::<(), diesel::result::Error, _>(async |s| {
                    if let matroska::Fetched::Miss(ticket) = cache.lookup::<Json>(&key).await.unwrap() {
                        let a: Option<Article> = articles::table.find(2).first(s).await.optional()?;
                        let deps = matroska_diesel::dependencies(&a, depth! {}).unwrap();
                        let value = serde_json::to_value(&a).unwrap();
                        let outcome = cache.put_with_ticket(&key, &value, deps, TTL, ticket).await.unwrap();
                        assert!(matches!(outcome, matroska::PutOutcome::Refused), "stored: {outcome:?}");
                    }
                    Ok(())
                })
                .await?;
                Err(diesel::result::Error::RollbackTransaction)
            })
            .await);
        assert!(r.is_err(), "rolled back");
        assert_fresh(db, cache).await;
    }
);

// ---------------------------------------------------------------------------
// 7. The escape hatch.

adv_test!(
    /// Scenario: `execute_touching`, the documented way to run text the
    /// parser cannot read, given the table as a PostgreSQL user writes it,
    /// schema-qualified (`public.articles`; `main.articles` on SQLite). The
    /// name became a switch verbatim, which no model uses.
    /// Was stale on SQLite and PostgreSQL.
    execute_touching_with_a_schema_qualified_name_invalidates_nothing,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        let name = if tdb.is_pg() { "public.articles" } else { "main.articles" };
        on!(db, |c| c
            .execute_touching(diesel::sql_query("UPDATE articles SET published = FALSE WHERE id = 1"), &[name])
            .await)
        .unwrap();
        assert_fresh(db, cache).await;
    }
);

// ---------------------------------------------------------------------------
// 8. matroska-seaorm's findings whose Diesel analogue held (shared fixes in
//    matroska-sql and the core, or RETURNING): kept as guards.

adv_test!(
    /// `SELECT 1; UPDATE ...` through `batch_execute` is not taken for a
    /// read; `EXPLAIN (ANALYZE) UPDATE` (PostgreSQL) runs the update; SQLite's
    /// `UPDATE OR REPLACE` deletes the row it conflicts with.
    statement_forms_that_write_more_than_they_seem,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        on!(db, |c| c.batch_execute("SELECT 1; UPDATE articles SET published = FALSE WHERE id = 1").await).unwrap();
        assert_fresh(db, cache).await;
        fill(db, cache).await;
        if tdb.is_pg() {
            on!(db, |c| c
                .batch_execute("EXPLAIN (ANALYZE, BUFFERS) UPDATE articles SET category_id = 2 WHERE id = 3")
                .await)
            .unwrap();
            assert_fresh(db, cache).await;
        } else {
            unwatched(tdb, "CREATE UNIQUE INDEX tag_name ON tags (name)").await;
            assert!(!Extra::Tag(2).read(db, cache).await.is_null());
            on!(db, |c| diesel::sql_query("UPDATE OR REPLACE tags SET name = ? WHERE id = ?")
                .bind::<diesel::sql_types::Text, _>("web")
                .bind::<diesel::sql_types::Integer, _>(1)
                .execute(c)
                .await)
            .unwrap();
            Extra::Tag(2).assert_fresh(db, cache).await;
        }
    }
);

adv_test!(
    /// `TRUNCATE adv_posts CASCADE` (PostgreSQL) empties the referencing
    /// replies too.
    pg_truncate_cascade_empties_the_referencing_tables,
    |tdb, db, cache, cached| {
        if !tdb.is_pg() {
            return;
        }
        fill_extra(db, cache).await;
        on!(db, |c| c.batch_execute("TRUNCATE adv_posts CASCADE").await).unwrap();
        assert_extra_fresh(db, cache).await;
    }
);

/// Article 1's title, cached with `pk_dep_of` alone.
async fn title_of_1(db: &mut Db, cache: &Cache) -> String {
    cache
        .get_or_load("article-title:1", TTL, |deps| async move {
            deps.push(matroska_diesel::pk_dep_of::<Article>(1));
            let t: String = on!(db, |c| articles::table.find(1).select(articles::title).first(c).await)?;
            Ok::<_, BoxErr>(t)
        })
        .await
        .unwrap()
}

adv_test!(
    /// A page keyed with `pk_dep_of` alone, then a write the connection
    /// handles coarsely (`UPDATE .. FROM`): the cache adds the table's switch
    /// to every entry that depends on a row.
    a_coarse_write_reaches_entries_keyed_with_pk_dep_of,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        assert_eq!(title_of_1(db, cache).await, "ownership");
        on!(db, |c| c
            .batch_execute(
                "UPDATE articles SET title = 'borrowing' FROM authors \
                 WHERE articles.author_id = authors.id AND authors.name = 'Ann' AND articles.id = 1"
            )
            .await)
        .unwrap();
        assert_eq!(title_of_1(db, cache).await, "borrowing");
    }
);

adv_test!(
    /// Loosely typed `sql_query` binds (SQLite converts text to the
    /// column's affinity): the key `"1"`, the category `"3"`, the boolean
    /// `1`. The connection learns what changed from `RETURNING`, as stored.
    loosely_typed_sql_query_binds_are_read_back_as_stored,
    |tdb, db, cache, cached| {
        prepare(db, cache).await;
        if tdb.is_pg() {
            // PostgreSQL rejects the mismatched parameter types
            return;
        }
        use diesel::sql_types::{Integer, Text};
        on!(db, |c| diesel::sql_query("UPDATE articles SET category_id = ? WHERE id = ?")
            .bind::<Text, _>("3")
            .bind::<Text, _>("1")
            .execute(c)
            .await)
        .unwrap();
        on!(db, |c| diesel::sql_query(
            "INSERT INTO articles (title, author_id, category_id, published, views, price) VALUES (?, ?, ?, ?, 0, 7)"
        )
        .bind::<Text, _>("imported")
        .bind::<Integer, _>(3)
        .bind::<Text, _>("2")
        .bind::<Integer, _>(1)
        .execute(c)
        .await)
        .unwrap();
        on!(db, |c| diesel::sql_query("DELETE FROM tags WHERE id = ?").bind::<Text, _>("2").execute(c).await).unwrap();
        assert_fresh(db, cache).await;
    }
);
