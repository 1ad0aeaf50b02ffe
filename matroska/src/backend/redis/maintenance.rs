//! Clear and the sweep: the operations that walk the keyspace with `SCAN`
//! (see [clear](super#protocol) and [the sweep](super#bookkeeping-and-the-sweep)).

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Script, Value};

use super::batch::{Item, Lua, ITEMS};
use super::breaker::Circuit;
use super::reply::{array, bulk, int, protocol, text};
use super::topology::SLOTS;
use super::{Conn, Life, RedisBackend};
use crate::error::{BackendError, BackendErrorKind};

pub(super) static UNREGISTER: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("batch/unregister.lua"), &[ITEMS]));
static MARK: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("batch/mark.lua"), &[ITEMS]));
static CLEAR: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("batch/clear.lua"), &[ITEMS]));
static SWEEP: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("batch/sweep.lua"), &[ITEMS]));

/// How many keys one sweep step asks `SCAN` for.
const SWEEP_COUNT: usize = 100;

/// The batched scripts every backend loads at build time.
pub(super) fn scripts() -> Vec<&'static Script> {
    vec![&UNREGISTER.script, &MARK.script, &CLEAR.script, &SWEEP.script]
}

/// What a [sweep](RedisBackend::sweep_now) pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Bookkeeping keys looked at.
    pub keys_scanned: u64,
    /// Expired members removed from indexes, drain keys and dead-generation
    /// marks.
    pub members_pruned: u64,
    /// Tombstones and clear markers deleted (older than the window).
    pub keys_deleted: u64,
    /// Drains left by interrupted invalidations, finished.
    pub drains_finished: u64,
    /// Entries those drains dropped.
    pub entries_dropped: u64,
}

/// `s` with the glob characters of `SCAN … MATCH` escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Where a `SCAN` goes.
enum Node {
    Single,
    Cluster { host: String, port: u16, addr: Arc<str> },
}

impl RedisBackend {
    /// The nodes to `SCAN`: the single node, or every master of the slot
    /// map.
    async fn scan_nodes(&self) -> Result<Vec<Node>, BackendError> {
        match &self.conn {
            Conn::Single(_) => Ok(vec![Node::Single]),
            Conn::Cluster(h) => {
                if h.slots().nodes.is_empty() {
                    h.read_slots(self.op_timeout).await;
                }
                let map = h.slots();
                if map.nodes.is_empty() {
                    return Err(BackendError::new(
                        BackendErrorKind::Unavailable,
                        "cannot read the Redis Cluster slot map (CLUSTER SLOTS) to find the masters",
                    ));
                }
                Ok(map
                    .nodes
                    .iter()
                    .map(|n| Node::Cluster { host: n.host.clone(), port: n.port, addr: Arc::clone(&n.addr) })
                    .collect())
            }
        }
    }

    /// One `SCAN` step on `node`: the next cursor and the keys found.
    async fn scan(
        &self,
        node: &Node,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>), BackendError> {
        let cmd = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(count).clone();
        let reply: Value = match (node, &self.conn) {
            (Node::Single, Conn::Single(c)) => {
                let mut conn = (**c).clone();
                self.bounded(async { cmd.query_async(&mut conn).await }, None).await?
            }
            (Node::Cluster { host, port, addr }, Conn::Cluster(h)) => {
                let routing =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
                let call = super::batch::routed(h.get(), cmd, routing);
                self.guarded(call, Some(Circuit::Node(Arc::clone(addr))), Some(addr)).await?
            }
            _ => return Err(protocol(pattern, "a SCAN routed to the wrong kind of connection")),
        };
        let mut parts = array(reply, pattern)?.into_iter();
        let (Some(next), Some(keys)) = (parts.next(), parts.next()) else {
            return Err(protocol(pattern, "unexpected reply to SCAN"));
        };
        let next = text(&next).and_then(|t| t.parse().ok()).ok_or_else(|| protocol(pattern, "bad SCAN cursor"))?;
        let keys = array(keys, pattern)?.into_iter().map(|k| bulk(k, pattern)).collect::<Result<Vec<_>, _>>()?;
        Ok((next, keys))
    }

