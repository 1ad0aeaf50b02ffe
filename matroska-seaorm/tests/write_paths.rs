//! Every write API of SeaORM 2.0, written as plain SeaORM through a
//! `CachedDatabase`: afterwards no cached view differs from the database,
//! and the views the write did not touch are still cached (precision).
//!
//! ```text
//! cargo test -p matroska-seaorm --test write_paths
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-seaorm --test write_paths
//! DATABASE_URL=mysql://root@127.0.0.1:3306/test cargo test -p matroska-seaorm --test write_paths
//! ```

mod common;

use common::*;
use matroska_seaorm::{CachedDatabase, Refusal};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveValue::Set, DbBackend, IntoActiveModel, QuerySelect, StreamTrait, TransactionTrait};

/// Fails unless every view of `kept` is still cached.
async fn assert_kept(cache: &matroska::Cache, kept: &[View]) {
    let now = cached_views(cache).await;
    let lost: Vec<&View> = kept.iter().filter(|v| !now.contains(v)).collect();
    assert!(lost.is_empty(), "views dropped although the write did not touch them: {lost:?}");
}

/// Fails unless every view of `gone` was dropped.
async fn assert_dropped(cache: &matroska::Cache, gone: &[View]) {
    let now = cached_views(cache).await;
    let still: Vec<&View> = gone.iter().filter(|v| now.contains(v)).collect();
    assert!(still.is_empty(), "views still cached although the write changed them: {still:?}");
}

fn new_article(cat: i32, published: bool, author: i32, price: i32) -> article::ActiveModel {
    article::ActiveModel {
        title: Set("generics".into()),
        author_id: Set(author),
        category_id: Set(cat),
        published: Set(published),
        views: Set(0),
        price: Set(price),
        ..Default::default()
    }
}

/// The views an insert of article 4 into go (3), published, by Cy (3),
/// must drop, and some it must keep.
const INSERT_GONE: &[View] = &[
    View::Article(4),
    View::ArticleWithTags(4),
    View::ArticleWithComments(4),
    View::Published(3),
    View::CountPublished(3),
    View::AllPublished,
    View::AllArticles,
    View::Cheapest(3),
    View::AuthorWithArticles(3),
];
const INSERT_KEPT: &[View] = &[
    View::Article(1),
    View::Article(5),
    View::Published(1),
    View::Published(2),
    View::CountPublished(1),
    View::Cheapest(1),
    View::AuthorWithArticles(1),
    View::ArticleWithTags(1),
    View::Product(1),
];

