//! Integration tests of the figure functions: every figure renders to a decodable PNG of the
//! announced size with real content and to a well-formed SVG holding its title; output is
//! byte-identical across renders; bad input yields errors, never panics.

use std::collections::BTreeSet;

use vaepipe_report::{
    BarChart, Density, DensityComparison, DensityPanel, DotChart, Histogram, HistogramSeries,
    ImageGrid, LineChart, Rendered, ReportError, Scatter, Series, bar_chart, density_comparison,
    dot_chart, histogram, image_grid, line_chart, scatter,
};

mod common;
use common::{assert_invalid, assert_no_data, base64_decode, element_names};

/// Decoded RGB pixels of a PNG, with its size.
fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(bytes);
    let mut reader = decoder.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG data");
    assert_eq!(info.color_type, png::ColorType::Rgb, "PNGs are 8-bit RGB");
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}

/// All text of the SVG's `<text>` elements.
fn svg_texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("SVG is well-formed XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect()
}

/// The checks every rendered figure must pass.
fn check(r: &Rendered, title: &str, min_colours: usize) {
    let (w, h, pixels) = decode_png(&r.png);
    assert_eq!(
        (w, h),
        (r.width, r.height),
        "PNG size matches the reported size"
    );
    let colours: BTreeSet<[u8; 3]> = pixels.iter().copied().collect();
    assert!(
        colours.len() >= min_colours,
        "only {} distinct colours in the PNG of {title:?}",
        colours.len()
    );
    let doc = roxmltree::Document::parse(&r.svg).expect("SVG is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.attribute("width"), Some(r.width.to_string().as_str()));
    assert_eq!(
        root.attribute("height"),
        Some(r.height.to_string().as_str())
    );
    assert_texts(&r.svg, [title]);
}

/// Asserts that each of `expected` is the whole text of some `<text>` element of `svg`.
#[track_caller]
fn assert_texts<S: AsRef<str>>(svg: &str, expected: impl IntoIterator<Item = S>) {
    let texts = svg_texts(svg);
    for e in expected {
        let e = e.as_ref();
        assert!(texts.iter().any(|t| t == e), "missing {e:?} in {texts:?}");
    }
}

/// Renders twice and asserts byte-identical output. With `VAEPIPE_FIGURE_DIR` set, also writes
/// the figure there (as `<first SVG text>.png` and `.svg`), to look at the pictures.
fn twice<T>(input: &T, f: fn(&T) -> Result<Rendered, ReportError>) -> Rendered {
    let a = f(input).expect("renders");
    let b = f(input).expect("renders again");
    assert!(a.png == b.png, "PNG differs between two renders");
    assert!(a.svg == b.svg, "SVG differs between two renders");
    if let Some(dir) = std::env::var_os("VAEPIPE_FIGURE_DIR") {
        let name: String = svg_texts(&a.svg)
            .first()
            .map_or("untitled", String::as_str)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let dir = std::path::Path::new(&dir);
        std::fs::write(dir.join(format!("{name}.png")), &a.png).expect("write PNG");
        std::fs::write(dir.join(format!("{name}.svg")), &a.svg).expect("write SVG");
    }
    a
}

fn curve(n: usize, scale: f64) -> Vec<(f64, f64)> {
    (1..=n)
        .map(|i| (i as f64, scale * 100.0 / (1.0 + i as f64 / 10.0)))
        .collect()
}

fn line_input() -> LineChart {
    LineChart {
        title: "Training curves".into(),
        x_label: "epoch".into(),
        y_label: "-L (nats)".into(),
        log_x: false,
        series: vec![
            Series {
                name: "run a (train)".into(),
                points: curve(200, 1.0),
                dashed: false,
                color: Some(0),
            },
            Series {
                name: "run a (validation)".into(),
                points: curve(200, 1.05),
                dashed: true,
                color: Some(0),
            },
            Series {
                name: "run b".into(),
                points: curve(200, 0.9),
                dashed: false,
                color: None,
            },
        ],
    }
}

#[test]
fn line_chart_renders_deterministically() {
    let chart = line_input();
    let r = twice(&chart, line_chart);
    check(&r, "Training curves", 8);
    assert_eq!((r.width, r.height), (800, 500));
    assert_eq!(r.dropped, 0);
    assert_texts(
        &r.svg,
        [
            "epoch",
            "-L (nats)",
            "run a (train)",
            "run a (validation)",
            "run b",
        ],
    );
}

#[test]
fn line_chart_log_x_labels_decades() {
    let chart = LineChart {
        title: "L_k against k".into(),
        x_label: "k".into(),
        y_label: "nats".into(),
        log_x: true,
        series: vec![Series {
            name: "test".into(),
            points: [1.0, 5.0, 50.0, 500.0, 5000.0]
                .iter()
                .map(|&k: &f64| (k, 90.0 + 1.0 / k.sqrt()))
                .collect(),
            ..Series::default()
        }],
    };
    let r = twice(&chart, line_chart);
    check(&r, "L_k against k", 5);
    assert_texts(&r.svg, ["1", "10", "100", "1000"]);
}

#[test]
fn line_chart_drops_and_counts_non_finite_points() {
    let mut chart = line_input();
    chart.series[0].points.push((f64::NAN, 1.0));
    chart.series[1].points.push((300.0, f64::INFINITY));
    let r = line_chart(&chart).expect("renders");
    assert_eq!(r.dropped, 2);
    let texts = svg_texts(&r.svg);
    assert!(
        texts.iter().any(|t| t.starts_with("2 non-finite points")),
        "no footnote in {texts:?}"
    );
}

#[test]
fn line_chart_rejects_bad_input() {
    let empty = LineChart {
        title: "t".into(),
        ..LineChart::default()
    };
    assert_no_data(line_chart(&empty));

    let all_nan = LineChart {
        series: vec![Series {
            name: "nan".into(),
            points: vec![(f64::NAN, 1.0), (2.0, f64::NAN)],
            ..Series::default()
        }],
        ..LineChart::default()
    };
    assert_no_data(line_chart(&all_nan));

    let mut log = line_input();
    log.log_x = true;
    log.series[2].points.push((0.0, 1.0));
    let err = line_chart(&log).expect_err("x = 0 on a log axis");
    assert!(matches!(err, ReportError::InvalidInput { .. }));
    assert!(err.to_string().contains("series 2"), "{err}");

    let huge = LineChart {
        series: vec![Series {
            name: "huge".into(),
            points: vec![(0.0, -f64::MAX), (1.0, f64::MAX)],
            ..Series::default()
        }],
        ..LineChart::default()
    };
    assert_invalid(line_chart(&huge));
}

#[test]
fn hostile_text_stays_text_in_svg() {
    let mut chart = line_input();
    chart.title = "<script>alert(\"x\")</script> & 'q'\n$(rm -rf /)\u{0}\u{FFFF}".into();
    chart.series[0].name = "]]><svg onload=x>".into();
    let r = line_chart(&chart).expect("renders");
    let doc = roxmltree::Document::parse(&r.svg).expect("still well-formed");
    // No element other than what the drawing uses appears.
    let tags = element_names(&doc);
    let allowed: BTreeSet<&str> = [
        "svg", "rect", "line", "polyline", "polygon", "circle", "text",
    ]
    .into();
    assert!(tags.is_subset(&allowed), "unexpected elements {tags:?}");
    let texts = svg_texts(&r.svg);
    // The title may be shortened to fit, but starts with the literal text (control characters
    // become spaces).
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("<script>alert(\"x\")</script> & 'q' $(rm")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t == "]]><svg onload=x>"), "{texts:?}");
}

