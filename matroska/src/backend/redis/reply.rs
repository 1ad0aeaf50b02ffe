//! Reading Redis replies and mapping redis-rs errors to [`BackendError`]s.

use redis::{ErrorKind, RedisError, ServerErrorKind, Value};

use crate::backend::Ticket;
use crate::error::{BackendError, BackendErrorKind};

pub(super) fn protocol(key: &str, message: &str) -> BackendError {
    BackendError::new(BackendErrorKind::Protocol, message).with_key(key)
}

pub(super) fn foreign(key: &str) -> BackendError {
    BackendError::new(
        BackendErrorKind::ForeignData,
        "the key holds data this library did not write (wrong Redis type or malformed)",
    )
    .with_key(key)
}

/// A second error of the same kind, message and key (a [`BackendError`] is
/// not `Clone`: its source is boxed).
pub(super) fn again(e: &BackendError) -> BackendError {
    let err = BackendError::new(e.kind(), e.to_string());
    match e.key() {
        Some(k) => err.with_key(k),
        None => err,
    }
}

pub(super) fn array(v: Value, key: &str) -> Result<Vec<Value>, BackendError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(protocol(key, "expected an array reply")),
    }
}

pub(super) fn int(v: &Value, key: &str) -> Result<i64, BackendError> {
    match v {
        Value::Int(n) => Ok(*n),
        _ => Err(protocol(key, "expected an integer in the reply")),
    }
}

pub(super) fn bulk(v: Value, key: &str) -> Result<Vec<u8>, BackendError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        _ => Err(protocol(key, "expected a string in the reply")),
    }
}

/// Text of a string reply (bulk, simple or verbatim), if it is one.
pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// Turns a `TIME` reply into a ticket in microseconds.
pub(super) fn parse_time(parts: &[Value], key: &str) -> Result<Ticket, BackendError> {
    let num = |v: &Value| -> Option<u64> {
        match v {
            Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        }
    };
    match parts {
        [s, us] => match (num(s), num(us)) {
            (Some(s), Some(us)) => Ok(Ticket::new(s.saturating_mul(1_000_000).saturating_add(us))),
            _ => Err(protocol(key, "malformed server time")),
        },
        _ => Err(protocol(key, "malformed server time")),
    }
}

/// Maps a redis-rs error to a backend error kind.
pub(super) fn map_error(e: RedisError, key: Option<&str>) -> BackendError {
    let kind = if e.is_timeout() {
        BackendErrorKind::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_cluster_error() {
        BackendErrorKind::Unavailable
    } else {
        match e.kind() {
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask,
            )
            | ErrorKind::ClusterConnectionNotFound => BackendErrorKind::Unavailable,
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => BackendErrorKind::Protocol,
            _ => {
                // the first server error's code (a pipeline error has no code
                // of its own)
                let code = e.code().map(str::to_owned).or_else(|| {
                    e.clone()
                        .into_server_errors()
                        .and_then(|errors| errors.first().map(|(_, server)| server.code().to_owned()))
                });
                match code.as_deref() {
                    Some("WRONGTYPE") => BackendErrorKind::ForeignData,
                    // a long-running script elsewhere; retrying later may succeed
                    Some("BUSY") => BackendErrorKind::Unavailable,
                    // maxmemory reached under noeviction (or nothing left to
                    // evict): writes fail until memory is freed
                    Some("OOM") => BackendErrorKind::OutOfMemory,
                    _ if e.to_string().contains("OOM command not allowed") => BackendErrorKind::OutOfMemory,
                    _ => BackendErrorKind::Refused,
                }
            }
        }
    };
    let message = match kind {
        BackendErrorKind::ForeignData => "the key holds data this library did not write (wrong Redis type)".to_owned(),
        BackendErrorKind::OutOfMemory => format!(
            "Redis is out of memory (maxmemory reached and nothing it may evict): writes fail until entries \
             expire or are invalidated: {e}"
        ),
        _ => format!("Redis: {e}"),
    };
    let err = BackendError::new(kind, message).with_source(e);
    match key {
        Some(k) => err.with_key(k),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_parses_to_microseconds() {
        let t =
            parse_time(&[Value::BulkString(b"1700000000".to_vec()), Value::BulkString(b"42".to_vec())], "k").unwrap();
        assert_eq!(t.value(), 1_700_000_000_000_042);
        let huge = parse_time(&[Value::Int(i64::MAX), Value::Int(i64::MAX)], "k").unwrap();
        assert_eq!(huge.value(), u64::MAX);
    }

    #[test]
    fn oom_is_a_transient_out_of_memory_error() {
        let Ok(Value::ServerError(server)) =
            redis::parse_redis_value(b"-OOM command not allowed when used memory > 'maxmemory'.\r\n")
        else {
            panic!("an error reply")
        };
        let mapped = map_error(RedisError::from(server), Some("k"));
        assert_eq!(mapped.kind(), BackendErrorKind::OutOfMemory, "{mapped}");
        let e = RedisError::from((ErrorKind::Extension, "OOM", "OOM command not allowed".to_owned()));
        let mapped = map_error(e, Some("k"));
        assert_eq!(mapped.kind(), BackendErrorKind::OutOfMemory, "{mapped}");
        assert!(mapped.is_transient());
    }
}
