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
    /// A write to one cached model's table, followed row by row.
    Precise { info: &'static ModelInfo, write: Write },
}

impl Plan {
    /// What to invalidate if the statement ran but its precise effect is
    /// unknown (cancelled, or the rows could not be read).
    pub(crate) fn coarse(&self) -> Vec<Dep> {
        match self {
            Plan::Plain => Vec::new(),
            Plan::Coarse(d) => d.clone(),
            Plan::Precise { info, .. } => vec![info.everything(), unkeyed_insert(info.table)],
        }
    }

    /// Whether rows must be read before the statement runs.
    pub(crate) fn reads_first(&self) -> bool {
        match self {
            Plan::Precise { info, write: Write { kind: WriteKind::Update { assignments, .. }, .. } } => {
                assignments.iter().any(|(c, _)| info.moves_rows(c))
            }
            _ => false,
        }
    }
}

/// The coarse dependencies of a table no cached model has: its switch (and
/// the lowercase spelling of an unquoted name).
pub(crate) fn table_switch(name: &TableName) -> Vec<Dep> {
    let table = if name.quoted { name.table.clone() } else { name.table.to_lowercase() };
    let mut deps = vec![Dep::invalidate_all(&table), unkeyed_insert(&table)];
    if table != name.table {
        deps.push(Dep::invalidate_all(&name.table));
        deps.push(unkeyed_insert(&name.table));
    }
    deps
}

/// Turns an analysis into a plan, or a refusal.
pub(crate) fn plan(analysis: &Analysis, unparsed_coarse: bool) -> Result<Plan, Refusal> {
    match analysis {
        Analysis::Read | Analysis::Nothing => Ok(Plan::Plain),
        Analysis::Control(what) => Err(Refusal::TransactionControl((*what).to_owned())),
        Analysis::Unparsed(msg) if !unparsed_coarse => Err(Refusal::Unparsed(msg.clone())),
        Analysis::Unparsed(why) => {
            warn!(reason = %why, "unparsed statement: invalidating every cached model after it");
            Ok(Plan::Coarse(entity::every_model()))
        }
        Analysis::Unattributable(why) => {
            tracing::debug!(reason = why, "invalidating every cached model after this statement");
            Ok(Plan::Coarse(entity::every_model()))
        }
        Analysis::Writes(writes) => {
            if let [w] = writes.as_slice() {
                if let Some(info) = entity::lookup(&w.table) {
                    if !matches!(w.kind, WriteKind::Whole) {
                        return Ok(Plan::Precise { info, write: w.clone() });
                    }
                }
            }
            let mut deps = Vec::new();
            for w in writes {
                match entity::lookup(&w.table) {
                    Some(info) => deps.extend([info.everything(), unkeyed_insert(info.table)]),
                    None => deps.extend(table_switch(&w.table)),
                }
            }
            Ok(Plan::Coarse(deps))
        }
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The statement with `RETURNING` the columns that matter, on a line of its
/// own (a trailing `--` comment cannot swallow it).
pub(crate) fn with_returning<DB: CacheBackend>(stmt: &Raw<DB>, info: &ModelInfo) -> Raw<DB> {
    let cols: Vec<String> = info.needed().map(quote).collect();
    let sql = stmt.sql.trim_end().trim_end_matches(';').trim_end();
    stmt.derived(format!("{sql}\nRETURNING {}", cols.join(", ")))
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
