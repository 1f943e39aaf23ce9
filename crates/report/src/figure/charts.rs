//! Charts on a cartesian frame with a legend beside it: line charts, scatter plots and overlaid
//! histograms.

use plotters::prelude::DrawingBackend;
use plotters::style::{Color, RGBColor};

use super::axis::{
    Frame, FrameSpec, Legend, LegendEntry, MARGIN, TITLE_HEIGHT, draw_note, draw_title,
    dropped_note, min_max, note_height, padded_range,
};
use super::canvas::{Canvas, Marker, P, Plan, Sheet, marker_for};
use super::palette::color;
use super::{Histogram, LineChart, Scatter};
use crate::ReportError;

/// Width of every chart.
const WIDTH: f64 = 800.0;
/// Height of a chart unless its legend needs more.
const MIN_HEIGHT: f64 = 500.0;
/// Legend names wrap at this width.
const LEGEND_TEXT_W: f64 = 190.0;
/// Gap between the plot and the legend.
const LEGEND_GAP: f64 = 18.0;
/// Room the frame needs below the plot (ticks, tick labels, axis title).
const FRAME_BOTTOM: f64 = 66.0;

/// Dash patterns for series that share a colour or need to differ without colour.
const SOLID: &[f64] = &[];
const DASHED: &[f64] = &[9.0, 5.0];
const PATTERNS: [&[f64]; 4] = [SOLID, DASHED, &[2.5, 3.5], &[9.0, 4.0, 2.5, 4.0]];

/// A validated, laid-out chart: the title, frame, legend and footnote every chart of this module
/// has, around its data layer `D`.
pub(crate) struct Chart<D> {
    title: String,
    frame: Frame,
    legend: Legend,
    legend_at: P,
    height: f64,
    dropped: usize,
    note: Option<String>,
    data: D,
}

/// The data layer of a [`Chart`], in pixel coordinates.
pub(crate) trait ChartData {
    /// The figure kind named in errors.
    const FIGURE: &'static str;
    /// Draws the data (over the grid, under the axes).
    fn draw_data<DB: DrawingBackend>(&self, canvas: &mut Canvas<'_, DB>)
    -> Result<(), ReportError>;
}

impl<D> Chart<D> {
    /// Lays out a chart titled `title`: the legend of `entries` on the right, the footnote for
    /// `dropped` non-finite `what`s at the bottom and a frame showing `axes` in the room left;
    /// `data` places the data in that frame.
    fn layout(
        title: &str,
        entries: Vec<LegendEntry>,
        (dropped, what): (usize, &str),
        axes: &FrameSpec<'_>,
        data: impl FnOnce(&Frame) -> D,
    ) -> Result<Self, ReportError> {
        let legend = Legend::layout(entries, LEGEND_TEXT_W)?;
        let note = dropped_note(dropped, what);
        let legend_x = WIDTH - MARGIN - legend.width;
        let needed = TITLE_HEIGHT + legend.height + FRAME_BOTTOM + MARGIN + note_height(&note);
        let height = needed.max(MIN_HEIGHT).ceil();
        let bounds = (
            MARGIN,
            TITLE_HEIGHT,
            legend_x - LEGEND_GAP,
            height - MARGIN - note_height(&note),
        );
        let frame = Frame::layout(axes, bounds)?;
        Ok(Self {
            title: title.to_string(),
            data: data(&frame),
            legend_at: (legend_x, frame.top),
            frame,
            legend,
            height,
            dropped,
            note,
        })
    }
}

impl<D: ChartData> Plan for Chart<D> {
    fn sheet(&self) -> Sheet {
        Sheet::new(D::FIGURE, WIDTH, self.height, self.dropped)
    }

    fn draw<DB: DrawingBackend>(&self, canvas: &mut Canvas<'_, DB>) -> Result<(), ReportError> {
        draw_title(canvas, &self.title, WIDTH)?;
        self.frame.draw_grid(canvas)?;
        self.data.draw_data(canvas)?;
        self.frame.draw_axes(canvas)?;
        self.legend.draw(canvas, self.legend_at)?;
        draw_note(canvas, self.note.as_deref(), WIDTH, self.height)
    }
}

fn range_error(figure: &'static str, axis: &str) -> ReportError {
    ReportError::invalid(
        figure,
        format!("the {axis} values span too wide a range to draw"),
    )
}

struct LineSeriesPlan {
    points: Vec<P>,
    markers: Vec<P>,
    marker: Marker,
    color: RGBColor,
    pattern: &'static [f64],
}

/// The curves of a [`LineChart`].
pub(crate) struct Lines(Vec<LineSeriesPlan>);

impl ChartData for Lines {
    const FIGURE: &'static str = "line chart";

