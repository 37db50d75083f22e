//! Grounded answers, shared by `/v1/ask` and `/v1/chat/completions`: pseudonymize the question, retrieve,
//! pseudonymize the sources, generate through the tenant's failover chain, then (locally) drop citation
//! markers that cite nothing, restore the personal data and map markers to chunks.

use crate::config::{GenerationSettings, Settings};
use crate::error::ApiError;
use crate::policy::{ProviderFacts, TenantPolicy};
use crate::refresh::TenantCache;
use crate::retrieval::{RetrievalQuery, RetrievedChunk, Retriever};
use axum::http::StatusCode;
use ragvault_core::TenantId;
use ragvault_credentials::LeaseManager;
use ragvault_generation::breaker::BreakerSettings;
use ragvault_generation::{
    AnswerInput, BreakerState, ChainLink, ChatMessage, ChatProvider, CircuitBreaker,
    ExtractiveAnswerer, GenerationError, HttpProvider, PiiCategory, PiiRules, ProviderChain,
    ProviderSettings, Pseudonymizer, SourceText, Timeouts, TokenUsage,
};
use ragvault_store::Store;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The answer when retrieval finds nothing: no provider is called.
pub const NO_SOURCES_ANSWER: &str =
    "I could not find anything about this in the documents available to me.";

/// How long a tenant's generation policy (chain, PII categories) is cached before re-reading it.
const POLICY_TTL: Duration = Duration::from_secs(5);

/// What a tenant's policy says about generation.
pub struct TenantGeneration {
    pub chain: ProviderChain,
    pub pii: Arc<PiiRules>,
    /// The tenant's monthly budget (policy `budget_micro_usd`, or the sandbox default); none = unlimited.
    pub budget: Option<ragvault_gateway::TenantBudget>,
    /// The tenant's rate limits (policy `rate_limits`); default unlimited.
    pub limits: ragvault_gateway::RateLimits,
    /// Spike detection and response (policy `anomaly`); default: audit only.
    pub anomaly: ragvault_gateway::AnomalyPolicy,
    /// The policy these were resolved from, for the keys other parts enforce (`max_top_k`,
    /// `max_document_bytes`, `data_controls`).
    pub policy: TenantPolicy,
}

/// Every configured provider behind its breaker, the default chain, and per-tenant policies.
pub struct Generator {
    links: HashMap<String, ChainLink>,
    /// The same providers leasing sandbox keys, for sandbox tenants.
    sandbox_links: HashMap<String, ChainLink>,
    default: Arc<TenantGeneration>,
    settings: GenerationSettings,
    custom_pii: Vec<(String, String)>,
    store: Store,
    cache: TenantCache<Arc<TenantGeneration>>,
    prices: ragvault_gateway::PriceTable,
    /// Monthly budget of sandbox tenants whose policy sets none.
    sandbox_budget: u64,
    /// Each provider's model and region, for the policies' allow lists.
    providers: std::collections::BTreeMap<String, crate::config::ProviderSettings>,
}

