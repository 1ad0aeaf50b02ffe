//! Batched scripts: many items of work in few calls.
//!
//! A batched script (see `batch/items.lua`) takes its work as items in
//! `ARGV` and answers item by item. On a single node the items go in calls
//! of up to a [chunk](super::RedisBackendBuilder::chunk_size) each, sent at
//! once. On a Redis Cluster they are grouped by the master serving their
//! slot (the backend's slot map): one call per master and chunk, sent to
//! that master by address, with the script flag `allow-cross-slot-keys` (a
//! script may then touch keys of any slot its node serves). Redis checks
//! every key a script touches: a key its node does not serve (a slot that
//! moved since the map was read) fails that item alone, and the item is sent
//! again through its own slot, routed by redis-rs (which follows `MOVED` and
//! `ASK`). So the number of calls grows with the number of masters and
//! chunks, not with the number of slots an operation touches.

use futures_util::future::join_all;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{Script, ServerErrorKind, Value};
use std::sync::Arc;

use super::breaker::Circuit;
use super::clock::{local_us, saturating_u64};
use super::reply::{again, array, int, protocol};
use super::topology::slot_of;
use super::{Conn, RedisBackend};
use crate::error::{BackendError, BackendErrorKind};

/// A script and its source (the source is sent with `SCRIPT LOAD` to a node
/// that does not have it yet).
pub(super) struct Lua {
    pub(super) script: Script,
    code: String,
}

impl Lua {
    /// `body` preceded by the `preludes` (helpers it calls); a `#!lua`
    /// line that declares the script's flags stays the first line.
    pub(super) fn new(body: &str, preludes: &[&str]) -> Lua {
        let (shebang, rest) = match body.strip_prefix("#!") {
            Some(_) => body.split_once('\n').unwrap_or((body, "")),
            None => ("", body),
        };
        let mut code = String::with_capacity(body.len() + preludes.iter().map(|p| p.len() + 1).sum::<usize>() + 1);
        if !shebang.is_empty() {
            code.push_str(shebang);
            code.push('\n');
        }
        for p in preludes {
            code.push_str(p);
            code.push('\n');
        }
        code.push_str(rest);
        Lua { script: Script::new(&code), code }
    }
}

/// The shared helpers of every batched script.
pub(super) const ITEMS: &str = include_str!("batch/items.lua");

/// One item of work.
pub(super) struct Item {
    /// A key of the item's slot: it decides where the item runs.
    pub(super) key: Vec<u8>,
    /// The item's arguments.
    pub(super) args: Vec<Vec<u8>>,
}

/// What a batched script answered for one item.
#[derive(Debug)]
pub(super) struct Reply {
    /// 1 (done) or -1 (foreign data in argument `rest[0]`, 1-based).
    pub(super) status: i64,
    /// The rest of the item's reply.
    pub(super) rest: Vec<Value>,
    /// The node's clock when the call ran (µs).
    pub(super) now: u64,
    /// Local monotonic time when the reply arrived (µs, see
    /// [`local_us`]).
    pub(super) received: u64,
}

/// The answers to a batch, item by item: a reply, or the index of the error
/// (in `errors`) of the call that carried it.
pub(super) struct Batch {
    pub(super) replies: Vec<Result<Reply, usize>>,
    pub(super) errors: Vec<BackendError>,
}

impl Batch {
    /// Error `i`, to report (the first caller takes it; later ones get a
    /// copy without its source).
    pub(super) fn error(&mut self, i: usize) -> BackendError {
        let placeholder = BackendError::new(BackendErrorKind::Protocol, "");
        match self.errors.get_mut(i) {
            Some(slot) => {
                let copy = again(slot);
                std::mem::replace(slot, copy)
            }
            None => placeholder,
        }
    }
}

/// Where a call goes.
enum Route {
    /// The single node.
    Single,
    /// A cluster master, by address.
    Node { host: String, port: u16, addr: Arc<str> },
    /// A cluster slot, routed by redis-rs through the call's first key.
    Slot,
}

/// A call's reply: the node's time (µs) and, per item, its status and the
/// rest of its reply.
type CallReply = (u64, Vec<(i64, Vec<Value>)>);

