//! Drawing and document writing for vaepipe reports, from plain Rust data.
//!
//! - [`figure`]: chart and image functions (line, dot, bar, image grid, scatter, density
//!   comparison, histogram), each returning a [`Rendered`] figure as PNG bytes and an SVG string.
//! - [`document`]: a small document model ([`Document`], [`Block`]) written as GitHub-flavoured
//!   Markdown ([`to_markdown`]) or as one self-contained HTML file ([`to_html`]).
//!
//! The crate performs no I/O and knows nothing about VAE artifacts: callers read their data,
//! call these functions and write the returned bytes where they like. All output is a pure
//! function of the input (no timestamps, no hash-map iteration order).

mod base64;
pub mod document;
mod error;
pub mod figure;

pub use document::{Align, Block, Document, to_html, to_markdown};
pub use error::ReportError;
pub use figure::{
    BarChart, Density, DensityComparison, DensityPanel, DotChart, Histogram, HistogramSeries,
    ImageGrid, LineChart, Rendered, Scatter, Series, bar_chart, density_comparison, dot_chart,
    histogram, image_grid, line_chart, scatter,
};
