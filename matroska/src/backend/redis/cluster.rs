//! The Redis Cluster side of [`RedisBackend`]: the steps of put and
//! invalidate, batched per node (see the [protocol](super#redis-cluster)).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use bytes::Bytes;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Script, Value};
use tracing::warn;

use super::batch::{Batch, Item, Lua, ITEMS};
use super::clock::{local_us, lower_bound, saturating_u64, widen};
use super::reply::{array, bulk, foreign, int, map_error, parse_time, protocol};
use super::single::{outcome, DELETE};
use super::topology::slot_of;
use super::RedisBackend;
use crate::backend::{Invalidated, Lookup, PutOutcome, PutRequest, Ticket};
use crate::error::{BackendError, BackendErrorKind};

static REGISTER: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("cluster/register.lua"), &[ITEMS]));
static WRITE: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("cluster/write.lua"), &[]));
static COLLECT: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("cluster/collect.lua"), &[ITEMS]));
static POP: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("cluster/pop.lua"), &[ITEMS]));
static DROP: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("cluster/drop.lua"), &[ITEMS]));

/// The scripts a cluster backend loads at build time (besides the batched
/// ones shared with the single node).
pub(super) fn scripts() -> Vec<&'static Script> {
    vec![&REGISTER.script, &WRITE.script, &COLLECT.script, &POP.script, &DROP.script, &DELETE.script]
}

/// A member to drop: `generation ‖ entry key`, the index it was read from
/// (empty for a drain key: the drain removes it) and the positions of the
/// dependencies it was found under.
struct Member {
    member: Vec<u8>,
    index: Vec<u8>,
    deps: Vec<usize>,
}

/// The dependencies (positions) a member serves and the indexes it was
/// read from.
type Served = (Vec<usize>, Vec<Vec<u8>>);

/// What dropping members did.
#[derive(Default)]
struct Dropped {
    dropped: u64,
    /// Positions of dependencies whose members could not all be dropped,
    /// with the error.
    failed: Vec<(usize, BackendError)>,
    /// `(index, member)` registrations to remove.
    cleanup: HashSet<(Vec<u8>, Vec<u8>)>,
}

/// A dependency being drained: its position, its drain key and the members
/// of the chunk read last (removed by the next read).
struct Draining {
    dep: usize,
    drain: Vec<u8>,
    done: Vec<Vec<u8>>,
}

impl RedisBackend {
    fn cluster(&self) -> Option<ClusterConnection> {
        self.cluster_connection()
    }

    /// [`bounded`](Self::bounded) for a script routed by its first key, then,
    /// with [`replica_acks`](super::RedisBackendBuilder::replica_acks), waits
    /// until that many replicas of the key's master have every write made so
    /// far on this connection.
    async fn run_durable(&self, inv: &redis::ScriptInvocation<'_>, key: &[u8]) -> Result<Value, BackendError> {
        let Some(mut conn) = self.cluster() else {
            return Err(protocol("", "not a cluster backend"));
        };
        let name = String::from_utf8_lossy(key);
        let reply = self.bounded(async { inv.invoke_async::<Value>(&mut conn).await }, Some(&name)).await?;
        self.durable(key).await?;
        Ok(reply)
    }

