//! Automatic invalidation on a blog schema: which entries drop and which stay
//! after each kind of write.
//!
//! SQLite in memory: `cargo test -p matroska-seaorm`.
//! PostgreSQL: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-seaorm`.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use matroska::{params, Cache, Dep};
use matroska_seaorm::{depth, Registration, UnmanagedTransactions};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ActiveValue::Set, DbBackend, EntityLoaderTrait, IntoActiveModel, TransactionTrait};

/// The rows every test starts from.
struct Seed {
    ann: author::Model,
    bob: author::Model,
    rust: category::Model,
    python: category::Model,
    go: category::Model,
    /// rust, published, by Ann
    a1: article::Model,
    /// rust, draft, by Bob
    a2: article::Model,
    /// python, published, by Ann
    a3: article::Model,
}

async fn seed<C: ConnectionTrait>(db: &C) -> Seed {
    let ann = author::ActiveModel { name: Set("Ann".into()), ..Default::default() }.insert(db).await.unwrap();
    let bob = author::ActiveModel { name: Set("Bob".into()), ..Default::default() }.insert(db).await.unwrap();
    let mut cats = Vec::new();
    for name in ["rust", "python", "go"] {
        cats.push(category::ActiveModel { name: Set(name.into()), ..Default::default() }.insert(db).await.unwrap());
    }
    let art = |title: &str, author: i32, cat: i32, published: bool| article::ActiveModel {
        title: Set(title.into()),
        author_id: Set(author),
        category_id: Set(cat),
        published: Set(published),
        views: Set(0),
        ..Default::default()
    };
    let a1 = art("ownership", ann.id, cats[0].id, true).insert(db).await.unwrap();
    let a2 = art("lifetimes", bob.id, cats[0].id, false).insert(db).await.unwrap();
    let a3 = art("asyncio", ann.id, cats[1].id, true).insert(db).await.unwrap();
    comment::ActiveModel {
        body: Set("nice".into()),
        article_id: Set(a1.id),
        author_id: Set(bob.id),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap();
    let [rust, python, go] = <[category::Model; 3]>::try_from(cats).unwrap();
    Seed { ann, bob, rust, python, go, a1, a2, a3 }
}

const KEYS: &[&str] = &[
    "detail:1",
    "detail:2",
    "detail:3", // article + author
    "list:rust:pub",
    "list:rust:draft",
    "list:python:pub",
    "list:go:pub", // rows + authors + condition
    "count:rust:pub",
    "count:rust:draft",
    "count:python:pub",
    "count:go:pub", // condition only
    "published",    // every published article
    "author:ann",
    "author:bob",
];

async fn list(db: &DatabaseConnection, cache: &Cache, key: &str, cat: i32, published: bool) {
    let rows = article::Entity::load()
        .filter(article::Column::CategoryId.eq(cat))
        .filter(article::Column::Published.eq(published))
        .with(author::Entity)
        .all(db)
        .await
        .unwrap();
    let mut deps =
        matroska_seaorm::list_deps::<article::Entity>(params! { "published" => published, "category_id" => cat })
            .unwrap();
    deps.extend(matroska_seaorm::dependencies(&rows, depth!(article::ModelEx => { author: 1 })).unwrap());
    cache.put(key, &rows, deps, TTL).await.unwrap();
}

/// Fills the cache with the entries of `KEYS`.
async fn fill(db: &DatabaseConnection, cache: &Cache, s: &Seed) {
    for (i, a) in [&s.a1, &s.a2, &s.a3].into_iter().enumerate() {
        let ex = article::Entity::load().filter_by_id(a.id).with(author::Entity).one(db).await.unwrap().unwrap();
        let deps = matroska_seaorm::dependencies(&ex, depth! { author: 1 }).unwrap();
        cache.put(&format!("detail:{}", i + 1), &ex, deps, TTL).await.unwrap();
    }
    list(db, cache, "list:rust:pub", s.rust.id, true).await;
    list(db, cache, "list:rust:draft", s.rust.id, false).await;
    list(db, cache, "list:python:pub", s.python.id, true).await;
    list(db, cache, "list:go:pub", s.go.id, true).await;
    for (key, cat, published) in [
        ("count:rust:pub", s.rust.id, true),
        ("count:rust:draft", s.rust.id, false),
        ("count:python:pub", s.python.id, true),
        ("count:go:pub", s.go.id, true),
    ] {
        let deps =
            matroska_seaorm::list_deps::<article::Entity>(params! { "published" => published, "category_id" => cat })
                .unwrap();
        cache.put(key, &1u32, deps, TTL).await.unwrap();
    }
    let rows = article::Entity::find().filter(article::Column::Published.eq(true)).all(db).await.unwrap();
    let mut deps = matroska_seaorm::list_deps::<article::Entity>(params! { "published" => true }).unwrap();
    deps.extend(matroska_seaorm::dependencies(&rows, depth! {}).unwrap());
    cache.put("published", &rows, deps, TTL).await.unwrap();
    cache.put("author:ann", &s.ann, [matroska_seaorm::pk_dep(&s.ann)], TTL).await.unwrap();
    cache.put("author:bob", &s.bob, [matroska_seaorm::pk_dep(&s.bob)], TTL).await.unwrap();
    assert_eq!(gone(cache).await, Vec::<String>::new(), "all entries cached");
}

/// The keys of `KEYS` no longer cached.
async fn gone(cache: &Cache) -> Vec<String> {
    let present: BTreeSet<String> = present(cache, KEYS).await.into_iter().collect();
    KEYS.iter().filter(|k| !present.contains(**k)).map(|k| (*k).to_owned()).collect()
}

/// Runs `body` on a fresh database and cache, with the cache registered for
/// this test only.
macro_rules! blog_test {
    ($name:ident, |$db:ident, $cache:ident, $s:ident| $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let tdb = TestDb::new(stringify!($name)).await;
            let $cache = new_cache();
            let db2 = tdb.db.clone();
            let c2 = $cache.clone();
            Registration::new($cache.clone())
                .scope(async move {
                    let $db = &db2;
                    let $cache = &c2;
                    let $s = seed($db).await;
                    fill($db, $cache, &$s).await;
                    $body
                })
                .await;
            drop($cache);
            tdb.drop_db().await;
        }
    };
}

