//! The Redis Cluster side of [`RedisBackend`]: the per-slot steps of put and
//! invalidate, sent concurrently (see the [protocol](super#redis-cluster)).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::join_all;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{RedisError, Script, ScriptInvocation, Value};
use tracing::warn;

use super::{array, bulk, foreign, int, protocol, saturating_u64, RedisBackend, DELETE};
use crate::backend::{Lookup, PutOutcome, PutRequest, Ticket};
use crate::error::{BackendError, BackendErrorKind};

static REGISTER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cluster/register.lua")));
static WRITE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cluster/write.lua")));
static COLLECT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cluster/collect.lua")));
static POP: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cluster/pop.lua")));
static DROP: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cluster/drop.lua")));
static UNREGISTER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cluster/unregister.lua")));

/// The scripts a cluster backend loads at build time.
pub(super) fn scripts() -> [&'static Script; 7] {
    [&*REGISTER, &*WRITE, &*COLLECT, &*POP, &*DROP, &*UNREGISTER, &*DELETE]
}

/// The bound on the rate difference between the local monotonic clock and a
/// Redis node's clock (0.1 %, far above what NTP-disciplined clocks show).
const DRIFT_PPM: u64 = 1_000;

/// The process-wide origin of cluster tickets.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Local monotonic time in µs since [`EPOCH`] (never 0).
fn local_us() -> u64 {
    saturating_u64(EPOCH.elapsed().as_micros()) + 1
}

/// `d` enlarged by the drift bound (an upper bound of the same span measured
/// by another clock), plus 2 µs for rounding.
fn widen(d: u64) -> u64 {
    d + d / (1_000_000 / DRIFT_PPM) + 2
}

/// A lower bound of a node's clock (µs) at local instant `x`, from a reading
/// `server_us` of that clock whose reply arrived at local instant `received`.
fn lower_bound(server_us: u64, received: u64, x: u64) -> u64 {
    if x >= received {
        let d = x - received;
        server_us + d - d / (1_000_000 / DRIFT_PPM)
    } else {
        server_us.saturating_sub(widen(received - x))
    }
}

/// Where the bytes after the hash tag tell the kind of key: `N:{h}:e:K` →
/// the marker key `N:{h}:m:K` of the same slot.
fn marker_of(entry: &[u8]) -> Option<Vec<u8>> {
    let close = entry.iter().position(|b| *b == b'}')?;
    if entry.get(close + 1..close + 4) != Some(b":e:".as_slice()) {
        return None;
    }
    let mut m = entry.to_vec();
    m[close + 2] = b'm';
    Some(m)
}

fn slot_of(key: &[u8]) -> Slot {
    Slot::for_key(key)
}

/// Groups items by the slot of their key, keeping the order within a group.
fn by_slot<T>(items: impl IntoIterator<Item = (Vec<u8>, T)>) -> Vec<Vec<(Vec<u8>, T)>> {
    let mut groups: HashMap<Slot, Vec<(Vec<u8>, T)>> = HashMap::new();
    for (key, item) in items {
        groups.entry(slot_of(&key)).or_default().push((key, item));
    }
    groups.into_values().collect()
}

impl RedisBackend {
    fn cluster(&self) -> Option<ClusterConnection> {
        match &self.conn {
            super::Conn::Cluster(c) => Some(c.get()),
            super::Conn::Single(_) => None,
        }
    }

    async fn run(&self, inv: &ScriptInvocation<'_>, key: &[u8]) -> Result<Value, BackendError> {
        let Some(mut conn) = self.cluster() else {
            return Err(protocol("", "not a cluster backend"));
        };
        let name = String::from_utf8_lossy(key);
        self.bounded(async { inv.invoke_async::<Value>(&mut conn).await }, Some(&name)).await
    }

    /// [`run`](Self::run), then, with [`replica_acks`](super::RedisBackendBuilder::replica_acks),
    /// waits until that many replicas of the key's master have every write
    /// made so far on this connection.
    async fn run_durable(&self, inv: &ScriptInvocation<'_>, key: &[u8]) -> Result<Value, BackendError> {
        let reply = self.run(inv, key).await?;
        self.durable(key).await?;
        Ok(reply)
    }

