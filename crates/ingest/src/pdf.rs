//! PDF text extraction (pdf-extract over lopdf): one section per page, headed `Page N`, so citations can name
//! the page. A PDF whose pages carry no text (a scan) is `NoText`. The extractor is third-party code fed
//! untrusted bytes: a panic inside it becomes `Malformed`, and the pipeline bounds its time.

use crate::{IngestError, ParsedDocument, Parser, Section};

#[derive(Clone, Copy, Debug, Default)]
pub struct PdfParser;

impl Parser for PdfParser {
    fn parse(&self, bytes: &[u8]) -> Result<ParsedDocument, IngestError> {
        let pages = std::panic::catch_unwind(|| extract_pages(bytes))
            .map_err(|_| IngestError::Malformed("the PDF could not be read".into()))??;
        let sections: Vec<Section> = pages
            .iter()
            .enumerate()
            .filter_map(|(i, text)| {
                let cleaned = clean(text);
                (!cleaned.is_empty()).then(|| Section {
                    heading_path: vec![format!("Page {}", i + 1)],
                    text: cleaned,
                })
            })
            .collect();
        if sections.is_empty() {
            return Err(IngestError::NoText);
        }
        Ok(ParsedDocument { sections })
    }
}

/// The text of each page, in order: the file is loaded once, its page tree checked, then each page handed
/// to the extractor (what `pdf_extract::extract_text_from_mem_by_pages` does, without loading the file a
/// second time for the check).
fn extract_pages(bytes: &[u8]) -> Result<Vec<String>, IngestError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        IngestError::Malformed(format!("the PDF could not be read: {e}"))
    };
    let mut document = lopdf::Document::load_mem(bytes).map_err(|e| unreadable(&e))?;
    // As the extractor does: a file encrypted with the empty user password (common for "no copying" PDFs)
    // is readable; one with a real password is not.
    if document.is_encrypted() {
        document.decrypt("").map_err(|e| unreadable(&e))?;
    }
    refuse_page_tree_loops(&document)?;
    let mut pages = Vec::new();
    for page_number in 1.. {
        let mut text = String::new();
        let mut output = pdf_extract::PlainTextOutput::new(&mut text);
        if pdf_extract::output_doc_page(&document, &mut output, page_number).is_err() {
            break;
        }
        pages.push(text);
    }
    Ok(pages)
}

/// Page dictionaries deeper than this in the page tree are refused (real files nest a handful of levels).
const MAX_PAGE_TREE_DEPTH: usize = 64;

/// The extractor follows each page's `Parent` chain for inherited attributes (`MediaBox`, `Resources`)
/// without looking for loops: a page that is its own ancestor made it spin forever (found by fuzzing), a
/// parse timeout ending the job but not the thread. Every page's chain is walked here first, bounded.
fn refuse_page_tree_loops(document: &lopdf::Document) -> Result<(), IngestError> {
    for page in document.get_pages().into_values() {
        let mut seen = std::collections::HashSet::from([page]);
        let mut current = page;
        while let Some(parent) = document
            .get_dictionary(current)
            .ok()
            .and_then(|d| d.get(b"Parent").ok())
            .and_then(|p| p.as_reference().ok())
        {
            if !seen.insert(parent) || seen.len() > MAX_PAGE_TREE_DEPTH {
                return Err(IngestError::Malformed(
                    "the PDF's page tree loops back on itself".into(),
                ));
            }
            current = parent;
        }
    }
    Ok(())
}

/// Joins the extractor's lines into paragraphs: a blank line ends a paragraph, a line break inside one is a
/// space (PDF text comes out broken at every layout line), hyphenated line ends are joined.
fn clean(text: &str) -> String {
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.replace('\u{c}', "\n").lines() {
        let line = line.trim();
        if line.is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
            continue;
        }
        if current.ends_with('-') && line.starts_with(|c: char| c.is_lowercase()) {
            current.pop();
        } else if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    paragraphs.join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_paragraphs() {
        assert_eq!(
            clean("Hold the re-\nset button\nfor ten seconds.\n\n\nThen wait."),
            "Hold the reset button for ten seconds.\n\nThen wait."
        );
    }

    #[test]
    fn text_pdfs_give_a_section_per_page_and_scans_have_no_text() {
        let parsed = PdfParser
            .parse(include_bytes!("../../../tests/fixtures/manual.pdf"))
            .unwrap();
        assert_eq!(parsed.sections.len(), 2, "{parsed:?}");
        assert_eq!(parsed.sections[1].heading_path, vec!["Page 2".to_owned()]);
        assert!(parsed.sections[1].text.contains("F-2207"), "{parsed:?}");
        assert!(
            parsed.sections[0]
                .text
                .contains("Empty the water tank when the tank light turns red"),
            "{parsed:?}"
        );
        assert_eq!(
            PdfParser.parse(include_bytes!("../../../tests/fixtures/scanned.pdf")),
            Err(IngestError::NoText)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b"%PDF-1.4\n"[..],
            b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF",
            b"",
        ] {
            assert!(PdfParser.parse(bytes).is_err());
        }
    }
}
