//! `vaepipe submit --slurm` when sweep points share stages, on a real SLURM (see slurm.rs for
//! how the local cluster is found or skipped; the helpers are in common/slurm.rs):
//! 5. in a sweep over `eval.k`, the first job computes what the points share (data, train,
//!    prior) and the array tasks find it cached; tasks run their point by id, also after the
//!    spec was reordered (and stop with 2 when their point left the spec);
//! 6. when the shared job fails, SLURM cancels the array and the report job says why nothing
//!    was rendered; `status` says whether a stopped point resumes from a checkpoint or restarts.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::slurm::*;
use common::{describe, json_of, subset, verify_store};
use serde_json::Value;

// ---------------------------------------------------------------- 5. shared stages, points by id

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
