//! `vaepipe submit --slurm` and the queue-aware `vaepipe status` on a real SLURM: the project's
//! local cluster (tests/slurm/start.sh: one node, or two in CI; these tests do not care which;
//! idempotent, shared by every test of this file and of slurm_shared.rs; each test has its own
//! spec, store and job name). Without a SLURM client (`sinfo`) the tests that
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
//!
//! Shared stages and points picked by id (5), and a failing shared job (6), are in
//! slurm_shared.rs; the helpers are in common/slurm.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::slurm::*;
use common::{describe, the_entry, verify_store};
use serde_json::Value;

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
    // The signal must land mid-training. CI once saw it hit the prior stage: the test waited for
    // the local reference run (below) before signalling, and the task had finished meanwhile.
    // The reference now runs in the background; 9 800 rows at k = 20 leave a margin besides.
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

    // The uninterrupted reference, computed locally meanwhile: in the background, so that the
    // signal below is not held up until it finishes (the SLURM task would be done by then).
    let reference = cwd.join("reference");
    let local = vaepipe_command(cwd, &reference)
        .args(["run", spec.to_str().unwrap(), "--stage", "train"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the reference run");

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
    let local = local.wait_with_output().expect("the reference run");
    assert!(
        local.status.success(),
        "reference run failed:\n{}",
        describe(&local)
    );
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
