//! Numbers on axes: padded value ranges, "nice" tick positions (linear and log10) with
//! consistently formatted labels, and value annotations. plotters draws the axes; these choose
//! what they show (plotters' own key points cannot share an exponent across labels or mark log
//! decades sparsely).

use super::text::{Font, max_text_width};
use crate::ReportError;

/// A labelled tick.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tick {
    pub(crate) value: f64,
    pub(crate) label: String,
}

/// `[min, max]` widened by `pad` (a fraction of the span, in log10 units for a log axis);
/// a zero span is widened around the value. `None` when the span is not finite.
pub(crate) fn padded_range(min: f64, max: f64, log: bool, pad: f64) -> Option<(f64, f64)> {
    if log {
        let (a, b) = (min.log10(), max.log10());
        let span = b - a;
        let (a, b) = if span < 1e-9 {
            (a - 0.5, b + 0.5)
        } else {
            (a - pad * span, b + pad * span)
        };
        let range = (10f64.powf(a), 10f64.powf(b));
        (range.0 > 0.0 && range.1.is_finite() && range.0 < range.1).then_some(range)
    } else {
        let span = max - min;
        if !span.is_finite() {
            return None;
        }
        let range = if span <= 1e-12 * min.abs().max(max.abs()).max(1e-300) {
            let half = if min == 0.0 { 1.0 } else { min.abs() * 0.1 };
            (min - half, max + half)
        } else {
            (min - pad * span, max + pad * span)
        };
        (range.0.is_finite() && range.1.is_finite() && range.0 < range.1).then_some(range)
    }
}

/// The smallest lower end and the largest upper end of `intervals` (`None` for none).
pub(crate) fn hull(intervals: impl IntoIterator<Item = (f64, f64)>) -> Option<(f64, f64)> {
    intervals.into_iter().fold(None, |acc, (a, b)| {
        Some(acc.map_or((a, b), |(lo, hi)| (lo.min(a), hi.max(b))))
    })
}

/// The smallest and the largest of `values` (`None` for none).
pub(crate) fn min_max(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    hull(values.into_iter().map(|v| (v, v)))
}

/// A step of the form {1, 2, 2.5, 5} × 10^k nearest to `span / target`.
fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    // The candidate nearest to `norm` on a log scale (thresholds at geometric midpoints).
    let nice = if norm < 1.42 {
        1.0
    } else if norm < 2.24 {
        2.0
    } else if norm < 3.54 {
        2.5
    } else if norm < 7.08 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Number of decimals needed to write multiples of `step` exactly.
pub(crate) fn decimals_for(step: f64) -> usize {
    let step = step.abs();
    for d in 0..=12 {
        let scaled = step * 10f64.powi(d);
        if (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0) {
            return d as usize;
        }
    }
    12
}