impl RedisBackend {
    /// Runs `lua` over `items` with the `common` arguments (see the [module
    /// docs](self)); with `durable`, waits for
    /// [`replica_acks`](super::RedisBackendBuilder::replica_acks) after each
    /// call.
    pub(super) async fn run_items(&self, lua: &Lua, common: &[Vec<u8>], items: &[Item], durable: bool) -> Batch {
        let mut batch = Batch { replies: (0..items.len()).map(|_| Err(usize::MAX)).collect(), errors: Vec::new() };
        if items.is_empty() {
            return batch;
        }
        let chunk = self.chunk_size.max(1);
        match &self.conn {
            Conn::Single(_) => {
                let all: Vec<usize> = (0..items.len()).collect();
                let calls: Vec<(Route, Vec<usize>)> = all.chunks(chunk).map(|c| (Route::Single, c.to_vec())).collect();
                let again = self.send(lua, common, items, calls, durable, &mut batch).await;
                debug_assert!(again.is_empty());
            }
            Conn::Cluster(handle) => {
                let map = handle.slots();
                let mut per_node: Vec<Vec<usize>> = (0..map.nodes.len()).map(|_| Vec::new()).collect();
                let mut per_slot: Vec<usize> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match map.owner(slot_of(&item.key)) {
                        Some(n) => per_node[n].push(i),
                        None => per_slot.push(i),
                    }
                }
                let mut calls = Vec::new();
                for (n, list) in per_node.iter().enumerate() {
                    let node = &map.nodes[n];
                    for c in list.chunks(chunk) {
                        let route =
                            Route::Node { host: node.host.clone(), port: node.port, addr: Arc::clone(&node.addr) };
                        calls.push((route, c.to_vec()));
                    }
                }
                let moved = self.send(lua, common, items, calls, durable, &mut batch).await;
                if !moved.is_empty() || map.nodes.is_empty() {
                    handle.read_slots_soon(self.op_timeout);
                }
                per_slot.extend(moved);
                if !per_slot.is_empty() {
                    // one call per slot (and chunk), routed by redis-rs
                    let mut by_slot: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
                    for i in per_slot {
                        by_slot.entry(slot_of(&items[i].key)).or_default().push(i);
                    }
                    let calls = by_slot
                        .values()
                        .flat_map(|list| list.chunks(chunk).map(|c| (Route::Slot, c.to_vec())))
                        .collect();
                    let still = self.send(lua, common, items, calls, durable, &mut batch).await;
                    if !still.is_empty() {
                        let e = BackendError::new(
                            BackendErrorKind::Unavailable,
                            "a hash slot is moving between Redis Cluster nodes; try again",
                        );
                        batch.errors.push(e);
                        let at = batch.errors.len() - 1;
                        for i in still {
                            batch.replies[i] = Err(at);
                        }
                    }
                }
            }
        }
        batch
    }

    /// Sends the calls at once and records their replies in `batch`; returns
    /// the items answered "not served by this node".
    async fn send(
        &self,
        lua: &Lua,
        common: &[Vec<u8>],
        items: &[Item],
        calls: Vec<(Route, Vec<usize>)>,
        durable: bool,
        batch: &mut Batch,
    ) -> Vec<usize> {
        let outcomes =
            join_all(calls.iter().map(|(route, list)| self.call(lua, common, items, route, list, durable))).await;
        let mut moved = Vec::new();
        for ((_, list), outcome) in calls.iter().zip(outcomes) {
            let received = local_us();
            match outcome {
                Ok((now, replies)) => {
                    for (&i, (status, rest)) in list.iter().zip(replies) {
                        match status {
                            1 | -1 => batch.replies[i] = Ok(Reply { status, rest, now, received }),
                            -2 => moved.push(i),
                            _ => {
                                let message = rest.first().and_then(super::reply::text).unwrap_or_default();
                                let kind = if message.contains("cluster is down") || message.contains("LOADING") {
                                    BackendErrorKind::Unavailable
                                } else {
                                    BackendErrorKind::Refused
                                };
                                let key = String::from_utf8_lossy(&items[i].key).into_owned();
                                batch.errors.push(BackendError::new(kind, format!("Redis: {message}")).with_key(key));
                                batch.replies[i] = Err(batch.errors.len() - 1);
                            }
                        }
                    }
                }
                Err(e) => {
                    batch.errors.push(e);
                    let at = batch.errors.len() - 1;
                    for &i in list {
                        batch.replies[i] = Err(at);
                    }
                }
            }
        }
        moved
    }

    /// One call: the items `list` of `items`.
    async fn call(
        &self,
        lua: &Lua,
        common: &[Vec<u8>],
        items: &[Item],
        route: &Route,
        list: &[usize],
        durable: bool,
    ) -> Result<CallReply, BackendError> {
        let first = String::from_utf8_lossy(&items[list[0]].key).into_owned();
        let mut args: Vec<&[u8]> = Vec::with_capacity(1 + common.len() + list.len() * 4);
        let counts: Vec<String> = std::iter::once(common.len())
            .chain(list.iter().map(|&i| items[i].args.len()))
            .map(|n| n.to_string())
            .collect();
        args.push(counts[0].as_bytes());
        args.extend(common.iter().map(Vec::as_slice));
        for (k, &i) in list.iter().enumerate() {
            args.push(counts[k + 1].as_bytes());
            args.extend(items[i].args.iter().map(Vec::as_slice));
        }
        let reply: Value = match (route, &self.conn) {
            (Route::Single, Conn::Single(c)) => {
                let mut conn = (**c).clone();
                let mut inv = lua.script.prepare_invoke();
                for a in &args {
                    inv.arg(*a);
                }
                self.bounded(async { inv.invoke_async(&mut conn).await }, Some(&first)).await?
            }
            (Route::Slot, Conn::Cluster(h)) => {
                let mut conn = h.get();
                let mut inv = lua.script.key(items[list[0]].key.as_slice());
                for a in &args {
                    inv.arg(*a);
                }
                let reply = self.bounded(async { inv.invoke_async(&mut conn).await }, Some(&first)).await?;
                if durable {
                    self.durable(&items[list[0]].key).await?;
                }
                reply
            }
            (Route::Node { host, port, addr }, Conn::Cluster(h)) => {
                let routing =
                    || RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
                let mut evalsha = redis::cmd("EVALSHA");
                evalsha.arg(lua.script.get_hash()).arg(0);
                for a in &args {
                    evalsha.arg(*a);
                }
                let circuit = Some(Circuit::Node(Arc::clone(addr)));
                let first_try = routed(h.get(), evalsha.clone(), routing());
                let reply = match self.guarded(first_try, circuit.clone(), Some(&first)).await {
                    Err(e) if is_noscript(&e) => {
                        let load = redis::cmd("SCRIPT").arg("LOAD").arg(lua.code.as_str()).clone();
                        self.guarded(routed(h.get(), load, routing()), circuit.clone(), Some(&first)).await?;
                        self.guarded(routed(h.get(), evalsha, routing()), circuit.clone(), Some(&first)).await?
                    }
                    other => other?,
                };
                if durable {
                    self.durable_node(routing(), circuit, &first).await?;
                }
                reply
            }
            _ => return Err(protocol(&first, "a call routed to the wrong kind of connection")),
        };
        parse_reply(reply, list.len(), &first)
    }

    /// Waits until [`replica_acks`](super::RedisBackendBuilder::replica_acks)
    /// replicas of a node have every write made so far on this connection.
    async fn durable_node(
        &self,
        routing: RoutingInfo,
        circuit: Option<Circuit>,
        key: &str,
    ) -> Result<(), BackendError> {
        let Conn::Cluster(h) = &self.conn else { return Ok(()) };
        let timeout_ms = saturating_u64(self.response_timeout.as_millis()).max(1);
        let wait = redis::cmd("WAIT").arg(self.replica_acks).arg(timeout_ms).clone();
        let acks = self.guarded(routed(h.get(), wait, routing), circuit, Some(key)).await?;
        match acks {
            Value::Int(n) if n >= i64::try_from(self.replica_acks).unwrap_or(i64::MAX) => Ok(()),
            _ => Err(BackendError::new(
                BackendErrorKind::Unavailable,
                format!("the write was not acknowledged by {} replica(s) in time", self.replica_acks),
            )
            .with_key(key)),
        }
    }

    /// The circuit of a cluster call routed by `key`.
    pub(super) fn slot_circuit(key: &str) -> Circuit {
        Circuit::Slot(Slot::for_key(key))
    }
}

