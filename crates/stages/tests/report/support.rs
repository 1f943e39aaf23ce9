//! Support for the report stage's tests (report.rs, report_real.rs): stand-in upstream stages
//! that write small synthetic artifacts with known numbers, running specs through the engine,
//! and checks on a rendered report (files, PNG sizes, HTML, Markdown tables).

// Each test target uses only some of these.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde_json::{Value, json};
use vaepipe_data::{Column, Table};
use vaepipe_engine::{
    Context, NoEvents, Outcome, Registry, RunOptions, RunReport, Stage, StageError, Store, execute,
    explain, pick, plan,
};
use vaepipe_stages::ReportStage;

pub const SUBSET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/mnist-subset");

/// The figures of every report with evaluated runs (the per-point ones come on top).
pub const SUMMARY_FIGURES: [&str; 5] = [
    "training_curves",
    "bound_vs_k",
    "test_nll",
    "nll_histogram",
    "active_units",
];

/// The `[data]` table of a spec reading the embedded MNIST subset (more keys may follow).
pub fn subset_data() -> String {
    format!(
        r#"[data]
format = "idx"
train = {{ images = "{SUBSET}/train-images-idx3-ubyte.gz", labels = "{SUBSET}/train-labels-idx1-ubyte.gz" }}
test = {{ images = "{SUBSET}/t10k-images-idx3-ubyte.gz", labels = "{SUBSET}/t10k-labels-idx1-ubyte.gz" }}"#
    )
}

// ---------------------------------------------------------------------------------------------
// Running pipelines

/// An empty store in a new temporary directory (removed when the `TempDir` is dropped).
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path()).expect("store");
    (tmp, store)
}

pub fn load(text: &str) -> vaepipe_spec::Spec {
    let dir = std::env::temp_dir();
    vaepipe_spec::load_str("test.toml", text, &dir, &[], &dir)
        .unwrap_or_else(|e| panic!("invalid spec:\n{}", e.render(false)))
}

pub fn run(
    registry: &Registry,
    store: &Store,
    spec: &vaepipe_spec::Spec,
    force: &[&str],
) -> RunReport {
    let p = plan(
        registry,
        store,
        spec.name(),
        vaepipe_stages::points_of(spec),
        true,
    )
    .expect("plan");
    let force: Vec<String> = force.iter().map(|s| s.to_string()).collect();
    let decisions = explain(&p, store, &force).expect("explain");
    let options = RunOptions {
        jobs: 2,
        tool_version: "0.0.0-test".into(),
        ..Default::default()
    };
    execute(
        registry,
        store,
        &p,
        &decisions,
        &options,
        &NoEvents,
        &AtomicBool::new(false),
    )
    .expect("execute")
}

