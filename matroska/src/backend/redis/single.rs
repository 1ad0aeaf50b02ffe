//! The single-node side of [`RedisBackend`]: put, delete and invalidate (see
//! the [protocol](super#protocol)).

use std::collections::VecDeque;
use std::sync::LazyLock;

use futures_util::future::join_all;
use redis::aio::ConnectionManager;
use redis::{Script, Value};
use tracing::warn;

use super::batch::Lua;
use super::clock::saturating_u64;
use super::reply::{again, array, bulk, foreign, int, protocol};
use super::RedisBackend;
use crate::backend::{Invalidated, PutOutcome, PutRequest};
use crate::error::BackendError;

const DROP_MEMBER: &str = include_str!("drop_member.lua");
const SLICED: &str = include_str!("sliced.lua");

static PUT: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("put.lua"), &[SLICED]));
pub(super) static DELETE: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("delete.lua"), &[]));
static UNREGISTER: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("unregister.lua"), &[]));
static INVALIDATE: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("invalidate.lua"), &[DROP_MEMBER]));
static DRAIN: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("drain.lua"), &[DROP_MEMBER]));

/// The scripts a single-node backend loads at build time (besides the
/// batched ones).
pub(super) fn scripts() -> Vec<&'static Script> {
    vec![&PUT.script, &DELETE.script, &UNREGISTER.script, &INVALIDATE.script, &DRAIN.script]
}

/// A dependency whose index was moved to its drain key: its position in the
/// request, its drain key and its index.
pub(super) type Draining = (usize, String, String);

impl RedisBackend {
    pub(super) async fn single_put(
        &self,
        mut conn: ConnectionManager,
        req: PutRequest<'_>,
    ) -> Result<PutOutcome, BackendError> {
        let entry = self.entry_key(req.key);
        let indexes: Vec<String> = req.deps.iter().map(|d| self.index_key(d)).collect();
        let mut inv = PUT.script.key(entry.as_str());
        for index in &indexes {
            inv.key(index.as_str());
        }
        let checked: Vec<String> = match req.ticket {
            Some(_) => req.deps.iter().map(|d| self.tombstone_key(d)).chain([self.clear_key()]).collect(),
            None => Vec::new(),
        };
        for t in &checked {
            inv.key(t.as_str());
        }
        let ttl_ms = saturating_u64(req.ttl.as_millis()).max(1);
        let ticket = req.ticket.map(|t| t.value().to_string()).unwrap_or_default();
        let gen = self.gens.next();
        inv.arg(req.value.as_ref()).arg(ttl_ms).arg(ticket).arg(self.window_us).arg(gen.as_str()).arg(req.deps.len());
        let reply: Value = self.bounded(async { inv.invoke_async(&mut conn).await }, Some(&entry)).await?;
        let mut items = array(reply, &entry)?.into_iter();
        let status = match items.next() {
            Some(v) => int(&v, &entry)?,
            None => return Err(protocol(&entry, "empty reply to put")),
        };
        match status {
            0 => {
                self.clock.reset();
                Ok(PutOutcome::Refused)
            }
            1 => {
                if let Some(member) = items.next() {
                    let member = bulk(member, &entry)?;
                    let stale = items.map(|v| bulk(v, &entry)).collect::<Result<Vec<_>, _>>()?;
                    self.unregister(&member, &stale).await;
                }
                Ok(PutOutcome::Stored)
            }
            -1 => {
                // KEYS[i]: 1 the entry, then the indexes, then the checked keys
                let i = items.next().map(|v| int(&v, &entry)).transpose()?.unwrap_or(1);
                let i = usize::try_from(i).unwrap_or(1).max(1);
                let name = match i {
                    1 => entry.as_str(),
                    i if i <= indexes.len() + 1 => indexes[i - 2].as_str(),
                    i => checked.get(i - indexes.len() - 2).map(String::as_str).unwrap_or(entry.as_str()),
                };
                Err(foreign(name))
            }
            _ => Err(protocol(&entry, "unexpected status in reply to put")),
        }
    }