impl Generator {
    pub fn new(
        settings: &Settings,
        leases: &Arc<LeaseManager>,
        store: Store,
    ) -> Result<Generator, GenerationError> {
        let generation = settings.generation.clone();
        let breaker = BreakerSettings {
            failure_threshold: generation.breaker_failures,
            cool_down: Duration::from_secs(generation.breaker_cool_down_secs),
        };
        let local = ChainLink {
            provider: Arc::new(ExtractiveAnswerer),
            breaker: Arc::new(CircuitBreaker::new(breaker)),
        };
        let mut links: HashMap<String, ChainLink> = HashMap::new();
        let mut sandbox_links: HashMap<String, ChainLink> = HashMap::new();
        links.insert("local".into(), local.clone());
        sandbox_links.insert("local".into(), local);
        for (name, provider) in &settings.providers {
            let Some(model) = provider.model.clone().filter(|m| !m.is_empty()) else {
                continue; // an embedding- or transcription-only entry
            };
            // Sandbox tenants get their own links: their own key path and their own breakers, so an
            // experiment neither spends production keys nor trips production's breakers.
            for (sandbox, target) in [(false, &mut links), (true, &mut sandbox_links)] {
                let http = HttpProvider::new(
                    ProviderSettings {
                        name: name.clone(),
                        api: provider.api,
                        base_url: provider.base_url.clone(),
                        model: model.clone(),
                        context_tokens: provider.context_tokens,
                        timeouts: Timeouts {
                            connect: Duration::from_millis(generation.connect_timeout_ms),
                            first_token: Duration::from_secs(generation.first_token_timeout_secs),
                            total: Duration::from_secs(generation.total_timeout_secs),
                        },
                        attempts: generation.attempts,
                        sandbox,
                    },
                    leases.clone(),
                )?;
                target.insert(
                    name.clone(),
                    ChainLink {
                        provider: Arc::new(http) as Arc<dyn ChatProvider>,
                        breaker: Arc::new(CircuitBreaker::new(breaker)),
                    },
                );
            }
        }
        let custom_pii: Vec<(String, String)> = generation
            .pii_patterns
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut generator = Generator {
            links,
            sandbox_links,
            default: Arc::new(TenantGeneration {
                chain: ProviderChain::new(Vec::new()),
                pii: Arc::new(PiiRules::none()),
                budget: None,
                limits: ragvault_gateway::RateLimits::default(),
                anomaly: ragvault_gateway::AnomalyPolicy::default(),
                policy: TenantPolicy::default(),
            }),
            providers: settings.providers.clone(),
            sandbox_budget: settings.budget.sandbox_monthly_micro_usd,
            settings: generation.clone(),
            custom_pii,
            store,
            cache: TenantCache::default(),
            prices: settings.price_table().map_err(GenerationError::Config)?,
        };
        generator.default = Arc::new(TenantGeneration {
            chain: generator.chain(&generation.chain, false)?,
            pii: Arc::new(generator.pii_rules(&generation.pii_categories)?),
            budget: None,
            limits: ragvault_gateway::RateLimits::default(),
            anomaly: ragvault_gateway::AnomalyPolicy::default(),
            policy: TenantPolicy::default(),
        });
        Ok(generator)
    }

    pub fn settings(&self) -> &GenerationSettings {
        &self.settings
    }

