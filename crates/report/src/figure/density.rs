//! Side-by-side density heat maps over the same two dimensions with shared axes and one shared
//! viridis colour scale: each panel a plotters chart (mesh without grid lines, over a
//! `BitMapElement` heat map), the colour bar a chart of its own with its axis on the right.

use plotters::chart::ChartBuilder;
use plotters::element::{BitMapElement, Rectangle, Text};
use plotters::style::Color;
use plotters::style::text_anchor::{HPos, VPos};
use plotters_backend::DrawingBackend;

use super::backend::{Drawn, Plan, Root, Sheet};
use super::frame::{
    Axis, Chart, MARGIN, Mesh, TITLE_HEIGHT, draw_mesh, draw_note, draw_title, note_height,
    x_label_area, y_label_area,
};
use super::palette::{INK, viridis};
use super::text::{Font, ellipsize};
use super::ticks::{Tick, horizontal_ticks, linear_ticks, padded_range, tick_label_width};
use super::{Density, DensityComparison};
use crate::ReportError;

/// Largest accepted histogram resolution per axis.
const MAX_DENSITY_BINS: usize = 400;
/// Preferred panel side in pixels.
const PANEL: usize = 260;
const PANEL_GAP: f64 = 30.0;
const MAX_PANELS: usize = 8;

/// One panel's values on its own cell grid over `x_range × y_range`; rows from the bottom.
struct Cells {
    x_range: (f64, f64),
    y_range: (f64, f64),
    values: Vec<Vec<f64>>,
}

impl Cells {
    /// The value at a point, `None` outside the grid; NaN marks a missing (non-finite) cell.
    fn at(&self, x: f64, y: f64) -> Option<f64> {
        let (x0, x1) = self.x_range;
        let (y0, y1) = self.y_range;
        if x < x0 || x > x1 || y < y0 || y > y1 {
            return None;
        }
        let rows = self.values.len();
        let cols = self.values.first().map_or(0, Vec::len);
        // The fractions are in [0, 1], so the indices are clamped into range.
        let i = (((y - y0) / (y1 - y0) * rows as f64) as usize).min(rows.checked_sub(1)?);
        let j = (((x - x0) / (x1 - x0) * cols as f64) as usize).min(cols.checked_sub(1)?);
        Some(self.values[i][j])
    }
}

/// An x range and a y range.
type Extent = ((f64, f64), (f64, f64));

/// Whether a range is finite and increasing.
fn increasing(r: (f64, f64)) -> bool {
    r.0.is_finite() && r.1.is_finite() && r.0 < r.1
}

/// The smallest extent covering `extent` (if any) and `other`.
fn cover(extent: Option<Extent>, other: Extent) -> Extent {
    match extent {
        None => other,
        Some((x, y)) => (
            (x.0.min(other.0.0), x.1.max(other.0.1)),
            (y.0.min(other.1.0), y.1.max(other.1.1)),
        ),
    }
}

/// A validated, laid-out [`DensityComparison`].
pub(crate) struct DensityPlan {
    title: String,
    names: Vec<String>,
    cells: Vec<Cells>,
    vmax: f64,
    /// Panel side in (whole) pixels.
    side: f64,
    x_range: (f64, f64),
    y_range: (f64, f64),
    x_ticks: Vec<Tick>,
    y_ticks: Vec<Tick>,
    bar_ticks: Vec<Tick>,
    /// Label areas: below the panels, left of the first one, right of the colour bar.
    x_area: f64,
    y_area: f64,
    bar_area: f64,
    top: f64,
    x_label: String,
    y_label: String,
    width: f64,
    height: f64,
    dropped: usize,
    note: Option<String>,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    // Callers pass a non-empty slice; the index is clamped into it.
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

impl DensityPlan {
    const FIGURE: &'static str = "density comparison";

