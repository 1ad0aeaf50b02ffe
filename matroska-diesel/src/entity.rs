//! What the connection knows about each cached model: its table, the
//! columns that matter to the cache (key, scope fields, foreign keys) and
//! their kinds, and how a row's values become the dependencies it
//! invalidates.
//!
//! Every model with [`derive(CacheModel)`](crate::CacheModel) registers
//! itself (at link time, through `inventory`), so a
//! [`CachedConnection`](crate::CachedConnection) knows every cached table
//! of the program without a list kept by hand.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use matroska::{Dep, Mode, Params, Scopes, Value};

use crate::value::{coerce, Kind};
use crate::Error;

/// A Diesel model whose table a [`CachedConnection`](crate::CachedConnection)
/// follows precisely: its rows' keys, the lists (scopes) they enter and
/// leave, and the relations (`belongs_to`) they join and leave.
///
/// Implemented by [`derive(CacheModel)`](crate::CacheModel).
pub trait CacheModel: Sized + 'static {
    /// The model's table (`#[diesel(table_name = ..)]`).
    type Table: diesel::Table;

    /// The table's name in SQL (the name dependencies use).
    fn table_name() -> &'static str;

    /// The facts the connection needs (built once).
    fn info() -> &'static ModelInfo;

    /// The primary key's values, in key order.
    fn key(&self) -> Vec<Value>;
}

/// The dependency every insert into `table` whose new key is not known
/// invalidates; cached "not found" lookups carry it
/// ([`not_found`](crate::not_found)). The same dependency as
/// matroska-seaorm's.
pub(crate) fn unkeyed_insert(table: &str) -> Dep {
    Dep::id("matroska-seaorm:unkeyed-insert", table)
}

/// One column of a model that matters to the cache.
#[derive(Clone, Debug)]
pub(crate) struct ColumnInfo {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
}

/// A foreign key the model holds (`#[diesel(belongs_to(Parent))]`).
#[derive(Clone, Debug)]
pub(crate) struct ForeignKey {
    /// Position of the column in [`ModelInfo::columns`].
    pub(crate) column: usize,
    /// The parent's table.
    pub(crate) parent: &'static str,
}

/// What a referential action declared on a foreign key does to the
/// referencing rows when the referenced row is deleted or its key changes.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `CASCADE`: deleted (on delete) or their foreign key updated (on update).
    Cascade,
    /// `SET NULL` / `SET DEFAULT`: their foreign key updated.
    Set,
}

/// A foreign key declared with referential actions
/// (`#[matroska(belongs_to(Parent, on_delete = "cascade"))]`): the database
/// writes this model's rows when it writes the parent's.
#[derive(Clone, Debug)]
pub(crate) struct Reference {
    /// This model's foreign-key column.
    pub(crate) column: &'static str,
    /// The parent's table.
    pub(crate) parent: &'static str,
    pub(crate) on_delete: Option<Action>,
    pub(crate) on_update: Option<Action>,
}

/// The values of one row, by position in [`ModelInfo::columns`] (`None`
/// where the row did not have the column).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ColumnRow(pub(crate) Vec<Option<Value>>);

/// The facts about one model the connection needs, built by
/// [`derive(CacheModel)`](crate::CacheModel).
pub struct ModelInfo {
    pub(crate) table: &'static str,
    pub(crate) schema: Option<&'static str>,
    pub(crate) columns: Vec<ColumnInfo>,
    /// Positions of the primary key, in key order.
    pub(crate) pk: Vec<usize>,
    pub(crate) foreign_keys: Vec<ForeignKey>,
    /// Foreign keys with referential actions.
    pub(crate) references: Vec<Reference>,
    /// Columns whose change can move a row between lists or relations.
    moving: BTreeSet<&'static str>,
    pub(crate) scopes: Scopes<ColumnRow>,
}

