//! Tests of the report stage on the real pipeline (embedded MNIST subset, tiny model, one or two
//! epochs): every figure decodes, the documents reference only what exists, re-rendering is
//! byte-identical, spec text is escaped, and a failed point is listed while the report still
//! renders.

#[path = "report/support.rs"]
mod support;

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use vaepipe_engine::{Context, Stage, StageError, Store};
use vaepipe_stages::{DataStage, EvalStage, PriorStage, ReportStage, TrainStage};

use support::*;

// ---------------------------------------------------------------------------------------------
// The real pipeline

/// A store holding one complete run of the real pipeline (two points), shared by the tests below.
struct Fixture {
    _tmp: tempfile::TempDir,
    store: Store,
    spec: vaepipe_spec::Spec,
    report: PathBuf,
}

const REAL_NAME: &str = "tiny <script>alert(1)</script> & co";

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (tmp, store) = temp_store();
        let data = subset_data();
        let spec = load(&format!(
            r#"
[pipeline]
name = "{REAL_NAME}"
seed = 5
{data}
train_rows = 500
test_rows = 100
validation = 100
[model]
latent = 8
encoder = [64]
[train]
epochs = 2
batch_size = 50
[prior]
method = "mog"
components = 3
samples = 1000
steps = 20
[eval]
k = 50
images = 60
curve_k = [1, 5, 50]
curve_images = 30
samples = 20
reconstructions = 6
[sweep]
"train.objective" = ["elbo", "iwae"]
"train.k" = [3]
"#
        ));
        let report = run(&vaepipe_stages::registry(), &store, &spec, &[]);
        assert_eq!(
            report.failed().count(),
            0,
            "the real pipeline failed: {:#?}",
            report.instances
        );
        let dir = report_dir(&report);
        Fixture {
            _tmp: tmp,
            store,
            spec,
            report: dir,
        }
    })
}

#[test]
fn real_pipeline_report_is_complete_escaped_and_reproducible() {
    let f = fixture();
    let stems = check_report(&f.report);
    for stem in SUMMARY_FIGURES {
        assert!(stems.contains(stem), "missing figure {stem}: {stems:?}");
    }
    for p in ["p0", "p1"] {
        for kind in ["samples", "reconstructions", "latents", "prior_density"] {
            assert!(
                stems.iter().any(|s| s.starts_with(&format!("{kind}_{p}"))),
                "missing {kind} figure of {p}: {stems:?}"
            );
        }
    }
    // The reconstructions have the data's image shape: 28×28 tiles make a wide grid.
    let stem = stems
        .iter()
        .find(|s| s.starts_with("reconstructions_p0"))
        .expect("a reconstruction figure");
    let png = std::fs::read(f.report.join("figures").join(format!("{stem}.png"))).expect("png");
    let (w, _) = png_size(&png);
    assert!(w >= 600, "reconstruction grid only {w} pixels wide");

    // The pipeline name is escaped: no markup from the spec reaches the HTML.
    let html = std::fs::read_to_string(f.report.join("index.html")).expect("index.html");
    assert!(
        !html.to_ascii_lowercase().contains("<script"),
        "unescaped <script> in index.html"
    );
    assert!(html.contains("<h1>tiny &lt;script&gt;alert(1)&lt;/script&gt; &amp; co</h1>"));
    let md = index_md(&f.report);
    assert!(
        md.starts_with("# tiny \\<script\\>alert(1)\\</script\\> \\& co\n"),
        "{}",
        &md[..80.min(md.len())]
    );
    // Both points are evaluated: one results row per point and prior, with a number.
    for label in ["k=3 objective=elbo", "k=3 objective=iwae"] {
        let rows = md_rows(section(&md, "Results"), &[label]);
        assert!(!rows.is_empty(), "no results row for {label}");
        for r in rows {
            assert!(
                r[2].contains(" ± ")
                    && r[2]
                        .split(' ')
                        .next()
                        .and_then(|x| x.parse::<f64>().ok())
                        .is_some_and(|x| x > 0.0),
                "{r:?}"
            );
        }
    }

    // Re-rendering from the store entry alone (as `vaepipe report <dir>`) gives the same bytes.
    let (_, rerun) = vaepipe_engine::rerun_entry(&vaepipe_stages::registry(), &f.store, &f.report)
        .expect("rerun");
    let (a, b) = (files(&f.report), files(&rerun));
    let _ = std::fs::remove_dir_all(&rerun);
    assert_same_files(&a, &b, "when re-rendered");
}

/// The real eval stage, failing for one point (its version differs, so it is not a cache hit).
struct FailingEval(&'static str);
impl Stage for FailingEval {
    fn name(&self) -> &'static str {
        "eval"
    }
    fn version(&self) -> u32 {
        EvalStage.version() + 1000
    }
    fn inputs(&self) -> &'static [&'static str] {
        EvalStage.inputs()
    }
    fn params(&self, point: &Value) -> Value {
        EvalStage.params(point)
    }
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        if ctx.points.iter().any(|p| p.label == self.0) {
            return Err(anyhow::anyhow!("injected eval failure").into());
        }
        EvalStage.run(ctx)
    }
}

#[test]
fn real_pipeline_with_a_failed_point_still_renders() {
    let f = fixture();
    let registry = registry_of(vec![
        Box::new(DataStage),
        Box::new(TrainStage),
        Box::new(PriorStage),
        Box::new(FailingEval("k=3 objective=iwae")),
        Box::new(ReportStage),
    ]);
    let report = run(&registry, &f.store, &f.spec, &[]);
    let failed: Vec<_> = report
        .failed()
        .map(|i| (i.stage.clone(), i.points[0].label.clone()))
        .collect();
    assert_eq!(
        failed,
        [("eval".to_string(), "k=3 objective=iwae".to_string())]
    );
    let dir = report_dir(&report);
    assert_ne!(dir, f.report, "a partial report has its own key");
    check_report(&dir);
    let md = index_md(&dir);
    let failures = after_heading(&md, "## Failed or skipped stages");
    assert!(
        failures.contains("eval for k=3 objective=iwae")
            && failures.contains("injected eval failure"),
        "{failures}"
    );
    let results = section(&md, "Results");
    assert_eq!(
        md_rows(results, &["k=3 objective=iwae"])
            .iter()
            .map(|r| r[2])
            .collect::<Vec<_>>(),
        ["eval failed"],
        "{results}"
    );
    let ok = md_rows(results, &["k=3 objective=elbo"]);
    assert!(
        !ok.is_empty() && ok.iter().all(|r| r[2].contains(" ± ")),
        "{results}"
    );
}
