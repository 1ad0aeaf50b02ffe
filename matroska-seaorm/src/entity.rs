//! What the connection knows about each cached entity: its table, columns,
//! primary key, scopes and foreign keys, and how to turn a row into the
//! dependencies it invalidates.
//!
//! Every entity with [`derive(CacheEntity)`](crate::CacheEntity) registers
//! itself (at link time, through `inventory`), so a [`CachedDatabase`]
//! knows every cached entity of the program without a list kept by hand.
//!
//! [`CachedDatabase`]: crate::CachedDatabase

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use matroska::{Dep, Params, Scopes};
use sea_orm::{
    EntityTrait, IdenStatic, Iterable, ModelTrait, PrimaryKeyToColumn, QueryResult, RelationTrait, Value as SeaValue,
};

use crate::key::{entity_name, pk_dep};
use crate::value::to_value;
use crate::Error;

/// An entity whose writes a [`CachedDatabase`](crate::CachedDatabase)
/// follows precisely: its rows' keys, the lists (scopes) they enter and
/// leave, and the relations they join and leave.
///
/// Implemented by [`derive(CacheEntity)`](crate::CacheEntity) on the
/// entity's `Model`.
pub trait CacheEntity: EntityTrait {
    /// The entity's scopes: which lists of it are cached, and which columns
    /// move a row between them. Built once. Parameter names are the
    /// database column names (`Column::as_str()`).
    fn scopes() -> &'static Scopes<Self::Model>;

    /// When every scope's parameters are plain column values (as
    /// `#[matroska(scope(fields(..)))]` declares them): the columns of each.
    /// The connection then learns the lists a new row enters from an
    /// insert's values, without reading the row back. `None` (the default)
    /// when some extractor computes its parameters.
    fn scope_columns() -> Option<Vec<Vec<&'static str>>> {
        None
    }
}

/// The dependency every insert into `table` whose new key is not known
/// (a multi-row insert without `RETURNING` on MySQL) invalidates; cached
/// "not found" lookups carry it ([`not_found`](crate::not_found)).
pub(crate) fn unkeyed_insert(table: &str) -> Dep {
    Dep::id("matroska-seaorm:unkeyed-insert", table)
}

/// One column of an entity.
#[derive(Clone, Debug)]
pub(crate) struct ColumnInfo {
    pub(crate) name: &'static str,
    pub(crate) ty: sea_orm::sea_query::ColumnType,
}

/// A foreign key this entity holds (a `belongs_to` relation): its columns.
#[derive(Clone, Debug)]
pub(crate) struct ForeignKey {
    pub(crate) columns: Vec<String>,
}

/// A foreign key of this entity declared with an action that writes its
/// rows when the referenced row is deleted or its key changes
/// (`on_delete`/`on_update` = `Cascade`, `SetNull` or `SetDefault`).
#[derive(Clone, Debug)]
pub(crate) struct Reference {
    /// The referenced table.
    pub(crate) table: String,
    /// The referenced columns.
    pub(crate) columns: Vec<String>,
    /// This entity's columns.
    pub(crate) own_columns: Vec<String>,
    /// A delete of the referenced row writes (deletes or updates) rows here.
    pub(crate) on_delete: Option<Action>,
    /// A key change of the referenced row updates (or deletes) rows here.
    pub(crate) on_update: Option<Action>,
}

/// What a referential action does to the referencing rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// `CASCADE`: deleted (on delete) or their key columns updated.
    Cascade,
    /// `SET NULL` / `SET DEFAULT`: their key columns updated.
    Set,
}

