//! PII pseudonymization: before any text leaves for a provider, e-mail addresses, phone numbers, card numbers
//! (Luhn-checked), IBANs (mod-97-checked), IP addresses and configured custom patterns are replaced with
//! stable placeholders (`<EMAIL_1>`); the answer is restored locally, also when a placeholder arrives split
//! across two stream chunks.
//!
//! One [`Pseudonymizer`] lives for one request, so the same address gets the same placeholder in the query
//! and in every source, and placeholders mean nothing outside the request.

use regex::Regex;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use crate::{literal_regex, GenerationError};

/// A kind of personal data the pseudonymizer recognises.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PiiCategory {
    Email,
    Phone,
    Card,
    Iban,
    Ip,
}

impl PiiCategory {
    pub const ALL: [PiiCategory; 5] = [
        PiiCategory::Email,
        PiiCategory::Phone,
        PiiCategory::Card,
        PiiCategory::Iban,
        PiiCategory::Ip,
    ];

    fn label(self) -> &'static str {
        match self {
            PiiCategory::Email => "EMAIL",
            PiiCategory::Phone => "PHONE",
            PiiCategory::Card => "CARD",
            PiiCategory::Iban => "IBAN",
            PiiCategory::Ip => "IP",
        }
    }
}

/// What to recognise: built-in categories plus named custom patterns (`employee_id = "EMP-\\d{6}"`).
#[derive(Clone, Debug)]
pub struct PiiRules {
    categories: BTreeSet<PiiCategory>,
    custom: Vec<(String, Regex)>,
}

impl Default for PiiRules {
    fn default() -> Self {
        PiiRules {
            categories: PiiCategory::ALL.into_iter().collect(),
            custom: Vec::new(),
        }
    }
}

