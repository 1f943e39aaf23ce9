//! Every spec in pipelines/ loads and validates (with its data pointed at the embedded MNIST
//! subset, so the test does not need the full MNIST files), and pipelines/burda-table1.toml has
//! every cell of Burda et al. (2016), Table 1 and the IWAE variants of Rainforth et al. (2018)
//! with the paper's protocol.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vaepipe_spec::{Objective, Schedule, Spec, load};

fn repo() -> PathBuf {
    std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")).unwrap()
}

fn load_with_subset(path: &Path) -> Spec {
    let data = repo().join("data/mnist-subset");
    let set = |key: &str, file: &str| format!("{key}={:?}", data.join(file).display().to_string());
    let overrides = [
        set("data.train.images", "train-images-idx3-ubyte.gz"),
        set("data.train.labels", "train-labels-idx1-ubyte.gz"),
        set("data.test.images", "t10k-images-idx3-ubyte.gz"),
        set("data.test.labels", "t10k-labels-idx1-ubyte.gz"),
    ];
    load(path, &overrides).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_pipeline_validates() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo().join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let spec = load_with_subset(&path);
            assert!(!spec.runs.is_empty());
            names.push(path.file_name().unwrap().to_string_lossy().to_string());
        }
    }
    names.sort();
    assert!(
        names.contains(&"burda-table1.toml".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"quickstart.toml".to_string()), "{names:?}");
}

#[test]
fn burda_table1_has_every_cell_with_the_papers_protocol() {
    let spec = load_with_subset(&repo().join("pipelines/burda-table1.toml"));
    assert_eq!(spec.runs.len(), 15);
    let mut cells = BTreeSet::new();
    for run in &spec.runs {
        let (t, m, e) = (&run.config.train, &run.config.model, &run.config.eval);
        assert_eq!(
            (t.epochs, t.schedule, t.batch_size, t.lr, t.betas, t.eps),
            (3280, Schedule::Iwae, 20, 1e-3, [0.9, 0.999], 1e-4),
            "{}",
            run.label
        );
        assert_eq!((e.k, e.images), (5000, 0));
        // Burda's nets: 784-200-200-50, or 784-200-200-100 then 100-100-50, decoders mirrored.
        match m.stochastic_layers() {
            1 => assert_eq!(
                (m.latent, &m.encoder, &m.decoder),
                (50, &vec![200, 200], &vec![200, 200])
            ),
            2 => {
                assert_eq!(
                    (m.latent, &m.encoder, &m.decoder),
                    (100, &vec![200, 200], &vec![200, 200])
                );
                let u = &m.upper[0];
                assert_eq!(
                    (u.latent, &u.encoder, &u.decoder),
                    (50, &vec![100, 100], &vec![100, 100])
                );
            }
            n => panic!("{n} layers"),
        }
        let layers = m.stochastic_layers();
        assert!(
            run.label
                .ends_with(if layers == 1 { "1 layer" } else { "2 layers" })
        );
        cells.insert((
            layers,
            t.objective.to_string(),
            t.k,
            t.m,
            t.beta.map(|b| (b * 100.0).round() as i64),
        ));
    }
    let mut expected = BTreeSet::new();
    for layers in [1, 2] {
        for objective in [Objective::Elbo, Objective::Iwae] {
            for k in [1, 5, 50] {
                expected.insert((layers, objective.to_string(), k, 1, None));
            }
        }
    }
    expected.insert((1, "piwae".into(), 8, 8, None));
    expected.insert((1, "miwae".into(), 8, 8, None));
    expected.insert((1, "ciwae".into(), 64, 1, Some(5)));
    assert_eq!(cells, expected);
}
