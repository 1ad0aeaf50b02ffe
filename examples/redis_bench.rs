//! Measures the Redis backend against raw redis-rs round trips on the same
//! connection type, in one run against one server.
//!
//! ```text
//! cargo run --release --example redis_bench
//! MATROSKA_REDIS_URL=redis://127.0.0.1:6379/ cargo run --release --example redis_bench
//! ```
//!
//! Without `MATROSKA_REDIS_URL` it spawns `redis-server` (or
//! `MATROSKA_REDIS_SERVER`) on a free loopback port with persistence off. It
//! prints a table, then one line of ratios (matroska ops/s ÷ raw ops/s):
//! `ratios: get/GET=… put/SET=… invalidate/SET=… concurrent_get/GET=… fanout10k_ms=…`.

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use matroska::{Cache, Dep, RedisBackend};
use redis::aio::ConnectionManager;

const SERIAL_OPS: usize = 4_000;
const CONCURRENT_OPS: usize = 32_000;
const TASKS: usize = 64;
const ROUNDS: usize = 3;
const TTL: Duration = Duration::from_secs(600);

/// A spawned server, killed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_server() -> Result<(Server, String), String> {
    let port =
        TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| format!("no free port: {e}"))?.port();
    let dir = std::env::temp_dir().join(format!("matroska-bench-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
    let binary = std::env::var_os("MATROSKA_REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
    let child = Command::new(&binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {binary:?}: {e}"))?;
    let server = Server { child, dir };
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("redis-server did not start within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((server, format!("redis://127.0.0.1:{port}/")))
}

/// Runs `op(i)` for `i in 0..n`, one at a time; returns ops/s.
async fn serial<F, Fut>(n: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let start = Instant::now();
    for i in 0..n {
        op(i).await;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Runs `op(i)` for `i in 0..n` on `TASKS` tasks; returns ops/s.
async fn concurrent<F, Fut>(n: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(TASKS);
    for t in 0..TASKS {
        let op = Arc::clone(&op);
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < n {
                op(i).await;
                i += TASKS;
            }
        }));
    }
    for task in tasks {
        task.await.expect("benchmark task panicked");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[derive(Default)]
struct Row {
    serial: f64,
    concurrent: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--cluster") {
        eprintln!("error: --cluster is not yet supported: the Redis Cluster backend is a later step (see the issue tracker); run without --cluster for a single node");
        std::process::exit(2);
    }
    if let Some(a) = args.iter().find(|a| a.starts_with('-')) {
        eprintln!("error: unknown option {a:?} (options: --cluster)");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let (_server, url) = match std::env::var("MATROSKA_REDIS_URL") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            let (server, url) = spawn_server()?;
            (Some(server), url)
        }
    };
    println!("server: {url}");
    let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
    let raw = ConnectionManager::new(client).await.map_err(|e| format!("cannot connect: {e}"))?;
    let namespace = format!("bench-{}", std::process::id());
    let backend =
        RedisBackend::builder(url.as_str()).namespace(namespace.as_str()).build().await.map_err(|e| e.to_string())?;
    let cache = Cache::builder().backend(backend).prefix("b").build();

    let value: String = "x".repeat(1024);
    let raw_key = format!("{namespace}:raw");

    // warm up both paths (connection, script cache)
    {
        let mut c = raw.clone();
        let _: () = redis::cmd("SET").arg(&raw_key).arg(&value).query_async(&mut c).await.map_err(|e| e.to_string())?;
        cache
            .put("hit", &value, [Dep::id("article", 1), Dep::tag("articles"), Dep::id("author", 1)], TTL)
            .await
            .map_err(|e| e.to_string())?;
        for _ in 0..500 {
            let _: Option<Vec<u8>> =
                redis::cmd("GET").arg(&raw_key).query_async(&mut c).await.map_err(|e| e.to_string())?;
            let _: Option<String> = cache.get("hit").await.map_err(|e| e.to_string())?;
        }
    }

    let raw_get = |raw: &ConnectionManager, key: &str| {
        let (mut c, key) = (raw.clone(), key.to_owned());
        async move {
            let v: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut c).await.expect("GET");
            assert!(v.is_some());
        }
    };
    let raw_set = |raw: &ConnectionManager, key: String, value: &str| {
        let (mut c, value) = (raw.clone(), value.to_owned());
        async move {
            let _: () = redis::cmd("SET").arg(&key).arg(&value).query_async(&mut c).await.expect("SET");
        }
    };

    let mut get_raw = Row::default();
    let mut get_m = Row::default();
    let mut set_raw = Row::default();
    let mut put_m = Row::default();
    let mut inv_m = Row::default();

    // serial, raw and matroska interleaved round by round
    for round in 0..ROUNDS {
        get_raw.serial = get_raw.serial.max(serial(SERIAL_OPS, |_| raw_get(&raw, &raw_key)).await);
        get_m.serial = get_m.serial.max(
            serial(SERIAL_OPS, |_| {
                let cache = cache.clone();
                async move {
                    let v: Option<String> = cache.get("hit").await.expect("get");
                    assert!(v.is_some());
                }
            })
            .await,
        );
        set_raw.serial = set_raw
            .serial
            .max(serial(SERIAL_OPS, |i| raw_set(&raw, format!("{namespace}:s:{round}:{i}"), &value)).await);
        put_m.serial = put_m.serial.max(
            serial(SERIAL_OPS, |i| {
                let (cache, value) = (cache.clone(), value.clone());
                async move {
                    let n = (round * SERIAL_OPS + i) as u64;
                    cache
                        .put(
                            &format!("p:{n}"),
                            &value,
                            [Dep::id("article", n), Dep::tag("articles"), Dep::id("author", n % 10)],
                            TTL,
                        )
                        .await
                        .expect("put");
                }
            })
            .await,
        );
        // one dependent per dependency, stored beforehand
        for i in 0..SERIAL_OPS {
            let n = (round * SERIAL_OPS + i) as u64;
            cache.put(&format!("i:{n}"), &value, [Dep::id("inv", n)], TTL).await.map_err(|e| e.to_string())?;
        }
        inv_m.serial = inv_m.serial.max(
            serial(SERIAL_OPS, |i| {
                let cache = cache.clone();
                async move {
                    let n = (round * SERIAL_OPS + i) as u64;
                    let dropped = cache.invalidate([Dep::id("inv", n)]).await.expect("invalidate");
                    assert_eq!(dropped, 1);
                }
            })
            .await,
        );
    }

    // 64 tasks on one multiplexed connection
    for round in 0..ROUNDS {
        let r = raw.clone();
        let k = raw_key.clone();
        get_raw.concurrent = get_raw.concurrent.max(concurrent(CONCURRENT_OPS, move |_| raw_get(&r, &k)).await);
        let c = cache.clone();
        get_m.concurrent = get_m.concurrent.max(
            concurrent(CONCURRENT_OPS, move |_| {
                let cache = c.clone();
                async move {
                    let v: Option<String> = cache.get("hit").await.expect("get");
                    assert!(v.is_some());
                }
            })
            .await,
        );
        let (r, ns, v) = (raw.clone(), namespace.clone(), value.clone());
        set_raw.concurrent = set_raw
            .concurrent
            .max(concurrent(CONCURRENT_OPS, move |i| raw_set(&r, format!("{ns}:cs:{round}:{i}"), &v)).await);
        let (c, v) = (cache.clone(), value.clone());
        put_m.concurrent = put_m.concurrent.max(
            concurrent(CONCURRENT_OPS, move |i| {
                let (cache, value) = (c.clone(), v.clone());
                async move {
                    let n = (round * CONCURRENT_OPS + i) as u64;
                    cache
                        .put(
                            &format!("cp:{n}"),
                            &value,
                            [Dep::id("carticle", n), Dep::tag("carticles"), Dep::id("cauthor", n % 10)],
                            TTL,
                        )
                        .await
                        .expect("put");
                }
            })
            .await,
        );
        let c = cache.clone();
        let v = value.clone();
        concurrent(CONCURRENT_OPS, move |i| {
            let (cache, value) = (c.clone(), v.clone());
            async move {
                let n = (round * CONCURRENT_OPS + i) as u64;
                cache.put(&format!("ci:{n}"), &value, [Dep::id("cinv", n)], TTL).await.expect("put");
            }
        })
        .await;
        let c = cache.clone();
        inv_m.concurrent = inv_m.concurrent.max(
            concurrent(CONCURRENT_OPS, move |i| {
                let cache = c.clone();
                async move {
                    let n = (round * CONCURRENT_OPS + i) as u64;
                    let dropped = cache.invalidate([Dep::id("cinv", n)]).await.expect("invalidate");
                    assert_eq!(dropped, 1);
                }
            })
            .await,
        );
    }

    // one dependency with 10,000 dependents
    let fanout_ms = {
        let mut best_ms = f64::MAX;
        for round in 0..ROUNDS {
            let c = cache.clone();
            let v = value.clone();
            concurrent(10_000, move |i| {
                let (cache, value) = (c.clone(), v.clone());
                async move {
                    cache
                        .put(&format!("f:{round}:{i}"), &value, [Dep::tag(format!("fan{round}"))], TTL)
                        .await
                        .expect("put");
                }
            })
            .await;
            let start = Instant::now();
            let dropped = cache.invalidate([Dep::tag(format!("fan{round}"))]).await.map_err(|e| e.to_string())?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            if dropped != 10_000 {
                return Err(format!("fan-out invalidation dropped {dropped} of 10000"));
            }
            best_ms = best_ms.min(ms);
        }
        best_ms
    };

    println!();
    println!("{:<44} {:>14} {:>14} {:>10}", "operation", "1 task ops/s", "64 tasks ops/s", "µs/op (1)");
    let line = |name: &str, r: &Row| {
        println!("{:<44} {:>14.0} {:>14.0} {:>10.1}", name, r.serial, r.concurrent, 1e6 / r.serial);
    };
    line("raw GET (1 KB)", &get_raw);
    line("raw SET (1 KB)", &set_raw);
    line("matroska get, hit (1 KB)", &get_m);
    line("matroska put, 3 deps (1 KB)", &put_m);
    line("matroska invalidate, 1 dep, 1 dependent", &inv_m);
    println!("{:<44} {:>14.1} ms", "matroska invalidate, 1 dep, 10,000 dependents", fanout_ms);
    println!();
    println!(
        "ratios: get/GET={:.2} put/SET={:.2} invalidate/SET={:.2} concurrent_get/GET={:.2} fanout10k_ms={:.1}",
        get_m.serial / get_raw.serial,
        put_m.serial / set_raw.serial,
        inv_m.serial / set_raw.serial,
        get_m.concurrent / get_raw.concurrent,
        fanout_ms
    );
    Ok(())
}
