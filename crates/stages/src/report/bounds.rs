//! The test log-likelihood section: L_k against k, test NLL per run and per swept key, active
//! units, per-image NLL histograms; and which points and models the image figures show.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use vaepipe_engine::StageError;
use vaepipe_report::{BarChart, Block, DotChart, Histogram, HistogramSeries, LineChart, Series};

use super::compose::{Figures, test_nll};
use super::gather::{EvalVariant, Gathered, PointRun};
use super::images::file_part;
use super::training::{evaluated, is_first_variant, run_variant};
use super::{MAX_FIGURE_POINTS, MAX_HISTOGRAM_SERIES};

/// Most series of a test-NLL-against-parameter figure (one per variant and combination of the
/// other swept keys).
pub(super) const MAX_SWEEP_SERIES: usize = 8;

/// For each swept key, the test NLL against that key's values: a line chart when the values
/// are numbers (one series per variant and combination of the other swept keys), else a dot
/// chart per value.
pub(super) fn sweep_figures(
    points: &[PointRun],
    g: &Gathered,
    sweep_keys: &BTreeSet<String>,
    figs: &mut Figures<'_, '_>,
    blocks: &mut Vec<Block>,
) -> Result<(), StageError> {
    let all: Vec<(&PointRun, &EvalVariant, f64, Option<f64>)> = evaluated(points, g)
        .into_iter()
        .filter_map(|(p, v)| {
            test_nll(v.metrics.as_ref())
                .filter(|n| n.is_finite())
                .map(|n| (p, v, n, v.metrics.as_ref().map(|m| m.test_nll_stderr)))
        })
        .collect();
    for key in sweep_keys {
        let values: Vec<Option<&Value>> = all.iter().map(|(p, ..)| p.cfg_swept(key)).collect();
        let distinct: BTreeSet<String> = values.iter().flatten().map(|v| v.to_string()).collect();
        if distinct.len() < 2 {
            continue;
        }
        let numeric = values.iter().all(|v| v.is_some_and(Value::is_number));
        let stem = format!("test_nll_vs_{}", file_part(key));
        if numeric {
            // Series: variant × the other swept keys' values.
            let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for ((p, v, n, _), x) in all.iter().zip(&values) {
                let others = other_swept(p, key);
                let mut name = v.label.clone();
                if !others.is_empty() {
                    name = format!("{} — {name}", others.join(" "));
                }
                let x = x.and_then(Value::as_f64).unwrap_or(f64::NAN);
                series.entry(name).or_default().push((x, *n));
            }
            let total = series.len();
            let xs: Vec<f64> = values.iter().flatten().filter_map(|v| v.as_f64()).collect();
            let (lo, hi) = xs
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                    (a.min(*x), b.max(*x))
                });
            let log_x = lo > 0.0 && hi / lo >= 10.0;
            let series: Vec<Series> = series
                .into_iter()
                .take(MAX_SWEEP_SERIES)
                .map(|(name, mut pts)| {
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Series {
                        name,
                        points: pts,
                        dashed: false,
                        color: None,
                    }
                })
                .collect();
            let shown = if series.len() < total {
                format!(
                    " Only the first {} of {total} series are shown.",
                    series.len()
                )
            } else {
                String::new()
            };
            let chart = LineChart {
                title: format!("Test NLL against {key}"),
                x_label: format!("{key}{}", if log_x { " (log scale)" } else { "" }),
                y_label: "test NLL (nats, lower is better)".into(),
                log_x,
                series,
            };
            figs.push(
                blocks,
                &stem,
                format!("Test NLL against the swept parameter {key}, one line per prior and combination of the other swept parameters.{shown}"),
                vaepipe_report::line_chart(&chart),
            )?;
        } else {
            let mut items: Vec<(String, f64, Option<f64>)> = all
                .iter()
                .zip(&values)
                .map(|((p, v, n, se), x)| {
                    let x = x.map_or("—".to_string(), cell_text);
                    let rest = other_swept(p, key);
                    let mut name = format!("{key}={x}");
                    if !rest.is_empty() {
                        name.push_str(&format!(" ({})", rest.join(" ")));
                    }
                    (format!("{name} — {}", v.label), *n, *se)
                })
                .collect();
            items.sort_by(|a, b| a.0.cmp(&b.0));
            let chart = DotChart {
                title: format!("Test NLL by {key}"),
                value_label: "test NLL (nats, lower is better)".into(),
                items,
            };
            figs.push(
                blocks,
                &stem,
                format!("Test NLL for each value of the swept parameter {key}, with ± one standard error across test images."),
                vaepipe_report::dot_chart(&chart),
            )?;
        }
    }
    Ok(())
}

