//! The results tables: every run's numbers, paired differences, and the Burda et al. (2016)
//! Table 1-style comparison.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use vaepipe_nn::MeanStderr;
use vaepipe_report::{Align, Block};

use crate::artifacts::Estimates;

use super::compose::{Notes, nll_cell, num, status_of};
use super::gather::{EvalVariant, Gathered, PointRun};
use super::training::{evaluated, run_variant};

pub(super) fn results_table(
    points: &[PointRun],
    g: &Gathered,
    notes: &Notes,
    blocks: &mut Vec<Block>,
) {
    let header = [
        "run",
        "variant (prior)",
        "test NLL",
        "ELBO",
        "KL",
        "recon",
        "active units",
        "eval k",
        "images",
        "epochs",
        "train s",
    ];
    let mut rows = Vec::new();
    for p in points {
        let train = g.train_of(p).and_then(|t| t.json.as_ref());
        let epochs = train.map_or("—".into(), |t| t.epochs_run.to_string());
        let seconds = num(train.map(|t| t.seconds), 1);
        match g.eval_of(p).filter(|e| !e.variants.is_empty()) {
            None => {
                // No variant: dashes up to the training columns.
                let mut row = vec![p.name(), "—".into(), status_of(p)];
                row.resize(header.len() - 2, "—".into());
                row.extend([epochs, seconds]);
                rows.push(row);
            }
            Some(e) => {
                for v in &e.variants {
                    let m = v.metrics.as_ref();
                    let int =
                        |f: fn(&Estimates) -> usize| m.map_or("—".into(), |m| f(m).to_string());
                    let units = match (
                        int(|m| m.active_units),
                        p.cfg("model.latent").and_then(Value::as_u64),
                    ) {
                        (a, Some(l)) if a != "—" => format!("{a}/{l}"),
                        (a, _) => a,
                    };
                    let nll = match notes.number(v) {
                        Some(i) => format!("{} [note {i}]", nll_cell(m)),
                        None => nll_cell(m),
                    };
                    rows.push(vec![
                        p.name(),
                        v.label.clone(),
                        nll,
                        num(m.map(|m| m.elbo), 2),
                        num(m.map(|m| m.kl), 2),
                        num(m.map(|m| m.recon), 2),
                        units,
                        int(|m| m.eval_k),
                        int(|m| m.images),
                        epochs.clone(),
                        seconds.clone(),
                    ]);
                }
            }
        }
    }
    blocks.push(table(&header, 2, rows));
    blocks.push(Block::Paragraph(
        "ELBO, KL and recon are test-set averages per image (recon is the expected log-likelihood term E_q log p(x|z)). \
         Active units: latent dimensions j with Cov_x E_q[z_j|x] above the eval threshold (Burda et al. 2016, §5.2). \
         epochs and train s are the training stage's epochs run and seconds."
            .into(),
    ));
}

/// Differences in test NLL to the first evaluated run, paired over the test images both
/// evaluated (same images, same fixed binarization): the standard error of a paired difference
/// is usually far smaller than the ± of each NLL, which includes the spread between images.
pub(super) fn paired_table(points: &[PointRun], g: &Gathered, blocks: &mut Vec<Block>) {
    let all: Vec<(&PointRun, &EvalVariant)> = evaluated(points, g)
        .into_iter()
        .filter(|(_, v)| !v.nll.is_empty())
        .collect();
    let Some(((rp, rv), rest)) = all.split_first() else {
        return;
    };
    if rest.is_empty() {
        return;
    }
    let reference: BTreeMap<i64, f64> = rv.nll.iter().copied().collect();
    let mut rows = Vec::new();
    for (p, v) in rest {
        let diffs: Vec<f64> = v
            .nll
            .iter()
            .filter_map(|(i, x)| reference.get(i).map(|r| x - r))
            .filter(|d| d.is_finite())
            .collect();
        let n = diffs.len();
        let d = MeanStderr::of(&diffs);
        let cell = match n {
            0 => "no common images".to_string(),
            // One image: no standard error (MeanStderr's 0 would claim an exact difference).
            1 => num(Some(d.mean), 2),
            _ => format!("{:+.2} ± {:.2}", d.mean, d.stderr),
        };
        rows.push(vec![run_variant(p, v), cell, n.to_string()]);
    }
    blocks.push(Block::Paragraph(format!(
        "Paired differences in test NLL to {} over the test images both evaluated (negative: better than the reference; \
         ± is the standard error of the mean paired difference):",
        run_variant(rp, rv)
    )));
    blocks.push(table(
        &["run — prior", "Δ test NLL (nats)", "images"],
        1,
        rows,
    ));
}

/// The paper's Table 1 anchor values (test NLL, dynamically binarized MNIST, one stochastic
/// layer 784-200-200-50 tanh; Burda, Grosse & Salakhutdinov, ICLR 2016).
pub(super) const BURDA: [(&str, [f64; 3]); 2] = [
    ("VAE", [86.76, 86.47, 86.35]),
    ("IWAE", [86.76, 85.54, 84.78]),
];

