//! Running one write statement and learning what it changed.
//!
//! Before the statement, the rows it will change are read when their old
//! values matter (a watched column, a foreign key or the key changes, or a
//! delete of an entity with value-dependent lists), with `FOR UPDATE` on
//! PostgreSQL and MySQL so that no concurrent writer moves them in between.
//! After it, the new values come from its `RETURNING` rows, from its
//! parameters, or from a read by key. The caller provides the connection
//! (a transaction whenever rows are read first).

use std::collections::BTreeSet;
use std::sync::Arc;

use matroska::Dep;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement, Value as SeaValue, Values};
use tracing::warn;

use crate::entity::{self, unkeyed_insert, EntityInfo, Row};
use matroska_sql::{self as statement, Analysis, Filter, Operand, Write, WriteKind};

/// A call of `ConnectionTrait` the wrapper forwards.
#[derive(Debug)]
pub(crate) enum Call {
    Execute(Statement),
    Unprepared(String),
    QueryOne(Statement),
    QueryAll(Statement),
}

impl Call {
    pub(crate) fn sql(&self) -> &str {
        match self {
            Call::Execute(s) | Call::QueryOne(s) | Call::QueryAll(s) => &s.sql,
            Call::Unprepared(sql) => sql,
        }
    }

    fn values(&self) -> &[SeaValue] {
        match self {
            Call::Execute(s) | Call::QueryOne(s) | Call::QueryAll(s) => s.values.as_ref().map_or(&[], |v| &v.0),
            Call::Unprepared(_) => &[],
        }
    }

    pub(crate) async fn run<C: ConnectionTrait>(self, db: &C) -> Result<Answer, DbErr> {
        Ok(match self {
            Call::Execute(s) => Answer::Exec(db.execute_raw(s).await?),
            Call::Unprepared(sql) => Answer::Exec(db.execute_unprepared(&sql).await?),
            Call::QueryOne(s) => Answer::One(db.query_one_raw(s).await?),
            Call::QueryAll(s) => Answer::All(db.query_all_raw(s).await?),
        })
    }
}

/// What the forwarded call returned.
#[derive(Debug)]
pub(crate) enum Answer {
    Exec(ExecResult),
    One(Option<QueryResult>),
    All(Vec<QueryResult>),
}

impl Answer {
    fn rows(&self) -> &[QueryResult] {
        match self {
            Answer::Exec(_) => &[],
            Answer::One(r) => r.as_slice(),
            Answer::All(r) => r,
        }
    }
}

/// How a statement is handled.
pub(crate) enum Plan {
    /// Runs as is; nothing to invalidate.
    Plain,
    /// Writes: each either precise (an entity's rows) or coarse.
    Writes(Vec<Planned>),
    /// Several statements in one text, each coarse: if one fails, those
    /// before it may have written.
    Script(Vec<Planned>),
}

pub(crate) enum Planned {
    /// Invalidate these dependencies; no rows to read.
    Coarse(Vec<Dep>),
    Precise {
        info: Arc<EntityInfo>,
        write: Write,
    },
}

impl Plan {
    /// Whether rows must be read before the statement (then it runs in a
    /// transaction of its own when it is not in one already).
    pub(crate) fn reads_first(&self, values: &[SeaValue]) -> bool {
        match self {
            Plan::Plain | Plan::Script(_) => false,
            Plan::Writes(ws) => ws.iter().any(|w| match w {
                Planned::Coarse(_) => false,
                Planned::Precise { info, write } => pre_select_needed(info, write, values),
            }),
        }
    }

    /// What to invalidate if the statement ran but its precise effect could
    /// not be learnt (it was cancelled, or a read after it failed).
    pub(crate) fn coarse(&self) -> Vec<Dep> {
        match self {
            Plan::Plain => Vec::new(),
            Plan::Writes(ws) | Plan::Script(ws) => ws
                .iter()
                .flat_map(|w| match w {
                    Planned::Coarse(d) => d.clone(),
                    Planned::Precise { info, .. } => vec![info.everything(), unkeyed_insert(info.table)],
                })
                .collect(),
        }
    }
}