/// The type-erased facts about one entity.
pub(crate) struct EntityInfo {
    pub(crate) table: &'static str,
    pub(crate) schema: Option<String>,
    pub(crate) columns: Vec<ColumnInfo>,
    /// Positions (in `columns`) of the primary key, in key order.
    pub(crate) pk: Vec<usize>,
    /// Columns a scope watches.
    pub(crate) watched: BTreeSet<String>,
    pub(crate) foreign_keys: Vec<ForeignKey>,
    /// The foreign keys with actions that write this entity's rows.
    pub(crate) references: Vec<Reference>,
    /// Whether any list of this entity depends on a row's values (a scope
    /// with parameters, or a foreign key): then a delete must read the row.
    pub(crate) value_conditions: bool,
    /// The columns of each scope, when they are plain column values.
    pub(crate) scope_columns: Option<Vec<Vec<&'static str>>>,
    ops: Box<dyn RowOps>,
}

impl fmt::Debug for EntityInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityInfo")
            .field("table", &self.table)
            .field("pk", &self.pk.iter().map(|&i| self.columns[i].name).collect::<Vec<_>>())
            .field("watched", &self.watched)
            .field("foreign_keys", &self.foreign_keys)
            .finish_non_exhaustive()
    }
}

impl EntityInfo {
    pub(crate) fn of<E: CacheEntity>() -> Self {
        use sea_orm::ColumnTrait;
        let columns: Vec<ColumnInfo> =
            E::Column::iter().map(|c| ColumnInfo { name: c.as_str(), ty: c.def().get_column_type().clone() }).collect();
        let pk = E::PrimaryKey::iter()
            .map(|k| k.into_column().as_str())
            .filter_map(|name| columns.iter().position(|c| c.name == name))
            .collect();
        let scopes = E::scopes();
        let watched: BTreeSet<String> = scopes.watched_fields().into_iter().map(str::to_owned).collect();
        let foreign_keys = foreign_keys::<E>();
        let value_conditions = scopes.describes_values() || !foreign_keys.is_empty();
        EntityInfo {
            table: entity_name::<E>(),
            schema: E::default().schema_name().map(str::to_owned),
            columns,
            pk,
            watched,
            foreign_keys,
            references: references::<E>(),
            value_conditions,
            scope_columns: E::scope_columns(),
            ops: Box::new(Ops::<E>(std::marker::PhantomData)),
        }
    }

    /// The position of column `name` (exact database name).
    pub(crate) fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name).or_else(|| {
            // unquoted identifiers in raw SQL: case-insensitive
            self.columns.iter().position(|c| c.name.eq_ignore_ascii_case(name))
        })
    }

    /// Whether a change of column `name` can move a row between lists or
    /// relations (a watched column, a foreign key or the key itself).
    pub(crate) fn moves_rows(&self, name: &str) -> bool {
        let Some(i) = self.column(name) else { return true };
        let name = self.columns[i].name;
        self.watched.contains(name)
            || self.pk.contains(&i)
            || self.foreign_keys.iter().any(|fk| fk.columns.iter().any(|c| c == name))
    }

    /// A row from a result with every column (`SELECT *`, `RETURNING` all).
    pub(crate) fn row(&self, r: &QueryResult) -> Result<Box<dyn Row>, sea_orm::DbErr> {
        self.ops.row(r)
    }

    /// The key of a result row that holds the key columns (`RETURNING id`).
    pub(crate) fn pk_of(&self, r: &QueryResult) -> Result<Vec<SeaValue>, sea_orm::DbErr> {
        self.ops.pk_of(r)
    }

    /// The key an auto-increment id stands for (single-column integer keys).
    pub(crate) fn pk_from_id(&self, id: u64) -> Option<Vec<SeaValue>> {
        self.ops.pk_from_id(id)
    }

    /// `SELECT` of the rows with these keys.
    pub(crate) fn select_by_keys(&self, backend: sea_orm::DbBackend, keys: &[Vec<SeaValue>]) -> sea_orm::Statement {
        self.ops.select_by_keys(backend, keys)
    }

    /// The primary-key dependency of the row with these key values.
    pub(crate) fn pk_dep(&self, values: &[SeaValue]) -> Dep {
        Dep::primary_key(self.table, values.iter().map(crate::value::key_value))
    }

    /// The dependencies of an insert or delete whose rows need not be read:
    /// the keys and the list of all rows (only valid when
    /// `!self.value_conditions`).
    pub(crate) fn membership_without_rows(&self) -> Vec<Dep> {
        vec![Dep::condition(self.table, Params::new())]
    }

    /// Every cached list and relation of this entity (the coarse switch).
    pub(crate) fn everything(&self) -> Dep {
        Dep::invalidate_all(self.table)
    }

    /// The lists and relations a new row enters, from its column values
    /// alone (`value(column)` gives each needed column's canonical value, or
    /// `None` if unknown). `None` when some needed value is unknown or a
    /// scope computes its parameters.
    pub(crate) fn memberships_from_values(&self, value: impl Fn(&str) -> Option<matroska::Value>) -> Option<Vec<Dep>> {
        let scopes = self.scope_columns.as_ref()?;
        let mut deps = vec![Dep::condition(self.table, Params::new())];
        for set in scopes {
            let mut params = Params::new();
            for c in set {
                params.insert(*c, value(c)?);
            }
            deps.push(Dep::condition(self.table, self.ops.normalize(params)));
        }
        for fk in &self.foreign_keys {
            let mut params = Params::new();
            let mut null = false;
            for c in &fk.columns {
                let v = value(c)?;
                null |= v == matroska::Value::Null;
                params.insert(c.clone(), v);
            }
            if !null {
                deps.push(Dep::condition(self.table, params));
            }
        }
        Some(deps)
    }
}

