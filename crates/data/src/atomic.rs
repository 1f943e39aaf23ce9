//! Atomic file replacement: write `<name>.tmp-<pid>` in the target's directory, flush and
//! fsync it, rename it over the target, then fsync the directory. Readers never see a
//! half-written file; on error the temporary file is removed.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::DataError;

/// Writes `path` atomically with the bytes `write` produces.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let file_name = path.file_name().ok_or_else(|| {
        DataError::InvalidArgument(format!("{} does not name a file", path.display()))
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = write_then_sync(&tmp, write).and_then(|()| {
        fs::rename(&tmp, path)
            .map_err(|e| DataError::io(&tmp, format!("rename to {}", path.display()), e))
    });
    if result.is_err() {
        // Best effort: the temporary may not exist if creating it failed.
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Make the rename durable. Some file systems do not support fsync on directories; the
    // data itself is already synced, so a failure here is not reported.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_then_sync(
    tmp: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let file = File::create(tmp).map_err(|e| DataError::io(tmp, "create", e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    write(&mut out)?;
    out.flush().map_err(|e| DataError::io(tmp, "write", e))?;
    let file = out
        .into_inner()
        .map_err(|e| DataError::io(tmp, "write", e.into_error()))?;
    file.sync_all().map_err(|e| DataError::io(tmp, "fsync", e))
}
