//! The drawing backend every figure is drawn on, and [`render`], which draws one figure plan on a
//! bitmap (encoded as PNG) and on an SVG.
//!
//! [`Glyphs`] wraps plotters' `BitMapBackend` or `SVGBackend` and changes two things, once for
//! every chart plotters lays out:
//!
//! - Text. plotters 0.3.7 drops the glyphs' side bearings when it rasterizes text with
//!   `ab_glyph`, which spaces letters unevenly. The wrapper measures text with
//!   [`super::text`]'s layout on both backends (so the PNG and the SVG get the same layout) and
//!   rasterizes it with that layout on the bitmap; the SVG gets plain `<text>` elements. Text
//!   holding line breaks (wrapped category labels) is drawn as stacked lines.
//! - Rasters (image tiles, heat maps, drawn with plotters' `BitMapElement`). The SVG backend
//!   embeds bitmaps only with plotters' `image` feature (and the `image` crate); without it, it
//!   would write one `<rect>` per pixel. The wrapper collects them instead and [`render`] embeds
//!   each as an `<image>` holding a PNG of exactly the same pixels, placed directly above the
//!   white background so that everything drawn later stays on top, as on the bitmap. A plan must
//!   therefore draw its rasters before anything that overlaps them.

use std::fmt::Display;

use plotters::coord::Shift;
use plotters::drawing::{DrawingArea, IntoDrawingArea};
use plotters::prelude::{BitMapBackend, SVGBackend};
use plotters::style::WHITE;
use plotters::style::text_anchor::VPos;
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

use super::Rendered;
use super::text::{Font, clean_text, ensure_fonts, glyph_coverage, text_size};
use crate::{ReportError, base64};

/// Largest accepted canvas side, in pixels (keeps memory bounded for absurd inputs).
const MAX_SIDE: u32 = 8192;

/// A block of pixels placed at `(x, y)`, `width × height` pixels, RGB row-major.
pub(crate) struct Raster {
    x: i32,
    y: i32,
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

/// A plotters backend with correct text and embeddable rasters (see the module docs).
pub(crate) struct Glyphs<'a, DB> {
    inner: DB,
    /// `Some` on the SVG backend: text is passed on as text and rasters are collected here.
    deferred: Option<&'a mut Vec<Raster>>,
}

/// The root drawing area of a figure.
pub(crate) type Root<'a, DB> = DrawingArea<Glyphs<'a, DB>, Shift>;

impl<DB: DrawingBackend> DrawingBackend for Glyphs<'_, DB> {
    type ErrorType = DB::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        // Several lines (category labels wrapped by the layout) are stacked around the anchor.
        let lines: Vec<&str> = text.split('\n').collect();
        let n = lines.len() as f64;
        let lh = Font::of_style(style).line_height();
        let first = match style.anchor().v_pos {
            VPos::Top => 0.0,
            VPos::Center => -(n - 1.0) / 2.0,
            VPos::Bottom => -(n - 1.0),
        };
        for (k, line) in lines.into_iter().enumerate() {
            let dy = ((first + k as f64) * lh).round() as i32;
            let (dx, dy) = style.transform().transform(0, dy);
            self.draw_line_of_text(line, style, (pos.0 + dx, pos.1 + dy))?;
        }
        Ok(())
    }

    fn estimate_text_size<TStyle: BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result<(u32, u32), DrawingErrorKind<DB::ErrorType>> {
        let font = Font::of_style(style);
        let mut width = 0;
        let mut lines = 0;
        let mut height = 0;
        for line in text.split('\n') {
            let (w, h) =
                text_size(line, font).map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
            width = width.max(w);
            height = h;
            lines += 1;
        }
        // Lines after the first add a line height each (small counts: no overflow).
        let extra = (f64::from(lines - 1) * font.line_height()).round() as u32;
        Ok((width, height + extra))
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        (width, height): (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        match self.deferred.as_mut() {
            Some(deferred) => {
                deferred.push(Raster {
                    x: pos.0,
                    y: pos.1,
                    width,
                    height,
                    rgb: src.to_vec(),
                });
                Ok(())
            }
            None => self.inner.blit_bitmap(pos, (width, height), src),
        }
    }
}

impl<DB: DrawingBackend> Glyphs<'_, DB> {
    /// Draws one line of text: as text on the SVG, rasterized with our layout on the bitmap.
    fn draw_line_of_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let clean = clean_text(text);
        if clean.trim().is_empty() {
            return Ok(());
        }
        if self.deferred.is_some() {
            return self.inner.draw_text(&clean, style, pos);
        }
        let color = style.color();
        let coverage = glyph_coverage(
            &clean,
            Font::of_style(style),
            style.anchor(),
            style.transform(),
        )
        .map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        for ((dx, dy), c) in coverage {
            let pixel = BackendColor {
                alpha: color.alpha * f64::from(c),
                rgb: color.rgb,
            };
            self.inner.draw_pixel((pos.0 + dx, pos.1 + dy), pixel)?;
        }
        Ok(())
    }
}

