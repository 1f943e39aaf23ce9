//! The refit phase of the prior stage: encodes the training rows (the exact aggregate
//! posterior), refits the prior, measures both priors on the same rows and noise, and writes
//! `prior.safetensors`, `latent_samples.parquet` and `refit.parquet`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use vaepipe_data::Dataset;
use vaepipe_engine::{Context, StageError};
use vaepipe_nn::{MeanStderr, Prior, Vae, aggregate_moments};
use vaepipe_spec::PriorMethod;

use crate::artifacts::{
    DataSummary, ModelConfig, PriorInfo, RefitSummary, Variant, prior_kind_name,
    read_test_binarized, save_prior,
};
use crate::fit::binarize_fixed;
use crate::util::seed_for;

use super::measure::{
    Comparison, Probe, Work, bounds, log_density_blocks, write_measures, write_samples,
};
use super::refit::{RefitData, refit};
use super::resume::RefitState;
use super::{
    ACTIVE_THRESHOLD, KL_SAMPLES, MARKER_FORMAT, Params, check_features, fmt_opt, method_label,
    mixture_of, planned_components, planned_work, refit_objective, top_two,
};

/// Encoding, refit and measurements; writes `prior.safetensors` (unless N(0, I)),
/// `latent_samples.parquet` and `refit.parquet`, and returns what the rest of the stage needs
/// (the caller writes it to [`REFIT_MARKER`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn refit_phase(
    ctx: &Context,
    p: &Params,
    vae: &Vae,
    config: &ModelConfig,
    (data_dir, train_dir): (&Path, &Path),
    train: &Dataset,
    dynamic: bool,
) -> Result<RefitState, StageError> {
    let seed = p.pipeline.seed;
    // The test rows as the eval stage evaluates them: under dynamic binarization the data
    // stage's fixed draw (`test_binarized.parquet`), so both stages see the same test draw.
    let test = read_test_binarized(
        data_dir,
        &DataSummary::read(data_dir)?,
        p.eval.binarization_seed,
    )?;
    check_features("test", &test, config, data_dir, train_dir)?;
    // Under dynamic binarization every measurement uses one fixed draw of the data: the training
    // rows one derived from the pipeline seed, the test rows the eval stage's draw.
    let train_x = if dynamic {
        binarize_fixed(&train.x, seed_for(seed, "prior/train-binarization"))
    } else {
        train.x.clone()
    };
    let test_x = test.x.clone();

    // The exact aggregate posterior of every training row.
    let encode_started = Instant::now();
    // With several stochastic layers: of the top layer, where the prior lives (each row's
    // q(z_L|z_{L−1}) at one seeded ancestral draw of the layers below).
    let post = vae
        .top_posterior(&train_x, seed_for(seed, "prior/top-posterior"))
        .context("encoding the training rows")?;
    let moments = aggregate_moments(&post).context("moments of the aggregate posterior")?;
    let q_agg = mixture_of(&post, None).context("building the aggregate posterior")?;
    let encode_seconds = encode_started.elapsed().as_secs_f64();
    let active_units = moments
        .mean_variance
        .iter()
        .filter(|v| **v > ACTIVE_THRESHOLD)
        .count();
    let plot_dims = top_two(&moments.variance);
    let objective = refit_objective(&p.train)?;
    let k = objective.samples();
    let d = post.dim;
    ctx.log(format!(
        "aggregate posterior of {} training rows: {} of {} units active, widest dimensions {:?}; refit `{}`",
        post.rows,
        active_units,
        d,
        plot_dims,
        method_label(&p.prior, planned_components(&p.prior, post.rows))
    ));

    let train_probe = Probe::new(
        &train_x,
        train.rows,
        train.features,
        &objective,
        vae.config().noise_dim(),
        seed_for(seed, "prior/measure/train"),
    );
    let test_probe = Probe::new(
        &test_x,
        test.rows,
        test.features,
        &objective,
        vae.config().noise_dim(),
        seed_for(seed, "prior/measure/test"),
    );
    let kl_draws = q_agg
        .sample(
            vae,
            KL_SAMPLES,
            &mut ChaCha8Rng::seed_from_u64(seed_for(seed, "prior/kl-draws")),
        )
        .context("sampling the aggregate posterior")?;

    let mut work = Work {
        done: 0,
        total: planned_work(&p.prior, train_probe.rows, test_probe.rows, post.rows),
    };

    let standard = Prior::StandardNormal;
    let log_q = log_density_blocks(ctx, &mut work, vae, &q_agg, &kl_draws, "log q_agg")?;
    let log_p_std = log_density_blocks(ctx, &mut work, vae, &standard, &kl_draws, "log N(0, I)")?;
    let refit_started = Instant::now();
    let data = RefitData {
        train,
        train_x: &train_x,
        post: &post,
        q_agg: &q_agg,
        dynamic,
        seed,
        kl_draws: &kl_draws,
        log_q: &log_q,
        log_p_std: &log_p_std,
        probe: &train_probe,
        objective,
    };
    let refit = refit(ctx, &mut work, p, vae, &data)?;
    let refit_seconds = refit_started.elapsed().as_secs_f64();
    let prior = &refit.prior;
    if p.prior.method == PriorMethod::StandardNormal {
        ctx.log("no refit: the prior stays N(0, I)");
    } else {
        ctx.log(format!(
            "refit in {refit_seconds:.1} s (after {encode_seconds:.1} s encoding the training rows): {} {} → {} ({})",
            refit.objective,
            fmt_opt(refit.before),
            fmt_opt(refit.after),
            if refit.kept_initial {
                "kept the initial prior"
            } else {
                "kept the fitted prior"
            }
        ));
    }

    // Measurements: the same rows, noise and draws under N(0, I) and the refit prior.
    // (Under N(0, I) itself the refit measurements are the standard ones.)
    let is_standard = matches!(prior, Prior::StandardNormal);
    let train_std = bounds(
        ctx,
        &mut work,
        vae,
        &standard,
        &train_probe,
        "train, N(0, I)",
    )?;
    let train_refit = match &refit.train_bounds {
        Some(b) => b.clone(),
        None if is_standard => train_std.clone(),
        None => bounds(
            ctx,
            &mut work,
            vae,
            prior,
            &train_probe,
            "train, refit prior",
        )?,
    };
    let test_std = bounds(ctx, &mut work, vae, &standard, &test_probe, "test, N(0, I)")?;
    let test_refit = if is_standard {
        test_std.clone()
    } else {
        bounds(ctx, &mut work, vae, prior, &test_probe, "test, refit prior")?
    };
    let log_p_refit = match &refit.log_p_kl {
        Some(v) => v.clone(),
        None if is_standard => log_p_std.clone(),
        None => log_density_blocks(ctx, &mut work, vae, prior, &kl_draws, "log p")?,
    };
    let kl_std = MeanStderr::paired_difference(&log_q, &log_p_std).map_err(anyhow::Error::from)?;
    let kl_refit =
        MeanStderr::paired_difference(&log_q, &log_p_refit).map_err(anyhow::Error::from)?;
    let train_cmp = Comparison::new(&train_std, &train_refit)?;
    let test_cmp = Comparison::new(&test_std, &test_refit)?;
    ctx.log(format!(
        "ELBO gain train {:+.3} ± {:.3} test {:+.3} ± {:.3} nats; L_{k} gain train {:+.3} ± {:.3} test {:+.3} ± {:.3}; KL(q_agg‖p) {:.2} → {:.2}",
        train_cmp.elbo_gain.mean,
        train_cmp.elbo_gain.stderr,
        test_cmp.elbo_gain.mean,
        test_cmp.elbo_gain.stderr,
        train_cmp.lk_gain.mean,
        train_cmp.lk_gain.stderr,
        test_cmp.lk_gain.mean,
        test_cmp.lk_gain.stderr,
        kl_std.mean,
        kl_refit.mean
    ));

    // Artifacts of the refit phase.
    let out = ctx.out;
    let refit_label = method_label(&p.prior, refit.components)
        + if refit.kept_initial {
            " [initial kept]"
        } else {
            ""
        };
    let mut files = Vec::new();
    let prior_file = (!is_standard).then(|| "prior.safetensors".to_string());
    if let Some(file) = &prior_file {
        let (kind, components) = prior_kind_name(prior);
        let info = PriorInfo {
            kind: kind.to_string(),
            components,
            method: p.prior.method.to_string(),
            subset: refit.subset,
            seed,
        };
        save_prior(&out.join(file), prior, &info)?;
        files.push(file.clone());
    }
    let mut variants = vec![Variant {
        name: "standard".into(),
        label: "N(0, I)".into(),
        model_stage: "train".into(),
        model_file: "model.safetensors".into(),
        prior_file: None,
    }];
    if prior_file.is_some() {
        variants.push(Variant {
            name: "refit".into(),
            label: refit_label.clone(),
            model_stage: "train".into(),
            model_file: "model.safetensors".into(),
            prior_file: prior_file.clone(),
        });
    }
    write_samples(
        &out.join("latent_samples.parquet"),
        vae,
        prior,
        &q_agg,
        plot_dims,
        seed,
    )?;
    files.push("latent_samples.parquet".into());
    write_measures(
        &out.join("refit.parquet"),
        &[("train", &train_cmp), ("test", &test_cmp)],
        &kl_std,
        &kl_refit,
    )?;
    files.push("refit.parquet".into());

    // `refit.json` without the fine-tuning and the stage's seconds, which `finish` adds.
    let summary = RefitSummary {
        method: p.prior.method.to_string(),
        fit: match p.prior.method {
            PriorMethod::Mog => Some(p.prior.fit.to_string()),
            PriorMethod::Vamp => Some("gradient".into()),
            _ => None,
        },
        label: Some(refit_label.clone()),
        components: refit.components,
        subset: refit.subset,
        seed,
        k,
        objective: refit.objective,
        objective_before: refit.before,
        objective_after: refit.after,
        kept: Some(
            if refit.kept_initial {
                "initial"
            } else {
                "refit"
            }
            .into(),
        ),
        train: train_cmp.side(),
        test: test_cmp.side(),
        kl_qagg_standard: kl_std.mean,
        kl_qagg_standard_stderr: kl_std.stderr,
        kl_qagg_refit: kl_refit.mean,
        kl_qagg_refit_stderr: kl_refit.stderr,
        kl_samples: KL_SAMPLES,
        kl_rows: post.rows,
        training_rows: post.rows,
        active_units,
        plot_dims,
        encode_seconds,
        refit_seconds,
        finetune: None,
        seconds: 0.0,
    };
    // The resume marker keeps it as a JSON object (its exact-float encoding, resume.rs).
    let Value::Object(mut refit_map) =
        serde_json::to_value(&summary).context("encoding refit.json")?
    else {
        unreachable!("a struct serializes to an object")
    };
    refit_map.remove("finetune");
    refit_map.remove("seconds");
    let mut hashes = BTreeMap::new();
    for file in files {
        let path = out.join(&file);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        // Durable before the marker that vouches for it.
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", path.display()))?;
        hashes.insert(file, blake3::hash(&bytes).to_hex().to_string());
    }
    Ok(RefitState {
        format: MARKER_FORMAT,
        refit: refit_map,
        variants,
        label: refit_label,
        prior_file,
        files: hashes,
        seconds: 0.0,
    })
}