    /// What an answer cost in micro-USD. The local answerer is free; every configured model was checked
    /// against the price table at start, so a miss here means the table and the chain disagree: logged
    /// loudly and reported as 0 rather than failing an answer already given.
    pub fn cost_micro_usd(&self, provider: &str, model: &str, usage: TokenUsage) -> u64 {
        if provider == "local" || provider == "none" {
            return 0;
        }
        self.prices
            .cost_micro_usd(provider, model, usage.input_tokens, usage.output_tokens)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "answer not priced");
                0
            })
    }

    fn chain(&self, names: &[String], sandbox: bool) -> Result<ProviderChain, GenerationError> {
        let links = if sandbox {
            &self.sandbox_links
        } else {
            &self.links
        };
        names
            .iter()
            .map(|name| {
                links.get(name).cloned().ok_or_else(|| {
                    GenerationError::Config(format!("provider `{name}` is not configured"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(ProviderChain::new)
    }

    fn pii_rules(&self, categories: &[PiiCategory]) -> Result<PiiRules, GenerationError> {
        PiiRules::new(categories.iter().copied(), &self.custom_pii)
    }

    /// Whether `name` can be used in a chain (for validating tenant policies).
    pub fn knows(&self, name: &str) -> bool {
        self.links.contains_key(name)
    }

    /// The tenant's chain and PII rules: its policy's `failover_chain` / `pii_categories`, else the defaults.
    pub async fn for_tenant(
        self: &Arc<Self>,
        tenant: TenantId,
    ) -> Result<Arc<TenantGeneration>, ApiError> {
        self.cache
            .serve(
                tenant,
                POLICY_TTL,
                || {
                    let generator = self.clone();
                    async move { generator.load_for_tenant(tenant).await }
                },
                move |e: &ApiError| {
                    tracing::warn!(tenant = %tenant, code = e.body.code, "could not reload the tenant's policy; using the cached one");
                },
            )
            .await
    }

    async fn load_for_tenant(&self, tenant: TenantId) -> Result<Arc<TenantGeneration>, ApiError> {
        let ticket = self.cache.ticket();
        let record = self.store.get_tenant(tenant).await?;
        let policy = TenantPolicy::from_stored(&record.policy)?;
        let budget = tenant_budget(&policy, record.environment, self.sandbox_budget);
        let sandbox = record.environment == ragvault_core::Environment::Sandbox;
        let resolved = if policy == TenantPolicy::default() && !sandbox {
            self.default.clone()
        } else {
            let names = policy
                .failover_chain
                .clone()
                .unwrap_or_else(|| self.settings.chain.clone());
            // The allow lists are applied here, on every resolution, not only when the policy was set:
            // a provider whose configured model or region changed since is skipped all the same.
            let (allowed, refused): (Vec<String>, Vec<String>) =
                names.into_iter().partition(|name| {
                    policy
                        .refusal(&ProviderFacts::of(&self.providers, name))
                        .is_none()
                });
            if allowed.is_empty() {
                // Left empty, the chain refuses every answer (`ground`); uploads and searches go on.
                tracing::warn!(tenant = %tenant, refused = ?refused, "the tenant's policy allows no provider of its chain");
            }
            let chain = if policy.failover_chain.is_none() && !sandbox && refused.is_empty() {
                self.default.chain.clone()
            } else {
                self.chain(&allowed, sandbox).map_err(|e| {
                    // A provider removed from config after the policy named it.
                    tracing::error!(tenant = %tenant, error = %e, "tenant failover chain names an unknown provider");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "provider_unavailable",
                        "the tenant's failover chain names a provider that is not configured",
                    )
                })?
            };
            let pii = match &policy.pii_categories {
                Some(categories) => Arc::new(
                    self.pii_rules(categories)
                        .map_err(|e| ApiError::internal(&e))?,
                ),
                None => self.default.pii.clone(),
            };
            Arc::new(TenantGeneration {
                chain,
                pii,
                budget,
                limits: policy.rate_limits.unwrap_or_default(),
                anomaly: policy.anomaly.unwrap_or_default(),
                policy,
            })
        };
        self.cache.put(ticket, tenant, resolved.clone());
        Ok(resolved)
    }

    /// The most `input` can cost on any provider of `chain`: counted prompt tokens (plus a margin for
    /// provider tokenizers that count more) and all of `max_output_tokens`, at the dearest link's prices.
    pub fn worst_case_micro_usd(&self, chain: &ProviderChain, input: &AnswerInput) -> u64 {
        let input_tokens = estimated_input_tokens(input);
        let output_tokens = u64::from(input.max_output_tokens);
        chain
            .models()
            .filter(|(provider, _)| *provider != "local")
            .map(|(provider, model)| {
                self.prices
                    .cost_micro_usd(provider, model, input_tokens, output_tokens)
                    // Unpriced models were refused at start; should one slip through, budget it as
                    // unaffordable rather than free.
                    .unwrap_or(u64::MAX)
            })
            .max()
            .unwrap_or(0)
    }

    /// Forgets a cached policy (after the policy changed).
    pub fn forget(&self, tenant: TenantId) {
        self.cache.forget(tenant);
    }

    /// Breaker state per provider, for the admin API and metrics.
    pub fn breaker_states(&self) -> Vec<(String, BreakerState)> {
        let mut states: Vec<(String, BreakerState)> = self
            .links
            .iter()
            .map(|(name, link)| (name.clone(), link.breaker.state()))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }
}

/// A question made ready for a provider: retrieved, pseudonymized.
/// Prompt tokens `input` can produce: everything it holds, counted with o200k, plus the instructions and
/// per-message framing, with 10 % on top for tokenizers that split finer.
pub fn estimated_input_tokens(input: &AnswerInput) -> u64 {
    use ragvault_generation::tokens::count_tokens;
    let counted = count_tokens(&input.question)
        + input.plain_system.as_deref().map_or(0, count_tokens)
        + input
            .history
            .iter()
            .map(|m| count_tokens(&m.content) + 8)
            .sum::<usize>()
        + input
            .sources
            .iter()
            .map(|s| count_tokens(&s.name) + count_tokens(&s.text) + 24)
            .sum::<usize>()
        + PROMPT_FRAMING_TOKENS;
    let counted = u64::try_from(counted).unwrap_or(u64::MAX);
    counted.saturating_add(counted / 10)
}

/// Instructions and tags around the question and sources (the system prompt is about 150 tokens).
const PROMPT_FRAMING_TOKENS: usize = 256;

/// The budget a tenant's policy sets (`budget_micro_usd`, optional `budget_soft_micro_usd`); sandbox
/// tenants without one get the sandbox default.
fn tenant_budget(
    policy: &TenantPolicy,
    environment: ragvault_core::Environment,
    sandbox_default: u64,
) -> Option<ragvault_gateway::TenantBudget> {
    let soft = policy.budget_soft_micro_usd;
    let hard = match (policy.budget_micro_usd, environment) {
        (Some(hard), _) => hard,
        (None, ragvault_core::Environment::Sandbox) => sandbox_default,
        (None, _) => return None,
    };
    Some(ragvault_gateway::TenantBudget {
        hard_micro_usd: hard,
        soft_micro_usd: soft,
    })
}

pub struct Grounding {
    pub pseudonymizer: Pseudonymizer,
    pub chunks: Vec<RetrievedChunk>,
    pub input: AnswerInput,
    pub generation: Arc<TenantGeneration>,
    pub times: StageTimes,
}

/// Where a request's time went before generation, for the `server-timing` header.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimes {
    /// Embedding the query: a model's time, left out of server overhead figures.
    pub embed: Duration,
    /// The rest of retrieval: index and keyword search, opening the chunks from Postgres.
    pub retrieve: Duration,
    /// Parts of `embed` + `retrieve`, as [`crate::retrieval::RetrievalTimes`] measured them.
    pub parts: crate::retrieval::RetrievalTimes,
    /// Admission: policy, budget and suspension checks, rate limits.
    pub admit: Duration,
    /// Reserving the call's worst case from the budget (a lease from Postgres when the slice is short).
    pub reserve: Duration,
    /// Settling the reservation and journaling usage and audit.
    pub meter: Duration,
}

impl StageTimes {
    /// These retrieval times with the request's own stages around them.
    pub fn with_request_stages(self, admit: Duration, reserve: Duration, meter: Duration) -> Self {
        StageTimes {
            admit,
            reserve,
            meter,
            ..self
        }
    }
}

/// A source as the response shows it: marker number and where it comes from.
#[derive(Clone, Debug, Serialize)]
pub struct Citation {
    pub n: usize,
    pub document_id: ragvault_core::DocumentId,
    pub name: String,
    pub chunk: u32,
    pub score: f32,
    pub snippet: String,
    /// Whether the answer carries this source's marker (false for every source when the model ignored the
    /// citation format).
    pub cited: bool,
}

/// Checks the query the way every endpoint does.
pub fn validate_query(query: &str, limit: usize) -> Result<&str, ApiError> {
    if query.chars().count() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "query_too_large",
            format!("the query is longer than {limit} characters"),
        ));
    }
    let query = query.trim();
    if query.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_query",
            "the query is empty",
        ));
    }
    Ok(query)
}

