//! A model with two stochastic layers through the real pipeline — data → train → prior → eval →
//! report — on the embedded MNIST subset with tiny sizes, beside a one-layer point: the
//! checkpoint carries the layers, the prior is refit on the top layer, metrics.json counts active
//! units per layer, and the report's Table-1 layout groups the points by their layers.

#[path = "report/support.rs"]
mod support;

use std::path::{Path, PathBuf};

use vaepipe_engine::{InstanceReport, RunReport};
use vaepipe_stages::artifacts::{Metrics, load_model, load_prior};

use support::*;

fn instance<'a>(r: &'a RunReport, stage: &str, label: &str) -> &'a InstanceReport {
    r.instances
        .iter()
        .find(|i| i.stage == stage && i.points.iter().any(|p| p.label == label))
        .unwrap_or_else(|| panic!("no {stage} instance for {label}"))
}

fn metrics(dir: &Path, variant: &str) -> Metrics {
    let text = std::fs::read_to_string(dir.join(variant).join("metrics.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_two_layer_model_runs_end_to_end() {
    let (_tmp, store) = temp_store();
    let data = subset_data();
    let spec = load(&format!(
        r#"
[pipeline]
name = "two layers"
seed = 2
{data}
train_rows = 400
test_rows = 60
validation = 50
[train]
objective = "iwae"
epochs = 2
batch_size = 50
[prior]
method = "mog"
components = 3
samples = 500
steps = 10
[eval]
k = 20
images = 40
curve_k = [1, 5, 20]
curve_images = 20
samples = 6
reconstructions = 4

[[sweep.points]]
label = "one layer"
"model.layers" = [{{ latent = 6, encoder = [32] }}]

[[sweep.points]]
label = "two layers"
"model.layers" = [{{ latent = 6, encoder = [32] }}, {{ latent = 3, encoder = [16], decoder = [12] }}]

[sweep]
"train.k" = [3]
"#
    ));
    let report = run(&vaepipe_stages::registry(), &store, &spec, &[]);
    assert_eq!(report.failed().count(), 0, "{:#?}", report.instances);

    // The checkpoint carries the layers and loads with them; the prior lives on z2.
    let train: PathBuf = instance(&report, "train", "two layers k=3").dir.clone();
    let (vae, config) = load_model(&train.join("model.safetensors")).unwrap();
    assert_eq!(config.model.upper.len(), 1);
    assert_eq!(vae.config().latent_dims(), vec![6, 3]);
    let prior_dir = instance(&report, "prior", "two layers k=3").dir.clone();
    let (prior, _) = load_prior(&prior_dir.join("prior.safetensors"), vae.config()).unwrap();
    match prior {
        vaepipe_nn::Prior::Mixture(m) => assert_eq!((m.components(), m.dim()), (3, 3)),
        other => panic!("expected a mixture prior, found {other:?}"),
    }

    // Active units per layer, bounded by each layer's size; layer 1's is `active_units`.
    let eval = instance(&report, "eval", "two layers k=3").dir.clone();
    for variant in ["standard", "refit"] {
        let m = metrics(&eval, variant);
        let e = &m.estimates;
        assert!(e.test_nll.is_finite() && e.test_nll > 0.0, "{e:?}");
        assert_eq!(e.latent_dims, vec![6, 3]);
        assert_eq!(e.active_units_per_layer.len(), 2);
        assert_eq!(e.active_units_per_layer[0], e.active_units);
        assert!(e.active_units_per_layer[0] <= 6 && e.active_units_per_layer[1] <= 3);
    }
    let one = metrics(&instance(&report, "eval", "one layer k=3").dir, "standard");
    assert_eq!(
        one.estimates.active_units_per_layer,
        vec![one.estimates.active_units]
    );
    assert_eq!(one.estimates.latent_dims, vec![6]);

    // The report: every figure decodes; the Table-1 layout has one table per number of layers;
    // the results table shows the active units of both layers.
    let dir = report_dir(&report);
    check_report(&dir);
    let md = index_md(&dir);
    assert!(md.contains("With one stochastic layer:"), "{md}");
    assert!(md.contains("With two stochastic layers:"), "{md}");
    let m = metrics(&eval, "standard").estimates;
    let units = format!(
        "{}/6, {}/3",
        m.active_units_per_layer[0], m.active_units_per_layer[1]
    );
    let rows = md_rows(section(&md, "Results"), &["two layers k=3"]);
    let col = md_column(&md, "active units");
    assert!(rows.iter().any(|r| r[col] == units), "{units} in {rows:?}");
    assert!(md.contains("the means of the first layer"), "{md}");
}
