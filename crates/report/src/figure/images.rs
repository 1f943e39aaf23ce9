//! Grids of greyscale images: pixels drawn as enlarged squares (nearest neighbour) with
//! plotters' `BitMapElement`, framed, with optional captions. No axes, so no chart.

use plotters::element::{BitMapElement, Rectangle, Text};
use plotters::style::Color;
use plotters::style::text_anchor::{HPos, VPos};
use plotters_backend::DrawingBackend;

use super::ImageGrid;
use super::backend::{Drawn, Plan, Root, Sheet};
use super::frame::{MARGIN, TITLE_HEIGHT, draw_title};
use super::palette::{INK, rgb};
use super::text::{Font, ellipsize, text_width};
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

    fn draw<DB: DrawingBackend>(&self, root: &Root<'_, DB>) -> Result<(), ReportError> {
        let figure = Self::FIGURE;
        let (w, h, z) = (self.image_w, self.image_h, self.zoom);
        let (tile_w, tile_h) = ((w * z) as u32, (h * z) as u32);
        // Rasters first (see the backend module docs).
        for (&at, image) in self.tiles.iter().zip(&self.images) {
            let mut rgb_data = Vec::with_capacity(w * z * h * z * 3);
            for row in 0..h * z {
                for col in 0..w * z {
                    let g = image[(row / z) * w + col / z];
                    rgb_data.extend_from_slice(&[g, g, g]);
                }
            }
            let tile = BitMapElement::with_owned_buffer(at, (tile_w, tile_h), rgb_data)
                .ok_or_else(|| ReportError::Draw {
                    figure,
                    detail: "image tile buffer of the wrong size".into(),
                })?;
            root.draw(&tile).drawn(figure)?;
        }
        draw_title(root, &self.title, figure)?;
        let frame = rgb(0xBBBBBB).stroke_width(1);
        let (tw, th) = (tile_w as i32, tile_h as i32);
        for (i, &(x, y)) in self.tiles.iter().enumerate() {
            root.draw(&Rectangle::new([(x - 1, y - 1), (x + tw, y + th)], frame))
                .drawn(figure)?;
            if let Some(caption) = self.captions.as_ref().and_then(|c| c.get(i)) {
                let style = Font::NOTE.style(INK, (HPos::Center, VPos::Top));
                root.draw(&Text::new(
                    caption.as_str(),
                    (x + tw / 2, y + th + 4),
                    style,
                ))
                .drawn(figure)?;
            }
        }
        Ok(())
    }
}
