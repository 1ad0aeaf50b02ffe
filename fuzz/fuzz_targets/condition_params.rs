//! Scope conditions are canonical: the order parameters are given in never
//! matters, integer widths meet, and distinct parameter sets never share a key.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use matroska::{Dep, Params, Value};

#[derive(Arbitrary, Debug, Clone, PartialEq)]
enum V {
    Null,
    Bool(bool),
    I32(i32),
    I64(i64),
    U64(u64),
    Str(String),
}

impl V {
    fn value(&self) -> Value {
        match self {
            V::Null => Value::Null,
            V::Bool(b) => (*b).into(),
            V::I32(i) => (*i).into(),
            V::I64(i) => (*i).into(),
            V::U64(u) => (*u).into(),
            V::Str(s) => s.as_str().into(),
        }
    }
    /// What the value denotes: integers of every width are one number.
    fn canonical(&self) -> (u8, i128, String) {
        match self {
            V::Null => (0, 0, String::new()),
            V::Bool(b) => (1, *b as i128, String::new()),
            V::I32(i) => (2, *i as i128, String::new()),
            V::I64(i) => (2, *i as i128, String::new()),
            V::U64(u) => (2, *u as i128, String::new()),
            V::Str(s) => (3, 0, s.clone()),
        }
    }
}

fuzz_target!(|input: (String, Vec<(String, V)>, Vec<(String, V)>)| {
    let (ty, a, b) = input;
    let params = |list: &[(String, V)]| list.iter().map(|(k, v)| (k.clone(), v.value())).collect::<Params>();
    let canonical = |list: &[(String, V)]| list.iter().map(|(k, v)| (k.clone(), v.canonical())).collect::<BTreeMap<_, _>>();
    // order does not matter (with duplicate names the last one wins, so only
    // reverse a list of distinct names)
    let mut names: Vec<&String> = a.iter().map(|(k, _)| k).collect();
    names.sort();
    names.dedup();
    if names.len() == a.len() {
        let mut rev = a.clone();
        rev.reverse();
        assert_eq!(Dep::condition(&ty, params(&a)), Dep::condition(&ty, params(&rev)));
    }
    // injective over what the parameters denote
    let same = canonical(&a) == canonical(&b);
    assert_eq!(same, Dep::condition(&ty, params(&a)) == Dep::condition(&ty, params(&b)), "{a:?} / {b:?}");
});
