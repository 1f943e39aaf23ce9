//! Tests of the sbatch scripts: directives, quoting, the body's signal handling and requeue.

use super::*;
use std::process::Command;

const IDS: &[&str] = &["p-0000000000", "p-1111111111", "p-2222222222", "base"];

fn ids() -> &'static [String] {
    static IDS_: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    IDS_.get_or_init(|| IDS.iter().map(|s| s.to_string()).collect())
}

fn inputs<'a>(
    r: &'a Resources,
    overrides: &'a [String],
    store: &'a Path,
    name: &'a str,
) -> ScriptInputs<'a> {
    ScriptInputs {
        vaepipe: Path::new("/opt/vaepipe/bin/vaepipe"),
        workdir: Path::new("/home/me/exp"),
        store,
        spec: Path::new("/home/me/exp/sweep.toml"),
        overrides,
        pipeline: name,
        submission: "20260101-000000-abcd",
        job_name: "vaepipe-sweep-20260101-000000-abcd",
        dir: Path::new("/store/slurm/sweep/20260101-000000-abcd"),
        point_ids: ids(),
        resources: r,
        tool_version: "0.1.0",
    }
}

fn full() -> Resources {
    Resources {
        partition: Some("gpu".into()),
        time: Some("04:00:00".into()),
        cpus_per_task: 2,
        mem: Some("4G".into()),
        grace_s: 90,
        max_parallel: Some(2),
    }
}

fn sbatch_lines(script: &str) -> Vec<&str> {
    script
        .lines()
        .filter(|l| l.starts_with("#SBATCH"))
        .collect()
}

#[test]
fn directives_are_sorted_complete_and_before_any_command() {
    let r = full();
    let x = inputs(&r, &[], Path::new("/store"), "sweep");
    for kind in [JobKind::Shared, JobKind::Points, JobKind::Report] {
        let s = render(kind, &x).unwrap();
        let lines = sbatch_lines(&s);
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted, "{kind:?}: #SBATCH lines not sorted");
        for want in [
            "#SBATCH --cpus-per-task=2",
            "#SBATCH --job-name=vaepipe-sweep-20260101-000000-abcd",
            "#SBATCH --mem=4G",
            "#SBATCH --open-mode=append",
            "#SBATCH --partition=gpu",
            "#SBATCH --requeue",
            "#SBATCH --signal=B:USR1@90",
            "#SBATCH --time=04:00:00",
        ] {
            assert!(lines.contains(&want), "{kind:?}: missing {want} in\n{s}");
        }
        // sbatch stops reading directives at the first command: they must all come first.
        let first_command = s
            .lines()
            .position(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        let lines: Vec<&str> = s.lines().collect();
        let last_directive = lines
            .iter()
            .rposition(|l| l.starts_with("#SBATCH"))
            .unwrap();
        assert!(last_directive < first_command);
    }
    let points = render(JobKind::Points, &x).unwrap();
    assert!(sbatch_lines(&points).contains(&"#SBATCH --array=0-3%2"));
    assert!(sbatch_lines(&points).contains(&"#SBATCH --output=logs/points-%A_%a.out"));
    assert!(sbatch_lines(&points).contains(&"#SBATCH --kill-on-invalid-dep=yes"));
    assert!(points.contains(" --point=\"${ids[$task]}\" &\n"));
    assert!(points.contains("\nids=(p-0000000000 p-1111111111 p-2222222222 base)\n"));
    let shared = render(JobKind::Shared, &x).unwrap();
    assert!(!shared.contains("--array") && !shared.contains("ids="));
    assert!(shared.contains(" run /home/me/exp/sweep.toml --shared &\n"));
    assert!(
        render(JobKind::Report, &x)
            .unwrap()
            .contains(" report /home/me/exp/sweep.toml")
    );
}

