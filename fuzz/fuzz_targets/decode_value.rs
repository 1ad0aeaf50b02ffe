//! Arbitrary bytes stored under a key never make a read panic: a typed
//! `Decode` error naming the key, or a value.
#![no_main]

use std::collections::BTreeMap;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use matroska::backend::{Backend, PutRequest};
use matroska::{Cache, Error, MemoryBackend};

#[derive(serde::Deserialize, Debug)]
#[allow(dead_code)]
struct Article {
    id: u64,
    title: String,
    tags: Vec<String>,
    extra: Option<BTreeMap<String, f64>>,
}

fn check<T>(r: Result<Option<T>, Error>) {
    match r {
        Ok(_) => {}
        Err(Error::Decode { key, .. }) => assert_eq!(key, "k"),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let backend = MemoryBackend::new();
        // the cache stores under ":" + key with no prefix
        let req = PutRequest {
            key: ":k",
            value: bytes::Bytes::copy_from_slice(data),
            deps: &[],
            ttl: Duration::from_secs(60),
            ticket: None,
        };
        let _ = backend.put(req).await.unwrap();
        let cache = Cache::new(backend);
        check(cache.get::<String>("k").await);
        let as_u64 = cache.get::<u64>("k").await;
        let expected = match &as_u64 {
            Ok(Some(v)) => *v,
            _ => 7,
        };
        check(as_u64);
        check(cache.get::<Vec<u8>>("k").await);
        check(cache.get::<Article>("k").await);
        check(cache.get::<Vec<Article>>("k").await);
        check(cache.get::<BTreeMap<String, Vec<Option<i32>>>>("k").await);
        let v: u64 = cache.get_or_load("k", Duration::from_secs(60), |_| async { Ok::<_, Error>(7) }).await.unwrap();
        // a readable value is served; an unreadable one is replaced by the load
        assert_eq!(v, expected);
        assert_eq!(cache.get::<u64>("k").await.unwrap(), Some(expected));
    });
});
