//! Per-instance locks that name their holder, and the takeover of a lock whose holder is
//! provably gone.
//!
//! A lock is an exclusive `flock` on `<root>/locks/<stage>-<key>.lock`; the holder writes a
//! [`LockHolder`] record (JSON, one line) into the file and clears it when it releases the lock.
//! A record found in a lock file that was free therefore belongs to a holder that died without
//! releasing it (killed, or its node was lost): that is reported as the *previous* holder.
//!
//! On one machine the kernel releases a dead process's `flock`. On a shared file system it may
//! not (an NFS server keeps a lost client's locks until its lease ends, NFSv3 sometimes until the
//! client reboots). So a waiter asks whether the holder is alive:
//! - the engine's own rule ([`pid_rule`]): a holder on the same host, boot and pid namespace
//!   whose process has exited (or whose pid now belongs to a younger process) is gone;
//! - otherwise an injected [`HolderCheck`] (the binary supplies one that asks SLURM whether the
//!   holder's job is still in the queue); the engine itself knows nothing about batch systems.
//!
//! Only a `Gone` verdict lets a waiter take the lock over: under a short guard lock
//! (`<stage>-<key>.guard`) it checks that the lock file is still the one (same inode, same
//! record) it judged, renames it away, and competes for a fresh lock file like everyone else.
//! Holders write their record under the same guard, so a record written after the verdict is
//! never broken. `Alive` and `Unknown` mean wait, saying whom for.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::EngineError;
use crate::names::{hostname, unique};

/// Who holds (or held) an instance's lock: what the lock file records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockHolder {
    pub host: String,
    pub pid: u32,
    /// When the lock was taken (RFC 3339).
    pub since: String,
    /// The process's start time in clock ticks since boot (`/proc/<pid>/stat`), so that a
    /// reused pid is not taken for the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// The kernel's boot id: a pid means the same process only within one boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The pid namespace (`pid:[4026531836]`): containers sharing a host name do not share pids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<String>,
    /// Where the holder runs, as the caller describes it (e.g. `slurm_job_id`, `slurm_node`).
    #[serde(flatten)]
    pub placement: BTreeMap<String, Value>,
}

impl LockHolder {
    /// This process, placed as `placement` says.
    pub fn me(placement: &BTreeMap<String, Value>) -> LockHolder {
        let pid = std::process::id();
        LockHolder {
            host: hostname(),
            pid,
            since: crate::time::now_rfc3339(),
            pid_start: process_start(pid),
            boot_id: boot_id(),
            pid_ns: pid_namespace(),
            placement: placement.clone(),
        }
    }

    /// The record in a lock file's text, if it holds one.
    pub fn parse(text: &str) -> Option<LockHolder> {
        serde_json::from_str(text.trim()).ok()
    }

    /// `pid 123 on node7 (slurm_job_id=45, slurm_node=n1), since 2026-…`.
    pub fn describe(&self) -> String {
        let place: Vec<String> = self
            .placement
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        let place = if place.is_empty() {
            String::new()
        } else {
            format!(" ({})", place.join(", "))
        };
        format!(
            "pid {} on {}{place}, since {}",
            self.pid, self.host, self.since
        )
    }
}

/// Whether a lock's holder still runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Liveness {
    Alive,
    /// Provably gone, with the evidence (e.g. "SLURM job 45 has left the queue").
    Gone(String),
    /// Cannot tell (another host, no batch system to ask): keep waiting.
    Unknown,
}

/// Decides whether a lock holder that the engine's own [`pid_rule`] cannot judge is alive.
/// Implementations must answer `Gone` only on proof: a wrong `Gone` lets two processes compute
/// the same instance at once.
pub trait HolderCheck: Send + Sync {
    fn check(&self, holder: &LockHolder) -> Liveness;
}

impl<F: Fn(&LockHolder) -> Liveness + Send + Sync> HolderCheck for F {
    fn check(&self, holder: &LockHolder) -> Liveness {
        self(holder)
    }
}

