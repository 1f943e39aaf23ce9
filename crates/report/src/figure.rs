//! Figures drawn from plain data. Each function validates its input, lays the figure out and
//! renders the same drawing twice: to a PNG and to a standalone SVG ([`Rendered`]).
//!
//! Shared conventions: charts are 800 pixels wide (taller when a legend or many categories need
//! the room), titled, with axis titles and readable tick labels; colours come from the Okabe–Ito
//! colour-blind-safe palette and every series also has its own marker shape or dash pattern;
//! legends sit beside the plot, never on top of the data. Non-finite values (NaN, ±∞) are left
//! out, counted in [`Rendered::dropped`] and mentioned in a footnote on the figure. Output is a
//! pure function of the input: rendering the same data twice gives byte-identical files.

mod backend;
mod cartesian;
mod categories;
mod charts;
mod density;
mod frame;
mod histogram;
mod images;
mod marks;
mod palette;
mod text;
mod ticks;

use crate::ReportError;

/// One figure rendered twice: as a PNG and as an SVG of the same drawing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// PNG file contents (8-bit RGB).
    pub png: Vec<u8>,
    /// SVG document (standalone, no external references; raster parts are embedded PNGs).
    pub svg: String,
    /// Width in pixels (also the SVG's width).
    pub width: u32,
    /// Height in pixels (also the SVG's height).
    pub height: u32,
    /// How many non-finite input values were left out of the drawing.
    pub dropped: usize,
}

/// One curve of a [`LineChart`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points, drawn in the given order.
    pub points: Vec<(f64, f64)>,
    /// Draw the line dashed (e.g. validation curves next to solid training curves).
    pub dashed: bool,
    /// Palette slot (colour and marker shape); `None` uses the series' position. Give a train
    /// and a validation series of the same run the same slot and different `dashed`.
    pub color: Option<usize>,
}

/// Curves against a common x axis: training curves, bounds against k, ...
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LineChart {
    /// Figure title.
    pub title: String,
    /// x axis title, with units.
    pub x_label: String,
    /// y axis title, with units.
    pub y_label: String,
    /// Logarithmic x axis (all x must then be positive).
    pub log_x: bool,
    /// The curves.
    pub series: Vec<Series>,
}

/// One value per category with an optional standard error, drawn as dots with error bars on
/// horizontal rows (category labels on the left, values written on the right).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DotChart {
    /// Figure title.
    pub title: String,
    /// Title of the value axis (horizontal), with units.
    pub value_label: String,
    /// `(category, value, standard error)`, drawn top to bottom in this order.
    pub items: Vec<(String, f64, Option<f64>)>,
}

/// One value per category drawn as horizontal bars from zero.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BarChart {
    /// Figure title.
    pub title: String,
    /// Title of the value axis (horizontal), with units.
    pub value_label: String,
    /// `(category, value)`, drawn top to bottom in this order.
    pub items: Vec<(String, f64)>,
}

/// Greyscale images in a grid, pixels drawn as enlarged squares (nearest neighbour).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageGrid {
    /// Figure title.
    pub title: String,
    /// Images, row-major `height × width` values in `[0, 1]` (0 black, 1 white; values outside
    /// are clamped), placed left to right, top to bottom.
    pub images: Vec<Vec<f32>>,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Images per grid row.
    pub cols: usize,
    /// Optional caption under each image (one per image; long ones are shortened).
    pub captions: Option<Vec<String>>,
    /// Columns form groups of this many, separated by a wider gap (2 for original /
    /// reconstruction pairs); 0 or 1 means no grouping.
    pub group: usize,
}

/// Points in two dimensions coloured (and shaped) by class.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scatter {
    /// Figure title.
    pub title: String,
    /// x axis title.
    pub x_label: String,
    /// y axis title.
    pub y_label: String,
    /// `(x, y, class index)`, drawn in this order.
    pub points: Vec<(f64, f64, usize)>,
    /// Legend text of each class; every class index must be below its length.
    pub class_names: Vec<String>,
}

/// The content of one [`DensityComparison`] panel.
#[derive(Debug, Clone, PartialEq)]
pub enum Density {
    /// Samples, shown as a normalised 2-D histogram.
    Samples(Vec<(f64, f64)>),
    /// A density evaluated on a regular grid: `values[i][j]` is the density at the centre of
    /// the cell in row `i` (counted upwards from `y_range.0`) and column `j` (from `x_range.0`).
    Grid {
        /// x extent of the grid (cell edges).
        x_range: (f64, f64),
        /// y extent of the grid (cell edges).
        y_range: (f64, f64),
        /// Non-negative densities, all rows of equal length.
        values: Vec<Vec<f64>>,
    },
}

/// One named panel of a [`DensityComparison`].
#[derive(Debug, Clone, PartialEq)]
pub struct DensityPanel {
    /// Panel heading (e.g. "prior after refit").
    pub name: String,
    /// What to show.
    pub data: Density,
}

/// Side-by-side density heat maps over the same two dimensions, with shared axes and one shared
/// colour scale (viridis), e.g. prior before / after refit / aggregate posterior.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DensityComparison {
    /// Figure title.
    pub title: String,
    /// x axis title.
    pub x_label: String,
    /// y axis title.
    pub y_label: String,
    /// Panels, left to right.
    pub panels: Vec<DensityPanel>,
    /// Histogram bins per axis for sample panels (1..=400).
    pub bins: usize,
    /// Shared `((x_min, x_max), (y_min, y_max))`; `None` covers the grids and the central
    /// 99 % of the samples on each axis.
    pub bounds: Option<((f64, f64), (f64, f64))>,
}

/// One distribution of a [`Histogram`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramSeries {
    /// Legend text.
    pub name: String,
    /// The values.
    pub values: Vec<f64>,
}

/// Overlaid histograms sharing the same bins (step outlines over light fills).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// Figure title.
    pub title: String,
    /// x axis title, with units.
    pub x_label: String,
    /// Number of equal-width bins spanning all values (1..=10000).
    pub bins: usize,
    /// The distributions.
    pub series: Vec<HistogramSeries>,
}

/// Draws a [`LineChart`].
pub fn line_chart(chart: &LineChart) -> Result<Rendered, ReportError> {
    backend::render(|| charts::LinePlan::new(chart))
}

/// Draws a [`DotChart`].
pub fn dot_chart(chart: &DotChart) -> Result<Rendered, ReportError> {
    backend::render(|| categories::CategoryPlan::dots(chart))
}

/// Draws a [`BarChart`].
pub fn bar_chart(chart: &BarChart) -> Result<Rendered, ReportError> {
    backend::render(|| categories::CategoryPlan::bars(chart))
}

/// Draws an [`ImageGrid`].
pub fn image_grid(grid: &ImageGrid) -> Result<Rendered, ReportError> {
    backend::render(|| images::GridPlan::new(grid))
}

/// Draws a [`Scatter`].
pub fn scatter(chart: &Scatter) -> Result<Rendered, ReportError> {
    backend::render(|| charts::ScatterPlan::new(chart))
}

/// Draws a [`DensityComparison`].
pub fn density_comparison(figure: &DensityComparison) -> Result<Rendered, ReportError> {
    backend::render(|| density::DensityPlan::new(figure))
}

/// Draws a [`Histogram`].
pub fn histogram(chart: &Histogram) -> Result<Rendered, ReportError> {
    backend::render(|| histogram::HistogramPlan::new(chart))
}
