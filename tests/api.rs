//! End-to-end tests of the HTTP service: the real server, a fresh Postgres database per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragvault_testkit::http::{assert_error, call, reply, wait_for_job};
use ragvault_testkit::{captured_logs, spawn_app, spawn_app_with, unique_slug, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let health = call(&app, Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
    let ready = call(&app, Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["checks"]["postgres"], "ok");
    assert_eq!(ready.body["checks"]["key_source"], "ok");
}

#[tokio::test]
async fn tenant_and_key_lifecycle() {
    let app = spawn_app().await;
    let slug = unique_slug("life");
    let created = call(
        &app,
        Method::POST,
        "/v1/admin/tenants",
        Some(&app.operator_key),
        Some(json!({"slug": slug, "environment": "sandbox"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["slug"], slug.as_str());
    assert_eq!(created.body["environment"], "sandbox");
    assert_eq!(created.body["scopes"], json!(["ingest", "ask", "tokens"]));
    let tenant_id = created.body["id"].as_str().unwrap().to_owned();
    let first_key = created.body["api_key"].as_str().unwrap().to_owned();
    assert!(first_key.starts_with("rvk_"));

    let me = call(&app, Method::GET, "/v1/whoami", Some(&first_key), None).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["tenant_id"], tenant_id.as_str());
    assert_eq!(me.body["scopes"], json!(["ingest", "ask", "tokens"]));

    // A later key gets exactly the scopes asked for.
    let (ask_key_id, ask_key) = app.issue_key(&tenant_id, &["ask"]).await;
    let me = call(&app, Method::GET, "/v1/whoami", Some(&ask_key), None).await;
    assert_eq!(me.body["scopes"], json!(["ask"]));

    // Listing shows metadata only: neither keys nor hashes.
    let listed = call(
        &app,
        Method::GET,
        &format!("/v1/admin/tenants/{tenant_id}/api-keys"),
        Some(&app.operator_key),
        None,
    )
    .await;
    assert_eq!(listed.status, 200);
    let keys = listed.body["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let listing = listed.body.to_string();
    assert!(!listing.contains(&first_key) && !listing.contains(&ask_key));
    assert!(keys
        .iter()
        .all(|k| k.get("key_hash").is_none() && k.get("api_key").is_none()));

    // Revocation takes effect on the very next request; revoking twice is harmless.
    let revoke_path = format!("/v1/admin/tenants/{tenant_id}/api-keys/{ask_key_id}");
    let revoked = call(
        &app,
        Method::DELETE,
        &revoke_path,
        Some(&app.operator_key),
        None,
    )
    .await;
    assert_eq!(revoked.status, 200);
    assert!(revoked.body["revoked_at"].is_string());
    let refused = call(&app, Method::GET, "/v1/whoami", Some(&ask_key), None).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "api_key_revoked");
    let again = call(
        &app,
        Method::DELETE,
        &revoke_path,
        Some(&app.operator_key),
        None,
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["revoked_at"], revoked.body["revoked_at"]);
    // The other key is untouched.
    let me = call(&app, Method::GET, "/v1/whoami", Some(&first_key), None).await;
    assert_eq!(me.status, 200);

    // Every change is in the audit log, once.
    let audit = call(
        &app,
        Method::GET,
        &format!("/v1/admin/audit?tenant={tenant_id}"),
        Some(&app.operator_key),
        None,
    )
    .await;
    let actions: Vec<&str> = audit.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.created",
            "api_key.issued",
            "api_key.issued",
            "api_key.revoked"
        ]
    );
    assert!(!audit.body.to_string().contains(&ask_key));

    // last_used_at is recorded (off the request path, so poll briefly).
    let mut used = false;
    for _ in 0..50 {
        let keys = app
            .store
            .list_api_keys(tenant_id.parse().unwrap())
            .await
            .unwrap();
        if keys.iter().any(|k| k.last_used_at.is_some()) {
            used = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(used, "last_used_at was never recorded");
}

#[tokio::test]
async fn scopes_are_enforced() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("scope")).await;
    let (_, ask_only) = app.issue_key(&tenant.id, &["ask"]).await;
    let (_, admin_key) = app.issue_key(&tenant.id, &["admin"]).await;
    let doc = json!({"name": "manual.txt", "content": "hello", "content_type": "text/plain"});

    // An ask-only key cannot ingest, mint tokens, manage keys or reach admin routes...
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&ask_only),
        Some(doc.clone()),
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "insufficient_scope");
    let r = call(
        &app,
        Method::POST,
        "/v1/widget-tokens",
        Some(&ask_only),
        Some(json!({})),
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "insufficient_scope");
    let r = call(&app, Method::GET, "/v1/api-keys", Some(&ask_only), None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "insufficient_scope");
    for (method, path) in [
        (Method::GET, "/v1/admin/tenants".to_owned()),
        (
            Method::GET,
            format!("/v1/admin/tenants/{}/api-keys", tenant.id),
        ),
        (Method::GET, "/v1/admin/audit".to_owned()),
    ] {
        let r = call(&app, method, &path, Some(&ask_only), None).await;
        assert_error(&r, StatusCode::FORBIDDEN, "operator_key_required");
    }
    let r = call(
        &app,
        Method::POST,
        "/v1/admin/tenants",
        Some(&ask_only),
        Some(json!({"slug": unique_slug("nope")})),
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "operator_key_required");
    // ...but passes the scope check where it has the scope (no documents yet: a "no sources" answer).
    let r = call(
        &app,
        Method::POST,
        "/v1/ask",
        Some(&ask_only),
        Some(json!({"query": "hi"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["no_sources"], true);

    // The tenant's first key has ingest, ask and tokens but not admin; a tenant `admin` key is still not
    // an operator key.
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&tenant.api_key),
        Some(doc),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = call(
        &app,
        Method::GET,
        "/v1/api-keys",
        Some(&tenant.api_key),
        None,
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "insufficient_scope");
    let r = call(
        &app,
        Method::GET,
        "/v1/admin/tenants",
        Some(&admin_key),
        None,
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "operator_key_required");

    // Operator keys manage tenants but do not act as a tenant.
    let r = call(
        &app,
        Method::POST,
        "/v1/ask",
        Some(&app.operator_key),
        Some(json!({"query": "x"})),
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "tenant_key_required");

    // A tenant admin key manages its own tenant's keys.
    let issued = call(
        &app,
        Method::POST,
        "/v1/api-keys",
        Some(&admin_key),
        Some(json!({"scopes": ["ingest"], "name": "ci uploader"})),
    )
    .await;
    assert_eq!(issued.status, 201, "{}", issued.body);
    assert_eq!(issued.body["scopes"], json!(["ingest"]));
    assert_eq!(issued.body["name"], "ci uploader");
    let new_id = issued.body["id"].as_str().unwrap();
    let listed = call(&app, Method::GET, "/v1/api-keys", Some(&admin_key), None).await;
    assert_eq!(listed.body["api_keys"].as_array().unwrap().len(), 4);
    let r = call(
        &app,
        Method::DELETE,
        &format!("/v1/api-keys/{new_id}"),
        Some(&admin_key),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn keys_never_cross_tenants() {
    let app = spawn_app().await;
    let a = app.create_tenant(&unique_slug("ta")).await;
    let b = app.create_tenant(&unique_slug("tb")).await;
    let (_, a_admin) = app.issue_key(&a.id, &["admin"]).await;
    let (b_key_id, _) = app.issue_key(&b.id, &["ask"]).await;

    let me = call(&app, Method::GET, "/v1/whoami", Some(&a.api_key), None).await;
    assert_eq!(me.body["tenant_id"], a.id.as_str());
    let me = call(&app, Method::GET, "/v1/whoami", Some(&b.api_key), None).await;
    assert_eq!(me.body["tenant_id"], b.id.as_str());

    // A's public id with B's secret, and B's public id with A's secret, are both refused.
    let (a_pub, a_secret) = split_key(&a.api_key);
    let (b_pub, b_secret) = split_key(&b.api_key);
    for forged in [
        format!("rvk_{a_pub}_{b_secret}"),
        format!("rvk_{b_pub}_{a_secret}"),
    ] {
        let r = call(&app, Method::GET, "/v1/whoami", Some(&forged), None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_api_key");
    }

    // A's admin key cannot see or revoke B's keys.
    let r = call(
        &app,
        Method::DELETE,
        &format!("/v1/api-keys/{b_key_id}"),
        Some(&a_admin),
        None,
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let listed = call(&app, Method::GET, "/v1/api-keys", Some(&a_admin), None).await;
    assert!(!listed.body.to_string().contains(&b_key_id));
    // Nor can the operator route revoke B's key under A's id.
    let r = call(
        &app,
        Method::DELETE,
        &format!("/v1/admin/tenants/{}/api-keys/{b_key_id}", a.id),
        Some(&app.operator_key),
        None,
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let me = call(&app, Method::GET, "/v1/whoami", Some(&b.api_key), None).await;
    assert_eq!(me.status, 200);
}

fn split_key(key: &str) -> (String, String) {
    let rest = key.strip_prefix("rvk_").unwrap();
    let (public, secret) = rest.split_once('_').unwrap();
    (public.to_owned(), secret.to_owned())
}

#[tokio::test]
async fn expired_keys_and_suspended_tenants_are_refused() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("exp")).await;
    let issued = call(
        &app,
        Method::POST,
        &format!("/v1/admin/tenants/{}/api-keys", tenant.id),
        Some(&app.operator_key),
        Some(json!({"scopes": ["ask"], "expires_in_seconds": 1})),
    )
    .await;
    assert_eq!(issued.status, 201);
    let short_lived = issued.body["api_key"].as_str().unwrap().to_owned();
    let r = call(&app, Method::GET, "/v1/whoami", Some(&short_lived), None).await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = call(&app, Method::GET, "/v1/whoami", Some(&short_lived), None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "api_key_expired");

    let path = format!("/v1/admin/tenants/{}", tenant.id);
    let r = call(
        &app,
        Method::PATCH,
        &path,
        Some(&app.operator_key),
        Some(json!({"status": "suspended"})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "suspended");
    let r = call(&app, Method::GET, "/v1/whoami", Some(&tenant.api_key), None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "tenant_suspended");
    let r = call(
        &app,
        Method::PATCH,
        &path,
        Some(&app.operator_key),
        Some(json!({"status": "active"})),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(&app, Method::GET, "/v1/whoami", Some(&tenant.api_key), None).await;
    assert_eq!(r.status, 200);

    for bad in [
        json!({"scopes": ["ask"], "expires_in_seconds": 0}),
        json!({"scopes": ["ask"], "expires_at": "2001-01-01T00:00:00Z"}),
        json!({"scopes": ["ask"], "expires_at": "tomorrow"}),
        json!({"scopes": ["ask"], "expires_at": "2100-01-01T00:00:00Z", "expires_in_seconds": 60}),
    ] {
        let r = call(
            &app,
            Method::POST,
            &format!("/v1/admin/tenants/{}/api-keys", tenant.id),
            Some(&app.operator_key),
            Some(bad),
        )
        .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_expiry");
    }
}

/// Authentication answers from memory between changes; a change made behind the server's back (another
/// process, hand-written SQL) reaches it through Postgres' notification, and a lost listener is treated
/// as a missed change.
#[tokio::test]
async fn key_changes_made_behind_the_servers_back_reach_its_authentication_cache() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("behind")).await;
    let tenant_id: uuid::Uuid = tenant.id.parse().unwrap();
    let pool = app.store.pool();
    let sql = |statement: &'static str| async move {
        sqlx::query(statement)
            .bind(tenant_id)
            .execute(pool)
            .await
            .unwrap();
    };
    let whoami = || call(&app, Method::GET, "/v1/whoami", Some(&tenant.api_key), None);
    // Polls until the key's state reads as `code` ("" = accepted); how long it took, if within 2 s.
    let settles_to = |code: &'static str| async move {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            let r = whoami().await;
            let seen = if r.status == 200 {
                ""
            } else {
                r.body["error"]["code"].as_str().unwrap_or("?")
            };
            if seen == code {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    };
    // Creating the tenant announced itself twice: at once inside the server, and later by Postgres'
    // notification. A key cached between the two is voided by the second; wait until the feed is quiet so
    // the cached row below is only voided by what this test does.
    let changes = app.state.access.changes().clone();
    let quiet_since = |generation: Option<u64>| {
        let changes = changes.clone();
        async move {
            let mut last = (generation, std::time::Instant::now());
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                let now = changes.current();
                if now != last.0 {
                    last = (now, std::time::Instant::now());
                } else if now.is_some() && last.1.elapsed() > Duration::from_millis(300) {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("access changes kept moving (or the listener never connected)");
        }
    };
    let generation = quiet_since(changes.current()).await;
    assert_eq!(whoami().await.status, 200);

    // With the notification silenced (nothing but this test does that), the row read before answers:
    // authentication did not go back to Postgres.
    sql("ALTER TABLE api_keys DISABLE TRIGGER api_keys_access_change").await;
    sql("UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1").await;
    assert_eq!(
        whoami().await.status,
        200,
        "the key row was not cached (generation {generation:?} -> {:?})",
        changes.current()
    );
    sqlx::query("SELECT pg_notify('ragvault_access_changes', 'test')")
        .execute(pool)
        .await
        .unwrap();
    assert!(settles_to("api_key_revoked").await.is_some());
    sql("ALTER TABLE api_keys ENABLE TRIGGER api_keys_access_change").await;

    // A hand-written change is announced by its trigger.
    sql("UPDATE api_keys SET revoked_at = NULL WHERE tenant_id = $1").await;
    let took = settles_to("").await.expect("un-revoking was not seen");
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(whoami().await.status, 200);
    sql("UPDATE tenants SET status = 'suspended' WHERE id = $1").await;
    assert!(settles_to("tenant_suspended").await.is_some());
    sql("UPDATE tenants SET status = 'active' WHERE id = $1").await;
    assert!(settles_to("").await.is_some());

    // The listener's connection is cut and a change lands while it is away: the change is seen all the same.
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%') t",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(cut, 1, "one listener per server");
    sql("UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1").await;
    assert!(settles_to("api_key_revoked").await.is_some());
    // Listening again: a later change arrives by notification.
    sql("UPDATE api_keys SET revoked_at = NULL WHERE tenant_id = $1").await;
    assert!(settles_to("").await.is_some());
}

#[tokio::test]
async fn every_failure_class_gets_the_error_envelope() {
    let app = spawn_app_with(&[("http.body_limit_bytes", "4096")]).await;
    let op = app.operator_key.clone();
    let tenant = app.create_tenant(&unique_slug("env")).await;

    // 401: missing, malformed, unknown.
    let r = call(&app, Method::GET, "/v1/whoami", None, None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "missing_credentials");
    let r = reply(
        app.client
            .get(app.url("/v1/whoami"))
            .header("authorization", "Basic dXNlcjpwYXNz")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "malformed_credentials");
    for garbled in [
        "rvk_",
        "not-a-key",
        "rvk_abcdefghijkl_short",
        &format!("{}x", tenant.api_key),
    ] {
        let r = call(&app, Method::GET, "/v1/whoami", Some(garbled), None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_api_key");
    }
    let (public, _) = split_key(&tenant.api_key);
    let wrong_secret = format!("rvk_{public}_{}", "A".repeat(40));
    let r = call(&app, Method::GET, "/v1/whoami", Some(&wrong_secret), None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_api_key");

    // 400: malformed JSON; bad path and query parameters.
    let r = reply(
        app.client
            .post(app.url("/v1/admin/tenants"))
            .bearer_auth(&op)
            .header("content-type", "application/json")
            .body("{\"slug\": ")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = call(
        &app,
        Method::GET,
        "/v1/admin/tenants/not-a-uuid",
        Some(&op),
        None,
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_path");
    let r = call(
        &app,
        Method::GET,
        "/v1/admin/audit?after=soon",
        Some(&op),
        None,
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_query");
    let r = call(
        &app,
        Method::GET,
        "/v1/admin/audit?limit=0",
        Some(&op),
        None,
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_query");

    // 404: unknown route, unknown resource.
    let r = call(&app, Method::GET, "/v1/nothing-here", Some(&op), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = call(
        &app,
        Method::GET,
        &format!("/v1/admin/tenants/{}", uuid::Uuid::new_v4()),
        Some(&op),
        None,
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = call(
        &app,
        Method::POST,
        &format!("/v1/admin/tenants/{}/api-keys", uuid::Uuid::new_v4()),
        Some(&op),
        Some(json!({"scopes": ["ask"]})),
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    // 405.
    let r = call(&app, Method::PUT, "/v1/admin/tenants", Some(&op), None).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");

    // 409: slug taken.
    let r = call(
        &app,
        Method::POST,
        "/v1/admin/tenants",
        Some(&op),
        Some(json!({"slug": tenant.slug})),
    )
    .await;
    assert_error(&r, StatusCode::CONFLICT, "slug_taken");

    // 413: declared and streamed (chunked) oversized bodies.
    let big = json!({"slug": "x".repeat(8000)});
    let r = call(
        &app,
        Method::POST,
        "/v1/admin/tenants",
        Some(&op),
        Some(big.clone()),
    )
    .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .to_string()
        .into_bytes()
        .chunks(1000)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = reply(
        app.client
            .post(app.url("/v1/admin/tenants"))
            .bearer_auth(&op)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // 415: wrong content type.
    let r = reply(
        app.client
            .post(app.url("/v1/admin/tenants"))
            .bearer_auth(&op)
            .header("content-type", "text/plain")
            .body(json!({"slug": "plain-text"}).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    // 422: invalid slug, unknown field, wrong type, unknown environment, unknown scope, empty scopes.
    for (body, code) in [
        (json!({"slug": "Bad Slug"}), "invalid_slug"),
        (json!({"slug": "ab"}), "invalid_slug"),
        (
            json!({"slug": "good-slug", "owner": "x"}),
            "invalid_request",
        ),
        (json!({"slug": 42}), "invalid_request"),
        (
            json!({"slug": "good-slug", "environment": "staging"}),
            "invalid_request",
        ),
    ] {
        let r = call(
            &app,
            Method::POST,
            "/v1/admin/tenants",
            Some(&op),
            Some(body),
        )
        .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, code);
    }
    let keys_path = format!("/v1/admin/tenants/{}/api-keys", tenant.id);
    for (body, code) in [
        (json!({"scopes": ["root"]}), "invalid_scopes"),
        (json!({"scopes": []}), "invalid_scopes"),
        (
            json!({"scopes": ["ask"], "name": "n".repeat(101)}),
            "invalid_name",
        ),
        (json!({"scopes": "ask"}), "invalid_request"),
    ] {
        let r = call(&app, Method::POST, &keys_path, Some(&op), Some(body)).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, code);
    }

    // Nothing was half written by any of the refused requests: still one tenant, one key.
    let tenants = app.store.list_tenants().await.unwrap();
    assert_eq!(tenants.len(), 1);
    let keys = app
        .store
        .list_api_keys(tenant.id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
}

#[tokio::test]
async fn database_outage_is_503_and_named_by_readyz() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("down")).await;
    drop_database_now(&app).await;
    let r = call(&app, Method::GET, "/readyz", None, None).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("postgres"));
    assert_eq!(r.body["checks"]["postgres"], "failing");
    assert_eq!(r.body["checks"]["key_source"], "ok");
    let r = call(&app, Method::GET, "/v1/whoami", Some(&tenant.api_key), None).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    // Liveness does not depend on the database.
    let r = call(&app, Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, 200);
}

async fn drop_database_now(app: &TestApp) {
    use sqlx::{Connection, Executor};
    let admin = std::env::var("RAGVAULT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    conn.execute(format!(r#"DROP DATABASE "{}" WITH (FORCE)"#, app.database.name).as_str())
        .await
        .unwrap();
}

#[tokio::test]
async fn request_ids_are_generated_or_propagated() {
    let app = spawn_app().await;
    let r = reply(
        app.client
            .get(app.url("/v1/whoami"))
            .header("x-request-id", "trace-abc_123.4:5")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.headers["x-request-id"], "trace-abc_123.4:5");
    assert_eq!(r.body["error"]["request_id"], "trace-abc_123.4:5");

    let ok = call(&app, Method::GET, "/healthz", None, None).await;
    let generated = ok.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok());

    // An id that could forge log lines is replaced, not echoed.
    let r = reply(
        app.client
            .get(app.url("/healthz"))
            .header("x-request-id", "evil id\" injected=1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(uuid::Uuid::parse_str(r.headers["x-request-id"].to_str().unwrap()).is_ok());
}

#[tokio::test]
async fn concurrent_creation_of_one_slug_creates_one_tenant() {
    let app = spawn_app().await;
    let slug = unique_slug("race");
    let attempts = (0..8).map(|_| {
        call(
            &app,
            Method::POST,
            "/v1/admin/tenants",
            Some(&app.operator_key),
            Some(json!({"slug": slug})),
        )
    });
    let replies = futures_util::future::join_all(attempts).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    let conflicts = replies.iter().filter(|r| r.status == 409).count();
    assert_eq!((created, conflicts), (1, 7));
    let tenants = app.store.list_tenants().await.unwrap();
    assert_eq!(tenants.len(), 1);
    let tenant = &tenants[0];
    assert_eq!(app.store.list_api_keys(tenant.id).await.unwrap().len(), 1);
    // No orphan keys or audit rows from the losers.
    let orphans: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE tenant_id <> $1")
        .bind(tenant.id.0)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(orphans, 0);
    let audit_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'tenant.created'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(audit_rows, 1);
}

#[tokio::test]
async fn audit_log_is_append_only() {
    let app = spawn_app().await;
    app.create_tenant(&unique_slug("audit")).await;
    for statement in [
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let err = sqlx::query(statement)
            .execute(app.store.pool())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }
}

/// Sends a request whose body arrives in two parts, shuts the server down between them, and checks the
/// request still completes and the server then stops.
#[tokio::test]
async fn graceful_shutdown_completes_in_flight_requests() {
    let app = spawn_app().await;
    let body = json!({"slug": unique_slug("grace")}).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let request = format!(
        "POST /v1/admin/tenants HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{head}",
        app.address,
        app.operator_key,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let address = app.address;
    let store = app.store.clone();
    let shutdown = tokio::spawn(app.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are no longer accepted while the old one finishes.
    assert!(tokio::net::TcpStream::connect(address).await.is_err());

    stream.write_all(tail.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    shutdown.await.unwrap().unwrap();
    drop(store);
}

/// Exercises every path that handles a key (success, refusal, revocation, errors) and then checks that no
/// key, and no key's secret part, appears anywhere in the captured logs.
#[tokio::test]
async fn key_material_never_reaches_the_logs() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("logs")).await;
    let (key_id, ask_key) = app.issue_key(&tenant.id, &["ask"]).await;
    call(&app, Method::GET, "/v1/whoami", Some(&ask_key), None).await;
    call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&ask_key),
        Some(json!({})),
    )
    .await;
    call(
        &app,
        Method::DELETE,
        &format!("/v1/admin/tenants/{}/api-keys/{key_id}", tenant.id),
        Some(&app.operator_key),
        None,
    )
    .await;
    call(&app, Method::GET, "/v1/whoami", Some(&ask_key), None).await;
    let (public, _) = split_key(&tenant.api_key);
    // Assembled at run time: no credential-shaped literal in the repository (CI scans it).
    let probe_secret = format!("ZzProbe{}{}", "SecretValue", "0123456789abcdefghijkl");
    call(
        &app,
        Method::GET,
        "/v1/whoami",
        Some(&format!("rvk_{public}_{probe_secret}")),
        None,
    )
    .await;
    call(
        &app,
        Method::GET,
        "/v1/whoami",
        Some("rvk_garbled_SecretLookingGarbage"),
        None,
    )
    .await;

    let logs = captured_logs();
    assert!(
        logs.contains("request finished"),
        "log capture is not working"
    );
    for key in [&tenant.api_key, &ask_key, &app.operator_key] {
        let (_, secret) = split_key(key);
        assert!(!logs.contains(key.as_str()), "a whole key was logged");
        assert!(!logs.contains(&secret), "a key's secret part was logged");
    }
    assert!(!logs.contains(&probe_secret));
    assert!(!logs.contains("SecretLookingGarbage"));
}

/// Every tenant gets its own KEK and wrapped data keys at creation; rotation rewraps them without changing
/// the keys; deletion destroys the KEK, so the stored wrapped keys (as in a backup) no longer open, while
/// other tenants are untouched.
#[tokio::test]
async fn tenant_keys_are_created_rotated_and_crypto_shredded() {
    use ragvault_credentials::{SealContext, SealPurpose, WrappedKey};
    let app = spawn_app().await;
    let a = app.create_tenant(&unique_slug("keys-a")).await;
    let b = app.create_tenant(&unique_slug("keys-b")).await;
    let a_id: ragvault_core::TenantId = a.id.parse().unwrap();
    let b_id: ragvault_core::TenantId = b.id.parse().unwrap();

    let keys = app.store.list_data_keys(a_id).await.unwrap();
    assert_eq!(keys.len(), 2, "one content key and one index key");
    assert!(keys
        .iter()
        .all(|k| k.wrapped_key.starts_with("local:v1:") && k.retired_at.is_none()));
    let content = keys
        .iter()
        .find(|k| k.purpose == ragvault_store::DataKeyPurpose::Content)
        .unwrap()
        .clone();
    let dek = app
        .key_source
        .unwrap_data_key(a_id, content.id, &WrappedKey(content.wrapped_key.clone()))
        .await
        .unwrap();
    let ctx = SealContext {
        purpose: SealPurpose::ChunkText,
        tenant: a_id,
        document: ragvault_core::DocumentId::new(),
        chunk: Some(ragvault_core::ChunkId::new()),
        ordinal: 0,
    };
    let sealed = dek
        .seal(&ctx, b"the E42 error means the fan is blocked")
        .unwrap();

    // Rotation: every key rewrapped under KEK v2, the old content key retired but still opening its data.
    let rotated = call(
        &app,
        Method::POST,
        &format!("/v1/admin/tenants/{}/rotate-keys", a.id),
        Some(&app.operator_key),
        None,
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(rotated.body["rewrapped"], 2);
    let keys = app.store.list_data_keys(a_id).await.unwrap();
    assert_eq!(keys.len(), 3);
    let old = keys.iter().find(|k| k.id == content.id).unwrap();
    assert!(old.retired_at.is_some() && old.rewrapped_at.is_some());
    assert!(old.wrapped_key.starts_with("local:v2:"));
    let reopened = app
        .key_source
        .unwrap_data_key(a_id, old.id, &WrappedKey(old.wrapped_key.clone()))
        .await
        .unwrap();
    assert_eq!(
        reopened.open(&ctx, &sealed).unwrap(),
        b"the E42 error means the fan is blocked"
    );
    let active = app
        .store
        .active_data_key(a_id, ragvault_store::DataKeyPurpose::Content)
        .await
        .unwrap();
    assert_eq!(
        active.id.to_string(),
        rotated.body["content_key_id"].as_str().unwrap()
    );

    // Deletion: KEK destroyed, rows gone, and a copy of the wrapped keys taken before (a backup) is useless.
    let backup = app.store.list_data_keys(a_id).await.unwrap();
    // A search has the plaintext index key cached in memory; deletion must drop it there too.
    app.state.content.index_key(a_id).await.unwrap();
    let index_key_id = backup
        .iter()
        .find(|k| k.purpose == ragvault_store::DataKeyPurpose::Index)
        .unwrap()
        .id;
    assert!(app
        .state
        .content
        .keys()
        .cached(a_id, index_key_id)
        .is_some());
    let deleted = call(
        &app,
        Method::DELETE,
        &format!("/v1/admin/tenants/{}", a.id),
        Some(&app.operator_key),
        None,
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.body["kek_destroyed"], true);
    for key in &backup {
        let err = app
            .key_source
            .unwrap_data_key(a_id, key.id, &WrappedKey(key.wrapped_key.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ragvault_credentials::CredentialsError::KekMissing { .. }
            ),
            "{err}"
        );
    }
    assert!(app.store.list_data_keys(a_id).await.unwrap().is_empty());
    assert!(app
        .state
        .content
        .keys()
        .cached(a_id, index_key_id)
        .is_none());
    assert!(app.state.content.index_key(a_id).await.is_err());
    let r = call(&app, Method::GET, "/v1/whoami", Some(&a.api_key), None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_api_key");
    let again = call(
        &app,
        Method::DELETE,
        &format!("/v1/admin/tenants/{}", a.id),
        Some(&app.operator_key),
        None,
    )
    .await;
    assert_error(&again, StatusCode::NOT_FOUND, "not_found");
    // The audit trail outlives the tenant.
    let audit = app.store.list_audit(Some(a_id), 0, 100).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"tenant.keys_rotated") && actions.contains(&"tenant.deleted"),
        "{actions:?}"
    );

    // Tenant B is untouched.
    for key in app.store.list_data_keys(b_id).await.unwrap() {
        app.key_source
            .unwrap_data_key(b_id, key.id, &WrappedKey(key.wrapped_key))
            .await
            .unwrap();
    }
    let me = call(&app, Method::GET, "/v1/whoami", Some(&b.api_key), None).await;
    assert_eq!(me.status, 200);
}

/// A database dump does not name the customers: slugs are sealed and found by keyed hash, audit rows carry
/// ids only. The slug still reads back through the API and the CLI lookups.
#[tokio::test]
async fn a_database_dump_does_not_contain_tenant_slugs() {
    let app = spawn_app().await;
    let slug = unique_slug("zebra-orchid");
    let tenant = app.create_tenant(&slug).await;
    let (_, key) = app.issue_key(&tenant.id, &["ask"]).await;
    call(
        &app,
        Method::PATCH,
        &format!("/v1/admin/tenants/{}", tenant.id),
        Some(&app.operator_key),
        Some(json!({"status": "suspended"})),
    )
    .await;
    let shown = call(
        &app,
        Method::GET,
        &format!("/v1/admin/tenants/{}", tenant.id),
        Some(&app.operator_key),
        None,
    )
    .await;
    assert_eq!(shown.body["slug"], slug.as_str());
    let listed = call(
        &app,
        Method::GET,
        "/v1/admin/tenants",
        Some(&app.operator_key),
        None,
    )
    .await;
    assert_eq!(listed.body["tenants"][0]["slug"], slug.as_str());
    // The same slug again is still refused (the keyed hash is unique).
    let dup = call(
        &app,
        Method::POST,
        "/v1/admin/tenants",
        Some(&app.operator_key),
        Some(json!({"slug": slug})),
    )
    .await;
    assert_error(&dup, StatusCode::CONFLICT, "slug_taken");

    let dump = app.database.dump();
    assert!(
        dump.contains("COPY public.tenants"),
        "the dump is not a real dump"
    );
    assert!(
        !dump.contains(&slug),
        "the tenant slug is in the database dump"
    );
    assert!(!dump.contains("zebra-orchid"));
    assert!(!dump.contains(&key), "an API key is in the database dump");
}

/// Rows written before slugs were sealed are sealed when the service starts, and keep working.
#[tokio::test]
async fn clear_slugs_from_before_are_sealed_at_start() {
    let db = ragvault_testkit::TestDatabase::create().await;
    let store = ragvault_store::Store::connect_lazy(&db.url, &Default::default()).unwrap();
    store.migrate().await.unwrap();
    let id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO tenants (id, slug, environment) VALUES ($1, 'legacy-tenant', 'production')",
    )
    .bind(id)
    .execute(store.pool())
    .await
    .unwrap();
    store.close().await;
    let app = ragvault_testkit::spawn_app_in(db, &[]).await;
    let clear: Option<String> = sqlx::query_scalar("SELECT slug FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(clear, None, "the clear slug was not replaced");
    let shown = call(
        &app,
        Method::GET,
        &format!("/v1/admin/tenants/{id}"),
        Some(&app.operator_key),
        None,
    )
    .await;
    assert_eq!(shown.body["slug"], "legacy-tenant");
    let dup = call(
        &app,
        Method::POST,
        "/v1/admin/tenants",
        Some(&app.operator_key),
        Some(json!({"slug": "legacy-tenant"})),
    )
    .await;
    assert_error(&dup, StatusCode::CONFLICT, "slug_taken");
}

fn sealed_content(app: &TestApp) -> ragvault_ingest::sealed::SealedContent {
    let cache = std::sync::Arc::new(ragvault_credentials::DataKeyCache::new(
        app.key_source.clone(),
        Duration::from_secs(60),
    ));
    ragvault_ingest::sealed::SealedContent::new(app.store.clone(), cache)
}

fn upload<'a>(
    name: &'a str,
    metadata: Option<&'a Value>,
    chunks: &'a [ragvault_ingest::sealed::PlainChunk],
) -> ragvault_ingest::sealed::DocumentUpload<'a> {
    ragvault_ingest::sealed::DocumentUpload {
        document_id: ragvault_core::DocumentId::new(),
        name,
        metadata,
        content: b"raw bytes",
        chunks,
        vectors: None,
        tags: &[],
        groups: &[],
    }
}

fn manual_chunks(marker: &str, n: usize) -> Vec<ragvault_ingest::sealed::PlainChunk> {
    (0..n)
        .map(|i| ragvault_ingest::sealed::PlainChunk {
            text: format!("{marker} step {i}: unplug the router and wait thirty seconds"),
            heading_path: vec![
                "Troubleshooting".to_owned(),
                format!("{marker}-section-{i}"),
            ],
            token_count: 12,
        })
        .collect()
}

/// Document text, names, headings and metadata are sealed: they read back through the content service, and
/// a real pg_dump contains none of them (nor the slug).
#[tokio::test]
async fn stored_documents_are_sealed_in_a_database_dump() {
    let app = spawn_app().await;
    let slug = unique_slug("sealed-dump");
    let tenant = app.create_tenant(&slug).await;
    let tenant_id: ragvault_core::TenantId = tenant.id.parse().unwrap();
    let content = sealed_content(&app);
    let marker = "QuokkaFirmwareMarker";
    let chunks = manual_chunks(marker, 5);
    let metadata = json!({"product": format!("{marker}-product")});
    let stored = content
        .put_document(
            tenant_id,
            upload(&format!("{marker}-manual.txt"), Some(&metadata), &chunks),
            "test",
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(stored.chunks.len(), 5);
    let (name, opened) = content
        .open_document(tenant_id, stored.document_id)
        .await
        .unwrap();
    assert_eq!(name, format!("{marker}-manual.txt"));
    assert_eq!(opened.len(), 5);
    assert_eq!(opened[2].text, chunks[2].text);
    assert_eq!(opened[2].heading_path, chunks[2].heading_path);
    // Index points map back to their chunks, in the order asked.
    let points: Vec<_> = stored.chunks.iter().rev().map(|(_, p)| *p).collect();
    let by_point = content.open_points(tenant_id, &points).await.unwrap();
    assert_eq!(by_point[0].text, chunks[4].text);
    // Another tenant cannot open this tenant's points.
    let other = app.create_tenant(&unique_slug("other")).await;
    let other_id: ragvault_core::TenantId = other.id.parse().unwrap();
    assert!(content
        .open_points(other_id, &points)
        .await
        .unwrap()
        .is_empty());

    let admin = std::env::var("RAGVAULT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let db_url = format!(
        "{}/{}",
        admin.rsplit_once('/').unwrap().0,
        app.database.name
    );
    let dump = std::process::Command::new("pg_dump")
        .arg(&db_url)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("COPY public.chunks"),
        "the dump is not a real dump"
    );
    for needle in [
        marker,
        "unplug the router",
        "Troubleshooting",
        slug.as_str(),
    ] {
        assert!(
            !dump.contains(needle),
            "`{needle}` is readable in the database dump"
        );
    }
}

/// A ciphertext moved to another row fails loudly, is audited, and returns no text.
#[tokio::test]
async fn a_ciphertext_moved_between_rows_is_refused_and_audited() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("tamper")).await;
    let tenant_id: ragvault_core::TenantId = tenant.id.parse().unwrap();
    let content = sealed_content(&app);
    let stored = content
        .put_document(
            tenant_id,
            upload("manual.txt", None, &manual_chunks("Tamper", 2)),
            "test",
            None,
            None,
        )
        .await
        .unwrap();
    // Swap the sealed text of chunk 0 and chunk 1, as an attacker with write access to the table could.
    sqlx::query(
        "UPDATE chunks c SET text_sealed = o.text_sealed FROM chunks o
         WHERE c.document_id = o.document_id AND c.id <> o.id",
    )
    .execute(app.store.pool())
    .await
    .unwrap();
    let err = content
        .open_document(tenant_id, stored.document_id)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("failed authentication"), "{err}");
    let audit = app.store.list_audit(Some(tenant_id), 0, 100).await.unwrap();
    assert!(audit
        .iter()
        .any(|e| e.action == "content.integrity_failure"));
}

/// After a key rotation, old chunks move to the new content key in batches; a job stopped midway leaves
/// every chunk readable and finishes on the next run; the service runs it by itself after rotate-keys.
#[tokio::test]
async fn reencryption_after_rotation_resumes_and_completes() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("reenc")).await;
    let tenant_id: ragvault_core::TenantId = tenant.id.parse().unwrap();
    let content = sealed_content(&app);
    let chunks = manual_chunks("Reencrypt", 40);
    let stored = content
        .put_document(
            tenant_id,
            upload("big.txt", None, &chunks),
            "test",
            None,
            None,
        )
        .await
        .unwrap();
    let r = call(
        &app,
        Method::POST,
        &format!("/v1/admin/tenants/{}/rotate-keys", tenant.id),
        Some(&app.operator_key),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    // The service's own job runs in the background; wait until it is done, checking readability throughout.
    let mut complete = false;
    for _ in 0..100 {
        let (_, opened) = content
            .open_document(tenant_id, stored.document_id)
            .await
            .unwrap();
        assert_eq!(opened.len(), 40);
        let progress = call(
            &app,
            Method::GET,
            &format!("/v1/admin/tenants/{}/reencryption", tenant.id),
            Some(&app.operator_key),
            None,
        )
        .await;
        if progress.body["complete"] == true {
            assert_eq!(progress.body["total"], 40);
            complete = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(complete, "the background re-encryption did not finish");

    // A second rotation, made directly so that no background job runs, and a job "killed" after one
    // batch of 10: partial progress, every chunk still readable, and the next run finishes.
    ragvault_gateway::AccessControl::new(app.store.clone(), app.key_source.clone())
        .rotate_tenant_keys(
            tenant_id,
            &ragvault_gateway::RequestContext::new("test", None),
        )
        .await
        .unwrap();
    let partial = content.reencrypt(tenant_id, 10, Some(1)).await.unwrap();
    assert_eq!((partial.done, partial.total), (10, 40));
    let (_, opened) = content
        .open_document(tenant_id, stored.document_id)
        .await
        .unwrap();
    assert_eq!(
        opened.iter().map(|c| c.text.clone()).collect::<Vec<_>>(),
        chunks.iter().map(|c| c.text.clone()).collect::<Vec<_>>()
    );
    let finished = content.reencrypt(tenant_id, 10, None).await.unwrap();
    assert_eq!((finished.done, finished.total), (40, 40));
    let active = app
        .store
        .active_data_key(tenant_id, ragvault_store::DataKeyPurpose::Content)
        .await
        .unwrap();
    let on_active: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks WHERE data_key_id = $1")
        .bind(active.id)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(on_active, 40);
}

/// Upload -> 202 + job -> worker parses, scans, chunks (with the model's tokenizer), seals and stores ->
/// job done; documents listed by name; re-upload replaces; delete removes.
#[tokio::test]
async fn documents_are_ingested_listed_replaced_and_deleted() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("ingest")).await;
    let key = tenant.api_key.clone();
    let manual = "# Quokka X200\n\n## Reset\n\nHold the WPS button for ten seconds.\n\n## Errors\n\nE42 means the fan is blocked.\n";
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&key),
        Some(json!({"name": "x200.md", "content": manual, "content_type": "text/markdown", "tags": ["router"]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let document_id = r.body["document_id"].as_str().unwrap().to_owned();
    let job = wait_for_job(&app, &key, r.body["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["chunks"], 2, "one chunk per section: {job}");

    let listed = call(&app, Method::GET, "/v1/documents", Some(&key), None).await;
    assert_eq!(listed.body["documents"][0]["name"], "x200.md");
    assert_eq!(listed.body["documents"][0]["chunks"], 2);
    let shown = call(
        &app,
        Method::GET,
        &format!("/v1/documents/{document_id}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(shown.body["id"], document_id.as_str());
    assert!(
        !shown.body.to_string().contains("WPS"),
        "document text must not be listed"
    );

    // The same name again replaces the document atomically.
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&key),
        Some(json!({"name": "x200.md", "content": "Only one line now."})),
    )
    .await;
    let job = wait_for_job(&app, &key, r.body["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "done");
    let listed = call(&app, Method::GET, "/v1/documents", Some(&key), None).await;
    let documents = listed.body["documents"].as_array().unwrap();
    assert_eq!(documents.len(), 1);
    assert_eq!(documents[0]["chunks"], 1);
    let new_id = documents[0]["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, document_id);
    let old = call(
        &app,
        Method::GET,
        &format!("/v1/documents/{document_id}"),
        Some(&key),
        None,
    )
    .await;
    assert_error(&old, StatusCode::NOT_FOUND, "not_found");

    let deleted = call(
        &app,
        Method::DELETE,
        &format!("/v1/documents/{new_id}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(deleted.status, 200);
    let listed = call(&app, Method::GET, "/v1/documents", Some(&key), None).await;
    assert!(listed.body["documents"].as_array().unwrap().is_empty());
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(chunks, 0, "chunks outlived their document");

    // Another tenant sees none of it.
    let other = app.create_tenant(&unique_slug("other")).await;
    let r = call(
        &app,
        Method::GET,
        &format!("/v1/jobs/{}", job["id"].as_str().unwrap()),
        Some(&other.api_key),
        None,
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

/// Bad uploads are refused at once with a stable code; documents with credentials fail their job naming the
/// line, never the secret, and nothing is stored.
#[tokio::test]
async fn bad_uploads_and_documents_with_secrets_are_refused() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("badup")).await;
    let key = tenant.api_key.clone();
    for (body, status, code) in [
        (
            json!({"name": "a.docx", "content": "PK\u{3}\u{4} zipped"}),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            json!({"name": "a.bin", "content": "x", "content_type": "application/octet-stream"}),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            json!({"name": "a.txt", "content": "   \n "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_text",
        ),
        (
            json!({"name": "", "content": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
        (
            json!({"name": "a", "content": "x", "metadata": [1]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_metadata",
        ),
        (
            json!({"name": "a", "content": "x", "tags": [""]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_tags",
        ),
        (
            json!({"name": "a", "contents": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ] {
        let r = call(&app, Method::POST, "/v1/documents", Some(&key), Some(body)).await;
        assert_error(&r, status, code);
    }
    // Assembled at run time so no credential-shaped literal sits in the repository.
    let fake_key = format!("sk-{}", "Ab3Xk9QzR7mP2wLt5Vn8".repeat(2));
    let text = format!("Setup\n\nFirst line.\nexport OPENAI_API_KEY={fake_key}\nMore text.");
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&key),
        Some(json!({"name": "leaky.txt", "content": text})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let job = wait_for_job(&app, &key, r.body["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "contains_secret");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("line 4") && message.contains("openai_key"),
        "{message}"
    );
    assert!(!job.to_string().contains(&fake_key));
    let documents: i64 = sqlx::query_scalar("SELECT count(*) FROM documents")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(documents, 0);
    // The sealed upload is dropped with the failed job.
    let payloads: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ingest_jobs WHERE payload_sealed IS NOT NULL")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(payloads, 0);
    assert!(!captured_logs().contains(&fake_key));
}

/// A job queued by a process that died before running it is picked up by the next one.
#[tokio::test]
async fn unfinished_jobs_are_resumed_by_the_next_process() {
    use ragvault_ingest::pipeline::{Pipeline, PipelineSettings, Upload};
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("resume")).await;
    let tenant_id: ragvault_core::TenantId = tenant.id.parse().unwrap();
    let tokenizer = std::sync::Arc::new(ragvault_embedding::tokenizer_from_env().unwrap());
    let settings = PipelineSettings {
        workers: 1,
        queue_capacity: 4,
        total_queue_capacity: 4,
        chunking: Default::default(),
        secret_policy: Default::default(),
        parse_timeout: Duration::from_secs(30),
    };
    // "Process A" accepts the upload, then dies before any worker runs it.
    let (dead, workers) = Pipeline::start(
        app.store.clone(),
        sealed_content(&app),
        app.state.indexer.clone(),
        tokenizer.clone(),
        settings.clone(),
    );
    for w in &workers {
        w.abort();
    }
    let upload = Upload {
        name: "queued.txt".into(),
        content_type: None,
        content: b"Survives a crash.".to_vec(),
        metadata: None,
    };
    let job_id = dead
        .submit(tenant_id, upload.clone(), "test")
        .await
        .unwrap()
        .job();
    // The same upload again while its job waits (a client interrupted and run again): the same job, not a
    // second one.
    assert_eq!(
        dead.submit(tenant_id, upload, "test").await.unwrap(),
        ragvault_ingest::pipeline::Submitted::AlreadyQueued {
            job: job_id,
            document: dead_document(&app, job_id).await,
        }
    );
    // Another version under the same name while the first waits is queued after it, not merged into it.
    let later = Upload {
        name: "queued.txt".into(),
        content_type: None,
        content: b"A later version.".to_vec(),
        metadata: None,
    };
    let later_job = dead.submit(tenant_id, later, "test").await.unwrap();
    assert!(
        matches!(later_job, ragvault_ingest::pipeline::Submitted::Queued { job, .. } if job != job_id),
        "{later_job:?}"
    );
    drop(dead);
    let job = call(
        &app,
        Method::GET,
        &format!("/v1/jobs/{job_id}"),
        Some(&tenant.api_key),
        None,
    )
    .await;
    assert_eq!(job.body["status"], "queued");
    let resent = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&tenant.api_key),
        Some(json!({"name": "queued.txt", "content": "A later version."})),
    )
    .await;
    assert_eq!(resent.status, StatusCode::ACCEPTED, "{}", resent.body);
    assert_eq!(
        resent.body["job_id"],
        later_job.job().to_string(),
        "{}",
        resent.body
    );
    assert_eq!(resent.body["status"], "queued");
    // "Process B" starts and resumes it.
    let (alive, _workers) = Pipeline::start(
        app.store.clone(),
        sealed_content(&app),
        app.state.indexer.clone(),
        tokenizer,
        settings,
    );
    assert_eq!(alive.resume_unfinished().await.unwrap(), 2);
    let job = wait_for_job(&app, &tenant.api_key, &job_id.to_string()).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["chunks"], 1);
    wait_for_job(&app, &tenant.api_key, &later_job.job().to_string()).await;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM ingest_jobs WHERE tenant_id = $1")
        .bind(tenant_id.0)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(jobs, 2, "the resent upload made no job of its own");
}

async fn dead_document(app: &TestApp, job: ragvault_core::JobId) -> ragvault_core::DocumentId {
    ragvault_core::DocumentId(
        sqlx::query_scalar("SELECT document_id FROM ingest_jobs WHERE id = $1")
            .bind(job.0)
            .fetch_one(app.store.pool())
            .await
            .unwrap(),
    )
}

/// Workers take tenants in turn: a tenant with hundreds of uploads waiting delays another tenant's single
/// upload by a few jobs, not by its backlog.
#[tokio::test]
async fn one_tenants_backlog_does_not_starve_another_tenants_upload() {
    const BACKLOG: usize = 200;
    // Bound: jobs of A that may finish between B's upload and B's job being done. Two were running when
    // B arrived, A's turn may come once before B's, and the other worker finishes A's jobs while B's runs;
    // the rest is slack for a slow machine. First come, first served would be the whole backlog.
    const A_JOBS_WHILE_B_WAITS: i64 = 10;
    let app = spawn_app_with(&[("ingest.workers", "2"), ("ingest.queue_capacity", "256")]).await;
    let a = app.create_tenant(&unique_slug("fair-a")).await;
    let b = app.create_tenant(&unique_slug("fair-b")).await;
    let done = |tenant: &str| {
        let tenant: uuid::Uuid = tenant.parse().unwrap();
        let pool = app.store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM ingest_jobs WHERE tenant_id = $1 AND status = 'done'",
            )
            .bind(tenant)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    for i in 0..BACKLOG {
        let r = call(
            &app,
            Method::POST,
            "/v1/documents",
            Some(&a.api_key),
            Some(json!({
                "name": format!("a-{i}.md"),
                "content": format!("# Part {i}\n\nStep {i} of the long manual: tighten screw {i} before you go on to the next part of the assembly."),
            })),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    }
    let a_done_before = done(&a.id).await;
    let started = std::time::Instant::now();
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&b.api_key),
        Some(json!({"name": "b.md", "content": "# Only\n\nThe one page tenant B has."})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let job = wait_for_job(&app, &b.api_key, r.body["job_id"].as_str().unwrap()).await;
    let waited = started.elapsed();
    let a_done_after = done(&a.id).await;
    assert_eq!(job["status"], "done", "{job}");
    assert!(
        a_done_after - a_done_before <= A_JOBS_WHILE_B_WAITS,
        "{} of A's jobs finished while B's one waited ({:?})",
        a_done_after - a_done_before,
        waited
    );
    assert!(
        (a_done_after as usize) < BACKLOG,
        "A's backlog was drained before B's job ran"
    );
    assert!(waited < Duration::from_secs(30), "B waited {waited:?}");
}

/// HTML is ingested as text under its headings; scripts and navigation never reach storage.
#[tokio::test]
async fn html_documents_keep_text_and_drop_scripts() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("html")).await;
    let tenant_id: ragvault_core::TenantId = tenant.id.parse().unwrap();
    let html = "<html><nav>Home | Docs</nav><h1>Help</h1><p>Press reset.</p>\
                <script>track('secret-tracker')</script><h2>LEDs</h2><ul><li>Amber: updating</li></ul></html>";
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&tenant.api_key),
        Some(json!({"name": "help.html", "content": html, "content_type": "text/html"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let job = wait_for_job(&app, &tenant.api_key, r.body["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "done", "{job}");
    let document_id: ragvault_core::DocumentId =
        r.body["document_id"].as_str().unwrap().parse().unwrap();
    let (_, chunks) = sealed_content(&app)
        .open_document(tenant_id, document_id)
        .await
        .unwrap();
    let all: Vec<(Vec<String>, String)> = chunks
        .into_iter()
        .map(|c| (c.heading_path, c.text))
        .collect();
    assert_eq!(
        all,
        vec![
            (vec!["Help".to_owned()], "Press reset.".to_owned()),
            (
                vec!["Help".to_owned(), "LEDs".to_owned()],
                "- Amber: updating".to_owned()
            ),
        ]
    );

    // HTML is scanned for credentials as what is kept of it: a link target that looks random (this one, a
    // mailing-list message id, refused a page of the PostgreSQL manual) is never stored, so it passes; a key
    // in the visible text is refused, its line counted in the extracted text.
    let upload = |name: &str, html: String| {
        call(
            &app,
            Method::POST,
            "/v1/documents",
            Some(&tenant.api_key),
            Some(json!({"name": name, "content": html, "content_type": "text/html"})),
        )
    };
    let linked = upload(
        "linked.html",
        format!(
            "<h1>XML</h1><p>See <a href=\"https://www.postgresql.org/message-id/{}{}@mail.gmail.com\">the thread</a>.</p>",
            // In two pieces: the repository's own secret scan would take the whole id for a credential.
            "CAJVSVGVX8gXnPm+Xa=DxR7k",
            "FYprcQ1tNcCT5D0O3ShfnM6jehA"
        ),
    )
    .await;
    let job = wait_for_job(
        &app,
        &tenant.api_key,
        linked.body["job_id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(job["status"], "done", "{job}");
    // Assembled at run time so no credential-shaped literal sits in the repository.
    let fake_key = format!("sk-{}", "Ab3Xk9QzR7mP2wLt5Vn8".repeat(2));
    let leaky = upload(
        "leaky.html",
        format!("<h1>Setup</h1><p>First.</p><p>export OPENAI_API_KEY={fake_key}</p>"),
    )
    .await;
    let job = wait_for_job(
        &app,
        &tenant.api_key,
        leaky.body["job_id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(job["error"]["code"], "contains_secret", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("on line 4 of its text"),
        "{job}"
    );
}

/// The multipart form of `POST /v1/documents`: a `file` part named by its file name.
#[tokio::test]
async fn multipart_uploads_are_ingested() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("multipart")).await;
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"# Guide\n\nTurn it off and on again.".to_vec())
                .file_name("guide.md")
                .mime_str("text/markdown")
                .unwrap(),
        )
        .text("tags", "router, support");
    let r = reply(
        app.client
            .post(app.url("/v1/documents"))
            .bearer_auth(&tenant.api_key)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let job = wait_for_job(&app, &tenant.api_key, r.body["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "done", "{job}");
    let listed = call(
        &app,
        Method::GET,
        "/v1/documents",
        Some(&tenant.api_key),
        None,
    )
    .await;
    assert_eq!(listed.body["documents"][0]["name"], "guide.md");

    // A form without a file, or with an unknown field, is refused.
    let no_file = reqwest::multipart::Form::new().text("name", "x");
    let r = reply(
        app.client
            .post(app.url("/v1/documents"))
            .bearer_auth(&tenant.api_key)
            .multipart(no_file)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_multipart");
}

/// Uploading the same name with the same content again stores nothing new (keyed content hash); a change
/// of content or metadata replaces the document.
#[tokio::test]
async fn identical_reuploads_are_deduplicated_by_keyed_hash() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("dedupe")).await;
    let key = tenant.api_key.clone();
    let upload = |content: &str, metadata: Value| {
        call(
            &app,
            Method::POST,
            "/v1/documents",
            Some(&key),
            Some(json!({"name": "faq.txt", "content": content, "metadata": metadata})),
        )
    };
    let first = upload("Same words.", json!({"v": 1})).await;
    let first_job = wait_for_job(&app, &key, first.body["job_id"].as_str().unwrap()).await;
    assert_eq!(first_job["status"], "done");
    let again = upload("Same words.", json!({"v": 1})).await;
    // Recognised at upload: nothing is queued or embedded, the job is done at once.
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(again.body["unchanged"], true, "{}", again.body);
    assert_eq!(again.body["status"], "done");
    assert_eq!(again.body["chunks"], 1);
    assert_eq!(again.body["document_id"], first.body["document_id"]);
    let again_job = wait_for_job(&app, &key, again.body["job_id"].as_str().unwrap()).await;
    assert_eq!(again_job["status"], "done");
    assert_eq!(again_job["chunks"], 1);
    assert_eq!(
        again_job["document_id"], first.body["document_id"],
        "the existing document is kept"
    );
    let listed = call(&app, Method::GET, "/v1/documents", Some(&key), None).await;
    assert_eq!(listed.body["documents"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["documents"][0]["id"], first.body["document_id"]);

    let changed = upload("Same words.", json!({"v": 2})).await;
    assert_eq!(changed.body["unchanged"], false, "{}", changed.body);
    wait_for_job(&app, &key, changed.body["job_id"].as_str().unwrap()).await;
    let listed = call(&app, Method::GET, "/v1/documents", Some(&key), None).await;
    assert_eq!(
        listed.body["documents"][0]["id"], changed.body["document_id"],
        "new metadata replaces"
    );
    // The hash is keyed per tenant: another tenant storing the same bytes gets a different hash, so a
    // database dump cannot confirm that two tenants (or a guessed file) hold the same document.
    let other = app.create_tenant(&unique_slug("dedupe-other")).await;
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&other.api_key),
        Some(json!({"name": "faq.txt", "content": "Same words.", "metadata": {"v": 2}})),
    )
    .await;
    wait_for_job(&app, &other.api_key, r.body["job_id"].as_str().unwrap()).await;
    let hashes: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT content_hash FROM documents WHERE status = 'active'")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(hashes.len(), 2);
    assert_ne!(hashes[0], hashes[1]);
}

/// A tenant whose policy says `redact` gets credentials replaced in its chunks instead of a failed job.
#[tokio::test]
async fn the_redact_secret_policy_replaces_credentials_in_chunks() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("redact")).await;
    let tenant_id: ragvault_core::TenantId = tenant.id.parse().unwrap();
    let path = format!("/v1/admin/tenants/{}", tenant.id);
    let bad = call(
        &app,
        Method::PATCH,
        &path,
        Some(&app.operator_key),
        Some(json!({"policy": {"secret_policy": "ignore"}})),
    )
    .await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let bad = call(
        &app,
        Method::PATCH,
        &path,
        Some(&app.operator_key),
        Some(json!({"policy": {"budget": 5}})),
    )
    .await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let set = call(
        &app,
        Method::PATCH,
        &path,
        Some(&app.operator_key),
        Some(json!({"policy": {"secret_policy": "redact"}})),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["policy"]["secret_policy"], "redact");

    let fake_key = format!("sk-{}", "Ab3Xk9QzR7mP2wLt5Vn8".repeat(2));
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&tenant.api_key),
        Some(json!({"name": "setup.txt", "content": format!("Set OPENAI_API_KEY={fake_key} before starting.")})),
    )
    .await;
    let job = wait_for_job(&app, &tenant.api_key, r.body["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "done", "{job}");
    let document_id: ragvault_core::DocumentId =
        r.body["document_id"].as_str().unwrap().parse().unwrap();
    let (_, chunks) = sealed_content(&app)
        .open_document(tenant_id, document_id)
        .await
        .unwrap();
    assert_eq!(
        chunks[0].text,
        "Set OPENAI_API_KEY=[REDACTED:openai_key] before starting."
    );
    let audit = app.store.list_audit(Some(tenant_id), 0, 100).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "tenant.policy_changed"));

    // A credential in a heading, the document name or its metadata is redacted there too.
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&tenant.api_key),
        Some(json!({
            "name": format!("notes {fake_key}.md"),
            "content": format!("# Token {fake_key}\n\nRotate it monthly.\n"),
            "metadata": {"owner": fake_key.clone()},
        })),
    )
    .await;
    let job = wait_for_job(&app, &tenant.api_key, r.body["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "done", "{job}");
    let document_id: ragvault_core::DocumentId =
        r.body["document_id"].as_str().unwrap().parse().unwrap();
    let (name, chunks) = sealed_content(&app)
        .open_document(tenant_id, document_id)
        .await
        .unwrap();
    assert_eq!(name, "notes [REDACTED:openai_key].md");
    assert_eq!(
        chunks[0].heading_path,
        vec!["Token [REDACTED:openai_key]".to_owned()]
    );
    let listed = call(
        &app,
        Method::GET,
        "/v1/documents",
        Some(&tenant.api_key),
        None,
    )
    .await;
    assert!(!listed.body.to_string().contains(&fake_key));

    // Under the default policy, a credential in the name refuses the document, naming where it is.
    let other = app.create_tenant(&unique_slug("reject-name")).await;
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&other.api_key),
        Some(json!({"name": format!("{fake_key}.txt"), "content": "harmless"})),
    )
    .await;
    let job = wait_for_job(&app, &other.api_key, r.body["job_id"].as_str().unwrap()).await;
    assert_eq!(job["error"]["code"], "contains_secret", "{job}");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("name") && !message.contains(&fake_key),
        "{message}"
    );
}

/// The audit log is a hash chain: an edited, deleted, reordered or cut-off event is found and named by its
/// sequence number, through the API as through the CLI (tests/cli.rs).
#[tokio::test]
async fn audit_chain_verify_finds_edits_deletions_reordering_and_truncation() {
    use sqlx::Executor;
    let tamperings: [(&str, &str, i64, &str); 5] = [
        ("nothing", "", 0, ""),
        ("edit", "UPDATE audit_log SET details = '{\"x\": 1}' WHERE seq = 3", 3, "edited"),
        ("delete", "DELETE FROM audit_log WHERE seq = 2", 2, "missing"),
        (
            "reorder",
            "UPDATE audit_log SET seq = -1 WHERE seq = 2; UPDATE audit_log SET seq = 2 WHERE seq = 3;
             UPDATE audit_log SET seq = 3 WHERE seq = -1",
            2,
            "unlinked",
        ),
        ("cut", "DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)", -1, "truncated"),
    ];
    for (name, sql, bad_seq, problem) in tamperings {
        let app = spawn_app().await;
        for prefix in ["audit-a", "audit-b"] {
            app.create_tenant(&unique_slug(prefix)).await;
        }
        let verify = || {
            call(
                &app,
                Method::GET,
                "/v1/admin/audit/verify",
                Some(&app.operator_key),
                None,
            )
        };
        let r = verify().await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["intact"], true, "{name}: {}", r.body);
        let events = r.body["checked"].as_i64().unwrap();
        assert!(events >= 4, "{}", r.body);
        assert_eq!(r.body["head_seq"], events);
        if sql.is_empty() {
            continue;
        }
        let mut conn = app.store.pool().acquire().await.unwrap();
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_or_delete")
            .await
            .unwrap();
        conn.execute(sql).await.unwrap();
        let r = verify().await;
        assert_eq!(r.body["intact"], false, "{name}: {}", r.body);
        let expected_seq = if bad_seq < 0 { events } else { bad_seq };
        assert_eq!(r.body["first_bad_seq"], expected_seq, "{name}: {}", r.body);
        assert_eq!(r.body["problem"], problem, "{name}: {}", r.body);
    }
}