    /// [`Backend::clear`](crate::Backend::clear): writes the clear marker(s),
    /// then removes the prefix's entries node by node.
    pub(super) async fn clear_prefix(&self, prefix: &str) -> Result<u64, BackendError> {
        // 1. the clear marker(s): from now on, older tickets are refused
        let markers: Vec<String> = match &self.conn {
            Conn::Single(_) => vec![self.clear_key()],
            Conn::Cluster(_) => (0..SLOTS as u16).map(|s| self.slot_clear_key(s)).collect(),
        };
        let items: Vec<Item> =
            markers.iter().map(|m| Item { key: m.clone().into_bytes(), args: vec![m.clone().into_bytes()] }).collect();
        let mut marked = self.run_items(&MARK, &[], &items, self.replica_acks > 0).await;
        self.clock.reset();
        let mut own = Vec::with_capacity(markers.len());
        for (s, marker) in markers.iter().enumerate() {
            match std::mem::replace(&mut marked.replies[s], Err(usize::MAX)) {
                Ok(r) if r.status == 1 => own.push((s as u16, r.now, r.received)),
                Ok(_) => return Err(super::reply::foreign(marker)),
                Err(e) => return Err(marked.error(e)),
            }
        }
        if self.is_cluster() {
            if let Ok(mut clears) = self.own_clears.lock() {
                for (slot, at, seen) in own {
                    clears.insert(slot, (at, seen));
                }
            }
        }

        // 2. the entries, found by SCAN on each node
        let head = format!("{}:{{", self.namespace);
        let pattern = format!("{}:{{????????????????}}:e:{}*", glob_escape(&self.namespace), glob_escape(prefix));
        let mut removed = 0u64;
        let mut first_error: Option<BackendError> = None;
        for node in self.scan_nodes().await? {
            let mut cursor = 0u64;
            loop {
                let (next, keys) = match self.scan(&node, cursor, &pattern, self.chunk_size).await {
                    Ok(r) => r,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        break;
                    }
                };
                // exactly `N:{16 hex}:e:` followed by the prefix
                let keys: Vec<Vec<u8>> = keys
                    .into_iter()
                    .filter(|k| {
                        k.starts_with(head.as_bytes())
                            && k.get(head.len() + 16..head.len() + 20) == Some(b"}:e:".as_slice())
                            && k[head.len() + 20..].starts_with(prefix.as_bytes())
                    })
                    .collect();
                let items: Vec<Item> = keys.iter().map(|k| Item { key: k.clone(), args: vec![k.clone()] }).collect();
                let mut batch = self.run_items(&CLEAR, &[], &items, self.replica_acks > 0).await;
                let mut pairs = Vec::new();
                for (i, key) in keys.iter().enumerate() {
                    let name = String::from_utf8_lossy(key);
                    match std::mem::replace(&mut batch.replies[i], Err(usize::MAX)) {
                        Ok(r) => {
                            let mut rest = r.rest.into_iter();
                            removed += u64::try_from(rest.next().map(|v| int(&v, &name)).transpose()?.unwrap_or(0))
                                .unwrap_or(0);
                            if let Some(member) = rest.next() {
                                let member = bulk(member, &name)?;
                                for index in rest {
                                    pairs.push((bulk(index, &name)?, member.clone()));
                                }
                            }
                        }
                        Err(e) => {
                            first_error.get_or_insert(batch.error(e));
                        }
                    }
                }
                self.unregister_pairs(pairs).await;
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// Runs one pass of the [sweep](super#bookkeeping-and-the-sweep) now:
    /// on each master, walks the namespace's bookkeeping keys with `SCAN`
    /// (100 keys per step, one batched script call per step), prunes expired
    /// members, deletes tombstones and clear markers older than the window,
    /// and finishes interrupted drains. The background sweep calls this
    /// every [`sweep_interval`](super::RedisBackendBuilder::sweep_interval).
    ///
    /// # Errors
    /// The first error a step met (the other steps and nodes still ran).
    pub async fn sweep_now(&self) -> Result<SweepReport, BackendError> {
        if let Some(policies) = self.eviction_policies().await {
            for (node, policy) in policies {
                if !super::policy::safe(&policy) {
                    tracing::error!(
                        node = node.as_deref().unwrap_or("redis"),
                        policy,
                        "Redis maxmemory-policy is not safe for this cache: it may evict the bookkeeping that \
                         invalidation relies on; set noeviction or a volatile-* policy"
                    );
                }
            }
        }
        let pattern = format!("{}:{{????????????????}}:[itxmc]:*", glob_escape(&self.namespace));
        let keep = self.keep_us.to_string().into_bytes();
        let mut report = SweepReport::default();
        let mut first_error: Option<BackendError> = None;
        for node in self.scan_nodes().await? {
            let mut cursor = 0u64;
            loop {
                let (next, keys) = match self.scan(&node, cursor, &pattern, SWEEP_COUNT).await {
                    Ok(r) => r,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        break;
                    }
                };
                report.keys_scanned += keys.len() as u64;
                let items: Vec<Item> = keys.iter().map(|k| Item { key: k.clone(), args: vec![k.clone()] }).collect();
                let mut batch = self.run_items(&SWEEP, std::slice::from_ref(&keep), &items, false).await;
                let mut drains = Vec::new();
                for (i, key) in keys.iter().enumerate() {
                    let name = String::from_utf8_lossy(key);
                    match std::mem::replace(&mut batch.replies[i], Err(usize::MAX)) {
                        Ok(r) => {
                            let n: Vec<i64> = r.rest.iter().map(|v| int(v, &name)).collect::<Result<_, _>>()?;
                            report.members_pruned += n.first().copied().unwrap_or(0).max(0) as u64;
                            report.keys_deleted += n.get(1).copied().unwrap_or(0).max(0) as u64;
                            if n.get(2) == Some(&1) {
                                drains.push(key.clone());
                            }
                        }
                        Err(e) => {
                            first_error.get_or_insert(batch.error(e));
                        }
                    }
                }
                if !drains.is_empty() {
                    match self.finish_drains(drains).await {
                        Ok((finished, dropped)) => {
                            report.drains_finished += finished;
                            report.entries_dropped += dropped;
                        }
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Finishes drains found by the sweep: returns how many finished and
    /// the entries they dropped.
    async fn finish_drains(&self, drains: Vec<Vec<u8>>) -> Result<(u64, u64), BackendError> {
        let n = drains.len() as u64;
        // the drain key `N:{h}:x:D` came from the index `N:{h}:i:D`
        let index_of = |drain: &[u8]| -> Vec<u8> {
            let mut index = drain.to_vec();
            if let Some(close) = index.iter().position(|b| *b == b'}') {
                if let Some(kind) = index.get_mut(close + 2) {
                    *kind = b'i';
                }
            }
            index
        };
        let (dropped, failed) = match &self.conn {
            Conn::Single(_) => {
                let queue: VecDeque<_> = drains
                    .iter()
                    .enumerate()
                    .map(|(p, d)| {
                        (p, String::from_utf8_lossy(d).into_owned(), String::from_utf8_lossy(&index_of(d)).into_owned())
                    })
                    .collect();
                self.drain_all(queue).await
            }
            Conn::Cluster(_) => self.drain_keys(drains).await,
        };
        match failed.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok((n, dropped)),
        }
    }

    /// Starts the background sweep: a pass every `interval`, until the last
    /// clone of this backend is dropped.
    pub(super) fn start_sweep(&self, interval: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no tokio runtime: the Redis backend's background sweep is not started");
            return;
        };
        let alive = Arc::downgrade(&self.life);
        let stop = Arc::clone(&self.life.stop);
        let mut worker = self.clone();
        // the worker's own clone does not keep the backend alive
        worker.life = Arc::new(Life::default());
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = stop.notified() => {}
                }
                if alive.strong_count() == 0 {
                    return;
                }
                match worker.sweep_now().await {
                    Ok(report) => tracing::debug!(?report, "Redis bookkeeping swept"),
                    Err(e) => tracing::warn!(error = %e, "the Redis bookkeeping sweep met an error"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
        assert_eq!(glob_escape("plain:text"), "plain:text");
    }
}
