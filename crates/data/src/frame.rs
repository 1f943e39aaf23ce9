//! Everything that touches polars: CSV and Parquet readers, the dataset Parquet format and the
//! small-table Parquet format. Polars stays behind these non-generic functions, which take and
//! return this crate's own types, so no other crate instantiates polars code.
//!
//! Dataset file format (written by [`write_dataset`], read by [`read_dataset`]): one Parquet
//! file, zstd-compressed, with columns `index` (i64: the row's position in its source file),
//! then one f32 column per feature named by `feature_names`, then `label` (i64) if the dataset
//! has labels. File-level key-value metadata holds `vaepipe.format = "dataset/1"` and, for
//! images, `vaepipe.image_shape = "<height>x<width>"`.

use std::fs::File;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use polars::prelude::{
    Column as PlColumn, DataFrame, DataType, Float32Chunked, IntoColumn, KeyValueMetadata,
    NamedFrom, NamedFromOwned, ParquetCompression, ParquetReader, ParquetWriter, PolarsResult,
    SerReader, Series,
};

use crate::atomic::write_atomic;
use crate::dataset::{Dataset, INDEX_COLUMN, LABEL_COLUMN};
use crate::error::DataError;
use crate::table::{Column, Table};

const FORMAT_KEY: &str = "vaepipe.format";
const FORMAT_VALUE: &str = "dataset/1";
const IMAGE_SHAPE_KEY: &str = "vaepipe.image_shape";
/// Rows per block when converting between row-major and column-major layouts.
const TRANSPOSE_BLOCK: usize = 64;

/// Reads a CSV file with a header line. The column `label_column` (if given) holds integer
/// labels; every other column is a feature and must be numeric, complete and finite.
///
/// The schema is inferred from all rows. Feature names are the header names, in file order.
pub fn read_csv(path: &Path, label_column: Option<&str>) -> Result<Dataset, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, "open", e))?;
    let df = guarded(path, "parsing CSV", || {
        polars::prelude::CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(None)
            .with_raise_if_empty(false)
            .into_reader_with_file_handle(file)
            .finish()
    })?;
    reject_renamed_duplicates(path, &df)?;
    dataset_from_frame(path, &df, label_column)
}

/// Reads a Parquet file as a dataset. The column `label_column` (if given) holds integer
/// labels; every other column is a feature and must be numeric, complete and finite.
///
/// This reads any Parquet table; to read files written by [`write_dataset`] (with their `index`
/// column and image shape) use [`read_dataset`].
pub fn read_parquet(path: &Path, label_column: Option<&str>) -> Result<Dataset, DataError> {
    let (df, _) = read_parquet_frame(path)?;
    dataset_from_frame(path, &df, label_column)
}

/// Writes a dataset in the dataset Parquet format (see the module documentation), atomically.
///
/// Fails on an inconsistent dataset, on feature names that are empty, repeated or equal to
/// `index`/`label`, and on non-finite values. Output is byte-identical for identical input.
pub fn write_dataset(path: &Path, dataset: &Dataset) -> Result<(), DataError> {
    dataset.validate()?;
    dataset.validate_names(&path.display().to_string())?;
    let f = dataset.features.max(1);
    if let Some(k) = dataset.x.iter().position(|v| !v.is_finite()) {
        return Err(DataError::NonFinite {
            path: path.to_path_buf(),
            column: dataset.feature_names[k % f].clone(),
            row: k / f,
            value: dataset.x[k].to_string(),
        });
    }
    let index = dataset
        .index
        .iter()
        .map(|&i| i64::try_from(i))
        .collect::<Result<Vec<i64>, _>>()
        .map_err(|_| DataError::Shape("an index value does not fit in i64".to_string()))?;

    let mut columns = Vec::with_capacity(dataset.features + 2);
    columns.push(Series::from_vec(INDEX_COLUMN.into(), index).into_column());
    let feature_columns = columns_from_rows(&dataset.x, dataset.rows, dataset.features);
    for (name, values) in dataset.feature_names.iter().zip(feature_columns) {
        columns.push(Series::from_vec(name.as_str().into(), values).into_column());
    }
    if let Some(labels) = &dataset.labels {
        columns.push(Series::new(LABEL_COLUMN.into(), labels.as_slice()).into_column());
    }
    let mut metadata = vec![(FORMAT_KEY.to_string(), FORMAT_VALUE.to_string())];
    if let Some((h, w)) = dataset.image_shape {
        metadata.push((IMAGE_SHAPE_KEY.to_string(), format!("{h}x{w}")));
    }
    write_frame(path, dataset.rows, columns, Some(metadata))
}

