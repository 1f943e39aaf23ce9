//! Spec loading: valid specs resolve with defaults; every kind of malformed spec gives errors
//! that name the file, line, column and key (and never panic); sweeps expand; overrides are
//! validated like the file.

use std::path::Path;

use vaepipe_spec::{Binarize, DataSource, Objective, SpecErrors, load_str};

/// A directory with the (empty) data files the specs below name.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "train.gz",
        "train-labels.gz",
        "test.gz",
        "test-labels.gz",
        "table.csv",
    ] {
        std::fs::write(dir.path().join(f), b"x").unwrap();
    }
    dir
}

const GOOD: &str = r#"
[pipeline]
name = "demo"
seed = 3

[data]
format = "idx"
train = { images = "train.gz", labels = "train-labels.gz" }
test = { images = "test.gz", labels = "test-labels.gz" }
binarize = "dynamic"
validation = 100

[train]
objective = "iwae"
k = 5
"#;

fn load(text: &str, dir: &Path, overrides: &[&str]) -> Result<vaepipe_spec::Spec, SpecErrors> {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    load_str("spec.toml", text, dir, &o, dir)
}

#[test]
fn good_spec_resolves_with_defaults() {
    let dir = fixture();
    let spec = load(GOOD, dir.path(), &[]).expect("valid spec");
    assert_eq!(spec.runs.len(), 1);
    let c = &spec.runs[0].config;
    assert_eq!(c.pipeline.seed, 3);
    assert_eq!(c.train.objective, Objective::Iwae);
    assert_eq!(c.train.k, 5);
    assert_eq!(c.train.batch_size, 20);
    assert_eq!(c.model.encoder, vec![200, 200]);
    assert_eq!(c.model.decoder, vec![200, 200]);
    assert_eq!(c.data.binarize, Binarize::Dynamic);
    assert_eq!(c.report.title, "demo");
    match &c.data.train {
        DataSource::Idx { images, labels } => {
            assert_eq!(images.path, dir.path().join("train.gz"));
            assert_eq!(
                labels.as_ref().unwrap().path,
                dir.path().join("train-labels.gz")
            );
        }
        other => panic!("unexpected source {other:?}"),
    }
}

#[test]
fn cosmetic_edits_do_not_change_the_resolved_config() {
    let dir = fixture();
    let a = load(GOOD, dir.path(), &[]).unwrap();
    let reordered = r#"
# a comment
[train]
k = 5            # trailing comment
objective = "iwae"

[data]
validation = 100
binarize = "dynamic"
test = { labels = "test-labels.gz", images = "test.gz" }
train = { labels = "train-labels.gz", images = "train.gz" }
format = "idx"

[pipeline]
seed = 3
name = "demo"
"#;
    let b = load(reordered, dir.path(), &[]).unwrap();
    assert_eq!(
        serde_json::to_string(&a.runs[0].config).unwrap(),
        serde_json::to_string(&b.runs[0].config).unwrap()
    );
}

#[test]
fn sweep_expands_to_a_grid_with_stable_ids() {
    let dir = fixture();
    let text = format!(
        "{GOOD}\n[sweep]\n\"train.k\" = [1, 5, 50]\n\"train.objective\" = [\"elbo\", \"iwae\"]\n"
    );
    let spec = load(&text, dir.path(), &[]).unwrap();
    assert_eq!(spec.runs.len(), 6);
    assert_eq!(spec.sweep_keys, vec!["train.k", "train.objective"]);
    let labels: Vec<_> = spec.runs.iter().map(|r| r.label.clone()).collect();
    assert_eq!(labels[0], "k=1 objective=elbo");
    assert_eq!(labels[5], "k=50 objective=iwae");
    assert_eq!(spec.runs[3].config.train.k, 5);
    assert_eq!(spec.runs[3].config.train.objective, Objective::Iwae);
    // Ids depend on the swept values only.
    let ids: std::collections::BTreeSet<_> = spec.runs.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 6);
    let nested =
        format!("{GOOD}\n[sweep.train]\nobjective = [\"elbo\", \"iwae\"]\nk = [1, 5, 50]\n");
    let spec2 = load(&nested, dir.path(), &[]).unwrap();
    let ids2: Vec<_> = spec2.runs.iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        spec.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        ids2
    );
}

