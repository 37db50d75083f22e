//! The operator dashboard's HTML, rendered on the server from plain view models: no template engine, no
//! JavaScript, no CDN, charts as inline SVG. Every value that came from a tenant or a provider passes through
//! [`escape`]; every form carries the CSRF token it is given. The server crate owns sessions, data and routes.

mod chart;
mod pages;

pub use chart::{budget_bar, daily_spend_chart, DaySpend};
pub use pages::{
    audit_page, credentials_page, login_page, overview_page, tenant_page, AuditRow, AuditView,
    ChainStatus, CredentialRow, DateRange, KeyRow, ModelSpend, Overview, SuspensionRow,
    TenantDetail, TenantSpend, UsageRow, STYLESHEET,
};

/// Text made safe for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Micro-USD as dollars: `$12.34`, with more digits below a cent so small spend does not read as zero.
pub fn dollars(micro_usd: u64) -> String {
    if micro_usd == 0 {
        return "$0.00".to_owned();
    }
    if micro_usd < 10_000 {
        return format!("${}.{:06}", micro_usd / 1_000_000, micro_usd % 1_000_000);
    }
    let cents = (micro_usd + 5_000) / 10_000;
    format!("${}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_attributes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn dollars_keep_small_amounts_visible() {
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(dollars(1_234), "$0.001234");
        assert_eq!(dollars(12_345_678), "$12.35");
        assert_eq!(dollars(5_000_000), "$5.00");
    }
}
