//! Remote embedding requests are budgeted and metered like generation: the worst case (every byte a token) is
//! reserved before the request, settled to what it cost, and one usage row per request (retries included) is
//! committed before the caller goes on.

use crate::answer::Generator;
use async_trait::async_trait;
use ragvault_embedding::EmbeddingCall;
use ragvault_gateway::{BudgetGuard, GatewayError, Metering, Reservation};
use ragvault_generation::TokenUsage;
use ragvault_ingest::indexing::{EmbeddingCharge, EmbeddingFor, EmbeddingMeter};
use ragvault_ingest::sealed::ContentError;
use ragvault_store::NewUsageEvent;
use std::sync::Arc;

pub struct BudgetedEmbeddingMeter {
    pub generator: Arc<Generator>,
    pub budgets: Arc<BudgetGuard>,
    pub metering: Metering,
    /// The embedder's `(provider, model)`, as priced.
    pub billing: (String, String),
}

struct Charge {
    who: EmbeddingFor,
    reservation: Reservation,
    generator: Arc<Generator>,
    metering: Metering,
}

fn gateway_error(e: GatewayError) -> ContentError {
    match e {
        GatewayError::BudgetExceeded { retry_after_secs } => {
            ContentError::BudgetExceeded { retry_after_secs }
        }
        other => ContentError::Metering(other.to_string()),
    }
}

impl Charge {
    fn cost(&self, call: &EmbeddingCall) -> u64 {
        let usage = TokenUsage {
            input_tokens: call.input_tokens,
            output_tokens: 0,
        };
        self.generator
            .cost_micro_usd(&call.provider, &call.model, usage)
    }
}

#[async_trait]
impl EmbeddingMeter for BudgetedEmbeddingMeter {
    async fn reserve(
        &self,
        who: &EmbeddingFor,
        max_input_tokens: u64,
    ) -> Result<Box<dyn EmbeddingCharge>, ContentError> {
        let policy = self
            .generator
            .for_tenant(who.tenant)
            .await
            .map_err(|e| ContentError::Metering(e.body.message))?;
        let worst = self.generator.cost_micro_usd(
            &self.billing.0,
            &self.billing.1,
            TokenUsage {
                input_tokens: max_input_tokens,
                output_tokens: 0,
            },
        );
        let reservation = self
            .budgets
            .reserve(who.tenant, policy.budget, worst)
            .await
            .map_err(gateway_error)?;
        Ok(Box::new(Charge {
            who: who.clone(),
            reservation,
            generator: self.generator.clone(),
            metering: self.metering.clone(),
        }))
    }
}

#[async_trait]
impl EmbeddingCharge for Charge {
    async fn settle(self: Box<Self>, calls: Vec<EmbeddingCall>) -> Result<(), ContentError> {
        let now = time::OffsetDateTime::now_utc();
        let rows: Vec<NewUsageEvent> = calls
            .iter()
            .map(|call| NewUsageEvent {
                at: now,
                tenant_id: self.who.tenant,
                principal: self.who.principal.clone(),
                request_id: self.who.request_id.clone(),
                kind: "embedding",
                provider: call.provider.clone(),
                model: call.model.clone(),
                key_version: call.key_version,
                input_tokens: if call.ok { call.input_tokens } else { 0 },
                output_tokens: 0,
                // Providers do not bill refused or failed requests.
                cost_micro_usd: if call.ok { self.cost(call) } else { 0 },
                latency_ms: call.latency_ms,
                bytes_sent: call.bytes_sent,
                bytes_received: call.bytes_received,
                outcome: if call.ok { "ok" } else { "error" },
            })
            .collect();
        let spent = rows.iter().map(|r| r.cost_micro_usd).sum();
        let Charge {
            reservation,
            metering,
            ..
        } = *self;
        reservation.settle(spent);
        metering.record(rows, Vec::new()).map_err(gateway_error)
    }
}