/// What a caller asks, validated.
pub struct Question<'a> {
    pub text: &'a str,
    pub history: &'a [ChatMessage],
    pub top_k: usize,
    pub max_output_tokens: u32,
    pub temperature: f32,
    /// The principal's access groups (`Principal::access_groups`): restricted documents are never retrieved,
    /// so never cited nor sent to a provider.
    pub groups: Option<&'a [String]>,
    /// Whom a remote embedding of the question is metered to.
    pub who: ragvault_ingest::indexing::EmbeddingFor,
    /// `tracing.debug_record_prompts`: the pseudonymized question goes into the trace as a `prompt` span.
    pub record_prompt: bool,
}

/// The caller as metering names it, for embedding requests made on its behalf.
pub fn embedding_for(
    caller: &crate::extract::Caller,
    tenant: TenantId,
) -> ragvault_ingest::indexing::EmbeddingFor {
    ragvault_ingest::indexing::EmbeddingFor {
        tenant,
        principal: caller.principal.actor(),
        request_id: Some(caller.request_id.clone()),
    }
}

/// Retrieves and pseudonymizes for `asked` under `generation`, the tenant's settings as [`admit`] found
/// them (the same snapshot admits, grounds and calls).
pub async fn ground(
    generation: Arc<TenantGeneration>,
    retriever: &Retriever,
    tenant: TenantId,
    asked: Question<'_>,
) -> Result<Grounding, ApiError> {
    let Question {
        text: question,
        history,
        top_k,
        max_output_tokens,
        temperature,
        groups,
        who,
        record_prompt,
    } = asked;
    let generation = with_providers(generation)?;
    let mut pseudonymizer = Pseudonymizer::new(generation.pii.clone());
    let pseudonymous_question = pseudonymizer.pseudonymize(question);
    if record_prompt {
        // A span that is never entered: exported with the trace, never written to a log line.
        let _prompt = tracing::info_span!("prompt", text = %pseudonymous_question);
    }
    // A remote embedder is a provider too: it gets the pseudonymized question.
    let search_text = if retriever.indexer.embedder().runs_locally() {
        question.to_owned()
    } else {
        pseudonymous_question.clone()
    };
    let retrieve_started = std::time::Instant::now();
    let (chunks, parts) = retriever
        .retrieve_timed(
            tenant,
            &RetrievalQuery {
                text: search_text,
                top_k,
                mode: retriever.settings.mode,
                documents: None,
                tags: Vec::new(),
                groups: groups.map(<[String]>::to_vec),
                who,
            },
        )
        .await
        .map_err(crate::routes::content_error)?;
    let times = StageTimes {
        embed: parts.embed,
        retrieve: retrieve_started.elapsed().saturating_sub(parts.embed),
        parts,
        ..StageTimes::default()
    };
    let sources: Vec<SourceText> = chunks
        .iter()
        .map(|c| SourceText {
            name: pseudonymizer.pseudonymize(&c.name),
            text: pseudonymizer.pseudonymize(&c.text),
        })
        .collect();
    let history = pseudonymous_history(&mut pseudonymizer, history);
    Ok(Grounding {
        pseudonymizer,
        chunks,
        input: AnswerInput {
            plain_system: None,
            question: pseudonymous_question,
            history,
            sources,
            max_output_tokens,
            temperature,
            data_controls: generation.policy.data_controls.unwrap_or_default(),
        },
        generation,
        times,
    })
}