    pub(crate) fn new(fig: &DensityComparison) -> Result<Self, ReportError> {
        let figure = Self::FIGURE;
        if fig.panels.is_empty() {
            return Err(ReportError::no_data(figure, "no panels given"));
        }
        if fig.panels.len() > MAX_PANELS {
            return Err(ReportError::invalid(
                figure,
                format!(
                    "{} panels; at most {MAX_PANELS} fit side by side",
                    fig.panels.len()
                ),
            ));
        }
        let has_samples = fig
            .panels
            .iter()
            .any(|p| matches!(p.data, Density::Samples(_)));
        if has_samples && (fig.bins == 0 || fig.bins > MAX_DENSITY_BINS) {
            return Err(ReportError::invalid(
                figure,
                format!(
                    "bins = {} must be between 1 and {MAX_DENSITY_BINS}",
                    fig.bins
                ),
            ));
        }

        // Validate and collect what determines the shared bounds.
        let mut dropped = 0;
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        let mut grid_extent: Option<Extent> = None;
        for (k, panel) in fig.panels.iter().enumerate() {
            match &panel.data {
                Density::Samples(points) => {
                    let before = xs.len();
                    for &(x, y) in points {
                        if x.is_finite() && y.is_finite() {
                            xs.push(x);
                            ys.push(y);
                        } else {
                            dropped += 1;
                        }
                    }
                    if xs.len() == before {
                        return Err(ReportError::no_data(
                            figure,
                            format!("panel {k} ({:?}) has no finite samples", panel.name),
                        ));
                    }
                }
                Density::Grid {
                    x_range,
                    y_range,
                    values,
                } => {
                    if !increasing(*x_range) || !increasing(*y_range) {
                        return Err(ReportError::invalid(
                            figure,
                            format!(
                                "panel {k} ({:?}): grid ranges {x_range:?} × {y_range:?} must be \
                                 finite and increasing",
                                panel.name
                            ),
                        ));
                    }
                    let cols = values.first().map_or(0, Vec::len);
                    if cols == 0 || values.iter().any(|r| r.len() != cols) {
                        return Err(ReportError::invalid(
                            figure,
                            format!(
                                "panel {k} ({:?}): the grid must be non-empty with rows of equal \
                                 length",
                                panel.name
                            ),
                        ));
                    }
                    for row in values {
                        for &v in row {
                            if !v.is_finite() {
                                dropped += 1;
                            } else if v < 0.0 {
                                return Err(ReportError::invalid(
                                    figure,
                                    format!(
                                        "panel {k} ({:?}): density {v} is negative",
                                        panel.name
                                    ),
                                ));
                            }
                        }
                    }
                    grid_extent = Some(cover(grid_extent, (*x_range, *y_range)));
                }
            }
        }

        let bounds = match fig.bounds {
            Some((bx, by)) => {
                if !increasing(bx) || !increasing(by) {
                    return Err(ReportError::invalid(
                        figure,
                        format!("bounds {bx:?} × {by:?} must be finite and increasing"),
                    ));
                }
                (bx, by)
            }
            None => {
                let mut extent = grid_extent;
                if !xs.is_empty() {
                    let mut sx = xs.clone();
                    let mut sy = ys.clone();
                    sx.sort_by(f64::total_cmp);
                    sy.sort_by(f64::total_cmp);
                    let span = |s: &[f64]| {
                        padded_range(quantile(s, 0.005), quantile(s, 0.995), false, 0.05)
                    };
                    let (Some(rx), Some(ry)) = (span(&sx), span(&sy)) else {
                        return Err(ReportError::invalid(
                            figure,
                            "the samples span too wide a range",
                        ));
                    };
                    extent = Some(cover(extent, (rx, ry)));
                }
                // Every panel is either samples (non-empty, checked) or a grid.
                extent.ok_or_else(|| ReportError::no_data(figure, "no panel has data"))?
            }
        };
        let ((bx0, bx1), (by0, by1)) = bounds;

        // Each panel's cells.
        let mut outside = 0usize;
        let mut cells = Vec::with_capacity(fig.panels.len());
        for panel in &fig.panels {
            cells.push(match &panel.data {
                Density::Samples(points) => {
                    let bins = fig.bins;
                    let mut counts = vec![vec![0usize; bins]; bins];
                    let mut n = 0usize;
                    for &(x, y) in points {
                        if !(x.is_finite() && y.is_finite()) {
                            continue;
                        }
                        n += 1;
                        let fx = (x - bx0) / (bx1 - bx0);
                        let fy = (y - by0) / (by1 - by0);
                        if !(0.0..=1.0).contains(&fx) || !(0.0..=1.0).contains(&fy) {
                            outside += 1;
                            continue;
                        }
                        // fx, fy in [0, 1]: the indices are clamped into 0..bins.
                        let j = ((fx * bins as f64) as usize).min(bins - 1);
                        let i = ((fy * bins as f64) as usize).min(bins - 1);
                        counts[i][j] += 1;
                    }
                    let cell_area = (bx1 - bx0) * (by1 - by0) / (bins * bins) as f64;
                    let norm = n as f64 * cell_area;
                    Cells {
                        x_range: (bx0, bx1),
                        y_range: (by0, by1),
                        values: counts
                            .into_iter()
                            .map(|row| row.into_iter().map(|c| c as f64 / norm).collect())
                            .collect(),
                    }
                }
                Density::Grid {
                    x_range,
                    y_range,
                    values,
                } => Cells {
                    x_range: *x_range,
                    y_range: *y_range,
                    values: values.clone(),
                },
            });
        }
        let vmax = cells
            .iter()
            .flat_map(|c| c.values.iter().flatten())
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let vmax = if vmax > 0.0 { vmax } else { 1.0 };

        // Layout.
        let bins = fig.bins.max(1);
        let side = if has_samples && PANEL / bins >= 1 && (PANEL / bins) * bins >= 180 {
            ((PANEL / bins) * bins) as f64
        } else {
            PANEL as f64
        };
        let y_ticks = linear_ticks((by0, by1), 5, false);
        let y_area = y_label_area(&y_ticks)?;
        let bar_ticks = linear_ticks((0.0, vmax), 5, false);
        let bar_area = y_label_area(&bar_ticks)?;
        let x_area = x_label_area();
        let n = fig.panels.len() as f64;
        let panels_right = MARGIN + y_area + n * side + (n - 1.0) * PANEL_GAP;
        let width = (panels_right + BAR_GAP + BAR_W + bar_area + MARGIN).ceil();
        let top = TITLE_HEIGHT + Font::PANEL.line_height() + 8.0;
        let mut notes = Vec::new();
        if dropped > 0 {
            notes.push(format!("{dropped} non-finite value(s) not shown"));
        }
        if outside > 0 {
            notes.push(format!(
                "{outside} sample(s) fall outside the shown range (counted in the normalisation)"
            ));
        }
        let note = (!notes.is_empty()).then(|| notes.join("; ") + ".");
        let height = (top + side + x_area + MARGIN + note_height(&note)).ceil();
        // Same spacing as the y axis when the labels fit; fewer ticks otherwise.
        let x_ticks = {
            let ticks = linear_ticks((bx0, bx1), 5, false);
            let widest = tick_label_width(&ticks)?;
            if (widest + 12.0) * ticks.len() as f64 <= side {
                ticks
            } else {
                horizontal_ticks((bx0, bx1), side)?
            }
        };
        Ok(Self {
            title: fig.title.clone(),
            names: fig.panels.iter().map(|p| p.name.clone()).collect(),
            cells,
            vmax,
            side,
            x_range: (bx0, bx1),
            y_range: (by0, by1),
            x_ticks,
            y_ticks,
            bar_ticks,
            x_area,
            y_area,
            bar_area,
            top,
            x_label: fig.x_label.clone(),
            y_label: fig.y_label.clone(),
            width,
            height,
            dropped,
            note,
        })
    }

