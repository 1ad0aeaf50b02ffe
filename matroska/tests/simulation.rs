//! Deterministic simulation of the `Cache` facade against a model database,
//! with faults injected at every backend call and every read checked online.
//!
//! Each *schedule* is one seed: a handful of tasks on a current-thread tokio
//! runtime (paused clock on the memory backend), each running a random mix
//! of operations through two caches sharing one backend (two processes):
//!
//! * writes: commit a new version of a row, then `invalidate` it;
//! * reads through `get_or_load`, on keys whose loaders read rows one at a
//!   time (yielding in between) and on outer keys whose loaders read inner
//!   keys through the cache (Russian dolls, shared single-flight keys);
//! * `lookup` + `put_with_ticket`; plain `put` under the rows' locks (the
//!   manual style, safe only because no write can interleave); `delete`;
//!   invalidations of rows nobody wrote.
//!
//! The backend is wrapped in one that, driven by the seed, yields before and
//! after calls (delays), fails calls before they take effect (unavailable),
//! fails them after they took effect (timeouts), fails single dependencies of
//! an invalidation (a dead cluster slot), and goes down for a burst of calls
//! (a reconnect).
//!
//! **Online check.** Every value any caller receives is checked when it is
//! returned against the versions as of the moment its read began: a read that
//! starts after `invalidate(row)` returned must not see a version older than
//! the one committed before that invalidation (invariant 1 of the design).
//! For an invalidation that returned an error, the guarantee is the cache's
//! own: reads through the same cache honour it (the cache applies pending
//! invalidations before serving). Also checked: an invalidation never reports
//! a dependency failed that the backend did not fail (one failing dependency
//! must not fail the others), no task panics, and, once faults stop and
//! pending invalidations are applied, every entry still cached is current (no
//! lost invalidation).
//!
//! ```text
//! cargo test -p matroska --release --test simulation -- --nocapture
//! MATROSKA_SIM_SCHEDULES=100000 ...          # memory schedules (release default 10,000)
//! MATROSKA_SIM_REDIS_SCHEDULES=5000 ...      # on a spawned redis-server (release default 1,000)
//! MATROSKA_SIM_CLUSTER_SCHEDULES=500 ...     # on a spawned Redis Cluster (default 0: off)
//! MATROSKA_SIM_SEED=1234 ...                 # replay one seed (printed with every violation)
//! MATROSKA_SIM_TRACE=1 ...                   # print every event (with a replayed seed)
//! ```
//!
//! Each backend prints one line: `simulation backend=memory schedules=N violations=0 ...`.
//! Debug builds (`cargo test --workspace`) run a tenth of the schedules.

mod common;
#[path = "common/redis_cluster.rs"]
mod redis_cluster;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use matroska::{
    Backend, BackendError, BackendErrorKind, Cache, Dep, Deps, Error, Fetched, Invalidated, Lookup, MemoryBackend,
    PutOutcome, PutRequest, Ticket,
};

const TTL: Duration = Duration::from_secs(600);
const ROWS: usize = 4;
const CACHES: usize = 2;

/// splitmix64: small, seedable, good enough to pick schedules.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------
// The keys: which rows each cached value is built from.

/// A cached value: the rows it was built from and the versions seen.
type Value = Vec<(usize, u64)>;

#[derive(Clone, Copy, Debug)]
enum Key {
    /// A value read straight from these rows.
    Rows(&'static str, &'static [usize]),
    /// A value built from inner keys read through the cache, plus rows.
    Outer(&'static str, &'static [usize], &'static [usize]),
}

const KEYS: &[Key] = &[
    Key::Rows("k0", &[0]),
    Key::Rows("k1", &[1]),
    Key::Rows("k01", &[0, 1]),
    Key::Rows("k23", &[2, 3]),
    Key::Outer("o0", &[0, 3], &[]),
    Key::Outer("o1", &[2, 1], &[3]),
];

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Rows(n, _) | Key::Outer(n, _, _) => n,
        }
    }

    /// Every row the value depends on.
    fn rows(self) -> BTreeSet<usize> {
        match self {
            Key::Rows(_, rows) => rows.iter().copied().collect(),
            Key::Outer(_, inner, rows) => {
                let mut all: BTreeSet<usize> = rows.iter().copied().collect();
                for &i in inner {
                    all.extend(KEYS[i].rows());
                }
                all
            }
        }
    }
}

