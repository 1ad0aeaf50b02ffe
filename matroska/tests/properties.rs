//! Property tests: the dependency encoding is injective and condition
//! parameters are canonical.

use matroska::{params, Dep, Mode, Params, Scopes, Value};
use proptest::prelude::*;

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::UInt),
        any::<f64>().prop_filter("NaN has no equality", |f| !f.is_nan()).prop_map(Value::Float),
        ".*".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
    ]
}

fn any_params() -> impl Strategy<Value = Vec<(String, Value)>> {
    proptest::collection::vec((".{0,6}", any_value()), 0..4)
}

/// A dependency together with a description of what it denotes.
#[derive(Debug, Clone, PartialEq)]
enum Denoted {
    Id(String, String),
    Tag(String),
    Pk(String, Vec<Value>),
    Cond(String, Vec<(String, Value)>),
    All(String),
}

impl Denoted {
    fn dep(&self) -> Dep {
        match self {
            Denoted::Id(t, i) => Dep::id(t, i),
            Denoted::Tag(t) => Dep::tag(t),
            Denoted::Pk(e, k) => Dep::primary_key(e, k.clone()),
            Denoted::Cond(t, p) => Dep::condition(t, p.iter().cloned().collect()),
            Denoted::All(t) => Dep::invalidate_all(t),
        }
    }

    /// Canonical form: conditions with sorted, last-wins parameters; floats by
    /// value with -0 == 0.
    fn canonical(&self) -> Denoted {
        match self {
            Denoted::Cond(t, p) => {
                let map: std::collections::BTreeMap<String, Value> = p.iter().cloned().collect();
                Denoted::Cond(t.clone(), map.into_iter().map(|(k, v)| (k, canon(v))).collect())
            }
            Denoted::Pk(e, k) => Denoted::Pk(e.clone(), k.iter().cloned().map(canon).collect()),
            other => other.clone(),
        }
    }
}

fn canon(v: Value) -> Value {
    match v {
        // -0.0 and 0.0 denote the same value
        Value::Float(f) => Value::Float(if f == 0.0 { 0.0 } else { f }),
        v => v,
    }
}

fn any_denoted() -> impl Strategy<Value = Denoted> {
    let s = || "[a-z:\\\\&=|{} ]{0,6}|.{0,6}";
    prop_oneof![
        (s(), s()).prop_map(|(a, b)| Denoted::Id(a, b)),
        s().prop_map(Denoted::Tag),
        (s(), proptest::collection::vec(any_value(), 0..3)).prop_map(|(e, k)| Denoted::Pk(e, k)),
        (s(), any_params()).prop_map(|(t, p)| Denoted::Cond(t, p)),
        s().prop_map(Denoted::All),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Distinct dependencies never share a key; equal ones always do.
    #[test]
    fn encoding_is_injective(a in any_denoted(), b in any_denoted()) {
        let (ca, cb) = (a.canonical(), b.canonical());
        prop_assert_eq!(ca == cb, a.dep() == b.dep(), "{:?} vs {:?}: {} / {}", a, b, a.dep(), b.dep());
    }

    /// Ids over arbitrary strings: the original's `Id('a:b','c') == Id('a','b:c')`.
    #[test]
    fn ids_are_injective(t1 in ".*", i1 in ".*", t2 in ".*", i2 in ".*") {
        prop_assert_eq!(t1 == t2 && i1 == i2, Dep::id(&t1, &i1) == Dep::id(&t2, &i2));
    }

    /// Every key decodes back to the parts it was built from.
    #[test]
    fn keys_decode(t in ".*", i in ".*") {
        let d = Dep::id(&t, &i);
        prop_assert_eq!(d.parts(), vec!["id".to_string(), t, i]);
        prop_assert_eq!(Dep::from_encoded(d.as_str()), Some(d.clone()));
    }

    /// Parameter order never matters.
    #[test]
    fn conditions_are_order_independent(mut p in any_params(), seed in any::<u64>()) {
        // dedupe names: with duplicates, the last insertion wins, which depends on order
        let mut seen = std::collections::BTreeSet::new();
        p.retain(|(k, _)| seen.insert(k.clone()));
        let forward: Params = p.iter().cloned().collect();
        let mut shuffled = p.clone();
        let n = shuffled.len().max(1);
        shuffled.rotate_left((seed as usize) % n);
        shuffled.reverse();
        let backward: Params = shuffled.into_iter().collect();
        prop_assert_eq!(Dep::condition("t", forward), Dep::condition("t", backward));
    }

    /// Integers meet whatever width was spelled; strings stay distinct.
    #[test]
    fn integer_widths_meet(n in any::<u32>()) {
        prop_assert_eq!(Dep::condition("t", params!{"n" => n}), Dep::condition("t", params!{"n" => n as i64}));
        prop_assert_eq!(Dep::condition("t", params!{"n" => n}), Dep::condition("t", params!{"n" => n as u64}));
        prop_assert_ne!(Dep::condition("t", params!{"n" => n}), Dep::condition("t", params!{"n" => n.to_string()}));
    }

    /// The condition a list asks for is exactly the one an extractor yields for
    /// an object matching it, and never one for an object that does not.
    #[test]
    fn scope_matching(cat in ".{0,8}", other in ".{0,8}", published in any::<bool>()) {
        struct Article { category: String, published: bool }
        let scopes = Scopes::<Article>::new("article", Mode::Development)
            .describes(["category", "published"], |a: &Article| {
                Some(params! { "published" => a.published, "category" => &a.category })
            });
        let asked = scopes.condition(params! { "category" => &cat, "published" => published }).unwrap();
        let item = Article { category: cat.clone(), published };
        let yielded = scopes.dependencies_for(&item, None).unwrap();
        prop_assert!(yielded.contains(&asked[0]));
        let moved = Article { category: other.clone(), published };
        let yielded = scopes.dependencies_for(&moved, None).unwrap();
        prop_assert_eq!(yielded.contains(&asked[0]), other == cat);
    }
}
