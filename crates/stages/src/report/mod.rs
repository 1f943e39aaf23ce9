//! The report stage: gathers every sweep point's artifacts (docs/artifacts.md) and renders
//! figures (vaepipe-report, plotters) and one Markdown and one self-contained HTML document from
//! them — from artifacts only, byte for byte reproducibly.
//!
//! Output (`ctx.out`): `index.md`, `index.html` and `figures/<stem>.png|svg`. The document holds
//! the results table of every run, a Burda et al. (2016) Table 1-style comparison when the sweep
//! varies `train.objective` or `train.k`, training curves, L_k against k, the test NLL with
//! standard errors, active units, prior samples, reconstructions, latent scatter plots, the
//! refit prior against the aggregate posterior, per-image NLL histograms, the spec as run for
//! every point, and provenance (versions, seeds, stage keys, durations, hosts, failures).
//!
//! Robustness: the report is the last stage and must show what there is. Upstream instances that
//! failed (`ctx.missing`) are listed with their reason and log; an unreadable artifact only
//! drops the table cell or figure that needs it and is listed under "Problems". Determinism: all
//! collections are ordered (points by index, variants in file order, maps are `BTreeMap`), store
//! directories are named by stage and key, never by absolute path, and nothing records the time
//! of rendering.

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::Value;
use vaepipe_engine::{Context, Scope, Stage, StageError, pick};
use vaepipe_report::Block;

use self::gather::{Gathered, PointRun, associate, load_input, ordered_inputs};
use self::provenance::short;

mod bounds;
mod compose;
mod gather;
mod images;
mod provenance;
mod table1;
mod tables;
mod training;

pub struct ReportStage;

impl Stage for ReportStage {
    fn name(&self) -> &'static str {
        "report"
    }
    fn version(&self) -> u32 {
        // 2: notes from the evaluation up front; no validation curves without a validation
        // split; corrected captions.
        2
    }
    fn inputs(&self) -> &'static [&'static str] {
        &["data", "train", "prior", "eval"]
    }
    fn scope(&self) -> Scope {
        Scope::Gather
    }
    fn accepts_missing_inputs(&self) -> bool {
        true
    }
    fn params(&self, point: &Value) -> Value {
        pick(point, &["report", "pipeline.name", "pipeline.description"])
    }
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        run(ctx)
    }
}

/// Per-point image figures (samples, reconstructions, latents, densities) are drawn for every
/// point up to this many points; beyond it, for one representative point.
const MAX_FIGURE_POINTS: usize = 6;
/// Prior samples shown per figure (three rows of ten).
const MAX_SAMPLES: usize = 30;
/// Original/reconstruction pairs shown per figure.
const MAX_RECONSTRUCTIONS: usize = 12;
/// Series in the per-image NLL histogram before it falls back to one series per point.
const MAX_HISTOGRAM_SERIES: usize = 6;
/// The upstream stages in pipeline order.
const UPSTREAM: [&str; 4] = ["data", "train", "prior", "eval"];

#[derive(Deserialize)]
struct Params {
    report: ReportParams,
    pipeline: PipelineParams,
    #[serde(default)]
    points: Vec<PointRun>,
}

#[derive(Deserialize)]
struct ReportParams {
    title: String,
}

#[derive(Deserialize)]
struct PipelineParams {
    name: String,
    #[serde(default)]
    description: String,
}

// ---------------------------------------------------------------------------------------------
// The stage

fn run(ctx: &Context) -> Result<(), StageError> {
    let mut params: Params =
        serde_json::from_value(ctx.params.clone()).context("report stage parameters")?;
    let mut points = std::mem::take(&mut params.points);
    points.sort_by_key(|p| p.index);
    associate(ctx, &mut points);

    let mut g = Gathered::default();
    let total = ctx.inputs.len() as u64;
    for (i, input) in ordered_inputs(ctx.inputs).into_iter().enumerate() {
        if ctx.cancelled() {
            return Err(StageError::Interrupted);
        }
        ctx.progress(
            i as u64,
            total,
            &format!("reading {}/{}", input.stage, short(&input.key)),
        );
        load_input(input, &mut g);
    }
    ctx.progress(total, total, "artifacts read");
    ctx.log(format!(
        "read {} data, {} train, {} prior and {} eval outputs for {} points; {} upstream instance(s) missing",
        g.data.len(),
        g.train.len(),
        g.prior.len(),
        g.eval.len(),
        points.len(),
        ctx.missing.len()
    ));

    let doc = compose::compose(ctx, &params, &points, &mut g)?;

    let figures = ctx.out.join("figures");
    std::fs::create_dir_all(&figures)
        .with_context(|| format!("cannot create {}", figures.display()))?;
    let mut written = 0;
    for block in &doc.blocks {
        if let Block::Figure {
            file_stem,
            rendered,
            ..
        } = block
        {
            let png = figures.join(format!("{file_stem}.png"));
            std::fs::write(&png, &rendered.png)
                .with_context(|| format!("cannot write {}", png.display()))?;
            let svg = figures.join(format!("{file_stem}.svg"));
            std::fs::write(&svg, rendered.svg.as_bytes())
                .with_context(|| format!("cannot write {}", svg.display()))?;
            written += 1;
        }
    }
    let md = ctx.out.join("index.md");
    std::fs::write(&md, vaepipe_report::to_markdown(&doc, "figures"))
        .with_context(|| format!("cannot write {}", md.display()))?;
    let html = ctx.out.join("index.html");
    std::fs::write(&html, vaepipe_report::to_html(&doc))
        .with_context(|| format!("cannot write {}", html.display()))?;
    ctx.log(format!(
        "wrote index.md, index.html and {written} figures ({} problem(s) noted)",
        g.problems.len()
    ));
    Ok(())
}
