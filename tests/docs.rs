#![forbid(unsafe_code)]
//! The documents' promises about the code, for README.md and every markdown file under docs/ (the
//! summaries lab-bench writes into docs/results are recorded outputs and left as they are):
//!
//! - every `name` cited with a `path:line` (or a `:line` after one) names what stands on that line,
//!   outside a comment, read across the document's line breaks;
//! - every bare repository path a document names (`crates/...`, `docs/...`, a relative link) exists;
//! - every test a document names (`faults::name`, `module::tests::name`) is a `#[test]` function;
//! - the lists that grow with the code name all of it: README's table every server in
//!   crates/servers, docs/experiments.md every experiment lab-exp runs;
//! - no file of the repository points at a path outside it.
//!
//! `make docs-check` runs this suite alone.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The repository's root (this crate lives in `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Every file the repository tracks, by path from the root.
fn tracked_files() -> Vec<PathBuf> {
    let output = std::process::Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(root())
        .output()
        .expect("git ls-files");
    assert!(output.status.success(), "git ls-files: {output:?}");
    output
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).as_ref()))
        .filter(|p| root().join(p).exists())
        .collect()
}

/// The documents checked: README.md and docs/**/*.md but the summaries lab-bench wrote into
/// docs/results (recorded outputs, which begin `# lab-bench results`).
fn documents() -> Vec<PathBuf> {
    let is_doc = |p: &PathBuf| {
        let written_by_lab_bench = || {
            let text = fs::read_to_string(root().join(p)).unwrap_or_default();
            text.starts_with("# lab-bench results")
        };
        let recorded = p.starts_with("docs/results") && written_by_lab_bench();
        (p == Path::new("README.md") || p.starts_with("docs"))
            && p.extension().is_some_and(|e| e == "md")
            && !recorded
    };
    tracked_files().into_iter().filter(is_doc).collect()
}

/// One inline code span of a document: its text, where it ends in the document, its line there.
#[derive(Debug)]
struct Span<'a> {
    text: &'a str,
    end: usize,
    line: usize,
}

/// The inline code spans of `text`, fenced code blocks left out.
fn spans(text: &str) -> Vec<Span<'_>> {
    let mut found = Vec::new();
    let mut offset = 0;
    let mut fenced = false;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let start_of_line = offset;
        offset += line.len();
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut at = 0;
        while let Some(open) = line[at..].find('`') {
            let from = at + open + 1;
            let Some(close) = line[from..].find('`') else { break };
            found.push(Span {
                text: &line[from..from + close],
                end: start_of_line + from + close + 1,
                line: index + 1,
            });
            at = from + close + 1;
        }
    }
    found
}

/// One citation: `name` said to stand at `file:line`, on `doc_line` of the document.
#[derive(Debug, PartialEq, Eq)]
struct Citation {
    name: String,
    file: String,
    line: usize,
    doc_line: usize,
}

