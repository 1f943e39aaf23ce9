//! Raster figures: grids of greyscale images (pixels drawn as enlarged squares) and side-by-side
//! density heat maps with shared axes and one shared viridis colour scale.

use plotters::prelude::DrawingBackend;
use plotters::style::Color;
use plotters::style::text_anchor::{HPos, VPos};

use super::axis::{
    GAP, INK, MARGIN, Scale, TICK_LEN, TITLE_HEIGHT, Tick, TickSide, draw_note, draw_ticks,
    draw_title, draw_x_title, draw_y_title, height_with_x_axis, horizontal_ticks, linear_ticks,
    padded_range, tick_label_width,
};
use super::canvas::{Canvas, Font, Plan, Raster, Sheet, ellipsize, rgb, text_width};
use super::palette::viridis;
use super::{Density, DensityComparison, ImageGrid};
use crate::ReportError;

/// Widest content an image grid is scaled to fit (unless even 1:1 does not fit).
const GRID_CONTENT_W: usize = 772;
/// Largest accepted image side.
const MAX_IMAGE_SIDE: usize = 1024;
/// Largest enlargement of an image.
const MAX_ZOOM: usize = 8;

/// A validated, laid-out [`ImageGrid`].
pub(crate) struct GridPlan {
    title: String,
    /// Tile origin (top-left, pixels) and greyscale image of each tile.
    tiles: Vec<(i32, i32)>,
    images: Vec<Vec<u8>>,
    captions: Option<Vec<String>>,
    image_w: usize,
    image_h: usize,
    zoom: usize,
    /// Canvas size in (whole) pixels.
    width: f64,
    height: f64,
}

impl GridPlan {
    const FIGURE: &'static str = "image grid";

