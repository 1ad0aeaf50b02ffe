//! Scopes: invalidating filtered lists when an object enters or leaves them.
//!
//! A cached list filtered by some parameters (`published = true AND category =
//! 'python'`) depends on the scope condition with those parameters. A
//! [`Scopes`] declares, per object type, which parameter sets lists are filtered
//! by and how to read them off an object (an *extractor*). When an object is
//! created, deleted or modified, [`Scopes::invalidate_for`] and
//! [`Scopes::invalidate_change`] invalidate exactly the conditions the object
//! matched (before and after the change).
//!
//! Every condition also carries the type's kill switch
//! ([`InvalidateAll`](crate::dep::InvalidateAll)), so invalidating
//! `Dep::invalidate_all(type)` drops every list of that type. In
//! [`Mode::Production`], mistakes (a condition nobody describes, an extractor
//! that fails) degrade to the kill switch: caching stays correct, only coarser.
//! In [`Mode::Development`] they are errors.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use tracing::warn;

use crate::cache::Cache;
use crate::codec::Codec;
use crate::dep::{Dep, Params, Value};
use crate::error::{BoxError, Error};

/// How scope mistakes are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Mistakes are errors.
    Development,
    /// Mistakes log a warning and fall back to the type's kill switch.
    Production,
}

impl Default for Mode {
    /// `Development` in debug builds, `Production` in release builds.
    fn default() -> Self {
        if cfg!(debug_assertions) {
            Mode::Development
        } else {
            Mode::Production
        }
    }
}

/// A scope mistake, reported in [`Mode::Development`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// `condition` was called with a parameter set no extractor describes.
    #[error("no extractor of {object_type:?} describes exactly the parameters {params:?}; add `.describes({params:?}, ..)` to its Scopes")]
    UnknownCondition {
        /// The object type.
        object_type: String,
        /// The parameter names asked for.
        params: Vec<String>,
    },
    /// An extractor returned parameters other than those it describes.
    #[error("the extractor of {object_type:?} describing {expected:?} returned parameters {got:?}")]
    WrongParams {
        /// The object type.
        object_type: String,
        /// The parameters it describes.
        expected: Vec<String>,
        /// The parameters it returned.
        got: Vec<String>,
    },
    /// An extractor failed.
    #[error("the extractor of {object_type:?} describing {params:?} failed")]
    Extractor {
        /// The object type.
        object_type: String,
        /// The parameters it describes.
        params: Vec<String>,
        /// Its error.
        #[source]
        source: BoxError,
    },
}

/// What an extractor may return: nothing (`None`: the object is in no list of
/// this kind), one parameter set, several (an article with many tags), or an
/// error.
pub trait Extracted {
    /// The parameter sets, or the extractor's error.
    fn into_params(self) -> Result<Vec<Params>, BoxError>;
}

impl Extracted for Option<Params> {
    fn into_params(self) -> Result<Vec<Params>, BoxError> {
        Ok(self.into_iter().collect())
    }
}

impl Extracted for Params {
    fn into_params(self) -> Result<Vec<Params>, BoxError> {
        Ok(vec![self])
    }
}

impl Extracted for Vec<Params> {
    fn into_params(self) -> Result<Vec<Params>, BoxError> {
        Ok(self)
    }
}

impl<X: Extracted, E: Into<BoxError>> Extracted for Result<X, E> {
    fn into_params(self) -> Result<Vec<Params>, BoxError> {
        self.map_err(Into::into)?.into_params()
    }
}

type Extractor<T> = Arc<dyn Fn(&T) -> Result<Vec<Params>, BoxError> + Send + Sync>;

struct Describer<T> {
    params: BTreeSet<String>,
    watch: BTreeSet<String>,
    extract: Extractor<T>,
}

impl<T> Clone for Describer<T> {
    fn clone(&self) -> Self {
        Describer { params: self.params.clone(), watch: self.watch.clone(), extract: Arc::clone(&self.extract) }
    }
}

/// The scopes of one object type.
///
/// ```
/// use matroska::{params, Mode, Scopes};
///
/// struct Article { published: bool, category: String }
///
/// let scopes = Scopes::<Article>::new("article", Mode::Development)
///     .describes(["published", "category"], |a: &Article| {
///         Some(params! { "published" => a.published, "category" => &a.category })
///     });
/// // a list of published python articles depends on:
/// let deps = scopes.condition(params! { "category" => "python", "published" => true }).unwrap();
/// assert_eq!(deps.len(), 2); // the condition and the kill switch
/// ```
pub struct Scopes<T> {
    object_type: Arc<str>,
    mode: Mode,
    describers: Vec<Describer<T>>,
    /// Parameters compared by a collation the cache does not model.
    collated: Arc<BTreeSet<String>>,
}