#[test]
fn dot_chart_renders_values_and_error_bars() {
    let chart = DotChart {
        title: "Test NLL".into(),
        value_label: "nats".into(),
        items: vec![
            ("vae k=1".into(), 86.76, Some(0.09)),
            (
                "iwae k=50 (aggregate posterior) with a long explanation".into(),
                84.31,
                Some(0.07),
            ),
            ("no error bar".into(), 85.0, None),
            ("diverged".into(), f64::NAN, Some(0.1)),
        ],
    };
    let r = twice(&chart, dot_chart);
    check(&r, "Test NLL", 6);
    assert_eq!(r.dropped, 1);
    assert_texts(
        &r.svg,
        [
            "86.76 ± 0.09",
            "84.31 ± 0.07",
            "85.00",
            "not finite",
            "vae k=1",
        ],
    );
}

#[test]
fn dot_chart_rejects_bad_input() {
    assert_no_data(dot_chart(&DotChart::default()));
    let negative = DotChart {
        items: vec![("a".into(), 1.0, Some(-0.5))],
        ..DotChart::default()
    };
    assert_invalid(dot_chart(&negative));
    let all_nan = DotChart {
        items: vec![("a".into(), f64::NAN, None)],
        ..DotChart::default()
    };
    assert_no_data(dot_chart(&all_nan));
}

