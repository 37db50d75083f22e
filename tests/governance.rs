//! Governance end to end: widget tokens (minting, every refusal, origin binding, CORS, key rotation);
//! budgets that hold under concurrency (one replica and two), metering and its rollups, the per-ask audit
//! event, and the service role that cannot rewrite the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ragvault_testkit::http::{assert_error, call, ingest_text, reply, Reply};
use ragvault_testkit::{
    app_with_providers, spawn_app_with, unique_slug, FakeProvider, TestApp, TestTenant,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

const SHOP: &str = "https://shop.example";
const MANUAL: &str =
    "# AquaFlow P7 pump\n\n## Priming\n\nBefore the first start, fill the pump housing with \
water through the priming port and close the cap hand-tight.\n";

async fn widget_app() -> TestApp {
    spawn_app_with(&[
        (
            "widget.allowed_origins",
            "[\"https://shop.example\", \"http://localhost:3000\"]",
        ),
        ("widget.max_ttl_secs", "120"),
        ("widget.default_ttl_secs", "60"),
    ])
    .await
}

async fn mint(app: &TestApp, key: &str, body: Value) -> Reply {
    call(
        app,
        Method::POST,
        "/v1/widget-tokens",
        Some(key),
        Some(body),
    )
    .await
}

async fn minted(app: &TestApp, tenant: &TestTenant, body: Value) -> String {
    let r = mint(app, &tenant.api_key, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["token"].as_str().unwrap().to_owned()
}

/// `/v1/ask` from a browser: the token, and the headers a page would send.
async fn ask_from(
    app: &TestApp,
    token: &str,
    origin: Option<&str>,
    tenant_hint: Option<&str>,
) -> Reply {
    let mut request = app
        .client
        .post(app.url("/v1/ask"))
        .bearer_auth(token)
        .json(&json!({"query": "How do I prime the pump?"}));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if let Some(hint) = tenant_hint {
        request = request.header("x-ragvault-tenant", hint);
    }
    reply(request.send().await.unwrap()).await
}

/// The token with its claims replaced (the signature left as it was).
fn with_claims(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
    edit(&mut claims);
    let encoded = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    format!("{}.{}.{}.{}", parts[0], parts[1], encoded, parts[3])
}

#[tokio::test]
async fn widget_tokens_are_minted_used_and_refused_with_distinct_codes() {
    let app = widget_app().await;
    let tenant = app.create_tenant(&unique_slug("widget")).await;
    let other = app.create_tenant(&unique_slug("widget-other")).await;
    ingest_text(&app, &tenant.api_key, "pump.md", MANUAL, &[]).await;

    // Minting: defaults, bounds, origins and subjects are checked.
    let r = mint(
        &app,
        &tenant.api_key,
        json!({"origin": SHOP, "subject": "visitor-17"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = r.body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("rvw1."), "{token}");
    let expires = time::OffsetDateTime::parse(
        r.body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let ttl = expires - time::OffsetDateTime::now_utc();
    assert!(
        ttl > time::Duration::seconds(55) && ttl <= time::Duration::seconds(60),
        "{ttl}"
    );
    for (body, code) in [
        (json!({"ttl_seconds": 0}), "invalid_ttl"),
        (json!({"ttl_seconds": 121}), "invalid_ttl"),
        (
            json!({"origin": "https://evil.example"}),
            "origin_not_allowed",
        ),
        (json!({"subject": "x".repeat(129)}), "invalid_subject"),
        (json!({"subject": "line\nbreak"}), "invalid_subject"),
        (json!({"scope": "ingest"}), "invalid_request"),
    ] {
        let r = mint(&app, &tenant.api_key, body.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, code);
    }

    // Used from the bound origin, it answers; whoami says what it is.
    let r = ask_from(&app, &token, Some(SHOP), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        !r.body["citations"].as_array().unwrap().is_empty(),
        "{}",
        r.body
    );
    let who = call(&app, Method::GET, "/v1/whoami", Some(&token), None).await;
    // whoami comes without an Origin header, which the bound token refuses.
    assert_error(&who, StatusCode::FORBIDDEN, "widget_token_origin_mismatch");
    let unbound = minted(&app, &tenant, json!({"subject": "visitor-18"})).await;
    let who = call(&app, Method::GET, "/v1/whoami", Some(&unbound), None).await;
    assert_eq!(who.body["kind"], "widget", "{}", who.body);
    assert_eq!(who.body["tenant_id"], tenant.id.as_str());
    assert_eq!(who.body["subject"], "visitor-18");
    assert_eq!(who.body["scopes"], json!(["ask"]));

    // Scope `ask` only: no ingest, no minting, no admin.
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&unbound),
        Some(json!({"name": "x.txt", "content": "x", "content_type": "text/plain"})),
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "insufficient_scope");
    let r = mint(&app, &unbound, json!({})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "insufficient_scope");
    let r = call(&app, Method::GET, "/v1/admin/tenants", Some(&unbound), None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "operator_key_required");

    // Origin binding.
    let r = ask_from(&app, &token, None, None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "widget_token_origin_mismatch");
    let r = ask_from(&app, &token, Some("http://localhost:3000"), None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "widget_token_origin_mismatch");

    // Tenant binding: the page names its tenant by id or slug.
    let r = ask_from(&app, &token, Some(SHOP), Some(&tenant.slug)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = ask_from(&app, &token, Some(SHOP), Some(&tenant.id)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = ask_from(&app, &token, Some(SHOP), Some(&other.id)).await;
    assert_error(&r, StatusCode::FORBIDDEN, "widget_token_wrong_tenant");
    let r = ask_from(&app, &token, Some(SHOP), Some("no-such-tenant")).await;
    assert_error(&r, StatusCode::FORBIDDEN, "widget_token_wrong_tenant");

    // Tampering: another tenant, a later expiry, another origin, a cut signature, garbage.
    for forged in [
        with_claims(&token, |c| c["t"] = json!(other.id)),
        with_claims(&token, |c| {
            c["exp"] = json!(c["exp"].as_i64().unwrap() + 86_400)
        }),
        with_claims(&token, |c| c["o"] = json!("https://evil.example")),
        format!("{}AA", &token[..token.len() - 2]),
    ] {
        let r = ask_from(&app, &forged, Some(SHOP), None).await;
        assert_error(
            &r,
            StatusCode::UNAUTHORIZED,
            "widget_token_invalid_signature",
        );
    }
    for garbage in [
        "rvw1.",
        "rvw1.abc.e30",
        "rvw1.ABC.e30.AAAA",
        "rvw1.abc.e30.!!!!",
    ] {
        let r = ask_from(&app, garbage, Some(SHOP), None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "widget_token_malformed");
    }
    // A key id that never existed.
    let parts: Vec<&str> = token.split('.').collect();
    let unknown_kid = format!("rvw1.ffffffffffffffff.{}.{}", parts[2], parts[3]);
    let r = ask_from(&app, &unknown_kid, Some(SHOP), None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "widget_token_key_retired");

    // Expiry.
    let short = minted(&app, &tenant, json!({"ttl_seconds": 1})).await;
    let r = ask_from(&app, &short, None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = ask_from(&app, &short, None, None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "widget_token_expired");

    // A suspended tenant's tokens stop working at once.
    let r = call(
        &app,
        Method::PATCH,
        &format!("/v1/admin/tenants/{}", tenant.id),
        Some(&app.operator_key),
        Some(json!({"status": "suspended"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = ask_from(&app, &unbound, None, None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "tenant_suspended");

    // The token text appears in no log line.
    let logs = ragvault_testkit::captured_logs();
    let signature = token.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature), "a widget token reached the logs");
}

#[tokio::test]
async fn cors_answers_only_for_allowed_origins() {
    let app = widget_app().await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/v1/ask"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, x-ragvault-tenant",
            )
            .send()
    };
    let allowed = preflight(SHOP).await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], SHOP);
    let allow_headers = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for needed in ["authorization", "content-type", "x-ragvault-tenant"] {
        assert!(allow_headers.contains(needed), "{allow_headers}");
    }
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(headers.get("access-control-allow-credentials").is_none());

    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // Actual requests: the allowed origin is echoed (and Vary: Origin set), others get nothing.
    let tenant = app.create_tenant(&unique_slug("cors")).await;
    let token = minted(&app, &tenant, json!({"origin": SHOP})).await;
    let r = ask_from(&app, &token, Some(SHOP), None).await;
    assert_eq!(r.headers["access-control-allow-origin"], SHOP);
    assert!(r.headers["vary"]
        .to_str()
        .unwrap()
        .to_lowercase()
        .contains("origin"));
    let exposed = r.headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    let r = ask_from(&app, &token, Some("https://evil.example"), None).await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
    assert_error(&r, StatusCode::FORBIDDEN, "widget_token_origin_mismatch");

    // Other routes never answer CORS: only the widget's route is callable from a page.
    let other = app
        .client
        .request(Method::OPTIONS, app.url("/v1/documents"))
        .header("origin", SHOP)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn signing_keys_rotate_without_cutting_off_live_tokens() {
    use sqlx::Executor;
    let mut app = widget_app().await;
    let tenant = app.create_tenant(&unique_slug("rotate")).await;
    let before = minted(&app, &tenant, json!({})).await;
    let kid_of = |token: &str| token.split('.').nth(1).unwrap().to_owned();

    let rotate = |app: &TestApp| {
        let app_url = app.url("/v1/admin/widget-signing-keys/rotate");
        let request = app
            .client
            .post(app_url)
            .bearer_auth(&app.operator_key)
            .send();
        async move { reply(request.await.unwrap()).await }
    };
    let r = rotate(&app).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new_kid = r.body["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, kid_of(&before));
    let after = minted(&app, &tenant, json!({})).await;
    assert_eq!(kid_of(&after), new_kid);

    // Both verify: the old key stays valid for one more maximum token lifetime.
    for token in [&before, &after] {
        let r = ask_from(&app, token, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let keys = call(
        &app,
        Method::GET,
        "/v1/admin/widget-signing-keys",
        Some(&app.operator_key),
        None,
    )
    .await;
    let keys = keys.body["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0]["kid"], new_kid.as_str());
    assert!(keys[0]["retired_at"].is_null());
    assert!(keys[1]["verify_until"].is_string());

    // Tokens survive a restart (keys are derived, only their ids are stored).
    app.restart(false).await;
    let r = ask_from(&app, &after, None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Once the old key's grace is over, its tokens are refused, naming the key as the reason.
    app.store
        .pool()
        .execute(
            format!(
                "UPDATE widget_signing_keys SET verify_until = now() - interval '1 second'
                 WHERE kid = '{}'",
                kid_of(&before)
            )
            .as_str(),
        )
        .await
        .unwrap();
    app.restart(false).await;
    let r = ask_from(&app, &before, None, None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "widget_token_key_retired");
    let r = ask_from(&app, &after, None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Rotation is audited; a tenant key cannot rotate.
    let audit = call(
        &app,
        Method::GET,
        "/v1/admin/audit",
        Some(&app.operator_key),
        None,
    )
    .await;
    assert!(audit
        .body
        .to_string()
        .contains("widget_signing_key.rotated"));
    let r = call(
        &app,
        Method::POST,
        "/v1/admin/widget-signing-keys/rotate",
        Some(&tenant.api_key),
        None,
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "operator_key_required");
}

async fn set_policy(app: &TestApp, tenant: &TestTenant, policy: Value) {
    let r = call(
        app,
        Method::PATCH,
        &format!("/v1/admin/tenants/{}", tenant.id),
        Some(&app.operator_key),
        Some(json!({ "policy": policy })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn ask(app: &TestApp, key: &str, max_tokens: u32) -> Reply {
    call(
        app,
        Method::POST,
        "/v1/ask",
        Some(key),
        Some(json!({"query": "How do I prime the pump?", "max_tokens": max_tokens})),
    )
    .await
}

async fn admin_get(app: &TestApp, path: &str) -> Value {
    let r = call(app, Method::GET, path, Some(&app.operator_key), None).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
    r.body
}

#[tokio::test]
async fn budgets_stop_before_the_provider_and_hold_under_concurrency() {
    let fake = FakeProvider::start().await;
    let app = app_with_providers(
        &fake,
        &[("openai", "openai")],
        &[("budget.slice_micro_usd", "1500")],
    )
    .await;
    let tenant = app.create_tenant(&unique_slug("budget")).await;
    ingest_text(&app, &tenant.api_key, "pump.md", MANUAL, &[]).await;

    // A budget smaller than any answer's worst case: refused before the provider is called.
    set_policy(
        &app,
        &tenant,
        json!({"failover_chain": ["openai"], "budget_micro_usd": 100}),
    )
    .await;
    let r = ask(&app, &tenant.api_key, 64).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "budget_exceeded");
    let retry_after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=31 * 86_400).contains(&retry_after), "{retry_after}");
    assert_eq!(
        fake.requests(),
        0,
        "the provider was called despite the budget"
    );

    // One answer's real cost, metered at the test price (input + 2 x output micro-USD).
    set_policy(&app, &tenant, json!({"failover_chain": ["openai"]})).await;
    let r = ask(&app, &tenant.api_key, 64).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let usage = &r.body["usage"];
    let one_cost = usage["cost_micro_usd"].as_u64().unwrap();
    assert_eq!(
        one_cost,
        usage["input_tokens"].as_u64().unwrap() + 2 * usage["output_tokens"].as_u64().unwrap()
    );

    // A budget for a handful more, then a burst of 40 concurrent asks: some answer, the rest are refused
    // with no provider call, and spend never passes the budget.
    let budget = 20 * one_cost;
    set_policy(
        &app,
        &tenant,
        json!({"failover_chain": ["openai"], "budget_micro_usd": budget + one_cost}),
    )
    .await;
    let calls_before = fake.requests();
    let replies =
        futures_util::future::join_all((0..40).map(|_| ask(&app, &tenant.api_key, 64))).await;
    let answered = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count() as u64;
    for r in replies.iter().filter(|r| r.status != StatusCode::OK) {
        assert_error(r, StatusCode::TOO_MANY_REQUESTS, "budget_exceeded");
    }
    assert!((1..40).contains(&answered), "answered {answered} of 40");
    assert_eq!(
        fake.requests() - calls_before,
        answered,
        "refused asks reached the provider"
    );
    let ledger = admin_get(&app, &format!("/v1/admin/tenants/{}/budget", tenant.id)).await;
    let spent = ledger["spent_micro_usd"].as_u64().unwrap();
    assert_eq!(spent, one_cost * (answered + 1), "{ledger}");
    // The first answer ran without a budget; everything after it stayed within the limit.
    assert!(spent - one_cost <= budget + one_cost, "{ledger}");
    assert!(
        ledger["committed_micro_usd"].as_u64().unwrap() <= budget + one_cost,
        "{ledger}"
    );

    // Usage rows and rollups agree with the answers.
    let report = admin_get(
        &app,
        &format!("/v1/admin/usage?tenant={}&group_by=model", tenant.slug),
    )
    .await;
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    assert_eq!(rows[0]["provider"], "openai");
    assert_eq!(rows[0]["model"], "openai-model");
    assert_eq!(rows[0]["requests"].as_u64().unwrap(), answered + 1);
    assert_eq!(rows[0]["cost_micro_usd"].as_u64().unwrap(), spent);
    let by_day = admin_get(&app, &format!("/v1/admin/usage?tenant={}", tenant.id)).await;
    assert_eq!(by_day["total_cost_micro_usd"].as_u64().unwrap(), spent);
    assert!(by_day["rows"][0]["day"].is_string(), "{by_day}");
    for bad in [
        "from=yesterday",
        "group_by=week",
        "from=2026-02-01&to=2026-01-01",
    ] {
        let r = call(
            &app,
            Method::GET,
            &format!("/v1/admin/usage?{bad}"),
            Some(&app.operator_key),
            None,
        )
        .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_query");
    }
    app.settle().await;
    let mut conn = app.store.pool().acquire().await.unwrap();
    let key_versions: Vec<(Option<i64>, String)> =
        sqlx::query_as("SELECT key_version, outcome FROM usage_events WHERE tenant_id = $1::uuid")
            .bind(&tenant.id)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert!(
        key_versions.iter().all(|(v, o)| v.is_some() && o == "ok"),
        "{key_versions:?}"
    );
}

/// A journal left by a process that died: entries past the segment's commit mark are committed exactly once at
/// the next start (the ones before it were committed by the dead process), and the segment and its mark go.
#[tokio::test]
async fn a_crashed_process_journal_is_replayed_exactly_once() {
    use ragvault_gateway::{BudgetGuard, Metering};
    use std::sync::Arc;
    let app = spawn_app_with(&[]).await;
    let tenant = app.create_tenant(&unique_slug("journal")).await;
    let journal = tempfile::tempdir().unwrap();
    let segment = "0f0e0d0c0b0a09080706050403020100";
    let entry = |seq: u64| {
        json!({
            "seq": seq,
            "usage": [{
                "at_unix_micros": 1_800_000_000_000_000u64 + seq, "tenant_id": tenant.id,
                "principal": "api_key:journal", "request_id": format!("replay-{seq}"), "kind": "generation",
                "provider": "openai", "model": "m", "key_version": null, "input_tokens": 1,
                "output_tokens": 1, "cost_micro_usd": 3, "latency_ms": 1, "bytes_sent": 0,
                "bytes_received": 0, "outcome": "ok",
            }],
            "audits": [{
                "tenant_id": tenant.id, "actor": "api_key:journal", "action": "ask.retrieved",
                "target": null, "request_id": format!("replay-{seq}"), "details": {},
            }],
        })
        .to_string()
    };
    let path = journal.path().join(format!("{segment}.jsonl"));
    std::fs::write(&path, format!("{}\n{}\n{}\n", entry(1), entry(2), entry(3))).unwrap();
    // The dead process had committed entry 1.
    sqlx::query("INSERT INTO metering_journal_marks (segment, committed_seq) VALUES ($1, 1)")
        .bind(segment)
        .execute(app.store.pool())
        .await
        .unwrap();
    let budgets = Arc::new(BudgetGuard::new(app.store.clone(), 1_000));
    let started = std::time::Instant::now();
    let _metering = Metering::start(app.store.clone(), budgets.clone(), journal.path()).unwrap();
    while path.exists() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!path.exists(), "the replayed segment is deleted");
    let replayed = || async {
        let usage: Vec<String> = sqlx::query_scalar(
            "SELECT request_id FROM usage_events WHERE principal = 'api_key:journal' ORDER BY request_id",
        )
        .fetch_all(app.store.pool())
        .await
        .unwrap();
        let audits: Vec<String> = sqlx::query_scalar(
            "SELECT request_id FROM audit_log WHERE actor = 'api_key:journal' ORDER BY request_id",
        )
        .fetch_all(app.store.pool())
        .await
        .unwrap();
        (usage, audits)
    };
    let expected = vec!["replay-2".to_owned(), "replay-3".to_owned()];
    assert_eq!(replayed().await, (expected.clone(), expected.clone()));
    let marks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM metering_journal_marks WHERE segment = $1")
            .bind(segment)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(marks, 0, "the mark goes with its segment");
    // Another start on the same folder finds nothing left to write.
    let _again = Metering::start(app.store.clone(), budgets, journal.path()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(replayed().await, (expected.clone(), expected));
}

/// A usage batch is written by one statement: its events, their daily rollups (one per tenant, UTC day,
/// provider and model, errors counted apart), each tenant's month spend (returned, and never for a tenant
/// deleted meanwhile), the journal mark (only ever moved forward) and its audit events chained in order.
#[tokio::test]
async fn a_usage_batch_writes_events_rollups_ledgers_mark_and_chained_audit_together() {
    use ragvault_core::TenantId;
    use ragvault_store::{AuditEntry, NewUsageEvent};
    use time::macros::{date, datetime};
    let app = spawn_app_with(&[]).await;
    let tenant = app.create_tenant(&unique_slug("batch")).await;
    let tenant_id = TenantId(tenant.id.parse().unwrap());
    let deleted = TenantId(uuid::Uuid::new_v4());
    let event = |tenant_id, at, model: &str, outcome, cost| NewUsageEvent {
        at,
        tenant_id,
        principal: "api_key:batch".into(),
        request_id: Some(format!("batch-{model}-{cost}")),
        kind: "generation",
        provider: "openai".into(),
        model: model.into(),
        key_version: Some(2),
        input_tokens: 10,
        output_tokens: 5,
        cost_micro_usd: cost,
        latency_ms: 7,
        bytes_sent: 100,
        bytes_received: 50,
        outcome,
    };
    let events = [
        event(tenant_id, datetime!(2026-11-30 23:59 UTC), "a", "ok", 3),
        event(tenant_id, datetime!(2026-11-30 08:00 UTC), "a", "error", 4),
        event(tenant_id, datetime!(2026-11-30 09:00 UTC), "b", "ok", 5),
        event(tenant_id, datetime!(2026-12-01 00:00 UTC), "a", "ok", 6),
        event(deleted, datetime!(2026-12-01 00:00 UTC), "a", "ok", 7),
    ];
    let segment = unique_slug("segment");
    let audits: Vec<AuditEntry> = (1..=3)
        .map(|n| {
            AuditEntry::new("api_key:batch", "ask.retrieved")
                .tenant(tenant_id)
                .request_id(Some(format!("batch-audit-{n}")))
        })
        .collect();
    let mut spent = app
        .store
        .record_journal_batch(&events, &audits, Some((&segment, 5)))
        .await
        .unwrap();
    spent.sort();
    assert_eq!(
        spent,
        vec![
            (tenant_id, date!(2026 - 11 - 01), 12),
            (tenant_id, date!(2026 - 12 - 01), 6)
        ],
        "one ledger row per tenant and month; none for the deleted tenant"
    );
    let daily: Vec<(String, String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT day::text, model, requests, errors, input_tokens, output_tokens, cost_micro_usd
         FROM usage_daily WHERE tenant_id = $1 ORDER BY day, model",
    )
    .bind(tenant_id.0)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        daily,
        vec![
            ("2026-11-30".into(), "a".into(), 2, 1, 20, 10, 7),
            ("2026-11-30".into(), "b".into(), 1, 0, 10, 5, 5),
            ("2026-12-01".into(), "a".into(), 1, 0, 10, 5, 6),
        ]
    );
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM usage_events WHERE principal = 'api_key:batch'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(rows, 5, "every event is kept, the deleted tenant's too");
    // A second batch adds to the same rollup and ledger rows; an older mark does not move the mark back.
    let spent = app
        .store
        .record_journal_batch(&events[..1], &[], Some((&segment, 3)))
        .await
        .unwrap();
    assert_eq!(spent, vec![(tenant_id, date!(2026 - 11 - 01), 15)]);
    assert_eq!(app.store.journal_mark(&segment).await.unwrap(), 5);
    let ledger = app
        .store
        .budget_month(tenant_id, date!(2026 - 11 - 01))
        .await
        .unwrap();
    assert_eq!(ledger.spent_micro_usd, 15);
    // Without a mark nothing is written to the marks; an empty batch writes nothing at all.
    assert!(app
        .store
        .record_journal_batch(&[], &[], None)
        .await
        .unwrap()
        .is_empty());
    let chained: Vec<(String, i64)> = sqlx::query_as(
        "SELECT request_id, seq FROM audit_log WHERE actor = 'api_key:batch' ORDER BY seq",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let order: Vec<&str> = chained.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(order, ["batch-audit-1", "batch-audit-2", "batch-audit-3"]);
    assert!(
        chained.windows(2).all(|w| w[1].1 == w[0].1 + 1),
        "consecutive in the chain"
    );
    assert!(app.store.verify_audit_chain().await.unwrap().is_intact());
}

/// The metering writer is never woken by an append (it looks for entries on a clock), yet what is journaled
/// reaches Postgres without anyone asking, and a flush gets it committed at once rather than at the next look.
#[tokio::test]
async fn journaled_usage_is_committed_on_the_writers_clock_and_at_once_on_flush() {
    use ragvault_gateway::{BudgetGuard, Metering, WriterPace};
    use std::sync::Arc;
    let app = spawn_app_with(&[]).await;
    let tenant = app.create_tenant(&unique_slug("pace")).await;
    let tenant_id: ragvault_core::TenantId = tenant.id.parse().unwrap();
    let budgets = Arc::new(BudgetGuard::new(app.store.clone(), 1_000));
    let usage = |request: &str| ragvault_store::NewUsageEvent {
        at: time::OffsetDateTime::now_utc(),
        tenant_id,
        principal: "api_key:pace".into(),
        request_id: Some(request.to_owned()),
        kind: "generation",
        provider: "openai".into(),
        model: "m".into(),
        key_version: None,
        input_tokens: 1,
        output_tokens: 1,
        cost_micro_usd: 1,
        latency_ms: 1,
        bytes_sent: 0,
        bytes_received: 0,
        outcome: "ok",
    };
    let committed = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT request_id FROM usage_events WHERE principal = 'api_key:pace' ORDER BY request_id",
        )
        .fetch_all(app.store.pool())
        .await
        .unwrap()
    };
    // The default pace: committed within a few looks, with no flush.
    let journal = tempfile::tempdir().unwrap();
    let metering = Metering::start(app.store.clone(), budgets.clone(), journal.path()).unwrap();
    metering.record(vec![usage("pace-1")], Vec::new()).unwrap();
    let started = std::time::Instant::now();
    while committed().await.is_empty() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(committed().await, ["pace-1"]);
    // A writer whose next look is an hour away: only the flush's nudge can get the entry committed in time.
    let journal = tempfile::tempdir().unwrap();
    let slow = WriterPace {
        linger: Duration::from_secs(3_600),
        idle_look: Duration::from_secs(3_600),
    };
    let metering = Metering::start_paced(app.store.clone(), budgets, journal.path(), slow).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    metering.record(vec![usage("pace-2")], Vec::new()).unwrap();
    assert!(
        metering.flush(Duration::from_secs(10)).await,
        "the flush was not answered"
    );
    assert_eq!(committed().await, ["pace-1", "pace-2"]);
}

#[tokio::test]
async fn replicas_sharing_a_ledger_never_lease_past_the_budget() {
    use ragvault_gateway::{BudgetGuard, TenantBudget};
    use std::sync::Arc;
    let app = spawn_app_with(&[]).await;
    let tenant = app.create_tenant(&unique_slug("replicas")).await;
    let tenant_id: ragvault_core::TenantId = tenant.id.parse().unwrap();
    let budget = Some(TenantBudget {
        hard_micro_usd: 10_000,
        soft_micro_usd: None,
    });
    // Two replicas' guards over the same Postgres ledger, 300 concurrent reservations of 70 each.
    let replicas = [
        Arc::new(BudgetGuard::new(app.store.clone(), 400)),
        Arc::new(BudgetGuard::new(app.store.clone(), 400)),
    ];
    let tasks = (0..300).map(|i| {
        let guard = replicas[i % 2].clone();
        tokio::spawn(async move {
            match guard.reserve(tenant_id, budget, 70).await {
                Ok(reservation) => {
                    reservation.settle(70);
                    true
                }
                Err(ragvault_gateway::GatewayError::BudgetExceeded { .. }) => false,
                Err(e) => panic!("{e}"),
            }
        })
    });
    let granted = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .filter(|ok| *ok.as_ref().unwrap())
        .count() as u64;
    assert!(
        granted * 70 <= 10_000,
        "{granted} reservations of 70 passed a budget of 10000"
    );
    // Slices are not wasted: returned slack lets the budget be used nearly to the end.
    for guard in &replicas {
        guard.return_unused().await.unwrap();
    }
    app.settle().await;
    let month = ragvault_store::month_of(time::OffsetDateTime::now_utc());
    let ledger = app.store.budget_month(tenant_id, month).await.unwrap();
    assert_eq!(
        ledger.committed_micro_usd as u64,
        granted * 70,
        "{ledger:?}"
    );
    assert!(
        granted >= 100,
        "only {granted} of 142 possible reservations passed"
    );
}

/// The periodic return hands back the slices of tenants idle since the last one; a busy tenant keeps its
/// slice, so its next request does not wait for a lease (Postgres round trips) in the middle of its traffic.
#[tokio::test]
async fn periodic_returns_take_back_only_idle_tenants_slices() {
    use ragvault_gateway::{BudgetGuard, TenantBudget};
    use std::sync::Arc;
    let app = spawn_app_with(&[]).await;
    let month = ragvault_store::month_of(time::OffsetDateTime::now_utc());
    let budget = Some(TenantBudget {
        hard_micro_usd: 100_000,
        soft_micro_usd: None,
    });
    let guard = Arc::new(BudgetGuard::new(app.store.clone(), 1_000));
    let mut tenants = Vec::new();
    for name in ["busy", "idle"] {
        let tenant = app.create_tenant(&unique_slug(name)).await;
        let tenant_id: ragvault_core::TenantId = tenant.id.parse().unwrap();
        guard
            .reserve(tenant_id, budget, 10)
            .await
            .unwrap()
            .settle(10);
        tenants.push(tenant_id);
    }
    let (busy, idle) = (tenants[0], tenants[1]);
    let committed = |tenant| {
        let store = app.store.clone();
        async move {
            store
                .budget_month(tenant, month)
                .await
                .unwrap()
                .committed_micro_usd
        }
    };
    // Both reserved since the start: both keep their slices on the first pass.
    guard.return_idle().await.unwrap();
    assert_eq!(committed(busy).await, 1_000);
    assert_eq!(committed(idle).await, 1_000);
    // Only the busy one reserves again; the next pass takes back the idle one's 990 unspent.
    guard.reserve(busy, budget, 10).await.unwrap().settle(10);
    guard.return_idle().await.unwrap();
    assert_eq!(
        committed(busy).await,
        1_000,
        "a busy tenant's slice went back"
    );
    assert_eq!(committed(idle).await, 10);
    // The busy tenant's slice, untouched by the pass, still serves it without a lease.
    guard.reserve(busy, budget, 10).await.unwrap().settle(10);
    assert_eq!(committed(busy).await, 1_000);
    // At shutdown every slice goes back.
    guard.return_unused().await.unwrap();
    assert_eq!(committed(busy).await, 30);
}

/// A lease can grant the last few micro-USD of a budget, too few for any call: the tenant is still out of
/// budget, and its requests are refused from memory (before retrieval or Postgres) rather than each leasing.
#[tokio::test]
async fn a_budget_spent_down_to_a_remainder_is_refused_from_memory() {
    use ragvault_gateway::{BudgetGuard, GatewayError, TenantBudget};
    use std::sync::Arc;
    let app = spawn_app_with(&[]).await;
    let tenant = app.create_tenant(&unique_slug("remainder")).await;
    let tenant_id: ragvault_core::TenantId = tenant.id.parse().unwrap();
    let budget = Some(TenantBudget {
        hard_micro_usd: 1_000,
        soft_micro_usd: None,
    });
    let guard = Arc::new(BudgetGuard::new(app.store.clone(), 400));
    guard
        .reserve(tenant_id, budget, 995)
        .await
        .unwrap()
        .settle(995);
    assert!(!guard.is_exhausted(tenant_id, budget));
    // Postgres has 5 left: the lease brings them, and they do not cover 100.
    let refused = guard.reserve(tenant_id, budget, 100).await;
    assert!(matches!(refused, Err(GatewayError::BudgetExceeded { .. })));
    assert!(
        guard.is_exhausted(tenant_id, budget),
        "5 micro-USD left in the slice hid a spent budget"
    );
    // Still so once the replica hands its remainder back to Postgres.
    guard.return_unused().await.unwrap();
    assert!(guard.is_exhausted(tenant_id, budget));
    // A call smaller than the refused ones may still fit what is left, and is let through to ask.
    guard.reserve(tenant_id, budget, 5).await.unwrap().settle(5);
    let month = ragvault_store::month_of(time::OffsetDateTime::now_utc());
    let ledger = app.store.budget_month(tenant_id, month).await.unwrap();
    assert_eq!(ledger.committed_micro_usd, 1_000, "{ledger:?}");
    // A raised limit is a different budget: nothing believed about the old one holds for it.
    let raised = Some(TenantBudget {
        hard_micro_usd: 2_000,
        soft_micro_usd: None,
    });
    assert!(!guard.is_exhausted(tenant_id, raised));
    guard
        .reserve(tenant_id, raised, 100)
        .await
        .unwrap()
        .settle(100);
}

/// A reservation that leaves the slice below half of its size tops it up in the background: the request
/// that would have found it empty does not wait for a row-locked lease. What was leased ahead goes back with
/// the rest of the slice.
#[tokio::test]
async fn a_slice_running_low_is_leased_ahead_of_need() {
    use ragvault_gateway::{BudgetGuard, TenantBudget};
    use std::sync::Arc;
    let app = spawn_app_with(&[]).await;
    let tenant = app.create_tenant(&unique_slug("ahead")).await;
    let tenant_id: ragvault_core::TenantId = tenant.id.parse().unwrap();
    let budget = Some(TenantBudget {
        hard_micro_usd: 1_000_000,
        soft_micro_usd: None,
    });
    let month = ragvault_store::month_of(time::OffsetDateTime::now_utc());
    let committed = || async {
        app.store
            .budget_month(tenant_id, month)
            .await
            .unwrap()
            .committed_micro_usd
    };
    let guard = Arc::new(BudgetGuard::new(app.store.clone(), 1_000));
    // The first call leases a slice of 1 000 itself, and leaves 400 of it.
    guard
        .reserve(tenant_id, budget, 600)
        .await
        .unwrap()
        .settle(600);
    assert_eq!(committed().await, 1_000);
    // This one leaves 300, under half a slice: the next slice is leased behind it.
    guard
        .reserve(tenant_id, budget, 100)
        .await
        .unwrap()
        .settle(100);
    let started = std::time::Instant::now();
    while committed().await < 2_000 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(committed().await, 2_000, "no slice was leased ahead");
    // Spending what the slice holds (1 300) needs no lease of its own.
    guard
        .reserve(tenant_id, budget, 1_300)
        .await
        .unwrap()
        .settle(200);
    guard.return_unused().await.unwrap();
    // Spent: 600 + 100 + 200; whatever a lease started meanwhile leased went back too.
    assert_eq!(committed().await, 900);
}

#[tokio::test]
async fn each_ask_is_audited_with_its_chunks_and_soft_thresholds_alert_once() {
    let fake = FakeProvider::start().await;
    let (webhook_url, webhooks) = webhook_receiver().await;
    let app = app_with_providers(
        &fake,
        &[("openai", "openai")],
        &[
            ("widget.allowed_origins", "[\"https://shop.example\"]"),
            (
                "budget.soft_threshold_webhook_url",
                &format!("\"{webhook_url}\""),
            ),
        ],
    )
    .await;
    let webhook_secret = format!("whsec-{}", "w".repeat(24));
    app.store_provider_key("budget-webhook", &webhook_secret);
    let tenant = app.create_tenant(&unique_slug("audited")).await;
    ingest_text(&app, &tenant.api_key, "pump.md", MANUAL, &[]).await;
    set_policy(
        &app,
        &tenant,
        json!({"failover_chain": ["openai"], "budget_micro_usd": 1_000_000, "budget_soft_micro_usd": 1}),
    )
    .await;
    let token = minted(&app, &tenant, json!({"subject": "visitor-5"})).await;
    let r = ask_from(&app, &token, None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let request_id = r.body["request_id"].as_str().unwrap().to_owned();
    let r = ask(&app, &tenant.api_key, 64).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let mut soft_alerts = 0;
    let mut events = Vec::new();
    for _ in 0..50 {
        let audit = admin_get(&app, &format!("/v1/admin/audit?tenant={}", tenant.id)).await;
        events = audit["events"].as_array().unwrap().clone();
        soft_alerts = events
            .iter()
            .filter(|e| e["action"] == "budget.soft_threshold_crossed")
            .count();
        if soft_alerts > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(soft_alerts, 1, "{events:?}");
    let asks: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "ask.retrieved")
        .collect();
    assert_eq!(asks.len(), 2, "{events:?}");
    let widget_ask = asks
        .iter()
        .find(|e| e["request_id"] == request_id.as_str())
        .unwrap();
    assert!(widget_ask["actor"].as_str().unwrap().starts_with("widget:"));
    assert_eq!(widget_ask["details"]["subject"], "visitor-5");
    assert!(!widget_ask["details"]["points"]
        .as_array()
        .unwrap()
        .is_empty());
    let text = widget_ask.to_string();
    assert!(
        !text.contains("prime") && !text.contains("pump"),
        "the audit event holds text: {text}"
    );

    // The crossing was also POSTed to the webhook, once, signed with the `budget-webhook` secret.
    let mut delivered = Vec::new();
    for _ in 0..100 {
        delivered = webhooks.lock().unwrap().clone();
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let (signature, body) = &delivered[0];
    let event: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["event"], "budget.soft_threshold_crossed");
    assert_eq!(event["tenant_id"], tenant.id.as_str());
    assert_eq!(event["soft_micro_usd"], 1);
    let (t, v1) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, webhook_secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    let expected = hex::encode(ring::hmac::sign(&key, &signed).as_ref());
    assert_eq!(v1, expected, "the webhook signature does not verify");
    let text = ragvault_testkit::http::metrics_text(&app).await;
    assert!(
        text.contains("ragvault_budget_webhook_deliveries_total{outcome=\"delivered\"} 1"),
        "{text}"
    );
}

type Deliveries = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver on loopback recording `(x-ragvault-signature, body)` of each POST.
async fn webhook_receiver() -> (String, Deliveries) {
    let deliveries: Deliveries = Default::default();
    let recorded = deliveries.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let recorded = recorded.clone();
                async move {
                    let signature = headers
                        .get("x-ragvault-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    recorded.lock().unwrap().push((signature, body.to_vec()));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, deliveries)
}

#[tokio::test]
async fn the_service_role_cannot_rewrite_the_audit_log() {
    use sqlx::Executor;
    let app = spawn_app_with(&[]).await;
    app.create_tenant(&unique_slug("role")).await;
    let as_service = |sql: &'static str| {
        let pool = app.store.pool().clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            tx.execute("SET LOCAL ROLE ragvault_service").await.unwrap();
            let result = tx.execute(sql).await.map(|_| ());
            if result.is_ok() {
                tx.commit().await.unwrap();
            }
            result
        }
    };
    as_service("INSERT INTO audit_log (actor, action) VALUES ('test', 'role.check')")
        .await
        .expect("the service role appends audit events");
    as_service("SELECT count(*) FROM tenants")
        .await
        .expect("the service role reads its tables");
    for forbidden in [
        "UPDATE audit_log SET action = 'edited'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "UPDATE audit_head SET seq = 1",
    ] {
        let err = as_service(forbidden)
            .await
            .expect_err(forbidden)
            .to_string();
        assert!(err.contains("permission denied"), "{forbidden}: {err}");
    }
    let verify = admin_get(&app, "/v1/admin/audit/verify").await;
    assert_eq!(verify["intact"], true, "{verify}");
}

#[tokio::test]
async fn rate_limits_refuse_with_retry_after_per_principal_and_tenant() {
    let app = widget_app().await;
    let tenant = app.create_tenant(&unique_slug("limited")).await;
    ingest_text(&app, &tenant.api_key, "pump.md", MANUAL, &[]).await;
    let (_, second_key) = app.issue_key(&tenant.id, &["ask"]).await;
    // 20 a minute per principal: a burst of 2, then one every 3 s.
    set_policy(
        &app,
        &tenant,
        json!({"rate_limits": {"principal_requests_per_minute": 20}}),
    )
    .await;
    for i in 0..2 {
        let r = ask(&app, &tenant.api_key, 64).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.body);
    }
    let r = ask(&app, &tenant.api_key, 64).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&wait), "{wait}");
    // Another key of the same tenant has its own bucket.
    let r = ask(&app, &second_key, 64).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Widget tokens of one subject share a bucket; another subject does not.
    let subject = |s: &str| json!({"subject": s});
    let first = minted(&app, &tenant, subject("visitor-1")).await;
    let again = minted(&app, &tenant, subject("visitor-1")).await;
    assert_eq!(
        ask_from(&app, &first, None, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        ask_from(&app, &again, None, None).await.status,
        StatusCode::OK
    );
    let r = ask_from(&app, &again, None, None).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let other = minted(&app, &tenant, subject("visitor-2")).await;
    assert_eq!(
        ask_from(&app, &other, None, None).await.status,
        StatusCode::OK
    );
    // After the wait the first key may ask again.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(ask(&app, &tenant.api_key, 64).await.status, StatusCode::OK);

    // A tenant-wide token limit: once an answer's tokens are charged, the next must wait.
    set_policy(
        &app,
        &tenant,
        json!({"rate_limits": {"tenant_tokens_per_minute": 100}}),
    )
    .await;
    let r = ask(&app, &second_key, 64).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = ask(&app, &second_key, 64).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait >= 2, "{wait}");
    // Bad limits are refused.
    let r = call(
        &app,
        Method::PATCH,
        &format!("/v1/admin/tenants/{}", tenant.id),
        Some(&app.operator_key),
        Some(json!({"policy": {"rate_limits": {"requests_per_hour": 5}}})),
    )
    .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
}

#[tokio::test]
async fn restricted_documents_reach_only_principals_holding_their_group() {
    let fake = FakeProvider::start().await;
    let app = app_with_providers(&fake, &[("openai", "openai")], &[]).await;
    let tenant = app.create_tenant(&unique_slug("groups")).await;
    set_policy(&app, &tenant, json!({"failover_chain": ["openai"]})).await;
    ingest_text(&app, &tenant.api_key, "pump.md", MANUAL, &[]).await;
    let secret_manual = "# Reseller terms\n\nThe partner discount code ZEBRA-7731 gives resellers forty percent off \
        every AquaFlow pump order.\n";
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&tenant.api_key),
        Some(json!({"name": "resellers.md", "content": secret_manual,
                    "content_type": "text/markdown", "groups": ["Partners"]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let job = r.body["job_id"].as_str().unwrap().to_owned();
    ragvault_testkit::http::wait_for_job(&app, &tenant.api_key, &job).await;
    let restricted = r.body["document_id"].as_str().unwrap().to_owned();

    let question =
        json!({"query": "What is the partner discount code ZEBRA-7731 for resellers?", "top_k": 5});
    let search = |key: String, mode: &'static str| {
        let body = json!({"query": "partner discount code ZEBRA-7731 resellers", "mode": mode, "top_k": 5});
        let app = &app;
        async move { call(app, Method::POST, "/v1/search", Some(&key), Some(body)).await }
    };
    let cites_restricted = |r: &Reply| {
        r.body["citations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["document_id"] == restricted.as_str())
    };

    // A widget token without the group: the restricted document is never retrieved, cited or sent.
    let public = minted(&app, &tenant, json!({})).await;
    let bodies_before = fake.chat_bodies().len();
    let r = call(
        &app,
        Method::POST,
        "/v1/ask",
        Some(&public),
        Some(question.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(!cites_restricted(&r), "{}", r.body);
    let sent: String = fake.chat_bodies()[bodies_before..]
        .iter()
        .map(Value::to_string)
        .collect();
    assert!(
        !sent.contains("forty percent") && !sent.contains("resellers.md"),
        "restricted text reached the provider"
    );
    for mode in ["vector", "keyword", "hybrid"] {
        let r = search(public.clone(), mode).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let results = r.body["results"].as_array().unwrap();
        assert!(
            results
                .iter()
                .all(|x| x["document_id"] != restricted.as_str()),
            "{mode}: {}",
            r.body
        );
    }
    let other_group = minted(&app, &tenant, json!({"groups": ["staff"]})).await;
    let r = search(other_group, "keyword").await;
    assert!(
        r.body["results"].as_array().unwrap().is_empty(),
        "{}",
        r.body
    );

    // A token holding the group (any case), and the tenant's own key, find it.
    let partner = minted(&app, &tenant, json!({"groups": ["partners"]})).await;
    let r = call(
        &app,
        Method::POST,
        "/v1/ask",
        Some(&partner),
        Some(question.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(cites_restricted(&r), "{}", r.body);
    for key in [partner.clone(), tenant.api_key.clone()] {
        let r = search(key, "keyword").await;
        let results = r.body["results"].as_array().unwrap();
        assert_eq!(results[0]["document_id"], restricted.as_str(), "{}", r.body);
    }
    let who = call(&app, Method::GET, "/v1/whoami", Some(&partner), None).await;
    assert_eq!(who.body["groups"], json!(["partners"]));

    // API keys may carry groups too, and only narrow them when minting.
    let issue = |groups: Value| {
        let app = &app;
        let path = format!("/v1/admin/tenants/{}/api-keys", tenant.id);
        async move {
            let r = call(
                app,
                Method::POST,
                &path,
                Some(&app.operator_key),
                Some(json!({"scopes": ["ask", "tokens"], "groups": groups})),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            r.body["api_key"].as_str().unwrap().to_owned()
        }
    };
    let partner_key = issue(json!(["partners"])).await;
    let staff_key = issue(json!(["staff"])).await;
    let r = search(partner_key, "keyword").await;
    assert_eq!(
        r.body["results"][0]["document_id"],
        restricted.as_str(),
        "{}",
        r.body
    );
    let r = search(staff_key.clone(), "keyword").await;
    assert!(
        r.body["results"].as_array().unwrap().is_empty(),
        "{}",
        r.body
    );
    let r = mint(&app, &staff_key, json!({"groups": ["partners"]})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "groups_not_held");
    let r = mint(&app, &staff_key, json!({})).await;
    let staff_token = r.body["token"].as_str().unwrap().to_owned();
    let who = call(&app, Method::GET, "/v1/whoami", Some(&staff_token), None).await;
    assert_eq!(who.body["groups"], json!(["staff"]), "{}", who.body);
    let r = search(staff_token, "keyword").await;
    assert!(
        r.body["results"].as_array().unwrap().is_empty(),
        "{}",
        r.body
    );

    // Bad group names are refused at upload and at minting.
    let r = call(
        &app,
        Method::POST,
        "/v1/documents",
        Some(&tenant.api_key),
        Some(json!({"name": "x.md", "content": "x", "groups": ["no spaces"]})),
    )
    .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_groups");
    let r = mint(&app, &tenant.api_key, json!({"groups": ["a".repeat(65)]})).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_groups");
}

#[tokio::test]
async fn sandbox_tenants_use_sandbox_keys_and_never_production_ones() {
    let fake = FakeProvider::start().await;
    let app = app_with_providers(&fake, &[("openai", "openai")], &[]).await;
    let sandbox_key = format!("sandbox-{}", "s".repeat(24));
    let r = call(
        &app,
        Method::POST,
        "/v1/admin/tenants",
        Some(&app.operator_key),
        Some(json!({"slug": unique_slug("lab"), "environment": "sandbox"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let lab = TestTenant {
        id: r.body["id"].as_str().unwrap().to_owned(),
        slug: String::new(),
        api_key: r.body["api_key"].as_str().unwrap().to_owned(),
    };
    let production = app.create_tenant(&unique_slug("prod")).await;
    for tenant in [&lab, &production] {
        set_policy(&app, tenant, json!({"failover_chain": ["openai"]})).await;
        ingest_text(&app, &tenant.api_key, "pump.md", MANUAL, &[]).await;
    }
    // No sandbox key yet: the sandbox tenant is refused rather than served with the production key.
    let r = ask(&app, &lab.api_key, 64).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(
        fake.requests(),
        0,
        "a sandbox ask reached the provider with the production key"
    );
    assert_eq!(
        ask(&app, &production.api_key, 64).await.status,
        StatusCode::OK
    );

    // With a sandbox key, the sandbox tenant answers through it; production keeps its own.
    app.store_sandbox_provider_key("openai", &sandbox_key);
    fake.accept(&sandbox_key);
    fake.revoke(&ragvault_testkit::provider_key_for("openai"));
    let r = call(
        &app,
        Method::POST,
        "/v1/admin/credentials/openai/refresh?sandbox=true",
        Some(&app.operator_key),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = ask(&app, &lab.api_key, 64).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = ask(&app, &production.api_key, 64).await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "production used the sandbox key: {}",
        r.body
    );

    // The sandbox tenant runs under the sandbox budget by default.
    let budget = admin_get(&app, &format!("/v1/admin/tenants/{}/budget", lab.id)).await;
    assert_eq!(budget["budget_micro_usd"], 5_000_000, "{budget}");
    let credentials = admin_get(&app, "/v1/admin/credentials").await.to_string();
    assert!(
        credentials.contains("sandbox/providers/openai"),
        "{credentials}"
    );
    assert!(!credentials.contains(&sandbox_key));
}

#[tokio::test]
async fn a_spike_suspends_the_key_or_subject_until_an_operator_lifts_it() {
    let app = widget_app().await;
    let tenant = app.create_tenant(&unique_slug("spiky")).await;
    ingest_text(&app, &tenant.api_key, "pump.md", MANUAL, &[]).await;
    let (_, calm_key) = app.issue_key(&tenant.id, &["ask"]).await;
    set_policy(
        &app,
        &tenant,
        json!({"anomaly": {"action": "suspend", "multiple": 5.0, "requests_floor_per_minute": 4}}),
    )
    .await;
    // A fresh key has no baseline: the floor (4 a minute) decides; the fifth request is the spike.
    for i in 0..4 {
        assert_eq!(
            ask(&app, &tenant.api_key, 64).await.status,
            StatusCode::OK,
            "request {i}"
        );
    }
    let r = ask(&app, &tenant.api_key, 64).await;
    assert_error(&r, StatusCode::FORBIDDEN, "principal_suspended");
    let r = ask(&app, &tenant.api_key, 64).await;
    assert_error(&r, StatusCode::FORBIDDEN, "principal_suspended");
    // Another key of the tenant is not suspended (the tenant-wide spike is audited, not acted on).
    assert_eq!(ask(&app, &calm_key, 64).await.status, StatusCode::OK);

    // A widget subject: all its tokens are suspended together; other subjects are not.
    let bot = minted(&app, &tenant, json!({"subject": "bot-9"})).await;
    for _ in 0..4 {
        assert_eq!(
            ask_from(&app, &bot, None, None).await.status,
            StatusCode::OK
        );
    }
    let r = ask_from(&app, &bot, None, None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "principal_suspended");
    let bot_again = minted(&app, &tenant, json!({"subject": "bot-9"})).await;
    let r = ask_from(&app, &bot_again, None, None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "principal_suspended");
    let human = minted(&app, &tenant, json!({"subject": "human-1"})).await;
    assert_eq!(
        ask_from(&app, &human, None, None).await.status,
        StatusCode::OK
    );

    // Audited, listed, and lifted by an operator.
    let audit = admin_get(&app, &format!("/v1/admin/audit?tenant={}", tenant.id)).await;
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions
            .iter()
            .filter(|a| **a == "principal.suspended")
            .count()
            == 2,
        "{actions:?}"
    );
    assert!(actions.contains(&"anomaly.detected"));
    let listed = admin_get(
        &app,
        &format!("/v1/admin/tenants/{}/suspensions", tenant.id),
    )
    .await;
    let suspensions = listed["suspensions"].as_array().unwrap().clone();
    assert_eq!(suspensions.len(), 2, "{listed}");
    let key_suspension = suspensions
        .iter()
        .find(|s| s["principal"].as_str().unwrap().starts_with("api_key:"))
        .unwrap();
    let lift = format!(
        "/v1/admin/tenants/{}/suspensions/{}/lift",
        tenant.id,
        key_suspension["id"].as_str().unwrap()
    );
    let r = call(&app, Method::POST, &lift, Some(&tenant.api_key), None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "operator_key_required");
    let r = call(&app, Method::POST, &lift, Some(&app.operator_key), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(ask(&app, &tenant.api_key, 64).await.status, StatusCode::OK);
    let r = call(&app, Method::POST, &lift, Some(&app.operator_key), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = ask_from(&app, &bot, None, None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "principal_suspended");
    let metrics = ragvault_testkit::http::metrics_text(&app).await;
    let detected: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ragvault_anomalies_detected_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(detected >= 3, "{metrics}");
}

#[tokio::test]
async fn policy_files_apply_on_reload_and_bad_ones_are_refused_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let dir_value = format!("\"{}\"", dir.path().display());
    let app = spawn_app_with(&[("policies.dir", dir_value.as_str())]).await;
    let tenant = app.create_tenant(&unique_slug("coded")).await;
    let reload = || {
        call(
            &app,
            Method::POST,
            "/v1/admin/policies/reload",
            Some(&app.operator_key),
            None,
        )
    };

    std::fs::write(
        dir.path().join(format!("{}.toml", tenant.slug)),
        "budget_micro_usd = 250000\nbudget_soft_micro_usd = 1000\n\n[rate_limits]\nprincipal_requests_per_minute = 30\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("nobody-here.toml"),
        "budget_micro_usd = 5\n",
    )
    .unwrap();
    let r = reload().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["applied"], json!([tenant.slug]));
    assert_eq!(r.body["unknown_tenants"], json!(["nobody-here"]));
    let budget = admin_get(&app, &format!("/v1/admin/tenants/{}/budget", tenant.id)).await;
    assert_eq!(budget["budget_micro_usd"], 250_000, "{budget}");
    let r = reload().await;
    assert_eq!(r.body["unchanged"], json!([tenant.slug]), "{}", r.body);

    // Bad files: each problem names file, key and reason, and nothing is applied.
    std::fs::write(
        dir.path().join(format!("{}.toml", tenant.slug)),
        "budget_micro_usd = 1\n[rate_limits]\nrequests_per_hour = 5\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("broken.toml"),
        "failover_chain = [\"openai\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("chainy.toml"),
        "failover_chain = [\"nope\"]\n",
    )
    .unwrap();
    let r = reload().await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy_file");
    let problems = r.body["problems"].as_array().unwrap();
    let find = |file: &str| {
        problems
            .iter()
            .find(|p| p["file"].as_str().unwrap().ends_with(file))
            .unwrap_or_else(|| panic!("no problem for {file}: {problems:?}"))
            .clone()
    };
    let unknown_key = find(&format!("{}.toml", tenant.slug));
    assert_eq!(unknown_key["key"], "rate_limits.requests_per_hour");
    assert!(
        unknown_key["reason"]
            .as_str()
            .unwrap()
            .contains("requests_per_hour"),
        "{unknown_key}"
    );
    assert_eq!(find("broken.toml")["key"], "(syntax)");
    let chain = find("chainy.toml");
    assert_eq!(chain["key"], "failover_chain", "{chain}");
    assert!(
        chain["reason"].as_str().unwrap().contains("nope"),
        "{chain}"
    );
    let budget = admin_get(&app, &format!("/v1/admin/tenants/{}/budget", tenant.id)).await;
    assert_eq!(
        budget["budget_micro_usd"], 250_000,
        "a bad reload changed a policy: {budget}"
    );

    // The change made by a good reload was audited.
    let audit = admin_get(&app, &format!("/v1/admin/audit?tenant={}", tenant.id)).await;
    assert!(audit.to_string().contains("policy"), "{audit}");

    // A bad file stops the start, naming it.
    let settings_dir = dir_value.clone();
    let start = tokio::spawn(async move {
        ragvault_testkit::spawn_app_with(&[("policies.dir", settings_dir.as_str())]).await;
    });
    let err = start
        .await
        .expect_err("the start should fail on bad policy files");
    let panic = err.into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("broken.toml") && message.contains("(syntax)"),
        "{message}"
    );
}

/// A POST with a key and a JSON body.
async fn post_as(app: &TestApp, key: &str, path: &str, body: Value) -> Reply {
    call(app, Method::POST, path, Some(key), Some(body)).await
}

async fn patch_policy(app: &TestApp, tenant: &TestTenant, policy: Value) -> Reply {
    call(
        app,
        Method::PATCH,
        &format!("/v1/admin/tenants/{}", tenant.id),
        Some(&app.operator_key),
        Some(json!({ "policy": policy })),
    )
    .await
}

/// Allowed providers, models and regions decide which providers see a tenant's text, on every request (a
/// stored policy is enforced even when it no longer validates); OpenAI is told `store` on every request;
/// `max_top_k` and `max_document_bytes` bound what a tenant asks for and uploads.
#[tokio::test]
async fn policy_allow_lists_data_controls_and_limits_apply_to_every_request() {
    let fake = FakeProvider::start().await;
    let app = app_with_providers(
        &fake,
        &[("openai", "openai"), ("euai", "openai_compatible")],
        &[
            ("providers.openai.region", "\"us\""),
            ("providers.euai.region", "\"eu\""),
            ("generation.chain", "[\"openai\", \"euai\"]"),
        ],
    )
    .await;
    let tenant = app.create_tenant(&unique_slug("allow")).await;
    ingest_text(&app, &tenant.api_key, "pump.md", MANUAL, &[]).await;

    // Refused when set, naming the key and the reason.
    for (policy, code, needle) in [
        (
            json!({"failover_chain": ["openai"], "allowed_regions": ["eu"]}),
            "invalid_policy",
            "policy.failover_chain: `openai` is in region `us`",
        ),
        (
            json!({"allowed_providers": ["nope"]}),
            "unknown_provider",
            "policy.allowed_providers",
        ),
        (
            json!({"allowed_models": ["gpt-x"]}),
            "invalid_policy",
            "allows no provider of the default chain",
        ),
        (
            json!({"allowed_regions": []}),
            "invalid_policy",
            "policy.allowed_regions",
        ),
        (
            json!({"max_top_k": 0}),
            "invalid_policy",
            "policy.max_top_k",
        ),
        (
            json!({"max_top_k": 10_000}),
            "invalid_policy",
            "policy.max_top_k",
        ),
        (
            json!({"max_document_bytes": 1u64 << 40}),
            "invalid_policy",
            "policy.max_document_bytes",
        ),
        (
            json!({"retention_days": 0}),
            "invalid_policy",
            "policy.retention_days",
        ),
        (
            json!({"data_controls": {"retain": true}}),
            "invalid_request",
            "policy.data_controls.retain",
        ),
    ] {
        let r = patch_policy(&app, &tenant, policy.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{policy}: {}",
            r.body
        );
        assert_eq!(r.body["error"]["code"], code, "{policy}: {}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{policy}: {}",
            r.body
        );
    }

    // Regions: the default chain's US provider is skipped, the EU one answers.
    set_policy(&app, &tenant, json!({"allowed_regions": ["eu"]})).await;
    let r = ask(&app, &tenant.api_key, 64).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["usage"]["provider"], "euai", "{}", r.body);
    let bodies = fake.chat_bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["model"], "euai-model");
    // `store` is OpenAI's own field: an OpenAI-compatible server is not sent it.
    assert!(bodies[0].get("store").is_none(), "{}", bodies[0]);

    // Models: only the OpenAI model; OpenAI hears `store: false` unless the policy opts in.
    set_policy(&app, &tenant, json!({"allowed_models": ["openai-model"]})).await;
    let r = ask(&app, &tenant.api_key, 64).await;
    assert_eq!(r.body["usage"]["provider"], "openai", "{}", r.body);
    assert_eq!(fake.chat_bodies()[1]["store"], false);
    set_policy(
        &app,
        &tenant,
        json!({"allowed_providers": ["openai"], "data_controls": {"store": true}}),
    )
    .await;
    let r = ask(&app, &tenant.api_key, 64).await;
    assert_eq!(r.body["usage"]["provider"], "openai", "{}", r.body);
    assert_eq!(fake.chat_bodies()[2]["store"], true);

    // A stored policy that allows nothing (written around the API): refused before any provider call.
    // (Written before anything reads the tenant's policy: the service caches a resolved policy for 5 s.)
    let locked = app.create_tenant(&unique_slug("locked")).await;
    sqlx::query("UPDATE tenants SET policy = $2 WHERE id = $1::uuid")
        .bind(&locked.id)
        .bind(json!({"allowed_regions": ["ap"]}))
        .execute(app.store.pool())
        .await
        .unwrap();
    ingest_text(&app, &locked.api_key, "pump.md", MANUAL, &[]).await;
    let calls = fake.requests();
    let r = ask(&app, &locked.api_key, 64).await;
    assert_error(&r, StatusCode::FORBIDDEN, "provider_not_allowed");
    assert_eq!(
        fake.requests(),
        calls,
        "a provider outside the policy was called"
    );

    // max_top_k bounds requests and caps the default.
    set_policy(&app, &tenant, json!({"max_top_k": 2})).await;
    for _ in 0..2 {
        ingest_text(&app, &tenant.api_key, "more.md", MANUAL, &[]).await;
    }
    let search = |body: Value| {
        call(
            &app,
            Method::POST,
            "/v1/search",
            Some(&tenant.api_key),
            Some(body),
        )
    };
    let r = search(json!({"query": "prime the pump", "top_k": 3})).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_top_k");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("between 1 and 2"));
    let r = search(json!({"query": "prime the pump"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["results"].as_array().unwrap().len(), 2, "{}", r.body);

    // max_document_bytes: refused at upload, nothing queued.
    set_policy(&app, &tenant, json!({"max_document_bytes": 64})).await;
    let r = post_as(
        &app,
        &tenant.api_key,
        "/v1/documents",
        json!({"name": "big.md", "content": MANUAL}),
    )
    .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "document_too_large");
    let r = post_as(
        &app,
        &tenant.api_key,
        "/v1/documents",
        json!({"name": "small.md", "content": "Reset: hold the button."}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
}

/// `retention_days`: older documents are deleted by the sweeper (chunks, index points and all), audited as
/// `document.expired`; younger ones stay.
#[tokio::test]
async fn documents_past_the_retention_period_are_deleted_and_audited() {
    let app = spawn_app_with(&[("retention.sweep_interval_secs", "1")]).await;
    let tenant = app.create_tenant(&unique_slug("retain")).await;
    let old = ingest_text(&app, &tenant.api_key, "old.md", MANUAL, &[]).await;
    let young = ingest_text(&app, &tenant.api_key, "young.md", MANUAL, &[]).await;
    sqlx::query("UPDATE documents SET created_at = now() - interval '3 days' WHERE id = $1::uuid")
        .bind(&old)
        .execute(app.store.pool())
        .await
        .unwrap();
    set_policy(&app, &tenant, json!({"retention_days": 2})).await;
    let mut gone = false;
    for _ in 0..100 {
        let r = call(
            &app,
            Method::GET,
            &format!("/v1/documents/{old}"),
            Some(&tenant.api_key),
            None,
        )
        .await;
        if r.status == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the expired document is still there");
    let r = call(
        &app,
        Method::GET,
        &format!("/v1/documents/{young}"),
        Some(&tenant.api_key),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = post_as(
        &app,
        &tenant.api_key,
        "/v1/search",
        json!({"query": "prime the pump", "mode": "vector"}),
    )
    .await;
    let names: Vec<&str> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| *n == "young.md"),
        "{names:?}"
    );
    let chunks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chunks WHERE document_id = $1::uuid")
            .bind(&old)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(chunks, 0);
    let audit = admin_get(&app, &format!("/v1/admin/audit?tenant={}", tenant.id)).await;
    let expired: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "document.expired")
        .collect();
    assert_eq!(expired.len(), 1, "{audit}");
    assert_eq!(expired[0]["target"], format!("document:{old}"));
    assert_eq!(expired[0]["actor"], "system:retention");
}

/// A remote embedder's requests are metered (one `embedding` usage row per request, for the uploader or the
/// asker) and budgeted: a tenant whose budget cannot cover the embedding is refused before the request.
#[tokio::test]
async fn remote_embeddings_are_metered_and_stop_at_the_budget() {
    let fake = FakeProvider::start().await;
    let dimension = ragvault_testkit::FAKE_EMBEDDING_DIMENSION.to_string();
    let app = app_with_providers(
        &fake,
        &[],
        &[
            (
                "providers.fakeai.base_url",
                &format!("\"{}\"", fake.base_url),
            ),
            ("embedding.provider", "\"fakeai\""),
            ("embedding.model", "\"fake-embed-1\""),
            ("embedding.dimension", dimension.as_str()),
            ("budget.slice_micro_usd", "5"),
        ],
    )
    .await;
    let key = format!("fk-{}", "meter".repeat(4));
    fake.accept(&key);
    app.set_provider_key("fakeai", &key).await;
    let tenant = app.create_tenant(&unique_slug("embmeter")).await;
    ingest_text(&app, &tenant.api_key, "pump.md", MANUAL, &[]).await;
    let r = post_as(
        &app,
        &tenant.api_key,
        "/v1/search",
        json!({"query": "prime the pump", "mode": "vector"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let search_request = r.headers["x-request-id"].to_str().unwrap().to_owned();

    type Row = (
        String,
        Option<String>,
        String,
        i64,
        i64,
        Option<i64>,
        String,
    );
    app.settle().await;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT principal, request_id, model, input_tokens, cost_micro_usd, key_version, outcome
         FROM usage_events WHERE tenant_id = $1::uuid AND kind = 'embedding' ORDER BY id",
    )
    .bind(&tenant.id)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (principal, job, model, tokens, cost, version, outcome) = &rows[0];
    assert!(principal.starts_with("api_key:"), "{principal}");
    assert!(job.as_deref().unwrap().starts_with("job:"), "{job:?}");
    assert_eq!(model, "fake-embed-1");
    assert!(*tokens > 0 && cost == tokens, "{rows:?}");
    assert!(version.is_some() && outcome == "ok");
    // "prime the pump": three tokens as the fake provider counts them, at 1 micro-USD each.
    assert_eq!(rows[1].1.as_deref(), Some(search_request.as_str()));
    assert_eq!((rows[1].3, rows[1].4), (3, 3));
    let report = admin_get(
        &app,
        &format!("/v1/admin/usage?tenant={}&group_by=model", tenant.id),
    )
    .await;
    assert_eq!(report["rows"][0]["model"], "fake-embed-1", "{report}");
    assert_eq!(report["rows"][0]["requests"], 2, "{report}");

    // A budget already spent: the query is refused before the provider sees it, and so is a document.
    set_policy(&app, &tenant, json!({"budget_micro_usd": 1})).await;
    let calls = fake.requests();
    let r = post_as(
        &app,
        &tenant.api_key,
        "/v1/search",
        json!({"query": "prime the pump", "mode": "vector"}),
    )
    .await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "budget_exceeded");
    let r = post_as(
        &app,
        &tenant.api_key,
        "/v1/documents",
        json!({"name": "late.md", "content": MANUAL}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let job = ragvault_testkit::http::wait_for_job(
        &app,
        &tenant.api_key,
        r.body["job_id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "budget_exceeded", "{job}");
    assert_eq!(
        fake.requests(),
        calls,
        "the embedding provider was called past the budget"
    );
}

/// Failed authentications are audited aggregated per reason and presented key id (its public part only), so a
/// flood of bad keys is a handful of audit rows, and the audit log never holds a presented secret.
#[tokio::test]
async fn failed_authentications_are_audited_in_aggregate_without_secrets() {
    let app = spawn_app_with(&[]).await;
    let tenant = app.create_tenant(&unique_slug("authfail")).await;
    let mut forged = tenant.api_key.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'a' { 'b' } else { 'a' });
    let public_id = tenant.api_key.split('_').nth(1).unwrap().to_owned();
    let app_ref = &app;
    let search = |key: String| async move {
        call(
            app_ref,
            Method::POST,
            "/v1/search",
            Some(&key),
            Some(json!({"query": "x"})),
        )
        .await
    };
    for _ in 0..20 {
        assert_error(
            &search(forged.clone()).await,
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
        );
    }
    let garbage = format!("not-a-key-{}", "z".repeat(30));
    assert_eq!(
        search(garbage.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A request without credentials is not an attempt.
    let r = call(
        &app,
        Method::POST,
        "/v1/search",
        None,
        Some(json!({"query": "x"})),
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "missing_credentials");

    let written = app
        .state
        .access
        .auth_failures()
        .flush(&app.store)
        .await
        .unwrap();
    assert_eq!(written, 2);
    let audit = admin_get(&app, "/v1/admin/audit?limit=1000").await;
    let failed: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "auth.failed")
        .collect();
    assert_eq!(failed.len(), 2, "{audit}");
    let forged_event = failed
        .iter()
        .find(|e| e["target"] == format!("api_key:{public_id}"))
        .unwrap();
    assert_eq!(forged_event["details"]["code"], "invalid_api_key");
    assert_eq!(forged_event["details"]["count"], 20);
    let text = audit.to_string();
    let forged_secret = forged.rsplit('_').next().unwrap();
    assert!(
        !text.contains(forged_secret) && !text.contains(&garbage),
        "a presented secret reached the audit log"
    );
    let verify = admin_get(&app, "/v1/admin/audit/verify").await;
    assert_eq!(verify["intact"], true, "{verify}");
}

/// `/metrics` names requests by route template (never a raw path), provider calls by tenant, provider,
/// model, kind and outcome with their tokens and cost, search latency per mode, the index and ingest.
#[tokio::test]
async fn metrics_cover_requests_provider_spend_search_index_and_ingest() {
    let fake = FakeProvider::start().await;
    let app = app_with_providers(&fake, &[("openai", "openai")], &[]).await;
    let tenant = app.create_tenant(&unique_slug("metrics")).await;
    let document = ingest_text(&app, &tenant.api_key, "pump.md", MANUAL, &[]).await;
    set_policy(&app, &tenant, json!({"failover_chain": ["openai"]})).await;
    let r = ask(&app, &tenant.api_key, 64).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let cost = r.body["usage"]["cost_micro_usd"].as_u64().unwrap();
    let r = call(
        &app,
        Method::GET,
        "/v1/nowhere",
        Some(&tenant.api_key),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(
        &app,
        Method::GET,
        &format!("/v1/documents/{document}"),
        Some(&tenant.api_key),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // Usage series count committed rows: the answer's are committed behind its response.
    app.settle().await;
    let text = ragvault_testkit::http::metrics_text(&app).await;
    let series = format!(
        "tenant=\"{}\",provider=\"openai\",model=\"openai-model\",kind=\"generation\",outcome=\"ok\"",
        tenant.id
    );
    for expected in [
        "ragvault_http_request_duration_seconds_count{route=\"/v1/ask\",method=\"POST\",status=\"200\"} 1\n".to_owned(),
        "ragvault_http_request_duration_seconds_count{route=\"/v1/documents/{document_id}\",method=\"GET\",status=\"200\"} 1\n".to_owned(),
        "ragvault_http_request_duration_seconds_count{route=\"unmatched\",method=\"GET\",status=\"404\"} 1\n".to_owned(),
        "ragvault_http_request_duration_seconds_bucket{route=\"/v1/ask\",method=\"POST\",status=\"200\",le=\"+Inf\"} 1\n".to_owned(),
        format!("ragvault_provider_calls_total{{{series}}} 1\n"),
        format!("ragvault_provider_cost_micro_usd_total{{{series}}} {cost}\n"),
        "ragvault_provider_call_duration_seconds_count{provider=\"openai\",kind=\"generation\"} 1\n".to_owned(),
        "ragvault_search_duration_seconds_count{mode=\"hybrid\"} 1\n".to_owned(),
        "ragvault_ingest_jobs_total{outcome=\"done\"} 1\n".to_owned(),
        "ragvault_ingest_queue_depth 0\n".to_owned(),
        "ragvault_index_partitions_loaded 1\n".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected}in:\n{text}");
    }
    let points: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ragvault_index_points "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(points >= 1);
    assert!(!text.contains(&document), "a raw path reached a label");
    assert!(!text.contains(&tenant.api_key));
}