impl std::fmt::Debug for ModelInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelInfo")
            .field("table", &self.table)
            .field("columns", &self.columns.iter().map(|c| c.name).collect::<Vec<_>>())
            .field("pk", &self.pk)
            .field("foreign_keys", &self.foreign_keys)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ModelInfo`] (used by the derive).
#[doc(hidden)]
#[derive(Debug)]
pub struct ModelInfoBuilder {
    table: &'static str,
    schema: Option<&'static str>,
    columns: Vec<ColumnInfo>,
    pk: Vec<&'static str>,
    scopes: Vec<(Vec<&'static str>, Vec<&'static str>)>,
    foreign_keys: Vec<(&'static str, &'static str)>,
    references: Vec<Reference>,
    collated: Vec<&'static str>,
}

impl ModelInfoBuilder {
    /// A model of table `table` (in `schema`).
    pub fn new(table: &'static str, schema: Option<&'static str>) -> Self {
        ModelInfoBuilder {
            table,
            schema,
            columns: Vec::new(),
            pk: Vec::new(),
            scopes: Vec::new(),
            foreign_keys: Vec::new(),
            references: Vec::new(),
            collated: Vec::new(),
        }
    }

    /// A column that matters to the cache, with its kind.
    pub fn column(mut self, name: &'static str, kind: Kind) -> Self {
        if !self.columns.iter().any(|c| c.name == name) {
            self.columns.push(ColumnInfo { name, kind });
        }
        self
    }

    /// The primary key's columns, in key order.
    pub fn primary_key(mut self, columns: &[&'static str]) -> Self {
        self.pk = columns.to_vec();
        self
    }

    /// A scope: lists filtered by `fields`, whose order or cut also depends
    /// on `watch`.
    pub fn scope(mut self, fields: &[&'static str], watch: &[&'static str]) -> Self {
        self.scopes.push((fields.to_vec(), watch.to_vec()));
        self
    }

    /// A foreign key `column` into `parent`'s table.
    pub fn foreign_key(mut self, column: &'static str, parent: &'static str) -> Self {
        self.foreign_keys.push((column, parent));
        self
    }

    /// Referential actions of the foreign key `column` into `parent`'s table:
    /// what the database does to this model's rows when the parent row is
    /// deleted (`on_delete`) or its key changes (`on_update`).
    pub fn reference(
        mut self,
        column: &'static str,
        parent: &'static str,
        on_delete: Option<Action>,
        on_update: Option<Action>,
    ) -> Self {
        if on_delete.is_some() || on_update.is_some() {
            self.references.push(Reference { column, parent, on_delete, on_update });
        }
        self
    }

    /// Scope fields whose values the database compares by a collation the
    /// cache does not model ([`Scopes::collated`]).
    pub fn collated(mut self, columns: &[&'static str]) -> Self {
        self.collated.extend_from_slice(columns);
        self
    }

    /// The facts.
    pub fn build(self) -> ModelInfo {
        let position = |name: &str| self.columns.iter().position(|c| c.name == name);
        let pk: Vec<usize> = self.pk.iter().filter_map(|c| position(c)).collect();
        let foreign_keys: Vec<ForeignKey> = self
            .foreign_keys
            .iter()
            .filter_map(|(c, parent)| Some(ForeignKey { column: position(c)?, parent }))
            .collect();
        let scope_specs: Vec<(Vec<usize>, Vec<&'static str>)> = self
            .scopes
            .iter()
            .map(|(fields, watch)| (fields.iter().filter_map(|c| position(c)).collect(), watch.clone()))
            .collect();
        let mut moving: BTreeSet<&'static str> = BTreeSet::new();
        moving.extend(pk.iter().map(|&i| self.columns[i].name));
        moving.extend(foreign_keys.iter().map(|fk| self.columns[fk.column].name));
        for (fields, watch) in &scope_specs {
            moving.extend(fields.iter().map(|&i| self.columns[i].name));
            moving.extend(watch.iter().copied());
        }
        let mut scopes: Scopes<ColumnRow> = Scopes::new(self.table, Mode::default())
            .collated(self.collated.iter().copied())
            .describes(Vec::<String>::new(), |_: &ColumnRow| Some(Params::new()));
        for (fields, watch) in &scope_specs {
            let names: Vec<&'static str> = fields.iter().map(|&i| self.columns[i].name).collect();
            let mut watching: Vec<&'static str> = names.clone();
            watching.extend(watch.iter().copied());
            let fields = fields.clone();
            let cols = names.clone();
            scopes = scopes.describes_watching(names, watching, move |row: &ColumnRow| {
                let mut params = Params::new();
                for (&i, name) in fields.iter().zip(&cols) {
                    match row.0.get(i).cloned().flatten() {
                        Some(v) => params.insert(*name, v),
                        None => return Err(format!("column {name} was not read")),
                    }
                }
                Ok(Some(params))
            });
        }
        ModelInfo {
            table: self.table,
            schema: self.schema,
            columns: self.columns,
            pk,
            foreign_keys,
            references: self.references,
            moving,
            scopes,
        }
    }
}

impl ModelInfo {
    /// The table.
    pub fn table(&self) -> &'static str {
        self.table
    }

    /// The position of column `name` (exact, or case-insensitive for
    /// unquoted identifiers in raw SQL).
    pub(crate) fn column(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .or_else(|| self.columns.iter().position(|c| c.name.eq_ignore_ascii_case(name)))
    }

    /// Whether a change of column `name` can move a row between lists or
    /// relations (a scope field or watched column, a foreign key, the key).
    pub(crate) fn moves_rows(&self, name: &str) -> bool {
        self.moving.contains(name) || self.moving.iter().any(|m| m.eq_ignore_ascii_case(name))
    }

    /// The canonical value of `v` read from column `i`.
    pub(crate) fn canonical(&self, i: usize, v: Value) -> Result<Value, Error> {
        let c = &self.columns[i];
        coerce(self.table, c.name, c.kind, v)
    }

    /// The primary-key dependency of a row, if it has every key column.
    pub(crate) fn row_pk_dep(&self, row: &ColumnRow) -> Option<Dep> {
        let key: Option<Vec<Value>> = self.pk.iter().map(|&i| row.0.get(i).cloned().flatten()).collect();
        Some(Dep::primary_key(self.table, key?))
    }

    /// Every cached list and relation of this table (the coarse switch).
    pub(crate) fn everything(&self) -> Dep {
        Dep::invalidate_all(self.table)
    }

    /// The dependencies of a row: its key, the lists (scopes) it is in and
    /// the relations it belongs to. With `changed`, only the lists and
    /// relations whose columns changed.
    pub(crate) fn row_deps(&self, row: &ColumnRow, changed: Option<&BTreeSet<String>>) -> Result<Vec<Dep>, Error> {
        let mut deps = Vec::new();
        match self.row_pk_dep(row) {
            Some(d) => deps.push(d),
            None => deps.push(self.everything()),
        }
        let watched: Option<Vec<&str>> = changed.map(|c| c.iter().map(String::as_str).collect());
        deps.extend(self.scopes.dependencies_for(row, watched.as_deref())?);
        for fk in &self.foreign_keys {
            let name = self.columns[fk.column].name;
            if let Some(changed) = changed {
                if !changed.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                    continue;
                }
            }
            match row.0.get(fk.column).cloned().flatten() {
                Some(Value::Null) => {}
                Some(v) => deps.push(Dep::condition(self.table, Params::new().with(name, v))),
                None => deps.push(self.everything()),
            }
        }
        Ok(deps)
    }

    /// The columns a write must read back: the key, scope fields, foreign
    /// keys.
    pub(crate) fn needed(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|c| c.name)
    }
}

/// A registration submitted by `derive(CacheModel)`.
#[doc(hidden)]
pub struct Registered(pub fn() -> &'static ModelInfo);

inventory::collect!(Registered);

/// Every registered model, by table name (several when schemas differ).
pub(crate) fn registry() -> &'static HashMap<&'static str, Vec<&'static ModelInfo>> {
    static REGISTRY: LazyLock<HashMap<&'static str, Vec<&'static ModelInfo>>> = LazyLock::new(|| {
        let mut map: HashMap<&'static str, Vec<&'static ModelInfo>> = HashMap::new();
        for r in inventory::iter::<Registered> {
            let info = (r.0)();
            let list = map.entry(info.table).or_default();
            // two models of one table (a full row and a summary): the one
            // that knows more columns wins
            match list.iter_mut().find(|i| i.schema == info.schema) {
                Some(existing) if existing.columns.len() < info.columns.len() => *existing = info,
                Some(_) => {}
                None => list.push(info),
            }
        }
        map
    });
    &REGISTRY
}

/// The registered model a statement's table name denotes, if exactly one.
pub(crate) fn lookup(name: &matroska_sql::TableName) -> Option<&'static ModelInfo> {
    let reg = registry();
    let candidates: Vec<&'static ModelInfo> = match reg.get(name.table.as_str()) {
        Some(list) => list.clone(),
        // names are matched without regard to case, quoted or not (SQLite
        // ignores the case of quoted names; a write matched to one table
        // too many only invalidates more)
        None => reg
            .iter()
            .filter(|(t, _)| t.eq_ignore_ascii_case(&name.table))
            .flat_map(|(_, l)| l.iter().copied())
            .collect(),
    };
    let matching: Vec<&'static ModelInfo> =
        candidates.into_iter().filter(|i| name.matches(i.table, i.schema)).collect();
    match matching.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// The registered models whose rows a write to `table` may change through
/// declared referential actions, with the reference.
pub(crate) fn referencing(table: &str) -> Vec<(&'static ModelInfo, &'static Reference)> {
    type ByTable = HashMap<String, Vec<(&'static ModelInfo, &'static Reference)>>;
    static BY_TABLE: LazyLock<ByTable> = LazyLock::new(|| {
        let mut map = ByTable::new();
        for info in registry().values().flatten() {
            for r in &info.references {
                map.entry(r.parent.to_lowercase()).or_default().push((*info, r));
            }
        }
        map
    });
    BY_TABLE.get(&table.to_lowercase()).cloned().unwrap_or_default()
}

/// The key columns of the registered model of `table`, if one.
pub(crate) fn key_columns(table: &str) -> Option<Vec<&'static str>> {
    let info = registry().get(table).and_then(|l| l.first())?;
    Some(info.pk.iter().map(|&i| info.columns[i].name).collect())
}

/// Every registered model's coarse switch (for statements that cannot be
/// attributed).
pub(crate) fn every_model() -> Vec<Dep> {
    registry().values().flatten().flat_map(|i| [i.everything(), unkeyed_insert(i.table)]).collect()
}

/// The relation memberships a parent's children in `child_table` depend
/// on: for each foreign key of a model of `child_table` into `parent`'s
/// table, the condition `(child_table, {fk: the parent's key})`, and the
/// child table's switch.
pub(crate) fn children_in(parent_table: &str, parent_key: &[Value], child_table: &str) -> Vec<Dep> {
    let mut deps = Vec::new();
    let Some(children) = registry().get(child_table) else { return deps };
    for child in children {
        for fk in child.foreign_keys.iter().filter(|fk| fk.parent == parent_table) {
            if let [key] = parent_key {
                if *key != Value::Null {
                    let name = child.columns[fk.column].name;
                    deps.push(Dep::condition(child.table, Params::new().with(name, key.clone())));
                    deps.push(Dep::invalidate_all(child.table));
                }
            }
        }
    }
    deps
}

/// The SQL name of a Diesel table type (its `table!` name, or `sql_name`).
#[doc(hidden)]
pub fn table_name_of<T>() -> (&'static str, Option<&'static str>)
where
    T: diesel::internal::table_macro::StaticQueryFragment,
    T::Component: TableComponent,
{
    T::STATIC_COMPONENT.names()
}

/// The name (and schema) a table's static component renders.
#[doc(hidden)]
pub trait TableComponent {
    /// The table and its schema.
    fn names(&'static self) -> (&'static str, Option<&'static str>);
}

impl TableComponent for diesel::internal::table_macro::Identifier<'static> {
    fn names(&'static self) -> (&'static str, Option<&'static str>) {
        (self.0, None)
    }
}

impl TableComponent
    for diesel::internal::table_macro::InfixNode<
        diesel::internal::table_macro::Identifier<'static>,
        diesel::internal::table_macro::Identifier<'static>,
        &'static str,
    >
{
    fn names(&'static self) -> (&'static str, Option<&'static str>) {
        // the fields are private; the derived Debug shows both identifiers
        type Names = HashMap<usize, (&'static str, Option<&'static str>)>;
        static NAMES: LazyLock<std::sync::Mutex<Names>> = LazyLock::new(Default::default);
        let addr = self as *const Self as usize;
        let mut cache = NAMES.lock().unwrap_or_else(|p| p.into_inner());
        *cache.entry(addr).or_insert_with(|| {
            let text = format!("{self:?}");
            let quoted: Vec<&str> = text.split('"').skip(1).step_by(2).collect();
            match quoted.as_slice() {
                [schema, table, ..] => {
                    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
                    (leak(table), Some(leak(schema)))
                }
                _ => ("", None),
            }
        })
    }
}

/// The key dependency of a model's row.
pub(crate) fn model_pk_dep<M: CacheModel>(model: &M) -> Dep {
    Dep::primary_key(M::table_name(), model.key())
}
