//! Page bodies and the shared layout. Links and forms use fixed paths under `/admin`; ids in paths are
//! ragvault's own UUIDs (escaped all the same).

use crate::chart::{budget_bar, daily_spend_chart, DaySpend};
use crate::{dollars, escape};
use std::fmt::Write;

/// The stylesheet, served by the server at `/admin/static/dashboard.css` (no inline styles: CSP-friendly).
pub const STYLESHEET: &str = "\
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}\
header{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;padding:.6rem 1rem;background:#1f3a5f;color:#fff}\
header a{color:#fff;text-decoration:none}header a.active{text-decoration:underline}\
header form{margin-left:auto}main{padding:1rem;max-width:72rem;margin:auto}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:.35rem .5rem;border-bottom:1px solid #e3e3e3;\
text-align:left;white-space:nowrap}td.num,th.num{text-align:right}.scroll{overflow-x:auto}\
.legend{display:flex;flex-wrap:wrap;gap:.8rem;list-style:none;padding:0}.bad{color:#b00020}.ok{color:#007a4d}\
form.inline{display:inline}form.range{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin:.5rem 0}\
button{cursor:pointer}.empty{color:#666}\
@media (max-width:40rem){main{padding:.5rem}th,td{padding:.25rem}}";

/// The range a page shows, as `YYYY-MM-DD` (inclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DateRange {
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantSpend {
    pub id: String,
    pub slug: String,
    pub environment: String,
    pub status: String,
    pub today_micro_usd: u64,
    pub month_micro_usd: u64,
    pub budget_micro_usd: Option<u64>,
    /// In the selected range.
    pub range_micro_usd: u64,
    pub requests: u64,
    pub errors: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpend {
    pub provider: String,
    pub model: String,
    pub requests: u64,
    pub cost_micro_usd: u64,
}

pub struct Overview {
    pub range: DateRange,
    pub tenants: Vec<TenantSpend>,
    pub top_models: Vec<ModelSpend>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    pub day: String,
    pub provider: String,
    pub model: String,
    pub requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micro_usd: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub scopes: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuspensionRow {
    pub id: String,
    /// `api_key:<id>` or `widget:<subject>`.
    pub principal: String,
    pub reason: String,
    pub created_at: String,
}

pub struct TenantDetail {
    pub tenant: TenantSpend,
    pub range: DateRange,
    pub days: Vec<DaySpend>,
    pub usage: Vec<UsageRow>,
    pub keys: Vec<KeyRow>,
    pub suspensions: Vec<SuspensionRow>,
    pub anomalies: Vec<AuditRow>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRow {
    pub provider: String,
    pub source: String,
    pub state: String,
    pub key_version: Option<u64>,
    pub lease_age_secs: Option<u64>,
    pub expires_in_secs: Option<u64>,
    pub last_refresh: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub tenant: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainStatus {
    pub intact: bool,
    pub checked: u64,
    pub first_bad_seq: Option<i64>,
}

pub struct AuditView {
    pub rows: Vec<AuditRow>,
    pub chain: ChainStatus,
    pub tenant_filter: String,
    pub action_filter: String,
    /// Query string of the next page, if there is one.
    pub next: Option<String>,
}

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(csrf)
    )
}

/// The shared frame: navigation, logout (a CSRF-protected POST), the page.
fn layout(title: &str, active: &str, csrf: &str, body: &str) -> String {
    let link = |href: &str, name: &str| {
        let class = if name == active {
            " class=\"active\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{class}>{name}</a>")
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · ragvault</title><link rel=\"stylesheet\" href=\"/admin/static/dashboard.css\"></head>\
         <body><header><strong>ragvault</strong>{}{}{}\
         <form method=\"post\" action=\"/admin/logout\">{}<button type=\"submit\">Log out</button></form></header>\
         <main><h1>{}</h1>{body}</main></body></html>",
        escape(title),
        link("/admin", "Overview"),
        link("/admin/credentials", "Credentials"),
        link("/admin/audit", "Audit"),
        csrf_field(csrf),
        escape(title),
    )
}

fn range_form(action: &str, range: &DateRange) -> String {
    format!(
        "<form class=\"range\" method=\"get\" action=\"{}\"><label>From <input type=\"date\" name=\"from\" value=\"{}\"></label>\
         <label>To <input type=\"date\" name=\"to\" value=\"{}\"></label><button type=\"submit\">Show</button></form>",
        escape(action),
        escape(&range.from),
        escape(&range.to)
    )
}

fn error_rate(requests: u64, errors: u64) -> String {
    if requests == 0 {
        return "–".to_owned();
    }
    format!("{:.1}%", errors as f64 * 100.0 / requests as f64)
}

pub fn login_page(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"bad\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Log in · ragvault</title>\
         <link rel=\"stylesheet\" href=\"/admin/static/dashboard.css\"></head><body><main><h1>ragvault operators</h1>{error}\
         <form method=\"post\" action=\"/admin/login\"><label>Operator key <input type=\"password\" name=\"operator_key\" \
         autocomplete=\"off\" required></label> <button type=\"submit\">Log in</button></form></main></body></html>"
    )
}

pub fn overview_page(view: &Overview, csrf: &str) -> String {
    let mut body = range_form("/admin", &view.range);
    body.push_str(
        "<h2>Tenants</h2><div class=\"scroll\"><table id=\"tenants\"><thead><tr><th>Tenant</th><th>Environment</th>\
         <th>Status</th><th class=\"num\">Today</th><th class=\"num\">Range</th><th>Month / budget</th>\
         <th class=\"num\">Requests</th><th class=\"num\">Errors</th></tr></thead><tbody>",
    );
    for t in &view.tenants {
        let _ = write!(
            body,
            "<tr data-tenant=\"{id}\"><td><a href=\"/admin/tenants/{id}?from={from}&amp;to={to}\">{slug}</a></td><td>{env}</td>\
             <td>{status}</td><td class=\"num\">{today}</td><td class=\"num range-spend\">{range}</td><td>{budget}</td>\
             <td class=\"num\">{requests}</td><td class=\"num\">{errors}</td></tr>",
            id = escape(&t.id),
            from = escape(&view.range.from),
            to = escape(&view.range.to),
            slug = escape(&t.slug),
            env = escape(&t.environment),
            status = escape(&t.status),
            today = escape(&dollars(t.today_micro_usd)),
            range = escape(&dollars(t.range_micro_usd)),
            budget = budget_bar(t.month_micro_usd, t.budget_micro_usd),
            requests = t.requests,
            errors = error_rate(t.requests, t.errors),
        );
    }
    body.push_str("</tbody></table></div><h2>Top models</h2><div class=\"scroll\"><table id=\"models\"><thead><tr>\
        <th>Provider</th><th>Model</th><th class=\"num\">Requests</th><th class=\"num\">Spend</th></tr></thead><tbody>");
    for m in &view.top_models {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&m.provider),
            escape(&m.model),
            m.requests,
            escape(&dollars(m.cost_micro_usd))
        );
    }
    body.push_str("</tbody></table></div>");
    layout("Overview", "Overview", csrf, &body)
}

