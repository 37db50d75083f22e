//! `POST /v1/chat/completions`: OpenAI's chat completions format, so existing OpenAI SDK clients pointed at
//! ragvault get grounded answers. Retrieval runs on the last user message; earlier user/assistant turns go
//! along as conversation history; client `system` messages are ignored (ragvault's grounding instructions
//! are the system prompt). Authenticated by the tenant key (`Authorization: Bearer`), never a provider key.
//! Citations ride along in a `ragvault` field that SDKs keep as an extra attribute. A tenant whose policy sets
//! `chat_mode = "plain"` gets a brokered call instead: its messages (system ones included) go to its failover
//! chain without retrieval, under the same key lease, budget, metering and audit.

use super::ask::{
    checked_max_tokens, checked_top_k, set_server_timing, stream_error_event, AnswerTextStream,
};
use crate::answer::{self, citations, generation_error, NO_SOURCES_ANSWER};
use crate::error::ApiError;
use crate::extract::{ApiJson, Caller};
use crate::policy::ChatMode;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use ragvault_core::Scope;
use ragvault_gateway::require_tenant_scope;
use ragvault_generation::{filter_markers, ChatMessage, Role, StreamItem, TokenUsage};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::{Duration, Instant};

/// Earlier turns kept as history (the newest ones).
const MAX_HISTORY_MESSAGES: usize = 10;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ChatCompletionRequest {
    /// Echoed back; the tenant's failover chain decides the provider.
    #[serde(default)]
    model: Option<String>,
    messages: Vec<IncomingMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    /// ragvault extension: how many chunks to retrieve.
    #[serde(default)]
    top_k: Option<usize>,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct IncomingMessage {
    role: String,
    #[serde(default)]
    content: Content,
}

/// A string, or OpenAI's array of parts (only `text` parts are read).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
    #[default]
    Null,
}

/// One part of a message's content; parts other than `text` (images, audio) are accepted and skipped.
#[derive(Deserialize, utoipa::ToSchema)]
struct ContentPart {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter(|p| p.kind.as_deref() == Some("text"))
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
            Content::Null => String::new(),
        }
    }
}

fn openai_error(status: StatusCode, code: &'static str, message: &str) -> ApiError {
    ApiError::new(status, code, message.to_owned())
}

