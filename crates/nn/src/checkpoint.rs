//! Checkpoint files in the safetensors format (`f32` tensors plus string metadata).
//!
//! Writing is atomic (temporary file in the same directory, fsync, rename, fsync of the
//! directory) and byte-deterministic: tensors are laid out sorted by name and the JSON header
//! has sorted keys, so equal inputs give identical files. Reading uses the `safetensors` crate
//! (0.3), which validates the header and offsets; every failure names the file and, where one
//! is at fault, the tensor.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use ::safetensors::tensor::{Dtype, SafeTensorError, SafeTensors};

use crate::error::{NnError, Result};
use crate::named::{NamedTensor, numel};

/// Key under which safetensors stores the string metadata.
const METADATA_KEY: &str = "__metadata__";

fn ckpt_err(path: &Path, reason: impl Into<String>) -> NnError {
    NnError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> NnError + use<> {
    let path = path.to_path_buf();
    move |source| NnError::Io { path, op, source }
}

/// Writes `tensors` and `metadata` to `path` atomically (an existing file is replaced only once
/// the new one is complete and synced).
pub fn save_safetensors(
    path: impl AsRef<Path>,
    tensors: &[NamedTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let mut sorted: Vec<&NamedTensor> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        header.insert(METADATA_KEY.into(), serde_json::Value::Object(meta));
    }
    let mut offset = 0usize;
    for (i, t) in sorted.iter().enumerate() {
        if t.name.is_empty() || t.name == METADATA_KEY {
            return Err(ckpt_err(path, format!("invalid tensor name {:?}", t.name)));
        }
        if i > 0 && sorted[i - 1].name == t.name {
            return Err(ckpt_err(
                path,
                format!("tensor `{}` appears more than once", t.name),
            ));
        }
        if numel(&t.shape) != Some(t.data.len()) {
            return Err(ckpt_err(
                path,
                format!(
                    "tensor `{}`: shape {:?} does not match its {} values",
                    t.name,
                    t.shape,
                    t.data.len()
                ),
            ));
        }
        let end = offset + 4 * t.data.len();
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": "F32",
                "shape": t.shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut header_bytes = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| ckpt_err(path, format!("cannot encode header: {e}")))?;
    header_bytes.resize(header_bytes.len().div_ceil(8) * 8, b' ');

    let Some(name) = path.file_name() else {
        return Err(ckpt_err(path, "path has no file name"));
    };
    let name = name.to_string_lossy();
    write_atomic(path, &name, |w| {
        w.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
        w.write_all(&header_bytes)?;
        for t in &sorted {
            for v in &t.data {
                w.write_all(&v.to_le_bytes())?;
            }
        }
        Ok(())
    })
}

/// Writes `path` (file name `name`) atomically with the bytes `write` produces: a hidden
/// temporary file `.<name>.tmp-<random>` (`tempfile::NamedTempFile`) next to it, flushed and fsynced, persisted (renamed) over `path`,
/// then the directory fsynced (best effort). On error the temporary file is removed and `path`
/// is untouched. The workspace's one pattern; the canonical copy is vaepipe-engine's
/// `atomic.rs` (this crate does not depend on the engine).
fn write_atomic(
    path: &Path,
    name: &str,
    write: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut b = tempfile::Builder::new();
    let prefix = format!(".{name}.tmp-");
    b.prefix(&prefix);
    #[cfg(unix)]
    {
        // The permissions `File::create` gives (0666 less the umask), not tempfile's 0600.
        use std::os::unix::fs::PermissionsExt;
        b.permissions(fs::Permissions::from_mode(0o666));
    }
    let tmp = b.tempfile_in(dir).map_err(io_err(path, "create"))?;
    let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
    write(&mut w).map_err(io_err(tmp.path(), "write"))?;
    w.flush().map_err(io_err(tmp.path(), "write"))?;
    drop(w);
    tmp.as_file()
        .sync_all()
        .map_err(io_err(tmp.path(), "fsync"))?;
    tmp.persist(path)
        .map_err(|e| io_err(path, "rename")(e.error))?;
    // Make the rename durable; failure to sync a directory is not an error on every platform.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn describe(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall
        | SafeTensorError::InvalidHeaderLength
        | SafeTensorError::MetadataIncompleteBuffer => {
            format!("truncated or not a safetensors file ({e:?})")
        }
        SafeTensorError::InvalidHeader
        | SafeTensorError::InvalidHeaderStart
        | SafeTensorError::InvalidHeaderDeserialization
        | SafeTensorError::HeaderTooLarge => format!("not a safetensors file: bad header ({e:?})"),
        SafeTensorError::InvalidOffset(name) => {
            format!("corrupted: tensor `{name}` has invalid data offsets")
        }
        other => format!("corrupted safetensors file ({other:?})"),
    }
}

/// Reads every tensor (sorted by name) and the metadata of a file written by
/// [`save_safetensors`] (or any safetensors file of `F32` tensors).
pub fn load_safetensors(
    path: impl AsRef<Path>,
) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>)> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(io_err(path, "read"))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| ckpt_err(path, describe(&e)))?;
    let metadata: BTreeMap<String, String> = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ckpt_err(path, describe(&e)))?;
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let view = st
            .tensor(&name)
            .map_err(|e| ckpt_err(path, format!("tensor `{name}`: {}", describe(&e))))?;
        if view.dtype() != Dtype::F32 {
            return Err(ckpt_err(
                path,
                format!("tensor `{name}` has dtype {:?}, expected F32", view.dtype()),
            ));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let shape = view.shape().to_vec();
        if numel(&shape) != Some(data.len()) {
            return Err(ckpt_err(
                path,
                format!("tensor `{name}`: shape {shape:?} does not match its data"),
            ));
        }
        out.push(NamedTensor { name, shape, data });
    }
    Ok((out, metadata))
}
