"""One training step of the paper-sized model, for real: memory and time.

    python benchmarks/paper_step.py                 # B = 100 (the paper's minibatch)
    python benchmarks/paper_step.py --batch 10      # smaller, quicker

Allocates the `paper` config in float32 (~0.94 billion weights, 3.5 GiB), Adagrad state of
the same size, draws a minibatch of random 200x200x3 frames, and runs one forward, one backward
(joint gradients) and one in-place Adagrad update. Records the peak resident memory
(resource.getrusage ru_maxrss), seconds per phase and images/s to
benchmarks/results/paper_step.json (one entry per batch size). Not a test: it takes minutes
and 14 GiB at B = 100 (about 1.3 GiB more per 100 images).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

from refimpl.config import load_config
from refimpl.model import init_params, model_backward, model_forward, param_count
from refimpl.optim import adagrad_init, adagrad_update

from machine import machine_info  # benchmarks/machine.py

RESULTS = Path(__file__).resolve().parent / "results" / "paper_step.json"


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=100, help="minibatch size (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = load_config("paper", dtype="float32")
    rng = np.random.default_rng(args.seed)
    timings = {}
    t = time.perf_counter()
    params = init_params(cfg, rng)
    state = adagrad_init(params)
    timings["init_s"] = time.perf_counter() - t
    print(f"allocated {param_count(cfg):,} weights + Adagrad state in {timings['init_s']:.1f} s; "
          f"peak RSS {peak_gib():.2f} GiB")

    x = rng.random((args.batch, cfg.channels, cfg.image_size, cfg.image_size), dtype=np.float32)
    t = time.perf_counter()
    J, cache = model_forward(x, params, cfg)
    timings["forward_s"] = time.perf_counter() - t
    print(f"forward  {timings['forward_s']:.1f} s (J per example {float(J) / args.batch:.4g}); "
          f"peak RSS {peak_gib():.2f} GiB")
    t = time.perf_counter()
    _, grads = model_backward(cache, cfg, input_grad=False)
    del cache
    timings["backward_s"] = time.perf_counter() - t
    print(f"backward {timings['backward_s']:.1f} s; peak RSS {peak_gib():.2f} GiB")
    t = time.perf_counter()
    adagrad_update(params, grads, state, lr=cfg.train.lr, floor=cfg.train.adagrad_floor,
                   inplace=True)
    timings["adagrad_s"] = time.perf_counter() - t
    step = timings["forward_s"] + timings["backward_s"] + timings["adagrad_s"]
    result = {
        "config": "paper", "dtype": "float32", "batch": args.batch,
        "parameters": param_count(cfg), **{k: round(v, 3) for k, v in timings.items()},
        "seconds_per_step": round(step, 3), "images_per_s": round(args.batch / step, 3),
        "peak_rss_gib": round(peak_gib(), 3),
        "threads": os.environ.get("CATNEURON_THREADS", "default"),
        "machine": machine_info(),
    }
    print(f"adagrad  {timings['adagrad_s']:.1f} s\n"
          f"one step: {step:.1f} s for {args.batch} images = {result['images_per_s']:.2f} images/s; "
          f"peak RSS {result['peak_rss_gib']:.2f} GiB")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(RESULTS.read_text()).get("runs", {}) if RESULTS.exists() else {}
    runs[str(args.batch)] = result  # one entry per batch size measured
    RESULTS.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
