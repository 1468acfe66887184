//! The repository must be readable on its own (issue 13): no file outside `docs/` may point at the engineers'
//! private notes, and every citation of `docs/method.md §N` must name a section that exists there, so the docs
//! and the code comments that cite them cannot drift apart.
//!
//! The files checked are those git lists (tracked, plus untracked files that are not ignored) with the
//! extensions `.rs`, `.md`, `.toml`, `.py` and `.json`. The forbidden names are assembled at run time so that
//! this file does not trip its own check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The extensions of the files checked.
const EXTENSIONS: &[&str] = &["rs", "md", "toml", "py", "json"];

/// The workspace root: this crate lives in `crates/diem-build`, or `DIEM_CHECK_ROOT` names another checkout
/// (to try a bulk rewrite on a copy before applying it here).
fn root() -> PathBuf {
    let root = std::env::var_os("DIEM_CHECK_ROOT")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."), PathBuf::from);
    root.canonicalize().expect("workspace root")
}

/// Repository-relative paths of the files to check, with their text.
fn files(root: &Path) -> Vec<(String, String)> {
    let out = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(root)
        .output()
        .expect("git ls-files runs (git is needed to list the repository's files)");
    assert!(out.status.success(), "git ls-files failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut paths: Vec<String> = String::from_utf8(out.stdout)
        .expect("UTF-8 paths")
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| {
            Path::new(p).extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e))
        })
        .filter_map(|p| {
            let path = root.join(&p);
            // Index entries whose file is gone (a rename in progress) and symbolic links are skipped.
            let meta = std::fs::symlink_metadata(&path).ok()?;
            if !meta.is_file() {
                return None;
            }
            let text = std::fs::read_to_string(&path).ok()?;
            Some((p, text))
        })
        .collect()
}

/// The names no file outside `docs/` may mention: the private notes and their folder.
fn forbidden() -> Vec<String> {
    let md = ".md";
    vec![
        ["SPEC", md].concat(),
        ["DESIGN", md].concat(),
        ["STYLE", md].concat(),
        ["..", "/shared"].concat(),
        // The short form: the bare word, a space and a section sign.
        ["SPEC", " §"].concat(),
    ]
}

