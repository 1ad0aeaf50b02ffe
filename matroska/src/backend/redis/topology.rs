//! The Redis Cluster connection and what this backend knows of the cluster's
//! layout: which node serves which hash slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::Value;

/// Number of hash slots of a Redis Cluster.
pub(super) const SLOTS: usize = 16_384;

/// The hash slot of a key (CRC16/XMODEM of its hash tag, or of the whole key).
pub(super) fn slot_of(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let close = key[open + 1..].iter().position(|b| *b == b'}')?;
            Some(&key[open + 1..open + 1 + close])
        })
        .filter(|t| !t.is_empty())
        .unwrap_or(key);
    crc16(tag) % SLOTS as u16
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for b in bytes {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// For every slot, sixteen hex digits that hash to it: the hash tag of the
/// slot's clear marker (computed once, a few milliseconds).
pub(super) static SLOT_TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut tags = vec![String::new(); SLOTS];
    let mut missing = SLOTS;
    let mut i: u64 = 0;
    while missing > 0 {
        let tag = format!("{i:016x}");
        let slot = usize::from(crc16(tag.as_bytes()) % SLOTS as u16);
        if tags[slot].is_empty() {
            tags[slot] = tag;
            missing -= 1;
        }
        i += 1;
    }
    tags
});

/// A master, as `CLUSTER SLOTS` names it.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) host: String,
    pub(super) port: u16,
    /// `host:port`.
    pub(super) addr: Arc<str>,
}

/// Which master serves which slot, as last read with `CLUSTER SLOTS`.
#[derive(Debug, Default)]
pub(super) struct SlotMap {
    /// Per slot, the index of its master in `nodes` (`None`: not served, or
    /// not known).
    owner: Vec<Option<usize>>,
    pub(super) nodes: Vec<Node>,
}

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply; `None` if it is not one.
    fn parse(reply: &Value) -> Option<SlotMap> {
        let Value::Array(ranges) = reply else { return None };
        let mut map = SlotMap { owner: vec![None; SLOTS], nodes: Vec::new() };
        for range in ranges {
            let Value::Array(parts) = range else { return None };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return None;
            };
            let host = master.first().and_then(super::reply::text)?;
            let Some(Value::Int(port)) = master.get(1) else { return None };
            let port = u16::try_from(*port).ok()?;
            // an unknown endpoint ('' or '?'): its slots go through redis-rs'
            // own routing
            if host.is_empty() || host == "?" {
                continue;
            }
            let addr: Arc<str> = format!("{host}:{port}").into();
            let index = match map.nodes.iter().position(|n| n.addr == addr) {
                Some(i) => i,
                None => {
                    map.nodes.push(Node { host, port, addr });
                    map.nodes.len() - 1
                }
            };
            let (start, end) = (usize::try_from(*start).ok()?, usize::try_from(*end).ok()?);
            for slot in start..=end.min(SLOTS - 1) {
                map.owner[slot] = Some(index);
            }
        }
        Some(map)
    }

    /// The index (in `nodes`) of the master serving `slot`, if known.
    pub(super) fn owner(&self, slot: u16) -> Option<usize> {
        self.owner.get(usize::from(slot)).copied().flatten()
    }
}

/// A cluster connection that can be replaced by a fresh one, and the slot
/// map.
///
/// redis-rs' async cluster connection, after a connection error to a node,
/// reconnects to that same address and keeps its slot map; it rebuilds the
/// map on `MOVED` replies, not when a master is gone. After a master dies and
/// its replica takes over, calls for its slots would keep failing. So, after
/// a call fails as unreachable or timed out, the backend builds a new
/// connection from the client (which reads the current slot map) and swaps
/// it in: at most one rebuild at a time and one per second. The backend's
/// own slot map (used to send batched calls to each node) is read again
/// then, and when a batched call finds a key that its node does not serve.
pub(super) struct ClusterHandle {
    conn: RwLock<ClusterConnection>,
    /// The client to rebuild from (absent for a connection given by the
    /// application, which is then used as it is).
    client: Option<ClusterClient>,
    rebuild: Mutex<Option<Instant>>,
    rebuilding: AtomicBool,
    slots: RwLock<Arc<SlotMap>>,
    slots_read: Mutex<Option<Instant>>,
    reading_slots: AtomicBool,
}

impl ClusterHandle {
    pub(super) fn new(conn: ClusterConnection, client: Option<ClusterClient>) -> Arc<Self> {
        Arc::new(ClusterHandle {
            conn: RwLock::new(conn),
            client,
            rebuild: Mutex::default(),
            rebuilding: AtomicBool::default(),
            slots: RwLock::default(),
            slots_read: Mutex::default(),
            reading_slots: AtomicBool::default(),
        })
    }

