//! Measurements on fixed rows and noise (common random numbers across priors): per-row bounds
//! (ELBO and L_k), log-densities of draws from q_agg, paired comparisons, the progress/stop
//! counter, and the tables `latent_samples.parquet` and `refit.parquet`.

use anyhow::Context as _;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vaepipe_data::{Column, Table, permutation};
use vaepipe_engine::{Context, StageError};
use vaepipe_nn::{
    MeanStderr, Objective, ObjectiveKind, Prior, Vae, log_weights_with_noise,
    standard_normal_noise, stream_rng,
};

use crate::artifacts::RefitSide;
use crate::util::seed_for;

use super::{BLOCK_ROWS, MEASURE_ROWS, PLOT_SAMPLES};

/// Counts work for the progress display and honours stop requests.
pub(super) struct Work {
    pub(super) done: u64,
    pub(super) total: u64,
}

impl Work {
    pub(super) fn tick(&mut self, ctx: &Context, msg: &str) -> Result<(), StageError> {
        self.done += 1;
        self.total = self.total.max(self.done);
        ctx.progress(self.done, self.total, msg);
        if ctx.cancelled() {
            ctx.log(format!("stop requested during {msg}"));
            return Err(StageError::Interrupted);
        }
        Ok(())
    }
}

/// Fixed rows and noise on which bounds are measured (common random numbers across priors).
pub(super) struct Probe {
    pub(super) x: Vec<f32>,
    pub(super) rows: usize,
    pub(super) features: usize,
    pub(super) k: usize,
    pub(super) latent: usize,
    pub(super) eps: Vec<f32>,
    /// The training objective, whose per-row value [`bounds`] also measures.
    pub(super) objective: Objective,
}

impl Probe {
    /// A seeded subset of at most [`MEASURE_ROWS`] of the `n` rows of `x`, in source order, and
    /// standard-normal noise for the objective's samples per row (`m·k` for MIWAE and PIWAE).
    pub(super) fn new(
        x: &[f32],
        n: usize,
        features: usize,
        objective: &Objective,
        latent: usize,
        seed: u64,
    ) -> Self {
        let k = objective.samples();
        let rows: Vec<usize> = if n <= MEASURE_ROWS {
            (0..n).collect()
        } else {
            let mut r = permutation(n, seed_for(seed, "rows"))[..MEASURE_ROWS].to_vec();
            r.sort_unstable();
            r
        };
        let mut xs = Vec::with_capacity(rows.len() * features);
        for &r in &rows {
            xs.extend_from_slice(&x[r * features..(r + 1) * features]);
        }
        let eps = standard_normal_noise(
            &mut stream_rng(seed_for(seed, "noise"), 0),
            rows.len() * k * latent,
        );
        Probe {
            x: xs,
            rows: rows.len(),
            features,
            k,
            latent,
            eps,
            objective: *objective,
        }
    }
}

/// Per-row bounds at the probe's noise over all its k samples: the k-sample ELBO
/// mean_i log w_i and L_k = logsumexp_i log w_i − log k (Burda et al. 2016), and the value of
/// the probe's objective (for MIWAE, CIWAE and PIWAE, Rainforth et al. 2018).
#[derive(Clone)]
pub(super) struct Bounds {
    pub(super) elbo: Vec<f64>,
    pub(super) lk: Vec<f64>,
    /// The probe's objective per row (for the ELBO and IWAE, `elbo` and `lk` serve).
    pub(super) objective: Vec<f64>,
}

impl Bounds {
    /// The per-row value of what `objective` (the probe's) maximizes. PIWAE's value is L_{mk},
    /// what its decoder and prior ascend.
    pub(super) fn of(&self, objective: &Objective) -> &[f64] {
        match objective.kind {
            ObjectiveKind::Elbo => &self.elbo,
            ObjectiveKind::Iwae => &self.lk,
            ObjectiveKind::Miwae { .. }
            | ObjectiveKind::Ciwae { .. }
            | ObjectiveKind::Piwae { .. } => &self.objective,
        }
    }
}

pub(super) fn bounds(
    ctx: &Context,
    work: &mut Work,
    vae: &Vae,
    prior: &Prior,
    probe: &Probe,
    what: &str,
) -> Result<Bounds, StageError> {
    let (k, f, l) = (probe.k, probe.features, probe.latent);
    let mut out = Bounds {
        elbo: Vec::with_capacity(probe.rows),
        lk: Vec::with_capacity(probe.rows),
        objective: Vec::new(),
    };
    let variant = !matches!(
        probe.objective.kind,
        ObjectiveKind::Elbo | ObjectiveKind::Iwae
    );
    for start in (0..probe.rows).step_by(BLOCK_ROWS) {
        let m = BLOCK_ROWS.min(probe.rows - start);
        let lw = log_weights_with_noise(
            vae,
            prior,
            &probe.x[start * f..(start + m) * f],
            m,
            k,
            &probe.eps[start * k * l..(start + m) * k * l],
        )
        .with_context(|| format!("log-weights ({what}, rows {start}..{})", start + m))?;
        if variant {
            let v = probe
                .objective
                .values_from_log_weights(&lw, m)
                .with_context(|| format!("objective ({what}, rows {start}..{})", start + m))?;
            out.objective.extend(v);
        }
        for row in lw.chunks(k) {
            let row: Vec<f64> = row.iter().map(|v| *v as f64).collect();
            out.elbo.push(row.iter().sum::<f64>() / k as f64);
            out.lk.push(vaepipe_nn::log_sum_exp(&row) - (k as f64).ln());
        }
        work.tick(ctx, &format!("measuring {what}"))?;
    }
    Ok(out)
}

