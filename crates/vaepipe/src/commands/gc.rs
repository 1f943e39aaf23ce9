//! `vaepipe gc`: removes store entries no given spec (or no recorded run) refers to, and the
//! leftovers of removed keys (the work is `Store::collect_garbage`).

use std::process::ExitCode;

use serde_json::{Value, json};
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
    let collected = store.collect_garbage(&keep, a.dry_run)?;
    let removed: Vec<Value> = collected
        .removed
        .iter()
        .map(|r| json!({"stage": r.stage, "key": r.key, "bytes": r.bytes}))
        .collect();
    let leftovers: Vec<Value> = collected
        .leftovers
        .iter()
        .map(|l| json!({"path": l.path, "bytes": l.bytes}))
        .collect();
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
