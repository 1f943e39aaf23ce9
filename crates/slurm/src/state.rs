//! One sweep point's state for `vaepipe status`, from two sources: the store (what is
//! committed, failed, locked or checkpointed) and the queue (what SLURM is doing with the
//! point's array task). The store wins when it knows the answer (done; failed while no task
//! runs); otherwise the queue says whether the point is queued, running, requeued or
//! preempted.

use serde::Serialize;
use vaepipe_engine::InstanceState;

use crate::queue::{JobState, QueueEntry};

/// A point's state in the store alone (aggregated over the point's stage instances).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreState {
    Done,
    /// A process holds the lock of one of its instances.
    Running,
    Failed,
    /// A work directory (checkpoint) waits to be resumed.
    Interrupted,
    Missing,
}

impl StoreState {
    pub const ALL: [StoreState; 5] = [
        StoreState::Done,
        StoreState::Running,
        StoreState::Failed,
        StoreState::Interrupted,
        StoreState::Missing,
    ];

    /// The state names of `vaepipe status` (`InstanceState::name`): `done`, `running`, `failed`,
    /// `interrupted`, `missing`. A name this crate does not know (a newer CLI's) counts as
    /// `missing`: not done, and nothing known to be under way.
    pub fn parse(s: &str) -> StoreState {
        match s {
            "done" => StoreState::Done,
            "running" => StoreState::Running,
            "failed" => StoreState::Failed,
            "interrupted" => StoreState::Interrupted,
            "missing" => StoreState::Missing,
            _ => StoreState::Missing,
        }
    }

    /// The name `vaepipe status` prints (what [`StoreState::parse`] reads).
    pub fn name(self) -> &'static str {
        match self {
            StoreState::Done => "done",
            StoreState::Running => "running",
            StoreState::Failed => "failed",
            StoreState::Interrupted => "interrupted",
            StoreState::Missing => "missing",
        }
    }

    /// Aggregates the states of a point's instances: failed > running > interrupted >
    /// missing > done (done only if every instance is).
    pub fn aggregate(states: impl IntoIterator<Item = StoreState>) -> StoreState {
        let mut all_done = true;
        let mut worst = StoreState::Done;
        let rank = |s: StoreState| match s {
            StoreState::Failed => 4,
            StoreState::Running => 3,
            StoreState::Interrupted => 2,
            StoreState::Missing => 1,
            StoreState::Done => 0,
        };
        for s in states {
            all_done &= s == StoreState::Done;
            if rank(s) > rank(worst) {
                worst = s;
            }
        }
        if all_done { StoreState::Done } else { worst }
    }
}

impl From<&InstanceState> for StoreState {
    /// The store's state of one instance ([`vaepipe_engine::Store::state`]).
    fn from(s: &InstanceState) -> StoreState {
        match s {
            InstanceState::Done => StoreState::Done,
            InstanceState::Running => StoreState::Running,
            InstanceState::Failed(_) => StoreState::Failed,
            InstanceState::Interrupted => StoreState::Interrupted,
            InstanceState::Missing => StoreState::Missing,
        }
    }
}

/// What `vaepipe status` shows for a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PointState {
    Done,
    Queued,
    Running,
    /// Requeued after a stop (USR1/time limit/`scontrol requeue`): pending again, resumes.
    Requeued,
    Preempted,
    Failed,
    Cancelled,
    /// Checkpointed, and no task is queued to resume it.
    Interrupted,
    /// Nothing in the store and nothing in the queue.
    Missing,
}

impl PointState {
    pub fn name(self) -> &'static str {
        match self {
            PointState::Done => "done",
            PointState::Queued => "queued",
            PointState::Running => "running",
            PointState::Requeued => "requeued",
            PointState::Preempted => "preempted",
            PointState::Failed => "failed",
            PointState::Cancelled => "cancelled",
            PointState::Interrupted => "interrupted",
            PointState::Missing => "missing",
        }
    }
}

/// Combines the store's view of a point with its array task's queue entry (if the queue still
/// knows the task).
pub fn point_state(store: StoreState, task: Option<&QueueEntry>) -> PointState {
    if store == StoreState::Done {
        return PointState::Done;
    }
    let Some(t) = task else {
        return match store {
            StoreState::Done => PointState::Done,
            StoreState::Running => PointState::Running,
            StoreState::Failed => PointState::Failed,
            StoreState::Interrupted => PointState::Interrupted,
            StoreState::Missing => PointState::Missing,
        };
    };
    match &t.state {
        JobState::Running | JobState::Suspended => PointState::Running,
        JobState::Pending if t.restarts > 0 => PointState::Requeued,
        JobState::Pending => PointState::Queued,
        JobState::Requeued => PointState::Requeued,
        JobState::Preempted => PointState::Preempted,
        JobState::Failed | JobState::Timeout => PointState::Failed,
        JobState::Cancelled if store == StoreState::Failed => PointState::Failed,
        JobState::Cancelled => PointState::Cancelled,
        // The task ended but the point is not done: the store says why.
        JobState::Completed | JobState::Other(_) => match store {
            StoreState::Failed => PointState::Failed,
            StoreState::Running => PointState::Running,
            StoreState::Interrupted => PointState::Interrupted,
            _ => PointState::Missing,
        },
    }
}

