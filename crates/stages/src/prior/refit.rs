//! The refit methods: the aggregate posterior (exact, or a subset), a mixture fitted by EM, and
//! gradient ascent on the training bound over the prior's parameters (mixture or VampPrior)
//! through the train loop's minibatch stream; the refit never lowers what it maximizes.

use anyhow::{Context as _, anyhow, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vaepipe_data::{Dataset, permutation};
use vaepipe_engine::{Context, StageError};
use vaepipe_nn::{
    AdamHyper, MeanStderr, NnError, Objective, ObjectiveKind, Posterior, Prior, Trainable, Trainer,
    Vae, em_step,
};
use vaepipe_spec::{MogFit, PriorMethod, PriorSection, VampInit};

use crate::convert::{adam_of, objective_label};
use crate::fit::Batches;
use crate::util::seed_for;

use super::measure::{Bounds, Probe, Work, bounds, log_density_blocks};
use super::{EM_MIN_STD, Params, fmt_opt, mixture_of};

/// Everything a refit reads.
pub(super) struct RefitData<'a> {
    pub(super) train: &'a Dataset,
    /// The training rows as measured (one fixed binarization under dynamic binarization).
    pub(super) train_x: &'a [f32],
    pub(super) post: &'a Posterior,
    pub(super) q_agg: &'a Prior,
    pub(super) dynamic: bool,
    pub(super) seed: u64,
    pub(super) kl_draws: &'a [f32],
    pub(super) log_q: &'a [f64],
    /// log N(z; 0, I) of the same draws.
    pub(super) log_p_std: &'a [f64],
    pub(super) probe: &'a Probe,
    pub(super) objective: Objective,
}

/// What a refit produced.
pub(super) struct Refit {
    pub(super) prior: Prior,
    /// What the refit maximizes, for people.
    pub(super) objective: String,
    pub(super) before: Option<f64>,
    pub(super) after: Option<f64>,
    pub(super) kept_initial: bool,
    pub(super) components: usize,
    /// Aggregate posterior: training posteriors used (0 = all).
    pub(super) subset: usize,
    /// Already measured on the training probe (gradient refits) or the KL draws (aggregate
    /// posterior), for the kept prior.
    pub(super) train_bounds: Option<Bounds>,
    pub(super) log_p_kl: Option<Vec<f64>>,
}

