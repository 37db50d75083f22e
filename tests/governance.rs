//! Governance end to end: widget tokens (minting, every refusal, origin binding, CORS, key rotation).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ragvault_testkit::http::{assert_error, call, ingest_text, reply, Reply};
use ragvault_testkit::{spawn_app_with, unique_slug, TestApp, TestTenant};
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
