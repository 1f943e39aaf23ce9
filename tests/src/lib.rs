//! Support for the cross-crate tests: the embedded data set, specs written to a temporary
//! directory, and whole pipelines run through the library API exactly as the CLI runs them.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use vaepipe_engine::{NoEvents, Point, RunOptions, RunReport, Store, execute, explain, plan};

/// The embedded MNIST subset shipped in the repository.
pub fn subset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/mnist-subset")
        .canonicalize()
        .expect("data/mnist-subset exists")
}

/// The `[data]` section for the embedded subset, limited to `train_rows` / `test_rows`.
pub fn data_section(train_rows: usize, test_rows: usize, validation: usize) -> String {
    let d = subset_dir();
    format!(
        "[data]\nformat = \"idx\"\ntrain = {{ images = \"{d}/train-images-idx3-ubyte.gz\", labels = \"{d}/train-labels-idx1-ubyte.gz\" }}\n\
         test = {{ images = \"{d}/t10k-images-idx3-ubyte.gz\", labels = \"{d}/t10k-labels-idx1-ubyte.gz\" }}\n\
         train_rows = {train_rows}\ntest_rows = {test_rows}\nvalidation = {validation}\n",
        d = d.display()
    )
}

/// Loads spec text (paths absolute) and returns the engine's points, as the CLI builds them.
pub fn points(text: &str, overrides: &[&str]) -> (String, Vec<Point>) {
    let dir = std::env::temp_dir();
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let spec = match vaepipe_spec::load_str("test.toml", text, &dir, &o, &dir) {
        Ok(s) => s,
        Err(e) => panic!("invalid test spec:\n{e}"),
    };
    (spec.name().to_string(), vaepipe_stages::points_of(&spec))
}

/// Runs the stages in `only` (all when empty) for every point of the spec in `store`.
pub fn run(store: &Path, text: &str, overrides: &[&str], only: &[&str]) -> RunReport {
    let registry = vaepipe_stages::registry();
    let store = Store::open(store).expect("store");
    let (name, points) = points(text, overrides);
    let mut p = plan(&registry, &store, &name, points, true).expect("plan");
    if !only.is_empty() {
        p = p.restrict(|i| only.contains(&i.stage));
    }
    let d = explain(&p, &store, &[]).expect("explain");
    let options = RunOptions {
        jobs: 1,
        ..Default::default()
    };
    execute(
        &registry,
        &store,
        &p,
        &d,
        &options,
        &NoEvents,
        &AtomicBool::new(false),
    )
    .expect("execute")
}
