// A small blog schema for the crate's doc examples, `include!`d by them (hidden
// lines). Not part of the library.

/// Authors, with their articles.
pub mod author {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "author")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        #[sea_orm(has_many)]
        pub articles: HasMany<super::article::Entity>,
    }
}

/// Articles, cached in lists by `published` and `category_id`, and in
/// top-N lists of a category by `price`.
pub mod article {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "article")]
    #[matroska(scope(fields("published", "category_id")))]
    #[matroska(scope(fields("category_id"), watch("price")))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub title: String,
        pub author_id: i32,
        pub category_id: i32,
        pub published: bool,
        pub price: i32,
        #[sea_orm(belongs_to, from = "author_id", to = "id")]
        pub author: BelongsTo<super::author::Entity>,
        #[sea_orm(has_many, via = "article_tag")]
        pub tags: HasMany<super::tag::Entity>,
    }
}

/// Tags.
pub mod tag {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "tag")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        #[sea_orm(has_many, via = "article_tag")]
        pub articles: HasMany<super::article::Entity>,
    }
}

/// Which article has which tag: a composite key.
pub mod article_tag {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity)]
    #[sea_orm(table_name = "article_tag")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub article_id: i32,
        #[sea_orm(primary_key, auto_increment = false)]
        pub tag_id: i32,
        #[sea_orm(belongs_to, from = "article_id", to = "id")]
        pub article: BelongsTo<super::article::Entity>,
        #[sea_orm(belongs_to, from = "tag_id", to = "id")]
        pub tag: BelongsTo<super::tag::Entity>,
    }
}

/// An SQLite database in memory with the schema, an author (id 1), an
/// article (id 1, category 2, published, price 10) and a tag (id 1) on it.
pub async fn blog() -> Result<sea_orm::DatabaseConnection, sea_orm::DbErr> {
    use sea_orm::{ActiveValue::Set, EntityTrait};

    let db = sea_orm::Database::connect("sqlite::memory:").await?;
    db.get_schema_builder()
        .register(author::Entity)
        .register(article::Entity)
        .register(tag::Entity)
        .register(article_tag::Entity)
        .apply(&db)
        .await?;
    author::Entity::insert(author::ActiveModel { name: Set("Ann".into()), ..Default::default() }).exec(&db).await?;
    article::Entity::insert(article::ActiveModel {
        title: Set("ownership".into()),
        author_id: Set(1),
        category_id: Set(2),
        published: Set(true),
        price: Set(10),
        ..Default::default()
    })
    .exec(&db)
    .await?;
    tag::Entity::insert(tag::ActiveModel { name: Set("rust".into()), ..Default::default() }).exec(&db).await?;
    article_tag::Entity::insert(article_tag::ActiveModel { article_id: Set(1), tag_id: Set(1) }).exec(&db).await?;
    Ok(db)
}
