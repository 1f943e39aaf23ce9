//! Helpers of the SLURM end-to-end tests (slurm.rs, slurm_shared.rs): the local cluster,
//! started once per test process, the small specs they submit, submissions and dry runs, waiting
//! for jobs, and reading `status`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{bin, describe, json_of, repo};

// ---------------------------------------------------------------- the shared SLURM

static SLURM: OnceLock<Result<(), String>> = OnceLock::new();

/// Starts (or finds) the local SLURM once per test process. `false`: not available here (the
/// caller skips); under CI=true that is a failure instead.
pub fn slurm_available(test: &str) -> bool {
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
pub fn write_spec(
    dir: &Path,
    file: &str,
    name: &str,
    rows: usize,
    model: &str,
    train: &str,
    sweep: &str,
) -> PathBuf {
    super::write_spec(dir, file, name, 3, rows, model, train, sweep)
}

/// The quickest pipeline: 300 rows, the tiny model, one ELBO epoch; `sweep` appended verbatim.
pub fn quick_spec(dir: &Path, file: &str, name: &str, sweep: &str) -> PathBuf {
    write_spec(dir, file, name, 300, TINY_MODEL, ONE_ELBO_EPOCH, sweep)
}

/// `vaepipe --color never --store <store>` in `cwd`, not yet started.
pub fn vaepipe_command(cwd: &Path, store: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(cwd)
        .arg("--color")
        .arg("never")
        .arg("--store")
        .arg(store);
    c
}

/// Runs `vaepipe --color never --store <store> <args>` in `cwd` to the end.
pub fn vaepipe(cwd: &Path, store: &Path, args: &[&str]) -> Output {
    vaepipe_command(cwd, store)
        .args(args)
        .output()
        .expect("run vaepipe")
}

/// A submission to the real SLURM; its jobs are cancelled if the test panics meanwhile.
pub struct Submitted {
    /// The record `submit --json` printed.
    pub record: Value,
    pub job_name: String,
    /// The submission's directory (scripts, SLURM logs).
    pub dir: PathBuf,
    pub _guard: CancelOnDrop,
}

impl Submitted {
    /// Waits until every job of the submission has finished (at most 300 s).
    pub fn wait(&self) {
        wait_until_finished(&self.job_name, &self.dir, Duration::from_secs(300));
    }
}

/// Runs `vaepipe submit <spec> --slurm --json <flags> <extra>`, asserts that it succeeded and
/// returns what it printed.
pub fn submit_json(cwd: &Path, store: &Path, spec: &Path, flags: &[&str], extra: &[&str]) -> Value {
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
pub fn submit(cwd: &Path, store: &Path, spec: &Path, extra: &[&str]) -> Submitted {
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
pub fn dry_run(cwd: &Path, store: &Path, spec: &Path, extra: &[&str]) -> Value {
    submit_json(cwd, store, spec, &["--dry-run"], extra)
}

/// Runs one of a submission's batch scripts with bash outside SLURM, as job 0 (and as array
/// task `task`, if given), in the submission's directory.
pub fn run_script(dir: &Path, script: &str, task: Option<&str>) -> Output {
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
pub fn train_key(cwd: &Path, store: &Path, spec: &Path) -> String {
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
pub fn read_named(path: &Value) -> String {
    let path = path
        .as_str()
        .unwrap_or_else(|| panic!("not a path: {path}"));
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The point with id `id` in `status --json` output.
pub fn point_by_id<'a>(st: &'a Value, id: &str) -> &'a Value {
    st["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no point {id} in {st:#}"))
}

pub fn job_id(record: &Value, kind: &str) -> String {
    record["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|j| j["kind"] == kind))
        .and_then(|j| j["id"].as_str())
        .unwrap_or_else(|| panic!("no {kind} job in {record:#}"))
        .to_string()
}

/// Cancels a submission's jobs when a test ends early (panics), so nothing is left queued.
pub struct CancelOnDrop(pub String);

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
pub fn wait_until_finished(job_name: &str, dir: &Path, limit: Duration) {
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
pub fn logs_of(dir: &Path) -> String {
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

pub fn status(cwd: &Path, store: &Path, spec: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["status", spec.to_str().expect("UTF-8 spec path"), "--json"];
    args.extend_from_slice(extra);
    let o = vaepipe(cwd, store, &args);
    assert!(o.status.success(), "status failed:\n{}", describe(&o));
    json_of(&o)
}

/// Every `.parquet` file under `dir`, recursively.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
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

pub fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

pub const TINY_MODEL: &str = "latent = 4\nencoder = [32]\ndecoder = [32]";
/// `[train]` settings: one quick ELBO epoch.
pub const ONE_ELBO_EPOCH: &str = "objective = \"elbo\"\nk = 1\nepochs = 1";
/// `[train]` settings: two IWAE epochs with k = 2.
pub const TWO_IWAE_EPOCHS: &str = "objective = \"iwae\"\nk = 2\nepochs = 2";
/// A two-point sweep over `eval.k`, and the same points in the other order.
pub const EVAL_K_SWEEP: &str = "[sweep]\n\"eval.k\" = [10, 20]";
pub const EVAL_K_REORDERED: &str = "[sweep]\n\"eval.k\" = [20, 10]";

/// `(stage, status)` of every row of the summary tables `vaepipe run` printed into a log.
pub fn outcomes(log: &str) -> Vec<(String, String)> {
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

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The string `key` of every object in the JSON array `list`, in order.
pub fn strings_of<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
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
pub fn task_ids(record: &Value) -> Vec<String> {
    record["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}
