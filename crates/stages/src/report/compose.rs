//! The document's frame: figure bookkeeping, the introduction, number formatting and the
//! eval stage's notes.

use std::collections::BTreeSet;

use vaepipe_engine::{Context, StageError};
use vaepipe_report::{Block, Document, Rendered, ReportError};

use crate::artifacts::{Estimates, TestSplit};

use super::Params;
use super::bounds::{bound_figures, figure_points, sweep_figures};
use super::gather::{EvalVariant, Gathered, PointRun};
use super::images::{image_sections, prior_section};
use super::provenance::{provenance_section, spec_section};
use super::table1::burda_tables;
use super::tables::{paired_table, results_table};
use super::training::{evaluated, run_variant, training_figures};

// ---------------------------------------------------------------------------------------------
// The document

/// Adds figures and remembers what could not be drawn.
pub(super) struct Figures<'a, 'b> {
    pub(super) ctx: &'a Context<'b>,
    pub(super) problems: Vec<String>,
    pub(super) drawn: u64,
    /// Roughly how many figures the report has (for progress).
    pub(super) expected: u64,
}

impl Figures<'_, '_> {
    /// Pushes a figure block, or a note saying why it is missing.
    pub(super) fn push(
        &mut self,
        blocks: &mut Vec<Block>,
        stem: &str,
        caption: String,
        r: Result<Rendered, ReportError>,
    ) -> Result<(), StageError> {
        if self.ctx.cancelled() {
            return Err(StageError::Interrupted);
        }
        self.drawn += 1;
        self.expected = self.expected.max(self.drawn);
        self.ctx
            .progress(self.drawn, self.expected, &format!("drew {stem}"));
        match r {
            Ok(rendered) => {
                if rendered.dropped > 0 {
                    self.problems.push(format!(
                        "figure \"{stem}\": {} non-finite value(s) left out",
                        rendered.dropped
                    ));
                }
                blocks.push(Block::Figure {
                    file_stem: stem.to_string(),
                    caption,
                    rendered,
                });
            }
            Err(e) => {
                self.problems
                    .push(format!("figure \"{stem}\" could not be drawn: {e}"));
                blocks.push(Block::Paragraph(format!(
                    "(Figure \"{stem}\" could not be drawn: {e}.)"
                )));
            }
        }
        Ok(())
    }
}

pub(super) fn compose(
    ctx: &Context,
    params: &Params,
    points: &[PointRun],
    g: &mut Gathered,
) -> Result<Document, StageError> {
    let mut blocks = Vec::new();
    let per_point: usize = figure_points(points, g)
        .0
        .iter()
        .map(|p| 3 + g.eval_of(p).map_or(0, |e| e.variants.len()))
        .sum();
    let mut figs = Figures {
        ctx,
        problems: Vec::new(),
        drawn: 0,
        expected: 5 + per_point as u64,
    };
    let sweep_keys: BTreeSet<String> = points.iter().flat_map(|p| p.swept().into_keys()).collect();

    // Introduction.
    if !params.pipeline.description.trim().is_empty() {
        blocks.push(Block::Paragraph(
            params.pipeline.description.trim().to_string(),
        ));
    }
    blocks.push(Block::Paragraph(intro(params, points, g, &sweep_keys)));
    let failed: Vec<&PointRun> = points
        .iter()
        .filter(|p| !p.missing.is_empty() || !p.keys.contains_key("eval"))
        .collect();
    if !failed.is_empty() {
        let names: Vec<String> = failed.iter().map(|p| p.name()).collect();
        blocks.push(Block::Paragraph(format!(
            "Incomplete: {} of {} runs have no evaluation ({}); see \"Failed or skipped stages\" under Provenance.",
            failed.len(),
            points.len(),
            names.join("; ")
        )));
    }

    // What qualifies the numbers comes before them.
    let notes = eval_notes(points, g);
    notes_section(&notes, &mut blocks);

    // Results.
    blocks.push(Block::Heading(1, "Results".into()));
    results_table(points, g, &notes, &mut blocks);
    paired_table(points, g, &mut blocks);
    if sweep_keys.contains("train.objective") || sweep_keys.contains("train.k") {
        burda_tables(points, g, &sweep_keys, &mut blocks);
    }

    // Training.
    blocks.push(Block::Heading(1, "Training".into()));
    training_figures(points, g, &mut figs, &mut blocks)?;

    // Test bounds.
    blocks.push(Block::Heading(1, "Test log-likelihood".into()));
    bound_figures(points, g, &mut figs, &mut blocks)?;
    sweep_figures(points, g, &sweep_keys, &mut figs, &mut blocks)?;

    // Prior.
    prior_section(points, g, &mut figs, &mut blocks)?;

    // Samples, reconstructions, latents.
    image_sections(points, g, &mut figs, &mut blocks)?;

    // Specs and provenance.
    spec_section(points, &mut blocks);
    provenance_section(ctx, points, g, &mut blocks);
    g.problems.append(&mut figs.problems);
    if !g.problems.is_empty() {
        blocks.push(Block::Heading(2, "Problems".into()));
        blocks.push(Block::Paragraph("These artifacts could not be read or drawn; the parts of the report that need them are left out.".into()));
        blocks.push(Block::List(g.problems.clone()));
    }
    Ok(Document {
        title: params.report.title.clone(),
        blocks,
    })
}

