//! `ragvault scan PATH...`: the ingest secret scanner over files and folders (a repository, built artefacts, a
//! folder before ingest). Prints `path:line: kind` per finding, never the value; exits non-zero when a finding
//! is not allow-listed. CI runs it over the checkout and the built binary.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Folders never scanned: version control internals and build output (artefacts are named explicitly).
const SKIPPED_DIRS: &[&str] = &[".git", "target", "node_modules", "__pycache__"];

/// One allow-list entry: findings of `kind` (`*` = any) in files under `path` (a file, or a folder ending in
/// `/`), relative to the scan's working directory.
struct Allowed {
    path: String,
    kind: String,
}

fn read_allow_list(file: &Path) -> Result<Vec<Allowed>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the allow list {}", file.display()))?;
    let mut allowed = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(path), Some(kind), None) => allowed.push(Allowed {
                path: path.to_owned(),
                kind: kind.to_owned(),
            }),
            _ => anyhow::bail!(
                "{}:{}: expected `<path> <kind>` (kind may be `*`)",
                file.display(),
                number + 1
            ),
        }
    }
    Ok(allowed)
}

fn is_allowed(allowed: &[Allowed], path: &str, kind: &str) -> bool {
    allowed.iter().any(|a| {
        let path_matches = if a.path.ends_with('/') {
            path.starts_with(&a.path)
        } else {
            path == a.path
        };
        path_matches && (a.kind == "*" || a.kind == kind)
    })
}

fn files_under(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_file() {
        out.push(path.to_owned());
    } else if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            let skipped = entry
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| SKIPPED_DIRS.contains(&n));
            if !skipped {
                files_under(&entry, out)?;
            }
        }
    }
    // Symlinks and special files are not followed: a scan of a checkout stays inside it.
    Ok(())
}

/// Scans `paths`; the report lines and whether every finding was allow-listed.
pub fn run(paths: &[PathBuf], allow_list: Option<&Path>) -> Result<bool> {
    let allowed = match allow_list {
        Some(file) => read_allow_list(file)?,
        None => Vec::new(),
    };
    let mut files = Vec::new();
    for path in paths {
        files_under(path, &mut files)?;
    }
    let (mut refused, mut tolerated) = (0usize, 0usize);
    let mut report = std::io::stdout().lock();
    for file in &files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let shown = file
            .strip_prefix("./")
            .unwrap_or(file)
            .display()
            .to_string();
        for finding in ragvault_ingest::secrets::scan_bytes(&bytes) {
            let ok = is_allowed(&allowed, &shown, finding.kind);
            if ok {
                tolerated += 1;
            } else {
                refused += 1;
            }
            writeln!(
                report,
                "{shown}:{}: {}{}",
                finding.line,
                finding.kind,
                if ok { " (allow-listed)" } else { "" }
            )?;
        }
    }
    writeln!(
        report,
        "scanned {} files: {refused} findings, {tolerated} allow-listed",
        files.len()
    )?;
    Ok(refused == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_entries_match_files_and_folders_by_kind() {
        let allowed = vec![
            Allowed {
                path: "tests/fixtures/".into(),
                kind: "*".into(),
            },
            Allowed {
                path: "docs/security.md".into(),
                kind: "jwt".into(),
            },
        ];
        assert!(is_allowed(
            &allowed,
            "tests/fixtures/keys.txt",
            "openai_key"
        ));
        assert!(is_allowed(&allowed, "docs/security.md", "jwt"));
        assert!(!is_allowed(&allowed, "docs/security.md", "openai_key"));
        assert!(!is_allowed(&allowed, "tests/fixtures.rs", "jwt"));
        assert!(!is_allowed(&allowed, "src/main.rs", "jwt"));
    }
}
