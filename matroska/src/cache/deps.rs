//! The dependencies a loader collects, and how they reach the enclosing
//! loader (Russian dolls).

use std::sync::{Arc, Mutex};

use crate::dep::Dep;

/// Dependencies collected by a loader. Cloning shares the same list.
///
/// A loader receives one; it adds the dependencies of what it loaded. Values
/// obtained through any cache inside the loader (hits and loads) add their
/// dependencies to it by themselves.
///
/// It also carries whether the value may be cached at all: a loader that
/// read uncommitted data (inside a database transaction, see
/// [`mark_uncacheable`]) produces a value that is returned to its caller
/// but neither stored nor shared.
#[derive(Clone, Debug, Default)]
pub struct Deps(Arc<Mutex<Collected>>);

#[derive(Debug, Default)]
struct Collected {
    deps: Vec<Dep>,
    uncacheable: Option<&'static str>,
}

impl Deps {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one dependency.
    pub fn push(&self, dep: impl Into<Dep>) {
        lock(&self.0).deps.push(dep.into());
    }

    /// Adds several dependencies (as [`Extend::extend`] does, through a
    /// shared reference).
    pub fn extend<I>(&self, deps: I)
    where
        I: IntoIterator,
        I::Item: Into<Dep>,
    {
        lock(&self.0).deps.extend(deps.into_iter().map(Into::into));
    }

    /// The dependencies collected so far, sorted and deduplicated.
    pub fn to_vec(&self) -> Vec<Dep> {
        let mut v = lock(&self.0).deps.clone();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Marks the value being loaded as not to be cached (nor shared with
    /// other callers waiting for the same key), with a reason for traces.
    /// The enclosing loaders, if any, are marked too when this one returns.
    pub fn set_uncacheable(&self, reason: &'static str) {
        lock(&self.0).uncacheable.get_or_insert(reason);
    }

    /// Why the value must not be cached, if [`set_uncacheable`](Self::set_uncacheable)
    /// was called.
    pub fn uncacheable(&self) -> Option<&'static str> {
        lock(&self.0).uncacheable
    }
}

impl<D: Into<Dep>> Extend<D> for Deps {
    fn extend<I: IntoIterator<Item = D>>(&mut self, iter: I) {
        Deps::extend(self, iter);
    }
}

impl<D: Into<Dep>> FromIterator<D> for Deps {
    fn from_iter<I: IntoIterator<Item = D>>(iter: I) -> Self {
        let deps = Deps::new();
        Deps::extend(&deps, iter);
        deps
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

tokio::task_local! {
    /// The dependency collector of the innermost running loader.
    pub(crate) static COLLECTOR: Deps;
}

/// Adds `deps` to the enclosing loader's collection, if any (Russian doll).
pub(crate) fn bubble(deps: &[Dep]) {
    let _ = COLLECTOR.try_with(|c| c.extend(deps.iter().cloned()));
}

/// Whether a loader is running in this task.
pub(crate) fn in_loader() -> bool {
    COLLECTOR.try_with(|_| ()).is_ok()
}

/// Marks the value of the innermost running loader (and so of every loader
/// enclosing it) as not to be cached: it is returned to its caller, but
/// neither stored nor handed to callers waiting for the same key. Returns
/// whether a loader was running in this task.
///
/// Database integrations call it when a loader reads inside a transaction:
/// what it reads may be uncommitted, or an old snapshot.
pub fn mark_uncacheable(reason: &'static str) -> bool {
    COLLECTOR.try_with(|c| c.set_uncacheable(reason)).is_ok()
}

/// Propagates an inner loader's uncacheable mark to the enclosing one.
pub(crate) fn bubble_uncacheable(reason: &'static str) {
    let _ = COLLECTOR.try_with(|c| c.set_uncacheable(reason));
}
