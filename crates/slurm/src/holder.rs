//! Where this process runs under SLURM (the placement recorded in lock records and manifests)
//! and the SLURM rule for lock holders: a holder whose job has left the queue, has ended, or
//! has been requeued since it took the lock is gone (the engine's `HolderCheck`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use vaepipe_engine::{HolderCheck, Liveness, LockHolder, LockOptions};

use crate::queue::JobState;
use crate::submission::Tools;

/// The SLURM placement of this process, from its environment: `slurm_job_id`,
/// `slurm_array_job_id` and `slurm_array_task_id` (array tasks), `slurm_restart_count` (0 on
/// the first run) and `slurm_node` (`SLURMD_NODENAME`). Empty outside SLURM.
pub fn placement_from_env() -> BTreeMap<String, Value> {
    placement(|k| std::env::var(k).ok())
}

/// [`placement_from_env`] with the environment given by `get`.
pub fn placement(get: impl Fn(&str) -> Option<String>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let number = |k: &str| get(k).and_then(|v| v.trim().parse::<u64>().ok());
    let Some(job) = number("SLURM_JOB_ID") else {
        return out;
    };
    out.insert("slurm_job_id".into(), Value::from(job));
    if let (Some(a), Some(t)) = (number("SLURM_ARRAY_JOB_ID"), number("SLURM_ARRAY_TASK_ID")) {
        out.insert("slurm_array_job_id".into(), Value::from(a));
        out.insert("slurm_array_task_id".into(), Value::from(t));
    }
    out.insert(
        "slurm_restart_count".into(),
        Value::from(number("SLURM_RESTART_COUNT").unwrap_or(0)),
    );
    if let Some(node) = get("SLURMD_NODENAME").filter(|n| !n.trim().is_empty()) {
        out.insert("slurm_node".into(), Value::from(node.trim()));
    }
    out
}

/// How `vaepipe run` takes instance locks: under SLURM it records its job, array task, restart
/// count and node (also in manifests), and a lock held by a SLURM job that has left the queue,
/// ended or been requeued since is taken over (docs/slurm.md, "Locks").
pub fn lock_options() -> LockOptions {
    let placement = placement_from_env();
    LockOptions {
        check: Some(Arc::new(QueueCheck {
            squeue: Tools::default().squeue,
            me: placement.clone(),
        })),
        placement,
        ..Default::default()
    }
}

/// Judges lock holders that ran as SLURM jobs, with one `squeue` call per check.
pub struct QueueCheck {
    /// The squeue to run (usually `squeue`, found on PATH).
    pub squeue: PathBuf,
    /// Our own placement ([`placement_from_env`]): a holder that is an earlier run of our own
    /// job is gone without asking the queue.
    pub me: BTreeMap<String, Value>,
}

fn num(p: &BTreeMap<String, Value>, k: &str) -> Option<u64> {
    p.get(k).and_then(Value::as_u64)
}

