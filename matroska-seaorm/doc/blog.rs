// A small blog schema for the crate's doc examples, `include!`d by them (hidden
// lines). Not part of the library.

/// Authors.
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

/// Articles, cached in lists by `published` and `category_id`.
pub mod article {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "article")]
    #[matroska(scope(fields("published", "category_id")))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub title: String,
        pub author_id: i32,
        pub category_id: i32,
        pub published: bool,
        #[sea_orm(belongs_to, from = "author_id", to = "id")]
        pub author: BelongsTo<super::author::Entity>,
    }
}

/// A composite key.
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
    }
}

/// An SQLite database in memory with the schema, an author (id 1) and an
/// article (id 1, category 2, published). Its inserts run no hooks: the
/// examples register their cache afterwards.
pub async fn blog() -> Result<sea_orm::DatabaseConnection, sea_orm::DbErr> {
    use sea_orm::{ActiveValue::Set, EntityTrait};

    let db = sea_orm::Database::connect("sqlite::memory:").await?;
    db.get_schema_builder()
        .register(author::Entity)
        .register(article::Entity)
        .register(article_tag::Entity)
        .apply(&db)
        .await?;
    author::Entity::insert(author::ActiveModel { name: Set("Ann".into()), ..Default::default() }).exec(&db).await?;
    article::Entity::insert(article::ActiveModel {
        title: Set("ownership".into()),
        author_id: Set(1),
        category_id: Set(2),
        published: Set(true),
        ..Default::default()
    })
    .exec(&db)
    .await?;
    Ok(db)
}
