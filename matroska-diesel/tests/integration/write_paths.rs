//! Every row of the write-path table of the crate docs, through a wrapped
//! connection: what each Diesel write API invalidates (precise, coarse) or
//! refuses, checked against every cached view.
//!
//! ```text
//! cargo test -p matroska-diesel --test integration write_paths::
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-diesel --test integration write_paths::
//! ```

use crate::common::schema::*;
use crate::common::*;
use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use matroska_diesel::Refusal;

/// The views a precise move of article 1 from rust to go must drop, and
/// some it must not.
#[allow(clippy::needless_pass_by_value)]
fn assert_dropped(dropped: &[View], must: &[View], must_not: &[View]) {
    for v in must {
        assert!(dropped.contains(v), "{v:?} must be dropped; dropped: {dropped:?}");
    }
    for v in must_not {
        assert!(!dropped.contains(v), "{v:?} must stay; dropped: {dropped:?}");
    }
}

db_test!(update_by_key_of_a_moving_column_drops_old_and_new_lists, |db, cache| {
    prepare(db, cache).await;
    let n =
        on!(db, |c| diesel::update(articles::table.find(1)).set(articles::category_id.eq(3)).execute(c).await).unwrap();
    assert_eq!(n, 1);
    let d = dropped(cache).await;
    assert_dropped(
        &d,
        &[View::Article(1), View::Published(1), View::Published(3), View::CountPublished(1), View::Cheapest(3)],
        &[View::Published(2), View::Article(2), View::Article(3), View::AuthorWithArticles(2)],
    );
    assert_fresh(db, cache).await;
});

db_test!(update_of_an_unwatched_column_drops_only_the_row, |db, cache| {
    prepare(db, cache).await;
    on!(db, |c| diesel::update(articles::table.find(1)).set(articles::views.eq(articles::views + 1)).execute(c).await)
        .unwrap();
    let d = dropped(cache).await;
    assert_dropped(
        &d,
        &[View::Article(1), View::Published(1), View::AllArticles],
        &[View::CountPublished(1), View::Article(2), View::CountPublished(2)],
    );
    assert_fresh(db, cache).await;
});

db_test!(update_many_with_a_filter_moves_every_row, |db, cache| {
    prepare(db, cache).await;
    let n = on!(db, |c| diesel::update(articles::table.filter(articles::category_id.eq(1)))
        .set(articles::published.eq(false))
        .execute(c)
        .await)
    .unwrap();
    assert_eq!(n, 2);
    let d = dropped(cache).await;
    assert_dropped(&d, &[View::CountPublished(1), View::AllPublished], &[View::CountPublished(2)]);
    assert_fresh(db, cache).await;
});

db_test!(update_of_a_watched_column_by_expression_reorders_top_n, |db, cache| {
    prepare(db, cache).await;
    // price is watched by the category lists (top-N by price); computed
    on!(db, |c| diesel::update(articles::table.filter(articles::title.like("own%")))
        .set(articles::price.eq(articles::price - 25))
        .execute(c)
        .await)
    .unwrap();
    let d = dropped(cache).await;
    assert_dropped(&d, &[View::Cheapest(1)], &[View::Cheapest(2), View::CountPublished(1)]);
    assert_fresh(db, cache).await;
});

db_test!(changeset_update_with_get_result, |db, cache| {
    prepare(db, cache).await;
    let mut a: Article = on!(db, |c| articles::table.find(2).first(c).await).unwrap();
    a.published = true;
    a.title = "lifetimes, published".into();
    let back: Article = on!(db, |c| diesel::update(&a).set(&a).get_result(c).await).unwrap();
    assert_eq!(back, a, "the application gets its RETURNING rows");
    let d = dropped(cache).await;
    assert_dropped(&d, &[View::Article(2), View::CountPublished(1), View::AllPublished], &[View::CountPublished(2)]);
    assert_fresh(db, cache).await;
});

db_test!(inserts_single_batch_and_returning, |db, cache| {
    prepare(db, cache).await;
    let row = NewArticle { title: "traits", author_id: 2, category_id: 1, published: true, views: 0, price: 5 };
    let a: Article = on!(db, |c| diesel::insert_into(articles::table).values(&row).get_result(c).await).unwrap();
    assert_eq!(a.id, 4);
    let d = dropped(cache).await;
    assert_dropped(
        &d,
        &[
            View::Article(4),
            View::Published(1),
            View::CountPublished(1),
            View::AllArticles,
            View::AuthorWithArticles(2),
        ],
        &[View::CountPublished(2), View::Article(1), View::AuthorWithArticles(1)],
    );
    assert_fresh(db, cache).await;
    fill(db, cache).await;
    let rows = vec![
        NewArticle { title: "goroutines", author_id: 3, category_id: 3, published: true, views: 0, price: 7 },
        NewArticle { title: "channels", author_id: 3, category_id: 3, published: false, views: 0, price: 8 },
    ];
    let n = match db {
        Db::Pg(c) => diesel::insert_into(articles::table).values(&rows).execute(c).await.unwrap(),
        // diesel-async cannot send a multi-row insert to SQLite: one by one
        Db::Sqlite(c) => {
            let mut n = 0;
            for r in &rows {
                n += diesel::insert_into(articles::table).values(r).execute(c).await.unwrap();
            }
            n
        }
    };
    assert_eq!(n, 2);
    let d = dropped(cache).await;
    assert_dropped(
        &d,
        &[View::Article(5), View::Published(3), View::AuthorWithArticles(3), View::Cheapest(3)],
        &[View::Published(1), View::AuthorWithArticles(1)],
    );
    assert_fresh(db, cache).await;
});

