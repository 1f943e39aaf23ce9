# PyTorch reference of vaepipe's setting (2 threads, CPU): Burda et al.'s 784-200-200-50 tanh VAE,
# the IWAE bound L_k (k = 1: the ELBO) or the k-sample ELBO, reparameterization gradients, Adam
# (lr 1e-3, β 0.9/0.999, ε 1e-4), PyTorch's default init and the data-mean decoder output bias.
#   python torch_ref.py throughput|eval|quality --help     (harness and output: common.py)
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import common


class VAE(nn.Module):
    def __init__(self):
        super().__init__()  # nn.Linear's default init: weights and biases U(±1/√fan_in)
        h1, h2 = common.HIDDEN
        self.enc0, self.enc1 = nn.Linear(common.INPUT, h1), nn.Linear(h1, h2)
        self.mean, self.log_std = nn.Linear(h2, common.LATENT), nn.Linear(h2, common.LATENT)
        self.dec0, self.dec1 = nn.Linear(common.LATENT, h2), nn.Linear(h2, h1)
        self.out = nn.Linear(h1, common.INPUT)

    def log_weights(self, x, eps):
        """log w = log p(x|z) + log p(z) − log q(z|x) for z = μ + σ·ε; x [B, D], ε [k, B, d] → [k, B]."""
        h = torch.tanh(self.enc1(torch.tanh(self.enc0(x))))
        mu, log_std = self.mean(h), self.log_std(h)
        z = mu + torch.exp(log_std) * eps
        log_q = (-0.5 * eps.square() - log_std).sum(-1)  # the −½ log 2π terms of q and p cancel
        log_pz = (-0.5 * z.square()).sum(-1)
        logits = self.out(torch.tanh(self.dec1(torch.tanh(self.dec0(z)))))
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        return log_px + log_pz - log_q


def bound(lw, objective):
    """Per-image bound from log-weights [k, B]: L_k = logsumexp − log k, or the k-sample ELBO."""
    if objective == "iwae":
        return torch.logsumexp(lw, 0) - math.log(lw.shape[0])
    return lw.mean(0)


def adam(params):
    """torch.optim.Adam with the fused CPU kernel (same update, 15–35 % faster steps at batch 20)."""
    return torch.optim.Adam(params, lr=common.ADAM["lr"], betas=common.ADAM["betas"], eps=common.ADAM["eps"],
                            fused=True)


class Ref:
    name = "torch"
    version = torch.__version__

    def __init__(self, objective, k, seed, out_bias, threads):
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.threads, self.objective, self.k = threads, objective, k
        self.vae = VAE()
        if out_bias is not None:
            with torch.no_grad():
                self.vae.out.bias.copy_(torch.from_numpy(out_bias))
        self.opt = adam(self.vae.parameters())

    def asarray(self, x):
        return torch.from_numpy(x)

    def train_step(self, x):
        """One Adam step on a batch of binary images; returns the loss −mean bound (a tensor)."""
        eps = torch.randn(self.k, x.shape[0], common.LATENT)
        loss = -bound(self.vae.log_weights(x, eps), self.objective).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def scalar(self, loss):
        return loss.item()

    def sync(self, loss):
        pass  # CPU execution is synchronous

    @torch.inference_mode()
    def image_bounds(self, x, k, chunk, seed):
        """L_k of each image (k samples through the decoder, `chunk` at a time), as numpy."""
        g = torch.Generator().manual_seed(seed)
        out = np.empty(len(x))
        for i, xi in enumerate(torch.from_numpy(x)):
            lw = torch.cat([self.vae.log_weights(xi[None], torch.randn(min(chunk, k - s), 1, common.LATENT, generator=g))
                            for s in range(0, k, chunk)])
            out[i] = bound(lw, "iwae").item()
        return out

    # For check.py: the same computation on given float32 parameters ([in, out] weights) and noise.
    def load(self, params):
        with torch.no_grad():
            for name, layer in self.vae.named_children():
                layer.weight.copy_(torch.from_numpy(params[name + ".w"]).T)
                layer.bias.copy_(torch.from_numpy(params[name + ".b"]))

    def bound_and_grads(self, x, eps, objective):
        self.vae.zero_grad(set_to_none=True)
        b = bound(self.vae.log_weights(torch.from_numpy(x), torch.from_numpy(eps)), objective)
        b.mean().backward()
        grads = {}
        for name, layer in self.vae.named_children():
            grads[name + ".w"] = layer.weight.grad.T.numpy().copy()
            grads[name + ".b"] = layer.bias.grad.numpy().copy()
        return b.detach().numpy(), grads


if __name__ == "__main__":
    common.main("torch", Ref)