/// Formats `v` with `decimals` decimals, writing `0` rather than `-0`.
pub(crate) fn format_fixed(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// Whether `v` is written in scientific notation in annotations (too large or too small for
/// fixed notation to stay short).
fn needs_scientific(v: f64) -> bool {
    let a = v.abs();
    a >= 1e6 || (a > 0.0 && a < 1e-3)
}

/// Formats an annotated value: fixed notation with `decimals` decimals, or scientific notation
/// with `significant` significant digits for very large or small magnitudes.
pub(crate) fn format_value(v: f64, decimals: usize, significant: usize) -> String {
    if needs_scientific(v) {
        let mantissa_decimals = significant.saturating_sub(1);
        format!("{v:.mantissa_decimals$e}")
    } else {
        format_fixed(v, decimals)
    }
}

/// Decimals that show `values` with about four significant digits (none if all are integers);
/// values written in scientific notation do not count.
pub(crate) fn annotation_decimals(values: impl IntoIterator<Item = f64>) -> usize {
    let mut decimals = 0;
    let mut all_integral = true;
    for v in values.into_iter().filter(|&v| !needs_scientific(v)) {
        if v.fract() != 0.0 {
            all_integral = false;
        }
        let a = v.abs();
        if a > 0.0 {
            let d = 3 - a.log10().floor() as i64;
            decimals = decimals.max(d.clamp(0, 6) as usize);
        }
    }
    if all_integral { 0 } else { decimals }
}

fn scientific(v: f64) -> String {
    let s = format!("{v:.1e}");
    s.replace(".0e", "e")
}

/// About `target` ticks on a linear axis over `range`; `integer` forbids fractional steps.
pub(crate) fn linear_ticks(range: (f64, f64), target: usize, integer: bool) -> Vec<Tick> {
    let (lo, hi) = range;
    let mut step = nice_step(hi - lo, target);
    if integer && step < 1.0 {
        step = 1.0;
    }
    if !(step.is_finite() && step > 0.0) {
        return Vec::new();
    }
    let first = (lo / step - 1e-9).ceil();
    let last = (hi / step + 1e-9).floor();
    if !(first.is_finite() && last.is_finite()) || last - first > 200.0 {
        return Vec::new();
    }
    let values: Vec<f64> = (0..=(last - first) as i64)
        .map(|i| {
            let v = (first + i as f64) * step;
            if v.abs() < step * 1e-9 { 0.0 } else { v }
        })
        .collect();
    let largest = values.iter().fold(0f64, |m, v| m.max(v.abs()));
    let use_scientific = largest >= 1e6 || (largest > 0.0 && largest < 1e-3);
    // In scientific notation, all labels share the exponent of the largest tick, with as many
    // mantissa decimals as the step needs there (1.10e-5, 1.12e-5, ...).
    let exponent = if largest > 0.0 {
        largest.log10().floor() as i32
    } else {
        0
    };
    let decimals = if use_scientific {
        decimals_for(step / 10f64.powi(exponent))
    } else {
        decimals_for(step)
    };
    values
        .into_iter()
        .map(|value| Tick {
            value,
            label: if use_scientific && value != 0.0 {
                let mantissa = format_fixed(value / 10f64.powi(exponent), decimals);
                format!("{mantissa}e{exponent}")
            } else if use_scientific {
                "0".to_string()
            } else {
                format_fixed(value, decimals)
            },
        })
        .collect()
}

/// Linear ticks for a horizontal axis `plot_w` pixels long: as many as fit (up to about one per
/// 70 pixels) with their labels well apart.
pub(crate) fn horizontal_ticks(range: (f64, f64), plot_w: f64) -> Result<Vec<Tick>, ReportError> {
    let mut target = ((plot_w / 70.0).round() as usize).clamp(2, 10);
    loop {
        let ticks = linear_ticks(range, target, false);
        let widest = tick_label_width(&ticks)?;
        if target <= 2 || (widest + 16.0) * ticks.len() as f64 <= plot_w {
            return Ok(ticks);
        }
        target -= 1;
    }
}

/// Width of the widest label of `ticks` (0 for none).
pub(crate) fn tick_label_width(ticks: &[Tick]) -> Result<f64, ReportError> {
    max_text_width(ticks.iter().map(|t| t.label.as_str()), Font::TICK)
}

/// Plain label for a tick on a log axis (`1`, `50`, `0.01`, `1e7`).
fn log_label(v: f64) -> String {
    if (1e-3..1e6).contains(&v) {
        format_fixed(v, decimals_for(v))
    } else {
        scientific(v)
    }
}

/// Ticks on a log10 axis over `range` (labelled) and minor grid positions (unlabelled).
pub(crate) fn log_ticks(range: (f64, f64)) -> (Vec<Tick>, Vec<f64>) {
    let (lo, hi) = range;
    let inside = |v: f64| v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9);
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    let decades: Vec<f64> = (first..=last)
        .map(|k| 10f64.powi(k))
        .filter(|&v| inside(v))
        .collect();
    let mut minor = Vec::new();
    if (last - first) <= 8 {
        for k in first..=last {
            for m in 2..=9 {
                let v = f64::from(m) * 10f64.powi(k);
                if inside(v) {
                    minor.push(v);
                }
            }
        }
    }
    let values: Vec<f64> = if decades.len() >= 3 {
        // At most about eight labelled decades, at exponents that are multiples of a nice step.
        let n = decades.len() as i64;
        let every = [1i64, 2, 3, 5, 10, 20, 25, 50, 100]
            .into_iter()
            .find(|&e| (n + e - 1) / e <= 8)
            .unwrap_or(200);
        decades
            .into_iter()
            .filter(|v| (v.log10().round() as i64).rem_euclid(every) == 0)
            .collect()
    } else {
        let candidates: Vec<f64> = (first..=last)
            .flat_map(|k| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(k)))
            .filter(|&v| inside(v))
            .collect();
        if candidates.len() >= 2 {
            candidates
        } else {
            return (linear_ticks(range, 5, false), Vec::new());
        }
    };
    let ticks = values
        .into_iter()
        .map(|value| Tick {
            value,
            label: log_label(value),
        })
        .collect();
    (ticks, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_nice_and_inside() {
        let ticks = linear_ticks((-0.3, 4.7), 5, false);
        let values: Vec<f64> = ticks.iter().map(|t| t.value).collect();
        assert_eq!(values, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        let labels: Vec<&str> = ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, vec!["0", "1", "2", "3", "4"]);
        let ticks = linear_ticks((84.93, 85.61), 5, false);
        assert!(ticks.iter().all(|t| t.value >= 84.93 && t.value <= 85.61));
        assert!(ticks.iter().all(|t| t.label.len() == 4), "{ticks:?}");
        // Negative zero never shows.
        let ticks = linear_ticks((-1.0, 1.0), 4, false);
        assert!(ticks.iter().any(|t| t.label == "0.0"), "{ticks:?}");
        assert!(ticks.iter().all(|t| t.label != "-0" && t.label != "-0.0"));
        // Integer ticks for counts.
        let ticks = linear_ticks((0.0, 3.2), 8, true);
        assert!(ticks.iter().all(|t| t.value.fract() == 0.0));
    }

    #[test]
    fn annotations_switch_to_scientific() {
        assert_eq!(format_value(86.756, 2, 4), "86.76");
        assert_eq!(format_value(1e308, 2, 4), "1.000e308");
        assert_eq!(format_value(-1.2e-5, 2, 2), "-1.2e-5");
        assert_eq!(format_value(0.0, 2, 4), "0.00");
        assert_eq!(annotation_decimals([86.76, 1e300]), 2);
        assert_eq!(annotation_decimals([19.0, 31.0]), 0);
    }

    #[test]
    fn scientific_ticks_share_an_exponent() {
        let labels: Vec<String> = linear_ticks((1.1e-5, 1.2e-5), 5, false)
            .into_iter()
            .map(|t| t.label)
            .collect();
        assert_eq!(
            labels,
            [
                "1.10e-5", "1.12e-5", "1.14e-5", "1.16e-5", "1.18e-5", "1.20e-5"
            ]
        );
        let labels: Vec<String> = linear_ticks((0.0, 1e8), 4, false)
            .into_iter()
            .map(|t| t.label)
            .collect();
        assert_eq!(labels, ["0", "0.25e8", "0.50e8", "0.75e8", "1.00e8"]);
    }

    #[test]
    fn log_ticks_use_decades() {
        let (ticks, minor) = log_ticks((0.8, 6000.0));
        let labels: Vec<&str> = ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, vec!["1", "10", "100", "1000"]);
        assert!(minor.contains(&5000.0));
        let (ticks, minor) = log_ticks((1e-100, 1e100));
        assert!(minor.is_empty());
        assert!(ticks.len() <= 9 && ticks.len() >= 4, "{ticks:?}");
        assert!(
            ticks
                .iter()
                .all(|t| (t.value.log10().round() as i64) % 25 == 0),
            "{ticks:?}"
        );
        let (ticks, _) = log_ticks((3.0, 40.0));
        let labels: Vec<&str> = ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, vec!["5", "10", "20"]);
    }

    #[test]
    fn padded_ranges() {
        assert_eq!(padded_range(0.0, 10.0, false, 0.1), Some((-1.0, 11.0)));
        assert_eq!(padded_range(5.0, 5.0, false, 0.1), Some((4.5, 5.5)));
        assert_eq!(padded_range(0.0, 0.0, false, 0.1), Some((-1.0, 1.0)));
        assert_eq!(padded_range(-f64::MAX, f64::MAX, false, 0.1), None);
        let (lo, hi) = padded_range(1.0, 1000.0, true, 0.0).expect("range");
        assert!((lo - 1.0).abs() < 1e-9 && (hi - 1000.0).abs() < 1e-6);
    }
}
