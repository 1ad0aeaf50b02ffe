//! Canonical forms of column values, so that a key or a scope value encodes
//! the same whichever path produced it: a model's field on the read side, a
//! row the database returned or a statement parameter on the write side, a
//! value written by hand in a list's condition, and matroska-seaorm's
//! canonical form of the same column (one cache can serve both).

use matroska::Value;

use crate::Error;

/// What kind of value a column holds, from the Rust type of its field:
/// how a value read from the database is brought to its canonical form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// Integers of every width (`i16`, `i32`, `i64`, ...).
    Int,
    /// `bool`.
    Bool,
    /// `f32`.
    Float,
    /// `f64`.
    Double,
    /// `String`.
    Text,
    /// `Vec<u8>`.
    Bytes,
    /// `chrono::NaiveDate` (`with-chrono`).
    Date,
    /// `chrono::NaiveTime` (`with-chrono`).
    Time,
    /// `chrono::NaiveDateTime` (`with-chrono`).
    DateTime,
    /// `chrono::DateTime<Utc>` (`with-chrono`).
    DateTimeUtc,
    /// `uuid::Uuid` (`with-uuid`).
    Uuid,
}

/// A Rust type whose values can take part in a dependency (a key or a
/// scope value), in the same canonical form as matroska-seaorm gives them.
///
/// | Rust type | canonical form |
/// |---|---|
/// | every integer width | [`Value::Int`] (above `i64::MAX`: [`Value::UInt`]) |
/// | `bool` | [`Value::Bool`] |
/// | `f32`, `f64` | [`Value::Float`] |
/// | `String`, `&str` | [`Value::Str`], verbatim |
/// | `Vec<u8>` | [`Value::Bytes`] |
/// | `Option<T>` | `None` is [`Value::Null`] |
/// | `chrono` dates and times (`with-chrono`) | ISO 8601; `DateTime<Utc>` with a `Z` |
/// | `uuid::Uuid` (`with-uuid`) | lowercase hyphenated string |
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no canonical form for a cache dependency",
    note = "keys, scope fields and foreign keys of a `derive(CacheModel)` model must be integers, bool, floats, String, Vec<u8>, Option of those, or chrono/uuid types with the with-chrono/with-uuid features of matroska-diesel"
)]
pub trait ToValue {
    /// The column kind of this type.
    const KIND: Kind;
    /// The canonical value.
    fn to_value(&self) -> Value;
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            const KIND: Kind = Kind::Int;
            fn to_value(&self) -> Value {
                Value::Int(i64::from(*self))
            }
        }
    )*};
}
int!(i8, i16, i32, i64, u8, u16, u32);

impl ToValue for u64 {
    const KIND: Kind = Kind::Int;
    fn to_value(&self) -> Value {
        Value::from(*self)
    }
}

impl ToValue for bool {
    const KIND: Kind = Kind::Bool;
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
}

impl ToValue for f32 {
    const KIND: Kind = Kind::Float;
    fn to_value(&self) -> Value {
        Value::Float(f64::from(*self))
    }
}

impl ToValue for f64 {
    const KIND: Kind = Kind::Double;
    fn to_value(&self) -> Value {
        Value::Float(*self)
    }
}

impl ToValue for String {
    const KIND: Kind = Kind::Text;
    fn to_value(&self) -> Value {
        Value::Str(self.clone())
    }
}

impl ToValue for str {
    const KIND: Kind = Kind::Text;
    fn to_value(&self) -> Value {
        Value::Str(self.to_owned())
    }
}

impl ToValue for Vec<u8> {
    const KIND: Kind = Kind::Bytes;
    fn to_value(&self) -> Value {
        Value::Bytes(self.clone())
    }
}

