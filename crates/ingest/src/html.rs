//! HTML: text under headings, with lists kept as lines; scripts, styles, navigation, headers, footers,
//! forms and asides dropped. A small tolerant tag scanner, enough for exported manuals and help pages.

use crate::{IngestError, ParsedDocument, Parser, Section};

#[derive(Clone, Copy, Debug, Default)]
pub struct HtmlParser;

/// Elements whose whole content is dropped.
const SKIPPED: &[&str] = &[
    "script", "style", "nav", "header", "footer", "aside", "form", "noscript", "template", "svg",
    "head", "button", "select", "iframe",
];
/// Elements that end a block of text.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "table",
    "tr",
    "blockquote",
    "pre",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "figure",
    "figcaption",
    "hr",
    "br",
];

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        // Bytes, not a string slice: the 12th byte can fall inside a multi-byte character (found by the
        // `documents` fuzz target); `;` is ASCII, so where it is found is a character boundary.
        let Some(end) = tail.bytes().take(12).position(|b| b == b';') else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let entity = &tail[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some(' '),
            _ if entity.starts_with("#x") || entity.starts_with("#X") => {
                u32::from_str_radix(&entity[2..], 16)
                    .ok()
                    .and_then(char::from_u32)
            }
            _ if entity.starts_with('#') => entity[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

struct Builder {
    sections: Vec<Section>,
    path: Vec<String>,
    text: String,
}

impl Builder {
    fn flush(&mut self) {
        let text = self
            .text
            .split("\n\n")
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n");
        // List items were written as "\n- item" inside a block; keep them on their own lines.
        let text = text.replace(" - ", "\n- ");
        if !text.trim().is_empty() {
            self.sections.push(Section {
                heading_path: self.path.clone(),
                text: text.trim().to_owned(),
            });
        }
        self.text.clear();
    }

    fn block_break(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with("\n\n") {
            self.text.push_str("\n\n");
        }
    }
}

impl Parser for HtmlParser {
    fn parse(&self, bytes: &[u8]) -> Result<ParsedDocument, IngestError> {
        let source = std::str::from_utf8(bytes).map_err(|e| IngestError::InvalidUtf8 {
            offset: e.valid_up_to(),
        })?;
        let mut builder = Builder {
            sections: Vec::new(),
            path: Vec::new(),
            text: String::new(),
        };
        let mut skipping: Option<String> = None;
        let mut heading: Option<(usize, String)> = None;
        let mut rest = source;
        while !rest.is_empty() {
            let Some(open) = rest.find('<') else {
                push_text(&mut builder, &mut heading, skipping.is_some(), rest);
                break;
            };
            push_text(
                &mut builder,
                &mut heading,
                skipping.is_some(),
                &rest[..open],
            );
            rest = &rest[open..];
            if let Some(after) = rest.strip_prefix("<!--") {
                rest = after.find("-->").map_or("", |end| &after[end + 3..]);
                continue;
            }
            let Some(close) = rest.find('>') else {
                break;
            };
            let tag = &rest[1..close];
            rest = &rest[close + 1..];
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            if let Some(skipped) = &skipping {
                if closing && *skipped == name {
                    skipping = None;
                }
                continue;
            }
            if !closing && SKIPPED.contains(&name.as_str()) && !tag.ends_with('/') {
                skipping = Some(name);
                continue;
            }
            let level = match name.as_str() {
                "h1" => Some(0),
                "h2" => Some(1),
                "h3" => Some(2),
                "h4" => Some(3),
                "h5" => Some(4),
                "h6" => Some(5),
                _ => None,
            };
            match (level, closing) {
                (Some(level), false) => {
                    builder.flush();
                    heading = Some((level, String::new()));
                }
                (Some(_), true) => {
                    if let Some((level, title)) = heading.take() {
                        builder.path.truncate(level);
                        let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
                        if !title.is_empty() {
                            builder.path.push(title);
                        }
                    }
                }
                (None, false) if name == "li" => builder.text.push_str(" - "),
                (None, _) if BLOCKS.contains(&name.as_str()) => builder.block_break(),
                (None, true) if name == "td" || name == "th" => builder.text.push_str(" | "),
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

fn push_text(
    builder: &mut Builder,
    heading: &mut Option<(usize, String)>,
    skipping: bool,
    raw: &str,
) {
    if skipping || raw.is_empty() {
        return;
    }
    let text = decode_entities(raw);
    match heading {
        Some((_, title)) => title.push_str(&text),
        None => builder.text.push_str(&text),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ampersand_before_a_multibyte_character_is_text() {
        // Found by the `documents` fuzz target: this panicked (a slice inside `϶`).
        let parsed = HtmlParser
            .parse("<p>&&&&&&&&&&&\u{3f6} &amp; &#x3f6;</p>".as_bytes())
            .unwrap();
        assert_eq!(parsed.sections[0].text, "&&&&&&&&&&&\u{3f6} & \u{3f6}");
    }

    use super::*;

    fn parse(html: &str) -> Vec<(Vec<String>, String)> {
        HtmlParser
            .parse(html.as_bytes())
            .unwrap()
            .sections
            .into_iter()
            .map(|s| (s.heading_path, s.text))
            .collect()
    }

    #[test]
    fn keeps_headings_and_lists_and_drops_chrome() {
        let html = r#"<!DOCTYPE html><html><head><title>X</title><style>p{color:red}</style></head>
            <body><nav><a href="/">Home</a> | <a href="/docs">Docs</a></nav>
            <h1>Quokka &amp; Co manual</h1><p>Intro&nbsp;text.</p>
            <script>var apiKey = "do not index me";</script>
            <h2>Reset</h2><p>Hold <b>WPS</b> for 10&#x73;.</p>
            <ul><li>Unplug</li><li>Wait 30 s</li></ul>
            <!-- <p>commented out</p> -->
            <footer>Copyright</footer></body></html>"#;
        let sections = parse(html);
        assert_eq!(
            sections,
            vec![
                (
                    vec!["Quokka & Co manual".to_owned()],
                    "Intro text.".to_owned()
                ),
                (
                    vec!["Quokka & Co manual".to_owned(), "Reset".to_owned()],
                    "Hold WPS for 10s.\n\n- Unplug\n- Wait 30 s".to_owned()
                ),
            ]
        );
        let all: String = sections.iter().map(|(_, t)| t.clone()).collect();
        for dropped in [
            "do not index me",
            "Home",
            "Copyright",
            "commented out",
            "color:red",
        ] {
            assert!(!all.contains(dropped), "{dropped} leaked");
        }
    }

    #[test]
    fn html_without_text_is_no_text() {
        assert_eq!(
            HtmlParser.parse(b"<html><script>x()</script><nav>menu</nav></html>"),
            Err(IngestError::NoText)
        );
    }
}