/// Reads a file written by [`write_dataset`]; the result equals the dataset that was written.
pub fn read_dataset(path: &Path) -> Result<Dataset, DataError> {
    let (df, metadata) = read_parquet_frame(path)?;
    let lookup = |key: &str| {
        metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    match lookup(FORMAT_KEY) {
        Some(FORMAT_VALUE) => {}
        Some(other) => {
            return Err(DataError::format(
                path,
                "reading a vaepipe dataset",
                format!("unsupported {FORMAT_KEY} `{other}`, expected `{FORMAT_VALUE}`"),
            ));
        }
        None => {
            return Err(DataError::format(
                path,
                "reading a vaepipe dataset",
                format!(
                    "no `{FORMAT_KEY}` metadata: not written by write_dataset \
                     (use read_parquet for plain tables)"
                ),
            ));
        }
    }
    let image_shape = match lookup(IMAGE_SHAPE_KEY) {
        None => None,
        Some(text) => Some(parse_shape(text).ok_or_else(|| {
            DataError::format(
                path,
                "reading a vaepipe dataset",
                format!("bad {IMAGE_SHAPE_KEY} `{text}`, expected <height>x<width>"),
            )
        })?),
    };
    let origin = path.display().to_string();
    let present = || column_names(&df);
    let columns = df.columns();
    let Some(index_col) = columns
        .first()
        .filter(|c| c.name().as_str() == INDEX_COLUMN)
    else {
        return Err(DataError::MissingColumn {
            origin,
            column: INDEX_COLUMN.to_string(),
            present: present(),
        });
    };
    let index = integer_values(path, index_col)?
        .into_iter()
        .enumerate()
        .map(|(row, v)| {
            usize::try_from(v).map_err(|_| {
                DataError::format(
                    path,
                    "reading a vaepipe dataset",
                    format!("negative index {v} at row {row}"),
                )
            })
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let has_label = columns
        .last()
        .is_some_and(|c| columns.len() > 1 && c.name().as_str() == LABEL_COLUMN);
    let labels = if has_label {
        // `has_label` implies a last column exists.
        Some(integer_values(path, &columns[columns.len() - 1])?)
    } else {
        None
    };
    let feature_cols = &columns[1..columns.len() - usize::from(has_label)];
    let mut slices = Vec::with_capacity(feature_cols.len());
    let mut names = Vec::with_capacity(feature_cols.len());
    for col in feature_cols {
        if col.dtype() != &DataType::Float32 {
            return Err(DataError::ColumnType {
                origin: origin.clone(),
                column: col.name().to_string(),
                expected: "f32 (a feature column of a vaepipe dataset)".to_string(),
                found: col.dtype().to_string(),
            });
        }
        slices.push(finite_f32(path, col)?);
        names.push(col.name().to_string());
    }
    let rows = df.height();
    same_lengths(path, &names, &slices, rows)?;
    let refs: Vec<&[f32]> = slices.iter().map(|s| s.as_slice()).collect();
    let dataset = Dataset {
        x: rows_from_columns(&refs, rows),
        rows,
        features: names.len(),
        labels,
        feature_names: names,
        image_shape,
        index,
    };
    dataset
        .validate()
        .map_err(|e| DataError::format(path, "reading a vaepipe dataset", e.to_string()))?;
    Ok(dataset)
}

/// Writes a table as Parquet (one column per table column, in order), atomically.
///
/// Fails if names are empty or repeated or column lengths differ. f64 → Float64,
/// i64 → Int64, str → String, bool → Boolean. Output is byte-identical for identical input.
pub fn write_table(path: &Path, table: &Table) -> Result<(), DataError> {
    table.validate().map_err(|e| match e {
        DataError::ColumnLength {
            column,
            expected,
            found,
            ..
        } => DataError::ColumnLength {
            origin: path.display().to_string(),
            column,
            expected,
            found,
        },
        DataError::ColumnName {
            column, problem, ..
        } => DataError::ColumnName {
            origin: path.display().to_string(),
            column,
            problem,
        },
        other => other,
    })?;
    let columns = table
        .columns
        .iter()
        .map(|(name, column)| {
            let name = name.as_str().into();
            match column {
                Column::F64(v) => Series::new(name, v.as_slice()),
                Column::I64(v) => Series::new(name, v.as_slice()),
                Column::Str(v) => Series::new(name, v.as_slice()),
                Column::Bool(v) => Series::new(name, v.as_slice()),
            }
            .into_column()
        })
        .collect();
    write_frame(path, table.rows(), columns, None)
}

/// Reads a Parquet table. Float columns become f64, integer columns i64, strings str and
/// booleans bool; any other type, or a missing value, is an error naming the column.
pub fn read_table(path: &Path) -> Result<Table, DataError> {
    let (df, _) = read_parquet_frame(path)?;
    let mut table = Table::new();
    for col in df.columns() {
        let name = col.name().to_string();
        let dtype = col.dtype();
        let column = if dtype.is_float() {
            reject_nulls(path, col)?;
            let cast = guarded(path, "converting to f64", || col.cast(&DataType::Float64))?;
            let ca = guarded(path, "converting to f64", || cast.f64().cloned())?;
            Column::F64(ca.no_null_iter().collect())
        } else if dtype.is_integer() {
            Column::I64(integer_values(path, col)?)
        } else if dtype == &DataType::String {
            reject_nulls(path, col)?;
            let ca = guarded(path, "reading strings", || col.str().cloned())?;
            Column::Str(ca.no_null_iter().map(str::to_string).collect())
        } else if dtype == &DataType::Boolean {
            reject_nulls(path, col)?;
            let ca = guarded(path, "reading booleans", || col.bool().cloned())?;
            Column::Bool(ca.no_null_iter().collect())
        } else {
            return Err(DataError::ColumnType {
                origin: path.display().to_string(),
                column: name,
                expected: "f64, i64, str or bool".to_string(),
                found: dtype.to_string(),
            });
        };
        table.push(name, column);
    }
    table.set_source(path);
    Ok(table)
}

/// Runs polars code, turning both its errors and any panic into [`DataError::Format`].
fn guarded<T>(
    path: &Path,
    action: &'static str,
    f: impl FnOnce() -> PolarsResult<T>,
) -> Result<T, DataError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        // Keep polars' first paragraph: later ones give advice about polars options
        // (e.g. "Consider setting 'truncate_ragged_lines=true'") that users cannot act on.
        Ok(Err(e)) => {
            let text = e.to_string();
            let first = text.split("\n\n").next().unwrap_or_default().trim();
            Err(DataError::format(path, action, first))
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(DataError::format(
                path,
                action,
                format!("the file is malformed (parser panicked: {message})"),
            ))
        }
    }
}

/// Reads a Parquet file into a frame plus its file-level key-value metadata.
fn read_parquet_frame(path: &Path) -> Result<(DataFrame, Vec<(String, String)>), DataError> {
    let mut file = File::open(path).map_err(|e| DataError::io(path, "open", e))?;
    check_parquet_magic(path, &mut file)?;
    guarded(path, "reading Parquet", || {
        let mut reader = ParquetReader::new(file).set_rechunk(true);
        let metadata = reader
            .get_metadata()?
            .key_value_metadata()
            .iter()
            .flatten()
            .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
            .collect();
        Ok((reader.finish()?, metadata))
    })
}

/// Checks the `PAR1` magic at both ends so that non-Parquet files get a clear message.
fn check_parquet_magic(path: &Path, file: &mut File) -> Result<(), DataError> {
    use std::io::{Seek, SeekFrom};
    let len = file
        .metadata()
        .map_err(|e| DataError::io(path, "stat", e))?
        .len();
    let mut head = [0u8; 4];
    let mut tail = [0u8; 4];
    let ok = len >= 12 && {
        let io = |e| DataError::io(path, "read", e);
        file.read_exact(&mut head).map_err(io)?;
        file.seek(SeekFrom::End(-4)).map_err(io)?;
        file.read_exact(&mut tail).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        &head == b"PAR1" && &tail == b"PAR1"
    };
    if ok {
        Ok(())
    } else {
        Err(DataError::format(
            path,
            "reading Parquet",
            format!("not a Parquet file ({len} bytes, no PAR1 magic at both ends)"),
        ))
    }
}

/// Writes columns as one Parquet file (zstd, default statistics) atomically.
fn write_frame(
    path: &Path,
    height: usize,
    columns: Vec<PlColumn>,
    metadata: Option<Vec<(String, String)>>,
) -> Result<(), DataError> {
    let mut df = guarded(path, "building the table", || {
        DataFrame::new(height, columns)
    })?;
    write_atomic(path, |out| {
        guarded(path, "writing Parquet", || {
            ParquetWriter::new(out)
                .with_compression(ParquetCompression::Zstd(None))
                .with_key_value_metadata(metadata.map(KeyValueMetadata::from_static))
                .finish(&mut df)
        })
        .map(|_| ())
    })
}

/// Turns a generic frame (CSV or Parquet) into a dataset.
fn dataset_from_frame(
    path: &Path,
    df: &DataFrame,
    label_column: Option<&str>,
) -> Result<Dataset, DataError> {
    let origin = path.display().to_string();
    let columns = df.columns();
    let label_position = match label_column {
        None => None,
        Some(name) => Some(
            columns
                .iter()
                .position(|c| c.name().as_str() == name)
                .ok_or_else(|| DataError::MissingColumn {
                    origin: origin.clone(),
                    column: name.to_string(),
                    present: column_names(df),
                })?,
        ),
    };
    if df.height() == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            what: "no data rows",
        });
    }
    let labels = match label_position {
        None => None,
        Some(p) => {
            let col = &columns[p];
            if !col.dtype().is_integer() {
                return Err(DataError::ColumnType {
                    origin: origin.clone(),
                    column: col.name().to_string(),
                    expected: "integers (a label column)".to_string(),
                    found: col.dtype().to_string(),
                });
            }
            Some(integer_values(path, col)?)
        }
    };
    let mut slices = Vec::new();
    let mut names = Vec::new();
    for (position, col) in columns.iter().enumerate() {
        if Some(position) == label_position {
            continue;
        }
        if !col.dtype().is_primitive_numeric() {
            return Err(DataError::ColumnType {
                origin: origin.clone(),
                column: col.name().to_string(),
                expected: "a number (every column other than the label is a feature)".to_string(),
                found: col.dtype().to_string(),
            });
        }
        slices.push(finite_f32(path, col)?);
        names.push(col.name().to_string());
    }
    if names.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            what: "no feature columns",
        });
    }
    let rows = df.height();
    same_lengths(path, &names, &slices, rows)?;
    let refs: Vec<&[f32]> = slices.iter().map(|s| s.as_slice()).collect();
    let dataset = Dataset {
        x: rows_from_columns(&refs, rows),
        rows,
        features: names.len(),
        labels,
        feature_names: names,
        image_shape: None,
        index: (0..rows).collect(),
    };
    // Name problems are reported against the source file, not the table written later.
    dataset.validate_names(&origin)?;
    Ok(dataset)
}

