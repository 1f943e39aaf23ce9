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

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context as _, anyhow};
use serde::Deserialize;
use serde_json::Value;
use vaepipe_data::Table;
use vaepipe_engine::{Context, Input, Manifest, Scope, Stage, StageError, pick};
use vaepipe_nn::MeanStderr;
use vaepipe_report::{
    Align, BarChart, Block, Density, DensityComparison, DensityPanel, Document, DotChart,
    Histogram, HistogramSeries, ImageGrid, LineChart, Rendered, ReportError, Scatter, Series,
};

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
// What is read from the artifacts

/// The data stage's `summary.json`, as far as the report needs it.
struct DataArt {
    /// (channels, height, width); `[h, w]` in summary.json is one channel.
    image_shape: Option<(usize, usize, usize)>,
    /// `test_split` of summary.json (a held-out test split of the training source).
    test_split: Option<Value>,
    features: Option<u64>,
    rows: BTreeMap<String, u64>,
}

/// One epoch of `history.parquet` / `finetune_history.parquet`.
struct Epoch {
    epoch: f64,
    train: f64,
    validation: f64,
}

struct TrainArt {
    json: Option<Value>,
    history: Vec<Epoch>,
}

struct PriorArt {
    refit: Option<Value>,
    /// `latent_samples.parquet`: (source, z1, z2).
    samples: Vec<(String, f64, f64)>,
    finetune: Vec<Epoch>,
    /// `variants.json` entries (to tell which variants share a model).
    variants: Vec<Value>,
}

struct EvalVariant {
    name: String,
    label: String,
    metrics: Option<Value>,
    /// `per_image.parquet`: (index in the test source, NLL).
    nll: Vec<(i64, f64)>,
    /// `lk_curve.parquet`: (k, mean L_k, stderr).
    curve: Vec<(f64, f64, f64)>,
    /// Images the L_k curve averages over.
    curve_images: Option<i64>,
    /// `units.parquet`: (variance, active).
    units: Vec<(f64, bool)>,
    samples: Vec<Vec<f32>>,
    /// (original, reconstruction) pairs.
    reconstructions: Vec<(Vec<f32>, Vec<f32>)>,
    /// (x, y, label).
    latents: Vec<(f64, f64, i64)>,
}

struct EvalArt {
    variants: Vec<EvalVariant>,
}

/// One sweep point (as the parameters list it) with the keys of the stage instances that
/// produced its artifacts.
#[derive(Deserialize)]
struct PointRun {
    index: usize,
    id: String,
    label: String,
    config: Value,
    /// Upstream stage → key of the instance serving this point.
    #[serde(skip)]
    keys: BTreeMap<&'static str, String>,
    /// Why a stage has no output for this point (from `ctx.missing`).
    #[serde(skip)]
    missing: Vec<(String, String)>,
}

impl PointRun {
    /// The label for tables and legends: the sweep label, or "run" without a sweep.
    fn name(&self) -> String {
        if self.label.is_empty() {
            "run".to_string()
        } else {
            self.label.clone()
        }
    }
    /// Stable file-name part.
    fn stem(&self) -> String {
        format!("p{}", self.index)
    }
    fn cfg(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(&self.config, |v, p| v.get(p))
    }
    /// The point's value of a swept key.
    fn cfg_swept(&self, key: &str) -> Option<&Value> {
        match self.cfg("point.values") {
            Some(Value::Object(m)) => m.get(key),
            _ => None,
        }
    }
    fn swept(&self) -> BTreeMap<String, Value> {
        match self.cfg("point.values") {
            Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => BTreeMap::new(),
        }
    }
}

/// Everything read, keyed by stage instance.
#[derive(Default)]
struct Gathered {
    data: BTreeMap<String, DataArt>,
    train: BTreeMap<String, TrainArt>,
    prior: BTreeMap<String, PriorArt>,
    eval: BTreeMap<String, EvalArt>,
    manifests: Vec<(String, Manifest)>,
    /// Problems met while reading, for the report's last section.
    problems: Vec<String>,
}

impl Gathered {
    fn data_of(&self, p: &PointRun) -> Option<&DataArt> {
        p.keys.get("data").and_then(|k| self.data.get(k))
    }
    fn train_of(&self, p: &PointRun) -> Option<&TrainArt> {
        p.keys.get("train").and_then(|k| self.train.get(k))
    }
    fn prior_of(&self, p: &PointRun) -> Option<&PriorArt> {
        p.keys.get("prior").and_then(|k| self.prior.get(k))
    }
    fn eval_of(&self, p: &PointRun) -> Option<&EvalArt> {
        p.keys.get("eval").and_then(|k| self.eval.get(k))
    }
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

