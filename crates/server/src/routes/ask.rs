//! `POST /v1/ask`: a grounded answer with citations, whole or as SSE (`citations`, `delta`, `usage`, `done`,
//! or `error`). A `server-timing` header splits the time into embedding, provider and total, so overhead
//! can be measured from outside.

use crate::answer::{
    self, citations, generation_error, Citation, Generator, Grounding, StageTimes,
    NO_SOURCES_ANSWER,
};
use crate::error::ApiError;
use crate::extract::{ApiJson, Caller};
use crate::policy::TenantPolicy;
use crate::state::AppState;
use answer::StreamMeter;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::BoxStream;
use futures::StreamExt;
use ragvault_core::{Scope, TenantId};
use ragvault_gateway::require_tenant_scope;
use ragvault_gateway::Reservation;
use ragvault_generation::{
    filter_markers, GenerationError, MarkerFilter, Pseudonymizer, StreamItem, StreamRestorer,
    TokenUsage,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::{Duration, Instant};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    query: String,
    #[serde(default)]
    top_k: Option<usize>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    max_tokens: Option<u32>,
}

/// The request's `top_k`, within `search.max_top_k` and the tenant's `max_top_k`; without one, the default
/// capped to the tenant's maximum.
pub fn checked_top_k(
    state: &AppState,
    policy: &TenantPolicy,
    top_k: Option<usize>,
) -> Result<usize, ApiError> {
    let settings = &state.settings.search;
    let max = policy
        .max_top_k
        .map_or(settings.max_top_k, |m| m.min(settings.max_top_k));
    let top_k = top_k.unwrap_or(settings.default_top_k.min(max));
    if top_k == 0 || top_k > max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_top_k",
            format!("top_k must be between 1 and {max}"),
        ));
    }
    Ok(top_k)
}

pub fn checked_max_tokens(state: &AppState, max_tokens: Option<u32>) -> Result<u32, ApiError> {
    let limit = state.generator.settings().max_output_tokens;
    match max_tokens {
        None => Ok(limit),
        Some(n) if n >= 1 && n <= limit => Ok(n),
        Some(_) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_max_tokens",
            format!("max_tokens must be between 1 and {limit}"),
        )),
    }
}

/// The `usage` object of an answer, priced from the price table (the local answerer is free).
pub fn usage_json(generator: &Generator, usage: TokenUsage, provider: &str, model: &str) -> Value {
    json!({
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cost_micro_usd": generator.cost_micro_usd(provider, model, usage),
        "provider": provider,
        "model": model,
    })
}

/// What a handler measured, carried to the envelope middleware in the response's extensions; the middleware
/// adds `server` (the whole time in the router) and writes the `server-timing` header once.
#[derive(Clone, Copy, Debug)]
pub struct ServerTiming {
    pub times: StageTimes,
    pub provider: Duration,
    pub total: Duration,
}

