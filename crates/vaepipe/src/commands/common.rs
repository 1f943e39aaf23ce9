//! What every command shares: global options, exit codes, loading the spec and opening the
//! store (printing people- or script-facing errors), the plan of a selection, and the labels
//! and truncation of the tables.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;
use vaepipe_engine::{Decision, Plan, Registry, SelectError, Store};
use vaepipe_spec::Spec;

use crate::cli::{Selection, SpecArgs};
pub use crate::exit::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID};

/// Global options every command needs.
pub struct Global {
    pub store: PathBuf,
    pub color: bool,
}

/// Loads a spec, printing its errors (exit 2) if it is invalid.
pub fn load_spec(g: &Global, args: &SpecArgs) -> Result<Spec, ExitCode> {
    match vaepipe_spec::load(&args.spec, &args.overrides) {
        Ok(s) => Ok(s),
        Err(errors) => {
            if args.json {
                let out = json!({ "valid": false, "errors": errors.records() });
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else {
                eprint!("{}", errors.render(g.color));
            }
            Err(ExitCode::from(EXIT_INVALID))
        }
    }
}

pub fn open_store(g: &Global) -> anyhow::Result<Store> {
    Store::open(&g.store).with_context(|| format!("cannot open the store at {}", g.store.display()))
}

/// For commands that only look at a store: it must exist.
pub fn open_existing_store(g: &Global) -> anyhow::Result<Store> {
    Ok(Store::open_existing(&g.store)?)
}

/// The engine's view of the CLI's `--point`, `--force`, `--stage` and `--shared`.
pub fn selection(s: &Selection) -> vaepipe_engine::Selection<'_> {
    vaepipe_engine::Selection {
        points: &s.points,
        force: &s.force,
        stages: &s.stages,
        shared: s.shared,
    }
}

/// Checks that `--force` and `--stage` name registered stages.
pub fn check_stages(registry: &Registry, s: &Selection) -> Result<(), String> {
    vaepipe_engine::check_stages(registry, &selection(s))
}

pub fn usage_error(msg: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("error: {msg}");
    Ok(ExitCode::from(EXIT_INVALID))
}

/// A plan that could not be made: the user's selection (exit 2) or the engine (exit 1).
pub fn prepare_failed(e: SelectError) -> anyhow::Result<ExitCode> {
    match e {
        SelectError::Usage(msg) => usage_error(msg),
        SelectError::Engine(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

/// The plan and decisions for all points of a spec and a selection.
pub fn prepare(
    store: &Store,
    registry: &Registry,
    spec: &Spec,
    s: &Selection,
) -> Result<(Plan, Vec<Decision>), SelectError> {
    let points = vaepipe_stages::points_of(spec);
    vaepipe_engine::prepare(registry, store, spec.name(), points, &selection(s))
}

pub fn git_revision(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let dirty = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

/// The points an instance serves, for people: "all points" when it serves every point of the
/// run (`total`), else their labels.
pub fn labels(points: &[vaepipe_engine::PointRef], total: usize) -> String {
    let l: Vec<&str> = points
        .iter()
        .map(|p| p.label.as_str())
        .filter(|l| !l.is_empty())
        .collect();
    if l.is_empty() || (points.len() == total && total > 1) {
        "all points".into()
    } else if l.len() > 3 {
        format!("{} points", l.len())
    } else {
        l.join(" | ")
    }
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}