#[test]
fn explicit_points_combine_with_the_grid() {
    let dir = fixture();
    let text = format!(
        "{GOOD}\n[sweep]\n\"pipeline.seed\" = [1, 2]\n\n[[sweep.points]]\n\"train.objective\" = \"elbo\"\n\"train.k\" = 1\n\n\
         [[sweep.points]]\ntrain = {{ objective = \"iwae\", k = 5 }}\n"
    );
    let spec = load(&text, dir.path(), &[]).unwrap();
    let got: Vec<_> = spec
        .runs
        .iter()
        .map(|r| {
            (
                r.config.train.objective,
                r.config.train.k,
                r.config.pipeline.seed,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Objective::Elbo, 1, 1),
            (Objective::Elbo, 1, 2),
            (Objective::Iwae, 5, 1),
            (Objective::Iwae, 5, 2)
        ]
    );
    assert!(
        spec.runs[2].label.contains("objective=iwae")
            && spec.runs[2].label.contains("k=5")
            && spec.runs[2].label.contains("seed=1")
    );
    assert_eq!(
        spec.sweep_keys,
        vec!["pipeline.seed", "train.k", "train.objective"]
    );

    // A key in both places, a bad value inside a point, and a non-table point are located errors.
    let bad = format!(
        "{GOOD}\n[sweep]\n\"train.k\" = [1, 2]\n\n[[sweep.points]]\n\"train.k\" = 3\n\"train.epochs\" = 0\n"
    );
    let err = load(&bad, dir.path(), &[]).unwrap_err();
    let recs = err.records();
    assert!(
        recs.iter()
            .any(|r| r.key == "sweep.points[0].train.k" && r.message.contains("also a grid axis")),
        "{err}"
    );
    let bad = format!("{GOOD}\n[[sweep.points]]\n\"train.epochs\" = 0\n");
    let err = load(&bad, dir.path(), &[]).unwrap_err();
    let line = bad
        .lines()
        .position(|l| l.starts_with("\"train.epochs\""))
        .unwrap()
        + 1;
    assert!(
        err.records()
            .iter()
            .any(|r| r.key == "train.epochs" && r.message.contains("at least 1") && r.line == line),
        "{err}"
    );
    // An override of a key that an explicit point sets is an error, not silently ignored.
    let err = load(&text, dir.path(), &["train.k=50"]).unwrap_err();
    assert!(
        err.records()
            .iter()
            .any(|r| r.key == "train.k" && r.message.contains("set per sweep point")),
        "{err}"
    );
    let err = load(&text, dir.path(), &["train={ k = 2 }"]).unwrap_err();
    assert!(
        err.records()
            .iter()
            .any(|r| r.key == "train" && r.message.contains("set per sweep point")),
        "{err}"
    );
    let bad = format!("{GOOD}\n[sweep]\npoints = [1, 2]\n");
    let err = load(&bad, dir.path(), &[]).unwrap_err();
    assert!(
        err.records().iter().any(|r| r.key == "sweep.points[0]"),
        "{err}"
    );
}

#[test]
fn overrides_apply_and_are_validated() {
    let dir = fixture();
    let spec = load(
        GOOD,
        dir.path(),
        &[
            "train.k=50",
            "train.objective=elbo",
            "model.encoder=[400, 300]",
        ],
    )
    .unwrap();
    let c = &spec.runs[0].config;
    assert_eq!(c.train.k, 50);
    assert_eq!(c.train.objective, Objective::Elbo);
    assert_eq!(c.model.encoder, vec![400, 300]);
    assert_eq!(c.model.decoder, vec![300, 400]);

    let err = load(GOOD, dir.path(), &["train.k=0"]).unwrap_err();
    let rec = &err.records()[0];
    assert_eq!(rec.file, "--set train.k=0");
    assert_eq!(rec.key, "train.k");
    assert_eq!(rec.column, 9, "points at the value");

    let err = load(GOOD, dir.path(), &["train.epoch=3"]).unwrap_err();
    assert!(
        err.records()[0].message.contains("did you mean `epochs`"),
        "{err}"
    );
    let err = load(GOOD, dir.path(), &["train.k"]).unwrap_err();
    assert!(err.records()[0].message.contains("KEY=VALUE"), "{err}");
}

