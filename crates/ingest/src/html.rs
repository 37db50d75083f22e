//! HTML: text under its headings, read by a WHATWG-conformant parser (html5ever, through scraper), so malformed
//! markup, entities and implied tags come out as a browser shows them. Paragraphs and other blocks are
//! separated by a blank line; list items, table rows (cells joined by ` | `) and definition-list terms keep
//! a line each; preformatted text (code) keeps its lines and spaces. Scripts, styles, forms and page chrome
//! (navigation, headers, footers, sidebars: by element, ARIA role or the class names documentation generators
//! give them) are dropped.

use crate::{IngestError, ParsedDocument, Parser, Section};
use scraper::node::Element;
use scraper::Node;

#[derive(Clone, Copy, Debug, Default)]
pub struct HtmlParser;

/// Elements whose whole content is dropped.
const SKIPPED: &[&str] = &[
    "script", "style", "nav", "header", "footer", "aside", "form", "noscript", "template", "svg",
    "head", "button", "select", "iframe", "object", "canvas", "math",
];
/// ARIA roles of page chrome.
const SKIPPED_ROLES: &[&str] = &["navigation", "banner", "contentinfo", "search", "menubar"];
/// Class names that documentation generators give page chrome: DocBook (`navheader`, `navfooter`), Sphinx
/// (`sphinxsidebar`, `related`, `headerlink`, `footer`), and the usual breadcrumb and skip-link classes.
const SKIPPED_CLASSES: &[&str] = &[
    "navheader",
    "navfooter",
    "footer",
    "sphinxsidebar",
    "related",
    "headerlink",
    "breadcrumb",
    "breadcrumbs",
    "skip-link",
    "visually-hidden",
    "sr-only",
];
/// Elements that begin and end a block of text (a blank line before and after).
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "table",
    "blockquote",
    "ul",
    "ol",
    "dl",
    "figure",
    "figcaption",
    "hr",
    "address",
    "details",
    "summary",
    "fieldset",
    "center",
];
/// Elements that take a line of their own inside a block.
const LINES: &[&str] = &["li", "tr", "dt", "dd", "caption", "br"];

fn heading_level(name: &str) -> Option<usize> {
    match name {
        "h1" => Some(0),
        "h2" => Some(1),
        "h3" => Some(2),
        "h4" => Some(3),
        "h5" => Some(4),
        "h6" => Some(5),
        _ => None,
    }
}

fn is_chrome(element: &Element) -> bool {
    SKIPPED.contains(&element.name())
        || element.attr("hidden").is_some()
        || element.attr("aria-hidden") == Some("true")
        || element
            .attr("role")
            .is_some_and(|role| SKIPPED_ROLES.contains(&role.trim().to_ascii_lowercase().as_str()))
        || element.classes().any(|c| SKIPPED_CLASSES.contains(&c))
}

/// Collects text into lines, blocks and sections.
#[derive(Default)]
struct Builder {
    sections: Vec<Section>,
    path: Vec<String>,
    /// Finished blocks of the current section.
    blocks: Vec<String>,
    /// Finished lines of the current block.
    lines: Vec<String>,
    /// The line being written (whitespace already collapsed).
    line: String,
    /// A heading being read: its level and text.
    heading: Option<(usize, String)>,
    /// Inside `<pre>`: text is taken as it is.
    preformatted: usize,
    /// Cells written on the current table row.
    cells: usize,
}

impl Builder {
    /// Inline text, with runs of whitespace collapsed to one space as a browser renders them.
    fn text(&mut self, raw: &str) {
        if self.preformatted > 0 && self.heading.is_none() {
            self.line.push_str(raw);
            return;
        }
        let target = match &mut self.heading {
            Some((_, title)) => title,
            None => &mut self.line,
        };
        let mut pending_space = raw.starts_with(char::is_whitespace);
        for word in raw.split_whitespace() {
            if pending_space && !target.is_empty() && !target.ends_with(' ') {
                target.push(' ');
            }
            target.push_str(word);
            pending_space = true;
        }
        if raw.ends_with(char::is_whitespace) && !target.is_empty() && !target.ends_with(' ') {
            target.push(' ');
        }
    }

    fn end_line(&mut self) {
        if self.preformatted > 0 {
            return;
        }
        let line = self.line.trim();
        if !line.is_empty() && line != "-" {
            self.lines.push(line.to_owned());
        }
        self.line.clear();
    }

    fn end_block(&mut self) {
        if self.preformatted > 0 {
            return;
        }
        self.end_line();
        if !self.lines.is_empty() {
            self.blocks.push(self.lines.join("\n"));
            self.lines.clear();
        }
    }

    fn end_section(&mut self) {
        self.end_block();
        if !self.blocks.is_empty() {
            self.sections.push(Section {
                heading_path: self.path.clone(),
                text: self.blocks.join("\n\n"),
            });
            self.blocks.clear();
        }
    }