/// Polars silently renames a repeated CSV header `x` to `x_duplicated_0`, … ; report it instead.
fn reject_renamed_duplicates(path: &Path, df: &DataFrame) -> Result<(), DataError> {
    let names = column_names(df);
    for name in &names {
        if let Some((base, n)) = name.rsplit_once("_duplicated_")
            && n.parse::<usize>().is_ok()
            && names.iter().any(|other| other == base)
        {
            return Err(DataError::ColumnName {
                origin: path.display().to_string(),
                column: base.to_string(),
                problem: "repeated in the CSV header",
            });
        }
    }
    Ok(())
}

fn column_names(df: &DataFrame) -> Vec<String> {
    df.columns().iter().map(|c| c.name().to_string()).collect()
}

/// Errors with the first null row of `col`, if any.
fn reject_nulls(path: &Path, col: &PlColumn) -> Result<(), DataError> {
    if col.null_count() == 0 {
        return Ok(());
    }
    let row = col
        .as_materialized_series()
        .is_null()
        .iter()
        .position(|v| v == Some(true))
        .unwrap_or(0);
    Err(DataError::MissingValue {
        path: path.to_path_buf(),
        column: col.name().to_string(),
        row,
    })
}

/// The values of an integer column as i64 (no nulls; u64 values above i64::MAX are an error).
fn integer_values(path: &Path, col: &PlColumn) -> Result<Vec<i64>, DataError> {
    if !col.dtype().is_integer() {
        return Err(DataError::ColumnType {
            origin: path.display().to_string(),
            column: col.name().to_string(),
            expected: "integers".to_string(),
            found: col.dtype().to_string(),
        });
    }
    reject_nulls(path, col)?;
    let cast = guarded(path, "converting to i64", || {
        col.strict_cast(&DataType::Int64)
    })?;
    let ca = guarded(path, "converting to i64", || cast.i64().cloned())?;
    Ok(ca.no_null_iter().collect())
}