#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "retrieval",
    summary = "OpenAI-compatible chat completions, grounded in the tenant's documents",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "`chat.completion`; with `stream: true`, `chat.completion.chunk` events and `[DONE]`", content((crate::openapi::ChatCompletion = "application/json"), (String = "text/event-stream"))),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let tenant = require_tenant_scope(&caller.principal, Scope::Ask)?;
    let generation = crate::answer::admit(&state, &caller, tenant).await?;
    let admitted = started.elapsed();
    let limits = state.generator.settings();
    let last_user = request
        .messages
        .iter()
        .rposition(|m| m.role == "user")
        .ok_or_else(|| {
            openai_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_user_message",
                "messages must contain a user message",
            )
        })?;
    let question_text = request.messages[last_user].content.text();
    let question = answer::validate_query(&question_text, limits.max_query_chars)?;
    let mut history: Vec<ChatMessage> = request.messages[..last_user]
        .iter()
        .filter_map(|m| {
            let role = match m.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                _ => return None,
            };
            Some(ChatMessage {
                role,
                content: m.content.text(),
            })
        })
        .collect();
    if history.len() > MAX_HISTORY_MESSAGES {
        history.drain(..history.len() - MAX_HISTORY_MESSAGES);
    }
    // Providers want alternating turns starting with a user turn.
    while history.first().is_some_and(|m| m.role == Role::Assistant) {
        history.remove(0);
    }
    let top_k = checked_top_k(&state, &generation.policy, request.top_k)?;
    let max_tokens =
        checked_max_tokens(&state, request.max_completion_tokens.or(request.max_tokens))?;
    let temperature = request.temperature.unwrap_or(limits.temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(openai_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_temperature",
            "temperature must be between 0 and 2",
        ));
    }
    let asked = answer::Question {
        text: question,
        history: &history,
        top_k,
        max_output_tokens: max_tokens,
        temperature,
        groups: caller.principal.access_groups(),
        who: answer::embedding_for(&caller, tenant),
        record_prompt: state.settings.tracing.debug_record_prompts,
    };
    let plain = generation.policy.chat_mode == Some(ChatMode::Plain);
    let grounding = if plain {
        // The client's own system messages are its instructions here (a grounded answer ignores them).
        let system: Vec<String> = request
            .messages
            .iter()
            .filter(|m| m.role == "system" || m.role == "developer")
            .map(|m| m.content.text())
            .collect();
        answer::broker(generation, asked, &system.join("\n\n"))?
    } else {
        answer::ground(generation, &state.retriever, tenant, asked).await?
    };
    let id = format!("chatcmpl-{}", caller.request_id);
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    let requested_model = request.model.unwrap_or_else(|| "ragvault".into());
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);

    if grounding.chunks.is_empty() && !plain {
        let reply = Reply {
            id,
            created,
            model: requested_model,
        };
        let mut response = if request.stream {
            let mut events = vec![
                reply.chunk(
                    json!({"role": "assistant", "content": NO_SOURCES_ANSWER}),
                    None,
                    json!({"citations": [], "no_sources": true}),
                ),
                reply.chunk(json!({}), Some("stop"), Value::Null),
            ];
            if include_usage {
                events.push(reply.usage_chunk(TokenUsage::default()));
            }
            events.push(Event::default().data("[DONE]"));
            Sse::new(futures::stream::iter(
                events.into_iter().map(Ok::<_, Infallible>),
            ))
            .into_response()
        } else {
            Json(reply.completion(
                NO_SOURCES_ANSWER,
                TokenUsage::default(),
                json!({"citations": [], "no_sources": true, "provider": "none"}),
            ))
            .into_response()
        };
        set_server_timing(
            &mut response,
            grounding.times,
            Duration::ZERO,
            started.elapsed(),
        );
        return Ok(response);
    }

    let reserve_started = Instant::now();
    let reservation = answer::reserve_budget(&state, tenant, &grounding).await?;
    let reserved = reserve_started.elapsed();
    let provider_started = Instant::now();
    if !request.stream {
        let answer = grounding
            .generation
            .chain
            .complete(&grounding.input)
            .await
            .map_err(generation_error)?;
        let provider_time = provider_started.elapsed();
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
                cost_micro_usd: state.generator.cost_micro_usd(
                    &answer.provider,
                    &answer.model,
                    answer.usage,
                ),
                latency: provider_time,
                bytes_sent: answer::input_bytes(&grounding.input),
                bytes_received: u64::try_from(answer.text.len()).unwrap_or(u64::MAX),
                outcome: "ok",
                failovers: &answer.failovers,
            },
        )
        .await?;
        let metered = meter_started.elapsed();
        let (filtered, cited) = if plain {
            (answer.text.clone(), Default::default())
        } else {
            filter_markers(&answer.text, answer.sources_used)
        };
        let text = grounding.pseudonymizer.restore(&filtered);
        let reply = Reply {
            id,
            created,
            model: requested_model,
        };
        let mut response = Json(reply.completion(
            &text,
            answer.usage,
            json!({
                "citations": citations(&grounding.chunks, answer.sources_used, &cited),
                "provider": answer.provider,
                "model": answer.model,
                "cost_micro_usd": state.generator.cost_micro_usd(&answer.provider, &answer.model, answer.usage),
                "request_id": caller.request_id,
            }),
        ))
        .into_response();
        set_server_timing(
            &mut response,
            grounding
                .times
                .with_request_stages(admitted, reserved, metered),
            provider_time,
            started.elapsed(),
        );
        return Ok(response);
    }

    let answer = grounding
        .generation
        .chain
        .stream(&grounding.input)
        .await
        .map_err(generation_error)?;
    let first_piece = provider_started.elapsed();
    let sources = citations(&grounding.chunks, answer.sources_used, &Default::default());
    let reply = Reply {
        id,
        created,
        model: requested_model,
    };
    let opening = reply.chunk(
        json!({"role": "assistant", "content": ""}),
        None,
        json!({"citations": sources, "provider": answer.provider, "model": answer.model}),
    );
    let times = grounding.times;
    let sources_used = answer.sources_used;
    let (meter, pseudonymizer, items) = answer::StreamMeter::start(
        state,
        caller,
        tenant,
        grounding,
        reservation,
        answer,
        provider_started,
    );
    let stream = ChatStreamState {
        meter,
        items,
        text: if plain {
            AnswerTextStream::plain(pseudonymizer)
        } else {
            AnswerTextStream::new(pseudonymizer, sources_used)
        },
        usage: TokenUsage::default(),
        bytes_received: 0,
        reply,
        include_usage,
        pending: std::collections::VecDeque::from([opening]),
        ended: false,
    };
    let events = futures::stream::unfold(stream, |mut state| async move {
        let event = state.next_event().await?;
        Some((Ok::<_, Infallible>(event), state))
    });
    let mut response = Sse::new(events).into_response();
    set_server_timing(&mut response, times, first_piece, started.elapsed());
    Ok(response)
}

