//! The process-wide registration (its own test binary: registration is global).
//!
//! SQLite in memory: `cargo test -p matroska-seaorm`.
//! PostgreSQL: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p matroska-seaorm`.

mod common;

use common::*;
use matroska_seaorm::pk_dep;
use sea_orm::entity::prelude::*;
use sea_orm::ActiveValue::Set;

#[tokio::test]
async fn register_then_unregister() {
    let tdb = TestDb::new("registry").await;
    let db = &tdb.db;
    let cache = new_cache();
    matroska_seaorm::register(cache.clone());
    let ann = author::ActiveModel { name: Set("Ann".into()), ..Default::default() }.insert(db).await.unwrap();
    cache.put("ann", &ann, [pk_dep(&ann)], TTL).await.unwrap();
    let mut a: author::ActiveModel = ann.clone().into();
    a.name = Set("Anne".into());
    let ann = a.update(db).await.unwrap();
    assert!(!cache.has("ann").await.unwrap(), "the global registration invalidated");

    assert!(matroska_seaorm::unregister());
    let mut a: author::ActiveModel = ann.into();
    a.name = Set("Annie".into());
    let err = a.update(db).await.unwrap_err();
    assert!(err.to_string().contains("matroska_seaorm::register"), "{err}");
    let row = author::Entity::find_by_id(1).one(db).await.unwrap().unwrap();
    assert_eq!(row.name, "Anne", "nothing written without a cache");
    tdb.drop_db().await;
}
