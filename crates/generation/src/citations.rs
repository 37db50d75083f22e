//! `[n]` citation markers: kept when `n` names a source that was sent, dropped otherwise (a model that
//! invents `[7]` with five sources must not produce a citation to nothing). Works on whole answers and,
//! through [`MarkerFilter`], on streamed deltas whose markers may be split across chunks.

use crate::literal_regex;
use regex::Regex;
use std::collections::BTreeSet;
use std::sync::OnceLock;

fn marker_pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    // [1], [2, 3], [1-2] are all common model outputs.
    PATTERN.get_or_init(|| literal_regex(r"(\s*)\[\s*(\d{1,3}(?:\s*[,\-–]\s*\d{1,3})*)\s*\]"))
}

/// The answer with invalid markers removed, and the source numbers it cites (1-based, ascending).
pub fn filter_markers(text: &str, sources: usize) -> (String, BTreeSet<usize>) {
    let mut cited = BTreeSet::new();
    let filtered = marker_pattern().replace_all(text, |c: &regex::Captures<'_>| {
        let kept = expand(&c[2])
            .into_iter()
            .filter(|&n| n >= 1 && n <= sources)
            .collect::<Vec<_>>();
        cited.extend(kept.iter().copied());
        if kept.is_empty() {
            // Dropping the space before a dropped marker too keeps `word [9].` from becoming `word .`.
            return String::new();
        }
        let markers: String = kept.iter().map(|n| format!("[{n}]")).collect();
        format!("{}{markers}", &c[1])
    });
    (filtered.into_owned(), cited)
}

/// `1, 3` -> [1, 3]; `1-3` -> [1, 2, 3] (bounded, so `[1-999]` cannot blow up).
fn expand(list: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in list.split(',') {
        let bounds: Vec<usize> = part
            .split(['-', '–'])
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        match bounds.as_slice() {
            [n] => out.push(*n),
            [a, b] if a <= b && b - a < 20 => out.extend(*a..=*b),
            _ => {}
        }
    }
    out
}

/// Longest marker we hold back for.
const MAX_MARKER_LEN: usize = 24;

/// Streaming version of [`filter_markers`]: holds back a trailing `[...` until it closes or cannot be a
/// marker.
pub struct MarkerFilter {
    sources: usize,
    pending: String,
    cited: BTreeSet<usize>,
}

impl MarkerFilter {
    pub fn new(sources: usize) -> MarkerFilter {
        MarkerFilter {
            sources,
            pending: String::new(),
            cited: BTreeSet::new(),
        }
    }

    pub fn push(&mut self, delta: &str) -> String {
        self.pending.push_str(delta);
        let keep_from = partial_marker_start(&self.pending);
        let ready: String = self.pending.drain(..keep_from).collect();
        let (filtered, cited) = filter_markers(&ready, self.sources);
        self.cited.extend(cited);
        filtered
    }

    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        let (filtered, cited) = filter_markers(&rest, self.sources);
        self.cited.extend(cited);
        filtered
    }

    pub fn cited(&self) -> &BTreeSet<usize> {
        &self.cited
    }
}

/// Where the held-back tail starts: an unfinished marker and the whitespace before it (which goes if the
/// marker goes), or just trailing whitespace (the next chunk may start with a marker).
fn partial_marker_start(text: &str) -> usize {
    let marker = partial_marker(text);
    text[..marker].trim_end().len()
}

fn partial_marker(text: &str) -> usize {
    let Some(open) = text.rfind('[') else {
        return text.len();
    };
    let tail = &text[open + 1..];
    if tail.contains(']') || tail.len() >= MAX_MARKER_LEN {
        return text.len();
    }
    let could_be_marker = tail
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ',' | '-' | '–' | ' '));
    if could_be_marker {
        open
    } else {
        text.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_markers_and_drops_invented_ones() {
        let (text, cited) = filter_markers(
            "Reset it [1]. Then wait [2, 9]. Or not [7]. See [1-3] and [0] more.",
            3,
        );
        assert_eq!(
            text,
            "Reset it [1]. Then wait [2]. Or not. See [1][2][3] and more."
        );
        assert_eq!(cited.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn text_without_markers_is_untouched() {
        let (text, cited) = filter_markers("Arrays like a[i] stay.", 2);
        assert_eq!(text, "Arrays like a[i] stay.");
        assert!(cited.is_empty());
    }

    #[test]
    fn streamed_markers_split_across_chunks() {
        let mut f = MarkerFilter::new(2);
        let mut out = String::new();
        for piece in [
            "Hold it [",
            "1",
            "]. Nope [",
            "5]. Both [1,",
            " 2]. x[i",
            "] end [",
        ] {
            out.push_str(&f.push(piece));
        }
        out.push_str(&f.finish());
        assert_eq!(out, "Hold it [1]. Nope. Both [1][2]. x[i] end [");
        assert_eq!(f.cited().iter().copied().collect::<Vec<_>>(), vec![1, 2]);
    }
}
