//! Summaries of evaluation output: the L_k curve from shared samples (Burda et al. 2016), the
//! variances of the latent means (active units) and a PCA of the latent codes.

use rayon::prelude::*;

use crate::error::{NnError, Result, check_len, checked_product};
use crate::estimate::lse_slice;

/// One point of the L_k curve (see [`lk_curve`]).
#[derive(Clone, Debug, PartialEq)]
pub struct CurvePoint {
    /// Number of importance samples.
    pub k: usize,
    /// Mean over images of L̂_k (nats).
    pub bound: f64,
    /// Standard error of `bound` across images (NaN with fewer than two images).
    pub stderr: f64,
    /// Mean over images of L̂_k − L̂_k' for the previous k' of the curve (0 on the first point).
    pub delta: f64,
    /// Standard error of `delta` across images: the Monte Carlo error of the increase, which is
    /// small because both bounds use the same samples (NaN with fewer than two images, 0 on the
    /// first point).
    pub delta_stderr: f64,
    /// Number of images.
    pub images: usize,
}

/// Latent codes projected on their principal components (see [`principal_components`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    /// Unit-norm principal directions, `count × dim` row-major, by decreasing variance; the
    /// largest-magnitude entry of each is positive (a deterministic sign).
    pub components: Vec<f64>,
    /// Variance along each direction.
    pub variances: Vec<f64>,
    /// The centred rows projected on the directions, `rows × count` row-major.
    pub points: Vec<f64>,
}

/// Mean and standard error (NaN for fewer than two values).
fn mean_stderr(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// The L_k curve from shared samples: `log_weights` holds `images × samples` log-weights
/// (row-major); for each k of `ks` (1 ≤ k ≤ samples), every image's L̂_k is the average of
/// logsumexp − log k over the ⌊samples/k⌋ disjoint groups of k consecutive samples, so all k
/// use the same draws and the curve is monotone up to Monte Carlo error (Burda et al. 2016,
/// Theorem 1: E L̂_k ≤ E L̂_m for k ≤ m). `ks` is sorted and deduplicated.
pub fn lk_curve(
    log_weights: &[f64],
    images: usize,
    samples: usize,
    ks: &[usize],
) -> Result<Vec<CurvePoint>> {
    if images == 0 || samples == 0 {
        return Err(NnError::InvalidArgument {
            what: "images, samples".into(),
            reason: format!("both must be at least 1, found {images} and {samples}"),
        });
    }
    let len = checked_product("log_weights", &[images, samples])?;
    check_len(
        || format!("log_weights (images={images} × samples={samples})"),
        len,
        log_weights.len(),
    )?;
    let mut ks = ks.to_vec();
    ks.sort_unstable();
    ks.dedup();
    if let Some(&bad) = ks.iter().find(|&&k| k == 0 || k > samples) {
        return Err(NnError::InvalidArgument {
            what: "ks".into(),
            reason: format!("k = {bad} is outside 1..={samples} (the samples drawn per image)"),
        });
    }
    let per_image: Vec<Vec<f64>> = log_weights
        .par_chunks(samples)
        .map(|row| {
            ks.iter()
                .map(|&k| {
                    let groups = samples / k;
                    let ln_k = (k as f64).ln();
                    row[..groups * k]
                        .chunks_exact(k)
                        .map(|g| lse_slice(g) - ln_k)
                        .sum::<f64>()
                        / groups as f64
                })
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(ks.len());
    for (j, &k) in ks.iter().enumerate() {
        let values: Vec<f64> = per_image.iter().map(|r| r[j]).collect();
        let (bound, stderr) = mean_stderr(&values);
        let (delta, delta_stderr) = if j == 0 {
            (0.0, 0.0)
        } else {
            let diffs: Vec<f64> = per_image.iter().map(|r| r[j] - r[j - 1]).collect();
            mean_stderr(&diffs)
        };
        out.push(CurvePoint {
            k,
            bound,
            stderr,
            delta,
            delta_stderr,
            images,
        });
    }
    Ok(out)
}

/// Cov_x(E_q[z_j]) for every latent dimension j: the variance across rows of the posterior
/// means (`rows × dim`, row-major; n − 1 denominator, 0 for a single row). A unit is *active*
/// when this exceeds a threshold (Burda et al. 2016, §5.2, use 10⁻²).
pub fn latent_variances(means: &[f32], rows: usize, dim: usize) -> Result<Vec<f64>> {
    if rows == 0 || dim == 0 {
        return Err(NnError::InvalidArgument {
            what: "rows, dim".into(),
            reason: format!("both must be at least 1, found {rows} and {dim}"),
        });
    }
    let len = checked_product("means", &[rows, dim])?;
    check_len(
        || format!("means (rows={rows} × dim={dim})"),
        len,
        means.len(),
    )?;
    let mut mean = vec![0.0f64; dim];
    for row in means.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows as f64);
    if rows < 2 {
        return Ok(vec![0.0; dim]);
    }
    let mut var = vec![0.0f64; dim];
    for row in means.chunks_exact(dim) {
        for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v as f64 - m).powi(2);
        }
    }
    Ok(var.into_iter().map(|s| s / (rows - 1) as f64).collect())
}

