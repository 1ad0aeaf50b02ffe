//! Depth maps: which loaded relations a dependency walk follows.

use std::collections::BTreeMap;

/// Which relations a walk follows, by name: `1` includes a relation's rows,
/// `0` excludes them, a nested map includes them and walks on with that map.
/// Relations not named are not followed.
///
/// Build one with [`depth!`](crate::depth!) or with the builder methods:
///
/// ```
/// use matroska_diesel::{depth, Depth};
///
/// let a = depth! { author: 1, comments: { author: 1 } };
/// let b = Depth::new()
///     .include("author")
///     .nested("comments", Depth::new().include("author"));
/// assert_eq!(a, b);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Depth {
    map: BTreeMap<String, Option<Depth>>,
}

impl Depth {
    /// Follows no relation: only the rows themselves.
    pub fn new() -> Self {
        Self::default()
    }

    /// Includes the rows of relation `name` (`name: 1`).
    pub fn include(mut self, name: impl Into<String>) -> Self {
        self.map.insert(name.into(), Some(Depth::new()));
        self
    }

    /// Excludes relation `name` (`name: 0`).
    pub fn exclude(mut self, name: impl Into<String>) -> Self {
        self.map.insert(name.into(), None);
        self
    }

    /// Includes relation `name` and walks its rows with `inner`.
    pub fn nested(mut self, name: impl Into<String>, inner: Depth) -> Self {
        self.map.insert(name.into(), Some(inner));
        self
    }

    /// `1` includes, `0` excludes (what `depth!` expands `name: 1` to).
    pub fn level(self, name: impl Into<String>, level: u8) -> Self {
        if level == 0 {
            self.exclude(name)
        } else {
            self.include(name)
        }
    }

    /// The depth to walk relation `name` with, or `None` if it is not followed.
    pub fn descend(&self, name: &str) -> Option<&Depth> {
        self.map.get(name).and_then(Option::as_ref)
    }

    /// Whether `name` is mentioned (with any level).
    pub fn mentions(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The names mentioned.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Whether no relation is named.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// This map without `name`.
    pub(crate) fn without(&self, name: &str) -> Depth {
        let mut d = self.clone();
        d.map.remove(name);
        d
    }

    /// Fails on the first name not in `known`.
    ///
    /// # Errors
    /// [`Error::UnknownRelation`](crate::Error::UnknownRelation).
    pub fn check_known(&self, owner: &'static str, known: &[&str]) -> Result<(), crate::Error> {
        match self.names().find(|n| !known.contains(n)) {
            Some(name) => Err(crate::Error::UnknownRelation {
                owner,
                name: name.to_owned(),
                known: known.iter().map(|k| (*k).to_owned()).collect(),
            }),
            None => Ok(()),
        }
    }
}

/// Builds a [`Depth`]: `depth! { author: 1, comments: { author: 1 } }`.
///
/// Names are checked when the walk runs ([`Error::UnknownRelation`](crate::Error::UnknownRelation)).
/// Give the walked type first to check them at compile time instead: every
/// name must then be a field of that `#[derive(Walk)]` struct. Levels other
/// than `0` and `1` are a compile error.
#[macro_export]
macro_rules! depth {
    ($ty:ty => { $($body:tt)* }) => {{
        #[allow(unreachable_code, unused_variables, clippy::diverging_sub_expression)]
        if false {
            $crate::__private::check::<$ty>(|__x| { $crate::__depth_check!(__x; $($body)*); });
        }
        $crate::depth! { $($body)* }
    }};
    ($($name:ident : $v:tt),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut __d = $crate::Depth::new();
        $( __d = $crate::__depth_entry!(__d, $name, $v); )*
        __d
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __depth_entry {
    ($d:ident, $name:ident, { $($inner:tt)* }) => {
        $d.nested(stringify!($name), $crate::depth! { $($inner)* })
    };
    ($d:ident, $name:ident, $v:literal) => {{
        const _: () = assert!($v == 0 || $v == 1, "a depth level is 0, 1 or a nested map");
        $d.level(stringify!($name), $v)
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __depth_check {
    ($x:ident; ) => {};
    ($x:ident; $name:ident : { $($inner:tt)* } $(, $($rest:tt)*)?) => {
        $crate::__private::field(&$x.$name, |__y| { $crate::__depth_check!(__y; $($inner)*); });
        $crate::__depth_check!($x; $($($rest)*)?);
    };
    ($x:ident; $name:ident : $v:literal $(, $($rest:tt)*)?) => {
        $crate::__private::field(&$x.$name, |_| {});
        $crate::__depth_check!($x; $($($rest)*)?);
    };
}