/// (spec text, key of the first error, part of its message, line of the first error)
const BAD: &[(&str, &str, &str, usize)] = &[
    // 1 invalid TOML
    ("[pipeline\nname = \"x\"", "", "invalid TOML", 1),
    // 2 unknown key with suggestion
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[train]\nepoch = 3\n",
        "train.epoch",
        "did you mean `epochs`",
        8,
    ),
    // 3 wrong type
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[train]\nk = \"five\"\n",
        "train.k",
        "expected a non-negative integer, found a string",
        8,
    ),
    // 4 k = 0
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[train]\nk = 0\n",
        "train.k",
        "at least 1",
        8,
    ),
    // 5 bad enum value with suggestion
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[train]\nobjective = \"iwea\"\n",
        "train.objective",
        "did you mean \"iwae\"",
        8,
    ),
    // 6 missing file
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"nope.gz\" }\ntest = { images = \"test.gz\" }\n",
        "data.train.images",
        "cannot read",
        5,
    ),
    // 7 bad sweep key
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[sweep]\n\"train.kk\" = [1, 2]\n",
        "train.kk",
        "unknown key `kk` in [train]; did you mean `k`?",
        8,
    ),
    // 8 sweep value not an array
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[sweep]\n\"train.k\" = 5\n",
        "sweep.train.k",
        "expected an array",
        8,
    ),
    // 9 bad sweep value
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[sweep]\n\"train.k\" = [1, -5]\n",
        "train.k",
        "non-negative",
        8,
    ),
    // 10 missing [pipeline]
    (
        "[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n",
        "pipeline",
        "missing required section [pipeline]",
        1,
    ),
    // 11 missing name
    (
        "[pipeline]\nseed = 1\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n",
        "pipeline.name",
        "missing required key `name`",
        1,
    ),
    // 12 unknown top-level section
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[trian]\nk = 1\n",
        "trian",
        "did you mean `train`",
        7,
    ),
    // 13 unknown format
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"png\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n",
        "data.format",
        "unknown value \"png\"",
        4,
    ),
    // 14 csv without path
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"csv\"\ntrain = { images = \"train.gz\" }\ntest = { path = \"table.csv\" }\n",
        "data.train.images",
        "unknown key `images`",
        5,
    ),
    // 15 threshold out of range
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\nthreshold = 1.5\n",
        "data.threshold",
        "strictly between 0 and 1",
        7,
    ),
    // 16 validation fraction out of range
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\nvalidation = 1.5\n",
        "data.validation",
        "fraction in [0, 1)",
        7,
    ),
    // 17 zero layer size
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[model]\nencoder = [200, 0]\n",
        "model.encoder",
        "entry 1 is 0",
        8,
    ),
    // 18 analytic KL with k > 1
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[train]\nk = 5\nanalytic_kl = true\n",
        "train.analytic_kl",
        "needs objective = \"elbo\" and k = 1",
        9,
    ),
    // 19 negative learning rate
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[train]\nlr = -0.1\n",
        "train.lr",
        "greater than 0",
        8,
    ),
    // 20 betas wrong length
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[train]\nbetas = [0.9]\n",
        "train.betas",
        "two numbers",
        8,
    ),
    // 21 section of wrong type
    (
        "model = 5\n[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n",
        "model",
        "expected a table",
        1,
    ),
    // 22 empty name
    (
        "[pipeline]\nname = \"  \"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n",
        "pipeline.name",
        "must not be empty",
        2,
    ),
    // 23 duplicate key (TOML error)
    (
        "[pipeline]\nname = \"x\"\nname = \"y\"\n",
        "",
        "invalid TOML",
        3,
    ),
    // 24 sweeping the pipeline name
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[sweep]\n\"pipeline.name\" = [\"a\", \"b\"]\n",
        "sweep.pipeline.name",
        "cannot be swept",
        8,
    ),
    // 25 repeated sweep value
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[sweep]\n\"train.k\" = [5, 5]\n",
        "sweep.train.k",
        "identical",
        8,
    ),
    // 26 float where integer expected
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[train]\nbatch_size = 2.5\n",
        "train.batch_size",
        "found a float",
        8,
    ),
    // 27 missing [data]
    (
        "[pipeline]\nname = \"x\"\n",
        "data",
        "missing required section [data]",
        1,
    ),
    // 28 label_column on idx
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\nlabel_column = \"y\"\n",
        "data.label_column",
        "not idx",
        7,
    ),
    // 29 eval curve with k = 0
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[eval]\ncurve_k = [1, 0]\n",
        "eval.curve_k",
        "at least 1",
        8,
    ),
    // 31 early stopping without a validation split
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[train]\npatience = 3\n",
        "train.patience",
        "needs a validation split",
        8,
    ),
    // 30 unknown prior method
    (
        "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"test.gz\" }\n[prior]\nmethod = \"vampprior\"\n",
        "prior.method",
        "did you mean \"vamp\"",
        8,
    ),
];