db_test!(upserts_are_precise_for_new_rows_and_coarse_for_old, |db, cache| {
    prepare(db, cache).await;
    // a link that exists: DO NOTHING changes nothing
    on!(db, |c| diesel::insert_into(article_tags::table)
        .values(ArticleTag { article_id: 1, tag_id: 1 })
        .on_conflict_do_nothing()
        .execute(c)
        .await)
    .unwrap();
    assert_fresh(db, cache).await;
    // an update on conflict: the old row's lists are unknown
    on!(db, |c| diesel::insert_into(articles::table)
        .values((
            articles::id.eq(2),
            articles::title.eq("x"),
            articles::author_id.eq(2),
            articles::category_id.eq(2),
            articles::published.eq(true),
            articles::views.eq(0),
            articles::price.eq(1),
        ))
        .on_conflict(articles::id)
        .do_update()
        .set(articles::category_id.eq(2))
        .execute(c)
        .await)
    .unwrap();
    let d = dropped(cache).await;
    assert_dropped(&d, &[View::Article(2), View::CountPublished(1), View::CountPublished(2)], &[]);
    assert_fresh(db, cache).await;
});

db_test!(deletes_by_key_and_filter_drop_what_the_rows_were_in, |db, cache| {
    prepare(db, cache).await;
    on!(db, |c| diesel::delete(comments::table.find(1)).execute(c).await).unwrap();
    let d = dropped(cache).await;
    assert_dropped(&d, &[View::ArticleWithComments(1)], &[View::ArticleWithComments(3), View::Published(1)]);
    assert_fresh(db, cache).await;
    fill(db, cache).await;
    let n = on!(db, |c| diesel::delete(articles::table.filter(articles::published.eq(true))).execute(c).await).unwrap();
    assert_eq!(n, 2);
    let d = dropped(cache).await;
    assert_dropped(&d, &[View::Article(1), View::Article(3), View::Published(2), View::AuthorWithArticles(1)], &[]);
    assert_fresh(db, cache).await;
});

db_test!(composite_keys_and_many_to_many_links, |db, cache| {
    prepare(db, cache).await;
    on!(db, |c| diesel::insert_into(article_tags::table)
        .values(ArticleTag { article_id: 3, tag_id: 2 })
        .execute(c)
        .await)
    .unwrap();
    let d = dropped(cache).await;
    assert_dropped(&d, &[View::Link(3, 2), View::ArticleWithTags(3)], &[View::Link(1, 1), View::ArticleWithTags(1)]);
    assert_fresh(db, cache).await;
    fill(db, cache).await;
    on!(db, |c| diesel::delete(article_tags::table.find((1, 1))).execute(c).await).unwrap();
    let d = dropped(cache).await;
    assert_dropped(&d, &[View::Link(1, 1), View::ArticleWithTags(1)], &[View::Link(3, 2)]);
    assert_fresh(db, cache).await;
});

db_test!(raw_sql_through_sql_query_and_batch_execute, |db, cache| {
    prepare(db, cache).await;
    on!(db, |c| diesel::sql_query("UPDATE articles SET category_id = 2 WHERE id = 1").execute(c).await).unwrap();
    let d = dropped(cache).await;
    assert_dropped(&d, &[View::Published(1), View::Published(2)], &[View::Article(3)]);
    assert_fresh(db, cache).await;
    fill(db, cache).await;
    // several statements at once: coarse for both tables
    on!(db, |c| c.batch_execute("UPDATE articles SET views = 9 WHERE id = 3; DELETE FROM comments").await).unwrap();
    let d = dropped(cache).await;
    assert_dropped(&d, &[View::Article(3), View::ArticleWithComments(1), View::CountPublished(2)], &[View::Link(1, 1)]);
    assert_fresh(db, cache).await;
});

db_test!(binds_through_sql_query, |db, cache| {
    prepare(db, cache).await;
    let sql = if db.is_pg() {
        "UPDATE articles SET published = $1 WHERE category_id = $2"
    } else {
        "UPDATE articles SET published = ? WHERE category_id = ?"
    };
    on!(db, |c| diesel::sql_query(sql)
        .bind::<diesel::sql_types::Bool, _>(true)
        .bind::<diesel::sql_types::Integer, _>(1)
        .execute(c)
        .await)
    .unwrap();
    let d = dropped(cache).await;
    assert_dropped(&d, &[View::CountPublished(1), View::Article(2)], &[View::CountPublished(2), View::Article(3)]);
    assert_fresh(db, cache).await;
});

