//! The embedding model's own tokenizer, so chunk sizes are measured in the tokens the model will see.

use crate::EmbeddingError;
use std::path::Path;

/// Counts tokens as a particular model does.
pub trait TokenCount: Send + Sync {
    /// Tokens in `text`, without the model's special tokens ([CLS], [SEP]).
    fn count(&self, text: &str) -> usize;
}

/// A Hugging Face `tokenizer.json` (WordPiece for all-MiniLM-L6-v2).
pub struct ModelTokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for ModelTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModelTokenizer")
    }
}

impl ModelTokenizer {
    pub fn from_file(path: &Path) -> Result<ModelTokenizer, EmbeddingError> {
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| {
            EmbeddingError::Model(format!("cannot load tokenizer {}: {e}", path.display()))
        })?;
        // Counting must see the whole text: the model's truncation applies when embedding, not here.
        inner
            .with_truncation(None)
            .map_err(|e| EmbeddingError::Model(format!("tokenizer {}: {e}", path.display())))?;
        inner.with_padding(None);
        Ok(ModelTokenizer { inner })
    }

    /// Token ids with special tokens, as the model consumes them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EmbeddingError> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| EmbeddingError::Model(format!("tokenizer: {e}")))
    }
}

impl TokenCount for ModelTokenizer {
    fn count(&self, text: &str) -> usize {
        // Encoding a valid &str cannot fail for WordPiece; an error would mean a broken tokenizer file,
        // and over-counting (by characters) keeps chunks within limits rather than silently exceeding them.
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().len())
            .unwrap_or_else(|_| text.chars().count())
    }
}