/// A swept value as text (strings without quotes).
/// The point's swept values other than `key`, as `name=value` with the key's last segment.
fn other_swept(p: &PointRun, key: &str) -> Vec<String> {
    p.swept()
        .into_iter()
        .filter(|(k, _)| k != key)
        .map(|(k, x)| format!("{}={}", k.rsplit('.').next().unwrap_or(&k), cell_text(&x)))
        .collect()
}

pub(super) fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn bound_figures(
    points: &[PointRun],
    g: &Gathered,
    figs: &mut Figures<'_, '_>,
    blocks: &mut Vec<Block>,
) -> Result<(), StageError> {
    let all = evaluated(points, g);
    if all.is_empty() {
        blocks.push(Block::Paragraph(
            "No evaluation results are available.".into(),
        ));
        return Ok(());
    }
    // L_k against k.
    // One colour per run, the first prior solid and the others dashed — unless a run has more
    // than two priors, when every curve gets its own colour.
    let max_variants = points
        .iter()
        .filter_map(|p| g.eval_of(p))
        .map(|e| e.variants.len())
        .max()
        .unwrap_or(0);
    let series: Vec<Series> = all
        .iter()
        .enumerate()
        .filter(|(_, (_, v))| !v.curve.is_empty())
        .map(|(i, (p, v))| {
            let first = is_first_variant(p, v, g);
            let slot = points.iter().position(|q| q.index == p.index).unwrap_or(i);
            Series {
                name: run_variant(p, v),
                points: v.curve.iter().map(|(k, b, _)| (*k, -b)).collect(),
                dashed: max_variants <= 2 && !first,
                color: Some(if max_variants <= 2 { slot } else { i }),
            }
        })
        .collect();
    if !series.is_empty() {
        let images = all
            .iter()
            .filter_map(|(_, v)| v.curve_images)
            .max()
            .map_or(String::new(), |n| format!(" on {n} test images"));
        let chart = LineChart {
            title: "Test bound against the number of importance samples".into(),
            x_label: "k (importance samples, log scale)".into(),
            y_label: "−L_k (nats)".into(),
            log_x: true,
            series,
        };
        figs.push(
            blocks,
            "bound_vs_k",
            format!(
                "−L̂_k against k{images}, per model and prior. The bound L_k = E[L̂_k] never decreases with k and \
                 approaches log p(x) (Burda et al. 2016, Theorem 1), so in expectation each curve falls towards the \
                 model's NLL; the curves drawn are Monte Carlo estimates (all k share the same samples), so they are \
                 monotone only up to their Monte Carlo error."
            ),
            vaepipe_report::line_chart(&chart),
        )?;
    }
    // Test NLL with standard errors.
    let items: Vec<(String, f64, Option<f64>)> = all
        .iter()
        .filter_map(|(p, v)| {
            test_nll(v.metrics.as_ref()).map(|n| {
                (
                    run_variant(p, v),
                    n,
                    v.metrics.as_ref().map(|m| m.test_nll_stderr),
                )
            })
        })
        .collect();
    if !items.is_empty() {
        let k = all
            .iter()
            .find_map(|(_, v)| v.metrics.as_ref().map(|m| m.eval_k as f64))
            .map_or(String::new(), |k| format!(" (k = {k})"));
        let chart = DotChart {
            title: format!("Test NLL per run{k}"),
            value_label: "test NLL (nats, lower is better)".into(),
            items,
        };
        figs.push(
            blocks,
            "test_nll",
            "Test NLL (−L_k with the eval k) per run and prior, with ± one standard error across test images.".into(),
            vaepipe_report::dot_chart(&chart),
        )?;
    }
    // Per-image NLL: one series per run (its first prior), or every prior of a single run.
    let with_nll: Vec<&(&PointRun, &EvalVariant)> =
        all.iter().filter(|(_, v)| !v.nll.is_empty()).collect();
    let runs: BTreeSet<usize> = with_nll.iter().map(|(p, _)| p.index).collect();
    let mut seen = BTreeSet::new();
    let chosen: Vec<&&(&PointRun, &EvalVariant)> = with_nll
        .iter()
        .filter(|(p, _)| runs.len() == 1 || seen.insert(p.index))
        .take(MAX_HISTOGRAM_SERIES)
        .collect();
    let mut note = String::new();
    if runs.len() > 1 && with_nll.len() > runs.len() {
        note.push_str(" One series per run, with its first prior.");
    }
    if chosen.len()
        < runs
            .len()
            .max(if runs.len() == 1 { with_nll.len() } else { 0 })
    {
        note.push_str(&format!(" Only the first {} are shown.", chosen.len()));
    }
    let hist: Vec<HistogramSeries> = chosen
        .iter()
        .map(|(p, v)| HistogramSeries {
            name: run_variant(p, v),
            values: v.nll.iter().map(|x| x.1).collect(),
        })
        .collect();
    if !hist.is_empty() {
        let chart = Histogram {
            title: "Per-image test NLL".into(),
            x_label: "−L_k(x) (nats)".into(),
            bins: 40,
            series: hist,
        };
        figs.push(
            blocks,
            "nll_histogram",
            format!("Distribution of the per-image test NLL (per_image.parquet).{note}"),
            vaepipe_report::histogram(&chart),
        )?;
    }
    // Active units, one bar per distinct model.
    let items: Vec<(String, f64)> = distinct_models(points, g)
        .into_iter()
        .filter_map(|(p, v)| active_units(v).map(|a| (model_name(p, v, g), a)))
        .collect();
    if !items.is_empty() {
        let latent = points
            .iter()
            .find_map(|p| p.cfg("model.latent").and_then(Value::as_u64))
            .map_or(String::new(), |l| format!(" of {l}"));
        let threshold = points
            .iter()
            .find_map(|p| p.cfg("eval.active_threshold").and_then(Value::as_f64))
            .map_or("the threshold".into(), |t| t.to_string());
        let chart = BarChart {
            title: "Active latent units".into(),
            value_label: format!("active units{latent} (Cov_x E_q[z_j|x] > {threshold})"),
            items,
        };
        figs.push(
            blocks,
            "active_units",
            "Active latent units per trained model (a unit is active if its posterior mean varies across test images; \
             Burda et al. 2016, §5.2). The prior refit does not change the encoder, so refit variants share their model's count."
                .into(),
            vaepipe_report::bar_chart(&chart),
        )?;
    }
    Ok(())
}

