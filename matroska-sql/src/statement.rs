//! Reading a statement: is it a read, a write (to which table, which rows,
//! which columns, with which values), transaction control, or something we
//! cannot attribute?
//!
//! Statements are parsed with [`sqlparser`] in the dialect of the connection.
//! The analysis does not depend on the statement's values, only on its text,
//! so it is cached by text: an ORM sends the same text for every call of the
//! same shape.

use std::sync::Arc;

use sqlparser::ast::{
    Assignment, AssignmentTarget, BinaryOperator, Expr, FromTable, ObjectName, OnInsert, Query, SetExpr, Spanned,
    Statement, TableFactor, TableObject, TableWithJoins, Value as SqlValue,
};
use sqlparser::dialect::{Dialect as SqlDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};

use crate::Dialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

/// What a statement does, as far as the cache is concerned.
#[derive(Debug)]
pub enum Analysis {
    /// Reads only.
    Read,
    /// Writes these tables, one entry per statement in the text.
    Writes(Vec<Write>),
    /// `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`: refused (use
    /// the transaction API, which the cache follows).
    Control(&'static str),
    /// Parsed, but what it writes cannot be known (`CALL`, `DO`, a
    /// statement kind this crate does not follow): every cached entity may
    /// have changed.
    Unattributable(&'static str),
    /// Not parsed. The message is the parser's.
    Unparsed(String),
    /// Changes nothing cached (`SET`, `SHOW`, `CREATE TABLE`, `PRAGMA`, ...).
    Nothing,
}

/// A table name as written in a statement: the table and, if given, its
/// schema (unquoted; `quoted` says whether the table part was quoted, which
/// makes it case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableName {
    /// The schema, if the statement names one.
    pub schema: Option<String>,
    /// The table.
    pub table: String,
    /// Whether the table part was quoted (then it is case-sensitive).
    pub quoted: bool,
}

impl TableName {
    /// Whether this name denotes the entity table `table` (in `schema`).
    /// Names are compared without regard to case, quoted or not: SQLite
    /// and MySQL on some systems ignore the case of quoted names too, and
    /// a write matched to one table too many only invalidates more.
    #[must_use]
    pub fn matches(&self, table: &str, schema: Option<&str>) -> bool {
        let same = self.table.eq_ignore_ascii_case(table);
        same && match (&self.schema, schema) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => true,
        }
    }
}

/// A value in a statement: a parameter (its position in the statement's
/// values), a literal (its value when it is a plain number, string, boolean
/// or `NULL`), or anything computed.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A parameter: its position (from 0) in the statement's values.
    Param(usize),
    /// A literal: its value when it is a plain number, string, boolean or
    /// `NULL`, else `None`.
    Literal(Option<matroska::Value>),
    /// Anything else (an expression, a function call, a column).
    Computed,
}

/// The value of a plain literal, before it is brought to its column's type.
fn literal(v: &SqlValue) -> Option<matroska::Value> {
    Some(match v {
        SqlValue::Number(n, _) => match n.parse::<i64>() {
            Ok(i) => matroska::Value::Int(i),
            Err(_) => matroska::Value::Str(n.clone()),
        },
        SqlValue::SingleQuotedString(s) | SqlValue::DoubleQuotedString(s) => matroska::Value::Str(s.clone()),
        SqlValue::Boolean(b) => matroska::Value::Bool(*b),
        SqlValue::Null => matroska::Value::Null,
        _ => return None,
    })
}

/// The WHERE clause of an UPDATE or DELETE.
#[derive(Clone, Debug)]
pub struct Filter {
    /// The condition as SQL in the statement's dialect, with the positions
    /// (in the statement's values) of the parameters it uses, in order. `None`
    /// without a WHERE (every row).
    pub sql: Option<(String, Vec<usize>)>,
    /// If the condition is exactly `col = value AND ...`: those pairs.
    pub equalities: Option<Vec<(String, Operand)>>,
    /// Whether the condition holds a subquery: then whether a row matches
    /// depends on other rows, which a concurrent writer may change between a
    /// read of the matching rows and the write.
    pub subquery: bool,
}

/// One write statement.
#[derive(Clone, Debug)]
pub struct Write {
    /// The table written.
    pub table: TableName,
    /// The table as the statement names it, with its alias if any (`FROM`
    /// of a `SELECT` that reads the same rows).
    pub target: String,
    /// What the statement does to the table.
    pub kind: WriteKind,
    /// The statement has a RETURNING clause.
    pub returning: bool,
    /// One of several statements in the text: if a later one fails, the
    /// earlier ones may have written (SQLite runs them one by one).
    pub script: bool,
}

