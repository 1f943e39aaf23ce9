#!/usr/bin/env python3
# Runs the side-by-side comparison: vaepipe, the PyTorch and the JAX reference alternated in one
# window for ≥ 3 rounds; writes medians, ratios, the CPU model and ISA flags to a Markdown table in
# bench/compare/results/. Standard library only (the references run in the venv of setup.sh).
# A benchmark, not a test: CI never runs it. See bench/compare/README.md.
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
IMPLS = ["vaepipe", "torch", "jax"]
# (label, kind, objective, k, batch): the settings of issue 12.
THROUGHPUT = [("ELBO k=1 b=20", "train", "elbo", 1, 20), ("IWAE k=5 b=20", "train", "iwae", 5, 20),
              ("ELBO k=1 b=100", "train", "elbo", 1, 100), ("IWAE k=50 b=20", "train", "iwae", 50, 20),
              ("IWAE k=50 b=100", "train", "iwae", 50, 100), ("eval L_5000", "eval", None, 5000, None)]
QUALITY = [("IWAE k=5 b=100", "iwae", 5), ("ELBO k=1 b=100", "elbo", 1)]
REPORT_EPOCHS = [1, 10, 40, 80]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__ or "vaepipe vs PyTorch vs JAX")
    p.add_argument("--only", choices=["throughput", "quality"], help="run one part (default: both)")
    p.add_argument("--rounds", type=int, help="rounds of alternation (default 3; 2 with --quick)")
    p.add_argument("--budget", type=float, default=300.0, help="quality: training seconds (default 300)")
    p.add_argument("--epochs", type=int, default=0,
                   help="quality: train exactly N epochs instead of a budget (equal-epoch comparison)")
    p.add_argument("--impls", default=",".join(IMPLS), help="comma-separated subset of vaepipe,torch,jax")
    p.add_argument("--objectives", default="iwae,elbo",
                   help="quality: comma-separated subset of iwae,elbo (default both)")
    p.add_argument("--repeat", type=int, default=3, help="measurements per process (each reports a median)")
    p.add_argument("--seconds", type=float, default=3.0, help="throughput: minimum seconds per measurement")
    p.add_argument("--eval-images", type=int, default=200, help="throughput: test images per eval measurement")
    p.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--first-seed", type=int, default=1,
                   help="quality: round r (from 0) uses seed FIRST_SEED + r for every implementation (default 1)")
    p.add_argument("--quick", action="store_true", help="tiny settings to check the plumbing (seconds each)")
    p.add_argument("--vaepipe-set", action="append", default=[], metavar="KEY=VALUE",
                   help="quality: extra `--set` for vaepipe's spec (repeatable), e.g. model.init=pytorch")
    p.add_argument("--vaepipe", default=os.path.join(REPO, "target", "release", "vaepipe"))
    p.add_argument("--venv", default=os.path.join(HERE, ".venv"))
    p.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "mnist"),
                   help="directory of the four MNIST IDX .gz files")
    p.add_argument("--out", help="Markdown file to write (default results/<date>-<time>-<cpu>.md)")
    a = p.parse_args()
    a.impls = [i for i in a.impls.split(",") if i]
    a.shared_test = None  # set by main: the shared binarized test images (quality)
    assert all(i in IMPLS for i in a.impls), f"--impls: choose from {IMPLS}"
    a.rounds = a.rounds or (2 if a.quick else 3)
    if a.quick:
        a.repeat, a.seconds, a.eval_images = 1, 0.2, 4
        a.budget = 1.0
    return a


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    """Runs cmd; returns (stdout, error message or None)."""
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
        return r.stdout, f"exit {r.returncode}: {tail}"
    return r.stdout, None


def parse_json(out):
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        return json.loads(out.strip().splitlines()[-1])


def machine():
    info = {}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info["cpu"] = re.search(r"Model name:\s*(.+)", lscpu).group(1).strip()
        flags = set(re.search(r"Flags:\s*(.+)", lscpu).group(1).split())
    except Exception:  # no lscpu: fall back to /proc/cpuinfo
        text = open("/proc/cpuinfo").read()
        info["cpu"] = re.search(r"model name\s*:\s*(.+)", text).group(1).strip()
        flags = set(re.search(r"flags\s*:\s*(.+)", text).group(1).split())
    info["isa"] = {f: f in flags for f in ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]}
    info["cores"] = os.cpu_count()
    info["kernel"] = platform.release()
    rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    info["git"] = rev + (" (with uncommitted changes)" if dirty else "")
    return info


