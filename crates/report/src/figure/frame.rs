//! What every chart shares, on plotters' own chart machinery: the title and the footnote, the
//! sizes of the label areas that `ChartBuilder` reserves for tick labels and axis titles, the
//! mesh (`configure_mesh`: grid, axes, ticks, labels) with our tick choices, and the legend
//! (`configure_series_labels`) placed beside the plot so that it never hides data.

use std::ops::Range;

use plotters::chart::{ChartBuilder, ChartContext, LabelAreaPosition, SeriesLabelPosition};
use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::combinators::{IntoLogRange, LogCoord};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::element::Text;
use plotters::style::text_anchor::{HPos, VPos};
use plotters::style::{Color, TRANSPARENT, WHITE};
use plotters_backend::DrawingBackend;

use super::backend::{Drawn, Glyphs, Root};
use super::marks::{Marker, Sample};
use super::palette::{GRID, GRID_MINOR, INK, MUTED};
use super::text::{Font, ellipsize};
use super::ticks::{Tick, tick_label_width};
use crate::ReportError;

/// Outer margin of every figure, in pixels.
pub(crate) const MARGIN: f64 = 14.0;
/// Height reserved at the top for the title.
pub(crate) const TITLE_HEIGHT: f64 = 48.0;
/// Length of a tick mark; plotters puts tick labels twice this far from the axis.
pub(crate) const TICK_LEN: i32 = 5;
/// Gap between tick labels and the axis title.
pub(crate) const GAP: f64 = 7.0;
/// Width of a legend entry's sample (line, marker or swatch).
pub(crate) const SAMPLE_W: i32 = 36;
/// Inner margin of the legend box.
const LEGEND_PAD: i32 = 6;
/// Gap between the plot and the legend.
pub(crate) const LEGEND_GAP: f64 = 18.0;

/// Height of the label area below a horizontal axis: tick labels and the axis title.
pub(crate) fn x_label_area() -> f64 {
    (f64::from(2 * TICK_LEN) + Font::TICK.line_height() + GAP + Font::AXIS.line_height()).ceil()
}

/// Width of the label area left of a vertical axis showing `ticks`: tick labels and the
/// (rotated) axis title.
pub(crate) fn y_label_area(ticks: &[Tick]) -> Result<f64, ReportError> {
    Ok(
        (f64::from(2 * TICK_LEN) + tick_label_width(ticks)? + GAP + Font::AXIS.line_height())
            .ceil(),
    )
}

/// Draws the title centred at the top of `root` (ellipsized to the width).
pub(crate) fn draw_title<DB: DrawingBackend>(
    root: &Root<'_, DB>,
    title: &str,
    figure: &'static str,
) -> Result<(), ReportError> {
    let width = f64::from(root.dim_in_pixel().0);
    let text = ellipsize(title, Font::TITLE, width - 2.0 * MARGIN)?;
    let style = Font::TITLE.style(INK, (HPos::Center, VPos::Top));
    let at = ((width / 2.0).round() as i32, MARGIN as i32 + 2);
    root.draw(&Text::new(text, at, style)).drawn(figure)
}

/// Height a footnote needs (0 when there is none).
pub(crate) fn note_height(note: &Option<String>) -> f64 {
    if note.is_some() {
        Font::NOTE.line_height() + 6.0
    } else {
        0.0
    }
}

/// Draws the grey footnote `note`, if any, at the bottom-left corner of `root`.
pub(crate) fn draw_note<DB: DrawingBackend>(
    root: &Root<'_, DB>,
    note: Option<&str>,
    figure: &'static str,
) -> Result<(), ReportError> {
    let Some(note) = note else {
        return Ok(());
    };
    let (width, height) = root.dim_in_pixel();
    let text = ellipsize(note, Font::NOTE, f64::from(width) - 2.0 * MARGIN)?;
    let style = Font::NOTE.style(MUTED, (HPos::Left, VPos::Bottom));
    let at = (MARGIN as i32, height as i32 - MARGIN as i32 + 2);
    root.draw(&Text::new(text, at, style)).drawn(figure)
}

/// The footnote for `dropped` non-finite values, if any.
pub(crate) fn dropped_note(dropped: usize, what: &str) -> Option<String> {
    match dropped {
        0 => None,
        1 => Some(format!("1 non-finite {what} (NaN or ±∞) not shown.")),
        n => Some(format!("{n} non-finite {what}s (NaN or ±∞) not shown.")),
    }
}

/// The label of the tick nearest to `v` (plotters asks for labels by value).
pub(crate) fn tick_label(ticks: &[Tick], v: f64) -> String {
    ticks
        .iter()
        .min_by(|a, b| (a.value - v).abs().total_cmp(&(b.value - v).abs()))
        .map(|t| t.label.clone())
        .unwrap_or_default()
}

/// What the mesh of a chart shows: axis titles, tick labels (the ticks are the key points of
/// the chart's coordinates, bound with `with_key_points`).
pub(crate) struct Mesh<'a> {
    pub(crate) x_label: &'a str,
    pub(crate) y_label: &'a str,
    pub(crate) x_ticks: &'a [Tick],
    pub(crate) y_ticks: &'a [Tick],
    /// The y ticks label rows (categories): no horizontal grid lines, no y tick marks.
    pub(crate) rows: bool,
    /// Draw grid lines at the ticks (heat maps have none).
    pub(crate) grid: bool,
}

/// The cartesian chart context every chart of this crate draws on.
pub(crate) type Chart<'a, 'b, DB> = ChartContext<'a, Glyphs<'b, DB>, Cartesian2d<Axis, Axis>>;

