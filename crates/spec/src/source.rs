//! Where a spec value came from: the source texts (the spec file, each `--set` argument) and
//! byte spans into them, turned into line/column positions for error messages.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// Identifies one source text inside a [`Sources`] set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(pub(crate) usize);

/// A span inside one source text: the origin of a key or a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub source: SourceId,
    pub span: Range<usize>,
}

impl Ord for Origin {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.source, self.span.start, self.span.end).cmp(&(
            other.source,
            other.span.start,
            other.span.end,
        ))
    }
}

impl PartialOrd for Origin {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// One source text: the spec file or a command-line override.
#[derive(Debug, Clone)]
pub struct Source {
    /// Shown in messages: the spec file's path, or `--set train.k=5`.
    pub name: String,
    pub text: String,
    /// Relative paths written in this source are resolved against this directory.
    pub base_dir: PathBuf,
}

/// All source texts a spec was assembled from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    list: Vec<Source>,
}

impl Sources {
    pub fn add(
        &mut self,
        name: impl Into<String>,
        text: impl Into<String>,
        base_dir: &Path,
    ) -> SourceId {
        self.list.push(Source {
            name: name.into(),
            text: text.into(),
            base_dir: base_dir.to_path_buf(),
        });
        SourceId(self.list.len() - 1)
    }

    pub fn get(&self, id: SourceId) -> &Source {
        // SourceIds are only created by `add` on this set, so the index is in range.
        &self.list[id.0]
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, origin: &Origin) -> (usize, usize) {
        let text = &self.get(origin.source).text;
        let offset = origin.span.start.min(text.len());
        let before = &text[..floor_char_boundary(text, offset)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
