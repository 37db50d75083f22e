//! Against the real all-MiniLM-L6-v2 tokenizer (fetched by `scripts/fetch-model.sh`, which `make test` runs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragvault_embedding::{ModelTokenizer, TokenCount};

fn tokenizer() -> ModelTokenizer {
    ragvault_embedding::tokenizer_from_env()
        .expect("the model is missing: run scripts/fetch-model.sh")
}

#[test]
fn counts_wordpiece_tokens_like_the_model() {
    let t = tokenizer();
    // Known BERT uncased WordPiece ids: [CLS]=101, "hello"=7592, ","=1010, "world"=2088, "!"=999, [SEP]=102.
    assert_eq!(
        t.encode("Hello, world!").unwrap(),
        vec![101, 7592, 1010, 2088, 999, 102]
    );
    assert_eq!(t.count("Hello, world!"), 4);
    assert_eq!(t.count(""), 0);
    // Rare words split into several word pieces.
    assert!(t.count("unplugging") >= 2);
    // Long texts are counted in full, not truncated at the model's 256/512 limit.
    let long = "the ".repeat(1000);
    assert_eq!(t.count(&long), 1000);
}

#[test]
fn a_missing_tokenizer_file_is_a_clear_error() {
    let err =
        ModelTokenizer::from_file(std::path::Path::new("/nonexistent/tokenizer.json")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/tokenizer.json"),
        "{err}"
    );
}
