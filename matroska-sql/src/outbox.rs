//! The outbox table, as every integration writes and drains it.
//!
//! One row per committed transaction that wrote something cached:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | [`ID`] | auto-increment 64-bit integer, primary key | the intent |
//! | [`DEPS`] | text | the dependencies to invalidate, [`encode`]d |
//! | [`CREATED_AT`] | 64-bit integer | when it was recorded, ms since the Unix epoch |
//! | [`NEXT_ATTEMPT_AT`] | 64-bit integer | when a drainer may apply it next, ms since the Unix epoch |
//! | [`ATTEMPTS`] | 32-bit integer | failed attempts so far |
//! | [`DEAD`] | boolean | dead-lettered after too many attempts |
//! | [`LAST_ERROR`] | nullable text | the last failure, for operators |
//!
//! with an index named `<table>_due` on ([`DEAD`], [`NEXT_ATTEMPT_AT`]).
//! SQLite's key is `INTEGER PRIMARY KEY` (its auto-increment form).
//!
//! A writer inserts a row in the transaction of its write, applies it right
//! after the commit and deletes it. A drainer claims rows that are not dead
//! (`FOR UPDATE SKIP LOCKED` where the database has it), invalidates the
//! union of their dependencies, and deletes them in the same transaction; on
//! failure it increments [`ATTEMPTS`], pushes [`NEXT_ATTEMPT_AT`] back and
//! sets [`DEAD`] after the configured limit. Intents written by one
//! integration are drained by any other, since they share this format.

use matroska::Dep;

/// The default table name.
pub const DEFAULT_TABLE: &str = "matroska_outbox";
/// The primary key column.
pub const ID: &str = "id";
/// The dependencies column.
pub const DEPS: &str = "deps";
/// The creation time column (ms since the Unix epoch).
pub const CREATED_AT: &str = "created_at";
/// The next attempt time column (ms since the Unix epoch).
pub const NEXT_ATTEMPT_AT: &str = "next_attempt_at";
/// The failed attempts column.
pub const ATTEMPTS: &str = "attempts";
/// The dead-letter flag column.
pub const DEAD: &str = "dead";
/// The last error column.
pub const LAST_ERROR: &str = "last_error";
/// The channel PostgreSQL drainers `LISTEN` on; writers `NOTIFY` it.
pub const CHANNEL: &str = "matroska_outbox";

/// Encodes dependencies for the [`DEPS`] column: a JSON array of their keys
/// ([`Dep::as_str`]).
#[must_use]
pub fn encode(deps: &[Dep]) -> String {
    let keys: Vec<&str> = deps.iter().map(Dep::as_str).collect();
    serde_json::to_string(&keys).unwrap_or_else(|_| "[]".into())
}

/// Decodes the [`DEPS`] column; `None` when it is not a JSON array of
/// dependency keys.
#[must_use]
pub fn decode(text: &str) -> Option<Vec<Dep>> {
    let keys: Vec<String> = serde_json::from_str(text).ok()?;
    keys.iter().map(|k| Dep::from_encoded(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let deps = vec![Dep::tag("article:1"), Dep::tag("quote\"and\\slash")];
        assert_eq!(decode(&encode(&deps)), Some(deps));
        assert_eq!(decode(&encode(&[])), Some(vec![]));
        assert_eq!(decode("not json"), None);
        assert_eq!(decode("[1]"), None);
    }
}
