//! The data layer of overlaid histograms: bins counted here, drawn as plotters `Rectangle`s
//! (one distribution, filled) under step outlines (`LineSeries` / `DashedLineSeries`).

use plotters::element::Rectangle;
use plotters::series::{DashedLineSeries, LineSeries};
use plotters::style::Color;
use plotters_backend::DrawingBackend;

use super::Histogram;
use super::backend::Drawn;
use super::cartesian::{AxesSpec, Cartesian, ChartData, range_error};
use super::frame::{Chart, SAMPLE_W};
use super::marks::{DASHES, Sample};
use super::palette::color;
use super::ticks::{min_max, padded_range};
use crate::ReportError;

/// The bin counts of a [`Histogram`]'s series over shared bins.
pub(crate) struct Steps {
    lo: f64,
    bin_w: f64,
    counts: Vec<Vec<usize>>,
}

impl ChartData for Steps {
    const FIGURE: &'static str = "histogram";

    fn draw<DB: DrawingBackend>(&self, chart: &mut Chart<'_, '_, DB>) -> Result<(), ReportError> {
        let figure = Self::FIGURE;
        let edge = |b: usize| self.lo + b as f64 * self.bin_w;
        // A single distribution is filled; overlaid ones are outlines only, since mixed
        // translucent fills turn muddy and hide which series is which.
        if let [counts] = self.counts.as_slice() {
            let fill = color(0).mix(0.35).filled();
            chart
                .draw_series(
                    counts.iter().enumerate().map(|(b, &n)| {
                        Rectangle::new([(edge(b), 0.0), (edge(b + 1), n as f64)], fill)
                    }),
                )
                .drawn(figure)?;
        }
        for (i, counts) in self.counts.iter().enumerate() {
            let mut outline = vec![(edge(0), 0.0)];
            for (b, &n) in counts.iter().enumerate() {
                outline.push((edge(b), n as f64));
                outline.push((edge(b + 1), n as f64));
            }
            outline.push((edge(counts.len()), 0.0));
            let style = color(i).to_rgba().stroke_width(2);
            match DASHES[i % DASHES.len()] {
                Some((on, off)) => chart
                    .draw_series(DashedLineSeries::new(outline, on, off, style))
                    .drawn(figure)?,
                None => chart
                    .draw_series(LineSeries::new(outline, style))
                    .drawn(figure)?,
            };
        }
        Ok(())
    }

    fn sample(&self, i: usize) -> Sample {
        Sample {
            at: (0, 0),
            width: SAMPLE_W,
            color: color(i).to_rgba(),
            swatch: self.counts.len() == 1,
            line: Some(DASHES[i % DASHES.len()]),
            marker: None,
        }
    }
}

/// A validated, laid-out [`Histogram`].
pub(crate) type HistogramPlan = Cartesian<Steps>;

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
        let figure = <Steps as ChartData>::FIGURE;
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

        let axes = AxesSpec {
            x_range,
            x_log: false,
            y_range,
            y_integer: true,
            x_label: &chart.x_label,
            y_label: "count",
        };
        let names: Vec<String> = chart.series.iter().map(|s| s.name.clone()).collect();
        Cartesian::layout(
            &chart.title,
            &names,
            (dropped, "value"),
            &axes,
            Steps { lo, bin_w, counts },
        )
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
