//! Markdown: headings become the heading path of the text under them; paragraphs, list items and code
//! blocks keep their text; markup is dropped.

use crate::{IngestError, ParsedDocument, Parser, Section};
use pulldown_cmark::{Event, HeadingLevel, Tag, TagEnd};

#[derive(Clone, Copy, Debug, Default)]
pub struct MarkdownParser;

fn level_index(level: HeadingLevel) -> usize {
    match level {
        HeadingLevel::H1 => 0,
        HeadingLevel::H2 => 1,
        HeadingLevel::H3 => 2,
        HeadingLevel::H4 => 3,
        HeadingLevel::H5 => 4,
        HeadingLevel::H6 => 5,
    }
}

struct Builder {
    sections: Vec<Section>,
    path: Vec<String>,
    text: String,
}

impl Builder {
    fn flush(&mut self) {
        let text = self.text.trim();
        if !text.is_empty() {
            self.sections.push(Section {
                heading_path: self.path.clone(),
                text: text.to_owned(),
            });
        }
        self.text.clear();
    }

    fn block_break(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with("\n\n") {
            self.text.push_str(if self.text.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            });
        }
    }
}

impl Parser for MarkdownParser {
    fn parse(&self, bytes: &[u8]) -> Result<ParsedDocument, IngestError> {
        let source = std::str::from_utf8(bytes).map_err(|e| IngestError::InvalidUtf8 {
            offset: e.valid_up_to(),
        })?;
        let mut builder = Builder {
            sections: Vec::new(),
            path: Vec::new(),
            text: String::new(),
        };
        let mut heading: Option<(usize, String)> = None;
        let mut list_depth = 0usize;
        for event in pulldown_cmark::Parser::new(source) {
            match event {
                Event::Start(Tag::Heading { level, .. }) => {
                    builder.flush();
                    heading = Some((level_index(level), String::new()));
                }
                Event::End(TagEnd::Heading(_)) => {
                    if let Some((level, title)) = heading.take() {
                        builder.path.truncate(level);
                        let title = title.trim().to_owned();
                        if !title.is_empty() {
                            builder.path.push(title);
                        }
                    }
                }
                Event::Text(text) | Event::Code(text) => match &mut heading {
                    Some((_, title)) => title.push_str(&text),
                    None => builder.text.push_str(&text),
                },
                Event::SoftBreak => match &mut heading {
                    Some((_, title)) => title.push(' '),
                    None => builder.text.push(' '),
                },
                Event::HardBreak => builder.text.push('\n'),
                Event::Start(Tag::List(_)) => {
                    if list_depth == 0 {
                        builder.block_break();
                    }
                    list_depth += 1;
                }
                Event::End(TagEnd::List(_)) => {
                    list_depth = list_depth.saturating_sub(1);
                    if list_depth == 0 {
                        builder.block_break();
                    }
                }
                Event::Start(Tag::Item) => {
                    if !builder.text.is_empty() && !builder.text.ends_with('\n') {
                        builder.text.push('\n');
                    }
                    builder
                        .text
                        .push_str(&"  ".repeat(list_depth.saturating_sub(1)));
                    builder.text.push_str("- ");
                }
                Event::End(TagEnd::Paragraph) if list_depth == 0 => builder.block_break(),
                Event::Start(Tag::CodeBlock(_)) | Event::End(TagEnd::CodeBlock) => {
                    builder.block_break()
                }
                Event::End(TagEnd::TableCell) => builder.text.push_str(" | "),
                Event::End(TagEnd::TableRow) | Event::End(TagEnd::TableHead) => {
                    builder.text.push('\n')
                }
                // Raw HTML, images' destinations, footnote markers and rules carry no prose.
                _ => {}
            }
        }
        builder.flush();
        if builder.sections.is_empty() {
            return Err(IngestError::NoText);
        }
        Ok(ParsedDocument {
            sections: builder.sections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(md: &str) -> Vec<(Vec<String>, String)> {
        MarkdownParser
            .parse(md.as_bytes())
            .unwrap()
            .sections
            .into_iter()
            .map(|s| (s.heading_path, s.text))
            .collect()
    }

    fn path(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn headings_become_paths() {
        let sections = parse(
            "Intro text.\n\n# Setup\n\nPlug it in.\n\n## Network\n\nUse **Wi-Fi** or `eth0`.\n\n\
             ## Power\n\nHold reset.\n\n# Troubleshooting\n\nCheck E42.\n",
        );
        assert_eq!(
            sections,
            vec![
                (path(&[]), "Intro text.".to_owned()),
                (path(&["Setup"]), "Plug it in.".to_owned()),
                (path(&["Setup", "Network"]), "Use Wi-Fi or eth0.".to_owned()),
                (path(&["Setup", "Power"]), "Hold reset.".to_owned()),
                (path(&["Troubleshooting"]), "Check E42.".to_owned()),
            ]
        );
    }

    #[test]
    fn lists_and_code_keep_their_text() {
        let sections = parse(
            "# Steps\n\nBefore:\n\n- one\n- two\n  - nested\n\n```\nfw --flash\n```\n\nAfter.",
        );
        assert_eq!(sections.len(), 1);
        let text = &sections[0].1;
        assert!(text.contains("- one\n- two\n  - nested"), "{text:?}");
        assert!(text.contains("fw --flash"), "{text:?}");
        assert!(
            text.starts_with("Before:") && text.ends_with("After."),
            "{text:?}"
        );
    }

    #[test]
    fn empty_markdown_has_no_text() {
        assert_eq!(
            MarkdownParser.parse(b"# \n\n<!-- comment -->\n"),
            Err(IngestError::NoText)
        );
    }
}
