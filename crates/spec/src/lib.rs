//! vaepipe-spec: the pipeline spec as plain data. A TOML file (plus `--set key=value` overrides)
//! is parsed, validated and expanded (sweeps) into fully resolved runs before anything runs.
//! Every error names the file, line, column and key, with a snippet; all errors of a spec are
//! collected, not only the first.
//!
//! ```text
//! load(path, overrides) ──parse──▶ Node tree ──splice overrides──▶ ──expand [sweep]──▶ read_run ×N ──▶ Spec { runs }
//! ```

pub mod error;
mod model;
pub mod node;
pub mod read;
mod resolve;
pub mod schema;
pub mod source;
pub mod sweep;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use toml::de::{DeTable, DeValue};

pub use error::{ErrorRecord, SpecError, SpecErrors};
pub use schema::*;
pub use source::{Origin, SourceId, Sources};

use node::Node;
use read::Reader;

/// One sweep point, fully resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Position in the sweep grid (what `vaepipe run --point i` selects).
    pub index: usize,
    /// Stable identifier: derived from the swept values only, so unrelated edits keep it.
    pub id: String,
    /// Human-readable point, e.g. `objective=iwae k=5` (empty without a sweep).
    pub label: String,
    /// The swept keys and their values at this point.
    pub assignments: BTreeMap<String, serde_json::Value>,
    pub config: RunConfig,
}

/// A loaded, valid spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub path: PathBuf,
    pub sources: Sources,
    pub overrides: Vec<String>,
    /// Swept keys, in grid order.
    pub sweep_keys: Vec<String>,
    pub runs: Vec<Run>,
}

impl Spec {
    /// The pipeline's name (the same for every run).
    pub fn name(&self) -> &str {
        // A valid spec has at least one run: the grid of zero axes has one point.
        &self.runs[0].config.pipeline.name
    }
}

/// Loads the spec at `path`, applies `overrides` (`key.path=value`, values in TOML syntax;
/// a value that is not valid TOML is taken as a string) and expands the sweep.
pub fn load(path: &Path, overrides: &[String]) -> Result<Spec, SpecErrors> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(SpecErrors {
                sources: Sources::default(),
                errors: vec![SpecError {
                    origin: None,
                    key: String::new(),
                    message: format!("cannot read spec file {}: {e}", path.display()),
                    help: None,
                }],
            });
        }
    };
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    let base = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.clone());
    load_str(&path.display().to_string(), &text, &base, overrides, &cwd).map(|mut s| {
        s.path = read::normalize(&abs);
        s
    })
}