/// Projects the rows of `x` (`rows × dim`, row-major) on their first `count` principal
/// components (eigenvectors of the sample covariance by cyclic Jacobi rotations; deterministic).
/// Directions beyond `dim` are zero.
pub fn principal_components(
    x: &[f64],
    rows: usize,
    dim: usize,
    count: usize,
) -> Result<Projection> {
    if rows == 0 || dim == 0 {
        return Err(NnError::InvalidArgument {
            what: "rows, dim".into(),
            reason: format!("both must be at least 1, found {rows} and {dim}"),
        });
    }
    let len = checked_product("x", &[rows, dim])?;
    check_len(|| format!("x (rows={rows} × dim={dim})"), len, x.len())?;
    crate::error::check_finite("x", x)?;
    let mut mean = vec![0.0; dim];
    for row in x.chunks_exact(dim) {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= rows as f64);
    let denom = (rows.max(2) - 1) as f64;
    let mut cov = vec![0.0; dim * dim];
    for row in x.chunks_exact(dim) {
        for i in 0..dim {
            let a = row[i] - mean[i];
            for j in i..dim {
                cov[i * dim + j] += a * (row[j] - mean[j]);
            }
        }
    }
    for i in 0..dim {
        for j in i..dim {
            cov[i * dim + j] /= denom;
            cov[j * dim + i] = cov[i * dim + j];
        }
    }
    let (values, vectors) = symmetric_eigen(cov, dim);
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    let mut components = vec![0.0; count * dim];
    let mut variances = vec![0.0; count];
    for (c, &e) in order.iter().take(count).enumerate() {
        let v: Vec<f64> = (0..dim).map(|i| vectors[i * dim + e]).collect();
        let big = v
            .iter()
            .copied()
            .fold(0.0f64, |acc, a| if a.abs() > acc.abs() { a } else { acc });
        let sign = if big < 0.0 { -1.0 } else { 1.0 };
        for i in 0..dim {
            components[c * dim + i] = sign * v[i];
        }
        variances[c] = values[e].max(0.0);
    }
    let mut points = vec![0.0; rows * count];
    for (r, row) in x.chunks_exact(dim).enumerate() {
        for c in 0..count {
            points[r * count + c] = row
                .iter()
                .zip(&mean)
                .zip(&components[c * dim..(c + 1) * dim])
                .map(|((v, m), w)| (v - m) * w)
                .sum();
        }
    }
    Ok(Projection {
        components,
        variances,
        points,
    })
}

/// Eigen-decomposition of a symmetric `n × n` matrix by cyclic Jacobi rotations: returns the
/// eigenvalues and the eigenvectors as the columns of a row-major `n × n` matrix.
fn symmetric_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let norm: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let mut off = 0.0;
        for p in 0..n {
            for q in p + 1..n {
                off += a[p * n + q] * a[p * n + q];
            }
        }
        if off <= 1e-30 * norm || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..n {
                    let (arp, arq) = (a[r * n + p], a[r * n + q]);
                    a[r * n + p] = c * arp - s * arq;
                    a[r * n + q] = s * arp + c * arq;
                }
                for r in 0..n {
                    let (apr, aqr) = (a[p * n + r], a[q * n + r]);
                    a[p * n + r] = c * apr - s * aqr;
                    a[q * n + r] = s * apr + c * aqr;
                }
                for r in 0..n {
                    let (vrp, vrq) = (v[r * n + p], v[r * n + q]);
                    v[r * n + p] = c * vrp - s * vrq;
                    v[r * n + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_recovers_a_known_spectrum() {
        // A = Q diag(5, 2, 0.5) Qᵀ for a rotation Q.
        let (c, s) = (0.6f64, 0.8f64);
        let q = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
        let d = [5.0, 2.0, 0.5];
        let mut a = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                a[i * 3 + j] = (0..3).map(|m| q[i * 3 + m] * d[m] * q[j * 3 + m]).sum();
            }
        }
        let (mut values, _) = symmetric_eigen(a, 3);
        values.sort_by(|a, b| b.total_cmp(a));
        for (v, e) in values.iter().zip(d) {
            assert!((v - e).abs() < 1e-12, "{v} vs {e}");
        }
    }
}