/// The tenant's generation settings, refused when its policy allows none of its chain's providers.
fn with_providers(generation: Arc<TenantGeneration>) -> Result<Arc<TenantGeneration>, ApiError> {
    if generation.chain.providers().next().is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "provider_not_allowed",
            "the tenant's policy allows none of the providers in its failover chain",
        ));
    }
    Ok(generation)
}

fn pseudonymous_history(
    pseudonymizer: &mut Pseudonymizer,
    history: &[ChatMessage],
) -> Vec<ChatMessage> {
    history
        .iter()
        .map(|m| ChatMessage {
            role: m.role,
            content: pseudonymizer.pseudonymize(&m.content),
        })
        .collect()
}

/// A plain brokered call (policy `chat_mode = "plain"`): no retrieval; the client's system prompt, earlier
/// turns and question, pseudonymized under the tenant's PII policy, go to its failover chain with the same
/// key lease, budget reservation, metering and audit as a grounded answer.
pub fn broker(
    generation: Arc<TenantGeneration>,
    asked: Question<'_>,
    system: &str,
) -> Result<Grounding, ApiError> {
    let generation = with_providers(generation)?;
    let mut pseudonymizer = Pseudonymizer::new(generation.pii.clone());
    let question = pseudonymizer.pseudonymize(asked.text);
    let system = pseudonymizer.pseudonymize(system);
    let history = pseudonymous_history(&mut pseudonymizer, asked.history);
    Ok(Grounding {
        pseudonymizer,
        chunks: Vec::new(),
        input: AnswerInput {
            plain_system: Some(system),
            question,
            history,
            sources: Vec::new(),
            max_output_tokens: asked.max_output_tokens,
            temperature: asked.temperature,
            data_controls: generation.policy.data_controls.unwrap_or_default(),
        },
        generation,
        times: StageTimes::default(),
    })
}