#[test]
fn no_file_outside_docs_points_at_private_notes() {
    let root = root();
    let names = forbidden();
    let mut hits = Vec::new();
    for (path, text) in files(&root) {
        if path.starts_with("docs/") {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            for name in &names {
                if line.contains(name.as_str()) {
                    hits.push(format!("{path}:{}: {name:?} in {:?}", i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "{} references to files outside the repository (cite docs/method.md §N, docs/architecture.md or the \
         paper instead):\n{}",
        hits.len(),
        hits.join("\n")
    );
}

/// A section of `docs/method.md`: its heading level and its text (heading included, subsections included).
struct Section {
    level: usize,
    body: String,
}

/// The sections of `docs/method.md` by id (`0` … `13`, `3.1`, `9a`, …): every `##`/`###` heading whose first word
/// is a section number (a trailing period allowed: `## 9. Experiments`, `### 9a. Low-dimensional manifold`).
fn sections(method: &str) -> BTreeMap<String, Section> {
    let lines: Vec<&str> = method.lines().collect();
    let mut heads = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let level = line.chars().take_while(|&c| c == '#').count();
        if !(2..=4).contains(&level) || !line[level..].starts_with(' ') {
            continue;
        }
        let word = line[level..].split_whitespace().next().unwrap_or("");
        let id = word.trim_end_matches('.');
        if parse_id(id).is_some_and(|(parsed, rest)| parsed == id && rest.is_empty()) {
            heads.push((i, level, id.to_string()));
        }
    }
    let mut out = BTreeMap::new();
    for (k, (start, level, id)) in heads.iter().enumerate() {
        let end =
            heads[k + 1..].iter().find(|(_, l, _)| l <= level).map_or(lines.len(), |(next, _, _)| *next);
        let body = lines[*start..end].join("\n");
        assert!(
            out.insert(id.clone(), Section { level: *level, body }).is_none(),
            "docs/method.md has two sections numbered §{id}"
        );
    }
    out
}

/// Parses a section id at the start of `s`: digits, an optional lowercase letter (`9a`) not followed by
/// another letter, and an optional `.digits` (`3.1`; a period not followed by a digit ends the id). Returns the
/// id and the rest.
fn parse_id(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == 0 {
        return None;
    }
    if i < b.len() && b[i].is_ascii_lowercase() && !(i + 1 < b.len() && b[i + 1].is_ascii_alphabetic()) {
        i += 1;
    }
    if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    Some((&s[..i], &s[i..]))
}

/// One citation: the file and line it is on, the section id, and an optional qualifier (`item 9` or a quoted
/// label such as `"Batch coupling"`).
struct Citation {
    at: String,
    id: String,
    item: Option<u32>,
    label: Option<String>,
}

/// Skips what may stand between `docs/method.md` and its `§`: spaces, a line break and the next line's comment
/// marker, backticks.
fn skip_gap(s: &str) -> &str {
    let mut rest = s.trim_start_matches('`');
    loop {
        let trimmed = rest.trim_start_matches([' ', '\t', '\r']);
        if let Some(next) = trimmed.strip_prefix('\n') {
            rest = next.trim_start_matches([' ', '\t']).trim_start_matches(['/', '!', '#', '*', '>']);
            continue;
        }
        return trimmed;
    }
}

/// The citations in `text` that follow a mention of `docs/method.md`: the first `§id`, then every `§id` chained
/// to it by `, `, `; `, ` and `, ` or `, `–` or `-` (a range), with optional `item N` or `"label"` qualifiers.
fn citations(path: &str, text: &str) -> Vec<Citation> {
    let needle = "docs/method.md";
    let mut out = Vec::new();
    for (pos, _) in text.match_indices(needle) {
        let line = text[..pos].matches('\n').count() + 1;
        let at = format!("{path}:{line}");
        let mut rest = skip_gap(&text[pos + needle.len()..]);
        let mut first = true;
        loop {
            let after_sep = if first {
                rest
            } else {
                let seps = [", and §", ", §", "; §", " and §", " or §", "–§", "-§", "–", "-"];
                match seps.iter().find_map(|s| rest.strip_prefix(s).map(|r| (s, r))) {
                    Some((s, r)) if s.ends_with('§') => r,
                    Some((_, r)) if r.starts_with(|c: char| c.is_ascii_digit()) => r,
                    _ => break,
                }
            };
            let body = if first {
                match after_sep.strip_prefix('§') {
                    Some(r) => r,
                    None => break,
                }
            } else {
                after_sep
            };
            let Some((id, tail)) = parse_id(body) else { break };
            let mut citation = Citation { at: at.clone(), id: id.to_string(), item: None, label: None };
            rest = tail;
            if let Some(r) = rest.strip_prefix(" item ") {
                let digits: String = r.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(n) = digits.parse() {
                    citation.item = Some(n);
                    rest = &r[digits.len()..];
                }
            } else if let Some(r) = rest.strip_prefix(" \"") {
                if let Some(end) = r.find('"') {
                    // A label may wrap onto the next comment line: join the pieces with single spaces.
                    let pieces = r[..end]
                        .lines()
                        .map(|l| l.trim().trim_start_matches(['/', '!', '#', '*', '>']).trim());
                    citation.label = Some(pieces.collect::<Vec<_>>().join(" "));
                    rest = &r[end + 1..];
                }
            }
            out.push(citation);
            first = false;
        }
    }
    out
}

#[test]
fn every_method_citation_names_an_existing_section() {
    let root = root();
    let method = std::fs::read_to_string(root.join("docs/method.md")).expect("docs/method.md exists");
    let sections = sections(&method);
    for id in (0..=13).map(|n| n.to_string()) {
        assert!(sections.contains_key(&id), "docs/method.md lacks its top-level section §{id}");
    }
    let mut bad = Vec::new();
    let mut count = 0;
    for (path, text) in files(&root) {
        for c in citations(&path, &text) {
            count += 1;
            let Some(section) = sections.get(&c.id) else {
                bad.push(format!("{}: §{} is not a section of docs/method.md", c.at, c.id));
                continue;
            };
            if let Some(n) = c.item {
                let marker = format!("\n{n}. ");
                if !section.body.contains(&marker) {
                    bad.push(format!("{}: §{} has no numbered item {n}", c.at, c.id));
                }
            }
            if let Some(label) = &c.label {
                if !section.body.to_lowercase().contains(&label.to_lowercase()) {
                    bad.push(format!(
                        "{}: §{} (level {}) does not mention {label:?}",
                        c.at, c.id, section.level
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{} citations of docs/method.md do not resolve:\n{}", bad.len(), bad.join("\n"));
    // The docs pages themselves cite docs/method.md, so there is always something to check.
    assert!(count > 0, "no citation of docs/method.md found: is the file list empty?");
}

#[test]
fn citation_parser_reads_chains_ranges_and_qualifiers() {
    let text = "see docs/method.md §3.1, §9b–9d and §12.1 item 9; paper §4.2\n\
                //! (docs/method.md\n//! §12.2 \"Batch\n//! coupling\", §4.)";
    let got: Vec<String> = citations("x.rs", text)
        .iter()
        .map(|c| {
            format!(
                "{}{}{}",
                c.id,
                c.item.map(|n| format!("#{n}")).unwrap_or_default(),
                c.label.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(got, ["3.1", "9b", "9d", "12.1#9", "12.2Batch coupling", "4"]);
    let s = sections("# t\n## 0. Conventions\ntext\n## 9. Experiments\n### 9a. Manifold\n**Metric**\n### 9b. Cifar\n1. one\n");
    assert_eq!(s.keys().cloned().collect::<Vec<_>>(), ["0", "9", "9a", "9b"]);
    assert!(s["9"].body.contains("Metric") && !s["9a"].body.contains("Cifar"));
}
