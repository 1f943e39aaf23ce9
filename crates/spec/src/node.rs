//! The spec as a tree of values that remember their origin (file and span), built from the TOML
//! parser's spanned tables. Overrides and sweep values are spliced into this tree before the
//! typed reading, so every later error can point at the text that caused it.

use std::borrow::Cow;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::source::{Origin, SourceId};

/// A key together with where it was written.
#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub origin: Origin,
}

/// A TOML value with its origin.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    /// Entries in key order (the parser sorts them), so nothing depends on the order in the file.
    Table(Vec<(Key, Node)>),
}

impl Value {
    /// The TOML type name, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

impl Node {
    pub fn table(origin: Origin) -> Node {
        Node {
            value: Value::Table(Vec::new()),
            origin,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Table(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets `path` (dotted, already split) to `value`, creating intermediate tables. Fails with the
    /// prefix that is not a table.
    pub fn set_path(
        &mut self,
        path: &[String],
        key_origin: &Origin,
        value: Node,
    ) -> Result<(), String> {
        let Some((first, rest)) = path.split_first() else {
            return Err(String::new());
        };
        let Value::Table(entries) = &mut self.value else {
            return Err(String::new());
        };
        let idx = match entries.iter().position(|(k, _)| &k.name == first) {
            Some(i) => i,
            None => {
                let child = if rest.is_empty() {
                    value.clone()
                } else {
                    Node::table(key_origin.clone())
                };
                entries.push((
                    Key {
                        name: first.clone(),
                        origin: key_origin.clone(),
                    },
                    child,
                ));
                entries.sort_by(|a, b| a.0.name.cmp(&b.0.name));
                entries
                    .iter()
                    .position(|(k, _)| &k.name == first)
                    .unwrap_or(0)
            }
        };
        if rest.is_empty() {
            entries[idx].1 = value;
            entries[idx].0.origin = key_origin.clone();
            return Ok(());
        }
        entries[idx]
            .1
            .set_path(rest, key_origin, value)
            .map_err(|p| {
                if p.is_empty() {
                    first.clone()
                } else {
                    format!("{first}.{p}")
                }
            })
    }
}

/// Converts the parser's spanned document into a [`Node`] tree.
pub fn from_toml(table: &Spanned<DeTable<'_>>, source: SourceId) -> Node {
    let origin = Origin {
        source,
        span: table.span(),
    };
    Node {
        value: table_entries(table.get_ref(), source),
        origin,
    }
}

fn table_entries(table: &DeTable<'_>, source: SourceId) -> Value {
    let mut entries: Vec<(Key, Node)> = table
        .iter()
        .map(|(k, v)| {
            let key = Key {
                name: k.get_ref().to_string(),
                origin: Origin {
                    source,
                    span: k.span(),
                },
            };
            (key, from_value(v, source))
        })
        .collect();
    entries.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Value::Table(entries)
}

pub fn from_value(v: &Spanned<DeValue<'_>>, source: SourceId) -> Node {
    let origin = Origin {
        source,
        span: v.span(),
    };
    let value = match v.get_ref() {
        DeValue::String(s) => Value::Str(Cow::to_string(s)),
        DeValue::Integer(i) => match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
            Ok(n) => Value::Int(n),
            // Out of i64 range: keep it as a float so the reader reports a range error.
            Err(_) => Value::Float(i.as_str().replace('_', "").parse().unwrap_or(f64::INFINITY)),
        },
        DeValue::Float(f) => Value::Float(parse_float(f.as_str())),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::Datetime(d.to_string()),
        DeValue::Array(a) => Value::Array(a.iter().map(|x| from_value(x, source)).collect()),
        DeValue::Table(t) => table_entries(t, source),
    };
    Node { value, origin }
}

fn parse_float(s: &str) -> f64 {
    let s = s.replace('_', "");
    match s.as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        "nan" | "+nan" | "-nan" => f64::NAN,
        other => other.parse().unwrap_or(f64::NAN),
    }
}