/// A row of the Table-1 layout: the objective with its groups M or its β (k is the column).
struct ObjectiveRow {
    /// Sort key: ELBO, IWAE, MIWAE, CIWAE, PIWAE, then by M or β.
    order: (u8, f64),
    name: String,
}

/// The row of point `p`: "VAE (ELBO)", "IWAE (L_k)", and for the variants of Rainforth et al.
/// (2018) "MIWAE (M = 8)", "CIWAE (β = 0.05)", "PIWAE (M = 8)".
fn objective_row(p: &PointRun) -> ObjectiveRow {
    let objective = p
        .cfg("train.objective")
        .and_then(Value::as_str)
        .unwrap_or("");
    let m = p.cfg("train.m").and_then(Value::as_u64).unwrap_or(1);
    let beta = p.cfg("train.beta").and_then(Value::as_f64);
    let (order, name) = match objective {
        "elbo" => ((0, 0.0), "VAE (ELBO)".to_string()),
        "iwae" => ((1, 0.0), "IWAE (L_k)".to_string()),
        "miwae" => ((2, m as f64), format!("MIWAE (M = {m})")),
        "ciwae" => (
            (3, beta.unwrap_or(f64::NAN)),
            format!(
                "CIWAE (β = {})",
                beta.map(|b| b.to_string()).unwrap_or_default()
            ),
        ),
        "piwae" => ((4, m as f64), format!("PIWAE (M = {m})")),
        other => ((5, 0.0), other.to_string()),
    };
    ObjectiveRow { order, name }
}

/// Test NLL laid out like Table 1 of Burda et al. (2016): rows VAE / IWAE and the variants of
/// Rainforth et al. (2018) (× prior variant), columns k (per group for MIWAE and PIWAE); one
/// table per combination of the other swept keys; then the paper's values.
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
        .filter(|k| *k != "train.objective" && *k != "train.k")
        .collect();
    let mut groups: BTreeMap<String, Vec<&PointRun>> = BTreeMap::new();
    for p in points {
        let sw = p.swept();
        let label: Vec<String> = others
            .iter()
            .map(|k| format!("{k}={}", sw.get(*k).map(value_text).unwrap_or_default()))
            .collect();
        groups.entry(label.join(" ")).or_default().push(p);
    }
    let ks: BTreeSet<u64> = points
        .iter()
        .filter_map(|p| p.cfg("train.k").and_then(Value::as_u64))
        .collect();
    for (other, group) in &groups {
        if !other.is_empty() {
            blocks.push(Block::Paragraph(format!("With {other}:")));
        }
        // Rows: objective × variant, in a fixed order.
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
        let mut header = vec!["objective".to_string(), "prior".to_string()];
        header.extend(ks.iter().map(|k| format!("k = {k}")));
        let mut rows = Vec::new();
        let mut objectives: Vec<ObjectiveRow> = group.iter().map(|p| objective_row(p)).collect();
        objectives.sort_by(|a, b| a.order.partial_cmp(&b.order).unwrap_or(Ordering::Equal));
        objectives.dedup_by(|a, b| a.name == b.name);
        for objective in &objectives {
            for (vname, vlabel) in &variants {
                let mut row = vec![objective.name.clone(), vlabel.clone()];
                for k in &ks {
                    let point = group.iter().find(|p| {
                        objective_row(p).name == objective.name
                            && p.cfg("train.k").and_then(Value::as_u64) == Some(*k)
                    });
                    row.push(match point {
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
                }
                rows.push(row);
            }
        }
        blocks.push(table(&header, 2, rows));
    }
    blocks.push(Block::Paragraph(
        "For context only — the paper's numbers, not ours: Burda, Grosse & Salakhutdinov (2016), Table 1, test NLL on \
         dynamically binarized MNIST (all 60 000 training images), one stochastic layer 784-200-200-50 with tanh units, \
         3 280 passes over the data, evaluated with k = 5 000. Our runs are short and on a subset, so only the ordering \
         is comparable, not the values. With k = 1 both objectives are the ELBO."
            .into(),
    ));
    let header = ["Burda et al. 2016 (paper)", "k = 1", "k = 5", "k = 50"];
    let rows = BURDA
        .iter()
        .map(|(name, v)| {
            std::iter::once(format!("{name} (paper)"))
                .chain(v.iter().map(|x| format!("{x:.2}")))
                .collect()
        })
        .collect();
    blocks.push(table(&header, 1, rows));
}

/// A table block under the column titles `header`: the first `text_columns` columns hold text
/// (left-aligned), the others numbers (right-aligned).
pub(super) fn table(
    header: &[impl ToString],
    text_columns: usize,
    rows: Vec<Vec<String>>,
) -> Block {
    Block::Table {
        header: header.iter().map(ToString::to_string).collect(),
        rows,
        align: (0..header.len())
            .map(|i| {
                if i < text_columns {
                    Align::Left
                } else {
                    Align::Right
                }
            })
            .collect(),
    }
}

pub(super) fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
