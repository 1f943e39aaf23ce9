//! `[sweep]`: a grid of values for keys of the spec, expanded into one run per point before
//! anything runs. Keys are dotted paths (`"train.k" = [1, 5, 50]`, or nested `[sweep.train]`
//! tables); points are ordered by key name (not file order), so reordering keys changes nothing.
//! Explicit points (`[[sweep.points]]`, each a table of key = value) list combinations that a
//! grid cannot express; the runs are every explicit point × every grid point. An explicit point
//! may carry a `label` that names it in place of its values.

use crate::node::{Key, Node, Value};
use crate::read::Reader;

/// One swept key and its values.
#[derive(Debug, Clone)]
pub struct Axis {
    pub key: Key,
    pub path: Vec<String>,
    pub values: Vec<Node>,
}

/// Keys that may not be swept.
const FIXED: &[&str] = &["pipeline.name"];

/// The key of `[sweep]` that holds explicit points.
const POINTS: &str = "points";

/// The key of an explicit point that names it (instead of its values) in labels.
const LABEL: &str = "label";

/// Reads the axes of `[sweep]`; errors are recorded in `r`.
pub fn axes(root: &Node, r: &mut Reader) -> Vec<Axis> {
    let Some(sweep) = root.get("sweep") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    match &sweep.value {
        Value::Table(entries) => {
            let grid: Vec<(Key, Node)> = entries
                .iter()
                .filter(|(k, _)| k.name != POINTS)
                .cloned()
                .collect();
            flatten(&grid, &mut Vec::new(), r, &mut out)
        }
        other => r.error(
            &sweep.origin,
            "sweep",
            format!("expected a table of arrays, found {}", other.type_name()),
        ),
    }
    out.sort_by(|a, b| a.key.name.cmp(&b.key.name));
    out
}

/// One explicit assignment: a key path and its value.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub key: Key,
    pub path: Vec<String>,
    pub value: Node,
}

/// Reads `[[sweep.points]]`: one list of assignments per explicit point (empty: no explicit
/// points). A key may not also be a grid axis.
pub fn explicit_points(root: &Node, axes: &[Axis], r: &mut Reader) -> Vec<Vec<Assignment>> {
    let Some(points) = root.get("sweep").and_then(|s| s.get(POINTS)) else {
        return Vec::new();
    };
    let Value::Array(items) = &points.value else {
        r.error_help(
            &points.origin,
            "sweep.points",
            format!(
                "expected an array of tables, found {}",
                points.value.type_name()
            ),
            "write each point as [[sweep.points]] followed by key = value lines",
        );
        return Vec::new();
    };
    if items.is_empty() {
        r.error(&points.origin, "sweep.points", "needs at least one point");
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Table(entries) = &item.value else {
            r.error(
                &item.origin,
                &format!("sweep.points[{i}]"),
                format!(
                    "expected a table of key = value, found {}",
                    item.value.type_name()
                ),
            );
            continue;
        };
        let mut assignments = Vec::new();
        collect(entries, &[], i, r, &mut assignments);
        for a in &assignments {
            let dotted = a.path.join(".");
            if axes.iter().any(|x| x.path == a.path) {
                r.error(
                    &a.key.origin,
                    &format!("sweep.points[{i}].{dotted}"),
                    format!("`{dotted}` is also a grid axis of [sweep]; set it in one place"),
                );
            }
        }
        assignments.sort_by(|a, b| a.key.name.cmp(&b.key.name));
        out.push(assignments);
    }
    out
}

/// The `label` of each explicit point (`None` where it has none), in the order of
/// [`explicit_points`]: a point's label replaces its assigned values in the run's label (e.g.
/// `label = "IWAE, 2 layers"` for a point that sets `model.layers`); grid values are appended.
pub fn explicit_labels(root: &Node, r: &mut Reader) -> Vec<Option<String>> {
    let Some(Value::Array(items)) = root
        .get("sweep")
        .and_then(|s| s.get(POINTS))
        .map(|p| &p.value)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let label = item.get(LABEL).and_then(|n| match &n.value {
            Value::Str(s) if !s.trim().is_empty() && !s.chars().any(char::is_control) => {
                Some(s.trim().to_string())
            }
            _ => {
                r.error(
                    &n.origin,
                    &format!("sweep.points[{i}].{LABEL}"),
                    "a point's label must be a non-empty string without control characters",
                );
                None
            }
        });
        out.push(label);
    }
    out
}

