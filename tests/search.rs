//! Retrieval end to end: documents ingested through the API are found by meaning (vector), by exact term
//! (blind keyword index) and by both; filters, tenant isolation, deletes and replacements hold; the index
//! survives restarts and crashes by reconciling with Postgres; index files reveal no text or tenant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragvault_core::{PointId, TenantId};
use ragvault_testkit::http::{assert_error, call, ingest_text, wait_for_job};
use ragvault_testkit::{spawn_app, unique_slug, TestApp, TestTenant};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;

const PUMP_MANUAL: &str = "# AquaFlow P7 pump\n\n## Priming\n\nBefore the first start, fill the pump housing \
with water through the priming port and close the cap hand-tight.\n\n## Error codes\n\nCode E-1042 means the \
impeller is blocked by debris: switch off, open the housing and clear it.\n\n## Spare parts\n\nThe replacement \
impeller is part AB-4471-X.\n";
const ROUTER_MANUAL: &str = "# NetHome R2 router\n\n## Wi-Fi\n\nTo change the wireless network name, open the \
admin page and choose Wireless, then Basic.\n\n## Factory reset\n\nHold the recessed reset button for ten \
seconds until the lights blink amber.\n";
const HEATER_MANUAL: &str = "# Calora H3 heater\n\n## Safety\n\nKeep the heater one metre away from curtains \
and never cover the air outlet.\n\n## Thermostat\n\nTurn the dial clockwise to raise the target temperature.\n";

async fn ingest(app: &TestApp, key: &str, name: &str, content: &str, tags: &[&str]) -> String {
    ingest_text(app, key, name, content, tags).await
}

