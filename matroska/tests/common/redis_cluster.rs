//! A real Redis Cluster for tests: three masters with one replica each,
//! spawned on free loopback ports in temporary directories (persistence off,
//! `cluster-node-timeout` 1000 ms so that a failover takes a few seconds),
//! joined with `redis-cli --cluster create`, killed on `Drop`.
//!
//! * `MATROSKA_REDIS_SERVER` / `MATROSKA_REDIS_CLI`: the binaries to run
//!   (default `redis-server` and `redis-cli` on the PATH).
//! * `MATROSKA_REDIS_CLUSTER_URLS`: comma-separated seed URLs of a running
//!   cluster to use instead (tests isolate themselves with a fresh namespace;
//!   tests that kill a node are skipped).
//! * `MATROSKA_REQUIRE_REDIS=1`: fail instead of skipping when no cluster can
//!   be started.
//!
//! The suite shares one cluster per test binary ([`shared`]); it is torn down
//! by a watchdog process when the test binary exits. Tests that kill nodes
//! start their own ([`RedisCluster::start`]).

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use matroska::backend::redis::RedisBackendBuilder;
use matroska::{Backend, BackendError, Lookup, PutOutcome, PutRequest, RedisBackend, Ticket};

/// Nodes in a spawned cluster: three masters, three replicas.
pub const NODES: usize = 6;

