//! The `metrics` facade: outcomes, latencies and fan-out, with bounded
//! labels.

use std::time::Duration;

use matroska::{Cache, Dep, MemoryBackend};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;

#[test]
fn operations_are_counted_and_timed() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let cache = Cache::new(MemoryBackend::new());
            let ttl = Duration::from_secs(60);
            let _: Option<u8> = cache.get("a").await.unwrap();
            let v: u8 = cache
                .get_or_load("a", ttl, |deps| async move {
                    deps.push(Dep::id("article", 1));
                    Ok::<_, matroska::Error>(1)
                })
                .await
                .unwrap();
            assert_eq!(v, 1);
            let _: Option<u8> = cache.get("a").await.unwrap();
            assert_eq!(cache.invalidate([Dep::id("article", 1)]).await.unwrap(), 1);
        });
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |name: &str, labels: &[(&str, &str)]| -> u64 {
        snapshot
            .iter()
            .filter(|(key, _, _, _)| {
                key.kind() == MetricKind::Counter
                    && key.key().name() == name
                    && labels.iter().all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, _, _, value)| match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(counter("matroska_operations_total", &[("op", "get"), ("outcome", "miss")]), 2);
    assert_eq!(counter("matroska_operations_total", &[("op", "get"), ("outcome", "hit")]), 1);
    assert_eq!(counter("matroska_operations_total", &[("op", "put"), ("outcome", "stored")]), 1);
    assert_eq!(counter("matroska_operations_total", &[("op", "load"), ("outcome", "ok")]), 1);
    assert_eq!(counter("matroska_operations_total", &[("op", "invalidate"), ("outcome", "ok")]), 1);
    let histogram = |name: &str, op: Option<&str>| -> Vec<f64> {
        snapshot
            .iter()
            .filter(|(key, _, _, _)| {
                key.kind() == MetricKind::Histogram
                    && key.key().name() == name
                    && op.is_none_or(|op| key.key().labels().any(|l| l.key() == "op" && l.value() == op))
            })
            .flat_map(|(_, _, _, value)| match value {
                DebugValue::Histogram(v) => v.iter().map(|f| f.into_inner()).collect(),
                _ => Vec::new(),
            })
            .collect()
    };
    assert_eq!(histogram("matroska_operation_seconds", Some("get")).len(), 3);
    assert_eq!(histogram("matroska_operation_seconds", Some("invalidate")).len(), 1);
    assert_eq!(histogram("matroska_invalidation_fanout", None), vec![1.0]);
    // every label is one of a fixed few: no key, prefix or dependency in a label
    for (key, _, _, _) in &snapshot {
        for label in key.key().labels() {
            assert!(matches!(label.key(), "op" | "outcome"), "unexpected label {}", label.key());
        }
    }
}