impl ServerTiming {
    /// `server-timing`: admit, embed (query embedding), retrieve (search and opening chunks; `index`,
    /// `keyword` and `unseal` are parts of it, `keyword` running beside `embed` + `index`), reserve,
    /// provider (generation), meter, total (the handler) and server, in milliseconds.
    pub fn header(&self, server: Duration) -> HeaderValue {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let times = &self.times;
        HeaderValue::from_str(&format!(
            "admit;dur={:.3}, embed;dur={:.3}, retrieve;dur={:.3}, index;dur={:.3}, keyword;dur={:.3}, unseal;dur={:.3}, reserve;dur={:.3}, provider;dur={:.3}, meter;dur={:.3}, total;dur={:.3}, server;dur={:.3}",
            ms(times.admit),
            ms(times.embed),
            ms(times.retrieve),
            ms(times.parts.index),
            ms(times.parts.keyword),
            ms(times.parts.unseal),
            ms(times.reserve),
            ms(self.provider),
            ms(times.meter),
            ms(self.total),
            ms(server)
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("total"))
    }
}

/// Hands the handler's stage times to the envelope middleware, which writes `server-timing`.
pub fn set_server_timing(
    response: &mut axum::response::Response,
    times: StageTimes,
    provider: Duration,
    total: Duration,
) {
    response.extensions_mut().insert(ServerTiming {
        times,
        provider,
        total,
    });
}

#[utoipa::path(
    post,
    path = "/v1/ask",
    tag = "retrieval",
    summary = "A grounded answer with citations (tenant key or widget token, scope `ask`)",
    request_body = AskRequest,
    responses(
        (status = 200, description = "The answer; with `stream: true`, server-sent events `citations`, `delta`, `usage`, `done`", content((crate::openapi::AskResponse = "application/json"), (String = "text/event-stream"))),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn ask(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<AskRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let tenant = require_tenant_scope(&caller.principal, Scope::Ask)?;
    let generation = crate::answer::admit(&state, &caller, tenant).await?;
    let admitted = started.elapsed();
    let limits = state.generator.settings();
    let query = answer::validate_query(&request.query, limits.max_query_chars)?;
    let top_k = checked_top_k(&state, &generation.policy, request.top_k)?;
    let max_tokens = checked_max_tokens(&state, request.max_tokens)?;
    let grounding = answer::ground(
        generation,
        &state.retriever,
        tenant,
        answer::Question {
            text: query,
            history: &[],
            top_k,
            max_output_tokens: max_tokens,
            temperature: limits.temperature,
            groups: caller.principal.access_groups(),
            who: answer::embedding_for(&caller, tenant),
            record_prompt: state.settings.tracing.debug_record_prompts,
        },
    )
    .await?;
    if grounding.chunks.is_empty() {
        return Ok(no_sources(
            &caller,
            request.stream,
            grounding.times,
            started,
        ));
    }
    let reserve_started = Instant::now();
    let reservation = answer::reserve_budget(&state, tenant, &grounding).await?;
    let reserved = reserve_started.elapsed();
    if request.stream {
        return stream_answer(state, grounding, caller, tenant, reservation, started).await;
    }
    let provider_started = Instant::now();
    let answer = grounding
        .generation
        .chain
        .complete(&grounding.input)
        .await
        .map_err(generation_error)?;
    let provider_time = provider_started.elapsed();
    let cost = state
        .generator
        .cost_micro_usd(&answer.provider, &answer.model, answer.usage);
    let meter_started = Instant::now();
    answer::finish_call(
        &state,
        &caller,
        tenant,
        (&grounding.generation, &grounding.chunks),
        reservation,
        &answer::MeteredCall {
            provider: &answer.provider,
            model: &answer.model,
            key_version: answer.key_version,
            usage: answer.usage,
            cost_micro_usd: cost,
            latency: provider_time,
            bytes_sent: answer::input_bytes(&grounding.input),
            bytes_received: u64::try_from(answer.text.len()).unwrap_or(u64::MAX),
            outcome: "ok",
            failovers: &answer.failovers,
        },
    )
    .await?;
    let metered = meter_started.elapsed();
    let (filtered, cited) = filter_markers(&answer.text, answer.sources_used);
    let text = grounding.pseudonymizer.restore(&filtered);
    let body = json!({
        "answer": text,
        "citations": citations(&grounding.chunks, answer.sources_used, &cited),
        "usage": usage_json(&state.generator, answer.usage, &answer.provider, &answer.model),
        "failover": answer.failovers.iter().map(|f| &f.provider).collect::<Vec<_>>(),
        "request_id": caller.request_id,
    });
    let mut response = Json(body).into_response();
    set_server_timing(
        &mut response,
        grounding
            .times
            .with_request_stages(admitted, reserved, metered),
        provider_time,
        started.elapsed(),
    );
    Ok(response)
}

/// Nothing retrieved: say so without calling any provider.
fn no_sources(caller: &Caller, stream: bool, times: StageTimes, started: Instant) -> Response {
    let usage = json!({
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_micro_usd": 0,
        "provider": "none",
        "model": "none",
    });
    let mut response = if stream {
        let events: Vec<Result<Event, Infallible>> = vec![
            Ok(json_event("citations", &json!({"citations": []}))),
            Ok(json_event("delta", &json!({"text": NO_SOURCES_ANSWER}))),
            Ok(json_event("usage", &usage)),
            Ok(json_event(
                "done",
                &json!({"request_id": caller.request_id, "cited": [], "no_sources": true}),
            )),
        ];
        Sse::new(futures::stream::iter(events)).into_response()
    } else {
        Json(json!({
            "answer": NO_SOURCES_ANSWER,
            "citations": [],
            "usage": usage,
            "no_sources": true,
            "request_id": caller.request_id,
        }))
        .into_response()
    };
    set_server_timing(&mut response, times, Duration::ZERO, started.elapsed());
    response
}

pub fn json_event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// What turns provider stream items into client text: drop markers that cite nothing, restore PII (both
/// hold back partial tokens across chunk boundaries).
pub struct AnswerTextStream {
    /// `None` for a plain brokered call: the text has no citation markers to check.
    markers: Option<MarkerFilter>,
    restorer: StreamRestorer,
    pseudonymizer: Pseudonymizer,
}

impl AnswerTextStream {
    pub fn new(pseudonymizer: Pseudonymizer, sources: usize) -> AnswerTextStream {
        AnswerTextStream {
            markers: Some(MarkerFilter::new(sources)),
            restorer: StreamRestorer::default(),
            pseudonymizer,
        }
    }

    /// A plain brokered call's text: placeholders restored, nothing else changed.
    pub fn plain(pseudonymizer: Pseudonymizer) -> AnswerTextStream {
        AnswerTextStream {
            markers: None,
            restorer: StreamRestorer::default(),
            pseudonymizer,
        }
    }

    pub fn push(&mut self, delta: &str) -> String {
        let filtered = match &mut self.markers {
            Some(markers) => markers.push(delta),
            None => delta.to_owned(),
        };
        self.restorer.push(&self.pseudonymizer, &filtered)
    }

    pub fn finish(&mut self) -> String {
        let filtered = self
            .markers
            .as_mut()
            .map(MarkerFilter::finish)
            .unwrap_or_default();
        let mut out = self.restorer.push(&self.pseudonymizer, &filtered);
        out.push_str(&self.restorer.finish(&self.pseudonymizer));
        out
    }

    pub fn cited(&self) -> Vec<usize> {
        self.markers
            .as_ref()
            .map(|m| m.cited().iter().copied().collect())
            .unwrap_or_default()
    }
}

/// The `error` event for a stream that failed after it started (no failover possible once text was sent).
/// Logged here, once, for both streaming routes; the client gets a fixed message, never provider details.
pub fn stream_error_event(e: &GenerationError, request_id: &str) -> Event {
    tracing::warn!(error = %e, "provider stream failed after it started");
    let message = match e {
        GenerationError::Timeout { .. } => "the AI provider stopped responding",
        GenerationError::StreamCut { .. } => "the AI provider ended the answer early",
        _ => "the AI provider failed while answering",
    };
    json_event(
        "error",
        &json!({"error": {
            "code": "provider_stream_failed",
            "message": message,
            "request_id": request_id,
        }}),
    )
}

async fn stream_answer(
    state: AppState,
    grounding: Grounding,
    caller: Caller,
    tenant: TenantId,
    reservation: Reservation,
    started: Instant,
) -> Result<Response, ApiError> {
    let provider_started = Instant::now();
    let answer = grounding
        .generation
        .chain
        .stream(&grounding.input)
        .await
        .map_err(generation_error)?;
    let first_piece = provider_started.elapsed();
    let sources: Vec<Citation> =
        citations(&grounding.chunks, answer.sources_used, &Default::default());
    let times = grounding.times;
    let sources_used = answer.sources_used;
    let (meter, pseudonymizer, items) = StreamMeter::start(
        state,
        caller,
        tenant,
        grounding,
        reservation,
        answer,
        provider_started,
    );
    let stream = AskStream {
        meter,
        items,
        text: AnswerTextStream::new(pseudonymizer, sources_used),
        usage: TokenUsage::default(),
        bytes_received: 0,
        phase: Phase::Citations(sources),
    };
    let events = futures::stream::unfold(stream, |mut stream| async move {
        let event = stream.next_event().await?;
        Some((Ok::<_, Infallible>(event), stream))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    set_server_timing(&mut response, times, first_piece, started.elapsed());
    Ok(response)
}

enum Phase {
    Citations(Vec<Citation>),
    Text,
    Usage,
    Done,
    Finished,
}

struct AskStream {
    meter: StreamMeter,
    items: BoxStream<'static, Result<StreamItem, GenerationError>>,
    text: AnswerTextStream,
    usage: TokenUsage,
    bytes_received: u64,
    phase: Phase,
}

impl AskStream {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Text) {
                Phase::Citations(sources) => {
                    return Some(json_event("citations", &json!({ "citations": sources })));
                }
                Phase::Text => match self.items.next().await {
                    Some(Ok(StreamItem::Delta(delta))) => {
                        self.bytes_received += u64::try_from(delta.len()).unwrap_or(0);
                        let text = self.text.push(&delta);
                        if !text.is_empty() {
                            return Some(json_event("delta", &json!({ "text": text })));
                        }
                    }
                    Some(Ok(StreamItem::Usage(usage))) => self.usage = usage,
                    Some(Err(e)) => {
                        self.phase = Phase::Finished;
                        if let Err(meter_error) = self
                            .meter
                            .finish(self.usage, self.bytes_received, true)
                            .await
                        {
                            tracing::warn!(
                                code = meter_error.body.code,
                                "a failed stream could not be metered"
                            );
                        }
                        return Some(stream_error_event(&e, &self.meter.caller.request_id));
                    }
                    None => {
                        self.phase = Phase::Usage;
                        let rest = self.text.finish();
                        if !rest.is_empty() {
                            return Some(json_event("delta", &json!({ "text": rest })));
                        }
                    }
                },
                Phase::Usage => {
                    // The usage row and audit event are durable before the client hears the answer ended.
                    if let Err(e) = self
                        .meter
                        .finish(self.usage, self.bytes_received, false)
                        .await
                    {
                        self.phase = Phase::Finished;
                        return Some(json_event(
                            "error",
                            &json!({"error": {"code": e.body.code, "message": e.body.message,
                                              "request_id": self.meter.caller.request_id}}),
                        ));
                    }
                    self.phase = Phase::Done;
                    return Some(json_event(
                        "usage",
                        &usage_json(
                            &self.meter.state.generator,
                            self.usage,
                            &self.meter.provider,
                            &self.meter.model,
                        ),
                    ));
                }
                Phase::Done => {
                    self.phase = Phase::Finished;
                    return Some(json_event(
                        "done",
                        &json!({"request_id": self.meter.caller.request_id, "cited": self.text.cited(),
                                "provider": self.meter.provider, "model": self.meter.model}),
                    ));
                }
                Phase::Finished => {
                    self.phase = Phase::Finished;
                    return None;
                }
            }
        }
    }
}
