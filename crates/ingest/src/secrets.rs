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

/// A path or URL path (`/opt/ragvault/models/all-MiniLM-L6-v2`, `$URL/v1/admin/credentials`): two or more
/// slashes between short segments, one of them a plain lowercase word. Base64 secrets contain slashes too, but
/// their segments are mixed-case noise.
fn is_path_like(token: &str) -> bool {
    let segments: Vec<&str> = token.split('/').filter(|s| !s.is_empty()).collect();
    token.matches('/').count() >= 2
        && segments.iter().all(|s| s.len() <= 24)
        && segments
            .iter()
            .any(|s| s.len() >= 3 && s.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Every credential-looking span in `text`, in order, without overlaps.
pub fn scan(text: &str) -> Vec<Finding> {
    scan_with(text, true)
}

/// [`scan`], with or without the high-entropy token heuristic (named patterns only).
fn scan_with(text: &str, high_entropy: bool) -> Vec<Finding> {
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
    for m in token_regex().find_iter(text).filter(|_| high_entropy) {
        // `NAME=value`: the value is judged on its own (padding `=` at the end stays with its token).
        let token = m.as_str();
        let value_start = match token.trim_end_matches('=').rfind('=') {
            Some(i) => i + 1,
            None => 0,
        };
        let value = &token[value_start..];
        let range = m.start() + value_start..m.end();
        if value.len() >= 32
            && !is_path_like(value)
            && is_high_entropy_token(value)
            && !overlaps(&findings, &range)
        {
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

/// Shortest printable run of a binary file worth scanning: shorter runs cannot hold a credential pattern.
const MIN_PRINTABLE_RUN: usize = 16;

/// Credentials in a file's bytes. Text (UTF-8 without NUL bytes) is scanned as ingest scans documents. In a
/// binary (a built artefact), the printable runs are scanned, one per line, for the named credential patterns
/// only: compiled code is full of random-looking byte runs, and a key baked into a binary keeps its shape.
pub fn scan_bytes(bytes: &[u8]) -> Vec<Finding> {
    if !bytes.contains(&0) {
        if let Ok(text) = std::str::from_utf8(bytes) {
            return scan(text);
        }
    }
    let mut runs = String::new();
    for run in bytes.split(|b| !(b.is_ascii_graphic() || *b == b' ')) {
        if run.len() >= MIN_PRINTABLE_RUN {
            // Only printable ASCII is left in a run.
            runs.extend(run.iter().map(|&b| char::from(b)));
            runs.push('\n');
        }
    }
    scan_with(&runs, false)
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
            "RUN RAGVAULT__EMBEDDING__MODEL_DIR=/opt/ragvault/models/all-MiniLM-L6-v2 ./fetch",
            "curl $RAGVAULT_URL/v1/admin/credentials/openai/refresh",
        ] {
            assert_eq!(kinds(ordinary), vec![], "{ordinary}");
        }
    }

    #[test]
    fn assigned_and_slashed_secrets_are_still_found() {
        let token = fake("", 40);
        // The value of an assignment, reported where the value starts.
        let text = format!("API_TOKEN={token}");
        let findings = scan(&text);
        assert_eq!(findings.len(), 1);
        assert_eq!(&text[findings[0].range.clone()], token);
        // A base64 secret with slashes (an AWS secret access key's shape) is not a path.
        let aws_like = format!("{}/{}/{}", fake("w", 12), fake("K7", 6), fake("bP", 18));
        assert_eq!(kinds(&aws_like), vec![("high_entropy_token", 1)]);
        // Base64 padding stays with its token.
        assert_eq!(
            kinds(&format!("{}==", fake("", 38))),
            vec![("high_entropy_token", 1)]
        );
    }

    #[test]
    fn binaries_are_scanned_for_named_patterns_in_their_printable_runs() {
        let key = fake("sk-", 40);
        let noise = fake("", 40);
        let mut binary = vec![0u8, 159, 146, 150];
        binary.extend_from_slice(format!("config {key} end").as_bytes());
        binary.extend_from_slice(&[0, 1, 2]);
        binary.extend_from_slice(noise.as_bytes());
        binary.extend_from_slice(&[0, 255]);
        let kinds: Vec<&str> = scan_bytes(&binary).into_iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec!["openai_key"]);
        assert_eq!(
            scan_bytes(format!("text {key}\n{noise}").as_bytes())
                .into_iter()
                .map(|f| (f.kind, f.line))
                .collect::<Vec<_>>(),
            vec![("openai_key", 1), ("high_entropy_token", 2)]
        );
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
