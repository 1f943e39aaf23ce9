//! The sbatch scripts of a submission: the sorted `#SBATCH` lines (from the checked
//! crate::resources::Resources), and the bash body that runs vaepipe in the background,
//! forwards a stop signal to it, and requeues the job when vaepipe saved a checkpoint (exit
//! code 3).
//!
//! Signal handling, in the manner of submitit: `--signal=B:USR1@GRACE` asks SLURM to send USR1
//! to the batch shell GRACE seconds before the time limit (and tests or admins send it with
//! `scancel --signal=USR1 --batch`). bash runs a trap only between commands, so vaepipe runs as
//! `vaepipe … & wait`. The trap forwards one USR1 to vaepipe, which finishes the optimizer step,
//! checkpoints and exits with 3; the script then calls `scontrol requeue` on its own job, so the
//! task restarts (SLURM_RESTART_COUNT + 1, `--open-mode=append` keeps the log) and resumes from
//! the checkpoint. SIGTERM (scancel, preemption, the time limit itself) is trapped but not
//! forwarded: SLURM sends it to every process of the job, vaepipe included, and vaepipe ends at
//! once (exit 130, no checkpoint) on a second stop signal. The trap only keeps the batch shell
//! alive while vaepipe checkpoints — if the shell died first, SLURM would kill vaepipe with it.
//! After SIGTERM the script does not requeue: SLURM requeues preempted jobs itself, and a
//! cancelled job must stay cancelled.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::quote::{directive_safe, shell_join, shell_quote, shell_quote_str};
use crate::resources::Resources;

/// The exit code with which vaepipe reports "interrupted; checkpoint saved".
pub const EXIT_INTERRUPTED: i32 = 3;

/// The three jobs of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// The stage instances several sweep points share (and what they read), once, first:
    /// `vaepipe run SPEC --shared`. Records of version 1 called it `data` (it ran the data
    /// stage only).
    #[serde(alias = "data")]
    Shared,
    /// One array task per sweep point: `vaepipe run SPEC --point=<id of point i>`.
    Points,
    /// `vaepipe report SPEC` after every task ended (whatever their outcome).
    Report,
}

impl JobKind {
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Shared => "shared",
            JobKind::Points => "points",
            JobKind::Report => "report",
        }
    }

    /// The script's file name in the submission directory.
    pub fn script_name(self) -> String {
        format!("{}.sbatch", self.name())
    }

    /// The `--output` pattern, relative to the submission directory (the jobs' working
    /// directory at start; the script then changes to the submitter's directory).
    pub fn log_pattern(self) -> String {
        match self {
            JobKind::Points => "logs/points-%A_%a.out".into(),
            other => format!("logs/{}-%j.out", other.name()),
        }
    }

    /// The log file of one job (or array task) once its ids are known.
    pub fn log_file(self, job_id: &str, task: Option<usize>) -> PathBuf {
        match (self, task) {
            (JobKind::Points, Some(t)) => PathBuf::from(format!("logs/points-{job_id}_{t}.out")),
            _ => PathBuf::from(format!("logs/{}-{job_id}.out", self.name())),
        }
    }
}

/// Everything a script needs to know. Paths should be absolute: the jobs run elsewhere.
#[derive(Debug, Clone)]
pub struct ScriptInputs<'a> {
    /// The vaepipe binary (std::env::current_exe of the submitting process).
    pub vaepipe: &'a Path,
    /// The submitter's working directory: the jobs `cd` there, so relative paths in `--set`
    /// overrides and the default `reports/` directory mean what they meant at submission.
    pub workdir: &'a Path,
    pub store: &'a Path,
    pub spec: &'a Path,
    pub overrides: &'a [String],
    /// Shown (quoted) in the header comment only.
    pub pipeline: &'a str,
    pub submission: &'a str,
    /// The one job name shared by every job of the submission.
    pub job_name: &'a str,
    /// The submission directory (named in the report job's message when nothing could be
    /// rendered; the scripts and logs are there).
    pub dir: &'a Path,
    /// The sweep points' ids in task order: array task i runs the point with id
    /// `point_ids[i]`. The array has one task per id.
    pub point_ids: &'a [String],
    pub resources: &'a Resources,
    pub tool_version: &'a str,
}

/// The vaepipe command line a job runs. The array task's point is a shell expression: the id
/// at the task's index in the script's `ids` array ([`point_table`]).
pub fn vaepipe_command(kind: JobKind, x: &ScriptInputs<'_>) -> String {
    let mut words: Vec<OsString> = vec![
        x.vaepipe.into(),
        "--color".into(),
        "never".into(),
        "--store".into(),
        x.store.into(),
    ];
    match kind {
        JobKind::Shared | JobKind::Points => words.extend(["run".into(), x.spec.into()]),
        JobKind::Report => words.extend(["report".into(), x.spec.into()]),
    }
    if kind == JobKind::Shared {
        words.push("--shared".into());
    }
    for o in x.overrides {
        words.push(format!("--set={o}").into());
    }
    let mut line = shell_join(&words);
    if kind == JobKind::Points {
        // `--point=…` in one word: an id starting with `-` cannot pass for a flag.
        line.push_str(" --point=\"${ids[$task]}\"");
    }
    line
}