    fn draw_data<DB: DrawingBackend>(
        &self,
        canvas: &mut Canvas<'_, DB>,
    ) -> Result<(), ReportError> {
        for s in &self.0 {
            canvas.dashed_polyline(&s.points, s.pattern, s.color.to_rgba(), 2)?;
        }
        for s in &self.0 {
            for &m in &s.markers {
                canvas.marker(s.marker, m, 4.5, s.color.to_rgba())?;
            }
        }
        Ok(())
    }
}

/// A validated, laid-out [`LineChart`].
pub(crate) type LinePlan = Chart<Lines>;

impl LinePlan {
    pub(crate) fn new(chart: &LineChart) -> Result<Self, ReportError> {
        let figure = Lines::FIGURE;
        if chart.series.is_empty() {
            return Err(ReportError::no_data(figure, "no series given"));
        }
        let mut dropped = 0;
        let mut kept: Vec<Vec<(f64, f64)>> = Vec::with_capacity(chart.series.len());
        for (i, s) in chart.series.iter().enumerate() {
            let mut points = Vec::with_capacity(s.points.len());
            for (j, &(x, y)) in s.points.iter().enumerate() {
                if !(x.is_finite() && y.is_finite()) {
                    dropped += 1;
                } else if chart.log_x && x <= 0.0 {
                    return Err(ReportError::invalid(
                        figure,
                        format!(
                            "series {i} ({:?}), point {j}: x = {x} is not positive but the x axis \
                             is logarithmic",
                            s.name
                        ),
                    ));
                } else {
                    points.push((x, y));
                }
            }
            kept.push(points);
        }
        let total: usize = kept.iter().map(Vec::len).sum();
        if total == 0 {
            return Err(ReportError::no_data(
                figure,
                format!("the series hold no finite points ({dropped} non-finite)"),
            ));
        }
        // `total > 0`, so both folds see at least one value.
        let (x_min, x_max) = min_max(kept.iter().flatten().map(|p| p.0)).unwrap_or((0.0, 1.0));
        let (y_min, y_max) = min_max(kept.iter().flatten().map(|p| p.1)).unwrap_or((0.0, 1.0));
        let x_range = padded_range(x_min, x_max, chart.log_x, 0.03)
            .ok_or_else(|| range_error(figure, "x"))?;
        let y_range =
            padded_range(y_min, y_max, false, 0.06).ok_or_else(|| range_error(figure, "y"))?;

        let slots: Vec<usize> = chart
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| s.color.unwrap_or(i))
            .collect();
        let entries = chart
            .series
            .iter()
            .zip(&slots)
            .map(|(s, &slot)| LegendEntry {
                name: s.name.clone(),
                color: color(slot),
                marker: Some(marker_for(slot)),
                line: Some(if s.dashed { DASHED } else { SOLID }),
                swatch: false,
            })
            .collect();
        let axes = FrameSpec {
            x_range,
            x_log: chart.log_x,
            y_range,
            y_integer: false,
            x_label: &chart.x_label,
            y_label: &chart.y_label,
        };
        let n_series = chart.series.len();
        Chart::layout(&chart.title, entries, (dropped, "point"), &axes, |frame| {
            Lines(
                chart
                    .series
                    .iter()
                    .zip(kept)
                    .zip(&slots)
                    .enumerate()
                    .map(|(i, ((s, points), &slot))| {
                        let pixels: Vec<P> = points
                            .iter()
                            .map(|&(x, y)| (frame.x.px(x), frame.y.px(y)))
                            .collect();
                        // Mark every point of short series; about a dozen evenly spaced points
                        // of long ones, shifted per series so that markers of overlapping curves
                        // interleave.
                        let n = pixels.len();
                        let markers = if n <= 20 {
                            pixels.clone()
                        } else {
                            let stride = n.div_ceil(12);
                            let offset = (i * stride / n_series) % stride;
                            pixels
                                .iter()
                                .skip(offset)
                                .step_by(stride)
                                .copied()
                                .collect()
                        };
                        LineSeriesPlan {
                            points: pixels,
                            markers,
                            marker: marker_for(slot),
                            color: color(slot),
                            pattern: if s.dashed { DASHED } else { SOLID },
                        }
                    })
                    .collect(),
            )
        })
    }
}