impl<T> Clone for Scopes<T> {
    fn clone(&self) -> Self {
        Scopes {
            object_type: self.object_type.clone(),
            mode: self.mode,
            describers: self.describers.clone(),
            collated: Arc::clone(&self.collated),
        }
    }
}

/// The value every collated parameter takes in a condition (bytes, a type
/// no text parameter has, so it meets no real value of one).
const COLLATED: &[u8] = b"\0matroska:collated";

impl<T> fmt::Debug for Scopes<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scopes")
            .field("object_type", &self.object_type)
            .field("mode", &self.mode)
            .field("describes", &self.describers.iter().map(|d| &d.params).collect::<Vec<_>>())
            .finish()
    }
}

fn names<I>(it: I) -> BTreeSet<String>
where
    I: IntoIterator,
    I::Item: Into<String>,
{
    it.into_iter().map(Into::into).collect()
}

impl<T> Scopes<T> {
    /// The scopes of `object_type` (the name used in its dependencies).
    pub fn new(object_type: impl Into<String>, mode: Mode) -> Self {
        Scopes { object_type: Arc::from(object_type.into()), mode, describers: Vec::new(), collated: Arc::default() }
    }

    /// Declares parameters whose values the database compares by a collation
    /// the cache does not model: case- or accent-insensitive (MySQL's and
    /// MariaDB's default `_ci` collations, SQLite's `NOCASE`, PostgreSQL's
    /// `citext` or nondeterministic collations), or ignoring trailing spaces
    /// (`PAD SPACE`). A list filtered by `type = 'tool'` also holds rows of
    /// type `Tool`, which the cache would not match by value. Their conditions
    /// therefore ignore these parameters' values: a list filtered by one
    /// depends on every object with *any* value of it (and the same values
    /// of the other parameters), and is invalidated by a change of any.
    /// Precise on the other parameters, coarse on these.
    #[must_use]
    pub fn collated<P>(mut self, params: P) -> Self
    where
        P: IntoIterator,
        P::Item: Into<String>,
    {
        let mut set = (*self.collated).clone();
        set.extend(names(params));
        self.collated = Arc::new(set);
        self
    }

    /// The parameters declared [`collated`](Self::collated).
    pub fn collated_params(&self) -> impl Iterator<Item = &str> {
        self.collated.iter().map(String::as_str)
    }

    /// `params` as conditions carry them: the values of
    /// [`collated`](Self::collated) parameters replaced by one marker.
    pub fn normalize(&self, mut params: Params) -> Params {
        for name in self.collated.iter() {
            if params.get(name).is_some() {
                params.insert(name.clone(), Value::Bytes(COLLATED.to_vec()));
            }
        }
        params
    }