/// Draws the grid (minor lines from the coordinates' light points), the axes, the ticks with
/// their labels and the axis titles.
pub(crate) fn draw_mesh<DB: DrawingBackend>(
    chart: &mut Chart<'_, '_, DB>,
    mesh: &Mesh<'_>,
    figure: &'static str,
) -> Result<(), ReportError> {
    let x_label = ellipsize(mesh.x_label, Font::AXIS, 600.0)?;
    let y_label = ellipsize(mesh.y_label, Font::AXIS, 400.0)?;
    let x_format = |v: &f64| tick_label(mesh.x_ticks, *v);
    let y_format = |v: &f64| tick_label(mesh.y_ticks, *v);
    let mut style = chart.configure_mesh();
    if !mesh.grid {
        style.disable_mesh();
    }
    if mesh.rows {
        style
            .disable_y_mesh()
            .set_tick_mark_size(LabelAreaPosition::Left, 0);
    }
    style
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .label_style(Font::TICK.style(INK, (HPos::Center, VPos::Center)))
        .axis_desc_style(Font::AXIS.style(INK, (HPos::Center, VPos::Center)))
        .bold_line_style(GRID.stroke_width(1))
        .light_line_style(GRID_MINOR.stroke_width(1))
        .axis_style(INK.stroke_width(1))
        .set_all_tick_mark_size(TICK_LEN)
        .draw()
        .drawn(figure)
}

/// Width of a legend whose longest (already fitted) name is `text_w` pixels wide.
pub(crate) fn legend_width(text_w: f64) -> f64 {
    // plotters measures legend text with its own layout, a pixel or two off ours: keep slack.
    (text_w + f64::from(SAMPLE_W + 8 + 2 * LEGEND_PAD) + 6.0).ceil()
}

/// Height of a legend of `entries`, names wrapped to lines (see [`draw_legend`]).
pub(crate) fn legend_height(entries: &[Vec<String>]) -> f64 {
    let mut lines: usize = entries.iter().map(Vec::len).sum();
    if lines > entries.len() {
        lines += entries.len() - 1;
    }
    // plotters spaces legend lines 1.25 font sizes apart.
    (lines as f64 * Font::LEGEND.size() * 1.25 + f64::from(2 * LEGEND_PAD)).ceil()
}

/// Draws a legend of `entries` (name wrapped to lines, sample) in `area`, beside the plot so that
/// it never hides data. plotters draws legends (`configure_series_labels`) only inside a chart's
/// plotting area (coordinates outside it are clamped to its edge), so the legend gets a chart of
/// its own: one without mesh or data, whose plotting area is `area`.
pub(crate) fn draw_legend<DB: DrawingBackend>(
    area: &Root<'_, DB>,
    entries: &[(Vec<String>, Sample)],
    figure: &'static str,
) -> Result<(), ReportError> {
    let mut host = ChartBuilder::on(area)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .drawn(figure)?;
    // plotters gives each legend entry one line: a wrapped name continues in entries of its own
    // without a sample, and a blank entry then separates the names.
    let spaced = entries.iter().any(|(lines, _)| lines.len() > 1);
    for (i, (lines, sample)) in entries.iter().enumerate() {
        let sample = *sample;
        if spaced && i > 0 {
            host.draw_series(std::iter::empty::<Marker<(f64, f64)>>())
                .drawn(figure)?
                .label(" ");
        }
        for (k, line) in lines.iter().enumerate() {
            let entry = host
                .draw_series(std::iter::empty::<Marker<(f64, f64)>>())
                .drawn(figure)?;
            entry.label(line.as_str());
            if k == 0 {
                entry.legend(move |at| Sample { at, ..sample });
            }
        }
    }
    host.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(Font::LEGEND.style(INK, (HPos::Left, VPos::Top)))
        .legend_area_size(SAMPLE_W + 8)
        .margin(LEGEND_PAD)
        .border_style(TRANSPARENT)
        .background_style(WHITE.filled())
        .draw()
        .drawn(figure)
}

/// A chart axis: plotters' linear or log10 coordinate with our tick choices as its key points
/// (`bold`: ticks, grid lines and labels; `light`: minor grid lines). plotters' own
/// `with_key_points` wrapper does the same but loses the linear axis' label formatting.
pub(crate) struct Axis {
    scale: Scale,
    bold: Vec<f64>,
    light: Vec<f64>,
}

enum Scale {
    Linear(RangedCoordf64),
    Log(LogCoord<f64>),
}

impl Axis {
    /// A linear axis over `range` with `ticks`.
    pub(crate) fn linear(range: (f64, f64), ticks: &[Tick]) -> Axis {
        Axis {
            scale: Scale::Linear((range.0..range.1).into()),
            bold: ticks.iter().map(|t| t.value).collect(),
            light: Vec::new(),
        }
    }

    /// A log10 axis over `range` (positive) with `ticks` and minor grid lines at `minor`.
    pub(crate) fn log(range: (f64, f64), ticks: &[Tick], minor: &[f64]) -> Axis {
        Axis {
            scale: Scale::Log((range.0..range.1).log_scale().into()),
            bold: ticks.iter().map(|t| t.value).collect(),
            light: minor.to_vec(),
        }
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        match &self.scale {
            Scale::Linear(s) => s.map(value, limit),
            Scale::Log(s) => s.map(value, limit),
        }
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        match &self.scale {
            Scale::Linear(s) => s.range(),
            Scale::Log(s) => s.range(),
        }
    }
}