    pub(crate) fn new(grid: &ImageGrid) -> Result<Self, ReportError> {
        let figure = Self::FIGURE;
        let (h, w) = (grid.height, grid.width);
        if h == 0 || w == 0 || h > MAX_IMAGE_SIDE || w > MAX_IMAGE_SIDE {
            return Err(ReportError::invalid(
                figure,
                format!("image size {h}×{w} must be between 1 and {MAX_IMAGE_SIDE} on each side"),
            ));
        }
        if grid.cols == 0 {
            return Err(ReportError::invalid(figure, "cols must be at least 1"));
        }
        if grid.images.is_empty() {
            return Err(ReportError::no_data(figure, "no images given"));
        }
        if let Some(captions) = &grid.captions
            && captions.len() != grid.images.len()
        {
            return Err(ReportError::invalid(
                figure,
                format!(
                    "{} captions for {} images",
                    captions.len(),
                    grid.images.len()
                ),
            ));
        }
        let mut images = Vec::with_capacity(grid.images.len());
        for (i, image) in grid.images.iter().enumerate() {
            if image.len() != h * w {
                return Err(ReportError::invalid(
                    figure,
                    format!(
                        "image {i} has {} values, expected {h}×{w} = {}",
                        image.len(),
                        h * w
                    ),
                ));
            }
            if let Some(p) = image.iter().position(|v| !v.is_finite()) {
                return Err(ReportError::invalid(
                    figure,
                    format!("image {i}, pixel {p}: value {} is not finite", image[p]),
                ));
            }
            // Clamped into [0, 1], so the product is in [0, 255].
            images.push(
                image
                    .iter()
                    .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
                    .collect(),
            );
        }

        let cols = grid.cols.min(grid.images.len());
        let rows = grid.images.len().div_ceil(cols);
        let group = grid.group.max(1);
        let (small_gap, group_gap) = if group > 1 { (3, 18) } else { (6, 6) };
        // Horizontal offset of each column (before scaling the tiles).
        let gaps_before = |c: usize| -> usize {
            let groups_passed = c / group;
            c * small_gap + groups_passed * (group_gap - small_gap)
        };
        let gap_total = gaps_before(cols - 1);
        let zoom = (1..=MAX_ZOOM)
            .rev()
            .find(|z| cols * w * z + gap_total <= GRID_CONTENT_W)
            .unwrap_or(1);
        let tile_w = w * zoom;
        let tile_h = h * zoom;
        let content_w = cols * tile_w + gap_total;
        let captions = match &grid.captions {
            None => None,
            Some(captions) => {
                let room = (tile_w + small_gap).saturating_sub(2) as f64;
                Some(
                    captions
                        .iter()
                        .map(|c| ellipsize(c, Font::NOTE, room))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
        };
        let caption_h = if captions.is_some() {
            Font::NOTE.line_height() as usize + 6
        } else {
            0
        };
        let row_gap = if captions.is_some() {
            8
        } else {
            small_gap.max(6)
        };
        let title_w = text_width(&grid.title, Font::TITLE)? as usize;
        let width = (content_w + 2 * MARGIN as usize)
            .max(title_w + 2 * MARGIN as usize)
            .max(320);
        let height = TITLE_HEIGHT as usize
            + rows * (tile_h + caption_h)
            + (rows - 1) * row_gap
            + MARGIN as usize;
        if width > 8192 || height > 8192 {
            return Err(ReportError::invalid(
                figure,
                format!(
                    "{} images of {h}×{w} in {cols} columns need {width}×{height} pixels; \
                     use fewer or smaller images",
                    grid.images.len()
                ),
            ));
        }
        let x0 = (width - content_w) / 2;
        let tiles = (0..grid.images.len())
            .map(|i| {
                let (r, c) = (i / cols, i % cols);
                let x = x0 + c * tile_w + gaps_before(c);
                let y = TITLE_HEIGHT as usize + r * (tile_h + caption_h + row_gap);
                // Both are below 8192 (checked above).
                (x as i32, y as i32)
            })
            .collect();
        Ok(Self {
            title: grid.title.clone(),
            tiles,
            images,
            captions,
            image_w: w,
            image_h: h,
            zoom,
            width: width as f64,
            height: height as f64,
        })
    }
}

impl Plan for GridPlan {
    fn sheet(&self) -> Sheet {
        Sheet::new(Self::FIGURE, self.width, self.height, 0)
    }

    fn draw<DB: DrawingBackend>(&self, canvas: &mut Canvas<'_, DB>) -> Result<(), ReportError> {
        let (w, h, z) = (self.image_w, self.image_h, self.zoom);
        for (&(x, y), image) in self.tiles.iter().zip(&self.images) {
            let mut rgb_data = Vec::with_capacity(w * z * h * z * 3);
            for row in 0..h * z {
                for col in 0..w * z {
                    let g = image[(row / z) * w + col / z];
                    rgb_data.extend_from_slice(&[g, g, g]);
                }
            }
            canvas.raster(Raster {
                x,
                y,
                width: (w * z) as u32,
                height: (h * z) as u32,
                rgb: rgb_data,
            })?;
        }
        draw_title(canvas, &self.title, self.width)?;
        let (tile_w, tile_h) = ((w * z) as f64, (h * z) as f64);
        for (i, &(x, y)) in self.tiles.iter().enumerate() {
            let (x, y) = (f64::from(x), f64::from(y));
            canvas.rect(
                (x - 1.0, y - 1.0),
                (x + tile_w, y + tile_h),
                rgb(0xBBBBBB).to_rgba(),
                false,
            )?;
            if let Some(caption) = self.captions.as_ref().and_then(|c| c.get(i)) {
                canvas.text(
                    caption,
                    (x + tile_w / 2.0, y + tile_h + 4.0),
                    Font::NOTE,
                    INK,
                    (HPos::Center, VPos::Top),
                    false,
                )?;
            }
        }
        Ok(())
    }
}

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
    side: f64,
    panels_left: f64,
    top: f64,
    x: Scale,
    y: Scale,
    x_ticks: Vec<Tick>,
    y_ticks: Vec<Tick>,
    bar_x: f64,
    bar_ticks: Vec<Tick>,
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
        let y_tick_w = tick_label_width(&y_ticks)?;
        let panels_left = MARGIN + Font::AXIS.line_height() + GAP + y_tick_w + GAP + TICK_LEN;
        let n = fig.panels.len() as f64;
        let panels_right = panels_left + n * side + (n - 1.0) * PANEL_GAP;
        let bar_x = panels_right + 26.0;
        let bar_ticks = linear_ticks((0.0, vmax), 5, false);
        let bar_tick_w = tick_label_width(&bar_ticks)?;
        let width =
            (bar_x + 16.0 + TICK_LEN + GAP + bar_tick_w + GAP + Font::AXIS.line_height() + MARGIN)
                .ceil();
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
        let height = height_with_x_axis(top + side, &note);
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
            panels_left,
            top,
            x: Scale::new((bx0, bx1), false, 0.0, side),
            y: Scale::new((by0, by1), false, top + side, top),
            x_ticks,
            y_ticks,
            bar_x,
            bar_ticks,
            x_label: fig.x_label.clone(),
            y_label: fig.y_label.clone(),
            width,
            height,
            dropped,
            note,
        })
    }

    fn panel_left(&self, k: usize) -> f64 {
        self.panels_left + k as f64 * (self.side + PANEL_GAP)
    }
}

