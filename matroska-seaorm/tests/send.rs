//! Every public async fn of the crate returns a `Send` future, so it can run
//! on a multi-threaded runtime and inside `tokio::spawn`. The check is done by
//! the compiler; the test only makes sure the checking function is built.
//!
//! Nothing here touches a database: `cargo test -p matroska-seaorm --test send`.

mod common;

use std::future::Future;

use common::*;
use matroska_seaorm::{bulk, Registration};
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr};

fn is_send<F: Future + Send>(_: F) {}

/// Builds (never polls) one future of every public async fn, on a pool and on
/// a transaction.
#[allow(dead_code)]
fn futures(db: &DatabaseConnection, txn: &DatabaseTransaction, am: article::ActiveModel, m: article::Model) {
    // hooks
    is_send(matroska_seaorm::before_save(am.clone(), db, false));
    is_send(matroska_seaorm::before_save(am.clone(), txn, true));
    is_send(matroska_seaorm::after_save(m.clone(), db, false));
    is_send(matroska_seaorm::after_save(m, txn, true));
    is_send(matroska_seaorm::before_delete(am.clone(), db));
    is_send(matroska_seaorm::before_delete(am.clone(), txn));
    is_send(matroska_seaorm::after_delete(am.clone(), db));
    is_send(matroska_seaorm::after_delete(am.clone(), txn));

    // transactions, outermost and nested
    is_send(matroska_seaorm::transaction(db, |t| Box::pin(async move { Ok::<_, DbErr>(t.is_mock_connection()) })));
    is_send(matroska_seaorm::transaction(txn, |t| Box::pin(async move { Ok::<_, DbErr>(t.is_mock_connection()) })));

    // bulk helpers
    is_send(bulk::insert_many(db, [am.clone()]));
    is_send(bulk::insert_many(txn, [am]));
    is_send(bulk::update_many::<article::Entity, _, _>(db, Condition::all(), |u| {
        u.col_expr(article::Column::Views, Expr::value(0))
    }));
    is_send(bulk::update_many::<article::Entity, _, _>(txn, Condition::all(), |u| u));
    is_send(bulk::delete_many::<article::Entity, _>(db, Condition::all()));
    is_send(bulk::delete_many::<article::Entity, _>(txn, Condition::all()));
    is_send(bulk::invalidate_entity::<article::Entity>());

    // registration
    is_send(Registration::new(new_cache()).scope(async {}));
    is_send(Registration::new(new_cache()).scope(bulk::invalidate_entity::<author::Entity>()));
}

#[test]
fn futures_are_send() {
    let f: fn(&DatabaseConnection, &DatabaseTransaction, article::ActiveModel, article::Model) = futures;
    let _ = f;
}