impl PiiRules {
    /// `custom` maps a name (becomes the placeholder label, upper-cased) to a regular expression.
    pub fn new(
        categories: impl IntoIterator<Item = PiiCategory>,
        custom: &[(String, String)],
    ) -> Result<PiiRules, GenerationError> {
        let custom = custom
            .iter()
            .map(|(name, pattern)| {
                let label: String = name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_uppercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                if label.is_empty() {
                    return Err(GenerationError::Config(
                        "a custom PII pattern needs a name".into(),
                    ));
                }
                let regex = Regex::new(pattern).map_err(|e| {
                    GenerationError::Config(format!("custom PII pattern `{name}`: {e}"))
                })?;
                Ok((label, regex))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PiiRules {
            categories: categories.into_iter().collect(),
            custom,
        })
    }

    /// Recognises nothing (a tenant whose policy turns pseudonymization off).
    pub fn none() -> PiiRules {
        PiiRules {
            categories: BTreeSet::new(),
            custom: Vec::new(),
        }
    }

    /// Spans `(start, end, label)` of personal data in `text`, non-overlapping, in text order. Custom
    /// patterns win over built-ins, and validated kinds (card, IBAN, IP, e-mail) over phone numbers, whose
    /// pattern is the loosest.
    fn find(&self, text: &str) -> Vec<(usize, usize, String)> {
        let mut claimed: Vec<(usize, usize, String)> = Vec::new();
        let mut claim = |start: usize, end: usize, label: &str| {
            if claimed.iter().all(|&(s, e, _)| end <= s || start >= e) {
                claimed.push((start, end, label.to_owned()));
            }
        };
        for (label, regex) in &self.custom {
            for m in regex.find_iter(text) {
                if !m.is_empty() {
                    claim(m.start(), m.end(), label);
                }
            }
        }
        let order = [
            PiiCategory::Email,
            PiiCategory::Iban,
            PiiCategory::Card,
            PiiCategory::Ip,
            PiiCategory::Phone,
        ];
        for category in order {
            if !self.categories.contains(&category) {
                continue;
            }
            for (start, end) in find_category(category, text) {
                claim(start, end, category.label());
            }
        }
        claimed.sort_by_key(|&(start, _, _)| start);
        claimed
    }
}

struct Patterns {
    email: Regex,
    iban: Regex,
    card: Regex,
    ipv4: Regex,
    ipv6: Regex,
    phone: Regex,
}

fn patterns() -> &'static Patterns {
    static PATTERNS: OnceLock<Patterns> = OnceLock::new();
    PATTERNS.get_or_init(|| Patterns {
        email: literal_regex(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
        iban: literal_regex(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b"),
        card: literal_regex(r"\b[0-9](?:[ \-]?[0-9]){12,18}\b"),
        ipv4: literal_regex(r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b"),
        ipv6: literal_regex(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"),
        phone: literal_regex(r"(?:\+[0-9]{1,3}[ .\-]?)?(?:\([0-9]{1,5}\)[ .\-]?)?[0-9]{2,5}(?:[ .\-][0-9]{2,5}){1,5}"),
    })
}

fn find_category(category: PiiCategory, text: &str) -> Vec<(usize, usize)> {
    // Every built-in pattern needs one character most chat text lacks (an e-mail address an `@`, the
    // numeric kinds a digit, an IPv6 address a `:`): a text without it is not scanned for that kind.
    let needed = match category {
        PiiCategory::Email => text.contains('@'),
        PiiCategory::Iban | PiiCategory::Card | PiiCategory::Phone => {
            text.bytes().any(|b| b.is_ascii_digit())
        }
        PiiCategory::Ip => text.contains(':') || text.bytes().any(|b| b.is_ascii_digit()),
    };
    if !needed {
        return Vec::new();
    }
    let p = patterns();
    let spans = |regex: &Regex, valid: &dyn Fn(&str) -> bool| -> Vec<(usize, usize)> {
        regex
            .find_iter(text)
            .filter(|m| valid(m.as_str()))
            .map(|m| (m.start(), m.end()))
            .collect()
    };
    match category {
        PiiCategory::Email => spans(&p.email, &|_| true),
        PiiCategory::Iban => spans(&p.iban, &iban_is_valid),
        PiiCategory::Card => spans(&p.card, &|s| {
            let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
            (13..=19).contains(&digits.len()) && luhn_is_valid(&digits)
        }),
        PiiCategory::Ip => {
            let mut found = spans(&p.ipv4, &|s| s.parse::<std::net::Ipv4Addr>().is_ok());
            found.extend(spans(&p.ipv6, &|s| {
                // `d::` and `::` parse too; real addresses in text have digits and a few groups.
                s.matches(':').count() >= 2
                    && s.chars().filter(char::is_ascii_hexdigit).count() >= 4
                    && s.chars().any(|c| c.is_ascii_digit())
                    && s.parse::<std::net::Ipv6Addr>().is_ok()
            }));
            found
        }
        PiiCategory::Phone => spans(&p.phone, &phone_is_plausible),
    }
}

/// Luhn's check over card digits.
pub fn luhn_is_valid(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// ISO 13616: move the first four characters to the end, letters to numbers, remainder mod 97 must be 1.
pub fn iban_is_valid(candidate: &str) -> bool {
    let compact: Vec<char> = candidate.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact[4..].iter().chain(compact[..4].iter());
    let mut remainder: u32 = 0;
    for c in rearranged {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        // Letters are two digits (A = 10), digits one.
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// A phone number has 7 to 15 digits (E.164) and, to leave dates, versions and part numbers alone, either a
/// leading `+`, an area code in parentheses, or at least 9 digits in separated groups.
fn phone_is_plausible(candidate: &str) -> bool {
    let digits = candidate.chars().filter(char::is_ascii_digit).count();
    if !(7..=15).contains(&digits) {
        return false;
    }
    candidate.starts_with('+') || candidate.contains('(') || digits >= 9
}

/// Replaces personal data with placeholders and restores them, for one request.
pub struct Pseudonymizer {
    rules: Arc<PiiRules>,
    placeholder_of: HashMap<String, String>,
    original_of: HashMap<String, String>,
    counters: HashMap<String, usize>,
}

impl Pseudonymizer {
    pub fn new(rules: Arc<PiiRules>) -> Pseudonymizer {
        Pseudonymizer {
            rules,
            placeholder_of: HashMap::new(),
            original_of: HashMap::new(),
            counters: HashMap::new(),
        }
    }

    /// `text` with every recognised item replaced; the same item always gets the same placeholder.
    pub fn pseudonymize(&mut self, text: &str) -> String {
        let spans = self.rules.find(text);
        if spans.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end, label) in spans {
            out.push_str(&text[at..start]);
            let original = &text[start..end];
            let placeholder = match self.placeholder_of.get(original) {
                Some(p) => p.clone(),
                None => {
                    let n = self.counters.entry(label.clone()).or_insert(0);
                    *n += 1;
                    let p = format!("<{label}_{n}>");
                    self.placeholder_of.insert(original.to_owned(), p.clone());
                    self.original_of.insert(p.clone(), original.to_owned());
                    p
                }
            };
            out.push_str(&placeholder);
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// How many distinct items were replaced.
    pub fn replaced(&self) -> usize {
        self.original_of.len()
    }

    /// `text` with this request's placeholders put back; unknown placeholders stay as they are.
    pub fn restore(&self, text: &str) -> String {
        if self.original_of.is_empty() || !text.contains('<') {
            return text.to_owned();
        }
        placeholder_pattern()
            .replace_all(text, |c: &regex::Captures<'_>| {
                let whole = &c[0];
                self.original_of
                    .get(whole)
                    .cloned()
                    .unwrap_or_else(|| whole.to_owned())
            })
            .into_owned()
    }

    /// The originals, for checks that they never reached a provider.
    pub fn originals(&self) -> impl Iterator<Item = &str> {
        self.placeholder_of.keys().map(String::as_str)
    }
}

fn placeholder_pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| literal_regex(r"<[A-Z][A-Z0-9_]*_[0-9]+>"))
}

/// Longest placeholder we hold back for: `<` + label + `_` + number + `>`.
const MAX_PLACEHOLDER_LEN: usize = 48;

/// Holds back the end of a stream chunk that may be the start of a placeholder, so `<EMA` + `IL_1>` is
/// restored as one.
#[derive(Default)]
pub struct StreamRestorer {
    pending: String,
}

impl StreamRestorer {
    /// Text that can be shown now (restored), keeping a possible partial placeholder for the next chunk.
    pub fn push(&mut self, pseudonymizer: &Pseudonymizer, delta: &str) -> String {
        self.pending.push_str(delta);
        let keep_from = partial_placeholder_start(&self.pending);
        let ready: String = self.pending[..keep_from].to_owned();
        self.pending.drain(..keep_from);
        pseudonymizer.restore(&ready)
    }

    /// Whatever is left at the end of the stream.
    pub fn finish(&mut self, pseudonymizer: &Pseudonymizer) -> String {
        let rest = std::mem::take(&mut self.pending);
        pseudonymizer.restore(&rest)
    }
}

/// Byte offset where a trailing, unfinished `<LABEL_n` begins, or `text.len()` if there is none.
fn partial_placeholder_start(text: &str) -> usize {
    let Some(open) = text.rfind('<') else {
        return text.len();
    };
    let tail = &text[open + 1..];
    if tail.len() >= MAX_PLACEHOLDER_LEN || tail.contains('>') {
        return text.len();
    }
    let could_be_placeholder = tail
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if could_be_placeholder {
        open
    } else {
        text.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo() -> Pseudonymizer {
        Pseudonymizer::new(Arc::new(PiiRules::default()))
    }

    #[test]
    fn replaces_each_category_with_stable_placeholders() {
        let mut p = pseudo();
        let text = "Mail jane.doe@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111, \
                    IBAN GB82 WEST 1234 5698 7654 32, from 192.168.10.4 and 2001:db8::8a2e:370:7334. \
                    Again: jane.doe@example.com.";
        let out = p.pseudonymize(text);
        assert_eq!(
            out,
            "Mail <EMAIL_1> or call <PHONE_1>; card <CARD_1>, IBAN <IBAN_1>, from <IP_1> and <IP_2>. \
             Again: <EMAIL_1>."
        );
        assert_eq!(p.restore(&out), text);
        assert_eq!(p.replaced(), 6);
    }

    #[test]
    fn leaves_look_alikes_alone() {
        let mut p = pseudo();
        // Fails Luhn, fails mod 97, not an address, a date, a version, a part number and an error code.
        let text = "card 4111 1111 1111 1112, IBAN GB82WEST12345698765433, 999.1.1.1, \
                    on 2024-05-17, version 1.2.3, part AB-4471-X, error E-1042, 10 20 30";
        assert_eq!(p.pseudonymize(text), text);
    }

    #[test]
    fn custom_patterns_get_their_own_label_and_win() {
        let rules = PiiRules::new(
            [PiiCategory::Email],
            &[("employee id".into(), r"EMP-\d{6}".into())],
        )
        .expect("rules");
        let mut p = Pseudonymizer::new(Arc::new(rules));
        assert_eq!(
            p.pseudonymize("EMP-123456 wrote to a@b.io"),
            "<EMPLOYEE_ID_1> wrote to <EMAIL_1>"
        );
        assert!(PiiRules::new([], &[("x".into(), "(".into())]).is_err());
    }

    #[test]
    fn stream_restorer_joins_placeholders_split_across_chunks() {
        let mut p = pseudo();
        p.pseudonymize("write to ops@example.org and call +1 (555) 010-9999");
        let mut r = StreamRestorer::default();
        let mut out = String::new();
        for piece in [
            "Write to <EM",
            "AIL",
            "_1",
            "> or <PHONE_",
            "1>. a < b",
            " <x",
        ] {
            out.push_str(&r.push(&p, piece));
        }
        out.push_str(&r.finish(&p));
        assert_eq!(
            out,
            "Write to ops@example.org or +1 (555) 010-9999. a < b <x"
        );
    }

    #[test]
    fn unknown_placeholders_pass_through() {
        let mut p = pseudo();
        p.pseudonymize("a@b.io");
        assert_eq!(p.restore("<EMAIL_1> <EMAIL_7>"), "a@b.io <EMAIL_7>");
    }
}