/// The committed report directory of a run (panics with every outcome if there is none).
pub fn report_dir(r: &RunReport) -> PathBuf {
    match r
        .instances
        .iter()
        .find(|i| i.stage == "report" && matches!(i.outcome, Outcome::Ran | Outcome::Cached))
    {
        Some(i) => i.dir.clone(),
        None => {
            let outcomes: Vec<String> = r
                .instances
                .iter()
                .map(|i| format!("{} {:?}", i.stage, i.outcome))
                .collect();
            panic!("no report was rendered: {outcomes:#?}")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checking a report directory

/// Every file under `dir` except the engine's manifest: relative path → bytes.
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("readable directory") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.file_name().is_some_and(|n| n != "manifest.json") {
                let rel = p
                    .strip_prefix(root)
                    .expect("inside")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read(&p).expect("readable file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

pub fn png_size(bytes: &[u8]) -> (u32, u32) {
    let mut reader = png::Decoder::new(bytes)
        .read_info()
        .expect("PNG header decodes");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG data decodes");
    let distinct: BTreeSet<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
    assert!(
        distinct.len() > 2,
        "the PNG is (nearly) blank: {} colours",
        distinct.len()
    );
    (info.width, info.height)
}

pub fn parse_html(html: &str) -> roxmltree::Document<'_> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(html, options).expect("index.html is well-formed")
}

/// Checks the figures, the Markdown's references and the HTML's self-containment; returns the
/// figure stems.
pub fn check_report(dir: &Path) -> BTreeSet<String> {
    let figures = dir.join("figures");
    let mut by_stem: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in std::fs::read_dir(&figures).expect("figures/ exists") {
        let name = e.expect("entry").file_name().to_string_lossy().to_string();
        let (stem, ext) = name
            .rsplit_once('.')
            .expect("figure files have an extension");
        by_stem
            .entry(stem.to_string())
            .or_default()
            .insert(ext.to_string());
    }
    assert!(!by_stem.is_empty(), "no figures written");
    for (stem, exts) in &by_stem {
        assert_eq!(
            exts,
            &BTreeSet::from(["png".to_string(), "svg".to_string()]),
            "figure {stem} needs exactly a PNG and an SVG"
        );
        let png = std::fs::read(figures.join(format!("{stem}.png"))).expect("PNG readable");
        let (w, h) = png_size(&png);
        let svg =
            std::fs::read_to_string(figures.join(format!("{stem}.svg"))).expect("SVG is UTF-8");
        let doc = roxmltree::Document::parse(&svg)
            .unwrap_or_else(|e| panic!("{stem}.svg is not well-formed: {e}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.attribute("width"),
            Some(w.to_string().as_str()),
            "{stem}: SVG and PNG widths differ"
        );
        assert_eq!(
            root.attribute("height"),
            Some(h.to_string().as_str()),
            "{stem}: SVG and PNG heights differ"
        );
        assert!(w >= 300 && h >= 100, "{stem}: implausible size {w}×{h}");
    }

    // Markdown: every link target exists, and every figure is referenced.
    let md = index_md(dir);
    let mut referenced = BTreeSet::new();
    for (i, _) in md.match_indices("](") {
        let target = md[i + 2..].split(')').next().unwrap_or("");
        assert!(
            !target.contains(':') && !target.starts_with('/'),
            "index.md links outside the report: {target}"
        );
        assert!(
            dir.join(target).is_file(),
            "index.md references a missing file: {target}"
        );
        if let Some(stem) = target
            .strip_prefix("figures/")
            .and_then(|t| t.strip_suffix(".png"))
        {
            referenced.insert(stem.to_string());
        }
    }
    let stems: BTreeSet<String> = by_stem.keys().cloned().collect();
    assert_eq!(
        referenced, stems,
        "figures written and figures referenced by index.md differ"
    );

    // HTML: one file; every resource is embedded, one image per figure.
    let html = std::fs::read_to_string(dir.join("index.html")).expect("index.html");
    let doc = parse_html(&html);
    let mut images = 0;
    for n in doc.descendants().filter(|n| n.is_element()) {
        for a in ["src", "href"] {
            if let Some(v) = n.attribute(a) {
                assert!(
                    v.starts_with("data:") || v.starts_with('#'),
                    "index.html refers to an external resource: {a}={v}"
                );
            }
        }
        if n.has_tag_name("img") {
            images += 1;
        }
        assert!(
            !n.has_tag_name("script") && !n.has_tag_name("link"),
            "index.html has a <{}> element",
            n.tag_name().name()
        );
    }
    assert_eq!(
        images,
        stems.len(),
        "index.html embeds one image per figure"
    );
    stems
}

/// The (trimmed) cells of every Markdown table line, header and delimiter rows included.
pub fn md_table_lines(md: &str) -> impl Iterator<Item = Vec<&str>> {
    md.lines().filter(|l| l.starts_with("| ")).map(|l| {
        l.trim_start_matches("| ")
            .trim_end_matches(" |")
            .split(" | ")
            .map(str::trim)
            .collect()
    })
}

/// Cells of the Markdown table rows whose first cells are `first`.
pub fn md_rows<'a>(md: &'a str, first: &[&str]) -> Vec<Vec<&'a str>> {
    md_table_lines(md)
        .filter(|cells| cells.len() >= first.len() && cells[..first.len()] == *first)
        .collect()
}

/// Everything after the first occurrence of `heading` (a section heading) in a Markdown report.
pub fn after_heading<'a>(md: &'a str, heading: &str) -> &'a str {
    md.split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("no {heading:?} in the report"))
}

