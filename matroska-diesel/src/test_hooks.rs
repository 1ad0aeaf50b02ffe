//! A pause point for concurrency tests (feature `test-hooks`, off by
//! default): the next write through a given [`CachedDatabase`] that reads
//! its rows first stops after that read, before the statement runs, until
//! the test resumes it. Writes through other `CachedDatabase`s (other
//! tests in the same process) never stop there.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::connection::Shared;
use crate::CachedDatabase;

/// The armed pause: the database's shared state (by address), and the
/// test's two signals.
type Hook = (usize, Arc<Notify>, Arc<Notify>);

static ARMED: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

/// Arms the pause for the next write through `db` (any of its
/// connections): `paused` is notified when that write stops there; it goes
/// on once `resume` is notified.
pub fn pause_next_write_after_read(db: &CachedDatabase, paused: Arc<Notify>, resume: Arc<Notify>) {
    let key = Arc::as_ptr(&db.shared) as usize;
    ARMED.lock().unwrap_or_else(|p| p.into_inner()).push((key, paused, resume));
}

pub(crate) async fn after_read_first(shared: &Arc<Shared>) {
    let key = Arc::as_ptr(shared) as usize;
    let hook = {
        let mut armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
        armed.iter().position(|(k, ..)| *k == key).map(|i| armed.remove(i))
    };
    if let Some((_, paused, resume)) = hook {
        paused.notify_one();
        resume.notified().await;
    }
}
