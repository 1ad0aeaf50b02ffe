//! Key dependencies, relation walks and changed columns.
//!
//! SQLite in memory: `cargo test -p matroska-seaorm`.
//! PostgreSQL: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-seaorm`.

mod common;

use common::*;
use matroska::Dep;
use matroska_seaorm::{changed_columns, dependencies, depth, pk_dep, pk_dep_of, Depth, Walk};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, IntoActiveModel};

#[derive(Walk)]
struct ArticlePage {
    article: article::Model,
    author: Option<author::Model>,
    comments: Vec<comment::ModelEx>,
    #[matroska(skip)]
    #[allow(dead_code)]
    title: String,
}

fn pk(table: &str, id: i32) -> Dep {
    Dep::primary_key(table, [id])
}

#[test]
fn keys_agree_across_model_active_model_and_value() {
    let m =
        article::Model { id: 7, title: "t".into(), author_id: 1, category_id: 2, published: true, views: 0, price: 1 };
    let am: article::ActiveModel = m.clone().into_active_model();
    assert_eq!(pk_dep(&m), pk("article", 7));
    assert_eq!(matroska_seaorm::active_pk_dep(&am), Some(pk("article", 7)));
    assert_eq!(pk_dep_of::<article::Entity>(7), pk("article", 7));
    assert_eq!(matroska_seaorm::active_pk_dep(&<article::ActiveModel as Default>::default()), None);
    // composite keys keep their order and differ from their swap
    let at = article_tag::Model { article_id: 1, tag_id: 2 };
    assert_eq!(pk_dep(&at), Dep::primary_key("article_tag", [1, 2]));
    assert_eq!(pk_dep_of::<article_tag::Entity>((1, 2)), pk_dep(&at));
    assert_ne!(pk_dep_of::<article_tag::Entity>((2, 1)), pk_dep(&at));
    // typed: a string key is its value, unquoted, and differs from a number
    assert_eq!(
        matroska_seaorm::to_value(&sea_orm::Value::String(Some("it's".into()))).unwrap(),
        matroska::Value::Str("it's".into())
    );
}

#[test]
fn changed_columns_are_the_set_ones() {
    let m =
        article::Model { id: 7, title: "t".into(), author_id: 1, category_id: 2, published: true, views: 0, price: 1 };
    let mut am: article::ActiveModel = m.into();
    assert!(changed_columns(&am).is_empty());
    am.views = Set(1);
    am.published = Set(false);
    assert_eq!(changed_columns(&am), ["published", "views"]);
    let new = article::ActiveModel { title: Set("x".into()), ..Default::default() };
    assert_eq!(changed_columns(&new), ["title"]);
}

#[test]
fn depth_macro_and_builder() {
    assert_eq!(
        depth! { author: 1, tags: 0, comments: { author: 1 } },
        Depth::new().include("author").exclude("tags").nested("comments", Depth::new().include("author"))
    );
    let typed = depth!(article::ModelEx => { author: 1, comments: { author: 1 } });
    assert_eq!(typed, depth! { author: 1, comments: { author: 1 } });
}

#[tokio::test]
async fn walks_loaded_relations_once_each() {
    let tdb = TestDb::new("walks").await;
    let db = &tdb.db;
    async {
        let ann = author::ActiveModel { name: Set("Ann".into()), ..Default::default() }.insert(db).await.unwrap();
        let bob = author::ActiveModel { name: Set("Bob".into()), ..Default::default() }.insert(db).await.unwrap();
        let cat = category::ActiveModel { name: Set("rust".into()), ..Default::default() }.insert(db).await.unwrap();
        let mut ids = Vec::new();
        for (title, who) in [("a", ann.id), ("b", ann.id)] {
            let a = article::ActiveModel {
                title: Set(title.into()),
                author_id: Set(who),
                category_id: Set(cat.id),
                published: Set(true),
                views: Set(0),
                price: Set(1),
                ..Default::default()
            }
            .insert(db)
            .await
            .unwrap();
            ids.push(a.id);
        }
        let c = comment::ActiveModel {
            body: Set("hi".into()),
            article_id: Set(ids[0]),
            author_id: Set(bob.id),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();

        let loaded =
            article::Entity::load().with(author::Entity).with((comment::Entity, author::Entity)).all(db).await.unwrap();
        let deps = dependencies(&loaded, depth! { author: 1, comments: { author: 1 } }).unwrap();
        // each article's comments are a relation: who its children are
        let comments_of = |id: i32| Dep::condition("comment", matroska::params! { "article_id" => id });
        let expected = [
            pk("article", ids[0]),
            Dep::invalidate_all("article"),
            pk("author", ann.id),
            Dep::invalidate_all("author"),
            comments_of(ids[0]),
            Dep::invalidate_all("comment"),
            pk("comment", c.id),
            pk("author", bob.id),
            pk("article", ids[1]),
            comments_of(ids[1]),
        ];
        assert_eq!(deps, expected, "Ann reached twice gives one dependency");

        // 0 excludes, unloaded relations give nothing
        let deps = dependencies(&loaded, depth! { author: 0, comments: 1 }).unwrap();
        assert!(!deps.contains(&pk("author", ann.id)));
        assert!(deps.contains(&pk("comment", c.id)));
        let bare = article::Entity::load().all(db).await.unwrap();
        let deps = dependencies(&bare, depth! { author: 1, comments: { author: 1 } }).unwrap();
        assert_eq!(deps.len(), 3, "two articles and the switch: {deps:?}");

        // unknown relation names are a clear error at run time
        let err = dependencies(&loaded, depth! { writer: 1 }).unwrap_err();
        assert!(err.to_string().contains("no relation \"writer\""), "{err}");
        assert!(err.to_string().contains("author"), "{err}");

        // find_also_related / find_with_related
        let pairs = article::Entity::find().find_also_related(author::Entity).all(db).await.unwrap();
        let deps = dependencies(&pairs, depth! {}).unwrap();
        assert!(deps.contains(&pk("author", ann.id)) && deps.contains(&pk("article", ids[1])));
        let deps = dependencies(&pairs, depth! { author: 0 }).unwrap();
        assert!(!deps.contains(&pk("author", ann.id)));
        let groups = author::Entity::find().find_with_related(article::Entity).all(db).await.unwrap();
        let deps = dependencies(&groups, depth! {}).unwrap();
        assert!(deps.contains(&pk("author", bob.id)) && deps.contains(&pk("article", ids[0])));

        // a user struct, walked by field name
        let page = ArticlePage {
            article: article::Entity::find_by_id(ids[0]).one(db).await.unwrap().unwrap(),
            author: Some(ann.clone()),
            comments: comment::Entity::load().with(author::Entity).all(db).await.unwrap(),
            title: "page".into(),
        };
        let deps = dependencies(&page, depth! { article: 1, author: 1, comments: { author: 1 } }).unwrap();
        assert_eq!(deps.len(), 7, "{deps:?}");
        assert!(deps.contains(&pk("author", bob.id)));
        let deps = dependencies(&page, depth!(ArticlePage => { article: 1 })).unwrap();
        assert_eq!(deps, [pk("article", ids[0]), Dep::invalidate_all("article")]);
        let err = dependencies(&page, depth! { title: 1 }).unwrap_err();
        assert!(matches!(err, matroska_seaorm::Error::UnknownRelation { .. }), "{err}");
    }
    .await;
    tdb.drop_db().await;
}