/// A row of some entity, type-erased.
pub(crate) trait Row: Send {
    /// Sets column `i` (a position in [`EntityInfo::columns`]).
    fn set(&mut self, i: usize, v: SeaValue) -> Result<(), sea_orm::DbErr>;
    /// The primary-key dependency.
    fn pk_dep(&self) -> Dep;
    /// The key's values.
    fn pk_values(&self) -> Vec<SeaValue>;
    /// The lists and relations the row is in. With `changed`, only those
    /// whose columns are among `changed`.
    fn memberships(&self, changed: Option<&BTreeSet<String>>) -> Result<Vec<Dep>, Error>;
    fn clone_row(&self) -> Box<dyn Row>;
}

trait RowOps: Send + Sync {
    /// Scope parameters as the entity's conditions carry them
    /// ([`Scopes::normalize`]).
    fn normalize(&self, params: Params) -> Params;
    fn row(&self, r: &QueryResult) -> Result<Box<dyn Row>, sea_orm::DbErr>;
    fn pk_of(&self, r: &QueryResult) -> Result<Vec<SeaValue>, sea_orm::DbErr>;
    fn pk_from_id(&self, id: u64) -> Option<Vec<SeaValue>>;
    fn select_by_keys(&self, backend: sea_orm::DbBackend, keys: &[Vec<SeaValue>]) -> sea_orm::Statement;
}

struct Ops<E>(std::marker::PhantomData<fn() -> E>);

impl<E: CacheEntity> RowOps for Ops<E> {
    fn normalize(&self, params: Params) -> Params {
        E::scopes().normalize(params)
    }

    fn row(&self, r: &QueryResult) -> Result<Box<dyn Row>, sea_orm::DbErr> {
        let m = <E::Model as sea_orm::FromQueryResult>::from_query_result(r, "")?;
        Ok(Box::new(TypedRow::<E>(m)))
    }

    fn pk_of(&self, r: &QueryResult) -> Result<Vec<SeaValue>, sea_orm::DbErr> {
        use sea_orm::sea_query::IntoValueTuple;
        use sea_orm::{PrimaryKeyTrait, TryGetableMany};
        let cols: Vec<String> = E::PrimaryKey::iter().map(|k| k.into_column().as_str().to_owned()).collect();
        let key = <<E::PrimaryKey as PrimaryKeyTrait>::ValueType as TryGetableMany>::try_get_many(r, "", &cols)
            .map_err(sea_orm::DbErr::from)?;
        Ok(key.into_value_tuple().into_iter().collect())
    }

