//! Queue queries: ONE `squeue` call per poll for a whole submission (every job of a submission
//! shares one job name), parsed into [`QueueEntry`]s with SLURM's job states mapped to
//! [`JobState`]. `squeue -t all` also lists finished jobs while the controller remembers them
//! (MinJobAge, 300 s by default); after that the store alone tells what happened.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A SLURM job state (squeue's `%T`, scontrol's `JobState`), coarsened where vaepipe does not
/// care about the difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    /// RUNNING, and the short transitional states of a running job (CONFIGURING, COMPLETING,
    /// SIGNALING, STAGE_OUT, RESIZING).
    Running,
    Suspended,
    Completed,
    Cancelled,
    /// FAILED, BOOT_FAIL, NODE_FAIL, OUT_OF_MEMORY, DEADLINE.
    Failed,
    Timeout,
    Preempted,
    /// REQUEUED, REQUEUE_HOLD, REQUEUE_FED: on its way back to the queue.
    Requeued,
    /// Anything else (kept verbatim).
    Other(String),
}

impl JobState {
    /// Parses a state as squeue or scontrol prints it (`CANCELLED by 0` included).
    pub fn parse(s: &str) -> JobState {
        let word = s
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('+')
            .to_ascii_uppercase();
        match word.as_str() {
            "PENDING" | "PD" => JobState::Pending,
            "RUNNING" | "R" | "CONFIGURING" | "CF" | "COMPLETING" | "CG" | "SIGNALING" | "SI"
            | "STAGE_OUT" | "SO" | "RESIZING" | "RS" => JobState::Running,
            "SUSPENDED" | "S" | "STOPPED" | "ST" => JobState::Suspended,
            "COMPLETED" | "CD" => JobState::Completed,
            "CANCELLED" | "CA" => JobState::Cancelled,
            "FAILED" | "F" | "BOOT_FAIL" | "BF" | "NODE_FAIL" | "NF" | "OUT_OF_MEMORY" | "OOM"
            | "DEADLINE" | "DL" => JobState::Failed,
            "TIMEOUT" | "TO" => JobState::Timeout,
            "PREEMPTED" | "PR" => JobState::Preempted,
            "REQUEUED" | "RQ" | "REQUEUE_HOLD" | "RH" | "REQUEUE_FED" | "RF" => JobState::Requeued,
            _ => JobState::Other(s.trim().to_string()),
        }
    }

    /// Still in the queue or running (the job may yet produce output).
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            JobState::Pending | JobState::Running | JobState::Suspended | JobState::Requeued
        )
    }
}

/// One job or array task as the queue reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// This job's own id (array tasks have their own, too).
    pub job_id: String,
    /// The array's job id (equal to `job_id` for a job that is not an array task).
    pub array_job_id: String,
    /// The array index, for array tasks.
    pub array_task: Option<usize>,
    pub state: JobState,
    /// The state as SLURM printed it.
    pub raw_state: String,
    /// Why it is pending (`Dependency`, `Priority`, `BeginTime`, …) or `None`.
    pub reason: String,
    /// How often SLURM restarted it (requeues).
    pub restarts: u32,
    /// Exit code of the batch script, once it ended.
    pub exit_code: Option<i32>,
    /// Signal that ended the batch script, if any.
    pub signal: Option<i32>,
    pub name: String,
}

impl QueueEntry {
    /// `ARRAY_TASK` for array tasks (`123_4`), else the job id.
    pub fn display_id(&self) -> String {
        match self.array_task {
            Some(t) => format!("{}_{t}", self.array_job_id),
            None => self.job_id.clone(),
        }
    }
}

/// squeue's `--Format`: `|`-terminated fields (no padding, no truncation); the job name last.
pub const SQUEUE_FIELDS: &str =
    "JobID:|,ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,RestartCnt:|,exit_code:|,Name:";

/// The one squeue command of a poll: every job (array tasks one per line, finished ones too)
/// whose name is `job_name`.
pub fn squeue_args(job_name: &str) -> Vec<String> {
    vec![
        "--noheader".into(),
        "--states=all".into(),
        "--array".into(),
        format!("--name={job_name}"),
        format!("--Format={SQUEUE_FIELDS}"),
    ]
}

/// Runs the query with the squeue at `squeue` (usually just `"squeue"`, found on PATH).
pub fn query(squeue: &Path, job_name: &str) -> Result<Vec<QueueEntry>, Error> {
    let args = squeue_args(job_name);
    let out = Command::new(squeue)
        .args(&args)
        .output()
        .map_err(|e| Error::Command {
            command: format!("{} {}", squeue.display(), args.join(" ")),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "squeue not found: is this a SLURM host?".into()
            } else {
                e.to_string()
            },
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{} {}", squeue.display(), args.join(" ")),
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    parse_squeue(&String::from_utf8_lossy(&out.stdout))
}

/// Parses the output of [`squeue_args`]. Pending array ranges (`[2-5%2]`, `1,3`) are
/// expanded into one entry per task.
pub fn parse_squeue(text: &str) -> Result<Vec<QueueEntry>, Error> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| Error::Parse {
            what: "squeue output".into(),
            message: format!("line {}: {what}: {line:?}", n + 1),
        };
        let f: Vec<&str> = line.splitn(8, '|').map(str::trim).collect();
        if f.len() != 8 {
            return Err(bad("expected 8 `|`-separated fields"));
        }
        let restarts = f[5].parse::<u32>().map_err(|_| bad("restart count"))?;
        let (exit_code, signal) = decode_exit(f[6]);
        let tasks: Vec<Option<usize>> = if matches!(f[2], "" | "N/A") {
            vec![None]
        } else {
            expand_tasks(f[2])
                .ok_or_else(|| bad("array task id"))?
                .into_iter()
                .map(Some)
                .collect()
        };
        for t in tasks {
            out.push(QueueEntry {
                job_id: f[0].to_string(),
                array_job_id: if f[1].is_empty() {
                    f[0].to_string()
                } else {
                    f[1].to_string()
                },
                array_task: t,
                state: JobState::parse(f[3]),
                raw_state: f[3].to_string(),
                reason: f[4].to_string(),
                restarts,
                exit_code,
                signal,
                name: f[7].to_string(),
            });
        }
    }
    Ok(out)
}

