//! Hostile input for every parser: seeded random mutations of real documents (bit flips, truncations, byte
//! insertions, duplicated slices) and pathological nesting. Every parse must return `Ok` or `Err`, never panic
//! or hang. A stand-in for cargo-fuzz, which needs a nightly toolchain this project does not have: the
//! iteration count comes from `RAGVAULT_FUZZ_ITERATIONS` (default 150 per parser), so a long run is
//! `RAGVAULT_FUZZ_ITERATIONS=20000 cargo test --release -p ragvault-ingest --test parser_robustness`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragvault_ingest::{HtmlParser, MarkdownParser, Parser, PdfParser, PlainTextParser};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn iterations() -> usize {
    std::env::var("RAGVAULT_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..rng.gen_range(1..8) {
        if bytes.is_empty() {
            bytes.push(rng.gen());
            continue;
        }
        let at = rng.gen_range(0..bytes.len());
        match rng.gen_range(0..5) {
            0 => bytes[at] ^= 1 << rng.gen_range(0..8),
            1 => bytes.truncate(at),
            2 => bytes.insert(at, rng.gen()),
            3 => {
                let end = (at + rng.gen_range(1..64)).min(bytes.len());
                let slice = bytes[at..end].to_vec();
                let to = rng.gen_range(0..=bytes.len());
                bytes.splice(to..to, slice);
            }
            _ => {
                bytes[at] = *b"<>#*[](){}%/\\\n"
                    .get(rng.gen_range(0..15))
                    .unwrap_or(&b'x')
            }
        }
    }
    bytes
}

fn hammer(name: &str, parser: &dyn Parser, seed: &[u8], salt: u64) {
    let mut rng = StdRng::seed_from_u64(salt);
    for i in 0..iterations() {
        let input = mutate(&mut rng, seed);
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parser.parse(&input)));
        assert!(
            outcome.is_ok(),
            "{name} panicked on mutation {i} (salt {salt})"
        );
    }
}

const MARKDOWN: &str = "# Pump\n\n## Priming\n\nFill the **housing** through the [port](#p).\n\n- one\n  - two\n\n> note\n\n```\ncode\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n";
const HTML: &str = "<!doctype html><html><head><style>p{}</style><script>x()</script></head><body><nav>menu</nav><h1>Pump</h1><p>Fill the <b>housing</b>.</p><ul><li>one<ul><li>two</li></ul></li></ul><table><tr><td>1</td></tr></table><footer>f</footer></body></html>";

#[test]
fn mutated_documents_never_panic_a_parser() {
    hammer(
        "plain",
        &PlainTextParser,
        b"Hold the reset button.\r\nThen wait.\n",
        1,
    );
    hammer("markdown", &MarkdownParser, MARKDOWN.as_bytes(), 2);
    hammer("html", &HtmlParser, HTML.as_bytes(), 3);
    hammer(
        "pdf",
        &PdfParser,
        include_bytes!("../../../tests/fixtures/manual.pdf"),
        4,
    );
}

#[test]
fn pathological_nesting_is_handled() {
    let deep_html = format!("{}text{}", "<div>".repeat(10_000), "</div>".repeat(10_000));
    let parsed = HtmlParser.parse(deep_html.as_bytes()).unwrap();
    assert!(parsed.sections.iter().any(|s| s.text.contains("text")));
    let unclosed = format!("<h1>T</h1>{}deep", "<ul><li>".repeat(10_000));
    assert!(HtmlParser.parse(unclosed.as_bytes()).is_ok());
    let deep_quote = format!("{} text", ">".repeat(10_000));
    assert!(MarkdownParser.parse(deep_quote.as_bytes()).is_ok());
    let deep_list = (0..5_000)
        .map(|i| format!("{}- item\n", "  ".repeat(i)))
        .collect::<String>();
    assert!(MarkdownParser.parse(deep_list.as_bytes()).is_ok());
    // Twenty thousand headings and no body: nothing to ingest, said plainly.
    let many_headings = "# h\n".repeat(20_000);
    assert_eq!(
        MarkdownParser.parse(many_headings.as_bytes()),
        Err(ragvault_ingest::IngestError::NoText)
    );
}

/// Found by the `documents` fuzz target: a page that is its own ancestor in the page tree made the PDF
/// extractor follow its `Parent` chain forever. Refused at once now.
#[test]
fn a_pdf_whose_page_tree_loops_is_refused_not_followed_forever() {
    let bytes = include_bytes!("fixtures/page-tree-loop.pdf");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(PdfParser.parse(bytes)));
    let parsed = receiver
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the parser did not return within 20 s");
    match parsed {
        Err(ragvault_ingest::IngestError::Malformed(why)) => {
            assert!(why.contains("loops"), "{why}")
        }
        other => panic!("expected a malformed PDF, got {:?}", other.map(|_| ())),
    }
}