pub fn tenant_page(view: &TenantDetail, csrf: &str) -> String {
    let t = &view.tenant;
    let id = escape(&t.id);
    let mut body = format!(
        "<p>{} · {} · month {}</p>",
        escape(&t.environment),
        escape(&t.status),
        budget_bar(t.month_micro_usd, t.budget_micro_usd)
    );
    body.push_str(&range_form(
        &format!("/admin/tenants/{}", t.id),
        &view.range,
    ));
    body.push_str("<h2>Daily spend by model</h2>");
    body.push_str(&daily_spend_chart(&view.days));
    let _ = write!(
        body,
        "<p><a id=\"csv\" href=\"/admin/tenants/{id}/usage.csv?from={}&amp;to={}\">Download usage (CSV)</a></p>",
        escape(&view.range.from),
        escape(&view.range.to)
    );
    body.push_str("<h2>Usage</h2><div class=\"scroll\"><table id=\"usage\"><thead><tr><th>Day</th><th>Provider</th>\
        <th>Model</th><th class=\"num\">Requests</th><th class=\"num\">Errors</th><th class=\"num\">Input tokens</th>\
        <th class=\"num\">Output tokens</th><th class=\"num\">Spend</th></tr></thead><tbody>");
    for u in &view.usage {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&u.day),
            escape(&u.provider),
            escape(&u.model),
            u.requests,
            u.errors,
            u.input_tokens,
            u.output_tokens,
            escape(&dollars(u.cost_micro_usd))
        );
    }
    body.push_str("</tbody></table></div><h2>API keys</h2><div class=\"scroll\"><table id=\"keys\"><thead><tr>\
        <th>Name</th><th>Scopes</th><th>Created</th><th>Last used</th><th></th></tr></thead><tbody>");
    for k in &view.keys {
        let action = if k.revoked {
            "<span class=\"bad\">revoked</span>".to_owned()
        } else {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/admin/tenants/{id}/keys/{}/revoke\">{}\
                 <button type=\"submit\" data-key=\"{}\">Revoke</button></form>",
                escape(&k.id),
                csrf_field(csrf),
                escape(&k.id)
            )
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            escape(&k.name),
            escape(&k.scopes),
            escape(&k.created_at),
            escape(k.last_used_at.as_deref().unwrap_or("never")),
        );
    }
    body.push_str("</tbody></table></div><h2>Suspended keys and widget subjects</h2>");
    // Widget tokens are not stored: an end user's access is revoked by suspending its subject.
    let _ = write!(
        body,
        "<form class=\"range\" id=\"suspend-subject\" method=\"post\" action=\"/admin/tenants/{id}/subjects/suspend\">{}\
         <label>Widget subject <input name=\"subject\" required maxlength=\"128\" autocomplete=\"off\"></label>\
         <button type=\"submit\">Suspend</button></form>",
        csrf_field(csrf)
    );
    if view.suspensions.is_empty() {
        body.push_str("<p class=\"empty\">None.</p>");
    } else {
        body.push_str("<div class=\"scroll\"><table id=\"suspensions\"><thead><tr><th>Principal</th><th>Reason</th>\
            <th>Since</th><th></th></tr></thead><tbody>");
        for s in &view.suspensions {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><form class=\"inline\" method=\"post\" \
                 action=\"/admin/tenants/{id}/suspensions/{}/lift\">{}<button type=\"submit\">Lift</button></form></td></tr>",
                escape(&s.principal),
                escape(&s.reason),
                escape(&s.created_at),
                escape(&s.id),
                csrf_field(csrf)
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("<h2>Anomalies</h2>");
    body.push_str(&audit_table("anomalies", &view.anomalies));
    layout(&format!("Tenant {}", t.slug), "", csrf, &body)
}

fn audit_table(id: &str, rows: &[AuditRow]) -> String {
    if rows.is_empty() {
        return "<p class=\"empty\">None.</p>".to_owned();
    }
    let mut table = format!(
        "<div class=\"scroll\"><table id=\"{id}\"><thead><tr><th class=\"num\">Seq</th><th>At</th><th>Actor</th>\
         <th>Action</th><th>Target</th><th>Tenant</th></tr></thead><tbody>"
    );
    for r in rows {
        let _ = write!(
            table,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.seq,
            escape(&r.at),
            escape(&r.actor),
            escape(&r.action),
            escape(&r.target),
            escape(&r.tenant)
        );
    }
    table.push_str("</tbody></table></div>");
    table
}

pub fn credentials_page(rows: &[CredentialRow], csrf: &str) -> String {
    let mut body = "<div class=\"scroll\"><table id=\"credentials\"><thead><tr><th>Provider</th><th>Source</th>\
        <th>State</th><th class=\"num\">Key version</th><th class=\"num\">Lease age</th><th class=\"num\">Expires in</th>\
        <th>Last refresh</th><th>Last error</th></tr></thead><tbody>"
        .to_owned();
    let secs = |s: Option<u64>| s.map_or("–".to_owned(), |s| format!("{s} s"));
    for c in rows {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
            escape(&c.provider),
            escape(&c.source),
            escape(&c.state),
            c.key_version.map_or("–".to_owned(), |v| v.to_string()),
            secs(c.lease_age_secs),
            secs(c.expires_in_secs),
            escape(c.last_refresh.as_deref().unwrap_or("–")),
            escape(c.last_error.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</tbody></table></div>");
    layout("Credentials", "Credentials", csrf, &body)
}

pub fn audit_page(view: &AuditView, csrf: &str) -> String {
    let chain = if view.chain.intact {
        format!(
            "<p id=\"chain\" class=\"ok\">Hash chain intact ({} events checked).</p>",
            view.chain.checked
        )
    } else {
        format!(
            "<p id=\"chain\" class=\"bad\" role=\"alert\">Hash chain broken at sequence {}.</p>",
            view.chain
                .first_bad_seq
                .map_or("?".to_owned(), |s| s.to_string())
        )
    };
    let mut body = format!(
        "{chain}<form class=\"range\" method=\"get\" action=\"/admin/audit\"><label>Tenant id \
         <input name=\"tenant\" value=\"{}\"></label><label>Action <input name=\"action\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button></form>",
        escape(&view.tenant_filter),
        escape(&view.action_filter)
    );
    body.push_str(&audit_table("audit", &view.rows));
    if let Some(next) = &view.next {
        let _ = write!(
            body,
            "<p><a href=\"/admin/audit?{}\">Older events</a></p>",
            escape(next)
        );
    }
    layout("Audit", "Audit", csrf, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(slug: &str) -> TenantSpend {
        TenantSpend {
            id: "7f1c".into(),
            slug: slug.into(),
            environment: "production".into(),
            status: "active".into(),
            today_micro_usd: 1_000_000,
            month_micro_usd: 2_000_000,
            budget_micro_usd: Some(10_000_000),
            range_micro_usd: 2_000_000,
            requests: 10,
            errors: 1,
        }
    }

    #[test]
    fn every_form_that_changes_something_carries_the_csrf_token() {
        let page = tenant_page(
            &TenantDetail {
                tenant: tenant("acme"),
                range: DateRange {
                    from: "2026-11-01".into(),
                    to: "2026-11-29".into(),
                },
                days: Vec::new(),
                usage: Vec::new(),
                keys: vec![KeyRow {
                    id: "k1".into(),
                    name: "web".into(),
                    scopes: "ask".into(),
                    created_at: "2026-11-01".into(),
                    last_used_at: None,
                    revoked: false,
                }],
                suspensions: vec![SuspensionRow {
                    id: "s1".into(),
                    principal: "widget:v".into(),
                    reason: "spike".into(),
                    created_at: "2026-11-02".into(),
                }],
                anomalies: Vec::new(),
            },
            "tok-123",
        );
        let posts = page.matches("method=\"post\"").count();
        assert_eq!(posts, 4, "{page}"); // logout, revoke, suspend subject, lift
        assert_eq!(
            page.matches("name=\"csrf\" value=\"tok-123\"").count(),
            posts
        );
    }

    #[test]
    fn tenant_supplied_text_is_escaped() {
        let page = overview_page(
            &Overview {
                range: DateRange {
                    from: "2026-11-01".into(),
                    to: "2026-11-29".into(),
                },
                tenants: vec![tenant("acme")],
                top_models: vec![ModelSpend {
                    provider: "openai".into(),
                    model: "<img src=x onerror=alert(1)>".into(),
                    requests: 1,
                    cost_micro_usd: 1,
                }],
            },
            "t",
        );
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("10.0%"), "{page}");
        assert!(login_page(Some("<b>")).contains("&lt;b&gt;"));
    }
}