/// squeue prints the raw wait status (`exit << 8 | signal`) or `code:signal`.
fn decode_exit(s: &str) -> (Option<i32>, Option<i32>) {
    if let Some((c, sig)) = s.split_once(':') {
        let c = c.parse().ok();
        let sig = sig.parse::<i32>().ok().filter(|s| *s != 0);
        return (c, sig);
    }
    match s.parse::<i32>() {
        Ok(raw) if raw & 0x7f != 0 => (None, Some(raw & 0x7f)),
        Ok(raw) => (Some(raw >> 8), None),
        Err(_) => (None, None),
    }
}

/// `3`, `[0-3%2]`, `1,4-6`, `0-10:2` → task indices.
fn expand_tasks(s: &str) -> Option<Vec<usize>> {
    let s = s.trim_start_matches('[').trim_end_matches(']');
    let s = s.split('%').next()?;
    let mut out = Vec::new();
    for part in s.split(',') {
        let (range, step) = match part.split_once(':') {
            Some((r, st)) => (r, st.parse::<usize>().ok().filter(|s| *s > 0)?),
            None => (part, 1),
        };
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                if b < a || b - a > 1_000_000 {
                    return None;
                }
                out.extend((a..=b).step_by(step));
            }
            None => out.push(range.parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_what_vaepipe_distinguishes() {
        assert_eq!(JobState::parse("PENDING"), JobState::Pending);
        assert_eq!(JobState::parse("COMPLETING"), JobState::Running);
        assert_eq!(JobState::parse("CANCELLED by 0"), JobState::Cancelled);
        assert_eq!(JobState::parse("CANCELLED+"), JobState::Cancelled);
        assert_eq!(JobState::parse("OUT_OF_MEMORY"), JobState::Failed);
        assert_eq!(JobState::parse("NODE_FAIL"), JobState::Failed);
        assert_eq!(JobState::parse("REQUEUE_HOLD"), JobState::Requeued);
        assert_eq!(JobState::parse("PREEMPTED"), JobState::Preempted);
        assert_eq!(JobState::parse("TIMEOUT"), JobState::Timeout);
        assert_eq!(
            JobState::parse("WEIRD_NEW_STATE"),
            JobState::Other("WEIRD_NEW_STATE".into())
        );
        assert!(JobState::Requeued.is_active() && !JobState::Completed.is_active());
    }

    #[test]
    fn squeue_lines_parse_including_exit_codes_and_pending_ranges() {
        // As slurm 22.05 prints SQUEUE_FIELDS (exit 7 is the raw status 1792).
        let text = "\
12|12|N/A|COMPLETED|None|0|0|vaepipe-x-1
14|13|0|RUNNING|None|1|0|vaepipe-x-1
13|13|[1-3%2]|PENDING|JobArrayTaskLimit|0|0|vaepipe-x-1
17|13|4|FAILED|NonZeroExitCode|0|1792|vaepipe-x-1
18|13|5|CANCELLED|None|0|15|vaepipe-x-1
19|19|N/A|PENDING|Dependency|0|0|vaepipe-x-1
";
        let e = parse_squeue(text).unwrap();
        assert_eq!(e.len(), 8);
        assert_eq!(e[0].array_task, None);
        assert_eq!(e[0].display_id(), "12");
        assert_eq!(
            (e[1].display_id(), e[1].restarts, &e[1].state),
            ("13_0".to_string(), 1, &JobState::Running)
        );
        assert_eq!(
            e[2..5].iter().map(|x| x.array_task).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3)]
        );
        assert_eq!(e[4].reason, "JobArrayTaskLimit");
        assert_eq!(
            (e[5].exit_code, e[5].signal, &e[5].state),
            (Some(7), None, &JobState::Failed)
        );
        assert_eq!((e[6].exit_code, e[6].signal), (None, Some(15)));
        assert_eq!(e[7].reason, "Dependency");
    }

    #[test]
    fn malformed_output_is_an_error_not_a_panic() {
        for bad in [
            "12|12|N/A|RUNNING",
            "12|12|x|RUNNING|None|0|0|n",
            "12|12|N/A|RUNNING|None|many|0|n",
            "1|1|[5-2]|PENDING|None|0|0|n",
        ] {
            assert!(parse_squeue(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_squeue("").unwrap(), Vec::new());
    }

    #[test]
    fn task_ranges_expand() {
        assert_eq!(expand_tasks("[0-3%2]"), Some(vec![0, 1, 2, 3]));
        assert_eq!(expand_tasks("1,4-6"), Some(vec![1, 4, 5, 6]));
        assert_eq!(expand_tasks("0-6:3"), Some(vec![0, 3, 6]));
        assert_eq!(expand_tasks("7"), Some(vec![7]));
        assert_eq!(expand_tasks("a"), None);
    }

    #[test]
    fn the_query_is_one_command_for_the_whole_submission() {
        let a = squeue_args("vaepipe-x-1");
        assert!(a.contains(&"--name=vaepipe-x-1".to_string()));
        assert!(a.contains(&"--states=all".to_string()) && a.contains(&"--array".to_string()));
        assert!(
            !a.iter().any(|x| x.starts_with("--jobs")),
            "never one query per job"
        );
    }
}