pub(super) fn intro(
    params: &Params,
    points: &[PointRun],
    g: &Gathered,
    sweep_keys: &BTreeSet<String>,
) -> String {
    let mut s = format!("Pipeline \u{201c}{}\u{201d}: ", params.pipeline.name);
    if sweep_keys.is_empty() {
        s.push_str("one run");
    } else {
        let keys: Vec<&str> = sweep_keys.iter().map(String::as_str).collect();
        s.push_str(&format!(
            "{} runs, a sweep over {}",
            points.len(),
            keys.join(" × ")
        ));
    }
    if let Some(d) = points.iter().find_map(|p| g.data_of(p)) {
        let rows = |s: &str| d.rows.get(s).map_or("?".to_string(), |r| r.to_string());
        s.push_str(&format!(
            ". Data: {} training, {} validation and {} test examples{}",
            rows("train"),
            rows("validation"),
            rows("test"),
            match (d.image_shape, d.features) {
                (Some((1, h, w)), _) => format!(" of {h}×{w} pixels"),
                (Some((c, h, w)), _) => format!(" of {c} channels of {h}×{w} pixels"),
                (None, Some(f)) => format!(" of {f} features"),
                _ => String::new(),
            }
        ));
        if let Some(t) = &d.test_split {
            s.push_str(&format!(". {}", test_split_sentence(t)));
        }
    }
    let best = evaluated(points, g)
        .into_iter()
        .filter_map(|(p, v)| {
            test_nll(v.metrics.as_ref())
                .filter(|x| x.is_finite())
                .map(|n| (n, p, v))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.index.cmp(&b.1.index)));
    if let Some((_, p, v)) = best {
        s.push_str(&format!(
            ". Lowest test NLL: {} ({} nats)",
            run_variant(p, v),
            nll_cell(v.metrics.as_ref())
        ));
    }
    s.push_str(
        ". All numbers are in nats. The test NLL is −L̂_k, the Monte Carlo estimate of −L_k with the eval stage's k \
         importance samples: an upper bound on −log p(x) in expectation (E[−L̂_k] ≥ −log p(x), by Jensen's inequality; \
         a single estimate can fall below), which tightens as k grows (Burda et al. 2016); ± is one standard error \
         across test images.",
    );
    s
}

/// How the test rows were held out (data summary.json `test_split`), e.g. "The test examples
/// are 15% of the 1797 rows of the training source (270 rows), held out with seed …,
/// stratified by label: 0: 27, 1: 28, …".
pub(super) fn test_split_sentence(t: &TestSplit) -> String {
    let amount = match t.fraction {
        Some(f) => format!("a fraction {f} ({} rows)", t.test_rows),
        None => format!("{} rows", t.test_rows),
    };
    let mut s = format!(
        "The test examples are {amount} held out of the {} rows of the training source (seed {} from pipeline seed {})",
        t.source_rows, t.seed, t.pipeline_seed,
    );
    let counts: Vec<String> = t
        .test_label_counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if t.stratified {
        s.push_str(", stratified by label");
    } else {
        s.push_str(", not stratified");
    }
    if !counts.is_empty() {
        s.push_str(&format!(" (test rows per label: {})", counts.join(", ")));
    }
    s
}