    /// Left edge of panel `k`'s plot.
    fn panel_left(&self, k: usize) -> f64 {
        MARGIN + self.y_area + k as f64 * (self.side + PANEL_GAP)
    }

    /// The drawing area of a chart whose plot is `side` pixels square with its top-left corner
    /// at `(left, self.top)`, with `left_area` pixels left of it and `right_area` right of it
    /// for labels, and the x label area below.
    fn chart_area<'a, DB: DrawingBackend>(
        &self,
        root: &Root<'a, DB>,
        (left, plot_w): (f64, f64),
        (left_area, right_area): (f64, f64),
    ) -> Root<'a, DB> {
        let x0 = (left - left_area).round() as i32;
        let x1 = (left + plot_w + right_area).round() as i32;
        let y0 = self.top.round() as i32;
        let y1 = (self.top + self.side + self.x_area).round() as i32;
        let (w, h) = root.dim_in_pixel();
        root.margin(y0, h as i32 - y1, x0, w as i32 - x1)
    }

    /// The heat map of `cells`, `side × side` RGB pixels, top row first.
    fn heat_map(&self, cells: &Cells) -> Vec<u8> {
        // `side` is a whole number of pixels (≤ PANEL).
        let side = self.side as usize;
        let (bx0, bx1) = self.x_range;
        let (by0, by1) = self.y_range;
        let mut data = Vec::with_capacity(side * side * 3);
        for row in 0..side {
            let y = by1 - (row as f64 + 0.5) / side as f64 * (by1 - by0);
            for col in 0..side {
                let x = bx0 + (col as f64 + 0.5) / side as f64 * (bx1 - bx0);
                let color = match cells.at(x, y) {
                    None => UNCOVERED,
                    Some(v) if !v.is_finite() => MISSING,
                    Some(v) => viridis(v / self.vmax),
                };
                data.extend_from_slice(&color);
            }
        }
        data
    }
}

