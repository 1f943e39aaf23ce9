//! `vaepipe report`: re-renders the report from stored artifacts only (nothing upstream is
//! recomputed), from a spec or from a report entry of the store, and publishes it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use serde_json::json;
use vaepipe_engine::{Action, Outcome, RunOptions, explain, plan};
use vaepipe_stages::{EntryError, REPORT, points_of, publish_report};

use super::common::{
    EXIT_FAILED, Global, git_revision, load_spec, open_existing_store, usage_error,
};
use crate::cli::{ReportArgs, SpecArgs};
use crate::progress::Display;

pub fn report(g: &Global, a: ReportArgs) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(g)?;
    let reports_dir = a
        .reports
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports"));
    // A store entry: re-render from its manifest and the stored inputs alone.
    if a.target.is_dir() {
        let registry = vaepipe_stages::registry();
        let dest = match vaepipe_stages::rerender_entry(&registry, &store, &a.target, &reports_dir)
        {
            Ok(dest) => dest,
            Err(EntryError::NotAReport(msg)) => return usage_error(msg),
            Err(EntryError::Failed(msg)) => {
                eprintln!("error: {msg}");
                return Ok(ExitCode::from(EXIT_FAILED));
            }
        };
        print_report_location(&dest, a.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let args = SpecArgs {
        spec: a.target.clone(),
        overrides: a.overrides.clone(),
        json: a.json,
    };
    let spec = match load_spec(g, &args) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let registry = vaepipe_stages::registry();
    let p = plan(&registry, &store, spec.name(), points_of(&spec), true)?;
    let mut decisions = explain(&p, &store, &[REPORT.to_string()])?;
    // Nothing but the report is computed here: missing upstream results are listed as such.
    for (inst, d) in p.instances.iter().zip(decisions.iter_mut()) {
        if inst.stage != REPORT && d.action == Action::Run {
            d.reason = "not computed (vaepipe report only renders; use vaepipe run)".into();
        }
    }
    let options = RunOptions {
        jobs: 1,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: spec.path.parent().and_then(git_revision),
        only_stages: Some(vec![REPORT.to_string()]),
        lock: vaepipe_slurm::lock_options(),
        ..Default::default()
    };
    let cancel = AtomicBool::new(false);
    let display = Display::new(&p, false, true);
    let result = vaepipe_engine::execute(
        &registry, &store, &p, &decisions, &options, &display, &cancel,
    )?;
    match publish_report(&result, &reports_dir, spec.name())? {
        Some(dest) => {
            print_report_location(&dest, a.json)?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            match result.instances.iter().find(|i| i.stage == REPORT) {
                Some(r) if matches!(r.outcome, Outcome::Failed(_)) => {
                    let detail = match &r.outcome {
                        Outcome::Failed(e) => e.as_str(),
                        _ => "",
                    };
                    eprintln!(
                        "error: rendering the report failed: {detail}\n  log: {}",
                        r.log.display()
                    );
                }
                _ => eprintln!(
                    "error: the report could not be rendered: no stage of `{}` has produced output yet (run `vaepipe run` first)",
                    spec.name()
                ),
            }
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

fn print_report_location(dest: &Path, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"report": {"dir": dest, "markdown": dest.join("index.md"), "html": dest.join("index.html")}})
            )?
        );
    } else {
        println!("report: {}", dest.join("index.html").display());
    }
    Ok(())
}
