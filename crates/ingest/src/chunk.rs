//! Structure-aware chunking: never across a heading; paragraphs packed up to a token target; a paragraph
//! too large is split at sentences, a sentence too large at words. Sizes are counted with the embedding
//! model's tokenizer. Deterministic: the same document always gives the same chunks.

use crate::sealed::PlainChunk;
use crate::ParsedDocument;
use ragvault_embedding::TokenCount;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkingConfig {
    /// Chunks are filled up to about this many tokens.
    pub target_tokens: usize,
    /// No chunk is larger than this (the embedding model's useful input length).
    pub max_tokens: usize,
    /// Tokens of trailing sentences repeated at the start of the next chunk of the same section.
    pub overlap_tokens: usize,
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        // all-MiniLM-L6-v2 was trained on inputs of up to 256 word pieces.
        ChunkingConfig {
            target_tokens: 200,
            max_tokens: 256,
            overlap_tokens: 32,
        }
    }
}

/// A piece of text that is never split further, with its token count.
#[derive(Clone, Debug)]
struct Unit {
    text: String,
    tokens: usize,
    /// Sentence-level units may be repeated as overlap; whole paragraphs and word windows are not.
    overlappable: bool,
}

pub fn chunk_document(
    doc: &ParsedDocument,
    config: &ChunkingConfig,
    counter: &dyn TokenCount,
) -> Vec<PlainChunk> {
    let max = config.max_tokens.max(1);
    let target = config.target_tokens.clamp(1, max);
    let mut chunks = Vec::new();
    for section in &doc.sections {
        let units = units_of(&section.text, max, counter);
        let mut current: Vec<Unit> = Vec::new();
        let mut tokens = 0;
        for unit in units {
            if !current.is_empty() && tokens + unit.tokens > target {
                let overlap = overlap_of(&current, config.overlap_tokens);
                push_chunk(&mut chunks, &section.heading_path, &current);
                let overlap_tokens: usize = overlap.iter().map(|u| u.tokens).sum();
                if overlap_tokens + unit.tokens <= max {
                    tokens = overlap_tokens;
                    current = overlap;
                } else {
                    tokens = 0;
                    current = Vec::new();
                }
            }
            tokens += unit.tokens;
            current.push(unit);
        }
        if !current.is_empty() {
            push_chunk(&mut chunks, &section.heading_path, &current);
        }
    }
    chunks
}

fn push_chunk(chunks: &mut Vec<PlainChunk>, heading_path: &[String], units: &[Unit]) {
    let text = units
        .iter()
        .map(|u| u.text.as_str())
        .collect::<Vec<_>>()
        .join("\n\n");
    let token_count = units.iter().map(|u| u.tokens).sum::<usize>();
    chunks.push(PlainChunk {
        text,
        heading_path: heading_path.to_vec(),
        token_count: u32::try_from(token_count).unwrap_or(u32::MAX),
    });
}

/// The trailing sentence units of a chunk that fit in the overlap budget.
fn overlap_of(units: &[Unit], budget: usize) -> Vec<Unit> {
    let mut taken = Vec::new();
    let mut used = 0;
    for unit in units.iter().rev() {
        if !unit.overlappable || used + unit.tokens > budget {
            break;
        }
        used += unit.tokens;
        taken.push(unit.clone());
    }
    // Never repeat the whole previous chunk: that would make no progress.
    if taken.len() == units.len() {
        taken.remove(taken.len() - 1);
    }
    taken.reverse();
    taken
}

fn units_of(text: &str, max: usize, counter: &dyn TokenCount) -> Vec<Unit> {
    let mut units = Vec::new();
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        let tokens = counter.count(paragraph);
        if tokens <= max {
            units.push(Unit {
                text: paragraph.to_owned(),
                tokens,
                overlappable: false,
            });
            continue;
        }
        for sentence in sentences(paragraph) {
            let tokens = counter.count(sentence);
            if tokens <= max {
                units.push(Unit {
                    text: sentence.to_owned(),
                    tokens,
                    overlappable: true,
                });
            } else {
                units.extend(word_windows(sentence, max, counter));
            }
        }
    }
    units
}