impl Plan {
    /// Whether the text holds several statements.
    pub(crate) fn script(&self) -> bool {
        matches!(self, Plan::Script(_))
    }
}

/// The coarse dependencies of a table no registered entity has.
pub(crate) fn table_switch(name: &statement::TableName) -> Vec<Dep> {
    // names are matched without regard to case (see `TableName::matches`)
    let table = name.table.to_lowercase();
    let mut deps = vec![Dep::invalidate_all(&table), unkeyed_insert(&table)];
    if table != name.table {
        deps.push(Dep::invalidate_all(&name.table));
        deps.push(unkeyed_insert(&name.table));
    }
    deps
}

/// What a write to `table` changes in other tables through the referential
/// actions declared on registered entities (`on_delete`/`on_update` =
/// `Cascade`, `SetNull`, `SetDefault`): every cached list, relation and row
/// of each referencing entity whose rows it may delete or update, and so on
/// down the references.
pub(crate) fn referential(table: &str, kind: &WriteKind) -> Vec<Dep> {
    /// Which key columns of a table's rows a write may change.
    #[derive(Clone)]
    enum Changed {
        No,
        Any,
        Columns(Vec<String>),
    }
    let start = match kind {
        WriteKind::Delete { .. } | WriteKind::Insert { replace: true, .. } => (true, Changed::No),
        WriteKind::Whole => (true, Changed::Any),
        WriteKind::Update { assignments, .. } => {
            (false, Changed::Columns(assignments.iter().map(|(c, _)| c.clone()).collect()))
        }
        WriteKind::Insert { .. } => return Vec::new(),
    };
    let mut deps = Vec::new();
    let mut seen: BTreeSet<(String, bool)> = BTreeSet::new();
    let mut work = vec![(table.to_lowercase(), start.0, start.1)];
    while let Some((t, deletes, changed)) = work.pop() {
        if !seen.insert((t.clone(), deletes)) {
            continue;
        }
        for (child, r) in entity::referencing(&t) {
            let by_delete = if deletes { r.on_delete } else { None };
            let key_changed = match &changed {
                Changed::No => false,
                Changed::Any => true,
                Changed::Columns(cols) => cols.iter().any(|c| r.columns.iter().any(|k| k.eq_ignore_ascii_case(c))),
            };
            let by_update = if key_changed { r.on_update } else { None };
            if by_delete.is_none() && by_update.is_none() {
                continue;
            }
            deps.push(child.everything());
            // the referencing rows are deleted, or their key columns change
            let child_deletes = by_delete == Some(entity::Action::Cascade);
            work.push((child.table.to_lowercase(), child_deletes, Changed::Columns(r.own_columns.clone())));
        }
    }
    deps.sort_unstable();
    deps.dedup();
    deps
}

/// Turns an analysis into a plan, or a refusal. `extra` gives what a write
/// also changes elsewhere (referential actions, declared triggers).
pub(crate) fn plan(
    analysis: &Analysis,
    unparsed_coarse: bool,
    extra: &dyn Fn(&Write) -> Vec<Dep>,
) -> Result<Plan, Refused> {
    match analysis {
        Analysis::Read | Analysis::Nothing => Ok(Plan::Plain),
        Analysis::Control(what) => Err(Refused::Control(what)),
        Analysis::Unparsed(msg) if !unparsed_coarse => Err(Refused::Unparsed(msg.clone())),
        Analysis::Unparsed(why) => {
            warn!(reason = %why, "unparsed statement: invalidating every cached entity after it");
            Ok(Plan::Script(vec![Planned::Coarse(entity::every_entity())]))
        }
        Analysis::Unattributable(why) => {
            // (a procedure that fails half-way may have written: a script)
            tracing::debug!(reason = why, "invalidating every cached entity after this statement");
            Ok(Plan::Script(vec![Planned::Coarse(entity::every_entity())]))
        }
        Analysis::Writes(writes) => {
            let mut planned = Vec::with_capacity(writes.len());
            for w in writes {
                planned.push(match (entity::lookup(&w.table), &w.kind) {
                    (Some(info), WriteKind::Whole) => {
                        Planned::Coarse(vec![info.everything(), unkeyed_insert(info.table)])
                    }
                    (Some(info), _) => Planned::Precise { info, write: w.clone() },
                    (None, _) => Planned::Coarse(table_switch(&w.table)),
                });
                let also = extra(w);
                if !also.is_empty() {
                    planned.push(Planned::Coarse(also));
                }
            }
            Ok(if writes.iter().any(|w| w.script) { Plan::Script(planned) } else { Plan::Writes(planned) })
        }
    }
}

