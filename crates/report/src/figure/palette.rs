//! Colour choices: text and grid greys, the Okabe–Ito colour-blind-safe palette (extended to ten
//! colours for class labels) and the viridis perceptual colormap for densities.

use plotters::style::RGBColor;

/// Opaque colour from a `0xRRGGBB` value.
pub(crate) const fn rgb(hex: u32) -> RGBColor {
    RGBColor((hex >> 16) as u8, (hex >> 8) as u8, hex as u8)
}

/// Text and axis lines.
pub(crate) const INK: RGBColor = rgb(0x222222);
/// Secondary text (footnotes, subtitles, missing values).
pub(crate) const MUTED: RGBColor = rgb(0x555555);
/// Major grid lines.
pub(crate) const GRID: RGBColor = rgb(0xDDDDDD);
/// Minor grid lines (between the decades of a log axis).
pub(crate) const GRID_MINOR: RGBColor = rgb(0xEEEEEE);

/// Okabe–Ito, ordered so that the first series get the colours most distinct from each other and
/// from white; yellow, the weakest on a white background, comes last.
const OKABE_ITO: [RGBColor; 8] = [
    rgb(0x0072B2), // blue
    rgb(0xD55E00), // vermillion
    rgb(0x009E73), // bluish green
    rgb(0xCC79A7), // reddish purple
    rgb(0xE69F00), // orange
    rgb(0x56B4E9), // sky blue
    rgb(0x000000), // black
    rgb(0xF0E442), // yellow
];

/// Two extra colours for ten classes: wine (from Paul Tol's palette) and a neutral grey.
const EXTRA: [RGBColor; 2] = [rgb(0x882255), rgb(0x999999)];

/// Colour of palette slot `i` (cycles after ten).
pub(crate) fn color(i: usize) -> RGBColor {
    let i = i % (OKABE_ITO.len() + EXTRA.len());
    if i < OKABE_ITO.len() {
        OKABE_ITO[i]
    } else {
        EXTRA[i - OKABE_ITO.len()]
    }
}

/// The main accent colour for single-series charts.
pub(crate) const ACCENT: RGBColor = OKABE_ITO[0];

/// Viridis sampled at eleven evenly spaced points (matplotlib's definition).
const VIRIDIS: [(u8, u8, u8); 11] = [
    (0x44, 0x01, 0x54),
    (0x48, 0x24, 0x75),
    (0x41, 0x44, 0x87),
    (0x35, 0x5F, 0x8D),
    (0x2A, 0x78, 0x8E),
    (0x21, 0x91, 0x8C),
    (0x22, 0xA8, 0x84),
    (0x44, 0xBF, 0x70),
    (0x7A, 0xD1, 0x51),
    (0xBD, 0xDF, 0x26),
    (0xFD, 0xE7, 0x25),
];

/// Viridis at `t` in `[0, 1]` (clamped), linearly interpolated between the samples.
pub(crate) fn viridis(t: f64) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let pos = t * (VIRIDIS.len() - 1) as f64;
    // `pos` is in [0, 10], so the floor indexes the table and `i + 1` is clamped into it.
    let i = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * f).round() as u8;
    [mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::style::Color;

    #[test]
    fn palette_has_ten_distinct_colours() {
        let colours: Vec<(u8, u8, u8)> = (0..10).map(|i| color(i).rgb()).collect();
        for i in 0..10 {
            for j in i + 1..10 {
                assert_ne!(colours[i], colours[j], "slots {i} and {j}");
            }
        }
        assert_eq!(color(10), color(0));
    }

    #[test]
    fn viridis_ends_and_monotone_lightness() {
        assert_eq!(viridis(0.0), [0x44, 0x01, 0x54]);
        assert_eq!(viridis(1.0), [0xFD, 0xE7, 0x25]);
        assert_eq!(viridis(-3.0), viridis(0.0));
        assert_eq!(viridis(f64::NAN), viridis(0.0));
        // Viridis gets lighter monotonically; check a luma proxy.
        let luma =
            |c: [u8; 3]| 0.3 * f64::from(c[0]) + 0.59 * f64::from(c[1]) + 0.11 * f64::from(c[2]);
        let mut last = -1.0;
        for k in 0..=100 {
            let l = luma(viridis(f64::from(k) / 100.0));
            assert!(l >= last - 0.5, "lightness drops at {k}");
            last = l;
        }
    }
}
