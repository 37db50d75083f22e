//! Chunking a real manual with the real all-MiniLM-L6-v2 tokenizer: every chunk fits the model, token
//! counts are exact, and no text is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragvault_embedding::{ModelTokenizer, TokenCount};
use ragvault_ingest::chunk::{chunk_document, ChunkingConfig};
use ragvault_ingest::{MarkdownParser, Parser};

fn tokenizer() -> ModelTokenizer {
    ragvault_embedding::tokenizer_from_env()
        .expect("the model is missing: run scripts/fetch-model.sh")
}

fn manual() -> String {
    let mut md =
        String::from("# Quokka X200 Router\n\nThis manual covers setup and troubleshooting.\n\n");
    for section in 0..6 {
        md.push_str(&format!("## Chapter {section}\n\n"));
        for paragraph in 0..5 {
            for sentence in 0..(3 + paragraph * 4) {
                md.push_str(&format!(
                    "In step {section}.{paragraph}.{sentence}, hold the WPS button for {sentence} seconds \
                     until the status LED blinks amber; error E{section}{paragraph} means the firmware \
                     checksum (sha256) failed. "
                ));
            }
            md.push_str("\n\n");
        }
        md.push_str("- unplug the power cable\n- wait thirty seconds\n- plug it back in\n\n");
    }
    md
}

#[test]
fn chunks_fit_the_model_and_lose_no_text() {
    let t = tokenizer();
    let doc = MarkdownParser.parse(manual().as_bytes()).unwrap();
    let config = ChunkingConfig::default();
    let chunks = chunk_document(&doc, &config, &t);
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    for chunk in &chunks {
        let real = t.count(&chunk.text);
        assert!(
            real <= config.max_tokens,
            "chunk of {real} tokens: {:?}",
            chunk.text
        );
        assert_eq!(
            real, chunk.token_count as usize,
            "token count drifted for {:?}",
            chunk.text
        );
        assert!(!chunk.heading_path.is_empty());
    }
    // Every sentence of every section is in some chunk of that section.
    for section in &doc.sections {
        let sentences = section.text.split("\n\n").flat_map(|p| p.split(". "));
        for sentence in sentences.filter(|s| s.len() > 20) {
            let sentence = sentence.trim();
            assert!(
                chunks
                    .iter()
                    .any(|c| c.heading_path == section.heading_path && c.text.contains(sentence)),
                "lost: {sentence:?}"
            );
        }
    }
    // Same input, same chunks.
    assert_eq!(chunks, chunk_document(&doc, &config, &t));
}
