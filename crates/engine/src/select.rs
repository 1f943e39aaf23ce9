//! What a command asks to run: sweep points chosen by index or id, `--stage` (a stage and what
//! it reads), `--force`, `--shared` (only the instances several points share). [`prepare`]
//! turns a [`Selection`] into the plan and decisions the executor takes.

use crate::error::EngineError;
use crate::plan::{Decision, Plan, Point, explain, plan};
use crate::stage::{Registry, Scope};
use crate::store::Store;

/// A command's selection, as the user gave it (the CLI's `--point`, `--force`, `--stage` and
/// `--shared`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection<'a> {
    /// Sweep points by index or id; empty = all.
    pub points: &'a [String],
    /// Recompute every instance of these stages and everything downstream.
    pub force: &'a [String],
    /// Only these stages and the stages they read (transitively); empty = all.
    pub stages: &'a [String],
    /// Only the instances several points share (and what they read).
    pub shared: bool,
}

/// Why a plan could not be made: the user's selection (a usage error) or the engine.
#[derive(Debug)]
pub enum SelectError {
    Usage(String),
    Engine(EngineError),
}

/// Checks that every stage `--force` and `--stage` name is registered.
pub fn check_stages(registry: &Registry, selection: &Selection) -> Result<(), String> {
    let names = registry.names();
    for (flag, list) in [("--force", selection.force), ("--stage", selection.stages)] {
        for f in list {
            if !names.contains(&f.as_str()) {
                return Err(format!(
                    "{flag} {f}: no such stage (stages: {})",
                    names.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Selects points by index or id; returns them and whether all points are selected.
pub fn select_points(all: Vec<Point>, selection: &[String]) -> Result<(Vec<Point>, bool), String> {
    if selection.is_empty() {
        return Ok((all, true));
    }
    let mut chosen = Vec::new();
    for s in selection {
        let found = match s.parse::<usize>() {
            Ok(i) => all.iter().find(|p| p.index == i),
            Err(_) => all.iter().find(|p| p.id == *s),
        };
        match found {
            Some(p) if !chosen.iter().any(|c: &Point| c.index == p.index) => chosen.push(p.clone()),
            Some(_) => {}
            None => {
                return Err(format!(
                    "no sweep point `{s}`: the spec has {} point{} (indices 0..{}); see `vaepipe plan`",
                    all.len(),
                    if all.len() == 1 { "" } else { "s" },
                    all.len().saturating_sub(1)
                ));
            }
        }
    }
    chosen.sort_by_key(|p| p.index);
    let complete = chosen.len() == all.len();
    Ok((chosen, complete))
}

/// The stages `--stage` selects, with everything they read (transitively); `None` = all.
fn stage_closure(registry: &Registry, stages: &[String]) -> Option<Vec<String>> {
    if stages.is_empty() {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    let mut todo: Vec<String> = stages.to_vec();
    while let Some(s) = todo.pop() {
        if out.contains(&s) {
            continue;
        }
        if let Some(stage) = registry.get(&s) {
            todo.extend(stage.inputs().iter().map(|i| i.to_string()));
        }
        out.push(s);
    }
    out.sort();
    Some(out)
}

/// The plan and decisions for the points `all` of pipeline `pipeline` and a selection.
pub fn prepare(
    registry: &Registry,
    store: &Store,
    pipeline: &str,
    all: Vec<Point>,
    selection: &Selection,
) -> Result<(Plan, Vec<Decision>), SelectError> {
    let (points, complete) = select_points(all, selection.points).map_err(SelectError::Usage)?;
    if !complete {
        for name in selection.stages.iter().chain(selection.force) {
            if registry
                .get(name)
                .is_some_and(|s| s.scope() == Scope::Gather)
            {
                return Err(SelectError::Usage(format!(
                    "`{name}` gathers every sweep point, so it does not run with --point; drop --point (or use `vaepipe report`)"
                )));
            }
        }
    }
    let mut p = plan(registry, store, pipeline, points, complete).map_err(SelectError::Engine)?;
    if let Some(keep) = stage_closure(registry, selection.stages) {
        p = p.restrict(|i| keep.iter().any(|k| k == i.stage));
    }
    if selection.shared {
        // Inputs of a shared instance serve at least the same points, so the closure is kept.
        let gather: Vec<&str> = registry
            .stages()
            .filter(|s| s.scope() == Scope::Gather)
            .map(|s| s.name())
            .collect();
        p = p.restrict(|i| i.points.len() > 1 && !gather.contains(&i.stage));
    }
    let d = explain(&p, store, selection.force).map_err(SelectError::Engine)?;
    Ok((p, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(n: usize) -> Vec<Point> {
        (0..n)
            .map(|i| Point {
                index: i,
                id: format!("id{i}"),
                label: String::new(),
                config: serde_json::json!({}),
            })
            .collect()
    }

    #[test]
    fn points_are_chosen_by_index_or_id_once_and_in_order() {
        let sel = ["id2".to_string(), "0".to_string(), "2".to_string()];
        let (chosen, complete) = select_points(points(3), &sel).unwrap();
        assert_eq!(chosen.iter().map(|p| p.index).collect::<Vec<_>>(), [0, 2]);
        assert!(!complete);
        let (all, complete) = select_points(points(3), &[]).unwrap();
        assert_eq!(all.len(), 3);
        assert!(complete);
    }

    #[test]
    fn an_unknown_point_is_a_usage_error_naming_the_range() {
        let e = select_points(points(2), &["7".to_string()]).unwrap_err();
        assert_eq!(
            e,
            "no sweep point `7`: the spec has 2 points (indices 0..1); see `vaepipe plan`"
        );
    }
}