/// Skips (returns `None` after printing why) or fails, as the environment asks.
fn unavailable<T>(why: String) -> Option<T> {
    crate::redis_server::skip_or_fail("Redis Cluster", why, "MATROSKA_REDIS_SERVER or MATROSKA_REDIS_CLUSTER_URLS")
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Sends one inline command and reads its reply (up to 5 s: a loaded
/// machine may be slow to answer; a complete reply ends the read at once).
fn command(port: u16, cmd: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // a bulk reply is complete once it ends with CRLF and holds
                // its announced length; good enough for INFO-like replies
                if out.ends_with(b"\r\n") && complete(&out) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8(out).ok()
}

fn complete(reply: &[u8]) -> bool {
    if reply.first() != Some(&b'$') {
        return true;
    }
    let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else { return false };
    let Some(len) = std::str::from_utf8(&reply[1..end]).ok().and_then(|s| s.parse::<usize>().ok()) else {
        return true;
    };
    reply.len() >= end + 2 + len + 2
}

/// One spawned node.
struct Node {
    child: Option<Child>,
    port: u16,
    bus_port: u16,
    dir: tempfile::TempDir,
}

impl Node {
    fn spawn(&mut self, server: &PathBuf, extra: &[String]) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let child = Command::new(server)
            .args(["--port", &self.port.to_string(), "--cluster-port", &self.bus_port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {server:?}: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A spawned cluster.
pub struct RedisCluster {
    nodes: Vec<Node>,
    server: PathBuf,
    watchdogs: Vec<Child>,
    /// Extra `redis-server` arguments of every node.
    extra: Vec<String>,
}

impl RedisCluster {
    /// Spawns and joins a cluster, or `None` (printed) if that is impossible
    /// and not required.
    pub fn start() -> Option<RedisCluster> {
        Self::start_with(3, 1, &[])
    }

    /// A cluster of `masters` masters with `replicas` replicas each, every
    /// node started with the `extra` arguments (which override the defaults,
    /// for example `["--cluster-node-timeout", "60000"]`).
    pub fn start_with(masters: usize, replicas: usize, extra: &[&str]) -> Option<RedisCluster> {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(masters, replicas, extra) {
                Ok(c) => return Some(c),
                Err(e) => last = e,
            }
        }
        unavailable(last)
    }

    fn try_start(masters: usize, replicas: usize, extra: &[&str]) -> Result<RedisCluster, String> {
        let server = std::env::var_os("MATROSKA_REDIS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        let cli =
            std::env::var_os("MATROSKA_REDIS_CLI").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("redis-cli"));
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let mut cluster =
            RedisCluster { nodes: Vec::new(), server: server.clone(), watchdogs: Vec::new(), extra: extra.clone() };
        for _ in 0..masters * (1 + replicas) {
            let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let bus_port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let mut node = Node { child: None, port, bus_port, dir };
            node.spawn(&server, &extra)?;
            cluster.nodes.push(node);
        }
        cluster.spawn_watchdog();
        let deadline = Instant::now() + Duration::from_secs(5);
        for node in &cluster.nodes {
            while command(node.port, "PING").as_deref() != Some("+PONG\r\n") {
                if Instant::now() > deadline {
                    return Err(format!("node {} did not answer PING: {}", node.port, node.log()));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let out = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {cli:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.wait_ok(Duration::from_secs(20))?;
        Ok(cluster)
    }

    /// Kills every node when this test process is gone, even if it never
    /// drops the cluster (a shared cluster lives in a static).
    fn spawn_watchdog(&mut self) {
        let pids: Vec<String> =
            self.nodes.iter().filter_map(|n| n.child.as_ref().map(|c| c.id().to_string())).collect();
        let script = format!(
            "while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill -9 {} 2>/dev/null",
            std::process::id(),
            pids.join(" ")
        );
        if let Ok(w) = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            self.watchdogs.push(w);
        }
    }

    /// Waits until every live node reports `cluster_state:ok` and every live
    /// replica's link to its master is up.
    pub fn wait_ok(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                let info = command(n.port, "CLUSTER INFO").unwrap_or_default();
                let repl = command(n.port, "INFO replication").unwrap_or_default();
                info.contains("cluster_state:ok")
                    && (!repl.contains("role:slave") || repl.contains("master_link_status:up"))
            });
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("cluster not ok within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}/", n.port)).collect()
    }

    /// Ports of the nodes that are masters now.
    pub fn master_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter(|n| command(n.port, "INFO replication").is_some_and(|r| r.contains("role:master")))
            .map(|n| n.port)
            .collect()
    }

    /// Kills the node on `port` (SIGKILL, no goodbye to the cluster).
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.kill();
        }
    }

    /// Starts a killed node again (it rejoins, as a replica once its slots
    /// have failed over).
    pub fn restart(&mut self, port: u16) -> Result<(), String> {
        let server = self.server.clone();
        let extra = self.extra.clone();
        let node = self.nodes.iter_mut().find(|n| n.port == port).ok_or("no such node")?;
        node.spawn(&server, &extra)?;
        // a restarted node needs a watchdog of its own
        self.spawn_watchdog();
        Ok(())
    }

    /// The port of the master serving `slot` (from `CLUSTER NODES` of a
    /// live node).
    pub fn slot_owner(&self, slot: u16) -> Option<u16> {
        self.slot_owners().get(usize::from(slot)).copied().flatten()
    }

    /// For every slot, the port of the master serving it (from one
    /// `CLUSTER NODES` of a live node; masters marked failed serve nothing).
    pub fn slot_owners(&self) -> Vec<Option<u16>> {
        let mut owners = vec![None; 16_384];
        let Some(live) = self.nodes.iter().find(|n| n.child.is_some()) else { return owners };
        let Some(nodes) = command(live.port, "CLUSTER NODES") else { return owners };
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            // host:port@bus
            let Some(port) = fields[1].split('@').next().and_then(|a| a.rsplit(':').next()?.parse::<u16>().ok()) else {
                continue;
            };
            for range in &fields[8..] {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    for owner in owners.iter_mut().take(b.min(16_383) + 1).skip(a) {
                        *owner = Some(port);
                    }
                }
            }
        }
        owners
    }

    /// The reply to `cmd` (an inline command) from the node on `port`.
    pub fn command(&self, port: u16, cmd: &str) -> Option<String> {
        command(port, cmd)
    }

    /// Every node's log, for failures.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(|n| format!("--- node {} ---\n{}\n", n.port, n.log())).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for n in &mut self.nodes {
            n.kill();
        }
        for mut w in self.watchdogs.drain(..) {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// Where the tests' cluster is.
pub enum ClusterTarget {
    /// Spawned for this test binary (shared) or this test (owned).
    Spawned(&'static RedisCluster),
    /// `MATROSKA_REDIS_CLUSTER_URLS`.
    External(Vec<String>),
}

impl ClusterTarget {
    /// Seed URLs.
    pub fn urls(&self) -> Vec<String> {
        match self {
            ClusterTarget::Spawned(c) => c.urls(),
            ClusterTarget::External(u) => u.clone(),
        }
    }
}

/// The cluster shared by the tests of this binary: `MATROSKA_REDIS_CLUSTER_URLS`
/// if set, else one spawned on first use; `None` (printed) if neither is
/// possible and Redis is not required.
pub fn shared() -> Option<ClusterTarget> {
    if let Ok(urls) = std::env::var("MATROSKA_REDIS_CLUSTER_URLS") {
        if !urls.is_empty() {
            return Some(ClusterTarget::External(urls.split(',').map(|s| s.trim().to_owned()).collect()));
        }
    }
    static SHARED: OnceLock<Option<RedisCluster>> = OnceLock::new();
    SHARED.get_or_init(RedisCluster::start).as_ref().map(ClusterTarget::Spawned)
}

/// A backend builder for `target` with a fresh namespace.
pub fn builder(target: &ClusterTarget) -> RedisBackendBuilder {
    RedisBackend::cluster_builder(target.urls()).namespace(crate::redis_server::fresh_namespace())
}

/// A fresh backend on the shared cluster, for the shared suite.
pub async fn cluster_backend() -> Option<Arc<dyn Backend>> {
    let target = shared()?;
    match builder(&target).build().await {
        Ok(b) => Some(Arc::new(Clustered(b))),
        Err(e) => unavailable(format!("cannot connect to the cluster: {e}")),
    }
}

/// A cluster backend as a trait object.
#[derive(Debug)]
pub struct Clustered(pub RedisBackend);

#[async_trait]
impl Backend for Clustered {
    async fn get(&self, key: &str) -> Result<Lookup, BackendError> {
        self.0.get(key).await
    }
    async fn has(&self, key: &str) -> Result<bool, BackendError> {
        self.0.has(key).await
    }
    async fn put(&self, request: PutRequest<'_>) -> Result<PutOutcome, BackendError> {
        self.0.put(request).await
    }
    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        self.0.delete(key).await
    }
    async fn invalidate(&self, deps: &[String]) -> Result<matroska::Invalidated, BackendError> {
        self.0.invalidate(deps).await
    }
    async fn clear(&self, prefix: &str) -> Result<u64, matroska::BackendError> {
        self.0.clear(prefix).await
    }
    async fn ticket(&self) -> Result<Ticket, BackendError> {
        self.0.ticket().await
    }
}
