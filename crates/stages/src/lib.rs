//! vaepipe-stages: the VAE pipeline's stages — data, train, prior refit, eval, report — as
//! implementations of the engine's `Stage` trait. Each reads its parameters (a slice of the
//! resolved spec) and its inputs' artifacts, and writes its own artifacts; they share nothing
//! else. The artifact formats are documented in docs/artifacts.md.
//!
//! Each stage's parameters are picked from the point's configuration: the resolved spec
//! (`pipeline`, `data`, `model`, `train`, `prior`, `eval`, `report`) plus `point` (`id`,
//! `label`, `values`: the swept keys and their values), which only the eval stage reads so
//! that its `metrics.json` can name its sweep point.

pub mod artifacts;
pub mod compare;
pub mod convert;
mod data;
mod eval;
mod fit;
mod prior;
mod publish;
mod report;
mod train;
mod util;

use std::path::Path;

use vaepipe_engine::Registry;

pub use data::DataStage;
pub use eval::EvalStage;
pub use prior::PriorStage;
pub use publish::{EntryError, REPORT, publish_report, report_location, report_of, rerender_entry};
pub use report::ReportStage;
pub use train::TrainStage;
pub use util::{publish_dir, seed_for};

/// Every stage of the product, in dependency order.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    // Registration order is dependency order; a wrong order is a programming error caught by
    // the tests of this crate.
    let stages: Vec<Box<dyn vaepipe_engine::Stage>> = vec![
        Box::new(DataStage),
        Box::new(TrainStage),
        Box::new(PriorStage),
        Box::new(EvalStage),
        Box::new(ReportStage),
    ];
    for s in stages {
        if let Err(e) = r.register(s) {
            panic!("stage registry is inconsistent: {e}");
        }
    }
    r
}

/// The engine's view of a spec's runs: each point's configuration is the resolved spec plus
/// `point` (its id, label and swept values), which stages may pick like any section.
pub fn points_of(spec: &vaepipe_spec::Spec) -> Vec<vaepipe_engine::Point> {
    spec.runs
        .iter()
        .map(|r| {
            let mut config = serde_json::to_value(&r.config).unwrap_or_default();
            if let Some(m) = config.as_object_mut() {
                m.insert(
                    "point".into(),
                    serde_json::json!({"id": r.id, "label": r.label, "values": r.assignments}),
                );
            }
            vaepipe_engine::Point {
                index: r.index,
                id: r.id.clone(),
                label: r.label.clone(),
                config,
            }
        })
        .collect()
}

/// Reads a JSON artifact, naming the file in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: invalid JSON: {e}", path.display()))
}

/// Writes a JSON artifact (pretty, with a final newline).
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
