//! `vaepipe compare`: one table of every sweep point of one or more specs, read from the store
//! only (nothing is run): the parameters that differ between points, then each evaluated
//! variant's test NLL ± standard error, ELBO, active units, epochs and training seconds; and a
//! side-by-side view of two points (`--diff`). The CLI parses and prints; everything else is
//! here. The JSON forms are a contract (docs/cli.md).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value, json};
use vaepipe_engine::{Plan, Point, Registry, Store, plan};

use crate::artifacts::{self, EvaluatedVariant, TrainSummary};

/// One spec's points, as [`crate::points_of`] gives them.
pub struct SpecPoints {
    /// The pipeline name (`pipeline.name`).
    pub pipeline: String,
    pub points: Vec<Point>,
}

/// The metrics of one evaluated variant (eval `metrics.json` plus the train stage's
/// `train.json`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Metrics {
    pub test_nll: Option<f64>,
    pub test_nll_stderr: Option<f64>,
    pub elbo: Option<f64>,
    pub active_units: Option<f64>,
    pub eval_k: Option<f64>,
    pub images: Option<f64>,
    /// Training epochs run (`train.json` `epochs_run`).
    pub epochs: Option<f64>,
    /// Training time in seconds (`train.json` `seconds`).
    pub train_seconds: Option<f64>,
}

/// One row: a point and one of its evaluated variants (or the point alone when its
/// evaluation is not in the store).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub pipeline: String,
    pub index: usize,
    pub id: String,
    pub label: String,
    /// The eval variant (`standard`, `refit`, `finetuned`); null when not evaluated.
    pub variant: Option<String>,
    /// The eval instance's state: `done`, `missing`, `failed`, `running` or `interrupted`.
    pub state: String,
    /// Every parameter of the point, flattened to dotted keys (file references as paths).
    #[serde(skip)]
    pub all_params: BTreeMap<String, Value>,
    /// The parameters that differ between the compared points.
    pub params: BTreeMap<String, Value>,
    /// Null when the point has not been evaluated.
    pub metrics: Option<Metrics>,
    /// The eval stage's output directory of this point.
    pub eval_dir: Option<String>,
}

/// The comparison of every point of the given specs.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The parameter keys that differ between points, in key order.
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

/// Metric names accepted by `--sort` (besides parameter keys).
pub const METRICS: &[&str] = &[
    "test_nll",
    "test_nll_stderr",
    "elbo",
    "active_units",
    "epochs",
    "train_seconds",
    "eval_k",
    "images",
];

/// Builds the comparison from the store alone.
pub fn compare(
    registry: &Registry,
    store: &Store,
    specs: Vec<SpecPoints>,
) -> anyhow::Result<Comparison> {
    let mut rows = Vec::new();
    for s in specs {
        let p = plan(registry, store, &s.pipeline, s.points, false)?;
        rows.extend(rows_of(store, &p)?);
    }
    let columns = differing(&rows);
    for r in &mut rows {
        r.params = columns
            .iter()
            .map(|c| {
                (
                    c.clone(),
                    r.all_params.get(c).cloned().unwrap_or(Value::Null),
                )
            })
            .collect();
    }
    Ok(Comparison { columns, rows })
}

fn state(store: &Store, stage: &str, key: &str) -> anyhow::Result<&'static str> {
    Ok(if store.verify(stage, key)?.is_none() {
        "done"
    } else if store.is_locked(stage, key) {
        "running"
    } else if store.failure(stage, key).is_some() {
        "failed"
    } else if store.work_dir(stage, key).exists() {
        "interrupted"
    } else {
        "missing"
    })
}