#[test]
fn bar_chart_renders() {
    let chart = BarChart {
        title: "Active units".into(),
        value_label: "units".into(),
        items: vec![("a".into(), 19.0), ("b".into(), 31.0), ("c".into(), 0.0)],
    };
    let r = twice(&chart, bar_chart);
    check(&r, "Active units", 5);
    assert_texts(&r.svg, ["19", "31", "0"]);
    assert_no_data(bar_chart(&BarChart::default()));
}

fn count(pixels: &[[u8; 3]], value: u8) -> usize {
    pixels.iter().filter(|p| **p == [value; 3]).count()
}

#[test]
fn image_grid_draws_pixels_as_enlarged_squares() {
    // One 2×2 image: black, white, mid grey, dark grey. No title, so no anti-aliased text
    // adds greys of its own.
    let grid = ImageGrid {
        images: vec![vec![0.0, 1.0, 0.5, 0.25]],
        height: 2,
        width: 2,
        cols: 1,
        ..ImageGrid::default()
    };
    let r = twice(&grid, image_grid);
    let (_, _, pixels) = decode_png(&r.png);
    let mid = count(&pixels, 128);
    let dark = count(&pixels, 64);
    let black = count(&pixels, 0);
    let zoom = (mid as f64).sqrt() as usize;
    assert!(zoom >= 2, "pixels are enlarged (zoom {zoom})");
    assert_eq!(zoom * zoom, mid, "a source pixel becomes a square");
    assert_eq!(dark, mid, "every source pixel becomes the same square");
    assert_eq!(black, mid);
    // No interpolation: no other grey levels besides the frame (#BBBBBB) and the background.
    let greys: BTreeSet<[u8; 3]> = pixels.iter().copied().collect();
    let expected: BTreeSet<[u8; 3]> = [[0; 3], [64; 3], [128; 3], [255; 3], [0xBB; 3]].into();
    assert_eq!(greys, expected);

    // The SVG embeds exactly the same pixels as a PNG data URI.
    let doc = roxmltree::Document::parse(&r.svg).expect("SVG");
    let images: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("image"))
        .collect();
    assert_eq!(images.len(), 1);
    let href = images[0].attribute("href").expect("href");
    let b64 = href
        .strip_prefix("data:image/png;base64,")
        .expect("PNG data URI");
    let (w, h, tile) = decode_png(&base64_decode(b64));
    assert_eq!((w as usize, h as usize), (2 * zoom, 2 * zoom));
    assert_eq!(count(&tile, 128), mid);
    assert_eq!(count(&tile, 0), mid);
}

#[test]
fn image_grid_groups_and_captions() {
    let images: Vec<Vec<f32>> = (0..8)
        .map(|i| (0..28 * 28).map(|p| ((p + i) % 7) as f32 / 6.0).collect())
        .collect();
    let grid = ImageGrid {
        title: "Reconstructions".into(),
        images,
        height: 28,
        width: 28,
        cols: 4,
        captions: Some(
            (0..8)
                .map(|i| if i % 2 == 0 { "original" } else { "recon." }.into())
                .collect(),
        ),
        group: 2,
    };
    let r = twice(&grid, image_grid);
    check(&r, "Reconstructions", 8);
    let texts = svg_texts(&r.svg);
    assert_eq!(texts.iter().filter(|t| *t == "original").count(), 4);
    // Grouping: the gap between columns 1 and 2 is wider than between columns 0 and 1.
    let doc = roxmltree::Document::parse(&r.svg).expect("SVG");
    let xs: Vec<i64> = doc
        .descendants()
        .filter(|n| n.has_tag_name("image"))
        .take(4)
        .map(|n| n.attribute("x").and_then(|x| x.parse().ok()).expect("x"))
        .collect();
    assert!(xs[2] - xs[1] > xs[1] - xs[0], "columns {xs:?}");
    assert_eq!(xs[3] - xs[2], xs[1] - xs[0]);
}