struct Reply {
    id: String,
    created: i64,
    model: String,
}

impl Reply {
    fn completion(&self, text: &str, usage: TokenUsage, extension: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
            "ragvault": extension,
        })
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>, extension: Value) -> Event {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        if !extension.is_null() {
            chunk["ragvault"] = extension;
        }
        Event::default().data(chunk.to_string())
    }

    fn usage_chunk(&self, usage: TokenUsage) -> Event {
        Event::default().data(
            json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": {
                    "prompt_tokens": usage.input_tokens,
                    "completion_tokens": usage.output_tokens,
                    "total_tokens": usage.input_tokens + usage.output_tokens,
                },
            })
            .to_string(),
        )
    }
}

struct ChatStreamState {
    meter: answer::StreamMeter,
    bytes_received: u64,
    items: futures::stream::BoxStream<
        'static,
        Result<StreamItem, ragvault_generation::GenerationError>,
    >,
    text: AnswerTextStream,
    usage: TokenUsage,
    reply: Reply,
    include_usage: bool,
    pending: std::collections::VecDeque<Event>,
    ended: bool,
}

impl ChatStreamState {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match self.items.next().await {
                Some(Ok(StreamItem::Delta(delta))) => {
                    self.bytes_received += u64::try_from(delta.len()).unwrap_or(0);
                    let text = self.text.push(&delta);
                    if !text.is_empty() {
                        return Some(self.reply.chunk(
                            json!({ "content": text }),
                            None,
                            Value::Null,
                        ));
                    }
                }
                Some(Ok(StreamItem::Usage(usage))) => self.usage = usage,
                Some(Err(e)) => {
                    self.ended = true;
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
                    // OpenAI's SDKs raise an APIError for an `error` object inside the stream.
                    return Some(stream_error_event(&e, &self.meter.caller.request_id));
                }
                None => {
                    self.ended = true;
                    // Durable before the client hears the answer ended.
                    if let Err(e) = self
                        .meter
                        .finish(self.usage, self.bytes_received, false)
                        .await
                    {
                        return Some(
                            Event::default().event("error").data(
                                json!({"error": {"code": e.body.code, "message": e.body.message,
                                             "request_id": self.meter.caller.request_id}})
                                .to_string(),
                            ),
                        );
                    }
                    let rest = self.text.finish();
                    if !rest.is_empty() {
                        self.pending.push_back(self.reply.chunk(
                            json!({ "content": rest }),
                            None,
                            Value::Null,
                        ));
                    }
                    self.pending.push_back(self.reply.chunk(
                        json!({}),
                        Some("stop"),
                        json!({"cited": self.text.cited()}),
                    ));
                    if self.include_usage {
                        self.pending.push_back(self.reply.usage_chunk(self.usage));
                    }
                    self.pending.push_back(Event::default().data("[DONE]"));
                }
            }
        }
    }
}