#[test]
fn malformed_specs_give_located_errors() {
    let dir = fixture();
    for (i, (text, key, message, line)) in BAD.iter().enumerate() {
        let err = match load(text, dir.path(), &[]) {
            Ok(_) => panic!("case {}: expected an error", i + 1),
            Err(e) => e,
        };
        let records = err.records();
        let hit = records.iter().find(|r| r.message.contains(message));
        let Some(hit) = hit else {
            panic!(
                "case {}: no error containing {message:?}; got:\n{err}",
                i + 1
            )
        };
        assert_eq!(hit.key, *key, "case {}: key; got:\n{err}", i + 1);
        assert_eq!(hit.line, *line, "case {}: line; got:\n{err}", i + 1);
        assert_eq!(hit.file, "spec.toml", "case {}", i + 1);
        assert!(hit.column >= 1, "case {}", i + 1);
        // Rendering with snippets works for every case (and does not panic).
        let rendered = err.render(false);
        assert!(rendered.contains("spec.toml"), "case {}: {rendered}", i + 1);
    }
}

#[test]
fn all_errors_are_collected() {
    let dir = fixture();
    let text = "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"missing.gz\" }\n[train]\nk = 0\nepoch = 2\nlr = \"fast\"\n";
    let err = load(text, dir.path(), &[]).unwrap_err();
    let keys: Vec<_> = err.records().into_iter().map(|r| r.key).collect();
    for k in ["data.test.images", "train.k", "train.epoch", "train.lr"] {
        assert!(
            keys.iter().any(|x| x == k),
            "missing error for {k}: {keys:?}"
        );
    }
}

#[test]
fn garbage_never_panics() {
    let dir = fixture();
    let inputs = [
        "",
        "\0\0\0",
        "[[[",
        "a = [1, 2",
        "[pipeline]\nname = 1e999",
        "x = 99999999999999999999999",
        "[sweep]\n\"\" = [1]",
        "[sweep]\n\"train.\" = [1]",
        "[sweep]\ntrain = [1]",
        "[pipeline]\nname = \"\\u0007\"",
        "[data]\ntrain = 5\ntest = []\nformat = \"csv\"",
    ];
    for text in inputs {
        if let Err(e) = load(text, dir.path(), &[]) {
            let _ = e.render(true);
            let _ = e.to_string();
        }
    }
    for o in [
        "=",
        "a=",
        "..=1",
        "train.k=[",
        "pipeline=3",
        "sweep.x=1",
        "train.k.x=1",
    ] {
        if let Err(e) = load(GOOD, dir.path(), &[o]) {
            let _ = e.render(false);
        }
    }
}

#[test]
#[ignore = "prints a rendering for eyeballing"]
fn show_rendering() {
    let dir = fixture();
    let text = "[pipeline]\nname = \"x\"\n[data]\nformat = \"idx\"\ntrain = { images = \"train.gz\" }\ntest = { images = \"missing.gz\" }\n[train]\nk = 0\nepoch = 2\nlr = \"fast\"\n";
    let err = load(text, dir.path(), &["train.objective=iwea"]).unwrap_err();
    println!("{}", err.render(false));
}
