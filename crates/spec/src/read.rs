//! Typed reading of a [`Node`] tree that collects every error instead of stopping at the first:
//! missing keys, unknown keys (with a "did you mean" suggestion), wrong types and bad values.

use std::path::{Path, PathBuf};

use crate::error::{SpecError, suggest};
use crate::node::{Key, Node, Value};
use crate::source::{Origin, Sources};

/// Reading context shared by all sections: the sources (to resolve relative paths) and the
/// error list.
pub struct Reader<'s> {
    pub sources: &'s Sources,
    pub errors: Vec<SpecError>,
}

impl<'s> Reader<'s> {
    pub fn new(sources: &'s Sources) -> Self {
        Reader {
            sources,
            errors: Vec::new(),
        }
    }

    pub fn error(&mut self, origin: &Origin, key: &str, message: impl Into<String>) {
        self.errors.push(SpecError::new(origin, key, message));
    }

    pub fn error_help(
        &mut self,
        origin: &Origin,
        key: &str,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.errors
            .push(SpecError::new(origin, key, message).with_help(help));
    }

    /// Opens `node` as the table at `path` (e.g. `train`, or `data.train`).
    pub fn table<'n>(&mut self, node: &'n Node, path: &str) -> Option<Table<'n>> {
        match &node.value {
            Value::Table(entries) => Some(Table {
                path: path.to_string(),
                origin: node.origin.clone(),
                entries,
                used: vec![false; entries.len()],
            }),
            other => {
                self.error(
                    &node.origin,
                    path,
                    format!("expected a table, found {}", other.type_name()),
                );
                None
            }
        }
    }
}

/// One table being read; remembers which keys were consumed so that the rest can be reported.
pub struct Table<'n> {
    pub path: String,
    pub origin: Origin,
    entries: &'n [(Key, Node)],
    used: Vec<bool>,
}

impl<'n> Table<'n> {
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw node at `key`, marking it as known.
    pub fn node(&mut self, key: &str) -> Option<&'n Node> {
        let i = self.entries.iter().position(|(k, _)| k.name == key)?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    /// An optional value; type errors are recorded and give `None`.
    pub fn opt<T: FromNode>(&mut self, r: &mut Reader, key: &str) -> Option<(T, &'n Origin)> {
        let node = self.node(key)?;
        let path = self.key_path(key);
        T::from_node(node, &path, r).map(|v| (v, &node.origin))
    }

    /// A value with a default.
    pub fn get<T: FromNode>(&mut self, r: &mut Reader, key: &str, default: T) -> T {
        self.opt(r, key).map_or(default, |(v, _)| v)
    }

    /// A value with a default, plus a check. `check` returns an error message for a bad value.
    pub fn get_checked<T: FromNode>(
        &mut self,
        r: &mut Reader,
        key: &str,
        default: T,
        check: impl Fn(&T) -> Result<(), String>,
    ) -> T {
        match self.opt::<T>(r, key) {
            Some((v, origin)) => {
                if let Err(msg) = check(&v) {
                    let path = self.key_path(key);
                    r.error(origin, &path, msg);
                }
                v
            }
            None => default,
        }
    }

    /// A required value: missing is an error pointing at the table.
    pub fn req<T: FromNode>(&mut self, r: &mut Reader, key: &str) -> Option<(T, &'n Origin)> {
        if self.entries.iter().any(|(k, _)| k.name == key) {
            return self.opt(r, key);
        }
        let path = self.key_path(key);
        let table = if self.path.is_empty() {
            "the top level".to_string()
        } else {
            format!("[{}]", self.path)
        };
        r.error(
            &self.origin,
            &path,
            format!("missing required key `{key}` in {table}"),
        );
        None
    }

    /// Reports every key that was not consumed, suggesting the closest known key.
    pub fn finish(self, r: &mut Reader, known: &[&str]) {
        for ((key, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let table = if self.path.is_empty() {
                "the top level".to_string()
            } else {
                format!("[{}]", self.path)
            };
            let msg = format!("unknown key `{}` in {table}", key.name);
            let path = self.key_path(&key.name);
            match suggest(&key.name, known.iter().copied()) {
                Some(s) => r.error_help(
                    &key.origin,
                    &path,
                    format!("{msg}; did you mean `{s}`?"),
                    format!("known keys: {}", known.join(", ")),
                ),
                None => r.error_help(
                    &key.origin,
                    &path,
                    msg,
                    format!("known keys: {}", known.join(", ")),
                ),
            }
        }
    }
}

/// Check for [`Table::get_checked`]: an integer of at least 1.
pub fn positive(v: &usize) -> Result<(), String> {
    if *v >= 1 {
        Ok(())
    } else {
        Err("must be at least 1".into())
    }
}

/// Check for [`Table::get_checked`]: a number greater than 0.
pub fn positive_f(v: &f64) -> Result<(), String> {
    if *v > 0.0 {
        Ok(())
    } else {
        Err(format!("must be greater than 0, found {v}"))
    }
}

/// Conversion of one node into a typed value, recording an error on mismatch.
pub trait FromNode: Sized {
    fn from_node(node: &Node, path: &str, r: &mut Reader) -> Option<Self>;
}

fn type_error(node: &Node, path: &str, r: &mut Reader, expected: &str) {
    r.error(
        &node.origin,
        path,
        format!("expected {expected}, found {}", node.value.type_name()),
    );
}

impl FromNode for String {
    fn from_node(node: &Node, path: &str, r: &mut Reader) -> Option<Self> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                type_error(node, path, r, "a string");
                None
            }
        }
    }
}