    /// The current connection (a clone sharing it).
    pub(super) fn get(&self) -> ClusterConnection {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The slot map as last read (empty until read).
    pub(super) fn slots(&self) -> Arc<SlotMap> {
        Arc::clone(&self.slots.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the slot map now (`CLUSTER SLOTS` from any node, three tries).
    /// Returns whether it was read.
    pub(super) async fn read_slots(&self, timeout: Duration) -> bool {
        for _ in 0..3 {
            let mut conn = self.get();
            let cmd = redis::cmd("CLUSTER").arg("SLOTS").clone();
            let call = conn.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random));
            if let Ok(Ok(reply)) = tokio::time::timeout(timeout, call).await {
                if let Some(map) = SlotMap::parse(&reply) {
                    *self.slots.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
                    return true;
                }
            }
        }
        false
    }

    /// Reads the slot map again in the background, unless that is under way
    /// or was done less than 200 ms ago.
    pub(super) fn read_slots_soon(self: &Arc<Self>, timeout: Duration) {
        if !Self::claim(&self.slots_read, &self.reading_slots, Duration::from_millis(200)) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.reading_slots.store(false, Ordering::SeqCst);
            return;
        };
        let handle = Arc::clone(self);
        runtime.spawn(async move {
            if !handle.read_slots(timeout).await {
                tracing::debug!("could not read the Redis Cluster slot map");
            }
            handle.reading_slots.store(false, Ordering::SeqCst);
        });
    }

    /// Starts building a fresh connection (and reading the slot map) in the
    /// background, unless one is being built or one was built less than a
    /// second ago.
    pub(super) fn rebuild_soon(self: &Arc<Self>, timeout: Duration) {
        let Some(client) = self.client.clone() else {
            self.read_slots_soon(timeout);
            return;
        };
        if !Self::claim(&self.rebuild, &self.rebuilding, Duration::from_secs(1)) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.rebuilding.store(false, Ordering::SeqCst);
            return;
        };
        let handle = Arc::clone(self);
        runtime.spawn(async move {
            match tokio::time::timeout(timeout, client.get_async_connection()).await {
                Ok(Ok(fresh)) => {
                    *handle.conn.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                    tracing::debug!("rebuilt the Redis Cluster connection (fresh slot map)");
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "could not rebuild the Redis Cluster connection"),
                Err(_) => tracing::debug!("rebuilding the Redis Cluster connection timed out"),
            }
            handle.read_slots(timeout).await;
            handle.rebuilding.store(false, Ordering::SeqCst);
        });
    }

    /// Takes the right to start a background task: none under way, and the
    /// last one started at least `every` ago.
    fn claim(last: &Mutex<Option<Instant>>, busy: &AtomicBool, every: Duration) -> bool {
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < every) {
            return false;
        }
        if busy.swap(true, Ordering::SeqCst) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn slots_match_redis_rs() {
        for key in [&b"a"[..], b"b", b"{user1000}.following", b"foo{}{bar}", b"foo{{bar}}zap", b"{}", b"n:{0123}:e:k"] {
            assert_eq!(Slot::new(slot_of(key)), Some(Slot::for_key(key)), "{:?}", String::from_utf8_lossy(key));
        }
        // the CRC16/XMODEM check value
        assert_eq!(crc16(b"123456789"), 0x31c3);
    }

    #[test]
    fn every_slot_has_a_tag() {
        assert_eq!(SLOT_TAGS.len(), SLOTS);
        for (slot, tag) in SLOT_TAGS.iter().enumerate() {
            assert_eq!(tag.len(), 16);
            assert_eq!(usize::from(slot_of(format!("n:{{{tag}}}:c:").as_bytes())), slot);
        }
    }

    #[test]
    fn cluster_slots_replies_parse() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(8191), node("127.0.0.1", 7000), node("127.0.0.1", 7003)]),
            Value::Array(vec![Value::Int(8192), Value::Int(16383), node("127.0.0.1", 7001)]),
        ]);
        let map = SlotMap::parse(&reply).unwrap();
        assert_eq!(map.nodes.len(), 2);
        assert_eq!(map.owner(0), Some(0));
        assert_eq!(map.owner(16383), Some(1));
        assert_eq!(&*map.nodes[1].addr, "127.0.0.1:7001");
        assert!(SlotMap::parse(&Value::Int(3)).is_none());
    }
}