/// The report's Markdown document.
pub fn index_md(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("index.md")).expect("index.md")
}

/// Asserts that two renders of a report (as [`files`] reads them) are the same bytes; `what`
/// says how the second one was made.
pub fn assert_same_files(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>, what: &str) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in a {
        assert!(b[name] == *bytes, "{name} differs {what}");
    }
}

/// Asserts that the Markdown does not name the store's location.
pub fn assert_no_store_path(md: &str, store: &Path) {
    assert!(
        !md.contains(store.to_str().expect("utf-8 path")),
        "index.md names the store's absolute path"
    );
}

/// The text of the level-2 section `title` of a Markdown report (up to the next section).
pub fn section<'a>(md: &'a str, title: &str) -> &'a str {
    let start = md
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("no section {title:?}"));
    let rest = &md[start + 1..];
    match rest[3..].find("\n## ") {
        Some(end) => &rest[..end + 3],
        None => rest,
    }
}

/// The column index of `title` in the Markdown table header that contains it.
pub fn md_column(md: &str, title: &str) -> usize {
    md_table_lines(md)
        .find_map(|cells| cells.iter().position(|c| *c == title))
        .unwrap_or_else(|| panic!("no table column {title:?}"))
}

// ---------------------------------------------------------------------------------------------
// Stand-in upstream stages writing synthetic artifacts per docs/artifacts.md

/// Test NLL the stand-in eval stage reports: falls with k, more for IWAE; the refit prior helps.
pub fn synthetic_nll(objective: &str, k: u64, variant: &str) -> f64 {
    let k = k as f64;
    95.0 - 2.0 * k.ln()
        - if objective == "iwae" {
            1.5 * k.ln()
        } else {
            0.0
        }
        - if variant == "refit" { 0.75 } else { 0.0 }
}

/// A deterministic value in [0, 1) for `i`.
pub fn noise(i: usize) -> f64 {
    ((i as f64 * 12.9898 + 0.5).sin() * 43_758.545_3)
        .fract()
        .abs()
}

pub fn write_table(dir: &Path, file: &str, columns: Vec<(&str, Column)>) -> Result<(), StageError> {
    let t = Table::from_columns(
        columns
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect(),
    );
    vaepipe_data::write_table(&dir.join(file), &t).map_err(|e| anyhow::anyhow!(e))?;
    Ok(())
}

pub fn write_json(path: &Path, v: &Value) -> Result<(), StageError> {
    std::fs::write(path, serde_json::to_vec_pretty(v).expect("serializes"))
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(())
}

/// The `index` and `label` columns of `n` synthetic test images, followed by `columns`.
pub fn test_image_columns(
    n: usize,
    columns: impl IntoIterator<Item = (&'static str, Column)>,
) -> Vec<(&'static str, Column)> {
    let mut all = vec![
        ("index", Column::I64((0..n as i64).collect())),
        ("label", Column::I64((0..n as i64).map(|i| i % 3).collect())),
    ];
    all.extend(columns);
    all
}

pub fn pixel_columns(images: &[Vec<f64>]) -> Vec<(String, Column)> {
    (0..16)
        .map(|p| {
            (
                format!("p{p:04}"),
                Column::F64(images.iter().map(|im| im[p]).collect()),
            )
        })
        .collect()
}

/// A stand-in for an upstream stage: the stage it replaces, the parameters it depends on and the
/// synthetic artifacts it writes. [`Fake`] runs it as a stage (version 1).
trait StandIn: Send + Sync {
    const NAME: &'static str;
    const INPUTS: &'static [&'static str];
    /// Paths of the point's configuration that the stage's parameters hold.
    const PARAMS: &'static [&'static str];
    /// Writes the artifacts into `ctx.out`.
    fn write(&self, ctx: &Context) -> Result<(), StageError>;
}

/// A [`StandIn`] registered as a stage.
pub struct Fake<T>(pub T);