#[test]
fn image_grid_rejects_bad_input() {
    let good = ImageGrid {
        images: vec![vec![0.5; 4]],
        height: 2,
        width: 2,
        cols: 1,
        ..ImageGrid::default()
    };
    assert!(image_grid(&good).is_ok());
    let mut wrong_len = good.clone();
    wrong_len.images.push(vec![0.5; 3]);
    let err = image_grid(&wrong_len).expect_err("wrong length");
    assert!(err.to_string().contains("image 1 has 3 values"), "{err}");
    let mut no_cols = good.clone();
    no_cols.cols = 0;
    assert_invalid(image_grid(&no_cols));
    let mut captions = good.clone();
    captions.captions = Some(vec!["a".into(), "b".into()]);
    assert_invalid(image_grid(&captions));
    let mut nan = good.clone();
    nan.images[0][3] = f32::NAN;
    assert_invalid(image_grid(&nan));
    let mut none = good.clone();
    none.images.clear();
    assert_no_data(image_grid(&none));
    let mut zero = good;
    zero.height = 0;
    assert_invalid(image_grid(&zero));
    let too_many = ImageGrid {
        images: vec![vec![0.0; 64 * 64]; 2000],
        height: 64,
        width: 64,
        cols: 10,
        ..ImageGrid::default()
    };
    assert_invalid(image_grid(&too_many));
}

#[test]
fn scatter_renders_with_legend() {
    let points: Vec<(f64, f64, usize)> = (0..500)
        .map(|i| {
            let c = i % 10;
            let a = i as f64 * 0.7;
            (c as f64 + a.sin(), a.cos() - c as f64, c)
        })
        .collect();
    let chart = Scatter {
        title: "Latents".into(),
        x_label: "z1".into(),
        y_label: "z2".into(),
        points,
        class_names: (0..10).map(|d| format!("digit {d}")).collect(),
    };
    let r = twice(&chart, scatter);
    check(&r, "Latents", 12);
    assert_texts(&r.svg, (0..10).map(|d| format!("digit {d}")));
    let mut bad = chart.clone();
    bad.points.push((0.0, 0.0, 10));
    let err = scatter(&bad).expect_err("class out of range");
    assert!(err.to_string().contains("class 10"), "{err}");
    let mut no_names = chart;
    no_names.class_names.clear();
    assert_invalid(scatter(&no_names));
}

fn gaussian_samples(n: usize, shift: f64) -> Vec<(f64, f64)> {
    // Deterministic, roughly Gaussian points (sum of uniforms from a fixed sequence).
    let mut state = 0x1234_5678_u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let x: f64 = (0..4).map(|_| next()).sum::<f64>() - 2.0;
            let y: f64 = (0..4).map(|_| next()).sum::<f64>() - 2.0;
            (x * 1.7 + shift, y * 1.7)
        })
        .collect()
}