#[test]
fn optional_resources_are_omitted_and_unlimited_arrays_have_no_percent() {
    let r = Resources::default();
    let x = inputs(&r, &[], Path::new("/store"), "sweep");
    let s = render(JobKind::Points, &x).unwrap();
    let lines = sbatch_lines(&s);
    assert!(lines.contains(&"#SBATCH --array=0-3"));
    assert!(lines.contains(&"#SBATCH --signal=B:USR1@120"));
    assert!(!s.contains("--partition") && !s.contains("--time") && !s.contains("--mem"));
}

#[test]
fn the_script_runs_vaepipe_in_the_background_and_requeues_on_exit_3() {
    let r = Resources::default();
    let x = inputs(&r, &[], Path::new("/store"), "sweep");
    let s = render(JobKind::Points, &x).unwrap();
    let run = s
        .lines()
        .find(|l| l.starts_with("/opt/vaepipe/bin/vaepipe "))
        .expect("a vaepipe line");
    assert!(
        run.ends_with(" &"),
        "vaepipe must run in the background so that traps fire: {run}"
    );
    assert!(
        s.contains("trap 'on_signal USR1' USR1") && s.contains("trap 'on_signal TERM' TERM")
    );
    assert!(s.contains("scontrol requeue \"$SLURM_JOB_ID\""));
}

