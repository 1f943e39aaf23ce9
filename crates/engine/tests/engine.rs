//! Engine behaviour on toy stages: caching, precise invalidation with reasons, atomic commits
//! (a failed or interrupted stage is never taken as complete), resumable work, concurrent runs
//! on one store, failures that leave other points running, and gather stages.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::{Value, json};
use vaepipe_engine::{
    Action, Context, Decision, NoEvents, Outcome, Plan, Point, Registry, RunOptions, Scope, Stage,
    StageError, Store, execute, explain, pick, plan,
};

/// Appends one line per real computation to `<dir>/runs.log` so tests can count them.
fn note(counter: &Path, what: &str) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(counter)
        .unwrap();
    writeln!(f, "{what}").unwrap();
}

fn count(counter: &Path, what: &str) -> usize {
    fs::read_to_string(counter)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == what)
        .count()
}

/// The `Stage` methods every toy stage shares: its name, version 1, the stages it reads, and
/// as parameters the config table named like the stage. Expands inside an `impl Stage` block.
macro_rules! toy_stage {
    ($name:literal, inputs: [$($input:literal),*]) => {
        fn name(&self) -> &'static str {
            $name
        }
        fn version(&self) -> u32 {
            1
        }
        fn inputs(&self) -> &'static [&'static str] {
            &[$($input),*]
        }
        fn params(&self, p: &Value) -> Value {
            pick(p, &[$name])
        }
    };
}

/// Reads a file named in its params, writes its content times `a.scale`.
struct A {
    counter: PathBuf,
}
impl Stage for A {
    toy_stage!("a", inputs: []);
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        note(&self.counter, "a");
        let file = ctx.params["a"]["input"]["$file"].as_str().unwrap();
        let text = fs::read_to_string(file).map_err(anyhow::Error::from)?;
        let v: f64 = text.trim().parse().map_err(anyhow::Error::from)?;
        let scale = ctx.params["a"]["scale"].as_f64().unwrap();
        fs::write(ctx.out.join("value.txt"), format!("{}", v * scale))
            .map_err(anyhow::Error::from)?;
        Ok(())
    }
}

/// Adds `b.x` to a's value; fails if `b.fail` is true (after writing half its output);
/// sleeps `b.sleep_ms` to widen race windows.
struct B {
    counter: PathBuf,
}
impl Stage for B {
    toy_stage!("b", inputs: ["a"]);
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        note(&self.counter, "b");
        let a = ctx.input("a")?;
        let v: f64 = fs::read_to_string(a.dir.join("value.txt"))
            .map_err(anyhow::Error::from)?
            .parse()
            .map_err(anyhow::Error::from)?;
        fs::write(ctx.out.join("partial.txt"), "half").map_err(anyhow::Error::from)?;
        if let Some(ms) = ctx.params["b"]["sleep_ms"].as_u64() {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if ctx.params["b"]["fail"].as_bool() == Some(true) {
            return Err(anyhow::anyhow!("b was told to fail").into());
        }
        if ctx.params["b"]["panic"].as_bool() == Some(true) {
            panic!("b panicked on purpose");
        }
        let x = ctx.params["b"]["x"].as_f64().unwrap();
        fs::write(ctx.out.join("value.txt"), format!("{}", v + x)).map_err(anyhow::Error::from)?;
        Ok(())
    }
}

