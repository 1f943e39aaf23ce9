//! `vaepipe submit --slurm` and the queue-aware `vaepipe status` on a real SLURM: the project's
//! local cluster (tests/slurm/start.sh: one node, or two in CI; these tests do not care which;
//! idempotent, shared by every test of this file; each
//! test has its own spec, store and job name). Without a SLURM client (`sinfo`) the tests that
//! need a cluster are ignored (crates/vaepipe/build.rs; counted as ignored in the summary); when
//! SLURM is installed but cannot be started they print why on stderr and pass; under CI=true
//! they always run and fail without SLURM. The dry-run tests need no SLURM and always run.
//!
//! What they prove:
//! 1. a 4-point sweep runs as shared job → array → report job: every point done, the full sweep
//!    report rendered, every store entry verifies, and the local executor (`--jobs 2`) gives
//!    bit-identical models;
//! 2. a training task stopped with SIGUSR1 checkpoints, requeues itself, resumes and ends with
//!    the weights of an uninterrupted run (bit for bit) and a history without repeated epochs;
//! 3. a diverging point is reported failed (with its logs) by `vaepipe status`, the others finish;
//! 4. hostile names (`$(…)`, backquotes, quotes, spaces, newlines) are inert and survive the
//!    round trip: scripts parse, run outside SLURM, and a real submission completes;
//! 5. in a sweep over `eval.k`, the first job computes what the points share (data, train,
//!    prior) and the array tasks find it cached; tasks run their point by id, also after the
//!    spec was reordered (and stop with 2 when their point left the spec);
//! 6. when the shared job fails, SLURM cancels the array and the report job says why nothing
//!    was rendered; `status` says whether a stopped point resumes from a checkpoint or restarts.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{bin, describe, json_of, repo, subset, the_entry, verify_store};
use serde_json::Value;

// ---------------------------------------------------------------- the shared SLURM

static SLURM: OnceLock<Result<(), String>> = OnceLock::new();

/// Starts (or finds) the local SLURM once per test process. `false`: not available here (the
/// caller skips); under CI=true that is a failure instead.
fn slurm_available(test: &str) -> bool {
    let r = SLURM.get_or_init(|| {
        let script = repo().join("tests/slurm/start.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Err(format!(
                "{} exited with {}:\n{}",
                script.display(),
                out.status,
                tail.join("\n")
            ))
        }
    });
    match r {
        Ok(()) => true,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("CI=true: the SLURM tests must run, but SLURM could not be started: {e}")
        }
        Err(e) => {
            // To the process's stderr, not the captured test output, so that it is seen.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: no local SLURM ({e})\n  To run these tests: as root, `LOCAL_SLURM_INSTALL=1 tests/slurm/start.sh` \
                 (stop with tests/slurm/stop.sh). Under CI=true they fail instead of skipping."
            );
            false
        }
    }
}

// ---------------------------------------------------------------- helpers

/// A small, fast pipeline on the embedded subset (common::write_spec at this file's seed).
fn write_spec(
    dir: &Path,
    file: &str,
    name: &str,
    rows: usize,
    model: &str,
    train: &str,
    sweep: &str,
) -> PathBuf {
    common::write_spec(dir, file, name, 3, rows, model, train, sweep)
}

/// The quickest pipeline: 300 rows, the tiny model, one ELBO epoch; `sweep` appended verbatim.
fn quick_spec(dir: &Path, file: &str, name: &str, sweep: &str) -> PathBuf {
    write_spec(dir, file, name, 300, TINY_MODEL, ONE_ELBO_EPOCH, sweep)
}

/// `vaepipe --color never --store <store>` in `cwd`, not yet started.
fn vaepipe_command(cwd: &Path, store: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(cwd)
        .arg("--color")
        .arg("never")
        .arg("--store")
        .arg(store);
    c
}

/// Runs `vaepipe --color never --store <store> <args>` in `cwd` to the end.
fn vaepipe(cwd: &Path, store: &Path, args: &[&str]) -> Output {
    vaepipe_command(cwd, store)
        .args(args)
        .output()
        .expect("run vaepipe")
}

/// A submission to the real SLURM; its jobs are cancelled if the test panics meanwhile.
struct Submitted {
    /// The record `submit --json` printed.
    record: Value,
    job_name: String,
    /// The submission's directory (scripts, SLURM logs).
    dir: PathBuf,
    _guard: CancelOnDrop,
}

impl Submitted {
    /// Waits until every job of the submission has finished (at most 300 s).
    fn wait(&self) {
        wait_until_finished(&self.job_name, &self.dir, Duration::from_secs(300));
    }
}

/// Runs `vaepipe submit <spec> --slurm --json <flags> <extra>`, asserts that it succeeded and
/// returns what it printed.
fn submit_json(cwd: &Path, store: &Path, spec: &Path, flags: &[&str], extra: &[&str]) -> Value {
    let mut args = vec![
        "submit",
        spec.to_str().expect("UTF-8 spec path"),
        "--slurm",
        "--json",
    ];
    args.extend_from_slice(flags);
    args.extend_from_slice(extra);
    let o = vaepipe(cwd, store, &args);
    assert!(o.status.success(), "submit failed:\n{}", describe(&o));
    json_of(&o)
}