/// How to take locks: who we are, and how to judge other holders.
#[derive(Clone)]
pub struct LockOptions {
    /// Recorded in our lock records (and, by the executor, in manifests).
    pub placement: BTreeMap<String, Value>,
    /// Asked about holders the pid rule cannot judge.
    pub check: Option<Arc<dyn HolderCheck>>,
    /// At most one `check` per this interval while waiting (it may run a command).
    pub check_every: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            placement: BTreeMap::new(),
            check: None,
            check_every: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for LockOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockOptions")
            .field("placement", &self.placement)
            .field("check", &self.check.as_ref().map(|_| "…"))
            .field("check_every", &self.check_every)
            .finish()
    }
}

/// What happened while taking a lock.
#[derive(Debug)]
pub enum LockEvent<'a> {
    /// The lock is busy; we wait for this holder (sent again when the holder changes).
    Waiting { holder: &'a str },
    /// The holder was gone; its lock file was removed and we compete for a new one.
    TakenOver {
        holder: &'a LockHolder,
        reason: &'a str,
    },
}

/// A holder that did not release its lock: taken over from, or found dead in a free lock file.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviousHolder {
    pub holder: LockHolder,
    /// `taken over: <reason>`, or that it ended without releasing the lock.
    pub how: String,
}

/// Held while an instance is computed; released on drop (and by the OS if the process dies).
pub struct InstanceLock {
    file: File,
    /// The lock file, for instance locks (not for the store lock).
    path: Option<PathBuf>,
    previous: Option<PreviousHolder>,
}

impl InstanceLock {
    pub(crate) fn plain(file: File) -> InstanceLock {
        InstanceLock {
            file,
            path: None,
            previous: None,
        }
    }

    /// The holder before us, if it did not release the lock (it died or was taken over from).
    pub fn previous(&self) -> Option<&PreviousHolder> {
        self.previous.as_ref()
    }

    /// False if our lock file is no longer the instance's lock file: another process judged us
    /// gone and took the lock over. Checked before committing, so that we never publish over
    /// the new holder.
    pub fn still_held(&self) -> bool {
        match &self.path {
            Some(p) => same_file(&self.file, p),
            None => true,
        }
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // A cleared record means "released"; a record left behind means the holder died.
        if self.path.is_some() {
            let _ = self.file.set_len(0);
        }
    }
}

