//! Test NLL in the layout of Burda et al. (2016), Table 1, extended to several stochastic layers
//! and the IWAE variants of Rainforth et al. (2018): rows are objectives (with their settings) ×
//! prior variants, columns the samples per data point, one table per number of stochastic layers
//! (and per combination of the other swept keys), each of our cells beside the paper's number
//! where one exists. The papers' numbers are in [`PAPERS`], with their sources.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use vaepipe_report::Block;

use super::compose::{nll_cell, status_of};
use super::gather::{Gathered, PointRun};
use super::tables::{table, value_text};

/// One published test NLL (nats, dynamically binarized MNIST, k = 5000 at test time).
pub(super) struct PaperNll {
    /// Stochastic layers of the network (1: 784-200-200-50; 2: 784-200-200-100-100-100-50).
    pub(super) layers: usize,
    /// The spec's `train.objective`.
    pub(super) objective: &'static str,
    /// `train.m` (MIWAE, PIWAE) or `train.beta` (CIWAE); `None` for the ELBO and IWAE.
    pub(super) setting: Option<f64>,
    /// Samples per data point in training (k; M·K for MIWAE and PIWAE).
    pub(super) samples: u64,
    pub(super) nll: f64,
    pub(super) source: &'static str,
}

const BURDA: &str =
    "Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, ICLR, Table 1";
const RAINFORTH: &str = "Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh (2018), Tighter Variational Bounds are Not Necessarily Better, ICML (one-layer net, 64 samples)";

const fn paper(
    layers: usize,
    objective: &'static str,
    setting: Option<f64>,
    samples: u64,
    nll: f64,
    source: &'static str,
) -> PaperNll {
    PaperNll {
        layers,
        objective,
        setting,
        samples,
        nll,
        source,
    }
}

/// The papers' numbers: Burda et al. (2016) Table 1 (VAE and IWAE, k = 1, 5, 50, one and two
/// stochastic layers; with k = 1 both are the ELBO) and Rainforth et al. (2018): PIWAE(M = 8,
/// K = 8), MIWAE(8, 8), CIWAE(β = 0.05) with 64 samples.
pub(super) const PAPERS: [PaperNll; 15] = [
    paper(1, "elbo", None, 1, 86.76, BURDA),
    paper(1, "elbo", None, 5, 86.47, BURDA),
    paper(1, "elbo", None, 50, 86.35, BURDA),
    paper(1, "iwae", None, 1, 86.76, BURDA),
    paper(1, "iwae", None, 5, 85.54, BURDA),
    paper(1, "iwae", None, 50, 84.78, BURDA),
    paper(2, "elbo", None, 1, 85.33, BURDA),
    paper(2, "elbo", None, 5, 85.01, BURDA),
    paper(2, "elbo", None, 50, 84.78, BURDA),
    paper(2, "iwae", None, 1, 85.33, BURDA),
    paper(2, "iwae", None, 5, 83.89, BURDA),
    paper(2, "iwae", None, 50, 82.90, BURDA),
    paper(1, "piwae", Some(8.0), 64, 84.46, RAINFORTH),
    paper(1, "ciwae", Some(0.05), 64, 84.57, RAINFORTH),
    paper(1, "miwae", Some(8.0), 64, 84.97, RAINFORTH),
];

/// An objective row: `train.objective` and its setting (`train.m` or `train.beta`).
#[derive(Clone, Debug, PartialEq, PartialOrd)]
struct Row {
    order: usize,
    objective: String,
    setting: Option<f64>,
}

impl Row {
    fn of(p: &PointRun) -> Row {
        let objective = p
            .cfg("train.objective")
            .and_then(Value::as_str)
            .unwrap_or("elbo")
            .to_string();
        let setting = match objective.as_str() {
            "miwae" | "piwae" => Some(p.cfg("train.m").and_then(Value::as_f64).unwrap_or(1.0)),
            "ciwae" => p.cfg("train.beta").and_then(Value::as_f64),
            _ => None,
        };
        let order = ["elbo", "iwae", "miwae", "ciwae", "piwae"]
            .iter()
            .position(|o| *o == objective)
            .unwrap_or(5);
        Row {
            order,
            objective,
            setting,
        }
    }

    fn name(&self) -> String {
        let s = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v}"));
        match self.objective.as_str() {
            "elbo" => "VAE (ELBO)".into(),
            "iwae" => "IWAE (L_k)".into(),
            "miwae" => format!("MIWAE (M = {})", s(self.setting)),
            "piwae" => format!("PIWAE (M = {})", s(self.setting)),
            "ciwae" => format!("CIWAE (β = {})", s(self.setting)),
            other => other.to_string(),
        }
    }

    fn paper(&self, layers: usize, samples: u64) -> Option<&'static PaperNll> {
        PAPERS.iter().find(|c| {
            c.layers == layers
                && c.objective == self.objective
                && c.samples == samples
                && c.setting == self.setting
        })
    }
}