impl<T: StandIn> Stage for Fake<T> {
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> &'static [&'static str] {
        T::INPUTS
    }
    fn params(&self, point: &Value) -> Value {
        pick(point, T::PARAMS)
    }
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        self.0.write(ctx)
    }
}

/// Writes a data summary with `validation_rows` validation rows.
pub struct FakeData {
    pub validation_rows: u64,
}
impl StandIn for FakeData {
    const NAME: &'static str = "data";
    const INPUTS: &'static [&'static str] = &[];
    const PARAMS: &'static [&'static str] = &["data", "pipeline.seed"];
    fn write(&self, ctx: &Context) -> Result<(), StageError> {
        let split = |rows: u64| json!({"rows": rows, "features": 16, "label_counts": {}, "min": 0.0, "max": 1.0, "mean": 0.3});
        write_json(
            &ctx.out.join("summary.json"),
            &json!({"features": 16, "image_shape": [4, 4], "scale_factor": 1.0, "binarize": "dynamic", "splits": {"train": split(90), "validation": split(self.validation_rows), "test": split(40)}, "seconds": 0.1}),
        )
    }
}

/// Writes a training history; `validation(k, t)` is the validation bound of a run with
/// `train.k` = k at an epoch with training bound t (NaN: no validation split).
pub struct FakeTrain {
    pub validation: fn(u64, f64) -> f64,
}

/// The validation bound of every test but the one about missing validation splits.
pub fn validation_behind(_k: u64, train: f64) -> f64 {
    train - 1.5
}

impl StandIn for FakeTrain {
    const NAME: &'static str = "train";
    const INPUTS: &'static [&'static str] = &["data"];
    const PARAMS: &'static [&'static str] = &["model", "train", "pipeline.seed"];
    fn write(&self, ctx: &Context) -> Result<(), StageError> {
        let epochs = ctx.params["train"]["epochs"].as_u64().unwrap_or(1) as i64;
        let k = ctx.params["train"]["k"].as_u64().unwrap_or(1) as f64;
        let e: Vec<i64> = (1..=epochs).collect();
        let train: Vec<f64> = e
            .iter()
            .map(|e| -(100.0 + 30.0 / *e as f64 - k.ln()))
            .collect();
        let validation = train
            .iter()
            .map(|t| (self.validation)(k as u64, *t))
            .collect();
        write_table(
            ctx.out,
            "history.parquet",
            vec![
                ("epoch", Column::I64(e.clone())),
                ("step", Column::I64(e.iter().map(|e| e * 10).collect())),
                ("train_bound", Column::F64(train)),
                ("validation_bound", Column::F64(validation)),
                ("lr", Column::F64(vec![1e-3; e.len()])),
                (
                    "seconds",
                    Column::F64(e.iter().map(|e| *e as f64 * 0.5).collect()),
                ),
                ("images_per_s", Column::F64(vec![1000.0; e.len()])),
            ],
        )?;
        write_json(
            &ctx.out.join("train.json"),
            &json!({"objective": ctx.params["train"]["objective"], "k": k, "estimator": "reparam", "analytic_kl": false, "epochs_run": epochs,
                    "best_epoch": epochs, "best_validation_bound": -101.0, "final_train_bound": -100.0, "final_validation_bound": -101.0,
                    "stopped_early": false, "steps": epochs * 10, "seconds": epochs as f64 * 0.5, "parameters": 1234, "resumed": 0}),
        )
    }
}

