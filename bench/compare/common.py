# Shared harness of the two Python references (torch_ref.py, jax_ref.py): command line, MNIST
# IDX reading, dynamic binarization, timing (median of repeats) and one-JSON-line output.
# NumPy only; each reference supplies a `Ref` class with the model, objective and Adam step.
import argparse
import gzip
import json
import math
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The shared MNIST copy, beside the repository (the same files pipelines/*-mnist*.toml read).
DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "mnist")

# Burda et al.'s net: encoder 784-200-200-50 (tanh, Gaussian q with mean and log-σ heads),
# decoder 50-200-200-784 (tanh, Bernoulli logits).
INPUT, HIDDEN, LATENT = 784, (200, 200), 50
ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-4)


def parse_args(impl):
    p = argparse.ArgumentParser(prog=f"{impl}_ref.py", description=f"{impl} reference of vaepipe's IWAE/ELBO")
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("throughput", help="training images/s (each image counted once whatever k)")
    t.add_argument("--objective", choices=["elbo", "iwae"], default="iwae")
    t.add_argument("--k", type=int, default=50)
    t.add_argument("--batch", type=int, default=20)
    t.add_argument("--seconds", type=float, default=3.0, help="minimum length of one measurement")
    t.add_argument("--repeat", type=int, default=3)
    e = sub.add_parser("eval", help="test images/s of the importance-sampled NLL L_k")
    e.add_argument("--k", type=int, default=5000)
    e.add_argument("--images", type=int, default=200)
    e.add_argument("--chunk", type=int, default=1000, help="samples per decoder call")
    e.add_argument("--repeat", type=int, default=3)
    q = sub.add_parser("quality", help="train on MNIST for a wall-clock budget, then test NLL")
    q.add_argument("--objective", choices=["elbo", "iwae"], default="iwae")
    q.add_argument("--k", type=int, default=5)
    q.add_argument("--batch", type=int, default=100)
    q.add_argument("--budget", type=float, default=300.0,
                   help="seconds; training stops at the end of the epoch in which they run out")
    q.add_argument("--epochs", type=int, default=0, help="stop after this many epochs (0 = budget only)")
    q.add_argument("--seed", type=int, default=1)
    q.add_argument("--data", default=DEFAULT_DATA, help="directory of the four MNIST IDX .gz files")
    q.add_argument("--train-rows", type=int, default=0, help="first N training images (0 = all 60 000)")
    q.add_argument("--test-images", type=int, default=1000)
    q.add_argument("--eval-k", type=int, default=5000)
    q.add_argument("--chunk", type=int, default=1000)
    for s in (t, e, q):
        s.add_argument("--threads", type=int, default=2, help="intra-op threads (torch only)")
    return p.parse_args()


def read_idx_images(path):
    """An IDX3 ubyte file (gzipped or not) as float32 rows in [0, 1]."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    n, rows, cols = np.frombuffer(raw[4:16], dtype=">u4")
    assert raw[2:4] == b"\x08\x03", f"{path}: not an IDX3 ubyte file"
    pixels = np.frombuffer(raw[16:], dtype=np.uint8, count=n * rows * cols)
    return pixels.reshape(n, rows * cols).astype(np.float32) / 255.0


def output_bias(train):
    """Burda et al.'s decoder output bias: logit of each pixel's mean, clipped to [1e-3, 1 − 1e-3]."""
    m = np.clip(train.mean(axis=0), 1e-3, 1 - 1e-3)
    return np.log(m / (1 - m)).astype(np.float32)


def stats(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def emit(record):
    print(json.dumps(record), flush=True)


def measure_train(ref, a):
    """Steps for ≥ a.seconds (and ≥ 3 steps) after 2 warm-up steps, a.repeat times."""
    rng = np.random.default_rng(0)
    pool = [ref.asarray((rng.random((a.batch, INPUT)) < 0.5).astype(np.float32)) for _ in range(16)]
    for i in range(2):
        ref.sync(ref.train_step(pool[i]))
    rates, steps_list = [], []
    for _ in range(a.repeat):
        steps, t0 = 0, time.perf_counter()
        while steps < 3 or time.perf_counter() - t0 < a.seconds:
            loss = ref.train_step(pool[steps % len(pool)])
            steps += 1
        ref.sync(loss)
        rates.append(steps * a.batch / (time.perf_counter() - t0))
        steps_list.append(steps)
    emit({"impl": ref.name, "version": ref.version, "mode": "train", "objective": a.objective, "k": a.k,
          "batch": a.batch, "repeat": a.repeat, "threads": ref.threads, "steps": steps_list,
          "images_per_s": stats(rates)})


def measure_eval(ref, a):
    """Images/s of L_k (k samples per image through the decoder, in chunks), a.repeat times."""
    rng = np.random.default_rng(0)
    x = (rng.random((a.images, INPUT)) < 0.5).astype(np.float32)
    ref.image_bounds(x[:1], a.k, a.chunk, seed=0)  # warm-up (and compilation)
    rates, secs = [], []
    for r in range(a.repeat):
        t0 = time.perf_counter()
        ref.image_bounds(x, a.k, a.chunk, seed=r + 1)
        secs.append(time.perf_counter() - t0)
        rates.append(a.images / secs[-1])
    emit({"impl": ref.name, "version": ref.version, "mode": "eval", "k": a.k, "images": a.images,
          "chunk": a.chunk, "repeat": a.repeat, "threads": ref.threads, "seconds": stats(secs),
          "images_per_s": stats(rates)})


def run_quality(make_ref, a):
    """Train on MNIST (dynamic binarization, shuffled batches) until the budget runs out at an epoch
    end, then the test NLL with eval_k samples on the first test images (binarized once, seed 0)."""
    d = a.data
    train = read_idx_images(os.path.join(d, "train-images-idx3-ubyte.gz"))
    test = read_idx_images(os.path.join(d, "t10k-images-idx3-ubyte.gz"))
    if a.train_rows:
        train = train[: a.train_rows]
    test_bin = (np.random.default_rng(0).random(test.shape) < test).astype(np.float32)[: a.test_images]
    ref = make_ref(a.seed, output_bias(train))
    shuffle, binarize = np.random.default_rng([a.seed, 1]), np.random.default_rng([a.seed, 2])
    n, bounds, epoch_seconds, train_seconds = len(train), [], [], 0.0
    while True:
        t0 = time.perf_counter()
        order = shuffle.permutation(n)
        losses = []
        for s in range(0, n - a.batch + 1, a.batch):  # full batches only
            p = train[order[s : s + a.batch]]
            x = (binarize.random(p.shape, dtype=np.float32) < p).astype(np.float32)
            losses.append(ref.train_step(ref.asarray(x)))
        bound = -float(np.mean([ref.scalar(l) for l in losses]))  # syncs
        epoch_seconds.append(time.perf_counter() - t0)
        train_seconds += epoch_seconds[-1]
        bounds.append(bound)
        print(f"[{ref.name}] epoch {len(bounds)}: train bound {bound:.3f} ({train_seconds:.1f} s)",
              file=sys.stderr, flush=True)
        if not math.isfinite(bound) or train_seconds >= a.budget or (a.epochs and len(bounds) >= a.epochs):
            break
    t0 = time.perf_counter()
    lk = ref.image_bounds(test_bin, a.eval_k, a.chunk, seed=a.seed)
    eval_seconds = time.perf_counter() - t0
    emit({"impl": ref.name, "version": ref.version, "mode": "quality", "objective": a.objective, "k": a.k,
          "batch": a.batch, "budget": a.budget, "seed": a.seed, "train_rows": n, "epochs": len(bounds),
          "train_seconds": train_seconds, "epoch_seconds": epoch_seconds, "train_bounds": bounds,
          "final_train_bound": bounds[-1], "eval_k": a.eval_k, "test_images": len(lk),
          "test_nll": -float(np.mean(lk)),
          "test_nll_stderr": float(np.std(lk, ddof=1) / math.sqrt(len(lk))) if len(lk) > 1 else None,
          "eval_seconds": eval_seconds, "threads": ref.threads})


def main(impl, Ref):
    a = parse_args(impl)
    if a.mode == "quality":
        run_quality(lambda seed, bias: Ref(a.objective, a.k, seed, bias, a.threads), a)
    elif a.mode == "throughput":
        measure_train(Ref(a.objective, a.k, 1, None, a.threads), a)
    else:
        measure_eval(Ref("iwae", 1, 1, None, a.threads), a)