/// Active units from `metrics.json`, else counted in `units.parquet`.
pub(super) fn active_units(v: &EvalVariant) -> Option<f64> {
    v.metrics
        .as_ref()
        .map(|m| m.active_units as f64)
        .or_else(|| (!v.units.is_empty()).then(|| v.units.iter().filter(|u| u.1).count() as f64))
}

/// The model (encoder and decoder) a variant evaluates, from the prior stage's `variants.json`:
/// variants that share it have the same units, reconstructions and latents.
pub(super) fn model_id(p: &PointRun, v: &EvalVariant, g: &Gathered) -> String {
    let entry = g
        .prior_of(p)
        .and_then(|pr| pr.variants.iter().find(|e| e.name == v.name));
    match entry {
        Some(e) => format!("{}/{}", e.model_stage, e.model_file),
        None => format!("variant/{}", v.name),
    }
}

/// One (point, variant) per distinct model of each point.
pub(super) fn distinct_models<'a>(
    points: &'a [PointRun],
    g: &'a Gathered,
) -> Vec<(&'a PointRun, &'a EvalVariant)> {
    let mut seen = BTreeSet::new();
    evaluated(points, g)
        .into_iter()
        .filter(|(p, v)| seen.insert((p.index, model_id(p, v, g))))
        .collect()
}

/// Legend text for a model: the run, plus "fine-tuned" when the model is not the trained one.
pub(super) fn model_name(p: &PointRun, v: &EvalVariant, g: &Gathered) -> String {
    let trained = model_id(p, v, g).starts_with("train/");
    if trained || is_first_variant(p, v, g) {
        p.name()
    } else {
        format!("{} ({})", p.name(), v.label)
    }
}

/// Points whose images are drawn: all (up to [`MAX_FIGURE_POINTS`]), or the one with the lowest
/// test NLL; the text says which.
pub(super) fn figure_points<'a>(
    points: &'a [PointRun],
    g: &Gathered,
) -> (Vec<&'a PointRun>, Option<String>) {
    let with_eval: Vec<&PointRun> = points
        .iter()
        .filter(|p| g.eval_of(p).is_some_and(|e| !e.variants.is_empty()))
        .collect();
    if with_eval.len() <= MAX_FIGURE_POINTS {
        return (with_eval, None);
    }
    let nll = |p: &PointRun| {
        g.eval_of(p)
            .and_then(|e| e.variants.first())
            .and_then(|v| test_nll(v.metrics.as_ref()))
            .filter(|x| x.is_finite())
    };
    let best = with_eval.iter().copied().min_by(|a, b| {
        nll(a)
            .unwrap_or(f64::INFINITY)
            .total_cmp(&nll(b).unwrap_or(f64::INFINITY))
            .then(a.index.cmp(&b.index))
    });
    match best {
        Some(b) => (
            vec![b],
            Some(format!(
                "With {} evaluated runs, the figures of this section show one representative run: {} (the lowest test NLL with its first prior).",
                with_eval.len(),
                b.name()
            )),
        ),
        None => (Vec::new(), None),
    }
}
