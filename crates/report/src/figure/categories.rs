//! Charts of one value per category, laid out as horizontal rows so that long category labels
//! stay readable: wrapped labels on the left, the value axis at the bottom and each value
//! written out on the right. Dot charts (with standard-error bars) and bar charts share it.

use plotters::prelude::DrawingBackend;
use plotters::style::Color;
use plotters::style::text_anchor::{HPos, VPos};

use super::axis::{
    GRID, INK, MARGIN, MUTED, Scale, TITLE_HEIGHT, Tick, TickSide, annotation_decimals, draw_note,
    draw_ticks, draw_title, draw_x_title, dropped_note, format_value, height_with_x_axis,
    horizontal_ticks, hull, min_max, padded_range,
};
use super::canvas::{Canvas, Font, Plan, Sheet, max_text_width, rgb, wrap};
use super::palette::ACCENT;
use super::{BarChart, DotChart};
use crate::ReportError;

const WIDTH: f64 = 800.0;
/// Category labels wrap at this fraction of the width.
const LABEL_FRACTION: f64 = 0.36;
/// Rows are spread over at least this many pixels (but no row gets taller than `MAX_ROW`).
const MIN_PLOT_H: f64 = 260.0;
const MAX_ROW: f64 = 56.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dots,
    Bars,
}

struct Row {
    lines: Vec<String>,
    /// `None` when the value was not finite.
    value: Option<f64>,
    std_err: Option<f64>,
    annotation: String,
}

/// A validated, laid-out [`DotChart`] or [`BarChart`].
pub(crate) struct CategoryPlan {
    figure: &'static str,
    kind: Kind,
    title: String,
    subtitle: Option<String>,
    rows: Vec<Row>,
    row_h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    scale: Scale,
    ticks: Vec<Tick>,
    value_label: String,
    height: f64,
    dropped: usize,
    note: Option<String>,
}

/// Input common to both kinds: label, value (if finite), standard error (if any and finite).
struct Item {
    label: String,
    value: Option<f64>,
    std_err: Option<f64>,
}

impl CategoryPlan {
    pub(crate) fn dots(chart: &DotChart) -> Result<Self, ReportError> {
        let figure = "dot chart";
        if chart.items.is_empty() {
            return Err(ReportError::no_data(figure, "no items given"));
        }
        let mut dropped = 0;
        let mut items = Vec::with_capacity(chart.items.len());
        for (i, (label, value, std_err)) in chart.items.iter().enumerate() {
            let std_err = match *std_err {
                Some(s) if s.is_finite() && s < 0.0 => {
                    return Err(ReportError::invalid(
                        figure,
                        format!("item {i} ({label:?}): standard error {s} is negative"),
                    ));
                }
                Some(s) if !s.is_finite() => {
                    dropped += 1;
                    None
                }
                other => other,
            };
            let value = if value.is_finite() {
                Some(*value)
            } else {
                dropped += 1;
                None
            };
            items.push(Item {
                label: label.clone(),
                value,
                std_err: value.and(std_err),
            });
        }
        let ends = items.iter().filter_map(|it| {
            it.value
                .map(|v| (v - it.std_err.unwrap_or(0.0), v + it.std_err.unwrap_or(0.0)))
        });
        let Some((lo, hi)) = hull(ends) else {
            return Err(ReportError::no_data(figure, "no item has a finite value"));
        };
        let range = padded_range(lo, hi, false, 0.08)
            .ok_or_else(|| ReportError::invalid(figure, "the values span too wide a range"))?;
        let subtitle = items
            .iter()
            .any(|it| it.std_err.is_some())
            .then(|| "Error bars: ±1 standard error.".to_string());
        Self::layout(
            figure,
            Kind::Dots,
            &chart.title,
            &chart.value_label,
            items,
            range,
            subtitle,
            dropped,
        )
    }