pub struct FakePrior;
impl StandIn for FakePrior {
    const NAME: &'static str = "prior";
    const INPUTS: &'static [&'static str] = &["data", "train"];
    const PARAMS: &'static [&'static str] = &["prior", "model", "train", "pipeline.seed"];
    fn write(&self, ctx: &Context) -> Result<(), StageError> {
        let sources = ["standard normal", "refit prior", "aggregate posterior"];
        let n = 300;
        let mut src = Vec::new();
        let (mut z1, mut z2) = (Vec::new(), Vec::new());
        for (s, name) in sources.iter().enumerate() {
            for i in 0..n {
                src.push(name.to_string());
                z1.push((noise(i + 1000 * s) - 0.5) * 4.0 + s as f64 * 0.3);
                z2.push((noise(i + 7 + 1000 * s) - 0.5) * 3.0);
            }
        }
        write_table(
            ctx.out,
            "latent_samples.parquet",
            vec![
                ("source", Column::Str(src)),
                ("z1", Column::F64(z1)),
                ("z2", Column::F64(z2)),
            ],
        )?;
        write_json(
            &ctx.out.join("variants.json"),
            &json!([
                {"name": "standard", "label": "N(0, I)", "model_stage": "train", "model_file": "model.safetensors", "prior_file": null},
                {"name": "refit", "label": "mog K=3", "model_stage": "train", "model_file": "model.safetensors", "prior_file": "prior.safetensors"}
            ]),
        )?;
        let side = json!({"elbo_standard": -99.0, "elbo_refit": -98.5, "lk_standard": -97.0, "lk_refit": -96.6, "images": 40});
        write_json(
            &ctx.out.join("refit.json"),
            &json!({"method": "mog", "components": 3, "subset": 0, "seed": 7, "k": 1, "objective": "elbo", "objective_before": -99.0,
                    "objective_after": -98.4, "train": side, "test": side, "kl_qagg_standard": 2.5, "kl_qagg_refit": 0.4,
                    "active_units": 4, "plot_dims": [2, 0], "seconds": 0.2}),
        )
    }
}

