//! The results tables: every run's numbers and paired differences (the Table 1 layout of Burda
//! et al. 2016 is in table1.rs).

use std::collections::BTreeMap;

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
                    let per_layer = m.filter(|m| {
                        m.active_units_per_layer.len() > 1
                            && m.latent_dims.len() == m.active_units_per_layer.len()
                    });
                    let units = match per_layer {
                        // Several stochastic layers: `a1/d1, a2/d2`, bottom up.
                        Some(m) => m
                            .active_units_per_layer
                            .iter()
                            .zip(&m.latent_dims)
                            .map(|(a, d)| format!("{a}/{d}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        None => match (
                            int(|m| m.active_units),
                            p.cfg("model.latent").and_then(Value::as_u64),
                        ) {
                            (a, Some(l)) if a != "—" => format!("{a}/{l}"),
                            (a, _) => a,
                        },
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
         Active units: latent dimensions j with Cov_x E_q[z_j|x] above the eval threshold (Burda et al. 2016, §5.2), \
         per stochastic layer (bottom up) for models with several. \
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
