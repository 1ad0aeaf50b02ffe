//! The measurement behind matroska-diesel's choice of diesel-async over
//! Diesel's synchronous API on `spawn_blocking`: the same point reads and
//! updates by key, on the same tables, through both, interleaved in one run.
//!
//! ```sh
//! cargo run -p matroska-diesel --release --features __bench --example diesel_bench
//! cargo run -p matroska-diesel --release --features __bench --example diesel_bench -- --pg postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! Each task owns one connection (no pool, so the pools' own costs do not
//! count). "sync" runs each operation with `tokio::task::spawn_blocking`,
//! moving the connection into the blocking thread and back, as
//! `deadpool-diesel`'s `interact` does; "async" awaits diesel-async. Every
//! figure is the median of 3 rounds; rounds alternate between the two.
//! The output has a fixed shape:
//!
//! ```text
//! db       op      tasks  sync ops/s  async ops/s  async/sync
//! sqlite   read        1       12345        12345        1.00
//! ```

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use diesel::{Connection as _, ExpressionMethods, QueryDsl, QueryResult};
use diesel_async::{AsyncConnection, RunQueryDsl as _};

diesel::table! {
    bench_post (id) {
        id -> Integer,
        title -> Text,
        views -> Integer,
    }
}

const ROWS: i32 = 100;
const ROUNDS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Read,
    Update,
}

fn sync_op<C>(conn: &mut C, op: Op, i: i32) -> QueryResult<()>
where
    C: diesel::Connection + diesel::connection::LoadConnection,
    C::Backend: diesel::backend::DieselReserveSpecialization,
    for<'a> bench_post::table: diesel::query_dsl::methods::FindDsl<i32>,
    diesel::dsl::Find<bench_post::table, i32>:
        diesel::query_dsl::LoadQuery<'static, C, (i32, String, i32)> + diesel::query_dsl::methods::LimitDsl,
    diesel::dsl::Limit<diesel::dsl::Find<bench_post::table, i32>>:
        diesel::query_dsl::LoadQuery<'static, C, (i32, String, i32)>,
    diesel::dsl::Update<diesel::dsl::Find<bench_post::table, i32>, diesel::dsl::Eq<bench_post::views, i32>>:
        diesel::query_dsl::methods::ExecuteDsl<C>,
{
    let id = 1 + i % ROWS;
    match op {
        Op::Read => {
            let _: (i32, String, i32) = diesel::RunQueryDsl::first(bench_post::table.find(id), conn)?;
        }
        Op::Update => {
            diesel::RunQueryDsl::execute(
                diesel::update(bench_post::table.find(id)).set(bench_post::views.eq(i)),
                conn,
            )?;
        }
    }
    Ok(())
}

/// Runs `per_task` operations in each of `conns.len()` tasks, each task with
/// its connection on `spawn_blocking`; returns ops/s and the connections.
async fn run_sync<C>(conns: Vec<C>, op: Op, per_task: usize) -> (f64, Vec<C>)
where
    C: diesel::Connection + diesel::connection::LoadConnection + 'static,
    C::Backend: diesel::backend::DieselReserveSpecialization,
    diesel::dsl::Find<bench_post::table, i32>:
        diesel::query_dsl::LoadQuery<'static, C, (i32, String, i32)> + diesel::query_dsl::methods::LimitDsl,
    diesel::dsl::Limit<diesel::dsl::Find<bench_post::table, i32>>:
        diesel::query_dsl::LoadQuery<'static, C, (i32, String, i32)>,
    diesel::dsl::Update<diesel::dsl::Find<bench_post::table, i32>, diesel::dsl::Eq<bench_post::views, i32>>:
        diesel::query_dsl::methods::ExecuteDsl<C>,
{
    let n = conns.len();
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(t, mut conn)| {
            tokio::spawn(async move {
                for k in 0..per_task {
                    let i = (t * per_task + k) as i32;
                    let (c, r) = tokio::task::spawn_blocking(move || {
                        let r = sync_op(&mut conn, op, i);
                        (conn, r)
                    })
                    .await
                    .expect("blocking task");
                    conn = c;
                    r.expect("sync op");
                }
                conn
            })
        })
        .collect();
    let mut back = Vec::with_capacity(n);
    for t in tasks {
        back.push(t.await.expect("task"));
    }
    ((n * per_task) as f64 / start.elapsed().as_secs_f64(), back)
}

async fn async_op<C>(conn: &mut C, op: Op, i: i32) -> QueryResult<()>
where
    C: AsyncConnection,
    C::Backend: diesel::backend::DieselReserveSpecialization,
    for<'q> diesel::dsl::Limit<diesel::dsl::Find<bench_post::table, i32>>:
        diesel_async::methods::LoadQuery<'q, C, (i32, String, i32)>,
    diesel::dsl::Update<diesel::dsl::Find<bench_post::table, i32>, diesel::dsl::Eq<bench_post::views, i32>>:
        diesel_async::methods::ExecuteDsl<C>,
{
    let id = 1 + i % ROWS;
    match op {
        Op::Read => {
            let _: (i32, String, i32) = bench_post::table.find(id).first(conn).await?;
        }
        Op::Update => {
            diesel::update(bench_post::table.find(id)).set(bench_post::views.eq(i)).execute(conn).await?;
        }
    }
    Ok(())
}