/// Writes a complete eval output; fails for the point labelled `fail`, writes a corrupt
/// `lk_curve.parquet` for the point labelled `corrupt`, and gives every `refit` variant the
/// metrics.json `note` in `note`.
#[derive(Default)]
pub struct FakeEval {
    pub fail: Option<&'static str>,
    pub corrupt: Option<&'static str>,
    pub note: Option<&'static str>,
}
impl StandIn for FakeEval {
    const NAME: &'static str = "eval";
    const INPUTS: &'static [&'static str] = &["data", "train", "prior"];
    const PARAMS: &'static [&'static str] =
        &["eval", "prior", "model", "train", "pipeline.seed", "point"];
    fn write(&self, ctx: &Context) -> Result<(), StageError> {
        let label = ctx.points.first().map(|p| p.label.as_str()).unwrap_or("");
        if self.fail == Some(label) {
            return Err(anyhow::anyhow!("injected failure for the test").into());
        }
        let objective = ctx.params["train"]["objective"]
            .as_str()
            .unwrap_or("elbo")
            .to_string();
        let k = ctx.params["train"]["k"].as_u64().unwrap_or(1);
        let variants = [("standard", "N(0, I)"), ("refit", "mog K=3")];
        write_json(
            &ctx.out.join("variants.json"),
            &json!(
                variants
                    .iter()
                    .map(|(n, l)| json!({"name": n, "label": l, "dir": n}))
                    .collect::<Vec<_>>()
            ),
        )?;
        for (vi, (name, label_v)) in variants.iter().enumerate() {
            let dir = ctx.out.join(name);
            std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!(e))?;
            let nll = synthetic_nll(&objective, k, name);
            let mut metrics = json!({"test_nll": nll, "test_nll_stderr": 0.25, "eval_k": 50, "elbo": -(nll + 4.0), "kl": 20.0, "recon": -(nll - 16.0),
                        "active_units": 3 + (k as usize % 2), "images": 40, "objective": objective, "k": k, "estimator": "reparam",
                        "prior": label_v, "variant": name, "point": label, "point_id": ctx.points[0].id, "seconds": 0.3});
            if let Some(note) = self.note.filter(|_| *name == "refit") {
                metrics["note"] = json!(note);
            }
            write_json(&dir.join("metrics.json"), &metrics)?;
            let n = 40;
            write_table(
                &dir,
                "per_image.parquet",
                test_image_columns(
                    n,
                    [
                        (
                            "nll",
                            Column::F64(
                                (0..n).map(|i| nll - 10.0 + 20.0 * noise(i + vi)).collect(),
                            ),
                        ),
                        ("elbo", Column::F64(vec![-nll - 4.0; n])),
                        ("kl", Column::F64(vec![20.0; n])),
                        ("recon", Column::F64(vec![16.0 - nll; n])),
                    ],
                ),
            )?;
            if self.corrupt == Some(label) {
                std::fs::write(dir.join("lk_curve.parquet"), b"not parquet")
                    .map_err(|e| anyhow::anyhow!(e))?;
            } else {
                let ks = [1i64, 5, 50];
                write_table(
                    &dir,
                    "lk_curve.parquet",
                    vec![
                        ("k", Column::I64(ks.to_vec())),
                        (
                            "bound",
                            Column::F64(
                                ks.iter()
                                    .map(|kk| -(nll + 5.0 / (*kk as f64).sqrt()))
                                    .collect(),
                            ),
                        ),
                        ("stderr", Column::F64(vec![0.3; 3])),
                        ("images", Column::I64(vec![20; 3])),
                    ],
                )?;
            }
            write_table(
                &dir,
                "units.parquet",
                vec![
                    ("dim", Column::I64((0..4).collect())),
                    ("variance", Column::F64(vec![0.5, 0.2, 0.001, 0.3])),
                    ("active", Column::Bool(vec![true, true, false, true])),
                ],
            )?;
            let images: Vec<Vec<f64>> = (0..12)
                .map(|i| (0..16).map(|p| noise(i * 16 + p + 100 * vi)).collect())
                .collect();
            let mut cols = vec![("image".to_string(), Column::I64((0..12).collect()))];
            cols.extend(pixel_columns(&images));
            vaepipe_data::write_table(&dir.join("samples.parquet"), &Table::from_columns(cols))
                .map_err(|e| anyhow::anyhow!(e))?;
            let mut cols = vec![
                (
                    "image".to_string(),
                    Column::I64((0..8).map(|i| i / 2).collect()),
                ),
                (
                    "index".to_string(),
                    Column::I64((0..8).map(|i| 10 + i / 2).collect()),
                ),
                (
                    "kind".to_string(),
                    Column::Str(
                        (0..8)
                            .map(|i| {
                                if i % 2 == 0 {
                                    "original"
                                } else {
                                    "reconstruction"
                                }
                                .to_string()
                            })
                            .collect(),
                    ),
                ),
            ];
            cols.extend(pixel_columns(&images[..8]));
            vaepipe_data::write_table(
                &dir.join("reconstructions.parquet"),
                &Table::from_columns(cols),
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            write_table(
                &dir,
                "latents.parquet",
                test_image_columns(
                    n,
                    [
                        (
                            "x",
                            Column::F64((0..n).map(|i| (i % 3) as f64 + noise(i)).collect()),
                        ),
                        ("y", Column::F64((0..n).map(|i| noise(i + 50)).collect())),
                    ],
                ),
            )?;
        }
        Ok(())
    }
}

pub fn fake_registry(eval: FakeEval) -> Registry {
    fake_registry_with(
        FakeData {
            validation_rows: 10,
        },
        FakeTrain {
            validation: validation_behind,
        },
        eval,
    )
}

pub fn fake_registry_with(data: FakeData, train: FakeTrain, eval: FakeEval) -> Registry {
    registry_of(vec![
        Box::new(Fake(data)),
        Box::new(Fake(train)),
        Box::new(Fake(FakePrior)),
        Box::new(Fake(eval)),
        Box::new(ReportStage),
    ])
}

/// A registry of `stages`.
pub fn registry_of(stages: Vec<Box<dyn Stage>>) -> Registry {
    let mut r = Registry::new();
    for s in stages {
        r.register(s).expect("registers");
    }
    r
}

pub fn spec_text(name: &str, sweep: &str, epochs: usize) -> String {
    let data = subset_data();
    format!(
        r#"
[pipeline]
name = "{name}"
seed = 3
description = "Checks <b>escaping</b> & the layout."
{data}
[train]
epochs = {epochs}
[sweep]
{sweep}
"#
    )
}
