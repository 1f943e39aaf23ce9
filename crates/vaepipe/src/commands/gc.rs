//! `vaepipe gc`: removes store entries no given spec (or no recorded run) refers to, and the
//! leftovers of removed keys.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use vaepipe_engine::plan;
use vaepipe_stages::points_of;

use super::common::{Global, load_spec, open_existing_store};
use crate::cli::{GcArgs, SpecArgs};

pub fn gc(g: &Global, a: GcArgs) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(g)?;
    let registry = vaepipe_stages::registry();
    let mut keep = std::collections::BTreeSet::new();
    if a.specs.is_empty() {
        keep.extend(store.slot_keys()?);
    } else {
        for s in &a.specs {
            let args = SpecArgs {
                spec: s.clone(),
                overrides: Vec::new(),
                json: a.json,
            };
            let spec = match load_spec(g, &args) {
                Ok(s) => s,
                Err(code) => return Ok(code),
            };
            let p = plan(&registry, &store, spec.name(), points_of(&spec), true)?;
            keep.extend(
                p.instances
                    .iter()
                    .map(|i| (i.stage.to_string(), i.key.clone())),
            );
        }
    }
    let _lock = if a.dry_run {
        None
    } else {
        Some(store.store_lock(true)?)
    };
    let mut removed = Vec::new();
    for (stage, key) in store.entries()? {
        if keep.contains(&(stage.clone(), key.clone())) {
            continue;
        }
        let dir = store.output_dir(&stage, &key);
        let bytes = dir_size(&dir);
        if !a.dry_run {
            store.remove(&stage, &key)?;
        }
        removed.push(json!({"stage": stage, "key": key, "bytes": bytes}));
    }
    // Leftovers: abandoned work directories, logs and failure records of removed keys, stale
    // locks, temporary files.
    let mut leftovers = Vec::new();
    for path in store.orphans(&keep)? {
        let bytes = if path.is_dir() {
            dir_size(&path)
        } else {
            std::fs::metadata(&path).map_or(0, |m| m.len())
        };
        if !a.dry_run {
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
        leftovers.push(json!({"path": path, "bytes": bytes}));
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"dry_run": a.dry_run, "removed": removed, "leftovers": leftovers})
            )?
        );
    } else {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        for r in &removed {
            println!(
                "{verb} {}/{} ({} bytes)",
                r["stage"].as_str().unwrap_or(""),
                r["key"].as_str().unwrap_or(""),
                r["bytes"]
            );
        }
        let total: u64 = removed
            .iter()
            .chain(&leftovers)
            .filter_map(|r| r["bytes"].as_u64())
            .sum();
        println!(
            "{} entr{} and {} leftover file{} ({:.1} MB) {}",
            removed.len(),
            if removed.len() == 1 { "y" } else { "ies" },
            leftovers.len(),
            if leftovers.len() == 1 { "" } else { "s" },
            total as f64 / 1e6,
            if a.dry_run {
                "would be removed"
            } else {
                "removed"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += dir_size(&p);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}
