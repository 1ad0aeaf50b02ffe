//! The blog schema and per-test databases shared by the integration tests.
//!
//! Tests run on SQLite in memory by default, and on PostgreSQL when
//! `DATABASE_URL` is set (`DATABASE_URL=postgres://postgres@127.0.0.1:5432/test
//! cargo test -p matroska-seaorm`): each test then gets a database of its own,
//! dropped at the end.

#![allow(dead_code, missing_docs, unreachable_pub)]

use std::time::Duration;

use matroska::{Cache, MemoryBackend};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};
use sea_orm_migration::MigratorTrait;

pub const TTL: Duration = Duration::from_secs(300);

pub mod author {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "author")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        #[sea_orm(has_many)]
        pub articles: HasMany<super::article::Entity>,
        #[sea_orm(has_many)]
        pub comments: HasMany<super::comment::Entity>,
    }
}

pub mod category {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "category")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        #[sea_orm(has_many)]
        pub articles: HasMany<super::article::Entity>,
    }
}

pub mod article {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "article")]
    #[matroska(scope(fields("published", "category_id")))]
    #[matroska(scope(fields("published")))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub title: String,
        pub author_id: i32,
        pub category_id: i32,
        pub published: bool,
        pub views: i32,
        #[sea_orm(belongs_to, from = "author_id", to = "id")]
        pub author: BelongsTo<super::author::Entity>,
        #[sea_orm(belongs_to, from = "category_id", to = "id")]
        pub category: BelongsTo<super::category::Entity>,
        #[sea_orm(has_many)]
        pub comments: HasMany<super::comment::Entity>,
        #[sea_orm(has_many, via = "article_tag")]
        pub tags: HasMany<super::tag::Entity>,
    }
}

pub mod comment {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "comment")]
    #[matroska(scope(fields("article_id")))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub body: String,
        pub article_id: i32,
        pub author_id: i32,
        #[sea_orm(belongs_to, from = "article_id", to = "id")]
        pub article: BelongsTo<super::article::Entity>,
        #[sea_orm(belongs_to, from = "author_id", to = "id")]
        pub author: BelongsTo<super::author::Entity>,
    }
}

pub mod tag {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "tag")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        #[sea_orm(has_many, via = "article_tag")]
        pub articles: HasMany<super::article::Entity>,
    }
}

pub mod article_tag {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity, Serialize, Deserialize)]
    #[sea_orm(table_name = "article_tag")]
    #[matroska(scope(fields("tag_id")))]
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

pub mod migration {
    use sea_orm::Schema;
    use sea_orm_migration::prelude::*;

    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(CreateBlog)]
        }
    }

    pub struct CreateBlog;

    impl MigrationName for CreateBlog {
        fn name(&self) -> &str {
            "m0001_create_blog"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for CreateBlog {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let schema = Schema::new(manager.get_database_backend());
            manager.create_table(schema.create_table_from_entity(super::author::Entity)).await?;
            manager.create_table(schema.create_table_from_entity(super::category::Entity)).await?;
            manager.create_table(schema.create_table_from_entity(super::article::Entity)).await?;
            manager.create_table(schema.create_table_from_entity(super::comment::Entity)).await?;
            manager.create_table(schema.create_table_from_entity(super::tag::Entity)).await?;
            manager.create_table(schema.create_table_from_entity(super::article_tag::Entity)).await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for t in ["article_tag", "tag", "comment", "article", "category", "author"] {
                manager.drop_table(Table::drop().table(Alias::new(t)).to_owned()).await?;
            }
            Ok(())
        }
    }
}

/// A database of one test: SQLite in memory, or a fresh PostgreSQL database.
pub struct TestDb {
    pub db: DatabaseConnection,
    pg: Option<(DatabaseConnection, String)>,
}

fn with_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let base = match base.rsplit_once('/') {
        Some((head, _)) if head.contains("//") && head.len() > head.find("//").unwrap_or(0) + 2 => head,
        _ => base,
    };
    format!("{base}/{name}{query}")
}

impl TestDb {
    /// A migrated, empty blog database for the test `name` (unique per binary).
    pub async fn new(name: &str) -> TestDb {
        Self::with_connections(name, None).await
    }

    /// As [`new`](Self::new), with a pool of `max` connections (SQLite then
    /// uses a temporary file so several connections see the same data).
    pub async fn with_connections(name: &str, max: Option<u32>) -> TestDb {
        let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
        match url {
            Some(url) if url.starts_with("postgres") => {
                let admin = Database::connect(url.as_str()).await.expect("connect to DATABASE_URL");
                let dbname = format!("mseaorm_{}_{}", env!("CARGO_CRATE_NAME"), name);
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{dbname}\" WITH (FORCE)"))
                    .await
                    .expect("drop old test database");
                admin.execute_unprepared(&format!("CREATE DATABASE \"{dbname}\"")).await.expect("create test database");
                let mut opts = ConnectOptions::new(with_db_name(&url, &dbname));
                opts.max_connections(max.unwrap_or(4)).sqlx_logging(false);
                let db = Database::connect(opts).await.expect("connect to the test database");
                migration::Migrator::up(&db, None).await.expect("migrate");
                TestDb { db, pg: Some((admin, dbname)) }
            }
            _ => {
                let url = match max {
                    Some(_) => {
                        let path = std::env::temp_dir().join(format!(
                            "mseaorm-{}-{}-{}.db",
                            env!("CARGO_CRATE_NAME"),
                            name,
                            std::process::id()
                        ));
                        let _ = std::fs::remove_file(&path);
                        format!("sqlite://{}?mode=rwc", path.display())
                    }
                    None => "sqlite::memory:".to_owned(),
                };
                let mut opts = ConnectOptions::new(url);
                opts.max_connections(max.unwrap_or(1)).sqlx_logging(false);
                let db = Database::connect(opts).await.expect("connect to SQLite");
                if max.is_some() {
                    db.execute_unprepared("PRAGMA journal_mode=WAL").await.expect("WAL");
                }
                migration::Migrator::up(&db, None).await.expect("migrate");
                TestDb { db, pg: None }
            }
        }
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Closes the pool and drops the PostgreSQL database.
    pub async fn drop_db(self) {
        let _ = self.db.close().await;
        if let Some((admin, name)) = self.pg {
            let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
        }
    }
}

pub fn new_cache() -> Cache {
    Cache::builder().backend(MemoryBackend::new()).build().unwrap()
}

/// Which of `keys` are cached, in order.
pub async fn present(cache: &Cache, keys: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for k in keys {
        if cache.has(k).await.expect("has") {
            out.push((*k).to_owned());
        }
    }
    out
}
