//! The training section: training and validation curves of every run (and of fine-tuning).

use vaepipe_engine::StageError;
use vaepipe_report::{Block, LineChart, Series};

use super::compose::Figures;
use super::gather::{Epoch, EvalVariant, Gathered, PointRun};

/// Whether a history has a validation curve to draw: the data stage held out validation rows
/// (when it says) and some epoch has a finite, non-zero validation bound. Runs without a
/// validation split record NaN (older artifacts: 0), which is never drawn.
pub(super) fn has_validation(p: &PointRun, g: &Gathered, h: &[Epoch]) -> bool {
    let rows = g.data_of(p).and_then(|d| d.rows.get("validation")).copied();
    rows != Some(0)
        && h.iter()
            .any(|e| e.validation.is_finite() && e.validation != 0.0)
}

/// Training (solid) and validation (dashed) curves of each run's history, and the names of the
/// runs drawn without a validation curve.
pub(super) fn history_series(
    points: &[PointRun],
    g: &Gathered,
    histories: Vec<Option<&[Epoch]>>,
) -> (Vec<Series>, Vec<String>) {
    let mut series = Vec::new();
    let mut without = Vec::new();
    for (slot, (p, h)) in points.iter().zip(histories).enumerate() {
        let Some(h) = h.filter(|h| !h.is_empty()) else {
            continue;
        };
        series.push(Series {
            name: format!("{} (train)", p.name()),
            points: h.iter().map(|e| (e.epoch, -e.train)).collect(),
            dashed: false,
            color: Some(slot),
        });
        if has_validation(p, g, h) {
            series.push(Series {
                name: format!("{} (validation)", p.name()),
                points: h.iter().map(|e| (e.epoch, -e.validation)).collect(),
                dashed: true,
                color: Some(slot),
            });
        } else {
            without.push(p.name());
        }
    }
    (series, without)
}

/// The caption's account of the validation curves: which runs have none, and why.
pub(super) fn validation_caption(series: &[Series], without: &[String]) -> String {
    let runs = series.iter().filter(|s| !s.dashed).count();
    if without.is_empty() {
        String::new()
    } else if without.len() == runs {
        " No validation curve: no validation split (data.validation = 0).".to_string()
    } else {
        format!(
            " No validation curve for {} (no validation split).",
            without.join("; ")
        )
    }
}

/// What the dashed curves show: the training objective's bound, which is L_k only for IWAE.
pub(super) const VALIDATION_BOUND: &str = "the training objective's bound (L_k for IWAE, the k-sample ELBO for the VAE, \
     the variant's own value for MIWAE and CIWAE, L_mk for PIWAE) with the training k on the validation split, fixed noise";

pub(super) fn training_figures(
    points: &[PointRun],
    g: &Gathered,
    figs: &mut Figures<'_, '_>,
    blocks: &mut Vec<Block>,
) -> Result<(), StageError> {
    let trained = history_figure(
        points,
        g,
        |p| g.train_of(p).map(|t| t.history.as_slice()),
        (
            "training_curves",
            "Training curves",
            &format!(
                "Negative training bound (solid: mean over the epoch's batches, with the training objective) and validation \
                 bound (dashed: {VALIDATION_BOUND}) per epoch; one colour per run."
            ),
        ),
        figs,
        blocks,
    )?;
    if !trained {
        blocks.push(Block::Paragraph("No training history is available.".into()));
    }
    history_figure(
        points,
        g,
        |p| g.prior_of(p).map(|t| t.finetune.as_slice()),
        (
            "finetune_curves",
            "Fine-tuning under the refit prior",
            &format!(
                "Fine-tuning encoder and decoder under the refit prior: negative training bound (solid) and validation \
                 bound (dashed: {VALIDATION_BOUND}) per epoch."
            ),
        ),
        figs,
        blocks,
    )?;
    Ok(())
}

/// Draws the training and validation curves of every point's history (`history_of`) as figure
/// `stem` titled `title`, captioned `caption` and the account of missing validation curves.
/// Returns whether any point had a history to draw.
pub(super) fn history_figure<'a>(
    points: &'a [PointRun],
    g: &Gathered,
    history_of: impl Fn(&'a PointRun) -> Option<&'a [Epoch]>,
    (stem, title, caption): (&str, &str, &str),
    figs: &mut Figures<'_, '_>,
    blocks: &mut Vec<Block>,
) -> Result<bool, StageError> {
    let (series, without) = history_series(points, g, points.iter().map(history_of).collect());
    if series.is_empty() {
        return Ok(false);
    }
    let caption = format!("{caption}{}", validation_caption(&series, &without));
    let chart = LineChart {
        title: title.into(),
        x_label: "epoch".into(),
        y_label: "−bound (nats, lower is better)".into(),
        log_x: false,
        series,
    };
    figs.push(blocks, stem, caption, vaepipe_report::line_chart(&chart))?;
    Ok(true)
}

/// Every (point, variant) with evaluation, in order.
pub(super) fn evaluated<'a>(
    points: &'a [PointRun],
    g: &'a Gathered,
) -> Vec<(&'a PointRun, &'a EvalVariant)> {
    points
        .iter()
        .flat_map(|p| {
            g.eval_of(p)
                .map(|e| e.variants.iter().map(move |v| (p, v)).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect()
}

/// Whether `v` is the first variant evaluated for `p`.
pub(super) fn is_first_variant(p: &PointRun, v: &EvalVariant, g: &Gathered) -> bool {
    g.eval_of(p)
        .and_then(|e| e.variants.first())
        .is_some_and(|f| f.name == v.name)
}

/// "run — variant" (or the variant alone without a sweep).
pub(super) fn run_variant(p: &PointRun, v: &EvalVariant) -> String {
    if p.label.is_empty() {
        v.label.clone()
    } else {
        format!("{} — {}", p.label, v.label)
    }
}
