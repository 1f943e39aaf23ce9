//! Tidy: the written invariants of ARCHITECTURE.md, checked on the source tree itself.
//!
//! In the spirit of rust-analyzer's `xtask/src/tidy.rs`: each rule is one test that reads the
//! files, collects every violation, and fails with a list a newcomer can act on. Each rule
//! says which sentence of ARCHITECTURE.md it keeps true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `<root>/tests`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every `.rs` file of the workspace, relative to the root, sorted.
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if p.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    walk(&p, out);
                }
            } else if name.ends_with(".rs") {
                out.push(p);
            }
        }
    }
    let root = root();
    let mut out = Vec::new();
    for top in ["crates", "tests"] {
        walk(&root.join(top), &mut out);
    }
    let mut rel: Vec<PathBuf> = out
        .into_iter()
        .map(|p| p.strip_prefix(&root).unwrap().to_path_buf())
        .collect();
    rel.sort();
    rel
}

fn read(rel: &Path) -> String {
    std::fs::read_to_string(root().join(rel))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", rel.display()))
}

/// The workspace's member crates: (directory relative to the root, parsed Cargo.toml).
fn crates() -> Vec<(PathBuf, toml::Table)> {
    let root = root();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.push(root.join("tests"));
    dirs.sort();
    dirs.into_iter()
        .map(|d| {
            let text = std::fs::read_to_string(d.join("Cargo.toml")).unwrap();
            let table: toml::Table = text
                .parse()
                .unwrap_or_else(|e| panic!("{}/Cargo.toml: {e}", d.display()));
            (d.strip_prefix(&root).unwrap().to_path_buf(), table)
        })
        .collect()
}

fn fail_if_any(rule: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "tidy: {rule}\n{}",
        problems
            .iter()
            .map(|p| format!("  - {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The lines of a file that are code: comments and doc comments removed (line comments only;
/// the code base does not use block comments for prose).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let t = l.trim_start();
        (!t.starts_with("//")).then_some((i + 1, l))
    })
}

/// "Every file starts with a `//!` role line."
#[test]
fn every_source_file_opens_with_a_role_line() {
    let problems = rust_files()
        .into_iter()
        .filter(|f| !read(f).starts_with("//!"))
        .map(|f| format!("{}: the first line is not a `//!` role line", f.display()))
        .collect();
    fail_if_any("every source file opens with `//!`", problems);
}

/// The files allowed to be long: the numeric kernels, where one instruction set's code is
/// easier to read together than split. Everything else stays short enough to read in one go.
const LONG_FILES: &[&str] = &["crates/nn/src/kernels.rs"];
const MAX_LINES: usize = 800;

#[test]
fn no_source_file_outside_the_kernels_is_over_800_lines() {
    let problems = rust_files()
        .into_iter()
        .filter(|f| !LONG_FILES.iter().any(|l| Path::new(l) == f))
        .filter_map(|f| {
            let n = read(&f).lines().count();
            (n > MAX_LINES).then(|| format!("{}: {n} lines (split it by concern)", f.display()))
        })
        .collect();
    fail_if_any("no source file over 800 lines", problems);
}

/// "Heavy dependencies are confined to one crate each."
#[test]
fn each_heavy_dependency_lives_in_one_crate() {
    let home = [
        ("polars", "crates/data"),
        ("dfdx", "crates/nn"),
        ("plotters", "crates/report"),
    ];
    let mut problems = Vec::new();
    for (dir, manifest) in crates() {
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            for (dep, owner) in home {
                if deps.contains_key(dep) && Path::new(owner) != dir {
                    problems.push(format!(
                        "{}/Cargo.toml [{section}] names `{dep}`, which belongs to {owner} only",
                        dir.display()
                    ));
                }
            }
        }
    }
    fail_if_any("each heavy dependency in its one crate", problems);
}

