//! A real `redis-server` for tests: spawned on a free loopback port with
//! persistence off, in a temporary directory, killed on `Drop`.
//!
//! * `MATROSKA_REDIS_SERVER`: the binary to run (default `redis-server` on the
//!   PATH).
//! * `MATROSKA_REDIS_URL`: use this running server instead of spawning one
//!   (tests isolate themselves with a fresh namespace; tests that kill the
//!   server are skipped).
//! * `MATROSKA_REQUIRE_REDIS=1`: fail instead of skipping when no server can
//!   be started.
//!
//! When a test panics, the server's log is printed.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use matroska::backend::redis::RedisBackendBuilder;
use matroska::{Backend, BackendError, Lookup, PutOutcome, PutRequest, RedisBackend, Ticket};

/// A spawned `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    dir: tempfile::TempDir,
    /// Extra `redis-server` arguments (for example `--maxmemory 4mb`).
    args: Vec<String>,
}

/// Whether `MATROSKA_REQUIRE_REDIS=1` turns a skip into a failure.
pub fn required() -> bool {
    std::env::var("MATROSKA_REQUIRE_REDIS").is_ok_and(|v| v == "1")
}

/// Skips (returns `None` after printing why) or fails, as the environment
/// asks. `what` names the missing service, `hint` the variables to set.
pub fn skip_or_fail<T>(what: &str, why: String, hint: &str) -> Option<T> {
    if required() {
        panic!("MATROSKA_REQUIRE_REDIS=1 but {what} is unavailable: {why}");
    }
    eprintln!("skipping {what} test: {why} (set {hint})");
    None
}

fn unavailable<T>(why: String) -> Option<T> {
    skip_or_fail("Redis", why, "MATROSKA_REDIS_SERVER or MATROSKA_REDIS_URL")
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl RedisServer {
    /// Spawns a server, or `None` (printed) if that is impossible and not
    /// required.
    pub fn start() -> Option<RedisServer> {
        Self::start_with(&[])
    }

    /// [`start`](Self::start) with extra `redis-server` arguments, for
    /// example `["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]`.
    pub fn start_with(args: &[&str]) -> Option<RedisServer> {
        let binary = std::env::var_os("MATROSKA_REDIS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = match tempfile::tempdir() {
                Ok(d) => d,
                Err(e) => return unavailable(format!("no temporary directory: {e}")),
            };
            let port = match free_port() {
                Ok(p) => p,
                Err(e) => return unavailable(format!("no free port: {e}")),
            };
            let args = args.iter().map(|a| a.to_string()).collect();
            let mut server = RedisServer { child: None, port, binary: binary.clone(), dir, args };
            match server.spawn() {
                Ok(()) => return Some(server),
                Err(e) => last_error = e,
            }
        }
        unavailable(last_error)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let child = Command::new(&self.binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {:?}: {e}", self.binary))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if ping(self.port) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("{:?} exited with {status}: {}", self.binary, self.log()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        Err(format!("{:?} did not answer PING within 5 s", self.binary))
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server and waits for it (the port is then free).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: persistence is off).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("cannot restart Redis: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- redis-server log (port {}) ---\n{}", self.port, self.log());
        }
        self.stop();
    }
}

/// Where the tests' Redis is.
pub enum Target {
    /// A server spawned for this test.
    Spawned(RedisServer),
    /// `MATROSKA_REDIS_URL`.
    External(String),
}

impl Target {
    /// The server's URL.
    pub fn url(&self) -> String {
        match self {
            Target::Spawned(s) => s.url(),
            Target::External(u) => u.clone(),
        }
    }
}

/// A server for one test: `MATROSKA_REDIS_URL` if set, else a spawned one;
/// `None` (printed) if neither is possible and Redis is not required.
pub fn target() -> Option<Target> {
    match std::env::var("MATROSKA_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(Target::External(url)),
        _ => RedisServer::start().map(Target::Spawned),
    }
}

/// A namespace no other test uses (for a shared external server).
pub fn fresh_namespace() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("mt-{}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), uuid::Uuid::new_v4().simple())
}

/// A backend builder for `target` with a fresh namespace.
pub fn builder(target: &Target) -> RedisBackendBuilder {
    RedisBackend::builder(target.url()).namespace(fresh_namespace())
}

/// A Redis backend that keeps its spawned server alive as long as it lives.
pub struct Served {
    /// The backend.
    pub backend: RedisBackend,
    _target: Target,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.backend.fmt(f)
    }
}

/// A fresh backend on its own server (or namespace), for the shared suite.
pub async fn served_backend() -> Option<Arc<dyn Backend>> {
    let target = target()?;
    let backend = match builder(&target).build().await {
        Ok(b) => b,
        Err(e) => return unavailable(format!("cannot connect to {}: {e}", target.url())),
    };
    Some(Arc::new(Served { backend, _target: target }))
}

#[async_trait]
impl Backend for Served {
    async fn get(&self, key: &str) -> Result<Lookup, BackendError> {
        self.backend.get(key).await
    }
    async fn has(&self, key: &str) -> Result<bool, BackendError> {
        self.backend.has(key).await
    }
    async fn put(&self, request: PutRequest<'_>) -> Result<PutOutcome, BackendError> {
        self.backend.put(request).await
    }
    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        self.backend.delete(key).await
    }
    async fn invalidate(&self, deps: &[String]) -> Result<matroska::Invalidated, BackendError> {
        self.backend.invalidate(deps).await
    }
    async fn clear(&self, prefix: &str) -> Result<u64, matroska::BackendError> {
        self.backend.clear(prefix).await
    }
    async fn ticket(&self) -> Result<Ticket, BackendError> {
        self.backend.ticket().await
    }
}