async fn run_async<C>(conns: Vec<C>, op: Op, per_task: usize) -> (f64, Vec<C>)
where
    C: AsyncConnection + 'static,
    C::Backend: diesel::backend::DieselReserveSpecialization,
    for<'q> diesel::dsl::Limit<diesel::dsl::Find<bench_post::table, i32>>:
        diesel_async::methods::LoadQuery<'q, C, (i32, String, i32)>,
    diesel::dsl::Update<diesel::dsl::Find<bench_post::table, i32>, diesel::dsl::Eq<bench_post::views, i32>>:
        diesel_async::methods::ExecuteDsl<C>,
{
    let n = conns.len();
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(t, mut conn)| {
            tokio::spawn(async move {
                for k in 0..per_task {
                    async_op(&mut conn, op, (t * per_task + k) as i32).await.expect("async op");
                }
                conn
            })
        })
        .collect();
    let mut back = Vec::with_capacity(n);
    for t in tasks {
        back.push(t.await.expect("task"));
    }
    ((n * per_task) as f64 / start.elapsed().as_secs_f64(), back)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn line(db: &str, op: Op, tasks: usize, sync: f64, asy: f64) {
    println!(
        "{db:<8} {:<7} {tasks:>5} {sync:>11.0} {asy:>12.0} {:>11.2}",
        format!("{op:?}").to_lowercase(),
        asy / sync
    );
}

const DDL: &str = "DROP TABLE IF EXISTS bench_post; CREATE TABLE bench_post (id INTEGER PRIMARY KEY, title TEXT NOT NULL, views INTEGER NOT NULL)";

async fn sqlite(path: &str, tasks: usize, per_task: usize) {
    use diesel::connection::SimpleConnection;
    use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
    let open = || {
        let mut c = diesel::SqliteConnection::establish(path).expect("open sqlite");
        c.batch_execute("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; PRAGMA synchronous=NORMAL")
            .expect("pragmas");
        c
    };
    {
        let mut c = open();
        c.batch_execute(DDL).expect("schema");
        for id in 1..=ROWS {
            diesel::RunQueryDsl::execute(
                diesel::insert_into(bench_post::table).values((
                    bench_post::id.eq(id),
                    bench_post::title.eq(format!("post {id}")),
                    bench_post::views.eq(0),
                )),
                &mut c,
            )
            .expect("seed");
        }
    }
    for op in [Op::Read, Op::Update] {
        let mut sync_conns: Vec<_> = (0..tasks).map(|_| open()).collect();
        let mut async_conns: Vec<_> =
            (0..tasks).map(|_| SyncConnectionWrapper::<diesel::SqliteConnection>::new(open())).collect();
        let (mut s, mut a) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (r, c) = run_sync(sync_conns, op, per_task).await;
            s.push(r);
            sync_conns = c;
            let (r, c) = run_async(async_conns, op, per_task).await;
            a.push(r);
            async_conns = c;
        }
        line("sqlite", op, tasks, median(s), median(a));
    }
}

async fn postgres(url: &str, tasks: usize, per_task: usize) {
    use diesel::connection::SimpleConnection;
    {
        let mut c = diesel::PgConnection::establish(url).expect("connect to PostgreSQL");
        c.batch_execute(DDL).expect("schema");
        for id in 1..=ROWS {
            diesel::RunQueryDsl::execute(
                diesel::insert_into(bench_post::table).values((
                    bench_post::id.eq(id),
                    bench_post::title.eq(format!("post {id}")),
                    bench_post::views.eq(0),
                )),
                &mut c,
            )
            .expect("seed");
        }
    }
    for op in [Op::Read, Op::Update] {
        let mut sync_conns: Vec<_> =
            (0..tasks).map(|_| diesel::PgConnection::establish(url).expect("connect")).collect();
        let mut async_conns = Vec::new();
        for _ in 0..tasks {
            async_conns.push(diesel_async::AsyncPgConnection::establish(url).await.expect("connect"));
        }
        let (mut s, mut a) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (r, c) = run_sync(sync_conns, op, per_task).await;
            s.push(r);
            sync_conns = c;
            let (r, c) = run_async(async_conns, op, per_task).await;
            a.push(r);
            async_conns = c;
        }
        line("postgres", op, tasks, median(s), median(a));
    }
    let mut c = diesel::PgConnection::establish(url).expect("connect");
    c.batch_execute("DROP TABLE IF EXISTS bench_post").expect("drop");
}

fn main() {
    let mut pg = None;
    let mut ops = 2000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pg" => pg = args.next(),
            "--ops" => ops = args.next().and_then(|v| v.parse().ok()).expect("--ops N"),
            other => panic!("unknown argument {other:?}: [--pg URL] [--ops N]"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        println!("db       op      tasks  sync ops/s  async ops/s  async/sync");
        let dir = std::env::temp_dir().join(format!("matroska-diesel-bench-{}.db", std::process::id()));
        let path = dir.display().to_string();
        for tasks in [1usize, 8] {
            sqlite(&path, tasks, ops / tasks).await;
        }
        let _ = std::fs::remove_file(&dir);
        let _ = std::fs::remove_file(format!("{path}-wal"));
        let _ = std::fs::remove_file(format!("{path}-shm"));
        if let Some(url) = pg {
            for tasks in [1usize, 8] {
                postgres(&url, tasks, ops / tasks).await;
            }
        }
    });
    let _ = Duration::ZERO;
}
