//! Dependencies: what a cached entry was built from.
//!
//! A [`Dep`] is the canonical, encoded form of a dependency. It is built from one
//! of the typed kinds in this module ([`Id`], [`Tag`], [`NTag`], [`PrimaryKey`],
//! [`Condition`], [`InvalidateAll`]) or from a user-defined kind implementing
//! [`Dependency`].
//!
//! # Encoding
//!
//! A dependency encodes to a list of parts: its kind first, then its components.
//! Every part is escaped (`\` becomes `\\`, `:` becomes `\:`) and the parts are
//! joined with `:`. Decoding is unambiguous, so two distinct dependencies never
//! share a key: `Id("a:b", "c")` encodes to `id:a\:b:c` and `Id("a", "b:c")` to
//! `id:a:b\:c`.
//!
//! Typed condition values are encoded with a type marker (`b`, `i`, `u`, `f`, `s`,
//! `n`, `x`), so integers of every Rust width meet: `published = 1u8` and
//! `published = 1i64` encode the same, while the string `"1"` stays different.

use std::any::type_name;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// A dependency in its canonical encoded form.
///
/// Cheap to clone (a reference-counted string). Two `Dep`s are equal exactly
/// when they denote the same dependency.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dep(Arc<str>);

impl Dep {
    /// `Id(object_type, id)`: one object of a type, by any displayable id
    /// (integers, strings, UUIDs).
    pub fn id(object_type: impl AsRef<str>, id: impl fmt::Display) -> Dep {
        Id::new(object_type.as_ref(), id).into()
    }

    /// `Tag(name)`: a free-form label.
    pub fn tag(name: impl AsRef<str>) -> Dep {
        Tag::new(name.as_ref()).into()
    }

    /// A tag namespaced by the Rust type `T` (the original's `NTag`).
    pub fn ntag<T: ?Sized>(name: impl AsRef<str>) -> Dep {
        NTag::<T>::new(name.as_ref()).into()
    }

    /// `PrimaryKey(entity, key)`: a database row, with a possibly composite key.
    pub fn primary_key<I>(entity: impl AsRef<str>, key: I) -> Dep
    where
        I: IntoIterator,
        I::Item: Into<Value>,
    {
        PrimaryKey::new(entity.as_ref(), key).into()
    }

    /// A scope condition: the list of `object_type` objects matching `params`.
    pub fn condition(object_type: impl AsRef<str>, params: Params) -> Dep {
        Condition::new(object_type.as_ref(), params).into()
    }

    /// The per-type kill switch: every scope condition of `object_type` carries it.
    pub fn invalidate_all(object_type: impl AsRef<str>) -> Dep {
        InvalidateAll::new(object_type.as_ref()).into()
    }

    /// The canonical encoded key of this dependency.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a dependency from a key produced by [`Dep::as_str`].
    ///
    /// Returns `None` if `key` is not a well-formed encoding.
    pub fn from_encoded(key: &str) -> Option<Dep> {
        let parts = decode_parts(key)?;
        if parts.is_empty() {
            return None;
        }
        Some(Dep(Arc::from(key)))
    }

    /// The decoded parts of this dependency: its kind, then its components.
    pub fn parts(&self) -> Vec<String> {
        decode_parts(&self.0).unwrap_or_default()
    }

    /// The object type of an [`Id`], [`PrimaryKey`], [`Condition`] or
    /// [`InvalidateAll`] (its entity); `None` for other kinds.
    pub(crate) fn object_type(&self) -> Option<String> {
        let kind = self.0.split(':').next()?;
        if !matches!(kind, "id" | "pk" | "cond" | "all") {
            return None;
        }
        decode_parts(&self.0)?.into_iter().nth(1)
    }

    /// For a [`PrimaryKey`], the switch of its entity
    /// (`Dep::invalidate_all(entity)`), which every entry depending on the
    /// row also depends on.
    pub(crate) fn row_switch(&self) -> Option<Dep> {
        if !self.0.starts_with("pk:") {
            return None;
        }
        let parts = decode_parts(&self.0)?;
        Some(Dep::invalidate_all(parts.get(1)?))
    }
}

