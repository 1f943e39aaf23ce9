//! Bad input never panics, checked at scale (proptest): the spec reader gets arbitrary bytes
//! (as a file and as text), arbitrary TOML trees over the spec's own key names, and a valid
//! spec with random keys replaced by random values (also as `--set` overrides). Every call
//! returns a spec or errors, never a panic; every error names a key or line. Case counts are
//! small so that the suite stays fast.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use toml::{Table, Value};

/// Section names, and key names that occur in some section (plus a few that do not).
const SECTIONS: &[&str] = &[
    "pipeline", "data", "model", "train", "prior", "eval", "report", "sweep", "points", "x",
];
const KEYS: &[&str] = &[
    "name",
    "seed",
    "description",
    "format",
    "train",
    "test",
    "images",
    "labels",
    "path",
    "fraction",
    "rows",
    "label_column",
    "scale",
    "binarize",
    "threshold",
    "validation",
    "train_rows",
    "test_rows",
    "stratify",
    "shape",
    "latent",
    "encoder",
    "decoder",
    "activation",
    "likelihood",
    "observation_std",
    "learn_std",
    "posterior_std",
    "objective",
    "k",
    "estimator",
    "analytic_kl",
    "batch_size",
    "epochs",
    "lr",
    "betas",
    "eps",
    "schedule",
    "patience",
    "method",
    "components",
    "subset",
    "fit",
    "steps",
    "samples",
    "init",
    "then",
    "curve_k",
    "title",
    "train.k",
    "model.latent",
    "data.test",
    "pipeline.name",
    "",
    "ü",
];
/// Every (section, key) of the schema, so that edits reach each key's checks.
const PAIRS: &[(&str, &str)] = &[
    ("pipeline", "name"),
    ("pipeline", "seed"),
    ("pipeline", "description"),
    ("data", "format"),
    ("data", "train"),
    ("data", "test"),
    ("data", "label_column"),
    ("data", "scale"),
    ("data", "binarize"),
    ("data", "threshold"),
    ("data", "validation"),
    ("data", "train_rows"),
    ("data", "test_rows"),
    ("data", "stratify"),
    ("data", "shape"),
    ("model", "latent"),
    ("model", "encoder"),
    ("model", "decoder"),
    ("model", "activation"),
    ("model", "likelihood"),
    ("model", "observation_std"),
    ("model", "learn_std"),
    ("model", "posterior_std"),
    ("train", "objective"),
    ("train", "k"),
    ("train", "estimator"),
    ("train", "analytic_kl"),
    ("train", "batch_size"),
    ("train", "epochs"),
    ("train", "lr"),
    ("train", "betas"),
    ("train", "eps"),
    ("train", "schedule"),
    ("train", "step_epochs"),
    ("train", "step_gamma"),
    ("train", "patience"),
    ("prior", "method"),
    ("prior", "components"),
    ("prior", "subset"),
    ("prior", "fit"),
    ("prior", "steps"),
    ("prior", "lr"),
    ("prior", "samples"),
    ("prior", "init"),
    ("prior", "then"),
    ("prior", "finetune_epochs"),
    ("eval", "k"),
    ("eval", "images"),
    ("eval", "curve_k"),
    ("eval", "curve_images"),
    ("eval", "active_threshold"),
    ("eval", "samples"),
    ("eval", "reconstructions"),
    ("eval", "binarization_seed"),
    ("report", "title"),
    ("sweep", "train.k"),
    ("sweep", "model.latent"),
    ("sweep", "data.test"),
    ("sweep", "pipeline.name"),
    ("sweep", "points"),
];
const WORDS: &[&str] = &[
    "idx",
    "csv",
    "parquet",
    "elbo",
    "iwae",
    "dreg",
    "mog",
    "vamp",
    "none",
    "dynamic",
    "max",
    "tanh",
    "gaussian",
    "exp",
    "iwae-mnist",
    "",
    "../..",
    "/",
    "\u{0}",
    "\n",
];

fn subset() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/mnist-subset")
        .canonicalize()
        .unwrap()
}