    fn pk_from_id(&self, id: u64) -> Option<Vec<SeaValue>> {
        use sea_orm::sea_query::IntoValueTuple;
        use sea_orm::{PrimaryKeyTrait, TryFromU64};
        if E::PrimaryKey::iter().count() != 1 {
            return None;
        }
        let key = <<E::PrimaryKey as PrimaryKeyTrait>::ValueType as TryFromU64>::try_from_u64(id).ok()?;
        Some(key.into_value_tuple().into_iter().collect())
    }

    fn select_by_keys(&self, backend: sea_orm::DbBackend, keys: &[Vec<SeaValue>]) -> sea_orm::Statement {
        use sea_orm::sea_query::{Condition, Expr, ExprTrait};
        use sea_orm::{QueryFilter, QueryTrait};
        let mut any = Condition::any();
        for key in keys {
            let mut all = Condition::all();
            for (k, v) in E::PrimaryKey::iter().zip(key) {
                all = all.add(Expr::col((E::default(), k.into_column())).eq(v.clone()));
            }
            any = any.add(all);
        }
        E::find().filter(any).build(backend)
    }
}

struct TypedRow<E: EntityTrait>(E::Model);

impl<E: CacheEntity> Row for TypedRow<E> {
    fn set(&mut self, i: usize, v: SeaValue) -> Result<(), sea_orm::DbErr> {
        let column = E::Column::iter()
            .nth(i)
            .ok_or_else(|| sea_orm::DbErr::Custom(format!("matroska-seaorm: no column {i}")))?;
        self.0.try_set(column, v)
    }

    fn pk_dep(&self) -> Dep {
        pk_dep(&self.0)
    }

    fn pk_values(&self) -> Vec<SeaValue> {
        E::PrimaryKey::iter().map(|k| self.0.get(k.into_column())).collect()
    }

    fn memberships(&self, changed: Option<&BTreeSet<String>>) -> Result<Vec<Dep>, Error> {
        let watched: Option<Vec<&str>> = changed.map(|c| c.iter().map(String::as_str).collect());
        let mut deps = E::scopes().dependencies_for(&self.0, watched.as_deref())?;
        deps.extend(foreign_key_conditions(&self.0, changed)?);
        Ok(deps)
    }

    fn clone_row(&self) -> Box<dyn Row> {
        Box::new(TypedRow::<E>(self.0.clone()))
    }
}

/// The `belongs_to` relations of `E`: the foreign keys it holds.
fn foreign_keys<E: EntityTrait>() -> Vec<ForeignKey> {
    E::Relation::iter()
        .map(|r| r.def())
        .filter(|d| !d.is_owner)
        .map(|d| ForeignKey { columns: d.from_col.iter().map(|c| c.to_string()).collect() })
        .collect()
}

/// The `belongs_to` relations of `E` with writing referential actions.
fn references<E: EntityTrait>() -> Vec<Reference> {
    use sea_orm::sea_query::{ForeignKeyAction, TableRef};
    let action = |a: &Option<ForeignKeyAction>| match a {
        Some(ForeignKeyAction::Cascade) => Some(Action::Cascade),
        Some(ForeignKeyAction::SetNull | ForeignKeyAction::SetDefault) => Some(Action::Set),
        _ => None,
    };
    E::Relation::iter()
        .map(|r| r.def())
        .filter(|d| !d.is_owner)
        .filter_map(|d| {
            let (on_delete, on_update) = (action(&d.on_delete), action(&d.on_update));
            if on_delete.is_none() && on_update.is_none() {
                return None;
            }
            let TableRef::Table(name, _) = &d.to_tbl else { return None };
            Some(Reference {
                table: name.1.to_string(),
                columns: d.to_col.iter().map(|c| c.to_string()).collect(),
                own_columns: d.from_col.iter().map(|c| c.to_string()).collect(),
                on_delete,
                on_update,
            })
        })
        .collect()
}

