//! Writes every figure kind, drawn from synthetic data, plus a Markdown and an HTML report that
//! use them, into the folder given on the command line:
//! `cargo run --release -p vaepipe-report --example gallery -- /tmp/gallery`.

use std::path::Path;

use vaepipe_report::{
    Align, BarChart, Block, Density, DensityComparison, DensityPanel, Document, DotChart,
    Histogram, HistogramSeries, ImageGrid, LineChart, Rendered, Scatter, Series, bar_chart,
    density_comparison, dot_chart, histogram, image_grid, line_chart, scatter, to_html,
    to_markdown,
};

/// A small deterministic generator (xorshift64*), so the gallery needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (bits as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn training_curves() -> LineChart {
    let runs = [
        ("vae k=1", 95.0, 0.0),
        ("iwae k=5", 92.0, 0.4),
        ("iwae k=50", 90.0, 0.8),
    ];
    let mut series = Vec::new();
    for (slot, (name, floor, shift)) in runs.iter().enumerate() {
        let curve = |gap: f64| -> Vec<(f64, f64)> {
            (1..=300)
                .map(|e| {
                    let e = f64::from(e);
                    (
                        e,
                        floor + 120.0 / (1.0 + e / 8.0) + gap * (e / 300.0) - shift,
                    )
                })
                .collect()
        };
        series.push(Series {
            name: format!("{name} (train)"),
            points: curve(0.0),
            dashed: false,
            color: Some(slot),
        });
        series.push(Series {
            name: format!("{name} (validation)"),
            points: curve(2.5),
            dashed: true,
            color: Some(slot),
        });
    }
    LineChart {
        title: "Training curves: negative bound per epoch".into(),
        x_label: "epoch".into(),
        y_label: "−L (nats)".into(),
        log_x: false,
        series,
    }
}

fn bound_vs_k() -> LineChart {
    let ks: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0];
    let mut points = Vec::new();
    let mut series = Vec::new();
    for (name, base) in [("vae", 89.0), ("iwae k=50", 86.5)] {
        points.clear();
        for &k in &ks {
            points.push((k, base + 3.0 / k.sqrt()));
        }
        let mut pts = points.clone();
        if name == "vae" {
            pts.push((10_000.0, f64::NAN));
        }
        series.push(Series {
            name: format!("{name}: test −L_k"),
            points: pts,
            dashed: false,
            color: None,
        });
    }
    LineChart {
        title: "Test bound against the number of importance samples".into(),
        x_label: "k (importance samples, log scale)".into(),
        y_label: "−L_k (nats)".into(),
        log_x: true,
        series,
    }
}

fn nll_dots() -> DotChart {
    DotChart {
        title: "Test NLL per run (estimated with k = 5000)".into(),
        value_label: "test NLL (nats, lower is better)".into(),
        items: vec![
            ("vae k=1".into(), 86.76, Some(0.09)),
            (
                "vae k=1 (prior refit: aggregate posterior mixture)".into(),
                86.12,
                Some(0.08),
            ),
            ("iwae k=5".into(), 85.54, Some(0.08)),
            ("iwae k=50".into(), 84.78, Some(0.07)),
            ("iwae k=50 (aggregate posterior)".into(), 84.31, Some(0.07)),
            ("broken run".into(), f64::NAN, None),
        ],
    }
}

fn active_units() -> BarChart {
    BarChart {
        title: "Active latent units per run".into(),
        value_label: "active units (of 50; Cov_x E[z|x] > 0.01)".into(),
        items: vec![
            ("vae k=1".into(), 19.0),
            ("iwae k=5".into(), 24.0),
            ("iwae k=50".into(), 31.0),
            ("iwae k=50 (aggregate posterior)".into(), 31.0),
        ],
    }
}

