//! Single flight: concurrent misses of one key in a process run one loader.
//!
//! A waiter may only take the leader's value if its own read could have
//! returned it: the value must have been *stored* (so no dependency of it
//! was invalidated between the leader's miss and the put), and the waiter
//! must have joined before the leader started that put (so no invalidation
//! could complete between the put and the waiter's own miss). Any other
//! waiter reads the backend again: it finds the stored entry, or loads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use super::deps::lock;

/// The state of one in-flight load, shared with the tasks waiting for it.
#[derive(Clone, Debug)]
pub(crate) enum Flight {
    /// The loader runs.
    Loading,
    /// The loader returned; its value is being stored.
    Storing,
    /// The value, and whether the backend stored it.
    Done { bytes: Bytes, stored: bool },
    /// The loader failed, was cancelled, or its value is not to be shared.
    Failed,
}

/// What a waiter does once the flight it joined ends.
#[derive(Debug)]
pub(crate) enum Joined {
    /// Take this value (stored, and joined before the put began).
    Take(Bytes),
    /// Read the backend again (and load if it misses).
    Retry,
}

/// One flight: its state, and the waiters to wake when it changes. (A
/// `Notify` wakes waiters in a fixed order, so a seeded simulation replays
/// identically; `tokio::sync::watch` picks among several notifiers at random.)
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<Flight>,
    changed: Notify,
}

impl Shared {
    fn get(&self) -> Flight {
        lock(&self.state).clone()
    }

    fn set(&self, state: Flight) {
        *lock(&self.state) = state;
        self.changed.notify_waiters();
    }
}

type Table = Mutex<HashMap<String, Arc<Shared>>>;

/// The flights of one cache, by backend key.
#[derive(Debug, Default)]
pub(crate) struct Flights(Table);

/// Either the leader of a new flight or a waiter of a running one.
pub(crate) enum Role<'a> {
    Leader(FlightGuard<'a>),
    Waiter(Arc<Shared>),
}

impl Flights {
    /// Joins the flight of `key`, or starts one.
    pub(crate) fn join(&self, key: &str) -> Role<'_> {
        let mut flights = lock(&self.0);
        if let Some(shared) = flights.get(key) {
            return Role::Waiter(Arc::clone(shared));
        }
        let shared = Arc::new(Shared { state: Mutex::new(Flight::Loading), changed: Notify::new() });
        flights.insert(key.to_owned(), Arc::clone(&shared));
        Role::Leader(FlightGuard { table: &self.0, key: key.to_owned(), tx: shared })
    }
}

/// Waits for the end of a flight joined as a waiter.
pub(crate) async fn wait(shared: Arc<Shared>) -> Joined {
    // Joined while the loader ran? Then a stored value is ours to take.
    let early = matches!(shared.get(), Flight::Loading);
    loop {
        let notified = shared.changed.notified();
        tokio::pin!(notified);
        // registered before the state is read, so no change is missed
        notified.as_mut().enable();
        match shared.get() {
            Flight::Loading | Flight::Storing => notified.await,
            Flight::Done { bytes, stored: true } if early => return Joined::Take(bytes),
            Flight::Done { .. } | Flight::Failed => return Joined::Retry,
        }
    }
}

/// The leader's handle: removes the flight from the table when dropped, and
/// reports `Failed` if the leader never finished (an error, a panic, a
/// cancelled future).
pub(crate) struct FlightGuard<'a> {
    table: &'a Table,
    key: String,
    tx: Arc<Shared>,
}

impl FlightGuard<'_> {
    /// The loader returned: waiters joining from now on read the backend
    /// again once the flight ends.
    pub(crate) fn storing(&self) {
        self.tx.set(Flight::Storing);
    }

    /// Ends the flight.
    pub(crate) fn finish(self, state: Flight) {
        self.tx.set(state);
        // Drop removes the table entry.
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut flights = lock(self.table);
        if flights.get(&self.key).is_some_and(|tx| Arc::ptr_eq(tx, &self.tx)) {
            flights.remove(&self.key);
        }
        drop(flights);
        if matches!(self.tx.get(), Flight::Loading | Flight::Storing) {
            self.tx.set(Flight::Failed);
        }
    }
}