    async fn durable(&self, key: &[u8]) -> Result<(), BackendError> {
        if self.replica_acks == 0 {
            return Ok(());
        }
        let Some(mut conn) = self.cluster() else { return Ok(()) };
        let name = String::from_utf8_lossy(key);
        let timeout_ms = saturating_u64(self.response_timeout.as_millis()).max(1);
        // a keyed no-op routes the pipeline to the key's master
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(key).ignore().cmd("WAIT").arg(self.replica_acks).arg(timeout_ms);
        let acks: Vec<i64> = self.bounded(async { pipe.query_async(&mut conn).await }, Some(&name)).await?;
        match acks.first() {
            Some(&n) if n >= i64::try_from(self.replica_acks).unwrap_or(i64::MAX) => Ok(()),
            _ => Err(BackendError::new(
                BackendErrorKind::Unavailable,
                format!("the write was not acknowledged by {} replica(s) in time", self.replica_acks),
            )
            .with_key(name.as_ref())),
        }
    }

    pub(super) async fn cluster_get(&self, mut conn: ClusterConnection, key: &str) -> Result<Lookup, BackendError> {
        let entry = self.entry_key(key);
        // the ticket: before the request leaves, so before the miss
        let ticket = local_us();
        let cmd = redis::cmd("HGET").arg(entry.as_str()).arg("v").clone();
        let reply: Value = self.bounded(async { cmd.query_async(&mut conn).await }, Some(&entry)).await?;
        match reply {
            Value::BulkString(bytes) => Ok(Lookup::Hit(Bytes::from(bytes))),
            Value::Nil => Ok(Lookup::Miss(Ticket::new(ticket))),
            _ => Err(protocol(&entry, "unexpected reply to HGET")),
        }
    }

    pub(super) fn cluster_ticket(&self) -> Ticket {
        Ticket::new(local_us())
    }

