//! The per-request cost of authenticating an API key, excluding the database round trip: parsing the
//! bearer token and checking its keyed hash in constant time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use ragvault_core::{Scope, Scopes, TenantSlug};
use ragvault_credentials::{KeySource, PresentedKey};
use std::hint::black_box;

fn auth(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let source = KeySource::local(
        &dir.path().join("master.key"),
        &dir.path().join("providers.sealed"),
    )
    .unwrap();
    let hasher = source.api_key_hasher();
    let issued = hasher.issue().unwrap();
    let whole = issued.key.expose_secret().clone();

    c.bench_function("api_key/parse", |b| {
        b.iter(|| PresentedKey::parse(black_box(&whole)).unwrap())
    });
    let presented = PresentedKey::parse(&whole).unwrap();
    c.bench_function("api_key/verify", |b| {
        b.iter(|| assert!(hasher.verify(black_box(&presented), black_box(&issued.hash))))
    });
    c.bench_function("api_key/issue", |b| b.iter(|| hasher.issue().unwrap()));
    c.bench_function("scopes/parse", |b| {
        b.iter(|| Scopes::parse(black_box(["ingest", "ask", "tokens"])).unwrap())
    });
    c.bench_function("tenant_slug/parse", |b| {
        b.iter(|| TenantSlug::parse(black_box("acme-support-eu")).unwrap())
    });
    black_box(Scope::Ask);
}

criterion_group!(benches, auth);
criterion_main!(benches);