/// The points of a [`Scatter`] with their classes, and the marker size.
pub(crate) struct Points {
    points: Vec<(P, usize)>,
    radius: f64,
}

impl ChartData for Points {
    const FIGURE: &'static str = "scatter plot";

    fn draw_data<DB: DrawingBackend>(
        &self,
        canvas: &mut Canvas<'_, DB>,
    ) -> Result<(), ReportError> {
        for &(p, class) in &self.points {
            canvas.marker(marker_for(class), p, self.radius, color(class).mix(0.75))?;
        }
        Ok(())
    }
}

/// A validated, laid-out [`Scatter`].
pub(crate) type ScatterPlan = Chart<Points>;

impl ScatterPlan {
    pub(crate) fn new(chart: &Scatter) -> Result<Self, ReportError> {
        let figure = Points::FIGURE;
        if chart.class_names.is_empty() {
            return Err(ReportError::invalid(figure, "no class names given"));
        }
        if chart.points.is_empty() {
            return Err(ReportError::no_data(figure, "no points given"));
        }
        let n_classes = chart.class_names.len();
        let mut dropped = 0;
        let mut kept = Vec::with_capacity(chart.points.len());
        for (j, &(x, y, class)) in chart.points.iter().enumerate() {
            if class >= n_classes {
                return Err(ReportError::invalid(
                    figure,
                    format!(
                        "point {j} has class {class}, but only {n_classes} class names are given"
                    ),
                ));
            }
            if x.is_finite() && y.is_finite() {
                kept.push((x, y, class));
            } else {
                dropped += 1;
            }
        }
        if kept.is_empty() {
            return Err(ReportError::no_data(
                figure,
                format!("all {dropped} points are non-finite"),
            ));
        }
        // `kept` is not empty.
        let (x_min, x_max) = min_max(kept.iter().map(|p| p.0)).unwrap_or((0.0, 1.0));
        let (y_min, y_max) = min_max(kept.iter().map(|p| p.1)).unwrap_or((0.0, 1.0));
        let x_range =
            padded_range(x_min, x_max, false, 0.05).ok_or_else(|| range_error(figure, "x"))?;
        let y_range =
            padded_range(y_min, y_max, false, 0.05).ok_or_else(|| range_error(figure, "y"))?;
        let entries = chart
            .class_names
            .iter()
            .enumerate()
            .map(|(i, name)| LegendEntry {
                name: name.clone(),
                color: color(i),
                marker: Some(marker_for(i)),
                line: None,
                swatch: false,
            })
            .collect();
        let axes = FrameSpec {
            x_range,
            x_log: false,
            y_range,
            y_integer: false,
            x_label: &chart.x_label,
            y_label: &chart.y_label,
        };
        Chart::layout(&chart.title, entries, (dropped, "point"), &axes, |frame| {
            let points = kept
                .into_iter()
                .map(|(x, y, c)| ((frame.x.px(x), frame.y.px(y)), c))
                .collect::<Vec<_>>();
            let radius = if points.len() > 3000 { 2.5 } else { 3.5 };
            Points { points, radius }
        })
    }
}

struct HistSeriesPlan {
    outline: Vec<P>,
    color: RGBColor,
    pattern: &'static [f64],
}

/// The step outlines of a [`Histogram`]'s series.
pub(crate) struct Steps(Vec<HistSeriesPlan>);

impl ChartData for Steps {
    const FIGURE: &'static str = "histogram";

    fn draw_data<DB: DrawingBackend>(
        &self,
        canvas: &mut Canvas<'_, DB>,
    ) -> Result<(), ReportError> {
        // A single distribution is filled; overlaid ones are outlines only, since mixed
        // translucent fills turn muddy and hide which series is which.
        if let [single] = self.0.as_slice() {
            canvas.fill_polygon(&single.outline, single.color.mix(0.35))?;
        }
        for s in &self.0 {
            canvas.dashed_polyline(&s.outline, s.pattern, s.color.to_rgba(), 2)?;
        }
        Ok(())
    }
}