/// Width of the colour bar and its gap from the last panel.
const BAR_W: f64 = 16.0;
const BAR_GAP: f64 = 26.0;

/// Colour of a missing (non-finite) cell.
const MISSING: [u8; 3] = [0xCC, 0xCC, 0xCC];
/// Colour where a grid does not reach.
const UNCOVERED: [u8; 3] = [0xFF, 0xFF, 0xFF];

/// Places `rgb` (`size` pixels) at the top-left corner of the chart's plotting area.
fn raster<DB: DrawingBackend>(
    root: &Root<'_, DB>,
    chart: &Chart<'_, '_, DB>,
    size: (u32, u32),
    rgb: Vec<u8>,
) -> Result<(), ReportError> {
    let figure = DensityPlan::FIGURE;
    let at = chart.plotting_area().get_base_pixel();
    let element =
        BitMapElement::with_owned_buffer(at, size, rgb).ok_or_else(|| ReportError::Draw {
            figure,
            detail: "raster buffer of the wrong size".into(),
        })?;
    root.draw(&element).drawn(figure)
}

impl Plan for DensityPlan {
    fn sheet(&self) -> Sheet {
        Sheet::new(Self::FIGURE, self.width, self.height, self.dropped)
    }

    fn draw<DB: DrawingBackend>(&self, root: &Root<'_, DB>) -> Result<(), ReportError> {
        let figure = Self::FIGURE;
        let side = self.side as u32;
        let no_ticks: [Tick; 0] = [];
        // One chart per panel (y labels on the first only) and one for the colour bar; all
        // rasters are drawn before anything else (see the backend module docs).
        let mut panels = Vec::with_capacity(self.cells.len());
        for k in 0..self.cells.len() {
            let left_area = if k == 0 { self.y_area } else { 0.0 };
            let area = self.chart_area(root, (self.panel_left(k), self.side), (left_area, 0.0));
            let chart = ChartBuilder::on(&area)
                .x_label_area_size(self.x_area as u32)
                .y_label_area_size(left_area as u32)
                .build_cartesian_2d(
                    Axis::linear(self.x_range, &self.x_ticks),
                    Axis::linear(self.y_range, if k == 0 { &self.y_ticks } else { &no_ticks }),
                )
                .drawn(figure)?;
            panels.push(chart);
        }
        let bar_left = self.panel_left(self.cells.len() - 1) + self.side + BAR_GAP;
        let bar_area = self.chart_area(root, (bar_left, BAR_W), (0.0, self.bar_area));
        let mut bar = ChartBuilder::on(&bar_area)
            .x_label_area_size(self.x_area as u32)
            .right_y_label_area_size(self.bar_area as u32)
            .build_cartesian_2d(
                Axis::linear((0.0, 1.0), &no_ticks),
                Axis::linear((0.0, self.vmax), &self.bar_ticks),
            )
            .drawn(figure)?;
        for (chart, cells) in panels.iter().zip(&self.cells) {
            raster(root, chart, (side, side), self.heat_map(cells))?;
        }
        let mut scale = Vec::with_capacity(side as usize * BAR_W as usize * 3);
        for row in 0..side {
            let c = viridis(1.0 - (f64::from(row) + 0.5) / f64::from(side));
            for _ in 0..BAR_W as usize {
                scale.extend_from_slice(&c);
            }
        }
        raster(root, &bar, (BAR_W as u32, side), scale)?;

        draw_title(root, &self.title, figure)?;
        let frame = INK.stroke_width(1);
        for (k, (chart, name)) in panels.iter_mut().zip(&self.names).enumerate() {
            let mesh = Mesh {
                x_label: "",
                y_label: if k == 0 { &self.y_label } else { "" },
                x_ticks: &self.x_ticks,
                y_ticks: if k == 0 { &self.y_ticks } else { &no_ticks },
                rows: false,
                grid: false,
            };
            draw_mesh(chart, &mesh, figure)?;
            let ((x0, x1), (y0, y1)) = (self.x_range, self.y_range);
            chart
                .draw_series(std::iter::once(Rectangle::new([(x0, y0), (x1, y1)], frame)))
                .drawn(figure)?;
            let label = ellipsize(name, Font::PANEL, self.side + PANEL_GAP - 4.0)?;
            let style = Font::PANEL.style(INK, (HPos::Center, VPos::Bottom));
            let left = self.panel_left(k);
            let at = ((left + self.side / 2.0) as i32, (self.top - 6.0) as i32);
            root.draw(&Text::new(label, at, style)).drawn(figure)?;
        }
        // One x axis title under all panels (it spans several charts, so it is drawn here, where
        // plotters would put it: at the bottom of the label area).
        let first = self.panel_left(0);
        let last = self.panel_left(self.names.len() - 1) + self.side;
        let label = ellipsize(&self.x_label, Font::AXIS, last - first)?;
        let style = Font::AXIS.style(INK, (HPos::Center, VPos::Bottom));
        let at = (
            ((first + last) / 2.0) as i32,
            (self.top + self.side + self.x_area) as i32,
        );
        root.draw(&Text::new(label, at, style)).drawn(figure)?;
        let mesh = Mesh {
            x_label: "",
            y_label: "density",
            x_ticks: &no_ticks,
            y_ticks: &self.bar_ticks,
            rows: false,
            grid: false,
        };
        draw_mesh(&mut bar, &mesh, figure)?;
        bar.draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (1.0, self.vmax)],
            frame,
        )))
        .drawn(figure)?;
        draw_note(root, self.note.as_deref(), figure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DensityPanel;

    #[test]
    fn sample_histograms_integrate_to_the_fraction_inside() {
        // 1000 points on a lattice, 100 of them outside the bounds on the right.
        let mut points: Vec<(f64, f64)> = (0..900)
            .map(|i| {
                (
                    f64::from(i % 30) / 30.0 * 2.0 - 1.0,
                    f64::from(i / 30) / 30.0 * 2.0 - 1.0,
                )
            })
            .collect();
        points.extend((0..100).map(|i| (5.0, f64::from(i) / 100.0)));
        let fig = DensityComparison {
            panels: vec![DensityPanel {
                name: "s".into(),
                data: Density::Samples(points),
            }],
            bins: 10,
            bounds: Some(((-1.0, 1.0), (-1.0, 1.0))),
            ..DensityComparison::default()
        };
        let plan = DensityPlan::new(&fig).expect("plan");
        let cells = &plan.cells[0];
        let cell_area = (2.0 / 10.0) * (2.0 / 10.0);
        let mass: f64 = cells.values.iter().flatten().sum::<f64>() * cell_area;
        assert!((mass - 0.9).abs() < 1e-12, "mass {mass}");
        assert!(plan.note.as_deref().unwrap_or("").contains("100 sample(s)"));
        // Lookup: row 0 is the bottom row.
        assert_eq!(cells.at(-0.95, -0.95), Some(cells.values[0][0]));
        assert_eq!(cells.at(0.95, 0.95), Some(cells.values[9][9]));
        assert_eq!(cells.at(1.5, 0.0), None);
    }
}
