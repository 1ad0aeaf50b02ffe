//! The in-memory backend side by side with moka on the same 1 KB payload, and
//! the value codecs side by side.
//!
//! `cargo bench -p matroska --bench memory`

#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use matroska::backend::{Backend, PutRequest};
use matroska::{Cache, Codec, Dep, Json, MemoryBackend, MessagePack};
use serde::{Deserialize, Serialize};

const TTL: Duration = Duration::from_secs(600);

fn payload() -> String {
    "x".repeat(1024)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

fn ops(c: &mut Criterion) {
    let rt = rt();
    let value = payload();
    let mut g = c.benchmark_group("memory");

    // moka, the reference
    let moka: moka::sync::Cache<String, Arc<Vec<u8>>> = moka::sync::Cache::builder().max_capacity(100_000).build();
    let bytes = Arc::new(value.clone().into_bytes());
    for i in 0..1000 {
        moka.insert(format!("key:{i}"), bytes.clone());
    }
    g.bench_function("moka_get", |b| b.iter(|| black_box(moka.get("key:7"))));
    let mut i = 0u64;
    g.bench_function("moka_insert", |b| {
        b.iter(|| {
            i += 1;
            moka.insert(format!("key:{}", i % 1000), bytes.clone());
        })
    });

    // moka with a per-entry TTL (as every cache entry has one), the reference
    // closest to what the memory backend asks of moka
    struct Ttl;
    impl moka::Expiry<String, Arc<Vec<u8>>> for Ttl {
        fn expire_after_create(&self, _: &String, _: &Arc<Vec<u8>>, _: std::time::Instant) -> Option<Duration> {
            Some(TTL)
        }
    }
    let moka_ttl: moka::sync::Cache<String, Arc<Vec<u8>>> =
        moka::sync::Cache::builder().max_capacity(100_000).expire_after(Ttl).build();
    for i in 0..1000 {
        moka_ttl.insert(format!("key:{i}"), bytes.clone());
    }
    g.bench_function("moka_ttl_get", |b| b.iter(|| black_box(moka_ttl.get("key:7"))));
    let mut i = 0u64;
    g.bench_function("moka_ttl_insert", |b| {
        b.iter(|| {
            i += 1;
            moka_ttl.insert(format!("key:{}", i % 1000), bytes.clone());
        })
    });

    // matroska, through the typed Cache facade
    let cache =
        Cache::builder().backend(MemoryBackend::builder().max_entries(100_000).build().unwrap()).build().unwrap();
    rt.block_on(async {
        for i in 0..1000 {
            let deps = [Dep::id("article", i), Dep::id("author", i % 10), Dep::tag("articles")];
            cache.put(&format!("key:{i}"), &value, deps, TTL).await.unwrap();
        }
    });
    g.bench_function("cache_get_hit", |b| {
        b.to_async(&rt).iter(|| async { black_box(cache.get::<String>("key:7").await.unwrap()) })
    });
    let mut i = 0u64;
    g.bench_function("cache_put_3_deps", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let n = i % 1000;
            let cache = &cache;
            let value = &value;
            async move {
                let deps = [Dep::id("article", n), Dep::id("author", n % 10), Dep::tag("articles")];
                cache.put(&format!("key:{n}"), value, deps, TTL).await.unwrap()
            }
        })
    });
    let mut i = 0u64;
    g.bench_function("cache_invalidate_1_dependent", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let cache = &cache;
            let value = &value;
            async move {
                // put one dependent, then invalidate its dependency
                let dep = Dep::id("row", i);
                cache.put("victim", value, [dep.clone()], TTL).await.unwrap();
                black_box(cache.invalidate([dep]).await.unwrap())
            }
        })
    });
    let mut i = 0u64;
    g.bench_function("cache_put_1_dep_only", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let cache = &cache;
            let value = &value;
            async move { cache.put("victim", value, [Dep::id("row", i)], TTL).await.unwrap() }
        })
    });

    // the backend alone (bytes in, bytes out)
    let backend = MemoryBackend::new();
    let raw = bytes::Bytes::from(value.clone().into_bytes());
    let deps = vec![":id:article:1".to_string(), ":id:author:1".to_string(), ":tag:articles".to_string()];
    rt.block_on(async {
        let req = PutRequest { key: "key:7", value: raw.clone(), deps: &deps, ttl: TTL, ticket: None };
        let _ = backend.put(req).await.unwrap();
    });
    g.bench_function("backend_get_hit", |b| {
        b.to_async(&rt).iter(|| async { black_box(backend.get("key:7").await.unwrap()) })
    });
    g.bench_function("backend_put_3_deps", |b| {
        b.to_async(&rt).iter(|| async {
            let req = PutRequest { key: "key:7", value: raw.clone(), deps: &deps, ttl: TTL, ticket: None };
            black_box(backend.put(req).await.unwrap())
        })
    });
    g.finish();
}

#[derive(Clone, Serialize, Deserialize)]
struct Article {
    id: u64,
    title: String,
    body: String,
    author: String,
    category: String,
    published: bool,
    tags: Vec<String>,
}

fn codecs(c: &mut Criterion) {
    let articles: Vec<Article> = (0..50)
        .map(|i| Article {
            id: i,
            title: format!("Article number {i}"),
            body: "lorem ipsum ".repeat(20),
            author: format!("author {}", i % 7),
            category: "python".into(),
            published: i % 3 != 0,
            tags: vec!["a".into(), "bb".into(), "ccc".into()],
        })
        .collect();
    let mut g = c.benchmark_group("codec");
    let encode = |codec: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        codec(&mut out);
        out
    };
    let mp = encode(&|out| MessagePack.encode(&articles, out).unwrap());
    let js = encode(&|out| Json.encode(&articles, out).unwrap());
    println!("encoded 50 articles: messagepack {} bytes, json {} bytes", mp.len(), js.len());
    g.bench_function("messagepack_encode", |b| {
        b.iter(|| black_box(encode(&|out| MessagePack.encode(&articles, out).unwrap())))
    });
    g.bench_function("json_encode", |b| b.iter(|| black_box(encode(&|out| Json.encode(&articles, out).unwrap()))));
    g.bench_function("messagepack_decode", |b| b.iter(|| black_box(MessagePack.decode::<Vec<Article>>(&mp).unwrap())));
    g.bench_function("json_decode", |b| b.iter(|| black_box(Json.decode::<Vec<Article>>(&js).unwrap())));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = ops, codecs
}
criterion_main!(benches);
