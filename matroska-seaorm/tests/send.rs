//! Every public async fn of the crate returns a `Send` future, and the
//! connection types are `Send + Sync`, so they run on a multi-threaded
//! runtime and inside `tokio::spawn`. The check is done by the compiler; the
//! test only makes sure the checking function is built.
//!
//! Nothing here touches a database: `cargo test -p matroska-seaorm --test send`.

mod common;

use std::future::Future;

use common::*;
use matroska_seaorm::{CachedDatabase, CachedTransaction};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, EntityTrait, TransactionSession, TransactionTrait};

fn is_send<F: Future + Send>(_: F) {}
fn send_sync<T: Send + Sync>() {}

/// Builds (never polls) one future of every public async fn, on the
/// connection and on a transaction.
#[allow(dead_code)]
fn futures(db: &CachedDatabase, txn: &CachedTransaction, owned: CachedTransaction, am: article::ActiveModel) {
    is_send(am.clone().insert(db));
    is_send(am.clone().update(txn));
    is_send(article::Entity::find().all(db));
    is_send(article::Entity::find().stream(db));
    is_send(article::Entity::find().stream(txn));
    is_send(db.execute_unprepared("DELETE FROM article"));
    is_send(txn.execute_unprepared("DELETE FROM article"));
    is_send(db.begin());
    is_send(txn.begin());
    is_send(db.transaction(|t| Box::pin(async move { Ok::<_, DbErr>(t.depth()) })));
    is_send(txn.transaction(|t| Box::pin(async move { Ok::<_, DbErr>(t.depth()) })));
    is_send(db.flush());
    is_send(db.execute_touching(sea_orm::Statement::from_string(db.get_database_backend(), ""), &["article"]));
    is_send(db.migrate(|_| async { Ok::<_, DbErr>(()) }));
    is_send(owned.commit_with_report());
}

#[allow(dead_code)]
fn owned_commit(txn: CachedTransaction) {
    is_send(txn.commit());
}

#[test]
fn futures_are_send() {
    let f: fn(&CachedDatabase, &CachedTransaction, CachedTransaction, article::ActiveModel) = futures;
    let _ = f;
    send_sync::<CachedDatabase>();
    send_sync::<CachedTransaction>();
}