/// The lines of the points script that pick the task's point: a bash array of the point ids
/// in task order (each id one quoted word, whatever it contains) and a checked task index.
/// Points are selected by id, not by index: the spec is read again whenever a task starts or
/// restarts (after a requeue), and if it was edited or reordered meanwhile, index i may name
/// another point; an id that is no longer in the spec makes `vaepipe run` exit with 2.
pub fn point_table(ids: &[String]) -> String {
    let words: Vec<String> = ids.iter().map(|i| shell_quote_str(i)).collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# The sweep points in task order: task i runs the point whose id is ids[i] (by id, so that"
    );
    let _ = writeln!(
        s,
        "# an edited or reordered spec cannot make a task run another point)."
    );
    let _ = writeln!(s, "ids=({})", words.join(" "));
    s.push_str(
        r#"task=${SLURM_ARRAY_TASK_ID:-}
case $task in
  '' | *[!0-9]* | ??????????*) echo "== not an array task of this submission (SLURM_ARRAY_TASK_ID=${task:-unset})" >&2; exit 2 ;;
esac
task=$((10#$task))
if [ "$task" -ge "${#ids[@]}" ]; then
  echo "== array task $task: this submission has ${#ids[@]} points (tasks 0-$(( ${#ids[@]} - 1 )))" >&2
  exit 2
fi
echo "== point ${ids[$task]} (task $task)"
"#,
    );
    s
}

/// The `#SBATCH` options of a job, sorted by option name.
pub fn directives(kind: JobKind, x: &ScriptInputs<'_>) -> Result<Vec<String>, Error> {
    let r = x.resources;
    r.validate()?;
    if !directive_safe(x.job_name) {
        return Err(Error::Invalid {
            what: "job name".into(),
            message: format!("{:?} cannot be written in an #SBATCH line", x.job_name),
        });
    }
    let mut d: Vec<(&str, Option<String>)> = vec![
        ("cpus-per-task", Some(r.cpus_per_task.to_string())),
        ("job-name", Some(x.job_name.to_string())),
        ("open-mode", Some("append".into())),
        ("output", Some(kind.log_pattern())),
        ("requeue", None),
        ("signal", Some(format!("B:USR1@{}", r.grace_s))),
    ];
    if kind == JobKind::Points {
        if x.point_ids.is_empty() {
            return Err(Error::Invalid {
                what: "sweep".into(),
                message: "a submission needs at least one sweep point".into(),
            });
        }
        let limit = r.max_parallel.map(|m| format!("%{m}")).unwrap_or_default();
        d.push(("array", Some(format!("0-{}{limit}", x.point_ids.len() - 1))));
        // If the shared job fails, cancel the array instead of leaving it pending forever.
        d.push(("kill-on-invalid-dep", Some("yes".into())));
    }
    if let Some(p) = &r.partition {
        d.push(("partition", Some(p.clone())));
    }
    if let Some(t) = &r.time {
        d.push(("time", Some(t.clone())));
    }
    if let Some(m) = &r.mem {
        d.push(("mem", Some(m.clone())));
    }
    d.sort_by(|a, b| a.0.cmp(b.0));
    Ok(d.into_iter()
        .map(|(k, v)| match v {
            Some(v) => format!("#SBATCH --{k}={v}"),
            None => format!("#SBATCH --{k}"),
        })
        .collect())
}