    let doc = compose(ctx, &params, &points, &mut g)?;

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

/// Inputs in pipeline order (data, train, prior, eval), then by the first point they serve.
fn ordered_inputs(inputs: &[Input]) -> Vec<&Input> {
    let mut v: Vec<&Input> = inputs.iter().collect();
    v.sort_by(|a, b| {
        let first = |i: &Input| i.points.iter().map(|p| p.index).min().unwrap_or(usize::MAX);
        (stage_rank(&a.stage), first(a), &a.key).cmp(&(stage_rank(&b.stage), first(b), &b.key))
    });
    v
}

/// Position of `stage` in pipeline order ([`UPSTREAM`]); other stages come last.
fn stage_rank(stage: &str) -> usize {
    UPSTREAM
        .iter()
        .position(|u| *u == stage)
        .unwrap_or(UPSTREAM.len())
}

/// Assigns each point the upstream instance of each stage that serves it (through the inputs'
/// `points` lists), and the reasons of missing ones. An input whose recorded points name none of
/// this pipeline's points (an output reused from another pipeline and re-read from its manifest,
/// as `vaepipe report <store dir>` does) serves every point when it is the only one of its stage.
fn associate(ctx: &Context, points: &mut [PointRun]) {
    let ids: BTreeSet<String> = points.iter().map(|p| p.id.clone()).collect();
    for stage in UPSTREAM {
        let of_stage: Vec<&Input> = ctx.inputs.iter().filter(|i| i.stage == stage).collect();
        let foreign = of_stage.len() == 1
            && !of_stage[0].points.iter().any(|p| ids.contains(&p.id))
            && !ctx.missing.iter().any(|m| m.stage == stage);
        for p in points.iter_mut() {
            let own = of_stage
                .iter()
                .find(|i| i.points.iter().any(|r| r.id == p.id));
            if let Some(i) = own.or(if foreign { of_stage.first() } else { None }) {
                p.keys.insert(stage, i.key.clone());
            }
        }
    }
    for m in ctx.missing {
        for p in points
            .iter_mut()
            .filter(|p| m.points.iter().any(|r| r.id == p.id))
        {
            p.missing.push((m.stage.clone(), m.reason.clone()));
        }
    }
}

/// Reads one upstream output; every failure becomes a noted problem, never an error.
fn load_input(input: &Input, g: &mut Gathered) {
    let dir = &input.dir;
    let name = format!("{}/{}", input.stage, input.key);
    let mut problems = Vec::new();
    // Error messages name files relative to the store entry, not by absolute path.
    let mut note = |e: anyhow::Error| {
        let msg = format!("{e:#}").replace(&dir.display().to_string(), &name);
        problems.push(msg);
    };
    match read_manifest(dir) {
        Ok(m) => g.manifests.push((input.stage.clone(), m)),
        Err(e) => note(e),
    }
    match input.stage.as_str() {
        "data" => {
            if let Some(art) = ok(read_data(dir), &mut note) {
                g.data.insert(input.key.clone(), art);
            }
        }
        "train" => {
            let art = TrainArt {
                json: ok(
                    crate::read_json::<Value>(&dir.join("train.json")),
                    &mut note,
                ),
                history: ok(read_history(&dir.join("history.parquet")), &mut note)
                    .unwrap_or_default(),
            };
            g.train.insert(input.key.clone(), art);
        }
        "prior" => {
            let art = read_prior(dir, &mut note);
            g.prior.insert(input.key.clone(), art);
        }
        "eval" => {
            let art = read_eval(dir, &mut note);
            g.eval.insert(input.key.clone(), art);
        }
        _ => {}
    }
    g.problems.extend(problems);
}

fn ok<T>(r: anyhow::Result<T>, note: &mut impl FnMut(anyhow::Error)) -> Option<T> {
    r.map_err(note).ok()
}

fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    crate::read_json::<Manifest>(&dir.join("manifest.json"))
}

