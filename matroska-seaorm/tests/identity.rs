//! Properties of the primary-key identity: stable (every path to a row's key
//! gives the same dependency) and injective (distinct keys, distinct
//! dependencies), for composite keys, string keys with separators and quotes,
//! and integers of different widths; and `to_value` as documented.
//!
//! Nothing here touches a database: `cargo test -p matroska-seaorm --test identity`.

#![allow(unreachable_pub)]

use matroska::{Dep, Value};
use matroska_seaorm::{active_pk_dep, pk_dep, pk_dep_of, to_value};

fn tv(v: &SeaValue) -> Value {
    to_value(v).unwrap()
}
use proptest::prelude::*;
use sea_orm::sea_query::{Enum, OptionEnum};
use sea_orm::{IntoActiveModel, Value as SeaValue};

/// A string key.
mod code {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "code")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub code: String,
        pub label: String,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

/// A composite key of two strings.
mod pair {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "pair")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub a: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub b: String,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

/// A composite key of an integer and a string.
mod mixed {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "mixed")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub n: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub s: String,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

/// Table `item` with an `i32` key...
mod narrow {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "item")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

/// ...and the same table seen with an `i64` key (a migration widened it).
mod wide {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "item")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

/// Strings rich in the characters an encoding could confuse.
fn tricky() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a:\\\\'\"|,=/ ]{0,6}",
        any::<String>(),
        Just(String::new()),
        Just(":".to_owned()),
        Just("\\".to_owned()),
        Just("\\:".to_owned()),
    ]
}

fn pair_dep(a: &str, b: &str) -> Dep {
    pk_dep(&pair::Model { a: a.to_owned(), b: b.to_owned() })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Model, ActiveModel, key given by hand and the decoded encoding agree.
    #[test]
    fn string_key_is_stable(code in tricky(), label in tricky()) {
        let m = code::Model { code: code.clone(), label };
        let d = pk_dep(&m);
        prop_assert_eq!(d.clone(), pk_dep_of::<code::Entity>(code.clone()));
        prop_assert_eq!(Some(d.clone()), active_pk_dep(&m.clone().into_active_model()));
        prop_assert_eq!(Some(d.clone()), Dep::from_encoded(d.as_str()));
        prop_assert_eq!(d.as_str().to_owned(), pk_dep(&m).as_str().to_owned());
        prop_assert_eq!(d, Dep::primary_key("code", [Value::Str(code)]));
    }

    #[test]
    fn string_key_is_injective(a in tricky(), b in tricky()) {
        prop_assert_eq!(a == b, pk_dep_of::<code::Entity>(a) == pk_dep_of::<code::Entity>(b));
    }

    /// No split of a composite key collides with another: `("a:b", "c")` is
    /// not `("a", "b:c")`.
    #[test]
    fn composite_key_is_injective(a1 in tricky(), b1 in tricky(), a2 in tricky(), b2 in tricky()) {
        let same = a1 == a2 && b1 == b2;
        prop_assert_eq!(same, pair_dep(&a1, &b1) == pair_dep(&a2, &b2));
        prop_assert_eq!(same, pair_dep(&a1, &b1).as_str() == pair_dep(&a2, &b2).as_str());
    }

    #[test]
    fn composite_key_is_stable(a in tricky(), b in tricky(), n in any::<i64>(), s in tricky()) {
        let m = pair::Model { a: a.clone(), b: b.clone() };
        prop_assert_eq!(pk_dep(&m), pk_dep_of::<pair::Entity>((a, b)));
        prop_assert_eq!(Some(pk_dep(&m)), active_pk_dep(&m.into_active_model()));
        let m = mixed::Model { n, s: s.clone() };
        prop_assert_eq!(pk_dep(&m), pk_dep_of::<mixed::Entity>((n, s.clone())));
        prop_assert_eq!(pk_dep(&m), Dep::primary_key("mixed", [Value::Int(n), Value::Str(s)]));
    }

    /// An integer and its decimal string are different keys.
    #[test]
    fn integer_is_not_its_string(n in any::<i64>()) {
        prop_assert_ne!(
            pk_dep(&mixed::Model { n, s: String::new() }),
            pk_dep(&pair::Model { a: n.to_string(), b: String::new() })
        );
        prop_assert_ne!(tv(&SeaValue::BigInt(Some(n))), tv(&SeaValue::String(Some(n.to_string()))));
    }

    /// `i32` and `i64` keys of the same table meet; distinct values stay apart.
    #[test]
    fn integer_widths_meet(a in any::<i32>(), b in any::<i64>()) {
        prop_assert_eq!(pk_dep(&narrow::Model { id: a }), pk_dep(&wide::Model { id: i64::from(a) }));
        prop_assert_eq!(pk_dep_of::<narrow::Entity>(a), pk_dep_of::<wide::Entity>(i64::from(a)));
        prop_assert_eq!(i64::from(a) == b, pk_dep(&narrow::Model { id: a }) == pk_dep(&wide::Model { id: b }));
    }

    /// Every integer variant maps to `Value::Int` (`UInt` only above `i64::MAX`).
    #[test]
    fn integers_map_to_int(n in any::<i64>(), u in any::<u64>()) {
        let v = Value::Int(n);
        prop_assert_eq!(tv(&SeaValue::BigInt(Some(n))), v.clone());
        if let Ok(i) = i32::try_from(n) { prop_assert_eq!(tv(&SeaValue::Int(Some(i))), v.clone()); }
        if let Ok(i) = i16::try_from(n) { prop_assert_eq!(tv(&SeaValue::SmallInt(Some(i))), v.clone()); }
        if let Ok(i) = i8::try_from(n) { prop_assert_eq!(tv(&SeaValue::TinyInt(Some(i))), v.clone()); }
        if let Ok(i) = u32::try_from(n) { prop_assert_eq!(tv(&SeaValue::Unsigned(Some(i))), v.clone()); }
        if let Ok(i) = u16::try_from(n) { prop_assert_eq!(tv(&SeaValue::SmallUnsigned(Some(i))), v.clone()); }
        if let Ok(i) = u8::try_from(n) { prop_assert_eq!(tv(&SeaValue::TinyUnsigned(Some(i))), v.clone()); }
        let expected = i64::try_from(u).map_or(Value::UInt(u), Value::Int);
        prop_assert_eq!(tv(&SeaValue::BigUnsigned(Some(u))), expected);
    }

    /// Strings, chars, enums, bytes, bools and floats keep their value.
    #[test]
    fn scalars_map_verbatim(s in any::<String>(), c in any::<char>(), b in any::<Vec<u8>>(), t in any::<bool>(), f in any::<f64>(), g in any::<f32>()) {
        prop_assert_eq!(tv(&SeaValue::String(Some(s.clone()))), Value::Str(s.clone()));
        prop_assert_eq!(tv(&SeaValue::Char(Some(c))), Value::Str(c.to_string()));
        let e = OptionEnum::Some(Box::new(Enum { type_name: "mood".into(), value: s.clone().into() }));
        prop_assert_eq!(tv(&SeaValue::Enum(e)), Value::Str(s));
        prop_assert_eq!(tv(&SeaValue::Bytes(Some(b.clone()))), Value::Bytes(b));
        prop_assert_eq!(tv(&SeaValue::Bool(Some(t))), Value::Bool(t));
        prop_assert_eq!(tv(&SeaValue::Double(Some(f))), Value::Float(f));
        prop_assert_eq!(tv(&SeaValue::Float(Some(g))), Value::Float(f64::from(g)));
    }

    /// JSON is canonical: the order keys were written in does not matter,
    /// distinct documents stay distinct.
    #[test]
    fn json_is_canonical(a in any::<i64>(), b in any::<i64>(), k in "[a-z]{1,4}") {
        let json = |v: serde_json::Value| tv(&SeaValue::Json(Some(Box::new(v))));
        let one = json(serde_json::json!({ "n": a, k.clone(): b }));
        let other_order: serde_json::Value = serde_json::from_str(&format!("{{\"{k}\": {b}, \"n\": {a}}}")).unwrap();
        if k != "n" {
            prop_assert_eq!(&one, &json(other_order));
        }
        prop_assert_eq!(a == b, json(serde_json::json!({ "n": a })) == json(serde_json::json!({ "n": b })));
    }
}

