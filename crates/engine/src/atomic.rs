//! Atomic file replacement, the workspace's one pattern (canonical here; vaepipe-data's
//! `atomic.rs` and vaepipe-nn's checkpoint writer are copies of it for crates that do not depend
//! on the engine): a `tempfile::NamedTempFile` in the target's directory, written, fsynced, then
//! persisted (renamed) over the target. Readers never see a half-written file; on error the
//! temporary file is removed and the target is untouched.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::EngineError;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
/// Errors name the file involved. The directory is not synced (see [`sync_dir`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = temp_file_in(dir, path).map_err(|e| EngineError::io(dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| EngineError::io(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| EngineError::io(tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| EngineError::io(path, e.error))?;
    Ok(())
}

/// A hidden temporary file `.<name>.tmp-<random>` next to `path` (stages remove what a kill
/// left of their own files by that prefix), created with the permissions `File::create` gives
/// (0666 less the umask), not tempfile's private 0600: a store is shared.
fn temp_file_in(dir: &Path, path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut b = tempfile::Builder::new();
    let prefix = format!(".{name}.tmp-");
    b.prefix(&prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b.tempfile_in(dir)
}

/// Makes renames in `dir` durable, best effort: some file systems cannot fsync a directory,
/// and the data itself is already synced.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
