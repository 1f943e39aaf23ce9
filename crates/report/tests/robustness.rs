//! Hostile numbers and degenerate shapes thrown at every figure: each call must return (an error
//! or a figure) without panicking, and every figure returned must be a valid PNG of its stated
//! size plus a well-formed SVG.

use vaepipe_report::{
    BarChart, Density, DensityComparison, DensityPanel, DotChart, Histogram, HistogramSeries,
    ImageGrid, LineChart, Rendered, ReportError, Scatter, Series, bar_chart, density_comparison,
    dot_chart, histogram, image_grid, line_chart, scatter,
};

mod common;
use common::assert_invalid;

const NASTY: [f64; 12] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    1e-300,
    -1e300,
    1e308,
    -f64::MAX,
    f64::MIN_POSITIVE,
    5e-324,
    f64::NAN,
    f64::INFINITY,
];

/// Every pair of nasty values, plus the empty and one-element lists.
fn value_lists() -> Vec<Vec<f64>> {
    let mut lists = vec![vec![], vec![1.0]];
    for &a in &NASTY {
        lists.push(vec![a]);
        for &b in &NASTY {
            lists.push(vec![a, b, 1.0]);
        }
    }
    lists
}

fn valid_or_error(result: Result<Rendered, ReportError>, what: &str) -> usize {
    match result {
        Ok(r) => {
            let decoder = png::Decoder::new(r.png.as_slice());
            let reader = decoder.read_info().expect("PNG header");
            let info = reader.info();
            assert_eq!((info.width, info.height), (r.width, r.height), "{what}");
            roxmltree::Document::parse(&r.svg).unwrap_or_else(|e| panic!("{what}: SVG {e}"));
            1
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            0
        }
    }
}

#[test]
fn charts_survive_hostile_numbers() {
    let mut drawn = 0;
    for (i, values) in value_lists().into_iter().enumerate() {
        let pairs: Vec<(f64, f64)> = values.iter().map(|&v| (v, 1.0 - v)).collect();
        for log_x in [false, true] {
            let chart = LineChart {
                title: format!("case {i}"),
                log_x,
                series: vec![Series {
                    name: String::new(),
                    points: pairs.clone(),
                    ..Series::default()
                }],
                ..LineChart::default()
            };
            drawn += valid_or_error(line_chart(&chart), &format!("line {i} {values:?}"));
        }
        let dots = DotChart {
            items: values
                .iter()
                .map(|&v| (format!("{v}"), v, Some(v.abs())))
                .collect(),
            ..DotChart::default()
        };
        drawn += valid_or_error(dot_chart(&dots), &format!("dots {i} {values:?}"));
        let bars = BarChart {
            items: values.iter().map(|&v| (String::new(), v)).collect(),
            ..BarChart::default()
        };
        drawn += valid_or_error(bar_chart(&bars), &format!("bars {i} {values:?}"));
        let points = Scatter {
            points: pairs.iter().map(|&(x, y)| (x, y, 0)).collect(),
            class_names: vec!["only".into()],
            ..Scatter::default()
        };
        drawn += valid_or_error(scatter(&points), &format!("scatter {i} {values:?}"));
        let hist = Histogram {
            bins: 7,
            series: vec![HistogramSeries {
                name: "h".into(),
                values: values.clone(),
            }],
            ..Histogram::default()
        };
        drawn += valid_or_error(histogram(&hist), &format!("histogram {i} {values:?}"));
        let density = DensityComparison {
            panels: vec![DensityPanel {
                name: "d".into(),
                data: Density::Samples(pairs.clone()),
            }],
            bins: 5,
            ..DensityComparison::default()
        };
        drawn += valid_or_error(
            density_comparison(&density),
            &format!("density {i} {values:?}"),
        );
    }
    // Most cases are drawable; the point of the test is that none panics.
    assert!(drawn > 500, "only {drawn} figures drawn");
}

#[test]
fn images_survive_extreme_pixel_values() {
    for v in [f32::MIN, -1.0, 0.0, 0.5, 1.0, 2.0, f32::MAX] {
        let grid = ImageGrid {
            images: vec![vec![v; 9]; 3],
            height: 3,
            width: 3,
            cols: 5,
            captions: Some(vec![String::new(), "\u{0}\u{7f}".into(), "x".repeat(500)]),
            group: 7,
            ..ImageGrid::default()
        };
        let r = image_grid(&grid).expect("finite values are clamped");
        valid_or_error(Ok(r), &format!("grid {v}"));
    }
    for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let grid = ImageGrid {
            images: vec![vec![v; 4]],
            height: 2,
            width: 2,
            cols: 1,
            ..ImageGrid::default()
        };
        assert_invalid(image_grid(&grid));
    }
}

#[test]
fn density_grids_survive_odd_values() {
    for v in [0.0, 1e-300, 1e300, f64::MAX, f64::NAN, f64::INFINITY] {
        let fig = DensityComparison {
            panels: vec![DensityPanel {
                name: "g".into(),
                data: Density::Grid {
                    x_range: (-1.0, 1.0),
                    y_range: (0.0, 1e-9),
                    values: vec![vec![v, 1.0], vec![0.0, v]],
                },
            }],
            ..DensityComparison::default()
        };
        valid_or_error(density_comparison(&fig), &format!("grid value {v}"));
    }
}