/// Citations for the first `sources_used` chunks; `cited` holds the marker numbers found in the answer.
pub fn citations(
    chunks: &[RetrievedChunk],
    sources_used: usize,
    cited: &BTreeSet<usize>,
) -> Vec<Citation> {
    let all = chunks
        .iter()
        .take(sources_used)
        .enumerate()
        .map(|(i, c)| Citation {
            n: i + 1,
            document_id: c.document_id,
            name: c.name.clone(),
            chunk: c.chunk,
            score: c.score,
            snippet: c.snippet.clone(),
            cited: cited.contains(&(i + 1)),
        });
    if cited.is_empty() {
        // The model ignored the format: show what it was given, marked as not cited.
        all.collect()
    } else {
        all.filter(|c| c.cited).collect()
    }
}

/// The error a client sees when no provider could answer. Which providers failed and why is logged, not
/// returned: the tenant does not need the operator's provider layout.
pub fn generation_error(e: GenerationError) -> ApiError {
    tracing::warn!(error = %e, "no provider answered");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "provider_unavailable",
        "no AI provider could answer right now; try again shortly",
    )
}

/// One finished provider call, as it is metered.
pub struct MeteredCall<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    pub key_version: Option<u64>,
    pub usage: TokenUsage,
    pub cost_micro_usd: u64,
    pub latency: Duration,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// `ok`, or `stream_failed` for a stream that broke after it started.
    pub outcome: &'static str,
    /// Providers tried before this one that failed (each metered as an `error` call with no tokens).
    pub failovers: &'a [ragvault_generation::chain::ChainEvent],
}