def loadavg():
    return float(open("/proc/loadavg").read().split()[0])


# ---------------------------------------------------------------- throughput

def throughput_cmd(a, impl, kind, objective, k, batch):
    k = 500 if (a.quick and kind == "eval") else k
    if impl == "vaepipe":
        cmd = [a.vaepipe, "bench", kind, "--k", str(k), "--repeat", str(a.repeat), "--json"]
        if kind == "train":
            return cmd + ["--objective", objective, "--batch", str(batch), "--seconds", str(a.seconds)]
        return cmd + ["--images", str(a.eval_images)]
    cmd = [os.path.join(a.venv, "bin", "python"), os.path.join(HERE, f"{impl}_ref.py"),
           "throughput" if kind == "train" else "eval", "--k", str(k), "--repeat", str(a.repeat),
           "--threads", str(a.torch_threads)]
    if kind == "train":
        return cmd + ["--objective", objective, "--batch", str(batch), "--seconds", str(a.seconds)]
    return cmd + ["--images", str(a.eval_images)]


def run_throughput(a, results):
    for r in range(a.rounds):
        order = a.impls[r % len(a.impls):] + a.impls[: r % len(a.impls)]  # rotate who goes first
        load = loadavg()
        log(f"throughput round {r + 1}/{a.rounds} (order {', '.join(order)}; load average {load:.2f})")
        results["load"].append(load)
        for label, kind, objective, k, batch in THROUGHPUT:
            for impl in order:
                out, err = sh(throughput_cmd(a, impl, kind, objective, k, batch))
                rec = {"round": r + 1, "setting": label, "impl": impl}
                if err:
                    rec["error"] = err
                    log(f"  {label} {impl}: FAILED {err}")
                else:
                    j = parse_json(out)
                    rec["images_per_s"] = j["images_per_s"]["median"]
                    rec["version"] = j.get("version")
                    if impl == "vaepipe":
                        rec["ratio_to_peak"] = j.get("ratio_to_peak")
                        rec["gemm_peak_gflops"] = j.get("gemm_peak_gflops")
                        rec["fast_path"] = j.get("fast_path")
                        rec["isa"] = j.get("isa")
                    log(f"  {label:16s} {impl:8s} {rec['images_per_s']:10.1f} images/s")
                results["throughput"].append(rec)


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    if abs(v) >= 10_000:
        return f"{v / 1000:.1f}k"
    return f"{v:,.{digits}f}".replace(",", " ")


