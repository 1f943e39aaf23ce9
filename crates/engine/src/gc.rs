//! Garbage collection of a store: every committed entry whose (stage, key) is not kept, and the
//! leftovers of keys not kept (abandoned work directories, logs and failure records of removed
//! keys, stale locks, temporary files), measured and — unless it is a dry run — removed under
//! the store lock held exclusively (`vaepipe gc`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::EngineError;
use crate::store::Store;

/// A committed entry that was (or, in a dry run, would be) removed.
#[derive(Debug, Clone, PartialEq)]
pub struct RemovedEntry {
    pub stage: String,
    pub key: String,
    /// The size of its output directory.
    pub bytes: u64,
}

/// A leftover file or directory that was (or would be) removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Leftover {
    pub path: PathBuf,
    pub bytes: u64,
}

/// What a collection removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub removed: Vec<RemovedEntry>,
    pub leftovers: Vec<Leftover>,
}

impl Store {
    /// Removes every entry whose `(stage, key)` is not in `keep`, then the leftovers of keys not
    /// in `keep` ([`Store::orphans`]); with `dry_run` only measures them (and takes no lock).
    pub fn collect_garbage(
        &self,
        keep: &BTreeSet<(String, String)>,
        dry_run: bool,
    ) -> Result<Collected, EngineError> {
        let _lock = if dry_run {
            None
        } else {
            Some(self.store_lock(true)?)
        };
        let mut out = Collected::default();
        for (stage, key) in self.entries()? {
            if keep.contains(&(stage.clone(), key.clone())) {
                continue;
            }
            let bytes = dir_size(&self.output_dir(&stage, &key));
            if !dry_run {
                self.remove(&stage, &key)?;
            }
            out.removed.push(RemovedEntry { stage, key, bytes });
        }
        for path in self.orphans(keep)? {
            let bytes = if path.is_dir() {
                dir_size(&path)
            } else {
                std::fs::metadata(&path).map_or(0, |m| m.len())
            };
            if !dry_run {
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
            out.leftovers.push(Leftover { path, bytes });
        }
        Ok(out)
    }
}

/// The total size of the files under `dir` (0 if it cannot be read).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += dir_size(&p);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}
