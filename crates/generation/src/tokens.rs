//! Token counts for budgeting prompts. OpenAI's `o200k_base` encoding (tiktoken) is exact for current OpenAI
//! models and within a few percent for Anthropic, Gemini and Mistral tokenizers, which is what trimming
//! sources to a context budget needs; billing always uses the provider's own reported usage.

use std::sync::OnceLock;
use tiktoken_rs::CoreBPE;

fn encoding() -> &'static CoreBPE {
    static ENCODING: OnceLock<CoreBPE> = OnceLock::new();
    // The encoding's tables are compiled into tiktoken-rs; loading them cannot fail at run time.
    #[allow(clippy::expect_used)]
    ENCODING.get_or_init(|| tiktoken_rs::o200k_base().expect("o200k_base ships inside tiktoken-rs"))
}

/// Tokens in `text` under o200k_base.
pub fn count_tokens(text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    encoding().encode_ordinary(text).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_tiktoken() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("hello world"), 2);
        assert!(count_tokens(&"word ".repeat(100)) >= 100);
    }
}