/// Why a statement is refused before it runs.
#[derive(Debug)]
pub(crate) enum Refused {
    Control(&'static str),
    Unparsed(String),
}

/// The key values of the rows a filter names, if it is exactly `pk = ?`.
fn keys_from_filter(info: &EntityInfo, filter: &Filter, values: &[SeaValue]) -> Option<Vec<SeaValue>> {
    let eqs = filter.equalities.as_ref()?;
    if eqs.len() != info.pk.len() {
        return None;
    }
    let mut key = Vec::with_capacity(info.pk.len());
    for &i in &info.pk {
        let name = info.columns[i].name;
        let (_, operand) = eqs.iter().find(|(c, _)| info.column(c) == Some(i) || c == name)?;
        match operand {
            // as the column stores it: a key given as `"1"` is the row `1`
            Operand::Param(p) => {
                let c = &info.columns[i];
                let v = crate::value::param_value(info.table, c.name, &c.ty, values.get(*p)?)?;
                key.push(crate::value::to_sea(v));
            }
            _ => return None,
        }
    }
    Some(key)
}

fn changed_columns(info: &EntityInfo, assignments: &[(String, Operand)]) -> BTreeSet<String> {
    assignments
        .iter()
        .map(|(c, _)| info.column(c).map_or_else(|| c.clone(), |i| info.columns[i].name.to_owned()))
        .collect()
}

fn pre_select_needed(info: &EntityInfo, write: &Write, values: &[SeaValue]) -> bool {
    match &write.kind {
        WriteKind::Insert { .. } | WriteKind::Whole => false,
        WriteKind::Update { assignments, filter } => {
            let moves = changed_columns(info, assignments).iter().any(|c| info.moves_rows(c));
            moves || (keys_from_filter(info, filter, values).is_none() && !write.returning)
        }
        WriteKind::Delete { filter } => info.value_conditions || keys_from_filter(info, filter, values).is_none(),
    }
}

/// The rows a statement is about to change, read (and locked) first.
struct Before {
    rows: Vec<Box<dyn Row>>,
    /// Whether they were read (or not needed).
    read: bool,
}

impl Before {
    /// Whether the statement may have changed rows the read did not see:
    /// it changed more rows than were read (a row entered its condition
    /// between the read and the write: PostgreSQL's READ COMMITTED
    /// re-evaluates the condition, and a locking read does not block
    /// inserts or moves into it), or its condition has a subquery (whether
    /// a row matches depends on other rows, which are not locked).
    fn missed_rows(&self, filter: &Filter, answer: &Answer) -> bool {
        if !self.read {
            return false;
        }
        let changed = match answer {
            Answer::Exec(r) => r.rows_affected(),
            other => other.rows().len() as u64,
        };
        filter.subquery || changed > self.rows.len() as u64
    }
}

async fn read_rows<C: ConnectionTrait>(db: &C, info: &EntityInfo, stmt: Statement) -> Result<Vec<Box<dyn Row>>, DbErr> {
    let rows = db.query_all_raw(stmt).await?;
    rows.iter().map(|r| info.row(r)).collect()
}

fn statement(backend: DbBackend, sql: String, params: &[usize], values: &[SeaValue]) -> Option<Statement> {
    let vals: Option<Vec<SeaValue>> = params.iter().map(|&i| values.get(i).cloned()).collect();
    Some(Statement::from_sql_and_values(backend, sql, Values(vals?)))
}

/// Reads the rows a precise write needs before it runs; `None` when the
/// rows cannot be read (a condition with parameters that cannot be mapped):
/// the write is then coarse.
async fn before<C: ConnectionTrait>(
    db: &C,
    backend: DbBackend,
    info: &EntityInfo,
    write: &Write,
    values: &[SeaValue],
) -> Result<Option<Before>, DbErr> {
    if !pre_select_needed(info, write, values) {
        return Ok(Some(Before { rows: Vec::new(), read: false }));
    }
    let filter = match &write.kind {
        WriteKind::Update { filter, .. } | WriteKind::Delete { filter } => filter,
        _ => return Ok(Some(Before { rows: Vec::new(), read: false })),
    };
    let lock = backend != DbBackend::Sqlite;
    let stmt = match keys_from_filter(info, filter, values) {
        Some(key) => {
            let mut s = info.select_by_keys(backend, &[key]);
            if lock {
                s.sql.push_str(" FOR UPDATE");
            }
            Some(s)
        }
        None => statement::select_rows(super::dialect(backend), &write.target, filter, lock)
            .and_then(|(sql, params)| statement(backend, sql, &params, values)),
    };
    let Some(stmt) = stmt else { return Ok(None) };
    Ok(Some(Before { rows: read_rows(db, info, stmt).await?, read: true }))
}

/// Runs `call` on `db` under `plan`: reads what the plan needs first, runs
/// the call, learns the new values. Returns the call's answer and the
/// dependencies to invalidate once the write is committed.
pub(crate) async fn run<C: ConnectionTrait>(db: &C, plan: &Plan, call: Call) -> Result<(Answer, Vec<Dep>), DbErr> {
    let backend = db.get_database_backend();
    let writes = match plan {
        Plan::Plain => return Ok((call.run(db).await?, Vec::new())),
        Plan::Writes(w) | Plan::Script(w) => w,
    };
    let values: Vec<SeaValue> = call.values().to_vec();
    // before: read the rows whose old values matter
    let mut befores = Vec::with_capacity(writes.len());
    for w in writes {
        befores.push(match w {
            Planned::Coarse(_) => None,
            Planned::Precise { info, write } => before(db, backend, info, write, &values).await?,
        });
    }
    #[cfg(feature = "test-hooks")]
    if befores.iter().any(|b| b.as_ref().is_some_and(|b| b.read)) {
        crate::test_hooks::after_read_first().await;
    }
    let answer = call.run(db).await?;
    let mut deps = Vec::new();
    for (w, before) in writes.iter().zip(befores) {
        match (w, before) {
            (Planned::Coarse(d), _) => deps.extend(d.iter().cloned()),
            (Planned::Precise { info, .. }, None) => {
                deps.push(info.everything());
                deps.push(unkeyed_insert(info.table));
            }
            (Planned::Precise { info, write }, Some(before)) => {
                match after(db, backend, info, write, &values, before, &answer).await {
                    Ok(d) => deps.extend(d),
                    Err(e) => {
                        // the write happened; what it changed is unknown
                        warn!(table = info.table, error = %e, "cannot tell which rows a write changed; invalidating the whole entity");
                        deps.push(info.everything());
                        deps.push(unkeyed_insert(info.table));
                    }
                }
            }
        }
    }
    deps.sort_unstable();
    deps.dedup();
    Ok((answer, deps))
}

fn row_deps(rows: &[Box<dyn Row>], changed: Option<&BTreeSet<String>>) -> Result<Vec<Dep>, crate::Error> {
    let mut deps = Vec::new();
    for r in rows {
        deps.push(r.pk_dep());
        deps.extend(r.memberships(changed)?);
    }
    Ok(deps)
}

/// The dependencies of a precise write, once it ran.
async fn after<C: ConnectionTrait>(
    db: &C,
    backend: DbBackend,
    info: &EntityInfo,
    write: &Write,
    values: &[SeaValue],
    before: Before,
    answer: &Answer,
) -> Result<Vec<Dep>, crate::Error> {
    let returned = answer.rows();
    match &write.kind {
        WriteKind::Whole => Ok(vec![info.everything(), unkeyed_insert(info.table)]),
        WriteKind::Insert { columns, rows, upsert, .. } => {
            let mut deps = Vec::new();
            if *upsert {
                // an existing row may have changed: its old values are unknown
                deps.push(info.everything());
            }
            // full rows returned?
            let full: Option<Vec<Box<dyn Row>>> =
                if returned.is_empty() { None } else { returned.iter().map(|r| info.row(r).ok()).collect() };
            if let Some(full) = full {
                deps.extend(row_deps(&full, None)?);
                return Ok(deps);
            }
            // the new rows' keys
            let mut keys: Option<Vec<Vec<SeaValue>>> =
                if returned.is_empty() { None } else { returned.iter().map(|r| info.pk_of(r).ok()).collect() };
            if keys.is_none() {
                keys = rows
                    .iter()
                    .map(|row| {
                        info.pk
                            .iter()
                            .map(|&i| {
                                let pos = columns.iter().position(|c| info.column(c) == Some(i))?;
                                match row.get(pos)? {
                                    Operand::Param(p) => {
                                        let c = &info.columns[i];
                                        crate::value::param_value(info.table, c.name, &c.ty, values.get(*p)?)
                                            .map(crate::value::to_sea)
                                    }
                                    _ => None,
                                }
                            })
                            .collect::<Option<Vec<_>>>()
                    })
                    .collect();
            }
            if keys.is_none() && rows.len() == 1 && backend != DbBackend::Postgres {
                if let Answer::Exec(r) = answer {
                    if r.rows_affected() == 1 {
                        keys = info.pk_from_id(r.last_insert_id()).map(|k| vec![k]);
                    }
                }
            }
            // the lists the new rows enter, from the statement's values
            let from_values: Option<Vec<Dep>> = rows
                .iter()
                .map(|row| info.memberships_from_values(|c| inserted_value(info, columns, row, values, c)))
                .collect::<Option<Vec<Vec<Dep>>>>()
                .map(|v| v.into_iter().flatten().collect());
            let Some(keys) = keys.filter(|k| !k.is_empty()) else {
                deps.push(unkeyed_insert(info.table));
                match from_values {
                    Some(m) => deps.extend(m),
                    None if !info.value_conditions => deps.extend(info.membership_without_rows()),
                    None => deps.push(info.everything()),
                }
                return Ok(deps);
            };
            deps.extend(keys.iter().map(|k| info.pk_dep(k)));
            if !info.value_conditions {
                deps.extend(info.membership_without_rows());
                return Ok(deps);
            }
            if let Some(m) = from_values {
                deps.extend(m);
                return Ok(deps);
            }
            let found = read_rows(db, info, info.select_by_keys(backend, &keys)).await?;
            if found.len() < keys.len() {
                // a row already changed again, or was not inserted: coarse
                deps.push(info.everything());
            }
            deps.extend(row_deps(&found, None)?);
            Ok(deps)
        }
        WriteKind::Update { assignments, filter } => {
            let changed = changed_columns(info, assignments);
            let moves = changed.iter().any(|c| info.moves_rows(c));
            if before.missed_rows(filter, answer) {
                // rows it changed were not read: their old values are unknown
                let mut deps = vec![info.everything()];
                deps.extend(row_deps(&before.rows, Some(&changed))?);
                deps.extend(returned.iter().filter_map(|r| info.pk_of(r).ok()).map(|k| info.pk_dep(&k)));
                return Ok(deps);
            }
            if !moves {
                // only the rows' own keys
                if let Some(key) = keys_from_filter(info, filter, values) {
                    return Ok(vec![info.pk_dep(&key)]);
                }
                if !before.rows.is_empty() || returned.is_empty() {
                    return Ok(before.rows.iter().map(|r| r.pk_dep()).collect());
                }
                let keys: Vec<Vec<SeaValue>> = returned.iter().map(|r| info.pk_of(r)).collect::<Result<_, _>>()?;
                return Ok(keys.iter().map(|k| info.pk_dep(k)).collect());
            }
            let mut deps = row_deps(&before.rows, Some(&changed))?;
            // the new values: returned rows, the parameters, or a read by key
            let full: Option<Vec<Box<dyn Row>>> =
                if returned.is_empty() { None } else { returned.iter().map(|r| info.row(r).ok()).collect() };
            let new_rows = match full {
                Some(rows) => rows,
                None => match from_parameters(info, assignments, values, &before.rows) {
                    Some(rows) => rows,
                    None => {
                        let keys: Vec<Vec<SeaValue>> = before.rows.iter().map(|r| r.pk_values()).collect();
                        if keys.is_empty() {
                            Vec::new()
                        } else {
                            let found = read_rows(db, info, info.select_by_keys(backend, &keys)).await?;
                            if found.len() < keys.len() {
                                deps.push(info.everything());
                            }
                            found
                        }
                    }
                },
            };
            deps.extend(row_deps(&new_rows, Some(&changed))?);
            Ok(deps)
        }
        WriteKind::Delete { filter } => {
            if before.missed_rows(filter, answer) {
                let mut deps = vec![info.everything()];
                deps.extend(row_deps(&before.rows, None)?);
                return Ok(deps);
            }
            if !info.value_conditions {
                if let Some(key) = keys_from_filter(info, filter, values) {
                    let mut deps = vec![info.pk_dep(&key)];
                    deps.extend(info.membership_without_rows());
                    return Ok(deps);
                }
            }
            row_deps(&before.rows, None)
        }
    }
}

/// The canonical value of column `c` in one row of an insert, if the
/// statement gives it as a parameter or a plain literal.
fn inserted_value(
    info: &EntityInfo,
    columns: &[String],
    row: &[Operand],
    values: &[SeaValue],
    c: &str,
) -> Option<matroska::Value> {
    let i = info.column(c)?;
    let pos = columns.iter().position(|name| info.column(name) == Some(i))?;
    match row.get(pos)? {
        Operand::Param(p) => crate::value::param_value(info.table, c, &info.columns[i].ty, values.get(*p)?),
        Operand::Literal(Some(v)) => crate::value::coerce(info.table, c, &info.columns[i].ty, v.clone()).ok(),
        _ => None,
    }
}

/// The new rows of an update whose changed columns are all parameters:
/// the old rows with the parameters applied. `None` if some value is
/// computed, a literal, or the key changes.
fn from_parameters(
    info: &EntityInfo,
    assignments: &[(String, Operand)],
    values: &[SeaValue],
    old: &[Box<dyn Row>],
) -> Option<Vec<Box<dyn Row>>> {
    let mut sets = Vec::with_capacity(assignments.len());
    for (c, operand) in assignments {
        let i = info.column(c)?;
        if info.pk.contains(&i) {
            return None;
        }
        match operand {
            Operand::Param(p) => sets.push((i, values.get(*p)?.clone())),
            _ => return None,
        }
    }
    let mut rows = Vec::with_capacity(old.len());
    for r in old {
        let mut new = r.clone_row();
        for (i, v) in &sets {
            new.set(*i, v.clone()).ok()?;
        }
        rows.push(new);
    }
    Some(rows)
}