fn row_dep(r: usize) -> Dep {
    Dep::id("row", r)
}

// ---------------------------------------------------------------------------
// The model database and the oracle.

#[derive(Default)]
struct Oracle {
    /// Committed version of each row.
    version: [u64; ROWS],
    /// The version every read starting now must see at least, through any
    /// cache (invalidations that returned `Ok` for that row).
    floor: [u64; ROWS],
    /// The same for reads through one cache (its failed invalidations too).
    floor_in: [[u64; ROWS]; CACHES],
    /// Global step counter, for the history.
    step: u64,
    /// A digest of every event, to show that a seed replays the same run.
    digest: u64,
    history: VecDeque<String>,
    violations: Vec<String>,
}

impl Oracle {
    fn event(&mut self, task: usize, what: String) {
        self.step += 1;
        for b in what.bytes().chain([task as u8, 0xff]) {
            self.digest = (self.digest ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        if std::env::var_os("MATROSKA_SIM_TRACE").is_some() {
            println!("#{} t{task}: {what}", self.step);
        }
        if self.history.len() >= 60 {
            self.history.pop_front();
        }
        self.history.push_back(format!("  #{:<5} t{task}: {what}", self.step));
    }

    fn floors(&self, cache: usize) -> [u64; ROWS] {
        let mut f = self.floor;
        for (r, v) in f.iter_mut().enumerate() {
            *v = (*v).max(self.floor_in[cache][r]);
        }
        f
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 3 {
            let mut s = what;
            s.push_str("\n  history (latest last):\n");
            for h in &self.history {
                let _ = writeln!(s, "{h}");
            }
            self.violations.push(s);
        } else {
            self.violations.push(what);
        }
    }

    /// Checks a value returned to a read that began with `floors`.
    fn check(&mut self, task: usize, what: &str, value: &Value, floors: &[u64; ROWS]) {
        for &(r, v) in value {
            if v < floors[r] {
                self.violation(format!(
                    "stale read: t{task} {what} returned row {r} at version {v}, but version {} of it had been \
                     invalidated before the read began (value {value:?})",
                    floors[r]
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The fault-injecting backend.

#[derive(Clone, Copy, Debug)]
struct Faults {
    /// Yields before and after a call: up to this many.
    max_yields: u64,
    /// Per mille of calls failing before they take effect.
    fail: u64,
    /// Per mille failing after they took effect (a lost reply).
    timeout: u64,
    /// Per mille of invalidations failing some of their dependencies.
    partial: u64,
    /// Per mille of calls starting an outage of a few calls.
    outage: u64,
    /// Per mille of calls whose reply is slow (20 to 200 yields).
    slow: u64,
}

impl Faults {
    const NONE: Faults = Faults { max_yields: 0, fail: 0, timeout: 0, partial: 0, outage: 0, slow: 0 };

    fn pick(rng: &mut Rng) -> Faults {
        match rng.below(10) {
            0..=2 => Faults { max_yields: rng.below(4), ..Faults::NONE },
            3..=4 => Faults { max_yields: 3, slow: 50, ..Faults::NONE },
            5..=7 => Faults { max_yields: 3, fail: 30, timeout: 20, partial: 60, outage: 5, slow: 20 },
            _ => Faults { max_yields: 6, fail: 120, timeout: 80, partial: 200, outage: 20, slow: 50 },
        }
    }
}

tokio::task_local! {
    /// The dependencies the backend failed in this task's latest invalidation.
    static LAST_FAILED: Arc<Mutex<Vec<String>>>;
}

#[derive(Debug)]
struct SimBackend {
    inner: Arc<dyn Backend>,
    state: Mutex<(Rng, Faults, u64)>,
}

enum Plan {
    Ok { before: u64, after: u64 },
    FailBefore { before: u64 },
    TimeoutAfter { before: u64, after: u64 },
}

impl SimBackend {
    fn new(inner: Arc<dyn Backend>, seed: u64, faults: Faults) -> Self {
        SimBackend { inner, state: Mutex::new((Rng(seed ^ 0xFACE), faults, 0)) }
    }

    fn calm(&self) {
        let mut s = lock(&self.state);
        s.1 = Faults::NONE;
        s.2 = 0;
    }

    fn plan(&self) -> Plan {
        let mut s = lock(&self.state);
        let (rng, f, outage) = &mut *s;
        let before = rng.below(f.max_yields + 1);
        let mut after = rng.below(f.max_yields + 1);
        if rng.chance(f.slow) {
            after += 20 + rng.below(180);
        }
        if *outage > 0 {
            *outage -= 1;
            return Plan::FailBefore { before };
        }
        if rng.chance(f.outage) {
            *outage = 1 + rng.below(6);
            return Plan::FailBefore { before };
        }
        if rng.chance(f.fail) {
            return Plan::FailBefore { before };
        }
        if rng.chance(f.timeout) {
            return Plan::TimeoutAfter { before, after };
        }
        Plan::Ok { before, after }
    }

    fn partial(&self, n: usize) -> Vec<usize> {
        let mut s = lock(&self.state);
        let (rng, f, _) = &mut *s;
        if n == 0 || !rng.chance(f.partial) {
            return Vec::new();
        }
        (0..n).filter(|_| rng.below(2) == 0).collect()
    }

    async fn run<T>(&self, call: impl Future<Output = Result<T, BackendError>>) -> Result<T, BackendError> {
        match self.plan() {
            Plan::FailBefore { before } => {
                yields(before).await;
                Err(BackendError::new(BackendErrorKind::Unavailable, "simulated: unreachable"))
            }
            Plan::Ok { before, after } => {
                yields(before).await;
                let r = call.await;
                yields(after).await;
                r
            }
            Plan::TimeoutAfter { before, after } => {
                yields(before).await;
                let _ = call.await;
                yields(after).await;
                Err(BackendError::new(BackendErrorKind::Timeout, "simulated: reply lost"))
            }
        }
    }
}

async fn yields(n: u64) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

fn record_failed(deps: Vec<String>) {
    let _ = LAST_FAILED.try_with(|l| *lock(l) = deps);
}

#[async_trait]
impl Backend for SimBackend {
    async fn get(&self, key: &str) -> Result<Lookup, BackendError> {
        self.run(self.inner.get(key)).await
    }
    async fn has(&self, key: &str) -> Result<bool, BackendError> {
        self.run(self.inner.has(key)).await
    }
    async fn put(&self, req: PutRequest<'_>) -> Result<PutOutcome, BackendError> {
        self.run(self.inner.put(req)).await
    }
    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        self.run(self.inner.delete(key)).await
    }
    async fn invalidate(&self, deps: &[String]) -> Result<Invalidated, BackendError> {
        let failed = self.partial(deps.len());
        let good: Vec<String> =
            deps.iter().enumerate().filter(|(i, _)| !failed.contains(i)).map(|(_, d)| d.clone()).collect();
        let result = self
            .run(async {
                let inv = if good.is_empty() { Invalidated::complete(0) } else { self.inner.invalidate(&good).await? };
                // map positions in `good` back to positions in `deps`
                let mut all_failed = failed.clone();
                let positions: Vec<usize> = (0..deps.len()).filter(|i| !failed.contains(i)).collect();
                all_failed.extend(inv.failed.iter().map(|&j| positions[j]));
                Ok(if all_failed.is_empty() {
                    Invalidated::complete(inv.dropped)
                } else {
                    let e = inv
                        .error
                        .unwrap_or_else(|| BackendError::new(BackendErrorKind::Unavailable, "simulated: slot down"));
                    Invalidated::partial(inv.dropped, all_failed, e)
                })
            })
            .await;
        match &result {
            Err(_) => record_failed(deps.to_vec()),
            Ok(inv) => record_failed(inv.failed.iter().map(|&i| deps[i].clone()).collect()),
        }
        result
    }
    async fn ticket(&self) -> Result<Ticket, BackendError> {
        self.run(self.inner.ticket()).await
    }
    async fn clear(&self, prefix: &str) -> Result<u64, BackendError> {
        self.run(self.inner.clear(prefix)).await
    }
}

// ---------------------------------------------------------------------------
// One schedule.

struct World {
    caches: Vec<Cache>,
    backend: Arc<SimBackend>,
    oracle: Mutex<Oracle>,
    /// Row locks: writers hold them from commit to the end of the
    /// invalidation, plain puts from the read to the end of the put.
    row_locks: Vec<tokio::sync::Mutex<()>>,
    loader_yields: u64,
}

impl World {
    fn event(&self, task: usize, what: impl FnOnce() -> String) {
        lock(&self.oracle).event(task, what());
    }

    /// Reads one row in a loader: yields, reads the committed version.
    async fn read_row(&self, rng: &mut Rng, r: usize, deps: &Deps) -> (usize, u64) {
        yields(rng.below(self.loader_yields + 1)).await;
        deps.push(row_dep(r));
        let v = lock(&self.oracle).version[r];
        (r, v)
    }

    /// The loader of `key`: boxed, since outer keys recurse through the cache.
    fn load<'a>(
        &'a self,
        task: usize,
        cache: usize,
        key: Key,
        mut rng: Rng,
        deps: Deps,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Value, Error>> + Send + 'a>> {
        Box::pin(async move {
            let mut value = Value::new();
            match key {
                Key::Rows(_, rows) => {
                    for &r in rows {
                        value.push(self.read_row(&mut rng, r, &deps).await);
                    }
                }
                Key::Outer(_, inner, rows) => {
                    for &i in inner {
                        let inner_key = KEYS[i];
                        let sub_rng = Rng(rng.next());
                        let floors = lock(&self.oracle).floors(cache);
                        let v = self.caches[cache]
                            .get_or_load(inner_key.name(), TTL, |d| self.load(task, cache, inner_key, sub_rng, d))
                            .await?;
                        lock(&self.oracle).check(
                            task,
                            &format!("inner get_or_load({})", inner_key.name()),
                            &v,
                            &floors,
                        );
                        value.extend(v);
                    }
                    for &r in rows {
                        value.push(self.read_row(&mut rng, r, &deps).await);
                    }
                }
            }
            Ok(value)
        })
    }

    async fn op(&self, task: usize, rng: &mut Rng) {
        let c = rng.below(CACHES as u64) as usize;
        let cache = &self.caches[c];
        match rng.below(100) {
            // a write: commit, then invalidate
            0..=24 => {
                let r = rng.below(ROWS as u64) as usize;
                let _guard = self.row_locks[r].lock().await;
                let v = {
                    let mut o = lock(&self.oracle);
                    o.version[r] += 1;
                    let v = o.version[r];
                    o.event(task, format!("commit row {r} v{v}"));
                    v
                };
                self.invalidate(task, c, &[r], Some(v)).await;
            }
            // an invalidation without a write
            25..=29 => {
                let r = rng.below(ROWS as u64) as usize;
                let v = lock(&self.oracle).version[r];
                self.invalidate(task, c, &[r], Some(v)).await;
            }
            // get_or_load
            30..=74 => {
                let key = KEYS[rng.below(KEYS.len() as u64) as usize];
                let floors = lock(&self.oracle).floors(c);
                self.event(task, || format!("c{c} get_or_load({}) begins", key.name()));
                let sub = Rng(rng.next());
                match cache.get_or_load(key.name(), TTL, |d| self.load(task, c, key, sub, d)).await {
                    Ok(v) => {
                        let mut o = lock(&self.oracle);
                        o.event(task, format!("c{c} get_or_load({}) = {v:?}", key.name()));
                        o.check(task, &format!("c{c} get_or_load({})", key.name()), &v, &floors);
                    }
                    Err(e) => self.event(task, || format!("c{c} get_or_load({}) failed: {e}", key.name())),
                }
            }
            // lookup + put_with_ticket
            75..=84 => {
                let key = KEYS[rng.below(4) as usize]; // row keys only
                let floors = lock(&self.oracle).floors(c);
                match cache.lookup::<Value>(key.name()).await {
                    Ok(Fetched::Hit(v)) => {
                        let mut o = lock(&self.oracle);
                        o.event(task, format!("c{c} lookup({}) hit {v:?}", key.name()));
                        o.check(task, &format!("c{c} lookup({})", key.name()), &v, &floors);
                    }
                    Ok(Fetched::Miss(ticket)) => {
                        let deps = Deps::new();
                        let mut value = Value::new();
                        for r in key.rows() {
                            value.push(self.read_row(rng, r, &deps).await);
                        }
                        let out = cache.put_with_ticket(key.name(), &value, deps.to_vec(), TTL, ticket).await;
                        self.event(task, || format!("c{c} put_with_ticket({}, {value:?}) = {out:?}", key.name()));
                    }
                    Err(e) => self.event(task, || format!("c{c} lookup({}) failed: {e}", key.name())),
                }
            }
            // a plain put, under the rows' locks
            85..=89 => {
                let key = KEYS[rng.below(4) as usize];
                let rows: Vec<usize> = key.rows().into_iter().collect();
                let mut guards = Vec::new();
                for &r in &rows {
                    guards.push(self.row_locks[r].lock().await);
                }
                let value: Value = {
                    let o = lock(&self.oracle);
                    rows.iter().map(|&r| (r, o.version[r])).collect()
                };
                let out = cache.put(key.name(), &value, rows.iter().map(|&r| row_dep(r)), TTL).await;
                self.event(task, || format!("c{c} put({}, {value:?}) = {out:?}", key.name()));
            }
            // delete
            90..=94 => {
                let key = KEYS[rng.below(KEYS.len() as u64) as usize];
                let out = cache.delete(key.name()).await;
                self.event(task, || format!("c{c} delete({}) = {out:?}", key.name()));
            }
            // get
            _ => {
                let key = KEYS[rng.below(KEYS.len() as u64) as usize];
                let floors = lock(&self.oracle).floors(c);
                if let Ok(Some(v)) = cache.get::<Value>(key.name()).await {
                    let mut o = lock(&self.oracle);
                    o.event(task, format!("c{c} get({}) = {v:?}", key.name()));
                    o.check(task, &format!("c{c} get({})", key.name()), &v, &floors);
                }
            }
        }
    }

    /// Invalidates rows through cache `c`; on return, raises the floors:
    /// for every cache if it took effect, for `c` alone if it failed (the
    /// cache keeps it and applies it before its next read).
    async fn invalidate(&self, task: usize, c: usize, rows: &[usize], version: Option<u64>) {
        let failed_here = Arc::new(Mutex::new(Vec::new()));
        let result =
            LAST_FAILED.scope(failed_here.clone(), self.caches[c].invalidate(rows.iter().map(|&r| row_dep(r)))).await;
        let backend_failed = lock(&failed_here).clone();
        let mut o = lock(&self.oracle);
        o.event(task, format!("c{c} invalidate(rows {rows:?}) = {:?}", result.as_ref().map_err(|e| e.to_string())));
        let failed_rows: Vec<usize> = match &result {
            Ok(_) => Vec::new(),
            Err(Error::Invalidation { failed, .. }) => {
                rows.iter().copied().filter(|&r| failed.contains(&row_dep(r))).collect()
            }
            Err(_) => rows.to_vec(),
        };
        // a dependency reported failed must have failed in the backend
        for &r in &failed_rows {
            let dep = row_dep(r);
            if !backend_failed.iter().any(|k| k.ends_with(dep.as_str())) {
                o.violation(format!(
                    "t{task}: invalidate reported row {r} failed, but the backend did not fail it \
                     (backend failed {backend_failed:?})"
                ));
            }
        }
        if let Some(v) = version {
            for &r in rows {
                if failed_rows.contains(&r) {
                    o.floor_in[c][r] = o.floor_in[c][r].max(v);
                } else {
                    o.floor[r] = o.floor[r].max(v);
                }
            }
        }
    }

    /// Once faults stop: every cache applies what it keeps pending, then
    /// every entry still cached must be current.
    async fn settle(&self) {
        self.backend.calm();
        for (c, cache) in self.caches.iter().enumerate() {
            let mut left = cache.pending_invalidations();
            for _ in 0..5 {
                match cache.flush_pending().await {
                    Ok(n) => {
                        left = n;
                        if n == 0 {
                            break;
                        }
                    }
                    Err(_) => left = cache.pending_invalidations(),
                }
            }
            if left > 0 {
                lock(&self.oracle).violation(format!("c{c}: {left} invalidations still pending with no faults"));
            }
        }
        for (c, cache) in self.caches.iter().enumerate() {
            for key in KEYS {
                match cache.get::<Value>(key.name()).await {
                    Ok(Some(v)) => {
                        let mut o = lock(&self.oracle);
                        let stale: Vec<_> = v.iter().filter(|(r, ver)| *ver != o.version[*r]).collect();
                        if !stale.is_empty() {
                            let msg = format!(
                                "lost invalidation: after settling, c{c} still serves {} = {v:?}; rows now at {:?}",
                                key.name(),
                                o.version
                            );
                            o.violation(msg);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        lock(&self.oracle).violation(format!("c{c}: get({}) failed with no faults: {e}", key.name()))
                    }
                }
            }
        }
    }
}

/// The outcome of one schedule: its violations (empty when it passed).
async fn schedule(seed: u64, inner: Arc<dyn Backend>, prefix: &str) -> Vec<String> {
    schedule_with_digest(seed, inner, prefix).await.0
}

/// One schedule: its violations and the digest of everything that happened.
async fn schedule_with_digest(seed: u64, inner: Arc<dyn Backend>, prefix: &str) -> (Vec<String>, u64) {
    let mut rng = Rng(seed);
    let faults = Faults::pick(&mut rng);
    let backend = Arc::new(SimBackend::new(inner, seed, faults));
    let caches = (0..CACHES)
        .map(|_| {
            Cache::builder()
                .shared_backend(backend.clone() as Arc<dyn Backend>)
                .prefix(prefix)
                .max_pending_invalidations(1_000_000)
                .build()
                .expect("valid settings")
        })
        .collect();
    let world = Arc::new(World {
        caches,
        backend,
        oracle: Mutex::new(Oracle { version: [1; ROWS], ..Oracle::default() }),
        row_locks: (0..ROWS).map(|_| tokio::sync::Mutex::new(())).collect(),
        loader_yields: rng.below(4),
    });
    let tasks = 2 + rng.below(6) as usize;
    let ops = 4 + rng.below(16);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let world = world.clone();
        let mut task_rng = Rng(rng.next());
        handles.push(tokio::spawn(LAST_FAILED.scope(Arc::default(), async move {
            for _ in 0..ops {
                world.op(t, &mut task_rng).await;
            }
        })));
    }
    for (t, h) in handles.into_iter().enumerate() {
        if let Err(e) = h.await {
            lock(&world.oracle).violation(format!("t{t} panicked: {e}"));
        }
    }
    world.settle().await;
    let o = lock(&world.oracle);
    (o.violations.clone(), o.digest)
}

fn env_count(name: &str, release_default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(if cfg!(debug_assertions) {
        release_default / 10
    } else {
        release_default
    })
}

fn replay_seed() -> Option<u64> {
    std::env::var("MATROSKA_SIM_SEED").ok().and_then(|v| v.parse().ok())
}

/// Runs schedules and reports; panics (failing the test) on any violation.
fn report(backend: &str, schedules: u64, failures: Vec<(u64, Vec<String>)>) {
    let violations: usize = failures.iter().map(|(_, v)| v.len()).sum();
    println!("simulation backend={backend} schedules={schedules} violations={violations}");
    if let Some((seed, first)) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|(s, _)| *s).take(20).collect();
        panic!(
            "{violations} violations in {} of {schedules} schedules on {backend} (seeds {seeds:?}); first, seed {seed} \
             (replay with MATROSKA_SIM_SEED={seed}):\n{}",
            failures.len(),
            first.join("\n")
        );
    }
}

#[test]
fn memory_schedules() {
    let seeds: Vec<u64> = match replay_seed() {
        Some(s) => vec![s],
        None => (1..=env_count("MATROSKA_SIM_SCHEDULES", 10_000)).collect(),
    };
    let mut failures = Vec::new();
    for &seed in &seeds {
        // a fresh deterministic runtime per schedule: one thread, paused clock
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let v = rt.block_on(schedule(seed, Arc::new(MemoryBackend::new()), "sim"));
        if !v.is_empty() {
            failures.push((seed, v));
        }
    }
    report("memory", seeds.len() as u64, failures);
}

/// Runs schedules against a remote backend built by `connect`, one runtime
/// for all (its connection lives there), a fresh prefix per schedule.
fn remote_schedules<F, Fut>(name: &str, count: u64, connect: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Option<Arc<dyn Backend>>>,
{
    let seeds: Vec<u64> = match replay_seed() {
        Some(s) => vec![s],
        None => (1..=count).collect(),
    };
    if seeds.is_empty() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let failures = rt.block_on(async {
        let backend = connect().await?;
        let mut failures = Vec::new();
        for &seed in &seeds {
            let prefix = format!("sim{seed}");
            let v = schedule(seed, backend.clone(), &prefix).await;
            if !v.is_empty() {
                failures.push((seed, v));
            }
        }
        Some(failures)
    });
    if let Some(failures) = failures {
        report(name, seeds.len() as u64, failures);
    }
}

#[test]
fn redis_schedules() {
    remote_schedules("redis", env_count("MATROSKA_SIM_REDIS_SCHEDULES", 1_000), redis_server::served_backend);
}

#[test]
fn cluster_schedules() {
    let count = std::env::var("MATROSKA_SIM_CLUSTER_SCHEDULES").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    remote_schedules("redis-cluster", count, redis_cluster::cluster_backend);
}

/// A seed replays the same schedule (on the memory backend): every event,
/// in the same order, with the same values.
#[test]
fn a_seed_replays_the_same_schedule() {
    let run = |seed: u64| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(schedule_with_digest(seed, Arc::new(MemoryBackend::new()), "sim")).1
    };
    for seed in 1..=200 {
        assert_eq!(run(seed), run(seed), "seed {seed} did not replay identically");
    }
}

/// The simulation can fail: with stale-set protection defeated (every
/// ticket replaced by one from after the load), it finds stale reads.
#[test]
fn the_simulation_finds_stale_reads_without_protection() {
    #[derive(Debug)]
    struct NoProtection(MemoryBackend);
    #[async_trait]
    impl Backend for NoProtection {
        async fn get(&self, key: &str) -> Result<Lookup, BackendError> {
            self.0.get(key).await
        }
        async fn has(&self, key: &str) -> Result<bool, BackendError> {
            self.0.has(key).await
        }
        async fn put(&self, mut req: PutRequest<'_>) -> Result<PutOutcome, BackendError> {
            if req.ticket.is_some() {
                req.ticket = Some(self.0.ticket().await?);
            }
            self.0.put(req).await
        }
        async fn delete(&self, key: &str) -> Result<bool, BackendError> {
            self.0.delete(key).await
        }
        async fn invalidate(&self, deps: &[String]) -> Result<Invalidated, BackendError> {
            self.0.invalidate(deps).await
        }
        async fn ticket(&self) -> Result<Ticket, BackendError> {
            self.0.ticket().await
        }
    }
    let caught = AtomicU64::new(0);
    let mut first = None;
    for seed in 1..=500u64 {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let v = rt.block_on(schedule(seed, Arc::new(NoProtection(MemoryBackend::new())), "sim"));
        if !v.is_empty() {
            caught.fetch_add(1, Ordering::Relaxed);
            first.get_or_insert(seed);
        }
    }
    let caught = caught.load(Ordering::Relaxed);
    println!("simulation without protection: {caught} of 500 schedules caught, first at seed {first:?}");
    assert!(caught > 0, "the simulation must detect stale puts");
}