/// Takes the lock at `path` (see the module documentation); `guard` is its guard file and
/// `trash` a directory on the same file system for broken lock files.
pub(crate) fn acquire(
    path: &Path,
    guard: &Path,
    trash: &Path,
    opts: &LockOptions,
    mut on_event: impl FnMut(LockEvent),
    cancelled: impl Fn() -> bool,
) -> Result<Option<InstanceLock>, EngineError> {
    let me = LockHolder::me(&opts.placement);
    let mut taken_over: Option<PreviousHolder> = None;
    let mut announced = String::new();
    let mut last_check: Option<Instant> = None;
    loop {
        let file = open_rw(path)?;
        match file.try_lock() {
            Ok(()) => {
                let _guard = guard_lock(guard)?;
                if !same_file(&file, path) {
                    // Broken by a takeover between our open and our lock: compete again.
                    continue;
                }
                let left = read_text(&file);
                let previous = taken_over.take().or_else(|| {
                    LockHolder::parse(&left).map(|holder| PreviousHolder {
                        holder,
                        how: "ended without releasing its lock (killed, or its node was lost)"
                            .into(),
                    })
                });
                let mut record =
                    serde_json::to_string(&me).map_err(|e| EngineError::Plan(e.to_string()))?;
                record.push('\n');
                let mut f = &file;
                f.set_len(0)
                    .and_then(|_| f.seek(SeekFrom::Start(0)))
                    .and_then(|_| f.write_all(record.as_bytes()))
                    .map_err(|e| EngineError::io(path, e))?;
                return Ok(Some(InstanceLock {
                    file,
                    path: Some(path.to_path_buf()),
                    previous,
                }));
            }
            Err(fs::TryLockError::WouldBlock) => {
                let text = read_text(&file);
                let holder = LockHolder::parse(&text);
                if let Some(h) = &holder {
                    let mut verdict = pid_rule(h);
                    if verdict == Liveness::Unknown
                        && let Some(check) = &opts.check
                        && last_check.is_none_or(|t| t.elapsed() >= opts.check_every)
                    {
                        last_check = Some(Instant::now());
                        verdict = check.check(h);
                    }
                    if let Liveness::Gone(reason) = verdict {
                        if break_lock(path, guard, trash, &file, &text)? {
                            on_event(LockEvent::TakenOver {
                                holder: h,
                                reason: &reason,
                            });
                            taken_over = Some(PreviousHolder {
                                holder: h.clone(),
                                how: format!("taken over: {reason}"),
                            });
                        }
                        continue;
                    }
                }
                let desc = match &holder {
                    Some(h) => h.describe(),
                    None if text.trim().is_empty() => {
                        "a process that has not said who it is yet".into()
                    }
                    None => text.trim().to_string(),
                };
                if desc != announced {
                    on_event(LockEvent::Waiting { holder: &desc });
                    announced = desc;
                }
                if cancelled() {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(fs::TryLockError::Error(e)) => return Err(EngineError::io(path, e)),
        }
    }
}

/// Removes the lock file at `path` if it is still `file` with the record `text` we judged.
fn break_lock(
    path: &Path,
    guard: &Path,
    trash: &Path,
    file: &File,
    text: &str,
) -> Result<bool, EngineError> {
    let _guard = guard_lock(guard)?;
    if !same_file(file, path) || fs::read_to_string(path).unwrap_or_default() != text {
        return Ok(false);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let dest = trash.join(format!("stale-{name}-{}", unique()));
    fs::rename(path, &dest).map_err(|e| EngineError::io(path, e))?;
    let _ = fs::remove_file(&dest);
    Ok(true)
}

/// The engine's own liveness rule: a holder on this host, in this boot and pid namespace, is
/// gone iff its pid no longer runs, or runs a process that started at another time.
pub fn pid_rule(h: &LockHolder) -> Liveness {
    if !Path::new("/proc/self/stat").exists() || h.host != hostname() {
        return Liveness::Unknown;
    }
    // Records without boot id or namespace (older ones) cannot prove anything.
    if h.boot_id.is_none()
        || h.boot_id != boot_id()
        || h.pid_ns.is_none()
        || h.pid_ns != pid_namespace()
    {
        return Liveness::Unknown;
    }
    match process_start(h.pid) {
        None => Liveness::Gone(format!("process {} on {} has exited", h.pid, h.host)),
        Some(start) if h.pid_start.is_some_and(|s| s != start) => Liveness::Gone(format!(
            "process {} on {} has exited (its pid now belongs to another process)",
            h.pid, h.host
        )),
        Some(_) => Liveness::Alive,
    }
}

/// Start time (clock ticks since boot) of a running, non-zombie process; `None` if it is gone.
fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); starttime is field 22.
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | Some(&"x")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn pid_namespace() -> Option<String> {
    fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().to_string())
}

fn open_rw(path: &Path) -> Result<File, EngineError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| EngineError::io(path, e))
}

/// The guard serializes record writes and takeovers of one lock; held for microseconds.
fn guard_lock(path: &Path) -> Result<File, EngineError> {
    let f = open_rw(path)?;
    f.lock().map_err(|e| EngineError::io(path, e))?;
    Ok(f)
}

fn read_text(file: &File) -> String {
    let mut s = String::new();
    let mut f = file;
    let _ = f
        .seek(SeekFrom::Start(0))
        .and_then(|_| f.read_to_string(&mut s));
    s
}

