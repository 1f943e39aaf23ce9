//! The content-addressed artifact store: committed outputs under `store/<stage>/<key>/` with a
//! verifiable `manifest.json`, work directories, per-key locks, logs, failure records and the
//! per-slot history that lets `plan` say why something must run.
//!
//! ```text
//! <root>/store/<stage>/<key>/manifest.json + outputs   complete iff the manifest verifies
//! <root>/work/<stage>/<key>/                           in progress (or interrupted: resumable)
//! <root>/locks/<stage>-<key>.lock                      held while an instance is computed;
//!                                                      names its holder (crate::lock)
//! <root>/locks/<stage>-<key>.guard                     held for moments around lock records
//! <root>/logs/<stage>/<key>.log                        every attempt's log, appended
//! <root>/failed/<stage>/<key>.json                     the last failure, until a success
//! <root>/slots/<pipeline>/<point>/<stage>.json         the key last run for this slot
//! ```

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::atomic::sync_dir;
pub use crate::atomic::write_atomic;
use crate::error::EngineError;
use crate::hash::{FileHashCache, hash_file};
pub use crate::lock::InstanceLock;
use crate::lock::{LockEvent, LockHolder, LockOptions};
pub use crate::names::{hostname, slug, unique};

/// One output file as recorded in a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Relative to the output directory, with `/` separators.
    pub path: String,
    pub bytes: u64,
    pub blake3: String,
}

/// Provenance and integrity record of one committed output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub stage: String,
    pub version: u32,
    pub key: String,
    pub params: Value,
    /// Upstream stage name → key (for gather stages: one entry per input, `name[i]`).
    pub inputs: std::collections::BTreeMap<String, String>,
    /// Content hashes of the input files named in `params`.
    pub input_files: std::collections::BTreeMap<String, String>,
    pub files: Vec<FileEntry>,
    pub started: String,
    pub finished: String,
    pub duration_s: f64,
    pub host: String,
    pub tool_version: String,
    pub git_revision: Option<String>,
    /// The sweep points this output served when it was computed.
    #[serde(default)]
    pub points: Vec<crate::stage::PointRef>,
    /// The points each input served in the run that computed this output (what the stage saw
    /// in `Input::points`), so that [`crate::rerun_entry`] can replay it exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_points: Vec<InputPoints>,
    /// Inputs that had no output when this was computed (stages that accept that).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<crate::stage::Missing>,
    /// Where it was computed besides `host`, as the caller described it (top-level keys; under
    /// SLURM `slurm_node`, `slurm_job_id`, `slurm_array_job_id`, `slurm_array_task_id`,
    /// `slurm_restart_count`); empty for a plain local run.
    #[serde(flatten)]
    pub placement: std::collections::BTreeMap<String, Value>,
}

/// The points one input served, as recorded in a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputPoints {
    pub stage: String,
    pub key: String,
    pub points: Vec<crate::stage::PointRef>,
}

/// The last key run for one (pipeline, point, stage) slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotRecord {
    pub key: String,
}

/// A failure, kept until the instance succeeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailureRecord {
    pub stage: String,
    pub key: String,
    pub error: String,
    pub log: PathBuf,
    pub time: String,
    pub host: String,
}

/// Handle on a store directory.
pub struct Store {
    root: PathBuf,
    pub(crate) hashes: FileHashCache,
    /// Outputs verified (or committed) by this process: verified once, not re-hashed.
    verified: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
}