    pub(super) async fn durable(&self, key: &[u8]) -> Result<(), BackendError> {
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
        let window = self.window_us;
        let since = req.ticket.map(|t| t.value()).unwrap_or(t0);
        // a ticket from the future is not one of this process's; one older
        // than the window may have missed a tombstone the sweep deleted
        if req.ticket.is_some() && (since > t0 || widen(t0 - since) >= window) {
            return Ok(PutOutcome::Refused);
        }
        let gen = self.gens.next();
        let member = format!("{gen}{entry}");
        let ttl_ms = saturating_u64(req.ttl.as_millis()).max(1);
        let indexes: Vec<String> = req.deps.iter().map(|d| self.index_key(d)).collect();
        let tombstones: Vec<String> = req.deps.iter().map(|d| self.tombstone_key(d)).collect();

        // step 1: register under every dependency (batched per node), and
        // read the entry node's clock, all at once
        let items: Vec<Item> = indexes
            .iter()
            .zip(&tombstones)
            .map(|(i, t)| Item {
                key: i.clone().into_bytes(),
                args: vec![i.clone().into_bytes(), t.clone().into_bytes()],
            })
            .collect();
        let common = [member.clone().into_bytes(), ttl_ms.to_string().into_bytes()];
        let register = self.run_items(&REGISTER, &common, &items, self.replica_acks > 0);
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
        let (mut registered, (probe, probed_at, _)) = tokio::join!(register, probe);
        let replied = local_us();

        let mut refused = false;
        let mut failure: Option<BackendError> = None;
        let mut done: Vec<usize> = Vec::new();
        for j in 0..items.len() {
            let reply = match std::mem::replace(&mut registered.replies[j], Err(usize::MAX)) {
                Ok(r) => r,
                Err(e) => {
                    let e = registered.error(e);
                    failure = failure.or(Some(e));
                    continue;
                }
            };
            if reply.status == -1 {
                let k = reply.rest.first().map(|v| int(v, &indexes[j])).transpose()?.unwrap_or(1);
                let name = if k == 2 { &tombstones[j] } else { &indexes[j] };
                failure = failure.or(Some(foreign(name)));
                continue;
            }
            done.push(j);
            let Some(ticket) = req.ticket else { continue };
            let stone = reply.rest.first().map(|v| int(v, &indexes[j])).transpose()?.unwrap_or(-1);
            if stone < 0 {
                continue;
            }
            // a tombstone this backend wrote and saw written before the
            // ticket was issued
            let own = self.own_tombstones.lock().ok().and_then(|m| m.get(&tombstones[j]).copied());
            if own.is_some_and(|(at, seen)| i64::try_from(at) == Ok(stone) && seen <= ticket.value()) {
                continue;
            }
            // its age on that node's clock vs. an upper bound of the time
            // since the ticket: refuse unless older
            let age = u64::try_from(i64::try_from(reply.now).unwrap_or(i64::MAX).saturating_sub(stone)).unwrap_or(0);
            if age <= widen(reply.received.saturating_sub(since)) {
                refused = true;
            }
        }
        if req.ticket.is_some() && widen(replied.saturating_sub(since)) >= window {
            refused = true;
        }
        let clock = match probe {
            Ok(values) => match values.as_slice() {
                [_, Value::Array(t)] => Some(parse_time(t, &entry)?.value()),
                _ => None,
            },
            Err(e) => {
                failure = failure.or(Some(map_error(e, Some(&entry))));
                None
            }
        };
        let registrations: Vec<(Vec<u8>, Vec<u8>)> =
            done.iter().map(|&j| (indexes[j].clone().into_bytes(), member.clone().into_bytes())).collect();
        if let Some(e) = failure {
            self.unregister_pairs(registrations).await;
            return Err(e);
        }
        let Some(server_us) = clock else {
            self.unregister_pairs(registrations).await;
            return Err(protocol(&entry, "unexpected reply to TIME"));
        };
        if refused {
            self.unregister_pairs(registrations).await;
            return Ok(PutOutcome::Refused);
        }

        // step 2: write the entry, within the window and no later than its
        // registrations expire (both on the entry node's clock)
        let deadline_ms = lower_bound(server_us, probed_at, since.saturating_add(window)) / 1_000;
        let expires_ms = lower_bound(server_us, probed_at, t0.saturating_add(ttl_ms.saturating_mul(1_000)))
            .saturating_sub(1_000)
            / 1_000;
        // the ticket on the entry node's clock (a lower bound), unless a
        // clear of this slot that this backend saw before the ticket is later
        let slot = slot_of(entry.as_bytes());
        let clear_after = req.ticket.map(|t| {
            let at_ticket = lower_bound(server_us, probed_at, t.value());
            let own = self.own_clears.lock().ok().and_then(|m| m.get(&slot).copied());
            match own {
                Some((at, seen)) if seen <= t.value() => at_ticket.max(at),
                _ => at_ticket,
            }
        });
        let marker = self.marker_key(req.key);
        let clear = self.slot_clear_key(slot);
        let deps_packed = rmp_serde::to_vec(&indexes).map_err(|_| protocol(&entry, "cannot encode the index keys"))?;
        let mut inv = WRITE.script.key(entry.as_str());
        inv.key(marker.as_str())
            .key(clear.as_str())
            .arg(req.value.as_ref())
            .arg(gen.as_str())
            .arg(deps_packed.as_slice())
            .arg(deadline_ms)
            .arg(expires_ms)
            .arg(clear_after.map(|c| c.to_string()).unwrap_or_default());
        let reply = match self.run_durable(&inv, entry.as_bytes()).await {
            Ok(reply) => reply,
            Err(e) => {
                // Redis refused the script before running it: nothing was
                // written. On other errors the write may still happen
                // (redis-rs retries a call whose reply was lost, after a
                // failover): the registrations stay, so that an
                // invalidation finds that entry.
                if e.kind() == BackendErrorKind::OutOfMemory {
                    self.unregister_pairs(registrations).await;
                }
                return Err(e);
            }
        };
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
                self.unregister_pairs(registrations).await;
                Ok(PutOutcome::Refused)
            }
            Some(-1) => {
                self.unregister_pairs(registrations).await;
                let i = items.next().map(|v| int(&v, &entry)).transpose()?;
                Err(match i {
                    Some(2) => foreign(&marker),
                    Some(3) => foreign(&clear),
                    _ => foreign(&entry),
                })
            }
            _ => Err(protocol(&entry, "unexpected reply to write")),
        }
    }

    pub(super) async fn cluster_delete(&self, key: &str) -> Result<bool, BackendError> {
        let entry = self.entry_key(key);
        let inv = DELETE.script.key(entry.as_str());
        let Some(mut conn) = self.cluster() else { return Err(protocol(&entry, "not a cluster backend")) };
        let reply: Value = self.bounded(async { inv.invoke_async(&mut conn).await }, Some(&entry)).await?;
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

    pub(super) async fn cluster_invalidate(&self, deps: &[String]) -> Result<Invalidated, BackendError> {
        // step 1: tombstones and members (batched per node)
        let keys: Vec<[String; 3]> =
            deps.iter().map(|d| [self.tombstone_key(d), self.index_key(d), self.drain_key(d)]).collect();
        let items: Vec<Item> = keys
            .iter()
            .map(|[t, i, x]| Item {
                key: i.clone().into_bytes(),
                args: vec![t.clone().into_bytes(), i.clone().into_bytes(), x.clone().into_bytes()],
            })
            .collect();
        let chunk = self.chunk_size.to_string().into_bytes();
        let mut collected = self.run_items(&COLLECT, std::slice::from_ref(&chunk), &items, self.replica_acks > 0).await;

        let mut failed: Vec<(usize, BackendError)> = Vec::new();
        let mut members: Vec<Member> = Vec::new();
        let mut drains: Vec<Draining> = Vec::new();
        let mut own: Vec<(String, u64, u64)> = Vec::new();
        for (j, [tomb, index, drain]) in keys.iter().enumerate() {
            let reply = match std::mem::replace(&mut collected.replies[j], Err(usize::MAX)) {
                Ok(r) => r,
                Err(e) => {
                    failed.push((j, collected.error(e)));
                    continue;
                }
            };
            let mut rest = reply.rest.into_iter();
            if reply.status == -1 {
                let k = rest.next().map(|v| int(&v, index)).transpose()?.unwrap_or(2);
                failed.push((j, foreign(&keys[j][usize::try_from(k - 1).unwrap_or(1).min(2)])));
                continue;
            }
            own.push((tomb.clone(), reply.now, reply.received));
            let draining = rest.next().map(|v| int(&v, index)).transpose()?.unwrap_or(0) == 1;
            for m in rest {
                members.push(Member { member: bulk(m, index)?, index: index.clone().into_bytes(), deps: vec![j] });
            }
            if draining {
                drains.push(Draining { dep: j, drain: drain.clone().into_bytes(), done: Vec::new() });
            }
        }
        self.remember_tombstones(own);

        // step 2: drop the entries (batched per node); then the drains
        let mut result = self.drop_members(members).await;
        self.drain_cluster(drains, &mut result).await;
        failed.append(&mut result.failed);
        // step 3: remove the members read from their indexes, and the
        // dropped entries from their other indexes
        self.unregister_pairs(result.cleanup.into_iter().collect()).await;
        Ok(outcome(result.dropped, failed))
    }

    /// Remembers tombstones this backend wrote (time on their node, local
    /// instant the reply arrived), so that its own reload right after its
    /// invalidation is not refused. Bounded: forgotten in bulk at 10,000.
    fn remember_tombstones(&self, written: Vec<(String, u64, u64)>) {
        if let Ok(mut own) = self.own_tombstones.lock() {
            if own.len() > 10_000 {
                own.clear();
            }
            for (k, at, seen) in written {
                own.insert(k, (at, seen));
            }
        }
    }

    /// Empties the given drain keys (found by the sweep): the entries
    /// dropped, and the positions (in `drains`) that failed.
    pub(super) async fn drain_keys(&self, drains: Vec<Vec<u8>>) -> (u64, Vec<(usize, BackendError)>) {
        let pending =
            drains.into_iter().enumerate().map(|(dep, drain)| Draining { dep, drain, done: Vec::new() }).collect();
        let mut result = Dropped::default();
        self.drain_cluster(pending, &mut result).await;
        self.unregister_pairs(result.cleanup.into_iter().collect()).await;
        (result.dropped, result.failed)
    }

    /// Empties drain keys: each round reads up to a chunk of live members
    /// per call across the drain keys (batched per node), drops them, and
    /// the next round's read removes them from the drain keys.
    async fn drain_cluster(&self, mut pending: Vec<Draining>, result: &mut Dropped) {
        let chunk = self.chunk_size.to_string().into_bytes();
        while !pending.is_empty() {
            let items: Vec<Item> = pending
                .iter()
                .map(|d| Item {
                    key: d.drain.clone(),
                    args: std::iter::once(d.drain.clone()).chain(d.done.iter().cloned()).collect(),
                })
                .collect();
            let mut popped: Batch = self.run_items(&POP, std::slice::from_ref(&chunk), &items, false).await;
            let mut next = Vec::new();
            let mut members = Vec::new();
            for (k, mut d) in pending.into_iter().enumerate() {
                let name = String::from_utf8_lossy(&d.drain).into_owned();
                let reply = match std::mem::replace(&mut popped.replies[k], Err(usize::MAX)) {
                    Ok(r) if r.status == 1 => r,
                    Ok(_) => {
                        result.failed.push((d.dep, foreign(&name)));
                        continue;
                    }
                    Err(e) => {
                        result.failed.push((d.dep, popped.error(e)));
                        continue;
                    }
                };
                let mut rest = reply.rest.into_iter();
                let left = match rest.next().map(|v| int(&v, &name)) {
                    Some(Ok(n)) => n,
                    _ => {
                        result.failed.push((d.dep, protocol(&name, "unexpected reply to pop")));
                        continue;
                    }
                };
                if left == 0 {
                    continue;
                }
                d.done.clear();
                for m in rest {
                    match bulk(m, &name) {
                        Ok(m) => d.done.push(m),
                        Err(e) => result.failed.push((d.dep, e)),
                    }
                }
                members.extend(d.done.iter().map(|m| Member {
                    member: m.clone(),
                    index: Vec::new(),
                    deps: vec![d.dep],
                }));
                next.push(d);
            }
            let mut round = self.drop_members(members).await;
            result.dropped += round.dropped;
            result.cleanup.extend(round.cleanup.drain());
            // a dependency whose members could not all be dropped stops
            // draining (its drain key keeps them: the retry resumes it)
            let stopped: HashSet<usize> = round.failed.iter().map(|(dep, _)| *dep).collect();
            result.failed.append(&mut round.failed);
            pending = next.into_iter().filter(|d| !stopped.contains(&d.dep)).collect();
        }
    }

    /// Drops the entries that members name (batched per node, up to a chunk
    /// of members per call, all at once); collects the registrations to
    /// remove afterwards.
    async fn drop_members(&self, members: Vec<Member>) -> Dropped {
        let mut out = Dropped::default();
        if members.is_empty() {
            return out;
        }
        // one item per distinct member, with every dependency it serves and
        // the indexes it was read from (removed from them only once its
        // entry is dropped: a member whose drop failed stays, so that the
        // retry finds it)
        let mut order: Vec<Vec<u8>> = Vec::new();
        let mut by_member: HashMap<Vec<u8>, Served> = HashMap::new();
        for m in members {
            if m.member.len() <= 16 {
                // not a member this backend wrote: nothing to drop
                if !m.index.is_empty() {
                    out.cleanup.insert((m.index, m.member));
                }
                continue;
            }
            let indexes: Vec<Vec<u8>> = Some(m.index).filter(|i| !i.is_empty()).into_iter().collect();
            match by_member.get_mut(&m.member) {
                Some((deps, idx)) => {
                    deps.extend(m.deps);
                    idx.extend(indexes);
                }
                None => {
                    by_member.insert(m.member.clone(), (m.deps, indexes));
                    order.push(m.member);
                }
            }
        }
        let items: Vec<Item> = order
            .iter()
            .map(|m| {
                let (gen, entry) = m.split_at(16);
                let marker = marker_of(entry).unwrap_or_else(|| entry.to_vec());
                Item { key: entry.to_vec(), args: vec![entry.to_vec(), marker, gen.to_vec()] }
            })
            .collect();
        let common = [self.marker_ms.to_string().into_bytes()];
        let mut batch = self.run_items(&DROP, &common, &items, self.replica_acks > 0).await;
        for (k, m) in order.iter().enumerate() {
            let (deps, read_from) = by_member.remove(m).unwrap_or_default();
            let name = String::from_utf8_lossy(&items[k].key).into_owned();
            let fail = |e: BackendError, out: &mut Dropped| {
                let mut copies = deps.iter().skip(1).map(|&d| (d, super::reply::again(&e))).collect::<Vec<_>>();
                if let Some(&d) = deps.first() {
                    out.failed.push((d, e));
                }
                out.failed.append(&mut copies);
            };
            match std::mem::replace(&mut batch.replies[k], Err(usize::MAX)) {
                Err(e) => fail(batch.error(e), &mut out),
                Ok(r) if r.status == -1 => {
                    let which = r.rest.first().and_then(|v| int(v, &name).ok()).unwrap_or(1);
                    let key = if which == 2 { String::from_utf8_lossy(&items[k].args[1]).into_owned() } else { name };
                    fail(foreign(&key), &mut out);
                }
                Ok(r) => {
                    // dropped now, or gone already (expired, evicted,
                    // replaced, or its generation marked dead)
                    for index in read_from {
                        out.cleanup.insert((index, m.clone()));
                    }
                    let mut rest = r.rest.into_iter();
                    if rest.next().and_then(|v| int(&v, &name).ok()) == Some(1) {
                        out.dropped += 1;
                        for index in rest {
                            if let Ok(index) = bulk(index, &name) {
                                out.cleanup.insert((index, m.clone()));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Removes `(index, member)` registrations (batched per node). Failures
    /// are logged: a stray member names a generation that no entry has and
    /// is pruned once it expires.
    pub(super) async fn unregister_pairs(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) {
        if pairs.is_empty() {
            return;
        }
        // one item per index, with all its members
        let mut order: Vec<Vec<u8>> = Vec::new();
        let mut by_index: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
        for (index, member) in pairs {
            match by_index.get_mut(&index) {
                Some(members) => members.push(member),
                None => {
                    by_index.insert(index.clone(), vec![member]);
                    order.push(index);
                }
            }
        }
        let items: Vec<Item> = order
            .into_iter()
            .map(|index| {
                let members = by_index.remove(&index).unwrap_or_default();
                Item { key: index.clone(), args: std::iter::once(index).chain(members).collect() }
            })
            .collect();
        let mut batch = self.run_items(&super::maintenance::UNREGISTER, &[], &items, false).await;
        let mut logged = false;
        for k in 0..items.len() {
            if let Err(e) = std::mem::replace(&mut batch.replies[k], Err(usize::MAX)) {
                if !logged {
                    warn!(error = %batch.error(e), "could not unregister a generation");
                    logged = true;
                }
            }
        }
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
}
