//! Atomic file replacement: a hidden temporary file `.<name>.tmp-<random>`
//! (`tempfile::NamedTempFile`) in the target's directory is written, flushed and fsynced, then
//! persisted (renamed) over the target, and the directory is fsynced. Readers never see a
//! half-written file; on error the temporary file is removed and the target is untouched. This
//! is the workspace's one pattern; the canonical copy is vaepipe-engine's `atomic.rs` (this
//! crate does not depend on the engine).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::DataError;

/// Writes `path` atomically with the bytes `write` produces.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let Some(file_name) = path.file_name() else {
        return Err(DataError::InvalidArgument(format!(
            "{} does not name a file",
            path.display()
        )));
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = temp_file_in(dir, &file_name.to_string_lossy())
        .map_err(|e| DataError::io(path, "create a temporary file next to it", e))?;
    let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
    write(&mut out)?;
    out.flush()
        .map_err(|e| DataError::io(tmp.path(), "write", e))?;
    drop(out);
    tmp.as_file()
        .sync_all()
        .map_err(|e| DataError::io(tmp.path(), "fsync", e))?;
    tmp.persist(path).map_err(|e| {
        DataError::io(
            e.file.path(),
            format!("rename to {}", path.display()),
            e.error,
        )
    })?;
    // Make the rename durable. Some file systems do not support fsync on directories; the
    // data itself is already synced, so a failure here is not reported.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A hidden temporary file `.<name>.tmp-<random>` in `dir`, with the permissions `File::create`
/// gives (0666 less the umask), not tempfile's private 0600.
fn temp_file_in(dir: &Path, name: &str) -> std::io::Result<tempfile::NamedTempFile> {
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
