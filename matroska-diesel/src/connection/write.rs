//! Planning one statement, running a write and learning what it changed.
//!
//! A write to a table of a cached model is *precise*: it runs with a
//! `RETURNING` clause naming the columns that matter (the key, scope fields,
//! foreign keys) unless it has one, so the database itself says which rows
//! it inserted, changed or deleted, with their new values (deleted rows:
//! their last values). When an update changes a column that moves rows
//! between lists or relations, the rows it will change are read first (with
//! `FOR UPDATE` on PostgreSQL), so the lists they leave are known too.

use std::collections::BTreeSet;

use diesel::row::{Field, Row};
use matroska::{Dep, Value};
use matroska_sql::{Analysis, Filter, TableName, Write, WriteKind};
use tracing::warn;

use crate::backend::CacheBackend;
use crate::entity::{self, unkeyed_insert, ColumnRow, ModelInfo};

use super::raw::Raw;
use super::Refusal;

/// How a statement is handled.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Runs as is; nothing to invalidate.
    Plain,
    /// Invalidates these dependencies once it ran.
    Coarse(Vec<Dep>),
    /// Several statements in one text (or a procedure): coarse, and if one
    /// fails, those before it may have written (SQLite runs them one by
    /// one, each committed outside a transaction).
    Script(Vec<Dep>),
    /// A write to one cached model's table, followed row by row; `also`:
    /// what the database writes elsewhere because of it (declared
    /// referential actions and triggers), coarse.
    Precise { info: &'static ModelInfo, write: Write, also: Vec<Dep> },
}

impl Plan {
    /// What to invalidate if the statement ran but its precise effect is
    /// unknown (cancelled, or the rows could not be read).
    pub(crate) fn coarse(&self) -> Vec<Dep> {
        match self {
            Plan::Plain => Vec::new(),
            Plan::Coarse(d) | Plan::Script(d) => d.clone(),
            Plan::Precise { info, also, .. } => {
                let mut deps = vec![info.everything(), unkeyed_insert(info.table)];
                deps.extend(also.iter().cloned());
                deps
            }
        }
    }

    /// Whether the text holds several statements, some of which may have
    /// written when a later one fails.
    pub(crate) fn script(&self) -> bool {
        matches!(self, Plan::Script(_))
    }

    /// Whether rows must be read before the statement runs.
    pub(crate) fn reads_first(&self) -> bool {
        match self {
            Plan::Precise { info, write: Write { kind: WriteKind::Update { assignments, .. }, .. }, .. } => {
                assignments.iter().any(|(c, _)| info.moves_rows(c))
            }
            _ => false,
        }
    }
}

/// The coarse dependencies of a table no cached model has: its switch (in
/// lower case, and as written: names are matched without regard to case).
pub(crate) fn table_switch(name: &TableName) -> Vec<Dep> {
    let table = name.table.to_lowercase();
    let mut deps = vec![Dep::invalidate_all(&table), unkeyed_insert(&table)];
    if table != name.table {
        deps.push(Dep::invalidate_all(&name.table));
        deps.push(unkeyed_insert(&name.table));
    }
    deps
}

/// The coarse dependencies of a table named by hand (`"articles"`,
/// `"public.articles"`, `"\"Articles\""`): the registered model's, or the
/// table's switch.
pub(crate) fn touched(name: &str) -> Vec<Dep> {
    let (schema, table) = match name.rsplit_once('.') {
        Some((schema, table)) => (Some(schema.trim_matches(|c| c == '"' || c == '`').to_owned()), table),
        None => (None, name),
    };
    let table = table.trim_matches(|c| c == '"' || c == '`').to_owned();
    let name = TableName { schema, table, quoted: false };
    match entity::lookup(&name) {
        Some(info) => vec![info.everything(), unkeyed_insert(info.table)],
        None => table_switch(&name),
    }
}

/// What a write to `table` changes in other tables through the referential
/// actions declared on registered models (`#[matroska(belongs_to(Parent,
/// on_delete = "cascade"))]`): every cached list, relation and row of each
/// referencing model whose rows it may delete or update, and so on down the
/// references.
pub(crate) fn referential(table: &str, kind: &WriteKind) -> Vec<Dep> {
    /// Which columns of a table's rows a write may change.
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
            // the referenced columns: the parent's key (unknown: any)
            let key_changed = match (&changed, entity::key_columns(r.parent)) {
                (Changed::No, _) => false,
                (Changed::Any, _) | (Changed::Columns(_), None) => true,
                (Changed::Columns(cols), Some(keys)) => {
                    cols.iter().any(|c| keys.iter().any(|k| k.eq_ignore_ascii_case(c)))
                }
            };
            let by_update = if key_changed { r.on_update } else { None };
            if by_delete.is_none() && by_update.is_none() {
                continue;
            }
            deps.extend([child.everything(), unkeyed_insert(child.table)]);
            // the referencing rows are deleted, or their foreign key changes
            let child_deletes = by_delete == Some(entity::Action::Cascade);
            work.push((child.table.to_lowercase(), child_deletes, Changed::Columns(vec![r.column.to_owned()])));
        }
    }
    deps.sort_unstable();
    deps.dedup();
    deps
}