/// Text bytes of everything an answer input carries: what goes out to the provider, give or take framing.
pub fn input_bytes(input: &AnswerInput) -> u64 {
    let bytes = input.question.len()
        + input.history.iter().map(|m| m.content.len()).sum::<usize>()
        + input
            .sources
            .iter()
            .map(|s| s.name.len() + s.text.len())
            .sum::<usize>();
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

/// Usage rows for a call and the failed attempts before it.
fn usage_rows(
    caller: &crate::extract::Caller,
    tenant: TenantId,
    chain: &ProviderChain,
    call: &MeteredCall<'_>,
) -> Vec<ragvault_store::NewUsageEvent> {
    let now = time::OffsetDateTime::now_utc();
    let row = |provider: &str, model: &str| ragvault_store::NewUsageEvent {
        at: now,
        tenant_id: tenant,
        principal: caller.principal.actor(),
        request_id: Some(caller.request_id.clone()),
        kind: "generation",
        provider: provider.to_owned(),
        model: model.to_owned(),
        key_version: None,
        input_tokens: 0,
        output_tokens: 0,
        cost_micro_usd: 0,
        latency_ms: 0,
        bytes_sent: 0,
        bytes_received: 0,
        outcome: "error",
    };
    let mut rows: Vec<_> = call
        .failovers
        .iter()
        .map(|failed| {
            let model = chain
                .models()
                .find(|(p, _)| *p == failed.provider)
                .map_or("unknown", |(_, m)| m);
            row(&failed.provider, model)
        })
        .collect();
    rows.push(ragvault_store::NewUsageEvent {
        key_version: call.key_version,
        input_tokens: call.usage.input_tokens,
        output_tokens: call.usage.output_tokens,
        cost_micro_usd: call.cost_micro_usd,
        latency_ms: u64::try_from(call.latency.as_millis()).unwrap_or(u64::MAX),
        bytes_sent: call.bytes_sent,
        bytes_received: call.bytes_received,
        outcome: call.outcome,
        ..row(call.provider, call.model)
    });
    rows
}

/// The per-ask audit event: which chunks (pseudonymous point ids, and their documents) were retrieved and
/// for whom, so "who saw this document" has an answer without the audit log holding any text.
fn retrieval_audit(
    caller: &crate::extract::Caller,
    tenant: TenantId,
    chunks: &[RetrievedChunk],
) -> ragvault_store::AuditEntry {
    let subject = match &caller.principal {
        ragvault_core::Principal::Widget { subject, .. } => subject.clone(),
        _ => None,
    };
    let documents: BTreeSet<String> = chunks.iter().map(|c| c.document_id.to_string()).collect();
    // A grounded request without sources never reaches a provider, so a call with none is a plain brokered
    // one (policy `chat_mode = "plain"`).
    let action = if chunks.is_empty() {
        "chat.brokered"
    } else {
        "ask.retrieved"
    };
    ragvault_store::AuditEntry::new(caller.principal.actor(), action)
        .tenant(tenant)
        .request_id(Some(caller.request_id.clone()))
        .details(serde_json::json!({
            "points": chunks.iter().map(|c| c.point_id.0).collect::<Vec<_>>(),
            "documents": documents,
            "subject": subject,
        }))
}

/// Settles the budget reservation to the call's cost and journals its usage rows and retrieval audit event
/// (durable before the response; in Postgres shortly after, see `gateway::metering`).
pub async fn finish_call(
    state: &crate::state::AppState,
    caller: &crate::extract::Caller,
    tenant: TenantId,
    (generation, chunks): (&TenantGeneration, &[RetrievedChunk]),
    reservation: ragvault_gateway::Reservation,
    call: &MeteredCall<'_>,
) -> Result<(), ApiError> {
    reservation.settle(call.cost_micro_usd);
    let spikes =
        state
            .anomalies
            .observe_spend(&caller.principal, &generation.anomaly, call.cost_micro_usd);
    // The answer is already paid for: a spend spike suspends for the next request, not this one.
    respond_to_anomalies(state, caller, &generation.anomaly, spikes).await?;
    state.limiter.charge_tokens(
        &caller.principal,
        &generation.limits,
        call.usage.input_tokens + call.usage.output_tokens,
    );
    let usage = usage_rows(caller, tenant, &generation.chain, call);
    let audit = retrieval_audit(caller, tenant, chunks);
    state.metering.record(usage, vec![audit])?;
    Ok(())
}

/// Admits a request under the tenant's rate limits (`429 rate_limited` with `retry-after` otherwise).
pub async fn admit(
    state: &crate::state::AppState,
    caller: &crate::extract::Caller,
    tenant: TenantId,
) -> Result<Arc<TenantGeneration>, ApiError> {
    // A call that could not be metered is not made: refused while the usage not yet in Postgres is at its
    // limit (Postgres away for long).
    if !state.metering.has_room() {
        return Err(ragvault_gateway::GatewayError::MeteringUnavailable(
            "usage not yet committed has reached its limit".to_owned(),
        )
        .into());
    }
    let generation = state.generator.for_tenant(tenant).await?;
    // A tenant known to be out of budget is refused before retrieval and embedding work is spent on it.
    if state.budgets.is_exhausted(tenant, generation.budget) {
        return Err(ragvault_gateway::GatewayError::BudgetExceeded {
            retry_after_secs: ragvault_gateway::seconds_until_next_month(
                time::OffsetDateTime::now_utc(),
            ),
        }
        .into());
    }
    // Suspensions hold until lifted, whoever made them and whatever the policy says now.
    if let Some(scope) = ragvault_gateway::principal_scope(&caller.principal) {
        if state.suspensions.is_suspended(tenant, &scope).await? {
            return Err(principal_suspended());
        }
    }
    state.limiter.admit(&caller.principal, &generation.limits)?;
    let spikes = state
        .anomalies
        .observe_request(&caller.principal, &generation.anomaly);
    if respond_to_anomalies(state, caller, &generation.anomaly, spikes).await? {
        return Err(principal_suspended());
    }
    Ok(generation)
}

fn principal_suspended() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "principal_suspended",
        "this key or widget subject is suspended after unusual activity; an operator can lift it",
    )
}

