//! Sealing and opening chunk text, against ring's raw AES-256-GCM on the same buffer sizes: the cost of
//! the envelope (nonce, AAD, format byte, per-call key schedule) over the cipher itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ragvault_core::{ChunkId, DocumentId, TenantId};
use ragvault_credentials::{KeySource, SealContext, SealPurpose};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::hint::black_box;

fn seal(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let source = KeySource::local(
        &dir.path().join("master.key"),
        &dir.path().join("providers.sealed"),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tenant = TenantId::new();
    runtime.block_on(source.create_tenant_kek(tenant)).unwrap();
    let (dek, _) = runtime
        .block_on(source.generate_data_key(tenant, uuid::Uuid::new_v4()))
        .unwrap();
    let ctx = SealContext {
        purpose: SealPurpose::ChunkText,
        tenant,
        document: DocumentId::new(),
        chunk: Some(ChunkId::new()),
        ordinal: 3,
    };
    let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());

    let mut group = c.benchmark_group("seal");
    for size in [1024usize, 4096, 65536] {
        let plain = vec![b'x'; size];
        let sealed = dek.seal(&ctx, &plain).unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("envelope_seal", size), &plain, |b, p| {
            b.iter(|| dek.seal(black_box(&ctx), black_box(p)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("envelope_open", size), &sealed, |b, s| {
            b.iter(|| dek.open(black_box(&ctx), black_box(s)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("ring_raw_seal", size), &plain, |b, p| {
            b.iter(|| {
                let mut buffer = p.clone();
                raw.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key([0u8; 12]),
                    Aad::empty(),
                    &mut buffer,
                )
                .unwrap();
                buffer
            })
        });
    }
    group.finish();

    // Unsealing the top-10 chunks of an /v1/ask answer (about 1 KiB each) with a warm DEK.
    let chunks: Vec<Vec<u8>> = (0..10)
        .map(|_| dek.seal(&ctx, &[b'y'; 1024]).unwrap())
        .collect();
    c.bench_function("seal/open_top10_1KiB", |b| {
        b.iter(|| {
            for sealed in &chunks {
                black_box(dek.open(&ctx, sealed).unwrap());
            }
        })
    });
}

criterion_group!(benches, seal);
criterion_main!(benches);