/// A command sent by `routing`; an error reply is an error (redis-rs'
/// `route_command` answers it as a value).
pub(super) async fn routed(
    mut conn: redis::cluster_async::ClusterConnection,
    cmd: redis::Cmd,
    routing: RoutingInfo,
) -> redis::RedisResult<Value> {
    match conn.route_command(cmd, routing).await? {
        Value::ServerError(e) => Err(e.into()),
        v => Ok(v),
    }
}

fn is_noscript(e: &BackendError) -> bool {
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<redis::RedisError>())
        .is_some_and(|r| r.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript))
}

/// Splits a batched script's reply `{now, item...}` into the node's time and
/// `n` items' statuses and replies.
fn parse_reply(reply: Value, n: usize, key: &str) -> Result<CallReply, BackendError> {
    let mut parts = array(reply, key)?.into_iter();
    let now = parts.next().map(|v| int(&v, key)).transpose()?.ok_or_else(|| protocol(key, "empty reply"))?;
    let items: Vec<(i64, Vec<Value>)> = parts
        .map(|item| {
            let mut fields = array(item, key)?.into_iter();
            let status = fields.next().map(|v| int(&v, key)).transpose()?.ok_or_else(|| protocol(key, "empty item"))?;
            Ok((status, fields.collect()))
        })
        .collect::<Result<_, BackendError>>()?;
    if items.len() != n {
        return Err(protocol(key, "a batched script answered for a different number of items"));
    }
    Ok((u64::try_from(now).unwrap_or(0), items))
}
