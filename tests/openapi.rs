//! The OpenAPI document against the running service: `/openapi.json` is the checked-in `docs/openapi.json`,
//! and a real response of every API route validates against the schema the document gives for its status,
//! with fields the document does not name refused, so a response and its description cannot drift apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragvault_testkit::http::{call, wait_for_job, Reply};
use ragvault_testkit::{app_with_providers, unique_slug, FakeProvider, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// The document, and every `(method, template)` a response was checked for.
struct Contract {
    document: Value,
    checked: Mutex<BTreeSet<(String, String)>>,
}

impl Contract {
    /// Resolves `$ref`s into the schema itself, and closes every object schema that lists its properties
    /// (`additionalProperties: false`): a field the server sends but the document does not name fails.
    fn closed(&self, schema: &Value) -> Value {
        match schema {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    let name = reference.trim_start_matches("#/components/schemas/");
                    return self.closed(&self.document["components"]["schemas"][name]);
                }
                let mut out: Map<String, Value> = map
                    .iter()
                    .map(|(k, v)| (k.clone(), self.closed(v)))
                    .collect();
                if out.contains_key("properties") && !out.contains_key("additionalProperties") {
                    out.insert("additionalProperties".into(), Value::Bool(false));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.closed(v)).collect()),
            other => other.clone(),
        }
    }

    /// Where `body`, answered with `status`, departs from the document.
    fn problems(
        &self,
        method: &Method,
        template: &str,
        status: StatusCode,
        body: &Value,
    ) -> Vec<String> {
        let operation = &self.document["paths"][template][method.as_str().to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not described"
        );
        let code = status.as_u16().to_string();
        let response = if operation["responses"][&code].is_object() {
            &operation["responses"][&code]
        } else {
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{method} {template} answered {code}, which is not described: {body}"
            );
            &operation["responses"]["default"]
        };
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} {code}: no JSON schema"
        );
        let validator = jsonschema::validator_for(&self.closed(schema)).unwrap();
        validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    fn check(&self, method: &Method, template: &str, reply: &Reply) {
        let status = reply.status.as_u16();
        let problems = self.problems(method, template, reply.status, &reply.body);
        assert!(
            problems.is_empty(),
            "{method} {template} {status} does not match the document: {problems:?}\nbody: {}",
            reply.body
        );
        self.checked
            .lock()
            .unwrap()
            .insert((method.as_str().to_lowercase(), template.to_owned()));
    }
}

/// Calls `path` (the template with its ids filled in), checks the reply against the document, returns it.
async fn exchange(
    contract: &Contract,
    app: &TestApp,
    (method, template, path): (Method, &str, &str),
    key: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let reply = call(app, method.clone(), path, key, body).await;
    contract.check(&method, template, &reply);
    reply
}