/// Runs a rendered points script with a fake vaepipe (records the signals it gets, exits 3
/// like vaepipe after a checkpoint) and a fake scontrol; `signal_shell` and `signal_child`
/// are sent once the fake runs. Returns (script exit code, signals the child got, scontrol calls).
fn run_with_fakes(
    signal_shell: &str,
    signal_child: Option<&str>,
) -> (Option<i32>, String, String) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let write_exe = |name: &str, body: &str| {
        let p = out.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let fake = write_exe(
        "vaepipe",
        "#!/bin/bash\ngot=''\ntrap 'echo USR1 >> \"$OUT/signals\"; got=1' USR1\ntrap 'echo TERM >> \"$OUT/signals\"; got=1' TERM\n\
         echo $$ > \"$OUT/pid\"; touch \"$OUT/ready\"\nwhile [ -z \"$got\" ]; do sleep 0.05; done\nsleep 0.3\nexit 3\n",
    );
    std::fs::create_dir(out.join("bin")).unwrap();
    write_exe(
        "bin/scontrol",
        "#!/bin/bash\necho \"$*\" >> \"$OUT/scontrol\"\n",
    );
    let r = Resources::default();
    let mut x = inputs(&r, &[], out, "sweep");
    x.vaepipe = &fake;
    x.workdir = out;
    let script = out.join("points.sbatch");
    std::fs::write(&script, render(JobKind::Points, &x).unwrap()).unwrap();
    let path = format!(
        "{}:{}",
        out.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut shell = Command::new("bash")
        .arg(&script)
        .env("OUT", out)
        .env("PATH", path)
        .env("SLURM_JOB_ID", "42")
        .env("SLURM_ARRAY_TASK_ID", "0")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !out.join("ready").exists() {
        assert!(
            t0.elapsed().as_secs() < 20,
            "the fake vaepipe never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = |sig: &str, pid: &str| {
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid)
            .status()
            .unwrap()
    };
    if let Some(sig) = signal_child {
        kill(
            sig,
            std::fs::read_to_string(out.join("pid")).unwrap().trim(),
        );
    }
    kill(signal_shell, &shell.id().to_string());
    let code = shell.wait().unwrap().code();
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();
    (code, read("signals"), read("scontrol"))
}

#[test]
fn usr1_is_forwarded_once_and_the_job_requeues_itself() {
    let (code, signals, scontrol) = run_with_fakes("USR1", None);
    assert_eq!(signals, "USR1\n", "vaepipe must get exactly one USR1");
    assert_eq!(scontrol, "requeue 42\n");
    assert_eq!(code, Some(0));
}

#[test]
fn term_is_not_forwarded_and_a_cancelled_job_is_not_requeued() {
    // As SLURM does on scancel or preemption: TERM to the batch shell and to vaepipe.
    let (code, signals, scontrol) = run_with_fakes("TERM", Some("TERM"));
    assert_eq!(
        signals, "TERM\n",
        "a second signal would stop vaepipe without a checkpoint"
    );
    assert_eq!(scontrol, "", "a cancelled job must stay cancelled");
    assert_eq!(code, Some(3), "the shell must wait for vaepipe's exit code");
}

#[test]
fn hostile_values_are_quoted_and_the_script_parses() {
    let r = full();
    let store =
        PathBuf::from("/tmp/st ore/$(touch /tmp/vaepipe-pwned-script)/`id`/it's\n\"x\"");
    let name = "evil $(touch /tmp/vaepipe-pwned-script) `id` 'q' \"dq\"\nsecond line";
    let overrides =
        vec!["pipeline.description=$(touch /tmp/vaepipe-pwned-script)\n'".to_string()];
    // Point ids are `p-<hex>` or `base`, but the script must not rely on it.
    let hostile_ids: Vec<String> = [
        "-n",
        "$(touch /tmp/vaepipe-pwned-script)",
        "it's \"x\" `id`\n${HOME} *",
        "base",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut x = inputs(&r, &overrides, &store, name);
    x.point_ids = &hostile_ids;
    x.dir = &store;
    for kind in [JobKind::Shared, JobKind::Points, JobKind::Report] {
        let s = render(kind, &x).unwrap();
        let out = Command::new("bash")
            .arg("-n")
            .arg("-c")
            .arg(&s)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bash -n rejects the {kind:?} script: {}\n{s}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The name is in a comment, on one line; no directive carries a user value.
        assert_eq!(
            s.lines().filter(|l| l.starts_with("# Pipeline ")).count(),
            1
        );
        assert!(!s.lines().any(|l| l.starts_with("second line")));
        for l in sbatch_lines(&s) {
            assert!(
                !l.contains('$') && !l.contains('`') && !l.contains('\''),
                "user value in {l}"
            );
        }
        // Replace the binary by printf: bash must hand vaepipe exactly the original words.
        let line = s
            .lines()
            .find(|l| l.starts_with("/opt/vaepipe/bin/vaepipe "))
            .unwrap();
        let mut probe = line
            .replacen("/opt/vaepipe/bin/vaepipe", "printf '%s\\0'", 1)
            .trim_end_matches(" &")
            .to_string();
        if kind == JobKind::Points {
            // The task's point comes from the script's id table.
            probe = format!("{{\n{}}} >/dev/null\n{probe}", point_table(x.point_ids));
        }
        let out = Command::new("bash")
            .arg("-c")
            .arg(&probe)
            .env("SLURM_ARRAY_TASK_ID", "2")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let words: Vec<&[u8]> = out
            .stdout
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .collect();
        assert_eq!(
            words[3],
            store.as_os_str().as_encoded_bytes(),
            "store path changed on the way"
        );
        assert!(
            words.contains(&format!("--set={}", overrides[0]).as_bytes()),
            "override changed on the way"
        );
        if kind == JobKind::Points {
            assert_eq!(
                *words.last().unwrap(),
                format!("--point={}", hostile_ids[2]).as_bytes(),
                "task 2 must run the point with id ids[2]"
            );
        }
    }
    assert!(
        !Path::new("/tmp/vaepipe-pwned-script").exists(),
        "a quoted value was executed"
    );
}

/// Runs the id table of a points script with `SLURM_ARRAY_TASK_ID=task` (None: unset) and
/// prints the argument vaepipe would get; returns (exit code, stdout, stderr).
fn pick(ids: &[String], task: Option<&str>) -> (Option<i32>, String, String) {
    let script = format!(
        "{}printf '%s' \"--point=${{ids[$task]}}\"\n",
        point_table(ids)
    );
    let mut c = Command::new("bash");
    c.arg("-c").arg(&script).env_remove("SLURM_ARRAY_TASK_ID");
    if let Some(t) = task {
        c.env("SLURM_ARRAY_TASK_ID", t);
    }
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_task_picks_its_point_by_id_and_bad_task_ids_stop_with_2() {
    let ids = ids().to_vec();
    for (i, id) in ids.iter().enumerate() {
        let (code, out, _) = pick(&ids, Some(&i.to_string()));
        assert_eq!(code, Some(0));
        assert_eq!(
            out,
            format!("== point {id} (task {i})\n--point={id}"),
            "task {i}"
        );
    }
    for bad in [
        None,
        Some(""),
        Some("4"),
        Some("17"),
        Some("-1"),
        Some("1;id"),
        Some("x"),
        Some("18446744073709551615"),
    ] {
        let (code, out, err) = pick(&ids, bad);
        assert_eq!(code, Some(2), "task id {bad:?}: {out}{err}");
        assert!(!out.contains("--point"), "task id {bad:?} ran: {out}");
        assert!(err.contains("== "), "task id {bad:?}: no message: {err}");
    }
    // Leading zeros are decimal, not octal.
    assert!(pick(&ids, Some("03")).1.ends_with("--point=base"));
}

#[test]
fn the_report_script_explains_an_empty_report() {
    let r = Resources::default();
    let x = inputs(&r, &[], Path::new("/store"), "sweep");
    let s = render(JobKind::Report, &x).unwrap();
    assert!(
        s.contains("if [ \"$rc\" = 1 ]; then") && s.contains("logs/shared-<job>.out"),
        "{s}"
    );
    assert!(s.ends_with("exit \"$rc\"\n"), "{s}");
    let points = render(JobKind::Points, &x).unwrap();
    assert!(!points.contains("no report"));

    // Run it with a vaepipe that finds nothing to render (exit 1), from a hostile directory.
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sub 'dir' $(touch pwned) `touch pwned`");
    std::fs::create_dir(&dir).unwrap();
    let fake = tmp.path().join("vaepipe");
    std::fs::write(
        &fake,
        "#!/bin/bash\necho 'error: nothing to render' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut x = inputs(&r, &[], tmp.path(), "sweep");
    x.vaepipe = &fake;
    x.workdir = tmp.path();
    x.dir = &dir;
    let out = Command::new("bash")
        .arg("-c")
        .arg(render(JobKind::Report, &x).unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("== no report: ")
            && err.contains(&format!("{}), or rendering failed", dir.display())),
        "{err}"
    );
    assert!(
        !tmp.path().join("pwned").exists(),
        "a quoted value was executed"
    );
}

#[test]
fn resources_are_validated() {
    let ok = full();
    assert!(ok.validate().is_ok());
    let bad = [
        Resources {
            partition: Some("gpu\n#SBATCH --x".into()),
            ..full()
        },
        Resources {
            partition: Some("a b".into()),
            ..full()
        },
        Resources {
            time: Some("4h".into()),
            ..full()
        },
        Resources {
            time: Some("00:01:00".into()),
            grace_s: 60,
            ..full()
        },
        Resources {
            mem: Some("4 GB".into()),
            ..full()
        },
        Resources {
            cpus_per_task: 0,
            ..full()
        },
        Resources {
            grace_s: 0,
            ..full()
        },
        Resources {
            grace_s: 70_000,
            time: None,
            ..full()
        },
        Resources {
            max_parallel: Some(0),
            ..full()
        },
    ];
    for r in bad {
        assert!(r.validate().is_err(), "{r:?} accepted");
    }
}

#[test]
fn time_limits_parse_like_sbatch() {
    assert_eq!(parse_time_limit("90"), Some(Some(5400)));
    assert_eq!(parse_time_limit("10:30"), Some(Some(630)));
    assert_eq!(parse_time_limit("04:00:00"), Some(Some(14_400)));
    assert_eq!(parse_time_limit("1-12"), Some(Some(129_600)));
    assert_eq!(parse_time_limit("1-00:30"), Some(Some(88_200)));
    assert_eq!(parse_time_limit("2-01:02:03"), Some(Some(176_523)));
    assert_eq!(parse_time_limit("UNLIMITED"), Some(None));
    for bad in ["", "1:2:3:4", "a", "1-", "-1", "1h", "1-2-3", "1:"] {
        assert_eq!(parse_time_limit(bad), None, "{bad}");
    }
}