db_test!(active_model_insert, |db, cache| {
    prepare(db, cache).await;
    new_article(3, true, 3, 5).insert(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(cache, INSERT_GONE).await;
    assert_kept(cache, INSERT_KEPT).await;
});

db_test!(entity_insert_exec, |db, cache| {
    prepare(db, cache).await;
    let r = article::Entity::insert(new_article(3, true, 3, 5)).exec(db).await.unwrap();
    assert_eq!(r.last_insert_id, 4);
    assert_fresh(db, cache).await;
    assert_dropped(cache, INSERT_GONE).await;
    assert_kept(cache, INSERT_KEPT).await;
});

db_test!(entity_insert_without_returning, |db, cache| {
    prepare(db, cache).await;
    article::Entity::insert(new_article(3, true, 3, 5)).exec_without_returning(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(cache, INSERT_GONE).await;
    // PostgreSQL does not tell the new key without RETURNING: the lists
    // stay precise (from the values), "not found" entries of the table drop
    let kept: Vec<View> = INSERT_KEPT
        .iter()
        .copied()
        .filter(|v| db.get_database_backend() != DbBackend::Postgres || *v != View::Article(5))
        .collect();
    assert_kept(cache, &kept).await;
});

db_test!(insert_many, |db, cache| {
    prepare(db, cache).await;
    article::Entity::insert_many([new_article(3, true, 3, 5), new_article(3, false, 3, 6)]).exec(db).await.unwrap();
    assert_fresh(db, cache).await;
    // on MySQL the new keys are unknown: "not found" views of the table drop
    assert_dropped(cache, INSERT_GONE).await;
    assert_kept(cache, &[View::Published(1), View::Published(2), View::CountPublished(1), View::Product(1)]).await;
    if db.get_database_backend() != DbBackend::MySql {
        let kept: Vec<View> = INSERT_KEPT.iter().copied().filter(|v| *v != View::Article(5)).collect();
        assert_kept(cache, &kept).await;
    }
});

db_test!(upsert_update_columns, |db, cache| {
    prepare(db, cache).await;
    // article 2 exists: the upsert moves it to python and publishes it
    let mut am = new_article(2, true, 2, 10);
    am.id = Set(2);
    let on_conflict = OnConflict::column(article::Column::Id)
        .update_columns([article::Column::CategoryId, article::Column::Published])
        .to_owned();
    article::Entity::insert(am).on_conflict(on_conflict).exec_without_returning(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(cache, &[View::Article(2), View::Published(2), View::AllPublished]).await;
    assert_kept(cache, &[View::Product(1), View::ProductWithReviews(1)]).await;
});

db_test!(upsert_do_nothing, |db, cache| {
    prepare(db, cache).await;
    let mut am = new_article(3, true, 3, 5);
    am.id = Set(1); // conflicts: nothing changes
    let r = article::Entity::insert(am).on_conflict_do_nothing().exec(db).await.unwrap();
    assert!(matches!(r, sea_orm::TryInsertResult::Conflicted));
    assert_fresh(db, cache).await;
    assert_kept(cache, &[View::Published(2), View::Product(1)]).await;
});

db_test!(active_model_update_watched_column, |db, cache| {
    prepare(db, cache).await;
    // publish the draft 2: it enters rust/published and the published list
    let a = article::Entity::find_by_id(2).one(db).await.unwrap().unwrap();
    let mut am = a.into_active_model();
    am.published = Set(true);
    am.update(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(cache, &[View::Article(2), View::Published(1), View::CountPublished(1), View::AllPublished]).await;
    assert_kept(cache, &[View::Published(2), View::CountPublished(2), View::Article(1), View::Product(1)]).await;
});

db_test!(active_model_save_moves_between_categories, |db, cache| {
    prepare(db, cache).await;
    let a = article::Entity::find_by_id(1).one(db).await.unwrap().unwrap();
    let mut am = a.into_active_model();
    am.category_id = Set(2);
    am.save(db).await.unwrap();
    assert_fresh(db, cache).await;
    // it leaves rust and enters python: both lists, both counts, both top-N
    assert_dropped(
        cache,
        &[
            View::Published(1),
            View::Published(2),
            View::CountPublished(1),
            View::CountPublished(2),
            View::Cheapest(1),
            View::Cheapest(2),
        ],
    )
    .await;
    assert_kept(cache, &[View::Published(3), View::CountPublished(3), View::Article(2), View::Product(1)]).await;
});

db_test!(update_of_an_unwatched_column_drops_only_the_row, |db, cache| {
    prepare(db, cache).await;
    let a = article::Entity::find_by_id(3).one(db).await.unwrap().unwrap();
    let mut am = a.into_active_model();
    am.views = Set(41);
    am.update(db).await.unwrap();
    assert_fresh(db, cache).await;
    // a count depends on the condition only: it stays
    assert_kept(cache, &[View::CountPublished(2), View::Published(1), View::Article(1), View::Cheapest(1)]).await;
    assert_dropped(cache, &[View::Article(3), View::Published(2), View::AllPublished]).await;
});

db_test!(update_without_returning, |db, cache| {
    prepare(db, cache).await;
    let a = article::Entity::find_by_id(1).one(db).await.unwrap().unwrap();
    let mut am = a.into_active_model();
    am.published = Set(false);
    am.update_without_returning(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(cache, &[View::Published(1), View::CountPublished(1)]).await;
    assert_kept(cache, &[View::Published(2), View::Product(1)]).await;
});

db_test!(entity_update_exec, |db, cache| {
    prepare(db, cache).await;
    let am = article::ActiveModel { id: Set(2), category_id: Set(3), ..Default::default() };
    article::Entity::update(am).exec(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(cache, &[View::Cheapest(1), View::Cheapest(3), View::Article(2)]).await;
    assert_kept(cache, &[View::Published(2), View::Product(1)]).await;
});

db_test!(update_many_with_a_parameter, |db, cache| {
    prepare(db, cache).await;
    // unpublish every article of Ann
    article::Entity::update_many()
        .col_expr(article::Column::Published, Expr::value(false))
        .filter(article::Column::AuthorId.eq(1))
        .exec(db)
        .await
        .unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(cache, &[View::Published(1), View::Published(2), View::CountPublished(1), View::CountPublished(2)])
        .await;
    assert_kept(cache, &[View::Article(2), View::Published(3), View::Product(1)]).await;
});

db_test!(update_many_with_an_expression_reorders_a_top_n, |db, cache| {
    prepare(db, cache).await;
    // raise the cheapest rust article above the other: the top-N order changes
    article::Entity::update_many()
        .col_expr(article::Column::Price, Expr::col(article::Column::Price).add(100))
        .filter(article::Column::Id.eq(2))
        .exec(db)
        .await
        .unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(cache, &[View::Cheapest(1)]).await;
    assert_kept(cache, &[View::Cheapest(2), View::CountPublished(1), View::Product(1)]).await;
});

db_test!(active_model_delete, |db, cache| {
    prepare(db, cache).await;
    let a = article::Entity::find_by_id(3).one(db).await.unwrap().unwrap();
    a.into_active_model().delete(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(
        cache,
        &[View::Published(2), View::CountPublished(2), View::AllArticles, View::AuthorWithArticles(1)],
    )
    .await;
    assert_kept(cache, &[View::Published(1), View::Article(1), View::Product(1)]).await;
});

db_test!(model_delete, |db, cache| {
    prepare(db, cache).await;
    let c = comment::Entity::find_by_id(1).one(db).await.unwrap().unwrap();
    c.delete(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(cache, &[View::ArticleWithComments(1)]).await;
    assert_kept(cache, &[View::Article(1), View::Published(1), View::ArticleWithComments(2)]).await;
});

db_test!(delete_by_id, |db, cache| {
    prepare(db, cache).await;
    article::Entity::delete_by_id(2).exec(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(cache, &[View::Article(2), View::AllArticles, View::Cheapest(1), View::AuthorWithArticles(2)]).await;
    assert_kept(cache, &[View::Published(2), View::Article(1), View::Product(1)]).await;
});

db_test!(delete_by_id_of_a_composite_key, |db, cache| {
    prepare(db, cache).await;
    article_tag::Entity::delete_by_id((1, 1)).exec(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(cache, &[View::ArticleWithTags(1)]).await;
    assert_kept(cache, &[View::Article(1), View::ArticleWithTags(2)]).await;
});

db_test!(delete_many, |db, cache| {
    prepare(db, cache).await;
    article::Entity::delete_many().filter(article::Column::Price.lt(25)).exec(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert_kept(cache, &[View::Article(1), View::Product(1)]).await;
});

db_test!(delete_many_with_returning, |db, cache| {
    prepare(db, cache).await;
    if db.get_database_backend() == DbBackend::MySql {
        return; // SeaORM refuses DELETE .. RETURNING on MySQL before sending anything
    }
    let gone =
        article::Entity::delete_many().filter(article::Column::AuthorId.eq(2)).exec_with_returning(db).await.unwrap();
    assert_eq!(gone.len(), 1);
    assert_fresh(db, cache).await;
    assert_dropped(cache, &[View::Article(2), View::AllArticles]).await;
    assert_kept(cache, &[View::Article(1), View::Published(2), View::Product(1)]).await;
});

db_test!(raw_sql_with_literals, |db, cache| {
    prepare(db, cache).await;
    let q = match db.get_database_backend() {
        DbBackend::MySql => "UPDATE `article` SET `category_id` = 3, `published` = TRUE WHERE `id` = 2",
        _ => "UPDATE article SET category_id = 3, published = TRUE WHERE id = 2",
    };
    db.execute_unprepared(q).await.unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(cache, &[View::Published(3), View::CountPublished(3), View::AllPublished]).await;
    assert_kept(cache, &[View::Published(2), View::Article(1), View::Product(1)]).await;
    db.execute_unprepared("DELETE FROM comment").await.unwrap();
    db.execute_unprepared("INSERT INTO review (product_id, stars) VALUES (2, 5)").await.unwrap();
    assert_fresh(db, cache).await;
    assert_kept(cache, &[View::Article(1), View::ProductWithReviews(3)]).await;
});

db_test!(raw_sql_through_execute_raw_and_query, |db, cache| {
    prepare(db, cache).await;
    let backend = db.get_database_backend();
    let (ph1, ph2) = if backend == DbBackend::Postgres { ("$1", "$2") } else { ("?", "?") };
    let column = if backend == DbBackend::MySql { "`priceCents`" } else { "\"priceCents\"" };
    let stmt = sea_orm::Statement::from_sql_and_values(
        backend,
        format!("UPDATE product SET {column} = {ph1} WHERE id = {ph2}"),
        [50.into(), 1.into()],
    );
    db.execute_raw(stmt).await.unwrap();
    assert_fresh(db, cache).await;
    assert_dropped(cache, &[View::CheapestInStock, View::Product(1)]).await;
    assert_kept(cache, &[View::Product(2), View::Article(1)]).await;
});

db_test!(statements_several_at_once_are_coarse, |db, cache| {
    prepare(db, cache).await;
    if db.get_database_backend() == DbBackend::MySql {
        return; // the MySQL driver sends one statement per call
    }
    db.execute_unprepared("UPDATE article SET views = 7 WHERE id = 1; DELETE FROM review WHERE id = 1").await.unwrap();
    assert_fresh(db, cache).await;
});

db_test!(unparseable_sql_is_refused_before_it_runs, |db, cache| {
    prepare(db, cache).await;
    let err = db.execute_unprepared("UPDATE article SET views = 7 WHERE id = 1 GARBLE GARBLE").await.unwrap_err();
    assert!(matches!(Refusal::of(&err), Some(Refusal::Unparsed(_))), "{err}");
    assert_eq!(db.write_stats().refused, 1);
    assert_fresh(db, cache).await;
    // the escape hatch: run it naming the tables it writes
    let backend = db.get_database_backend();
    let stmt = sea_orm::Statement::from_string(backend, "UPDATE article SET views = 7 WHERE id = 1");
    db.execute_touching(stmt, &["article"]).await.unwrap();
    assert_fresh(db, cache).await;
    assert_kept(cache, &[View::Product(1)]).await;
});

db_test!(transaction_control_as_sql_is_refused, |db, cache| {
    prepare(db, cache).await;
    for sql in ["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT s1"] {
        let err = db.execute_unprepared(sql).await.unwrap_err();
        assert!(matches!(Refusal::of(&err), Some(Refusal::TransactionControl(_))), "{sql}: {err}");
    }
});

db_test!(writes_to_a_table_without_cache_entity_are_coarse_for_it, |db, cache| {
    prepare(db, cache).await;
    audit::ActiveModel { what: Set("login".into()), ..Default::default() }.insert(db).await.unwrap();
    assert_fresh(db, cache).await;
    assert_kept(cache, &[View::Article(1), View::Product(1)]).await;
});

db_test!(a_write_sent_as_a_stream_is_invalidated, |db, cache| {
    prepare(db, cache).await;
    if db.get_database_backend() == DbBackend::MySql {
        return;
    }
    let backend = db.get_database_backend();
    let stmt = sea_orm::Statement::from_string(backend, "DELETE FROM review WHERE id = 1 RETURNING id");
    use futures_util::StreamExt;
    let rows: Vec<_> = db.stream_raw(stmt).await.unwrap().collect().await;
    assert_eq!(rows.len(), 1);
    assert_fresh(db, cache).await;
    assert_dropped(cache, &[View::ProductWithReviews(1)]).await;
});

db_test!(reads_of_every_kind_pass_through, |db, cache| {
    prepare(db, cache).await;
    use futures_util::StreamExt;
    let streamed = article::Entity::find().stream(db).await.unwrap().count().await;
    assert_eq!(streamed, 3);
    let paged = sea_orm::PaginatorTrait::paginate(article::Entity::find(), db, 2).num_items().await.unwrap();
    assert_eq!(paged, 3);
    let limited = article::Entity::find().limit(1).all(db).await.unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(db.write_stats().writes, 17, "seeding only: reads are not writes");
    assert_kept(cache, &all_views()).await;
});

db_test!(ids_and_models_are_what_plain_seaorm_returns, |db, cache| {
    let _ = cache;
    seed(db).await;
    let inserted = new_article(3, true, 3, 5).insert(db).await.unwrap();
    assert_eq!(inserted.id, 4);
    let txn_id = db
        .transaction::<_, i32, DbErr>(|txn| {
            Box::pin(async move { Ok(new_article(3, true, 3, 5).insert(txn).await?.id) })
        })
        .await
        .unwrap();
    assert_eq!(txn_id, 5);
    let _: &CachedDatabase = db;
});
