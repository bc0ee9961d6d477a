//! lab-bench's modules import one another one way only: plan → measure → record → report and
//! charts, with results.json's readers at the bottom. Read from the source: every `crate::NAME`
//! a module names is an edge, and the graph must have no cycle.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Module name → the crate modules its source names (`crate::x::`, `crate::{x, y}`, `use crate::x`).
fn imports() -> BTreeMap<String, Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: Vec<String> = fs::read_dir(&src)
        .expect("read src/")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".rs").map(str::to_string))
        .filter(|m| m != "main")
        .collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let text = fs::read_to_string(src.join(format!("{module}.rs"))).expect("read a module");
        let code: String =
            text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        let mut named: Vec<String> = Vec::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                group.split('}').next().unwrap_or("").split(',').collect()
            } else {
                vec![rest]
            };
            for name in names {
                let name: String =
                    name.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if modules.contains(&name) && name != *module && !named.contains(&name) {
                    named.push(name);
                }
            }
        }
        graph.insert(module.clone(), named);
    }
    graph
}

/// A cycle through `node`, if the depth-first walk from it finds one.
fn cycle_from(
    graph: &BTreeMap<String, Vec<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut Vec<String>,
) -> Option<Vec<String>> {
    if let Some(start) = path.iter().position(|n| n == node) {
        let mut cycle = path[start..].to_vec();
        cycle.push(node.to_string());
        return Some(cycle);
    }
    if done.iter().any(|n| n == node) {
        return None;
    }
    path.push(node.to_string());
    for next in &graph[node] {
        if let Some(cycle) = cycle_from(graph, next, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.push(node.to_string());
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = imports();
    assert!(graph["measure"].contains(&"plan".to_string()), "the reader sees the imports: {graph:?}");
    let (mut path, mut done) = (Vec::new(), Vec::new());
    for node in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, node, &mut path, &mut done) {
            panic!("an import circle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn results_json_readers_depend_on_nothing_above_them() {
    assert_eq!(imports()["results"], Vec::<String>::new());
}

#[test]
fn the_readers_of_results_never_import_the_measuring() {
    let graph = imports();
    for reader in ["report", "charts", "compare"] {
        for measuring in ["workloads", "measure", "arrival", "plan", "nginx"] {
            assert!(!graph[reader].contains(&measuring.to_string()), "{reader} imports {measuring}");
        }
    }
}
