//! What the connection needs from each database backend: its SQL dialect,
//! the text and parameters of a Diesel query, values read back from rows,
//! and how it locks rows and opens transactions of its own.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, QueryFragment};
use diesel::QueryResult;
use matroska::Value;

/// A database backend a [`CachedConnection`](crate::CachedConnection)
/// supports: PostgreSQL (feature `postgres`) and SQLite (feature `sqlite`).
///
/// MySQL/MariaDB is not supported: the connection learns what a write
/// changed from a `RETURNING` clause, which MySQL lacks (and MariaDB lacks
/// for `UPDATE`).
pub trait CacheBackend: Backend + Default + Send + Sync + Sized + 'static {
    /// The statement dialect.
    const DIALECT: matroska_sql::Dialect;
    /// `FOR UPDATE` where the database has it.
    const LOCK: &'static str;
    /// How a transaction of the connection's own begins (SQLite takes the
    /// write lock at once: `BEGIN IMMEDIATE`).
    const BEGIN_OWN: &'static str;
    /// A query's parameters, owned.
    type Binds: Send + Sync + 'static;

    /// The SQL text of a query, as Diesel sends it.
    ///
    /// # Errors
    /// Diesel's error building it.
    fn sql<T: QueryFragment<Self> + ?Sized>(query: &T) -> QueryResult<String>;

    /// The parameters of a query, owned.
    ///
    /// # Errors
    /// Diesel's error serialising a value.
    fn binds<T: QueryFragment<Self> + ?Sized>(query: &T) -> QueryResult<Self::Binds>;

    /// Pushes owned parameters into a query being built.
    ///
    /// # Errors
    /// Diesel's error.
    fn push_binds(pass: &mut AstPass<'_, '_, Self>, binds: &Self::Binds) -> QueryResult<()>;

    /// The parameter `n` (from 1) as written in SQL text.
    fn placeholder(n: usize) -> String;

    /// A condition that is always true and uses parameter `n`.
    fn noop_param(n: usize) -> String;

    /// A field's value, loosely typed (brought to its column's kind later).
    ///
    /// # Errors
    /// A type this crate cannot read.
    fn decode(raw: Self::RawValue<'_>) -> Result<Value, String>;
}

#[cfg(feature = "postgres")]
mod pg {
    use diesel::deserialize::FromSql;
    use diesel::pg::{Pg, PgMetadataLookup, PgTypeMetadata, PgValue};
    use diesel::query_builder::{AstPass, QueryBuilder, QueryFragment};
    use diesel::sql_types;
    use diesel::QueryResult;
    use matroska::Value;

    use super::CacheBackend;

    /// Custom types (a PostgreSQL enum declared with `#[diesel(postgres_type(name = ..))]`)
    /// have no OID here; the server infers them from the statement.
    struct NoLookup;

    impl PgMetadataLookup for NoLookup {
        fn lookup_type(&mut self, _type_name: &str, _schema: Option<&str>) -> PgTypeMetadata {
            PgTypeMetadata::new(0, 0)
        }
    }

    fn read<T: FromSql<ST, Pg>, ST>(raw: PgValue<'_>) -> Result<T, String> {
        T::from_sql(raw).map_err(|e| e.to_string())
    }

    impl CacheBackend for Pg {
        const DIALECT: matroska_sql::Dialect = matroska_sql::Dialect::Postgres;
        const LOCK: &'static str = " FOR UPDATE";
        const BEGIN_OWN: &'static str = "BEGIN";
        type Binds = diesel::query_builder::bind_collector::RawBytesBindCollector<Pg>;

        fn sql<T: QueryFragment<Pg> + ?Sized>(query: &T) -> QueryResult<String> {
            let mut qb = diesel::pg::PgQueryBuilder::default();
            query.to_sql(&mut qb, &Pg)?;
            Ok(qb.finish())
        }

        fn binds<T: QueryFragment<Pg> + ?Sized>(query: &T) -> QueryResult<Self::Binds> {
            let mut collector = diesel::query_builder::bind_collector::RawBytesBindCollector::<Pg>::new();
            query.collect_binds(&mut collector, &mut NoLookup, &Pg)?;
            Ok(collector)
        }

        fn push_binds(pass: &mut AstPass<'_, '_, Pg>, binds: &Self::Binds) -> QueryResult<()> {
            pass.push_bind_collector_data(binds)
        }