/// Finds every "`name` `file:line`", "`name` (`file:line`)" and "`name` :line" in `text`, wherever
/// the document breaks its lines between the two. A bare `:line` belongs to the file of the
/// nearest full `file:line` before it.
fn citations(text: &str) -> Vec<Citation> {
    let spans = spans(text);
    let mut found = Vec::new();
    let mut file: Option<String> = None;
    for (index, span) in spans.iter().enumerate() {
        if let Some((path, _)) = full_reference(span.text) {
            file = Some(path.to_string());
            continue; // a path cited alone is checked by `every_path_a_document_names_exists`
        }
        let between = |next: &Span| &text[span.end..next.end - next.text.len() - 2];
        let joined = |gap: &str| gap.chars().all(|c| c.is_whitespace() || c == '(');
        let tail = text[span.end..].trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        let (path, number) = match spans.get(index + 1) {
            Some(next) if joined(between(next)) && full_reference(next.text).is_some() => {
                let (path, number) = full_reference(next.text).expect("checked");
                (path.to_string(), number)
            }
            _ => match tail.strip_prefix(':') {
                Some(digits) => {
                    let digits: String = digits.chars().take_while(char::is_ascii_digit).collect();
                    match (digits.parse::<usize>(), &file) {
                        (Ok(number), Some(path)) => (path.clone(), number),
                        (Ok(_), None) => {
                            panic!("line {}: `{}` :{digits} before any file", span.line, span.text)
                        }
                        (Err(_), _) => continue,
                    }
                }
                None => continue,
            },
        };
        found.push(Citation { name: span.text.to_string(), file: path, line: number, doc_line: span.line });
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

/// A line of Rust without its `//` comment (a `//` inside a string such as `"http://"` is kept).
fn code_of(line: &str) -> &str {
    let mut in_string = false;
    let bytes = line.as_bytes();
    for at in 0..bytes.len() {
        match bytes[at] {
            b'"' if at == 0 || bytes[at - 1] != b'\\' => in_string = !in_string,
            b'/' if !in_string && bytes.get(at + 1) == Some(&b'/') => return &line[..at],
            _ => {}
        }
    }
    line
}

/// The problem with one citation of `doc`, if any: the file or line is missing, or the line's code
/// (its comment aside) does not hold the cited name's last part (`Conn::read` → `read`,
/// `conns.accept_from` → `accept_from`).
fn check(doc: &str, citation: &Citation) -> Option<String> {
    let source = match fs::read_to_string(root().join(&citation.file)) {
        Ok(source) => source,
        Err(e) => return Some(format!("{doc} line {}: {citation:?}: {e}", citation.doc_line)),
    };
    let Some(text) = source.lines().nth(citation.line.wrapping_sub(1)) else {
        return Some(format!(
            "{doc} line {}: {} has no line {}",
            citation.doc_line, citation.file, citation.line
        ));
    };
    let name = citation.name.trim_end_matches("()");
    let word = name.rsplit(['.', ':']).next().unwrap_or(name);
    (!has_word(code_of(text), word)).then(|| {
        let lines_with = |pattern: &str| -> Vec<String> {
            let found = source.lines().enumerate().filter(|(_, line)| has_word(code_of(line), pattern));
            found.map(|(at, _)| format!(":{}", at + 1)).collect()
        };
        let mut hint = lines_with(&format!("fn {word}"));
        if hint.is_empty() {
            hint = lines_with(word);
        }
        format!(
            "{doc} line {}: `{}` cited at {}:{}, which reads {:?} ({word} is at {})",
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
fn every_name_cited_in_a_document_stands_on_its_line() {
    let mut problems = Vec::new();
    let mut count = 0;
    for doc in documents() {
        let text = fs::read_to_string(root().join(&doc)).expect("a tracked document");
        let found = citations(&text);
        count += found.len();
        problems.extend(found.iter().filter_map(|c| check(&doc.display().to_string(), c)));
    }
    assert!(count >= 20, "fewer citations than the reading guide alone has: {count}");
    assert!(problems.is_empty(), "stale line references:\n{}", problems.join("\n"));
}

#[test]
fn the_citation_reader_sees_every_form_across_line_breaks_and_catches_a_moved_line() {
    let text = "`main` `crates/servers/epoll/src/main.rs:3` and `worker_main` :5\n\
                `Conn::read` (`crates/libs/loopkit/src/conn.rs:7`), then `Conn::flush` (:9); and\n\
                `Session::next`\n  (`crates/libs/loopkit/src/session.rs:11`). Not a citation: `x` | `a.rs:1`\n\
                ```\n`fenced` `crates/a.rs:1`\n```\n";
    let found = citations(text);
    let short: Vec<(&str, &str, usize, usize)> =
        found.iter().map(|c| (c.name.as_str(), c.file.as_str(), c.line, c.doc_line)).collect();
    assert_eq!(
        short,
        [
            ("main", "crates/servers/epoll/src/main.rs", 3, 1),
            ("worker_main", "crates/servers/epoll/src/main.rs", 5, 1),
            ("Conn::read", "crates/libs/loopkit/src/conn.rs", 7, 2),
            ("Conn::flush", "crates/libs/loopkit/src/conn.rs", 9, 2),
            ("Session::next", "crates/libs/loopkit/src/session.rs", 11, 3),
        ]
    );
    let wrong = Citation {
        name: "worker_main".into(),
        file: "crates/servers/epoll/src/main.rs".into(),
        line: 1,
        doc_line: 1,
    };
    assert!(check("test", &wrong).is_some(), "line 1 of lab-epoll is its doc comment, not worker_main");
    assert!(has_word("fn accept_from(&mut self", "accept_from"));
    assert!(!has_word("fn accept_from_all(", "accept_from"));
    assert_eq!(code_of("let x = 1; // worker_main"), "let x = 1; ");
    assert_eq!(code_of(r#"let url = "http://a"; // b"#), r#"let url = "http://a"; "#);
}

/// The repository paths a document names: code spans that start at a top-level folder or name a
/// top-level file (a `:line` after a path is checked against the file's length), and relative link
/// targets, resolved from the document's folder. Spans with placeholders (`<arch>`, `*`, `{a,b}`,
/// `$VAR`) name patterns, not paths.
fn named_paths(doc: &Path, text: &str) -> Vec<(usize, PathBuf, Option<usize>)> {
    const TOP: [&str; 5] = ["crates/", "docs/", "tests/", "scripts/", ".ci/"];
    const FILES: [&str; 6] = ["Makefile", "Cargo.toml", "Cargo.lock", "README.md", "LICENSE", "rustfmt.toml"];
    let pattern = |s: &str| s.contains(['<', '>', '*', '{', '}', '$', ' ', '|']);
    let mut found = Vec::new();
    for span in spans(text) {
        let (path, line) = match span.text.rsplit_once(':') {
            Some((path, n)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
                (path, n.parse().ok())
            }
            _ => (span.text, None),
        };
        if (TOP.iter().any(|top| path.starts_with(top)) || FILES.contains(&path)) && !pattern(path) {
            found.push((span.line, PathBuf::from(path), line));
        }
    }
    let folder = doc.parent().unwrap_or(Path::new(""));
    let mut fenced = false;
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let mut rest = if fenced { "" } else { line };
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(close) = after.find(')') else { break };
            let target = after[..close].split('#').next().unwrap_or("");
            rest = &after[close..];
            let external = target.contains("://") || target.starts_with("mailto:") || target.is_empty();
            if !external && !pattern(target) {
                found.push((index + 1, folder.join(target), None));
            }
        }
    }
    found
}

#[test]
fn every_path_a_document_names_exists() {
    let mut problems = Vec::new();
    for doc in documents() {
        let text = fs::read_to_string(root().join(&doc)).expect("a tracked document");
        for (line, path, number) in named_paths(&doc, &text) {
            let full = root().join(&path);
            match (fs::read_to_string(&full), number) {
                (_, None) if full.exists() => {}
                (Ok(source), Some(n)) if n >= 1 && source.lines().count() >= n => {}
                _ => problems.push(format!(
                    "{} line {line}: {}{}",
                    doc.display(),
                    path.display(),
                    number.map(|n| format!(":{n}")).unwrap_or_default()
                )),
            }
        }
    }
    assert!(problems.is_empty(), "paths that do not exist:\n{}", problems.join("\n"));
}

/// The name of every `#[test]` function in the repository's Rust files.
fn test_functions() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for path in tracked_files().iter().filter(|p| p.extension().is_some_and(|e| e == "rs")) {
        let Ok(source) = fs::read_to_string(root().join(path)) else { continue };
        let mut after_test = false;
        for line in source.lines() {
            let line = line.trim();
            if line.starts_with("#[test]") {
                after_test = true;
            } else if after_test {
                if let Some(name) = line.split("fn ").nth(1).and_then(|rest| rest.split(['(', '<']).next()) {
                    names.insert(name.trim().to_string());
                    after_test = false;
                }
            }
        }
    }
    names
}

/// The tests a document names: `suite::name` for an integration suite (a file under some `tests/`
/// folder), or `module::tests::name` for a unit test.
fn named_tests(text: &str, suites: &BTreeSet<String>) -> Vec<(usize, String)> {
    let is_path = |s: &str| {
        !s.is_empty()
            && s.split("::")
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    };
    spans(text)
        .into_iter()
        .filter(|span| span.text.contains("::") && is_path(span.text))
        .filter(|span| {
            span.text.contains("::tests::")
                || span.text.split("::").next().is_some_and(|s| suites.contains(s))
        })
        .map(|span| (span.line, span.text.rsplit("::").next().expect("split").to_string()))
        .collect()
}

/// The stems of the integration suites: every `.rs` file directly in a `tests/` folder.
fn suites() -> BTreeSet<String> {
    let in_tests = |p: &PathBuf| {
        p.parent().is_some_and(|d| d.ends_with("tests")) && p.extension().is_some_and(|e| e == "rs")
    };
    let stems = tracked_files().into_iter().filter(in_tests);
    stems
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| s != "harness")
        .collect()
}

#[test]
fn every_test_a_document_names_exists() {
    let (tests, suites) = (test_functions(), suites());
    assert!(tests.contains("every_test_a_document_names_exists"), "the reader finds this very test");
    let mut problems = Vec::new();
    for doc in documents() {
        let text = fs::read_to_string(root().join(&doc)).expect("a tracked document");
        for (line, name) in named_tests(&text, &suites) {
            if !tests.contains(&name) {
                problems.push(format!("{} line {line}: no #[test] fn {name}", doc.display()));
            }
        }
    }
    assert!(problems.is_empty(), "tests named in the docs that do not exist:\n{}", problems.join("\n"));
}

#[test]
fn the_lists_that_grow_with_the_code_name_all_of_it() {
    let readme = fs::read_to_string(root().join("README.md")).expect("README.md");
    let servers = fs::read_dir(root().join("crates/servers")).expect("crates/servers");
    for entry in servers.map(|e| e.expect("a folder entry")) {
        let bin = format!("`lab-{}`", entry.file_name().to_string_lossy());
        let row = readme.lines().any(|line| line.starts_with('|') && line.contains(&bin));
        assert!(row, "README's table of designs has no row for {bin}");
    }
    let experiments = fs::read_to_string(root().join("docs/experiments.md")).expect("docs/experiments.md");
    let folder = root().join("crates/lab/exp/src/experiments");
    for entry in fs::read_dir(&folder).expect("the experiments").map(|e| e.expect("a folder entry")) {
        let source = fs::read_to_string(entry.path()).expect("an experiment");
        let Some(name) =
            source.lines().find_map(|l| l.trim().strip_prefix("name: \"")).and_then(|r| r.split('"').next())
        else {
            continue; // mod.rs
        };
        let heading = format!("## {name}");
        assert!(
            experiments.lines().any(|l| l.trim_end() == heading),
            "docs/experiments.md has no section {heading}"
        );
    }
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
