//! Uploaded documents: the first byte picks the format, the rest is the file. Parsing may refuse, never
//! panic; what it accepts chunks into pieces no larger than the chunker's limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ragvault_embedding::TokenCount;
use ragvault_ingest::chunk::{chunk_document, ChunkingConfig};
use ragvault_ingest::{HtmlParser, MarkdownParser, Parser, PdfParser, PlainTextParser};

/// Whitespace-separated words: a tokenizer-free count with the same contract.
struct Words;

impl TokenCount for Words {
    fn count(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
}

fuzz_target!(
    init: {
        // libFuzzer's hook aborts on any panic, even one the code under test catches: the PDF parser runs
        // the third-party extractor under catch_unwind and turns its panics into `Malformed`, by design. A
        // panic nothing catches still ends the run: libfuzzer-sys aborts when one unwinds out of the target.
        std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    },
    |data: &[u8]| {
    let Some((&format, file)) = data.split_first() else {
        return;
    };
    let parser: &dyn Parser = match format % 4 {
        0 => &PlainTextParser,
        1 => &MarkdownParser,
        2 => &HtmlParser,
        _ => &PdfParser,
    };
    let Ok(document) = parser.parse(file) else {
        return;
    };
    let config = ChunkingConfig {
        target_tokens: 12,
        max_tokens: 16,
        overlap_tokens: 4,
    };
    for chunk in chunk_document(&document, &config, &Words) {
        assert!(Words.count(&chunk.text) <= config.max_tokens, "{chunk:?}");
    }
});