/// Turns an analysis into a plan, or a refusal. `also` gives what a write
/// changes elsewhere (referential actions, declared triggers).
pub(crate) fn plan(
    analysis: &Analysis,
    unparsed_coarse: bool,
    also: &dyn Fn(&Write) -> Vec<Dep>,
) -> Result<Plan, Refusal> {
    match analysis {
        Analysis::Read | Analysis::Nothing => Ok(Plan::Plain),
        Analysis::Control(what) => Err(Refusal::TransactionControl((*what).to_owned())),
        Analysis::Unparsed(msg) if !unparsed_coarse => Err(Refusal::Unparsed(msg.clone())),
        Analysis::Unparsed(why) => {
            warn!(reason = %why, "unparsed statement: invalidating every cached model after it");
            Ok(Plan::Script(entity::every_model()))
        }
        Analysis::Unattributable(why) => {
            // (a procedure that fails half-way may have written: a script)
            tracing::debug!(reason = why, "invalidating every cached model after this statement");
            Ok(Plan::Script(entity::every_model()))
        }
        Analysis::Writes(writes) => {
            if let [w] = writes.as_slice() {
                if let Some(info) = entity::lookup(&w.table) {
                    if !matches!(w.kind, WriteKind::Whole) && !w.script {
                        return Ok(Plan::Precise { info, write: w.clone(), also: also(w) });
                    }
                }
            }
            let mut deps = Vec::new();
            for w in writes {
                match entity::lookup(&w.table) {
                    Some(info) => deps.extend([info.everything(), unkeyed_insert(info.table)]),
                    None => deps.extend(table_switch(&w.table)),
                }
                deps.extend(also(w));
            }
            Ok(if writes.iter().any(|w| w.script) { Plan::Script(deps) } else { Plan::Coarse(deps) })
        }
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The statement with `RETURNING` the columns that matter, on a line of its
/// own, after the statement's last token: trailing comments and semicolons
/// are cut (text after a `;` would be a second statement, which SQLite
/// ignores and PostgreSQL refuses).
pub(crate) fn with_returning<DB: CacheBackend>(stmt: &Raw<DB>, info: &ModelInfo) -> Raw<DB> {
    let cols: Vec<String> = info.needed().map(quote).collect();
    let sql = statement_text::<DB>(&stmt.sql);
    stmt.derived(format!("{sql}\nRETURNING {}", cols.join(", ")))
}

/// The text of a statement up to its last token (without trailing
/// whitespace, comments and semicolons).
pub(crate) fn statement_text<DB: CacheBackend>(sql: &str) -> &str {
    use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = match DB::DIALECT {
        matroska_sql::Dialect::Postgres => Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location(),
        _ => Tokenizer::new(&SQLiteDialect {}, sql).tokenize_with_location(),
    };
    let fallback = || sql.trim_end().trim_end_matches(';').trim_end();
    let Ok(tokens) = tokens else { return fallback() };
    let Some(last) = tokens.iter().rev().find(|t| !matches!(t.token, Token::Whitespace(_) | Token::SemiColon)) else {
        return fallback();
    };
    // the end location: line and column (from 1, in characters) just past it
    let (line, column) = (last.span.end.line, last.span.end.column);
    let mut at_line = 1;
    let mut at_column = 1;
    for (i, c) in sql.char_indices() {
        if (at_line, at_column) >= (line, column) {
            return &sql[..i];
        }
        if c == '\n' {
            at_line += 1;
            at_column = 1;
        } else {
            at_column += 1;
        }
    }
    sql
}

/// `SELECT` of the rows an update's filter names, locked where the database
/// can, with the update's own parameters; `None` when the condition cannot
/// be re-run.
pub(crate) fn read_first<DB: CacheBackend>(
    stmt: &Raw<DB>,
    info: &ModelInfo,
    target: &str,
    filter: &Filter,
) -> Option<Raw<DB>> {
    let cols: Vec<String> = info.needed().map(quote).collect();
    let mut sql = format!("SELECT {} FROM {target}", cols.join(", "));
    let total = param_count::<DB>(&stmt.sql)?;
    let mut used: Vec<usize> = Vec::new();
    match &filter.sql {
        Some((condition, params)) => {
            sql.push_str(" WHERE (");
            sql.push_str(&number_params::<DB>(condition, params)?);
            sql.push(')');
            used.clone_from(params);
        }
        None if filter.equalities.as_ref().is_some_and(Vec::is_empty) => sql.push_str(" WHERE 1 = 1"),
        None => return None,
    }
    // every parameter of the statement is sent: the unused ones appear in
    // conditions that are always true
    for n in 0..total {
        if !used.contains(&n) {
            sql.push_str(" AND ");
            sql.push_str(&DB::noop_param(n + 1));
        }
    }
    sql.push_str(DB::LOCK);
    Some(stmt.derived(sql))
}

/// How many parameters the statement text has.
fn param_count<DB: CacheBackend>(sql: &str) -> Option<usize> {
    use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = match DB::DIALECT {
        matroska_sql::Dialect::Postgres => Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?,
        _ => Tokenizer::new(&SQLiteDialect {}, sql).tokenize().ok()?,
    };
    let mut bare = 0usize;
    let mut max = 0usize;
    for t in tokens {
        if let Token::Placeholder(text) = t {
            if text == "?" {
                bare += 1;
            } else if let Some(n) = text.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                max = max.max(n);
            } else {
                return None;
            }
        }
    }
    Some(bare.max(max))
}

/// The condition with its parameters numbered as in the statement
/// (`$n` on PostgreSQL already are; SQLite's bare `?` become `?n`).
fn number_params<DB: CacheBackend>(condition: &str, params: &[usize]) -> Option<String> {
    use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = match DB::DIALECT {
        matroska_sql::Dialect::Postgres => Tokenizer::new(&PostgreSqlDialect {}, condition).tokenize().ok()?,
        _ => Tokenizer::new(&SQLiteDialect {}, condition).tokenize().ok()?,
    };
    let mut out = String::with_capacity(condition.len() + 8);
    let mut k = 0;
    for t in tokens {
        match t {
            Token::Placeholder(text) => {
                let original = match text.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) => n.checked_sub(1)?,
                    None => *params.get(k)?,
                };
                k += 1;
                out.push_str(&DB::placeholder(original + 1));
            }
            other => out.push_str(&other.to_string()),
        }
    }
    Some(out)
}