/// The registered entities whose rows a write to `table` may change through
/// referential actions, with the reference.
pub(crate) fn referencing(table: &str) -> Vec<(Arc<EntityInfo>, Reference)> {
    type ByTable = HashMap<String, Vec<(Arc<EntityInfo>, Reference)>>;
    static BY_TABLE: LazyLock<ByTable> = LazyLock::new(|| {
        let mut map = ByTable::new();
        for info in registry().values().flatten() {
            for r in &info.references {
                map.entry(r.table.to_lowercase()).or_default().push((Arc::clone(info), r.clone()));
            }
        }
        map
    });
    BY_TABLE.get(&table.to_lowercase()).cloned().unwrap_or_default()
}

/// The relation memberships of a row: for each foreign key it holds, the
/// condition `(table, {fk columns: values})` that a cached parent with its
/// children depends on (see [`crate::walk`]). A key with a `NULL` part
/// points nowhere and gives nothing.
pub(crate) fn foreign_key_conditions<M: ModelTrait>(
    model: &M,
    changed: Option<&BTreeSet<String>>,
) -> Result<Vec<Dep>, Error> {
    let table = entity_name::<M::Entity>();
    let mut deps = Vec::new();
    for fk in foreign_keys::<M::Entity>() {
        if let Some(changed) = changed {
            if !fk.columns.iter().any(|c| changed.contains(c)) {
                continue;
            }
        }
        let mut params = Params::new();
        let mut null = false;
        for name in &fk.columns {
            let Ok(column) = <M::Entity as EntityTrait>::Column::from_str(name) else {
                return Err(Error::UnknownColumn { table, column: name.clone() });
            };
            let v = to_value(&model.get(column))?;
            null |= v == matroska::Value::Null;
            params.insert(name.clone(), v);
        }
        if !null {
            deps.push(Dep::condition(table, params));
        }
    }
    Ok(deps)
}

/// A registration submitted by `derive(CacheEntity)`.
#[doc(hidden)]
pub struct Registered(pub fn() -> EntityInfoHandle);

/// An opaque handle on an entity's facts, for the derive's registration.
#[doc(hidden)]
pub struct EntityInfoHandle(pub(crate) Arc<EntityInfo>);

impl EntityInfoHandle {
    /// The facts of `E`.
    pub fn of<E: CacheEntity>() -> Self {
        EntityInfoHandle(Arc::new(EntityInfo::of::<E>()))
    }
}

inventory::collect!(Registered);

/// Every registered entity, by table name (several when schemas differ).
pub(crate) fn registry() -> &'static HashMap<String, Vec<Arc<EntityInfo>>> {
    static REGISTRY: LazyLock<HashMap<String, Vec<Arc<EntityInfo>>>> = LazyLock::new(|| {
        let mut map: HashMap<String, Vec<Arc<EntityInfo>>> = HashMap::new();
        for r in inventory::iter::<Registered> {
            let info = (r.0)().0;
            let list = map.entry(info.table.to_owned()).or_default();
            if !list.iter().any(|i| i.schema == info.schema) {
                list.push(info);
            }
        }
        map
    });
    &REGISTRY
}

/// The registered entity a statement's table name denotes, if exactly one.
pub(crate) fn lookup(name: &matroska_sql::TableName) -> Option<Arc<EntityInfo>> {
    let reg = registry();
    let candidates: Vec<&Arc<EntityInfo>> = match reg.get(&name.table) {
        Some(list) => list.iter().collect(),
        // names are matched without regard to case, quoted or not
        None => reg.iter().filter(|(t, _)| t.eq_ignore_ascii_case(&name.table)).flat_map(|(_, l)| l.iter()).collect(),
    };
    let matching: Vec<&Arc<EntityInfo>> =
        candidates.into_iter().filter(|i| name.matches(i.table, i.schema.as_deref())).collect();
    match matching.as_slice() {
        [one] => Some(Arc::clone(one)),
        _ => None,
    }
}

/// Every registered entity's coarse switch (for statements that cannot be
/// attributed).
pub(crate) fn every_entity() -> Vec<Dep> {
    registry().values().flatten().map(|i| i.everything()).collect()
}