impl Store {
    /// Opens an existing store (for commands that only read: a mistyped `--store` must not
    /// create an empty one).
    pub fn open_existing(root: &Path) -> Result<Store, EngineError> {
        if !root.join("store").is_dir() {
            return Err(EngineError::Plan(format!(
                "no store at {} (nothing has run there yet; pass --store or set VAEPIPE_STORE)",
                root.display()
            )));
        }
        Store::open(root)
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, EngineError> {
        for d in ["store", "work", "locks", "logs", "failed", "slots", "tmp"] {
            fs::create_dir_all(root.join(d)).map_err(|e| EngineError::io(root.join(d), e))?;
        }
        let root = fs::canonicalize(root).map_err(|e| EngineError::io(root, e))?;
        let hashes = FileHashCache::open(root.join("file-hashes.json"));
        Ok(Store {
            root,
            hashes,
            verified: Default::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn output_dir(&self, stage: &str, key: &str) -> PathBuf {
        self.root.join("store").join(stage).join(key)
    }

    pub fn work_dir(&self, stage: &str, key: &str) -> PathBuf {
        self.root.join("work").join(stage).join(key)
    }

    pub fn log_path(&self, stage: &str, key: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(stage)
            .join(format!("{key}.log"))
    }

    pub fn failure_path(&self, stage: &str, key: &str) -> PathBuf {
        self.root
            .join("failed")
            .join(stage)
            .join(format!("{key}.json"))
    }

    fn lock_path(&self, stage: &str, key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{stage}-{key}.lock"))
    }

    fn slot_path(&self, pipeline: &str, point: &str, stage: &str) -> PathBuf {
        self.root
            .join("slots")
            .join(slug(pipeline))
            .join(slug(point))
            .join(format!("{stage}.json"))
    }

    /// The manifest of a committed output, if there is one (not verified).
    pub fn manifest(&self, stage: &str, key: &str) -> Result<Option<Manifest>, EngineError> {
        let path = self.output_dir(stage, key).join("manifest.json");
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| EngineError::Manifest {
                    path,
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(EngineError::io(path, e)),
        }
    }

    /// Checks a committed output against its manifest: `Ok(None)` if it verifies, else why not.
    /// A success is remembered for the life of this handle (outputs are immutable once
    /// committed), so plans and executions hash each output once.
    pub fn verify(&self, stage: &str, key: &str) -> Result<Option<String>, EngineError> {
        let id = (stage.to_string(), key.to_string());
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
        {
            return Ok(None);
        }
        let result = self.verify_files(stage, key)?;
        if result.is_none() {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id);
        }
        Ok(result)
    }

    fn verify_files(&self, stage: &str, key: &str) -> Result<Option<String>, EngineError> {
        let manifest = match self.manifest(stage, key) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(Some("no output yet".into())),
            Err(EngineError::Manifest { message, .. }) => {
                return Ok(Some(format!("manifest unreadable ({message})")));
            }
            Err(e) => return Err(e),
        };
        if manifest.key != key || manifest.stage != stage {
            return Ok(Some("manifest belongs to another key".into()));
        }
        let dir = self.output_dir(stage, key);
        for f in &manifest.files {
            let p = dir.join(&f.path);
            match fs::metadata(&p) {
                Ok(m) if m.len() == f.bytes => {}
                Ok(_) => return Ok(Some(format!("output file {} changed size", f.path))),
                Err(_) => return Ok(Some(format!("output file {} is missing", f.path))),
            }
            if hash_file(&p)? != f.blake3 {
                return Ok(Some(format!(
                    "output file {} does not match its hash",
                    f.path
                )));
            }
        }
        Ok(None)
    }

    /// Takes the lock of one instance, waiting for another process that holds it, with no
    /// placement and only the engine's pid rule for stale holders ([`Store::lock_with`]).
    /// `on_wait` is called once if the lock is busy, with a description of the holder. While
    /// waiting, `cancelled` is polled; `Ok(None)` means it returned true before the lock was free.
    pub fn lock(
        &self,
        stage: &str,
        key: &str,
        on_wait: impl FnOnce(&str),
        cancelled: impl Fn() -> bool,
    ) -> Result<Option<InstanceLock>, EngineError> {
        let mut on_wait = Some(on_wait);
        self.lock_with(
            stage,
            key,
            &LockOptions::default(),
            |e| {
                if let LockEvent::Waiting { holder } = e
                    && let Some(f) = on_wait.take()
                {
                    f(holder)
                }
            },
            cancelled,
        )
    }

    /// Takes the lock of one instance (crate::lock): records who we are (`opts.placement`),
    /// waits while another live process holds it (`on_event` hears whom for, again whenever the
    /// holder changes), and takes it over from a holder that is provably gone.
    pub fn lock_with(
        &self,
        stage: &str,
        key: &str,
        opts: &LockOptions,
        on_event: impl FnMut(LockEvent),
        cancelled: impl Fn() -> bool,
    ) -> Result<Option<InstanceLock>, EngineError> {
        crate::lock::acquire(
            &self.lock_path(stage, key),
            &self.root.join("locks").join(format!("{stage}-{key}.guard")),
            &self.root.join("tmp"),
            opts,
            on_event,
            cancelled,
        )
    }

    /// Who holds the instance's lock right now, if anyone does and says so.
    pub fn lock_holder(&self, stage: &str, key: &str) -> Option<LockHolder> {
        if !self.is_locked(stage, key) {
            return None;
        }
        LockHolder::parse(&fs::read_to_string(self.lock_path(stage, key)).ok()?)
    }

    /// True if another process holds the instance's lock right now.
    pub fn is_locked(&self, stage: &str, key: &str) -> bool {
        let path = self.lock_path(stage, key);
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        }
    }

    /// Shared lock on the whole store for runs; `gc` takes it exclusively.
    pub fn store_lock(&self, exclusive: bool) -> Result<InstanceLock, EngineError> {
        let path = self.root.join("store.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| EngineError::io(&path, e))?;
        if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        }
        .map_err(|e| EngineError::io(&path, e))?;
        Ok(InstanceLock::plain(file))
    }

    /// Publishes a finished work directory: lists and hashes its files, writes the manifest,
    /// then renames the directory into the store. Must be called with the instance's lock held.
    pub fn commit(&self, work: &Path, mut manifest: Manifest) -> Result<Manifest, EngineError> {
        let mut files = Vec::new();
        list_files(work, work, &mut files)?;
        files.sort();
        manifest.files = files
            .into_iter()
            .filter(|rel| rel != "manifest.json")
            .map(|rel| {
                let p = work.join(&rel);
                let bytes = fs::metadata(&p).map_err(|e| EngineError::io(&p, e))?.len();
                Ok(FileEntry {
                    blake3: hash_file(&p)?,
                    path: rel,
                    bytes,
                })
            })
            .collect::<Result<_, EngineError>>()?;
        let bytes =
            serde_json::to_vec_pretty(&manifest).map_err(|e| EngineError::Plan(e.to_string()))?;
        write_atomic(&work.join("manifest.json"), &bytes)?;
        sync_dir(work);
        let dest = self.output_dir(&manifest.stage, &manifest.key);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| EngineError::io(parent, e))?;
        }
        if dest.exists() {
            // An unverifiable leftover (we hold the lock and found no valid output): replace it.
            let trash = self.root.join("tmp").join(format!(
                "{}-{}-{}",
                manifest.stage,
                manifest.key,
                unique()
            ));
            fs::rename(&dest, &trash).map_err(|e| EngineError::io(&dest, e))?;
            let _ = fs::remove_dir_all(&trash);
        }
        fs::rename(work, &dest).map_err(|e| EngineError::io(&dest, e))?;
        if let Some(parent) = dest.parent() {
            sync_dir(parent);
        }
        let _ = fs::remove_file(self.failure_path(&manifest.stage, &manifest.key));
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((manifest.stage.clone(), manifest.key.clone()));
        Ok(manifest)
    }

    pub fn record_failure(&self, rec: &FailureRecord) {
        let path = self.failure_path(&rec.stage, &rec.key);
        if let Some(p) = path.parent() {
            let _ = fs::create_dir_all(p);
        }
        if let Ok(b) = serde_json::to_vec_pretty(rec) {
            let _ = write_atomic(&path, &b);
        }
    }

    pub fn failure(&self, stage: &str, key: &str) -> Option<FailureRecord> {
        fs::read(self.failure_path(stage, key))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn slot(&self, pipeline: &str, point: &str, stage: &str) -> Option<SlotRecord> {
        fs::read(self.slot_path(pipeline, point, stage))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn set_slot(&self, pipeline: &str, point: &str, stage: &str, key: &str) {
        let path = self.slot_path(pipeline, point, stage);
        if let Some(p) = path.parent() {
            let _ = fs::create_dir_all(p);
        }
        if let Ok(b) = serde_json::to_vec_pretty(&SlotRecord {
            key: key.to_string(),
        }) {
            let _ = write_atomic(&path, &b);
        }
    }

    /// Every committed (stage, key) in the store.
    pub fn entries(&self) -> Result<Vec<(String, String)>, EngineError> {
        let mut out = Vec::new();
        let base = self.root.join("store");
        for stage in read_dir_names(&base)? {
            for key in read_dir_names(&base.join(&stage))? {
                out.push((stage.clone(), key));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every key recorded in any slot (the roots `gc` keeps when no spec is given).
    pub fn slot_keys(&self) -> Result<Vec<(String, String)>, EngineError> {
        let mut out = Vec::new();
        let base = self.root.join("slots");
        for pipeline in read_dir_names(&base)? {
            for point in read_dir_names(&base.join(&pipeline))? {
                let dir = base.join(&pipeline).join(&point);
                for file in read_dir_names(&dir)? {
                    if let Some(stage) = file.strip_suffix(".json")
                        && let Ok(b) = fs::read(dir.join(&file))
                        && let Ok(rec) = serde_json::from_slice::<SlotRecord>(&b)
                    {
                        out.push((stage.to_string(), rec.key));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Removes one committed output (and its log and failure record).
    pub fn remove(&self, stage: &str, key: &str) -> Result<(), EngineError> {
        let dir = self.output_dir(stage, key);
        let trash = self
            .root
            .join("tmp")
            .join(format!("gc-{stage}-{key}-{}", unique()));
        fs::rename(&dir, &trash).map_err(|e| EngineError::io(&dir, e))?;
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(stage.to_string(), key.to_string()));
        fs::remove_dir_all(&trash).map_err(|e| EngineError::io(&trash, e))?;
        let _ = fs::remove_file(self.log_path(stage, key));
        let _ = fs::remove_file(self.failure_path(stage, key));
        let _ = fs::remove_dir_all(self.work_dir(stage, key));
        Ok(())
    }

    /// Leftovers of keys not in `keep`: work directories nobody is computing, logs and failure
    /// records of keys without output, stale locks, and temporary files. Call with the store
    /// lock held exclusively (no run in progress) unless `dry_run`.
    pub fn orphans(
        &self,
        keep: &std::collections::BTreeSet<(String, String)>,
    ) -> Result<Vec<PathBuf>, EngineError> {
        let mut out = Vec::new();
        let kept = |stage: &str, key: &str| keep.contains(&(stage.to_string(), key.to_string()));
        for stage in read_dir_names(&self.root.join("work"))? {
            for key in read_dir_names(&self.root.join("work").join(&stage))? {
                if !kept(&stage, &key) && !self.is_locked(&stage, &key) {
                    out.push(self.work_dir(&stage, &key));
                }
            }
        }
        for (dir, suffix) in [("logs", ".log"), ("failed", ".json")] {
            for stage in read_dir_names(&self.root.join(dir))? {
                for file in read_dir_names(&self.root.join(dir).join(&stage))? {
                    let key = file.strip_suffix(suffix).unwrap_or(&file);
                    if !kept(&stage, key) && !self.output_dir(&stage, key).exists() {
                        out.push(self.root.join(dir).join(&stage).join(&file));
                    }
                }
            }
        }
        for file in read_dir_names(&self.root.join("locks"))? {
            let Some((stage, key)) = file
                .strip_suffix(".lock")
                .or_else(|| file.strip_suffix(".guard"))
                .and_then(|f| f.split_once('-'))
            else {
                continue;
            };
            if !kept(stage, key)
                && !self.output_dir(stage, key).exists()
                && !self.is_locked(stage, key)
            {
                out.push(self.root.join("locks").join(&file));
            }
        }
        for name in read_dir_names(&self.root.join("tmp"))? {
            out.push(self.root.join("tmp").join(name));
        }
        Ok(out)
    }

    pub fn save_caches(&self) {
        self.hashes.save();
    }
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, EngineError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::io(dir, e)),
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

fn list_files(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), EngineError> {
    for entry in fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))? {
        let entry = entry.map_err(|e| EngineError::io(dir, e))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(|e| EngineError::io(&path, e))?;
        if ty.is_dir() {
            list_files(base, &path, out)?;
        } else {
            let rel = path.strip_prefix(base).unwrap_or(&path);
            out.push(
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        }
    }
    Ok(())
}