    fn open(&mut self, element: &Element) {
        let name = element.name();
        if let Some(level) = heading_level(name) {
            self.end_section();
            self.heading = Some((level, String::new()));
            return;
        }
        match name {
            "pre" => {
                self.end_block();
                self.preformatted += 1;
            }
            "li" => {
                self.end_line();
                self.line.push_str("- ");
            }
            "tr" => {
                self.end_line();
                self.cells = 0;
            }
            "td" | "th" => {
                if self.cells > 0 {
                    self.line.push_str(" | ");
                }
                self.cells += 1;
            }
            "img" => {
                // A picture's words are its alt text, as a browser shows when it cannot load it.
                if let Some(alt) = element.attr("alt").filter(|a| !a.trim().is_empty()) {
                    self.text(&format!(" {} ", alt.trim()));
                }
            }
            _ if BLOCKS.contains(&name) => self.end_block(),
            _ if LINES.contains(&name) => self.end_line(),
            _ => {}
        }
    }

    fn close(&mut self, element: &Element) {
        let name = element.name();
        if heading_level(name).is_some() {
            if let Some((level, title)) = self.heading.take() {
                self.path.truncate(level);
                let title = title.trim();
                if !title.is_empty() {
                    self.path.push(title.to_owned());
                }
            }
            return;
        }
        match name {
            "pre" => {
                self.preformatted = self.preformatted.saturating_sub(1);
                if self.preformatted == 0 {
                    // Code keeps its lines and indentation; only blank lines around it go.
                    let code = std::mem::take(&mut self.line);
                    let code = code.trim_matches('\n').trim_end();
                    if !code.trim().is_empty() {
                        self.blocks.push(code.to_owned());
                    }
                }
            }
            _ if BLOCKS.contains(&name) => self.end_block(),
            _ if LINES.contains(&name) => self.end_line(),
            _ => {}
        }
    }
}

impl Parser for HtmlParser {
    fn parse(&self, bytes: &[u8]) -> Result<ParsedDocument, IngestError> {
        let source = std::str::from_utf8(bytes).map_err(|e| IngestError::InvalidUtf8 {
            offset: e.valid_up_to(),
        })?;
        let document = scraper::Html::parse_document(source);
        let mut builder = Builder::default();
        // The tree is walked as open/close events, never by recursion: hostile nesting cannot exhaust the
        // stack.
        let mut skipping: Option<ego_tree::NodeId> = None;
        for edge in document.tree.root().traverse() {
            match edge {
                ego_tree::iter::Edge::Open(node) => {
                    if skipping.is_some() {
                        continue;
                    }
                    match node.value() {
                        Node::Text(text) => builder.text(&text[..]),
                        Node::Element(element) if is_chrome(element) => skipping = Some(node.id()),
                        Node::Element(element) => builder.open(element),
                        _ => {}
                    }
                }
                ego_tree::iter::Edge::Close(node) => {
                    if let Some(skipped) = skipping {
                        if skipped == node.id() {
                            skipping = None;
                        }
                        continue;
                    }
                    if let Node::Element(element) = node.value() {
                        builder.close(element);
                    }
                }
            }
        }
        builder.preformatted = 0;
        builder.end_section();
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
    fn an_ampersand_before_a_multibyte_character_is_text() {
        // Found by the `documents` fuzz target in the hand-written scanner this parser replaced.
        let parsed = HtmlParser
            .parse("<p>&&&&&&&&&&&\u{3f6} &amp; &#x3f6;</p>".as_bytes())
            .unwrap();
        assert_eq!(parsed.sections[0].text, "&&&&&&&&&&&\u{3f6} & \u{3f6}");
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

    #[test]
    fn tables_definition_lists_and_code_come_out_as_a_browser_shows_them() {
        let html = "<h1>Options</h1>\
            <table><tr><th>Option</th><th>Default</th></tr>\
            <tr><td><code>work_mem</code></td><td>4MB</td></tr></table>\
            <dl><dt>ANSI</dt><dd>American National Standards Institute</dd>\
            <dt>API</dt><dd>Application Programming Interface</dd></dl>\
            <pre class=\"programlisting\">SELECT *\n  FROM t\n WHERE a &lt; 1;\n</pre>\
            <p>After   the\n code.</p>";
        assert_eq!(
            parse(html),
            vec![(
                vec!["Options".to_owned()],
                "Option | Default\nwork_mem | 4MB\n\n\
                 ANSI\nAmerican National Standards Institute\nAPI\nApplication Programming Interface\n\n\
                 SELECT *\n  FROM t\n WHERE a < 1;\n\n\
                 After the code."
                    .to_owned()
            )]
        );
    }

    #[test]
    fn malformed_markup_is_read_as_a_browser_would() {
        // Unclosed paragraphs and list items, a stray end tag, an unknown entity, an unquoted attribute.
        let html =
            "<h2>Setup</h2><p>First step<p>Second &bogus; step</span><ul><li>one<li>two</ul>\
                    <div class=navheader>Prev | Next</div><p>Last";
        assert_eq!(
            parse(html),
            vec![(
                vec!["Setup".to_owned()],
                "First step\n\nSecond &bogus; step\n\n- one\n- two\n\nLast".to_owned()
            )]
        );
    }

    #[test]
    fn deep_nesting_does_not_exhaust_the_stack() {
        let depth = 20_000;
        let html = format!("{}deep{}", "<div>".repeat(depth), "</div>".repeat(depth));
        assert_eq!(parse(&html), vec![(vec![], "deep".to_owned())]);
    }
}
