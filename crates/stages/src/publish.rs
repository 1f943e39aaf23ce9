//! Where reports go, for the CLI: the report stage's name ([`REPORT`]), publishing the report a
//! run committed to `reports/<pipeline slug>/` ([`publish_report`]), and re-rendering a report
//! entry of the store from its manifest alone ([`rerender_entry`]). The binary names no stage
//! and reads no manifest parameter; it asks here.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use vaepipe_engine::{InstanceReport, Outcome, Registry, RunReport, Store};

use crate::util::publish_dir;

/// The name of the report stage (`ReportStage`), the one gather stage.
pub const REPORT: &str = "report";

/// The report instance of a run that produced output (ran or cached), if any.
pub fn report_of(run: &RunReport) -> Option<&InstanceReport> {
    run.instances
        .iter()
        .rev()
        .find(|i| i.stage == REPORT && matches!(i.outcome, Outcome::Ran | Outcome::Cached))
}

/// The directory a pipeline's report is published to: `reports/<slug of its name>`.
pub fn report_location(reports: &Path, pipeline: &str) -> PathBuf {
    reports.join(vaepipe_engine::store::slug(pipeline))
}

/// Copies the committed report of `run` to `reports/<slug>/`, replacing the previous one;
/// `None` if the run produced no report.
pub fn publish_report(
    run: &RunReport,
    reports: &Path,
    pipeline: &str,
) -> anyhow::Result<Option<PathBuf>> {
    let Some(inst) = report_of(run) else {
        return Ok(None);
    };
    let dest = report_location(reports, pipeline);
    publish_dir(&inst.dir, &dest)
        .with_context(|| format!("cannot publish the report to {}", dest.display()))?;
    Ok(Some(dest))
}

/// Why a store entry could not be re-rendered.
#[derive(Debug)]
pub enum EntryError {
    /// `entry` is not a report entry of the store (a usage error).
    NotAReport(String),
    /// Re-rendering or publishing failed.
    Failed(String),
}

/// Re-renders the report entry `entry` (`<store>/store/report/<key>`) from its manifest and
/// the stored inputs alone, publishes it to `reports/<slug of its pipeline>/` and returns that.
pub fn rerender_entry(
    registry: &Registry,
    store: &Store,
    entry: &Path,
    reports: &Path,
) -> Result<PathBuf, EntryError> {
    let stage = std::fs::read(entry.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|m| m["stage"].as_str().map(str::to_string));
    match stage.as_deref() {
        Some(REPORT) => {}
        Some(other) => {
            return Err(EntryError::NotAReport(format!(
                "{} is a `{other}` entry of the store; give a report entry (<store>/store/report/<key>) or a spec",
                entry.display()
            )));
        }
        None => {
            return Err(EntryError::NotAReport(format!(
                "{} is neither a spec file nor a store entry with a manifest.json",
                entry.display()
            )));
        }
    }
    let (manifest, dir) = vaepipe_engine::rerun_entry(registry, store, entry)
        .map_err(|e| EntryError::Failed(format!("{e:#}")))?;
    let name = manifest.params["pipeline"]["name"]
        .as_str()
        .unwrap_or(REPORT)
        .to_string();
    let dest = report_location(reports, &name);
    let published = publish_dir(&dir, &dest);
    let _ = std::fs::remove_dir_all(&dir);
    published.map_err(|e| EntryError::Failed(format!("{e:#}")))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use vaepipe_engine::Stage;

    #[test]
    fn the_report_constant_names_the_report_stage() {
        assert_eq!(crate::ReportStage.name(), super::REPORT);
        assert!(crate::registry().get(super::REPORT).is_some());
    }
}