/// Every dependency a crate declares is used by it: `[dependencies]` from `src/` (or a build
/// script), `[dev-dependencies]` from anywhere in the crate.
#[test]
fn no_crate_declares_an_unused_dependency() {
    let root = root();
    let mut problems = Vec::new();
    for (dir, manifest) in crates() {
        let sources: Vec<(PathBuf, String)> = rust_files()
            .into_iter()
            .filter(|f| f.starts_with(&dir))
            // The workspace's `tests` crate holds its tests at its top level; other crates' files
            // under crates/x belong only to x.
            .filter(|f| dir != Path::new("tests") || !f.starts_with("tests/slurm"))
            .map(|f| {
                let text = read(&f);
                (f, text)
            })
            .collect();
        for section in ["dependencies", "dev-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            for name in deps.keys() {
                let ident = name.replace('-', "_");
                let used = sources.iter().any(|(f, text)| {
                    let in_scope = section == "dev-dependencies"
                        || f.starts_with(dir.join("src"))
                        || f.ends_with("build.rs")
                        // The tests crate's library is `src/`, its tests are at the top.
                        || dir == Path::new("tests");
                    in_scope
                        && code_lines(text).any(|(_, l)| {
                            l.contains(&format!("{ident}::"))
                                || l.contains(&format!("use {ident}"))
                                || l.contains(&format!("extern crate {ident}"))
                        })
                });
                if !used {
                    problems.push(format!(
                        "{}/Cargo.toml [{section}] `{name}` is never used by the crate",
                        dir.display()
                    ));
                }
            }
        }
    }
    let _ = root;
    fail_if_any("no unused dependency", problems);
}

/// "The engine never names a stage kind", and the binary composes the crates without knowing
/// which stages exist: no string literal in either is the name of a registered stage.
#[test]
fn the_engine_and_the_binary_name_no_stage_kind() {
    let names = vaepipe_stages::registry().names();
    let mut problems = Vec::new();
    for f in rust_files() {
        let in_scope = f.starts_with("crates/engine/src") || f.starts_with("crates/vaepipe/src");
        if !in_scope {
            continue;
        }
        let text = read(&f);
        // Tests may make up instances with any name; only the code above them counts.
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        for (line, l) in code_lines(text) {
            // A JSON key that happens to equal a stage name (`"prior": ...` in `bench` output)
            // is not a stage kind, nor is a line that says so (`// tidy: not a stage`).
            if l.contains("// tidy: not a stage") {
                continue;
            }
            for n in &names {
                let quoted = format!("\"{n}\"");
                let as_value = l
                    .match_indices(&quoted)
                    .any(|(i, _)| !l[i + quoted.len()..].trim_start().starts_with(':'));
                if as_value {
                    problems.push(format!("{}:{line}: names the stage `{n}`", f.display()));
                }
            }
        }
    }
    fail_if_any("the engine and the binary name no stage kind", problems);
}

/// Every crate inherits `[workspace.lints]`, so one table sets the rules for all.
#[test]
fn every_crate_inherits_the_workspace_lints() {
    let problems = crates()
        .into_iter()
        .filter(|(_, m)| {
            m.get("lints")
                .and_then(|l| l.get("workspace"))
                .and_then(|w| w.as_bool())
                != Some(true)
        })
        .map(|(d, _)| {
            format!(
                "{}/Cargo.toml lacks `[lints] workspace = true`",
                d.display()
            )
        })
        .collect();
    fail_if_any("every crate inherits the workspace lints", problems);
}