/// What a write statement does to its table.
#[derive(Clone, Debug)]
pub enum WriteKind {
    /// `INSERT ... VALUES`: the columns and the rows' operands.
    Insert {
        /// The columns given, in order.
        columns: Vec<String>,
        /// One entry per row: its operands, in the order of `columns`.
        rows: Vec<Vec<Operand>>,
        /// `ON CONFLICT DO UPDATE` / `ON DUPLICATE KEY UPDATE` / `REPLACE` /
        /// `INSERT OR REPLACE`: an existing row may change too.
        upsert: bool,
        /// `REPLACE` / `INSERT OR REPLACE`: an existing row is deleted (its
        /// foreign keys' `ON DELETE` actions run).
        replace: bool,
    },
    /// `UPDATE` of one table.
    Update {
        /// The columns set, with their new values.
        assignments: Vec<(String, Operand)>,
        /// Which rows.
        filter: Filter,
    },
    /// `DELETE` from one table.
    Delete {
        /// Which rows.
        filter: Filter,
    },
    /// A write whose rows cannot be told (`INSERT ... SELECT`, `UPDATE ...
    /// FROM`, multi-table deletes, `TRUNCATE`, DDL, several statements at
    /// once): every row of the table may have changed.
    Whole,
}

/// The parameters of a statement's text: bare `?` placeholders are numbered
/// by position; `$n` name their position; anything else cannot be mapped.
#[derive(Debug, Default)]
struct Placeholders {
    /// Locations of the bare `?` placeholders, in order.
    bare: Vec<Location>,
    /// Whether a placeholder of another form (`?3`, `:name`, `@x`) occurs.
    unmapped: bool,
}

fn parser_dialect(dialect: Dialect) -> Box<dyn SqlDialect> {
    match dialect {
        Dialect::Postgres => Box::new(PostgreSqlDialect {}),
        Dialect::MySql => Box::new(MySqlDialect {}),
        Dialect::Sqlite => Box::new(SQLiteDialect {}),
    }
}

/// Whether the text is a plain `SELECT` (the fast path: no parse).
#[must_use]
pub fn is_plain_select(sql: &str) -> bool {
    let mut rest = sql.trim_start();
    // skip leading comments
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after).trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after).trim_start();
        } else {
            break;
        }
    }
    // one statement only: `SELECT 1; UPDATE ...` is parsed
    let single = !rest.trim_end().trim_end_matches(';').contains(';');
    single
        && rest.len() >= 6
        && rest.as_bytes()[..6].eq_ignore_ascii_case(b"select")
        && rest.as_bytes().get(6).is_none_or(|c| !c.is_ascii_alphanumeric() && *c != b'_')
}

/// Analyses a statement's text (one or several statements) in `dialect`.
#[must_use]
pub fn analyse(sql: &str, dialect: Dialect) -> Analysis {
    if is_plain_select(sql) {
        return Analysis::Read;
    }
    let parser = parser_dialect(dialect);
    let statements = match Parser::parse_sql(parser.as_ref(), sql) {
        Ok(s) => s,
        Err(e) => return Analysis::Unparsed(e.to_string()),
    };
    let placeholders = match placeholders(parser.as_ref(), sql) {
        Ok(p) => p,
        Err(e) => return Analysis::Unparsed(e),
    };
    let several = statements.len() > 1;
    let mut writes = Vec::new();
    let mut nothing = true;
    for statement in &statements {
        match classify(statement, &placeholders, parser.as_ref()) {
            Analysis::Read | Analysis::Nothing => {}
            Analysis::Writes(w) => {
                nothing = false;
                writes.extend(w.into_iter().map(|mut w| {
                    if several {
                        // the statements' rows cannot be read between them
                        w.kind = WriteKind::Whole;
                        w.script = true;
                    }
                    w
                }));
            }
            other => return other,
        }
    }
    if writes.is_empty() {
        if nothing && statements.iter().all(|s| matches!(s, Statement::Query(_))) {
            Analysis::Read
        } else {
            Analysis::Nothing
        }
    } else {
        Analysis::Writes(writes)
    }
}

fn placeholders(dialect: &dyn SqlDialect, sql: &str) -> Result<Placeholders, String> {
    let tokens = Tokenizer::new(dialect, sql).tokenize_with_location().map_err(|e| e.to_string())?;
    let mut p = Placeholders::default();
    for t in tokens {
        if let Token::Placeholder(text) = &t.token {
            if text == "?" {
                p.bare.push(t.span.start);
            } else if !(text.starts_with('$') && text[1..].parse::<usize>().is_ok()) {
                p.unmapped = true;
            }
        }
    }
    Ok(p)
}

