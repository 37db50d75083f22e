//! Turning uploaded bytes into structured text ready for chunking.
//!
//! Formats implement [`Parser`]; each yields sections with their heading path so chunks can cite where they
//! came from. Plain text is here; Markdown, HTML and PDF follow the same trait. [`sealed::SealedContent`] is
//! the only way document text reaches or leaves Postgres.

pub mod chunk;
mod html;
pub mod indexing;
mod markdown;
mod pdf;
pub mod pipeline;
pub mod queue;
pub mod sealed;
pub mod secrets;
pub mod transcribe;

pub use html::HtmlParser;
pub use markdown::MarkdownParser;
pub use pdf::PdfParser;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("document is not valid UTF-8 text (first bad byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("document contains no text")]
    NoText,
    #[error("{0}")]
    Malformed(String),
}

/// A run of text under one heading path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// Headings from the outermost to the innermost; empty for text before any heading.
    pub heading_path: Vec<String>,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedDocument {
    pub sections: Vec<Section>,
}

/// One input format.
pub trait Parser: Send + Sync {
    fn parse(&self, bytes: &[u8]) -> Result<ParsedDocument, IngestError>;
}

/// Plain UTF-8 text: line endings normalised, the whole text as one section.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainTextParser;

impl Parser for PlainTextParser {
    fn parse(&self, bytes: &[u8]) -> Result<ParsedDocument, IngestError> {
        let text = std::str::from_utf8(bytes).map_err(|e| IngestError::InvalidUtf8 {
            offset: e.valid_up_to(),
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
        if normalised.trim().is_empty() {
            return Err(IngestError::NoText);
        }
        Ok(ParsedDocument {
            sections: vec![Section {
                heading_path: Vec::new(),
                text: normalised.trim().to_owned(),
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_normalises_line_endings_and_bom() {
        let doc = PlainTextParser
            .parse("\u{feff}line one\r\nline two\rline three\n".as_bytes())
            .unwrap();
        assert_eq!(doc.sections.len(), 1);
        assert_eq!(doc.sections[0].text, "line one\nline two\nline three");
    }

    #[test]
    fn plain_text_rejects_binary_and_empty_input() {
        assert_eq!(
            PlainTextParser.parse(b"ok\xff\xfe"),
            Err(IngestError::InvalidUtf8 { offset: 2 })
        );
        assert_eq!(PlainTextParser.parse(b"  \n\t "), Err(IngestError::NoText));
    }
}