    pub(super) async fn single_delete(&self, mut conn: ConnectionManager, key: &str) -> Result<bool, BackendError> {
        let entry = self.entry_key(key);
        let inv = DELETE.script.key(entry.as_str());
        let reply: Value = self.bounded(async { inv.invoke_async(&mut conn).await }, Some(&entry)).await?;
        let mut items = array(reply, &entry)?.into_iter();
        let existed = match items.next() {
            Some(v) => int(&v, &entry)? > 0,
            None => return Err(protocol(&entry, "empty reply to delete")),
        };
        if let Some(member) = items.next() {
            let member = bulk(member, &entry)?;
            let indexes = items.map(|v| bulk(v, &entry)).collect::<Result<Vec<_>, _>>()?;
            if !indexes.is_empty() {
                self.unregister(&member, &indexes).await;
            }
        }
        Ok(existed)
    }

    /// One call per chunk of dependencies, all at once; then the drains.
    pub(super) async fn single_invalidate(&self, deps: &[String]) -> Result<Invalidated, BackendError> {
        let chunk = self.chunk_size.max(1);
        let batches: Vec<(usize, Vec<String>)> = deps
            .chunks(chunk)
            .enumerate()
            .map(|(b, part)| {
                let mut keys = Vec::with_capacity(part.len() * 3);
                for dep in part {
                    keys.push(self.tombstone_key(dep));
                    keys.push(self.index_key(dep));
                    keys.push(self.drain_key(dep));
                }
                (b * chunk, keys)
            })
            .collect();
        self.clock.reset();
        let calls = batches.iter().map(|(_, keys)| async move {
            let mut conn = self.single()?;
            let mut inv = INVALIDATE.script.prepare_invoke();
            for k in keys {
                inv.key(k.as_str());
            }
            inv.arg(chunk);
            self.bounded(async { inv.invoke_async::<Value>(&mut conn).await }, Some(&keys[1])).await
        });
        let replies = join_all(calls).await;

        let mut dropped = 0u64;
        let mut failed: Vec<(usize, BackendError)> = Vec::new();
        let mut drains: VecDeque<Draining> = VecDeque::new();
        for ((offset, keys), reply) in batches.iter().zip(replies) {
            let n = keys.len() / 3;
            let first = &keys[1];
            let parsed = reply.and_then(|reply| {
                let items = array(reply, first)?;
                match <[Value; 3]>::try_from(items) {
                    Ok([d, js, fs]) => Ok((int(&d, first)?, array(js, first)?, array(fs, first)?)),
                    Err(_) => Err(protocol(first, "unexpected reply to invalidate")),
                }
            });
            let (d, js, fs) = match parsed {
                Ok(p) => p,
                Err(e) => {
                    failed.extend((offset + 1..offset + n).map(|p| (p, again(&e))));
                    failed.push((*offset, e));
                    continue;
                }
            };
            dropped += u64::try_from(d).unwrap_or(0);
            let position = |j: &Value| -> Result<usize, BackendError> {
                usize::try_from(int(j, first)?)
                    .ok()
                    .filter(|j| (1..=n).contains(j))
                    .map(|j| j - 1)
                    .ok_or_else(|| protocol(first, "invalidate named an unknown dependency"))
            };
            for j in &js {
                let j = position(j)?;
                drains.push_back((offset + j, keys[3 * j + 2].clone(), keys[3 * j + 1].clone()));
            }
            for pair in fs.chunks(2) {
                let [j, i] = pair else { return Err(protocol(first, "malformed list of failed dependencies")) };
                let j = position(j)?;
                let name = usize::try_from(int(i, first)?).ok().and_then(|i| keys.get(i.wrapping_sub(1)));
                failed.push((offset + j, foreign(name.unwrap_or(&keys[3 * j + 1]))));
            }
        }
        let (more, drain_failures) = self.drain_all(drains).await;
        dropped += more;
        failed.extend(drain_failures);
        Ok(outcome(dropped, failed))
    }