/// Lays the channels of each `[c, h, w]` image side by side (one `h × c·w` grey image).
pub(super) fn side_by_side(image: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    if c <= 1 || image.len() != c * h * w {
        return image.to_vec();
    }
    let mut out = Vec::with_capacity(image.len());
    for row in 0..h {
        for ch in 0..c {
            let start = ch * h * w + row * w;
            out.extend_from_slice(&image[start..start + w]);
        }
    }
    out
}

/// Formats a number with `d` decimals, or an em dash when absent or not finite.
pub(super) fn num(v: Option<f64>, d: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.d$}"),
        _ => "—".to_string(),
    }
}

/// The test NLL of a variant's estimates.
pub(super) fn test_nll(m: Option<&Estimates>) -> Option<f64> {
    m.map(|m| m.test_nll)
}

pub(super) fn nll_cell(m: Option<&Estimates>) -> String {
    with_stderr(test_nll(m), m.map(|m| m.test_nll_stderr))
}

/// `12.34 ± 0.56`, or the value alone without a (finite) standard error.
pub(super) fn with_stderr(v: Option<f64>, s: Option<f64>) -> String {
    match (v, s) {
        (Some(n), Some(s)) if n.is_finite() && s.is_finite() => format!("{n:.2} ± {s:.2}"),
        (n, _) => num(n, 2),
    }
}

/// What a point without evaluation shows instead of numbers.
pub(super) fn status_of(p: &PointRun) -> String {
    match p.missing.first() {
        Some((stage, reason)) => {
            let what = reason.split(':').next().unwrap_or("missing");
            format!("{stage} {what}")
        }
        None => "not evaluated".to_string(),
    }
}

/// The eval stage's notes (`note` in `metrics.json`: why the numbers are not what they seem),
/// numbered in order of first appearance, each with the runs and variants it concerns.
pub(super) struct Notes {
    /// (note text, "run — variant" labels).
    pub(super) notes: Vec<(String, Vec<String>)>,
}

impl Notes {
    /// The number (1-based) of a variant's note, if it has one.
    pub(super) fn number(&self, v: &EvalVariant) -> Option<usize> {
        let text = v.metrics.as_ref()?.note.as_deref()?;
        self.notes
            .iter()
            .position(|(t, _)| t == text)
            .map(|i| i + 1)
    }
}

pub(super) fn eval_notes(points: &[PointRun], g: &Gathered) -> Notes {
    let mut notes: Vec<(String, Vec<String>)> = Vec::new();
    for (p, v) in evaluated(points, g) {
        let Some(text) = v
            .metrics
            .as_ref()
            .and_then(|m| m.note.as_deref())
            .filter(|t| !t.trim().is_empty())
        else {
            continue;
        };
        match notes.iter_mut().find(|(t, _)| t == text) {
            Some((_, runs)) => runs.push(run_variant(p, v)),
            None => notes.push((text.to_string(), vec![run_variant(p, v)])),
        }
    }
    Notes { notes }
}

/// A section of its own, before the results, when the evaluation has notes.
pub(super) fn notes_section(notes: &Notes, blocks: &mut Vec<Block>) {
    if notes.notes.is_empty() {
        return;
    }
    blocks.push(Block::Heading(1, "Notes from the evaluation".into()));
    blocks.push(Block::Paragraph(
        "Read the results with these notes from the eval stage (`note` in metrics.json); the results table marks \
         the rows they concern with [note N]."
            .into(),
    ));
    blocks.push(Block::List(
        notes
            .notes
            .iter()
            .enumerate()
            .map(|(i, (text, runs))| format!("[note {}] {}: {text}.", i + 1, runs.join("; ")))
            .collect(),
    ));
}