fn digit(rng: &mut Rng, class: usize, noise: f64) -> Vec<f32> {
    // A crude stroke pattern per class on 28×28, plus noise.
    let mut img = vec![0f32; 28 * 28];
    let angle = class as f64 * 0.6;
    for t in 0..60 {
        let t = f64::from(t) / 60.0 * std::f64::consts::TAU;
        let r = 7.0 + 3.0 * ((class as f64 + 1.0) * t).sin();
        let x = 14.0 + r * (t + angle).cos();
        let y = 14.0 + r * (t + angle).sin() * 1.2;
        for dy in -1..=1 {
            for dx in -1..=1 {
                let (xi, yi) = (x as i64 + dx, y as i64 + dy);
                if (0..28).contains(&xi) && (0..28).contains(&yi) {
                    img[(yi * 28 + xi) as usize] = 1.0;
                }
            }
        }
    }
    for v in &mut img {
        *v = (*v as f64 + noise * rng.normal()).clamp(0.0, 1.0) as f32;
    }
    img
}

fn samples_grid(rng: &mut Rng) -> ImageGrid {
    let images = (0..40).map(|i| digit(rng, i % 10, 0.08)).collect();
    ImageGrid {
        title: "Samples from the refitted prior".into(),
        images,
        height: 28,
        width: 28,
        cols: 10,
        captions: None,
        group: 1,
    }
}

fn reconstructions(rng: &mut Rng) -> ImageGrid {
    let mut images = Vec::new();
    let mut captions = Vec::new();
    for i in 0..16 {
        images.push(digit(rng, i % 10, 0.0));
        images.push(digit(rng, i % 10, 0.15));
        captions.push("original".to_string());
        captions.push("reconstruction".to_string());
    }
    ImageGrid {
        title: "Test images and their reconstructions".into(),
        images,
        height: 28,
        width: 28,
        cols: 8,
        captions: Some(captions),
        group: 2,
    }
}

fn latent_scatter(rng: &mut Rng) -> Scatter {
    let mut points = Vec::new();
    for i in 0..3000 {
        let class = i % 10;
        let a = class as f64 / 10.0 * std::f64::consts::TAU;
        points.push((
            3.0 * a.cos() + 0.7 * rng.normal(),
            3.0 * a.sin() + 0.7 * rng.normal(),
            class,
        ));
    }
    Scatter {
        title: "Latent means of test images (first two dimensions)".into(),
        x_label: "z₁".into(),
        y_label: "z₂".into(),
        points,
        class_names: (0..10).map(|d| format!("digit {d}")).collect(),
    }
}

fn densities(rng: &mut Rng) -> DensityComparison {
    let prior: Vec<(f64, f64)> = (0..20_000).map(|_| (rng.normal(), rng.normal())).collect();
    let aggregate: Vec<(f64, f64)> = (0..20_000)
        .map(|i| {
            let a = (i % 5) as f64 / 5.0 * std::f64::consts::TAU;
            (
                1.6 * a.cos() + 0.45 * rng.normal(),
                1.6 * a.sin() + 0.45 * rng.normal(),
            )
        })
        .collect();
    // The refitted prior as a density evaluated on a grid.
    let n = 80;
    let values = (0..n)
        .map(|i| {
            let y = -4.0 + (f64::from(i) + 0.5) * 8.0 / f64::from(n);
            (0..n)
                .map(|j| {
                    let x = -4.0 + (f64::from(j) + 0.5) * 8.0 / f64::from(n);
                    (0..5)
                        .map(|c| {
                            let a = f64::from(c) / 5.0 * std::f64::consts::TAU;
                            let (dx, dy) = (x - 1.6 * a.cos(), y - 1.6 * a.sin());
                            (-(dx * dx + dy * dy) / (2.0 * 0.3)).exp()
                                / (5.0 * std::f64::consts::TAU * 0.3)
                        })
                        .sum()
                })
                .collect()
        })
        .collect();
    DensityComparison {
        title: "Prior before and after refit vs. the aggregate posterior".into(),
        x_label: "z₁".into(),
        y_label: "z₂".into(),
        panels: vec![
            DensityPanel {
                name: "prior before (N(0, I))".into(),
                data: Density::Samples(prior),
            },
            DensityPanel {
                name: "prior after refit".into(),
                data: Density::Grid {
                    x_range: (-4.0, 4.0),
                    y_range: (-4.0, 4.0),
                    values,
                },
            },
            DensityPanel {
                name: "aggregate posterior".into(),
                data: Density::Samples(aggregate),
            },
        ],
        bins: 60,
        bounds: Some(((-4.0, 4.0), (-4.0, 4.0))),
    }
}