/// Submits to SLURM (15 minutes a job, 30 s grace) and returns the submission.
fn submit(cwd: &Path, store: &Path, spec: &Path, extra: &[&str]) -> Submitted {
    let flags = ["--time", "00:15:00", "--grace", "30"];
    let record = submit_json(cwd, store, spec, &flags, extra);
    let job_name = record["job_name"].as_str().unwrap().to_string();
    Submitted {
        _guard: CancelOnDrop(job_name.clone()),
        dir: PathBuf::from(record["dir"].as_str().unwrap()),
        job_name,
        record,
    }
}

/// Writes a submission without submitting it (`submit --slurm --dry-run --json`) and returns
/// what it printed: the record under `submission`, and the `scripts`.
fn dry_run(cwd: &Path, store: &Path, spec: &Path, extra: &[&str]) -> Value {
    submit_json(cwd, store, spec, &["--dry-run"], extra)
}

/// Runs one of a submission's batch scripts with bash outside SLURM, as job 0 (and as array
/// task `task`, if given), in the submission's directory.
fn run_script(dir: &Path, script: &str, task: Option<&str>) -> Output {
    let mut c = Command::new("bash");
    c.arg(dir.join(script))
        .current_dir(dir)
        .env("SLURM_JOB_ID", "0");
    if let Some(n) = task {
        c.env("SLURM_ARRAY_TASK_ID", n);
    }
    c.output().unwrap()
}

/// The key of the train instance that `vaepipe plan` computes for `spec`.
fn train_key(cwd: &Path, store: &Path, spec: &Path) -> String {
    let plan = json_of(&vaepipe(
        cwd,
        store,
        &["plan", spec.to_str().unwrap(), "--json"],
    ));
    plan["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["stage"] == "train")
        .unwrap_or_else(|| panic!("no train instance in {plan:#}"))["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The text of the file whose path `path` (a JSON string, e.g. a log `status` names) holds.
fn read_named(path: &Value) -> String {
    let path = path
        .as_str()
        .unwrap_or_else(|| panic!("not a path: {path}"));
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The point with id `id` in `status --json` output.
fn point_by_id<'a>(st: &'a Value, id: &str) -> &'a Value {
    st["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no point {id} in {st:#}"))
}

fn job_id(record: &Value, kind: &str) -> String {
    record["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|j| j["kind"] == kind))
        .and_then(|j| j["id"].as_str())
        .unwrap_or_else(|| panic!("no {kind} job in {record:#}"))
        .to_string()
}

/// Cancels a submission's jobs when a test ends early (panics), so nothing is left queued.
struct CancelOnDrop(String);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("scancel")
                .arg(format!("--name={}", self.0))
                .output();
        }
    }
}

