//! The IWAE variants of Rainforth et al. (2018) through every stage on a tiny pipeline: MIWAE(2,2)
//! and PIWAE(2,2) (one sweep) and CIWAE(β=0.5) train, refit a mixture prior by gradient ascent
//! on their own objective, evaluate and report; train.json and metrics.json carry `m` and
//! `beta`, the refit names the objective, the report's Table-1 layout has their rows. And the
//! spec-to-nn translation (`convert`) for each kind, with errors naming the keys.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde_json::Value;
use vaepipe_engine::{NoEvents, Outcome, Point, RunOptions, Store, execute, explain, plan};
use vaepipe_nn::ObjectiveKind;
use vaepipe_spec::{Estimator, Objective};
use vaepipe_stages::convert::{objective, objective_label};

fn subset_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/mnist-subset")
        .join(name)
}

/// 300 training rows, a 784-30-4 model, one epoch; a small evaluation; a 3-component mixture
/// prior fitted by gradient ascent on the training objective; then `rest`.
fn spec_text(rest: &str) -> String {
    let f = |name: &str| subset_file(name).display().to_string();
    format!(
        r#"
[pipeline]
name = "objectives-test"
seed = 4
[data]
format = "idx"
train = {{ images = "{}", labels = "{}" }}
test = {{ images = "{}", labels = "{}" }}
train_rows = 300
test_rows = 40
validation = 50
[model]
latent = 4
encoder = [30]
decoder = [30]
[train]
k = 2
epochs = 1
batch_size = 25
[prior]
method = "mog"
components = 3
fit = "gradient"
steps = 10
[eval]
k = 20
curve_k = [1, 4]
curve_images = 10
samples = 4
reconstructions = 2
{rest}
"#,
        f("train-images-idx3-ubyte.gz"),
        f("train-labels-idx1-ubyte.gz"),
        f("t10k-images-idx3-ubyte.gz"),
        f("t10k-labels-idx1-ubyte.gz"),
    )
}

