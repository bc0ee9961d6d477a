#![forbid(unsafe_code)]
//! The documents' promises about the code: every `name` cited with a `file:line` in
//! docs/architectures.md names what stands on that line, and no file of the repository points at a
//! path outside it (the contract is docs/spec.md, the background docs/background.md). `make
//! docs-check` runs this suite alone.

use std::fs;
use std::path::{Path, PathBuf};

/// The repository's root (this crate lives in `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// One citation: `name` said to stand at `file:line`, on `doc_line` of the document.
#[derive(Debug, PartialEq, Eq)]
struct Citation {
    name: String,
    file: String,
    line: usize,
    doc_line: usize,
}

/// Finds every "`name` `file:line`", "`name` (`file:line`)" and "`name` :line" in `text`. A bare
/// `:line` belongs to the file of the nearest full `file:line` before it in the document.
fn citations(text: &str) -> Vec<Citation> {
    let mut found = Vec::new();
    let mut file: Option<String> = None;
    for (index, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('`') else { break };
            let name = &after[..end];
            rest = &after[end + 1..];
            if let Some((path, number)) = full_reference(name) {
                file = Some(path.to_string());
                let _ = number; // a path cited alone is checked by `every_cited_file_line_exists`
                continue;
            }
            let tail = rest.trim_start_matches([' ', '(']);
            let (path, number) = if let Some(inner) = tail.strip_prefix('`') {
                match inner.find('`').and_then(|close| full_reference(&inner[..close])) {
                    Some((path, number)) => {
                        file = Some(path.to_string());
                        (path.to_string(), number)
                    }
                    None => continue,
                }
            } else if let Some(digits) = tail.strip_prefix(':') {
                let digits: String = digits.chars().take_while(char::is_ascii_digit).collect();
                match (digits.parse::<usize>(), &file) {
                    (Ok(number), Some(path)) => (path.clone(), number),
                    (Ok(_), None) => panic!("line {}: `{name}` :{digits} before any file", index + 1),
                    (Err(_), _) => continue,
                }
            } else {
                continue;
            };
            found.push(Citation { name: name.to_string(), file: path, line: number, doc_line: index + 1 });
        }
    }
    found
}

/// `crates/x/src/y.rs:12` → (`crates/x/src/y.rs`, 12).
fn full_reference(text: &str) -> Option<(&str, usize)> {
    let (path, number) = text.rsplit_once(':')?;
    let is_path = path.ends_with(".rs") && !path.contains(' ');
    is_path.then_some(())?;
    Some((path, number.parse().ok()?))
}

/// Whether `word` stands in `line` as a whole identifier.
fn has_word(line: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// The problem with one citation, if any: the file or line is missing, or the line does not
/// hold the cited name's last part (`Conn::read` → `read`, `conns.accept_from` → `accept_from`).
fn check(citation: &Citation) -> Option<String> {
    let source = match fs::read_to_string(root().join(&citation.file)) {
        Ok(source) => source,
        Err(e) => return Some(format!("{citation:?}: {e}")),
    };
    let Some(text) = source.lines().nth(citation.line.wrapping_sub(1)) else {
        return Some(format!("{citation:?}: {} has no line {}", citation.file, citation.line));
    };
    let word = citation.name.rsplit(['.', ':']).next().unwrap_or(&citation.name);
    (!has_word(text, word)).then(|| {
        let lines_with = |pattern: &str| -> Vec<String> {
            let found = source.lines().enumerate().filter(|(_, line)| has_word(line, pattern));
            found.map(|(at, _)| format!(":{}", at + 1)).collect()
        };
        let mut hint = lines_with(&format!("fn {word}"));
        if hint.is_empty() {
            hint = lines_with(word);
        }
        format!(
            "docs/architectures.md line {}: `{}` cited at {}:{}, which reads {:?} ({word} is at {})",
            citation.doc_line,
            citation.name,
            citation.file,
            citation.line,
            text.trim(),
            if hint.is_empty() { "nowhere".to_string() } else { hint.join(", ") }
        )
    })
}

#[test]
fn every_name_cited_in_architectures_md_stands_on_its_line() {
    let text = fs::read_to_string(root().join("docs/architectures.md")).expect("docs/architectures.md");
    let citations = citations(&text);
    assert!(citations.len() >= 20, "fewer citations than the reading guide has: {citations:?}");
    let problems: Vec<String> = citations.iter().filter_map(check).collect();
    assert!(problems.is_empty(), "stale line references:\n{}", problems.join("\n"));
}

#[test]
fn the_citation_reader_sees_every_form_and_catches_a_moved_line() {
    let text = "`main` `crates/servers/epoll/src/main.rs:3` and `worker_main` :5\n\
                `Conn::read` (`crates/libs/common/src/conn.rs:7`), then `Conn::flush` (:9).";
    let found = citations(text);
    let short: Vec<(&str, &str, usize)> =
        found.iter().map(|c| (c.name.as_str(), c.file.as_str(), c.line)).collect();
    assert_eq!(
        short,
        [
            ("main", "crates/servers/epoll/src/main.rs", 3),
            ("worker_main", "crates/servers/epoll/src/main.rs", 5),
            ("Conn::read", "crates/libs/common/src/conn.rs", 7),
            ("Conn::flush", "crates/libs/common/src/conn.rs", 9),
        ]
    );
    let wrong = Citation {
        name: "worker_main".into(),
        file: "crates/servers/epoll/src/main.rs".into(),
        line: 1,
        doc_line: 1,
    };
    assert!(check(&wrong).is_some(), "line 1 of lab-epoll is its doc comment, not worker_main");
    assert!(has_word("fn accept_from(&mut self", "accept_from"));
    assert!(!has_word("fn accept_from_all(", "accept_from"));
}
/// Every file the repository tracks, by path from the root.
fn tracked_files() -> Vec<PathBuf> {
    let output = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .expect("git ls-files");
    assert!(output.status.success(), "git ls-files: {output:?}");
    output
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).as_ref()))
        .collect()
}

#[test]
fn no_file_points_outside_the_repository() {
    // Spelled in pieces so that this file does not match itself. "seeds" alone is also the fuzz
    // corpus's word, so only the phrases that meant the source notes are looked for.
    let (parent, contract) = (["..", "/shared"].concat(), ["SP", "EC"].concat());
    let notes = [["the ", "seeds"].concat(), ["seeds", "'"].concat(), ["/", "seeds"].concat()];
    let mut problems = Vec::new();
    for path in tracked_files() {
        let Ok(text) = fs::read_to_string(root().join(&path)) else { continue };
        for (index, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            if line.contains(&parent) || has_word(line, &contract) || notes.iter().any(|n| lower.contains(n))
            {
                problems.push(format!("{}:{}: {:?}", path.display(), index + 1, line.trim()));
            }
        }
    }
    assert!(problems.is_empty(), "references to files outside the repository:\n{}", problems.join("\n"));
}
