//! Canonical forms of SeaORM values, so that a key or a scope value encodes the
//! same whichever path produced it: a model read from the database, the
//! parameters of a statement, or a value written by hand in a list's
//! condition.

use matroska::Value;
use sea_orm::sea_query::ColumnType;
use sea_orm::Value as SeaValue;

use crate::Error;

/// Converts a SeaORM value into its canonical matroska [`Value`].
///
/// | SeaORM value | canonical form |
/// |---|---|
/// | every integer width | [`Value::Int`] (above `i64::MAX`: [`Value::UInt`]) |
/// | `bool` | [`Value::Bool`] |
/// | `f32`, `f64` | [`Value::Float`] (`-0.0` = `0.0`) |
/// | `String`, `char`, active enums | [`Value::Str`], verbatim |
/// | bytes | [`Value::Bytes`] |
/// | `NULL` of any type | [`Value::Null`] |
/// | UUID (`with-uuid`) | lowercase hyphenated string |
/// | JSON (`with-json`) | the JSON text with object keys sorted, no spaces |
/// | dates and times (`with-chrono`, `with-time`) | ISO 8601; a timestamp with an offset becomes the same instant in UTC (`2024-01-02T03:04:05.000000006Z`) |
/// | decimals (`with-rust_decimal`) | the normalised number (`1.50` = `1.5`) |
///
/// # Errors
/// [`Error::UnsupportedValue`] for a type with no canonical form here
/// (arrays, vectors, network addresses, ranges, and the types above when
/// their feature of this crate is off): such a value cannot take part in a
/// dependency, rather than being rendered through `Debug`.
pub fn to_value(v: &SeaValue) -> Result<Value, Error> {
    Ok(match v {
        SeaValue::Bool(Some(b)) => Value::Bool(*b),
        SeaValue::TinyInt(Some(i)) => Value::Int(i64::from(*i)),
        SeaValue::SmallInt(Some(i)) => Value::Int(i64::from(*i)),
        SeaValue::Int(Some(i)) => Value::Int(i64::from(*i)),
        SeaValue::BigInt(Some(i)) => Value::Int(*i),
        SeaValue::TinyUnsigned(Some(i)) => Value::Int(i64::from(*i)),
        SeaValue::SmallUnsigned(Some(i)) => Value::Int(i64::from(*i)),
        SeaValue::Unsigned(Some(i)) => Value::Int(i64::from(*i)),
        SeaValue::BigUnsigned(Some(u)) => Value::from(*u),
        SeaValue::Float(Some(f)) => Value::Float(f64::from(*f)),
        SeaValue::Double(Some(f)) => Value::Float(*f),
        SeaValue::String(Some(s)) => Value::Str(s.clone()),
        SeaValue::Char(Some(c)) => Value::Str(c.to_string()),
        SeaValue::Bytes(Some(b)) => Value::Bytes(b.clone()),
        SeaValue::Enum(sea_orm::sea_query::OptionEnum::Some(e)) => Value::Str(e.value.to_string()),
        other if is_null(other) => Value::Null,
        #[allow(unreachable_patterns)]
        other => return extended(other),
    })
}

/// The canonical form of a primary-key component: [`to_value`], or, for a
/// type without one (a network address, say), its SQL literal as
/// PostgreSQL's query builder renders it (deterministic per type), marked so
/// it cannot meet a string. Keys must always be derivable, so they never fail.
pub(crate) fn key_value(v: &SeaValue) -> Value {
    match to_value(v) {
        Ok(v) => v,
        Err(_) => {
            use sea_orm::sea_query::QueryBuilder;
            Value::Str(format!("\u{0}sql:{}", sea_orm::sea_query::PostgresQueryBuilder.value_to_string(v)))
        }
    }
}

fn is_null(v: &SeaValue) -> bool {
    *v == v.as_null()
}

fn unsupported(v: &SeaValue) -> Error {
    let name = format!("{v:?}");
    let kind = name.split('(').next().unwrap_or("value").to_owned();
    Error::UnsupportedValue { kind }
}

