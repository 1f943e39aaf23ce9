# JAX reference of vaepipe's setting (jit-compiled, XLA on CPU): Burda et al.'s 784-200-200-50 tanh
# VAE, the IWAE bound L_k (k = 1: the ELBO) or the k-sample ELBO, reparameterization gradients,
# Adam (lr 1e-3, β 0.9/0.999, ε 1e-4, as torch.optim.Adam), PyTorch's default init and the
# data-mean decoder output bias.   python jax_ref.py throughput|eval|quality --help   (harness: common.py)
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import common

LAYERS = [("enc0", common.INPUT, common.HIDDEN[0]), ("enc1", common.HIDDEN[0], common.HIDDEN[1]),
          ("mean", common.HIDDEN[1], common.LATENT), ("log_std", common.HIDDEN[1], common.LATENT),
          ("dec0", common.LATENT, common.HIDDEN[1]), ("dec1", common.HIDDEN[1], common.HIDDEN[0]),
          ("out", common.HIDDEN[0], common.INPUT)]


def init_params(key, out_bias=None):
    """PyTorch's nn.Linear default: weights [in, out] and biases U(±1/√fan_in)."""
    params = {}
    for (name, n_in, n_out), k in zip(LAYERS, jax.random.split(key, len(LAYERS))):
        kw, kb = jax.random.split(k)
        r = 1 / math.sqrt(n_in)
        params[name + ".w"] = jax.random.uniform(kw, (n_in, n_out), jnp.float32, -r, r)
        params[name + ".b"] = jax.random.uniform(kb, (n_out,), jnp.float32, -r, r)
    if out_bias is not None:
        params["out.b"] = jnp.asarray(out_bias)
    return params


def log_weights(p, x, eps):
    """log w = log p(x|z) + log p(z) − log q(z|x) for z = μ + σ·ε; x [B, D], ε [k, B, d] → [k, B]."""
    dense = lambda name, h: h @ p[name + ".w"] + p[name + ".b"]
    h = jnp.tanh(dense("enc1", jnp.tanh(dense("enc0", x))))
    mu, log_std = dense("mean", h), dense("log_std", h)
    z = mu + jnp.exp(log_std) * eps
    log_q = jnp.sum(-0.5 * eps**2 - log_std, -1)  # the −½ log 2π terms of q and p cancel
    log_pz = jnp.sum(-0.5 * z**2, -1)
    logits = dense("out", jnp.tanh(dense("dec1", jnp.tanh(dense("dec0", z)))))
    log_px = jnp.sum(x * logits - jax.nn.softplus(logits), -1)  # Bernoulli log-likelihood
    return log_px + log_pz - log_q


def bound(lw, objective):
    """Per-image bound from log-weights [k, B]: L_k = logsumexp − log k, or the k-sample ELBO."""
    if objective == "iwae":
        return jax.nn.logsumexp(lw, 0) - math.log(lw.shape[0])
    return lw.mean(0)


def loss_fn(p, x, eps, objective):
    return -bound(log_weights(p, x, eps), objective).mean()


@partial(jax.jit, static_argnames=("objective", "k"), donate_argnums=(0, 1))
def train_step(p, opt, x, key, objective, k):
    """One Adam step on a batch of binary images; returns the new state and the loss."""
    key, sub = jax.random.split(key)
    eps = jax.random.normal(sub, (k, x.shape[0], common.LATENT))
    loss, g = jax.value_and_grad(loss_fn)(p, x, eps, objective)
    p, opt = adam(p, opt, g)
    return p, opt, key, loss


def adam(p, opt, g):
    """torch.optim.Adam's update: p −= lr·m̂ / (√v̂ + ε) with bias-corrected moments m̂, v̂."""
    lr, (b1, b2), e = common.ADAM["lr"], common.ADAM["betas"], common.ADAM["eps"]
    t = opt["t"] + 1
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, opt["m"], g)
    v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, opt["v"], g)
    c1, c2 = 1 - b1**t, 1 - b2**t
    p = jax.tree.map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + e), p, m, v)
    return p, {"t": t, "m": m, "v": v}


@partial(jax.jit, static_argnames=("k", "chunk"))
def image_bound(p, x, key, k, chunk):
    """L_k of one image x [D]: k samples through the decoder, `chunk` at a time (k % chunk == 0)."""
    eps = jax.random.normal(key, (k // chunk, chunk, 1, common.LATENT))
    lw = jax.lax.map(lambda e: log_weights(p, x[None], e)[:, 0], eps)
    return jax.nn.logsumexp(lw.reshape(-1)) - math.log(k)


def adam_state(p):
    zeros = lambda: jax.tree.map(jnp.zeros_like, p)
    return {"t": jnp.zeros((), jnp.float32), "m": zeros(), "v": zeros()}


class Ref:
    name = "jax"
    version = jax.__version__
    threads = None  # XLA's own thread pool (all cores)

    def __init__(self, objective, k, seed, out_bias, threads):
        self.objective, self.k = objective, k
        self.key, init_key = jax.random.split(jax.random.PRNGKey(seed))
        self.p = init_params(init_key, out_bias)
        self.opt = adam_state(self.p)

    def asarray(self, x):
        return jnp.asarray(x)

    def train_step(self, x):
        self.p, self.opt, self.key, loss = train_step(self.p, self.opt, x, self.key, self.objective, self.k)
        return loss

    def scalar(self, loss):
        return float(loss)

    def sync(self, loss):
        loss.block_until_ready()

    def image_bounds(self, x, k, chunk, seed):
        chunk = math.gcd(k, chunk)
        key = jax.random.PRNGKey(seed)
        xs = jnp.asarray(x)
        return np.array([float(image_bound(self.p, xs[i], jax.random.fold_in(key, i), k, chunk))
                         for i in range(len(x))])

    # For check.py: the same computation on given float32 parameters ([in, out] weights) and noise.
    def load(self, params):
        self.p = {n: jnp.asarray(v) for n, v in params.items()}

    def bound_and_grads(self, x, eps, objective):
        f = lambda p: bound(log_weights(p, jnp.asarray(x), jnp.asarray(eps)), objective)
        b = f(self.p)
        g = jax.grad(lambda p: f(p).mean())(self.p)
        return np.asarray(b), {n: np.asarray(v) for n, v in g.items()}


if __name__ == "__main__":
    common.main("jax", Ref)
