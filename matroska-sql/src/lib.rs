//! SQL statement analysis and the outbox format shared by matroska's ORM
//! integrations ([`matroska-seaorm`](https://docs.rs/matroska-seaorm) and
//! [`matroska-diesel`](https://docs.rs/matroska-diesel)).
//!
//! An ORM integration sees the text of every statement its connection runs.
//! [`analyse`] reads that text (with the [`sqlparser`] crate, in the
//! connection's [`Dialect`]) and says what it does as far as a cache is
//! concerned: a read, writes to which tables (which rows, which columns, with
//! which values), transaction control, or something that cannot be
//! attributed. [`Analyses`] caches analyses by text: an ORM sends the same
//! text for every call of the same shape.
//!
//! [`outbox`] is the format of durable invalidation intents, so that every
//! integration writes and drains the same table.
//!
//! Most applications never use this crate directly.

pub mod outbox;
mod statement;

pub use statement::{
    analyse, is_plain_select, select_rows, Analyses, Analysis, Filter, Operand, TableName, Write, WriteKind,
};

/// The SQL dialect of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL and MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}