fn nll_histogram(rng: &mut Rng) -> Histogram {
    let series = [("vae k=1", 88.0, 24.0), ("iwae k=50", 85.0, 22.0)]
        .iter()
        .map(|&(name, mean, sd)| HistogramSeries {
            name: name.into(),
            values: (0..10_000)
                .map(|_| mean + sd * rng.normal().abs().powf(1.3) - sd * 0.5)
                .collect(),
        })
        .collect();
    Histogram {
        title: "Per-image test NLL".into(),
        x_label: "−log p(x) (nats)".into(),
        bins: 60,
        series,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: gallery <output folder>")?;
    let out = Path::new(&out);
    let figures_dir = out.join("figures");
    std::fs::create_dir_all(&figures_dir)?;
    let mut rng = Rng(0x5EED_1234_ABCD_0001);

    let figures: Vec<(&str, &str, Rendered)> = vec![
        (
            "training",
            "Training curves.",
            line_chart(&training_curves())?,
        ),
        ("bound_vs_k", "Bound against k.", line_chart(&bound_vs_k())?),
        ("nll", "Test NLL per run.", dot_chart(&nll_dots())?),
        ("active_units", "Active units.", bar_chart(&active_units())?),
        (
            "samples",
            "Prior samples.",
            image_grid(&samples_grid(&mut rng))?,
        ),
        (
            "reconstructions",
            "Reconstructions.",
            image_grid(&reconstructions(&mut rng))?,
        ),
        (
            "latents",
            "Latent encodings.",
            scatter(&latent_scatter(&mut rng))?,
        ),
        (
            "densities",
            "Densities.",
            density_comparison(&densities(&mut rng))?,
        ),
        (
            "nll_hist",
            "Per-image NLL.",
            histogram(&nll_histogram(&mut rng))?,
        ),
    ];
    let mut blocks = vec![
        Block::Paragraph(
            "Synthetic data showing every figure kind. <script>alert(\"x\")</script> & $(rm -rf /) \
             stays plain text."
                .into(),
        ),
        Block::Table {
            header: vec!["run".into(), "test NLL".into(), "active units".into()],
            rows: vec![
                vec!["vae k=1".into(), "86.76".into(), "19".into()],
                vec!["iwae k=50 | agg".into(), "84.31".into(), "31".into()],
            ],
            align: vec![Align::Left, Align::Right, Align::Right],
        },
        Block::Code {
            lang: "toml".into(),
            text: "[train]\nepochs = 300\nk = 50\n".into(),
        },
    ];
    for (stem, caption, rendered) in figures {
        std::fs::write(figures_dir.join(format!("{stem}.png")), &rendered.png)?;
        std::fs::write(figures_dir.join(format!("{stem}.svg")), &rendered.svg)?;
        println!(
            "{stem}: {}×{}, {} dropped",
            rendered.width, rendered.height, rendered.dropped
        );
        blocks.push(Block::Heading(1, caption.trim_end_matches('.').to_string()));
        blocks.push(Block::Figure {
            file_stem: stem.to_string(),
            caption: caption.to_string(),
            rendered,
        });
    }
    let doc = Document {
        title: "vaepipe figure gallery".into(),
        blocks,
    };
    std::fs::write(out.join("report.md"), to_markdown(&doc, "figures"))?;
    std::fs::write(out.join("report.html"), to_html(&doc))?;
    println!("wrote {}", out.display());
    Ok(())
}
