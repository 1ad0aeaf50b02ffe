//! Tasks that read inside an open database transaction.
//!
//! A loader run by [`Cache::get_or_load`](crate::Cache::get_or_load) that
//! reads through a transaction is marked uncacheable
//! ([`mark_uncacheable`](crate::mark_uncacheable)). A value cached by hand
//! ([`Cache::lookup`](crate::Cache::lookup), a read, then
//! [`Cache::put_with_ticket`](crate::Cache::put_with_ticket)) has no loader
//! to mark: instead the task that read is remembered, with a token of the
//! transaction, and its puts are refused while the transaction is open. A
//! database integration calls [`read_in_transaction`] on every read through
//! a transaction.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// An open database transaction, as the cache sees it: create one per
/// outermost transaction, share it with its savepoints, and drop it (every
/// clone) when the transaction ends, committed or not.
#[derive(Clone, Debug, Default)]
pub struct TransactionToken(Arc<()>);

impl TransactionToken {
    /// A token for a transaction that just began.
    #[must_use]
    pub fn new() -> Self {
        TransactionToken::default()
    }
}

/// Who read: the tokio task, or the thread outside any task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Reader {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

fn reader() -> Reader {
    match tokio::task::try_id() {
        Some(id) => Reader::Task(id),
        None => Reader::Thread(std::thread::current().id()),
    }
}

/// Readers and the transactions they read through.
static READERS: Mutex<Option<HashMap<Reader, Vec<Weak<()>>>>> = Mutex::new(None);
/// How many readers are recorded (a fast path for puts when none is).
static RECORDED: AtomicUsize = AtomicUsize::new(0);
/// Above this many readers, ended transactions are pruned on insertion.
const PRUNE_ABOVE: usize = 1024;

/// Records that the current task (or thread) read through the transaction
/// of `token`, and marks the running loader, if any, uncacheable
/// ([`mark_uncacheable`](crate::mark_uncacheable)). Until the transaction
/// ends, [`Cache::put`](crate::Cache::put) and
/// [`Cache::put_with_ticket`](crate::Cache::put_with_ticket) from this task
/// are refused: what it read may be uncommitted.
pub fn read_in_transaction(token: &TransactionToken, reason: &'static str) {
    super::deps::mark_uncacheable(reason);
    let me = reader();
    let mut guard = READERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let map = guard.get_or_insert_with(HashMap::new);
    if map.len() > PRUNE_ABOVE {
        map.retain(|_, tokens| {
            tokens.retain(|t| t.strong_count() > 0);
            !tokens.is_empty()
        });
    }
    let tokens = map.entry(me).or_default();
    if !tokens.iter().any(|t| std::ptr::eq(t.as_ptr(), Arc::as_ptr(&token.0))) {
        tokens.retain(|t| t.strong_count() > 0);
        tokens.push(Arc::downgrade(&token.0));
    }
    RECORDED.store(map.len(), Ordering::Relaxed);
}

/// Whether the current task read through a transaction that is still open.
pub(crate) fn in_open_transaction() -> bool {
    if RECORDED.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let me = reader();
    let mut guard = READERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(map) = guard.as_mut() else { return false };
    let Some(tokens) = map.get_mut(&me) else { return false };
    tokens.retain(|t| t.strong_count() > 0);
    if tokens.is_empty() {
        map.remove(&me);
        RECORDED.store(map.len(), Ordering::Relaxed);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_until_every_clone_is_dropped() {
        assert!(!in_open_transaction());
        let token = TransactionToken::new();
        let savepoint = token.clone();
        read_in_transaction(&savepoint, "test");
        read_in_transaction(&token, "test");
        assert!(in_open_transaction());
        drop(token);
        assert!(in_open_transaction());
        drop(savepoint);
        assert!(!in_open_transaction());
        // another thread never read
        let other = TransactionToken::new();
        read_in_transaction(&other, "test");
        assert!(!std::thread::spawn(in_open_transaction).join().unwrap_or(true));
        drop(other);
    }
}
