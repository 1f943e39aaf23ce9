//! Sweeps across several nodes on a real SLURM: the project's two-node test cluster
//! (`SLURM_NODES=2 tests/slurm/start.sh`: two slurmd, n1 and n2, each in its own network
//! namespace on this machine, one slurmctld). Without a SLURM client (`sinfo`) they are ignored
//! (crates/vaepipe/build.rs); when SLURM is installed but cannot be started they print why on
//! stderr and pass; under CI=true they always run and fail without SLURM. They take the cluster
//! in turns (one kills a node).
//!
//! What they prove:
//! 1. a 4-point sweep submitted with `vaepipe submit --slurm` runs its array tasks on both
//!    nodes (the manifests' `slurm_node`), all tasks share one store, the shared data stage runs
//!    once (in the shared job) and one report is rendered;
//! 2. a node lost mid-training (`tests/slurm/kill-node.sh`: SIGKILL to its slurmd and to the
//!    processes of its job, as a power loss): SLURM declares the node down and requeues the task
//!    (NODE_FAIL with `--requeue`), which resumes from its last checkpoint on the other node;
//!    the final weights equal an uninterrupted run's, no epoch is repeated, and `vaepipe
//!    status` says "requeued after node … failed …, resumed train on … at epoch …".
//! 3. stale locks: a lock still held (as a file server keeps a lost node's lock) whose record
//!    names a SLURM job on another host is waited for while that job runs — the task's log says
//!    whom it waits for — and taken over as soon as the job has ended; status says so.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{bin, describe, json_of, repo, the_entry, verify_store};
use serde_json::Value;

static CLUSTER: OnceLock<Result<(), String>> = OnceLock::new();
/// One test at a time on the cluster: the node-failure test takes a node down.
static TURN: Mutex<()> = Mutex::new(());

/// Starts (or finds) the two-node cluster; `false` if SLURM is not available here (the
/// caller skips), a panic under CI=true.
fn cluster_available(test: &str) -> bool {
    let r = CLUSTER.get_or_init(start_cluster);
    match r {
        Ok(()) => true,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!(
                "CI=true: the multi-node SLURM tests must run, but the cluster could not be started: {e}"
            )
        }
        Err(e) => {
            // To the process's stderr, not the captured test output, so that it is seen.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: no two-node SLURM ({e})\n  To run these tests: as root, \
                 `SLURM_NODES=2 LOCAL_SLURM_INSTALL=1 tests/slurm/start.sh` (stop with tests/slurm/stop.sh)."
            );
            false
        }
    }
}

/// `SLURM_NODES=2 tests/slurm/start.sh` (idempotent; also brings a killed node back).
fn start_cluster() -> Result<(), String> {
    let script = repo().join("tests/slurm/start.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("SLURM_NODES", "2")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        Err(format!(
            "{} exited with {}:\n{}",
            script.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

fn vaepipe(cwd: &Path, store: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .current_dir(cwd)
        .args(["--color", "never", "--store"])
        .arg(store)
        .args(args)
        .output()
        .expect("run vaepipe")
}

/// A spec on the embedded subset with a tiny model; `train` and `sweep` verbatim.
fn spec(dir: &Path, name: &str, rows: usize, model: &str, train: &str, sweep: &str) -> PathBuf {
    common::write_spec(
        dir,
        &format!("{name}.toml"),
        name,
        5,
        rows,
        model,
        train,
        sweep,
    )
}

/// A submission; its jobs are cancelled if the test fails meanwhile.
struct Submitted {
    record: Value,
    job_name: String,
    dir: PathBuf,
}

impl Drop for Submitted {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("scancel")
                .arg(format!("--name={}", self.job_name))
                .output();
        }
    }
}

fn submit(cwd: &Path, store: &Path, spec: &Path) -> Submitted {
    let o = vaepipe(
        cwd,
        store,
        &[
            "submit",
            spec.to_str().unwrap(),
            "--slurm",
            "--json",
            "--time",
            "00:15:00",
            "--grace",
            "30",
        ],
    );
    assert!(o.status.success(), "submit failed:\n{}", describe(&o));
    let record = json_of(&o);
    Submitted {
        job_name: record["job_name"].as_str().unwrap().to_string(),
        dir: PathBuf::from(record["dir"].as_str().unwrap()),
        record,
    }
}

