//! The operator dashboard over HTTP: login and the session cookie's attributes, pages that show the spend the
//! usage rows hold, CSRF on every state-changing form, revoking a key from the page, logout, CSV export; then the
//! same flows in real headless Chromium (over WebDriver), with a screenshot of each page in CI's output folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragvault_store::NewUsageEvent;
use ragvault_testkit::browser::{Browser, Locator};
use ragvault_testkit::{spawn_app_with, unique_slug, TestApp, TestTenant};
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

/// A service with one tenant that spent $1.25 + $0.25 on gpt-4o-mini and $0.50 on `other_model` today.
async fn app_with_spend(prefix: &str, other_model: &str) -> (TestApp, TestTenant) {
    let app = spawn_app_with(&[]).await;
    let tenant = app.create_tenant(&unique_slug(prefix)).await;
    app.store
        .record_usage_batch(
            &[
                usage(&tenant.id, "gpt-4o-mini", 1_250_000),
                usage(&tenant.id, "gpt-4o-mini", 250_000),
                usage(&tenant.id, other_model, 500_000),
            ],
            &[],
        )
        .await
        .unwrap();
    (app, tenant)
}

#[tokio::test]
async fn operators_log_in_see_spend_revoke_keys_and_log_out() {
    let (app, tenant) = app_with_spend("dash", "claude-<b>x</b>").await;
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
    assert_eq!(whoami_status(&app, &tenant.api_key).await, StatusCode::OK);
    let r = client
        .post(&revoke)
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        whoami_status(&app, &tenant.api_key).await,
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

async fn whoami_status(app: &TestApp, key: &str) -> StatusCode {
    app.client
        .get(app.url("/v1/whoami"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
}

async fn submit_login(browser: &Browser, key: &str) {
    let field = browser
        .client
        .find(Locator::Css("input[name=operator_key]"))
        .await
        .unwrap();
    field.send_keys(key).await.unwrap();
    browser
        .client
        .find(Locator::Css("form[action='/admin/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test]
async fn the_dashboard_works_in_headless_chromium() {
    let (app, tenant) = app_with_spend("browser", "claude-3-5-haiku").await;
    // `localhost`, not 127.0.0.1: Chromium keeps `Secure` cookies on plain HTTP only for localhost.
    let base = format!("http://localhost:{}", app.address.port());
    let browser = Browser::start(1280, 900).await;
    let web = &browser.client;

    // Logged out: the overview sends the browser to the login form.
    web.goto(&format!("{base}/admin")).await.unwrap();
    assert_eq!(browser.path().await, "/admin/login");
    browser.screenshot("dashboard-login").await;

    // A wrong key shows the form again with the refusal.
    submit_login(&browser, "rvk_nope_nope").await;
    let refusal = browser
        .wait_for_text("p.bad", "not a valid operator key")
        .await;
    assert!(refusal.contains("not a valid operator key"), "{refusal}");

    // The operator key logs in; the session cookie is HttpOnly (scripts cannot read it), Secure, SameSite=Strict.
    submit_login(&browser, &app.operator_key).await;
    assert_eq!(browser.wait_for_path("/admin").await, "/admin");
    let cookie = web.get_named_cookie("rv_admin").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict")
    );
    let script_view = web.execute("return document.cookie", vec![]).await.unwrap();
    assert!(
        !script_view.to_string().contains("rv_admin"),
        "{script_view}"
    );

    // The overview row for the tenant shows the spend the usage rows hold: $1.25 + $0.25 + $0.50.
    let row = format!("tr[data-tenant='{}']", tenant.id);
    assert_eq!(
        browser.text_of(&format!("{row} td.range-spend")).await,
        "$2.00"
    );
    assert!(browser
        .text_of("#models")
        .await
        .contains("claude-3-5-haiku"));
    browser.screenshot("dashboard-overview").await;

    // Tenant detail through the link on the overview: usage table and chart.
    web.find(Locator::Css(&format!("{row} a")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let tenant_path = format!("/admin/tenants/{}", tenant.id);
    let now = browser
        .wait_until_path(|p| p.starts_with(&tenant_path))
        .await;
    assert!(now.starts_with(&tenant_path), "{now}");
    let usage_table = browser.text_of("#usage").await;
    assert!(usage_table.contains("gpt-4o-mini") && usage_table.contains("$1.50"));
    assert!(usage_table.contains("claude-3-5-haiku") && usage_table.contains("$0.50"));
    web.find(Locator::Css("svg")).await.unwrap();
    browser.screenshot("dashboard-tenant").await;

    let tenant_page = browser.path().await;
    // Revoke an end user's widget access from the page: its subject is suspended, its tokens refused.
    let minted = app
        .client
        .post(app.url("/v1/widget-tokens"))
        .bearer_auth(&tenant.api_key)
        .json(&serde_json::json!({"subject": "visitor-7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), StatusCode::OK);
    let widget_token = minted.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let widget_ask = || async {
        app.client
            .post(app.url("/v1/ask"))
            .bearer_auth(&widget_token)
            .json(&serde_json::json!({"query": "anything?"}))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(widget_ask().await.status(), StatusCode::OK);
    web.find(Locator::Css("#suspend-subject input[name=subject]"))
        .await
        .unwrap()
        .send_keys("visitor-7")
        .await
        .unwrap();
    web.find(Locator::Css("#suspend-subject button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let suspended = browser
        .wait_for_text("#suspensions", "subject:visitor-7")
        .await;
    assert!(suspended.contains("subject:visitor-7"), "{suspended}");
    let refused = widget_ask().await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "principal_suspended");
    web.goto(&format!("{base}{tenant_page}")).await.unwrap();

    // Revoke with the CSRF field taken out of the form: refused, and the key still works.
    let revoke_button = "#keys button[data-key]";
    let key_id = web
        .find(Locator::Css(revoke_button))
        .await
        .unwrap()
        .attr("data-key")
        .await
        .unwrap()
        .unwrap();
    let revoke_path = format!("/admin/tenants/{}/keys/{key_id}/revoke", tenant.id);
    web.execute(
        "document.querySelector(arguments[0]).form.querySelector('input[name=csrf]').remove()",
        vec![revoke_button.into()],
    )
    .await
    .unwrap();
    web.find(Locator::Css(revoke_button))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.wait_for_path(&revoke_path).await, revoke_path);
    let refusal = web.source().await.unwrap();
    assert!(refusal.contains("csrf_failed"), "{refusal}");
    browser.screenshot("dashboard-csrf-refused").await;
    assert_eq!(whoami_status(&app, &tenant.api_key).await, StatusCode::OK);

    // Revoke from the page as it is served: the key is refused from then on and the page says so.
    web.goto(&format!("{base}{tenant_page}")).await.unwrap();
    web.find(Locator::Css(revoke_button))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let keys = browser.wait_for_text("#keys", "revoked").await;
    assert!(keys.contains("revoked"), "{keys}");
    let now = browser
        .wait_until_path(|p| p.starts_with(&tenant_path))
        .await;
    assert!(now.starts_with(&tenant_path), "{now}");
    assert_eq!(
        whoami_status(&app, &tenant.api_key).await,
        StatusCode::UNAUTHORIZED
    );

    // Credentials and audit pages.
    web.find(Locator::LinkText("Credentials"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        browser.wait_for_path("/admin/credentials").await,
        "/admin/credentials"
    );
    browser.screenshot("dashboard-credentials").await;
    web.find(Locator::LinkText("Audit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.wait_for_path("/admin/audit").await, "/admin/audit");
    let audit = browser.wait_for_text("main", "api_key.revoked").await;
    assert!(
        audit.contains("Hash chain intact") && audit.contains("api_key.revoked"),
        "{audit}"
    );
    browser.screenshot("dashboard-audit").await;

    // On a phone-sized window the page does not scroll sideways (wide tables scroll inside their box).
    web.set_window_size(390, 844).await.unwrap();
    web.goto(&format!("{base}/admin")).await.unwrap();
    let fits = web
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, serde_json::Value::Bool(true));
    browser.screenshot("dashboard-overview-phone").await;

    // Logout ends the session: the next visit lands on the login form again.
    web.find(Locator::Css("form[action='/admin/logout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.wait_for_path("/admin/login").await, "/admin/login");
    web.goto(&format!("{base}/admin/audit")).await.unwrap();
    assert_eq!(browser.path().await, "/admin/login");
    browser.close().await;
}
