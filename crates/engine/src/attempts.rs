//! The attempt records of an instance's log: every attempt at computing an instance writes a
//! line `== attempt {json}` after its human-readable header, saying where it ran and whom it
//! took over from. `vaepipe status` reads them back ([`attempts`]) to say where a point ran,
//! failed and resumed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::lock::LockHolder;
use crate::store::Store;

/// One attempt at computing an instance, as recorded in the instance's log (a line
/// `== attempt {json}` after the human-readable header): where it ran and, if the holder before
/// it did not release the lock, who that was. `vaepipe status` reads these to say where a point
/// ran, failed and resumed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Attempt {
    pub started: String,
    /// It continued the work directory of an earlier attempt.
    pub resumed: bool,
    pub host: String,
    pub pid: u32,
    #[serde(flatten)]
    pub placement: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousAttempt>,
}

/// The holder before an attempt, when it did not release the lock (it died, or was taken over).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PreviousAttempt {
    pub holder: LockHolder,
    pub how: String,
}

const ATTEMPT_PREFIX: &str = "== attempt ";

pub(crate) fn attempt_line(a: &Attempt) -> String {
    format!(
        "{ATTEMPT_PREFIX}{}",
        serde_json::to_string(a).unwrap_or_default()
    )
}

/// The attempts recorded in an instance's log, oldest first, each with the log lines that
/// followed it (until the next attempt).
pub fn attempts(store: &Store, stage: &str, key: &str) -> Vec<(Attempt, Vec<String>)> {
    let text = std::fs::read_to_string(store.log_path(stage, key)).unwrap_or_default();
    let mut out: Vec<(Attempt, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(json) = line.strip_prefix(ATTEMPT_PREFIX)
            && let Ok(a) = serde_json::from_str::<Attempt>(json)
        {
            out.push((a, Vec::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push(line.to_string());
        }
    }
    out
}