impl Submitted {
    fn job(&self, kind: &str) -> String {
        self.record["jobs"]
            .as_array()
            .and_then(|j| j.iter().find(|j| j["kind"] == kind))
            .and_then(|j| j["id"].as_str())
            .unwrap_or_else(|| panic!("no {kind} job in {:#}", self.record))
            .to_string()
    }

    /// Waits until every job of the submission has reached a final state.
    fn wait(&self, limit: Duration) {
        use vaepipe_slurm::JobState::{Cancelled, Completed, Failed, Timeout};
        let t0 = Instant::now();
        loop {
            let entries =
                vaepipe_slurm::query(Path::new("squeue"), &self.job_name).expect("squeue");
            if !entries.is_empty()
                && entries
                    .iter()
                    .all(|e| matches!(e.state, Completed | Failed | Cancelled | Timeout))
            {
                return;
            }
            let states: Vec<String> = entries.iter().map(vaepipe_slurm::state::describe).collect();
            assert!(
                t0.elapsed() < limit,
                "jobs {} not finished after {limit:?}: {states:?}\n{}",
                self.job_name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn logs(&self) -> String {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("logs"))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|f| {
                format!(
                    "----- {}\n{}\n",
                    f.display(),
                    std::fs::read_to_string(f).unwrap_or_default()
                )
            })
            .collect()
    }
}

fn status_json(cwd: &Path, store: &Path, spec: &Path) -> Value {
    let o = vaepipe(cwd, store, &["status", spec.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "status failed:\n{}", describe(&o));
    json_of(&o)
}

/// Every manifest of `stage` in the store.
fn manifests(store: &Path, stage: &str) -> Vec<Value> {
    let base = store.join("store").join(stage);
    let mut out: Vec<Value> = std::fs::read_dir(&base)
        .unwrap_or_else(|e| panic!("{}: {e}", base.display()))
        .flatten()
        .map(|e| {
            serde_json::from_slice(&std::fs::read(e.path().join("manifest.json")).unwrap()).unwrap()
        })
        .collect();
    out.sort_by_key(|m| m["key"].as_str().unwrap_or_default().to_string());
    out
}

fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

fn node_states() -> String {
    let o = Command::new("sinfo")
        .args(["-h", "-N", "-o", "%N %T"])
        .output()
        .expect("sinfo");
    String::from_utf8_lossy(&o.stdout).to_string()
}

// ---------------------------------------------------------------- 1. a sweep on two nodes

#[test]
#[cfg_attr(not(vaepipe_slurm), ignore = "needs SLURM (see build.rs)")]
fn a_sweep_runs_on_both_nodes_sharing_one_store_and_one_report() {
    if !cluster_available("a_sweep_runs_on_both_nodes_sharing_one_store_and_one_report") {
        return;
    }
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let tmp = scratch("vaepipe-multinode-sweep");
    let cwd = tmp.path();
    let spec = spec(
        cwd,
        "two-nodes",
        300,
        "latent = 4\nencoder = [32]\ndecoder = [32]",
        "objective = \"iwae\"\nepochs = 1",
        "[sweep]\n\"train.k\" = [1, 2, 3, 4]",
    );
    let store = cwd.join("store");
    let sub = submit(cwd, &store, &spec);
    assert_eq!(sub.record["array_size"], 4);
    let shared_job: u64 = sub.job("shared").parse().unwrap();
    let array_job: u64 = sub.job("points").parse().unwrap();
    sub.wait(Duration::from_secs(300));

    let st = status_json(cwd, &store, &spec);
    let points = st["points"].as_array().unwrap();
    assert!(
        points.iter().all(|p| p["state"] == "done"),
        "{st:#}\n{}",
        sub.logs()
    );

    // Each point trained in its own array task, and the tasks ran on both nodes.
    let trained = manifests(&store, "train");
    assert_eq!(trained.len(), 4, "one train entry per point");
    let mut tasks = BTreeSet::new();
    let mut nodes = BTreeSet::new();
    for m in &trained {
        assert_eq!(m["slurm_array_job_id"], array_job, "{m:#}");
        assert!(m["slurm_job_id"].is_u64(), "{m:#}");
        assert_eq!(m["slurm_restart_count"], 0, "{m:#}");
        assert!(
            m["host"].is_string(),
            "host is kept besides the SLURM keys: {m:#}"
        );
        tasks.insert(m["slurm_array_task_id"].as_u64().expect("task id"));
        nodes.insert(m["slurm_node"].as_str().expect("slurm_node").to_string());
        // The point of this entry is the one its task was given.
        let id = m["points"][0]["id"].as_str().unwrap();
        let task = points.iter().find(|p| p["id"] == id).unwrap()["task"].clone();
        assert_eq!(m["slurm_array_task_id"], task, "{m:#}");
    }
    assert_eq!(tasks, BTreeSet::from([0, 1, 2, 3]));
    assert_eq!(
        nodes,
        BTreeSet::from(["n1".to_string(), "n2".to_string()]),
        "the array did not use both nodes"
    );

    // What the points share ran once, in the shared job, before the array.
    let data = manifests(&store, "data");
    assert_eq!(data.len(), 1, "the data stage ran once");
    assert_eq!(data[0]["slurm_job_id"], shared_job, "{:#}", data[0]);
    assert!(
        data[0].get("slurm_array_task_id").is_none(),
        "{:#}",
        data[0]
    );
    for m in &trained {
        assert_eq!(
            m["inputs"]["data"], data[0]["key"],
            "every point read the one data entry"
        );
    }

    // One report, over all four points, from the report job.
    let reports = manifests(&store, "report");
    assert_eq!(reports.len(), 1, "one report");
    assert_eq!(
        reports[0]["slurm_job_id"],
        sub.job("report").parse::<u64>().unwrap()
    );
    assert_eq!(reports[0]["points"].as_array().map(Vec::len), Some(4));
    assert!(cwd.join("reports/two-nodes/index.html").is_file());
    verify_store(&store);
    eprintln!(
        "sweep on two nodes ({}): {:.1} s",
        nodes.into_iter().collect::<Vec<_>>().join(", "),
        t0.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------- 2. a node lost mid-training

#[test]
#[cfg_attr(not(vaepipe_slurm), ignore = "needs SLURM (see build.rs)")]
fn a_task_whose_node_dies_is_requeued_and_resumes_on_the_other_node_bit_for_bit() {
    if !cluster_available(
        "a_task_whose_node_dies_is_requeued_and_resumes_on_the_other_node_bit_for_bit",
    ) {
        return;
    }
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let tmp = scratch("vaepipe-multinode-nodefail");
    let cwd = tmp.path();
    let epochs = 10;
    let spec = spec(
        cwd,
        "node-failure",
        3000,
        "latent = 5\nencoder = [100]\ndecoder = [100]",
        &format!("objective = \"iwae\"\nk = 5\nepochs = {epochs}"),
        "",
    );
    let store = cwd.join("store");
    let sub = submit(cwd, &store, &spec);

    // The uninterrupted reference, computed locally meanwhile.
    let reference = cwd.join("reference");
    let local = Command::new(bin())
        .current_dir(cwd)
        .args(["--color", "never", "--store"])
        .arg(&reference)
        .args(["run", spec.to_str().unwrap(), "--stage", "train"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("reference run");

    // Once epoch 1 is logged and its checkpoint written (9 epochs to go), the task's node dies.
    // (The epoch's log line comes before its checkpoint: waiting for the line alone raced.)
    let plan = json_of(&vaepipe(
        cwd,
        &store,
        &["plan", spec.to_str().unwrap(), "--json"],
    ));
    let key = plan["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["stage"] == "train")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let train_log = store.join("logs/train").join(format!("{key}.log"));
    let work = store.join("work/train").join(&key);
    let checkpointed = || {
        std::fs::read_dir(&work).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                !name.starts_with('.') && name.ends_with("-checkpoint.json")
            })
        })
    };
    let t_wait = Instant::now();
    while !(std::fs::read_to_string(&train_log)
        .is_ok_and(|l| l.contains(&format!("epoch 1/{epochs}:")))
        && checkpointed())
    {
        assert!(
            t_wait.elapsed() < Duration::from_secs(180),
            "training never logged epoch 1:\n{}",
            sub.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The lock names its holder: which node trains.
    let s = vaepipe_engine::Store::open(&store).unwrap();
    let holder = s
        .lock_holder("train", &key)
        .expect("training holds its lock");
    let lost = holder.placement["slurm_node"].as_str().unwrap().to_string();
    let other = if lost == "n1" { "n2" } else { "n1" };
    let kill = Command::new("bash")
        .arg(repo().join("tests/slurm/kill-node.sh"))
        .arg(&lost)
        .output()
        .unwrap();
    assert!(kill.status.success(), "kill-node.sh: {}", describe(&kill));
    let killed_at = Instant::now();
    let local = local.wait_with_output().unwrap();
    assert!(
        local.status.success(),
        "reference run failed:\n{}",
        describe(&local)
    );

    sub.wait(Duration::from_secs(300));
    let recovered_s = killed_at.elapsed().as_secs_f64();
    // Bring the node back for whatever runs next (and check that start.sh can).
    start_cluster().expect("restarting the killed node");

    let st = status_json(cwd, &store, &spec);
    let p = &st["points"][0];
    assert_eq!(p["state"], "done", "{p:#}\n{}", sub.logs());
    assert_eq!(p["queue"]["restarts"], 1, "requeued once: {p:#}");
    let history: Vec<&str> = p["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(history.len(), 1, "{p:#}");
    let said = history[0];
    assert!(
        said.starts_with(&format!("requeued after node {lost} failed"))
            && said.contains(&format!("resumed train on {other} at epoch ")),
        "status does not say what happened: {said}"
    );
    let resumed_at: u32 = said
        .rsplit("at epoch ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no epoch in {said}"));
    assert!((2..=epochs).contains(&resumed_at), "{said}");
    assert!(p["detail"].as_str().unwrap().contains(said), "{p:#}");
    let text = vaepipe(cwd, &store, &["status", spec.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains(said),
        "{}",
        describe(&text)
    );

    // The manifests say where each stage ran: data on the lost node, training on the other,
    // after a restart.
    let train = &manifests(&store, "train")[0];
    assert_eq!(train["slurm_node"], other, "{train:#}");
    assert_eq!(train["slurm_restart_count"], 1, "{train:#}");
    assert_eq!(train["slurm_array_task_id"], 0, "{train:#}");
    assert_eq!(manifests(&store, "data")[0]["slurm_node"], lost.as_str());
    // SLURM's own record (start.sh's jobcomp/filetxt log): the task's first run ended NODE_FAIL.
    let jobcomp = PathBuf::from(
        std::env::var("LOCAL_SLURM_STATE").unwrap_or_else(|_| "/tmp/local-slurm".into()),
    )
    .join("log/jobcomp.log");
    let task_job = format!("JobId={} ", train["slurm_job_id"]);
    let records = std::fs::read_to_string(&jobcomp).unwrap_or_default();
    assert!(
        records
            .lines()
            .any(|l| l.starts_with(&task_job) && l.contains("JobState=NODE_FAIL")),
        "no NODE_FAIL record of {task_job}in {}:\n{records}",
        jobcomp.display()
    );

    // It resumed (no epoch twice) and ended with the uninterrupted run's weights.
    let trained = the_entry(&store, "train");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(trained.join("train.json")).unwrap()).unwrap();
    assert_eq!(summary["resumed"], 1, "{summary:#}");
    let table = vaepipe_data::read_table(&trained.join("history.parquet")).unwrap();
    assert_eq!(
        table.i64("epoch").unwrap().to_vec(),
        (1..=epochs as i64).collect::<Vec<_>>(),
        "epochs repeated or missing"
    );
    let ours = std::fs::read(trained.join("model.safetensors")).unwrap();
    let theirs = std::fs::read(the_entry(&reference, "train").join("model.safetensors")).unwrap();
    assert!(
        ours == theirs,
        "weights after the node failure differ from an uninterrupted run's"
    );
    verify_store(&store);
    assert!(
        node_states()
            .lines()
            .all(|l| l.ends_with(" idle") || l.ends_with(" mixed") || l.ends_with(" allocated")),
        "a node stayed down: {}",
        node_states()
    );
    eprintln!(
        "node {lost} lost mid-training, resumed on {other} at epoch {resumed_at}: {recovered_s:.1} s from the kill to the end, {:.1} s in all",
        t0.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------- 3. a stale lock

#[test]
#[cfg_attr(not(vaepipe_slurm), ignore = "needs SLURM (see build.rs)")]
fn a_lock_held_for_a_slurm_job_is_waited_for_while_the_job_runs_and_taken_over_once_it_ended() {
    if !cluster_available(
        "a_lock_held_for_a_slurm_job_is_waited_for_while_the_job_runs_and_taken_over_once_it_ended",
    ) {
        return;
    }
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let tmp = scratch("vaepipe-multinode-stale");
    let cwd = tmp.path();
    let spec = spec(
        cwd,
        "stale-lock",
        300,
        "latent = 4\nencoder = [32]\ndecoder = [32]",
        "objective = \"elbo\"\nepochs = 1",
        "",
    );
    let store = cwd.join("store");
    let s = vaepipe_engine::Store::open(&store).unwrap();
    let key = {
        let plan = json_of(&vaepipe(
            cwd,
            &store,
            &["plan", spec.to_str().unwrap(), "--json"],
        ));
        plan["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["stage"] == "train")
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // A job standing for the lock's holder: a one-task SLURM array (as vaepipe's points are)
    // that runs until we cancel it, so the check queries squeue by `array_job_task` as it does
    // for real holders. Its one task's job id is the array's.
    let o = Command::new("sbatch")
        .current_dir(cwd)
        .args([
            "--parsable",
            "--output=/dev/null",
            "--job-name=vaepipe-stale-holder",
            "--array=0",
            "--wrap",
            "sleep 600",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "sbatch: {}", describe(&o));
    let holder_job = String::from_utf8_lossy(&o.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let _cancel_holder = CancelJob(holder_job.clone());

    // The train lock stays held (as a file server keeps a lost node's lock) with a record that
    // names that job on another host, where the pid rule proves nothing.
    let path = store.join("locks").join(format!("train-{key}.lock"));
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    held.try_lock().unwrap();
    let record = serde_json::json!({
        "host": "lost-host", "pid": 4242, "since": "2026-01-01T00:00:00.000Z",
        "slurm_job_id": holder_job.parse::<u64>().unwrap(), "slurm_restart_count": 0,
        "slurm_array_job_id": holder_job.parse::<u64>().unwrap(), "slurm_array_task_id": 0,
        "slurm_node": "n9",
    });
    std::fs::write(&path, format!("{record}\n")).unwrap();
    assert!(s.is_locked("train", &key));

    let sub = submit(cwd, &store, &spec);
    let task = format!("{}_0", sub.job("points"));
    let slurm_log = sub.dir.join(format!("logs/points-{task}.out"));
    // While the holder's job runs, the task waits and says whom for.
    let t_wait = Instant::now();
    while !std::fs::read_to_string(&slurm_log).is_ok_and(|l| l.contains("pid 4242 on lost-host")) {
        assert!(
            t_wait.elapsed() < Duration::from_secs(120),
            "the task never said whom it waits for:\n{}",
            sub.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(6)); // more than one check interval (5 s)
    let log = std::fs::read_to_string(&slurm_log).unwrap();
    let waiting = log
        .lines()
        .find(|l| l.contains("pid 4242 on lost-host"))
        .unwrap();
    assert!(
        waiting.contains("waiting") && waiting.contains(&format!("slurm_job_id={holder_job}")),
        "{waiting}"
    );
    assert!(
        the_store_has_no(&store, "train") && !log.contains("took over"),
        "a lock of a running job was taken over:\n{log}"
    );

    // The holder's job ends: the lock is provably stale and taken over.
    let o = Command::new("scancel").arg(&holder_job).output().unwrap();
    assert!(o.status.success(), "scancel: {}", describe(&o));
    sub.wait(Duration::from_secs(120));
    let st = status_json(cwd, &store, &spec);
    let p = &st["points"][0];
    assert_eq!(p["state"], "done", "{p:#}\n{}", sub.logs());
    let train_log =
        std::fs::read_to_string(store.join("logs/train").join(format!("{key}.log"))).unwrap();
    assert!(
        train_log.contains("took over the lock of pid 4242 on lost-host")
            && train_log.contains(&format!(
                "its SLURM job {holder_job}_0 has ended (CANCELLED"
            )),
        "{train_log}"
    );
    let history = p["history"].to_string();
    assert!(
        history.contains("its run on node n9 was found gone")
            && history.contains("restarted train on n"),
        "{p:#}"
    );
    drop(held);
    verify_store(&store);
    eprintln!(
        "stale lock of a SLURM job taken over: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// True if the store has no committed entry of `stage`.
fn the_store_has_no(store: &Path, stage: &str) -> bool {
    common::missing_or_empty(&store.join("store").join(stage))
}

/// Cancels a helper job when the test ends, however it ends.
struct CancelJob(String);

impl Drop for CancelJob {
    fn drop(&mut self) {
        let _ = Command::new("scancel").arg(&self.0).output();
    }
}
