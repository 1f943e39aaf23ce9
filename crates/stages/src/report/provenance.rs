//! The specs as run and the provenance section (versions, seeds, stage keys, durations,
//! hosts, failures).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use vaepipe_engine::{Context, Manifest};
use vaepipe_report::{Align, Block};

use super::gather::{Gathered, PointRun, stage_rank};
use super::tables::value_text;
use super::{MAX_FIGURE_POINTS, UPSTREAM};

pub(super) fn spec_section(points: &[PointRun], blocks: &mut Vec<Block>) {
    blocks.push(Block::Heading(1, "Specs as run".into()));
    blocks.push(Block::Paragraph(
        "The fully resolved configuration of each run (defaults filled in, overrides and sweep values applied; input files as paths)."
            .into(),
    ));
    let full = points.len() <= MAX_FIGURE_POINTS;
    for (i, p) in points.iter().enumerate() {
        blocks.push(Block::Heading(
            2,
            format!("{} (point {}, id {})", p.name(), p.index, p.id),
        ));
        if full || i == 0 {
            let (lang, text) = spec_text(&p.config);
            blocks.push(Block::Code {
                lang: lang.into(),
                text,
            });
        } else {
            let mut a = BTreeMap::new();
            let mut b = BTreeMap::new();
            flatten("", &strip_point(&points[0].config), &mut a);
            flatten("", &strip_point(&p.config), &mut b);
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            let diff: Vec<String> = keys
                .into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
                .map(|k| {
                    format!(
                        "{k} = {}",
                        b.get(k).cloned().unwrap_or_else(|| "(unset)".into())
                    )
                })
                .collect();
            blocks.push(Block::Paragraph(format!("As {} except:", points[0].name())));
            blocks.push(Block::Code {
                lang: "toml".into(),
                text: diff.join("\n"),
            });
        }
    }
}

pub(super) fn strip_point(config: &Value) -> Value {
    let mut c = config.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("point");
    }
    c
}

/// The run's configuration as TOML (through `vaepipe_spec::to_toml`), or as JSON if it does
/// not deserialize as a `RunConfig` (e.g. written by another version).
pub(super) fn spec_text(config: &Value) -> (&'static str, String) {
    match serde_json::from_value::<vaepipe_spec::RunConfig>(strip_point(config)) {
        Ok(run) => ("toml", vaepipe_spec::to_toml(&run)),
        Err(_) => (
            "json",
            serde_json::to_string_pretty(config).unwrap_or_default(),
        ),
    }
}

/// Dotted key → TOML-ish value text, for differences between points.
pub(super) fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) if !(m.len() == 1 && m.contains_key("$file")) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, out);
            }
        }
        Value::Object(m) => {
            out.insert(
                prefix.to_string(),
                m.get("$file").map(|f| f.to_string()).unwrap_or_default(),
            );
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

pub(super) fn short(key: &str) -> &str {
    key.get(..10).unwrap_or(key)
}

pub(super) fn provenance_section(
    ctx: &Context,
    points: &[PointRun],
    g: &Gathered,
    blocks: &mut Vec<Block>,
) {
    blocks.push(Block::Heading(1, "Provenance".into()));
    let versions: BTreeSet<&str> = g
        .manifests
        .iter()
        .map(|(_, m)| m.tool_version.as_str())
        .filter(|v| !v.is_empty())
        .collect();
    let revisions: BTreeSet<&str> = g
        .manifests
        .iter()
        .filter_map(|(_, m)| m.git_revision.as_deref())
        .collect();
    let seeds: BTreeSet<String> = points
        .iter()
        .filter_map(|p| p.cfg("pipeline.seed"))
        .map(value_text)
        .collect();
    let bin_seeds: BTreeSet<String> = points
        .iter()
        .filter_map(|p| p.cfg("eval.binarization_seed"))
        .map(value_text)
        .collect();
    let join = |s: &BTreeSet<&str>| {
        if s.is_empty() {
            "not recorded".to_string()
        } else {
            s.iter().copied().collect::<Vec<_>>().join(", ")
        }
    };
    blocks.push(Block::List(vec![
        format!("Computed with vaepipe {}; rendered with vaepipe {}.", join(&versions), env!("CARGO_PKG_VERSION")),
        format!("Git revision: {}.", join(&revisions)),
        format!(
            "Seeds: pipeline.seed = {}; test binarization seed = {}. Every other random stream is derived from the pipeline seed and a purpose (seed_for(seed, \"stage/purpose\")).",
            seeds.into_iter().collect::<Vec<_>>().join(", "),
            bin_seeds.into_iter().collect::<Vec<_>>().join(", ")
        ),
        "Store entries are named <stage>/<key> (under <store>/store/); a key hashes the stage's parameters, version and inputs.".into(),
    ]));
    let header: Vec<String> = ["stage", "runs", "key", "started", "seconds", "host"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let label_of = |m: &Manifest| -> String {
        let labels: Vec<String> = points
            .iter()
            .filter(|p| {
                m.points.iter().any(|r| r.id == p.id)
                    || p.keys.get(m.stage.as_str()) == Some(&m.key)
            })
            .map(PointRun::name)
            .collect();
        if labels.len() == points.len() && points.len() > 1 {
            "all".to_string()
        } else {
            labels.join("; ")
        }
    };
    let mut ms: Vec<&Manifest> = g.manifests.iter().map(|(_, m)| m).collect();
    ms.sort_by(|a, b| {
        (stage_rank(&a.stage), &a.started, &a.key).cmp(&(stage_rank(&b.stage), &b.started, &b.key))
    });
    let rows = ms
        .iter()
        .map(|m| {
            vec![
                m.stage.clone(),
                label_of(m),
                m.key.clone(),
                m.started.clone(),
                format!("{:.1}", m.duration_s),
                m.host.clone(),
            ]
        })
        .collect();
    blocks.push(Block::Table {
        header,
        rows,
        align: vec![
            Align::Left,
            Align::Left,
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Left,
        ],
    });

    // Failures: from the engine, and points that simply have nothing (e.g. re-rendered from the
    // store without the failure records).
    let mut failures = Vec::new();
    for m in ctx.missing {
        let labels: Vec<String> = points
            .iter()
            .filter(|p| m.points.iter().any(|r| r.id == p.id))
            .map(PointRun::name)
            .collect();
        let log = m
            .log
            .as_deref()
            .map(log_text)
            .unwrap_or_else(|| "no log".into());
        failures.push(format!(
            "{} for {} ({}): {}; log: {log}",
            m.stage,
            labels.join("; "),
            short(&m.key),
            m.reason.trim()
        ));
    }
    for p in points.iter().filter(|p| p.missing.is_empty()) {
        let absent: Vec<&str> = UPSTREAM
            .iter()
            .copied()
            .filter(|s| !p.keys.contains_key(s))
            .collect();
        if !absent.is_empty() {
            failures.push(format!(
                "{}: no output of {} was available to the report",
                p.name(),
                absent.join(", ")
            ));
        }
    }
    if !failures.is_empty() {
        blocks.push(Block::Heading(2, "Failed or skipped stages".into()));
        blocks.push(Block::List(failures));
    }
}

/// A log path shown relative to its store (`logs/<stage>/<key>.log`), which does not depend on
/// where the store lives.
pub(super) fn log_text(path: &Path) -> String {
    let parts: Vec<String> = path
        .components()
        .rev()
        .take(3)
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    match parts.as_slice() {
        [file, stage, logs] if logs == "logs" => format!("<store>/logs/{stage}/{file}"),
        _ => path.display().to_string(),
    }
}
