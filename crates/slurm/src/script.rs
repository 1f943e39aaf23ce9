//! The sbatch scripts of a submission: resources (checked before anything is written), the
//! sorted `#SBATCH` lines, and the bash body that runs vaepipe in the background, forwards a
//! stop signal to it, and requeues the job when vaepipe saved a checkpoint (exit code 3).
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

/// The exit code with which vaepipe reports "interrupted; checkpoint saved".
pub const EXIT_INTERRUPTED: i32 = 3;

/// Cluster resources of every job of a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// `--partition` (a name or a comma-separated list); cluster default if absent.
    pub partition: Option<String>,
    /// `--time`: a SLURM time limit (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`).
    pub time: Option<String>,
    /// `--cpus-per-task` (also vaepipe's thread count through RAYON_NUM_THREADS).
    pub cpus_per_task: u32,
    /// `--mem` per node: a number with an optional K/M/G/T suffix (SLURM's default unit is M).
    pub mem: Option<String>,
    /// Seconds between the USR1 warning and the time limit (`--signal=B:USR1@GRACE`).
    pub grace_s: u32,
    /// At most this many array tasks at once (`--array=0-N%MAX`); no limit if absent.
    pub max_parallel: Option<usize>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            partition: None,
            time: None,
            cpus_per_task: 1,
            mem: None,
            grace_s: 120,
            max_parallel: None,
        }
    }
}

impl Resources {
    /// Checks every value before it is written into an `#SBATCH` line.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |what: &str, message: String| {
            Err(Error::Invalid {
                what: what.to_string(),
                message,
            })
        };
        if let Some(p) = &self.partition
            && !directive_safe(p)
        {
            return invalid(
                "--partition",
                format!("{p:?} is not a partition name (letters, digits, `_.-`, comma-separated)"),
            );
        }
        if let Some(t) = &self.time {
            let Some(limit) = parse_time_limit(t) else {
                return invalid(
                    "--time",
                    format!("{t:?} is not a SLURM time limit (e.g. 04:00:00, 90, 1-12:00:00)"),
                );
            };
            if let Some(limit) = limit
                && u64::from(self.grace_s) >= limit
            {
                return invalid(
                    "--grace",
                    format!(
                        "{} s of warning before a {t} time limit leaves no time to work; lower --grace or raise --time",
                        self.grace_s
                    ),
                );
            }
        }
        if self.cpus_per_task == 0 {
            return invalid("--cpus-per-task", "must be at least 1".into());
        }
        if let Some(m) = &self.mem
            && !mem_ok(m)
        {
            return invalid(
                "--mem",
                format!("{m:?} is not a memory size (e.g. 4000, 4G, 512M)"),
            );
        }
        if self.grace_s == 0 || self.grace_s > 65_535 {
            return invalid(
                "--grace",
                format!("{} s: must be between 1 and 65535 seconds", self.grace_s),
            );
        }
        if self.max_parallel == Some(0) {
            return invalid("--max-parallel", "must be at least 1".into());
        }
        Ok(())
    }
}

fn mem_ok(m: &str) -> bool {
    let digits = m
        .strip_suffix(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't'])
        .unwrap_or(m);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Parses a SLURM time limit into seconds: `Some(None)` for `UNLIMITED`/`INFINITE`, `None` if
/// the text is not a time limit. Formats (sbatch(1)): `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`.
pub fn parse_time_limit(t: &str) -> Option<Option<u64>> {
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinite") {
        return Some(None);
    }
    let num = |s: &str| -> Option<u64> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(num(d)?), r),
        None => (None, t),
    };
    let parts: Vec<u64> = rest.split(':').map(num).collect::<Option<_>>()?;
    let secs = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86_400 + h * 3600,
        (Some(d), [h, m]) => d * 86_400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86_400 + h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some(Some(secs))
}

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
mod tests;
