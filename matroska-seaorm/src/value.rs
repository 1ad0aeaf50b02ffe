//! Conversion of SeaORM values into matroska's typed scalars.

use matroska::Value;
use sea_orm::Value as SeaValue;

/// Converts a SeaORM value into a matroska [`Value`], keeping its type, so a
/// key or scope value encodes the same whichever path produced it (a model,
/// an active model, or a key given by hand).
///
/// Integers of every width meet (`i32` 7 and `i64` 7 are the same key), strings
/// are taken verbatim (never quoted as SQL literals), `NULL` of every type is
/// [`Value::Null`]. With the `with-uuid` feature a UUID is its lowercase
/// hyphenated string. Types without a dedicated mapping (dates, JSON,
/// decimals, arrays) use their debug rendering prefixed with `~`, which is
/// stable for a given SeaORM version and distinct for distinct values of
/// one type (a column has one type, so keys of a table never mix them).
pub fn to_value(v: &SeaValue) -> Value {
    match v {
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
        #[cfg(feature = "with-uuid")]
        SeaValue::Uuid(Some(u)) => Value::Str(u.hyphenated().to_string()),
        other if other.is_null() => Value::Null,
        other => Value::Str(format!("~{other:?}")),
    }
}

/// Whether a SeaORM value is a `NULL` of any type.
trait IsNull {
    fn is_null(&self) -> bool;
}

impl IsNull for SeaValue {
    fn is_null(&self) -> bool {
        *self == self.as_null()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_and_unquoted() {
        assert_eq!(to_value(&SeaValue::Int(Some(7))), Value::Int(7));
        assert_eq!(to_value(&SeaValue::BigInt(Some(7))), Value::Int(7));
        assert_eq!(to_value(&SeaValue::String(Some("x'y".into()))), Value::Str("x'y".into()));
        assert_eq!(to_value(&SeaValue::String(None)), Value::Null);
        assert_eq!(to_value(&SeaValue::Int(None)), Value::Null);
        assert_eq!(to_value(&SeaValue::BigUnsigned(Some(u64::MAX))), Value::UInt(u64::MAX));
        assert_ne!(to_value(&SeaValue::String(Some("7".into()))), to_value(&SeaValue::Int(Some(7))));
    }
}
