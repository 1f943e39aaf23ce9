//! Helpers shared by the end-to-end tests of the `vaepipe` binary (cli.rs, slurm.rs,
//! slurm_multinode.rs, …): where the binary and the embedded data set are, how to show a failed
//! command, checks on a store, and the small specs the SLURM tests submit.

// Each test target uses only some of these.
#![allow(dead_code)]

pub mod slurm;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

/// The `vaepipe` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vaepipe")
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The embedded MNIST subset (data/mnist-subset).
pub fn subset() -> PathBuf {
    repo().join("data/mnist-subset")
}

/// A finished command's exit code, stdout and stderr, for failure messages.
pub fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts that a finished command exited with `code`, showing its output otherwise.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{}", describe(o));
}

/// A command's stdout parsed as JSON (`--json`); panics with its output if it is not JSON.
pub fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", describe(o)))
}

/// Every committed entry of the store verifies against its manifest; returns them.
pub fn verify_store(store: &Path) -> Vec<(String, String)> {
    let s = vaepipe_engine::Store::open(store).expect("open store");
    let entries = s.entries().expect("list entries");
    for (stage, key) in &entries {
        assert_eq!(
            s.verify(stage, key).expect("verify"),
            None,
            "{stage}/{key} does not verify"
        );
    }
    entries
}

/// The output directory of `stage` in the store at `store`, asserting that there is exactly one.
pub fn the_entry(store: &Path, stage: &str) -> PathBuf {
    let base = store.join("store").join(stage);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
        .unwrap_or_else(|e| panic!("{}: {e}", base.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "expected one {stage} entry in {}",
        base.display()
    );
    dirs.remove(0)
}

/// True if `dir` does not exist or holds nothing (e.g. no committed entry of a stage).
pub fn missing_or_empty(dir: &Path) -> bool {
    !dir.exists() || std::fs::read_dir(dir).unwrap().next().is_none()
}

/// A small, fast pipeline on the embedded subset (the SLURM tests' specs): `model`, `train` and
/// `sweep` are appended verbatim to their sections.
#[allow(clippy::too_many_arguments)]
pub fn write_spec(
    dir: &Path,
    file: &str,
    name: &str,
    seed: u64,
    rows: usize,
    model: &str,
    train: &str,
    sweep: &str,
) -> PathBuf {
    let d = subset();
    let text = format!(
        r#"[pipeline]
name = {name}
seed = {seed}

[data]
format = "idx"
train = {{ images = "{d}/train-images-idx3-ubyte.gz", labels = "{d}/train-labels-idx1-ubyte.gz" }}
test = {{ images = "{d}/t10k-images-idx3-ubyte.gz", labels = "{d}/t10k-labels-idx1-ubyte.gz" }}
train_rows = {rows}
test_rows = 100
validation = 100

[model]
{model}

[train]
batch_size = 50
{train}

[prior]
method = "standard-normal"

[eval]
k = 20
images = 50
curve_k = [1, 5, 20]
curve_images = 20
{sweep}
"#,
        name = toml_string(name),
        d = d.display()
    );
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write spec");
    path
}

/// A TOML basic string holding `s` (escapes `\` and `"`).
pub fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
