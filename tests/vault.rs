//! Provider keys leased from a real OpenBao dev server: login and renewal, rotation, revocation, outage,
//! single flight, the shipped policy, and log hygiene.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragvault_core::TenantId;
use ragvault_credentials::{
    tenant_path, CredentialsError, KeySource, LeaseManager, LeaseSettings, ProviderKeyRef,
    VaultConfig,
};
use ragvault_testkit::{captured_logs, spawn_app_with, OpenBao, OpenBaoOptions, TestApp};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn vault_config(bao: &OpenBao) -> VaultConfig {
    VaultConfig {
        addr: bao.addr.clone(),
        role_id: bao.role_id.clone(),
        secret_id_file: bao.secret_id_file.clone(),
        secret_id_wrapped: false,
        approle_mount: "approle".into(),
        kv_mount: "secret".into(),
        transit_mount: "transit".into(),
        request_timeout: Duration::from_millis(800),
    }
}

async fn manager(bao: &OpenBao, soft: Duration, hard: Duration) -> Arc<LeaseManager> {
    let source = KeySource::vault(vault_config(bao)).await.unwrap();
    let settings = LeaseSettings {
        soft_ttl: soft,
        hard_ttl: hard,
        jitter: 0.0,
        tick: Duration::from_millis(50),
    };
    Arc::new(LeaseManager::new(Arc::new(source), settings, None))
}

fn kv_reads(leases: &LeaseManager) -> u64 {
    leases.source().vault_backend().unwrap().kv_reads()
}

fn key_of(lease: &ragvault_credentials::Lease) -> String {
    lease.with_key(str::to_owned)
}

async fn eventually<F: FnMut() -> bool>(what: &str, timeout: Duration, mut check: F) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn concurrent_misses_cost_one_vault_read() {
    let bao = OpenBao::start().await;
    bao.put_key(
        "ragvault/providers/openai",
        &format!("sk-{}", "test-single-flight-1"),
    )
    .await;
    let leases = manager(&bao, Duration::from_secs(60), Duration::from_secs(600)).await;
    let before = kv_reads(&leases);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let leases = leases.clone();
            tokio::spawn(async move { leases.lease(&ProviderKeyRef::operator("openai")).await })
        })
        .collect();
    for task in tasks {
        let lease = task.await.unwrap().unwrap();
        assert_eq!(lease.version, 1);
    }
    assert_eq!(
        kv_reads(&leases) - before,
        1,
        "64 concurrent misses must be one read"
    );
    // Hits never touch Vault.
    for _ in 0..100 {
        leases
            .lease(&ProviderKeyRef::operator("openai"))
            .await
            .unwrap();
    }
    assert_eq!(kv_reads(&leases) - before, 1);
}