/// The types whose canonical form needs an optional feature.
fn extended(v: &SeaValue) -> Result<Value, Error> {
    match v {
        #[cfg(feature = "with-uuid")]
        SeaValue::Uuid(Some(u)) => Ok(Value::Str(u.hyphenated().to_string())),
        #[cfg(feature = "with-json")]
        SeaValue::Json(Some(j)) => Ok(Value::Str(canonical_json(j))),
        #[cfg(feature = "with-rust_decimal")]
        SeaValue::Decimal(Some(d)) => Ok(Value::Str(d.normalize().to_string())),
        #[cfg(feature = "with-chrono")]
        SeaValue::ChronoDate(Some(d)) => Ok(Value::Str(d.format("%Y-%m-%d").to_string())),
        #[cfg(feature = "with-chrono")]
        SeaValue::ChronoTime(Some(t)) => Ok(Value::Str(t.format("%H:%M:%S%.9f").to_string())),
        #[cfg(feature = "with-chrono")]
        SeaValue::ChronoDateTime(Some(t)) => Ok(Value::Str(t.format("%Y-%m-%dT%H:%M:%S%.9f").to_string())),
        #[cfg(feature = "with-chrono")]
        SeaValue::ChronoDateTimeUtc(Some(t)) => Ok(Value::Str(utc(t))),
        #[cfg(feature = "with-chrono")]
        SeaValue::ChronoDateTimeLocal(Some(t)) => Ok(Value::Str(utc(&t.with_timezone(&chrono::Utc)))),
        #[cfg(feature = "with-chrono")]
        SeaValue::ChronoDateTimeWithTimeZone(Some(t)) => Ok(Value::Str(utc(&t.with_timezone(&chrono::Utc)))),
        #[cfg(feature = "with-time")]
        SeaValue::TimeDate(Some(d)) => {
            Ok(Value::Str(format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())))
        }
        #[cfg(feature = "with-time")]
        SeaValue::TimeTime(Some(t)) => Ok(Value::Str(time_of_day(*t))),
        #[cfg(feature = "with-time")]
        SeaValue::TimeDateTime(Some(t)) => Ok(Value::Str(format!(
            "{:04}-{:02}-{:02}T{}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            time_of_day(t.time())
        ))),
        #[cfg(feature = "with-time")]
        SeaValue::TimeDateTimeWithTimeZone(Some(t)) => {
            let u = t.to_offset(time::UtcOffset::UTC);
            Ok(Value::Str(format!(
                "{:04}-{:02}-{:02}T{}Z",
                u.year(),
                u8::from(u.month()),
                u.day(),
                time_of_day(u.time())
            )))
        }
        other => Err(unsupported(other)),
    }
}