impl FromNode for bool {
    fn from_node(node: &Node, path: &str, r: &mut Reader) -> Option<Self> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            _ => {
                type_error(node, path, r, "a boolean (true or false)");
                None
            }
        }
    }
}

impl FromNode for u64 {
    fn from_node(node: &Node, path: &str, r: &mut Reader) -> Option<Self> {
        match &node.value {
            Value::Int(i) if *i >= 0 => Some(*i as u64),
            Value::Int(i) => {
                r.error(
                    &node.origin,
                    path,
                    format!("expected a non-negative integer, found {i}"),
                );
                None
            }
            _ => {
                type_error(node, path, r, "a non-negative integer");
                None
            }
        }
    }
}

impl FromNode for usize {
    fn from_node(node: &Node, path: &str, r: &mut Reader) -> Option<Self> {
        u64::from_node(node, path, r).and_then(|v| match usize::try_from(v) {
            Ok(v) => Some(v),
            Err(_) => {
                r.error(&node.origin, path, format!("{v} is too large"));
                None
            }
        })
    }
}

impl FromNode for f64 {
    fn from_node(node: &Node, path: &str, r: &mut Reader) -> Option<Self> {
        match &node.value {
            Value::Float(f) if f.is_finite() => Some(*f),
            Value::Float(f) => {
                r.error(
                    &node.origin,
                    path,
                    format!("expected a finite number, found {f}"),
                );
                None
            }
            Value::Int(i) => Some(*i as f64),
            _ => {
                type_error(node, path, r, "a number");
                None
            }
        }
    }
}

impl<T: FromNode> FromNode for Vec<T> {
    fn from_node(node: &Node, path: &str, r: &mut Reader) -> Option<Self> {
        match &node.value {
            Value::Array(items) => {
                let before = r.errors.len();
                let out: Vec<T> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| T::from_node(n, &format!("{path}[{i}]"), r))
                    .collect();
                (r.errors.len() == before).then_some(out)
            }
            _ => {
                type_error(node, path, r, "an array");
                None
            }
        }
    }
}

/// A path written in the spec, resolved against the directory of the source it was written in
/// (the spec file's directory; the working directory for `--set`).
#[derive(Debug, Clone)]
pub struct SpecPath(pub PathBuf);

impl FromNode for SpecPath {
    fn from_node(node: &Node, path: &str, r: &mut Reader) -> Option<Self> {
        let s = String::from_node(node, path, r)?;
        if s.trim().is_empty() {
            r.error(
                &node.origin,
                path,
                "expected a file path, found an empty string",
            );
            return None;
        }
        let base = &r.sources.get(node.origin.source).base_dir;
        Some(SpecPath(normalize(&base.join(&s))))
    }
}

/// Lexically removes `.` and `..` components (no file system access).
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Declares a string-valued enum that reads from a spec (with suggestions for typos) and
/// serializes as the same strings.
#[macro_export]
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($text),+];

            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            /// The value named by its spec text (e.g. for a command-line flag).
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown value \"{other}\"; expected one of {}",
                        Self::ALL.join(", ")
                    )),
                }
            }
        }

        impl $crate::read::FromNode for $name {
            fn from_node(node: &$crate::node::Node, path: &str, r: &mut $crate::read::Reader) -> Option<Self> {
                let s = String::from_node(node, path, r)?;
                match s.as_str() {
                    $($text => Some($name::$variant),)+
                    other => {
                        let expected = Self::ALL.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ");
                        let mut msg = format!("unknown value \"{other}\"");
                        if let Some(s) = $crate::error::suggest(other, Self::ALL.iter().copied()) {
                            msg.push_str(&format!("; did you mean \"{s}\"?"));
                        }
                        r.error_help(&node.origin, path, msg, format!("expected one of {expected}"));
                        None
                    }
                }
            }
        }
    };
}
