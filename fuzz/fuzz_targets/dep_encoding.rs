//! Dependency keys are injective: two dependencies share a key exactly when
//! they denote the same thing, and every key decodes back to its parts.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use matroska::Dep;

#[derive(Arbitrary, Debug, Clone, PartialEq)]
enum Input {
    Id(String, String),
    Tag(String),
    All(String),
    Pk(String, Vec<i64>),
    PkStr(String, Vec<String>),
}

fn dep(i: &Input) -> Dep {
    match i {
        Input::Id(t, id) => Dep::id(t, id),
        Input::Tag(t) => Dep::tag(t),
        Input::All(t) => Dep::invalidate_all(t),
        Input::Pk(e, k) => Dep::primary_key(e, k.iter().copied()),
        Input::PkStr(e, k) => Dep::primary_key(e, k.iter().cloned()),
    }
}

fuzz_target!(|pair: (Input, Input)| {
    let (a, b) = pair;
    let (da, db) = (dep(&a), dep(&b));
    let same = match (&a, &b) {
        // an empty key is the same row whatever the type of its (absent) components
        (Input::Pk(e1, k1), Input::PkStr(e2, k2)) | (Input::PkStr(e2, k2), Input::Pk(e1, k1)) => {
            e1 == e2 && k1.is_empty() && k2.is_empty()
        }
        _ => a == b,
    };
    assert_eq!(same, da == db, "{a:?} / {b:?} -> {da} / {db}");
    assert_eq!(Dep::from_encoded(da.as_str()).as_ref(), Some(&da));
    if let Input::Id(t, id) = &a {
        assert_eq!(da.parts(), vec!["id".to_string(), t.clone(), id.clone()]);
    }
});