/// Waits until every job named `job_name` has reached a final state (`squeue -t all`, so a
/// task between its first run and its requeue never looks finished); panics with the
/// submission's logs after `limit`.
fn wait_until_finished(job_name: &str, dir: &Path, limit: Duration) {
    use vaepipe_slurm::JobState::{Cancelled, Completed, Failed, Timeout};
    let t0 = Instant::now();
    loop {
        let entries = vaepipe_slurm::query(Path::new("squeue"), job_name).expect("squeue");
        if !entries.is_empty()
            && entries
                .iter()
                .all(|e| matches!(e.state, Completed | Failed | Cancelled | Timeout))
        {
            return;
        }
        if t0.elapsed() > limit {
            let states: Vec<String> = entries.iter().map(vaepipe_slurm::state::describe).collect();
            panic!(
                "jobs {job_name} not finished after {limit:?}: {states:?}\n{}",
                logs_of(dir)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The SLURM logs of a submission, for failure messages.
fn logs_of(dir: &Path) -> String {
    let mut out = String::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("logs"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        out.push_str(&format!(
            "----- {}\n{}\n",
            f.display(),
            std::fs::read_to_string(&f).unwrap_or_default()
        ));
    }
    out
}

fn status(cwd: &Path, store: &Path, spec: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["status", spec.to_str().expect("UTF-8 spec path"), "--json"];
    args.extend_from_slice(extra);
    let o = vaepipe(cwd, store, &args);
    assert!(o.status.success(), "status failed:\n{}", describe(&o));
    json_of(&o)
}

/// Every `.parquet` file under `dir`, recursively.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

const TINY_MODEL: &str = "latent = 4\nencoder = [32]\ndecoder = [32]";
/// `[train]` settings: one quick ELBO epoch.
const ONE_ELBO_EPOCH: &str = "objective = \"elbo\"\nk = 1\nepochs = 1";
/// `[train]` settings: two IWAE epochs with k = 2.
const TWO_IWAE_EPOCHS: &str = "objective = \"iwae\"\nk = 2\nepochs = 2";
/// A two-point sweep over `eval.k`, and the same points in the other order.
const EVAL_K_SWEEP: &str = "[sweep]\n\"eval.k\" = [10, 20]";
const EVAL_K_REORDERED: &str = "[sweep]\n\"eval.k\" = [20, 10]";

// ---------------------------------------------------------------- 1. a sweep

#[test]
#[cfg_attr(not(vaepipe_slurm), ignore = "needs SLURM (see build.rs)")]
fn sweep_runs_as_an_array_and_the_report_job_renders_it() {
    if !slurm_available("sweep_runs_as_an_array_and_the_report_job_renders_it") {
        return;
    }
    let t0 = Instant::now();
    let tmp = scratch("vaepipe-slurm-sweep");
    let cwd = tmp.path();
    let spec = write_spec(
        cwd,
        "sweep.toml",
        "slurm sweep",
        1000,
        TINY_MODEL,
        TWO_IWAE_EPOCHS,
        "[sweep]\n\"train.objective\" = [\"elbo\", \"iwae\"]\n\"train.k\" = [1, 3]",
    );
    let store = cwd.join("store");
    let sub = submit(cwd, &store, &spec, &["--max-parallel", "2"]);
    let (record, dir) = (&sub.record, &sub.dir);
    assert_eq!(record["array_size"], 4);
    assert_eq!(
        record["jobs"].as_array().unwrap().len(),
        3,
        "shared, array and report jobs: {record:#}"
    );
    let points_script = std::fs::read_to_string(dir.join("points.sbatch")).unwrap();
    assert!(
        points_script.contains("#SBATCH --array=0-3%2\n"),
        "{points_script}"
    );

    // Meanwhile, the same sweep with the local executor on another store.
    let local_store = cwd.join("local-store");
    let local = vaepipe_command(cwd, &local_store)
        .args(["run", spec.to_str().unwrap(), "--jobs", "2", "--reports"])
        .arg(cwd.join("local-reports"))
        .output()
        .expect("local run");

    // Queue-aware status while (or after) it runs: one point row per array task.
    let early = status(cwd, &store, &spec, &[]);
    assert_eq!(
        early["points"].as_array().map(Vec::len),
        Some(4),
        "{early:#}"
    );
    assert!(
        early["instances"].is_array() && early["pipeline"] == "slurm sweep",
        "existing keys kept: {early:#}"
    );

    sub.wait();
    assert!(
        local.status.success(),
        "local --jobs 2 run failed:\n{}",
        describe(&local)
    );

    let st = status(cwd, &store, &spec, &[]);
    for p in st["points"].as_array().unwrap() {
        assert_eq!(
            p["state"],
            "done",
            "point not done: {p:#}\n{}",
            logs_of(dir)
        );
        assert_eq!(p["queue"]["state"], "COMPLETED", "{p:#}");
        let log = read_named(&p["slurm_log"]);
        assert!(log.contains("== vaepipe exited with code 0"), "{log}");
    }
    for i in st["instances"].as_array().unwrap() {
        assert_eq!(
            i["state"], "done",
            "instance not done (a full report has every input): {i:#}"
        );
    }
    assert_eq!(
        st["slurm"]["shared_job"]["queue"]["state"], "COMPLETED",
        "{:#}",
        st["slurm"]
    );
    assert_eq!(
        st["slurm"]["data_job"], st["slurm"]["shared_job"],
        "the old key stays"
    );
    assert_eq!(
        st["slurm"]["report_job"]["queue"]["state"], "COMPLETED",
        "{:#}",
        st["slurm"]
    );

    // The report job published the sweep report where `vaepipe run` would (submitter's cwd).
    let report = cwd.join("reports/slurm_sweep");
    assert!(
        report.join("index.html").is_file() && report.join("index.md").is_file(),
        "no report in {}",
        report.display()
    );

    // The store is sound, and the cluster computed exactly what the local executor did.
    let entries = verify_store(&store);
    let count = |stage: &str| entries.iter().filter(|(s, _)| s == stage).count();
    assert_eq!(
        (count("data"), count("train"), count("report")),
        (1, 4, 1),
        "{entries:?}"
    );
    let local_entries = verify_store(&local_store);
    for (stage, key) in entries.iter().filter(|(s, _)| s == "train") {
        assert!(
            local_entries.contains(&(stage.clone(), key.clone())),
            "the local run has no {stage}/{key}"
        );
        let model = |store: &Path| {
            std::fs::read(
                store
                    .join("store/train")
                    .join(key)
                    .join("model.safetensors"),
            )
            .unwrap()
        };
        assert!(
            model(&store) == model(&local_store),
            "train/{key}: SLURM and local weights differ"
        );
    }
    // So are the tables of the data and eval stages (Parquet: no timings in them), while JSON
    // summaries, manifests and history.parquet carry timings and hosts (docs/slurm.md).
    let mut tables = 0;
    for (stage, key) in entries.iter().filter(|(s, _)| s == "data" || s == "eval") {
        let ours = store.join("store").join(stage).join(key);
        for f in parquet_files(&ours) {
            let rel = f.strip_prefix(&ours).unwrap();
            let theirs = local_store.join("store").join(stage).join(key).join(rel);
            assert!(
                std::fs::read(&f).unwrap() == std::fs::read(&theirs).unwrap(),
                "{stage}/{key}/{}: SLURM and local tables differ",
                rel.display()
            );
            tables += 1;
        }
    }
    assert!(tables >= 4 * 4, "only {tables} tables compared");
    eprintln!("sweep on SLURM: {:.1} s", t0.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------- 2. preemption

#[test]
#[cfg_attr(not(vaepipe_slurm), ignore = "needs SLURM (see build.rs)")]
fn a_preempted_task_checkpoints_requeues_and_resumes_bit_for_bit() {
    if !slurm_available("a_preempted_task_checkpoints_requeues_and_resumes_bit_for_bit") {
        return;
    }
    let t0 = Instant::now();
    let tmp = scratch("vaepipe-slurm-preempt");
    let cwd = tmp.path();
    // Long enough that the signal lands mid-training on any machine: a fast CI runner did
    // all of 3 000 rows x 8 epochs at k = 5 (1.2 s) before `scancel` arrived, so the
    // signal hit the prior stage instead. 9 800 rows at k = 20 is ~10x the work per epoch.
    let epochs = 8;
    let spec = write_spec(
        cwd,
        "long.toml",
        "slurm preempt",
        10000,
        "latent = 5\nencoder = [100]\ndecoder = [100]",
        &format!("objective = \"iwae\"\nk = 20\nepochs = {epochs}"),
        "",
    );
    let store = cwd.join("store");
    let sub = submit(cwd, &store, &spec, &[]);
    let dir = &sub.dir;
    let task = format!("{}_0", job_id(&sub.record, "points"));

    // The uninterrupted reference, computed locally meanwhile.
    let reference = cwd.join("reference");
    let local = vaepipe(
        cwd,
        &reference,
        &["run", spec.to_str().unwrap(), "--stage", "train"],
    );
    assert!(
        local.status.success(),
        "reference run failed:\n{}",
        describe(&local)
    );

    // Stop the task once its first epoch is logged: training is under way, 7 epochs to go.
    let key = train_key(cwd, &store, &spec);
    let train_log = store.join("logs/train").join(format!("{key}.log"));
    let t_wait = Instant::now();
    while !std::fs::read_to_string(&train_log)
        .is_ok_and(|l| l.contains(&format!("epoch 1/{epochs}:")))
    {
        assert!(
            t_wait.elapsed() < Duration::from_secs(180),
            "training never logged epoch 1:\n{}",
            logs_of(dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = Command::new("scancel")
        .args(["--signal=USR1", "--batch", &task])
        .output()
        .unwrap();
    assert!(o.status.success(), "scancel: {}", describe(&o));

    sub.wait();
    let st = status(cwd, &store, &spec, &[]);
    let p = &st["points"][0];
    assert_eq!(p["state"], "done", "{p:#}\n{}", logs_of(dir));
    assert_eq!(
        p["queue"]["restarts"], 1,
        "the task was not requeued exactly once: {p:#}"
    );
    let log = read_named(&p["slurm_log"]);
    assert!(
        log.contains("exited with code 3 after SIGUSR1") && log.contains("restart 1"),
        "{log}"
    );
    assert!(
        log.contains("resuming from the checkpoint"),
        "the second run did not resume:\n{log}"
    );

    let trained = the_entry(&store, "train");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(trained.join("train.json")).unwrap()).unwrap();
    assert_eq!(summary["resumed"], 1, "{summary:#}");
    let history = vaepipe_data::read_table(&trained.join("history.parquet")).unwrap();
    let seen: Vec<i64> = history.i64("epoch").unwrap().to_vec();
    assert_eq!(
        seen,
        (1..=epochs as i64).collect::<Vec<_>>(),
        "epochs repeated or missing"
    );
    let ours = std::fs::read(trained.join("model.safetensors")).unwrap();
    let theirs = std::fs::read(the_entry(&reference, "train").join("model.safetensors")).unwrap();
    assert!(
        ours == theirs,
        "resumed weights differ from the uninterrupted run's"
    );
    let reference_history =
        vaepipe_data::read_table(&the_entry(&reference, "train").join("history.parquet")).unwrap();
    // Epochs finished before the stop travel through the checkpoint's JSON, which serde_json
    // (without its `float_roundtrip` feature) may read back 1 ulp off; the weights are exact.
    let (ours, theirs) = (
        history.f64("validation_bound").unwrap(),
        reference_history.f64("validation_bound").unwrap(),
    );
    for (e, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(
            (a - b).abs() <= 4.0 * f64::EPSILON * b.abs(),
            "epoch {}: validation bound {a} vs {b} uninterrupted",
            e + 1
        );
    }
    verify_store(&store);
    eprintln!("preemption on SLURM: {:.1} s", t0.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------- 3. a failing point

#[test]
#[cfg_attr(not(vaepipe_slurm), ignore = "needs SLURM (see build.rs)")]
fn a_failing_point_is_reported_with_its_logs_and_the_others_finish() {
    if !slurm_available("a_failing_point_is_reported_with_its_logs_and_the_others_finish") {
        return;
    }
    let t0 = Instant::now();
    let tmp = scratch("vaepipe-slurm-failure");
    let cwd = tmp.path();
    // lr = 1e6 makes the ELBO NaN within a few steps: the train stage fails ("diverged").
    let spec = write_spec(
        cwd,
        "fail.toml",
        "slurm failure",
        800,
        TINY_MODEL,
        ONE_ELBO_EPOCH,
        "[sweep]\n\"train.lr\" = [0.001, 1e6, 0.002]",
    );
    let store = cwd.join("store");
    let sub = submit(cwd, &store, &spec, &[]);
    let dir = &sub.dir;
    sub.wait();

    let st = status(cwd, &store, &spec, &[]);
    let points = st["points"].as_array().unwrap();
    for i in [0, 2] {
        assert_eq!(
            points[i]["state"],
            "done",
            "{:#}\n{}",
            points[i],
            logs_of(dir)
        );
    }
    let bad = &points[1];
    assert_eq!(bad["state"], "failed", "{bad:#}");
    assert_eq!(bad["queue"]["state"], "FAILED", "{bad:#}");
    assert!(
        bad["detail"].as_str().unwrap().contains("diverged"),
        "{bad:#}"
    );
    let stage_log = read_named(&bad["log"]);
    assert!(stage_log.contains("diverged"), "{stage_log}");
    let task_log = read_named(&bad["slurm_log"]);
    assert!(
        task_log.contains("== vaepipe exited with code 1"),
        "{task_log}"
    );

    // People see the same: the failed point, the reason and both logs.
    let o = vaepipe(cwd, &store, &["status", spec.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("1 ") && l.contains("failed"))
        .unwrap_or_else(|| panic!("no failed row for point 1:\n{text}"));
    assert!(
        line.contains(bad["log"].as_str().unwrap())
            && line.contains(bad["slurm_log"].as_str().unwrap()),
        "{line}"
    );

    // The report job ran anyway (afterany) and rendered what exists.
    assert_eq!(
        st["slurm"]["report_job"]["queue"]["state"],
        "COMPLETED",
        "{:#}\n{}",
        st["slurm"],
        logs_of(dir)
    );
    assert!(cwd.join("reports/slurm_failure/index.html").is_file());
    verify_store(&store);
    eprintln!("failure on SLURM: {:.1} s", t0.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------- 4. hostile names

const CANARY: &str = "/tmp/vaepipe-slurm-pwned";

fn hostile(tag: &str) -> String {
    format!("{tag} $(touch {CANARY}) `touch {CANARY}` 'single' \"double\" ; touch {CANARY}")
}

#[test]
fn hostile_names_and_paths_are_inert_in_dry_runs_and_survive_a_shell_round_trip() {
    // No SLURM needed: a dry run writes the scripts; we parse them and run one outside SLURM.
    let tmp = scratch("vaepipe-slurm-inject");
    let cwd = tmp.path();
    let _ = std::fs::remove_file(CANARY);
    let name = hostile("dry");
    let spec = quick_spec(cwd, "evil.toml", &name, EVAL_K_SWEEP);
    let store = cwd.join(format!("st ore {}\nsecond line\t'", hostile("path")));
    let description = format!("pipeline.description={}\nnewline", hostile("set"));
    let out = dry_run(cwd, &store, &spec, &["--set", &description]);
    let record = &out["submission"];
    // Round trips through the record: names and paths come back unchanged.
    assert_eq!(record["pipeline"], name.as_str());
    assert_eq!(
        PathBuf::from(record["store"].as_str().unwrap()),
        store.canonicalize().unwrap()
    );
    assert_eq!(record["overrides"][0], description.as_str());
    let dir = PathBuf::from(record["dir"].as_str().unwrap());
    for s in out["scripts"].as_array().unwrap() {
        let text = s["text"].as_str().unwrap();
        let parsed = Command::new("bash")
            .arg("-n")
            .arg(s["path"].as_str().unwrap())
            .output()
            .unwrap();
        assert!(
            parsed.status.success(),
            "bash -n: {}\n{text}",
            describe(&parsed)
        );
        for l in text.lines().filter_map(|l| l.strip_prefix("#SBATCH ")) {
            assert!(
                !l.contains([' ', '$', '`', '\'', '"']),
                "a user value reached an #SBATCH line: {l}"
            );
        }
    }
    // Run the shared job's script outside SLURM: vaepipe must receive the hostile store path
    // and override verbatim (it computes the shared stages into that store), and nothing may
    // execute.
    let run = run_script(&dir, "shared.sbatch", None);
    assert!(run.status.success(), "shared script:\n{}", describe(&run));
    let entries = verify_store(&store);
    for stage in ["data", "train", "prior"] {
        assert_eq!(
            entries.iter().filter(|(s, _)| s == stage).count(),
            1,
            "no {stage} entry in the hostile store: {entries:?}"
        );
    }
    assert!(!Path::new(CANARY).exists(), "a quoted value was executed");
}

#[test]
#[cfg_attr(not(vaepipe_slurm), ignore = "needs SLURM (see build.rs)")]
fn a_real_submission_with_a_hostile_name_completes() {
    if !slurm_available("a_real_submission_with_a_hostile_name_completes") {
        return;
    }
    let t0 = Instant::now();
    let tmp = scratch("vaepipe-slurm-inject-real");
    let cwd = tmp.path();
    let _ = std::fs::remove_file(CANARY);
    let name = hostile("real");
    let spec = quick_spec(cwd, "evil.toml", &name, "");
    let store = cwd.join(format!("st ore {}\nline two\t", hostile("path")));
    let description = format!("pipeline.description={}\n'", hostile("set"));
    let sub = submit(cwd, &store, &spec, &["--set", &description]);
    sub.wait();
    let st = status(cwd, &store, &spec, &["--set", &description]);
    assert_eq!(st["pipeline"], name.as_str());
    let task_log = read_named(&st["points"][0]["slurm_log"]);
    assert!(
        task_log.contains("== vaepipe exited with code 0"),
        "{task_log}"
    );
    assert_eq!(
        st["points"][0]["state"],
        "done",
        "{:#}\n{}",
        st["points"],
        logs_of(&sub.dir)
    );
    assert!(!Path::new(CANARY).exists(), "a quoted value was executed");
    verify_store(&store);
    eprintln!(
        "hostile submission on SLURM: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------- 5. shared stages, points by id

/// `(stage, status)` of every row of the summary tables `vaepipe run` printed into a log.
fn outcomes(log: &str) -> Vec<(String, String)> {
    const STAGES: [&str; 5] = ["data", "train", "prior", "eval", "report"];
    const STATUSES: [&str; 5] = ["ran", "cached", "failed", "skipped", "interrupted"];
    log.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (stage, status) = (w.next()?, w.next()?);
            (STAGES.contains(&stage) && STATUSES.contains(&status))
                .then(|| (stage.to_string(), status.to_string()))
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The string `key` of every object in the JSON array `list`, in order.
fn strings_of<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list:#}"))
        .iter()
        .map(|o| {
            o[key]
                .as_str()
                .unwrap_or_else(|| panic!("no string `{key}` in {o:#}"))
        })
        .collect()
}

/// The point ids of a submission record, in task order.
fn task_ids(record: &Value) -> Vec<String> {
    record["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn array_tasks_run_their_point_by_id_whatever_happens_to_the_spec() {
    // No SLURM needed: the points script of a dry run, run as array task 0 outside SLURM.
    let tmp = scratch("vaepipe-slurm-ids");
    let cwd = tmp.path();
    let write = |sweep: &str| quick_spec(cwd, "ids.toml", "slurm ids", sweep);
    let spec = write(EVAL_K_SWEEP);
    let store = cwd.join("store");
    let record = dry_run(cwd, &store, &spec, &[])["submission"].clone();
    let dir = PathBuf::from(record["dir"].as_str().unwrap());
    let ids = task_ids(&record);
    assert_eq!(record["points"][0]["label"], "k=10", "{record:#}");
    let points_script = std::fs::read_to_string(dir.join("points.sbatch")).unwrap();
    assert!(
        points_script.contains(&format!("\nids=({} {})\n", ids[0], ids[1])),
        "{points_script}"
    );
    let task = |n: &str| run_script(&dir, "points.sbatch", Some(n));

    // Reordered after submission: task 0 still runs the point that was first (k=10).
    write(EVAL_K_REORDERED);
    let run = task("0");
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "task 0:\n{}", describe(&run));
    assert!(
        out.contains(&format!("== point {} (task 0)", ids[0])),
        "{out}"
    );
    let st = status(cwd, &store, &spec, &[]);
    let eval_state = |label: &str| {
        st["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["stage"] == "eval" && i["points"][0]["label"] == label)
            .unwrap_or_else(|| panic!("no eval instance for {label}: {st:#}"))["state"]
            .clone()
    };
    assert_eq!(eval_state("k=10"), "done", "task 0 must run k=10");
    assert_eq!(eval_state("k=20"), "missing", "task 0 ran k=20 (by index)");

    // The point left the spec: the task refuses (exit 2) instead of running another point.
    write("[sweep]\n\"eval.k\" = [20, 50]");
    let run = task("0");
    assert_eq!(run.status.code(), Some(2), "{}", describe(&run));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains(&format!("no sweep point `{}`", ids[0])),
        "{err}"
    );
    // A task id outside the submission's array stops with 2 before vaepipe runs.
    let run = task("2");
    assert_eq!(run.status.code(), Some(2), "{}", describe(&run));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("this submission has 2 points"),
        "{}",
        describe(&run)
    );
}

#[test]
#[cfg_attr(not(vaepipe_slurm), ignore = "needs SLURM (see build.rs)")]
fn shared_stages_run_once_in_the_first_job_and_the_array_finds_them_cached() {
    if !slurm_available("shared_stages_run_once_in_the_first_job_and_the_array_finds_them_cached") {
        return;
    }
    let t0 = Instant::now();
    let tmp = scratch("vaepipe-slurm-shared");
    let cwd = tmp.path();
    let write = |sweep: &str| {
        write_spec(
            cwd,
            "shared.toml",
            "slurm shared",
            1000,
            TINY_MODEL,
            TWO_IWAE_EPOCHS,
            sweep,
        )
    };
    let spec = write(EVAL_K_SWEEP);
    let store = cwd.join("store");
    let plan = json_of(&vaepipe(
        cwd,
        &store,
        &["plan", spec.to_str().unwrap(), "--shared", "--json"],
    ));
    let shared = strings_of(&plan["instances"], "stage");
    assert_eq!(shared, ["data", "train", "prior"], "{plan:#}");

    let sub = submit(cwd, &store, &spec, &[]);
    // Reorder the sweep at once: the array waits for the shared job (which trains), so every
    // task starts with the reordered spec, and must still run the point it was given.
    write(EVAL_K_REORDERED);
    let (record, dir) = (&sub.record, &sub.dir);
    let kinds = strings_of(&record["jobs"], "kind");
    assert_eq!(kinds, ["shared", "points", "report"], "{record:#}");
    let ids = task_ids(record);
    sub.wait();

    // The first job computed everything the two points share, once.
    let shared_log =
        std::fs::read_to_string(dir.join(format!("logs/shared-{}.out", job_id(record, "shared"))))
            .unwrap();
    assert_eq!(
        outcomes(&shared_log),
        pairs(&[("data", "ran"), ("train", "ran"), ("prior", "ran")]),
        "{shared_log}"
    );
    assert!(
        shared_log.contains("== vaepipe exited with code 0"),
        "{shared_log}"
    );
    let shared_script = std::fs::read_to_string(dir.join("shared.sbatch")).unwrap();
    assert!(shared_script.contains(" --shared &\n"), "{shared_script}");
    // Each task found it in the store and computed only its own evaluation, of its own point.
    let st = status(cwd, &store, &spec, &[]);
    for (task, (id, label)) in ids.iter().zip(["k=10", "k=20"]).enumerate() {
        let p = point_by_id(&st, id);
        assert_eq!(p["label"], label, "{p:#}");
        assert_eq!(p["task"], task, "{p:#}");
        assert_eq!(p["index"], 1 - task, "the spec was reordered: {p:#}");
        assert_eq!(p["state"], "done", "{p:#}\n{}", logs_of(dir));
        assert_eq!(
            p["queue"]["job"],
            format!("{}_{task}", job_id(record, "points"))
        );
        let log = read_named(&p["slurm_log"]);
        assert!(
            log.contains(&format!("== point {id} (task {task})")),
            "{log}"
        );
        assert_eq!(
            outcomes(&log),
            pairs(&[
                ("data", "cached"),
                ("train", "cached"),
                ("prior", "cached"),
                ("eval", "ran")
            ]),
            "task {task}:\n{log}"
        );
    }
    for i in st["instances"].as_array().unwrap() {
        assert_eq!(i["state"], "done", "{i:#}\n{}", logs_of(dir));
    }
    let entries = verify_store(&store);
    let count = |stage: &str| entries.iter().filter(|(s, _)| s == stage).count();
    assert_eq!(
        ["data", "train", "prior", "eval", "report"].map(count),
        [1, 1, 1, 2, 1],
        "{entries:?}"
    );
    eprintln!(
        "shared stages on SLURM: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------- 6. failures and stops

#[test]
#[cfg_attr(not(vaepipe_slurm), ignore = "needs SLURM (see build.rs)")]
fn when_the_shared_job_fails_the_array_is_cancelled_and_the_report_job_says_why() {
    if !slurm_available(
        "when_the_shared_job_fails_the_array_is_cancelled_and_the_report_job_says_why",
    ) {
        return;
    }
    let t0 = Instant::now();
    let tmp = scratch("vaepipe-slurm-shared-fails");
    let cwd = tmp.path();
    let spec = quick_spec(cwd, "broken.toml", "slurm broken", EVAL_K_SWEEP);
    // The spec is valid (the files exist), but the images are not IDX: the data stage fails.
    let data = cwd.join("data");
    std::fs::create_dir(&data).unwrap();
    for f in std::fs::read_dir(subset()).unwrap().flatten() {
        std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
    }
    std::fs::write(data.join("train-images-idx3-ubyte.gz"), b"not an IDX file").unwrap();
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace(&subset().display().to_string(), &data.display().to_string());
    std::fs::write(&spec, text).unwrap();

    let store = cwd.join("store");
    let sub = submit(cwd, &store, &spec, &[]);
    sub.wait();

    let st = status(cwd, &store, &spec, &[]);
    let slurm = &st["slurm"];
    assert_eq!(
        slurm["shared_job"]["queue"]["state"],
        "FAILED",
        "{slurm:#}\n{}",
        logs_of(&sub.dir)
    );
    for p in st["points"].as_array().unwrap() {
        // SLURM cancelled the tasks (the dependency can never be met); the store knows why.
        assert_eq!(p["queue"]["state"], "CANCELLED", "{p:#}");
        assert_eq!(p["state"], "failed", "{p:#}");
        assert!(p["detail"].as_str().unwrap().contains("data: "), "{p:#}");
        assert!(
            !Path::new(p["slurm_log"].as_str().unwrap()).exists(),
            "a task ran: {p:#}"
        );
    }
    // The report job still ran (afterany), found nothing to render and said why.
    assert_eq!(slurm["report_job"]["queue"]["state"], "FAILED", "{slurm:#}");
    let report_log = read_named(&slurm["report_job"]["log"]);
    assert!(
        report_log.contains("== vaepipe exited with code 1")
            && report_log.contains("== no report: ")
            && report_log.contains("logs/shared-<job>.out"),
        "{report_log}"
    );
    assert!(!cwd.join("reports/slurm_broken").exists());
    eprintln!(
        "failed shared job on SLURM: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn status_says_whether_a_stopped_point_resumes_or_restarts() {
    // No SLURM needed: a dry-run record turned into a "submitted" one, and a fake squeue that
    // reports task 0 cancelled and task 1 pending.
    use std::os::unix::fs::PermissionsExt;
    let tmp = scratch("vaepipe-slurm-stopped");
    let cwd = tmp.path();
    let write = |sweep: &str| quick_spec(cwd, "stopped.toml", "slurm stopped", sweep);
    let spec = write(EVAL_K_SWEEP);
    let store = cwd.join("store");
    let mut record = dry_run(cwd, &store, &spec, &[])["submission"].clone();
    let dir = PathBuf::from(record["dir"].as_str().unwrap());
    let ids = task_ids(&record);
    let job_name = record["job_name"].as_str().unwrap().to_string();
    record["dry_run"] = Value::Bool(false);
    for (j, id) in record["jobs"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(["899", "900", "901"])
    {
        j["id"] = Value::from(id);
    }
    std::fs::write(
        dir.join("submission.json"),
        serde_json::to_vec_pretty(&record).unwrap(),
    )
    .unwrap();
    let bin_dir = cwd.join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let squeue = bin_dir.join("squeue");
    std::fs::write(
        &squeue,
        format!(
            "#!/bin/sh\nprintf '%s\\n' '902|900|0|CANCELLED|None|0|0:15|{job_name}|' '903|900|1|PENDING|Priority|0|0:0|{job_name}|'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&squeue, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status_with_fake_queue = |extra: &[&str]| {
        vaepipe_command(cwd, &store)
            .env("PATH", &path)
            .args(["status", spec.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let status_json = || {
        let o = status_with_fake_queue(&["--json"]);
        assert!(o.status.success(), "{}", describe(&o));
        json_of(&o)
    };

    // Data done, training stopped with a checkpoint (its work directory); then the spec is
    // reordered: task 0 still belongs to the point that was first.
    let o = vaepipe(
        cwd,
        &store,
        &["run", spec.to_str().unwrap(), "--stage", "data"],
    );
    assert!(o.status.success(), "{}", describe(&o));
    write(EVAL_K_REORDERED);
    let work = store.join("work/train").join(train_key(cwd, &store, &spec));
    std::fs::create_dir_all(&work).unwrap();

    let st = status_json();
    let stopped = point_by_id(&st, &ids[0]);
    assert_eq!(
        (stopped["task"].as_u64(), stopped["index"].as_u64()),
        (Some(0), Some(1)),
        "{stopped:#}"
    );
    assert_eq!(stopped["state"], "cancelled", "{stopped:#}");
    let detail = stopped["detail"].as_str().unwrap();
    assert!(
        detail.contains("resumes train from its checkpoint"),
        "{detail}"
    );
    let waiting = point_by_id(&st, &ids[1]);
    assert_eq!(waiting["state"], "queued", "{waiting:#}");
    assert!(
        !waiting["detail"].as_str().unwrap().contains("checkpoint"),
        "{waiting:#}"
    );

    // Without a work directory there is nothing to resume from: the stage restarts.
    std::fs::remove_dir_all(&work).unwrap();
    let st = status_json();
    let stopped = point_by_id(&st, &ids[0]);
    assert_eq!(stopped["state"], "cancelled", "{stopped:#}");
    let detail = stopped["detail"].as_str().unwrap();
    assert!(
        detail.contains("restarts train") && !detail.contains("checkpoint"),
        "{detail}"
    );
    // People see the same.
    let o = status_with_fake_queue(&[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("restarts train"), "{text}");
}