/// A valid spec as a TOML table.
fn valid() -> Table {
    let d = subset();
    let f = |n: &str| d.join(n).display().to_string();
    let text = format!(
        r#"
[pipeline]
name = "fuzz"
seed = 1
[data]
format = "idx"
train = {{ images = "{}", labels = "{}" }}
test = {{ images = "{}", labels = "{}" }}
validation = 100
[model]
latent = 4
encoder = [8]
[train]
objective = "iwae"
k = 5
[prior]
method = "mog"
[eval]
k = 10
[sweep]
"train.k" = [1, 5]
"#,
        f("train-images-idx3-ubyte.gz"),
        f("train-labels-idx1-ubyte.gz"),
        f("t10k-images-idx3-ubyte.gz"),
        f("t10k-labels-idx1-ubyte.gz"),
    );
    text.parse::<Table>().unwrap()
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        (-3i64..70).prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
        (-1.0f64..2.0).prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
        proptest::sample::select(WORDS).prop_map(|s| Value::String(s.to_string())),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-z_.]{1,8}",
    ]
}

/// Arbitrary TOML values: leaves, arrays and tables keyed by spec key names, three levels deep.
fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Table(kv.into_iter().collect())),
        ]
    })
}

/// A whole document: sections (mostly the spec's own) holding arbitrary trees.
fn document() -> impl Strategy<Value = Table> {
    proptest::collection::vec(
        (
            prop_oneof![
                4 => proptest::sample::select(SECTIONS).prop_map(str::to_string),
                1 => "[a-z]{1,6}",
            ],
            tree(),
        ),
        0..8,
    )
    .prop_map(|kv| kv.into_iter().collect())
}

/// Loads `text`; a spec or errors, each error with a key or a location.
fn load(text: &str, overrides: &[String]) {
    let dir = subset();
    match vaepipe_spec::load_str("fuzz.toml", text, &dir, overrides, &dir) {
        Ok(spec) => assert!(!spec.runs.is_empty()),
        Err(errors) => {
            let records = errors.records();
            assert!(!records.is_empty(), "an error result without errors");
            // Rendering must not panic either.
            let _ = errors.render(false);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        load(&String::from_utf8_lossy(&bytes), &[]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.toml");
        std::fs::write(&path, &bytes).unwrap();
        let _ = vaepipe_spec::load(&path, &[]);
    }

    #[test]
    fn arbitrary_toml_trees_are_errors_not_panics(doc in document()) {
        load(&toml::to_string(&doc).unwrap(), &[]);
    }

    #[test]
    fn a_valid_spec_with_random_values_is_read_or_rejected(
        edits in proptest::collection::vec(
            (
                prop_oneof![
                    4 => proptest::sample::select(PAIRS).prop_map(|(s, k)| (s, k.to_string())),
                    1 => (proptest::sample::select(SECTIONS), key()),
                ],
                prop_oneof![4 => leaf(), 1 => tree()],
            ),
            1..4,
        ),
    ) {
        let edits: Vec<(&str, String, Value)> =
            edits.into_iter().map(|((s, k), v)| (s, k, v)).collect();
        let mut doc = valid();
        let mut overrides = Vec::new();
        for (section, k, v) in &edits {
            if let Some(Value::Table(t)) = doc.get_mut(*section) {
                t.insert(k.clone(), v.clone());
            } else {
                let mut t = Table::new();
                t.insert(k.clone(), v.clone());
                doc.insert(section.to_string(), Value::Table(t));
            }
            // The same value as an override, in TOML syntax.
            let mut one = Table::new();
            one.insert("v".into(), v.clone());
            let text = toml::to_string(&one).unwrap();
            let value = text.trim_start_matches("v = ").trim_end();
            overrides.push(format!("{section}.{k}={value}"));
        }
        load(&toml::to_string(&doc).unwrap(), &[]);
        load(&toml::to_string(&valid()).unwrap(), &overrides);
    }
}

#[test]
fn the_base_spec_is_valid() {
    let dir = subset();
    let spec = vaepipe_spec::load_str(
        "fuzz.toml",
        &toml::to_string(&valid()).unwrap(),
        &dir,
        &[],
        &dir,
    )
    .unwrap_or_else(|e| panic!("{}", e.render(false)));
    assert_eq!(spec.runs.len(), 2);
}
