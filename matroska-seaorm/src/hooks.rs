//! Automatic invalidation on save and delete, through `ActiveModelBehavior`.

use std::any::type_name;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use matroska::{Dep, Scopes};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IdenStatic, Iterable, PrimaryKeyToColumn,
    QueryFilter,
};
use tracing::{debug, error, warn};

use crate::key::{active_pk_dep, entity_name, pk_dep};
use crate::registry::{current, UnmanagedTransactions};
use crate::{txn, Error};

/// An entity whose saves and deletes invalidate the cache by themselves.
///
/// Implemented by [`derive(CacheEntity)`](crate::CacheEntity) on the entity's
/// `Model`, which also implements `ActiveModelBehavior` with the hooks of this
/// module.
pub trait CacheEntity: EntityTrait {
    /// The entity's scopes: which lists of it are cached, and which columns
    /// move a row between them. Built once.
    fn scopes() -> &'static Scopes<Self::Model>;
}

/// The dependencies of a cached list of `E` filtered by `params` (the
/// condition and `E`'s switch).
///
/// # Errors
/// [`Error::Scope`] if no scope of `E` describes exactly these parameters.
pub fn list_deps<E: CacheEntity>(params: matroska::Params) -> Result<Vec<Dep>, Error> {
    Ok(E::scopes().condition(params)?)
}

/// The names (database column names) of the columns of `am` in state `Set`:
/// what a save will write.
pub fn changed_columns<A: ActiveModelTrait>(am: &A) -> Vec<&'static str> {
    <A::Entity as EntityTrait>::Column::iter().filter(|c| am.get(*c).is_set()).map(|c| c.as_str()).collect()
}

/// Which task a hook runs in: the carrier from `before_*` to `after_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TaskKey {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

fn task_key() -> TaskKey {
    tokio::task::try_id().map_or_else(|| TaskKey::Thread(std::thread::current().id()), TaskKey::Task)
}

/// What `before_*` learnt for `after_*`: the old row's dependencies and the
/// watched columns being changed.
struct Pending {
    deps: Vec<Dep>,
    watched: Vec<&'static str>,
    at: Instant,
}

/// Entries left by writes that failed between the two hooks expire after this.
const PENDING_TTL: Duration = Duration::from_secs(600);

static PENDING: LazyLock<Mutex<HashMap<(TaskKey, Dep), Pending>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn stash(pk: Dep, deps: Vec<Dep>, watched: Vec<&'static str>) {
    let mut map = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    map.retain(|_, p| now.duration_since(p.at) < PENDING_TTL);
    let entry =
        map.entry((task_key(), pk)).or_insert_with(|| Pending { deps: Vec::new(), watched: Vec::new(), at: now });
    entry.deps.extend(deps);
    entry.watched.extend(watched);
    entry.at = now;
}

fn unstash(pk: &Dep) -> Option<Pending> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner()).remove(&(task_key(), pk.clone()))
}

/// Checks the registration and the connection before a write.
fn guard<E: EntityTrait, C>() -> Result<(), Error> {
    let entity = entity_name::<E>();
    let reg = current().ok_or(Error::NotRegistered { entity })?;
    let connection = type_name::<C>();
    if !txn::active() && connection.contains("DatabaseTransaction") {
        match reg.unmanaged {
            UnmanagedTransactions::Error => return Err(Error::UnmanagedTransaction { entity, connection }),
            UnmanagedTransactions::Warn => warn!(
                entity,
                connection,
                "write inside a transaction not opened by matroska_seaorm::transaction: \
                 the cache is invalidated before the commit only"
            ),
        }
    }
    Ok(())
}

fn fail(entity: &'static str, op: &'static str, e: Error) -> DbErr {
    error!(entity, op, error = %crate::error::report(&e), "matroska-seaorm hook failed");
    e.into_db_err()
}

/// Invalidates `deps` now and, inside [`transaction`](crate::transaction),
/// again after the commit. Used by the hooks and the bulk helpers.
pub(crate) async fn invalidate(entity: &'static str, deps: Vec<Dep>) -> Result<u64, Error> {
    if deps.is_empty() {
        return Ok(0);
    }
    let reg = current().ok_or(Error::NotRegistered { entity })?;
    txn::collect(&deps);
    let dropped = reg.cache.invalidate(deps).await.map_err(Error::Cache)?;
    debug!(entity, dropped, "invalidated");
    Ok(dropped)
}

async fn reread<A, C>(am: &A, db: &C) -> Result<Option<<A::Entity as EntityTrait>::Model>, DbErr>
where
    A: ActiveModelTrait,
    C: ConnectionTrait,
{
    let Some(key) = am.get_primary_key_value() else {
        return Ok(None);
    };
    let mut q = <A::Entity as EntityTrait>::find();
    for (k, v) in <A::Entity as EntityTrait>::PrimaryKey::iter().zip(key) {
        q = q.filter(k.into_column().eq(v));
    }
    q.one(db).await
}