/// A validated, laid-out [`Histogram`].
pub(crate) type HistogramPlan = Chart<Steps>;

/// Largest accepted number of bins.
const MAX_BINS: usize = 10_000;

/// Counts of `values` in `bins` bins of width `bin_w` starting at `lo`; values at or beyond the
/// last edge go to the last bin (the range is closed on the right).
fn bin_counts(values: &[f64], lo: f64, bin_w: f64, bins: usize) -> Vec<usize> {
    let mut counts = vec![0usize; bins];
    let Some(last) = bins.checked_sub(1) else {
        return counts;
    };
    for &v in values {
        // Clamped into 0..bins, so the index is valid.
        let b = (((v - lo) / bin_w).floor().max(0.0) as usize).min(last);
        counts[b] += 1;
    }
    counts
}

impl HistogramPlan {
    pub(crate) fn new(chart: &Histogram) -> Result<Self, ReportError> {
        let figure = Steps::FIGURE;
        if chart.bins == 0 || chart.bins > MAX_BINS {
            return Err(ReportError::invalid(
                figure,
                format!("bins = {} must be between 1 and {MAX_BINS}", chart.bins),
            ));
        }
        if chart.series.is_empty() {
            return Err(ReportError::no_data(figure, "no series given"));
        }
        let mut dropped = 0;
        let kept: Vec<Vec<f64>> = chart
            .series
            .iter()
            .map(|s| {
                let finite: Vec<f64> = s.values.iter().copied().filter(|v| v.is_finite()).collect();
                dropped += s.values.len() - finite.len();
                finite
            })
            .collect();
        let Some((lo, hi)) = min_max(kept.iter().flatten().copied()) else {
            return Err(ReportError::no_data(
                figure,
                format!("the series hold no finite values ({dropped} non-finite)"),
            ));
        };
        let (lo, hi) = if hi - lo <= 1e-12 * lo.abs().max(hi.abs()).max(1e-300) {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi)
        };
        let bin_w = (hi - lo) / chart.bins as f64;
        if !(bin_w.is_finite() && bin_w > 0.0) {
            return Err(range_error(figure, "x"));
        }
        let counts: Vec<Vec<usize>> = kept
            .iter()
            .map(|values| bin_counts(values, lo, bin_w, chart.bins))
            .collect();
        let max_count = counts.iter().flatten().copied().max().unwrap_or(0).max(1);
        let x_range = padded_range(lo, hi, false, 0.02).ok_or_else(|| range_error(figure, "x"))?;
        let y_range = (0.0, max_count as f64 * 1.08);

        let entries = chart
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| LegendEntry {
                name: s.name.clone(),
                color: color(i),
                marker: None,
                line: Some(PATTERNS[i % PATTERNS.len()]),
                swatch: chart.series.len() == 1,
            })
            .collect();
        let axes = FrameSpec {
            x_range,
            x_log: false,
            y_range,
            y_integer: true,
            x_label: &chart.x_label,
            y_label: "count",
        };
        Chart::layout(&chart.title, entries, (dropped, "value"), &axes, |frame| {
            Steps(
                counts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let y0 = frame.y.px(0.0);
                        let mut outline = vec![(frame.x.px(lo), y0)];
                        for (b, &n) in c.iter().enumerate() {
                            let x_left = frame.x.px(lo + b as f64 * bin_w);
                            let x_right = frame.x.px(lo + (b + 1) as f64 * bin_w);
                            let y = frame.y.px(n as f64);
                            outline.push((x_left, y));
                            outline.push((x_right, y));
                        }
                        outline.push((frame.x.px(hi), y0));
                        HistSeriesPlan {
                            outline,
                            color: color(i),
                            pattern: PATTERNS[i % PATTERNS.len()],
                        }
                    })
                    .collect(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::bin_counts;

    #[test]
    fn bins_are_half_open_except_the_last() {
        let values = [0.0, 0.49, 0.5, 1.0, 1.99, 2.0];
        assert_eq!(bin_counts(&values, 0.0, 0.5, 4), vec![2, 1, 1, 2]);
        assert_eq!(bin_counts(&values, 0.0, 1.0, 2), vec![3, 3]);
        assert!(bin_counts(&values, 0.0, 1.0, 0).is_empty());
    }
}