/// Renders the batch script of `kind`.
pub fn render(kind: JobKind, x: &ScriptInputs<'_>) -> Result<String, Error> {
    let directives = directives(kind, x)?;
    let what = match kind {
        JobKind::Shared => {
            "the stage instances several sweep points share (runs once, before the array)"
                .to_string()
        }
        JobKind::Points => format!(
            "one array task per sweep point ({} points; task i runs the point ids[i] below)",
            x.point_ids.len()
        ),
        JobKind::Report => "the report, after every array task ended".to_string(),
    };
    let dependency = match kind {
        JobKind::Shared => "",
        JobKind::Points => " [--dependency=afterok:<shared job>]",
        JobKind::Report => " --dependency=afterany:<array job>",
    };
    let mut s = String::new();
    let w = &mut s;
    // Writing to a String cannot fail.
    let _ = writeln!(w, "#!/bin/bash");
    let _ = writeln!(
        w,
        "# Generated by `vaepipe submit` (vaepipe {}): {what}.",
        x.tool_version
    );
    let _ = writeln!(
        w,
        "# Pipeline {}, submission {}.",
        shell_quote_str(x.pipeline),
        x.submission
    );
    let _ = writeln!(
        w,
        "# Submitted from this script's directory as: sbatch --parsable{dependency} {}",
        kind.script_name()
    );
    for line in &directives {
        let _ = writeln!(w, "{line}");
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "cd -- {q} || {{ echo \"vaepipe job: cannot enter the directory vaepipe submit ran in: \"{q} >&2; exit 1; }}",
        q = shell_quote(x.workdir.as_os_str())
    );
    let _ = writeln!(
        w,
        "# vaepipe's threads: one per allocated CPU unless set by the user."
    );
    let _ = writeln!(
        w,
        ": \"${{RAYON_NUM_THREADS:=${{SLURM_CPUS_PER_TASK:-1}}}}\""
    );
    let _ = writeln!(w, "export RAYON_NUM_THREADS");
    let task = if kind == JobKind::Points {
        " task ${SLURM_ARRAY_JOB_ID:-?}_${SLURM_ARRAY_TASK_ID:-?}"
    } else {
        ""
    };
    let _ = writeln!(
        w,
        "echo \"== vaepipe {} job ${{SLURM_JOB_ID:-?}}{task} on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ), restart ${{SLURM_RESTART_COUNT:-0}}\"",
        kind.name()
    );
    if kind == JobKind::Points {
        s.push_str(&point_table(x.point_ids));
    }
    s.push_str(BODY_SIGNALS);
    let _ = writeln!(s, "{} &", vaepipe_command(kind, x));
    s.push_str(BODY_WAIT);
    if kind == JobKind::Report {
        // `vaepipe report` exits with 1 when no stage result exists (typically: the shared job
        // failed and SLURM cancelled the array) or rendering failed: say so in the job's log.
        let _ = writeln!(
            s,
            "if [ \"$rc\" = 1 ]; then\n  echo \"== no report: nothing to render, no stage of the sweep has a result in the store (if the shared job failed, SLURM cancelled the whole array: read its log, logs/shared-<job>.out in \"{q}\"), or rendering failed (see above). \\`vaepipe status SPEC\\` shows each point.\" >&2\nfi",
            q = shell_quote(x.dir.as_os_str())
        );
    }
    let _ = writeln!(s, "exit \"$rc\"");
    Ok(s)
}

/// Traps: remember the first stop signal; forward one USR1 to vaepipe once it runs. SIGTERM
/// reaches vaepipe from SLURM directly (a second signal would end it without a checkpoint), so
/// it is only noted, and the shell keeps waiting for vaepipe's checkpoint.
const BODY_SIGNALS: &str = r#"
signal=""
forwarded=0
child=""
interrupted=0
on_signal() {
  [ -n "$signal" ] || signal=$1
  interrupted=1
  if [ "$1" = TERM ]; then
    echo "== SIGTERM received (SLURM signals vaepipe too): waiting for its checkpoint"
  elif [ -n "$child" ] && [ "$forwarded" = 0 ]; then
    forwarded=1
    echo "== SIG$1 received: asking vaepipe to checkpoint and stop"
    kill -USR1 "$child" 2>/dev/null || true
  fi
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM
[ "$signal" != TERM ] || { echo "== SIGTERM before vaepipe started"; exit 143; }

"#;

/// Wait for vaepipe (again after each trap), then requeue if it stopped on USR1.
const BODY_WAIT: &str = r#"child=$!
[ "$signal" != USR1 ] || on_signal USR1
while :; do
  interrupted=0
  wait "$child"
  rc=$?
  # wait also returns when a trap ran: go on waiting while vaepipe (or its zombie) is there.
  [ "$interrupted" = 1 ] || break
  kill -0 "$child" 2>/dev/null && continue
  wait "$child" 2>/dev/null
  last=$?
  [ "$last" = 127 ] || rc=$last
  break
done
echo "== vaepipe exited with code $rc${signal:+ after SIG$signal}"
if [ "$signal" = USR1 ] && { [ "$rc" = 3 ] || [ "$rc" -gt 128 ]; }; then
  echo "== requeueing job $SLURM_JOB_ID: the next start reuses finished stages (and a checkpoint, if the stage keeps one)"
  if scontrol requeue "$SLURM_JOB_ID"; then
    exit 0
  fi
  echo "== scontrol requeue failed; run the same vaepipe command (or submit again) to resume" >&2
elif [ "$rc" = 3 ]; then
  echo "== stopped (SIG${signal:-?}): a requeue or the next run reuses finished stages (and a checkpoint, if the stage keeps one)"
fi
"#;

#[cfg(test)]
mod tests {
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

    use crate::resources::tests::full;

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
}