    /// The object type.
    pub fn object_type(&self) -> &str {
        &self.object_type
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Declares that lists are filtered by exactly `params`, read off an object
    /// by `extract`. The parameters are also the watched fields: a modification
    /// touching one of them re-runs this extractor.
    #[must_use]
    pub fn describes<P, F, R>(self, params: P, extract: F) -> Self
    where
        P: IntoIterator,
        P::Item: Into<String>,
        F: Fn(&T) -> R + Send + Sync + 'static,
        R: Extracted,
    {
        let params = names(params);
        let watch = params.clone();
        self.push(params, watch, extract)
    }

    /// Like [`describes`](Self::describes), but re-runs the extractor when any
    /// of the `watch` fields is modified (for parameters computed from other
    /// fields, such as `published` from `status`).
    #[must_use]
    pub fn describes_watching<P, W, F, R>(self, params: P, watch: W, extract: F) -> Self
    where
        P: IntoIterator,
        P::Item: Into<String>,
        W: IntoIterator,
        W::Item: Into<String>,
        F: Fn(&T) -> R + Send + Sync + 'static,
        R: Extracted,
    {
        self.push(names(params), names(watch), extract)
    }

    fn push<F, R>(mut self, params: BTreeSet<String>, watch: BTreeSet<String>, extract: F) -> Self
    where
        F: Fn(&T) -> R + Send + Sync + 'static,
        R: Extracted,
    {
        self.describers.push(Describer { params, watch, extract: Arc::new(move |t: &T| extract(t).into_params()) });
        self
    }

    /// Whether a modification of `field` can move an object between lists.
    pub fn watches(&self, field: &str) -> bool {
        self.describers.iter().any(|d| d.watch.contains(field))
    }

    /// Whether some list of this type depends on an object's values: a
    /// describer with parameters. (A describer of no parameters, the list
    /// of every object, only changes when objects are created or deleted.)
    pub fn describes_values(&self) -> bool {
        self.describers.iter().any(|d| !d.params.is_empty() || !d.watch.is_empty())
    }

    /// Every watched field.
    pub fn watched_fields(&self) -> BTreeSet<&str> {
        self.describers.iter().flat_map(|d| d.watch.iter().map(String::as_str)).collect()
    }

    fn kill_switch(&self) -> Dep {
        Dep::invalidate_all(&*self.object_type)
    }

    /// The dependencies of a list filtered by `params`: the condition and the
    /// kill switch.
    ///
    /// # Errors
    /// In [`Mode::Development`], [`ScopeError::UnknownCondition`] if no
    /// extractor describes exactly these parameter names. In production the
    /// call logs a warning and returns only the kill switch.
    pub fn condition(&self, params: Params) -> Result<Vec<Dep>, ScopeError> {
        let asked: BTreeSet<String> = params.names().map(str::to_owned).collect();
        if self.describers.iter().any(|d| d.params == asked) {
            return Ok(vec![Dep::condition(&*self.object_type, self.normalize(params)), self.kill_switch()]);
        }
        let err = ScopeError::UnknownCondition {
            object_type: self.object_type.to_string(),
            params: asked.into_iter().collect(),
        };
        self.degrade(err).map(|()| vec![self.kill_switch()])
    }

    fn degrade(&self, err: ScopeError) -> Result<(), ScopeError> {
        match self.mode {
            Mode::Development => Err(err),
            Mode::Production => {
                warn!(error = %err, "scope mistake; falling back to the kill switch");
                Ok(())
            }
        }
    }

    /// The conditions `item` belongs to, for the extractors watching one of
    /// `modified` (all extractors when `None`: a creation or deletion).
    ///
    /// # Errors
    /// In [`Mode::Development`], [`ScopeError::WrongParams`] or
    /// [`ScopeError::Extractor`]. In production such an extractor contributes
    /// the kill switch instead.
    pub fn dependencies_for(&self, item: &T, modified: Option<&[&str]>) -> Result<Vec<Dep>, ScopeError> {
        let mut deps = Vec::new();
        for d in &self.describers {
            if let Some(fields) = modified {
                if !fields.iter().any(|f| d.watch.contains(*f)) {
                    continue;
                }
            }
            let failure = match (d.extract)(item) {
                Ok(sets) => {
                    let mut wrong = None;
                    for p in sets {
                        if p.names().eq(d.params.iter().map(String::as_str)) {
                            deps.push(Dep::condition(&*self.object_type, self.normalize(p)));
                        } else {
                            wrong = Some(ScopeError::WrongParams {
                                object_type: self.object_type.to_string(),
                                expected: d.params.iter().cloned().collect(),
                                got: p.names().map(str::to_owned).collect(),
                            });
                        }
                    }
                    wrong
                }
                Err(source) => Some(ScopeError::Extractor {
                    object_type: self.object_type.to_string(),
                    params: d.params.iter().cloned().collect(),
                    source,
                }),
            };
            if let Some(err) = failure {
                self.degrade(err)?;
                deps.push(self.kill_switch());
            }
        }
        deps.sort_unstable();
        deps.dedup();
        Ok(deps)
    }

    /// The conditions a modified object leaves *and* enters: those of its old
    /// values and those of its new values, for the extractors watching one of
    /// `modified`.
    ///
    /// # Errors
    /// As [`dependencies_for`](Self::dependencies_for).
    pub fn change_dependencies(&self, old: &T, new: &T, modified: &[&str]) -> Result<Vec<Dep>, ScopeError> {
        let mut deps = self.dependencies_for(old, Some(modified))?;
        deps.extend(self.dependencies_for(new, Some(modified))?);
        deps.sort_unstable();
        deps.dedup();
        Ok(deps)
    }

    /// Invalidates the lists `item` belongs to: call it after creating or
    /// deleting it (`modified = None`), or after modifying `modified` fields
    /// when the old values are not at hand (prefer
    /// [`invalidate_change`](Self::invalidate_change) then).
    ///
    /// # Errors
    /// [`Error::Scope`] (development mode) or [`Error::Backend`].
    pub async fn invalidate_for<C: Codec>(
        &self,
        cache: &Cache<C>,
        item: &T,
        modified: Option<&[&str]>,
    ) -> Result<u64, Error> {
        let deps = self.dependencies_for(item, modified)?;
        cache.invalidate(deps).await
    }

    /// Invalidates the lists a modified object left and entered, in one
    /// backend call.
    ///
    /// # Errors
    /// [`Error::Scope`] (development mode) or [`Error::Backend`].
    pub async fn invalidate_change<C: Codec>(
        &self,
        cache: &Cache<C>,
        old: &T,
        new: &T,
        modified: &[&str],
    ) -> Result<u64, Error> {
        let deps = self.change_dependencies(old, new, modified)?;
        cache.invalidate(deps).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params;

    #[derive(Clone)]
    struct Article {
        published: bool,
        category: String,
        tags: Vec<String>,
    }

    fn scopes(mode: Mode) -> Scopes<Article> {
        Scopes::new("article", mode)
            .describes(["published", "category"], |a: &Article| {
                Some(params! { "published" => a.published, "category" => &a.category })
            })
            .describes(["tag"], |a: &Article| a.tags.iter().map(|t| params! { "tag" => t }).collect::<Vec<_>>())
            .describes(["published"], |a: &Article| a.published.then(|| params! { "published" => true }))
    }

    fn art(published: bool, category: &str) -> Article {
        Article { published, category: category.into(), tags: vec!["x".into(), "y".into()] }
    }

    #[test]
    fn condition_meets_extractor_whatever_the_order() {
        let s = scopes(Mode::Development);
        let cond = s.condition(params! { "category" => "python", "published" => true }).unwrap();
        let deps = s.dependencies_for(&art(true, "python"), None).unwrap();
        assert!(deps.contains(&cond[0]));
        assert_eq!(cond[1], Dep::invalidate_all("article"));
    }

    #[test]
    fn unknown_condition_dev_error_prod_kill_switch() {
        let err = scopes(Mode::Development).condition(params! { "author" => 1 }).unwrap_err();
        assert!(matches!(err, ScopeError::UnknownCondition { .. }), "{err}");
        assert!(err.to_string().contains("describes"));
        let deps = scopes(Mode::Production).condition(params! { "author" => 1 }).unwrap();
        assert_eq!(deps, vec![Dep::invalidate_all("article")]);
    }

    #[test]
    fn modified_runs_only_watching_extractors() {
        let s = scopes(Mode::Development);
        let deps = s.dependencies_for(&art(true, "python"), Some(&["views"])).unwrap();
        assert!(deps.is_empty());
        let deps = s.dependencies_for(&art(true, "python"), Some(&["tag"])).unwrap();
        assert_eq!(deps.len(), 2, "one condition per tag");
    }

    #[test]
    fn change_covers_old_and_new() {
        let s = scopes(Mode::Development);
        let deps = s.change_dependencies(&art(true, "a"), &art(true, "b"), &["category"]).unwrap();
        let a = Dep::condition("article", params! { "published" => true, "category" => "a" });
        let b = Dep::condition("article", params! { "published" => true, "category" => "b" });
        assert!(deps.contains(&a) && deps.contains(&b));
    }

    #[test]
    fn extractor_failures() {
        let bad = Scopes::<Article>::new("article", Mode::Development)
            .describes(["category"], |_: &Article| Some(params! { "other" => 1 }))
            .describes(["published"], |_: &Article| -> Result<Option<Params>, String> { Err("boom".into()) });
        let err = bad.dependencies_for(&art(true, "a"), Some(&["category"])).unwrap_err();
        assert!(matches!(err, ScopeError::WrongParams { .. }));
        let err = bad.dependencies_for(&art(true, "a"), Some(&["published"])).unwrap_err();
        assert!(matches!(err, ScopeError::Extractor { .. }));
        let prod = Scopes { mode: Mode::Production, ..bad };
        assert_eq!(prod.dependencies_for(&art(true, "a"), None).unwrap(), vec![Dep::invalidate_all("article")]);
    }
}
