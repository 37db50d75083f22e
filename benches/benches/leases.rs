//! The cost of getting a provider key for a request when its lease is valid: the path every provider
//! call takes. It must not touch the key source.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use ragvault_credentials::{
    operator_path, KeySource, LeaseManager, LeaseSettings, ProviderKeyRef, Secret,
};
use std::hint::black_box;
use std::sync::Arc;

fn leases(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let source = KeySource::local(
        &dir.path().join("master.key"),
        &dir.path().join("providers.sealed"),
    )
    .unwrap();
    source
        .sealed_keyring()
        .unwrap()
        .set(
            &operator_path("openai"),
            &Secret::new("sk-bench".to_owned()),
            None,
            None,
        )
        .unwrap();
    let manager = Arc::new(LeaseManager::new(
        Arc::new(source),
        LeaseSettings::default(),
        None,
    ));
    let key_ref = ProviderKeyRef::operator("openai");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(manager.lease(&key_ref)).unwrap();

    c.bench_function("lease/hit", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(manager.lease(black_box(&key_ref)).await.unwrap()) })
    });
    c.bench_function("lease/hit_and_use", |b| {
        b.to_async(&runtime).iter(|| async {
            let lease = manager.lease(&key_ref).await.unwrap();
            lease.with_key(|k| black_box(k.len()))
        })
    });
    c.bench_function("lease/miss_local_keyring", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(manager.force_refresh(&key_ref).await.unwrap()) })
    });
}

criterion_group!(benches, leases);
criterion_main!(benches);
