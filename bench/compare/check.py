# Cheap correctness check of the two references (seconds, not a benchmark): on the same fixed
# float32 weights, binary images and noise, torch's and JAX's L_k, ELBO and their gradients agree,
# both match an independent float64 NumPy L_5, and on average L_1 ≤ L_5 ≤ L_50
# (Burda et al.'s monotonicity), and the JAX Adam update equals torch.optim.Adam's. Exit code 1 on a
# mismatch.
#   bench/compare/.venv/bin/python bench/compare/check.py
import math
import sys

import numpy as np

import common
import jax_ref
import torch_ref

rng = np.random.default_rng(7)
params = {}
for name, n_in, n_out in jax_ref.LAYERS:
    r = 1 / math.sqrt(n_in)
    params[name + ".w"] = rng.uniform(-r, r, (n_in, n_out)).astype(np.float32)
    params[name + ".b"] = rng.uniform(-r, r, n_out).astype(np.float32)
batch = 32
x = (rng.random((batch, common.INPUT)) < 0.3).astype(np.float32)

refs = []
for module in (torch_ref, jax_ref):
    ref = module.Ref("iwae", 1, 0, None, 2)
    ref.load(params)
    refs.append(ref)

ok = True
for objective, k in [("elbo", 1), ("iwae", 5), ("elbo", 5), ("iwae", 50)]:
    eps = rng.standard_normal((k, batch, common.LATENT)).astype(np.float32)
    (bt, gt), (bj, gj) = (ref.bound_and_grads(x, eps, objective) for ref in refs)
    value_err = np.max(np.abs(bt - bj))
    grad_err = max(np.max(np.abs(gt[n] - gj[n])) / (np.max(np.abs(gt[n])) + 1e-12) for n in gt)
    good = value_err < 1e-3 * np.max(np.abs(bt)) and grad_err < 1e-3
    ok &= bool(good)
    print(f"{objective} k={k:<3} mean bound torch {bt.mean():.4f} jax {bj.mean():.4f}  max |Δ| per image "
          f"{value_err:.2e}  max relative gradient Δ {grad_err:.2e}  {'ok' if good else 'MISMATCH'}")

# An independent float64 NumPy computation of L_k with the full Gaussian densities (log 2π kept).
def numpy_lk(x, eps):
    P = {n: v.astype(np.float64) for n, v in params.items()}
    dense = lambda name, h: h @ P[name + ".w"] + P[name + ".b"]
    h = np.tanh(dense("enc1", np.tanh(dense("enc0", x))))
    mu, log_std = dense("mean", h), dense("log_std", h)
    z = mu + np.exp(log_std) * eps
    c = 0.5 * math.log(2 * math.pi)
    log_q = np.sum(-0.5 * ((z - mu) / np.exp(log_std)) ** 2 - log_std - c, -1)
    log_pz = np.sum(-0.5 * z**2 - c, -1)
    prob = 1 / (1 + np.exp(-dense("out", np.tanh(dense("dec1", np.tanh(dense("dec0", z)))))))
    log_px = np.sum(x * np.log(prob) + (1 - x) * np.log1p(-prob), -1)
    lw = log_px + log_pz - log_q
    m = lw.max(0)
    return m + np.log(np.mean(np.exp(lw - m), 0))


eps = rng.standard_normal((5, batch, common.LATENT)).astype(np.float32)
ref64 = numpy_lk(x.astype(np.float64), eps.astype(np.float64))
for ref in refs:
    err = np.max(np.abs(ref.bound_and_grads(x, eps, "iwae")[0] - ref64))
    good = err < 1e-3 * np.max(np.abs(ref64))
    ok &= bool(good)
    print(f"{ref.name} L_5 against float64 NumPy: max |Δ| per image {err:.2e}  {'ok' if good else 'MISMATCH'}")

# Adam: three steps of torch.optim.Adam (fused, as torch_ref uses it) and of jax_ref.adam on the same gradients (from the
# k = 50 bound above, scaled per step) end at the same parameters.
import jax
import torch

tp = {n: torch.tensor(v, requires_grad=True) for n, v in params.items()}
topt = torch_ref.adam(tp.values())
jp, jopt = {n: jax.numpy.asarray(v) for n, v in params.items()}, jax_ref.adam_state(params)
for step in range(3):
    for n in params:
        tp[n].grad = torch.tensor(gt[n] * (step + 1))
    topt.step()
    jp, jopt = jax_ref.adam(jp, jopt, {n: jax.numpy.asarray(gt[n] * (step + 1)) for n in params})
err = max(np.max(np.abs(tp[n].detach().numpy() - np.asarray(jp[n]))) for n in params)
moved = max(np.max(np.abs(tp[n].detach().numpy() - params[n])) for n in params)
good = err < 1e-6 and moved > 1e-3
ok &= bool(good)
print(f"Adam, 3 steps: parameters moved up to {moved:.2e}, torch − jax max |Δ| {err:.2e}  {'ok' if good else 'MISMATCH'}")

# L_k rises with k on average (fresh noise, 16 repeats of the 32 images).
lk = {}
for k in (1, 5, 50):
    vals = [refs[0].bound_and_grads(x, rng.standard_normal((k, batch, common.LATENT)).astype(np.float32),
                                    "iwae")[0].mean() for _ in range(16)]
    lk[k] = float(np.mean(vals))
mono = lk[1] <= lk[5] <= lk[50]
ok &= mono
print(f"average L_1 {lk[1]:.3f} ≤ L_5 {lk[5]:.3f} ≤ L_50 {lk[50]:.3f}: {'ok' if mono else 'VIOLATED'}")
print("all checks passed" if ok else "CHECK FAILED")
sys.exit(0 if ok else 1)
