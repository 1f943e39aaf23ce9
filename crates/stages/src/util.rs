//! Small shared helpers of the stages: derived seeds and publishing a directory.

use std::path::Path;

/// A seed for one purpose, derived from the run's seed: `seed_for(seed, "train/batches")`.
/// Different purposes get independent streams; the same purpose always the same one.
pub fn seed_for(seed: u64, purpose: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(purpose.as_bytes());
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// Copies directory `src` to `dest`, replacing `dest` as a whole: the copy is written to a
/// temporary directory next to `dest` (`tempfile::TempDir`, removed if anything fails) and
/// renamed into place, so readers never see a half-written directory. (Files are replaced with
/// `vaepipe_engine::store::write_atomic`; a directory cannot be persisted over another, hence
/// the move aside.)
pub fn publish_dir(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.new-"))
        .tempdir_in(parent)
        .map_err(|e| anyhow::anyhow!("cannot create a directory in {}: {e}", parent.display()))?;
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    copy_dir(src, tmp.path())?;
    if dest.exists() {
        std::fs::rename(dest, &old)
            .map_err(|e| anyhow::anyhow!("cannot move {} aside: {e}", dest.display()))?;
    }
    std::fs::rename(tmp.path(), dest)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dest.display()))?;
    // Renamed into place: nothing left for the guard to remove.
    let _ = tmp.keep();
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

fn copy_dir(src: &Path, dest: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dest.display()))?;
    for entry in
        std::fs::read_dir(src).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", src.display()))?
    {
        let entry = entry?;
        let to = dest.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else if entry.file_name() != "manifest.json" {
            std::fs::copy(entry.path(), &to)
                .map_err(|e| anyhow::anyhow!("cannot copy {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_by_purpose_and_are_stable() {
        assert_eq!(seed_for(1, "a"), seed_for(1, "a"));
        assert_ne!(seed_for(1, "a"), seed_for(1, "b"));
        assert_ne!(seed_for(1, "a"), seed_for(2, "a"));
    }
}