fn classify(statement: &Statement, ph: &Placeholders, dialect: &dyn SqlDialect) -> Analysis {
    match statement {
        Statement::Query(q) => query_writes(q, dialect),
        Statement::Insert(ins) => insert(ins, ph),
        Statement::Update(u) => update(u, ph, dialect),
        Statement::Delete(d) => delete(d, ph, dialect),
        Statement::Truncate(t) if matches!(t.cascade, Some(sqlparser::ast::CascadeOption::Cascade)) => {
            Analysis::Unattributable("TRUNCATE ... CASCADE empties the tables that reference these too")
        }
        Statement::Truncate(t) => Analysis::Writes(t.table_names.iter().filter_map(|t| whole(&t.name)).collect()),
        Statement::Drop { names, .. } => Analysis::Writes(names.iter().filter_map(whole).collect()),
        Statement::AlterTable(a) => Analysis::Writes(whole(&a.name).into_iter().collect()),
        Statement::Copy { .. } | Statement::Merge(_) | Statement::Call(_) => {
            Analysis::Unattributable("a statement whose written rows and tables are not followed")
        }
        Statement::Explain { analyze, statement, options, .. } => {
            // `EXPLAIN ANALYZE` and PostgreSQL's `EXPLAIN (ANALYZE)` run the statement
            let analyze_option = options.iter().flatten().any(|o| {
                o.name.value.eq_ignore_ascii_case("analyze")
                    && !o.arg.as_ref().is_some_and(|a| {
                        let a = a.to_string();
                        a.eq_ignore_ascii_case("false") || a.eq_ignore_ascii_case("off") || a == "0"
                    })
            });
            if *analyze || analyze_option {
                match classify(statement, ph, dialect) {
                    // its rows are not read first: the whole table
                    Analysis::Writes(w) => Analysis::Writes(
                        w.into_iter()
                            .map(|mut w| {
                                w.kind = WriteKind::Whole;
                                w
                            })
                            .collect(),
                    ),
                    other => other,
                }
            } else {
                Analysis::Read
            }
        }
        Statement::StartTransaction { .. } => Analysis::Control("BEGIN"),
        Statement::Commit { .. } => Analysis::Control("COMMIT"),
        Statement::Rollback { .. } => Analysis::Control("ROLLBACK"),
        Statement::Savepoint { .. } => Analysis::Control("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Analysis::Control("RELEASE SAVEPOINT"),
        Statement::CreateTable(_)
        | Statement::CreateIndex(_)
        | Statement::CreateView { .. }
        | Statement::CreateSchema { .. }
        | Statement::CreateSequence { .. }
        | Statement::CreateType { .. }
        | Statement::Set(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::Pragma { .. }
        | Statement::Analyze(_)
        | Statement::Lock(_)
        | Statement::LockTables { .. }
        | Statement::UnlockTables
        | Statement::Comment { .. }
        | Statement::Use(_)
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Prepare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Declare { .. } => Analysis::Nothing,
        _ => Analysis::Unattributable("a statement kind this crate does not follow"),
    }
}

/// A query is a read unless a common table expression or its body writes.
fn query_writes(q: &Query, dialect: &dyn SqlDialect) -> Analysis {
    let mut tables = Vec::new();
    let mut bodies: Vec<&SetExpr> = vec![&q.body];
    if let Some(with) = &q.with {
        bodies.extend(with.cte_tables.iter().map(|c| &*c.query.body));
    }
    while let Some(body) = bodies.pop() {
        match body {
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
                match classify(s, &Placeholders { unmapped: true, ..Placeholders::default() }, dialect) {
                    Analysis::Writes(w) => tables.extend(w.into_iter().map(|mut w| {
                        w.kind = WriteKind::Whole;
                        w
                    })),
                    other => return other,
                }
            }
            SetExpr::Query(q) => {
                bodies.push(&q.body);
                if let Some(with) = &q.with {
                    bodies.extend(with.cte_tables.iter().map(|c| &*c.query.body));
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                bodies.push(left);
                bodies.push(right);
            }
            SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => {}
        }
    }
    if tables.is_empty() {
        Analysis::Read
    } else {
        Analysis::Writes(tables)
    }
}

fn table_name(name: &ObjectName) -> Option<TableName> {
    let parts: Vec<_> = name.0.iter().filter_map(|p| p.as_ident()).collect();
    let table = parts.last()?;
    Some(TableName {
        schema: parts.len().checked_sub(2).and_then(|i| parts.get(i)).map(|s| s.value.clone()),
        table: table.value.clone(),
        quoted: table.quote_style.is_some(),
    })
}

fn whole(name: &ObjectName) -> Option<Write> {
    Some(Write {
        table: table_name(name)?,
        target: name.to_string(),
        kind: WriteKind::Whole,
        returning: false,
        script: false,
    })
}

fn column_name(name: &ObjectName) -> Option<String> {
    name.0.iter().filter_map(|p| p.as_ident()).next_back().map(|i| i.value.clone())
}

/// The position (in the statement's values) of a placeholder.
fn param_index(text: &str, at: Location, ph: &Placeholders) -> Option<usize> {
    if text == "?" {
        return ph.bare.iter().position(|l| *l == at);
    }
    let n: usize = text.strip_prefix('$')?.parse().ok()?;
    n.checked_sub(1)
}

fn operand(e: &Expr, ph: &Placeholders) -> Operand {
    match e {
        Expr::Value(v) => match &v.value {
            SqlValue::Placeholder(text) if !ph.unmapped => match param_index(text, v.span.start, ph) {
                Some(i) => Operand::Param(i),
                None => Operand::Computed,
            },
            SqlValue::Placeholder(_) => Operand::Computed,
            other => Operand::Literal(literal(other)),
        },
        Expr::Nested(inner) => operand(inner, ph),
        Expr::UnaryOp { op: sqlparser::ast::UnaryOperator::Minus, expr } => match operand(expr, ph) {
            Operand::Literal(Some(matroska::Value::Int(i))) => Operand::Literal(Some(matroska::Value::Int(-i))),
            _ => Operand::Computed,
        },
        _ => Operand::Computed,
    }
}

fn single_table(t: &TableWithJoins) -> Option<(TableName, String)> {
    if !t.joins.is_empty() {
        return None;
    }
    match &t.relation {
        TableFactor::Table { name, .. } => Some((table_name(name)?, t.relation.to_string())),
        _ => None,
    }
}

fn insert(ins: &sqlparser::ast::Insert, ph: &Placeholders) -> Analysis {
    let TableObject::TableName(name) = &ins.table else {
        return Analysis::Unattributable("an INSERT into a table function");
    };
    let Some(table) = table_name(name) else { return Analysis::Unparsed("an INSERT without a table".into()) };
    let target = name.to_string();
    let returning = ins.returning.is_some();
    // `ON DUPLICATE KEY UPDATE id = id` (how SeaORM says DO NOTHING on
    // MySQL) changes nothing
    // (`new.id` of a MySQL 8 row alias `AS new` is the new value: not a no-op)
    let noop = |a: &Assignment| match (&a.target, &a.value) {
        (AssignmentTarget::ColumnName(name), Expr::Identifier(i)) => column_name(name).as_deref() == Some(&i.value),
        (AssignmentTarget::ColumnName(name), Expr::CompoundIdentifier(parts)) => match parts.as_slice() {
            [.., qualifier, column] => {
                column_name(name).as_deref() == Some(&column.value)
                    && qualifier.value.eq_ignore_ascii_case(&table.table)
                    && ins.insert_alias.is_none()
            }
            _ => false,
        },
        _ => false,
    };
    let replace = ins.replace_into || ins.or.is_some_and(|o| matches!(o, sqlparser::ast::SqliteOnConflict::Replace));
    let upsert = replace
        || matches!(&ins.on, Some(OnInsert::DuplicateKeyUpdate(a)) if !a.iter().all(noop))
        || matches!(&ins.on, Some(OnInsert::OnConflict(c)) if matches!(c.action, sqlparser::ast::OnConflictAction::DoUpdate(_)));
    let columns: Vec<String> = ins.columns.iter().filter_map(column_name).collect();
    let rows = match ins.source.as_deref().map(|q| (&*q.body, q.with.is_none())) {
        Some((SetExpr::Values(values), true)) if !columns.is_empty() => values
            .rows
            .iter()
            .map(|row| row.content.iter().map(|e| operand(e, ph)).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        _ => return Analysis::Writes(vec![Write { table, target, kind: WriteKind::Whole, returning, script: false }]),
    };
    if rows.iter().any(|r| r.len() != columns.len()) {
        return Analysis::Writes(vec![Write { table, target, kind: WriteKind::Whole, returning, script: false }]);
    }
    Analysis::Writes(vec![Write {
        table,
        target,
        kind: WriteKind::Insert { columns, rows, upsert, replace },
        returning,
        script: false,
    }])
}

fn update(u: &sqlparser::ast::Update, ph: &Placeholders, dialect: &dyn SqlDialect) -> Analysis {
    let returning = u.returning.is_some();
    let Some((table, target)) = single_table(&u.table) else {
        // UPDATE a JOIN b (MySQL): every table named may change
        let mut writes = Vec::new();
        if let TableFactor::Table { name, .. } = &u.table.relation {
            writes.extend(whole(name));
        }
        for j in &u.table.joins {
            if let TableFactor::Table { name, .. } = &j.relation {
                writes.extend(whole(name));
            }
        }
        return if writes.is_empty() {
            Analysis::Unattributable("an UPDATE of something other than a table")
        } else {
            Analysis::Writes(writes)
        };
    };
    let assignments = assignments(&u.assignments, ph);
    // SQLite's `UPDATE OR REPLACE` deletes the rows it conflicts with
    let replaces = matches!(u.or, Some(sqlparser::ast::SqliteOnConflict::Replace));
    let kind = match (assignments, &u.from, u.limit.is_some() || !u.order_by.is_empty() || replaces) {
        (Some(a), None, false) => {
            WriteKind::Update { assignments: a, filter: filter(u.selection.as_ref(), ph, dialect) }
        }
        _ => WriteKind::Whole,
    };
    Analysis::Writes(vec![Write { table, target, kind, returning, script: false }])
}

fn assignments(list: &[Assignment], ph: &Placeholders) -> Option<Vec<(String, Operand)>> {
    list.iter()
        .map(|a| match &a.target {
            AssignmentTarget::ColumnName(name) => Some((column_name(name)?, operand(&a.value, ph))),
            AssignmentTarget::Tuple(_) => None,
        })
        .collect()
}

fn delete(d: &sqlparser::ast::Delete, ph: &Placeholders, dialect: &dyn SqlDialect) -> Analysis {
    let returning = d.returning.is_some();
    let from = match &d.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    let simple = d.tables.is_empty() && d.using.is_none() && d.limit.is_none() && d.order_by.is_empty();
    match (from.as_slice(), simple) {
        ([one], true) => match single_table(one) {
            Some((table, target)) => Analysis::Writes(vec![Write {
                table,
                target,
                kind: WriteKind::Delete { filter: filter(d.selection.as_ref(), ph, dialect) },
                returning,
                script: false,
            }]),
            None => Analysis::Unattributable("a DELETE from something other than a table"),
        },
        _ => {
            // multi-table forms: the named targets, or every table named
            let names: Vec<&ObjectName> = if d.tables.is_empty() {
                from.iter()
                    .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
                    .filter_map(|f| match f {
                        TableFactor::Table { name, .. } => Some(name),
                        _ => None,
                    })
                    .collect()
            } else {
                // `DELETE c FROM comment AS c JOIN ...`: targets may be aliases
                let factors: Vec<&TableFactor> = from
                    .iter()
                    .chain(d.using.iter().flatten())
                    .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
                    .collect();
                d.tables
                    .iter()
                    .map(|target| {
                        let single = match target.0.as_slice() {
                            [one] => one.as_ident(),
                            _ => None,
                        };
                        factors
                            .iter()
                            .find_map(|f| match (f, single) {
                                (TableFactor::Table { name, alias: Some(a), .. }, Some(t))
                                    if a.name.value.eq_ignore_ascii_case(&t.value) =>
                                {
                                    Some(name)
                                }
                                _ => None,
                            })
                            .unwrap_or(target)
                    })
                    .collect()
            };
            Analysis::Writes(names.into_iter().filter_map(whole).collect())
        }
    }
}

fn filter(selection: Option<&Expr>, ph: &Placeholders, dialect: &dyn SqlDialect) -> Filter {
    let Some(expr) = selection else {
        return Filter { sql: None, equalities: Some(Vec::new()), subquery: false };
    };
    let sql = if ph.unmapped {
        None
    } else {
        // the parameters the condition uses, in the order it prints them
        let span = expr.span();
        let printed = expr.to_string();
        let mut params = Vec::new();
        collect_params(dialect, &printed, span.start, span.end, ph, &mut params).map(|()| (printed, params))
    };
    let mut pairs = Vec::new();
    let equalities = equalities(expr, ph, &mut pairs).then_some(pairs);
    let subquery = has_subquery(dialect, &expr.to_string());
    // without the parameters' positions (`sql: None`) the condition cannot be re-run
    Filter { sql, equalities, subquery }
}

/// Whether a printed condition holds a `SELECT` (a subquery, `EXISTS`,
/// `IN (SELECT ...)`); also when it cannot be tokenized.
fn has_subquery(dialect: &dyn SqlDialect, printed: &str) -> bool {
    match Tokenizer::new(dialect, printed).tokenize() {
        Ok(tokens) => {
            tokens.iter().any(|t| matches!(t, Token::Word(w) if w.keyword == sqlparser::keywords::Keyword::SELECT))
        }
        Err(_) => true,
    }
}

/// The positions of the parameters of a condition printed as `printed`,
/// located in the statement between `start` and `end`.
fn collect_params(
    dialect: &dyn SqlDialect,
    printed: &str,
    start: Location,
    end: Location,
    ph: &Placeholders,
    out: &mut Vec<usize>,
) -> Option<()> {
    let tokens = Tokenizer::new(dialect, printed).tokenize().ok()?;
    let in_span =
        |l: &Location| (l.line, l.column) >= (start.line, start.column) && (l.line, l.column) <= (end.line, end.column);
    let mut bare = ph.bare.iter().enumerate().filter(|(_, l)| in_span(l)).map(|(i, _)| i);
    for t in tokens {
        if let Token::Placeholder(text) = t {
            if text == "?" {
                out.push(bare.next()?);
            } else {
                out.push(text.strip_prefix('$')?.parse::<usize>().ok()?.checked_sub(1)?);
            }
        }
    }
    // every bare placeholder inside the condition was printed
    if bare.next().is_some() {
        return None;
    }
    Some(())
}

/// Whether `e` is `col = value [AND col = value ...]`; collects the pairs.
fn equalities(e: &Expr, ph: &Placeholders, out: &mut Vec<(String, Operand)>) -> bool {
    match e {
        Expr::Nested(inner) => equalities(inner, ph, out),
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            equalities(left, ph, out) && equalities(right, ph, out)
        }
        Expr::BinaryOp { left, op: BinaryOperator::Eq, right } => {
            let column = |e: &Expr| match e {
                Expr::Identifier(i) => Some(i.value.clone()),
                Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
                _ => None,
            };
            match (column(left), column(right)) {
                (Some(c), None) => {
                    out.push((c, operand(right, ph)));
                    true
                }
                (None, Some(c)) => {
                    out.push((c, operand(left, ph)));
                    true
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// Renders `SELECT * FROM <table> WHERE <condition>` for `dialect`, with the
/// condition's parameters renumbered for a statement of its own. Returns the
/// SQL and the positions (in the original values) of its parameters.
pub fn select_rows(dialect: Dialect, target: &str, filter: &Filter, lock: bool) -> Option<(String, Vec<usize>)> {
    let mut sql = String::from("SELECT * FROM ");
    sql.push_str(target);
    let mut params = Vec::new();
    if let Some((condition, used)) = &filter.sql {
        sql.push_str(" WHERE ");
        if dialect == Dialect::Postgres {
            sql.push_str(&renumber(condition)?);
        } else {
            sql.push_str(condition);
        }
        params.clone_from(used);
    } else if filter.equalities.as_ref().is_none_or(|e| !e.is_empty()) {
        // a condition we could not render
        return None;
    }
    if lock && dialect != Dialect::Sqlite {
        sql.push_str(" FOR UPDATE");
    }
    Some((sql, params))
}

/// Rewrites `$n` placeholders to `$1, $2, ...` in order of appearance.
fn renumber(condition: &str) -> Option<String> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, condition).tokenize().ok()?;
    let mut out = String::with_capacity(condition.len());
    let mut k = 0;
    for t in tokens {
        match t {
            Token::Placeholder(text) if text.starts_with('$') => {
                k += 1;
                out.push_str(&format!("${k}"));
            }
            other => out.push_str(&other.to_string()),
        }
    }
    Some(out)
}

/// A bounded cache of analyses by statement text.
#[derive(Debug)]
pub struct Analyses {
    cache: moka::sync::Cache<(Dialect, Arc<str>), Arc<Analysis>>,
}

impl Analyses {
    /// A cache of at most `capacity` statement texts.
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        Analyses { cache: moka::sync::Cache::new(capacity) }
    }

    /// The analysis of `sql` in `dialect`, from the cache or made now.
    pub fn get(&self, sql: &str, dialect: Dialect) -> Arc<Analysis> {
        if is_plain_select(sql) {
            static READ: std::sync::LazyLock<Arc<Analysis>> = std::sync::LazyLock::new(|| Arc::new(Analysis::Read));
            return Arc::clone(&READ);
        }
        let key = (dialect, Arc::<str>::from(sql));
        if let Some(a) = self.cache.get(&key) {
            return a;
        }
        let a = Arc::new(analyse(sql, dialect));
        self.cache.insert(key, Arc::clone(&a));
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(sql: &str, dialect: Dialect) -> Vec<Write> {
        match analyse(sql, dialect) {
            Analysis::Writes(w) => w,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn plain_selects_skip_the_parser() {
        assert!(is_plain_select("SELECT 1"));
        assert!(is_plain_select("  /* c */ -- x\n select * from t"));
        assert!(!is_plain_select("selector"));
        assert!(!is_plain_select("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x"));
        assert!(matches!(analyse("SELECT 1", Dialect::Postgres), Analysis::Read));
    }

    #[test]
    fn seaorm_update_by_key() {
        let w = writes(
            r#"UPDATE "article" SET "title" = $1, "published" = $2 WHERE "article"."id" = $3 RETURNING "id", "title""#,
            Dialect::Postgres,
        );
        assert_eq!(w[0].table.table, "article");
        assert!(w[0].returning);
        let WriteKind::Update { assignments, filter } = &w[0].kind else { panic!() };
        assert_eq!(assignments, &vec![("title".into(), Operand::Param(0)), ("published".into(), Operand::Param(1))]);
        assert_eq!(filter.equalities, Some(vec![("id".into(), Operand::Param(2))]));
        assert_eq!(filter.sql.as_ref().unwrap().1, vec![2]);
        let (sql, params) = select_rows(Dialect::Postgres, &w[0].target, filter, true).unwrap();
        assert_eq!(sql, r#"SELECT * FROM "article" WHERE "article"."id" = $1 FOR UPDATE"#);
        assert_eq!(params, vec![2]);
    }

    #[test]
    fn bare_placeholders_are_numbered_by_position() {
        let w = writes(
            "UPDATE `article` SET `price` = `price` + ? WHERE `article`.`title` LIKE ? AND `article`.`id` > ? LIMIT 5",
            Dialect::MySql,
        );
        assert!(matches!(w[0].kind, WriteKind::Whole), "LIMIT: rows cannot be told");
        let w = writes(
            "UPDATE `article` SET `price` = `price` + ? WHERE `article`.`title` LIKE ? AND `article`.`id` > ?",
            Dialect::MySql,
        );
        let WriteKind::Update { assignments, filter } = &w[0].kind else { panic!() };
        assert_eq!(assignments[0].1, Operand::Computed);
        assert_eq!(filter.equalities, None);
        let (sql, params) = select_rows(Dialect::MySql, &w[0].target, filter, true).unwrap();
        assert_eq!(sql, "SELECT * FROM `article` WHERE `article`.`title` LIKE ? AND `article`.`id` > ? FOR UPDATE");
        assert_eq!(params, vec![1, 2]);
    }

    #[test]
    fn inserts_and_upserts() {
        let w = writes(
            r#"INSERT INTO "tag" ("id", "displayName") VALUES (?, ?), (?, 'x') ON CONFLICT ("id") DO NOTHING RETURNING "id""#,
            Dialect::Sqlite,
        );
        let WriteKind::Insert { columns, rows, upsert, .. } = &w[0].kind else { panic!() };
        assert_eq!(columns, &vec!["id".to_owned(), "displayName".to_owned()]);
        assert_eq!(rows[1], vec![Operand::Param(2), Operand::Literal(Some(matroska::Value::Str("x".into())))]);
        assert!(!upsert);
        let w = writes("INSERT INTO `a` (`id`) VALUES (?) ON DUPLICATE KEY UPDATE `id` = `id`", Dialect::MySql);
        assert!(matches!(w[0].kind, WriteKind::Insert { upsert: false, .. }), "a no-op update changes nothing");
        let w = writes(
            "INSERT INTO `a` (`id`, `x`) VALUES (?, ?) ON DUPLICATE KEY UPDATE `x` = VALUES(`x`)",
            Dialect::MySql,
        );
        assert!(matches!(w[0].kind, WriteKind::Insert { upsert: true, .. }));
        let w = writes("INSERT INTO a (id) SELECT id FROM b", Dialect::Postgres);
        assert!(matches!(w[0].kind, WriteKind::Whole));
    }

    #[test]
    fn control_ddl_and_garbage() {
        assert!(matches!(analyse("BEGIN", Dialect::Sqlite), Analysis::Control("BEGIN")));
        assert!(matches!(analyse("ROLLBACK TO SAVEPOINT x", Dialect::Postgres), Analysis::Control("ROLLBACK")));
        assert!(matches!(analyse("THIS IS NOT SQL", Dialect::Postgres), Analysis::Unparsed(_)));
        assert!(matches!(analyse("CREATE TABLE t (id int)", Dialect::Postgres), Analysis::Nothing));
        let w = writes("TRUNCATE TABLE article", Dialect::Postgres);
        assert!(matches!(w[0].kind, WriteKind::Whole) && w[0].table.table == "article" && !w[0].table.quoted);
        let w = writes("UPDATE a SET x = 1; DELETE FROM b WHERE id = 2", Dialect::Postgres);
        assert_eq!(w.len(), 2);
        assert!(w.iter().all(|w| matches!(w.kind, WriteKind::Whole)));
        let w = writes("WITH gone AS (DELETE FROM a WHERE id = $1 RETURNING *) SELECT * FROM gone", Dialect::Postgres);
        assert_eq!(w[0].table.table, "a");
        assert!(matches!(analyse("CALL refresh()", Dialect::Postgres), Analysis::Unattributable(_)));
    }

    #[test]
    fn deletes() {
        let w = writes(
            r#"DELETE FROM "article_tag" WHERE "article_tag"."article_id" = $1 AND "article_tag"."tag_id" = $2"#,
            Dialect::Postgres,
        );
        let WriteKind::Delete { filter } = &w[0].kind else { panic!() };
        assert_eq!(filter.equalities.as_ref().unwrap().len(), 2);
        let w = writes("DELETE FROM a", Dialect::Sqlite);
        let WriteKind::Delete { filter } = &w[0].kind else { panic!() };
        assert_eq!(select_rows(Dialect::Sqlite, &w[0].target, filter, true).unwrap().0, "SELECT * FROM a");
        let w = writes("DELETE a FROM a JOIN b ON a.id = b.id", Dialect::MySql);
        assert!(matches!(w[0].kind, WriteKind::Whole));
    }

    #[test]
    fn scripts_and_statements_that_hide_writes() {
        // a script starting with SELECT is not a plain read
        assert!(is_plain_select("SELECT 1;"));
        assert!(!is_plain_select("SELECT 1; UPDATE article SET views = 0"));
        let w = writes("SELECT 1; UPDATE article SET views = 0", Dialect::Sqlite);
        assert_eq!(w[0].table.table, "article");
        // TRUNCATE ... CASCADE empties referencing tables too
        assert!(matches!(analyse("TRUNCATE article CASCADE", Dialect::Postgres), Analysis::Unattributable(_)));
        // EXPLAIN ANALYZE runs the statement, in either spelling
        let w = writes("EXPLAIN (ANALYZE, BUFFERS) UPDATE article SET views = 0 WHERE id = $1", Dialect::Postgres);
        assert!(matches!(w[0].kind, WriteKind::Whole));
        let w = writes("EXPLAIN ANALYZE DELETE FROM article", Dialect::Postgres);
        assert!(matches!(w[0].kind, WriteKind::Whole));
        let a = analyse("EXPLAIN (ANALYZE false) UPDATE article SET views = 0", Dialect::Postgres);
        assert!(matches!(a, Analysis::Read | Analysis::Nothing), "{a:?}");
        assert!(matches!(
            analyse("EXPLAIN UPDATE article SET views = 0", Dialect::Postgres),
            Analysis::Read | Analysis::Nothing
        ));
        // SQLite's UPDATE OR REPLACE deletes conflicting rows
        let w = writes("UPDATE OR REPLACE tag SET name = ? WHERE id = ?", Dialect::Sqlite);
        assert!(matches!(w[0].kind, WriteKind::Whole));
        let w = writes("UPDATE OR IGNORE tag SET name = ? WHERE id = ?", Dialect::Sqlite);
        assert!(matches!(w[0].kind, WriteKind::Update { .. }));
    }

    #[test]
    fn aliases_and_upserts() {
        // MySQL multi-table deletes name aliases
        let w = writes(
            "DELETE c FROM comment AS c JOIN article AS a ON c.article_id = a.id WHERE a.id = ?",
            Dialect::MySql,
        );
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].table.table, "comment");
        assert!(matches!(w[0].kind, WriteKind::Whole));
        let w = writes("DELETE comment, a FROM comment JOIN article a ON comment.article_id = a.id", Dialect::MySql);
        let names: Vec<&str> = w.iter().map(|w| w.table.table.as_str()).collect();
        assert_eq!(names, ["comment", "article"]);
        // SeaORM's DO NOTHING on MySQL is a no-op; a row alias's value is not
        let w = writes(
            "INSERT INTO `a` (`id`, `b`) VALUES (?, ?) ON DUPLICATE KEY UPDATE `a`.`id` = `a`.`id`",
            Dialect::MySql,
        );
        assert!(matches!(w[0].kind, WriteKind::Insert { upsert: false, .. }));
        let w = writes("INSERT INTO a (id, b) VALUES (?, ?) AS new ON DUPLICATE KEY UPDATE b = new.b", Dialect::MySql);
        assert!(matches!(w[0].kind, WriteKind::Insert { upsert: true, .. }));
        // names match without regard to case, quoted or not
        let w = writes(r#"UPDATE "ARTICLE" SET views = 0"#, Dialect::Sqlite);
        assert!(w[0].table.matches("article", None));
    }

    #[test]
    fn subqueries_in_conditions() {
        let w = writes("UPDATE article SET published = false WHERE category_id = $1", Dialect::Postgres);
        let WriteKind::Update { filter, .. } = &w[0].kind else { panic!() };
        assert!(!filter.subquery);
        let w = writes(
            "UPDATE article SET published = false WHERE author_id IN (SELECT id FROM author WHERE banned)",
            Dialect::Postgres,
        );
        let WriteKind::Update { filter, .. } = &w[0].kind else { panic!() };
        assert!(filter.subquery);
        let w = writes(
            "DELETE FROM article WHERE EXISTS (SELECT 1 FROM author WHERE author.id = article.author_id)",
            Dialect::Sqlite,
        );
        let WriteKind::Delete { filter } = &w[0].kind else { panic!() };
        assert!(filter.subquery);
    }
}