/// A value read from an artifact (where `null` reads as NaN), `None` when not finite.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn rows_of(store: &Store, p: &Plan) -> anyhow::Result<Vec<Row>> {
    let instance_of = |stage: &str, point: usize| {
        p.instances
            .iter()
            .find(|i| i.stage == stage && i.points.contains(&point))
    };
    let mut rows = Vec::new();
    for (pi, point) in p.points.iter().enumerate() {
        let mut all_params = BTreeMap::new();
        let mut config = point.config.clone();
        if let Some(m) = config.as_object_mut() {
            m.remove("point");
        }
        flatten("", &config, &mut all_params);
        let train = match instance_of("train", pi) {
            Some(t) if state(store, t.stage, &t.key)? == "done" => {
                let path = store.output_dir(t.stage, &t.key).join("train.json");
                crate::read_json::<TrainSummary>(&path).ok()
            }
            _ => None,
        };
        let base = Row {
            pipeline: p.pipeline.clone(),
            index: point.index,
            id: point.id.clone(),
            label: point.label.clone(),
            variant: None,
            state: "missing".into(),
            all_params,
            params: BTreeMap::new(),
            metrics: None,
            eval_dir: None,
        };
        let Some(eval) = instance_of("eval", pi) else {
            rows.push(base);
            continue;
        };
        let dir = store.output_dir(eval.stage, &eval.key);
        let st = state(store, eval.stage, &eval.key)?;
        let base = Row {
            state: st.into(),
            eval_dir: Some(dir.display().to_string()),
            ..base
        };
        if st != "done" {
            rows.push(base);
            continue;
        }
        let variants: Vec<EvaluatedVariant> = crate::read_json(&dir.join("variants.json"))?;
        for v in variants {
            let name = v.name.as_str();
            let d = v.directory.as_str();
            let sub = if d.is_empty() || d.contains(['/', '\\']) || d == "." || d == ".." {
                name
            } else {
                d
            };
            let m: artifacts::Metrics = crate::read_json(&dir.join(sub).join("metrics.json"))?;
            let m = &m.estimates;
            let metrics = Metrics {
                test_nll: finite(m.test_nll),
                test_nll_stderr: finite(m.test_nll_stderr),
                elbo: finite(m.elbo),
                active_units: Some(m.active_units as f64),
                eval_k: Some(m.eval_k as f64),
                images: Some(m.images as f64),
                epochs: train.as_ref().map(|t| t.outcome.epochs_run as f64),
                train_seconds: train.as_ref().map(|t| t.outcome.seconds),
            };
            rows.push(Row {
                variant: Some(name.to_string()),
                metrics: Some(metrics),
                ..base.clone()
            });
        }
    }
    Ok(rows)
}

/// Flattens a JSON tree into dotted keys; `{"$file": path}` becomes the path.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("$file") => {
            out.insert(prefix.to_string(), m["$file"].clone());
        }
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// Keys whose values are not the same on every row (a key absent on some rows differs).
fn differing(rows: &[Row]) -> Vec<String> {
    let keys: BTreeSet<&String> = rows.iter().flat_map(|r| r.all_params.keys()).collect();
    keys.into_iter()
        .filter(|k| {
            let mut values = rows.iter().map(|r| r.all_params.get(*k));
            let first = values.next().flatten();
            values.any(|v| v != first)
        })
        .cloned()
        .collect()
}

/// The value `key` sorts by: a metric or a parameter (dotted key, or its last part when that
/// names one column).
fn sort_value<'a>(c: &Comparison, r: &'a Row, key: &str) -> Option<std::borrow::Cow<'a, Value>> {
    if let Some(m) = &r.metrics
        && METRICS.contains(&key)
    {
        let v = serde_json::to_value(m).ok()?;
        return v.get(key).cloned().map(std::borrow::Cow::Owned);
    }
    let full = resolve_key(c, key)?;
    r.all_params.get(&full).map(std::borrow::Cow::Borrowed)
}

fn resolve_key(c: &Comparison, key: &str) -> Option<String> {
    if c.rows.iter().any(|r| r.all_params.contains_key(key)) {
        return Some(key.to_string());
    }
    let mut hits = c.columns.iter().filter(|k| short_name(k) == key);
    match (hits.next(), hits.next()) {
        (Some(k), None) => Some(k.clone()),
        _ => None,
    }
}

