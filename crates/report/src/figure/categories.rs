//! Charts of one value per category, laid out as horizontal rows so that long category labels
//! stay readable: wrapped labels on the left (the y axis' tick labels), the value axis at the
//! bottom and each value written out on the right. Dot charts (plotters `ErrorBar`s under
//! `Circle`s) and bar charts (`Rectangle`s) share it.

use plotters::chart::ChartBuilder;
use plotters::element::{Circle, ErrorBar, PathElement, Rectangle, Text};
use plotters::style::text_anchor::{HPos, VPos};
use plotters::style::{Color, RGBColor};
use plotters_backend::DrawingBackend;

use super::backend::{Drawn, Plan, Root, Sheet};
use super::frame::{
    Axis, MARGIN, Mesh, TITLE_HEIGHT, draw_mesh, draw_note, draw_title, dropped_note, note_height,
    x_label_area,
};
use super::palette::{ACCENT, INK, MUTED, rgb};
use super::text::{Font, max_text_width, wrap};
use super::ticks::{
    Tick, annotation_decimals, format_value, horizontal_ticks, hull, min_max, padded_range,
};
use super::{BarChart, DotChart};
use crate::ReportError;

const WIDTH: f64 = 800.0;
/// Category labels wrap at this fraction of the width.
const LABEL_FRACTION: f64 = 0.36;
/// Rows are spread over at least this many pixels (but no row gets taller than `MAX_ROW`).
const MIN_PLOT_H: f64 = 260.0;
const MAX_ROW: f64 = 56.0;
/// Gap between the plot and the values written right of it.
const ANNOTATION_GAP: f64 = 14.0;
/// Zebra stripe colour.
const STRIPE: RGBColor = rgb(0xF3F3F3);

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
    /// Widths of the label area left of the plot and of the room right of it.
    label_w: f64,
    annotation_w: f64,
    top: f64,
    range: (f64, f64),
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
        )? + 16.0;
        let annotation_w = max_text_width(rows.iter().map(|r| r.annotation.as_str()), Font::TICK)?
            + ANNOTATION_GAP
            + 4.0;
        let plot_w = WIDTH - 2.0 * MARGIN - label_w - annotation_w;
        if plot_w < 150.0 {
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
        let plot_h = (n * row_h).round();
        let note = dropped_note(dropped, "value");
        let height = (top + plot_h + x_label_area() + MARGIN + note_height(&note)).ceil();
        let ticks = horizontal_ticks(range, plot_w)?;
        Ok(Self {
            figure,
            kind,
            title: title.to_string(),
            subtitle,
            rows,
            label_w,
            annotation_w,
            top,
            range,
            ticks,
            value_label: value_label.to_string(),
            height,
            dropped,
            note,
        })
    }

    /// The y coordinate of row `i`'s centre (rows run top to bottom over `0..n`).
    fn row_y(&self, i: usize) -> f64 {
        self.rows.len() as f64 - i as f64 - 0.5
    }
}

impl Plan for CategoryPlan {
    fn sheet(&self) -> Sheet {
        Sheet::new(self.figure, WIDTH, self.height, self.dropped)
    }

    fn draw<DB: DrawingBackend>(&self, root: &Root<'_, DB>) -> Result<(), ReportError> {
        let figure = self.figure;
        draw_title(root, &self.title, figure)?;
        if let Some(subtitle) = &self.subtitle {
            let style = Font::NOTE.style(MUTED, (HPos::Center, VPos::Top));
            let at = ((WIDTH / 2.0) as i32, (TITLE_HEIGHT - 4.0) as i32);
            root.draw(&Text::new(subtitle.as_str(), at, style))
                .drawn(figure)?;
        }
        let n = self.rows.len();
        let area = root.margin(
            self.top as i32,
            (MARGIN + note_height(&self.note)) as i32,
            MARGIN as i32,
            (MARGIN + self.annotation_w) as i32,
        );
        // One y tick per row, at its centre, labelled with the (wrapped) category.
        let y_ticks: Vec<Tick> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| Tick {
                value: self.row_y(i),
                label: row.lines.join("\n"),
            })
            .collect();
        let mut chart = ChartBuilder::on(&area)
            .x_label_area_size(x_label_area() as u32)
            .y_label_area_size(self.label_w as u32)
            .build_cartesian_2d(
                Axis::linear(self.range, &self.ticks),
                Axis::linear((0.0, n as f64), &y_ticks),
            )
            .drawn(figure)?;

        // Zebra rows, across the labels and values too, help the eye follow a row.
        for i in (1..n).step_by(2) {
            let (_, y0) = chart.backend_coord(&(self.range.0, n as f64 - i as f64));
            let (_, y1) = chart.backend_coord(&(self.range.0, n as f64 - i as f64 - 1.0));
            let stripe = Rectangle::new(
                [(MARGIN as i32, y0), ((WIDTH - MARGIN) as i32, y1)],
                STRIPE.filled(),
            );
            root.draw(&stripe).drawn(figure)?;
        }
        let mesh = Mesh {
            x_label: &self.value_label,
            y_label: "",
            x_ticks: &self.ticks,
            y_ticks: &y_ticks,
            rows: true,
            grid: true,
        };
        draw_mesh(&mut chart, &mesh, figure)?;

        let accent = ACCENT.to_rgba();
        if self.kind == Kind::Bars {
            let zero = [(0.0, 0.0), (0.0, n as f64)];
            chart
                .draw_series(std::iter::once(PathElement::new(zero, INK.stroke_width(1))))
                .drawn(figure)?;
        }
        for (i, row) in self.rows.iter().enumerate() {
            let y = self.row_y(i);
            if let Some(v) = row.value {
                match self.kind {
                    Kind::Bars => {
                        let bar = Rectangle::new([(0.0, y - 0.3), (v, y + 0.3)], accent.filled());
                        chart.draw_series(std::iter::once(bar)).drawn(figure)?;
                    }
                    Kind::Dots => {
                        if let Some(s) = row.std_err {
                            let bar = ErrorBar::new_horizontal(
                                y,
                                v - s,
                                v,
                                v + s,
                                INK.stroke_width(2),
                                12,
                            );
                            chart.draw_series(std::iter::once(bar)).drawn(figure)?;
                        }
                        let dot = Circle::new((v, y), 6, accent.filled());
                        chart.draw_series(std::iter::once(dot)).drawn(figure)?;
                    }
                }
            }
            // The value, right of the plot (outside the plotting area, hence on the root).
            let (right, cy) = chart.backend_coord(&(self.range.1, y));
            let color = if row.value.is_some() { INK } else { MUTED };
            let style = Font::TICK.style(color, (HPos::Left, VPos::Center));
            let at = (right + ANNOTATION_GAP as i32, cy);
            root.draw(&Text::new(row.annotation.as_str(), at, style))
                .drawn(figure)?;
        }
        draw_note(root, self.note.as_deref(), figure)
    }
}
