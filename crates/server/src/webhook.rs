//! The soft budget threshold webhook: each crossing is POSTed as JSON to `budget.soft_threshold_webhook_url`,
//! signed `x-ragvault-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` under the secret kept
//! in Vault as the provider key `budget-webhook` (`ragvault keys set budget-webhook`), leased like every other
//! key. The receiver recomputes the HMAC and checks that `t` is recent (replays). Nothing is sent unsigned:
//! without the secret a delivery fails and is logged. The body holds ids and amounts, never text or keys.

use ragvault_credentials::{LeaseManager, ProviderKeyRef};
use ragvault_gateway::SoftThresholdCrossing;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The provider-key name the signing secret is stored under.
pub const SIGNING_KEY_NAME: &str = "budget-webhook";
const ATTEMPTS: u32 = 3;

/// Deliveries since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
}

/// Sends every crossing `crossings` yields, in order, until the channel closes.
pub async fn deliver_crossings(
    url: String,
    leases: Arc<LeaseManager>,
    mut crossings: tokio::sync::mpsc::UnboundedReceiver<SoftThresholdCrossing>,
    stats: Arc<WebhookStats>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "budget webhook disabled: no HTTP client");
            return;
        }
    };
    while let Some(crossing) = crossings.recv().await {
        let mut delivered = false;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
            match deliver(&client, &url, &leases, &crossing).await {
                Ok(()) => {
                    delivered = true;
                    break;
                }
                Err(reason) => {
                    tracing::warn!(tenant = %crossing.tenant_id, attempt = attempt + 1, %reason, "budget webhook delivery failed")
                }
            }
        }
        let counter = if delivered {
            &stats.delivered
        } else {
            &stats.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

async fn deliver(
    client: &reqwest::Client,
    url: &str,
    leases: &LeaseManager,
    crossing: &SoftThresholdCrossing,
) -> Result<(), String> {
    let body = serde_json::to_vec(&serde_json::json!({
        "event": "budget.soft_threshold_crossed",
        "tenant_id": crossing.tenant_id,
        "month": crossing.month,
        "spent_micro_usd": crossing.spent_micro_usd,
        "soft_micro_usd": crossing.soft_micro_usd,
    }))
    .map_err(|e| e.to_string())?;
    let lease = leases
        .lease(&ProviderKeyRef::operator(SIGNING_KEY_NAME))
        .await
        .map_err(|e| format!("no signing secret `{SIGNING_KEY_NAME}`: {e}"))?;
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(&body);
    let signature = format!("t={timestamp},v1={}", lease.sign_hex(&signed));
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-ragvault-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", e.without_url()))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {}", response.status()))
    }
}
