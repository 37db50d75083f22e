//! Failover: a tenant's providers in order (e.g. anthropic -> openai -> local), each behind its circuit
//! breaker. A provider that fails (5xx, timeout, refused or revoked key, rate limit, malformed answer) hands
//! the request to the next one without a user-visible error; the answer says which provider answered and
//! which were tried. A stream fails over only until its first piece of text: after that a failure is the
//! stream's own error event.

use crate::breaker::{Admission, CircuitBreaker};
use crate::prompt::{build_prompt, plain_messages, PromptBudget, SourceText};
use crate::{
    ChatMessage, ChatProvider, ChatRequest, DataControls, GenerationError, StreamItem, TokenUsage,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use std::sync::Arc;
use tracing::Instrument;

/// What is asked, already pseudonymized.
#[derive(Clone, Debug)]
pub struct AnswerInput {
    /// `Some` for a plain brokered call (a tenant whose policy sets `chat_mode = "plain"`): this system prompt
    /// (the client's own, possibly empty) goes as it is, with no sources and no grounding instructions.
    pub plain_system: Option<String>,
    pub question: String,
    /// Earlier conversation turns (OpenAI-compatible endpoint); empty for `/v1/ask`.
    pub history: Vec<ChatMessage>,
    /// Retrieved sources, best first.
    pub sources: Vec<SourceText>,
    pub max_output_tokens: u32,
    pub temperature: f32,
    pub data_controls: DataControls,
}

/// A provider that was tried and did not answer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ChainEvent {
    pub provider: String,
    pub error: String,
}

#[derive(Clone, Debug)]
pub struct Answer {
    /// The provider's text, markers not yet checked.
    pub text: String,
    pub usage: TokenUsage,
    pub provider: String,
    pub model: String,
    pub key_version: Option<u64>,
    /// Sources 1..=sources_used were sent.
    pub sources_used: usize,
    pub failovers: Vec<ChainEvent>,
}

pub struct AnswerStream {
    pub provider: String,
    pub model: String,
    pub key_version: Option<u64>,
    pub sources_used: usize,
    pub failovers: Vec<ChainEvent>,
    pub items: BoxStream<'static, Result<StreamItem, GenerationError>>,
}

/// One provider and its breaker.
#[derive(Clone)]
pub struct ChainLink {
    pub provider: Arc<dyn ChatProvider>,
    pub breaker: Arc<CircuitBreaker>,
}

#[derive(Clone)]
pub struct ProviderChain {
    links: Vec<ChainLink>,
}