async fn search(app: &TestApp, key: &str, body: Value) -> Vec<Value> {
    let r = call(app, Method::POST, "/v1/search", Some(key), Some(body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["results"].as_array().unwrap().clone()
}

fn names(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn tenant_with_manuals(app: &TestApp, prefix: &str) -> (TestTenant, Vec<String>) {
    let tenant = app.create_tenant(&unique_slug(prefix)).await;
    let mut ids = Vec::new();
    for (name, text, tags) in [
        ("pump.md", PUMP_MANUAL, vec!["pumps", "garden"]),
        ("router.md", ROUTER_MANUAL, vec!["network"]),
        ("heater.md", HEATER_MANUAL, vec!["garden", "heating"]),
    ] {
        ids.push(ingest(app, &tenant.api_key, name, text, &tags).await);
    }
    (tenant, ids)
}

/// The index partition and the points Postgres holds for a tenant.
async fn index_and_postgres_points(
    app: &TestApp,
    tenant: &TestTenant,
) -> (HashSet<PointId>, HashSet<PointId>) {
    let tenant_id: TenantId = tenant.id.parse().unwrap();
    let partition = app.state.indexer.partition(tenant_id).await.unwrap();
    let in_index = app
        .state
        .indexer
        .index()
        .point_ids(&partition)
        .await
        .unwrap();
    let in_postgres = app
        .store
        .tenant_points(tenant_id)
        .await
        .unwrap()
        .into_iter()
        .collect();
    (in_index, in_postgres)
}

#[tokio::test]
async fn paraphrases_exact_terms_and_filters_find_the_right_chunks() {
    let app = spawn_app().await;
    let (tenant, ids) = tenant_with_manuals(&app, "search").await;
    let key = &tenant.api_key;

    // By meaning: no word of the question is in the answer's heading.
    let hits = search(&app, key, json!({"query": "how do I restore the original settings of my wireless box", "mode": "vector"})).await;
    assert_eq!(hits[0]["name"], "router.md", "{hits:?}");
    assert!(hits[0]["snippet"]
        .as_str()
        .unwrap()
        .contains("reset button"));
    assert_eq!(
        hits[0]["heading_path"],
        json!(["NetHome R2 router", "Factory reset"])
    );
    let hits = search(
        &app,
        key,
        json!({"query": "the water pump does not move, something is stuck", "mode": "vector"}),
    )
    .await;
    assert_eq!(hits[0]["name"], "pump.md", "{hits:?}");

    // By exact term: part numbers and error codes, in keyword and hybrid modes.
    for mode in ["keyword", "hybrid"] {
        let hits = search(&app, key, json!({"query": "AB-4471-X", "mode": mode})).await;
        assert_eq!(hits[0]["name"], "pump.md", "{mode}: {hits:?}");
        assert!(hits[0]["snippet"].as_str().unwrap().contains("AB-4471-X"));
        let hits = search(
            &app,
            key,
            json!({"query": "what does E-1042 mean", "mode": mode, "top_k": 1}),
        )
        .await;
        assert_eq!(hits.len(), 1);
        assert!(
            hits[0]["snippet"].as_str().unwrap().contains("E-1042"),
            "{mode}: {hits:?}"
        );
    }
    // A keyword query that matches nothing returns nothing rather than noise.
    assert!(
        search(&app, key, json!({"query": "zzyzx-00", "mode": "keyword"}))
            .await
            .is_empty()
    );

    // Filters apply inside the search: only the allowed documents come back, however good the others match.
    let hits = search(
        &app,
        key,
        json!({"query": "reset button", "document_ids": [ids[0], ids[2]]}),
    )
    .await;
    assert!(
        !hits.is_empty() && names(&hits).iter().all(|n| n != "router.md"),
        "{hits:?}"
    );
    let hits = search(
        &app,
        key,
        json!({"query": "temperature", "tags": ["garden"]}),
    )
    .await;
    assert!(
        names(&hits)
            .iter()
            .all(|n| n == "pump.md" || n == "heater.md"),
        "{hits:?}"
    );
    let hits = search(
        &app,
        key,
        json!({"query": "temperature", "tags": ["garden", "heating"]}),
    )
    .await;
    assert!(
        !hits.is_empty() && names(&hits).iter().all(|n| n == "heater.md"),
        "{hits:?}"
    );
    assert!(
        search(&app, key, json!({"query": "pump", "tags": ["no-such-tag"]}))
            .await
            .is_empty()
    );

    // Bad input.
    let r = call(
        &app,
        Method::POST,
        "/v1/search",
        Some(key),
        Some(json!({"query": "  "})),
    )
    .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_query");
    let r = call(
        &app,
        Method::POST,
        "/v1/search",
        Some(key),
        Some(json!({"query": "x", "top_k": 0})),
    )
    .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_top_k");
    let r = call(
        &app,
        Method::POST,
        "/v1/search",
        Some(key),
        Some(json!({"query": "x", "mode": "fuzzy"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
}

#[tokio::test]
async fn a_tenant_never_retrieves_another_tenants_chunks() {
    let app = spawn_app().await;
    let (_a, _) = tenant_with_manuals(&app, "iso-a").await;
    let b = app.create_tenant(&unique_slug("iso-b")).await;
    ingest(
        &app,
        &b.api_key,
        "b-notes.md",
        "# Notes\n\nThe cafeteria opens at eight.\n",
        &[],
    )
    .await;
    for mode in ["vector", "keyword", "hybrid"] {
        let hits = search(
            &app,
            &b.api_key,
            json!({"query": "AB-4471-X impeller reset router", "mode": mode, "top_k": 10}),
        )
        .await;
        assert!(
            names(&hits).iter().all(|n| n == "b-notes.md"),
            "{mode}: {hits:?}"
        );
    }
}

#[tokio::test]
async fn deletes_and_replacements_leave_no_index_points_behind() {
    let app = spawn_app().await;
    let (tenant, ids) = tenant_with_manuals(&app, "del").await;
    let key = &tenant.api_key;
    // `done` means searchable: every point is in the index when the last job says so.
    let (in_index, in_postgres) = index_and_postgres_points(&app, &tenant).await;
    assert_eq!(in_index, in_postgres);
    assert!(!in_index.is_empty());

    let r = call(
        &app,
        Method::DELETE,
        &format!("/v1/documents/{}", ids[1]),
        Some(key),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let hits = search(
        &app,
        key,
        json!({"query": "factory reset wireless router", "top_k": 10}),
    )
    .await;
    assert!(names(&hits).iter().all(|n| n != "router.md"), "{hits:?}");

    // Replace the pump manual: the old part number is gone, the new one is found.
    let new_pump = PUMP_MANUAL.replace("AB-4471-X", "AB-5000-Z");
    ingest(&app, key, "pump.md", &new_pump, &[]).await;
    let hits = search(
        &app,
        key,
        json!({"query": "AB-4471-X", "mode": "keyword", "top_k": 10}),
    )
    .await;
    assert!(
        hits.iter()
            .all(|h| !h["snippet"].as_str().unwrap().contains("AB-4471-X")),
        "{hits:?}"
    );
    let hits = search(&app, key, json!({"query": "AB-5000-Z", "mode": "keyword"})).await;
    assert_eq!(hits[0]["name"], "pump.md");

    let (in_index, in_postgres) = index_and_postgres_points(&app, &tenant).await;
    assert_eq!(
        in_index, in_postgres,
        "index and Postgres disagree after delete and replace"
    );
}

#[tokio::test]
async fn a_crash_before_the_index_is_dumped_loses_nothing() {
    let mut app = spawn_app().await;
    let (tenant, _) = tenant_with_manuals(&app, "crash").await;
    let (before, _) = index_and_postgres_points(&app, &tenant).await;
    // No graceful shutdown, so no dump: only the write-ahead record has the points.
    app.restart(true).await;
    let (after, in_postgres) = index_and_postgres_points(&app, &tenant).await;
    assert_eq!(after, before);
    assert_eq!(after, in_postgres);
    let hits = search(
        &app,
        &tenant.api_key,
        json!({"query": "AB-4471-X", "mode": "hybrid"}),
    )
    .await;
    assert_eq!(hits[0]["name"], "pump.md");
}

#[tokio::test]
async fn the_index_is_reconciled_with_postgres_at_start() {
    let mut app = spawn_app().await;
    let (tenant, _) = tenant_with_manuals(&app, "reconcile").await;
    let tenant_id: TenantId = tenant.id.parse().unwrap();
    let partition = app.state.indexer.partition(tenant_id).await.unwrap();
    let (_, in_postgres) = index_and_postgres_points(&app, &tenant).await;
    // Make the index disagree both ways: lose some real points, gain a point with no chunk.
    let lost: Vec<PointId> = in_postgres.iter().copied().take(3).collect();
    let index = app.state.indexer.index().clone();
    index.delete(&partition, &lost).await.unwrap();
    let ghost = ragvault_search::IndexPoint {
        id: PointId(42),
        vector: vec![0.1; partition.dimension],
    };
    index.upsert(&partition, vec![ghost]).await.unwrap();
    // A crash between a document's commit and its index insert leaves its job `indexing`: not yet `done`
    // to a client, finished by the next start once the index holds its points.
    let job: uuid::Uuid = sqlx::query_scalar(
        "UPDATE ingest_jobs SET status = 'indexing', finished_at = NULL
         WHERE id = (SELECT id FROM ingest_jobs WHERE tenant_id = $1 LIMIT 1) RETURNING id",
    )
    .bind(tenant_id.0)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    let job_path = format!("/v1/jobs/{job}");
    let r = call(&app, Method::GET, &job_path, Some(&tenant.api_key), None).await;
    assert_eq!(r.body["status"], "running", "{}", r.body);
    app.restart(false).await;

    // Reconciliation runs in the background at start.
    let mut agreed = false;
    for _ in 0..200 {
        let (in_index, in_postgres) = index_and_postgres_points(&app, &tenant).await;
        let r = call(&app, Method::GET, &job_path, Some(&tenant.api_key), None).await;
        if in_index == in_postgres && r.body["status"] == "done" {
            agreed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        agreed,
        "index was not reconciled with Postgres, or the stored job not finished"
    );
}

#[tokio::test]
async fn damaged_index_files_are_rebuilt_from_postgres() {
    let mut app = spawn_app().await;
    let (tenant, _) = tenant_with_manuals(&app, "damaged").await;
    app.restart(false).await; // graceful: the graph is dumped
    let index_dir = app.data_dir.path().join("index");
    let mut damaged = 0;
    for partition in std::fs::read_dir(&index_dir).unwrap().flatten() {
        for file in std::fs::read_dir(partition.path()).unwrap().flatten() {
            if file.file_name().to_string_lossy().ends_with(".hnsw.data") {
                let mut bytes = std::fs::read(file.path()).unwrap();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x5a;
                std::fs::write(file.path(), bytes).unwrap();
                damaged += 1;
            }
        }
    }
    assert!(damaged > 0, "no dump to damage");
    app.restart(true).await;
    let mut found = Vec::new();
    for _ in 0..200 {
        found = search(
            &app,
            &tenant.api_key,
            json!({"query": "priming port", "mode": "vector"}),
        )
        .await;
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        found.first().map(|h| h["name"].clone()),
        Some(json!("pump.md"))
    );
    let (in_index, in_postgres) = index_and_postgres_points(&app, &tenant).await;
    assert_eq!(in_index, in_postgres);
    let ready = call(&app, Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.body["checks"]["index"], "ok");
}

/// The index holds vectors and keyed pseudonyms only: no text, names, tenant ids or slugs in any file,
/// and deleting the tenant removes its partition.
#[tokio::test]
async fn index_files_reveal_no_text_or_tenant_and_go_with_the_tenant() {
    let mut app = spawn_app().await;
    let (tenant, _) = tenant_with_manuals(&app, "grep").await;
    app.restart(false).await; // dump graphs so every file kind exists
    let tenant_id: TenantId = tenant.id.parse().unwrap();
    let partition = app.state.indexer.partition(tenant_id).await.unwrap();
    let index_dir = app.data_dir.path().join("index");
    let mut files = Vec::new();
    for partition_dir in std::fs::read_dir(&index_dir).unwrap().flatten() {
        for file in std::fs::read_dir(partition_dir.path()).unwrap().flatten() {
            files.push(file.path());
        }
    }
    assert!(files
        .iter()
        .any(|f| f.to_string_lossy().ends_with(".hnsw.graph")));
    let forbidden = [
        "impeller",
        "AB-4471-X",
        "pump.md",
        "Priming",
        "NetHome",
        "garden",
        tenant.slug.as_str(),
        tenant.id.as_str(),
        &tenant.id.replace('-', ""),
    ];
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for word in forbidden {
            assert!(
                !text.contains(&word.to_lowercase()),
                "{} contains {word}",
                file.display()
            );
            assert!(
                !file.to_string_lossy().contains(word),
                "file name {} contains {word}",
                file.display()
            );
        }
    }

    let r = call(
        &app,
        Method::DELETE,
        &format!("/v1/admin/tenants/{}", tenant.id),
        Some(&app.operator_key),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        !index_dir.join(&partition.name).exists(),
        "partition left behind"
    );
}

async fn upload_file(app: &TestApp, key: &str, name: &str, bytes: Vec<u8>) -> Value {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
    );
    let r = app
        .client
        .post(app.url("/v1/documents"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    wait_for_job(app, key, body["job_id"].as_str().unwrap()).await
}

/// PDFs: text extracted per page (cited as `Page N`), scans without text refused with `no_text`, broken
/// files with `malformed_document`; the worker pool survives all of them.
#[tokio::test]
async fn pdf_manuals_are_ingested_page_by_page() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("pdf")).await;
    let key = &tenant.api_key;
    let job = upload_file(
        &app,
        key,
        "kestrel.pdf",
        include_bytes!("fixtures/manual.pdf").to_vec(),
    )
    .await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["chunks"], 2);
    let hits = search(&app, key, json!({"query": "F-2207", "mode": "keyword"})).await;
    assert_eq!(hits[0]["name"], "kestrel.pdf");
    assert_eq!(hits[0]["heading_path"], json!(["Page 2"]));
    assert!(hits[0]["snippet"]
        .as_str()
        .unwrap()
        .contains("reseat connector J4"));

    let job = upload_file(
        &app,
        key,
        "scan.pdf",
        include_bytes!("fixtures/scanned.pdf").to_vec(),
    )
    .await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "no_text", "{job}");
    let job = upload_file(
        &app,
        key,
        "broken.pdf",
        b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF".to_vec(),
    )
    .await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "malformed_document", "{job}");
    // The workers are still there.
    let job = upload_file(
        &app,
        key,
        "again.pdf",
        include_bytes!("fixtures/manual.pdf").to_vec(),
    )
    .await;
    assert_eq!(job["status"], "done", "{job}");
}

/// A remote OpenAI-compatible embedder: key leased from the keyring, 5xx retried, a rotated key picked up
/// after the provider refuses the old one; switching back to the local model re-embeds every chunk into a new
/// partition at the next start.
#[tokio::test]
async fn remote_embeddings_retry_rotate_and_switching_model_reembeds() {
    let provider = ragvault_testkit::FakeProvider::start().await;
    let url = format!("\"{}\"", provider.base_url);
    let dimension = ragvault_testkit::FAKE_EMBEDDING_DIMENSION.to_string();
    let mut app = ragvault_testkit::spawn_app_with(&[
        ("providers.fakeai.base_url", url.as_str()),
        ("embedding.provider", "\"fakeai\""),
        ("embedding.model", "\"fake-embed-1\""),
        ("embedding.dimension", dimension.as_str()),
    ])
    .await;
    let first_key = format!("fk-{}", "first".repeat(4));
    provider.accept(&first_key);
    // The service looked for the key at start and found none: set_provider_key re-reads it, as an operator would.
    app.set_provider_key("fakeai", &first_key).await;
    let tenant = app.create_tenant(&unique_slug("remote")).await;
    let key = tenant.api_key.clone();

    // The provider is overloaded for two requests: the job still succeeds.
    provider.fail_next(2, 503);
    ingest(&app, &key, "pump.md", PUMP_MANUAL, &[]).await;
    ingest(&app, &key, "router.md", ROUTER_MANUAL, &[]).await;
    let hits = search(
        &app,
        &key,
        json!({"query": "impeller blocked by debris", "mode": "vector"}),
    )
    .await;
    assert_eq!(hits[0]["name"], "pump.md", "{hits:?}");
    let r = call(
        &app,
        Method::POST,
        "/v1/search",
        Some(&key),
        Some(json!({"query": "x", "mode": "vector"})),
    )
    .await;
    assert_eq!(r.body["model"], "fakeai/fake-embed-1");

    // Rotation: the provider stops accepting the old key; the lease is refreshed once and the call retried.
    let second_key = format!("fk-{}", "second".repeat(4));
    app.store_provider_key("fakeai", &second_key);
    provider.accept(&second_key);
    provider.revoke(&first_key);
    ingest(&app, &key, "heater.md", HEATER_MANUAL, &[]).await;
    assert!(provider.rejected() >= 1);
    let logs = ragvault_testkit::captured_logs();
    assert!(
        !logs.contains(&first_key) && !logs.contains(&second_key),
        "a key reached the logs"
    );

    // Back to the local model: a new partition, every chunk re-embedded from its sealed text at start.
    let tenant_id: TenantId = tenant.id.parse().unwrap();
    let old_partition = app.state.indexer.partition(tenant_id).await.unwrap();
    app.settings.embedding.provider = "local".to_owned();
    app.restart(false).await;
    let new_partition = app.state.indexer.partition(tenant_id).await.unwrap();
    assert_ne!(old_partition.name, new_partition.name);
    assert_eq!(new_partition.dimension, 384);
    let mut agreed = false;
    for _ in 0..400 {
        let (in_index, in_postgres) = index_and_postgres_points(&app, &tenant).await;
        if in_index == in_postgres && !in_index.is_empty() {
            agreed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(agreed, "chunks were not re-embedded with the local model");
    let hits = search(&app, &key, json!({"query": "how do I restore the original settings of my wireless box", "mode": "vector"})).await;
    assert_eq!(hits[0]["name"], "router.md", "{hits:?}");
    // The other model's partition is gone (no tenant owns it any more).
    assert!(!app
        .data_dir
        .path()
        .join("index")
        .join(&old_partition.name)
        .exists());
}

/// Audio is transcribed by a Whisper-compatible provider with a leased key and ingested as its transcript;
/// without a transcription provider it is refused with 415.
#[tokio::test]
async fn audio_is_transcribed_then_searchable() {
    let provider = ragvault_testkit::FakeProvider::start().await;
    let url = format!("\"{}\"", provider.base_url);
    let app = ragvault_testkit::spawn_app_with(&[
        ("providers.whisper.base_url", url.as_str()),
        ("ingest.transcription_provider", "\"whisper\""),
    ])
    .await;
    let whisper_key = format!("wk-{}", "voice".repeat(4));
    provider.accept(&whisper_key);
    app.set_provider_key("whisper", &whisper_key).await;
    let tenant = app.create_tenant(&unique_slug("audio")).await;
    let key = &tenant.api_key;

    let mut wav = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00".to_vec();
    wav.extend_from_slice(&[0u8; 64]);
    wav.extend_from_slice(
        b"TRANSCRIPT: To descale the Kestrel kettle, fill it with vinegar and boil it twice.",
    );
    let job = upload_file(&app, key, "voice-note.wav", wav.clone()).await;
    assert_eq!(job["status"], "done", "{job}");
    let hits = search(
        &app,
        key,
        json!({"query": "descale kettle vinegar", "mode": "hybrid"}),
    )
    .await;
    assert_eq!(hits[0]["name"], "voice-note.wav", "{hits:?}");
    assert!(hits[0]["snippet"]
        .as_str()
        .unwrap()
        .contains("boil it twice"));
    assert!(provider.requests() >= 1);
    assert!(!ragvault_testkit::captured_logs().contains(&whisper_key));

    // A service without a transcription provider refuses audio up front.
    let plain = spawn_app().await;
    let other = plain.create_tenant(&unique_slug("noaudio")).await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(wav).file_name("x.wav"),
    );
    let r = plain
        .client
        .post(plain.url("/v1/documents"))
        .bearer_auth(&other.api_key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type");
}

/// Gemini's `batchEmbedContents` wire format: key in `x-goog-api-key`, a refused key (Gemini's 400
/// API_KEY_INVALID) refreshed once after rotation.
#[tokio::test]
async fn gemini_embeddings_work_and_pick_up_a_rotated_key() {
    let provider = ragvault_testkit::FakeProvider::start().await;
    let url = format!("\"{}\"", provider.gemini_base_url());
    let dimension = ragvault_testkit::FAKE_EMBEDDING_DIMENSION.to_string();
    let app = ragvault_testkit::spawn_app_with(&[
        ("providers.gemini.base_url", url.as_str()),
        ("providers.gemini.api", "\"gemini\""),
        ("embedding.provider", "\"gemini\""),
        ("embedding.model", "\"text-embedding-004\""),
        ("embedding.dimension", dimension.as_str()),
    ])
    .await;
    let first = format!("gk-{}", "one".repeat(6));
    provider.accept(&first);
    app.set_provider_key("gemini", &first).await;
    let tenant = app.create_tenant(&unique_slug("gemini")).await;
    ingest(&app, &tenant.api_key, "pump.md", PUMP_MANUAL, &[]).await;
    let second = format!("gk-{}", "two".repeat(6));
    app.store_provider_key("gemini", &second);
    provider.accept(&second);
    provider.revoke(&first);
    ingest(&app, &tenant.api_key, "router.md", ROUTER_MANUAL, &[]).await;
    assert!(provider.rejected() >= 1);
    let hits = search(
        &app,
        &tenant.api_key,
        json!({"query": "reset button router lights", "mode": "vector"}),
    )
    .await;
    assert_eq!(hits[0]["name"], "router.md", "{hits:?}");
}

/// A job run twice (two processes resuming it, or a resume racing a retry) stores its document once and
/// leaves no index point for the losing run's chunk ids.
#[tokio::test]
async fn a_job_run_twice_leaves_no_ghost_points() {
    use ragvault_ingest::pipeline::{Pipeline, PipelineSettings, Upload};
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("twice")).await;
    let tenant_id: TenantId = tenant.id.parse().unwrap();
    let tokenizer = std::sync::Arc::new(ragvault_embedding::tokenizer_from_env().unwrap());
    let settings = PipelineSettings {
        workers: 1,
        queue_capacity: 4,
        total_queue_capacity: 4,
        chunking: Default::default(),
        secret_policy: Default::default(),
        parse_timeout: std::time::Duration::from_secs(30),
    };
    let start = || {
        Pipeline::start(
            app.store.clone(),
            app.state.content.clone(),
            app.state.indexer.clone(),
            tokenizer.clone(),
            settings.clone(),
        )
    };
    // A process that accepted the upload and died before running it.
    let (dead, workers) = start();
    workers.iter().for_each(|w| w.abort());
    let upload = Upload {
        name: "pump.md".into(),
        content_type: Some("text/markdown".into()),
        content: PUMP_MANUAL.as_bytes().to_vec(),
        metadata: None,
    };
    let job_id = dead.submit(tenant_id, upload, "test").await.unwrap().job();
    drop(dead);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // Two processes start and both resume it.
    let (first, _w1) = start();
    let (second, _w2) = start();
    let (a, b) = tokio::join!(first.resume_unfinished(), second.resume_unfinished());
    assert_eq!((a.unwrap(), b.unwrap()), (1, 1));
    let job = wait_for_job(&app, &tenant.api_key, &job_id.to_string()).await;
    assert_eq!(job["status"], "done", "{job}");
    // Let the slower run finish too.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (in_index, in_postgres) = index_and_postgres_points(&app, &tenant).await;
    assert_eq!(
        in_index, in_postgres,
        "a duplicate run left points without chunks"
    );
    let documents = call(
        &app,
        Method::GET,
        "/v1/documents",
        Some(&tenant.api_key),
        None,
    )
    .await;
    assert_eq!(documents.body["documents"].as_array().unwrap().len(), 1);
}