/// The rows of a result, as the values of the model's columns they hold.
pub(crate) fn decode_rows<'a, DB, R>(info: &ModelInfo, rows: &'a [R]) -> Result<Vec<ColumnRow>, String>
where
    DB: CacheBackend,
    R: Row<'a, DB>,
{
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut values = ColumnRow(vec![None; info.columns.len()]);
        for i in 0..row.field_count() {
            let Some(field) = row.get(i) else { continue };
            let Some(ci) = field.field_name().and_then(|n| info.column(n)) else { continue };
            let v = match field.value() {
                None => Value::Null,
                Some(raw) => DB::decode(raw)?,
            };
            values.0[ci] = Some(info.canonical(ci, v).map_err(|e| e.to_string())?);
        }
        out.push(values);
    }
    Ok(out)
}

/// Whether every row holds every column the model's dependencies need.
pub(crate) fn complete(info: &ModelInfo, rows: &[ColumnRow]) -> bool {
    rows.iter().all(|r| r.0.iter().all(Option::is_some)) && !info.columns.is_empty()
}

fn changed_columns(info: &ModelInfo, assignments: &[(String, matroska_sql::Operand)]) -> BTreeSet<String> {
    assignments
        .iter()
        .map(|(c, _)| info.column(c).map_or_else(|| c.clone(), |i| info.columns[i].name.to_owned()))
        .collect()
}

/// The dependencies of a precise write, from the rows read before it (an
/// update that moves rows) and the rows it returned.
pub(crate) fn precise_deps(
    info: &ModelInfo,
    write: &Write,
    before: Option<&[ColumnRow]>,
    after: &[ColumnRow],
) -> Result<Vec<Dep>, crate::Error> {
    let mut deps = Vec::new();
    match &write.kind {
        WriteKind::Insert { upsert, .. } => {
            if *upsert {
                // an existing row may have changed: its old values are unknown
                deps.push(info.everything());
            }
            for r in after {
                deps.extend(info.row_deps(r, None)?);
            }
        }
        WriteKind::Update { assignments, .. } => {
            let changed = changed_columns(info, assignments);
            if changed.iter().any(|c| info.moves_rows(c)) {
                match before {
                    Some(rows) => {
                        for r in rows {
                            deps.extend(info.row_deps(r, Some(&changed))?);
                        }
                        // a row it changed that the read did not see (it
                        // entered the condition after the read: PostgreSQL's
                        // READ COMMITTED re-evaluates it, and the locking read
                        // does not block inserts or moves into it): its old
                        // values, and so the lists it left, are unknown
                        let read: Vec<Option<Dep>> = rows.iter().map(|r| info.row_pk_dep(r)).collect();
                        if after.iter().any(|r| {
                            let key = info.row_pk_dep(r);
                            key.is_none() || !read.contains(&key)
                        }) {
                            deps.push(info.everything());
                        }
                    }
                    None => deps.push(info.everything()),
                }
                for r in after {
                    deps.extend(info.row_deps(r, Some(&changed))?);
                }
            } else {
                for r in after {
                    deps.push(info.row_pk_dep(r).unwrap_or_else(|| info.everything()));
                }
            }
        }
        WriteKind::Delete { .. } => {
            for r in after {
                deps.extend(info.row_deps(r, None)?);
            }
        }
        WriteKind::Whole => deps.extend([info.everything(), unkeyed_insert(info.table)]),
    }
    Ok(deps)
}