/// True if `path` names the same file as the open `file`.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use std::sync::Mutex;

    fn placement(job: u64) -> BTreeMap<String, Value> {
        BTreeMap::from([("slurm_job_id".to_string(), Value::from(job))])
    }

    /// Holds the lock file of (stage, key) through its own open file description, as a process
    /// on another node (or a dead one whose lock the file server still keeps) would, and
    /// writes `holder` into it.
    fn hold(store: &Store, stage: &str, key: &str, holder: &LockHolder) -> File {
        let path = store
            .root()
            .join("locks")
            .join(format!("{stage}-{key}.lock"));
        let f = open_rw(&path).unwrap();
        f.try_lock().expect("the lock is free");
        let mut w = &f;
        w.write_all(serde_json::to_string(holder).unwrap().as_bytes())
            .unwrap();
        f
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    /// Takes the lock with `opts`, giving up after `limit`; returns it and the events seen.
    fn take(
        store: &Store,
        opts: &LockOptions,
        limit: Duration,
    ) -> (Option<InstanceLock>, Vec<String>) {
        let events = Mutex::new(Vec::new());
        let t0 = Instant::now();
        let lock = store
            .lock_with(
                "train",
                "k1",
                opts,
                |e| {
                    events.lock().unwrap().push(match e {
                        LockEvent::Waiting { holder } => format!("waiting for {holder}"),
                        LockEvent::TakenOver { holder, reason } => {
                            format!("took over from {}: {reason}", holder.describe())
                        }
                    })
                },
                || t0.elapsed() > limit,
            )
            .unwrap();
        (lock, events.into_inner().unwrap())
    }

    #[test]
    fn a_lock_names_its_holder_and_a_clean_release_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let opts = LockOptions {
            placement: placement(41),
            ..Default::default()
        };
        let (lock, events) = take(&store, &opts, Duration::from_secs(5));
        let lock = lock.expect("a free lock is taken");
        assert!(events.is_empty(), "{events:?}");
        assert!(lock.previous().is_none());
        let held = store
            .lock_holder("train", "k1")
            .expect("the holder is named");
        assert_eq!(held.pid, std::process::id());
        assert_eq!(held.host, hostname());
        assert_eq!(held.placement["slurm_job_id"], 41);
        assert!(lock.still_held());
        drop(lock);
        let text = fs::read_to_string(store.root().join("locks/train-k1.lock")).unwrap();
        assert_eq!(text, "", "a released lock keeps no holder");
        let (again, _) = take(&store, &opts, Duration::from_secs(5));
        assert!(
            again.unwrap().previous().is_none(),
            "a clean release is no lost run"
        );
    }

    #[test]
    fn a_record_left_in_a_free_lock_is_the_previous_holder_that_died() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut gone = LockHolder::me(&placement(7));
        gone.placement
            .insert("slurm_node".into(), Value::from("n1"));
        // The dead holder's lock was released (by the kernel), its record stayed.
        drop(hold(&store, "train", "k1", &gone));
        let (lock, events) = take(&store, &LockOptions::default(), Duration::from_secs(5));
        let lock = lock.unwrap();
        assert!(events.is_empty(), "{events:?}");
        let prev = lock.previous().expect("the dead holder is reported");
        assert_eq!(prev.holder, gone);
        assert!(prev.how.contains("without releasing"), "{}", prev.how);
    }

    #[test]
    fn a_lock_whose_holder_died_on_this_host_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut dead = LockHolder::me(&BTreeMap::new());
        dead.pid = dead_pid();
        dead.pid_start = Some(1);
        // The lock is still held (as an NFS server keeps a lost client's lock).
        let stale = hold(&store, "train", "k1", &dead);
        let (lock, events) = take(&store, &LockOptions::default(), Duration::from_secs(10));
        let lock = lock.expect("a lock of a dead process is taken over, not waited for");
        let prev = lock.previous().expect("the previous holder is named");
        assert_eq!(prev.holder.pid, dead.pid);
        assert!(
            prev.how.starts_with("taken over: ") && prev.how.contains("has exited"),
            "{}",
            prev.how
        );
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].starts_with("took over from pid "), "{events:?}");
        // The stale file left the path; the new one names us.
        assert!(!same_file(
            &stale,
            &store.root().join("locks/train-k1.lock")
        ));
        assert_eq!(
            store.lock_holder("train", "k1").unwrap().pid,
            std::process::id()
        );
        assert!(lock.still_held());
    }

    #[test]
    fn a_live_holder_on_this_host_is_waited_for_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // This very process (alive) holds it through another file description.
        let live = LockHolder::me(&placement(12));
        let _held = hold(&store, "train", "k1", &live);
        let (lock, events) = take(&store, &LockOptions::default(), Duration::from_millis(600));
        assert!(lock.is_none(), "a live holder is never taken over");
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            events[0].contains(&format!("pid {} on {}", live.pid, live.host))
                && events[0].contains("slurm_job_id=12"),
            "the waiter says whom it waits for: {events:?}"
        );
        assert_eq!(pid_rule(&live), Liveness::Alive);
        // The same pid with another start time is a reused pid: its holder is gone.
        let reused = LockHolder {
            pid_start: live.pid_start.map(|s| s + 1),
            ..live.clone()
        };
        assert!(matches!(pid_rule(&reused), Liveness::Gone(r) if r.contains("another process")));
        // Another host, or a record without boot id / namespace: no proof.
        let remote = LockHolder {
            host: "elsewhere".into(),
            pid: dead_pid(),
            ..live.clone()
        };
        assert_eq!(pid_rule(&remote), Liveness::Unknown);
        let old = LockHolder {
            boot_id: None,
            pid: dead_pid(),
            ..live
        };
        assert_eq!(pid_rule(&old), Liveness::Unknown);
    }

    #[test]
    fn the_injected_check_decides_for_holders_the_pid_rule_cannot_judge() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let remote = LockHolder {
            host: "node-b".into(),
            pid: 4242,
            ..LockHolder::me(&placement(77))
        };
        let stale = hold(&store, "train", "k1", &remote);
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let check = |verdict: Liveness| {
            let asked = asked.clone();
            LockOptions {
                check: Some(Arc::new(move |h: &LockHolder| {
                    asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    assert_eq!(h.placement["slurm_job_id"], 77);
                    verdict.clone()
                })),
                check_every: Duration::from_millis(100),
                ..Default::default()
            }
        };
        // Without a check, or while the check says alive or cannot tell: wait, naming the holder.
        for opts in [
            LockOptions::default(),
            check(Liveness::Alive),
            check(Liveness::Unknown),
        ] {
            let (lock, events) = take(&store, &opts, Duration::from_millis(500));
            assert!(lock.is_none());
            assert!(
                events.len() == 1 && events[0].contains("pid 4242 on node-b"),
                "{events:?}"
            );
        }
        assert!(
            asked.load(std::sync::atomic::Ordering::SeqCst) >= 2,
            "the check was asked"
        );
        let opts = check(Liveness::Gone("its SLURM job 77 has left the queue".into()));
        let (lock, events) = take(&store, &opts, Duration::from_secs(10));
        let lock = lock.expect("a holder proven gone is taken over");
        assert!(
            events[0].contains("its SLURM job 77 has left the queue"),
            "{events:?}"
        );
        assert_eq!(lock.previous().unwrap().holder, remote);
        drop(stale);
    }

    #[test]
    fn a_holder_whose_lock_was_taken_over_knows_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (lock, _) = take(&store, &LockOptions::default(), Duration::from_secs(5));
        let lock = lock.unwrap();
        assert!(lock.still_held());
        let path = store.root().join("locks/train-k1.lock");
        fs::rename(&path, store.root().join("tmp/broken")).unwrap();
        assert!(
            !lock.still_held(),
            "a lock file moved away is no longer ours"
        );
    }
}