/// The `before_save` hook: call it from your own `ActiveModelBehavior`.
///
/// Fails (before any SQL) if no cache is registered, or on an unmanaged
/// transaction ([`UnmanagedTransactions`]). On an update that sets a column a
/// scope watches, re-reads the row by key on `db` to learn the lists it
/// leaves; otherwise runs no query.
///
/// # Errors
/// The reasons above, as `DbErr::Custom`, or the re-read's `DbErr`.
pub async fn before_save<A, C>(am: A, db: &C, insert: bool) -> Result<A, DbErr>
where
    A: ActiveModelTrait + Send,
    A::Entity: CacheEntity,
    C: ConnectionTrait,
{
    let entity = entity_name::<A::Entity>();
    guard::<A::Entity, C>().map_err(|e| fail(entity, "save", e))?;
    if insert {
        return Ok(am);
    }
    let scopes = <A::Entity as CacheEntity>::scopes();
    let watched: Vec<&'static str> = changed_columns(&am).into_iter().filter(|c| scopes.watches(c)).collect();
    if watched.is_empty() {
        return Ok(am);
    }
    let Some(pk) = active_pk_dep(&am) else {
        return Ok(am);
    };
    if let Some(old) = reread(&am, db).await? {
        let deps = scopes.dependencies_for(&old, Some(&watched)).map_err(|e| fail(entity, "save", e.into()))?;
        stash(pk, deps, watched);
    }
    Ok(am)
}

/// The `after_save` hook: invalidates the row's key and, for an insert, the
/// lists it enters; for an update, the lists of the changed watched columns,
/// for the old values (from [`before_save`]) and the new ones.
///
/// # Errors
/// No cache registered, a scope error or a failed invalidation, as
/// `DbErr::Custom` (also traced).
pub async fn after_save<M, C>(model: M, _db: &C, insert: bool) -> Result<M, DbErr>
where
    M: sea_orm::ModelTrait + Send + 'static,
    M::Entity: CacheEntity<Model = M>,
    C: ConnectionTrait,
{
    let entity = entity_name::<M::Entity>();
    let scopes = <M::Entity as CacheEntity>::scopes();
    let pk = pk_dep(&model);
    let mut deps = vec![pk.clone()];
    let scope_deps = if insert {
        scopes.dependencies_for(&model, None)
    } else if let Some(pending) = unstash(&pk) {
        deps.extend(pending.deps);
        scopes.dependencies_for(&model, Some(&pending.watched))
    } else {
        Ok(Vec::new())
    };
    deps.extend(scope_deps.map_err(|e| fail(entity, "save", e.into()))?);
    invalidate(entity, deps).await.map_err(|e| fail(entity, "save", e))?;
    Ok(model)
}

/// The `before_delete` hook: checks the registration and connection, then
/// re-reads the row by key (only if the entity has scopes) to learn the lists
/// it leaves.
///
/// # Errors
/// As [`before_save`].
pub async fn before_delete<A, C>(am: A, db: &C) -> Result<A, DbErr>
where
    A: ActiveModelTrait + Send,
    A::Entity: CacheEntity,
    C: ConnectionTrait,
{
    let entity = entity_name::<A::Entity>();
    guard::<A::Entity, C>().map_err(|e| fail(entity, "delete", e))?;
    let scopes = <A::Entity as CacheEntity>::scopes();
    let Some(pk) = active_pk_dep(&am) else {
        return Ok(am);
    };
    if scopes.watched_fields().is_empty() {
        return Ok(am);
    }
    if let Some(row) = reread(&am, db).await? {
        let deps = scopes.dependencies_for(&row, None).map_err(|e| fail(entity, "delete", e.into()))?;
        stash(pk, deps, Vec::new());
    }
    Ok(am)
}

/// The `after_delete` hook: invalidates the row's key and the lists it was in.
///
/// # Errors
/// As [`after_save`].
pub async fn after_delete<A, C>(am: A, _db: &C) -> Result<A, DbErr>
where
    A: ActiveModelTrait + Send,
    A::Entity: CacheEntity,
    C: ConnectionTrait,
{
    let entity = entity_name::<A::Entity>();
    let Some(pk) = active_pk_dep(&am) else {
        return Ok(am);
    };
    let mut deps = vec![pk.clone()];
    if let Some(pending) = unstash(&pk) {
        deps.extend(pending.deps);
    }
    invalidate(entity, deps).await.map_err(|e| fail(entity, "delete", e))?;
    Ok(am)
}