    pub(super) async fn cluster_put(&self, req: PutRequest<'_>) -> Result<PutOutcome, BackendError> {
        let entry = self.entry_key(req.key);
        let Some(conn) = self.cluster() else { return Err(protocol(&entry, "not a cluster backend")) };
        let t0 = local_us();
        let window = self.window_us_n;
        let since = req.ticket.map(|t| t.value()).unwrap_or(t0);
        if req.ticket.is_some() && widen(t0.saturating_sub(since)) >= window {
            return Ok(PutOutcome::Refused);
        }
        let gen = self.gens.next();
        let member = format!("{gen}{entry}");
        let ttl_ms = saturating_u64(req.ttl.as_millis()).max(1);
        let indexes: Vec<String> = req.deps.iter().map(|d| self.index_key(d)).collect();

        // step 1: register under every dependency slot, and read the entry
        // node's clock, all at once
        let groups =
            by_slot(req.deps.iter().zip(&indexes).map(|(d, i)| (i.as_bytes().to_vec(), self.tombstone_key(d))));
        let registers = groups.iter().map(|group| {
            let mut inv = REGISTER.prepare_invoke();
            for (index, stone) in group {
                inv.key(index.as_slice()).key(stone.as_str());
            }
            inv.arg(member.as_str()).arg(ttl_ms);
            async move {
                let first = group.first().map(|(k, _)| k.as_slice()).unwrap_or_default();
                let reply = self.run(&inv, first).await?;
                let received = local_us();
                self.durable(first).await?;
                Ok::<_, BackendError>((reply, received, group))
            }
        });
        let probe = {
            let mut pipe = redis::pipe();
            pipe.cmd("EXISTS").arg(entry.as_str()).cmd("TIME");
            let mut c = conn.clone();
            let entry = entry.as_str();
            async move {
                let r: Result<Vec<Value>, RedisError> = pipe.query_async(&mut c).await;
                (r, local_us(), entry)
            }
        };
        let (registered, (probe, probed_at, _)) = tokio::join!(join_all(registers), probe);
        let replied = local_us();

        let mut refused = false;
        let mut failure: Option<BackendError> = None;
        let mut done: Vec<&Vec<(Vec<u8>, String)>> = Vec::new();
        for r in registered {
            match r {
                Err(e) => failure = failure.or(Some(e)),
                Ok((reply, received, group)) => {
                    let first = String::from_utf8_lossy(group.first().map(|(k, _)| k.as_slice()).unwrap_or_default())
                        .into_owned();
                    let items = array(reply, &first)?;
                    match items.as_slice() {
                        [Value::Int(-1), Value::Int(i)] => {
                            let i = usize::try_from(*i).unwrap_or(1).max(1) - 1;
                            let name = match group.get(i / 2) {
                                Some((index, _)) if i % 2 == 0 => String::from_utf8_lossy(index).into_owned(),
                                Some((_, stone)) => stone.clone(),
                                None => first,
                            };
                            failure = failure.or(Some(foreign(&name)));
                        }
                        [now, stones @ ..] if stones.len() == group.len() => {
                            done.push(group);
                            let now = int(now, &first)?;
                            // an upper bound of the time since the ticket
                            let bound = widen(received.saturating_sub(since));
                            for (stone, (_, key)) in stones.iter().zip(group) {
                                let stone = int(stone, &first)?;
                                if req.ticket.is_none() || stone < 0 {
                                    continue;
                                }
                                // a tombstone this backend wrote and saw
                                // written before the ticket was issued
                                let own = self.own_tombstones.lock().ok().and_then(|m| m.get(key).copied());
                                if own.is_some_and(|(at, seen)| i64::try_from(at) == Ok(stone) && seen <= since) {
                                    continue;
                                }
                                // its age on that node's clock vs. the time
                                // since the ticket: refuse unless older
                                if u64::try_from(now - stone).unwrap_or(0) <= bound {
                                    refused = true;
                                }
                            }
                        }
                        _ => failure = failure.or(Some(protocol(&first, "unexpected reply to register"))),
                    }
                }
            }
        }
        if req.ticket.is_some() && widen(replied.saturating_sub(since)) >= window {
            refused = true;
        }
        let clock = match probe {
            Ok(values) => match values.as_slice() {
                [_, Value::Array(t)] => Some(super::parse_time(t, &entry)?.value()),
                _ => None,
            },
            Err(e) => {
                failure = failure.or(Some(super::map_error(e, Some(&entry))));
                None
            }
        };
        if let Some(e) = failure {
            self.unregister_groups(member.as_bytes(), done).await;
            return Err(e);
        }
        let Some(server_us) = clock else {
            self.unregister_groups(member.as_bytes(), done).await;
            return Err(protocol(&entry, "unexpected reply to TIME"));
        };
        if refused {
            self.unregister_groups(member.as_bytes(), done).await;
            return Ok(PutOutcome::Refused);
        }

        // step 2: write the entry, within the window and no later than its
        // registrations expire (both on the entry node's clock)
        let deadline_ms = lower_bound(server_us, probed_at, since + window) / 1_000;
        let expires_ms = lower_bound(server_us, probed_at, t0 + ttl_ms * 1_000).saturating_sub(1_000) / 1_000;
        let marker = marker_of(entry.as_bytes()).ok_or_else(|| protocol(&entry, "malformed entry key"))?;
        let deps_packed = rmp_serde::to_vec(&indexes).map_err(|_| protocol(&entry, "cannot encode the index keys"))?;
        let mut inv = WRITE.key(entry.as_str());
        inv.key(marker.as_slice())
            .arg(req.value.as_ref())
            .arg(gen.as_str())
            .arg(deps_packed.as_slice())
            .arg(deadline_ms)
            .arg(expires_ms);
        let reply = self.run_durable(&inv, entry.as_bytes()).await;
        // On an error the write may still happen (redis-rs retries a call
        // whose reply was lost, after a failover): the registrations stay, so
        // that an invalidation finds that entry.
        let reply = reply?;
        let mut items = array(reply, &entry)?.into_iter();
        match items.next().map(|v| int(&v, &entry)).transpose()? {
            Some(1) => {
                if let Some(old) = items.next() {
                    let old = bulk(old, &entry)?;
                    let stale = items.map(|v| bulk(v, &entry)).collect::<Result<Vec<_>, _>>()?;
                    self.unregister_pairs(stale.into_iter().map(|i| (i, old.clone())).collect()).await;
                }
                Ok(PutOutcome::Stored)
            }
            Some(0) => {
                self.unregister_groups(member.as_bytes(), done).await;
                Ok(PutOutcome::Refused)
            }
            Some(-1) => {
                self.unregister_groups(member.as_bytes(), done).await;
                let i = items.next().map(|v| int(&v, &entry)).transpose()?;
                Err(match i {
                    Some(2) => foreign(&String::from_utf8_lossy(&marker)),
                    _ => foreign(&entry),
                })
            }
            _ => Err(protocol(&entry, "unexpected reply to write")),
        }
    }

    pub(super) async fn cluster_delete(&self, key: &str) -> Result<bool, BackendError> {
        let entry = self.entry_key(key);
        let inv = DELETE.key(entry.as_str());
        let reply = self.run(&inv, entry.as_bytes()).await?;
        let mut items = array(reply, &entry)?.into_iter();
        let existed = match items.next() {
            Some(v) => int(&v, &entry)? > 0,
            None => return Err(protocol(&entry, "empty reply to delete")),
        };
        if let Some(member) = items.next() {
            let member = bulk(member, &entry)?;
            let indexes = items.map(|v| bulk(v, &entry)).collect::<Result<Vec<_>, _>>()?;
            self.unregister_pairs(indexes.into_iter().map(|i| (i, member.clone())).collect()).await;
        }
        Ok(existed)
    }