/// Sorts the rows by a metric or a parameter (missing values last; ties keep spec order).
/// Fails on a key that is neither.
pub fn sort(c: &mut Comparison, key: &str) -> Result<(), String> {
    if !METRICS.contains(&key) && resolve_key(c, key).is_none() {
        return Err(format!(
            "--sort {key}: not a metric ({}) nor a parameter of the compared points (e.g. {})",
            METRICS.join(", "),
            c.columns.first().map_or("train.k", String::as_str)
        ));
    }
    let mut keyed: Vec<(Option<Value>, Row)> = c
        .rows
        .drain(..)
        .collect::<Vec<_>>()
        .into_iter()
        .map(|r| (None, r))
        .collect();
    let snapshot = Comparison {
        columns: c.columns.clone(),
        rows: keyed.iter().map(|(_, r)| r.clone()).collect(),
    };
    for (k, r) in &mut keyed {
        *k = sort_value(&snapshot, r, key)
            .map(|v| v.into_owned())
            .filter(|v| !v.is_null());
    }
    keyed.sort_by(|a, b| match (&a.0, &b.0) {
        (Some(x), Some(y)) => compare_values(x, y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    });
    c.rows = keyed.into_iter().map(|(_, r)| r).collect();
    Ok(())
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => cell(a).cmp(&cell(b)),
    }
}

/// The JSON form (docs/cli.md): `{"columns", "rows": [{"pipeline", "index", "id", "label",
/// "variant", "state", "params", "metrics", "eval_dir"}]}`.
pub fn to_json(c: &Comparison) -> Value {
    serde_json::to_value(c).unwrap_or(Value::Null)
}

/// Keys that only name a run; left out of the text table when a pipeline column is shown.
const NAMING: &[&str] = &["pipeline.name", "pipeline.description", "report.title"];

/// The last part of a dotted key (`train.k` → `k`).
fn short_name(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// A parameter value as table text.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => match s.rsplit('/').next() {
            // File paths: the file name is what tells points apart in a table.
            Some(f) if s.contains('/') => f.to_string(),
            _ => s.clone(),
        },
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        _ => "—".into(),
    }
}

fn shorten(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else if width <= 1 {
        "…".chars().take(width).collect()
    } else {
        let mut t: String = s.chars().take(width - 1).collect();
        t.push('…');
        t
    }
}