#[test]
fn miwae_piwae_and_ciwae_run_through_every_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // (spec, its `[sweep]` or extra `[train]` keys, the point's objective per instance order).
    let mut dirs: Vec<(String, String, PathBuf)> = Vec::new();
    for (name, rest) in [
        (
            "grouped",
            "[sweep]\n\"train.objective\" = [\"miwae\", \"piwae\"]\n\"train.m\" = [2]",
        ),
        ("ciwae", ""),
    ] {
        let overrides: Vec<String> = match name {
            "ciwae" => vec!["train.objective=\"ciwae\"".into(), "train.beta=0.5".into()],
            _ => Vec::new(),
        };
        let text = spec_text(rest);
        let spec = vaepipe_spec::load_str("objectives.toml", &text, dir, &overrides, dir)
            .unwrap_or_else(|e| panic!("invalid test spec: {e:?}"));
        let points: Vec<Point> = vaepipe_stages::points_of(&spec);
        let registry = vaepipe_stages::registry();
        let store = Store::open(tmp.path()).unwrap();
        let p = plan(&registry, &store, spec.name(), points, true).unwrap();
        let decisions = explain(&p, &store, &[]).unwrap();
        let options = RunOptions {
            jobs: 1,
            tool_version: "test".into(),
            ..Default::default()
        };
        let report = execute(
            &registry,
            &store,
            &p,
            &decisions,
            &options,
            &NoEvents,
            &AtomicBool::new(false),
        )
        .unwrap();
        for inst in &report.instances {
            assert!(
                matches!(inst.outcome, Outcome::Ran | Outcome::Cached),
                "{name}: {} stage: {:?}",
                inst.stage,
                inst.outcome
            );
            dirs.push((name.to_string(), inst.stage.clone(), inst.dir.clone()));
        }
    }
    let stage = |name: &str, stage: &str| -> Vec<PathBuf> {
        dirs.iter()
            .filter(|(n, s, _)| n == name && s == stage)
            .map(|(_, _, d)| d.clone())
            .collect()
    };
    let read = |p: PathBuf| -> Value { vaepipe_stages::read_json(&p).unwrap() };
    // train.json: the objective with its groups or β.
    let mut trained: Vec<(String, Option<u64>, Option<f64>)> = ["grouped", "ciwae"]
        .iter()
        .flat_map(|n| stage(n, "train"))
        .map(|d| {
            let t = read(d.join("train.json"));
            let o = t["objective"].as_str().unwrap().to_string();
            (
                o,
                t.get("m").and_then(Value::as_u64),
                t.get("beta").and_then(Value::as_f64),
            )
        })
        .collect();
    trained.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        trained,
        [
            ("ciwae".to_string(), None, Some(0.5)),
            ("miwae".to_string(), Some(2), None),
            ("piwae".to_string(), Some(2), None),
        ]
    );
    // refit.json: what the gradient refit maximised, by name.
    let sentences: Vec<String> = ["grouped", "ciwae"]
        .iter()
        .flat_map(|n| stage(n, "prior"))
        .map(|d| {
            read(d.join("refit.json"))["objective"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for name in [
        "L_4 (the decoder's bound of PIWAE(2,2))",
        "MIWAE(2,2)",
        "CIWAE(β=0.5)",
    ] {
        assert!(
            sentences.iter().any(|s| s.contains(name)),
            "no refit names {name}: {sentences:?}"
        );
    }
    // metrics.json of every variant: finite NLL, the objective's m or β.
    let evals: Vec<PathBuf> = ["grouped", "ciwae"]
        .iter()
        .flat_map(|n| stage(n, "eval"))
        .collect();
    assert_eq!(evals.len(), 3);
    for d in evals {
        for v in ["standard", "refit"] {
            let m = read(d.join(v).join("metrics.json"));
            assert!(m["test_nll"].as_f64().is_some_and(f64::is_finite), "{m:#}");
            match m["objective"].as_str() {
                Some("ciwae") => assert_eq!(m["beta"].as_f64(), Some(0.5)),
                _ => assert_eq!(m["m"].as_u64(), Some(2)),
            }
        }
    }
    // The report's Table-1 layout has a row per variant.
    let report = stage("grouped", "report");
    let md = std::fs::read_to_string(report[0].join("index.md")).unwrap();
    for row in ["| MIWAE (M = 2) |", "| PIWAE (M = 2) |"] {
        assert!(md.contains(row), "no row {row} in the report:\n{md}");
    }
}

#[test]
fn convert_maps_every_kind_and_names_the_keys_in_errors() {
    let r = Estimator::Reparam;
    let o = objective(Objective::Piwae, 8, None, 8, r, false).unwrap();
    assert!(matches!(o.kind, ObjectiveKind::Piwae { m } if m.get() == 8));
    assert_eq!(
        (o.samples(), objective_label(&o).as_str()),
        (64, "PIWAE(8,8)")
    );
    let o = objective(Objective::Miwae, 8, None, 8, r, false).unwrap();
    assert_eq!(objective_label(&o), "MIWAE(8,8)");
    let o = objective(Objective::Ciwae, 1, Some(0.05), 64, r, false).unwrap();
    assert!(matches!(o.kind, ObjectiveKind::Ciwae { beta } if beta.get() == 0.05));
    assert_eq!(
        (o.samples(), objective_label(&o).as_str()),
        (64, "CIWAE(β=0.05)")
    );
    let o = objective(Objective::Iwae, 1, None, 5, r, false).unwrap();
    assert_eq!(
        (o.kind, objective_label(&o).as_str()),
        (ObjectiveKind::Iwae, "IWAE")
    );
    for (kind, m, beta, key) in [
        (Objective::Iwae, 2, None, "train.m"),
        (Objective::Miwae, 0, None, "train.m"),
        (Objective::Ciwae, 1, None, "train.beta"),
        (Objective::Ciwae, 1, Some(1.5), "train.beta"),
        (Objective::Elbo, 1, Some(0.5), "train.beta"),
    ] {
        let e = objective(kind, m, beta, 4, r, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{kind} m={m} beta={beta:?}: {e}");
    }
}