    pub(super) async fn cluster_invalidate(&self, deps: &[String]) -> Result<u64, BackendError> {
        // step 1: tombstones and members, one call per dependency slot
        let groups = by_slot(deps.iter().map(|d| (self.index_key(d).into_bytes(), d.as_str())));
        let collects = groups.iter().map(|group| {
            let mut keys = Vec::with_capacity(group.len() * 3);
            for (index, dep) in group {
                keys.push(self.tombstone_key(dep).into_bytes());
                keys.push(index.clone());
                keys.push(self.drain_key(dep).into_bytes());
            }
            async move {
                let mut inv = COLLECT.prepare_invoke();
                for k in &keys {
                    inv.key(k.as_slice());
                }
                inv.arg(self.window_ms.as_str()).arg(self.chunk_size);
                let reply = self.run(&inv, &keys[1]).await?;
                let received = local_us();
                self.durable(&keys[1]).await?;
                Ok::<_, BackendError>((reply, keys, group, received))
            }
        });
        // (member, the index it was read from)
        let mut members: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut drains = Vec::new();
        for r in join_all(collects).await {
            let (reply, keys, group, received) = r?;
            let first = String::from_utf8_lossy(&keys[1]).into_owned();
            let items = array(reply, &first)?;
            let dep_of = |j: &Value| -> Result<usize, BackendError> {
                let j = usize::try_from(int(j, &first)?).unwrap_or(0);
                if j == 0 || j > group.len() {
                    return Err(protocol(&first, "invalidate named an unknown dependency"));
                }
                Ok(j - 1)
            };
            if let [Value::Int(-1), Value::Int(i)] = items.as_slice() {
                let name = usize::try_from(i - 1).ok().and_then(|i| keys.get(i)).map(|k| k.as_slice());
                return Err(foreign(&String::from_utf8_lossy(name.unwrap_or(&keys[1]))));
            }
            match <[Value; 3]>::try_from(items) {
                Ok([taken, js, now]) => {
                    let now = u64::try_from(int(&now, &first)?).unwrap_or(0);
                    self.remember_tombstones(group.iter().map(|(_, dep)| self.tombstone_key(dep)), now, received);
                    for per_dep in array(taken, &first)? {
                        let mut items = array(per_dep, &first)?.into_iter();
                        let Some(j) = items.next() else { continue };
                        let index = &group[dep_of(&j)?].0;
                        for m in items {
                            members.push((bulk(m, &first)?, index.clone()));
                        }
                    }
                    for j in array(js, &first)? {
                        drains.push(group[dep_of(&j)?].1);
                    }
                }
                Err(_) => return Err(protocol(&first, "unexpected reply to collect")),
            }
        }
        // step 2: drop the entries, one call per entry slot; then remove the
        // members read from the indexes
        let mut dropped = self.drop_members(members).await?;
        for dep in drains {
            dropped += self.drain_cluster(dep).await?;
        }
        Ok(dropped)
    }

    /// Remembers tombstones this backend wrote (time on their node, local
    /// instant the reply arrived), so that its own reload right after its
    /// invalidation is not refused. Bounded: forgotten in bulk at 10,000.
    fn remember_tombstones(&self, keys: impl Iterator<Item = String>, at: u64, seen: u64) {
        if let Ok(mut own) = self.own_tombstones.lock() {
            if own.len() > 10_000 {
                own.clear();
            }
            for k in keys {
                own.insert(k, (at, seen));
            }
        }
    }

