//! Text: the embedded DejaVu font, its registration with plotters, and text measuring, fitting
//! (ellipsis, word wrap) and rasterizing with `ab_glyph`.
//!
//! plotters 0.3.7 lays text out with `ab_glyph` but drops the glyphs' side bearings, which spaces
//! letters unevenly on the bitmap. The layout here keeps them; [`super::backend`] uses it to
//! measure text for plotters' own layout (so what is measured is what is drawn) and to rasterize
//! the bitmap's text.

use std::sync::OnceLock;

use ab_glyph::{Font as _, FontRef, Glyph, PxScale, ScaleFont};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{
    FontDesc, FontFamily, FontStyle, FontTransform, IntoFont, RGBColor, TextStyle,
};
use plotters_backend::BackendTextStyle;

use crate::ReportError;

/// The one font family every figure draws with (DejaVu Sans, embedded). SVG output names it
/// `sans-serif`, so viewers substitute their own sans-serif face.
const FAMILY: &str = "sans-serif";

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

    /// The font of a text style plotters hands to a backend (only the size and weight matter:
    /// every text is DejaVu Sans).
    pub(crate) fn of_style<S: BackendTextStyle>(style: &S) -> Font {
        Font {
            size: style.size(),
            bold: matches!(style.style(), FontStyle::Bold),
        }
    }

    /// A plotters text style of this font in `color`, anchored at `pos`.
    pub(crate) fn style(self, color: RGBColor, pos: (HPos, VPos)) -> TextStyle<'static> {
        self.desc()
            .into_font()
            .color(&color)
            .pos(Pos::new(pos.0, pos.1))
    }

    fn desc(self) -> FontDesc<'static> {
        let style = if self.bold {
            FontStyle::Bold
        } else {
            FontStyle::Normal
        };
        FontDesc::new(FontFamily::Name(FAMILY), self.size, style)
    }

    /// The size in pixels.
    pub(crate) fn size(self) -> f64 {
        self.size
    }

    /// Vertical distance between the tops of two consecutive lines of this font.
    pub(crate) fn line_height(self) -> f64 {
        (self.size * 1.05).round()
    }
}

/// Registers the embedded DejaVu Sans (regular and bold) once per process.
pub(crate) fn ensure_fonts() -> Result<(), ReportError> {
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

/// Width and height (ascent to descent) in whole pixels of one line of `text` in `font`.
pub(crate) fn text_size(text: &str, font: Font) -> Result<(u32, u32), ReportError> {
    let line = layout_line(&clean_text(text), font)?;
    // Non-negative and small for any label text.
    Ok((
        line.width.ceil() as u32,
        (line.ascent - line.descent).ceil() as u32,
    ))
}

/// A pixel offset from the anchor and how much of that pixel a glyph covers, in `(0, 1]`.
pub(crate) type Coverage = ((i32, i32), f32);

/// The pixels that one line of `text` in `font` covers, relative to its anchor point: `anchor`
/// says which point of the text box the anchor is, `transform` turns the text around it, as
/// plotters' own text drawing does.
pub(crate) fn glyph_coverage(
    text: &str,
    font: Font,
    anchor: Pos,
    transform: FontTransform,
) -> Result<Vec<Coverage>, ReportError> {
    let line = layout_line(text, font)?;
    let face = face(font.bold)?;
    // The anchor in text space (x right along the baseline, y down from it), rounded so that
    // glyph rasters land on the pixel grid as rasterized.
    let ax = match anchor.h_pos {
        HPos::Left => 0.0,
        HPos::Center => line.width / 2.0,
        HPos::Right => line.width,
    };
    let ay = match anchor.v_pos {
        VPos::Top => -line.ascent,
        VPos::Center => -(line.ascent + line.descent) / 2.0,
        VPos::Bottom => -line.descent,
    };
    // Small for label text: far inside i32.
    let (ax, ay) = (ax.round() as i32, ay.round() as i32);
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
                let p = transform.transform(bx + x as i32 - ax, by + y as i32 - ay);
                pixels.push((p, coverage.min(1.0)));
            }
        });
    }
    Ok(pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

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