#[tokio::test]
async fn rotation_under_concurrent_use_has_no_failures() {
    let bao = OpenBao::start().await;
    let path = "ragvault/providers/anthropic";
    bao.put_key(path, "sk-rotate-v1").await;
    let leases = manager(&bao, Duration::from_millis(300), Duration::from_secs(60)).await;
    let refresher = tokio::spawn(leases.clone().run_refresher());
    let key_ref = ProviderKeyRef::operator("anthropic");
    leases.lease(&key_ref).await.unwrap();

    let failures = Arc::new(AtomicU64::new(0));
    let uses = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(3);
    let workers: Vec<_> = (0..200)
        .map(|_| {
            let (leases, key_ref) = (leases.clone(), key_ref.clone());
            let (failures, uses) = (failures.clone(), uses.clone());
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    match leases.lease(&key_ref).await {
                        // A request uses the key it was lent, even if a rotation lands meanwhile.
                        Ok(lease) => {
                            let key = key_of(&lease);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            if key != format!("sk-rotate-v{}", lease.version) {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    uses.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut latest = 1;
    while Instant::now() < stop_at - Duration::from_millis(800) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        latest = bao
            .put_key(path, &format!("sk-rotate-v{}", latest + 1))
            .await;
    }
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert!(uses.load(Ordering::Relaxed) > 1000);
    // The newest version is in use within one refresh interval.
    let leases2 = leases.clone();
    let key_ref2 = key_ref.clone();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let lease = leases2.lease(&key_ref2).await.unwrap();
        if lease.version == latest {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still on v{} after rotation to v{latest}",
            lease.version
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    refresher.abort();
}

#[tokio::test]
async fn a_rejected_key_triggers_exactly_one_refresh() {
    let bao = OpenBao::start().await;
    let path = "ragvault/providers/gemini";
    bao.put_key(path, "sk-gemini-v1").await;
    let leases = manager(&bao, Duration::from_secs(600), Duration::from_secs(600)).await;
    let key_ref = ProviderKeyRef::operator("gemini");
    let old = leases.lease(&key_ref).await.unwrap();
    bao.put_key(path, "sk-gemini-v2").await;
    let before = kv_reads(&leases);
    // Twenty requests all see a 401 for v1 at once: one re-read, and all retry with v2.
    let reports: Vec<_> = (0..20)
        .map(|_| {
            let (leases, old) = (leases.clone(), old.clone());
            tokio::spawn(async move { leases.report_rejected(&old).await })
        })
        .collect();
    for r in reports {
        let fresh = r.await.unwrap().unwrap();
        assert_eq!(fresh.version, 2);
        assert_eq!(key_of(&fresh), "sk-gemini-v2");
    }
    assert_eq!(kv_reads(&leases) - before, 1);
    // If Vault has nothing newer than the rejected key, the key is bad: say so instead of looping.
    let current = leases.lease(&key_ref).await.unwrap();
    let err = leases.report_rejected(&current).await.unwrap_err();
    assert!(
        matches!(err, CredentialsError::KeyRejected { version: 2, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn deleted_and_destroyed_secrets_revoke_the_lease_within_one_interval() {
    let bao = OpenBao::start().await;
    let path = "ragvault/providers/mistral";
    bao.put_key(path, "sk-mistral-v1").await;
    let leases = manager(&bao, Duration::from_millis(300), Duration::from_secs(60)).await;
    let refresher = tokio::spawn(leases.clone().run_refresher());
    let key_ref = ProviderKeyRef::operator("mistral");
    leases.lease(&key_ref).await.unwrap();

    bao.delete_current(path).await;
    let revoked_at = Instant::now();
    let l = leases.clone();
    eventually("lease revoked after delete", Duration::from_secs(3), || {
        l.status()
            .iter()
            .any(|s| s.provider == "mistral" && s.state == "unavailable")
    })
    .await;
    assert!(revoked_at.elapsed() < Duration::from_millis(300 + 500));
    let err = leases.lease(&key_ref).await.unwrap_err();
    assert!(err.to_string().contains("deleted"), "{err}");
    let status = leases.status();
    let reason = status[0].last_error.clone().unwrap();
    assert!(reason.contains("version 1 was deleted"), "{reason}");
    assert!(
        reason.contains("secret/ragvault/providers/mistral"),
        "{reason}"
    );

    // A new version restores the provider without a restart; destroying it revokes again.
    let v2 = bao.put_key(path, "sk-mistral-v2").await;
    let l = leases.clone();
    eventually("provider restored", Duration::from_secs(3), || {
        l.status()
            .iter()
            .any(|s| s.provider == "mistral" && s.state == "active" && s.key_version == Some(v2))
    })
    .await;
    bao.destroy(path, vec![v2]).await;
    let l = leases.clone();
    eventually(
        "lease revoked after destroy",
        Duration::from_secs(3),
        || {
            l.status().iter().any(|s| {
                s.provider == "mistral"
                    && s.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("destroyed"))
            })
        },
    )
    .await;
    refresher.abort();
}

#[tokio::test]
async fn tenant_keys_override_the_operator_key() {
    let bao = OpenBao::start().await;
    let tenant = TenantId::new();
    let other = TenantId::new();
    bao.put_key("ragvault/providers/openai", "sk-operator")
        .await;
    bao.put_key(&tenant_path(tenant, "openai"), "sk-tenant-own")
        .await;
    let leases = manager(&bao, Duration::from_secs(60), Duration::from_secs(600)).await;
    let own = leases
        .lease(&ProviderKeyRef::tenant("openai", tenant))
        .await
        .unwrap();
    assert_eq!(key_of(&own), "sk-tenant-own");
    assert!(own.source.contains(&tenant.to_string()));
    let fallback = leases
        .lease(&ProviderKeyRef::tenant("openai", other))
        .await
        .unwrap();
    assert_eq!(key_of(&fallback), "sk-operator");
    // A tenant key that was deleted does not silently fall back to the operator's key.
    bao.delete_current(&tenant_path(tenant, "openai")).await;
    let err = leases
        .force_refresh(&ProviderKeyRef::tenant("openai", tenant))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CredentialsError::SecretRevoked { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_secrets_name_the_path_not_the_value() {
    let bao = OpenBao::start().await;
    bao.put_fields(
        "ragvault/providers/openai",
        serde_json::json!({"key": "sk-wrong-field-name"}),
    )
    .await;
    bao.put_fields(
        "ragvault/providers/anthropic",
        serde_json::json!({"api_key": "sk-ant-fine", "base_url": "gopher://x"}),
    )
    .await;
    let leases = manager(&bao, Duration::from_secs(60), Duration::from_secs(600)).await;
    for (provider, needle) in [("openai", "api_key"), ("anthropic", "base_url")] {
        let err = leases
            .lease(&ProviderKeyRef::operator(provider))
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains(needle), "{message}");
        assert!(
            message.contains(&format!("ragvault/providers/{provider}")),
            "{message}"
        );
        assert!(!message.contains("sk-"), "{message}");
    }
}

#[tokio::test]
async fn vault_outage_serves_valid_leases_until_hard_expiry_then_recovers() {
    let bao = OpenBao::start().await;
    bao.put_key("ragvault/providers/openai", "sk-outage-v1")
        .await;
    let leases = manager(&bao, Duration::from_millis(300), Duration::from_secs(3)).await;
    let refresher = tokio::spawn(leases.clone().run_refresher());
    let key_ref = ProviderKeyRef::operator("openai");
    leases.lease(&key_ref).await.unwrap();

    bao.freeze();
    let frozen_at = Instant::now();
    // Past the refresh interval, requests are still served from the lease, without waiting on Vault.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = Instant::now();
    let lease = leases.lease(&key_ref).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "a request waited on Vault"
    );
    assert_eq!(key_of(&lease), "sk-outage-v1");
    let status = leases.status();
    assert!(
        status[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("unavailable")),
        "{status:?}"
    );
    assert!(leases.source().check().await.unwrap_err().is_outage());

    // After the hard expiry there is nothing safe to serve.
    tokio::time::sleep(
        Duration::from_secs(3).saturating_sub(frozen_at.elapsed()) + Duration::from_millis(300),
    )
    .await;
    assert!(leases.lease(&key_ref).await.is_err());

    bao.thaw();
    let l = leases.clone();
    eventually(
        "recovery after Vault returns",
        Duration::from_secs(10),
        || l.status().iter().any(|s| s.state == "active"),
    )
    .await;
    assert_eq!(
        key_of(&leases.lease(&key_ref).await.unwrap()),
        "sk-outage-v1"
    );
    refresher.abort();
}

#[tokio::test]
async fn token_is_renewed_across_its_ttl_and_relogin_follows_revocation() {
    let bao = OpenBao::start_with(OpenBaoOptions {
        token_ttl: Some("3s".into()),
        ..Default::default()
    })
    .await;
    bao.put_key("ragvault/providers/openai", "sk-renew-v1")
        .await;
    let source = Arc::new(KeySource::vault(vault_config(&bao)).await.unwrap());
    let backend = source.vault_backend().unwrap().clone();
    let maintainer = tokio::spawn(backend.clone().maintain_token());
    let leases = LeaseManager::new(source.clone(), LeaseSettings::default(), None);
    let key_ref = ProviderKeyRef::operator("openai");
    // Well past the 3 s TTL, the token still works because it was renewed, not replaced.
    tokio::time::sleep(Duration::from_secs(7)).await;
    leases.force_refresh(&key_ref).await.unwrap();
    assert_eq!(
        backend.logins(),
        1,
        "renewal should keep the first login alive"
    );
    // Stop the renewal task so that only the read below can notice the revocation.
    maintainer.abort();
    // Revoking the token forces one re-login on the next read, invisible to the caller.
    bao.revoke_non_root_tokens();
    let lease = leases.force_refresh(&key_ref).await.unwrap();
    assert_eq!(lease.version, 1);
    assert_eq!(backend.logins(), 2);
}

#[tokio::test]
async fn response_wrapped_secret_id_is_unwrapped_once() {
    let bao = OpenBao::start_with(OpenBaoOptions {
        wrap_ttl: Some("120s".into()),
        ..Default::default()
    })
    .await;
    bao.put_key("ragvault/providers/openai", "sk-wrapped-v1")
        .await;
    let mut config = vault_config(&bao);
    config.secret_id_wrapped = true;
    let source = KeySource::vault(config.clone()).await.unwrap();
    let leases = LeaseManager::new(Arc::new(source), LeaseSettings::default(), None);
    assert_eq!(
        key_of(
            &leases
                .lease(&ProviderKeyRef::operator("openai"))
                .await
                .unwrap()
        ),
        "sk-wrapped-v1"
    );
    // A wrapping token works once: a second process cannot reuse it.
    let err = KeySource::vault(config).await.unwrap_err().to_string();
    assert!(
        err.contains("already used") || err.contains("invalid"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_approle_credentials_are_clear_errors_without_the_value() {
    let bao = OpenBao::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-secret-id");
    std::fs::write(&wrong, "00000000-1111-2222-3333-444444444444\n").unwrap();
    let mut config = vault_config(&bao);
    config.secret_id_file = wrong.clone();
    let err = KeySource::vault(config.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refused") && err.contains(&wrong.display().to_string()),
        "{err}"
    );
    assert!(!err.contains("44444444"), "{err}");

    config.secret_id_file = dir.path().join("missing");
    let err = KeySource::vault(config.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");

    config.secret_id_file = bao.secret_id_file.clone();
    config.role_id = "not-the-role".into();
    assert!(matches!(
        KeySource::vault(config).await.unwrap_err(),
        CredentialsError::LoginRefused { .. }
    ));
}

/// The shipped policy lets ragvault do its job (every other test here runs under it) and nothing else.
#[tokio::test]
async fn the_ragvault_policy_denies_everything_outside_it() {
    let bao = OpenBao::start().await;
    bao.put_key("ragvault/providers/openai", "sk-policy").await;
    bao.put_key("other-app/database", "not-ragvaults").await;
    let secret_id = std::fs::read_to_string(&bao.secret_id_file).unwrap();
    let anon = bao.client_with_token("");
    let auth = vaultrs::auth::approle::login(&anon, "approle", &bao.role_id, secret_id.trim())
        .await
        .unwrap();
    assert_eq!(auth.policies.iter().filter(|p| *p == "ragvault").count(), 1);
    let client = bao.client_with_token(&auth.client_token);
    let allowed: Value = vaultrs::kv2::read(&client, "secret", "ragvault/providers/openai")
        .await
        .unwrap();
    assert_eq!(allowed["api_key"], "sk-policy");
    let denied = |r: Result<Value, vaultrs::error::ClientError>| {
        matches!(
            r,
            Err(vaultrs::error::ClientError::APIError { code: 403, .. })
        )
    };
    assert!(denied(
        vaultrs::kv2::read(&client, "secret", "other-app/database").await
    ));
    assert!(denied(
        vaultrs::kv2::read(&client, "secret", "ragvault/elsewhere").await
    ));
    // ragvault never writes provider keys, and cannot touch policies or other auth.
    let write = vaultrs::kv2::set(
        &client,
        "secret",
        "ragvault/providers/openai",
        &serde_json::json!({"api_key": "x"}),
    )
    .await;
    assert!(matches!(
        write,
        Err(vaultrs::error::ClientError::APIError { code: 403, .. })
    ));
    let policies = vaultrs::sys::policy::list(&client).await;
    assert!(matches!(
        policies,
        Err(vaultrs::error::ClientError::APIError { code: 403, .. })
    ));
}

/// Through the HTTP service: leases visible in /v1/admin/credentials, refresh on demand, readyz degraded
/// during an outage, audit events, and no key in the logs.
#[tokio::test]
async fn service_reports_credentials_and_never_logs_keys() {
    let bao = OpenBao::start().await;
    bao.put_key("ragvault/providers/openai", "sk-service-visible-v1")
        .await;
    let mut overrides = bao.settings_overrides();
    overrides.extend([
        (
            "providers.openai.base_url".to_owned(),
            "\"https://api.openai.example\"".to_owned(),
        ),
        (
            "credentials.lease_soft_ttl_secs".to_owned(),
            "60".to_owned(),
        ),
        ("vault.request_timeout_ms".to_owned(), "500".to_owned()),
    ]);
    let refs: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let app = spawn_app_with(&refs).await;

    // The lease is warmed by a background task at start: wait for it rather than race it.
    let mut creds = get_credentials(&app).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while creds["providers"][0]["state"] == "pending" && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        creds = get_credentials(&app).await;
    }
    assert_eq!(creds["source"], "vault");
    let openai = &creds["providers"][0];
    assert_eq!(openai["provider"], "openai");
    assert_eq!(openai["state"], "active");
    assert_eq!(openai["key_version"], 1);

    // Rotation picked up on demand.
    bao.put_key("ragvault/providers/openai", "sk-service-visible-v2")
        .await;
    let refreshed: Value = app
        .client
        .post(app.url("/v1/admin/credentials/openai/refresh"))
        .bearer_auth(&app.operator_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refreshed["key_version"], 2);
    let bad = app
        .client
        .post(app.url("/v1/admin/credentials/Not..Valid/refresh"))
        .bearer_auth(&app.operator_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Tenant keys never see this.
    let tenant = app
        .create_tenant(&ragvault_testkit::unique_slug("creds"))
        .await;
    let r = app
        .client
        .get(app.url("/v1/admin/credentials"))
        .bearer_auth(&tenant.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Audit: leased, rotated (written asynchronously).
    let store = app.store.clone();
    let mut actions = Vec::new();
    for _ in 0..40 {
        actions = store
            .list_audit(None, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect::<Vec<_>>();
        if actions.iter().any(|a| a == "credential.rotated") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        actions.iter().any(|a| a == "credential.leased"),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a == "credential.rotated"),
        "{actions:?}"
    );

    // Vault frozen: readiness degraded, not failing; recovers without restart.
    bao.freeze();
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["key_source"], "degraded", "{ready}");
    bao.thaw();
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["key_source"], "ok", "{ready}");

    let metrics = ragvault_testkit::http::metrics_text(&app).await;
    assert!(
        metrics.contains(
            r#"ragvault_credential_refresh_total{provider="openai",tenant="",outcome="ok"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ragvault_credential_key_version{provider="openai",tenant=""} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("ragvault_credential_lease_age_seconds{provider=\"openai\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("ragvault_vault_logins_total 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("sk-service-visible"));

    let body = get_credentials(&app).await.to_string();
    assert!(!body.contains("sk-service-visible"), "{body}");
    let logs = captured_logs();
    assert!(
        !logs.contains("sk-service-visible"),
        "a provider key reached the logs"
    );
    let secret_id = std::fs::read_to_string(&bao.secret_id_file).unwrap();
    assert!(
        !logs.contains(secret_id.trim()),
        "the AppRole secret_id reached the logs"
    );
}

async fn get_credentials(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/v1/admin/credentials"))
        .bearer_auth(&app.operator_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Under steady load, Vault sees about one read per key per refresh interval, however many requests run.
#[tokio::test]
async fn steady_load_costs_one_read_per_refresh_interval() {
    let bao = OpenBao::start().await;
    bao.put_key("ragvault/providers/openai", "sk-steady").await;
    let soft = Duration::from_millis(500);
    let leases = manager(&bao, soft, Duration::from_secs(60)).await;
    let refresher = tokio::spawn(leases.clone().run_refresher());
    let key_ref = ProviderKeyRef::operator("openai");
    leases.lease(&key_ref).await.unwrap();
    let before = kv_reads(&leases);
    let run_for = Duration::from_secs(5);
    let served = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + run_for;
    let workers: Vec<_> = (0..50)
        .map(|_| {
            let (leases, key_ref, served) = (leases.clone(), key_ref.clone(), served.clone());
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    leases.lease(&key_ref).await.unwrap();
                    served.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let reads = kv_reads(&leases) - before;
    let intervals = (run_for.as_millis() / soft.as_millis()) as u64;
    assert!(
        (intervals - 2..=intervals + 1).contains(&reads),
        "{reads} Vault reads for {intervals} refresh intervals ({} leases served)",
        served.load(Ordering::Relaxed)
    );
    refresher.abort();
}

/// With `database.credentials = "vault"`, ragvault logs in to Postgres with short-lived logins from the
/// database engine: renewed, rolled over before they end, old ones revoked, and no request fails.
#[tokio::test]
async fn database_logins_roll_over_under_load_without_failures() {
    use sqlx::{Connection, Executor, Row};
    let admin_url = std::env::var("RAGVAULT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    admin
        .execute(
            "DO $$ BEGIN CREATE ROLE ragvault_owner NOLOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
        )
        .await
        .unwrap();
    let db = ragvault_testkit::TestDatabase::create().await;
    admin
        .execute(format!(r#"ALTER DATABASE "{}" OWNER TO ragvault_owner"#, db.name).as_str())
        .await
        .unwrap();
    let engine_url = format!(
        "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:5432/{}?sslmode=disable",
        db.name
    );
    let bao = OpenBao::start_with(OpenBaoOptions {
        database: Some((engine_url, "4s".into(), "8s".into())),
        ..Default::default()
    })
    .await;
    let mut overrides = bao.settings_overrides();
    overrides.push(("database.credentials".into(), "\"vault\"".into()));
    let refs: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let db_name = db.name.clone();
    let app = ragvault_testkit::spawn_app_in(db, &refs).await;

    let first = get_credentials(&app).await["database"].clone();
    assert_eq!(first["source"], "vault", "{first}");
    let first_user = first["username"].as_str().unwrap().to_owned();
    assert!(first_user.starts_with("v-"), "{first_user}");

    // Steady queries through the API while the login is renewed and then replaced.
    let failures = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(9);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, key) = (
                app.client.clone(),
                app.url("/v1/admin/tenants"),
                app.operator_key.clone(),
            );
            let (failures, served) = (failures.clone(), served.clone());
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    let ok = client
                        .get(&url)
                        .bearer_auth(&key)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during the rollover"
    );
    assert!(served.load(Ordering::Relaxed) > 200);
    let now = get_credentials(&app).await["database"].clone();
    assert!(now["renewals"].as_u64().unwrap() >= 1, "{now}");
    assert!(now["rollovers"].as_u64().unwrap() >= 1, "{now}");
    let current_user = now["username"].as_str().unwrap().to_owned();
    assert_ne!(current_user, first_user);

    let actions: Vec<String> = app
        .store
        .list_audit(None, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        actions.iter().any(|a| a == "database_login.renewed"),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a == "database_login.rolled_over"),
        "{actions:?}"
    );

    // The first login was revoked (Vault dropped the role); the schema belongs to the owner role.
    let mut gone = false;
    for _ in 0..40 {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
            .bind(&first_user)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if count == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(gone, "the first database login was never revoked");
    let db_admin_url = format!("{}/{db_name}", admin_url.rsplit_once('/').unwrap().0);
    let mut in_db = sqlx::PgConnection::connect(&db_admin_url).await.unwrap();
    let owner: String = in_db
        .fetch_one("SELECT tableowner FROM pg_tables WHERE tablename = 'tenants'")
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "ragvault_owner");
    in_db.close().await.ok();

    // Leave no login role behind on the shared Postgres server (Vault revoked the older ones).
    app.shutdown().await.unwrap();
    let _ = admin
        .execute(format!(r#"DROP ROLE IF EXISTS "{current_user}""#).as_str())
        .await;
}

/// One call to the fake OpenAI endpoint with a leased key, classifying a 401/403 as a refused key.
async fn chat(
    http: &reqwest::Client,
    base_url: &str,
    lease: Arc<ragvault_credentials::Lease>,
) -> Result<u64, ragvault_credentials::ProviderCallError<String>> {
    use ragvault_credentials::ProviderCallError;
    let request = lease.with_key(|key| {
        http.post(format!("{base_url}/chat/completions"))
            .bearer_auth(key)
            .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
    });
    let response = request
        .send()
        .await
        .map_err(|e| ProviderCallError::Other(e.to_string()))?;
    match response.status().as_u16() {
        200 => Ok(lease.version),
        401 | 403 => Err(ProviderCallError::Unauthorized(format!(
            "HTTP {}",
            response.status()
        ))),
        code => Err(ProviderCallError::Other(format!("HTTP {code}"))),
    }
}

/// The provider stops accepting the old key before ragvault's next refresh: the refused call causes one
/// Vault read and one retry with the new version, invisible to the caller. A key the provider keeps
/// refusing takes the provider out of service until a new version is written.
#[tokio::test]
async fn a_refused_key_is_refreshed_and_retried_once_then_the_circuit_opens() {
    let bao = OpenBao::start().await;
    let provider = ragvault_testkit::FakeProvider::start().await;
    let path = "ragvault/providers/openai";
    bao.put_key(path, "sk-fake-v1").await;
    provider.accept("sk-fake-v1");
    let leases = manager(&bao, Duration::from_secs(600), Duration::from_secs(600)).await;
    let key_ref = ProviderKeyRef::operator("openai");
    let http = reqwest::Client::new();
    let base = provider.base_url.clone();
    let answered = leases
        .call_with_lease(&key_ref, |lease| chat(&http, &base, lease))
        .await
        .unwrap();
    assert_eq!(answered, 1);

    // Rotation: the provider accepts only v2 from now on; ragvault has not refreshed yet.
    bao.put_key(path, "sk-fake-v2").await;
    provider.accept("sk-fake-v2");
    provider.revoke("sk-fake-v1");
    let (reads, calls) = (kv_reads(&leases), provider.requests());
    let answered = leases
        .call_with_lease(&key_ref, |lease| chat(&http, &base, lease))
        .await
        .unwrap();
    assert_eq!(answered, 2, "the retry must use the new version");
    assert_eq!(kv_reads(&leases) - reads, 1, "exactly one forced refresh");
    assert_eq!(provider.requests() - calls, 2, "exactly one retry");

    // The provider revokes v2 and Vault has nothing newer: after three refusals the provider is out.
    provider.revoke("sk-fake-v2");
    for _ in 0..ragvault_credentials::AUTH_FAILURE_LIMIT {
        assert!(leases
            .call_with_lease(&key_ref, |lease| chat(&http, &base, lease))
            .await
            .is_err());
    }
    let calls = provider.requests();
    let err = leases
        .call_with_lease(&key_ref, |lease| chat(&http, &base, lease))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ragvault_credentials::LeasedCallError::Credentials(_)),
        "{err}"
    );
    assert_eq!(
        provider.requests(),
        calls,
        "an open circuit sends nothing to the provider"
    );
    let status = leases.status();
    assert_eq!(status[0].state, "unavailable");
    assert!(status[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("refused key version 2"));
    // Refreshing still finds only the refused version: it stays out.
    assert!(leases.force_refresh(&key_ref).await.is_err());

    // A new version closes the circuit.
    bao.put_key(path, "sk-fake-v3").await;
    provider.accept("sk-fake-v3");
    leases.force_refresh(&key_ref).await.unwrap();
    let answered = leases
        .call_with_lease(&key_ref, |lease| chat(&http, &base, lease))
        .await
        .unwrap();
    assert_eq!(answered, 3);
}

/// OpenBao killed outright mid-run and started again (file storage, unsealed again): valid leases keep
/// serving while it is gone, refreshes fail and retry, and everything recovers without a restart of
/// ragvault, including picking up a rotation written after the restart.
#[tokio::test]
async fn vault_killed_and_restarted_recovers_without_restarting_ragvault() {
    let mut bao = OpenBao::start_persistent().await;
    let path = "ragvault/providers/openai";
    bao.put_key(path, "sk-restart-v1").await;
    let leases = manager(&bao, Duration::from_millis(300), Duration::from_secs(30)).await;
    let refresher = tokio::spawn(leases.clone().run_refresher());
    let key_ref = ProviderKeyRef::operator("openai");
    leases.lease(&key_ref).await.unwrap();

    bao.kill();
    let mut served = 0;
    let down_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < down_until {
        let lease = leases.lease(&key_ref).await.unwrap();
        assert_eq!(key_of(&lease), "sk-restart-v1");
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served > 50);
    let failed = leases.status()[0].refreshes_failed;
    assert!(
        failed >= 1,
        "refreshes should have been attempted and failed"
    );
    assert!(leases.source().check().await.unwrap_err().is_outage());

    bao.restart().await;
    leases.source().check().await.unwrap();
    bao.put_key(path, "sk-restart-v2").await;
    let l = leases.clone();
    eventually(
        "rotation picked up after the restart",
        Duration::from_secs(10),
        || {
            l.status()
                .iter()
                .any(|s| s.state == "active" && s.key_version == Some(2))
        },
    )
    .await;
    assert_eq!(
        key_of(&leases.lease(&key_ref).await.unwrap()),
        "sk-restart-v2"
    );
    refresher.abort();
}

/// A "Vault" that answers 5xx or garbage: a clear error naming the address, no panic, no secret.
#[tokio::test]
async fn vault_answering_errors_or_garbage_is_a_clear_error() {
    use axum::http::StatusCode;
    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    }
    let failing = serve(axum::Router::new().fallback(|| async {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "<html>upstream exploded</html>",
        )
    }))
    .await;
    let garbage =
        serve(axum::Router::new().fallback(|| async { (StatusCode::OK, "definitely not json") }))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let secret_id_file = dir.path().join("secret-id");
    std::fs::write(&secret_id_file, "top-secret-secret-id-value\n").unwrap();
    for addr in [failing, garbage] {
        let config = VaultConfig {
            addr: addr.clone(),
            role_id: "ragvault".into(),
            secret_id_file: secret_id_file.clone(),
            secret_id_wrapped: false,
            approle_mount: "approle".into(),
            kv_mount: "secret".into(),
            transit_mount: "transit".into(),
            request_timeout: Duration::from_secs(2),
        };
        let err = KeySource::vault(config).await.unwrap_err();
        assert!(err.is_outage(), "{err}");
        let message = err.to_string();
        assert!(message.contains(&addr), "{message}");
        assert!(!message.contains("top-secret"), "{message}");
    }
}

/// Per-tenant KEKs in Vault transit under the shipped policy: data keys generated, unwrapped, rewrapped
/// after rotation, and unreadable once the KEK is destroyed, while another tenant stays readable.
#[tokio::test]
async fn transit_keks_wrap_rotate_and_crypto_shred() {
    use ragvault_credentials::{SealContext, SealPurpose};
    let bao = OpenBao::start().await;
    let source = KeySource::vault(vault_config(&bao)).await.unwrap();
    let (tenant, other) = (TenantId::new(), TenantId::new());
    source.create_tenant_kek(tenant).await.unwrap();
    source.create_tenant_kek(other).await.unwrap();
    let id = uuid::Uuid::new_v4();
    let (dek, wrapped) = source.generate_data_key(tenant, id).await.unwrap();
    assert!(wrapped.0.starts_with("vault:v1:"), "{}", wrapped.0);
    let ctx = SealContext {
        purpose: SealPurpose::ChunkText,
        tenant,
        document: ragvault_core::DocumentId::new(),
        chunk: Some(ragvault_core::ChunkId::new()),
        ordinal: 0,
    };
    let sealed = dek.seal(&ctx, b"hold reset for ten seconds").unwrap();
    let unwrapped = source.unwrap_data_key(tenant, id, &wrapped).await.unwrap();
    assert_eq!(
        unwrapped.open(&ctx, &sealed).unwrap(),
        b"hold reset for ten seconds"
    );
    // Another tenant's KEK cannot unwrap it.
    assert!(source.unwrap_data_key(other, id, &wrapped).await.is_err());

    source.rotate_tenant_kek(tenant).await.unwrap();
    let rewrapped = source.rewrap_data_key(tenant, &wrapped).await.unwrap();
    assert!(rewrapped.0.starts_with("vault:v2:"), "{}", rewrapped.0);
    let after = source
        .unwrap_data_key(tenant, id, &rewrapped)
        .await
        .unwrap();
    assert_eq!(
        after.open(&ctx, &sealed).unwrap(),
        b"hold reset for ten seconds"
    );

    let (other_dek, other_wrapped) = source
        .generate_data_key(other, uuid::Uuid::new_v4())
        .await
        .unwrap();
    source.destroy_tenant_kek(tenant).await.unwrap();
    for w in [&wrapped, &rewrapped] {
        let err = source.unwrap_data_key(tenant, id, w).await.unwrap_err();
        assert!(matches!(err, CredentialsError::KekMissing { .. }), "{err}");
    }
    // Destroying twice is not an error; the other tenant is untouched.
    source.destroy_tenant_kek(tenant).await.unwrap();
    assert!(source
        .unwrap_data_key(other, other_dek.id(), &other_wrapped)
        .await
        .is_ok());
    // The KEK is really gone from Vault, not just hidden from ragvault.
    let read = vaultrs::transit::key::read(
        &bao.root(),
        "transit",
        &ragvault_credentials::kek_name(tenant),
    )
    .await;
    assert!(read.is_err());
}

/// Through the service with Vault: a tenant's KEK is a transit key created with the tenant and destroyed
/// with it.
#[tokio::test]
async fn tenant_lifecycle_creates_and_destroys_its_transit_key() {
    let bao = OpenBao::start().await;
    let overrides = bao.settings_overrides();
    let refs: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let app = spawn_app_with(&refs).await;
    let tenant = app
        .create_tenant(&ragvault_testkit::unique_slug("transit"))
        .await;
    let tenant_id: TenantId = tenant.id.parse().unwrap();
    let name = ragvault_credentials::kek_name(tenant_id);
    vaultrs::transit::key::read(&bao.root(), "transit", &name)
        .await
        .unwrap();
    let keys = app.store.list_data_keys(tenant_id).await.unwrap();
    assert!(
        keys.iter().all(|k| k.wrapped_key.starts_with("vault:v1:")),
        "{keys:?}"
    );

    let rotated: Value = app
        .client
        .post(app.url(&format!("/v1/admin/tenants/{}/rotate-keys", tenant.id)))
        .bearer_auth(&app.operator_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rotated["rewrapped"], 2, "{rotated}");
    let keys = app.store.list_data_keys(tenant_id).await.unwrap();
    assert!(
        keys.iter().all(|k| k.wrapped_key.starts_with("vault:v2:")),
        "{keys:?}"
    );

    let deleted = app
        .client
        .delete(app.url(&format!("/v1/admin/tenants/{}", tenant.id)))
        .bearer_auth(&app.operator_key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert!(vaultrs::transit::key::read(&bao.root(), "transit", &name)
        .await
        .is_err());
}

/// With Vault unreachable, creating a tenant (which needs a new transit key) fails with 503 and writes
/// nothing; existing tenants keep working.
#[tokio::test]
async fn tenant_creation_during_a_vault_outage_is_503_and_writes_nothing() {
    let bao = OpenBao::start().await;
    let mut overrides = bao.settings_overrides();
    overrides.push(("vault.request_timeout_ms".into(), "500".into()));
    let refs: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let app = spawn_app_with(&refs).await;
    let existing = app
        .create_tenant(&ragvault_testkit::unique_slug("before"))
        .await;
    bao.freeze();
    let response = app
        .client
        .post(app.url("/v1/admin/tenants"))
        .bearer_auth(&app.operator_key)
        .json(&serde_json::json!({"slug": ragvault_testkit::unique_slug("during")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "key_source_unavailable", "{body}");
    assert_eq!(
        app.store.list_tenants().await.unwrap().len(),
        1,
        "a tenant was half written"
    );
    let me = app
        .client
        .get(app.url("/v1/whoami"))
        .bearer_auth(&existing.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    bao.thaw();
}