def throughput_table(a, results):
    rows = results["throughput"]
    peers = [i for i in a.impls if i != "vaepipe"]
    head = ["setting"] + [f"{i} images/s (median; range)" for i in a.impls]
    if "vaepipe" in a.impls:
        head += [f"vaepipe / {p}" for p in peers] + (["**vaepipe / best peer**"] if peers else [])
        head += ["vaepipe ratio_to_peak"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, *_ in THROUGHPUT:
        m, cells = {}, [label]
        for impl in a.impls:
            v = [x["images_per_s"] for x in rows if x["setting"] == label and x["impl"] == impl and "images_per_s" in x]
            m[impl] = med(v)
            failed = sum(1 for x in rows if x["setting"] == label and x["impl"] == impl and "error" in x)
            cell = f"{fmt(m[impl], 1)} ({fmt(min(v), 1)}–{fmt(max(v), 1)})" if v else "–"
            cells.append(cell + (f" [{failed} failed]" if failed else ""))
        if "vaepipe" in a.impls:
            ratio = lambda p: m["vaepipe"] / m[p] if m["vaepipe"] and m.get(p) else None
            cells += [fmt(ratio(p), 2) for p in peers]
            if peers:
                best = max((m[p] for p in peers if m[p]), default=None)
                cells.append(f"**{fmt(m['vaepipe'] / best, 2)}**" if best and m["vaepipe"] else "–")
            cells.append(fmt(med([x.get("ratio_to_peak") for x in rows if x["setting"] == label and x["impl"] == "vaepipe"]), 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- quality

def quality_vaepipe(a, objective, k, seed):
    spec = os.path.join(HERE, f"quality-{objective}.toml")
    tmp = tempfile.mkdtemp(prefix="vaepipe-compare-")
    try:
        sets = [f"pipeline.seed={seed}", f"data.train.images={a.data}/train-images-idx3-ubyte.gz",
                f"data.train.labels={a.data}/train-labels-idx1-ubyte.gz",
                f"data.test.images={a.shared_test or a.data + '/t10k-images-idx3-ubyte.gz'}",
                f"data.test.labels={a.data}/t10k-labels-idx1-ubyte.gz"]
        sets += [f"train.epochs={a.epochs}"] if a.epochs else [f"train.time_limit={a.budget:g}"]
        sets += a.vaepipe_set
        if a.quick:
            sets += ["data.train_rows=1000", "eval.k=100", "eval.images=20", "eval.curve_k=[1, 10, 100]",
                     "eval.curve_images=20", "eval.samples=0", "eval.reconstructions=0"]
        cmd = [a.vaepipe, "--store", os.path.join(tmp, "store"), "run", spec, "--stage", "eval",
               "--reports", os.path.join(tmp, "reports"), "--json"]
        for s in sets:
            cmd += ["--set", s]
        out, err = sh(cmd, cwd=REPO)
        if err:
            return {"error": err}
        j = parse_json(out)
        inst = {i["stage"]: i for i in j["instances"]}
        train = json.load(open(os.path.join(inst["train"]["dir"], "train.json")))
        metrics = json.load(open(next(m["path"] for m in j["metrics"] if m["stage"] == "eval")))
        bounds = []  # per-epoch train bounds from the train log ("epoch 3/1000: train -101.234 …")
        if inst["train"].get("log") and os.path.exists(inst["train"]["log"]):
            for line in open(inst["train"]["log"]):
                mo = re.search(r"epoch (\d+)/\d+: train (\S+)", line)
                if mo:
                    bounds.append(float(mo.group(2)))
        return {"version": None, "epochs": train["epochs_run"], "train_seconds": train["seconds"],
                "train_bounds": bounds, "final_train_bound": train["final_train_bound"],
                "test_nll": metrics["test_nll"], "test_nll_stderr": metrics["test_nll_stderr"],
                "test_images": metrics["images"], "eval_k": metrics["eval_k"],
                "train_json": train}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def quality_ref(a, impl, objective, k, seed):
    cmd = [os.path.join(a.venv, "bin", "python"), os.path.join(HERE, f"{impl}_ref.py"), "quality",
           "--objective", objective, "--k", str(k), "--batch", "100", "--seed", str(seed), "--data", a.data,
           "--budget", str(a.budget if not a.epochs else 1e12), "--epochs", str(a.epochs),
           "--threads", str(a.torch_threads)]
    if a.quick:
        cmd += ["--train-rows", "1000", "--eval-k", "100", "--test-images", "20", "--chunk", "100"]
    out, err = sh(cmd)
    return {"error": err} if err else parse_json(out)


def write_shared_test(a, tmp):
    """The test images as the references binarize them, for vaepipe to evaluate the same ones
    (shared_test.py); None (vaepipe binarizes its own) if the venv cannot write them."""
    if "vaepipe" not in a.impls:
        return None
    path = os.path.join(tmp, "t10k-images-binarized-idx3-ubyte.gz")
    out, err = sh([os.path.join(a.venv, "bin", "python"), os.path.join(HERE, "shared_test.py"),
                   "--data", a.data, "--out", path])
    if err:
        log(f"could not write the shared binarized test set ({err}): vaepipe's test NLL is on its "
            "own binarization of the same images, not comparable to a tenth of a nat")
        return None
    return path


def check_time_limit(a):
    """Budget mode needs `train.time_limit` (issue 13); say so clearly if this vaepipe lacks it."""
    if "vaepipe" not in a.impls or a.epochs:
        return True
    out, err = sh([a.vaepipe, "validate", os.path.join(HERE, "quality-iwae.toml"), "--json",
                   "--set", f"train.time_limit={a.budget:g}",
                   "--set", f"data.train.images={a.data}/train-images-idx3-ubyte.gz",
                   "--set", f"data.train.labels={a.data}/train-labels-idx1-ubyte.gz",
                   "--set", f"data.test.images={a.data}/t10k-images-idx3-ubyte.gz",
                   "--set", f"data.test.labels={a.data}/t10k-labels-idx1-ubyte.gz"], cwd=REPO)
    if err:
        try:
            err = "; ".join(e["message"] for e in parse_json(out)["errors"])
        except Exception:
            pass
        log(f"this vaepipe rejects train.time_limit ({err}); quality in budget mode needs it "
            "(issue 13). Use --epochs N for an equal-epoch comparison, or --impls torch,jax.")
        return False
    return True


def run_quality(a, results):
    for r in range(a.rounds):
        order = a.impls[r % len(a.impls):] + a.impls[: r % len(a.impls)]
        load = loadavg()
        log(f"quality round {r + 1}/{a.rounds} (order {', '.join(order)}; load average {load:.2f})")
        results["load"].append(load)
        for label, objective, k in QUALITY:
            if objective not in a.objectives.split(","):
                continue
            for impl in order:
                seed = a.first_seed + r
                rec = (quality_vaepipe(a, objective, k, seed) if impl == "vaepipe"
                       else quality_ref(a, impl, objective, k, seed))
                rec.update({"round": r + 1, "setting": label, "impl": impl, "seed": seed})
                if "error" in rec:
                    log(f"  {label} {impl}: FAILED {rec['error']}")
                else:
                    log(f"  {label:16s} {impl:8s} {rec['epochs']} epochs {rec['train_seconds']:.0f} s, train bound "
                        f"{rec['final_train_bound']:.2f}, test NLL {rec['test_nll']:.2f} ± {rec['test_nll_stderr'] or 0:.2f}")
                results["quality"].append(rec)


def quality_table(a, results):
    rows = [x for x in results["quality"] if "error" not in x]
    epochs = [e for e in REPORT_EPOCHS if any(len(x.get("train_bounds", [])) >= e for x in rows)] or [1]
    head = (["setting", "impl", "runs", "epochs", "train s"] + [f"bound ep. {e}" for e in epochs]
            + ["final train bound", "test NLL (median ± its stderr)", "NLL per run", "NLL − vaepipe"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, *_ in QUALITY:
        ref_nll = med([x["test_nll"] for x in rows if x["setting"] == label and x["impl"] == "vaepipe"])
        for impl in a.impls:
            rs = [x for x in rows if x["setting"] == label and x["impl"] == impl]
            failed = sum(1 for x in results["quality"] if x["setting"] == label and x["impl"] == impl and "error" in x)
            if not rs:
                lines.append(f"| {label} | {impl} | 0{f' ({failed} failed)' if failed else ''} |" + " – |" * (len(head) - 3))
                continue
            nll = med([x["test_nll"] for x in rs])
            cells = [label, impl, str(len(rs)) + (f" ({failed} failed)" if failed else ""),
                     fmt(med([x["epochs"] for x in rs])), fmt(med([x["train_seconds"] for x in rs]), 1)]
            for e in epochs:
                got = [x["train_bounds"][e - 1] for x in rs if len(x.get("train_bounds", [])) >= e]
                cells.append(fmt(med(got), 2) if len(got) == len(rs) else "–")
            cells += [fmt(med([x["final_train_bound"] for x in rs]), 2),
                      f"{nll:.2f} ± {med([x['test_nll_stderr'] for x in rs]) or 0:.2f}",
                      ", ".join(f"{x['test_nll']:.2f}" for x in sorted(rs, key=lambda x: x["round"])),
                      fmt(nll - ref_nll, 2) if ref_nll is not None and impl != "vaepipe" else "–"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- report

def versions(results):
    v = {}
    for x in results["throughput"] + results["quality"]:
        if x.get("version") and x["impl"] != "vaepipe":
            v[x["impl"]] = x["version"]
    return v


def write_report(a, results, path):
    m = results["machine"]
    isa = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in m["isa"].items())
    vp = subprocess.run([a.vaepipe, "--version"], capture_output=True, text=True).stdout.strip() or "?"
    ver = versions(results)
    isas = sorted({str(x.get("isa")) for x in results["throughput"] if x["impl"] == "vaepipe" and "isa" in x})
    load = results["load"]
    md = [f"# vaepipe vs PyTorch vs JAX{' (--quick: plumbing check, numbers mean nothing)' if a.quick else ''}",
          "",
          f"- date: {results['started']} to {results['finished']} (UTC)",
          f"- CPU: **{m['cpu']}**, {m['cores']} cores; {isa}",
          f"- vaepipe: {vp}, git {m['git']}" + (f" (kernels: {', '.join(isas)})" if isas else "") + f"; torch {ver.get('torch', '–')} ({a.torch_threads} threads); "
          f"jax {ver.get('jax', '–')} (XLA CPU, jit)",
          f"- command: `{' '.join(results['argv'])}`",
          f"- rounds {a.rounds}, impls alternated in rotating order; each process reports the median of "
          f"{a.repeat} measurements; the table gives the median of the rounds' medians (range in brackets)",
          f"- load average (1 min) at the start of each round: {', '.join(f'{x:.2f}' for x in load)}"
          + (" — **the machine was not idle: figures are unreliable**" if load and max(load) > 0.7 else ""),
          ""]
    if results["throughput"]:
        md += ["## Throughput (images/s, each image counted once whatever k)", "",
               f"Training: `bench train` / `throughput` mode, ≥ {a.seconds:g} s per measurement after 2 "
               f"warm-up steps, random binary images. Eval: L_{500 if a.quick else 5000} test NLL, "
               f"{a.eval_images} images per measurement. Ratios are of medians; > 1 means vaepipe is faster.",
               "", throughput_table(a, results), ""]
    if results["quality"]:
        mode = (f"exactly {a.epochs} epochs" if a.epochs else f"a budget of {a.budget:g} s of training (stopping at the end "
                                                                "of the epoch in which it runs out)")
        md += ["## Quality (equal wall-clock budget)" if not a.epochs else "## Quality (equal epochs)", "",
               f"All {'1000 (quick)' if a.quick else '60 000'} training images dynamically binarized, batch 100, "
               f"Adam lr 1e-3 constant, {mode}, then test NLL "
               f"with k = {100 if a.quick else 5000} on the first {20 if a.quick else 1000} test images; round r "
               f"uses seed {a.first_seed} + r − 1 for every implementation. Train bound = mean of the objective over the epoch. "
               + ("Test images: every implementation evaluates the same binary images (the references' binarization, "
                  "numpy default_rng(0); bench/compare/shared_test.py)."
                  if results.get("shared_test") else
                  "Test images: vaepipe binarizes its own (fixed seed), the references theirs: test NLLs differ by "
                  "the two binarizations too."),
               "", quality_table(a, results), ""]
    md += [f"- {n}" for n in results["notes"]] + ([""] if results["notes"] else [])
    failures = [x for x in results["throughput"] + results["quality"] if "error" in x]
    if failures:
        md += ["## Failures", ""] + [f"- round {x['round']} {x['setting']} {x['impl']}: `{x['error'].splitlines()[0]}`"
                                     for x in failures] + [""]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(md))
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(results, f, indent=1)


def main():
    a = parse_args()
    for impl in a.impls:
        need = a.vaepipe if impl == "vaepipe" else os.path.join(a.venv, "bin", "python")
        if not os.path.exists(need):
            sys.exit(f"{need} not found: " + ("cargo build --release -p vaepipe" if impl == "vaepipe"
                                               else "run bench/compare/setup.sh first"))
    m = machine()
    now = datetime.datetime.now(datetime.timezone.utc)
    slug = re.sub(r"[^a-z0-9]+", "-", re.sub(r"\((r|tm)\)", "", m["cpu"].lower())).strip("-")
    path = a.out or os.path.join(HERE, "results", f"{now:%Y-%m-%d-%H%M}-{slug}{'-quick' if a.quick else ''}.md")
    results = {"argv": ["bench/compare/run.py"] + sys.argv[1:], "machine": m, "started": f"{now:%Y-%m-%d %H:%M}",
               "load": [], "throughput": [], "quality": [], "notes": []}
    log(f"{m['cpu']}; writing {os.path.relpath(path)}")
    if a.only in (None, "throughput"):
        run_throughput(a, results)
    if a.only in (None, "quality"):
        ok = check_time_limit(a)
        if not ok and a.quick:
            log("--quick: falling back to --epochs 1 to check the rest of the plumbing")
            a.epochs, ok = 1, True
        if ok:
            tmp = tempfile.mkdtemp(prefix="vaepipe-compare-test-")
            try:
                a.shared_test = write_shared_test(a, tmp)
                results["shared_test"] = a.shared_test is not None
                run_quality(a, results)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        elif a.only == "quality":
            sys.exit(2)
        else:
            results["notes"].append("quality skipped: this vaepipe has no `train.time_limit` (issue 13); "
                                    "`--epochs N` compares at equal epochs without it")
    results["finished"] = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"
    write_report(a, results, path)
    log(f"wrote {os.path.relpath(path)}")
    print(open(path).read())


if __name__ == "__main__":
    main()