impl HolderCheck for QueueCheck {
    fn check(&self, holder: &LockHolder) -> Liveness {
        let h = &holder.placement;
        let Some(job) = num(h, "slurm_job_id") else {
            return Liveness::Unknown;
        };
        let held_at = num(h, "slurm_restart_count").unwrap_or(0);
        if num(&self.me, "slurm_job_id") == Some(job)
            && num(&self.me, "slurm_restart_count").is_some_and(|r| r > held_at)
        {
            return Liveness::Gone(format!(
                "it was an earlier run of this SLURM job {job} (restart {held_at}; this is restart {})",
                num(&self.me, "slurm_restart_count").unwrap_or(0)
            ));
        }
        let id = match (num(h, "slurm_array_job_id"), num(h, "slurm_array_task_id")) {
            (Some(a), Some(t)) => format!("{a}_{t}"),
            _ => job.to_string(),
        };
        let out = match Command::new(&self.squeue)
            .args([
                "--noheader",
                "--states=all",
                "--array",
                &format!("--jobs={id}"),
                "--Format=JobID:|,State:|,RestartCnt:|",
            ])
            .output()
        {
            Ok(o) => o,
            Err(_) => return Liveness::Unknown,
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return if stderr.contains("Invalid job id") {
                Liveness::Gone(format!("its SLURM job {id} has left the queue"))
            } else {
                Liveness::Unknown
            };
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().find_map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            (f.len() >= 3 && f[0] == job.to_string()).then(|| (f[1].to_string(), f[2].to_string()))
        });
        let Some((state, restarts)) = line else {
            return if stdout.trim().is_empty() {
                Liveness::Gone(format!("its SLURM job {id} has left the queue"))
            } else {
                Liveness::Unknown // lines about other jobs: no proof about this one
            };
        };
        let parsed = JobState::parse(&state);
        if !parsed.is_active() {
            return Liveness::Gone(format!("its SLURM job {id} has ended ({state})"));
        }
        match restarts.parse::<u64>() {
            Ok(r) if r > held_at => Liveness::Gone(format!(
                "its SLURM job {id} was requeued since (restart {r}; the holder was restart {held_at})"
            )),
            Ok(_) => Liveness::Alive,
            Err(_) => Liveness::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn placement_names_job_task_restart_and_node() {
        assert!(placement(env(&[])).is_empty(), "outside SLURM: nothing");
        let p = placement(env(&[
            ("SLURM_JOB_ID", "17"),
            ("SLURM_ARRAY_JOB_ID", "15"),
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURMD_NODENAME", "n2"),
        ]));
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"slurm_job_id": 17, "slurm_array_job_id": 15,
                "slurm_array_task_id": 2, "slurm_restart_count": 0, "slurm_node": "n2"})
        );
        let p = placement(env(&[("SLURM_JOB_ID", "9"), ("SLURM_RESTART_COUNT", "3")]));
        assert_eq!(p["slurm_restart_count"], 3);
        assert!(!p.contains_key("slurm_array_task_id"));
    }

    fn holder(placement: BTreeMap<String, Value>) -> LockHolder {
        LockHolder {
            host: "elsewhere".into(),
            pid: 1,
            since: "2026-01-01T00:00:00.000Z".into(),
            pid_start: None,
            boot_id: None,
            pid_ns: None,
            placement,
        }
    }

    /// A stand-in squeue that prints `stdout`, `stderr` and exits with `code`.
    fn fake_squeue(dir: &std::path::Path, stdout: &str, stderr: &str, code: i32) -> PathBuf {
        let p = dir.join("squeue");
        std::fs::write(
            &p,
            format!("#!/bin/sh\nprintf '%s' '{stdout}'\nprintf '%s' '{stderr}' >&2\nexit {code}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Another test thread's fork can briefly hold our write descriptor, and exec then fails
        // with ETXTBSY ("text file busy"; seen once in CI): wait until the script executes.
        for _ in 0..200 {
            match Command::new(&p).output() {
                Err(e) if e.raw_os_error() == Some(26) => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                _ => break,
            }
        }
        p
    }

    #[test]
    fn the_queue_decides_whether_a_slurm_holder_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let h = holder(placement(env(&[
            ("SLURM_JOB_ID", "17"),
            ("SLURM_ARRAY_JOB_ID", "15"),
            ("SLURM_ARRAY_TASK_ID", "2"),
        ])));
        let check = |out: &str, err: &str, code: i32| {
            QueueCheck {
                squeue: fake_squeue(dir.path(), out, err, code),
                me: BTreeMap::new(),
            }
            .check(&h)
        };
        assert_eq!(check("17|RUNNING|0|\n", "", 0), Liveness::Alive);
        assert_eq!(check("17|PENDING|0|\n", "", 0), Liveness::Alive);
        assert!(
            matches!(check("17|NODE_FAIL|0|\n", "", 0), Liveness::Gone(r) if r.contains("ended (NODE_FAIL)"))
        );
        assert!(
            matches!(check("17|PENDING|1|\n", "", 0), Liveness::Gone(r) if r.contains("requeued"))
        );
        assert!(matches!(check("", "", 0), Liveness::Gone(r) if r.contains("left the queue")));
        assert!(matches!(
            check("", "slurm_load_jobs error: Invalid job id specified", 1),
            Liveness::Gone(r) if r.contains("left the queue")
        ));
        // The controller does not answer: no proof either way.
        assert_eq!(
            check(
                "",
                "slurm_load_jobs error: Unable to contact slurm controller",
                1
            ),
            Liveness::Unknown
        );
        // Another job's line is no evidence about ours.
        assert_eq!(check("18|RUNNING|0|\n", "", 0), Liveness::Unknown);
        // A holder that did not run under SLURM: not ours to judge.
        assert_eq!(
            QueueCheck {
                squeue: fake_squeue(dir.path(), "", "", 0),
                me: BTreeMap::new()
            }
            .check(&holder(BTreeMap::new())),
            Liveness::Unknown
        );
    }

    #[test]
    fn an_earlier_run_of_our_own_job_is_gone() {
        let h = holder(placement(env(&[("SLURM_JOB_ID", "17")])));
        let me = placement(env(&[("SLURM_JOB_ID", "17"), ("SLURM_RESTART_COUNT", "1")]));
        let check = QueueCheck {
            squeue: PathBuf::from("/nonexistent/squeue"),
            me,
        };
        assert!(matches!(check.check(&h), Liveness::Gone(r) if r.contains("earlier run")));
        // Same job, same run (or squeue unavailable): unknown.
        let check = QueueCheck {
            squeue: PathBuf::from("/nonexistent/squeue"),
            me: placement(env(&[("SLURM_JOB_ID", "17")])),
        };
        assert_eq!(check.check(&h), Liveness::Unknown);
    }
}