db_test!(tables_without_a_model_are_coarse, |db, cache| {
    prepare(db, cache).await;
    on!(db, |c| diesel::insert_into(audit::table).values(audit::what.eq("x")).execute(c).await).unwrap();
    // nothing cached depends on audit
    assert!(dropped(cache).await.is_empty());
    assert_fresh(db, cache).await;
});

db_test!(transaction_control_and_garbage_are_refused_before_running, |db, cache| {
    prepare(db, cache).await;
    for sql in ["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT x"] {
        let e = on!(db, |c| c.batch_execute(sql).await).unwrap_err();
        assert!(matches!(Refusal::of(&e), Some(Refusal::TransactionControl(_))), "{sql}: {e}");
        let e = on!(db, |c| diesel::sql_query(sql).execute(c).await).unwrap_err();
        assert!(matches!(Refusal::of(&e), Some(Refusal::TransactionControl(_))), "{sql}: {e}");
    }
    let e = on!(db, |c| c.batch_execute("UPDATE articles SET title = 'x' WHERE id = 1 AND ???").await).unwrap_err();
    assert!(matches!(Refusal::of(&e), Some(Refusal::Unparsed(_))), "{e}");
    // nothing was written
    assert!(dropped(cache).await.is_empty());
    assert_fresh(db, cache).await;
});

db_test!(execute_touching_runs_what_cannot_be_parsed, |db, cache| {
    prepare(db, cache).await;
    on!(db, |c| c.execute_touching(diesel::sql_query("UPDATE articles SET views = 3"), &["articles"]).await).unwrap();
    let d = dropped(cache).await;
    assert_dropped(&d, &[View::AllArticles, View::CountPublished(1)], &[]);
    assert_fresh(db, cache).await;
});

db_test!(a_trailing_comment_cannot_hide_the_returning_clause, |db, cache| {
    prepare(db, cache).await;
    let n =
        on!(db, |c| diesel::sql_query("UPDATE articles SET category_id = 3 WHERE id = 1 -- move it").execute(c).await)
            .unwrap();
    assert_eq!(n, 1);
    let n = on!(db, |c| diesel::sql_query("DELETE FROM articles WHERE id = 2;").execute(c).await).unwrap();
    assert_eq!(n, 1);
    assert_fresh(db, cache).await;
});

db_test!(statement_counts_are_what_diesel_returns, |db, cache| {
    prepare(db, cache).await;
    let n = on!(db, |c| diesel::update(articles::table.filter(articles::id.gt(100)))
        .set(articles::views.eq(1))
        .execute(c)
        .await)
    .unwrap();
    assert_eq!(n, 0);
    let n = on!(db, |c| diesel::delete(articles::table.filter(articles::id.eq(100))).execute(c).await).unwrap();
    assert_eq!(n, 0);
    assert!(dropped(cache).await.is_empty(), "nothing changed, nothing dropped");
});

/// The keys matroska-seaorm gives the same table, key and values (entity
/// name = table name, canonical values), so one cache serves both.
#[test]
fn dependency_keys_are_matroska_seaorms() {
    use matroska::{params, Dep, Value};
    assert_eq!(matroska_diesel::pk_dep_of::<Article>(1), Dep::primary_key("articles", [Value::Int(1)]));
    assert_eq!(
        matroska_diesel::pk_dep_of::<ArticleTag>((7, 3)),
        Dep::primary_key("article_tags", [Value::Int(7), Value::Int(3)])
    );
    let link = ArticleTag { article_id: 7, tag_id: 3 };
    assert_eq!(matroska_diesel::pk_dep(&link), matroska_diesel::pk_dep_of::<ArticleTag>((7, 3)));
    let deps =
        matroska_diesel::list::<Article>().eq(articles::published, true).eq(articles::category_id, 2).deps().unwrap();
    assert_eq!(deps[0], Dep::condition("articles", params! { "published" => true, "category_id" => 2 }));
    assert_eq!(deps[1], Dep::invalidate_all("articles"));
    // loosely typed values meet typed ones, as in matroska-seaorm
    let loose = matroska_diesel::list_deps::<Article>(params! { "published" => 1, "category_id" => "2" }).unwrap();
    assert_eq!(loose, deps);
    assert_eq!(
        matroska_diesel::not_found::<Article>(9)[1],
        Dep::id("matroska-seaorm:unkeyed-insert", "articles"),
        "the same unkeyed-insert dependency"
    );
    // a list no scope describes is an error in development mode
    assert!(matroska_diesel::list::<Article>().eq(articles::views, 3).deps().is_err());
}
