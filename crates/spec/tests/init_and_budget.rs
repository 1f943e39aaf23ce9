//! `[model] init`, `output_bias`, `std_head_scale` and `train.time_limit`: their defaults, and
//! located errors (file, line, key) for bad values, with a "did you mean" for misspelt names.

use std::path::Path;

use vaepipe_spec::{ErrorRecord, InitScheme, OutputBias, SpecErrors, load_str};

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["train.gz", "test.gz"] {
        std::fs::write(dir.path().join(f), b"x").unwrap();
    }
    dir
}

fn spec(model: &str, train: &str) -> String {
    format!(
        r#"[pipeline]
name = "demo"

[data]
format = "idx"
train = {{ images = "train.gz" }}
test = {{ images = "test.gz" }}
binarize = "none"

[model]
{model}

[train]
{train}
"#
    )
}

fn load(text: &str, dir: &Path) -> Result<vaepipe_spec::Spec, SpecErrors> {
    load_str("spec.toml", text, dir, &[], dir)
}

/// The single error of an invalid spec.
fn only_error(text: &str) -> ErrorRecord {
    let dir = fixture();
    let err = load(text, dir.path()).expect_err("the spec should be invalid");
    let records = err.records();
    assert_eq!(records.len(), 1, "{err}");
    records.into_iter().next().unwrap()
}

#[test]
fn defaults_are_the_measured_best_for_bernoulli_models() {
    let dir = fixture();
    let s = load(&spec("", ""), dir.path()).unwrap();
    let c = &s.runs[0].config;
    assert_eq!(c.model.init, InitScheme::Pytorch);
    assert_eq!(c.model.output_bias, OutputBias::Data);
    assert_eq!(c.model.std_head_scale, 0.0);
    assert_eq!(c.train.time_limit, None);
}

#[test]
fn gaussian_models_default_to_the_schemes_output_bias() {
    let dir = fixture();
    let s = load(&spec("likelihood = \"gaussian\"", ""), dir.path()).unwrap();
    assert_eq!(s.runs[0].config.model.output_bias, OutputBias::Init);
}

#[test]
fn explicit_values_are_read() {
    let dir = fixture();
    let text = spec(
        "init = \"pytorch\"\noutput_bias = \"init\"\nstd_head_scale = 0.5",
        "time_limit = 300",
    );
    let s = load(&text, dir.path()).unwrap();
    let c = &s.runs[0].config;
    assert_eq!(c.model.init, InitScheme::Pytorch);
    assert_eq!(c.model.output_bias, OutputBias::Init);
    assert_eq!(c.model.std_head_scale, 0.5);
    assert_eq!(c.train.time_limit, Some(300.0));
    // The resolved configuration (what the engine hashes) carries the budget.
    let json = serde_json::to_value(c).unwrap();
    assert_eq!(json["train"]["time_limit"], serde_json::json!(300.0));
    assert_eq!(json["model"]["init"], serde_json::json!("pytorch"));
}

#[test]
fn a_non_positive_time_limit_is_a_located_error() {
    for value in ["-1", "0", "0.0"] {
        let e = only_error(&spec("", &format!("time_limit = {value}")));
        assert_eq!(e.key, "train.time_limit", "{e:?}");
        assert!(e.message.contains("greater than 0"), "{e:?}");
        assert_eq!(e.line, 14, "{e:?}");
    }
    let e = only_error(&spec("", "time_limit = \"1h\""));
    assert_eq!(e.key, "train.time_limit", "{e:?}");
}

#[test]
fn an_unknown_init_scheme_suggests_the_closest() {
    let e = only_error(&spec("init = \"pytorh\"", ""));
    assert_eq!(e.key, "model.init", "{e:?}");
    assert!(e.message.contains("did you mean \"pytorch\""), "{e:?}");
    assert_eq!(e.line, 11, "{e:?}");
    let e = only_error(&spec("output_bias = \"dat\"", ""));
    assert_eq!(e.key, "model.output_bias", "{e:?}");
    assert!(e.message.contains("did you mean \"data\""), "{e:?}");
}

#[test]
fn a_data_output_bias_needs_a_bernoulli_likelihood() {
    let e = only_error(&spec(
        "likelihood = \"gaussian\"\noutput_bias = \"data\"",
        "",
    ));
    assert_eq!(e.key, "model.output_bias", "{e:?}");
    assert!(e.message.contains("gaussian"), "{e:?}");
    assert_eq!(e.line, 12, "{e:?}");
}

#[test]
fn a_negative_std_head_scale_is_an_error() {
    let e = only_error(&spec("std_head_scale = -1", ""));
    assert_eq!(e.key, "model.std_head_scale", "{e:?}");
}

#[test]
fn older_model_metadata_reads_as_the_old_initialisation() {
    // Checkpoint metadata written before these keys existed: the model was Glorot-initialised
    // with zero biases.
    let m: vaepipe_spec::ModelSection = serde_json::from_value(serde_json::json!({
        "latent": 50, "encoder": [200, 200], "decoder": [200, 200], "activation": "tanh",
        "likelihood": "bernoulli", "observation_std": 1.0, "learn_std": false,
        "posterior_std": "exp"
    }))
    .unwrap();
    assert_eq!(m.init, InitScheme::Glorot);
    assert_eq!(m.output_bias, OutputBias::Init);
    assert_eq!(m.std_head_scale, 1.0);
}