fn collect(
    entries: &[(Key, Node)],
    prefix: &[String],
    i: usize,
    r: &mut Reader,
    out: &mut Vec<Assignment>,
) {
    for (key, node) in entries {
        if prefix.is_empty() && key.name == LABEL {
            // Read by `explicit_labels`.
            continue;
        }
        let mut path = prefix.to_vec();
        path.extend(key.name.split('.').map(|s| s.trim().to_string()));
        let dotted = path.join(".");
        let at = format!("sweep.points[{i}].{dotted}");
        if path.iter().any(String::is_empty) {
            r.error(
                &key.origin,
                &at,
                "a key must be a dotted path like \"train.k\"",
            );
        } else if let (Value::Table(inner), true) = (&node.value, path.len() < 2) {
            collect(inner, &path, i, r, out);
        } else if path.len() < 2 {
            r.error_help(
                &key.origin,
                &at,
                format!("`{dotted}` is a section, not a key"),
                "e.g. \"train.k\" = 5",
            );
        } else if FIXED.contains(&dotted.as_str()) {
            r.error(
                &key.origin,
                &at,
                format!("`{dotted}` cannot be swept: one pipeline has one name"),
            );
        } else if path[0] == "sweep" {
            r.error(&key.origin, &at, "a sweep cannot sweep itself");
        } else {
            out.push(Assignment {
                key: Key {
                    name: dotted,
                    origin: key.origin.clone(),
                },
                path,
                value: node.clone(),
            });
        }
    }
}

fn flatten(entries: &[(Key, Node)], prefix: &mut [String], r: &mut Reader, out: &mut Vec<Axis>) {
    for (key, node) in entries {
        let mut path = prefix.to_vec();
        path.extend(key.name.split('.').map(|s| s.trim().to_string()));
        let dotted = path.join(".");
        if path.iter().any(String::is_empty) {
            r.error(
                &key.origin,
                &format!("sweep.{dotted}"),
                "a sweep key must be a dotted path like \"train.k\"",
            );
            continue;
        }
        match &node.value {
            Value::Table(inner) => flatten(inner, &mut path, r, out),
            Value::Array(values) => {
                if path.len() < 2 {
                    r.error_help(
                        &key.origin,
                        &format!("sweep.{dotted}"),
                        format!("`{dotted}` is a section, not a key"),
                        "sweep a key inside it, e.g. \"train.k\" = [1, 5]",
                    );
                } else if path[0] == "sweep" {
                    r.error(
                        &key.origin,
                        &format!("sweep.{dotted}"),
                        "a sweep cannot sweep itself",
                    );
                } else if FIXED.contains(&dotted.as_str()) {
                    r.error(
                        &key.origin,
                        &format!("sweep.{dotted}"),
                        format!("`{dotted}` cannot be swept: one pipeline has one name"),
                    );
                } else if values.is_empty() {
                    r.error(
                        &node.origin,
                        &format!("sweep.{dotted}"),
                        "a sweep needs at least one value",
                    );
                } else if out.iter().any(|a: &Axis| a.path == path) {
                    r.error(
                        &key.origin,
                        &format!("sweep.{dotted}"),
                        format!("`{dotted}` is swept twice"),
                    );
                } else {
                    let key = Key {
                        name: dotted,
                        origin: key.origin.clone(),
                    };
                    out.push(Axis {
                        key,
                        path,
                        values: values.clone(),
                    });
                }
            }
            other => r.error_help(
                &node.origin,
                &format!("sweep.{dotted}"),
                format!(
                    "expected an array of values to sweep over, found {}",
                    other.type_name()
                ),
                format!("write \"{dotted}\" = [a, b, …]"),
            ),
        }
    }
}

/// The grid: for each point, one value index per axis (first axis slowest).
pub fn grid(axes: &[Axis]) -> Vec<Vec<usize>> {
    let mut points = vec![Vec::new()];
    for axis in axes {
        let mut next = Vec::with_capacity(points.len() * axis.values.len());
        for p in &points {
            for i in 0..axis.values.len() {
                let mut q = p.clone();
                q.push(i);
                next.push(q);
            }
        }
        points = next;
    }
    points
}