pub(super) fn refit(
    ctx: &Context,
    work: &mut Work,
    p: &Params,
    vae: &Vae,
    r: &RefitData,
) -> Result<Refit, StageError> {
    let s = &p.prior;
    let n = r.post.rows;
    let rng = |purpose: &str| ChaCha8Rng::seed_from_u64(seed_for(r.seed, purpose));
    let need_rows = |what: &str| -> anyhow::Result<()> {
        if s.components > n {
            bail!(
                "prior.components = {} {what}, but the training split has only {n} rows",
                s.components
            );
        }
        Ok(())
    };
    match s.method {
        PriorMethod::StandardNormal => Ok(Refit {
            prior: Prior::StandardNormal,
            objective: "none (the standard normal is kept)".into(),
            before: None,
            after: None,
            kept_initial: false,
            components: 0,
            subset: 0,
            train_bounds: None,
            log_p_kl: None,
        }),
        PriorMethod::AggregatePosterior => {
            // Maximizes E_q_agg log p(z) exactly (Gibbs); the "initial" prior is N(0, I).
            let (fitted, subset) = if s.subset > 0 && s.subset < n {
                let mut rows =
                    permutation(n, seed_for(r.seed, "prior/aggregate/subset"))[..s.subset].to_vec();
                rows.sort_unstable();
                (mixture_of(r.post, Some(&rows))?, s.subset)
            } else {
                if s.subset >= n {
                    ctx.log(format!(
                        "prior.subset = {} ≥ {n} training rows: using all of them",
                        s.subset
                    ));
                }
                (r.q_agg.clone(), 0)
            };
            let log_p = if subset == 0 {
                r.log_q.to_vec()
            } else {
                log_density_blocks(ctx, work, vae, &fitted, r.kl_draws, "log p")?
            };
            let (before, after) = (
                MeanStderr::of(r.log_p_std).mean,
                MeanStderr::of(&log_p).mean,
            );
            let components = if subset == 0 { n } else { subset };
            let objective = format!(
                "E_q_agg[log p(z)] on {} draws from q_agg (initial: N(0, I))",
                r.kl_draws.len() / r.post.dim
            );
            if after < before {
                ctx.log(format!("the aggregate posterior scores below N(0, I) on the draws ({after:.4} < {before:.4}): keeping N(0, I)"));
                return Ok(Refit {
                    prior: Prior::StandardNormal,
                    objective,
                    before: Some(before),
                    after: Some(after),
                    kept_initial: true,
                    components,
                    subset,
                    train_bounds: None,
                    log_p_kl: None,
                });
            }
            Ok(Refit {
                prior: fitted,
                objective,
                before: Some(before),
                after: Some(after),
                kept_initial: false,
                components,
                subset,
                train_bounds: None,
                log_p_kl: Some(log_p),
            })
        }
        PriorMethod::Mog => {
            need_rows("mixture components initialised from distinct training rows")?;
            let init =
                Prior::mixture_init(vae, r.train_x, n, s.components, &mut rng("prior/mog/init"))
                    .context("initialising the mixture (prior.components)")?;
            match s.fit {
                MogFit::Em => em_refit(ctx, work, s, vae, r, init),
                // Gradient ascent on L_k starts from the EM fit: the encoded rows alone are far
                // too narrow a mixture, and EM is cheap.
                MogFit::Gradient => {
                    let em = em_refit(ctx, work, s, vae, r, init)?;
                    ctx.log("gradient refit of the mixture starts from the EM fit");
                    gradient_refit(ctx, work, p, vae, r, em.prior)
                }
            }
        }
        PriorMethod::Vamp => {
            let d_in = vae.config().input_dim;
            let init = match s.init {
                VampInit::Data => {
                    need_rows("pseudo-inputs initialised from distinct training rows")?;
                    Prior::vamp_init(
                        vae.config(),
                        r.train_x,
                        n,
                        s.components,
                        &mut rng("prior/vamp/init"),
                    )
                }
                VampInit::Random => {
                    let mut g = rng("prior/vamp/init-random");
                    Prior::vamp(
                        s.components,
                        d_in,
                        (0..s.components * d_in).map(|_| g.r#gen::<f32>()).collect(),
                    )
                }
            }
            .context("initialising the VampPrior's pseudo-inputs")?;
            gradient_refit(ctx, work, p, vae, r, init)
        }
    }
}

/// EM on `prior.samples` draws from q_agg (maximizes their mean log p(z), the Monte Carlo
/// estimate of the ELBO's prior term), `prior.steps` iterations in `f64`.
pub(super) fn em_refit(
    ctx: &Context,
    work: &mut Work,
    s: &PriorSection,
    vae: &Vae,
    r: &RefitData,
    init: Prior,
) -> Result<Refit, StageError> {
    let draws = r
        .q_agg
        .sample(
            vae,
            s.samples,
            &mut ChaCha8Rng::seed_from_u64(seed_for(r.seed, "prior/mog/em-draws")),
        )
        .context("sampling the aggregate posterior for EM")?;
    let z: Vec<f64> = draws.iter().map(|v| *v as f64).collect();
    let mut current: Prior<f64> = init.cast().map_err(anyhow::Error::from)?;
    let mut first = None;
    let mut last = f64::NAN;
    for it in 0..s.steps {
        let step = em_step(&current, &z, s.samples, EM_MIN_STD)
            .with_context(|| format!("EM iteration {}", it + 1))?;
        first.get_or_insert(step.log_likelihood);
        last = step.log_likelihood;
        current = step.prior;
        work.tick(
            ctx,
            &format!(
                "EM {}/{}: mean log p(z) {:.4}",
                it + 1,
                s.steps,
                step.log_likelihood
            ),
        )?;
    }
    ctx.log(format!(
        "EM: mean log-density of {} draws {:.4} → {:.4} over {} iterations",
        s.samples,
        first.unwrap_or(f64::NAN),
        last,
        s.steps
    ));
    let fitted: Prior = current.cast().context("the EM fit does not fit in f32")?;
    let mean_log_p = |prior: &Prior| -> anyhow::Result<f64> {
        let lp = prior.log_density(vae, &draws, s.samples)?;
        Ok(MeanStderr::of(&lp).mean)
    };
    let before = mean_log_p(&init)?;
    let after = mean_log_p(&fitted)?;
    let objective = format!(
        "E_q_agg[log p(z)] on {} draws from q_agg (EM, {} iterations; initial: {} encoded training rows)",
        s.samples, s.steps, s.components
    );
    Ok(keep_better(
        ctx,
        init,
        fitted,
        before,
        after,
        objective,
        s.components,
    ))
}

/// Gradient ascent with Adam on the average training bound over the prior's parameters only
/// (Trainable::PRIOR; encoder and decoder fixed), minibatches like the train loop.
pub(super) fn gradient_refit(
    ctx: &Context,
    work: &mut Work,
    p: &Params,
    vae: &Vae,
    r: &RefitData,
    init: Prior,
) -> Result<Refit, StageError> {
    let s = &p.prior;
    let t = &p.train;
    let train = r.train;
    let adam = AdamHyper {
        lr: s.lr,
        ..adam_of(t)
    };
    let mut trainer = Trainer::new(
        vae.clone(),
        init.clone(),
        r.objective,
        adam,
        Trainable::PRIOR,
    )
    .context("building the prior's optimizer")?;
    // The train loop's minibatch stream: the same shuffling, binarization and noise streams,
    // under the tag `prior/gradient`.
    let mut stream = Batches::new(train, t.batch_size, r.dynamic, r.seed, "prior/gradient");
    let batches = stream.per_epoch();
    let (mut sum, mut count, mut windows) = (0.0, 0usize, Vec::new());
    let window = (s.steps / 10).max(1);
    for step in 0..s.steps {
        let stats = match stream.step(&mut trainer, step / batches, step % batches) {
            Ok((st, _)) => st,
            Err(NnError::Diverged { what }) => {
                return Err(anyhow!(
                    "the prior refit diverged at step {}: {what}; lower prior.lr",
                    step + 1
                )
                .into());
            }
            Err(e) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("prior refit step {}", step + 1))
                    .into());
            }
        };
        sum += stats.bound;
        count += 1;
        if count == window {
            windows.push(sum / count as f64);
            (sum, count) = (0.0, 0);
        }
        work.tick(
            ctx,
            &format!(
                "prior refit step {}/{}: bound {:.3}",
                step + 1,
                s.steps,
                stats.bound
            ),
        )?;
    }
    let (_, fitted) = trainer.into_parts();
    ctx.log(format!(
        "gradient refit: mean batch bound {} over the first {window} steps, {} over the last",
        fmt_opt(windows.first().copied()),
        fmt_opt(windows.last().copied())
    ));
    let per_row =
        |prior: &Prior, what: &str, work: &mut Work| bounds(ctx, work, vae, prior, r.probe, what);
    let b_init = per_row(&init, "train, initial prior", work)?;
    let b_fit = per_row(&fitted, "train, fitted prior", work)?;
    let before = MeanStderr::of(b_init.of(&r.objective)).mean;
    let after = MeanStderr::of(b_fit.of(&r.objective)).mean;
    let what = match r.objective.kind {
        ObjectiveKind::Elbo => format!("{}-sample ELBO", r.objective.k),
        ObjectiveKind::Iwae => format!("L_{}", r.objective.k),
        // PIWAE's prior ascends L_{mk}, what its value is.
        ObjectiveKind::Piwae { .. } => format!(
            "L_{} (the decoder's bound of {})",
            r.objective.samples(),
            objective_label(&r.objective)
        ),
        ObjectiveKind::Miwae { .. } | ObjectiveKind::Ciwae { .. } => objective_label(&r.objective),
    };
    let objective = format!(
        "mean {what} over {} training rows at fixed noise, encoder and decoder fixed (Adam, {} steps at lr {})",
        r.probe.rows, s.steps, s.lr
    );
    let components = s.components;
    let mut refit = keep_better(ctx, init, fitted, before, after, objective, components);
    refit.train_bounds = Some(if refit.kept_initial { b_init } else { b_fit });
    Ok(refit)
}

/// The refit never lowers what it maximizes: keeps `initial` if `fitted` scores lower on the
/// same draws.
#[allow(clippy::too_many_arguments)]
pub(super) fn keep_better(
    ctx: &Context,
    initial: Prior,
    fitted: Prior,
    before: f64,
    after: f64,
    objective: String,
    components: usize,
) -> Refit {
    // Also keeps the initial prior if either value is NaN.
    let kept_initial = !matches!(
        after.partial_cmp(&before),
        Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
    );
    if kept_initial {
        ctx.log(format!("the fitted prior scores below its starting point ({after:.4} < {before:.4}) on the refit's draws: keeping the starting point"));
    }
    Refit {
        prior: if kept_initial { initial } else { fitted },
        objective,
        before: Some(before),
        after: Some(after),
        kept_initial,
        components,
        subset: 0,
        train_bounds: None,
        log_p_kl: None,
    }
}
