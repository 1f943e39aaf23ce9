//! The plan: a DAG of stage instances over all selected sweep points, each with its cache key,
//! and the decision for each — run or skip — with the reason a person can act on
//! ("parameter `train.lr` changed (0.001 → 0.0003)"), like `snakemake -n`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

use crate::error::EngineError;
use crate::hash::{canonical_json, file_refs, hash_bytes, with_file_hashes};
use crate::stage::{PointRef, Registry, Scope};
use crate::store::Store;

/// One sweep point: its identity and its full configuration as JSON.
#[derive(Debug, Clone)]
pub struct Point {
    pub index: usize,
    pub id: String,
    pub label: String,
    pub config: Value,
}

impl Point {
    pub fn as_ref(&self) -> PointRef {
        PointRef {
            index: self.index,
            id: self.id.clone(),
            label: self.label.clone(),
        }
    }
}

/// One stage instance: a stage with concrete parameters and inputs.
#[derive(Debug, Clone)]
pub struct Instance {
    pub stage: &'static str,
    pub key: String,
    pub params: Value,
    /// Indices (into [`Plan::instances`]) of the instances this one reads.
    pub inputs: Vec<usize>,
    /// Indices (into [`Plan::points`]) of the points this instance serves.
    pub points: Vec<usize>,
    /// Content hash of every input file named in `params`.
    pub input_files: BTreeMap<String, String>,
    pub version: u32,
}

/// All instances of a run, in an order where inputs come first.
#[derive(Debug, Clone)]
pub struct Plan {
    pub pipeline: String,
    pub points: Vec<Point>,
    pub instances: Vec<Instance>,
}

impl Plan {
    /// The sub-plan of the instances `keep` accepts. Every kept instance's inputs must be kept
    /// too (select whole upstream closures); instances whose inputs were dropped are dropped as
    /// well.
    pub fn restrict(self, keep: impl Fn(&Instance) -> bool) -> Plan {
        let mut map: Vec<Option<usize>> = vec![None; self.instances.len()];
        let mut instances = Vec::new();
        for (i, inst) in self.instances.into_iter().enumerate() {
            if !keep(&inst) {
                continue;
            }
            let inputs: Option<Vec<usize>> = inst.inputs.iter().map(|d| map[*d]).collect();
            if let Some(inputs) = inputs {
                map[i] = Some(instances.len());
                instances.push(Instance { inputs, ..inst });
            }
        }
        Plan {
            pipeline: self.pipeline,
            points: self.points,
            instances,
        }
    }
}

/// Length of the hex keys used as directory names (80 bits).
const KEY_LEN: usize = 20;