blog_test!(create_enters_lists, |db, cache, s| {
    article::ActiveModel {
        title: Set("generics".into()),
        author_id: Set(s.bob.id),
        category_id: Set(s.rust.id),
        published: Set(true),
        views: Set(0),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap();
    assert_eq!(gone(cache).await, ["list:rust:pub", "count:rust:pub", "published"]);
});

blog_test!(update_scope_column_leaves_and_enters, |db, cache, s| {
    // publish the draft a2: it leaves rust/draft and enters rust/pub and published
    let mut a: article::ActiveModel = s.a2.clone().into();
    a.published = Set(true);
    a.update(db).await.unwrap();
    assert_eq!(
        gone(cache).await,
        ["detail:2", "list:rust:pub", "list:rust:draft", "count:rust:pub", "count:rust:draft", "published"]
    );
});

blog_test!(update_unwatched_column_drops_key_only, |db, cache, s| {
    // a view counter: entries holding the row drop, condition-only entries stay
    let mut a: article::ActiveModel = s.a3.clone().into();
    a.views = Set(41);
    a.update(db).await.unwrap();
    assert_eq!(gone(cache).await, ["detail:3", "list:python:pub", "published"]);
});

blog_test!(update_primary_data, |db, cache, s| {
    let mut a: article::ActiveModel = s.a1.clone().into();
    a.title = Set("ownership, revised".into());
    a.update(db).await.unwrap();
    assert_eq!(gone(cache).await, ["detail:1", "list:rust:pub", "published"]);
    // an author's rename drops what embeds the author
    let mut b: author::ActiveModel = s.bob.clone().into();
    b.name = Set("Robert".into());
    b.update(db).await.unwrap();
    assert_eq!(
        gone(cache).await,
        ["detail:1", "detail:2", "list:rust:pub", "list:rust:draft", "published", "author:bob"]
    );
});

blog_test!(move_between_categories, |db, cache, s| {
    let mut a: article::ActiveModel = s.a3.clone().into();
    a.category_id = Set(s.go.id);
    a.update(db).await.unwrap();
    assert_eq!(
        gone(cache).await,
        ["detail:3", "list:python:pub", "list:go:pub", "count:python:pub", "count:go:pub", "published"]
    );
});

blog_test!(delete_leaves_lists, |db, cache, s| {
    s.a2.clone().delete(db).await.unwrap();
    assert_eq!(gone(cache).await, ["detail:2", "list:rust:draft", "count:rust:draft"]);
    // an active model holding only the key: the row is re-read for its scopes
    article::ActiveModel { id: Set(s.a3.id), ..Default::default() }.delete(db).await.unwrap();
    assert_eq!(
        gone(cache).await,
        [
            "detail:2",
            "detail:3",
            "list:rust:draft",
            "list:python:pub",
            "count:rust:draft",
            "count:python:pub",
            "published"
        ]
    );
});

blog_test!(bulk_update_through_the_helper, |db, cache, s| {
    // publish every rust article: a2 moves from rust/draft to rust/pub
    let rows = matroska_seaorm::bulk::update_many::<article::Entity, _, _>(
        db,
        Condition::all().add(article::Column::CategoryId.eq(s.rust.id)),
        |u| u.col_expr(article::Column::Published, Expr::value(true)),
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        gone(cache).await,
        ["detail:1", "detail:2", "list:rust:pub", "list:rust:draft", "count:rust:pub", "count:rust:draft", "published"]
    );
    // a raw bulk write bypasses hooks; the coarse switch covers it
    article::Entity::update_many().col_expr(article::Column::Views, Expr::value(9)).exec(db).await.unwrap();
    assert!(cache.has("count:go:pub").await.unwrap(), "bulk writes without the helper invalidate nothing");
    matroska_seaorm::bulk::invalidate_entity::<article::Entity>().await.unwrap();
    assert_eq!(gone(cache).await, &KEYS[..12]);
});

blog_test!(bulk_delete_and_insert, |db, cache, s| {
    let rows = matroska_seaorm::bulk::delete_many::<comment::Entity, _>(db, Condition::all()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(gone(cache).await, Vec::<String>::new(), "no cached entry holds comments");
    let new = matroska_seaorm::bulk::insert_many(
        db,
        [article::ActiveModel {
            title: Set("goroutines".into()),
            author_id: Set(s.ann.id),
            category_id: Set(s.go.id),
            published: Set(true),
            views: Set(0),
            ..Default::default()
        }],
    )
    .await
    .unwrap();
    assert_eq!(new.len(), 1);
    assert_eq!(gone(cache).await, ["list:go:pub", "count:go:pub", "published"]);
});

blog_test!(transaction_committed, |db, cache, s| {
    let a3 = s.a3.clone();
    let before = cache.stats().invalidations;
    matroska_seaorm::transaction(db, |txn| {
        Box::pin(async move {
            let mut a: article::ActiveModel = a3.into();
            a.category_id = Set(s.go.id);
            a.update(txn).await?;
            Ok::<_, DbErr>(())
        })
    })
    .await
    .unwrap();
    assert_eq!(
        gone(cache).await,
        ["detail:3", "list:python:pub", "list:go:pub", "count:python:pub", "count:go:pub", "published"]
    );
    assert_eq!(cache.stats().invalidations - before, 2, "the hook's invalidation and the post-commit flush");
});

blog_test!(transaction_rolled_back, |db, cache, s| {
    let a3 = s.a3.clone();
    let before = cache.stats().invalidations;
    let err = matroska_seaorm::transaction(db, |txn| {
        Box::pin(async move {
            let mut a: article::ActiveModel = a3.into();
            a.category_id = Set(s.go.id);
            a.update(txn).await?;
            Err::<(), _>(DbErr::Custom("abort".into()))
        })
    })
    .await
    .unwrap_err();
    assert!(matches!(err, matroska_seaorm::TransactionError::Transaction(_)), "{err}");
    // the hook invalidated at once (harmless over-invalidation); nothing is flushed
    assert_eq!(cache.stats().invalidations - before, 1);
    assert_eq!(
        gone(cache).await,
        ["detail:3", "list:python:pub", "list:go:pub", "count:python:pub", "count:go:pub", "published"]
    );
    let row = article::Entity::find_by_id(s.a3.id).one(db).await.unwrap().unwrap();
    assert_eq!(row.category_id, s.python.id, "rolled back");
});

blog_test!(savepoint_release_is_not_a_commit, |db, cache, s| {
    let a1 = s.a1.clone();
    let flushed_at = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&flushed_at);
    let c = cache.clone();
    matroska_seaorm::transaction(db, |txn| {
        Box::pin(async move {
            matroska_seaorm::transaction(txn, |inner| {
                Box::pin(async move {
                    let mut a: article::ActiveModel = a1.into();
                    a.title = Set("in a savepoint".into());
                    a.update(inner).await?;
                    Ok::<_, DbErr>(())
                })
            })
            .await
            .map_err(|e| DbErr::Custom(e.to_string()))?;
            *seen.lock().unwrap() = Some(c.stats().invalidations);
            Ok::<_, DbErr>(())
        })
    })
    .await
    .unwrap();
    let inside = flushed_at.lock().unwrap().unwrap();
    assert_eq!(cache.stats().invalidations, inside + 1, "one flush, after the outer commit");
    assert_eq!(gone(cache).await, ["detail:1", "list:rust:pub", "published"]);
});

#[derive(Debug)]
#[allow(dead_code)]
enum ReadErr {
    Db(DbErr),
    Cache(matroska::Error),
}

impl From<matroska::Error> for ReadErr {
    fn from(e: matroska::Error) -> Self {
        ReadErr::Cache(e)
    }
}

/// A reader: loads an article's title through the cache from the pool.
async fn read_title(db: DatabaseConnection, cache: Cache, key: String, id: i32) -> String {
    cache
        .get_or_load(&key, TTL, |deps| async move {
            let row = article::Entity::find_by_id(id).one(&db).await.map_err(ReadErr::Db)?.expect("row");
            deps.push(matroska_seaorm::pk_dep(&row));
            Ok::<_, ReadErr>(row.title)
        })
        .await
        .unwrap()
}

/// Renames the article on `txn`, then lets a reader load it before returning
/// (that is, before the commit).
async fn rename_then_read<C: ConnectionTrait>(
    txn: &C,
    am: article::ActiveModel,
    db: DatabaseConnection,
    cache: Cache,
    key: String,
    id: i32,
) -> Result<(), DbErr> {
    am.update(txn).await?;
    let seen = tokio::spawn(read_title(db, cache, key, id)).await.unwrap();
    assert_eq!(seen, "ownership", "before the commit a reader sees the old row");
    Ok(())
}

/// A reader caches the old committed row between the hook and the commit:
/// the post-commit flush drops it; without the helper it would stay.
async fn race(managed: bool) {
    let tdb = TestDb::with_connections(if managed { "race_managed" } else { "race_unmanaged" }, Some(3)).await;
    let cache = new_cache();
    let reg = Registration::new(cache.clone()).unmanaged_transactions(UnmanagedTransactions::Warn);
    let db = tdb.db.clone();
    let c = cache.clone();
    reg.scope(async move {
        let s = seed(&db).await;
        let id = s.a1.id;
        let key = format!("detail:{id}");
        let mut am: article::ActiveModel = s.a1.clone().into();
        am.title = Set("new title".into());
        if managed {
            let (db2, c2, k2) = (db.clone(), c.clone(), key.clone());
            matroska_seaorm::transaction(&db, move |txn| Box::pin(rename_then_read(txn, am, db2, c2, k2, id)))
                .await
                .unwrap();
        } else {
            let txn = db.begin().await.unwrap();
            rename_then_read(&txn, am, db.clone(), c.clone(), key.clone(), id).await.unwrap();
            txn.commit().await.unwrap();
        }
        let cached: Option<String> = c.get(&key).await.unwrap();
        if managed {
            assert_eq!(cached, None, "the post-commit flush dropped the old row");
            assert_eq!(read_title(db.clone(), c.clone(), key.clone(), id).await, "new title");
        } else {
            assert_eq!(cached.as_deref(), Some("ownership"), "without the helper the old row stays cached");
        }
    })
    .await;
    tdb.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_race_closed_by_the_helper() {
    race(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_race_without_the_helper() {
    race(false).await;
}

blog_test!(unmanaged_transaction_is_an_error, |db, cache, s| {
    let txn = db.begin().await.unwrap();
    let mut a: article::ActiveModel = s.a1.clone().into();
    a.title = Set("x".into());
    let err = a.update(&txn).await.unwrap_err();
    assert!(err.to_string().contains("matroska_seaorm::transaction"), "{err}");
    txn.rollback().await.unwrap();
    assert_eq!(gone(cache).await, Vec::<String>::new());
});

#[tokio::test]
async fn no_cache_registered_is_an_error_and_writes_nothing() {
    let tdb = TestDb::new("no_cache").await;
    let err = author::ActiveModel { name: Set("Eve".into()), ..Default::default() }.insert(&tdb.db).await.unwrap_err();
    assert!(err.to_string().contains("register"), "{err}");
    assert_eq!(author::Entity::find().all(&tdb.db).await.unwrap().len(), 0);
    tdb.drop_db().await;
}

/// An invalidator that fails after `ok` calls.
struct Failing {
    ok: AtomicUsize,
}

impl matroska_seaorm::Invalidator for Failing {
    fn invalidate<'a>(
        &'a self,
        _deps: Vec<Dep>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, matroska::Error>> + Send + 'a>> {
        Box::pin(async move {
            if self.ok.fetch_sub(1, Ordering::SeqCst) > 0 {
                Ok(0)
            } else {
                Err(matroska::Error::Backend(matroska::BackendError::new(
                    matroska::BackendErrorKind::Unavailable,
                    "backend down",
                )))
            }
        })
    }
}

#[tokio::test]
async fn failed_invalidation_fails_the_save() {
    let tdb = TestDb::new("failed_invalidation").await;
    Registration::from_invalidator(Failing { ok: AtomicUsize::new(1) })
        .scope(async {
            let ann =
                author::ActiveModel { name: Set("Ann".into()), ..Default::default() }.insert(&tdb.db).await.unwrap();
            let mut a: author::ActiveModel = ann.into_active_model();
            a.name = Set("Anne".into());
            let err = a.update(&tdb.db).await.unwrap_err();
            assert!(err.to_string().contains("invalidation failed"), "{err}");
        })
        .await;
    tdb.drop_db().await;
}

#[tokio::test]
async fn sqlite_returning_is_on() {
    let tdb = TestDb::new("returning").await;
    if tdb.backend() == DbBackend::Sqlite {
        assert!(tdb.db.support_returning(), "sqlite-use-returning-for-3_35 must stay on");
    }
    tdb.drop_db().await;
}

// ActiveModelEx operations (the builder, `ModelEx::delete`, `Model::cascade_delete`)
// open a transaction of their own, so their hooks run on a `DatabaseTransaction`.

blog_test!(active_model_ex_outside_transaction_is_refused, |db, cache, s| {
    let err = article::ActiveModel::builder()
        .set_title("traits")
        .set_author_id(s.bob.id)
        .set_category_id(s.rust.id)
        .set_published(true)
        .set_views(0)
        .add_comment(comment::ActiveModel::builder().set_body("first").set_author_id(s.ann.id))
        .insert(db)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("matroska_seaorm::transaction"), "{err}");
    assert_eq!(article::Entity::find().all(db).await.unwrap().len(), 3, "nothing written");
    assert_eq!(gone(cache).await, Vec::<String>::new());
});

blog_test!(active_model_ex_cascade_insert_in_transaction, |db, cache, s| {
    let before = cache.stats().invalidations;
    let (bob, ann, rust) = (s.bob.id, s.ann.id, s.rust.id);
    let saved = matroska_seaorm::transaction(db, |txn| {
        Box::pin(async move {
            article::ActiveModel::builder()
                .set_title("traits")
                .set_author_id(bob)
                .set_category_id(rust)
                .set_published(true)
                .set_views(0)
                .add_comment(comment::ActiveModel::builder().set_body("first").set_author_id(ann))
                .insert(txn)
                .await
        })
    })
    .await
    .unwrap();
    assert_eq!(saved.comments.len(), 1);
    assert_eq!(gone(cache).await, ["list:rust:pub", "count:rust:pub", "published"]);
    // one invalidation per hooked row (article, comment) and one post-commit flush
    assert_eq!(cache.stats().invalidations - before, 3);
});

/// Caches the comments of `a1` and the articles of tag `t` (as junction rows).
async fn fill_children(db: &DatabaseConnection, cache: &Cache, s: &Seed) -> i32 {
    let t = tag::ActiveModel { name: Set("memory".into()), ..Default::default() }.insert(db).await.unwrap();
    let link = article_tag::ActiveModel { article_id: Set(s.a1.id), tag_id: Set(t.id) }.insert(db).await.unwrap();
    let comments = comment::Entity::find().filter(comment::Column::ArticleId.eq(s.a1.id)).all(db).await.unwrap();
    let mut deps = matroska_seaorm::list_deps::<comment::Entity>(params! { "article_id" => s.a1.id }).unwrap();
    deps.extend(matroska_seaorm::dependencies(&comments, depth! {}).unwrap());
    cache.put("comments:1", &comments.len(), deps, TTL).await.unwrap();
    let deps = matroska_seaorm::list_deps::<article_tag::Entity>(params! { "tag_id" => t.id }).unwrap();
    cache.put("tagged", &[link.article_id], deps, TTL).await.unwrap();
    t.id
}

blog_test!(cascade_delete_in_transaction, |db, cache, s| {
    fill_children(db, cache, &s).await;
    let a1 = s.a1.clone();
    matroska_seaorm::transaction(db, |txn| Box::pin(async move { a1.cascade_delete(txn).await })).await.unwrap();
    assert_eq!(comment::Entity::find().all(db).await.unwrap().len(), 0, "the comment went with its article");
    assert_eq!(article_tag::Entity::find().all(db).await.unwrap().len(), 0, "so did the junction row");
    assert_eq!(gone(cache).await, ["detail:1", "list:rust:pub", "count:rust:pub", "published"]);
    assert!(!cache.has("comments:1").await.unwrap(), "cascaded children run their hooks");
    // SeaORM removes junction rows with `delete_many`, which runs no hook: as
    // documented, lists of the junction entity need an explicit invalidation.
    assert!(cache.has("tagged").await.unwrap());
    matroska_seaorm::bulk::invalidate_entity::<article_tag::Entity>().await.unwrap();
    assert!(!cache.has("tagged").await.unwrap());
});
