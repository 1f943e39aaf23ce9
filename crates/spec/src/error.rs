//! Spec errors: each names the source (file or `--set` argument), the line and column, the key
//! path and what was expected. All errors of a spec are collected, then rendered together with a
//! source snippet (miette) for people, or as JSON records for scripts.

use std::fmt;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan,
};
use serde::Serialize;

use crate::source::{Origin, Sources};

/// One problem found in a spec.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpecError {
    /// Where the offending text is; `None` for problems of the file as a whole (it cannot be read).
    pub origin: Option<Origin>,
    /// Dotted key path, e.g. `train.k`; empty for document-level errors.
    pub key: String,
    pub message: String,
    pub help: Option<String>,
}

impl SpecError {
    pub fn new(origin: &Origin, key: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            origin: Some(origin.clone()),
            key: key.into(),
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Machine-readable form of a [`SpecError`] (`vaepipe validate --json`).
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRecord {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
    pub help: Option<String>,
}

/// Every error found in a spec, with the sources needed to show them.
#[derive(Debug, Clone)]
pub struct SpecErrors {
    pub sources: Sources,
    pub errors: Vec<SpecError>,
}

impl SpecErrors {
    pub fn records(&self) -> Vec<ErrorRecord> {
        self.errors
            .iter()
            .map(|e| {
                let (file, line, column) = match &e.origin {
                    Some(o) => {
                        let (l, c) = self.sources.line_col(o);
                        (self.sources.get(o.source).name.clone(), l, c)
                    }
                    None => (String::new(), 0, 0),
                };
                ErrorRecord {
                    file,
                    line,
                    column,
                    key: e.key.clone(),
                    message: e.message.clone(),
                    help: e.help.clone(),
                }
            })
            .collect()
    }

    /// Renders every error with a source snippet. `color` selects ANSI colours (for terminals).
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        let mut out = String::new();
        for e in &self.errors {
            let diag = Snippet::new(e, &self.sources);
            if handler.render_report(&mut out, &diag).is_err() {
                out.push_str(&format!("{diag}\n"));
            }
        }
        let n = self.errors.len();
        out.push_str(&format!(
            "{n} error{} in the spec\n",
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

impl fmt::Display for SpecErrors {
    /// One line per error: `file:line:col: key: message (help)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in self.records() {
            let key = if r.key.is_empty() {
                String::new()
            } else {
                format!("`{}`: ", r.key)
            };
            write!(f, "{}:{}:{}: {key}{}", r.file, r.line, r.column, r.message)?;
            if let Some(h) = &r.help {
                write!(f, " ({h})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Adapter that lets miette draw one [`SpecError`] with its snippet.
#[derive(Debug)]
struct Snippet {
    message: String,
    help: Option<String>,
    source: Option<NamedSource<String>>,
    span: Option<SourceSpan>,
    label: String,
}

impl Snippet {
    fn new(e: &SpecError, sources: &Sources) -> Self {
        let (source, span, location) = match &e.origin {
            Some(o) => {
                let s = sources.get(o.source);
                let (l, c) = sources.line_col(o);
                let len = o.span.end.saturating_sub(o.span.start);
                (
                    Some(NamedSource::new(&s.name, s.text.clone())),
                    Some(SourceSpan::new(o.span.start.into(), len)),
                    format!("{}:{l}:{c}: ", s.name),
                )
            }
            None => (None, None, String::new()),
        };
        let key = if e.key.is_empty() {
            String::new()
        } else {
            format!("`{}`: ", e.key)
        };
        let label = if e.key.is_empty() {
            "here".to_string()
        } else {
            e.key.clone()
        };
        Snippet {
            message: format!("{location}{key}{}", e.message),
            help: e.help.clone(),
            source,
            span,
            label,
        }
    }
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Snippet {}

impl Diagnostic for Snippet {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.span?;
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(self.label.clone()),
            span,
        ))))
    }
}

/// The closest candidate to `word` by edit distance, if it is close enough to be a plausible typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    // A known word that the input starts with (`vampprior` → `vamp`) or that starts with it.
    let lower = word.to_ascii_lowercase();
    if lower.len() >= 3
        && let Some(c) = candidates
            .iter()
            .filter(|c| c.len() >= 3 && (lower.starts_with(**c) || c.starts_with(lower.as_str())))
            .max_by_key(|c| c.len())
    {
        return Some(c);
    }
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len().max(word.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