/// Builds the plan for `points`. Gather stages are included only if `include_gather`
/// (i.e. every point of the pipeline is in `points`).
pub fn plan(
    registry: &Registry,
    store: &Store,
    pipeline: &str,
    points: Vec<Point>,
    include_gather: bool,
) -> Result<Plan, EngineError> {
    let mut instances: Vec<Instance> = Vec::new();
    let mut by_key: HashMap<(&'static str, String), usize> = HashMap::new();
    // (stage, point index) → instance index
    let mut of_point: HashMap<(&'static str, usize), usize> = HashMap::new();

    for stage in registry.stages() {
        match stage.scope() {
            Scope::PerPoint => {
                for (pi, point) in points.iter().enumerate() {
                    let mut inputs = Vec::new();
                    for name in stage.inputs() {
                        match of_point.get(&(*name, pi)) {
                            Some(i) => inputs.push(*i),
                            None => {
                                return Err(EngineError::Plan(format!(
                                    "stage `{}` reads `{name}`, which has no per-point instance",
                                    stage.name()
                                )));
                            }
                        }
                    }
                    let params = stage.params(&point.config);
                    let input_keys: Vec<(String, String)> = inputs
                        .iter()
                        .map(|i| (instances[*i].stage.to_string(), instances[*i].key.clone()))
                        .collect();
                    let (key, input_files) =
                        key_of(store, stage.name(), stage.version(), &params, &input_keys)?;
                    let idx = match by_key.get(&(stage.name(), key.clone())) {
                        Some(i) => *i,
                        None => {
                            instances.push(Instance {
                                stage: stage.name(),
                                key: key.clone(),
                                params,
                                inputs,
                                points: Vec::new(),
                                input_files,
                                version: stage.version(),
                            });
                            by_key.insert((stage.name(), key), instances.len() - 1);
                            instances.len() - 1
                        }
                    };
                    instances[idx].points.push(pi);
                    of_point.insert((stage.name(), pi), idx);
                }
            }
            Scope::Gather => {
                if !include_gather || points.is_empty() {
                    continue;
                }
                let mut params = stage.params(&points[0].config);
                for p in &points[1..] {
                    if canonical_json(&stage.params(&p.config)) != canonical_json(&params) {
                        return Err(EngineError::Plan(format!(
                            "stage `{}` gathers all points, but its parameters differ at point {} ({}); they must not depend on swept keys",
                            stage.name(),
                            p.index,
                            p.label
                        )));
                    }
                }
                if let Some(m) = params.as_object_mut() {
                    let all: Vec<Value> = points
                        .iter()
                        .map(|p| serde_json::json!({"index": p.index, "id": p.id, "label": p.label, "config": p.config}))
                        .collect();
                    m.insert("points".into(), Value::Array(all));
                }
                let mut inputs = BTreeSet::new();
                for name in stage.inputs() {
                    for pi in 0..points.len() {
                        if let Some(i) = of_point.get(&(*name, pi)) {
                            inputs.insert(*i);
                        }
                    }
                }
                let inputs: Vec<usize> = inputs.into_iter().collect();
                let input_keys: Vec<(String, String)> = inputs
                    .iter()
                    .map(|i| (instances[*i].stage.to_string(), instances[*i].key.clone()))
                    .collect();
                let (key, input_files) =
                    key_of(store, stage.name(), stage.version(), &params, &input_keys)?;
                instances.push(Instance {
                    stage: stage.name(),
                    key,
                    params,
                    inputs,
                    points: (0..points.len()).collect(),
                    input_files,
                    version: stage.version(),
                });
            }
        }
    }
    store.save_caches();
    Ok(Plan {
        pipeline: pipeline.to_string(),
        points,
        instances,
    })
}

/// The cache key of an instance and the content hashes of the files its parameters name.
pub(crate) fn key_of(
    store: &Store,
    stage: &str,
    version: u32,
    params: &Value,
    inputs: &[(String, String)],
) -> Result<(String, BTreeMap<String, String>), EngineError> {
    let mut hashes = BTreeMap::new();
    for f in file_refs(params) {
        let h = store.hashes.hash(&f)?;
        hashes.insert(f, h);
    }
    let material = serde_json::json!({
        "stage": stage,
        "version": version,
        "params": with_file_hashes(params, &hashes),
        "inputs": inputs.iter().map(|(s, k)| serde_json::json!([s, k])).collect::<Vec<_>>(),
    });
    let key = hash_bytes(canonical_json(&material).as_bytes())[..KEY_LEN].to_string();
    let files = hashes
        .into_iter()
        .map(|(p, h)| (p.display().to_string(), h))
        .collect();
    Ok((key, files))
}

/// Run or skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Run,
    Skip,
}

/// What will happen to one instance, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub action: Action,
    pub reason: String,
    /// Forced by `--force` (directly or because an upstream stage is forced).
    pub forced: bool,
}

/// Decides, for every instance, whether it must run and why. `force` names stages to recompute
/// (with everything downstream of them).
pub fn explain(plan: &Plan, store: &Store, force: &[String]) -> Result<Vec<Decision>, EngineError> {
    let mut out: Vec<Decision> = Vec::with_capacity(plan.instances.len());
    for inst in &plan.instances {
        let forced_upstream = inst
            .inputs
            .iter()
            .find(|i| out[**i].forced)
            .map(|i| plan.instances[*i].stage);
        if force.iter().any(|f| f == inst.stage) {
            out.push(Decision {
                action: Action::Run,
                reason: format!("forced (--force {})", inst.stage),
                forced: true,
            });
            continue;
        }
        if let Some(up) = forced_upstream {
            out.push(Decision {
                action: Action::Run,
                reason: format!("upstream `{up}` is forced"),
                forced: true,
            });
            continue;
        }
        let problem = store.verify(inst.stage, &inst.key)?;
        let Some(problem) = problem else {
            out.push(Decision {
                action: Action::Skip,
                reason: "up to date".into(),
                forced: false,
            });
            continue;
        };
        let reason = if problem != "no output yet" {
            format!("stored output is invalid: {problem}")
        } else if let Some(f) = store.failure(inst.stage, &inst.key) {
            format!("failed before: {}", f.error.lines().next().unwrap_or(""))
        } else if store.work_dir(inst.stage, &inst.key).exists() {
            "an earlier attempt was interrupted".to_string()
        } else {
            why_changed(plan, store, inst).unwrap_or_else(|| "no output yet".into())
        };
        out.push(Decision {
            action: Action::Run,
            reason,
            forced: false,
        });
    }
    Ok(out)
}