/// `deps` with the switch of every entity a primary-key dependency names
/// ([`Dep::row_switch`]), so that invalidating an entity's switch (a write
/// whose rows cannot be told) drops entries that depend on its rows.
pub(crate) fn with_row_switches(deps: &[Dep]) -> std::borrow::Cow<'_, [Dep]> {
    let mut missing: Vec<Dep> = Vec::new();
    for d in deps {
        if let Some(switch) = d.row_switch() {
            if !missing.contains(&switch) && !deps.contains(&switch) {
                missing.push(switch);
            }
        }
    }
    if missing.is_empty() {
        std::borrow::Cow::Borrowed(deps)
    } else {
        let mut all = deps.to_vec();
        all.extend(missing);
        std::borrow::Cow::Owned(all)
    }
}

impl fmt::Debug for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dep({:?})", &*self.0)
    }
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Dep {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A kind of dependency. Implement it to define your own kinds.
///
/// User kinds are encoded under a reserved namespace (`u:<kind>:...`), so they
/// never collide with the built-in kinds, whatever their names.
///
/// ```
/// use matroska::dep::{Dep, Dependency};
///
/// struct Shard(u32);
/// impl Dependency for Shard {
///     fn kind(&self) -> &str { "shard" }
///     fn components(&self) -> Vec<String> { vec![self.0.to_string()] }
/// }
/// assert_eq!(Dep::custom(&Shard(3)).as_str(), "u:shard:3");
/// ```
pub trait Dependency {
    /// The name of this kind.
    fn kind(&self) -> &str;
    /// The components identifying one dependency of this kind.
    fn components(&self) -> Vec<String>;
}

impl Dep {
    /// Encodes a user-defined dependency kind.
    pub fn custom<D: Dependency + ?Sized>(dep: &D) -> Dep {
        let mut enc = Encoder::new("u");
        enc.part(dep.kind());
        for c in dep.components() {
            enc.part(&c);
        }
        enc.finish()
    }
}

/// Builds an encoded key part by part.
struct Encoder(String);

impl Encoder {
    fn new(kind: &str) -> Self {
        let mut e = Encoder(String::with_capacity(32));
        escape_into(&mut e.0, kind);
        e
    }
    fn part(&mut self, s: &str) -> &mut Self {
        self.0.push(':');
        escape_into(&mut self.0, s);
        self
    }
    fn finish(self) -> Dep {
        Dep(Arc::from(self.0))
    }
}

fn escape_into(out: &mut String, s: &str) {
    for ch in s.chars() {
        if ch == '\\' || ch == ':' {
            out.push('\\');
        }
        out.push(ch);
    }
}

/// Splits an encoded key into its unescaped parts; `None` if malformed.
pub(crate) fn decode_parts(key: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = key.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => match chars.next() {
                Some(c @ ('\\' | ':')) => cur.push(c),
                _ => return None,
            },
            ':' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    Some(parts)
}

/// Encodes a list of parts the same way dependencies are encoded. Used to build
/// injective composite keys (for example `prefix` + `key`).
pub(crate) fn encode_parts<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, p) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        escape_into(&mut out, p);
    }
    out
}

/// `Id(object_type, id)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Id {
    object_type: String,
    id: String,
}

impl Id {
    /// One object of `object_type` with the given id.
    pub fn new(object_type: &str, id: impl fmt::Display) -> Self {
        Id { object_type: object_type.to_owned(), id: id.to_string() }
    }
}

impl From<Id> for Dep {
    fn from(v: Id) -> Dep {
        let mut e = Encoder::new("id");
        e.part(&v.object_type).part(&v.id);
        e.finish()
    }
}

/// `Tag(name)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    /// A tag with the given name.
    pub fn new(name: &str) -> Self {
        Tag(name.to_owned())
    }
}

impl From<Tag> for Dep {
    fn from(v: Tag) -> Dep {
        let mut e = Encoder::new("tag");
        e.part(&v.0);
        e.finish()
    }
}

