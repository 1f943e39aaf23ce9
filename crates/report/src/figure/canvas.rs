//! Rendering machinery shared by every figure: the embedded font, text measuring and fitting,
//! drawing primitives in pixel coordinates, and [`render`], which draws one figure plan onto a
//! bitmap (encoded as PNG) and onto an SVG backend.
//!
//! Text on the bitmap is laid out and rasterized here with `ab_glyph` (plotters 0.3.7 drops the
//! glyphs' side bearings, which spaces letters unevenly); the same layout measures text for the
//! layout code, so what is measured is what is drawn. The SVG gets plain `<text>` elements.
//!
//! Raster content (image tiles, heat maps) is drawn pixel by pixel on the bitmap; on the SVG it is
//! collected and embedded as `<image>` elements holding a PNG of exactly the same pixels, placed
//! directly above the white background so that everything drawn later stays on top, as it does on
//! the bitmap. A plan must therefore draw its rasters before anything that overlaps them.

use std::sync::OnceLock;

use ab_glyph::{Font as _, FontRef, Glyph, PxScale, ScaleFont};

use plotters::coord::Shift;
use plotters::drawing::{DrawingArea, DrawingAreaErrorKind, IntoDrawingArea};
use plotters::element::{Circle, PathElement, Polygon, Rectangle, Text};
use plotters::prelude::{BitMapBackend, DrawingBackend, SVGBackend};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{
    Color, FontDesc, FontFamily, FontStyle, FontTransform, RGBAColor, RGBColor, ShapeStyle,
    TextStyle, WHITE,
};

use super::Rendered;
use crate::{ReportError, base64};

/// The one font family every figure draws with (DejaVu Sans, embedded). SVG output names it
/// `sans-serif`, so viewers substitute their own sans-serif face.
const FAMILY: &str = "sans-serif";

/// Largest accepted canvas side, in pixels (keeps memory bounded for absurd inputs).
const MAX_SIDE: u32 = 8192;

/// A point in pixel coordinates (origin top-left, y downwards).
pub(crate) type P = (f64, f64);

/// A font size and weight.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Font {
    size: f64,
    bold: bool,
}

impl Font {
    pub(crate) const TITLE: Font = Font::bold(22.0);
    pub(crate) const PANEL: Font = Font::bold(17.0);
    pub(crate) const AXIS: Font = Font::regular(17.0);
    pub(crate) const TICK: Font = Font::regular(15.0);
    pub(crate) const LEGEND: Font = Font::regular(15.0);
    pub(crate) const NOTE: Font = Font::regular(14.0);

    /// The regular face at `size` pixels.
    const fn regular(size: f64) -> Font {
        Font { size, bold: false }
    }

    /// The bold face at `size` pixels.
    const fn bold(size: f64) -> Font {
        Font { size, bold: true }
    }

    fn desc(self) -> FontDesc<'static> {
        let style = if self.bold {
            FontStyle::Bold
        } else {
            FontStyle::Normal
        };
        FontDesc::new(FontFamily::Name(FAMILY), self.size, style)
    }

    /// Vertical distance between the tops of two consecutive lines of this font.
    pub(crate) fn line_height(self) -> f64 {
        (self.size * 1.05).round()
    }
}

/// Registers the embedded DejaVu Sans (regular and bold) once per process.
fn ensure_fonts() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| {
                    "the embedded DejaVu Sans (regular) is not a valid font".to_string()
                })?;
            plotters::style::register_font(FAMILY, FontStyle::Bold, dejavu::sans::bold())
                .map_err(|_| "the embedded DejaVu Sans (bold) is not a valid font".to_string())
        })
        .clone()
        .map_err(ReportError::Font)
}

/// Replaces control characters (newlines, tabs, NUL, ...) and the non-characters U+FFFE and
/// U+FFFF by spaces: a label is one line, and XML forbids these characters, so they must never
/// reach the SVG.
pub(crate) fn clean_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// The embedded faces, parsed once.
fn face(bold: bool) -> Result<&'static FontRef<'static>, ReportError> {
    static REGULAR: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    static BOLD: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    let (cell, bytes) = if bold {
        (&BOLD, dejavu::sans::bold())
    } else {
        (&REGULAR, dejavu::sans::regular())
    };
    cell.get_or_init(|| FontRef::try_from_slice(bytes).ok())
        .as_ref()
        .ok_or_else(|| ReportError::Font("the embedded DejaVu Sans is not a valid font".into()))
}

/// Glyphs of one line of text positioned on a baseline at y = 0 starting at x = 0, with the
/// line's advance width, ascent and descent (negative), all in pixels.
struct Line {
    glyphs: Vec<Glyph>,
    width: f32,
    ascent: f32,
    descent: f32,
}

