//! Where hooks find the cache: an explicit registration.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use matroska::{Cache, Codec, Dep};

/// A cache as the hooks see it: something that invalidates dependencies.
/// Implemented for every [`Cache`].
pub trait Invalidator: Send + Sync + 'static {
    /// Invalidates `deps` in one backend call; returns the entries dropped.
    fn invalidate<'a>(
        &'a self,
        deps: Vec<Dep>,
    ) -> Pin<Box<dyn Future<Output = Result<u64, matroska::Error>> + Send + 'a>>;
}

impl<C: Codec> Invalidator for Cache<C> {
    fn invalidate<'a>(
        &'a self,
        deps: Vec<Dep>,
    ) -> Pin<Box<dyn Future<Output = Result<u64, matroska::Error>> + Send + 'a>> {
        Box::pin(Cache::invalidate(self, deps))
    }
}

/// What a hook does when it runs on a `DatabaseTransaction` that
/// [`transaction`](crate::transaction) did not open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnmanagedTransactions {
    /// The save or delete fails with
    /// [`Error::UnmanagedTransaction`](crate::Error::UnmanagedTransaction)
    /// before any SQL runs (the default).
    #[default]
    Error,
    /// The hook invalidates as usual and logs a warning: the entries are
    /// dropped before the commit, and a reader may cache the old row again
    /// until the commit.
    Warn,
}

/// A registered cache and its settings.
#[derive(Clone)]
#[must_use]
pub struct Registration {
    pub(crate) cache: Arc<dyn Invalidator>,
    pub(crate) unmanaged: UnmanagedTransactions,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("unmanaged", &self.unmanaged).finish_non_exhaustive()
    }
}

static GLOBAL: RwLock<Option<Registration>> = RwLock::new(None);

tokio::task_local! {
    static SCOPED: Registration;
}

impl Registration {
    /// A registration of `cache` with the default settings.
    pub fn new<C: Codec>(cache: Cache<C>) -> Self {
        Registration { cache: Arc::new(cache), unmanaged: UnmanagedTransactions::default() }
    }

    /// A registration of any [`Invalidator`] (a wrapper that records or
    /// filters invalidations, a test double).
    pub fn from_invalidator(invalidator: impl Invalidator) -> Self {
        Registration { cache: Arc::new(invalidator), unmanaged: UnmanagedTransactions::default() }
    }

    /// What hooks do on transactions not opened by
    /// [`transaction`](crate::transaction).
    pub fn unmanaged_transactions(mut self, policy: UnmanagedTransactions) -> Self {
        self.unmanaged = policy;
        self
    }

    /// Makes this the process-wide registration (replacing any previous one).
    pub fn register(self) {
        *GLOBAL.write().unwrap_or_else(|p| p.into_inner()) = Some(self);
    }

    /// Runs `fut` with this registration in place of the process-wide one,
    /// for the current task only (tasks it spawns do not inherit it). Useful
    /// for tests running side by side, or one cache per tenant.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        SCOPED.scope(self, fut).await
    }
}

/// Registers `cache` process-wide for automatic invalidation, with the
/// default settings. Call it once at start-up, before the first write.
pub fn register<C: Codec>(cache: Cache<C>) {
    Registration::new(cache).register();
}

/// Removes the process-wide registration; returns whether there was one.
pub fn unregister() -> bool {
    GLOBAL.write().unwrap_or_else(|p| p.into_inner()).take().is_some()
}

/// The registration in effect for the current task.
pub(crate) fn current() -> Option<Registration> {
    SCOPED.try_with(Clone::clone).ok().or_else(|| GLOBAL.read().unwrap_or_else(|p| p.into_inner()).clone())
}