/// Turns drawing errors into [`ReportError::Draw`] for a named figure.
pub(crate) trait Drawn<T> {
    fn drawn(self, figure: &'static str) -> Result<T, ReportError>;
}

impl<T, E: Display> Drawn<T> for Result<T, E> {
    fn drawn(self, figure: &'static str) -> Result<T, ReportError> {
        self.map_err(|e| ReportError::Draw {
            figure,
            detail: e.to_string(),
        })
    }
}

/// What [`render`] needs to know of a figure besides how to draw it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sheet {
    /// The figure kind named in errors.
    figure: &'static str,
    /// Canvas width in pixels.
    width: u32,
    /// Canvas height in pixels.
    height: u32,
    /// Number of non-finite input values left out.
    dropped: usize,
}

impl Sheet {
    /// A `width × height` canvas (whole pixels, as the layouts compute them) for a `figure`
    /// that left out `dropped` non-finite values.
    pub(crate) fn new(figure: &'static str, width: f64, height: f64, dropped: usize) -> Sheet {
        Sheet {
            figure,
            width: width as u32,
            height: height as u32,
            dropped,
        }
    }
}

/// A figure whose input has been validated and whose layout has been computed.
pub(crate) trait Plan {
    /// The figure kind, canvas size and count of left-out values.
    fn sheet(&self) -> Sheet;
    /// Draws the figure on `root` (already white).
    fn draw<DB: DrawingBackend>(&self, root: &Root<'_, DB>) -> Result<(), ReportError>;
}

/// Registers the embedded fonts, builds the figure plan with `plan` (laying out measures text)
/// and draws it on a bitmap and on an SVG backend.
pub(crate) fn render<T: Plan>(
    plan: impl FnOnce() -> Result<T, ReportError>,
) -> Result<Rendered, ReportError> {
    ensure_fonts()?;
    let plan = plan()?;
    let Sheet {
        figure,
        width,
        height,
        dropped,
    } = plan.sheet();
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(ReportError::invalid(
            figure,
            format!(
                "the figure would be {width}×{height} pixels; each side must be 1..={MAX_SIDE}"
            ),
        ));
    }

    // Bitmap. The buffer size fits in usize: both sides are at most MAX_SIDE.
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    draw_plan(
        Glyphs {
            inner: BitMapBackend::with_buffer(&mut rgb, (width, height)),
            deferred: None,
        },
        figure,
        &plan,
    )?;
    let png =
        encode_png(&rgb, width, height).map_err(|detail| ReportError::Encode { figure, detail })?;

    // SVG, with rasters collected instead of drawn.
    let mut svg = String::new();
    let mut rasters = Vec::new();
    draw_plan(
        Glyphs {
            inner: SVGBackend::with_string(&mut svg, (width, height)),
            deferred: Some(&mut rasters),
        },
        figure,
        &plan,
    )?;
    let svg = embed_rasters(svg, width, height, &rasters)
        .map_err(|detail| ReportError::Encode { figure, detail })?;

    Ok(Rendered {
        png,
        svg,
        width,
        height,
        dropped,
    })
}

/// Fills the backend white, draws `plan` on it and presents the result.
fn draw_plan<DB: DrawingBackend, T: Plan>(
    backend: Glyphs<'_, DB>,
    figure: &'static str,
    plan: &T,
) -> Result<(), ReportError> {
    let root = backend.into_drawing_area();
    root.fill(&WHITE).drawn(figure)?;
    plan.draw(&root)?;
    root.present().drawn(figure)
}

/// Encodes an RGB buffer as an 8-bit RGB PNG (deterministic: fixed settings, no metadata).
fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Charts are mostly flat colour: per-row filter choice and strong deflate pay off.
    encoder.set_compression(png::Compression::Best);
    encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Inserts the rasters as `<image>` elements right after the SVG's white background.
fn embed_rasters(
    svg: String,
    width: u32,
    height: u32,
    rasters: &[Raster],
) -> Result<String, String> {
    if rasters.is_empty() {
        return Ok(svg);
    }
    // The document starts exactly like a white-filled empty canvas of the same size; that prefix
    // (without its closing tag) is where the background ends.
    let mut background = String::new();
    {
        let area = SVGBackend::with_string(&mut background, (width, height)).into_drawing_area();
        area.fill(&WHITE).map_err(|e| e.to_string())?;
        area.present().map_err(|e| e.to_string())?;
    }
    let prefix = background
        .strip_suffix("</svg>\n")
        .ok_or("unexpected SVG layout from the backend")?;
    let rest = svg
        .strip_prefix(prefix)
        .ok_or("the SVG does not start with its background")?;
    let mut out = String::with_capacity(svg.len() + rasters.len() * 1024);
    out.push_str(prefix);
    for r in rasters {
        let png = encode_png(&r.rgb, r.width, r.height)?;
        out.push_str(&format!(
            "<image x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" preserveAspectRatio=\"none\" \
             image-rendering=\"optimizeSpeed\" style=\"image-rendering:pixelated\" \
             href=\"data:image/png;base64,{}\"/>\n",
            r.x,
            r.y,
            r.width,
            r.height,
            base64::encode(&png)
        ));
    }
    out.push_str(rest);
    Ok(out)
}