/// A tag whose namespace is the Rust type `T` (the original's `NTag`).
///
/// The namespace is [`std::any::type_name`] of `T`, which is stable for one
/// build of a program; do not use it to share invalidations between programs
/// compiled separately if their module paths differ.
pub struct NTag<T: ?Sized> {
    name: String,
    _ty: PhantomData<fn() -> Box<T>>,
}

impl<T: ?Sized> NTag<T> {
    /// A tag named `name` in the namespace of `T`.
    pub fn new(name: &str) -> Self {
        NTag { name: name.to_owned(), _ty: PhantomData }
    }
}

impl<T: ?Sized> fmt::Debug for NTag<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NTag<{}>({:?})", type_name::<T>(), self.name)
    }
}

impl<T: ?Sized> From<NTag<T>> for Dep {
    fn from(v: NTag<T>) -> Dep {
        let mut e = Encoder::new("ntag");
        e.part(type_name::<T>()).part(&v.name);
        e.finish()
    }
}

/// `PrimaryKey(entity, key)`: a database row. Composite keys are supported;
/// each component is typed, so `1i32` and `1i64` give the same key and `"1"`
/// (a string) a different one.
///
/// An entry stored with a row's dependency also depends on its entity's
/// switch ([`Dep::invalidate_all`]): the cache adds it. A write whose rows
/// cannot be told invalidates the switch, and so every entry built from
/// rows of that entity.
#[derive(Clone, Debug, PartialEq)]
pub struct PrimaryKey {
    entity: String,
    key: Vec<Value>,
}

impl PrimaryKey {
    /// The row of `entity` whose key components are `key`.
    pub fn new<I>(entity: &str, key: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Value>,
    {
        PrimaryKey { entity: entity.to_owned(), key: key.into_iter().map(Into::into).collect() }
    }
}

impl From<PrimaryKey> for Dep {
    fn from(v: PrimaryKey) -> Dep {
        let mut e = Encoder::new("pk");
        e.part(&v.entity);
        let mut buf = String::new();
        for k in &v.key {
            buf.clear();
            k.encode_into(&mut buf);
            e.part(&buf);
        }
        e.finish()
    }
}

/// A scope condition: the objects of `object_type` whose described parameters
/// equal `params`. Parameter order does not matter.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    object_type: String,
    params: Params,
}

impl Condition {
    /// The condition `params` on objects of `object_type`.
    pub fn new(object_type: &str, params: Params) -> Self {
        Condition { object_type: object_type.to_owned(), params }
    }
}

impl From<Condition> for Dep {
    fn from(v: Condition) -> Dep {
        let mut e = Encoder::new("cond");
        e.part(&v.object_type);
        let mut buf = String::new();
        for (name, value) in v.params.iter() {
            e.part(name);
            buf.clear();
            value.encode_into(&mut buf);
            e.part(&buf);
        }
        e.finish()
    }
}

/// The kill switch of a type: attached to every condition of `object_type`, so
/// invalidating it drops every cached list of that type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InvalidateAll(String);

impl InvalidateAll {
    /// The kill switch of `object_type`.
    pub fn new(object_type: &str) -> Self {
        InvalidateAll(object_type.to_owned())
    }
}

impl From<InvalidateAll> for Dep {
    fn from(v: InvalidateAll) -> Dep {
        let mut e = Encoder::new("all");
        e.part(&v.0);
        e.finish()
    }
}

/// A typed scalar: a condition parameter value or a primary-key component.
///
/// Integers are normalised (every signed and unsigned width that fits in `i64`
/// becomes [`Value::Int`]), so the type spelled at each call site does not
/// matter. Floats are compared by value, with `-0.0` equal to `0.0`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// SQL `NULL`, `None`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl Value {
    fn encode_into(&self, out: &mut String) {
        use fmt::Write;
        match self {
            Value::Null => out.push('n'),
            Value::Bool(b) => out.push_str(if *b { "b1" } else { "b0" }),
            Value::Int(i) => {
                let _ = write!(out, "i{i}");
            }
            Value::UInt(u) => {
                let _ = write!(out, "u{u}");
            }
            Value::Float(f) => {
                let f = if *f == 0.0 { 0.0 } else { *f };
                let _ = write!(out, "f{:016x}", f.to_bits());
            }
            Value::Str(s) => {
                out.push('s');
                out.push_str(s);
            }
            Value::Bytes(b) => {
                out.push('x');
                for byte in b {
                    let _ = write!(out, "{byte:02x}");
                }
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => write!(f, "{b:?}"),
        }
    }
}