/// A short description of a queue entry: `13_2 PENDING (Dependency), restart 1, exit 1`.
pub fn describe(t: &QueueEntry) -> String {
    let mut s = format!("{} {}", t.display_id(), t.raw_state);
    if !t.reason.is_empty() && t.reason != "None" {
        s.push_str(&format!(" ({})", t.reason));
    }
    if t.restarts > 0 {
        s.push_str(&format!(", restart {}", t.restarts));
    }
    if !t.state.is_active() {
        match (t.exit_code, t.signal) {
            (_, Some(sig)) => s.push_str(&format!(", signal {sig}")),
            (Some(c), None) if c != 0 => s.push_str(&format!(", exit {c}")),
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state: &str, restarts: u32) -> QueueEntry {
        QueueEntry {
            job_id: "20".into(),
            array_job_id: "13".into(),
            array_task: Some(2),
            state: JobState::parse(state),
            raw_state: state.into(),
            reason: "None".into(),
            restarts,
            exit_code: Some(0),
            signal: None,
            name: "n".into(),
        }
    }

    #[test]
    fn the_store_decides_done_and_the_queue_the_rest() {
        use PointState as P;
        use StoreState as S;
        assert_eq!(point_state(S::Done, Some(&task("FAILED", 0))), P::Done);
        assert_eq!(
            point_state(S::Missing, Some(&task("PENDING", 0))),
            P::Queued
        );
        assert_eq!(
            point_state(S::Interrupted, Some(&task("PENDING", 1))),
            P::Requeued
        );
        assert_eq!(
            point_state(S::Interrupted, Some(&task("REQUEUED", 1))),
            P::Requeued
        );
        assert_eq!(
            point_state(S::Running, Some(&task("RUNNING", 1))),
            P::Running
        );
        assert_eq!(
            point_state(S::Missing, Some(&task("PREEMPTED", 0))),
            P::Preempted
        );
        assert_eq!(point_state(S::Failed, Some(&task("FAILED", 0))), P::Failed);
        assert_eq!(
            point_state(S::Missing, Some(&task("TIMEOUT", 0))),
            P::Failed
        );
        assert_eq!(
            point_state(S::Failed, Some(&task("COMPLETED", 0))),
            P::Failed
        );
        assert_eq!(
            point_state(S::Missing, Some(&task("CANCELLED", 0))),
            P::Cancelled
        );
        // A failure recorded by an earlier attempt does not hide a task that is retrying.
        assert_eq!(
            point_state(S::Failed, Some(&task("RUNNING", 0))),
            P::Running
        );
        // Without the queue (job forgotten by slurmctld, or no SLURM), the store alone.
        assert_eq!(point_state(S::Failed, None), P::Failed);
        assert_eq!(point_state(S::Interrupted, None), P::Interrupted);
        assert_eq!(point_state(S::Missing, None), P::Missing);
    }

    #[test]
    fn aggregation_reports_the_most_important_instance_state() {
        use StoreState as S;
        assert_eq!(S::aggregate([S::Done, S::Done]), S::Done);
        assert_eq!(S::aggregate([S::Done, S::Missing]), S::Missing);
        assert_eq!(
            S::aggregate([S::Done, S::Interrupted, S::Missing]),
            S::Interrupted
        );
        assert_eq!(S::aggregate([S::Running, S::Failed]), S::Failed);
        assert_eq!(S::aggregate([]), S::Done);
        assert_eq!(S::parse("interrupted"), S::Interrupted);
        assert_eq!(S::parse("???"), S::Missing);
    }

    #[test]
    fn every_state_name_of_the_cli_is_parsed() {
        use StoreState as S;
        // The names `vaepipe status` prints (vaepipe_engine::InstanceState::name).
        let cli = ["done", "running", "failed", "interrupted", "missing"];
        let parsed: Vec<S> = cli.iter().map(|n| S::parse(n)).collect();
        assert_eq!(parsed, S::ALL);
        let engine = [
            InstanceState::Done,
            InstanceState::Running,
            InstanceState::Failed(vaepipe_engine::store::FailureRecord {
                stage: "train".into(),
                key: "k".into(),
                error: "e".into(),
                log: "l".into(),
                time: "t".into(),
                host: "h".into(),
            }),
            InstanceState::Interrupted,
            InstanceState::Missing,
        ];
        for (i, s) in engine.iter().enumerate() {
            assert_eq!(s.name(), cli[i]);
            assert_eq!(S::from(s), S::ALL[i]);
        }
        for s in S::ALL {
            assert_eq!(S::parse(s.name()), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }

    #[test]
    fn descriptions_name_the_task_reason_restarts_and_exit() {
        let mut t = task("PENDING", 1);
        t.reason = "BeginTime".into();
        assert_eq!(describe(&t), "13_2 PENDING (BeginTime), restart 1");
        let mut f = task("FAILED", 0);
        f.exit_code = Some(1);
        assert_eq!(describe(&f), "13_2 FAILED, exit 1");
    }
}