/// The modules of each crate form no cycle: a module that uses another never is used by it,
/// directly or through others, so each file can be read after the ones it depends on.
/// Granularity: the top-level modules of a crate (`src/a.rs` or `src/a/`); `lib.rs`/`main.rs`
/// (declarations and re-exports) are not modules here.
#[test]
fn no_import_cycle_between_the_modules_of_a_crate() {
    let mut problems = Vec::new();
    for (dir, _) in crates() {
        let src = dir.join("src");
        let files: Vec<PathBuf> = rust_files()
            .into_iter()
            .filter(|f| f.starts_with(&src))
            .collect();
        let module_of = |f: &Path| -> Option<String> {
            let rel = f.strip_prefix(&src).ok()?;
            let first = rel.components().next()?.as_os_str().to_string_lossy();
            let m = first.trim_end_matches(".rs").to_string();
            (m != "lib" && m != "main").then_some(m)
        };
        let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let Some(from) = module_of(f) else { continue };
            let text = read(f);
            // Test modules inside a file may reach anywhere; only the code above them counts.
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            for (_, l) in code_lines(text) {
                let mut rest = l;
                while let Some(i) = rest.find("crate::") {
                    let after = &rest[i + "crate::".len()..];
                    let ident: String = after
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    // `vaepipe_engine::` contains `engine::`-like tails, not `crate::`; but
                    // `other_crate::x` would match: require a non-identifier before `crate`.
                    let before = rest[..i].chars().last();
                    let is_path = !before.is_some_and(|c| c.is_alphanumeric() || c == '_');
                    if is_path && ident != from && modules.contains(&ident) {
                        edges.entry(from.clone()).or_default().insert(ident.clone());
                    }
                    // `use crate::{a, b::c}` groups.
                    if is_path && after.starts_with('{') {
                        let group: String = after[1..].chars().take_while(|c| *c != '}').collect();
                        for part in group.split(',') {
                            let head: String = part
                                .trim()
                                .chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_')
                                .collect();
                            if head != from && modules.contains(&head) {
                                edges.entry(from.clone()).or_default().insert(head);
                            }
                        }
                    }
                    rest = after;
                }
            }
        }
        // Any cycle shows up as a strongly connected component with more than one module.
        for cycle in cycles(&modules, &edges) {
            problems.push(format!(
                "{}: modules {} use each other",
                src.display(),
                cycle.join(" ↔ ")
            ));
        }
    }
    fail_if_any("no import cycle between modules", problems);
}

/// Strongly connected components with more than one node (Tarjan's algorithm).
fn cycles(
    nodes: &BTreeSet<String>,
    edges: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on_stack: BTreeSet<String>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: &str) {
            self.index.insert(v.to_string(), self.next);
            self.low.insert(v.to_string(), self.next);
            self.next += 1;
            self.stack.push(v.to_string());
            self.on_stack.insert(v.to_string());
            let succ: Vec<String> = self
                .edges
                .get(v)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            for w in succ {
                if !self.index.contains_key(&w) {
                    self.visit(&w);
                    let lw = self.low[&w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(&w) {
                    let iw = self.index[&w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(&w);
                    let done = w == v;
                    scc.push(w);
                    if done {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for n in nodes {
        if !t.index.contains_key(n) {
            t.visit(n);
        }
    }
    t.out
}

/// The rule must be able to fail: a planted two-module cycle is found, a chain is not.
#[test]
fn the_cycle_finder_finds_a_planted_cycle() {
    let nodes: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert!(cycles(&nodes, &edges).is_empty());
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycles(&nodes, &edges), vec![vec!["a", "b", "c"]]);
}

/// ARCHITECTURE.md's code map tells the truth: every source path it names exists, and every
/// crate has its section.
#[test]
fn architecture_md_names_only_files_that_exist_and_every_crate() {
    let root = root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut problems = Vec::new();
    for (dir, _) in crates() {
        if dir.starts_with("crates") && !text.contains(&format!("`{}`", dir.display())) {
            problems.push(format!("no code-map section for `{}`", dir.display()));
        }
    }
    // Backticked paths: `crates/x/...` in full, or a bare `name.rs` inside a crate's section.
    let mut section: Option<PathBuf> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(h) = line.strip_prefix("### `") {
            section = h
                .split('`')
                .next()
                .map(PathBuf::from)
                .filter(|p| p.starts_with("crates"));
        } else if line.starts_with("## ") {
            section = None;
        }
        for (j, quoted) in line.split('`').enumerate() {
            if j % 2 == 0 {
                continue;
            }
            let q = quoted.trim_end_matches('/');
            let path = if q.starts_with("crates/") || q.starts_with("docs/") {
                Some(root.join(q))
            } else if q.ends_with(".rs") && !q.contains(' ') {
                section.as_ref().map(|s| {
                    let p = root.join(s).join("src").join(q);
                    if p.exists() { p } else { root.join(s).join(q) }
                })
            } else {
                None
            };
            if let Some(p) = path
                && !p.exists()
            {
                problems.push(format!(
                    "ARCHITECTURE.md:{}: `{q}` does not exist ({})",
                    i + 1,
                    p.strip_prefix(&root).unwrap_or(&p).display()
                ));
            }
        }
    }
    fail_if_any("ARCHITECTURE.md tells the truth", problems);
}
