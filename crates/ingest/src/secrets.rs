//! Secret scanning before anything is embedded or sent anywhere: provider keys, cloud keys, private key
//! blocks, JWTs and other high-entropy tokens. Findings name the kind and the line, never the value.

use regex::Regex;
use std::sync::OnceLock;

/// What to do with a document that contains a credential (per tenant policy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretPolicy {
    /// Refuse the document (`contains_secret`, naming the line).
    #[default]
    Reject,
    /// Replace each credential with `[REDACTED:<kind>]` and keep the rest.
    Redact,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: &'static str,
    /// 1-based line number in the scanned text.
    pub line: usize,
    /// Byte range in the scanned text (for redaction; never logged).
    range: std::ops::Range<usize>,
}

struct Pattern {
    kind: &'static str,
    regex: Regex,
}

fn patterns() -> &'static [Pattern] {
    static PATTERNS: OnceLock<Vec<Pattern>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let p = |kind, re: &str| Pattern {
            kind,
            // The expressions are constants checked by the tests below; a failure here is a build defect.
            regex: Regex::new(re).unwrap_or_else(|e| panic!("secret pattern {kind}: {e}")),
        };
        vec![
            p(
                "private_key",
                r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|\z)",
            ),
            p("anthropic_key", r"\bsk-ant-[A-Za-z0-9_\-]{20,}"),
            p("openai_key", r"\bsk-(proj-)?[A-Za-z0-9_\-]{20,}"),
            p("aws_access_key", r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
            p(
                "github_token",
                r"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}\b",
            ),
            p("slack_token", r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),
            p("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
            p(
                "jwt",
                r"\beyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",
            ),
            p("ragvault_api_key", r"\brvk_[a-z0-9]{12}_[A-Za-z0-9]{40}\b"),
        ]
    })
}

fn token_regex() -> &'static Regex {
    static TOKEN: OnceLock<Regex> = OnceLock::new();
    TOKEN.get_or_init(|| {
        Regex::new(r"[A-Za-z0-9+/=_\-]{32,}").unwrap_or_else(|e| panic!("token pattern: {e}"))
    })
}

/// Shannon entropy in bits per character.
fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let len = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

/// A long token that looks random (keys, passwords) rather than a word, a path or a hex checksum of a
/// known artefact: mixed character classes and high entropy.
fn is_high_entropy_token(token: &str) -> bool {
    let has_upper = token.bytes().any(|b| b.is_ascii_uppercase());
    let has_lower = token.bytes().any(|b| b.is_ascii_lowercase());
    let has_digit = token.bytes().any(|b| b.is_ascii_digit());
    has_upper && has_lower && has_digit && entropy(token) >= 4.2
}

/// Every credential-looking span in `text`, in order, without overlaps.
pub fn scan(text: &str) -> Vec<Finding> {
    let line_of = |offset: usize| text[..offset].bytes().filter(|&b| b == b'\n').count() + 1;
    let mut findings: Vec<Finding> = Vec::new();
    let overlaps = |findings: &[Finding], r: &std::ops::Range<usize>| {
        findings
            .iter()
            .any(|f| f.range.start < r.end && r.start < f.range.end)
    };
    for pattern in patterns() {
        for m in pattern.regex.find_iter(text) {
            let range = m.range();
            if !overlaps(&findings, &range) {
                findings.push(Finding {
                    kind: pattern.kind,
                    line: line_of(range.start),
                    range,
                });
            }
        }
    }
    for m in token_regex().find_iter(text) {
        let range = m.range();
        if is_high_entropy_token(m.as_str()) && !overlaps(&findings, &range) {
            findings.push(Finding {
                kind: "high_entropy_token",
                line: line_of(range.start),
                range,
            });
        }
    }
    findings.sort_by_key(|f| f.range.start);
    findings
}

/// `text` with every finding replaced by `[REDACTED:<kind>]`.
pub fn redact(text: &str, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for f in findings {
        out.push_str(&text[last..f.range.start]);
        out.push_str(&format!("[REDACTED:{}]", f.kind));
        last = f.range.end;
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test credentials are assembled at run time so that no credential-shaped literal sits in the
    // repository (secret scanners watching the repository stay quiet).
    fn fake(prefix: &str, body_len: usize) -> String {
        let alphabet = b"Ab3Xk9QzR7mP2wLt5Vn8";
        let body: String = (0..body_len)
            .map(|i| alphabet[(i * 7) % alphabet.len()] as char)
            .collect();
        format!("{prefix}{body}")
    }

    fn kinds(text: &str) -> Vec<(&'static str, usize)> {
        scan(text).into_iter().map(|f| (f.kind, f.line)).collect()
    }

    #[test]
    fn finds_each_kind_with_its_line() {
        let openai = fake("sk-", 48);
        let anthropic = fake("sk-ant-", 40);
        let aws = format!("AKIA{}", "ABCDEFGHIJKLMNOP");
        let jwt = format!("{}.{}.{}", fake("eyJ", 20), fake("eyJ", 24), fake("", 30));
        let pem = format!(
            "-----BEGIN {}PRIVATE KEY-----\nMIIEv...\n-----END {}PRIVATE KEY-----",
            "RSA ", "RSA "
        );
        let github = fake("ghp_", 36);
        let text = format!(
            "Manual line one.\nexport OPENAI_API_KEY={openai}\nanthropic: {anthropic}\naws {aws}\n{jwt}\n{pem}\n{github}\n"
        );
        assert_eq!(
            kinds(&text),
            vec![
                ("openai_key", 2),
                ("anthropic_key", 3),
                ("aws_access_key", 4),
                ("jwt", 5),
                ("private_key", 6),
                ("github_token", 9),
            ]
        );
    }

    #[test]
    fn high_entropy_tokens_are_found_but_ordinary_text_is_not() {
        let token = fake("", 40);
        assert_eq!(
            kinds(&format!("password = {token}")),
            vec![("high_entropy_token", 1)]
        );
        for ordinary in [
            "Hold the WPS button for ten seconds until the LED blinks amber.",
            "/usr/local/share/quokka/firmware/router-x200-v2.4.1-release.bin",
            "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "Thisisaverylongwordwithoutanydigitsinsideitatall",
        ] {
            assert_eq!(kinds(ordinary), vec![], "{ordinary}");
        }
    }

    #[test]
    fn redaction_replaces_only_the_secret() {
        let key = fake("sk-", 40);
        let text = format!("Set the key to {key} and restart.");
        let findings = scan(&text);
        assert_eq!(
            redact(&text, &findings),
            "Set the key to [REDACTED:openai_key] and restart."
        );
    }
}