    /// Empties drain keys, up to a chunk of members per call across as many
    /// drain keys as the chunk reaches. Returns the entries dropped and the
    /// dependencies whose drain failed.
    pub(super) async fn drain_all(&self, mut queue: VecDeque<Draining>) -> (u64, Vec<(usize, BackendError)>) {
        let chunk = self.chunk_size.max(1);
        let mut dropped = 0u64;
        let mut failed = Vec::new();
        while !queue.is_empty() {
            let n = queue.len().min(chunk);
            let first = queue[0].1.clone();
            let mut inv = DRAIN.script.prepare_invoke();
            for (_, drain, _) in queue.iter().take(n) {
                inv.key(drain.as_str());
            }
            inv.arg(chunk);
            for (_, _, index) in queue.iter().take(n) {
                inv.arg(index.as_str());
            }
            let reply = match self.single() {
                Ok(mut conn) => self.bounded(async { inv.invoke_async::<Value>(&mut conn).await }, Some(&first)).await,
                Err(e) => Err(e),
            };
            let parsed = reply.and_then(|reply| {
                let items = array(reply, &first)?;
                let mut items = items.iter();
                let (Some(d), Some(done)) = (items.next(), items.next()) else {
                    return Err(protocol(&first, "unexpected reply to drain"));
                };
                let foreign_js = items.map(|j| int(j, &first)).collect::<Result<Vec<_>, _>>()?;
                Ok((int(d, &first)?, int(done, &first)?, foreign_js))
            });
            match parsed {
                Ok((d, done, foreign_js)) => {
                    dropped += u64::try_from(d).unwrap_or(0);
                    let done = usize::try_from(done).unwrap_or(0).min(n);
                    for j in 1..=done {
                        let Some((position, drain, _)) = queue.pop_front() else { break };
                        if foreign_js.contains(&(j as i64)) {
                            failed.push((position, foreign(&drain)));
                        }
                    }
                }
                Err(e) => {
                    // these drains stay pending in Redis: the next
                    // invalidation of their dependencies (the retry) resumes
                    // them
                    let copies: Vec<BackendError> = (1..n).map(|_| again(&e)).collect();
                    for err in std::iter::once(e).chain(copies) {
                        let Some((position, _, _)) = queue.pop_front() else { break };
                        failed.push((position, err));
                    }
                }
            }
        }
        (dropped, failed)
    }

    /// The single-node connection; a protocol error on a cluster backend
    /// (never happens: cluster calls take their own path).
    pub(super) fn single(&self) -> Result<ConnectionManager, BackendError> {
        self.connection().ok_or_else(|| protocol("", "not a single-node backend"))
    }

    /// Removes one generation of an entry from indexes (best effort).
    async fn unregister(&self, member: &[u8], indexes: &[Vec<u8>]) {
        let mut inv = UNREGISTER.script.prepare_invoke();
        for index in indexes {
            inv.key(index.as_slice());
        }
        inv.arg(member);
        let Ok(mut conn) = self.single() else { return };
        let result = self.bounded(async { inv.invoke_async::<Value>(&mut conn).await }, None).await;
        if let Err(e) = result {
            // Harmless: the stray registration names an old generation and is
            // pruned once it expires.
            warn!(error = %e, "could not unregister a previous generation");
        }
    }
}

/// The answer to an invalidation: complete, or the failed positions (sorted,
/// once each) with the first error.
pub(super) fn outcome(dropped: u64, mut failed: Vec<(usize, BackendError)>) -> Invalidated {
    if failed.is_empty() {
        return Invalidated::complete(dropped);
    }
    let mut positions: Vec<usize> = failed.iter().map(|(p, _)| *p).collect();
    positions.sort_unstable();
    positions.dedup();
    // the error of the first failed position (an original error: copies
    // are pushed after it)
    let first = failed.iter().enumerate().min_by_key(|(_, (p, _))| *p).map(|(i, _)| i).unwrap_or(0);
    let (_, error) = failed.swap_remove(first);
    Invalidated::partial(dropped, positions, error)
}
