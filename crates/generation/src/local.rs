//! The embedded default answerer: no key, no network. It picks the sentences of the retrieved sources that
//! share the most (IDF-weighted) words with the question and cites each. It never invents text, so its
//! answers are quotations; it is labelled `provider: "local", model: "extractive"` so nobody mistakes it
//! for a language model.

use crate::tokens::count_tokens;
use crate::{ChatProvider, ChatRequest, ChatResponse, ChatStream, GenerationError, StreamItem};
use crate::{SourceText, TokenUsage};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};

/// Most sentences quoted in one answer.
const MAX_SENTENCES: usize = 3;

pub const NOT_FOUND_ANSWER: &str = "The documents do not answer this question.";

#[derive(Default)]
pub struct ExtractiveAnswerer;

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how",
    "i", "if", "in", "is", "it", "its", "me", "my", "of", "on", "or", "should", "that", "the",
    "this", "to", "what", "when", "where", "which", "who", "why", "with", "you", "your",
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '-' && c != '_')
        .map(|w| w.trim_matches('-').to_lowercase())
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// Sentences of a text: split after `.`, `!`, `?` followed by whitespace, and at blank lines.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        let mut start = 0;
        let chars: Vec<(usize, char)> = paragraph.char_indices().collect();
        for (i, &(at, c)) in chars.iter().enumerate() {
            let next_is_space = chars.get(i + 1).is_none_or(|&(_, n)| n.is_whitespace());
            if matches!(c, '.' | '!' | '?') && next_is_space {
                out.push(paragraph[start..at + c.len_utf8()].to_owned());
                start = at + c.len_utf8();
            }
        }
        out.push(paragraph[start..].to_owned());
    }
    out.into_iter()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| s.len() > 2)
        .collect()
}

impl ExtractiveAnswerer {
    /// The answer text for a question over numbered sources.
    pub fn answer(&self, question: &str, sources: &[SourceText], max_tokens: usize) -> String {
        let query: HashSet<String> = words(question).into_iter().collect();
        if query.is_empty() || sources.is_empty() {
            return NOT_FOUND_ANSWER.to_owned();
        }
        let candidates: Vec<(usize, usize, String)> = sources
            .iter()
            .enumerate()
            .flat_map(|(n, s)| {
                sentences(&s.text)
                    .into_iter()
                    .enumerate()
                    .map(move |(i, sentence)| (n + 1, i, sentence))
            })
            .collect();
        // Inverse document frequency over sentences: a word in every sentence tells nothing.
        let mut frequency: HashMap<&str, usize> = HashMap::new();
        let sentence_words: Vec<HashSet<String>> = candidates
            .iter()
            .map(|(_, _, s)| words(s).into_iter().collect())
            .collect();
        for set in &sentence_words {
            for w in set {
                if query.contains(w) {
                    *frequency.entry(w.as_str()).or_default() += 1;
                }
            }
        }
        let total = candidates.len() as f64;
        let mut scored: Vec<(f64, usize)> = sentence_words
            .iter()
            .enumerate()
            .map(|(i, set)| {
                let score: f64 = set
                    .iter()
                    .filter_map(|w| frequency.get(w.as_str()))
                    .map(|&f| (1.0 + total / f as f64).ln())
                    .sum();
                // Earlier (better ranked) sources win ties.
                let rank_bonus = 0.01 / candidates[i].0 as f64;
                (score + rank_bonus, i)
            })
            .filter(|&(score, _)| score >= 0.5)
            .collect();
        if scored.is_empty() {
            return NOT_FOUND_ANSWER.to_owned();
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let best = scored[0].0;
        let mut chosen: Vec<usize> = Vec::new();
        let mut used_tokens = 0;
        for &(score, i) in scored.iter().take(MAX_SENTENCES) {
            // A weak second sentence only adds noise.
            if score < best * 0.5 {
                break;
            }
            let tokens = count_tokens(&candidates[i].2) + 3;
            if used_tokens + tokens > max_tokens && !chosen.is_empty() {
                break;
            }
            used_tokens += tokens;
            chosen.push(i);
        }
        // Read in document order: source, then position in it.
        chosen.sort_by_key(|&i| (candidates[i].0, candidates[i].1));
        chosen
            .iter()
            .map(|&i| format!("{} [{}]", candidates[i].2, candidates[i].0))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn respond(&self, request: &ChatRequest) -> (String, TokenUsage) {
        let text = self.answer(
            &request.question,
            &request.sources,
            request.max_output_tokens as usize,
        );
        let input_tokens = count_tokens(&request.question)
            + request
                .sources
                .iter()
                .map(|s| count_tokens(&s.text))
                .sum::<usize>();
        let usage = TokenUsage {
            input_tokens: input_tokens as u64,
            output_tokens: count_tokens(&text) as u64,
        };
        (text, usage)
    }
}

#[async_trait]
impl ChatProvider for ExtractiveAnswerer {
    fn name(&self) -> &str {
        "local"
    }

    fn model(&self) -> &str {
        "extractive"
    }

    fn context_tokens(&self) -> usize {
        // It reads sources directly; the limit only bounds work per request.
        32_768
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, GenerationError> {
        let (text, usage) = self.respond(request);
        Ok(ChatResponse {
            text,
            usage,
            key_version: None,
        })
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, GenerationError> {
        let (text, usage) = self.respond(request);
        // Word by word, like a model, so clients exercise the same path for every provider.
        let mut items: Vec<Result<StreamItem, GenerationError>> = text
            .split_inclusive(' ')
            .map(|w| Ok(StreamItem::Delta(w.to_owned())))
            .collect();
        items.push(Ok(StreamItem::Usage(usage)));
        Ok(ChatStream {
            key_version: None,
            items: Box::pin(futures::stream::iter(items)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> SourceText {
        SourceText {
            name: "manual".into(),
            text: text.into(),
        }
    }

    #[test]
    fn quotes_the_best_sentences_with_citations() {
        let sources = [
            source("The pump has a blue housing. To reset the pump, hold the reset button for ten seconds."),
            source("Error E-1042 means the impeller is blocked. Clean the impeller."),
        ];
        let answer = ExtractiveAnswerer.answer("How do I reset the pump?", &sources, 200);
        assert_eq!(
            answer,
            "To reset the pump, hold the reset button for ten seconds. [1]"
        );
        let answer = ExtractiveAnswerer.answer("what does E-1042 mean", &sources, 200);
        assert!(
            answer.starts_with("Error E-1042 means the impeller is blocked. [2]"),
            "{answer}"
        );
    }

    #[test]
    fn says_so_when_nothing_matches() {
        let sources = [source("The pump has a blue housing.")];
        assert_eq!(
            ExtractiveAnswerer.answer("warranty period for routers", &sources, 200),
            NOT_FOUND_ANSWER
        );
        assert_eq!(
            ExtractiveAnswerer.answer("the", &sources, 200),
            NOT_FOUND_ANSWER
        );
    }
}
