//! The texts ingest embeds for a folder of HTML, Markdown or text files: each file parsed and chunked exactly as
//! the ingest workers do (default chunk sizes, the model's tokenizer), each chunk as its embedding text (heading
//! path + text), one JSON object `{"document", "text"}` per line (the document by its path under the folder).
//! `benches/ingest/run.sh` hands the file to `embed --texts` and to `benches/embedding/reference.py file`, so
//! ragvault's engines and sentence-transformers embed the same texts; `benches/ingest/compare_parsers.py`
//! compares two such files per document (what one parser kept that the other lost).
//!
//! `cargo run --release -p ragvault-benches --bin chunk_texts -- <folder> <out.jsonl>`
#![allow(clippy::expect_used, clippy::print_stdout)]

use ragvault_ingest::chunk::{chunk_document, ChunkingConfig};
use ragvault_ingest::indexing::embedding_text;
use ragvault_ingest::{HtmlParser, MarkdownParser, Parser, PlainTextParser};
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (folder, out) = match &args[..] {
        [folder, out] => (folder, out),
        _ => panic!("usage: chunk_texts <folder> <out.jsonl>"),
    };
    let tokenizer =
        ragvault_embedding::tokenizer_from_env().expect("tokenizer: run scripts/fetch-model.sh");
    let mut files: Vec<std::path::PathBuf> = walkdir::WalkDir::new(folder)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    files.sort();
    let mut writer = std::io::BufWriter::new(std::fs::File::create(out).expect("output file"));
    let (mut documents, mut chunks) = (0usize, 0usize);
    for path in files {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let parser: &dyn Parser = match extension {
            "html" | "htm" => &HtmlParser,
            "md" | "markdown" => &MarkdownParser,
            "txt" => &PlainTextParser,
            _ => continue,
        };
        let bytes = std::fs::read(&path).expect("read");
        let Ok(parsed) = parser.parse(&bytes) else {
            continue;
        };
        documents += 1;
        let document = path
            .strip_prefix(folder)
            .unwrap_or(&path)
            .display()
            .to_string();
        for chunk in chunk_document(&parsed, &ChunkingConfig::default(), &tokenizer) {
            chunks += 1;
            let text = embedding_text(&chunk.heading_path, &chunk.text);
            let line = serde_json::json!({ "document": document, "text": text });
            writeln!(writer, "{line}").expect("write");
        }
    }
    writer.flush().expect("write");
    println!("{documents} documents, {chunks} chunks -> {out}");
}
