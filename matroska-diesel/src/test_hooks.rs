//! A pause point for concurrency tests (feature `test-hooks`, off by
//! default): the next write that reads its rows first stops after that read,
//! before the statement runs, until the test resumes it.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

type Hook = (Arc<Notify>, Arc<Notify>);

static NEXT: Mutex<Option<Hook>> = Mutex::new(None);

/// Arms the pause: `paused` is notified when a write stops there; it goes on
/// once `resume` is notified.
pub fn pause_next_write_after_read(paused: Arc<Notify>, resume: Arc<Notify>) {
    *NEXT.lock().unwrap_or_else(|p| p.into_inner()) = Some((paused, resume));
}

pub(crate) async fn after_read_first() {
    let hook = NEXT.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((paused, resume)) = hook {
        paused.notify_one();
        resume.notified().await;
    }
}