/// The table as text, at most `width` columns wide when possible (parameter columns are
/// shortened first, down to 4 characters each).
pub fn render_table(c: &Comparison, width: usize) -> String {
    let multi_pipeline = c
        .rows
        .iter()
        .map(|r| r.pipeline.as_str())
        .collect::<BTreeSet<_>>()
        .len()
        > 1;
    // Headers: the short name when it is unambiguous among the columns.
    let headers: Vec<String> = c
        .columns
        .iter()
        .filter(|k| !(multi_pipeline && NAMING.contains(&k.as_str())))
        .map(|k| {
            let s = short_name(k);
            if c.columns.iter().filter(|o| short_name(o) == s).count() > 1 {
                k.clone()
            } else {
                s.to_string()
            }
        })
        .collect();
    let param_keys: Vec<&String> = c
        .columns
        .iter()
        .filter(|k| !(multi_pipeline && NAMING.contains(&k.as_str())))
        .collect();
    let mut head: Vec<String> = vec!["#".into()];
    if multi_pipeline {
        head.insert(0, "pipeline".into());
    }
    head.extend(headers.iter().cloned());
    head.push("variant".into());
    let fixed_from = head.len() - 1;
    head.extend(
        ["test NLL ± se", "ELBO", "AU", "epochs", "train s"]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut body: Vec<Vec<String>> = Vec::new();
    for r in &c.rows {
        let mut line = vec![r.index.to_string()];
        if multi_pipeline {
            line.insert(0, r.pipeline.clone());
        }
        for k in &param_keys {
            line.push(cell(r.all_params.get(*k).unwrap_or(&Value::Null)));
        }
        line.push(r.variant.clone().unwrap_or_else(|| "—".into()));
        match &r.metrics {
            Some(m) => {
                let nll = match (m.test_nll, m.test_nll_stderr) {
                    (Some(n), Some(s)) if n.is_finite() && s.is_finite() => {
                        format!("{n:.2} ± {s:.2}")
                    }
                    (n, _) => fmt(n, 2),
                };
                line.extend([
                    nll,
                    fmt(m.elbo, 2),
                    fmt(m.active_units, 0),
                    fmt(m.epochs, 0),
                    fmt(m.train_seconds, 1),
                ]);
            }
            None => {
                line.push(format!("({})", r.state));
                line.extend(std::iter::repeat_n("—".to_string(), 4));
            }
        }
        body.push(line);
    }
    // Column widths: each column's widest cell; then, while too wide, shrink the widest
    // shrinkable column (pipeline and parameters) first down to its widest value (headers are
    // abbreviated first) or 8, then down to 4; if that is not enough, leave out parameter
    // columns from the right (named below the table) and fit again.
    let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * (w.len().saturating_sub(1));
    let fit = |head: &[String], body: &[Vec<String>], fixed_from: usize| -> Vec<usize> {
        let value_width: Vec<usize> = (0..head.len())
            .map(|i| body.iter().map(|l| l[i].chars().count()).max().unwrap_or(1))
            .collect();
        let mut widths: Vec<usize> = (0..head.len())
            .map(|i| value_width[i].max(head[i].chars().count()))
            .collect();
        for floor in [None, Some(4)] {
            while total(&widths) > width {
                let Some((i, _)) = widths[..fixed_from]
                    .iter()
                    .enumerate()
                    .filter(|(i, w)| **w > floor.unwrap_or(value_width[*i].clamp(4, 8)))
                    .max_by_key(|(_, w)| **w)
                else {
                    break;
                };
                widths[i] -= 1;
            }
        }
        widths
    };
    let first_param = if multi_pipeline { 2 } else { 1 };
    let mut fixed_from = fixed_from;
    let mut hidden: Vec<String> = Vec::new();
    let mut widths = fit(&head, &body, fixed_from);
    while total(&widths) > width && fixed_from > first_param {
        let i = fixed_from - 1;
        hidden.insert(0, head.remove(i));
        for line in &mut body {
            line.remove(i);
        }
        fixed_from -= 1;
        widths = fit(&head, &body, fixed_from);
    }
    let numeric = |i: usize| i > fixed_from;
    let mut out = String::new();
    for line in std::iter::once(&head).chain(body.iter()) {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = shorten(s, widths[i]);
                if numeric(i) {
                    format!("{s:>w$}", w = widths[i])
                } else {
                    format!("{s:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let missing = c.rows.iter().filter(|r| r.metrics.is_none()).count();
    let points: BTreeSet<(&str, usize)> = c
        .rows
        .iter()
        .map(|r| (r.pipeline.as_str(), r.index))
        .collect();
    let mut footer = format!(
        "{} point{}, {} not evaluated yet",
        points.len(),
        if points.len() == 1 { "" } else { "s" },
        missing
    );
    if !hidden.is_empty() {
        footer.push_str(&format!(
            "; columns not shown for want of width: {} (see --json, --diff or --width)",
            hidden.join(", ")
        ));
    }
    out.push_str(&wrap(&footer, width));
    if !c.columns.is_empty() {
        out.push_str(&wrap(
            &format!("parameters that differ: {}", c.columns.join(", ")),
            width,
        ));
    }
    out
}

/// Wraps text at spaces to lines of at most `width` characters (longer words stay whole).
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// Finds a row's point by id, label or `pipeline:index`/index; the first variant's row.
fn find_point<'a>(c: &'a Comparison, what: &str) -> Result<Vec<&'a Row>, String> {
    let matches = |r: &Row| {
        r.id == what
            || r.label == what
            || what.parse::<usize>().is_ok_and(|i| i == r.index)
            || format!("{}:{}", r.pipeline, r.index) == what
    };
    let points: BTreeSet<(&str, usize)> = c
        .rows
        .iter()
        .filter(|r| matches(r))
        .map(|r| (r.pipeline.as_str(), r.index))
        .collect();
    match points.len() {
        0 => Err(format!(
            "no point `{what}` among the compared specs (give an id such as {}, a label, or an index)",
            c.rows.first().map_or("p-…", |r| r.id.as_str())
        )),
        1 => Ok(c.rows.iter().filter(|r| matches(r)).collect()),
        n => Err(format!(
            "`{what}` names {n} points (in several specs?); use its id or PIPELINE:INDEX"
        )),
    }
}

/// Two points side by side: every parameter (those that differ first) and every variant's
/// metrics. JSON: `{"a": {pipeline, index, id, label, state}, "b": …, "params": [{"key", "a",
/// "b", "differs"}], "metrics": [{"variant", "key", "a", "b"}]}`.
pub fn diff(c: &Comparison, a: &str, b: &str) -> Result<Value, String> {
    let ra = find_point(c, a)?;
    let rb = find_point(c, b)?;
    let (pa, pb) = (&ra[0].all_params, &rb[0].all_params);
    let keys: BTreeSet<&String> = pa.keys().chain(pb.keys()).collect();
    let mut params: Vec<Value> = keys
        .into_iter()
        .map(|k| {
            let (x, y) = (pa.get(k), pb.get(k));
            json!({"key": k, "a": x, "b": y, "differs": x != y})
        })
        .collect();
    params.sort_by_key(|p| !p["differs"].as_bool().unwrap_or(false));
    let variants: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for r in ra.iter().chain(rb.iter()) {
            if let Some(n) = &r.variant
                && !v.contains(n)
            {
                v.push(n.clone());
            }
        }
        v
    };
    let metric_of = |rows: &[&Row], variant: &str, key: &str| -> Value {
        rows.iter()
            .find(|r| r.variant.as_deref() == Some(variant))
            .and_then(|r| r.metrics.as_ref())
            .and_then(|m| serde_json::to_value(m).ok())
            .and_then(|m| m.get(key).cloned())
            .unwrap_or(Value::Null)
    };
    let mut metrics = Vec::new();
    for v in &variants {
        for k in METRICS {
            metrics.push(json!({"variant": v, "key": k, "a": metric_of(&ra, v, k), "b": metric_of(&rb, v, k)}));
        }
    }
    let who = |r: &Row| json!({"pipeline": r.pipeline, "index": r.index, "id": r.id, "label": r.label, "state": r.state});
    Ok(json!({"a": who(ra[0]), "b": who(rb[0]), "params": params, "metrics": metrics}))
}

/// The text form of [`diff`]'s result.
pub fn render_diff(d: &Value, width: usize) -> String {
    let name = |w: &Value| {
        format!(
            "{} #{} {} ({})",
            w["pipeline"].as_str().unwrap_or(""),
            w["index"],
            w["label"].as_str().unwrap_or(""),
            w["id"].as_str().unwrap_or("")
        )
    };
    let col = (width.saturating_sub(4)) / 3;
    let mut out = format!("A = {}\nB = {}\n\n", name(&d["a"]), name(&d["b"]));
    let line = |out: &mut String, mark: &str, k: &str, a: &str, b: &str| {
        out.push_str(&format!(
            "{mark} {:<col$} {:<col$} {}\n",
            shorten(k, col),
            shorten(a, col),
            shorten(b, col)
        ));
    };
    line(&mut out, " ", "parameter", "A", "B");
    let show = |v: &Value| match v {
        Value::Null => "—".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for p in d["params"].as_array().into_iter().flatten() {
        let mark = if p["differs"].as_bool() == Some(true) {
            "*"
        } else {
            " "
        };
        line(
            &mut out,
            mark,
            p["key"].as_str().unwrap_or(""),
            &show(&p["a"]),
            &show(&p["b"]),
        );
    }
    out.push('\n');
    line(&mut out, " ", "metric (variant)", "A", "B");
    for m in d["metrics"].as_array().into_iter().flatten() {
        let f = |v: &Value| v.as_f64().map_or("—".to_string(), |x| format!("{x:.4}"));
        let (a, b) = (f(&m["a"]), f(&m["b"]));
        let mark = if a != b { "*" } else { " " };
        line(
            &mut out,
            mark,
            &format!(
                "{} ({})",
                m["key"].as_str().unwrap_or(""),
                m["variant"].as_str().unwrap_or("")
            ),
            &a,
            &b,
        );
    }
    out
}

/// Helper for the JSON of `--json` without `--diff`, with the spec files compared.
pub fn json_document(c: &Comparison, specs: &[String]) -> Value {
    let mut m = Map::new();
    m.insert("specs".into(), json!(specs));
    if let Value::Object(rest) = to_json(c) {
        m.extend(rest);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` points of two pipelines with 12 differing parameters; every third not evaluated.
    fn comparison(n: usize) -> Comparison {
        let rows: Vec<Row> = (0..n)
            .map(|i| {
                let mut all_params = BTreeMap::new();
                all_params.insert("pipeline.name".into(), json!(format!("pipe{}", i % 2)));
                for p in 0..11 {
                    all_params.insert(
                        format!("section{}.parameter_{p}", p % 3),
                        json!(format!("value-{}", (i + p) % 7)),
                    );
                }
                let evaluated = i % 3 != 0;
                Row {
                    pipeline: format!("pipe{}", i % 2),
                    index: i,
                    id: format!("p-{i:04}"),
                    label: format!("label {i}"),
                    variant: evaluated.then(|| "standard".into()),
                    state: if evaluated { "done" } else { "missing" }.into(),
                    all_params,
                    params: BTreeMap::new(),
                    metrics: evaluated.then(|| Metrics {
                        test_nll: Some(100.0 + ((i * 37) % 11) as f64),
                        test_nll_stderr: Some(0.5),
                        elbo: Some(-110.0),
                        active_units: Some(20.0),
                        epochs: Some(10.0),
                        train_seconds: Some(12.5),
                        ..Metrics::default()
                    }),
                    eval_dir: None,
                }
            })
            .collect();
        let columns = differing(&rows);
        Comparison { columns, rows }
    }

    #[test]
    fn the_table_fits_the_width_and_names_what_it_leaves_out() {
        let c = comparison(300);
        assert_eq!(c.columns.len(), 12);
        for width in [70, 100, 140] {
            let t = render_table(&c, width);
            for line in t.lines() {
                assert!(line.chars().count() <= width, "{width}: {line}");
            }
            assert!(t.contains("300 points, 100 not evaluated yet"), "{t}");
            assert!(t.contains("(missing)"));
        }
        assert!(render_table(&c, 100).contains("not shown for want of width"));
        assert!(!render_table(&c, 400).contains("not shown"));
    }

    #[test]
    fn sorting_puts_missing_values_last_and_rejects_unknown_keys() {
        let mut c = comparison(30);
        sort(&mut c, "test_nll").unwrap();
        let nll: Vec<Option<f64>> = c
            .rows
            .iter()
            .map(|r| r.metrics.as_ref().and_then(|m| m.test_nll))
            .collect();
        let known = nll.iter().take_while(|v| v.is_some()).count();
        assert_eq!(known, 20);
        assert!(nll[known..].iter().all(Option::is_none));
        assert!(nll[..known].windows(2).all(|w| w[0] <= w[1]), "{nll:?}");
        sort(&mut c, "parameter_4").unwrap();
        assert!(sort(&mut c, "nonsense").is_err());
    }

    #[test]
    fn diff_marks_exactly_the_differing_parameters() {
        let c = comparison(10);
        let d = diff(&c, "p-0001", "label 2").unwrap();
        let differs: Vec<&str> = d["params"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["differs"] == true)
            .map(|p| p["key"].as_str().unwrap())
            .collect();
        // Points 1 and 2: different pipelines, and every value-(i + p) % 7 differs.
        assert_eq!(differs.len(), 12, "{differs:?}");
        assert!(diff(&c, "p-0001", "nope").is_err());
        assert!(render_diff(&d, 100).contains("* pipeline.name"));
    }
}
