//! The frame of line charts, scatter plots and histograms: a plotters cartesian chart with the
//! title on top, the legend on the right, the footnote at the bottom and a data layer
//! ([`ChartData`]) drawn between the mesh and the legend.

use plotters::chart::ChartBuilder;
use plotters_backend::DrawingBackend;

use super::backend::{Drawn, Plan, Root, Sheet};
use super::frame::{
    Axis, Chart, LEGEND_GAP, MARGIN, Mesh, TITLE_HEIGHT, draw_legend, draw_mesh, draw_note,
    draw_title, dropped_note, legend_height, legend_width, note_height, x_label_area, y_label_area,
};
use super::marks::Sample;
use super::text::{Font, max_text_width, wrap};
use super::ticks::{Tick, horizontal_ticks, linear_ticks, log_ticks};
use crate::ReportError;

/// Width of every chart.
const WIDTH: f64 = 800.0;
/// Height of a chart unless its legend needs more.
const MIN_HEIGHT: f64 = 500.0;
/// Legend names wrap at this width.
const LEGEND_TEXT_W: f64 = 190.0;
/// Room above the plot for the half of the top tick label that sticks out.
const PLOT_TOP: f64 = 10.0;

/// The data layer of a [`Cartesian`] chart.
pub(crate) trait ChartData {
    /// The figure kind named in errors.
    const FIGURE: &'static str;
    /// Draws the data over the mesh.
    fn draw<DB: DrawingBackend>(&self, chart: &mut Chart<'_, '_, DB>) -> Result<(), ReportError>;
    /// The legend sample of entry `entry` (a series or a class).
    fn sample(&self, entry: usize) -> Sample;
}

/// What a chart's axes show.
pub(crate) struct AxesSpec<'a> {
    pub(crate) x_range: (f64, f64),
    pub(crate) x_log: bool,
    pub(crate) y_range: (f64, f64),
    pub(crate) y_integer: bool,
    pub(crate) x_label: &'a str,
    pub(crate) y_label: &'a str,
}

/// A validated, laid-out chart with its data layer `D`.
pub(crate) struct Cartesian<D> {
    title: String,
    x_label: String,
    y_label: String,
    x_range: (f64, f64),
    x_log: bool,
    y_range: (f64, f64),
    x_ticks: Vec<Tick>,
    x_minor: Vec<f64>,
    y_ticks: Vec<Tick>,
    x_area: f64,
    y_area: f64,
    /// Legend names, wrapped to fit.
    legend: Vec<Vec<String>>,
    legend_w: f64,
    height: f64,
    dropped: usize,
    note: Option<String>,
    data: D,
}

impl<D: ChartData> Cartesian<D> {
    /// Lays out a chart titled `title` with a legend of `names`, the footnote for `dropped`
    /// non-finite `what`s and `axes`.
    pub(crate) fn layout(
        title: &str,
        names: &[String],
        (dropped, what): (usize, &str),
        axes: &AxesSpec<'_>,
        data: D,
    ) -> Result<Self, ReportError> {
        let legend = names
            .iter()
            .map(|n| wrap(n, Font::LEGEND, LEGEND_TEXT_W, 3))
            .collect::<Result<Vec<_>, _>>()?;
        let legend_w = legend_width(max_text_width(
            legend.iter().flatten().map(String::as_str),
            Font::LEGEND,
        )?);
        let note = dropped_note(dropped, what);
        let x_area = x_label_area();
        let fixed = TITLE_HEIGHT + PLOT_TOP + x_area + MARGIN + note_height(&note);
        let height = (fixed + legend_height(&legend)).max(MIN_HEIGHT).ceil();
        let plot_h = height - fixed;
        let y_target = ((plot_h / 55.0).round() as usize).clamp(3, 9);
        let y_ticks = linear_ticks(axes.y_range, y_target, axes.y_integer);
        let y_area = y_label_area(&y_ticks)?;
        let plot_w = WIDTH - 2.0 * MARGIN - legend_w - LEGEND_GAP - y_area;
        if plot_w < 100.0 {
            return Err(ReportError::invalid(
                D::FIGURE,
                "the legend and tick labels leave no room for the plot",
            ));
        }
        let (x_ticks, x_minor) = if axes.x_log {
            log_ticks(axes.x_range)
        } else {
            (horizontal_ticks(axes.x_range, plot_w)?, Vec::new())
        };
        Ok(Self {
            title: title.to_string(),
            x_label: axes.x_label.to_string(),
            y_label: axes.y_label.to_string(),
            x_range: axes.x_range,
            x_log: axes.x_log,
            y_range: axes.y_range,
            x_ticks,
            x_minor,
            y_ticks,
            x_area,
            y_area,
            legend,
            legend_w,
            height,
            dropped,
            note,
            data,
        })
    }

    /// Builds the chart on `area` with the x axis `x` and draws mesh, data and legend.
    fn draw_on<DB: DrawingBackend>(&self, area: &Root<'_, DB>, x: Axis) -> Result<(), ReportError> {
        let figure = D::FIGURE;
        let y = Axis::linear(self.y_range, &self.y_ticks);
        let mut chart = ChartBuilder::on(area)
            .x_label_area_size(self.x_area as u32)
            .y_label_area_size(self.y_area as u32)
            .build_cartesian_2d(x, y)
            .drawn(figure)?;
        let mesh = Mesh {
            x_label: &self.x_label,
            y_label: &self.y_label,
            x_ticks: &self.x_ticks,
            y_ticks: &self.y_ticks,
            rows: false,
            grid: true,
        };
        draw_mesh(&mut chart, &mesh, figure)?;
        self.data.draw(&mut chart)
    }
}

impl<D: ChartData> Plan for Cartesian<D> {
    fn sheet(&self) -> Sheet {
        Sheet::new(D::FIGURE, WIDTH, self.height, self.dropped)
    }

    fn draw<DB: DrawingBackend>(&self, root: &Root<'_, DB>) -> Result<(), ReportError> {
        draw_title(root, &self.title, D::FIGURE)?;
        let area = root.margin(
            (TITLE_HEIGHT + PLOT_TOP) as i32,
            (MARGIN + note_height(&self.note)) as i32,
            MARGIN as i32,
            (MARGIN + self.legend_w + LEGEND_GAP) as i32,
        );
        let x = if self.x_log {
            Axis::log(self.x_range, &self.x_ticks, &self.x_minor)
        } else {
            Axis::linear(self.x_range, &self.x_ticks)
        };
        self.draw_on(&area, x)?;
        let legend_area = root.margin(
            (TITLE_HEIGHT + PLOT_TOP) as i32 - 5,
            (MARGIN + note_height(&self.note)) as i32,
            (WIDTH - MARGIN - self.legend_w) as i32 - 5,
            MARGIN as i32 - 5,
        );
        let entries: Vec<(Vec<String>, Sample)> = (self.legend.iter().cloned())
            .enumerate()
            .map(|(i, name)| (name, self.data.sample(i)))
            .collect();
        draw_legend(&legend_area, &entries, D::FIGURE)?;
        draw_note(root, self.note.as_deref(), D::FIGURE)
    }
}

/// The error for values whose span overflows.
pub(crate) fn range_error(figure: &'static str, axis: &str) -> ReportError {
    ReportError::invalid(
        figure,
        format!("the {axis} values span too wide a range to draw"),
    )
}