fn read_data(dir: &Path) -> anyhow::Result<DataArt> {
    let path = dir.join("summary.json");
    let v: Value = crate::read_json(&path)?;
    let image_shape = match v.get("image_shape") {
        None | Some(Value::Null) => None,
        Some(s) => {
            let dims: Vec<u64> = s
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            match dims[..] {
                [h, w] if h > 0 && w > 0 => Some((1, h as usize, w as usize)),
                [c, h, w] if c > 0 && h > 0 && w > 0 => Some((c as usize, h as usize, w as usize)),
                _ => {
                    return Err(anyhow!(
                        "{}: `image_shape` must be [h, w], [c, h, w] or null, found {s}",
                        path.display()
                    ));
                }
            }
        }
    };
    let rows = match v.get("splits") {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, s)| {
                s.get("rows")
                    .and_then(Value::as_u64)
                    .map(|r| (k.clone(), r))
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    Ok(DataArt {
        image_shape,
        test_split: v.get("test_split").filter(|t| t.is_object()).cloned(),
        features: v.get("features").and_then(Value::as_u64),
        rows,
    })
}

fn read_history(path: &Path) -> anyhow::Result<Vec<Epoch>> {
    let t = vaepipe_data::read_table(path)?;
    let epoch = t.i64("epoch")?;
    let train = t.f64("train_bound")?;
    let validation = t.f64("validation_bound")?;
    Ok((0..t.rows())
        .map(|i| Epoch {
            epoch: epoch[i] as f64,
            train: train[i],
            validation: validation[i],
        })
        .collect())
}

fn read_prior(dir: &Path, note: &mut impl FnMut(anyhow::Error)) -> PriorArt {
    let refit = ok(crate::read_json::<Value>(&dir.join("refit.json")), note);
    let variants = ok(crate::read_json::<Value>(&dir.join("variants.json")), note)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let samples = if dir.join("latent_samples.parquet").is_file() {
        ok(
            read_latent_samples(&dir.join("latent_samples.parquet")),
            note,
        )
        .unwrap_or_default()
    } else {
        Vec::new()
    };
    let finetune_path = dir.join("finetune_history.parquet");
    let finetune = if finetune_path.is_file() {
        ok(read_history(&finetune_path), note).unwrap_or_default()
    } else {
        Vec::new()
    };
    PriorArt {
        refit,
        samples,
        finetune,
        variants,
    }
}

fn read_latent_samples(path: &Path) -> anyhow::Result<Vec<(String, f64, f64)>> {
    let t = vaepipe_data::read_table(path)?;
    let (s, x, y) = (t.str("source")?, t.f64("z1")?, t.f64("z2")?);
    Ok((0..t.rows()).map(|i| (s[i].clone(), x[i], y[i])).collect())
}

/// Reads the eval stage's `variants.json` and each variant's directory.
fn read_eval(dir: &Path, note: &mut impl FnMut(anyhow::Error)) -> EvalArt {
    let path = dir.join("variants.json");
    let Some(list) = ok(crate::read_json::<Value>(&path), note) else {
        return EvalArt {
            variants: Vec::new(),
        };
    };
    let Some(list) = list.as_array() else {
        note(anyhow!("{}: expected a list of variants", path.display()));
        return EvalArt {
            variants: Vec::new(),
        };
    };
    let mut variants = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let Some(name) = v.get("name").and_then(Value::as_str) else {
            note(anyhow!("{}: variant {i} has no `name`", path.display()));
            continue;
        };
        let sub = ["dir", "directory", "path"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str))
            .unwrap_or(name);
        // A directory name from a file: only a plain relative name inside the entry is followed.
        if sub.is_empty() || sub.contains(['/', '\\']) || sub == "." || sub == ".." {
            note(anyhow!(
                "{}: variant `{name}`: directory `{sub}` is not a plain name",
                path.display()
            ));
            continue;
        }
        let vdir = dir.join(sub);
        let label = v
            .get("label")
            .and_then(Value::as_str)
            .unwrap_or(name)
            .to_string();
        variants.push(read_variant(&vdir, name, label, note));
    }
    EvalArt { variants }
}

fn read_variant(
    dir: &Path,
    name: &str,
    label: String,
    note: &mut impl FnMut(anyhow::Error),
) -> EvalVariant {
    let metrics = ok(crate::read_json::<Value>(&dir.join("metrics.json")), note);
    let nll = read_part(dir, "per_image.parquet", note, |t| {
        let (i, n) = (t.i64("index")?, t.f64("nll")?);
        Ok(i.iter().copied().zip(n.iter().copied()).collect())
    });
    let curve = read_part(dir, "lk_curve.parquet", note, |t| {
        let (k, b, s) = (t.i64("k")?, t.f64("bound")?, t.f64("stderr")?);
        let images = t.i64("images").ok().and_then(|n| n.iter().copied().max());
        Ok((
            (0..t.rows())
                .map(|i| (k[i] as f64, b[i], s[i]))
                .collect::<Vec<_>>(),
            images,
        ))
    });
    let (curve, curve_images) = curve.unwrap_or_default();
    let units = read_part(dir, "units.parquet", note, |t| {
        let (v, a) = (t.f64("variance")?, t.bool("active")?);
        Ok(v.iter().copied().zip(a.iter().copied()).collect())
    });
    let samples = read_part(dir, "samples.parquet", note, pixel_rows);
    let reconstructions = read_part(dir, "reconstructions.parquet", note, read_reconstructions);
    let latents = read_part(dir, "latents.parquet", note, |t| {
        let (x, y, l) = (t.f64("x")?, t.f64("y")?, t.i64("label")?);
        Ok((0..t.rows()).map(|i| (x[i], y[i], l[i])).collect())
    });
    EvalVariant {
        name: name.to_string(),
        label,
        metrics,
        nll: nll.unwrap_or_default(),
        curve,
        curve_images,
        units: units.unwrap_or_default(),
        samples: samples.unwrap_or_default(),
        reconstructions: reconstructions.unwrap_or_default(),
        latents: latents.unwrap_or_default(),
    }
}