impl<T: ToValue> ToValue for Option<T> {
    const KIND: Kind = T::KIND;
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    const KIND: Kind = T::KIND;
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue + ?Sized> ToValue for Box<T> {
    const KIND: Kind = T::KIND;
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

#[cfg(feature = "with-chrono")]
mod chrono_values {
    use super::{Kind, ToValue, Value};

    impl ToValue for chrono::NaiveDate {
        const KIND: Kind = Kind::Date;
        fn to_value(&self) -> Value {
            Value::Str(self.format("%Y-%m-%d").to_string())
        }
    }

    impl ToValue for chrono::NaiveTime {
        const KIND: Kind = Kind::Time;
        fn to_value(&self) -> Value {
            Value::Str(self.format("%H:%M:%S%.9f").to_string())
        }
    }

    impl ToValue for chrono::NaiveDateTime {
        const KIND: Kind = Kind::DateTime;
        fn to_value(&self) -> Value {
            Value::Str(self.format("%Y-%m-%dT%H:%M:%S%.9f").to_string())
        }
    }

    impl ToValue for chrono::DateTime<chrono::Utc> {
        const KIND: Kind = Kind::DateTimeUtc;
        fn to_value(&self) -> Value {
            Value::Str(self.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
        }
    }
}

#[cfg(feature = "with-uuid")]
impl ToValue for uuid::Uuid {
    const KIND: Kind = Kind::Uuid;
    fn to_value(&self) -> Value {
        Value::Str(self.hyphenated().to_string())
    }
}

/// The parts of a primary key (what `Identifiable::id` returns: a value, or a
/// tuple of values for a composite key), in key order.
pub trait KeyParts {
    /// The canonical value of each part.
    fn key_parts(&self) -> Vec<Value>;
}

impl<T: ToValue + ?Sized> KeyParts for T {
    fn key_parts(&self) -> Vec<Value> {
        vec![self.to_value()]
    }
}

macro_rules! key_tuple {
    ($($n:tt $t:ident),*) => {
        impl<$($t: ToValue),*> KeyParts for ($($t,)*) {
            fn key_parts(&self) -> Vec<Value> {
                vec![$(self.$n.to_value()),*]
            }
        }
    };
}
key_tuple!(0 A, 1 B);
key_tuple!(0 A, 1 B, 2 C);
key_tuple!(0 A, 1 B, 2 C, 3 D);

/// Brings a loosely typed value (a `params!` entry, a statement parameter,
/// a value as the database stores it) to the canonical form of a column of
/// kind `kind`: `1` meets `true` in a boolean column, `"2"` meets `2` in an
/// integer one, SQLite's text timestamps meet chrono's.
///
/// # Errors
/// [`Error::ValueMismatch`] when the value cannot be a value of that column.
pub(crate) fn coerce(table: &str, column: &str, kind: Kind, v: Value) -> Result<Value, Error> {
    let mismatch = |got: &Value| Error::ValueMismatch {
        table: table.to_owned(),
        column: column.to_owned(),
        expected: format!("{kind:?}"),
        got: got.to_string(),
    };
    if v == Value::Null {
        return Ok(v);
    }
    match kind {
        Kind::Bool => match &v {
            Value::Bool(_) => Ok(v),
            Value::Int(0) => Ok(Value::Bool(false)),
            Value::Int(1) => Ok(Value::Bool(true)),
            Value::Str(s) if matches!(s.as_str(), "true" | "t" | "1") => Ok(Value::Bool(true)),
            Value::Str(s) if matches!(s.as_str(), "false" | "f" | "0") => Ok(Value::Bool(false)),
            other => Err(mismatch(other)),
        },
        Kind::Int => match &v {
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
        Kind::Float => match &v {
            Value::Float(f) => Ok(Value::Float(f64::from(*f as f32))),
            Value::Int(i) => Ok(Value::Float(f64::from(*i as f32))),
            Value::Str(s) => s.trim().parse::<f32>().map(|f| Value::Float(f64::from(f))).map_err(|_| mismatch(&v)),
            other => Err(mismatch(other)),
        },
        Kind::Double => match &v {
            Value::Float(_) => Ok(v),
            Value::Int(i) => Ok(Value::Float(*i as f64)),
            Value::Str(s) => s.trim().parse::<f64>().map(Value::Float).map_err(|_| mismatch(&v)),
            other => Err(mismatch(other)),
        },
        Kind::Text => match &v {
            Value::Str(_) => Ok(v),
            Value::Bytes(b) => String::from_utf8(b.clone()).map(Value::Str).map_err(|_| mismatch(&v)),
            other => Err(mismatch(other)),
        },
        Kind::Bytes => match &v {
            Value::Bytes(_) => Ok(v),
            Value::Str(s) => Ok(Value::Bytes(s.as_bytes().to_vec())),
            other => Err(mismatch(other)),
        },
        #[cfg(feature = "with-uuid")]
        Kind::Uuid => match &v {
            Value::Str(s) => uuid::Uuid::parse_str(s.trim())
                .map(|u| Value::Str(u.hyphenated().to_string()))
                .map_err(|_| mismatch(&v)),
            Value::Bytes(b) => {
                uuid::Uuid::from_slice(b).map(|u| Value::Str(u.hyphenated().to_string())).map_err(|_| mismatch(&v))
            }
            other => Err(mismatch(other)),
        },
        #[cfg(feature = "with-chrono")]
        Kind::Date => match &v {
            Value::Str(s) => {
                chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map(|d| d.to_value()).map_err(|_| mismatch(&v))
            }
            other => Err(mismatch(other)),
        },
        #[cfg(feature = "with-chrono")]
        Kind::Time => match &v {
            Value::Str(s) => chrono::NaiveTime::parse_from_str(s.trim(), "%H:%M:%S%.f")
                .map(|t| t.to_value())
                .map_err(|_| mismatch(&v)),
            other => Err(mismatch(other)),
        },
        #[cfg(feature = "with-chrono")]
        Kind::DateTime => match &v {
            Value::Str(s) => chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f"))
                .map(|t| t.to_value())
                .map_err(|_| mismatch(&v)),
            other => Err(mismatch(other)),
        },
        #[cfg(feature = "with-chrono")]
        Kind::DateTimeUtc => match &v {
            Value::Str(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
                .map(|t| t.with_timezone(&chrono::Utc).to_value())
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f")
                        .map(|t| t.and_utc().to_value())
                })
                .map_err(|_| mismatch(&v)),
            other => Err(mismatch(other)),
        },
        #[allow(unreachable_patterns)]
        _ => Err(Error::UnsupportedValue { kind: format!("{kind:?}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_values_meet_typed_ones() {
        assert_eq!(coerce("t", "c", Kind::Int, Value::Str("2".into())).unwrap(), 2i32.to_value());
        assert_eq!(coerce("t", "c", Kind::Bool, Value::Int(1)).unwrap(), true.to_value());
        assert!(coerce("t", "c", Kind::Bool, Value::Int(2)).is_err());
        assert_eq!(coerce("t", "c", Kind::Float, Value::Float(f64::from(0.1f32))).unwrap(), 0.1f32.to_value());
        assert_eq!(coerce("t", "c", Kind::Text, Value::Null).unwrap(), Value::Null);
        assert_ne!("7".to_value(), 7.to_value());
        assert_eq!((7, 3).key_parts(), vec![Value::Int(7), Value::Int(3)]);
        assert_eq!(Some(7i16).to_value(), 7i64.to_value());
        assert_eq!(None::<i32>.to_value(), Value::Null);
    }
}
