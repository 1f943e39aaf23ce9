//! The data layers of line charts and scatter plots, drawn with plotters' series
//! (`LineSeries`, `DashedLineSeries`, point series of [`Marker`]s).

use plotters::series::{DashedLineSeries, LineSeries};
use plotters::style::Color;
use plotters_backend::DrawingBackend;

use super::backend::Drawn;
use super::cartesian::{AxesSpec, Cartesian, ChartData, range_error};
use super::frame::{Chart, SAMPLE_W};
use super::marks::{DASHED, Marker, Sample, shape_for};
use super::palette::color;
use super::ticks::{min_max, padded_range};
use super::{LineChart, Scatter};
use crate::ReportError;

/// One curve: its points, the points that get a marker, palette slot and dash.
struct Curve {
    points: Vec<(f64, f64)>,
    markers: Vec<(f64, f64)>,
    slot: usize,
    dashed: bool,
}

/// The curves of a [`LineChart`].
pub(crate) struct Lines(Vec<Curve>);

impl ChartData for Lines {
    const FIGURE: &'static str = "line chart";

    fn draw<DB: DrawingBackend>(&self, chart: &mut Chart<'_, '_, DB>) -> Result<(), ReportError> {
        let figure = Self::FIGURE;
        for curve in &self.0 {
            let style = color(curve.slot).to_rgba().stroke_width(2);
            let points = curve.points.iter().copied();
            match (curve.dashed, DASHED) {
                (true, Some((on, off))) => chart
                    .draw_series(DashedLineSeries::new(points, on, off, style))
                    .drawn(figure)?,
                _ => chart
                    .draw_series(LineSeries::new(points, style))
                    .drawn(figure)?,
            };
        }
        // Markers over all lines.
        for curve in &self.0 {
            let (shape, color) = (shape_for(curve.slot), color(curve.slot).to_rgba());
            chart
                .draw_series(
                    curve
                        .markers
                        .iter()
                        .map(|&p| Marker::new(p, shape, 4.5, color)),
                )
                .drawn(figure)?;
        }
        Ok(())
    }

    fn sample(&self, entry: usize) -> Sample {
        let curve = &self.0[entry.min(self.0.len().saturating_sub(1))];
        Sample {
            at: (0, 0),
            width: SAMPLE_W,
            color: color(curve.slot).to_rgba(),
            swatch: false,
            line: Some(if curve.dashed { DASHED } else { None }),
            marker: Some(shape_for(curve.slot)),
        }
    }
}
/// A validated, laid-out [`LineChart`].
pub(crate) type LinePlan = Cartesian<Lines>;

impl LinePlan {
    pub(crate) fn new(chart: &LineChart) -> Result<Self, ReportError> {
        let figure = <Lines as ChartData>::FIGURE;
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

        let axes = AxesSpec {
            x_range,
            x_log: chart.log_x,
            y_range,
            y_integer: false,
            x_label: &chart.x_label,
            y_label: &chart.y_label,
        };
        let n_series = chart.series.len();
        let curves = chart
            .series
            .iter()
            .zip(kept)
            .enumerate()
            .map(|(i, (s, points))| {
                // Mark every point of short series; about a dozen evenly spaced points of long
                // ones, shifted per series so that markers of overlapping curves interleave.
                let n = points.len();
                let markers = if n <= 20 {
                    points.clone()
                } else {
                    let stride = n.div_ceil(12);
                    let offset = (i * stride / n_series) % stride;
                    points
                        .iter()
                        .skip(offset)
                        .step_by(stride)
                        .copied()
                        .collect()
                };
                Curve {
                    points,
                    markers,
                    slot: s.color.unwrap_or(i),
                    dashed: s.dashed,
                }
            })
            .collect();
        let names: Vec<String> = chart.series.iter().map(|s| s.name.clone()).collect();
        Cartesian::layout(
            &chart.title,
            &names,
            (dropped, "point"),
            &axes,
            Lines(curves),
        )
    }
}

/// The points of a [`Scatter`] with their classes, and the marker size.
pub(crate) struct Points {
    points: Vec<(f64, f64, usize)>,
    radius: f64,
}

impl ChartData for Points {
    const FIGURE: &'static str = "scatter plot";

    fn draw<DB: DrawingBackend>(&self, chart: &mut Chart<'_, '_, DB>) -> Result<(), ReportError> {
        // All points in the given order, so that no class always hides the others.
        chart
            .draw_series(self.points.iter().map(|&(x, y, class)| {
                Marker::new(
                    (x, y),
                    shape_for(class),
                    self.radius,
                    color(class).mix(0.75),
                )
            }))
            .drawn(Self::FIGURE)?;
        Ok(())
    }

    fn sample(&self, class: usize) -> Sample {
        Sample {
            at: (0, 0),
            width: SAMPLE_W,
            color: color(class).to_rgba(),
            swatch: false,
            line: None,
            marker: Some(shape_for(class)),
        }
    }
}

/// A validated, laid-out [`Scatter`].
pub(crate) type ScatterPlan = Cartesian<Points>;

impl ScatterPlan {
    pub(crate) fn new(chart: &Scatter) -> Result<Self, ReportError> {
        let figure = <Points as ChartData>::FIGURE;
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
        let axes = AxesSpec {
            x_range,
            x_log: false,
            y_range,
            y_integer: false,
            x_label: &chart.x_label,
            y_label: &chart.y_label,
        };
        let radius = if kept.len() > 3000 { 2.5 } else { 3.5 };
        Cartesian::layout(
            &chart.title,
            &chart.class_names,
            (dropped, "point"),
            &axes,
            Points {
                points: kept,
                radius,
            },
        )
    }
}
