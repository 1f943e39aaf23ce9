//! The prior section (refit prior against the aggregate posterior) and the image sections
//! (prior samples, reconstructions, latent codes).

use std::collections::BTreeSet;

use vaepipe_engine::StageError;
use vaepipe_report::{Block, Density, DensityComparison, DensityPanel, ImageGrid, Scatter};

use crate::artifacts::RefitSummary;

use super::bounds::{distinct_models, figure_points, model_name};
use super::compose::{Figures, num, side_by_side, with_stderr};
use super::gather::{EvalVariant, Gathered, PointRun};
use super::tables::table;
use super::training::run_variant;
use super::{MAX_RECONSTRUCTIONS, MAX_SAMPLES};

pub(super) fn prior_section(
    points: &[PointRun],
    g: &Gathered,
    figs: &mut Figures<'_, '_>,
    blocks: &mut Vec<Block>,
) -> Result<(), StageError> {
    let with_refit: Vec<(&PointRun, &RefitSummary)> = points
        .iter()
        .filter_map(|p| {
            g.prior_of(p)
                .and_then(|pr| pr.refit.as_ref())
                .map(|r| (p, r))
        })
        .collect();
    let any_samples = points
        .iter()
        .any(|p| g.prior_of(p).is_some_and(|pr| !pr.samples.is_empty()));
    if with_refit.is_empty() && !any_samples {
        return Ok(());
    }
    blocks.push(Block::Heading(1, "Prior refit".into()));
    blocks.push(Block::Paragraph(
        "Empirical Bayes: the average ELBO depends on the prior only through E_q_agg[log p(z)], which the aggregate \
         posterior q_agg(z) = (1/N) Σ_n q(z|x_n) maximizes (Hoffman & Johnson 2016; Tomczak & Welling 2018). The prior \
         stage refits p(z) towards it (mixture of Gaussians, aggregate posterior or VampPrior) with the trained model fixed."
            .into(),
    ));
    if !with_refit.is_empty() {
        let header = [
            "run",
            "refit prior",
            "components",
            "objective before",
            "objective after",
            "test ELBO N(0,I)",
            "test ELBO refit",
            "test L_k N(0,I)",
            "test L_k refit",
            "KL(q_agg‖N(0,I))",
            "KL(q_agg‖refit)",
            "s",
        ];
        let rows = with_refit
            .iter()
            .map(|(p, r)| {
                let test = &r.test;
                vec![
                    p.name(),
                    r.label.clone().unwrap_or_else(|| r.method.clone()),
                    r.components.to_string(),
                    num(r.objective_before, 2),
                    num(r.objective_after, 2),
                    num(Some(test.elbo_standard), 2),
                    num(Some(test.elbo_refit), 2),
                    num(Some(test.lk_standard), 2),
                    num(Some(test.lk_refit), 2),
                    with_stderr(Some(r.kl_qagg_standard), Some(r.kl_qagg_standard_stderr)),
                    with_stderr(Some(r.kl_qagg_refit), Some(r.kl_qagg_refit_stderr)),
                    num(Some(r.seconds), 1),
                ]
            })
            .collect();
        blocks.push(table(&header, 2, rows));
        blocks.push(Block::Paragraph(
            "From refit.json. The objective is what the refit maximizes (same Monte Carlo draws before and after; the \
             refit keeps the better prior). Test ELBO and L_k are bounds (higher is better) on the test images the prior \
             stage used; KL(q_agg ‖ p) is estimated (lower: the prior covers the aggregate posterior better)."
                .into(),
        ));
        let objectives: Vec<String> = with_refit
            .iter()
            .map(|(p, r)| format!("{}: {}", p.name(), r.objective))
            .collect();
        if !objectives.is_empty() {
            blocks.push(Block::Paragraph("Refit objectives:".into()));
            blocks.push(Block::List(objectives));
        }
    }
    let (shown, note) = figure_points(points, g);
    let shown: Vec<&PointRun> = if shown.is_empty() {
        points
            .iter()
            .filter(|p| g.prior_of(p).is_some())
            .take(1)
            .collect()
    } else {
        shown
    };
    if let Some(n) = note {
        blocks.push(Block::Paragraph(n));
    }
    for p in shown {
        let Some(pr) = g.prior_of(p).filter(|pr| !pr.samples.is_empty()) else {
            continue;
        };
        let mut order: Vec<String> = ["standard normal", "refit prior", "aggregate posterior"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (s, _, _) in &pr.samples {
            if !order.contains(s) {
                order.push(s.clone());
            }
        }
        let panels: Vec<DensityPanel> = order
            .iter()
            .filter_map(|name| {
                let pts: Vec<(f64, f64)> = pr
                    .samples
                    .iter()
                    .filter(|(s, _, _)| s == name)
                    .map(|(_, x, y)| (*x, *y))
                    .collect();
                (!pts.is_empty()).then(|| DensityPanel {
                    name: name.clone(),
                    data: Density::Samples(pts),
                })
            })
            .collect();
        let (xl, yl) = match pr.refit.as_ref().map(|r| r.plot_dims) {
            Some([i, j]) => (format!("z[{i}]"), format!("z[{j}]")),
            None => ("z₁".to_string(), "z₂".to_string()),
        };
        // About four samples per bin in the smallest panel keeps the histograms readable.
        let smallest = panels
            .iter()
            .map(|p| {
                if let Density::Samples(s) = &p.data {
                    s.len()
                } else {
                    0
                }
            })
            .min()
            .unwrap_or(0);
        let bins = ((smallest as f64 / 4.0).sqrt().round() as usize).clamp(12, 60);
        let chart = DensityComparison {
            title: format!("Prior vs aggregate posterior — {}", p.name()),
            x_label: xl.clone(),
            y_label: yl.clone(),
            panels,
            bins,
            bounds: None,
        };
        figs.push(
            blocks,
            &format!("prior_density_{}", p.stem()),
            format!(
                "{}: samples of the standard normal, of the refit prior and of the aggregate posterior, projected on the two \
                 latent dimensions of highest aggregate-posterior variance ({xl}, {yl}); one shared colour scale.{}",
                p.name(),
                if stochastic_layers(p) > 1 {
                    " The prior and the aggregate posterior are those of the top stochastic layer."
                } else {
                    ""
                }
            ),
            vaepipe_report::density_comparison(&chart),
        )?;
    }
    Ok(())
}

pub(super) fn image_sections(
    points: &[PointRun],
    g: &Gathered,
    figs: &mut Figures<'_, '_>,
    blocks: &mut Vec<Block>,
) -> Result<(), StageError> {
    let (shown, note) = figure_points(points, g);
    if shown.is_empty() {
        return Ok(());
    }
    blocks.push(Block::Heading(1, "Samples and reconstructions".into()));
    if let Some(n) = &note {
        blocks.push(Block::Paragraph(n.clone()));
    }
    let shape = shown
        .iter()
        .find_map(|p| g.data_of(p))
        .and_then(|d| d.image_shape);
    match shape {
        None => blocks.push(Block::Paragraph("The data have no image shape (data summary.json: image_shape is null), so samples and reconstructions are not drawn as images.".into())),
        Some((c, h, w0)) => {
            let w = c * w0;
            if c > 1 {
                blocks.push(Block::Paragraph(format!("The images have {c} channels of {h}×{w0} pixels; each is drawn as its channels side by side in grey.")));
            }
            for p in &shown {
                let Some(e) = g.eval_of(p) else { continue };
                for v in e.variants.iter().filter(|v| !v.samples.is_empty()) {
                    let images: Vec<Vec<f32>> = v.samples.iter().take(MAX_SAMPLES).map(|i| side_by_side(i, c, h, w0)).collect();
                    let grid = ImageGrid { title: format!("Prior samples — {}", run_variant(p, v)), images, height: h, width: w, cols: 10, captions: None, group: 1 };
                    figs.push(
                        blocks,
                        &format!("samples_{}_{}", p.stem(), file_part(&v.name)),
                        format!("{}: decoder means of z drawn from the prior \"{}\" (seeded draws).", p.name(), v.label),
                        vaepipe_report::image_grid(&grid),
                    )?;
                }
            }
            for (p, v) in distinct_models(points, g).into_iter().filter(|(p, _)| shown.iter().any(|s| s.index == p.index)) {
                if v.reconstructions.is_empty() {
                    continue;
                }
                let mut images = Vec::new();
                let mut captions = Vec::new();
                for (o, r) in v.reconstructions.iter().take(MAX_RECONSTRUCTIONS) {
                    images.extend([side_by_side(o, c, h, w0), side_by_side(r, c, h, w0)]);
                    captions.extend(["original".to_string(), "reconstr.".to_string()]);
                }
                let grid = ImageGrid {
                    title: format!("Reconstructions — {}", model_name(p, v, g)),
                    images,
                    height: h,
                    width: w,
                    cols: 8,
                    captions: Some(captions),
                    group: 2,
                };
                figs.push(
                    blocks,
                    &format!("reconstructions_{}_{}", p.stem(), file_part(&v.name)),
                    format!(
                        "{}: test images (left of each pair; the binarized input for binarized data) and the decoder mean \
                         for the encoder's posterior mean (right).",
                        model_name(p, v, g)
                    ),
                    vaepipe_report::image_grid(&grid),
                )?;
            }
        }
    }
    // Latent space.
    let latents: Vec<(&PointRun, &EvalVariant)> = distinct_models(points, g)
        .into_iter()
        .filter(|(p, v)| !v.latents.is_empty() && shown.iter().any(|s| s.index == p.index))
        .collect();
    if !latents.is_empty() {
        blocks.push(Block::Heading(1, "Latent space".into()));
        for (p, v) in latents {
            let labels: BTreeSet<i64> = v.latents.iter().map(|l| l.2).collect();
            let labels: Vec<i64> = labels.into_iter().collect();
            let class_names = labels
                .iter()
                .map(|l| {
                    if *l < 0 {
                        "unlabelled".to_string()
                    } else {
                        format!("label {l}")
                    }
                })
                .collect();
            let pts = v
                .latents
                .iter()
                .map(|(x, y, l)| (*x, *y, labels.iter().position(|c| c == l).unwrap_or(0)))
                .collect();
            let chart = Scatter {
                title: format!("Latent means — {}", model_name(p, v, g)),
                x_label: "first principal component".into(),
                y_label: "second principal component".into(),
                points: pts,
                class_names,
            };
            figs.push(
                blocks,
                &format!("latents_{}_{}", p.stem(), file_part(&v.name)),
                format!(
                    "{}: encoder means of test images projected on their first two principal components, coloured by label.{}",
                    model_name(p, v, g),
                    if stochastic_layers(p) > 1 {
                        " With several stochastic layers: the means of the first layer, E_q[z1|x] (the layer next to the data)."
                    } else {
                        ""
                    }
                ),
                vaepipe_report::scatter(&chart),
            )?;
        }
    }
    Ok(())
}

/// A variant name reduced to file-name-safe characters.
pub(super) fn file_part(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

/// Stochastic layers of a point's model (1 + `model.upper` of its resolved spec).
fn stochastic_layers(p: &PointRun) -> usize {
    1 + p
        .cfg("model.upper")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len)
}