    pub(crate) fn bars(chart: &BarChart) -> Result<Self, ReportError> {
        let figure = "bar chart";
        if chart.items.is_empty() {
            return Err(ReportError::no_data(figure, "no items given"));
        }
        let mut dropped = 0;
        let items: Vec<Item> = chart
            .items
            .iter()
            .map(|(label, value)| Item {
                label: label.clone(),
                value: if value.is_finite() {
                    Some(*value)
                } else {
                    dropped += 1;
                    None
                },
                std_err: None,
            })
            .collect();
        let Some((lo, hi)) = min_max(items.iter().filter_map(|it| it.value)) else {
            return Err(ReportError::no_data(figure, "no item has a finite value"));
        };
        // Bars start at zero, so zero is always on the axis.
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let (mut a, mut b) = padded_range(lo, hi, false, 0.05)
            .ok_or_else(|| ReportError::invalid(figure, "the values span too wide a range"))?;
        if lo >= 0.0 {
            a = 0.0;
        }
        if hi <= 0.0 {
            b = 0.0;
        }
        Self::layout(
            figure,
            Kind::Bars,
            &chart.title,
            &chart.value_label,
            items,
            (a, b),
            None,
            dropped,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn layout(
        figure: &'static str,
        kind: Kind,
        title: &str,
        value_label: &str,
        items: Vec<Item>,
        range: (f64, f64),
        subtitle: Option<String>,
        dropped: usize,
    ) -> Result<Self, ReportError> {
        let decimals = annotation_decimals(items.iter().filter_map(|it| it.value));
        let mut rows = Vec::with_capacity(items.len());
        for it in items {
            let lines = wrap(&it.label, Font::TICK, WIDTH * LABEL_FRACTION, 3)?;
            let annotation = match (it.value, it.std_err) {
                (None, _) => "not finite".to_string(),
                (Some(v), None) => format_value(v, decimals, 4),
                (Some(v), Some(s)) => {
                    // The error's first significant digit, at least the value's precision.
                    let se_decimals = if s > 0.0 {
                        ((-s.log10().floor()).clamp(0.0, 6.0) as usize).max(decimals)
                    } else {
                        decimals
                    };
                    format!(
                        "{} ± {}",
                        format_value(v, se_decimals, 4),
                        format_value(s, se_decimals, 2)
                    )
                }
            };
            rows.push(Row {
                lines,
                value: it.value,
                std_err: it.std_err,
                annotation,
            });
        }
        let n = rows.len() as f64;
        let lh = Font::TICK.line_height();
        let max_lines = rows.iter().map(|r| r.lines.len()).max().unwrap_or(1) as f64;
        let row_h = (max_lines * lh + 14.0)
            .max(30.0)
            .max((MIN_PLOT_H / n).min(MAX_ROW));
        let label_w = max_text_width(
            rows.iter().flat_map(|r| r.lines.iter().map(String::as_str)),
            Font::TICK,
        )?;
        let annot_w = max_text_width(rows.iter().map(|r| r.annotation.as_str()), Font::TICK)?;
        let left = MARGIN + label_w + 16.0;
        let right = WIDTH - MARGIN - annot_w - 18.0;
        if right - left < 150.0 {
            return Err(ReportError::invalid(
                figure,
                "the category labels and values leave no room for the plot",
            ));
        }
        let subtitle_h = if subtitle.is_some() {
            Font::NOTE.line_height() + 4.0
        } else {
            0.0
        };
        let top = TITLE_HEIGHT + subtitle_h + 4.0;
        let bottom = top + n * row_h;
        let note = dropped_note(dropped, "value");
        let height = height_with_x_axis(bottom, &note);
        let ticks = horizontal_ticks(range, right - left)?;
        Ok(Self {
            figure,
            kind,
            title: title.to_string(),
            subtitle,
            rows,
            row_h,
            left,
            right,
            top,
            bottom,
            scale: Scale::new(range, false, left, right),
            ticks,
            value_label: value_label.to_string(),
            height,
            dropped,
            note,
        })
    }
}

impl Plan for CategoryPlan {
    fn sheet(&self) -> Sheet {
        Sheet::new(self.figure, WIDTH, self.height, self.dropped)
    }

    fn draw<DB: DrawingBackend>(&self, canvas: &mut Canvas<'_, DB>) -> Result<(), ReportError> {
        draw_title(canvas, &self.title, WIDTH)?;
        if let Some(subtitle) = &self.subtitle {
            canvas.text(
                subtitle,
                (WIDTH / 2.0, TITLE_HEIGHT - 4.0),
                Font::NOTE,
                MUTED,
                (HPos::Center, VPos::Top),
                false,
            )?;
        }
        // Zebra rows help the eye follow a row from label to value.
        for i in (1..self.rows.len()).step_by(2) {
            let y = self.top + i as f64 * self.row_h;
            canvas.rect(
                (MARGIN, y),
                (WIDTH - MARGIN, y + self.row_h),
                rgb(0xF3F3F3).to_rgba(),
                true,
            )?;
        }
        for t in &self.ticks {
            let x = self.scale.px(t.value);
            canvas.line((x, self.top), (x, self.bottom), GRID.to_rgba(), 1)?;
        }
        let accent = ACCENT.to_rgba();
        if self.kind == Kind::Bars {
            let x0 = self.scale.px(0.0);
            canvas.line((x0, self.top), (x0, self.bottom), INK.to_rgba(), 1)?;
        }
        let lh = Font::TICK.line_height();
        for (i, row) in self.rows.iter().enumerate() {
            let cy = self.top + (i as f64 + 0.5) * self.row_h;
            if let Some(v) = row.value {
                let x = self.scale.px(v);
                match self.kind {
                    Kind::Bars => {
                        let half = self.row_h * 0.3;
                        let x0 = self.scale.px(0.0);
                        canvas.rect((x0, cy - half), (x, cy + half), accent, true)?;
                    }
                    Kind::Dots => {
                        if let Some(s) = row.std_err {
                            let (a, b) = (self.scale.px(v - s), self.scale.px(v + s));
                            canvas.line((a, cy), (b, cy), INK.to_rgba(), 2)?;
                            canvas.line((a, cy - 6.0), (a, cy + 6.0), INK.to_rgba(), 2)?;
                            canvas.line((b, cy - 6.0), (b, cy + 6.0), INK.to_rgba(), 2)?;
                        }
                        canvas.marker(super::canvas::Marker::Circle, (x, cy), 6.0, accent)?;
                    }
                }
            }
            let block_top = cy - row.lines.len() as f64 * lh / 2.0;
            for (k, line) in row.lines.iter().enumerate() {
                canvas.text(
                    line,
                    (self.left - 12.0, block_top + (k as f64 + 0.5) * lh),
                    Font::TICK,
                    INK,
                    (HPos::Right, VPos::Center),
                    false,
                )?;
            }
            let color = if row.value.is_some() { INK } else { MUTED };
            canvas.text(
                &row.annotation,
                (self.right + 14.0, cy),
                Font::TICK,
                color,
                (HPos::Left, VPos::Center),
                false,
            )?;
        }
        // Value axis.
        canvas.line(
            (self.left, self.bottom),
            (self.right, self.bottom),
            INK.to_rgba(),
            1,
        )?;
        draw_ticks(canvas, &self.ticks, TickSide::Below, self.bottom, |v| {
            self.scale.px(v)
        })?;
        draw_x_title(
            canvas,
            &self.value_label,
            (self.left, self.right),
            self.bottom,
        )?;
        draw_note(canvas, self.note.as_deref(), WIDTH, self.height)
    }
}
