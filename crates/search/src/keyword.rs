//! Terms for the blind keyword index.
//!
//! Exact identifiers are what embeddings miss: error codes (`E-1042`), part numbers (`AB-4471-X`), flags
//! (`--dry-run`), version strings (`2.4.1`). So a token keeps its inner `-`, `_` and `.`, a leading `-`
//! or `--` (flags), and also yields its alphanumeric parts, so `AB-4471-X` is found by `AB-4471-X` and by
//! `4471`. Terms are lower-cased; a few very common English words are skipped. The caller hashes every term
//! under the tenant's index key before it is stored or queried.

use std::collections::BTreeMap;

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "how", "i",
    "in", "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "what", "when",
    "where", "which", "with", "you", "your",
];

/// Longest term kept (longer runs are not identifiers anyone types).
const MAX_TERM_CHARS: usize = 64;

fn is_term_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// The terms of a text, in order, with repeats.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lower = text.to_lowercase();
    for raw in lower.split(|c: char| !is_term_char(c)) {
        // Keep a leading dash run (flags); drop trailing punctuation and leading dots/underscores.
        let dashes = raw.len() - raw.trim_start_matches('-').len();
        let body = raw
            .trim_start_matches('-')
            .trim_start_matches(['.', '_'])
            .trim_end_matches(['-', '.', '_']);
        if body.is_empty() || !body.chars().any(char::is_alphanumeric) {
            continue;
        }
        let whole = if (1..=2).contains(&dashes) && body.starts_with(|c: char| c.is_alphabetic()) {
            format!("{}{body}", "-".repeat(dashes))
        } else {
            body.to_owned()
        };
        let parts: Vec<&str> = body
            .split(|c: char| !c.is_alphanumeric())
            .filter(|p| !p.is_empty())
            .collect();
        let compound = parts.len() > 1 || whole != body;
        if whole.chars().count() <= MAX_TERM_CHARS && (compound || !STOPWORDS.contains(&body)) {
            out.push(whole);
        }
        if compound {
            for part in parts {
                if part.chars().count() <= MAX_TERM_CHARS && !STOPWORDS.contains(&part) {
                    out.push(part.to_owned());
                }
            }
        }
    }
    out
}

/// Term frequencies of a text and its length in terms (BM25's document length).
pub fn term_frequencies(text: &str) -> (BTreeMap<String, i32>, i32) {
    let all = terms(text);
    let length = i32::try_from(all.len()).unwrap_or(i32::MAX);
    let mut counts = BTreeMap::new();
    for term in all {
        *counts.entry(term).or_insert(0) += 1;
    }
    (counts, length)
}

/// The distinct terms of a query.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    terms(query)
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_survive_and_split_into_parts() {
        let t = terms("Error E-1042: run `pump --dry-run` on part AB-4471-X (firmware v2.4.1).");
        for expected in [
            "error",
            "e-1042",
            "1042",
            "run",
            "pump",
            "--dry-run",
            "dry",
            "part",
            "ab-4471-x",
            "4471",
            "firmware",
            "v2.4.1",
        ] {
            assert!(
                t.contains(&expected.to_owned()),
                "{expected} missing from {t:?}"
            );
        }
        assert!(!t.contains(&"the".to_owned()) && !t.contains(&"on".to_owned()));
        assert_eq!(terms("The END."), vec!["end".to_owned()]);
        assert!(terms("--- ... __").is_empty());
    }

    #[test]
    fn frequencies_count_repeats() {
        let (tf, length) = term_frequencies("valve valve VALVE seal");
        assert_eq!(tf.get("valve"), Some(&3));
        assert_eq!(length, 4);
        assert_eq!(query_terms("valve Valve seal"), vec!["valve", "seal"]);
    }
}