#[test]
fn density_comparison_shares_axes_and_layers_rasters_below() {
    let grid: Vec<Vec<f64>> = (0..20)
        .map(|i| (0..20).map(|j| f64::from(i * j) / 400.0).collect())
        .collect();
    let fig = DensityComparison {
        title: "Priors".into(),
        x_label: "z1".into(),
        y_label: "z2".into(),
        panels: vec![
            DensityPanel {
                name: "before".into(),
                data: Density::Samples(gaussian_samples(5000, 0.0)),
            },
            DensityPanel {
                name: "after".into(),
                data: Density::Grid {
                    x_range: (-3.0, 3.0),
                    y_range: (-3.0, 3.0),
                    values: grid,
                },
            },
            DensityPanel {
                name: "aggregate".into(),
                data: Density::Samples(gaussian_samples(5000, 0.5)),
            },
        ],
        bins: 40,
        bounds: None,
    };
    let r = twice(&fig, density_comparison);
    check(&r, "Priors", 30);
    assert_texts(&r.svg, ["before", "after", "aggregate", "density"]);
    // Three panels and a colour bar, all directly above the background, under everything else.
    let doc = roxmltree::Document::parse(&r.svg).expect("SVG");
    let children: Vec<&str> = doc
        .root_element()
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name())
        .collect();
    assert_eq!(children[0], "rect");
    assert_eq!(&children[1..5], ["image"; 4]);
    assert!(!children[5..].contains(&"image"));
    // The three panels share a size.
    let sizes: BTreeSet<(String, String)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("image"))
        .take(3)
        .map(|n| {
            (
                n.attribute("width").unwrap_or("").to_string(),
                n.attribute("height").unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(sizes.len(), 1);
}

/// A comparison of one grid panel of `values` over the unit square.
fn unit_grid(values: Vec<Vec<f64>>) -> DensityComparison {
    DensityComparison {
        panels: vec![DensityPanel {
            name: "g".into(),
            data: Density::Grid {
                x_range: (0.0, 1.0),
                y_range: (0.0, 1.0),
                values,
            },
        }],
        ..DensityComparison::default()
    }
}

#[test]
fn density_comparison_rejects_bad_input() {
    let samples = DensityPanel {
        name: "s".into(),
        data: Density::Samples(gaussian_samples(100, 0.0)),
    };
    let base = DensityComparison {
        panels: vec![samples.clone()],
        bins: 20,
        ..DensityComparison::default()
    };
    assert!(density_comparison(&base).is_ok());
    assert_no_data(density_comparison(&DensityComparison::default()));
    let mut no_bins = base.clone();
    no_bins.bins = 0;
    assert_invalid(density_comparison(&no_bins));
    let ragged = unit_grid(vec![vec![1.0, 2.0], vec![1.0]]);
    assert_invalid(density_comparison(&ragged));
    let negative = unit_grid(vec![vec![1.0, -2.0]]);
    assert_invalid(density_comparison(&negative));
    let mut bad_bounds = base.clone();
    bad_bounds.bounds = Some(((1.0, 0.0), (0.0, 1.0)));
    assert_invalid(density_comparison(&bad_bounds));
    let empty_panel = DensityComparison {
        panels: vec![
            samples,
            DensityPanel {
                name: "nothing".into(),
                data: Density::Samples(vec![(f64::NAN, 0.0)]),
            },
        ],
        bins: 20,
        ..DensityComparison::default()
    };
    let err = density_comparison(&empty_panel).expect_err("empty panel");
    assert!(err.to_string().contains("panel 1"), "{err}");
}

#[test]
fn histogram_renders_overlaid_series() {
    let chart = Histogram {
        title: "Per-image NLL".into(),
        x_label: "nats".into(),
        bins: 30,
        series: vec![
            HistogramSeries {
                name: "vae".into(),
                values: gaussian_samples(2000, 90.0)
                    .into_iter()
                    .map(|p| p.0)
                    .collect(),
            },
            HistogramSeries {
                name: "iwae".into(),
                values: gaussian_samples(2000, 87.0)
                    .into_iter()
                    .map(|p| p.0)
                    .chain([f64::NAN, f64::NEG_INFINITY])
                    .collect(),
            },
        ],
    };
    let r = twice(&chart, histogram);
    check(&r, "Per-image NLL", 6);
    assert_eq!(r.dropped, 2);
    assert_texts(&r.svg, ["vae", "iwae", "count", "nats"]);
    let mut no_bins = chart.clone();
    no_bins.bins = 0;
    assert_invalid(histogram(&no_bins));
    let nan_only = Histogram {
        bins: 10,
        series: vec![HistogramSeries {
            name: "x".into(),
            values: vec![f64::NAN],
        }],
        ..Histogram::default()
    };
    assert_no_data(histogram(&nan_only));
    // A single repeated value still draws (the range is widened around it).
    let constant = Histogram {
        bins: 10,
        series: vec![HistogramSeries {
            name: "x".into(),
            values: vec![3.0; 50],
        }],
        ..Histogram::default()
    };
    assert!(histogram(&constant).is_ok());
}