        fn placeholder(n: usize) -> String {
            format!("${n}")
        }

        fn noop_param(n: usize) -> String {
            format!("(${n}::text IS NULL OR TRUE)")
        }

        fn decode(raw: PgValue<'_>) -> Result<Value, String> {
            Ok(match raw.get_oid().get() {
                16 => Value::Bool(read::<bool, sql_types::Bool>(raw)?),
                21 => Value::Int(i64::from(read::<i16, sql_types::SmallInt>(raw)?)),
                23 => Value::Int(i64::from(read::<i32, sql_types::Integer>(raw)?)),
                20 => Value::Int(read::<i64, sql_types::BigInt>(raw)?),
                26 => Value::Int(i64::from(read::<u32, sql_types::Oid>(raw)?)),
                700 => Value::Float(f64::from(read::<f32, sql_types::Float>(raw)?)),
                701 => Value::Float(read::<f64, sql_types::Double>(raw)?),
                25 | 1043 | 1042 | 19 => Value::Str(read::<String, sql_types::Text>(raw)?),
                17 => Value::Bytes(read::<Vec<u8>, sql_types::Binary>(raw)?),
                #[cfg(feature = "with-chrono")]
                1082 => crate::ToValue::to_value(&read::<chrono::NaiveDate, sql_types::Date>(raw)?),
                #[cfg(feature = "with-chrono")]
                1083 => crate::ToValue::to_value(&read::<chrono::NaiveTime, sql_types::Time>(raw)?),
                #[cfg(feature = "with-chrono")]
                1114 => crate::ToValue::to_value(&read::<chrono::NaiveDateTime, sql_types::Timestamp>(raw)?),
                #[cfg(feature = "with-chrono")]
                1184 => crate::ToValue::to_value(&read::<chrono::DateTime<chrono::Utc>, sql_types::Timestamptz>(raw)?),
                #[cfg(feature = "with-uuid")]
                2950 => crate::ToValue::to_value(&read::<uuid::Uuid, sql_types::Uuid>(raw)?),
                oid => return Err(format!("a PostgreSQL value of type OID {oid}")),
            })
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use diesel::backend::Backend;
    use diesel::query_builder::{AstPass, MoveableBindCollector, QueryBuilder, QueryFragment};
    use diesel::sqlite::{Sqlite, SqliteType, SqliteValue};
    use diesel::QueryResult;
    use matroska::Value;

    use super::CacheBackend;

    impl CacheBackend for Sqlite {
        const DIALECT: matroska_sql::Dialect = matroska_sql::Dialect::Sqlite;
        const LOCK: &'static str = "";
        const BEGIN_OWN: &'static str = "BEGIN IMMEDIATE";
        type Binds = <<Sqlite as Backend>::BindCollector<'static> as MoveableBindCollector<Sqlite>>::BindData;

        fn sql<T: QueryFragment<Sqlite> + ?Sized>(query: &T) -> QueryResult<String> {
            let mut qb = diesel::sqlite::SqliteQueryBuilder::new();
            query.to_sql(&mut qb, &Sqlite)?;
            Ok(qb.finish())
        }

        fn binds<T: QueryFragment<Sqlite> + ?Sized>(query: &T) -> QueryResult<Self::Binds> {
            let mut collector = <Sqlite as Backend>::BindCollector::default();
            query.collect_binds(&mut collector, &mut (), &Sqlite)?;
            Ok(collector.moveable())
        }

        fn push_binds(pass: &mut AstPass<'_, '_, Sqlite>, binds: &Self::Binds) -> QueryResult<()> {
            pass.push_bind_collector_data(binds)
        }

        fn placeholder(n: usize) -> String {
            format!("?{n}")
        }

        fn noop_param(n: usize) -> String {
            format!("(?{n} IS NULL OR 1)")
        }

        fn decode(mut raw: SqliteValue<'_, '_, '_>) -> Result<Value, String> {
            Ok(match raw.value_type() {
                Some(SqliteType::Integer | SqliteType::Long | SqliteType::SmallInt) => Value::Int(raw.read_long()),
                Some(SqliteType::Double | SqliteType::Float) => Value::Float(raw.read_double()),
                Some(SqliteType::Binary) => Value::Bytes(raw.read_blob().to_vec()),
                Some(_) => Value::Str(raw.read_text().to_owned()),
                None => Value::Null,
            })
        }
    }
}
