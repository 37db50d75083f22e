//! The operator dashboard over HTTP: login and the session cookie's attributes, pages that show the spend the
//! usage rows hold, CSRF on every state-changing form, revoking a key from the page, logout, CSV export.
//! (Headless-browser runs of the same flows come with the Chromium harness.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragvault_store::NewUsageEvent;
use ragvault_testkit::{spawn_app_with, unique_slug, TestApp};
use reqwest::redirect::Policy;
use reqwest::StatusCode;

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn login(app: &TestApp, client: &reqwest::Client, key: &str) -> reqwest::Response {
    client
        .post(app.url("/admin/login"))
        .form(&[("operator_key", key)])
        .send()
        .await
        .unwrap()
}

fn cookie_of(response: &reqwest::Response) -> String {
    let set = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    set.split(';').next().unwrap().to_owned()
}

async fn page(
    app: &TestApp,
    client: &reqwest::Client,
    cookie: &str,
    path: &str,
) -> (StatusCode, String) {
    let r = client
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

fn csrf_in(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[start..start + 64].to_owned()
}

fn usage(tenant: &str, model: &str, cost: u64) -> NewUsageEvent {
    NewUsageEvent {
        at: time::OffsetDateTime::now_utc(),
        tenant_id: ragvault_core::TenantId(tenant.parse().unwrap()),
        principal: "api_key:test".into(),
        request_id: None,
        kind: "generation",
        provider: "openai".into(),
        model: model.into(),
        key_version: Some(1),
        input_tokens: 100,
        output_tokens: 10,
        cost_micro_usd: cost,
        latency_ms: 5,
        bytes_sent: 0,
        bytes_received: 0,
        outcome: "ok",
    }
}

#[tokio::test]
async fn operators_log_in_see_spend_revoke_keys_and_log_out() {
    let app = spawn_app_with(&[]).await;
    let tenant = app.create_tenant(&unique_slug("dash")).await;
    app.store
        .record_usage_batch(
            &[
                usage(&tenant.id, "gpt-4o-mini", 1_250_000),
                usage(&tenant.id, "gpt-4o-mini", 250_000),
                usage(&tenant.id, "claude-<b>x</b>", 500_000),
            ],
            &[],
        )
        .await
        .unwrap();
    let client = browser();

    // Logged out: every page sends the browser to the login form.
    for path in [
        "/admin",
        &format!("/admin/tenants/{}", tenant.id),
        "/admin/audit",
    ] {
        let (status, _) = page(&app, &client, "rv_admin=rvs_nothing", path).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
    }
    let r = client.get(app.url("/admin")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/admin/login");

    // A wrong key: the form again, 401, no cookie; a tenant key is not an operator key either.
    let r = login(&app, &client, "rvk_nope_nope").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("not a valid operator key"));
    let r = login(&app, &client, &tenant.api_key).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = login(&app, &client, &app.operator_key).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/admin"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains(&app.operator_key));
    let cookie = cookie_of(&r);

    // The overview shows the tenant's spend as the usage rows hold it ($2.00), escaped model names.
    let (status, html) = page(&app, &client, &cookie, "/admin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&tenant.slug), "{html}");
    assert!(html.contains("range-spend\">$2.00<"), "{html}");
    assert!(html.contains("claude-&lt;b&gt;x&lt;/b&gt;") && !html.contains("<b>x</b>"));
    let (status, html) = page(
        &app,
        &client,
        &cookie,
        &format!("/admin/tenants/{}", tenant.id),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("gpt-4o-mini: $1.50"), "{html}");
    let csrf = csrf_in(&html);

    // CSV export of the same rows.
    let (status, csv) = page(
        &app,
        &client,
        &cookie,
        &format!("/admin/tenants/{}/usage.csv", tenant.id),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(csv.starts_with("day,provider,model,"), "{csv}");
    assert!(csv.contains("\"gpt-4o-mini\",2,0,200,20,1500000"), "{csv}");

    // Revoke the tenant's key from the page: refused without the CSRF token, done with it.
    let key_id = app
        .store
        .list_api_keys(ragvault_core::TenantId(tenant.id.parse().unwrap()))
        .await
        .unwrap()[0]
        .id;
    let revoke = app.url(&format!(
        "/admin/tenants/{}/keys/{key_id}/revoke",
        tenant.id
    ));
    for bad in ["", "0000"] {
        let r = client
            .post(&revoke)
            .header("cookie", &cookie)
            .form(&[("csrf", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "csrf_failed");
    }
    let whoami = |key: String| {
        let app = &app;
        async move {
            app.client
                .get(app.url("/v1/whoami"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(whoami(tenant.api_key.clone()).await, StatusCode::OK);
    let r = client
        .post(&revoke)
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        whoami(tenant.api_key.clone()).await,
        StatusCode::UNAUTHORIZED
    );

    // Pages carry the security headers.
    let r = client
        .get(app.url("/admin/audit"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    let html = r.text().await.unwrap();
    assert!(html.contains("Hash chain intact"), "{html}");
    assert!(html.contains("api_key.revoked"), "{html}");

    // Logout ends the session: the same cookie is sent to the login page afterwards.
    let r = client
        .post(app.url("/admin/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (status, _) = page(&app, &client, &cookie, "/admin").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}