/// A type without a canonical form is refused, never rendered through `Debug`.
#[test]
fn unmapped_types_are_refused() {
    let array = SeaValue::Array(sea_orm::sea_query::ArrayType::Int, Some(Box::new(vec![SeaValue::Int(Some(1))])));
    let err = to_value(&array).unwrap_err();
    assert!(matches!(err, matroska_seaorm::Error::UnsupportedValue { .. }), "{err}");
    assert!(err.to_string().contains("Array"), "{err}");
}

/// Dates, times, decimals and UUIDs have one form each.
#[test]
fn typed_values_are_canonical() {
    use sea_orm::prelude::{ChronoDateTimeWithTimeZone, Decimal};
    let at = |s: &str| {
        tv(&SeaValue::ChronoDateTimeWithTimeZone(Some(ChronoDateTimeWithTimeZone::parse_from_rfc3339(s).unwrap())))
    };
    assert_eq!(at("2024-01-02T03:04:05+02:00"), at("2024-01-02T01:04:05Z"), "one instant, two offsets");
    assert_ne!(at("2024-01-02T03:04:05+02:00"), at("2024-01-02T03:04:05Z"));
    let dec = |s: &str| tv(&SeaValue::Decimal(Some(s.parse::<Decimal>().unwrap())));
    assert_eq!(dec("1.50"), dec("1.5"));
    assert_ne!(dec("1.51"), dec("1.5"));
    let id = uuid::Uuid::parse_str("A1A2A3A4-B1B2-C1C2-D1D2-D3D4D5D6D7D8").unwrap();
    assert_eq!(tv(&SeaValue::Uuid(Some(id))), Value::Str("a1a2a3a4-b1b2-c1c2-d1d2-d3d4d5d6d7d8".into()));
}

/// `NULL` of every type is `Value::Null`.
#[test]
fn nulls_map_to_null() {
    let nulls = [
        SeaValue::Bool(None),
        SeaValue::TinyInt(None),
        SeaValue::SmallInt(None),
        SeaValue::Int(None),
        SeaValue::BigInt(None),
        SeaValue::TinyUnsigned(None),
        SeaValue::SmallUnsigned(None),
        SeaValue::Unsigned(None),
        SeaValue::BigUnsigned(None),
        SeaValue::Float(None),
        SeaValue::Double(None),
        SeaValue::String(None),
        SeaValue::Char(None),
        SeaValue::Bytes(None),
        SeaValue::Json(None),
        SeaValue::Enum(OptionEnum::None("mood".into())),
    ];
    for v in nulls {
        assert_eq!(tv(&v), Value::Null, "{v:?}");
    }
}

/// Tables are part of the identity.
#[test]
fn tables_differ() {
    assert_ne!(pk_dep_of::<narrow::Entity>(7), pk_dep_of::<mixed::Entity>((7, String::new())));
    assert_ne!(pk_dep_of::<code::Entity>("7".to_owned()), pk_dep_of::<pair::Entity>(("7".to_owned(), String::new())));
}