impl ProviderChain {
    pub fn new(links: Vec<ChainLink>) -> ProviderChain {
        ProviderChain { links }
    }

    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.links.iter().map(|l| l.provider.name())
    }

    /// `(provider, model)` of every link, in chain order (for pricing a worst case before calling).
    pub fn models(&self) -> impl Iterator<Item = (&str, &str)> {
        self.links
            .iter()
            .map(|l| (l.provider.name(), l.provider.model()))
    }

    fn request_for(
        &self,
        provider: &dyn ChatProvider,
        input: &AnswerInput,
    ) -> (ChatRequest, usize) {
        let (system, messages, sources_used) = match &input.plain_system {
            Some(system) => (
                system.clone(),
                plain_messages(&input.question, &input.history),
                0,
            ),
            None => {
                let prompt = build_prompt(
                    &input.question,
                    &input.history,
                    &input.sources,
                    PromptBudget {
                        context_tokens: provider.context_tokens(),
                        max_output_tokens: input.max_output_tokens as usize,
                    },
                );
                (prompt.system, prompt.messages, prompt.sources_used)
            }
        };
        let request = ChatRequest {
            system,
            messages,
            max_output_tokens: input.max_output_tokens,
            temperature: input.temperature,
            question: input.question.clone(),
            sources: input.sources[..sources_used].to_vec(),
            data_controls: input.data_controls,
        };
        (request, sources_used)
    }

    fn exhausted(failovers: &[ChainEvent]) -> GenerationError {
        GenerationError::Exhausted(
            failovers
                .iter()
                .map(|f| format!("{}: {}", f.provider, f.error))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    pub async fn complete(&self, input: &AnswerInput) -> Result<Answer, GenerationError> {
        let mut failovers = Vec::new();
        for link in &self.links {
            let provider = link.provider.as_ref();
            if skipped_by_breaker(link, &mut failovers) {
                continue;
            }
            let (request, sources_used) = self.request_for(provider, input);
            let span = generate_span(provider, false);
            let outcome = CallGuard::new(&link.breaker)
                .run(provider.complete(&request))
                .instrument(span.clone())
                .await;
            record_outcome(&span, &outcome, |r| (r.key_version, Some(r.usage)));
            match outcome {
                Ok(response) => {
                    return Ok(Answer {
                        text: response.text,
                        usage: response.usage,
                        provider: provider.name().to_owned(),
                        model: provider.model().to_owned(),
                        key_version: response.key_version,
                        sources_used,
                        failovers,
                    })
                }
                Err(e) => {
                    tracing::warn!(provider = provider.name(), error = %e, "provider failed; trying the next one");
                    failovers.push(ChainEvent {
                        provider: provider.name().to_owned(),
                        error: e.to_string(),
                    });
                }
            }
        }
        Err(Self::exhausted(&failovers))
    }

    pub async fn stream(&self, input: &AnswerInput) -> Result<AnswerStream, GenerationError> {
        let mut failovers = Vec::new();
        for link in &self.links {
            let provider = link.provider.as_ref();
            if skipped_by_breaker(link, &mut failovers) {
                continue;
            }
            let (request, sources_used) = self.request_for(provider, input);
            let guard = CallGuard::new(&link.breaker);
            // The stream has started only when its first item arrived; until then, fail over.
            let started = async {
                let mut stream = provider.stream(&request).await?;
                match stream.items.next().await {
                    Some(Ok(first)) => Ok((stream, Some(first))),
                    Some(Err(e)) => Err(e),
                    None => Ok((stream, None)),
                }
            };
            // The span covers the call until the first piece arrived; tokens are known only at the end and
            // are in the usage row and metrics.
            let span = generate_span(provider, true);
            let opened = guard.run_open(started).instrument(span.clone()).await;
            record_outcome(&span, &opened, |((stream, _), _)| {
                (stream.key_version, None)
            });
            match opened {
                Ok(((stream, first), guard)) => {
                    let rest = stream.items;
                    let head = futures::stream::iter(first.map(Ok));
                    let items = head.chain(rest);
                    return Ok(AnswerStream {
                        provider: provider.name().to_owned(),
                        model: provider.model().to_owned(),
                        key_version: stream.key_version,
                        sources_used,
                        failovers,
                        items: guard.watch(items).boxed(),
                    });
                }
                Err(e) => {
                    tracing::warn!(provider = provider.name(), error = %e, "provider failed to start a stream; trying the next one");
                    failovers.push(ChainEvent {
                        provider: provider.name().to_owned(),
                        error: e.to_string(),
                    });
                }
            }
        }
        Err(Self::exhausted(&failovers))
    }
}

/// True (and noted in `failovers`) when the link's breaker refuses the call.
fn skipped_by_breaker(link: &ChainLink, failovers: &mut Vec<ChainEvent>) -> bool {
    if link.breaker.admit() != Admission::Rejected {
        return false;
    }
    failovers.push(ChainEvent {
        provider: link.provider.name().to_owned(),
        error: "circuit breaker open".into(),
    });
    true
}

/// Reports a call's outcome to its breaker exactly once; a call abandoned midway (the client went away)
/// only frees the half-open probe slot.
struct CallGuard {
    breaker: Arc<CircuitBreaker>,
    reported: bool,
}

impl CallGuard {
    fn new(breaker: &Arc<CircuitBreaker>) -> CallGuard {
        CallGuard {
            breaker: breaker.clone(),
            reported: false,
        }
    }

    fn report(&mut self, result: Result<(), &GenerationError>) {
        if self.reported {
            return;
        }
        self.reported = true;
        match result {
            Ok(()) => self.breaker.record(true),
            Err(e) if e.is_provider_fault() => self.breaker.record(false),
            // Rate limits and our own mistakes say nothing about the provider's health.
            Err(_) => self.breaker.release(),
        }
    }

    async fn run<T>(
        mut self,
        call: impl std::future::Future<Output = Result<T, GenerationError>>,
    ) -> Result<T, GenerationError> {
        let result = call.await;
        self.report(result.as_ref().map(|_| ()));
        result
    }

    /// Like `run`, but success is reported later by [`CallGuard::watch`].
    async fn run_open<T>(
        mut self,
        call: impl std::future::Future<Output = Result<T, GenerationError>>,
    ) -> Result<(T, CallGuard), GenerationError> {
        match call.await {
            Ok(value) => Ok((value, self)),
            Err(e) => {
                self.report(Err(&e));
                Err(e)
            }
        }
    }

    /// Passes stream items through and reports the stream's outcome when it ends or fails.
    fn watch(
        self,
        items: impl futures::Stream<Item = Result<StreamItem, GenerationError>> + Send + 'static,
    ) -> impl futures::Stream<Item = Result<StreamItem, GenerationError>> + Send + 'static {
        let items = items.boxed();
        futures::stream::unfold(
            (items, self, false),
            |(mut items, mut guard, done)| async move {
                if done {
                    return None;
                }
                match items.next().await {
                    Some(Ok(item)) => Some((Ok(item), (items, guard, false))),
                    Some(Err(e)) => {
                        guard.report(Err(&e));
                        Some((Err(e), (items, guard, true)))
                    }
                    None => {
                        guard.report(Ok(()));
                        None
                    }
                }
            },
        )
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.release();
        }
    }
}

/// One provider call: which provider, model and key version, and what it cost in tokens. The request text
/// is never a field.
fn generate_span(provider: &dyn ChatProvider, stream: bool) -> tracing::Span {
    tracing::info_span!(
        "generate",
        provider = provider.name(),
        model = provider.model(),
        stream,
        key_version = tracing::field::Empty,
        input_tokens = tracing::field::Empty,
        output_tokens = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

fn record_outcome<T>(
    span: &tracing::Span,
    outcome: &Result<T, GenerationError>,
    fields: impl Fn(&T) -> (Option<u64>, Option<TokenUsage>),
) {
    match outcome {
        Ok(ok) => {
            let (key_version, usage) = fields(ok);
            if let Some(version) = key_version {
                span.record("key_version", version);
            }
            if let Some(usage) = usage {
                span.record("input_tokens", usage.input_tokens);
                span.record("output_tokens", usage.output_tokens);
            }
            span.record("outcome", "ok");
        }
        Err(_) => {
            span.record("outcome", "failed");
        }
    }
}