/// Like [`load`], from text: `name` is shown in messages, relative paths in the text resolve
/// against `base_dir`, those in overrides against `override_dir`.
pub fn load_str(
    name: &str,
    text: &str,
    base_dir: &Path,
    overrides: &[String],
    override_dir: &Path,
) -> Result<Spec, SpecErrors> {
    let mut sources = Sources::default();
    let file = sources.add(name, text, base_dir);
    let (table, parse_errors) = DeTable::parse_recoverable(text);
    if !parse_errors.is_empty() {
        let errors = parse_errors
            .iter()
            .map(|e| {
                let span = e.span().unwrap_or(0..0);
                SpecError {
                    origin: Some(Origin { source: file, span }),
                    key: String::new(),
                    message: format!("invalid TOML: {}", e.message()),
                    help: None,
                }
            })
            .collect();
        return Err(SpecErrors { sources, errors });
    }
    let mut root = node::from_toml(&table, file);

    // Overrides.
    let mut override_errors = Vec::new();
    let mut parsed = Vec::new();
    for arg in overrides {
        let id = sources.add(format!("--set {arg}"), arg.clone(), override_dir);
        match parse_override(arg, id) {
            Ok(o) => parsed.push(o),
            Err(e) => override_errors.push(e),
        }
    }
    let mut r = Reader::new(&sources);
    r.errors.extend(override_errors);
    let axes = sweep::axes(&root, &mut r);
    let explicit = sweep::explicit_points(&root, &axes, &mut r);
    let explicit_labels = sweep::explicit_labels(&root, &mut r);
    // Paths assigned per point: an override of one of them (or of a table above it) would be
    // silently overwritten by the sweep.
    let swept: Vec<&Vec<String>> = axes
        .iter()
        .map(|a| &a.path)
        .chain(explicit.iter().flatten().map(|a| &a.path))
        .collect();
    for (key, path, value) in parsed {
        if swept
            .iter()
            .any(|s| s.starts_with(&path) || path.starts_with(s))
        {
            r.error_help(
                &key.origin,
                &key.name,
                format!(
                    "`{}` is set per sweep point in [sweep]; an override would be ambiguous",
                    key.name
                ),
                "remove it from [sweep] or drop the --set",
            );
            continue;
        }
        if path.first().map(String::as_str) == Some("sweep") {
            r.error(
                &key.origin,
                &key.name,
                "[sweep] cannot be overridden with --set; edit the spec",
            );
            continue;
        }
        if let Err(prefix) = root.set_path(&path, &key.origin, value) {
            r.error(
                &key.origin,
                &key.name,
                format!("cannot set `{}`: `{prefix}` is not a table", key.name),
            );
        }
    }

    // Expansion: one tree per point (explicit points × grid), each read and validated.
    let mut runs = Vec::new();
    let mut labels = BTreeMap::new();
    let mut values_seen = BTreeMap::new();
    if r.errors.is_empty() {
        let explicit: Vec<Vec<sweep::Assignment>> = if explicit.is_empty() {
            vec![Vec::new()]
        } else {
            explicit
        };
        let grid = sweep::grid(&axes);
        let combos = explicit
            .iter()
            .enumerate()
            .flat_map(|(e, fixed)| grid.iter().map(move |g| (e, fixed, g)));
        for (index, (e, fixed, point)) in combos.enumerate() {
            let mut tree = root.clone();
            let mut assignments = BTreeMap::new();
            let mut grid_values = BTreeMap::new();
            let mut set = |key: &node::Key, path: &[String], value: Node, r: &mut Reader| {
                assignments.insert(key.name.clone(), to_json(&value));
                if let Err(prefix) = tree.set_path(path, &key.origin, value) {
                    r.error(
                        &key.origin,
                        &format!("sweep.{}", key.name),
                        format!("cannot sweep `{}`: `{prefix}` is not a table", key.name),
                    );
                }
            };
            for a in fixed {
                set(&a.key, &a.path, a.value.clone(), &mut r);
            }
            for (axis, &vi) in axes.iter().zip(point) {
                grid_values.insert(axis.key.name.clone(), to_json(&axis.values[vi]));
                set(&axis.key, &axis.path, axis.values[vi].clone(), &mut r);
            }
            let label = match explicit_labels.get(e).cloned().flatten() {
                Some(name) if grid_values.is_empty() => name,
                Some(name) => format!("{name} {}", label(&grid_values)),
                None => label(&assignments),
            };
            // Labelled points may differ in label only: their values (and ids) must differ too.
            let values = serde_json::to_string(&assignments).unwrap_or_default();
            let repeated = labels
                .insert(label.clone(), index)
                .or_else(|| values_seen.insert(values, index));
            if let Some(prev) = repeated {
                let (origin, key) = match (axes.first(), fixed.first()) {
                    (Some(a), _) => (a.key.origin.clone(), format!("sweep.{}", a.key.name)),
                    (None, Some(a)) => (a.key.origin.clone(), "sweep.points".to_string()),
                    (None, None) => (root.origin.clone(), "sweep".to_string()),
                };
                r.error(&origin, &key, format!("sweep points {prev} and {index} are identical ({label}): a value is repeated"));
            }
            if let Some(config) = resolve::read_run(&tree, &mut r) {
                let id = point_id(&assignments);
                runs.push(Run {
                    index,
                    id,
                    label,
                    assignments,
                    config,
                });
            }
        }
    }
    let mut errors = r.errors;
    errors.sort();
    errors.dedup();
    if !errors.is_empty() {
        return Err(SpecErrors { sources, errors });
    }
    Ok(Spec {
        path: base_dir.join(name),
        sources,
        overrides: overrides.to_vec(),
        sweep_keys: {
            let mut keys: Vec<String> = runs
                .iter()
                .flat_map(|r: &Run| r.assignments.keys().cloned())
                .collect();
            keys.sort();
            keys.dedup();
            keys
        },
        runs,
    })
}

type Override = (node::Key, Vec<String>, Node);

