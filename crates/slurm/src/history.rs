//! Where a point's lost runs went on, from the engine's attempt records
//! ([`vaepipe_engine::attempts`]): "requeued after node n1 failed (…), resumed train on n2 at
//! epoch 7".

use std::collections::BTreeMap;

use serde_json::Value;
use vaepipe_engine::{Instance, Store, attempts};

/// What the instances' attempt records (vaepipe_engine::attempts) say about runs of the array
/// job `array` that were lost: for each attempt that found the lock of a run on another node
/// unreleased (that run died with its node, or was killed) or took it over, where it went on
/// and from which epoch, e.g. "requeued after node n1 failed (its run there ended without
/// releasing its lock), resumed train on n2 at epoch 7".
pub fn node_history<'a>(
    store: &Store,
    instances: impl Iterator<Item = &'a Instance>,
    array: Option<&str>,
) -> Vec<String> {
    let text = |p: &BTreeMap<String, Value>, k: &str| {
        p.get(k)
            .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
    };
    let mut out = Vec::new();
    for inst in instances {
        for (a, lines) in attempts(store, inst.stage, &inst.key) {
            let Some(prev) = &a.previous else { continue };
            let ours = text(&a.placement, "slurm_array_job_id");
            if array.is_some() && ours.as_deref() != array {
                continue;
            }
            let (Some(was), Some(now)) = (
                text(&prev.holder.placement, "slurm_node"),
                text(&a.placement, "slurm_node"),
            ) else {
                continue;
            };
            let restart =
                |p: &BTreeMap<String, Value>| p.get("slurm_restart_count").and_then(Value::as_u64);
            let requeued = restart(&a.placement) > restart(&prev.holder.placement);
            let cause = match prev.how.strip_prefix("taken over: ") {
                Some(reason) => format!("its run on node {was} was found gone ({reason})"),
                None if was != now => {
                    format!("node {was} failed (its run there ended without releasing its lock)")
                }
                None => format!("its run on node {was} was killed"),
            };
            let epoch = lines
                .iter()
                .find_map(|l| l.split("resuming from the checkpoint at epoch ").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .map(|e| format!(" at epoch {e}"))
                .unwrap_or_default();
            let what = if a.resumed {
                format!("resumed {} on {now}{epoch}", inst.stage)
            } else {
                format!("restarted {} on {now}", inst.stage)
            };
            let how = if requeued { "requeued" } else { "taken over" };
            out.push(format!("{how} after {cause}, {what}"));
        }
    }
    out
}