/// The values of a numeric column as contiguous f32, checking for nulls, NaN/Inf and f64
/// values that overflow f32.
fn finite_f32(path: &Path, col: &PlColumn) -> Result<Vec<f32>, DataError> {
    reject_nulls(path, col)?;
    let non_finite = |row: usize, value: String| DataError::NonFinite {
        path: path.to_path_buf(),
        column: col.name().to_string(),
        row,
        value,
    };
    if col.dtype() == &DataType::Float64 {
        let ca = guarded(path, "reading f64 values", || col.f64().cloned())?;
        if let Some((row, v)) = ca.no_null_iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(non_finite(row, v.to_string()));
        }
    }
    let ca: Float32Chunked = guarded(path, "converting to f32", || {
        col.cast(&DataType::Float32)?.f32().cloned()
    })?;
    let mut values = Vec::with_capacity(ca.len());
    for chunk in ca.downcast_iter() {
        values.extend_from_slice(chunk.values().as_slice());
    }
    if let Some(row) = values.iter().position(|v| !v.is_finite()) {
        let text = if col.dtype() == &DataType::Float64 {
            // The f64 check above passed, so this value overflowed the conversion.
            let original = col.get(row).map(|v| v.to_string()).unwrap_or_default();
            format!("{original} (overflows f32)")
        } else {
            values[row].to_string()
        };
        return Err(non_finite(row, text));
    }
    Ok(values)
}