fn layout_line(text: &str, font: Font) -> Result<Line, ReportError> {
    let face = face(font.bold)?;
    let scale = PxScale::from(font.size as f32);
    let scaled = face.as_scaled(scale);
    let mut pen = 0f32;
    let mut previous = None;
    let mut glyphs = Vec::with_capacity(text.len());
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = previous {
            pen += scaled.kern(p, id);
        }
        glyphs.push(id.with_scale_and_position(scale, ab_glyph::point(pen, 0.0)));
        pen += scaled.h_advance(id);
        previous = Some(id);
    }
    Ok(Line {
        glyphs,
        width: pen,
        ascent: scaled.ascent(),
        descent: scaled.descent(),
    })
}

/// Width in pixels of `text` drawn in `font`.
pub(crate) fn text_width(text: &str, font: Font) -> Result<f64, ReportError> {
    Ok(f64::from(layout_line(&clean_text(text), font)?.width).ceil())
}

/// Largest width of any of `texts` in `font` (0 for none).
pub(crate) fn max_text_width<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    font: Font,
) -> Result<f64, ReportError> {
    let mut widest: f64 = 0.0;
    for t in texts {
        widest = widest.max(text_width(t, font)?);
    }
    Ok(widest)
}

/// `text` shortened with a trailing ellipsis so that it fits in `max_width` pixels.
pub(crate) fn ellipsize(text: &str, font: Font, max_width: f64) -> Result<String, ReportError> {
    let clean = clean_text(text);
    if text_width(&clean, font)? <= max_width {
        return Ok(clean);
    }
    let chars: Vec<char> = clean.chars().collect();
    // Binary search for the longest prefix that fits together with the ellipsis.
    let (mut lo, mut hi) = (0usize, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let candidate: String = chars[..mid].iter().collect::<String>() + "…";
        if text_width(&candidate, font)? <= max_width {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let kept: String = chars[..lo].iter().collect();
    Ok(kept.trim_end().to_string() + "…")
}

/// Greedy word wrap of `text` into lines no wider than `max_width` pixels; words longer than a
/// line are broken between characters. At most `max_lines` lines are returned, the last one
/// ellipsized if text remains.
pub(crate) fn wrap(
    text: &str,
    font: Font,
    max_width: f64,
    max_lines: usize,
) -> Result<Vec<String>, ReportError> {
    let clean = clean_text(text);
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in clean.split_whitespace() {
        let candidate = if current.is_empty() {
            word.to_string()
        } else {
            format!("{current} {word}")
        };
        if text_width(&candidate, font)? <= max_width {
            current = candidate;
            continue;
        }
        if !current.is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        // Break a word that alone is too wide.
        let mut piece = String::new();
        for c in word.chars() {
            piece.push(c);
            if text_width(&piece, font)? > max_width && piece.chars().count() > 1 {
                piece.pop();
                lines.push(std::mem::take(&mut piece));
                piece.push(c);
            }
        }
        current = piece;
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    if lines.len() > max_lines && max_lines > 0 {
        let rest = lines[max_lines - 1..].join(" ");
        lines.truncate(max_lines - 1);
        lines.push(ellipsize(&(rest + " …"), font, max_width)?);
    }
    Ok(lines)
}

/// Opaque colour from a `0xRRGGBB` value.
pub(crate) const fn rgb(hex: u32) -> RGBColor {
    RGBColor((hex >> 16) as u8, (hex >> 8) as u8, hex as u8)
}

/// Marker shapes, so that series stay distinguishable without colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    Cross,
    Plus,
    Star,
}

/// Marker shape for palette slot `i` (cycles through the eight shapes).
pub(crate) fn marker_for(i: usize) -> Marker {
    const ALL: [Marker; 8] = [
        Marker::Circle,
        Marker::Square,
        Marker::TriangleUp,
        Marker::Diamond,
        Marker::TriangleDown,
        Marker::Cross,
        Marker::Plus,
        Marker::Star,
    ];
    ALL[i % ALL.len()]
}

/// A block of pixels placed at `(x, y)`, `width × height` pixels, RGB row-major.
pub(crate) struct Raster {
    pub(crate) x: i32,
    pub(crate) y: i32,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) rgb: Vec<u8>,
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

/// A figure whose layout has been computed and whose input has been validated: drawing it can
/// only fail inside the backend.
pub(crate) trait Plan {
    /// The figure kind, canvas size and count of left-out values.
    fn sheet(&self) -> Sheet;
    /// Draws the figure (the canvas is already white).
    fn draw<DB: DrawingBackend>(&self, canvas: &mut Canvas<'_, DB>) -> Result<(), ReportError>;
}

/// Rounds a pixel coordinate; the clamp keeps absurd values from overflowing `i32`.
fn px(v: f64) -> i32 {
    // Casting a finite f64 in i32 range is exact after rounding; NaN maps to 0 by `as`.
    v.round().clamp(-1.0e6, 1.0e6) as i32
}

fn pxp(p: P) -> (i32, i32) {
    (px(p.0), px(p.1))
}

/// A pixel and how much of it a glyph covers, in `(0, 1]`.
type Coverage = ((i32, i32), f32);

/// The pixels that one line of `text` covers, with their coverage in `(0, 1]`, when drawn as
/// [`Canvas::text`] draws it: laid out as [`text_width`] measures and anchored at `at`.
fn glyph_coverage(
    text: &str,
    at: P,
    font: Font,
    (h, v): (HPos, VPos),
    rotated: bool,
) -> Result<Vec<Coverage>, ReportError> {
    let line = layout_line(text, font)?;
    let face = face(font.bold)?;
    // The anchor point in text space (x right along the baseline, y down from it).
    let ax = f64::from(match h {
        HPos::Left => 0.0,
        HPos::Center => line.width / 2.0,
        HPos::Right => line.width,
    });
    let ay = f64::from(match v {
        VPos::Top => -line.ascent,
        VPos::Center => -(line.ascent + line.descent) / 2.0,
        VPos::Bottom => -line.descent,
    });
    // Whole-pixel offset, so glyph rasters land on the pixel grid as rasterized.
    let (ox, oy) = if rotated {
        (px(at.0 - ay), px(at.1 + ax))
    } else {
        (px(at.0 - ax), px(at.1 - ay))
    };
    let mut pixels = Vec::new();
    for glyph in line.glyphs {
        let Some(outline) = face.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outline.px_bounds();
        // px_bounds are whole pixels (rounded outwards), far inside i32 for label text.
        let (bx, by) = (bounds.min.x as i32, bounds.min.y as i32);
        outline.draw(|x, y, coverage| {
            if coverage > 0.0 {
                let (tx, ty) = (bx + x as i32, by + y as i32);
                let p = if rotated {
                    (ox + ty, oy - tx)
                } else {
                    (ox + tx, oy + ty)
                };
                pixels.push((p, coverage.min(1.0)));
            }
        });
    }
    Ok(pixels)
}

/// A drawing surface in pixel coordinates on one backend.
pub(crate) struct Canvas<'a, DB: DrawingBackend> {
    area: DrawingArea<DB, Shift>,
    figure: &'static str,
    /// `Some` on the SVG backend: rasters are collected here instead of drawn.
    deferred: Option<&'a mut Vec<Raster>>,
}

impl<DB: DrawingBackend> Canvas<'_, DB> {
    fn check<T>(
        &self,
        result: Result<T, DrawingAreaErrorKind<DB::ErrorType>>,
    ) -> Result<T, ReportError> {
        result.map_err(|e| ReportError::Draw {
            figure: self.figure,
            detail: e.to_string(),
        })
    }

    /// Draws one line of text anchored at `at` (`h`/`v` say which point of the text box `at`
    /// is); `rotated` turns it to read bottom-to-top.
    pub(crate) fn text(
        &mut self,
        text: &str,
        at: P,
        font: Font,
        color: RGBColor,
        (h, v): (HPos, VPos),
        rotated: bool,
    ) -> Result<(), ReportError> {
        let clean = clean_text(text);
        if clean.trim().is_empty() {
            return Ok(());
        }
        if self.deferred.is_none() {
            // The bitmap gets the text rasterized here, with the layout that [`text_width`]
            // measures.
            let (r, g, b) = color.rgb();
            for (p, coverage) in glyph_coverage(&clean, at, font, (h, v), rotated)? {
                let result = self
                    .area
                    .draw_pixel(p, &RGBAColor(r, g, b, f64::from(coverage)));
                self.check(result)?;
            }
            return Ok(());
        }
        let mut desc = font.desc();
        if rotated {
            desc = desc.transform(FontTransform::Rotate270);
        }
        let style = TextStyle::from(desc).color(&color).pos(Pos::new(h, v));
        let result = self.area.draw(&Text::new(clean, pxp(at), style));
        self.check(result)
    }

    /// A polyline (nothing for fewer than two points).
    pub(crate) fn polyline(
        &mut self,
        points: &[P],
        color: RGBAColor,
        width: u32,
    ) -> Result<(), ReportError> {
        if points.len() < 2 {
            return Ok(());
        }
        let pts: Vec<(i32, i32)> = points.iter().copied().map(pxp).collect();
        let style = ShapeStyle {
            color,
            filled: false,
            stroke_width: width,
        };
        let result = self.area.draw(&PathElement::new(pts, style));
        self.check(result)
    }

    /// A polyline drawn with a dash `pattern` (alternating on/off lengths in pixels, starting
    /// with "on"); an empty pattern draws a solid line.
    pub(crate) fn dashed_polyline(
        &mut self,
        points: &[P],
        pattern: &[f64],
        color: RGBAColor,
        width: u32,
    ) -> Result<(), ReportError> {
        for run in dash_runs(points, pattern) {
            self.polyline(&run, color, width)?;
        }
        Ok(())
    }

    /// A straight line segment.
    pub(crate) fn line(
        &mut self,
        from: P,
        to: P,
        color: RGBAColor,
        width: u32,
    ) -> Result<(), ReportError> {
        self.polyline(&[from, to], color, width)
    }

    /// An axis-aligned rectangle between two corners, filled or outlined.
    pub(crate) fn rect(
        &mut self,
        a: P,
        b: P,
        color: RGBAColor,
        filled: bool,
    ) -> Result<(), ReportError> {
        let style = ShapeStyle {
            color,
            filled,
            stroke_width: 1,
        };
        let result = self.area.draw(&Rectangle::new([pxp(a), pxp(b)], style));
        self.check(result)
    }

    /// A filled polygon (nothing for fewer than three points).
    pub(crate) fn fill_polygon(
        &mut self,
        points: &[P],
        color: RGBAColor,
    ) -> Result<(), ReportError> {
        if points.len() < 3 {
            return Ok(());
        }
        let pts: Vec<(i32, i32)> = points.iter().copied().map(pxp).collect();
        let result = self.area.draw(&Polygon::new(pts, color.filled()));
        self.check(result)
    }

    /// A marker of "radius" `r` pixels centred at `c`.
    pub(crate) fn marker(
        &mut self,
        shape: Marker,
        c: P,
        r: f64,
        color: RGBAColor,
    ) -> Result<(), ReportError> {
        let (x, y) = c;
        match shape {
            Marker::Circle => {
                let radius = r.round().max(1.0) as u32;
                let result = self.area.draw(&Circle::new(pxp(c), radius, color.filled()));
                self.check(result)
            }
            Marker::Square => {
                let h = r * 0.88;
                self.rect((x - h, y - h), (x + h, y + h), color, true)
            }
            Marker::Diamond => {
                let h = r * 1.25;
                self.fill_polygon(&[(x, y - h), (x + h, y), (x, y + h), (x - h, y)], color)
            }
            Marker::TriangleUp | Marker::TriangleDown => {
                let h = r * 1.25;
                let s = if shape == Marker::TriangleUp {
                    1.0
                } else {
                    -1.0
                };
                self.fill_polygon(
                    &[
                        (x, y - s * h),
                        (x + h * 0.95, y + s * h * 0.7),
                        (x - h * 0.95, y + s * h * 0.7),
                    ],
                    color,
                )
            }
            Marker::Cross => {
                let h = r * 0.95;
                let w = if r >= 3.0 { 3 } else { 2 };
                self.line((x - h, y - h), (x + h, y + h), color, w)?;
                self.line((x - h, y + h), (x + h, y - h), color, w)
            }
            Marker::Plus => {
                let h = r * 1.2;
                let w = if r >= 3.0 { 3 } else { 2 };
                self.line((x - h, y), (x + h, y), color, w)?;
                self.line((x, y - h), (x, y + h), color, w)
            }
            Marker::Star => {
                let outer = r * 1.45;
                let inner = outer * 0.45;
                let points: Vec<P> = (0..10)
                    .map(|i| {
                        let radius = if i % 2 == 0 { outer } else { inner };
                        let angle = std::f64::consts::PI * (f64::from(i) / 5.0 - 0.5);
                        (x + radius * angle.cos(), y + radius * angle.sin())
                    })
                    .collect();
                self.fill_polygon(&points, color)
            }
        }
    }

    /// Places a block of pixels (see the module docs for the ordering rule).
    pub(crate) fn raster(&mut self, raster: Raster) -> Result<(), ReportError> {
        if let Some(deferred) = self.deferred.as_mut() {
            deferred.push(raster);
            return Ok(());
        }
        let width = raster.width as usize;
        for (i, pixel) in raster.rgb.chunks_exact(3).enumerate() {
            // `i / width` < height and `i % width` < width, both far below i32::MAX because the
            // canvas side is limited to MAX_SIDE.
            let x = raster.x + (i % width) as i32;
            let y = raster.y + (i / width) as i32;
            let result = self
                .area
                .draw_pixel((x, y), &RGBColor(pixel[0], pixel[1], pixel[2]));
            self.check(result)?;
        }
        Ok(())
    }
}

/// Splits a polyline into its "on" runs under a dash pattern.
fn dash_runs(points: &[P], pattern: &[f64]) -> Vec<Vec<P>> {
    if points.len() < 2 || pattern.is_empty() || pattern.iter().any(|&l| l <= 0.0) {
        return vec![points.to_vec()];
    }
    let mut runs = Vec::new();
    let mut current = vec![points[0]];
    let mut index = 0;
    let mut left = pattern[0];
    let mut on = true;
    for pair in points.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let length = (b.0 - a.0).hypot(b.1 - a.1);
        let mut travelled = 0.0;
        while length - travelled > left {
            travelled += left;
            let t = travelled / length;
            let p = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
            if on {
                current.push(p);
                runs.push(std::mem::take(&mut current));
            } else {
                current = vec![p];
            }
            on = !on;
            index = (index + 1) % pattern.len();
            left = pattern[index];
        }
        left -= length - travelled;
        if on {
            current.push(b);
        }
    }
    if on && current.len() >= 2 {
        runs.push(current);
    }
    runs
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
        BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area(),
        figure,
        &plan,
        None,
    )?;
    let png =
        encode_png(&rgb, width, height).map_err(|detail| ReportError::Encode { figure, detail })?;

    // SVG, with rasters collected instead of drawn.
    let mut svg = String::new();
    let mut rasters = Vec::new();
    draw_plan(
        SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area(),
        figure,
        &plan,
        Some(&mut rasters),
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

/// Fills `area` white, draws `plan` on it (collecting rasters in `deferred` when given, as the
/// SVG backend needs) and presents the result.
fn draw_plan<DB: DrawingBackend, T: Plan>(
    area: DrawingArea<DB, Shift>,
    figure: &'static str,
    plan: &T,
    deferred: Option<&mut Vec<Raster>>,
) -> Result<(), ReportError> {
    let mut canvas = Canvas {
        area,
        figure,
        deferred,
    };
    let result = canvas.area.fill(&WHITE);
    canvas.check(result)?;
    plan.draw(&mut canvas)?;
    let result = canvas.area.present();
    canvas.check(result)
}

/// Encodes an RGB buffer as an 8-bit RGB PNG (deterministic: fixed settings, no metadata).
pub(crate) fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_runs_alternate_and_cover_the_pattern() {
        let line = [(0.0, 0.0), (30.0, 0.0)];
        let runs = dash_runs(&line, &[5.0, 5.0]);
        // 30 px with 5 on / 5 off: on at [0,5], [10,15], [20,25].
        assert_eq!(runs.len(), 3);
        for (k, run) in runs.iter().enumerate() {
            let start = run[0].0;
            let end = run[run.len() - 1].0;
            assert!(
                (start - 10.0 * k as f64).abs() < 1e-9,
                "run {k} starts at {start}"
            );
            assert!(
                (end - start - 5.0).abs() < 1e-9,
                "run {k} has length {}",
                end - start
            );
        }
        // A run continues around a corner.
        let corner = [(0.0, 0.0), (3.0, 0.0), (3.0, 3.0)];
        let runs = dash_runs(&corner, &[5.0, 5.0]);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].len(), 3);
    }

    #[test]
    fn wrap_and_ellipsize_respect_the_width() {
        ensure_fonts().expect("embedded font");
        let text = "iwae k=50 (aggregate posterior) with a rather long description";
        let lines = wrap(text, Font::TICK, 150.0, 10).expect("wrap");
        assert!(lines.len() > 1);
        for l in &lines {
            assert!(
                text_width(l, Font::TICK).expect("measure") <= 150.0,
                "{l:?} too wide"
            );
        }
        assert_eq!(lines.join(" "), text);
        let short = ellipsize(text, Font::TICK, 100.0).expect("ellipsize");
        assert!(short.ends_with('…'));
        assert!(text_width(&short, Font::TICK).expect("measure") <= 100.0);
        let limited = wrap(text, Font::TICK, 150.0, 2).expect("wrap");
        assert_eq!(limited.len(), 2);
        assert!(limited[1].ends_with('…'));
    }

    #[test]
    fn control_characters_are_removed() {
        assert_eq!(clean_text("a\nb\tc\u{0}d\u{FFFE}e"), "a b c d e");
    }
}