/// Audits each spike and, when the policy says so, suspends the principal behind it (never the whole
/// tenant: that stays an operator's decision). True when the caller itself was just suspended.
async fn respond_to_anomalies(
    state: &crate::state::AppState,
    caller: &crate::extract::Caller,
    policy: &ragvault_gateway::AnomalyPolicy,
    spikes: Vec<ragvault_gateway::Anomaly>,
) -> Result<bool, ApiError> {
    let mut suspended = false;
    for spike in spikes {
        tracing::warn!(tenant = %spike.tenant_id, scope = %spike.scope, measure = spike.measure,
            observed = spike.observed, baseline = spike.baseline, "anomaly detected");
        let details = serde_json::json!(spike);
        let audit = ragvault_store::AuditEntry::new("system:anomaly", "anomaly.detected")
            .tenant(spike.tenant_id)
            .target(spike.scope.clone())
            .request_id(Some(caller.request_id.clone()))
            .details(details.clone());
        state.store.append_audit(&audit).await?;
        if policy.action == ragvault_gateway::AnomalyAction::Suspend && spike.scope != "tenant" {
            let audit = ragvault_store::AuditEntry::new("system:anomaly", "principal.suspended")
                .tenant(spike.tenant_id)
                .target(spike.scope.clone())
                .request_id(Some(caller.request_id.clone()))
                .details(details.clone());
            state
                .suspensions
                .suspend(spike.tenant_id, &spike.scope, &details, &audit)
                .await?;
            suspended = true;
        }
    }
    Ok(suspended)
}

/// Reserves the worst case of answering `grounding` from the tenant's budget: `budget_exceeded` (and no
/// provider call) when the month's budget cannot cover it.
pub async fn reserve_budget(
    state: &crate::state::AppState,
    tenant: TenantId,
    grounding: &Grounding,
) -> Result<ragvault_gateway::Reservation, ApiError> {
    let worst = state
        .generator
        .worst_case_micro_usd(&grounding.generation.chain, &grounding.input);
    Ok(state
        .budgets
        .reserve(tenant, grounding.generation.budget, worst)
        .await?)
}

/// What a streamed answer needs to meter itself when it ends (or breaks).
pub struct StreamMeter {
    pub state: crate::state::AppState,
    pub caller: crate::extract::Caller,
    pub tenant: TenantId,
    pub generation: Arc<TenantGeneration>,
    pub chunks: Vec<RetrievedChunk>,
    pub reservation: Option<ragvault_gateway::Reservation>,
    pub key_version: Option<u64>,
    pub failovers: Vec<ragvault_generation::chain::ChainEvent>,
    pub provider_started: std::time::Instant,
    pub provider: String,
    pub model: String,
    pub bytes_sent: u64,
}

impl StreamMeter {
    /// Takes what metering needs from the grounding and the started stream; hands back the pseudonymizer
    /// (for restoring the streamed text) and the stream's items.
    pub fn start(
        state: crate::state::AppState,
        caller: crate::extract::Caller,
        tenant: TenantId,
        grounding: Grounding,
        reservation: ragvault_gateway::Reservation,
        answer: ragvault_generation::chain::AnswerStream,
        provider_started: std::time::Instant,
    ) -> (
        StreamMeter,
        Pseudonymizer,
        futures::stream::BoxStream<
            'static,
            Result<ragvault_generation::StreamItem, GenerationError>,
        >,
    ) {
        let meter = StreamMeter {
            bytes_sent: input_bytes(&grounding.input),
            state,
            caller,
            tenant,
            generation: grounding.generation,
            chunks: grounding.chunks,
            reservation: Some(reservation),
            key_version: answer.key_version,
            failovers: answer.failovers,
            provider_started,
            provider: answer.provider,
            model: answer.model,
        };
        (meter, grounding.pseudonymizer, answer.items)
    }

    /// Settles and records the call, once. A stream that broke is charged its whole reservation: the
    /// provider may have spent tokens it never got to report.
    pub async fn finish(
        &mut self,
        usage: TokenUsage,
        bytes_received: u64,
        broke: bool,
    ) -> Result<(), ApiError> {
        let Some(reservation) = self.reservation.take() else {
            return Ok(());
        };
        let priced = self
            .state
            .generator
            .cost_micro_usd(&self.provider, &self.model, usage);
        let cost = if broke {
            priced.max(reservation.amount())
        } else {
            priced
        };
        finish_call(
            &self.state,
            &self.caller,
            self.tenant,
            (&self.generation, &self.chunks),
            reservation,
            &MeteredCall {
                provider: &self.provider,
                model: &self.model,
                key_version: self.key_version,
                usage,
                cost_micro_usd: cost,
                latency: self.provider_started.elapsed(),
                bytes_sent: self.bytes_sent,
                bytes_received,
                outcome: if broke { "stream_failed" } else { "ok" },
                failovers: &self.failovers,
            },
        )
        .await
    }
}