/// Stochastic layers of a point's model (1 + `model.upper`).
fn layers_of(p: &PointRun) -> usize {
    1 + p
        .cfg("model.upper")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// Samples per data point in training: k, or M·K for MIWAE and PIWAE.
fn samples_of(p: &PointRun) -> Option<u64> {
    let k = p.cfg("train.k").and_then(Value::as_u64)?;
    match p.cfg("train.objective").and_then(Value::as_str) {
        Some("miwae" | "piwae") => Some(k * p.cfg("train.m").and_then(Value::as_u64).unwrap_or(1)),
        _ => Some(k),
    }
}

/// Keys that the layout itself spreads over rows, columns and tables.
const LAID_OUT: [&str; 5] = [
    "train.objective",
    "train.k",
    "train.m",
    "train.beta",
    "model.layers",
];

pub(super) fn burda_tables(
    points: &[PointRun],
    g: &Gathered,
    sweep_keys: &BTreeSet<String>,
    blocks: &mut Vec<Block>,
) {
    blocks.push(Block::Heading(
        2,
        "Comparison in the layout of Burda et al. (2016), Table 1".into(),
    ));
    let others: Vec<&String> = sweep_keys
        .iter()
        .filter(|k| !LAID_OUT.contains(&k.as_str()))
        .collect();
    let several_layers = points.iter().map(layers_of).collect::<BTreeSet<_>>().len() > 1;
    let mut groups: BTreeMap<(usize, String), Vec<&PointRun>> = BTreeMap::new();
    for p in points {
        let sw = p.swept();
        let label: Vec<String> = others
            .iter()
            .map(|k| format!("{k}={}", sw.get(*k).map(value_text).unwrap_or_default()))
            .collect();
        groups
            .entry((layers_of(p), label.join(" ")))
            .or_default()
            .push(p);
    }
    for ((layers, other), group) in &groups {
        let mut what = Vec::new();
        if several_layers || *layers > 1 {
            what.push(match layers {
                1 => "one stochastic layer".to_string(),
                2 => "two stochastic layers".to_string(),
                n => format!("{n} stochastic layers"),
            });
        }
        if !other.is_empty() {
            what.push(other.clone());
        }
        if !what.is_empty() {
            blocks.push(Block::Paragraph(format!("With {}:", what.join(", "))));
        }
        group_table(*layers, group, g, blocks);
    }
    blocks.push(Block::Paragraph(
        "Columns: samples per data point in training (k; M·K for MIWAE and PIWAE, whose K is k). Beside each of our \
         cells, for context only, the paper's test NLL for the same objective, setting, samples and number of \
         stochastic layers (dynamically binarized MNIST, all 60 000 training images, 3 280 passes, k = 5 000 at test \
         time; one layer 784-200-200-50, two layers 784-200-200-100 and 100-100-50, tanh): Burda, Grosse & \
         Salakhutdinov (2016), Table 1, and Rainforth et al. (2018), one-layer net with 64 samples. Runs that are \
         shorter or on a subset are comparable in their ordering only. With k = 1 the IWAE bound is the ELBO."
            .into(),
    ));
    paper_table(blocks);
}

fn group_table(layers: usize, group: &[&PointRun], g: &Gathered, blocks: &mut Vec<Block>) {
    let columns: BTreeSet<u64> = group.iter().filter_map(|p| samples_of(p)).collect();
    let mut rows_of: Vec<Row> = Vec::new();
    for p in group {
        let r = Row::of(p);
        if !rows_of.contains(&r) {
            rows_of.push(r);
        }
    }
    rows_of.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    // Prior variants, in order of first appearance.
    let mut variants: Vec<(String, String)> = Vec::new();
    for p in group {
        for v in g
            .eval_of(p)
            .map(|e| e.variants.as_slice())
            .unwrap_or_default()
        {
            if !variants.iter().any(|(n, _)| *n == v.name) {
                variants.push((v.name.clone(), v.label.clone()));
            }
        }
    }
    if variants.is_empty() {
        variants.push((String::new(), "—".into()));
    }
    // A paper column after each k that has a paper number in this table.
    let with_paper: BTreeSet<u64> = columns
        .iter()
        .copied()
        .filter(|s| rows_of.iter().any(|r| r.paper(layers, *s).is_some()))
        .collect();
    let mut header = vec!["objective".to_string(), "prior".to_string()];
    for s in &columns {
        header.push(format!("k = {s}"));
        if with_paper.contains(s) {
            header.push(format!("paper, k = {s}"));
        }
    }
    let mut rows = Vec::new();
    for row in &rows_of {
        for (vname, vlabel) in &variants {
            let mut cells = vec![row.name(), vlabel.clone()];
            for s in &columns {
                let point = group
                    .iter()
                    .find(|p| Row::of(p) == *row && samples_of(p) == Some(*s));
                cells.push(match point {
                    None => String::new(),
                    Some(p) => match g
                        .eval_of(p)
                        .and_then(|e| e.variants.iter().find(|v| v.name == *vname))
                    {
                        Some(v) => nll_cell(v.metrics.as_ref()),
                        None if g.eval_of(p).is_none() => status_of(p),
                        None => "—".into(),
                    },
                });
                if with_paper.contains(s) {
                    cells.push(
                        row.paper(layers, *s)
                            .map_or(String::new(), |c| format!("{:.2}", c.nll)),
                    );
                }
            }
            rows.push(cells);
        }
    }
    blocks.push(table(&header, 2, rows));
}

/// The papers' numbers by themselves, with their sources.
fn paper_table(blocks: &mut Vec<Block>) {
    let header = ["paper", "layers", "k = 1", "k = 5", "k = 50"];
    let mut rows = Vec::new();
    for layers in [1, 2] {
        for (objective, name) in [("elbo", "VAE"), ("iwae", "IWAE")] {
            let mut row = vec![format!("{name} (paper)"), layers.to_string()];
            for k in [1, 5, 50] {
                let cell = PAPERS.iter().find(|c| {
                    (c.layers, c.objective, c.samples, c.setting) == (layers, objective, k, None)
                });
                row.push(cell.map_or(String::new(), |c| format!("{:.2}", c.nll)));
            }
            rows.push(row);
        }
    }
    blocks.push(table(&header, 2, rows));
    let variants: Vec<String> = PAPERS
        .iter()
        .filter(|c| c.setting.is_some())
        .map(|c| {
            let row = Row {
                order: 0,
                objective: c.objective.to_string(),
                setting: c.setting,
            };
            format!("{} with {} samples: {:.2}", row.name(), c.samples, c.nll)
        })
        .collect();
    let sources: Vec<&str> = PAPERS.iter().fold(Vec::new(), |mut v, c| {
        if !v.contains(&c.source) {
            v.push(c.source);
        }
        v
    });
    blocks.push(Block::Paragraph(format!(
        "The IWAE variants (paper, one layer): {}. Sources: {}.",
        variants.join("; "),
        sources.join("; ")
    )));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(config: Value) -> PointRun {
        serde_json::from_value(serde_json::json!({
            "index": 0, "id": "p", "label": "", "config": config
        }))
        .unwrap()
    }

    #[test]
    fn rows_columns_and_paper_cells_follow_the_objective_and_layers() {
        let miwae = point(serde_json::json!({
            "train": {"objective": "miwae", "k": 8, "m": 8},
            "model": {"latent": 50}
        }));
        let row = Row::of(&miwae);
        assert_eq!((samples_of(&miwae), layers_of(&miwae)), (Some(64), 1));
        assert_eq!(row.name(), "MIWAE (M = 8)");
        assert_eq!(row.paper(1, 64).map(|c| c.nll), Some(84.97));
        assert!(row.paper(2, 64).is_none());
        let ciwae = point(serde_json::json!({
            "train": {"objective": "ciwae", "k": 64, "beta": 0.05}
        }));
        assert_eq!(samples_of(&ciwae), Some(64));
        assert_eq!(Row::of(&ciwae).paper(1, 64).map(|c| c.nll), Some(84.57));
        // Another β has no paper number.
        let other = point(serde_json::json!({
            "train": {"objective": "ciwae", "k": 64, "beta": 0.5}
        }));
        assert!(Row::of(&other).paper(1, 64).is_none());
        let piwae = point(serde_json::json!({
            "train": {"objective": "piwae", "k": 8, "m": 8}
        }));
        assert_eq!(Row::of(&piwae).paper(1, 64).map(|c| c.nll), Some(84.46));
        let two = point(serde_json::json!({
            "train": {"objective": "iwae", "k": 50},
            "model": {"latent": 100, "upper": [{"latent": 50, "encoder": [100, 100], "decoder": [100, 100]}]}
        }));
        assert_eq!(layers_of(&two), 2);
        assert_eq!(Row::of(&two).paper(2, 50).map(|c| c.nll), Some(82.90));
        // Rows in the fixed order ELBO, IWAE, MIWAE, CIWAE, PIWAE.
        assert!(Row::of(&two) < row && row < Row::of(&ciwae) && Row::of(&ciwae) < Row::of(&piwae));
    }

    #[test]
    fn every_table_1_cell_has_one_paper_number() {
        for layers in [1, 2] {
            for objective in ["elbo", "iwae"] {
                for k in [1, 5, 50] {
                    let n = PAPERS
                        .iter()
                        .filter(|c| (c.layers, c.objective, c.samples) == (layers, objective, k))
                        .count();
                    assert_eq!(n, 1, "{layers} {objective} {k}");
                }
            }
        }
    }
}