/// Splits after `.`, `!`, `?` (and a closing quote or bracket) followed by whitespace.
fn sentences(paragraph: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = paragraph.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(b, b'.' | b'!' | b'?') {
            let mut end = i + 1;
            while end < bytes.len() && matches!(bytes[end], b'"' | b'\'' | b')' | b']') {
                end += 1;
            }
            if end < bytes.len() && bytes[end].is_ascii_whitespace() {
                let sentence = paragraph[start..end].trim();
                if !sentence.is_empty() {
                    out.push(sentence);
                }
                start = end;
            }
        }
    }
    let rest = paragraph[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// A run of words too long for one chunk, cut into windows of at most `max` tokens.
fn word_windows(sentence: &str, max: usize, counter: &dyn TokenCount) -> Vec<Unit> {
    let mut units = Vec::new();
    let mut window: Vec<&str> = Vec::new();
    let mut tokens = 0;
    for word in sentence.split_whitespace() {
        // A single "word" longer than the limit (a hash, a URL) is cut by characters.
        let word_tokens = counter.count(word);
        if word_tokens > max {
            if !window.is_empty() {
                units.push(window_unit(&window, tokens));
                window.clear();
                tokens = 0;
            }
            units.extend(char_windows(word, max, counter));
            continue;
        }
        if tokens + word_tokens > max && !window.is_empty() {
            units.push(window_unit(&window, tokens));
            window.clear();
            tokens = 0;
        }
        window.push(word);
        tokens += word_tokens;
    }
    if !window.is_empty() {
        units.push(window_unit(&window, tokens));
    }
    units
}

fn window_unit(words: &[&str], tokens: usize) -> Unit {
    Unit {
        text: words.join(" "),
        tokens,
        overlappable: false,
    }
}

fn char_windows(word: &str, max: usize, counter: &dyn TokenCount) -> Vec<Unit> {
    let mut units = Vec::new();
    let mut piece = String::new();
    for ch in word.chars() {
        piece.push(ch);
        if counter.count(&piece) > max {
            piece.pop();
            let tokens = counter.count(&piece);
            units.push(Unit {
                text: std::mem::take(&mut piece),
                tokens,
                overlappable: false,
            });
            piece.push(ch);
        }
    }
    if !piece.is_empty() {
        let tokens = counter.count(&piece);
        units.push(Unit {
            text: piece,
            tokens,
            overlappable: false,
        });
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Section;

    /// One token per whitespace-separated word: makes expected chunk boundaries easy to read.
    struct Words;
    impl TokenCount for Words {
        fn count(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }
    }

    fn doc(sections: &[(&[&str], &str)]) -> ParsedDocument {
        ParsedDocument {
            sections: sections
                .iter()
                .map(|(path, text)| Section {
                    heading_path: path.iter().map(|p| (*p).to_owned()).collect(),
                    text: (*text).to_owned(),
                })
                .collect(),
        }
    }

    fn check(document: &ParsedDocument, config: ChunkingConfig, expected: &[&str]) {
        let chunks = chunk_document(document, &config, &Words);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, expected);
        for c in &chunks {
            assert!(c.token_count as usize <= config.max_tokens, "{c:?}");
            assert_eq!(c.token_count as usize, Words.count(&c.text), "{c:?}");
        }
    }

    fn config(target: usize, max: usize, overlap: usize) -> ChunkingConfig {
        ChunkingConfig {
            target_tokens: target,
            max_tokens: max,
            overlap_tokens: overlap,
        }
    }

    #[test]
    fn small_paragraphs_are_packed_up_to_the_target() {
        check(
            &doc(&[(&[], "a b c\n\nd e\n\nf g h i")]),
            config(5, 8, 0),
            &["a b c\n\nd e", "f g h i"],
        );
    }

    #[test]
    fn chunks_never_cross_headings_and_carry_their_path() {
        let document = doc(&[(&["Setup"], "a b"), (&["Setup", "Network"], "c d")]);
        let chunks = chunk_document(&document, &config(100, 100, 0), &Words);
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            chunks[1].heading_path,
            vec!["Setup".to_owned(), "Network".to_owned()]
        );
    }

    #[test]
    fn long_paragraphs_split_at_sentences_with_overlap() {
        check(
            &doc(&[(
                &[],
                "One two three. Four five six. Seven eight nine. Ten eleven.",
            )]),
            config(6, 8, 3),
            &[
                "One two three.\n\nFour five six.",
                "Four five six.\n\nSeven eight nine.",
                "Seven eight nine.\n\nTen eleven.",
            ],
        );
    }

    #[test]
    fn overlong_sentences_split_at_words_and_words_at_characters() {
        check(
            &doc(&[(&[], "a b c d e f g")]),
            config(3, 3, 0),
            &["a b c", "d e f", "g"],
        );
        struct Chars;
        impl TokenCount for Chars {
            fn count(&self, text: &str) -> usize {
                text.chars().count()
            }
        }
        let chunks = chunk_document(&doc(&[(&[], "abcdefgh")]), &config(3, 3, 0), &Chars);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["abc", "def", "gh"]);
    }

    #[test]
    fn chunking_is_deterministic() {
        let document = doc(&[
            (&["A"], "x y z. p q r. s t u v w."),
            (&["B"], "k l m n o p q r s t"),
        ]);
        let first = chunk_document(&document, &config(4, 6, 3), &Words);
        let second = chunk_document(&document, &config(4, 6, 3), &Words);
        assert_eq!(first, second);
    }
}