/// Compares an instance with the one last run in the same slot.
fn why_changed(plan: &Plan, store: &Store, inst: &Instance) -> Option<String> {
    let mut previous = None;
    for p in &inst.points {
        if let Some(rec) = store.slot(&plan.pipeline, &plan.points[*p].id, inst.stage)
            && rec.key != inst.key
        {
            previous = Some(rec.key);
            break;
        }
    }
    let old = store.manifest(inst.stage, &previous?).ok()??;
    if old.version != inst.version {
        return Some(format!(
            "stage version changed ({} → {})",
            old.version, inst.version
        ));
    }
    let mut changed = Vec::new();
    diff_json("", &old.params, &inst.params, &mut changed);
    let mut files = Vec::new();
    for (file, hash) in &inst.input_files {
        if old.input_files.get(file).is_some_and(|h| h != hash) {
            files.push(format!("input file {file} changed"));
        }
    }
    // Input keys per upstream stage (gather manifests name them `stage[i]`).
    let mut current: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in &inst.inputs {
        current
            .entry(plan.instances[*i].stage)
            .or_default()
            .insert(plan.instances[*i].key.as_str());
    }
    let mut before: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, key) in &old.inputs {
        let stage = name.split('[').next().unwrap_or(name);
        before.entry(stage).or_default().insert(key.as_str());
    }
    let inputs: Vec<String> = current
        .iter()
        .filter(|(name, keys)| before.get(*name).is_some_and(|k| k != *keys))
        .map(|(name, _)| format!("input `{name}` changed"))
        .collect();
    // The `points` the engine adds to gather stages change whenever an upstream input does; name
    // them only when nothing else explains the change.
    let own: Vec<_> = changed
        .iter()
        .filter(|(p, _, _)| !p.starts_with("points"))
        .collect();
    let shown: Vec<_> = if own.is_empty() && inputs.is_empty() && files.is_empty() {
        changed.iter().collect()
    } else {
        own
    };
    let mut reasons: Vec<String> = shown
        .iter()
        .take(3)
        .map(|(path, a, b)| format!("parameter `{path}` changed ({a} → {b})"))
        .collect();
    if shown.len() > 3 {
        reasons.push(format!("{} more parameters changed", shown.len() - 3));
    }
    reasons.extend(files);
    reasons.extend(inputs);
    if reasons.is_empty() {
        None
    } else {
        Some(reasons.join("; "))
    }
}

fn diff_json(prefix: &str, a: &Value, b: &Value, out: &mut Vec<(String, String, String)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) if !is_file(a) && !is_file(b) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let null = Value::Null;
                diff_json(
                    &path,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                diff_json(&format!("{prefix}[{i}]"), u, v, out);
            }
        }
        _ if a != b => out.push((prefix.to_string(), short(a), short(b))),
        _ => {}
    }
}

fn is_file(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.len() == 1 && m.contains_key("$file"))
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::Object(m) if is_file(v) => m["$file"].as_str().unwrap_or("").to_string(),
        Value::Null => "unset".into(),
        other => other.to_string(),
    };
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(39).collect::<String>())
    } else {
        s
    }
}

/// Picks sections or dotted keys from a point's configuration into a new object with the same
/// structure, e.g. `pick(cfg, &["model", "train", "pipeline.seed"])`.
pub fn pick(config: &Value, paths: &[&str]) -> Value {
    let mut out = Value::Object(Default::default());
    for path in paths {
        let parts: Vec<&str> = path.split('.').collect();
        let mut src = config;
        let mut found = true;
        for p in &parts {
            match src.get(p) {
                Some(v) => src = v,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            continue;
        }
        let mut dst = Some(&mut out);
        for p in &parts[..parts.len() - 1] {
            dst = dst.and_then(Value::as_object_mut).map(|m| {
                m.entry(p.to_string())
                    .or_insert_with(|| Value::Object(Default::default()))
            });
        }
        if let (Some(m), Some(last)) = (dst.and_then(Value::as_object_mut), parts.last()) {
            m.insert(last.to_string(), src.clone());
        }
    }
    out
}