    /// Empties a dependency's drain key chunk by chunk.
    async fn drain_cluster(&self, dep: &str) -> Result<u64, BackendError> {
        let drain = self.drain_key(dep);
        let mut dropped = 0;
        let mut done: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut inv = POP.key(drain.as_str());
            inv.arg(self.chunk_size);
            for m in &done {
                inv.arg(m.as_slice());
            }
            let reply = self.run(&inv, drain.as_bytes()).await?;
            let items = array(reply, &drain)?;
            let (live, left) = match <[Value; 2]>::try_from(items) {
                Ok([live, left]) => (array(live, &drain)?, int(&left, &drain)?),
                Err(_) => return Err(protocol(&drain, "unexpected reply to pop")),
            };
            if left == 0 {
                return Ok(dropped);
            }
            done = live.into_iter().map(|m| bulk(m, &drain)).collect::<Result<Vec<_>, _>>()?;
            // the drain key itself is cleaned by the next pop
            let members = done.iter().map(|m| (m.clone(), Vec::new())).collect();
            dropped += self.drop_members(members).await?;
        }
    }

    /// Drops the entries that members (`generation ‖ entry key`, each with
    /// the index it was read from, or an empty name) name, one call per entry
    /// slot (at most a chunk of members each), all at once; then removes the
    /// members from those indexes and the dropped entries from their other
    /// indexes.
    async fn drop_members(&self, members: Vec<(Vec<u8>, Vec<u8>)>) -> Result<u64, BackendError> {
        if members.is_empty() {
            return Ok(0);
        }
        let mut cleanup: HashSet<(Vec<u8>, Vec<u8>)> = HashSet::new();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut parsed = Vec::new();
        for (m, index) in members {
            if !index.is_empty() {
                cleanup.insert((index, m.clone()));
            }
            if m.len() > 16 && seen.insert(m.clone()) {
                parsed.push((m[16..].to_vec(), m[..16].to_vec()));
            }
        }
        let mut calls = Vec::new();
        for group in by_slot(parsed) {
            for chunk in group.chunks(self.chunk_size) {
                let mut inv = DROP.prepare_invoke();
                for (key, _) in chunk {
                    let marker = marker_of(key).unwrap_or_else(|| key.clone());
                    inv.key(key.as_slice()).key(marker);
                }
                inv.arg(self.marker_ms);
                for (_, gen) in chunk {
                    inv.arg(gen.as_slice());
                }
                let first = chunk[0].0.clone();
                calls.push(async move { (self.run_durable(&inv, &first).await, first) });
            }
        }
        let mut dropped = 0u64;
        let mut failure = None;
        for (r, first) in join_all(calls).await {
            let name = String::from_utf8_lossy(&first).into_owned();
            let reply = match r {
                Ok(v) => array(v, &name)?,
                Err(e) => {
                    failure = failure.or(Some(e));
                    continue;
                }
            };
            let mut items = reply.into_iter();
            dropped += u64::try_from(items.next().map(|v| int(&v, &name)).transpose()?.unwrap_or(0)).unwrap_or(0);
            while let Some(member) = items.next() {
                let member = bulk(member, &name)?;
                let n = items.next().map(|v| int(&v, &name)).transpose()?.unwrap_or(0);
                for _ in 0..n {
                    let Some(index) = items.next() else { break };
                    cleanup.insert((bulk(index, &name)?, member.clone()));
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        self.unregister_pairs(cleanup.into_iter().collect()).await;
        Ok(dropped)
    }

    /// Removes one member from the indexes of the given register groups.
    async fn unregister_groups(&self, member: &[u8], groups: Vec<&Vec<(Vec<u8>, String)>>) {
        let mut pairs = Vec::new();
        for g in groups {
            for (index, _) in g {
                pairs.push((index.clone(), member.to_vec()));
            }
        }
        self.unregister_pairs(pairs).await;
    }

    /// Removes `(index, member)` registrations, one call per index slot, all
    /// at once. Failures are logged: a stray member names a generation that
    /// no entry has and is pruned once it expires.
    async fn unregister_pairs(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) {
        let chunk = self.chunk_size;
        let groups = by_slot(pairs);
        let calls = groups.iter().flat_map(|group| group.chunks(chunk)).map(|part| async move {
            let mut inv = UNREGISTER.prepare_invoke();
            for (index, member) in part {
                inv.key(index.as_slice()).arg(member.as_slice());
            }
            self.run(&inv, &part[0].0).await
        });
        for r in join_all(calls).await {
            if let Err(e) = r {
                warn!(error = %e, "could not unregister a generation");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_shares_the_entry_slot() {
        let entry = b"n:{0123456789abcdef}:e:k{x}:e:";
        let marker = marker_of(entry).unwrap();
        assert_eq!(marker, b"n:{0123456789abcdef}:m:k{x}:e:".to_vec());
        assert_eq!(slot_of(entry), slot_of(&marker));
        assert!(marker_of(b"n:{0123}:i:k").is_none());
    }

    #[test]
    fn lower_bound_never_exceeds_the_elapsed_time() {
        // a reading of 1000 µs received at local 500: at local 1500 the node
        // reads at least 1000 + 1000 - drift
        assert_eq!(lower_bound(1_000, 500, 1_500), 1_999);
        assert!(lower_bound(1_000, 500, 400) <= 900);
        assert!(widen(1_000_000) >= 1_001_000);
    }
}
