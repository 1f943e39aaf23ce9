//! `vaepipe plan`, `validate` and `status`: what would run and why, whether a spec is valid,
//! and what is done, running, failed or missing (with the SLURM queue view when the store holds
//! a submission of the spec).

use std::process::ExitCode;

use serde_json::json;
use vaepipe_engine::{Action, plan};
use vaepipe_stages::points_of;

use super::common::{
    Global, check_stages, labels, load_spec, open_existing_store, open_store, prepare,
    prepare_failed, truncate, usage_error,
};
use crate::cli::{PlanArgs, SpecArgs, StatusArgs};

pub fn plan_cmd(g: &Global, a: PlanArgs) -> anyhow::Result<ExitCode> {
    let spec = match load_spec(g, &a.spec) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let registry = vaepipe_stages::registry();
    if let Err(e) = check_stages(&registry, &a.selection) {
        return usage_error(e);
    }
    let store = open_store(g)?;
    let (p, decisions) = match prepare(&store, &registry, &spec, &a.selection) {
        Ok(x) => x,
        Err(e) => return prepare_failed(e),
    };
    if a.spec.json {
        let instances: Vec<_> = p
            .instances
            .iter()
            .zip(&decisions)
            .map(|(i, d)| {
                json!({
                    "stage": i.stage,
                    "key": i.key,
                    "points": i.points.iter().map(|x| p.points[*x].as_ref()).collect::<Vec<_>>(),
                    "inputs": i.inputs.iter().map(|x| json!({"stage": p.instances[*x].stage, "key": p.instances[*x].key})).collect::<Vec<_>>(),
                    "action": d.action,
                    "reason": d.reason,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"pipeline": spec.name(), "instances": instances})
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "plan for `{}` ({} point{}, store {})",
        spec.name(),
        p.points.len(),
        if p.points.len() == 1 { "" } else { "s" },
        store.root().display()
    );
    for (i, (inst, d)) in p.instances.iter().zip(&decisions).enumerate() {
        let deps: Vec<String> = inst.inputs.iter().map(|x| format!("#{x}")).collect();
        let action = match d.action {
            Action::Run => "RUN ",
            Action::Skip => "skip",
        };
        println!(
            "  #{i:<3} {action} {:<7} {}  {:<24} {}{}",
            inst.stage,
            &inst.key[..10],
            truncate(
                &labels(
                    &inst
                        .points
                        .iter()
                        .map(|x| p.points[*x].as_ref())
                        .collect::<Vec<_>>(),
                    p.points.len()
                ),
                24
            ),
            d.reason,
            if deps.is_empty() {
                String::new()
            } else {
                format!("  ← {}", deps.join(" "))
            }
        );
    }
    let n = decisions.iter().filter(|d| d.action == Action::Run).count();
    println!("{n} to run, {} up to date", decisions.len() - n);
    Ok(ExitCode::SUCCESS)
}

pub fn validate(g: &Global, a: SpecArgs) -> anyhow::Result<ExitCode> {
    let spec = match load_spec(g, &a) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    if a.json {
        let runs: Vec<_> = spec
            .runs
            .iter()
            .map(|r| json!({"index": r.index, "id": r.id, "label": r.label, "config": r.config}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"valid": true, "pipeline": spec.name(), "runs": runs})
            )?
        );
    } else {
        println!(
            "{}: valid; {} run{}{}",
            a.spec.display(),
            spec.runs.len(),
            if spec.runs.len() == 1 { "" } else { "s" },
            if spec.sweep_keys.is_empty() {
                String::new()
            } else {
                format!(" (sweep over {})", spec.sweep_keys.join(", "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(g: &Global, a: StatusArgs) -> anyhow::Result<ExitCode> {
    let spec = match load_spec(g, &a.spec) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let registry = vaepipe_stages::registry();
    let store = open_existing_store(g)?;
    let p = plan(&registry, &store, spec.name(), points_of(&spec), true)?;
    let mut rows = Vec::new();
    for inst in &p.instances {
        let state = store.state(inst.stage, &inst.key)?;
        rows.push((inst, state.name(), state.detail()));
    }
    // With a SLURM submission of this spec in the store: each point's queue state, from one
    // squeue call for the whole submission (docs/slurm.md).
    let queue = vaepipe_slurm::queue_view(&registry, &store, &p)?;
    if a.spec.json {
        let out: Vec<_> = rows
            .iter()
            .map(|(i, s, d)| json!({"stage": i.stage, "key": i.key, "points": i.points.iter().map(|x| p.points[*x].as_ref()).collect::<Vec<_>>(), "state": s, "detail": d, "dir": store.output_dir(i.stage, &i.key)}))
            .collect();
        let mut doc = json!({"pipeline": spec.name(), "instances": out});
        if let (Some(q), Some(m)) = (&queue, doc.as_object_mut()) {
            let (slurm, points) = q.json();
            m.insert("slurm".into(), slurm);
            m.insert("points".into(), points);
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for (i, s, d) in &rows {
            println!(
                "{:<8} {:<12} {:<28} {d}",
                i.stage,
                s,
                truncate(
                    &labels(
                        &i.points
                            .iter()
                            .map(|x| p.points[*x].as_ref())
                            .collect::<Vec<_>>(),
                        p.points.len()
                    ),
                    28
                )
            );
        }
        let done = rows.iter().filter(|r| r.1 == "done").count();
        println!("{done}/{} done", rows.len());
        if let Some(q) = &queue {
            print!("{}", q.render());
        }
    }
    Ok(ExitCode::SUCCESS)
}
