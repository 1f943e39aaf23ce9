//! Canonical JSON and content hashes: the building blocks of cache keys.
//!
//! Canonical JSON sorts object keys and writes numbers in their shortest round-trip form, so two
//! equal parameter sets always hash alike whatever their source order. File references
//! (`{"$file": "<path>"}`) are replaced by `{"$blake3": "<hash>"}` before hashing; file hashes
//! are cached by (path, size, modification time) so unchanged large inputs are not re-read.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::EngineError;

/// Serializes `v` with object keys sorted at every level.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Hex blake3 of a byte string.
pub fn hash_bytes(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

/// All `{"$file": path}` references inside `v`, in document order.
pub fn file_refs(v: &Value) -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect_refs(v, &mut out);
    out
}

fn collect_refs(v: &Value, out: &mut Vec<PathBuf>) {
    match v {
        Value::Object(m) => {
            if let Some(p) = file_ref(v) {
                out.push(p);
            } else {
                m.values().for_each(|x| collect_refs(x, out));
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

fn file_ref(v: &Value) -> Option<PathBuf> {
    match v {
        Value::Object(m) if m.len() == 1 => {
            m.get("$file").and_then(Value::as_str).map(PathBuf::from)
        }
        _ => None,
    }
}

/// `v` with every file reference replaced by the content hash from `hashes`.
pub fn with_file_hashes(v: &Value, hashes: &BTreeMap<PathBuf, String>) -> Value {
    match v {
        Value::Object(m) => {
            if let Some(p) = file_ref(v) {
                let h = hashes.get(&p).cloned().unwrap_or_default();
                return serde_json::json!({ "$blake3": h });
            }
            Value::Object(
                m.iter()
                    .map(|(k, x)| (k.clone(), with_file_hashes(x, hashes)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| with_file_hashes(x, hashes)).collect()),
        other => other.clone(),
    }
}

/// Streams a file through blake3.
pub fn hash_file(path: &Path) -> Result<String, EngineError> {
    let mut f = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| EngineError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// What identifies an unchanged file: size, modification and status-change times, inode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    #[serde(default)]
    ctime_ns: i128,
    #[serde(default)]
    inode: u64,
    blake3: String,
}

#[cfg(unix)]
fn ctime_and_inode(meta: &std::fs::Metadata) -> (i128, u64) {
    use std::os::unix::fs::MetadataExt;
    (
        meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        meta.ino(),
    )
}

#[cfg(not(unix))]
fn ctime_and_inode(_: &std::fs::Metadata) -> (i128, u64) {
    (0, 0)
}

/// Content hashes of input files, cached by (path, size, mtime) in a JSON file of the store.
pub struct FileHashCache {
    path: PathBuf,
    entries: Mutex<BTreeMap<PathBuf, Stamp>>,
}

impl FileHashCache {
    pub fn open(path: PathBuf) -> Self {
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        FileHashCache {
            path,
            entries: Mutex::new(entries),
        }
    }

    /// The content hash of `file`, re-read only if its size or modification time changed.
    pub fn hash(&self, file: &Path) -> Result<String, EngineError> {
        let meta = std::fs::metadata(file).map_err(|e| EngineError::io(file, e))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        let size = meta.len();
        let (ctime_ns, inode) = ctime_and_inode(&meta);
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = entries.get(file)
                && s.size == size
                && s.mtime_ns == mtime_ns
                && s.ctime_ns == ctime_ns
                && s.inode == inode
            {
                return Ok(s.blake3.clone());
            }
        }
        let blake3 = hash_file(file)?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(
            file.to_path_buf(),
            Stamp {
                size,
                mtime_ns,
                ctime_ns,
                inode,
                blake3: blake3.clone(),
            },
        );
        Ok(blake3)
    }

    /// Writes the cache back (atomically; a failure only costs re-hashing later).
    pub fn save(&self) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(bytes) = serde_json::to_vec_pretty(&*entries) {
            let _ = crate::atomic::write_atomic(&self.path, &bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a = json!({"b": 1, "a": {"y": [1, 2.5], "x": "s"}});
        let b = json!({"a": {"x": "s", "y": [1, 2.5]}, "b": 1});
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,2.5]},"b":1}"#);
    }

    #[test]
    fn file_refs_are_found_and_replaced() {
        let v = json!({"train": {"images": {"$file": "/d/a.gz"}, "labels": null}, "list": [{"$file": "/d/b"}]});
        assert_eq!(
            file_refs(&v),
            vec![PathBuf::from("/d/b"), PathBuf::from("/d/a.gz")]
        );
        let mut h = BTreeMap::new();
        h.insert(PathBuf::from("/d/a.gz"), "aa".to_string());
        h.insert(PathBuf::from("/d/b"), "bb".to_string());
        let r = with_file_hashes(&v, &h);
        assert_eq!(r["train"]["images"], json!({"$blake3": "aa"}));
        assert_eq!(r["list"][0], json!({"$blake3": "bb"}));
    }
}