#[cfg(feature = "with-chrono")]
fn utc(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

#[cfg(feature = "with-time")]
fn time_of_day(t: time::Time) -> String {
    format!("{:02}:{:02}:{:02}.{:09}", t.hour(), t.minute(), t.second(), t.nanosecond())
}

/// JSON text with every object's keys sorted and no insignificant spaces,
/// whatever order the value was built or stored in.
#[cfg(feature = "with-json")]
pub(crate) fn canonical_json(v: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String((*k).clone()).to_string());
                    out.push(':');
                    write(&map[*k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// Brings a loosely typed condition value (a `params!` entry) to the
/// canonical form of a column of type `column`, so that `1` meets `true` in a
/// boolean column, `"2"` meets `2` in an integer column, and `1.50` meets
/// `1.5` in a decimal column.
///
/// # Errors
/// [`Error::ValueMismatch`] when the value cannot be a value of that column.
/// A statement parameter's canonical value as column `ty` stores it: a
/// loosely typed parameter (`"3"` for an integer column, `1` for a boolean)
/// is brought to the column's type, as the database converts it. `None`
/// when it cannot be told (a value the database would convert in a way this
/// crate does not follow).
pub(crate) fn param_value(table: &str, column: &str, ty: &ColumnType, v: &SeaValue) -> Option<Value> {
    let raw = to_value(v).ok()?;
    match coerce(table, column, ty, raw.clone()) {
        Ok(c) => Some(c),
        // no loose form for this column type: a typed value is canonical
        Err(Error::UnsupportedColumn { .. }) => Some(raw),
        Err(_) => None,
    }
}

/// A canonical value as a SeaORM value (to bind it, or to key a row).
pub(crate) fn to_sea(v: Value) -> SeaValue {
    match v {
        Value::Null => SeaValue::String(None),
        Value::Bool(b) => SeaValue::Bool(Some(b)),
        Value::Int(i) => SeaValue::BigInt(Some(i)),
        Value::UInt(u) => SeaValue::BigUnsigned(Some(u)),
        Value::Float(f) => SeaValue::Double(Some(f)),
        Value::Str(s) => SeaValue::String(Some(s)),
        Value::Bytes(b) => SeaValue::Bytes(Some(b)),
        // (a kind added to matroska later: its text stands for it)
        other => SeaValue::String(Some(other.to_string())),
    }
}

pub(crate) fn coerce(table: &str, column: &str, ty: &ColumnType, v: Value) -> Result<Value, Error> {
    let mismatch = |got: &Value| Error::ValueMismatch {
        table: table.to_owned(),
        column: column.to_owned(),
        expected: column_kind(ty),
        got: got.to_string(),
    };
    if v == Value::Null {
        return Ok(v);
    }
    match ty {
        ColumnType::Boolean => match &v {
            Value::Bool(_) => Ok(v),
            Value::Int(0) => Ok(Value::Bool(false)),
            Value::Int(1) => Ok(Value::Bool(true)),
            Value::Str(s) if matches!(s.as_str(), "true" | "t" | "1") => Ok(Value::Bool(true)),
            Value::Str(s) if matches!(s.as_str(), "false" | "f" | "0") => Ok(Value::Bool(false)),
            other => Err(mismatch(other)),
        },
        ColumnType::TinyInteger
        | ColumnType::SmallInteger
        | ColumnType::Integer
        | ColumnType::BigInteger
        | ColumnType::TinyUnsigned
        | ColumnType::SmallUnsigned
        | ColumnType::Unsigned
        | ColumnType::BigUnsigned
        | ColumnType::Year => match &v {
            Value::Int(_) | Value::UInt(_) => Ok(v),
            Value::Bool(b) => Ok(Value::Int(i64::from(*b))),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::Int(*f as i64)),
            Value::Str(s) => match (s.trim().parse::<i64>(), s.trim().parse::<u64>()) {
                (Ok(i), _) => Ok(Value::Int(i)),
                (_, Ok(u)) => Ok(Value::from(u)),
                _ => Err(mismatch(&v)),
            },
            other => Err(mismatch(other)),
        },
        ColumnType::Float => match &v {
            Value::Float(f) => Ok(Value::Float(f64::from(*f as f32))),
            Value::Int(i) => Ok(Value::Float(f64::from(*i as f32))),
            Value::Str(s) => s.trim().parse::<f32>().map(|f| Value::Float(f64::from(f))).map_err(|_| mismatch(&v)),
            other => Err(mismatch(other)),
        },
        ColumnType::Double => match &v {
            Value::Float(_) => Ok(v),
            Value::Int(i) => Ok(Value::Float(*i as f64)),
            Value::Str(s) => s.trim().parse::<f64>().map(Value::Float).map_err(|_| mismatch(&v)),
            other => Err(mismatch(other)),
        },
        ColumnType::Char(_) | ColumnType::String(_) | ColumnType::Text | ColumnType::Enum { .. } => match &v {
            Value::Str(_) => Ok(v),
            other => Err(mismatch(other)),
        },
        ColumnType::Blob | ColumnType::Binary(_) | ColumnType::VarBinary(_) => match &v {
            Value::Bytes(_) => Ok(v),
            Value::Str(s) => Ok(Value::Bytes(s.as_bytes().to_vec())),
            other => Err(mismatch(other)),
        },
        #[cfg(feature = "with-rust_decimal")]
        ColumnType::Decimal(_) | ColumnType::Money(_) => {
            let text = match &v {
                Value::Str(s) => s.trim().to_owned(),
                Value::Int(i) => i.to_string(),
                Value::UInt(u) => u.to_string(),
                Value::Float(f) => f.to_string(),
                other => return Err(mismatch(other)),
            };
            text.parse::<rust_decimal::Decimal>()
                .map(|d| Value::Str(d.normalize().to_string()))
                .map_err(|_| mismatch(&v))
        }
        #[cfg(feature = "with-uuid")]
        ColumnType::Uuid => match &v {
            Value::Str(s) => uuid::Uuid::parse_str(s.trim())
                .map(|u| Value::Str(u.hyphenated().to_string()))
                .map_err(|_| mismatch(&v)),
            other => Err(mismatch(other)),
        },
        #[cfg(feature = "with-json")]
        ColumnType::Json | ColumnType::JsonBinary => match &v {
            Value::Str(s) => serde_json::from_str::<serde_json::Value>(s)
                .map(|j| Value::Str(canonical_json(&j)))
                .map_err(|_| mismatch(&v)),
            other => Err(mismatch(other)),
        },
        #[cfg(feature = "with-chrono")]
        ColumnType::Date => match &v {
            Value::Str(s) => chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                .map(|d| Value::Str(d.format("%Y-%m-%d").to_string()))
                .map_err(|_| mismatch(&v)),
            other => Err(mismatch(other)),
        },
        #[cfg(feature = "with-chrono")]
        ColumnType::TimestampWithTimeZone => match &v {
            Value::Str(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
                .map(|t| Value::Str(utc(&t.with_timezone(&chrono::Utc))))
                .map_err(|_| mismatch(&v)),
            other => Err(mismatch(other)),
        },
        #[cfg(feature = "with-chrono")]
        ColumnType::DateTime | ColumnType::Timestamp => match &v {
            Value::Str(s) => chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f"))
                .map(|t| Value::Str(t.format("%Y-%m-%dT%H:%M:%S%.9f").to_string()))
                .map_err(|_| mismatch(&v)),
            other => Err(mismatch(other)),
        },
        // a column type with no loose form: only its canonical string (from
        // a typed value) can meet it
        _ => {
            Err(Error::UnsupportedColumn { table: table.to_owned(), column: column.to_owned(), kind: column_kind(ty) })
        }
    }
}

fn column_kind(ty: &ColumnType) -> String {
    let s = format!("{ty:?}");
    s.split(['(', ' ', '{']).next().unwrap_or("column").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_and_unquoted() {
        assert_eq!(to_value(&SeaValue::Int(Some(7))).unwrap(), Value::Int(7));
        assert_eq!(to_value(&SeaValue::BigInt(Some(7))).unwrap(), Value::Int(7));
        assert_eq!(to_value(&SeaValue::String(Some("x'y".into()))).unwrap(), Value::Str("x'y".into()));
        assert_eq!(to_value(&SeaValue::String(None)).unwrap(), Value::Null);
        assert_eq!(to_value(&SeaValue::Int(None)).unwrap(), Value::Null);
        assert_eq!(to_value(&SeaValue::BigUnsigned(Some(u64::MAX))).unwrap(), Value::UInt(u64::MAX));
        assert_ne!(to_value(&SeaValue::String(Some("7".into()))).unwrap(), to_value(&SeaValue::Int(Some(7))).unwrap());
    }

    #[test]
    fn loose_values_meet_typed_ones() {
        let int = ColumnType::Integer;
        assert_eq!(coerce("t", "c", &int, Value::Str("2".into())).unwrap(), Value::Int(2));
        assert_eq!(coerce("t", "c", &int, Value::Float(2.0)).unwrap(), Value::Int(2));
        assert!(coerce("t", "c", &int, Value::Str("two".into())).is_err());
        let b = ColumnType::Boolean;
        assert_eq!(coerce("t", "c", &b, Value::Int(1)).unwrap(), Value::Bool(true));
        assert_eq!(coerce("t", "c", &b, Value::Str("false".into())).unwrap(), Value::Bool(false));
        assert!(coerce("t", "c", &b, Value::Int(2)).is_err());
        assert!(coerce("t", "c", &ColumnType::Text, Value::Int(2)).is_err());
        assert_eq!(
            coerce("t", "c", &ColumnType::Float, Value::Float(0.1)).unwrap(),
            to_value(&SeaValue::Float(Some(0.1))).unwrap()
        );
    }
}