#[tokio::test]
async fn every_route_answers_as_the_document_describes() {
    let fake = FakeProvider::start().await;
    let app = app_with_providers(&fake, &[("openai", "openai")], &[]).await;

    // Served = checked in.
    let served = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    let served_text = served.text().await.unwrap();
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    assert_eq!(served_text, checked_in);
    let contract = Contract {
        document: serde_json::from_str(&served_text).unwrap(),
        checked: Mutex::default(),
    };
    let c = &contract;
    let op = app.operator_key.as_str();

    exchange(c, &app, (Method::GET, "/healthz", "/healthz"), None, None).await;
    exchange(c, &app, (Method::GET, "/readyz", "/readyz"), None, None).await;
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    c.checked
        .lock()
        .unwrap()
        .insert(("get".into(), "/metrics".into()));

    // Tenants.
    let slug = unique_slug("contract");
    let created = exchange(
        c,
        &app,
        (Method::POST, "/v1/admin/tenants", "/v1/admin/tenants"),
        Some(op),
        Some(json!({"slug": slug})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let tenant_id = created.body["id"].as_str().unwrap().to_owned();
    let tenant_key = created.body["api_key"].as_str().unwrap().to_owned();
    let t = |suffix: &str| format!("/v1/admin/tenants/{tenant_id}{suffix}");
    exchange(
        c,
        &app,
        (Method::GET, "/v1/admin/tenants", "/v1/admin/tenants"),
        Some(op),
        None,
    )
    .await;
    exchange(
        c,
        &app,
        (Method::GET, "/v1/admin/tenants/{tenant_id}", &t("")),
        Some(op),
        None,
    )
    .await;
    let patched = exchange(
        c,
        &app,
        (Method::PATCH, "/v1/admin/tenants/{tenant_id}", &t("")),
        Some(op),
        Some(json!({"policy": {"failover_chain": ["openai"], "budget_micro_usd": 50_000_000}})),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);

    // Keys: an admin key for the tenant, then the tenant's own key routes.
    let issued = exchange(
        c,
        &app,
        (
            Method::POST,
            "/v1/admin/tenants/{tenant_id}/api-keys",
            &t("/api-keys"),
        ),
        Some(op),
        Some(json!({"scopes": ["admin", "ask", "ingest", "tokens"], "name": "contract"})),
    )
    .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    let admin_key = issued.body["api_key"].as_str().unwrap().to_owned();
    exchange(
        c,
        &app,
        (
            Method::GET,
            "/v1/admin/tenants/{tenant_id}/api-keys",
            &t("/api-keys"),
        ),
        Some(op),
        None,
    )
    .await;
    exchange(
        c,
        &app,
        (Method::GET, "/v1/whoami", "/v1/whoami"),
        Some(&admin_key),
        None,
    )
    .await;
    exchange(
        c,
        &app,
        (Method::GET, "/v1/whoami", "/v1/whoami"),
        Some(op),
        None,
    )
    .await;
    let refused = exchange(
        c,
        &app,
        (Method::GET, "/v1/whoami", "/v1/whoami"),
        None,
        None,
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    exchange(
        c,
        &app,
        (Method::GET, "/v1/api-keys", "/v1/api-keys"),
        Some(&admin_key),
        None,
    )
    .await;
    let spare = exchange(
        c,
        &app,
        (Method::POST, "/v1/api-keys", "/v1/api-keys"),
        Some(&admin_key),
        Some(json!({"scopes": ["ask"], "expires_in_seconds": 3600, "groups": ["support"]})),
    )
    .await;
    assert_eq!(spare.status, StatusCode::CREATED, "{}", spare.body);
    let spare_id = spare.body["id"].as_str().unwrap().to_owned();
    exchange(
        c,
        &app,
        (
            Method::DELETE,
            "/v1/api-keys/{key_id}",
            &format!("/v1/api-keys/{spare_id}"),
        ),
        Some(&admin_key),
        None,
    )
    .await;
    let token = exchange(
        c,
        &app,
        (Method::POST, "/v1/widget-tokens", "/v1/widget-tokens"),
        Some(&admin_key),
        Some(json!({"ttl_seconds": 300, "subject": "visitor-1"})),
    )
    .await;
    assert_eq!(token.status, StatusCode::OK, "{}", token.body);
    exchange(
        c,
        &app,
        (Method::GET, "/v1/whoami", "/v1/whoami"),
        Some(token.body["token"].as_str().unwrap()),
        None,
    )
    .await;

    // Documents and retrieval.
    let accepted = exchange(
        c,
        &app,
        (Method::POST, "/v1/documents", "/v1/documents"),
        Some(&admin_key),
        Some(json!({
            "name": "pump.md",
            "content": "# Pump\n\n## Reset\n\nHold the reset button for ten seconds until the light blinks.\n",
            "tags": ["manual"],
            "metadata": {"team": "support"},
        })),
    )
    .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let document_id = accepted.body["document_id"].as_str().unwrap().to_owned();
    let job_id = accepted.body["job_id"].as_str().unwrap().to_owned();
    wait_for_job(&app, &admin_key, &job_id).await;
    exchange(
        c,
        &app,
        (
            Method::GET,
            "/v1/jobs/{job_id}",
            &format!("/v1/jobs/{job_id}"),
        ),
        Some(&admin_key),
        None,
    )
    .await;
    exchange(
        c,
        &app,
        (Method::GET, "/v1/documents", "/v1/documents"),
        Some(&admin_key),
        None,
    )
    .await;
    let d = format!("/v1/documents/{document_id}");
    exchange(
        c,
        &app,
        (Method::GET, "/v1/documents/{document_id}", &d),
        Some(&admin_key),
        None,
    )
    .await;
    let search = exchange(
        c,
        &app,
        (Method::POST, "/v1/search", "/v1/search"),
        Some(&admin_key),
        Some(json!({"query": "reset the pump", "top_k": 3, "mode": "hybrid", "tags": ["manual"]})),
    )
    .await;
    assert_eq!(search.status, StatusCode::OK, "{}", search.body);
    let answer = exchange(
        c,
        &app,
        (Method::POST, "/v1/ask", "/v1/ask"),
        Some(&admin_key),
        Some(json!({"query": "How do I reset the pump?"})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // The check has teeth: an undocumented field, a missing one, a wrong type all fail.
    let mut extra = answer.body.clone();
    extra["surprise"] = json!(1);
    let mut missing = answer.body.clone();
    missing.as_object_mut().unwrap().remove("usage");
    let mut mistyped = answer.body.clone();
    mistyped["citations"][0]["score"] = json!("high");
    for tampered in [extra, missing, mistyped] {
        assert!(!c
            .problems(&Method::POST, "/v1/ask", StatusCode::OK, &tampered)
            .is_empty());
    }
    let bad = exchange(
        c,
        &app,
        (Method::POST, "/v1/ask", "/v1/ask"),
        Some(&admin_key),
        Some(json!({"query": "x", "top_k": 0})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let chat = exchange(
        c,
        &app,
        (Method::POST, "/v1/chat/completions", "/v1/chat/completions"),
        Some(&admin_key),
        Some(json!({"model": "ragvault", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "How do I reset the pump?"}]}
        ]})),
    )
    .await;
    assert_eq!(chat.status, StatusCode::OK, "{}", chat.body);

    // Operator views.
    exchange(
        c,
        &app,
        (
            Method::GET,
            "/v1/admin/usage",
            "/v1/admin/usage?group_by=model",
        ),
        Some(op),
        None,
    )
    .await;
    exchange(
        c,
        &app,
        (
            Method::GET,
            "/v1/admin/usage",
            &format!("/v1/admin/usage?tenant={slug}"),
        ),
        Some(op),
        None,
    )
    .await;
    exchange(
        c,
        &app,
        (
            Method::GET,
            "/v1/admin/tenants/{tenant_id}/budget",
            &t("/budget"),
        ),
        Some(op),
        None,
    )
    .await;
    exchange(
        c,
        &app,
        (Method::GET, "/v1/admin/audit", "/v1/admin/audit?limit=50"),
        Some(op),
        None,
    )
    .await;
    exchange(
        c,
        &app,
        (
            Method::GET,
            "/v1/admin/audit/verify",
            "/v1/admin/audit/verify",
        ),
        Some(op),
        None,
    )
    .await;
    let index = exchange(
        c,
        &app,
        (
            Method::GET,
            "/v1/admin/index/verify",
            "/v1/admin/index/verify",
        ),
        Some(op),
        None,
    )
    .await;
    assert_eq!(index.body["consistent"], true, "{}", index.body);
    exchange(
        c,
        &app,
        (
            Method::GET,
            "/v1/admin/credentials",
            "/v1/admin/credentials",
        ),
        Some(op),
        None,
    )
    .await;
    let refreshed = exchange(
        c,
        &app,
        (
            Method::POST,
            "/v1/admin/credentials/{provider}/refresh",
            "/v1/admin/credentials/openai/refresh",
        ),
        Some(op),
        None,
    )
    .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let suspend = (
        Method::POST,
        "/v1/admin/tenants/{tenant_id}/suspensions",
        t("/suspensions"),
    );
    let suspended = exchange(
        c,
        &app,
        (suspend.0.clone(), suspend.1, &suspend.2),
        Some(op),
        Some(json!({"principal": "subject:visitor-1", "note": "contract test"})),
    )
    .await;
    assert_eq!(suspended.status, StatusCode::CREATED, "{}", suspended.body);
    let again = exchange(
        c,
        &app,
        (suspend.0.clone(), suspend.1, &suspend.2),
        Some(op),
        Some(json!({"principal": "subject:visitor-1"})),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    exchange(
        c,
        &app,
        (
            Method::GET,
            "/v1/admin/tenants/{tenant_id}/suspensions",
            &t("/suspensions"),
        ),
        Some(op),
        None,
    )
    .await;
    let missing = exchange(
        c,
        &app,
        (
            Method::POST,
            "/v1/admin/tenants/{tenant_id}/suspensions/{suspension_id}/lift",
            &t(&format!("/suspensions/{}/lift", uuid::Uuid::new_v4())),
        ),
        Some(op),
        None,
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    exchange(
        c,
        &app,
        (
            Method::POST,
            "/v1/admin/policies/reload",
            "/v1/admin/policies/reload",
        ),
        Some(op),
        None,
    )
    .await;
    exchange(
        c,
        &app,
        (
            Method::GET,
            "/v1/admin/widget-signing-keys",
            "/v1/admin/widget-signing-keys",
        ),
        Some(op),
        None,
    )
    .await;
    exchange(
        c,
        &app,
        (
            Method::POST,
            "/v1/admin/widget-signing-keys/rotate",
            "/v1/admin/widget-signing-keys/rotate",
        ),
        Some(op),
        None,
    )
    .await;
    let rotated = exchange(
        c,
        &app,
        (
            Method::POST,
            "/v1/admin/tenants/{tenant_id}/rotate-keys",
            &t("/rotate-keys"),
        ),
        Some(op),
        None,
    )
    .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    exchange(
        c,
        &app,
        (
            Method::GET,
            "/v1/admin/tenants/{tenant_id}/reencryption",
            &t("/reencryption"),
        ),
        Some(op),
        None,
    )
    .await;

    // Removals last.
    exchange(
        c,
        &app,
        (Method::DELETE, "/v1/documents/{document_id}", &d),
        Some(&admin_key),
        None,
    )
    .await;
    let key_id = created.body["api_key_id"].as_str().unwrap();
    exchange(
        c,
        &app,
        (
            Method::DELETE,
            "/v1/admin/tenants/{tenant_id}/api-keys/{key_id}",
            &t(&format!("/api-keys/{key_id}")),
        ),
        Some(op),
        None,
    )
    .await;
    assert_eq!(
        call(&app, Method::GET, "/v1/whoami", Some(&tenant_key), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    exchange(
        c,
        &app,
        (Method::DELETE, "/v1/admin/tenants/{tenant_id}", &t("")),
        Some(op),
        None,
    )
    .await;

    // Every described operation was exercised above.
    let described: BTreeSet<(String, String)> = contract.document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let checked = contract.checked.lock().unwrap().clone();
    let unchecked: Vec<_> = described.difference(&checked).collect();
    assert!(
        unchecked.is_empty(),
        "described but not exercised: {unchecked:?}"
    );
}
