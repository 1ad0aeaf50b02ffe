//! Bulk writes, which SeaORM runs without `ActiveModelBehavior` hooks.
//!
//! `insert_many`, `update_many`, `delete_many`, `delete_by_id`,
//! `Entity::insert(..).exec`, `Entity::update(..).exec`, upserts and raw SQL
//! do not call hooks. Run them through these helpers (they use `RETURNING`,
//! so they need PostgreSQL, SQLite ≥ 3.35 or MariaDB), or invalidate yourself,
//! coarsely with [`invalidate_entity`]. Inside
//! [`transaction`](crate::transaction) their invalidations are flushed again
//! after the commit, like the hooks'.

use sea_orm::sea_query::Condition;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, QueryFilter, UpdateMany};

use crate::hooks::{invalidate, CacheEntity};
use crate::key::{entity_dep, entity_name, pk_dep};
use crate::Error;

fn row_deps<E: CacheEntity>(rows: &[E::Model]) -> Result<Vec<matroska::Dep>, Error> {
    let scopes = E::scopes();
    let mut deps = Vec::with_capacity(rows.len() * 2);
    for row in rows {
        deps.push(pk_dep(row));
        deps.extend(scopes.dependencies_for(row, None)?);
    }
    Ok(deps)
}

async fn finish<E: CacheEntity>(rows: &[E::Model]) -> Result<(), DbErr> {
    let entity = entity_name::<E>();
    let deps = row_deps::<E>(rows).map_err(Error::into_db_err)?;
    invalidate(entity, deps).await.map_err(|e| {
        tracing::error!(entity, error = %crate::error::report(&e), "bulk invalidation failed");
        e.into_db_err()
    })?;
    Ok(())
}

/// `insert_many(models).exec_with_returning(db)`, then invalidates the new
/// rows' keys and the lists they enter. Returns the inserted rows.
///
/// # Errors
/// The database's error, or a failed invalidation as `DbErr::Custom` (the rows
/// are inserted then, unless inside a transaction that you roll back).
pub async fn insert_many<A, C, I>(db: &C, models: I) -> Result<Vec<<A::Entity as EntityTrait>::Model>, DbErr>
where
    A: ActiveModelTrait + Send,
    A::Entity: CacheEntity,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    C: ConnectionTrait,
    I: IntoIterator<Item = A>,
{
    let rows = <A::Entity as EntityTrait>::insert_many(models).exec_with_returning(db).await?;
    finish::<A::Entity>(&rows).await?;
    Ok(rows)
}

/// Updates the rows of `E` matching `filter` with the column values `set`
/// puts on an `UpdateMany` (`|u| u.col_expr(..)`), and invalidates every
/// touched row's key and the lists it leaves and enters.
///
/// Runs two statements: a `SELECT` of the matching rows (their old scope
/// values) and the `UPDATE .. RETURNING` (their new ones). Run it inside
/// [`transaction`](crate::transaction) so no row changes between the two.
/// Returns the updated rows.
///
/// # Errors
/// As [`insert_many`].
pub async fn update_many<E, C, F>(db: &C, filter: Condition, set: F) -> Result<Vec<E::Model>, DbErr>
where
    E: CacheEntity,
    C: ConnectionTrait,
    F: FnOnce(UpdateMany<E>) -> UpdateMany<E>,
{
    let old = E::find().filter(filter.clone()).all(db).await?;
    let new = set(E::update_many().filter(filter)).exec_with_returning(db).await?;
    let mut rows = old;
    rows.extend(new.iter().cloned());
    finish::<E>(&rows).await?;
    Ok(new)
}

/// Deletes the rows of `E` matching `filter` (`DELETE .. RETURNING`) and
/// invalidates their keys and the lists they leave. Returns the deleted rows.
///
/// # Errors
/// As [`insert_many`].
pub async fn delete_many<E, C>(db: &C, filter: Condition) -> Result<Vec<E::Model>, DbErr>
where
    E: CacheEntity,
    C: ConnectionTrait,
{
    let rows = E::delete_many().filter(filter).exec_with_returning(db).await?;
    finish::<E>(&rows).await?;
    Ok(rows)
}

/// The coarse switch: drops every cached list of `E` (every scope condition
/// carries it) and every entry whose dependencies were gathered with
/// [`dependencies`](crate::dependencies) from rows of `E`. Entries that only
/// carry a hand-made key dependency ([`pk_dep_of`](crate::pk_dep_of)) stay.
/// Use it after raw SQL or any write the helpers above do not cover.
///
/// # Errors
/// No cache registered, or the cache failed.
pub async fn invalidate_entity<E: EntityTrait>() -> Result<u64, Error> {
    invalidate(entity_name::<E>(), vec![entity_dep::<E>()]).await
}