/// Reads table `file` of `dir` and extracts something from it; failures are noted.
fn read_part<T>(
    dir: &Path,
    file: &str,
    note: &mut impl FnMut(anyhow::Error),
    extract: impl FnOnce(&Table) -> anyhow::Result<T>,
) -> Option<T> {
    let t = ok(
        vaepipe_data::read_table(&dir.join(file)).map_err(anyhow::Error::from),
        note,
    )?;
    ok(extract(&t), note)
}

/// The pixel columns (`p0000`, `p0001`, …) of a table, in numeric order, as one image per row.
fn pixel_rows(t: &Table) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut cols: Vec<(usize, &str)> = t
        .names()
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix('p')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse().ok())
                .map(|i| (i, n))
        })
        .collect();
    cols.sort();
    if cols.is_empty() {
        return Err(anyhow!(
            "{}: no pixel columns (p0000, …)",
            t.source()
                .map_or("table".into(), |p| p.display().to_string())
        ));
    }
    let data: Vec<&[f64]> = cols
        .iter()
        .map(|(_, n)| t.f64(n))
        .collect::<Result<_, _>>()?;
    Ok((0..t.rows())
        .map(|r| data.iter().map(|c| c[r] as f32).collect())
        .collect())
}

fn read_reconstructions(t: &Table) -> anyhow::Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let image = t.i64("image")?;
    let kind = t.str("kind")?;
    let pixels = pixel_rows(t)?;
    let mut by_image: BTreeMap<i64, (Option<usize>, Option<usize>)> = BTreeMap::new();
    for r in 0..t.rows() {
        let e = by_image.entry(image[r]).or_default();
        match kind[r].as_str() {
            "original" => e.0 = Some(r),
            "reconstruction" => e.1 = Some(r),
            _ => {}
        }
    }
    Ok(by_image
        .into_values()
        .filter_map(|(o, r)| Some((pixels[o?].clone(), pixels[r?].clone())))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// The document

/// Adds figures and remembers what could not be drawn.
struct Figures<'a, 'b> {
    ctx: &'a Context<'b>,
    problems: Vec<String>,
    drawn: u64,
    /// Roughly how many figures the report has (for progress).
    expected: u64,
}

impl Figures<'_, '_> {
    /// Pushes a figure block, or a note saying why it is missing.
    fn push(
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

fn compose(
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

fn intro(
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
            get_f(v.metrics.as_ref(), "test_nll")
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
fn test_split_sentence(t: &Value) -> String {
    let u = |k: &str| t.get(k).and_then(Value::as_u64);
    let amount = match t.get("fraction").and_then(Value::as_f64) {
        Some(f) => format!("a fraction {f} ({} rows)", u("test_rows").unwrap_or(0)),
        None => format!("{} rows", u("test_rows").unwrap_or(0)),
    };
    let mut s = format!(
        "The test examples are {amount} held out of the {} rows of the training source (seed {} from pipeline seed {})",
        u("source_rows").unwrap_or(0),
        u("seed").unwrap_or(0),
        u("pipeline_seed").unwrap_or(0),
    );
    let stratified = t.get("stratified").and_then(Value::as_bool) == Some(true);
    let counts: Vec<String> = t
        .get("test_label_counts")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}: {}", v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    if stratified {
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
fn side_by_side(image: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
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
fn num(v: Option<f64>, d: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.d$}"),
        _ => "—".to_string(),
    }
}

fn get_f(v: Option<&Value>, key: &str) -> Option<f64> {
    v.and_then(|v| v.get(key)).and_then(Value::as_f64)
}

fn nll_cell(m: Option<&Value>) -> String {
    with_stderr(get_f(m, "test_nll"), get_f(m, "test_nll_stderr"))
}

/// `12.34 ± 0.56`, or the value alone without a (finite) standard error.
fn with_stderr(v: Option<f64>, s: Option<f64>) -> String {
    match (v, s) {
        (Some(n), Some(s)) if n.is_finite() && s.is_finite() => format!("{n:.2} ± {s:.2}"),
        (n, _) => num(n, 2),
    }
}

/// What a point without evaluation shows instead of numbers.
fn status_of(p: &PointRun) -> String {
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
struct Notes {
    /// (note text, "run — variant" labels).
    notes: Vec<(String, Vec<String>)>,
}

impl Notes {
    /// The number (1-based) of a variant's note, if it has one.
    fn number(&self, v: &EvalVariant) -> Option<usize> {
        let text = v.metrics.as_ref()?.get("note")?.as_str()?;
        self.notes
            .iter()
            .position(|(t, _)| t == text)
            .map(|i| i + 1)
    }
}

fn eval_notes(points: &[PointRun], g: &Gathered) -> Notes {
    let mut notes: Vec<(String, Vec<String>)> = Vec::new();
    for (p, v) in evaluated(points, g) {
        let Some(text) = v
            .metrics
            .as_ref()
            .and_then(|m| m.get("note"))
            .and_then(Value::as_str)
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
fn notes_section(notes: &Notes, blocks: &mut Vec<Block>) {
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

fn results_table(points: &[PointRun], g: &Gathered, notes: &Notes, blocks: &mut Vec<Block>) {
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
        let epochs = train
            .and_then(|t| t.get("epochs_run"))
            .and_then(Value::as_u64)
            .map_or("—".into(), |e| e.to_string());
        let seconds = num(get_f(train, "seconds"), 1);
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
                    let int = |k: &str| {
                        m.and_then(|m| m.get(k))
                            .and_then(Value::as_u64)
                            .map_or("—".into(), |x| x.to_string())
                    };
                    let units = match (
                        int("active_units"),
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
                        num(get_f(m, "elbo"), 2),
                        num(get_f(m, "kl"), 2),
                        num(get_f(m, "recon"), 2),
                        units,
                        int("eval_k"),
                        int("images"),
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
fn paired_table(points: &[PointRun], g: &Gathered, blocks: &mut Vec<Block>) {
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
const BURDA: [(&str, [f64; 3]); 2] = [
    ("VAE", [86.76, 86.47, 86.35]),
    ("IWAE", [86.76, 85.54, 84.78]),
];

/// Test NLL laid out like Table 1 of Burda et al. (2016): rows VAE / IWAE (× prior variant),
/// columns k; one table per combination of the other swept keys; then the paper's values.
fn burda_tables(
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
        for (objective, name) in [("elbo", "VAE (ELBO)"), ("iwae", "IWAE (L_k)")] {
            if !group
                .iter()
                .any(|p| p.cfg("train.objective").and_then(Value::as_str) == Some(objective))
            {
                continue;
            }
            for (vname, vlabel) in &variants {
                let mut row = vec![name.to_string(), vlabel.clone()];
                for k in &ks {
                    let point = group.iter().find(|p| {
                        p.cfg("train.objective").and_then(Value::as_str) == Some(objective)
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
fn table(header: &[impl ToString], text_columns: usize, rows: Vec<Vec<String>>) -> Block {
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

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether a history has a validation curve to draw: the data stage held out validation rows
/// (when it says) and some epoch has a finite, non-zero validation bound. Runs without a
/// validation split record NaN (older artifacts: 0), which is never drawn.
fn has_validation(p: &PointRun, g: &Gathered, h: &[Epoch]) -> bool {
    let rows = g.data_of(p).and_then(|d| d.rows.get("validation")).copied();
    rows != Some(0)
        && h.iter()
            .any(|e| e.validation.is_finite() && e.validation != 0.0)
}

/// Training (solid) and validation (dashed) curves of each run's history, and the names of the
/// runs drawn without a validation curve.
fn history_series(
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
fn validation_caption(series: &[Series], without: &[String]) -> String {
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
const VALIDATION_BOUND: &str = "the training objective's bound (L_k for IWAE, the k-sample ELBO for the VAE) \
     with the training k on the validation split, fixed noise";

fn training_figures(
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
fn history_figure<'a>(
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
fn evaluated<'a>(points: &'a [PointRun], g: &'a Gathered) -> Vec<(&'a PointRun, &'a EvalVariant)> {
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
fn is_first_variant(p: &PointRun, v: &EvalVariant, g: &Gathered) -> bool {
    g.eval_of(p)
        .and_then(|e| e.variants.first())
        .is_some_and(|f| f.name == v.name)
}

/// "run — variant" (or the variant alone without a sweep).
fn run_variant(p: &PointRun, v: &EvalVariant) -> String {
    if p.label.is_empty() {
        v.label.clone()
    } else {
        format!("{} — {}", p.label, v.label)
    }
}

/// Most series of a test-NLL-against-parameter figure (one per variant and combination of the
/// other swept keys).
const MAX_SWEEP_SERIES: usize = 8;

/// For each swept key, the test NLL against that key's values: a line chart when the values
/// are numbers (one series per variant and combination of the other swept keys), else a dot
/// chart per value.
fn sweep_figures(
    points: &[PointRun],
    g: &Gathered,
    sweep_keys: &BTreeSet<String>,
    figs: &mut Figures<'_, '_>,
    blocks: &mut Vec<Block>,
) -> Result<(), StageError> {
    let all: Vec<(&PointRun, &EvalVariant, f64, Option<f64>)> = evaluated(points, g)
        .into_iter()
        .filter_map(|(p, v)| {
            get_f(v.metrics.as_ref(), "test_nll")
                .filter(|n| n.is_finite())
                .map(|n| (p, v, n, get_f(v.metrics.as_ref(), "test_nll_stderr")))
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
                let others: Vec<String> = p
                    .swept()
                    .into_iter()
                    .filter(|(k, _)| k != key)
                    .map(|(k, x)| {
                        format!("{}={}", k.rsplit('.').next().unwrap_or(&k), cell_text(&x))
                    })
                    .collect();
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
                    let rest: Vec<String> = p
                        .swept()
                        .into_iter()
                        .filter(|(k, _)| k != key)
                        .map(|(k, x)| {
                            format!("{}={}", k.rsplit('.').next().unwrap_or(&k), cell_text(&x))
                        })
                        .collect();
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
fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn bound_figures(
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
            get_f(v.metrics.as_ref(), "test_nll").map(|n| {
                (
                    run_variant(p, v),
                    n,
                    get_f(v.metrics.as_ref(), "test_nll_stderr"),
                )
            })
        })
        .collect();
    if !items.is_empty() {
        let k = all
            .iter()
            .find_map(|(_, v)| get_f(v.metrics.as_ref(), "eval_k"))
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
fn active_units(v: &EvalVariant) -> Option<f64> {
    get_f(v.metrics.as_ref(), "active_units")
        .or_else(|| (!v.units.is_empty()).then(|| v.units.iter().filter(|u| u.1).count() as f64))
}

/// The model (encoder and decoder) a variant evaluates, from the prior stage's `variants.json`:
/// variants that share it have the same units, reconstructions and latents.
fn model_id(p: &PointRun, v: &EvalVariant, g: &Gathered) -> String {
    let entry = g.prior_of(p).and_then(|pr| {
        pr.variants
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(v.name.as_str()))
    });
    match entry {
        Some(e) => format!(
            "{}/{}",
            e.get("model_stage").and_then(Value::as_str).unwrap_or("?"),
            e.get("model_file").and_then(Value::as_str).unwrap_or("?")
        ),
        None => format!("variant/{}", v.name),
    }
}

/// One (point, variant) per distinct model of each point.
fn distinct_models<'a>(
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
fn model_name(p: &PointRun, v: &EvalVariant, g: &Gathered) -> String {
    let trained = model_id(p, v, g).starts_with("train/");
    if trained || is_first_variant(p, v, g) {
        p.name()
    } else {
        format!("{} ({})", p.name(), v.label)
    }
}

/// Points whose images are drawn: all (up to [`MAX_FIGURE_POINTS`]), or the one with the lowest
/// test NLL; the text says which.
fn figure_points<'a>(points: &'a [PointRun], g: &Gathered) -> (Vec<&'a PointRun>, Option<String>) {
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
            .and_then(|v| get_f(v.metrics.as_ref(), "test_nll"))
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

fn prior_section(
    points: &[PointRun],
    g: &Gathered,
    figs: &mut Figures<'_, '_>,
    blocks: &mut Vec<Block>,
) -> Result<(), StageError> {
    let with_refit: Vec<(&PointRun, &Value)> = points
        .iter()
        .filter_map(|p| {
            g.prior_of(p)
                .and_then(|pr| pr.refit.as_ref())
                .map(|r| (p, r))
        })
        .collect();
    let any_samples = points
        .iter()
        .any(|p| g.prior_of(p).is_some_and(|pr| !pr.samples.is_empty()));
    if with_refit.is_empty() && !any_samples {
        return Ok(());
    }
    blocks.push(Block::Heading(1, "Prior refit".into()));
    blocks.push(Block::Paragraph(
        "Empirical Bayes: the average ELBO depends on the prior only through E_q_agg[log p(z)], which the aggregate \
         posterior q_agg(z) = (1/N) Σ_n q(z|x_n) maximizes (Hoffman & Johnson 2016; Tomczak & Welling 2018). The prior \
         stage refits p(z) towards it (mixture of Gaussians, aggregate posterior or VampPrior) with the trained model fixed."
            .into(),
    ));
    if !with_refit.is_empty() {
        let header = [
            "run",
            "refit prior",
            "components",
            "objective before",
            "objective after",
            "test ELBO N(0,I)",
            "test ELBO refit",
            "test L_k N(0,I)",
            "test L_k refit",
            "KL(q_agg‖N(0,I))",
            "KL(q_agg‖refit)",
            "s",
        ];
        let rows = with_refit
            .iter()
            .map(|(p, r)| {
                let r = Some(*r);
                let test = r.and_then(|r| r.get("test"));
                vec![
                    p.name(),
                    r.and_then(|r| r.get("label").or_else(|| r.get("method")))
                        .map(value_text)
                        .unwrap_or_else(|| "—".into()),
                    r.and_then(|r| r.get("components"))
                        .map(value_text)
                        .unwrap_or_else(|| "—".into()),
                    num(get_f(r, "objective_before"), 2),
                    num(get_f(r, "objective_after"), 2),
                    num(get_f(test, "elbo_standard"), 2),
                    num(get_f(test, "elbo_refit"), 2),
                    num(get_f(test, "lk_standard"), 2),
                    num(get_f(test, "lk_refit"), 2),
                    with_stderr(
                        get_f(r, "kl_qagg_standard"),
                        get_f(r, "kl_qagg_standard_stderr"),
                    ),
                    with_stderr(get_f(r, "kl_qagg_refit"), get_f(r, "kl_qagg_refit_stderr")),
                    num(get_f(r, "seconds"), 1),
                ]
            })
            .collect();
        blocks.push(table(&header, 2, rows));
        blocks.push(Block::Paragraph(
            "From refit.json. The objective is what the refit maximizes (same Monte Carlo draws before and after; the \
             refit keeps the better prior). Test ELBO and L_k are bounds (higher is better) on the test images the prior \
             stage used; KL(q_agg ‖ p) is estimated (lower: the prior covers the aggregate posterior better)."
                .into(),
        ));
        let objectives: Vec<String> = with_refit
            .iter()
            .filter_map(|(p, r)| {
                r.get("objective")
                    .and_then(Value::as_str)
                    .map(|o| format!("{}: {o}", p.name()))
            })
            .collect();
        if !objectives.is_empty() {
            blocks.push(Block::Paragraph("Refit objectives:".into()));
            blocks.push(Block::List(objectives));
        }
    }
    let (shown, note) = figure_points(points, g);
    let shown: Vec<&PointRun> = if shown.is_empty() {
        points
            .iter()
            .filter(|p| g.prior_of(p).is_some())
            .take(1)
            .collect()
    } else {
        shown
    };
    if let Some(n) = note {
        blocks.push(Block::Paragraph(n));
    }
    for p in shown {
        let Some(pr) = g.prior_of(p).filter(|pr| !pr.samples.is_empty()) else {
            continue;
        };
        let mut order: Vec<String> = ["standard normal", "refit prior", "aggregate posterior"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (s, _, _) in &pr.samples {
            if !order.contains(s) {
                order.push(s.clone());
            }
        }
        let panels: Vec<DensityPanel> = order
            .iter()
            .filter_map(|name| {
                let pts: Vec<(f64, f64)> = pr
                    .samples
                    .iter()
                    .filter(|(s, _, _)| s == name)
                    .map(|(_, x, y)| (*x, *y))
                    .collect();
                (!pts.is_empty()).then(|| DensityPanel {
                    name: name.clone(),
                    data: Density::Samples(pts),
                })
            })
            .collect();
        let dims = pr
            .refit
            .as_ref()
            .and_then(|r| r.get("plot_dims"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect::<Vec<_>>())
            .unwrap_or_default();
        let (xl, yl) = match dims[..] {
            [i, j] => (format!("z[{i}]"), format!("z[{j}]")),
            _ => ("z₁".to_string(), "z₂".to_string()),
        };
        // About four samples per bin in the smallest panel keeps the histograms readable.
        let smallest = panels
            .iter()
            .map(|p| {
                if let Density::Samples(s) = &p.data {
                    s.len()
                } else {
                    0
                }
            })
            .min()
            .unwrap_or(0);
        let bins = ((smallest as f64 / 4.0).sqrt().round() as usize).clamp(12, 60);
        let chart = DensityComparison {
            title: format!("Prior vs aggregate posterior — {}", p.name()),
            x_label: xl.clone(),
            y_label: yl.clone(),
            panels,
            bins,
            bounds: None,
        };
        figs.push(
            blocks,
            &format!("prior_density_{}", p.stem()),
            format!(
                "{}: samples of the standard normal, of the refit prior and of the aggregate posterior, projected on the two \
                 latent dimensions of highest aggregate-posterior variance ({xl}, {yl}); one shared colour scale.",
                p.name()
            ),
            vaepipe_report::density_comparison(&chart),
        )?;
    }
    Ok(())
}

fn image_sections(
    points: &[PointRun],
    g: &Gathered,
    figs: &mut Figures<'_, '_>,
    blocks: &mut Vec<Block>,
) -> Result<(), StageError> {
    let (shown, note) = figure_points(points, g);
    if shown.is_empty() {
        return Ok(());
    }
    blocks.push(Block::Heading(1, "Samples and reconstructions".into()));
    if let Some(n) = &note {
        blocks.push(Block::Paragraph(n.clone()));
    }
    let shape = shown
        .iter()
        .find_map(|p| g.data_of(p))
        .and_then(|d| d.image_shape);
    match shape {
        None => blocks.push(Block::Paragraph("The data have no image shape (data summary.json: image_shape is null), so samples and reconstructions are not drawn as images.".into())),
        Some((c, h, w0)) => {
            let w = c * w0;
            if c > 1 {
                blocks.push(Block::Paragraph(format!("The images have {c} channels of {h}×{w0} pixels; each is drawn as its channels side by side in grey.")));
            }
            for p in &shown {
                let Some(e) = g.eval_of(p) else { continue };
                for v in e.variants.iter().filter(|v| !v.samples.is_empty()) {
                    let images: Vec<Vec<f32>> = v.samples.iter().take(MAX_SAMPLES).map(|i| side_by_side(i, c, h, w0)).collect();
                    let grid = ImageGrid { title: format!("Prior samples — {}", run_variant(p, v)), images, height: h, width: w, cols: 10, captions: None, group: 1 };
                    figs.push(
                        blocks,
                        &format!("samples_{}_{}", p.stem(), file_part(&v.name)),
                        format!("{}: decoder means of z drawn from the prior \"{}\" (seeded draws).", p.name(), v.label),
                        vaepipe_report::image_grid(&grid),
                    )?;
                }
            }
            for (p, v) in distinct_models(points, g).into_iter().filter(|(p, _)| shown.iter().any(|s| s.index == p.index)) {
                if v.reconstructions.is_empty() {
                    continue;
                }
                let mut images = Vec::new();
                let mut captions = Vec::new();
                for (o, r) in v.reconstructions.iter().take(MAX_RECONSTRUCTIONS) {
                    images.extend([side_by_side(o, c, h, w0), side_by_side(r, c, h, w0)]);
                    captions.extend(["original".to_string(), "reconstr.".to_string()]);
                }
                let grid = ImageGrid {
                    title: format!("Reconstructions — {}", model_name(p, v, g)),
                    images,
                    height: h,
                    width: w,
                    cols: 8,
                    captions: Some(captions),
                    group: 2,
                };
                figs.push(
                    blocks,
                    &format!("reconstructions_{}_{}", p.stem(), file_part(&v.name)),
                    format!(
                        "{}: test images (left of each pair; the binarized input for binarized data) and the decoder mean \
                         for the encoder's posterior mean (right).",
                        model_name(p, v, g)
                    ),
                    vaepipe_report::image_grid(&grid),
                )?;
            }
        }
    }
    // Latent space.
    let latents: Vec<(&PointRun, &EvalVariant)> = distinct_models(points, g)
        .into_iter()
        .filter(|(p, v)| !v.latents.is_empty() && shown.iter().any(|s| s.index == p.index))
        .collect();
    if !latents.is_empty() {
        blocks.push(Block::Heading(1, "Latent space".into()));
        for (p, v) in latents {
            let labels: BTreeSet<i64> = v.latents.iter().map(|l| l.2).collect();
            let labels: Vec<i64> = labels.into_iter().collect();
            let class_names = labels
                .iter()
                .map(|l| {
                    if *l < 0 {
                        "unlabelled".to_string()
                    } else {
                        format!("label {l}")
                    }
                })
                .collect();
            let pts = v
                .latents
                .iter()
                .map(|(x, y, l)| (*x, *y, labels.iter().position(|c| c == l).unwrap_or(0)))
                .collect();
            let chart = Scatter {
                title: format!("Latent means — {}", model_name(p, v, g)),
                x_label: "first principal component".into(),
                y_label: "second principal component".into(),
                points: pts,
                class_names,
            };
            figs.push(
                blocks,
                &format!("latents_{}_{}", p.stem(), file_part(&v.name)),
                format!("{}: encoder means of test images projected on their first two principal components, coloured by label.", model_name(p, v, g)),
                vaepipe_report::scatter(&chart),
            )?;
        }
    }
    Ok(())
}

/// A variant name reduced to file-name-safe characters.
fn file_part(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

fn spec_section(points: &[PointRun], blocks: &mut Vec<Block>) {
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

fn strip_point(config: &Value) -> Value {
    let mut c = config.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("point");
    }
    c
}

/// The run's configuration as TOML (through `vaepipe_spec::to_toml`), or as JSON if it does
/// not deserialize as a `RunConfig` (e.g. written by another version).
fn spec_text(config: &Value) -> (&'static str, String) {
    match serde_json::from_value::<vaepipe_spec::RunConfig>(strip_point(config)) {
        Ok(run) => ("toml", vaepipe_spec::to_toml(&run)),
        Err(_) => (
            "json",
            serde_json::to_string_pretty(config).unwrap_or_default(),
        ),
    }
}

/// Dotted key → TOML-ish value text, for differences between points.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
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

fn short(key: &str) -> &str {
    key.get(..10).unwrap_or(key)
}

fn provenance_section(ctx: &Context, points: &[PointRun], g: &Gathered, blocks: &mut Vec<Block>) {
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
fn log_text(path: &Path) -> String {
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
