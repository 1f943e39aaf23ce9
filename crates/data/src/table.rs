//! Small typed tables (training history, per-image results, refit tables): named columns of
//! f64, i64, string or bool values, with typed accessors whose errors name the table's file and
//! the missing column. Stored as Parquet by [`crate::write_table`] / [`crate::read_table`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::DataError;

/// One column of a [`Table`].
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// 64-bit floats (NaN and infinities allowed).
    F64(Vec<f64>),
    /// 64-bit signed integers.
    I64(Vec<i64>),
    /// UTF-8 strings.
    Str(Vec<String>),
    /// Booleans.
    Bool(Vec<bool>),
}

impl Column {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Column::F64(v) => v.len(),
            Column::I64(v) => v.len(),
            Column::Str(v) => v.len(),
            Column::Bool(v) => v.len(),
        }
    }

    /// Whether the column has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The type's name as used in error messages: `f64`, `i64`, `str` or `bool`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Column::F64(_) => "f64",
            Column::I64(_) => "i64",
            Column::Str(_) => "str",
            Column::Bool(_) => "bool",
        }
    }
}

/// A table: named columns of equal length, in order.
///
/// Equality compares the columns only (not where the table was read from); note that f64 NaN
/// values never compare equal.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// The columns, in order. Names must be unique and non-empty; lengths must agree
    /// (checked by [`Table::validate`] and by [`crate::write_table`]).
    pub columns: Vec<(String, Column)>,
    source: Option<PathBuf>,
}

impl PartialEq for Table {
    fn eq(&self, other: &Table) -> bool {
        self.columns == other.columns
    }
}

impl Table {
    /// An empty table.
    pub fn new() -> Table {
        Table::default()
    }

    /// A table with the given columns (not validated; see [`Table::validate`]).
    pub fn from_columns(columns: Vec<(String, Column)>) -> Table {
        Table {
            columns,
            source: None,
        }
    }

    /// Appends a column (builder style).
    pub fn with(mut self, name: impl Into<String>, column: Column) -> Table {
        self.columns.push((name.into(), column));
        self
    }

    /// Appends a column.
    pub fn push(&mut self, name: impl Into<String>, column: Column) {
        self.columns.push((name.into(), column));
    }

    /// The file this table was read from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    pub(crate) fn set_source(&mut self, path: &Path) {
        self.source = Some(path.to_path_buf());
    }

    /// Number of rows (length of the first column; 0 without columns).
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |(_, c)| c.len())
    }

    /// Column names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Checks that names are unique and non-empty and that all columns have the same length.
    pub fn validate(&self) -> Result<(), DataError> {
        let origin = self.origin();
        let mut seen = BTreeSet::new();
        let rows = self.rows();
        for (name, column) in &self.columns {
            if name.is_empty() || !seen.insert(name.as_str()) {
                return Err(DataError::ColumnName {
                    origin,
                    column: name.clone(),
                    problem: if name.is_empty() {
                        "empty name"
                    } else {
                        "repeated"
                    },
                });
            }
            if column.len() != rows {
                return Err(DataError::ColumnLength {
                    origin,
                    column: name.clone(),
                    expected: rows,
                    found: column.len(),
                });
            }
        }
        Ok(())
    }

    /// The column called `name`.
    pub fn get(&self, name: &str) -> Result<&Column, DataError> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .ok_or_else(|| DataError::MissingColumn {
                origin: self.origin(),
                column: name.to_string(),
                present: self.columns.iter().map(|(n, _)| n.clone()).collect(),
            })
    }

    /// The values of the f64 column `name`.
    pub fn f64(&self, name: &str) -> Result<&[f64], DataError> {
        match self.get(name)? {
            Column::F64(v) => Ok(v),
            other => Err(self.type_error(name, "f64", other)),
        }
    }

    /// The values of the i64 column `name`.
    pub fn i64(&self, name: &str) -> Result<&[i64], DataError> {
        match self.get(name)? {
            Column::I64(v) => Ok(v),
            other => Err(self.type_error(name, "i64", other)),
        }
    }

    /// The values of the string column `name`.
    pub fn str(&self, name: &str) -> Result<&[String], DataError> {
        match self.get(name)? {
            Column::Str(v) => Ok(v),
            other => Err(self.type_error(name, "str", other)),
        }
    }

    /// The values of the bool column `name`.
    pub fn bool(&self, name: &str) -> Result<&[bool], DataError> {
        match self.get(name)? {
            Column::Bool(v) => Ok(v),
            other => Err(self.type_error(name, "bool", other)),
        }
    }

    fn type_error(&self, name: &str, expected: &str, found: &Column) -> DataError {
        DataError::ColumnType {
            origin: self.origin(),
            column: name.to_string(),
            expected: expected.to_string(),
            found: found.type_name().to_string(),
        }
    }

    pub(crate) fn origin(&self) -> String {
        match &self.source {
            Some(p) => p.display().to_string(),
            None => "in-memory table".to_string(),
        }
    }
}