/// A damaged file can decode to columns of different lengths (seen: a Parquet page whose row
/// count disagrees with the footer's): an error naming the column, not an out-of-range panic.
fn same_lengths(
    path: &Path,
    names: &[String],
    columns: &[Vec<f32>],
    rows: usize,
) -> Result<(), DataError> {
    match names.iter().zip(columns).find(|(_, c)| c.len() != rows) {
        None => Ok(()),
        Some((name, c)) => Err(DataError::format(
            path,
            "reading the feature columns",
            format!(
                "column `{name}` has {} values but the table has {rows} rows (is the file damaged?)",
                c.len()
            ),
        )),
    }
}

/// Column-major slices (each `rows` long) → row-major matrix, in blocks of
/// [`TRANSPOSE_BLOCK`] rows so the touched part of the matrix stays in cache.
fn rows_from_columns(columns: &[&[f32]], rows: usize) -> Vec<f32> {
    let f = columns.len();
    let mut x = vec![0.0f32; rows * f];
    for start in (0..rows).step_by(TRANSPOSE_BLOCK) {
        let end = (start + TRANSPOSE_BLOCK).min(rows);
        for (j, col) in columns.iter().enumerate() {
            for (i, &v) in col[start..end].iter().enumerate() {
                x[(start + i) * f + j] = v;
            }
        }
    }
    x
}

/// Row-major matrix → one Vec per column (same blocking as [`rows_from_columns`]).
fn columns_from_rows(x: &[f32], rows: usize, features: usize) -> Vec<Vec<f32>> {
    let mut columns = vec![vec![0.0f32; rows]; features];
    for start in (0..rows).step_by(TRANSPOSE_BLOCK) {
        let end = (start + TRANSPOSE_BLOCK).min(rows);
        for (j, col) in columns.iter_mut().enumerate() {
            for (i, slot) in col[start..end].iter_mut().enumerate() {
                *slot = x[(start + i) * features + j];
            }
        }
    }
    columns
}

fn parse_shape(text: &str) -> Option<(usize, usize)> {
    let (h, w) = text.split_once('x')?;
    Some((h.parse().ok()?, w.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_column_is_an_error_naming_it() {
        let names = vec!["a".to_string(), "b".to_string()];
        let columns = vec![vec![0.0; 5], vec![0.0; 3]];
        let path = Path::new("damaged.parquet");
        assert!(same_lengths(path, &names, &columns[..1], 5).is_ok());
        let e = same_lengths(path, &names, &columns, 5)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("damaged.parquet") && e.contains("`b` has 3 values"),
            "{e}"
        );
    }

    #[test]
    fn transposes_are_inverse() {
        let (rows, f) = (131, 7); // not a multiple of the block size
        let x: Vec<f32> = (0..rows * f).map(|k| k as f32).collect();
        let cols = columns_from_rows(&x, rows, f);
        assert_eq!(cols[3][100], x[100 * f + 3]);
        let refs: Vec<&[f32]> = cols.iter().map(|c| c.as_slice()).collect();
        assert_eq!(rows_from_columns(&refs, rows), x);
    }

    #[test]
    fn shape_text_parses() {
        assert_eq!(parse_shape("28x28"), Some((28, 28)));
        assert_eq!(parse_shape("28x"), None);
        assert_eq!(parse_shape("28*28"), None);
    }
}