/// Colour of a missing (non-finite) cell.
const MISSING: [u8; 3] = [0xCC, 0xCC, 0xCC];
/// Colour where a grid does not reach.
const UNCOVERED: [u8; 3] = [0xFF, 0xFF, 0xFF];

impl Plan for DensityPlan {
    fn sheet(&self) -> Sheet {
        Sheet::new(Self::FIGURE, self.width, self.height, self.dropped)
    }

    fn draw<DB: DrawingBackend>(&self, canvas: &mut Canvas<'_, DB>) -> Result<(), ReportError> {
        // `side` is a whole number of pixels (≤ PANEL).
        let side = self.side as usize;
        let (bx0, bx1) = self.x.range();
        let (by0, by1) = self.y.range();
        // Rasters first (see the canvas module docs).
        for (k, cells) in self.cells.iter().enumerate() {
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
            canvas.raster(Raster {
                x: self.panel_left(k).round() as i32,
                y: self.top.round() as i32,
                width: side as u32,
                height: side as u32,
                rgb: data,
            })?;
        }
        // Colour bar, drawn as a raster too.
        let bar_h = side;
        let mut bar = Vec::with_capacity(bar_h * 16 * 3);
        for row in 0..bar_h {
            let c = viridis(1.0 - (row as f64 + 0.5) / bar_h as f64);
            for _ in 0..16 {
                bar.extend_from_slice(&c);
            }
        }
        canvas.raster(Raster {
            x: self.bar_x.round() as i32,
            y: self.top.round() as i32,
            width: 16,
            height: bar_h as u32,
            rgb: bar,
        })?;

        draw_title(canvas, &self.title, self.width)?;
        let ink = INK.to_rgba();
        let bottom = self.top + self.side;
        for (k, name) in self.names.iter().enumerate() {
            let left = self.panel_left(k);
            let right = left + self.side;
            let label = ellipsize(name, Font::PANEL, self.side + PANEL_GAP - 4.0)?;
            canvas.text(
                &label,
                (left + self.side / 2.0, self.top - 6.0),
                Font::PANEL,
                INK,
                (HPos::Center, VPos::Bottom),
                false,
            )?;
            canvas.rect((left, self.top), (right, bottom), ink, false)?;
            draw_ticks(canvas, &self.x_ticks, TickSide::Below, bottom, |v| {
                left + self.x.px(v)
            })?;
        }
        let first = self.panel_left(0);
        draw_ticks(canvas, &self.y_ticks, TickSide::Left, first, |v| {
            self.y.px(v)
        })?;
        let panels_right = self.panel_left(self.names.len() - 1) + self.side;
        draw_x_title(canvas, &self.x_label, (first, panels_right), bottom)?;
        draw_y_title(
            canvas,
            &self.y_label,
            (
                MARGIN + Font::AXIS.line_height() / 2.0,
                self.top + self.side / 2.0,
            ),
            self.side,
        )?;

        // Colour bar frame, ticks and title.
        let bar_right = self.bar_x + 16.0;
        canvas.rect((self.bar_x, self.top), (bar_right, bottom), ink, false)?;
        let bar_scale = Scale::new((0.0, self.vmax), false, bottom, self.top);
        draw_ticks(canvas, &self.bar_ticks, TickSide::Right, bar_right, |v| {
            bar_scale.px(v)
        })?;
        let widest = tick_label_width(&self.bar_ticks)?;
        draw_y_title(
            canvas,
            "density",
            (
                bar_right + TICK_LEN + GAP + widest + GAP + Font::AXIS.line_height() / 2.0,
                self.top + self.side / 2.0,
            ),
            self.side,
        )?;
        draw_note(canvas, self.note.as_deref(), self.width, self.height)
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
