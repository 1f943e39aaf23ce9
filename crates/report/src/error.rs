//! The crate's error type: every failure of a figure or document function is reported through
//! [`ReportError`], never by a panic.

/// Why a figure could not be drawn.
///
/// Each variant names the figure kind (`"line chart"`, `"image grid"`, ...) so that a caller
/// drawing many figures can tell which one failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// Nothing drawable was given (no series, no items, or only non-finite values).
    #[error("{figure}: nothing to draw: {detail}")]
    NoData {
        /// The figure kind.
        figure: &'static str,
        /// What was missing.
        detail: String,
    },
    /// The input is inconsistent (mismatched lengths, out-of-range class, zero bins, ...).
    #[error("{figure}: invalid input: {detail}")]
    InvalidInput {
        /// The figure kind.
        figure: &'static str,
        /// What is wrong, with the offending index or value.
        detail: String,
    },
    /// The embedded font could not be registered or measured.
    #[error("font error: {0}")]
    Font(String),
    /// The drawing backend failed (an internal error; the input was accepted).
    #[error("{figure}: drawing failed: {detail}")]
    Draw {
        /// The figure kind.
        figure: &'static str,
        /// The backend's message.
        detail: String,
    },
    /// Encoding the PNG failed (an internal error; the input was accepted).
    #[error("{figure}: PNG encoding failed: {detail}")]
    Encode {
        /// The figure kind.
        figure: &'static str,
        /// The encoder's message.
        detail: String,
    },
}

impl ReportError {
    pub(crate) fn no_data(figure: &'static str, detail: impl Into<String>) -> Self {
        Self::NoData {
            figure,
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(figure: &'static str, detail: impl Into<String>) -> Self {
        Self::InvalidInput {
            figure,
            detail: detail.into(),
        }
    }
}