/// log p(z) for the rows of `z` (latent-dimensional), in blocks.
pub(super) fn log_density_blocks(
    ctx: &Context,
    work: &mut Work,
    vae: &Vae,
    prior: &Prior,
    z: &[f32],
    what: &str,
) -> Result<Vec<f64>, StageError> {
    let d = vae.config().prior_dim();
    let rows = z.len() / d;
    let mut out = Vec::with_capacity(rows);
    for start in (0..rows).step_by(BLOCK_ROWS) {
        let m = BLOCK_ROWS.min(rows - start);
        out.extend(
            prior
                .log_density(vae, &z[start * d..(start + m) * d], m)
                .with_context(|| format!("{what} of the draws from q_agg"))?,
        );
        work.tick(ctx, &format!("KL(q_agg ‖ p): {what}"))?;
    }
    Ok(out)
}

/// Bounds under two priors on the same probe, with paired standard errors of the gains.
pub(super) struct Comparison {
    pub(super) standard: Bounds,
    pub(super) refit: Bounds,
    pub(super) elbo_gain: MeanStderr,
    pub(super) lk_gain: MeanStderr,
}

impl Comparison {
    pub(super) fn new(standard: &Bounds, refit: &Bounds) -> anyhow::Result<Self> {
        Ok(Comparison {
            elbo_gain: MeanStderr::paired_difference(&refit.elbo, &standard.elbo)?,
            lk_gain: MeanStderr::paired_difference(&refit.lk, &standard.lk)?,
            standard: standard.clone(),
            refit: refit.clone(),
        })
    }

    /// Its side of `refit.json` (`train` or `test`).
    pub(super) fn side(&self) -> RefitSide {
        let m = |v: &[f64]| MeanStderr::of(v);
        RefitSide {
            elbo_standard: m(&self.standard.elbo).mean,
            elbo_refit: m(&self.refit.elbo).mean,
            lk_standard: m(&self.standard.lk).mean,
            lk_refit: m(&self.refit.lk).mean,
            elbo_gain: self.elbo_gain.mean,
            elbo_gain_stderr: self.elbo_gain.stderr,
            lk_gain: self.lk_gain.mean,
            lk_gain_stderr: self.lk_gain.stderr,
            images: self.standard.elbo.len(),
        }
    }
}

/// `latent_samples.parquet`: draws of N(0, I), the refit prior and q_agg on the plot dimensions.
pub(super) fn write_samples(
    path: &std::path::Path,
    vae: &Vae,
    prior: &Prior,
    q_agg: &Prior,
    dims: [usize; 2],
    seed: u64,
) -> anyhow::Result<()> {
    let d = vae.config().prior_dim();
    let mut source = Vec::new();
    let (mut z1, mut z2) = (Vec::new(), Vec::new());
    let sets: [(&str, &Prior, &str); 3] = [
        ("standard normal", &Prior::StandardNormal, "standard"),
        ("refit prior", prior, "refit"),
        ("aggregate posterior", q_agg, "aggregate"),
    ];
    for (name, dist, purpose) in sets {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed_for(seed, &format!("prior/plot-samples/{purpose}")));
        let z = dist
            .sample(vae, PLOT_SAMPLES, &mut rng)
            .with_context(|| format!("sampling the {name}"))?;
        for row in z.chunks(d) {
            source.push(name.to_string());
            z1.push(row[dims[0]] as f64);
            z2.push(row[dims[1]] as f64);
        }
    }
    let table = Table::new()
        .with("source", Column::Str(source))
        .with("z1", Column::F64(z1))
        .with("z2", Column::F64(z2));
    vaepipe_data::write_table(path, &table)?;
    Ok(())
}

/// `refit.parquet`: every measurement with its standard error.
pub(super) fn write_measures(
    path: &std::path::Path,
    splits: &[(&str, &Comparison)],
    kl_std: &MeanStderr,
    kl_refit: &MeanStderr,
) -> anyhow::Result<()> {
    let (mut split, mut prior, mut measure, mut value, mut stderr) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut push = |s: &str, p: &str, m: &str, e: MeanStderr| {
        split.push(s.to_string());
        prior.push(p.to_string());
        measure.push(m.to_string());
        value.push(e.mean);
        stderr.push(e.stderr);
    };
    for (name, c) in splits {
        for (p, b) in [("standard", &c.standard), ("refit", &c.refit)] {
            push(name, p, "elbo", MeanStderr::of(&b.elbo));
            push(name, p, "lk", MeanStderr::of(&b.lk));
        }
    }
    push("train", "standard", "kl_qagg", *kl_std);
    push("train", "refit", "kl_qagg", *kl_refit);
    let table = Table::new()
        .with("split", Column::Str(split))
        .with("prior", Column::Str(prior))
        .with("measure", Column::Str(measure))
        .with("value", Column::F64(value))
        .with("stderr", Column::F64(stderr));
    vaepipe_data::write_table(path, &table)?;
    Ok(())
}