fn parse_override(arg: &str, source: SourceId) -> Result<Override, SpecError> {
    let whole = Origin {
        source,
        span: 0..arg.len(),
    };
    let Some(eq) = arg.find('=') else {
        return Err(SpecError::new(&whole, "", "expected KEY=VALUE")
            .with_help("e.g. --set train.k=50 or --set train.objective=iwae"));
    };
    let raw_key = &arg[..eq];
    let key_origin = Origin {
        source,
        span: 0..eq,
    };
    let path: Vec<String> = raw_key
        .trim()
        .split('.')
        .map(|s| s.trim().to_string())
        .collect();
    if path.iter().any(|p| {
        p.is_empty()
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }) {
        return Err(SpecError::new(
            &key_origin,
            raw_key.trim(),
            format!("`{}` is not a dotted key path", raw_key.trim()),
        )
        .with_help("e.g. train.k"));
    }
    let rhs = &arg[eq + 1..];
    let value_origin = Origin {
        source,
        span: eq + 1..arg.len(),
    };
    let value = match DeValue::parse(rhs) {
        Ok(v) => {
            let mut n = node::from_value(&v, source);
            shift(&mut n, eq + 1);
            n
        }
        Err(_) => Node {
            value: node::Value::Str(rhs.to_string()),
            origin: value_origin,
        },
    };
    Ok((
        node::Key {
            name: path.join("."),
            origin: key_origin,
        },
        path,
        value,
    ))
}

/// Moves the spans of a value parsed from a slice of an argument to the argument's coordinates.
fn shift(n: &mut Node, by: usize) {
    n.origin.span = n.origin.span.start + by..n.origin.span.end + by;
    match &mut n.value {
        node::Value::Array(items) => items.iter_mut().for_each(|i| shift(i, by)),
        node::Value::Table(entries) => entries.iter_mut().for_each(|(k, v)| {
            k.origin.span = k.origin.span.start + by..k.origin.span.end + by;
            shift(v, by)
        }),
        _ => {}
    }
}

fn to_json(n: &Node) -> serde_json::Value {
    use node::Value::*;
    match &n.value {
        Str(s) | Datetime(s) => serde_json::Value::String(s.clone()),
        Int(i) => (*i).into(),
        Float(f) => serde_json::Number::from_f64(*f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Bool(b) => (*b).into(),
        Array(a) => a.iter().map(to_json).collect(),
        Table(t) => t
            .iter()
            .map(|(k, v)| (k.name.clone(), to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

/// `objective=iwae k=5`: the last key segment when it is unambiguous, else the whole path.
fn label(assignments: &BTreeMap<String, serde_json::Value>) -> String {
    let short = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    let ambiguous = |k: &str| assignments.keys().filter(|o| short(o) == short(k)).count() > 1;
    assignments
        .iter()
        .map(|(k, v)| {
            let name = if ambiguous(k) { k.clone() } else { short(k) };
            let value = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{name}={value}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn point_id(assignments: &BTreeMap<String, serde_json::Value>) -> String {
    if assignments.is_empty() {
        return "base".to_string();
    }
    let canonical = serde_json::to_string(assignments).unwrap_or_default();
    let hash = blake3::hash(canonical.as_bytes());
    format!("p-{}", &hash.to_hex()[..10])
}

/// The run's configuration as TOML for people (file references shown as plain paths).
pub fn to_toml(config: &RunConfig) -> String {
    fn strip(v: serde_json::Value) -> Option<toml::Value> {
        use serde_json::Value as J;
        Some(match v {
            J::Null => return None,
            J::Bool(b) => toml::Value::Boolean(b),
            J::Number(n) => match n.as_i64() {
                Some(i) => toml::Value::Integer(i),
                None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => toml::Value::String(s),
            J::Array(a) => toml::Value::Array(a.into_iter().filter_map(strip).collect()),
            J::Object(m) => {
                if let (1, Some(J::String(p))) = (m.len(), m.get("$file")) {
                    return Some(toml::Value::String(p.clone()));
                }
                toml::Value::Table(
                    m.into_iter()
                        .filter_map(|(k, v)| strip(v).map(|v| (k, v)))
                        .collect(),
                )
            }
        })
    }
    let json = serde_json::to_value(config).unwrap_or(serde_json::Value::Null);
    match strip(json) {
        Some(toml::Value::Table(t)) => toml::to_string_pretty(&t).unwrap_or_default(),
        _ => String::new(),
    }
}