/// Gathers every b; accepts missing inputs and lists them.
struct G {
    counter: PathBuf,
}
impl Stage for G {
    toy_stage!("g", inputs: ["b"]);
    fn scope(&self) -> Scope {
        Scope::Gather
    }
    fn accepts_missing_inputs(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        note(&self.counter, "g");
        let mut lines = Vec::new();
        for i in ctx.inputs {
            let v = fs::read_to_string(i.dir.join("value.txt")).map_err(anyhow::Error::from)?;
            lines.push(format!(
                "{} {v}",
                i.points
                    .iter()
                    .map(|p| p.label.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        for m in ctx.missing {
            lines.push(format!("missing {}", m.reason));
        }
        fs::write(ctx.out.join("all.txt"), lines.join("\n")).map_err(anyhow::Error::from)?;
        Ok(())
    }
}

/// A resumable stage that counts steps in a checkpoint and stops when cancelled.
struct R {
    counter: PathBuf,
    cancel_after: Option<u32>,
    cancel: Arc<AtomicBool>,
}
impl Stage for R {
    toy_stage!("r", inputs: []);
    fn resumable(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        note(
            &self.counter,
            if ctx.resumed { "r-resumed" } else { "r-fresh" },
        );
        let ckpt = ctx.out.join("step.txt");
        let mut step: u32 = fs::read_to_string(&ckpt)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        while step < 10 {
            step += 1;
            fs::write(&ckpt, step.to_string()).map_err(anyhow::Error::from)?;
            if Some(step) == self.cancel_after {
                self.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            if ctx.cancelled() {
                return Err(StageError::Interrupted);
            }
        }
        Ok(())
    }
}

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    input: PathBuf,
    counter: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let input = root.join("input.txt");
    fs::write(&input, "2").unwrap();
    let counter = root.join("runs.log");
    Env {
        _dir: dir,
        root,
        input,
        counter,
    }
}

impl Env {
    /// Where the store lives; several handles may open it.
    fn store_dir(&self) -> PathBuf {
        self.root.join(".vaepipe")
    }

    /// A new handle on the store (as a new process would open it).
    fn store(&self) -> Store {
        Store::open(&self.store_dir()).unwrap()
    }
}

/// A fresh environment with the a → b → g registry and its store.
fn toy() -> (Env, Registry, Store) {
    let e = env();
    let reg = registry(&e.counter);
    let store = e.store();
    (e, reg, store)
}

/// Stages a, b and g, noting their runs in `counter`.
fn registry(counter: &Path) -> Registry {
    let mut r = Registry::new();
    r.register(Box::new(A {
        counter: counter.to_path_buf(),
    }))
    .unwrap();
    r.register(Box::new(B {
        counter: counter.to_path_buf(),
    }))
    .unwrap();
    r.register(Box::new(G {
        counter: counter.to_path_buf(),
    }))
    .unwrap();
    r
}

/// A registry holding only `stage`.
fn registry_of(stage: impl Stage + 'static) -> Registry {
    let mut r = Registry::new();
    r.register(Box::new(stage)).unwrap();
    r
}

/// A registry holding only the resumable stage r, which sets the returned cancel flag itself
/// after `cancel_after` steps (never if `None`).
fn resumable_registry(e: &Env, cancel_after: Option<u32>) -> (Registry, Arc<AtomicBool>) {
    let cancel = Arc::new(AtomicBool::new(false));
    let reg = registry_of(R {
        counter: e.counter.clone(),
        cancel_after,
        cancel: cancel.clone(),
    });
    (reg, cancel)
}

/// Points sweeping b.x over `xs`.
fn points(e: &Env, scale: f64, xs: &[Value]) -> Vec<Point> {
    xs.iter()
        .enumerate()
        .map(|(i, x)| Point {
            index: i,
            id: format!("p{i}"),
            label: format!("x={x}"),
            config: json!({
                "a": {"input": {"$file": e.input}, "scale": scale},
                "b": {"x": x, "fail": false},
                "g": {"title": "t"},
            }),
        })
        .collect()
}

/// A single unlabelled point with this config.
fn one_point(config: Value) -> Vec<Point> {
    vec![Point {
        index: 0,
        id: "p0".into(),
        label: String::new(),
        config,
    }]
}

/// Plans `pts` as pipeline "toy" and decides what to do about each instance (no `--force`).
fn plan_and_explain(reg: &Registry, store: &Store, pts: Vec<Point>) -> (Plan, Vec<Decision>) {
    let p = plan(reg, store, "toy", pts, true).unwrap();
    let d = explain(&p, store, &[]).unwrap();
    (p, d)
}

/// Executes a plan with `jobs` workers, stopping when `cancel` is set.
fn execute_with(
    reg: &Registry,
    store: &Store,
    p: &Plan,
    d: &[Decision],
    jobs: usize,
    cancel: &AtomicBool,
) -> vaepipe_engine::RunReport {
    let opts = RunOptions {
        jobs,
        ..Default::default()
    };
    execute(reg, store, p, d, &opts, &NoEvents, cancel).unwrap()
}

/// Plans, explains (forcing `force`) and executes `pts` with 2 workers, uncancelled.
fn run(
    reg: &Registry,
    store: &Store,
    pts: Vec<Point>,
    force: &[String],
) -> vaepipe_engine::RunReport {
    let p = plan(reg, store, "toy", pts, true).unwrap();
    let d = explain(&p, store, force).unwrap();
    execute_with(reg, store, &p, &d, 2, &AtomicBool::new(false))
}

fn statuses(r: &vaepipe_engine::RunReport) -> Vec<(String, String)> {
    r.instances
        .iter()
        .map(|i| (i.stage.clone(), i.outcome.name().to_string()))
        .collect()
}

#[test]
fn unchanged_rerun_is_cached_and_shared_stages_run_once() {
    let (e, reg, store) = toy();
    let r1 = run(&reg, &store, points(&e, 10.0, &[json!(1), json!(2)]), &[]);
    // a is shared by both points: one instance.
    assert_eq!(
        statuses(&r1),
        vec![
            ("a".into(), "ran".into()),
            ("b".into(), "ran".into()),
            ("b".into(), "ran".into()),
            ("g".into(), "ran".into())
        ]
    );
    assert_eq!(count(&e.counter, "a"), 1);
    let all = fs::read_to_string(r1.instances[3].dir.join("all.txt")).unwrap();
    assert_eq!(all, "x=1 21\nx=2 22");
    let r2 = run(&reg, &store, points(&e, 10.0, &[json!(1), json!(2)]), &[]);
    assert!(
        r2.instances.iter().all(|i| i.outcome == Outcome::Cached),
        "{:?}",
        statuses(&r2)
    );
    assert_eq!(count(&e.counter, "a"), 1);
    assert_eq!(count(&e.counter, "b"), 2);
}

#[test]
fn a_parameter_change_reruns_exactly_the_dependent_stages_and_says_why() {
    let (e, reg, store) = toy();
    run(&reg, &store, points(&e, 10.0, &[json!(1), json!(2)]), &[]);
    // Change b.x at point 1 only.
    let (p, d) = plan_and_explain(&reg, &store, points(&e, 10.0, &[json!(1), json!(3)]));
    let actions: Vec<_> = p
        .instances
        .iter()
        .zip(&d)
        .map(|(i, d)| (i.stage, d.action))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("a", Action::Skip),
            ("b", Action::Skip),
            ("b", Action::Run),
            ("g", Action::Run)
        ]
    );
    assert_eq!(d[2].reason, "parameter `b.x` changed (2 → 3)");
    assert_eq!(d[3].reason, "input `b` changed");
    // Upstream change: a's scale → everything downstream re-runs.
    let (_, d) = plan_and_explain(&reg, &store, points(&e, 5.0, &[json!(1), json!(2)]));
    assert!(d.iter().all(|d| d.action == Action::Run));
    assert_eq!(d[0].reason, "parameter `a.scale` changed (10.0 → 5.0)");
    assert_eq!(d[1].reason, "input `a` changed");
}

#[test]
fn an_input_file_change_is_detected_by_content() {
    let (e, reg, store) = toy();
    run(&reg, &store, points(&e, 1.0, &[json!(1)]), &[]);
    // Rewriting the same content keeps the key.
    fs::write(&e.input, "2").unwrap();
    let (_, d) = plan_and_explain(&reg, &store, points(&e, 1.0, &[json!(1)]));
    assert!(d.iter().all(|d| d.action == Action::Skip));
    fs::write(&e.input, "7").unwrap();
    let (_, d) = plan_and_explain(&reg, &store, points(&e, 1.0, &[json!(1)]));
    assert_eq!(d[0].action, Action::Run);
    assert!(
        d[0].reason.contains("input file")
            && d[0].reason.contains("input.txt")
            && d[0].reason.contains("changed"),
        "{}",
        d[0].reason
    );
}

#[test]
fn force_reruns_the_stage_and_its_dependents() {
    let (e, reg, store) = toy();
    run(&reg, &store, points(&e, 1.0, &[json!(1)]), &[]);
    let r = run(
        &reg,
        &store,
        points(&e, 1.0, &[json!(1)]),
        &["b".to_string()],
    );
    assert_eq!(
        statuses(&r),
        vec![
            ("a".into(), "cached".into()),
            ("b".into(), "ran".into()),
            ("g".into(), "ran".into())
        ]
    );
}

#[test]
fn a_failed_stage_is_never_taken_as_complete_and_other_points_finish() {
    let (e, reg, store) = toy();
    let mut pts = points(&e, 1.0, &[json!(1), json!(2), json!(3)]);
    pts[1].config["b"]["fail"] = json!(true);
    pts[2].config["b"]["panic"] = json!(true);
    let r = run(&reg, &store, pts.clone(), &[]);
    assert_eq!(r.instances[1].outcome, Outcome::Ran);
    match &r.instances[2].outcome {
        Outcome::Failed(msg) => assert!(msg.contains("b was told to fail"), "{msg}"),
        other => panic!("{other:?}"),
    }
    match &r.instances[3].outcome {
        Outcome::Failed(msg) => assert!(msg.contains("panicked on purpose"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // The failed instance wrote half its output but has no committed directory.
    assert!(!r.instances[2].dir.exists());
    assert!(
        fs::read_to_string(&r.instances[2].log)
            .unwrap()
            .contains("FAILED: b was told to fail")
    );
    // The gather stage still ran, with the failures listed.
    assert_eq!(r.instances[4].outcome, Outcome::Ran);
    let all = fs::read_to_string(r.instances[4].dir.join("all.txt")).unwrap();
    assert!(
        all.contains("x=1 3") && all.matches("missing failed").count() == 2,
        "{all}"
    );
    // Next time, the failed instance runs again and says why; the partial gather is not reused.
    let (_, d) = plan_and_explain(&reg, &store, pts);
    assert_eq!(d[2].action, Action::Run);
    assert!(
        d[2].reason.starts_with("failed before: b was told to fail"),
        "{}",
        d[2].reason
    );
    assert_eq!(d[4].action, Action::Run);
}

#[test]
fn a_corrupted_output_is_detected_and_redone() {
    let (e, reg, store) = toy();
    let r = run(&reg, &store, points(&e, 1.0, &[json!(1)]), &[]);
    fs::write(r.instances[1].dir.join("value.txt"), "9").unwrap(); // same size, other content
    // A later run (a new process, a new handle: verification results are per handle).
    let store = e.store();
    let (_, d) = plan_and_explain(&reg, &store, points(&e, 1.0, &[json!(1)]));
    assert_eq!(d[1].action, Action::Run);
    assert!(
        d[1].reason.contains("value.txt does not match its hash"),
        "{}",
        d[1].reason
    );
    let r = run(&reg, &store, points(&e, 1.0, &[json!(1)]), &[]);
    assert_eq!(r.instances[1].outcome, Outcome::Ran);
    assert_eq!(
        fs::read_to_string(r.instances[1].dir.join("value.txt")).unwrap(),
        "3"
    );
}

#[test]
fn an_interrupted_resumable_stage_resumes_and_is_not_complete_meanwhile() {
    let e = env();
    let (reg, cancel) = resumable_registry(&e, Some(4));
    let store = e.store();
    let (p, d) = plan_and_explain(&reg, &store, one_point(json!({"r": {"n": 10}})));
    let r = execute_with(&reg, &store, &p, &d, 1, &cancel);
    assert!(r.interrupted);
    assert_eq!(r.instances[0].outcome, Outcome::Interrupted);
    assert!(
        !r.instances[0].dir.exists(),
        "an interrupted stage must not be committed"
    );
    let d = explain(&p, &store, &[]).unwrap();
    assert_eq!(d[0].reason, "an earlier attempt was interrupted");
    // Second attempt: resumes from step 4.
    let (reg, cancel2) = resumable_registry(&e, None);
    let r = execute_with(&reg, &store, &p, &d, 1, &cancel2);
    assert_eq!(r.instances[0].outcome, Outcome::Ran);
    assert_eq!(count(&e.counter, "r-fresh"), 1);
    assert_eq!(count(&e.counter, "r-resumed"), 1);
    assert_eq!(
        fs::read_to_string(r.instances[0].dir.join("step.txt")).unwrap(),
        "10"
    );
}

#[test]
fn concurrent_runs_on_one_store_compute_each_instance_once() {
    let e = env();
    let store_dir = e.store_dir();
    let mut pts = points(&e, 1.0, &[json!(1), json!(2)]);
    for p in &mut pts {
        p.config["b"]["sleep_ms"] = json!(300);
    }
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let counter = e.counter.clone();
            let pts = pts.clone();
            let store_dir = store_dir.clone();
            std::thread::spawn(move || {
                let reg = registry(&counter);
                let store = Store::open(&store_dir).unwrap();
                let (p, d) = plan_and_explain(&reg, &store, pts);
                execute_with(&reg, &store, &p, &d, 1, &AtomicBool::new(false))
            })
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert!(
            r.instances
                .iter()
                .all(|i| matches!(i.outcome, Outcome::Ran | Outcome::Cached)),
            "{:?}",
            statuses(&r)
        );
    }
    assert_eq!(count(&e.counter, "a"), 1);
    assert_eq!(count(&e.counter, "b"), 2);
    assert_eq!(count(&e.counter, "g"), 1);
    let store = Store::open(&store_dir).unwrap();
    for (stage, key) in store.entries().unwrap() {
        assert_eq!(store.verify(&stage, &key).unwrap(), None, "{stage}/{key}");
    }
}

#[test]
fn a_partial_gather_is_keyed_by_why_inputs_are_missing_and_replays_from_its_manifest() {
    let (e, reg, store) = toy();
    let mut pts = points(&e, 1.0, &[json!(1), json!(2)]);
    pts[1].config["b"]["fail"] = json!(true);
    let first = run(&reg, &store, pts.clone(), &[]);
    let g1 = first.instances.last().unwrap().clone();
    assert_eq!(g1.outcome, Outcome::Ran);
    // Re-rendering the stored entry from its manifest alone gives the same file, with the
    // failure it recorded.
    let (_, dir) = vaepipe_engine::rerun_entry(&reg, &store, &g1.dir).unwrap();
    assert_eq!(
        fs::read(dir.join("all.txt")).unwrap(),
        fs::read(g1.dir.join("all.txt")).unwrap()
    );
    // The same input missing for another reason is another partial result, not a cache hit.
    pts[1].config["b"]["fail"] = json!(false);
    pts[1].config["b"]["panic"] = json!(true);
    let second = run(&reg, &store, pts, &[]);
    let g2 = second.instances.last().unwrap();
    assert_eq!(g2.outcome, Outcome::Ran);
    assert_ne!(g1.key, g2.key);
    assert!(
        fs::read_to_string(g2.dir.join("all.txt"))
            .unwrap()
            .contains("panicked on purpose")
    );
}

#[test]
fn waiting_for_another_process_can_be_cancelled() {
    let (e, reg, store) = toy();
    let (p, d) = plan_and_explain(&reg, &store, points(&e, 1.0, &[json!(1)]));
    // Someone else holds data stage `a`.
    let held = store
        .lock("a", &p.instances[0].key, |_| {}, || false)
        .unwrap()
        .unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let r = execute_with(&reg, &store, &p, &d, 1, &cancel);
    stopper.join().unwrap();
    drop(held);
    assert!(r.interrupted);
    assert_eq!(r.instances[0].outcome, Outcome::Interrupted);
    assert_eq!(
        count(&e.counter, "a"),
        0,
        "nothing was computed while waiting"
    );
}

/// A stage that cannot resume: stops at once when asked.
struct Quits {
    cancel: Arc<AtomicBool>,
}
impl Stage for Quits {
    toy_stage!("q", inputs: []);
    fn run(&self, ctx: &Context) -> Result<(), StageError> {
        fs::write(ctx.out.join("half.txt"), "x").map_err(anyhow::Error::from)?;
        self.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        if ctx.cancelled() {
            return Err(StageError::Interrupted);
        }
        Ok(())
    }
}

#[test]
fn an_interrupted_stage_that_cannot_resume_leaves_no_work_behind() {
    let e = env();
    let cancel = Arc::new(AtomicBool::new(false));
    let reg = registry_of(Quits {
        cancel: cancel.clone(),
    });
    let store = e.store();
    let (p, d) = plan_and_explain(&reg, &store, one_point(json!({"q": {}})));
    let r = execute_with(&reg, &store, &p, &d, 1, &cancel);
    assert_eq!(r.instances[0].outcome, Outcome::Interrupted);
    assert!(!store.work_dir("q", &p.instances[0].key).exists());
    assert_eq!(explain(&p, &store, &[]).unwrap()[0].reason, "no output yet");
}