macro_rules! value_from_signed {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value { Value::Int(v as i64) }
        }
    )*};
}
macro_rules! value_from_unsigned {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                match i64::try_from(v) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::UInt(v as u64),
                }
            }
        }
    )*};
}
value_from_signed!(i8, i16, i32, i64, isize);
value_from_unsigned!(u8, u16, u32, u64, usize);

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Value {
        Value::Float(v as f64)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Str(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Str(v.clone())
    }
}
impl From<char> for Value {
    fn from(v: char) -> Value {
        Value::Str(v.to_string())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Bytes(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Bytes(v.to_vec())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}
macro_rules! value_from_ref {
    ($($t:ty),*) => {$(
        impl From<&$t> for Value {
            fn from(v: &$t) -> Value { (*v).into() }
        }
    )*};
}
value_from_ref!(bool, i8, i16, i32, i64, isize, u8, u16, u32, u64, usize, f32, f64, char);

/// Named, typed parameters of a scope condition. Order-independent: two
/// `Params` with the same names and values are equal however they were built.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(BTreeMap<String, Value>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Params(BTreeMap::new())
    }

    /// Adds (or replaces) a parameter; returns `self` for chaining.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert(name, value);
        self
    }

    /// Adds (or replaces) a parameter.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        self.0.insert(name.into(), value.into());
    }

    /// The value of a parameter.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// The parameters, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The parameter names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Params(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

/// Builds [`Params`]: `params! { "published" => true, "category" => "python" }`.
#[macro_export]
macro_rules! params {
    () => { $crate::dep::Params::new() };
    ($($name:expr => $value:expr),+ $(,)?) => {{
        let mut p = $crate::dep::Params::new();
        $( p.insert($name, $value); )+
        p
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_collisions_are_gone() {
        assert_ne!(Dep::id("a:b", "c"), Dep::id("a", "b:c"));
        let one = Dep::condition("t", params! { "a" => "x&b=y" });
        let two = Dep::condition("t", params! { "a" => "x", "b" => "y" });
        assert_ne!(one, two);
        assert_ne!(Dep::tag("x"), Dep::id("x", ""));
    }

    #[test]
    fn integer_widths_meet_strings_do_not() {
        assert_eq!(Dep::condition("t", params! {"n" => 1u8}), Dep::condition("t", params! {"n" => 1i64}));
        assert_ne!(Dep::condition("t", params! {"n" => 1}), Dep::condition("t", params! {"n" => "1"}));
        assert_ne!(Dep::condition("t", params! {"n" => true}), Dep::condition("t", params! {"n" => 1}));
        assert_eq!(Dep::primary_key("a", [1u32]), Dep::primary_key("a", [1i64]));
        assert_eq!(Value::from(0.0f64), Value::Float(0.0));
        assert_eq!(Dep::condition("t", params! {"f" => -0.0f64}), Dep::condition("t", params! {"f" => 0.0f64}));
    }

    #[test]
    fn order_independent() {
        let a = params! { "published" => true, "category" => "python" };
        let b = params! { "category" => "python", "published" => true };
        assert_eq!(Dep::condition("article", a), Dep::condition("article", b));
    }

    #[test]
    fn decode_roundtrip_and_malformed() {
        let d = Dep::id("we:ird\\", "x:y");
        assert_eq!(d.parts(), vec!["id", "we:ird\\", "x:y"]);
        assert_eq!(Dep::from_encoded(d.as_str()), Some(d));
        assert_eq!(Dep::from_encoded("bad\\"), None);
        assert_eq!(Dep::from_encoded("bad\\x"), None);
    }

    #[test]
    fn ntag_namespace_is_the_type() {
        struct A;
        struct B;
        assert_ne!(Dep::ntag::<A>("x"), Dep::ntag::<B>("x"));
        assert_eq!(Dep::ntag::<A>("x"), Dep::ntag::<A>("x"));
    }
}
