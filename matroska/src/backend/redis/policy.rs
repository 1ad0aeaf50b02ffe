//! The eviction policy check: see [eviction](super#eviction).

use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::Value;

use super::reply::text;
use super::{Conn, RedisBackend};
use crate::error::{BackendError, BackendErrorKind};

/// Whether this backend keeps its guarantees under `policy`: only entries
/// carry an expiry, so policies that evict among keys with an expiry
/// (`volatile-*`) or nothing (`noeviction`) never drop the bookkeeping.
pub(super) fn safe(policy: &str) -> bool {
    policy == "noeviction" || policy.starts_with("volatile-")
}

fn refused(policy: &str, node: Option<&str>) -> BackendError {
    let at = node.map(|n| format!(" on {n}")).unwrap_or_default();
    BackendError::new(
        BackendErrorKind::Config,
        format!(
            "Redis maxmemory-policy is {policy:?}{at}: it may evict the reverse indexes and tombstones that \
             invalidation relies on (stale reads). Use noeviction or a volatile-* policy (volatile-lru, \
             volatile-lfu, volatile-random, volatile-ttl): this backend gives an expiry only to entries, so those \
             evict entries only"
        ),
    )
}

/// The value of `maxmemory-policy` in a `CONFIG GET` reply (an array or a
/// map of name and value).
fn from_config(reply: &Value) -> Option<String> {
    match reply {
        Value::Array(items) => items.get(1).and_then(text),
        Value::Map(pairs) => pairs.first().and_then(|(_, v)| text(v)),
        _ => None,
    }
}

/// The value of `maxmemory_policy:` in an `INFO memory` reply.
fn from_info(reply: &Value) -> Option<String> {
    let info = text(reply)?;
    info.lines().find_map(|l| l.strip_prefix("maxmemory_policy:")).map(|p| p.trim().to_owned())
}

impl RedisBackend {
    /// Reads the server's eviction policy (every master's on a cluster):
    /// `CONFIG GET maxmemory-policy`, or `INFO memory` where `CONFIG` is
    /// disabled (managed Redis). An unsafe policy is a
    /// [`Config`](BackendErrorKind::Config) error; a policy that cannot be
    /// read is logged as a warning and accepted.
    pub(super) async fn check_eviction_policy(&self) -> Result<(), BackendError> {
        match self.eviction_policies().await {
            Some(policies) => {
                for (node, policy) in &policies {
                    if !safe(policy) {
                        return Err(refused(policy, node.as_deref()));
                    }
                }
                Ok(())
            }
            None => {
                tracing::warn!(
                    "could not read Redis' maxmemory-policy (neither CONFIG GET nor INFO memory answered): make sure \
                     it is noeviction or volatile-*, or evictions may drop the bookkeeping invalidation relies on"
                );
                Ok(())
            }
        }
    }

    /// Every master's eviction policy (with its address on a cluster), or
    /// `None` if they cannot be read.
    pub(super) async fn eviction_policies(&self) -> Option<Vec<(Option<String>, String)>> {
        let config = redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").clone();
        let info = redis::cmd("INFO").arg("memory").clone();
        match &self.conn {
            Conn::Single(c) => {
                let mut conn = (**c).clone();
                let read = |cmd: redis::Cmd| {
                    let mut conn = conn.clone();
                    async move { self.guarded(async move { cmd.query_async::<Value>(&mut conn).await }, None, None).await }
                };
                if let Ok(v) = read(config).await {
                    if let Some(p) = from_config(&v) {
                        return Some(vec![(None, p)]);
                    }
                }
                let v = self.guarded(async { info.query_async::<Value>(&mut conn).await }, None, None).await.ok()?;
                from_info(&v).map(|p| vec![(None, p)])
            }
            Conn::Cluster(h) => {
                let all = || RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let per_node =
                    |reply: Value, parse: fn(&Value) -> Option<String>| -> Option<Vec<(Option<String>, String)>> {
                        let Value::Map(nodes) = reply else { return None };
                        nodes
                            .iter()
                            .map(|(node, v)| Some((text(node), parse(v)?)))
                            .collect::<Option<Vec<_>>>()
                            .filter(|v| !v.is_empty())
                    };
                let mut conn = h.get();
                if let Ok(v) = self.guarded(conn.route_command(config, all()), None, None).await {
                    if let Some(p) = per_node(v, from_config) {
                        return Some(p);
                    }
                }
                let mut conn = h.get();
                let v = self.guarded(conn.route_command(info, all()), None, None).await.ok()?;
                per_node(v, from_info)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policies_that_spare_keys_without_expiry_are_safe() {
        for p in ["noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"] {
            assert!(safe(p), "{p}");
        }
        for p in ["allkeys-lru", "allkeys-lfu", "allkeys-random", "", "something-new"] {
            assert!(!safe(p), "{p}");
        }
        let e = refused("allkeys-lru", None);
        assert_eq!(e.kind(), BackendErrorKind::Config);
        assert!(e.to_string().contains("allkeys-lru") && e.to_string().contains("volatile-lru"));
    }

    #[test]
    fn policies_are_read_from_config_and_info_replies() {
        let config = Value::Array(vec![
            Value::BulkString(b"maxmemory-policy".to_vec()),
            Value::BulkString(b"volatile-lru".to_vec()),
        ]);
        assert_eq!(from_config(&config).as_deref(), Some("volatile-lru"));
        let info = Value::BulkString(b"# Memory\r\nused_memory:1\r\nmaxmemory_policy:allkeys-lfu\r\n".to_vec());
        assert_eq!(from_info(&info).as_deref(), Some("allkeys-lfu"));
        assert_eq!(from_info(&Value::BulkString(b"# Memory\r\n".to_vec())), None);
    }
}
