"""GPU benchmarks: sublayer GFLOP/s and memory on CuPy, fused vs plain kernels, one stage step,
and examples/s against the number of GPUs.

    .venv/bin/python benchmarks/gpu.py                       # writes benchmarks/results/gpu.json
    .venv/bin/python benchmarks/gpu.py --batch 16 --size 96 --gpus 0,1
    .venv/bin/python benchmarks/gpu.py --dry-run --out /tmp/gpu.json   # see below

Without a CUDA device it prints that it found none (and why) and exits 0: there is nothing to
measure. ``--dry-run`` runs the same code on the CPU with the strict CuPy stand-in and tiny
shapes, so CI checks that the script works; its numbers mean nothing.

What is measured, at the paper's stage-1 geometry by default (3 x 200 x 200 input, 18 x 18
fields, stride 1, 8 maps, 5 x 5 L2 pooling and LCN, float32):

1. ``sublayers``: forward and backward of each refimpl sublayer on CuPy: median milliseconds
   (the device synchronised around each call; the backward timed alone on one forward's cache),
   GFLOP/s from the FLOP counts in :func:`flops`, and memory: the CuPy memory pool's footprint
   after the calls (it keeps freed blocks, so this bounds the peak from above; the backward's
   figure includes the forward's cache).
2. ``fused``: gpu.kernels' fused L2 pooling and LCN against the plain xp code of refimpl.
3. ``stage_step``: one stage's training computation (eq. 1 forward and backward with LCN's
   gradient fed back). SKELETON: a full paper-config step (3 stages, the optimizer) needs the
   model's train loop on CuPy; time that with ``catneuron train --device cuda`` when it exists.
4. ``scaling``: examples/s against the number of GPUs, one process per GPU pinned by
   gpu.placement, each running the stage step on its own minibatch with no parameter traffic:
   independent replicas, an UPPER BOUND of data parallelism. SKELETON: the real curve, with
   the parameter-server shards of simcluster in the loop, is to be measured with simcluster.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from gpu.device import cuda_status, select_backend, to_device  # noqa: E402
from gpu.placement import mp_context, parse_gpus, pin_env, plan, run_pinned  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.json"


@dataclass
class BenchConfig:
    batch: int = 16  # B (the paper's minibatch is 100; 16 fits a 16 GiB GPU at stage 1)
    channels: int = 3  # C
    size: int = 200  # input height = width
    field: int = 18  # R
    stride: int = 1  # filter stride S
    maps: int = 8  # K
    pool_window: int = 5
    lcn_window: int = 5
    lam: float = 0.1
    eps: float = 0.01
    dtype: str = "float32"
    repeats: int = 5  # timings per figure; the median is reported
    scaling_steps: int = 5  # stage steps per process in the scaling run
    gpus: str = ""  # GPUs for the scaling run; "" = every visible GPU
    device: str = "cuda"  # "strict" for --dry-run
    seed: int = 0


class Device:
    """Synchronise and read memory on CuPy; on the stand-in both are no-ops."""

    def __init__(self, xp):
        self.xp = xp
        self.cuda = hasattr(xp, "cuda")

    def sync(self) -> None:
        if self.cuda:
            self.xp.cuda.Device().synchronize()

    def reset_memory(self) -> None:
        if self.cuda:
            self.sync()
            self.xp.get_default_memory_pool().free_all_blocks()

    def pool_bytes(self) -> int | None:
        return int(self.xp.get_default_memory_pool().total_bytes()) if self.cuda else None


def timed(dev: Device, fn, repeats: int) -> tuple[float, object]:
    """Median seconds of ``fn()`` (device synchronised around it) after one warm-up call."""
    out = fn()
    samples = []
    for _ in range(repeats):
        dev.sync()
        t0 = time.perf_counter()
        out = fn()
        dev.sync()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), out


def geometry(cfg: BenchConfig) -> dict:
    oh = (cfg.size - cfg.field) // cfg.stride + 1
    return {"B": cfg.batch, "C": cfg.channels, "H": cfg.size, "K": cfg.maps, "R": cfg.field,
            "OH": oh, "PH": oh - cfg.pool_window + 1}


def flops(cfg: BenchConfig) -> dict[str, tuple[float, float]]:
    """(forward, backward) FLOPs: multiply-adds of the equations, 2 per multiply-add."""
    g = geometry(cfg)
    lc = 2.0 * g["B"] * g["OH"] ** 2 * g["K"] * g["C"] * g["R"] ** 2  # one locally connected pass
    pool = 2.0 * g["B"] * g["K"] * g["PH"] ** 2 * cfg.pool_window**2
    lcn = 2.0 * g["B"] * g["PH"] ** 2 * (2 * cfg.lcn_window**2 + 3 * g["K"])
    return {"local_filter": (lc, 2 * lc), "local_decoder": (lc, 2 * lc), "l2pool": (pool, pool),
            "lcn": (lcn, 2 * lcn), "objective": (2 * lc + pool, 4 * lc + pool)}


def make_inputs(cfg: BenchConfig, xp) -> dict:
    g, rng, dt = geometry(cfg), np.random.default_rng(cfg.seed), np.dtype(cfg.dtype)
    wshape = (g["OH"], g["OH"], g["K"], g["C"], g["R"], g["R"])
    host = {
        "x": rng.standard_normal((g["B"], g["C"], g["H"], g["H"])).astype(dt),
        "W1": (rng.standard_normal(wshape) / np.sqrt(g["C"] * g["R"] ** 2)).astype(dt),
        "W2": (rng.standard_normal(wshape) / np.sqrt(g["K"])).astype(dt),
        "f": rng.standard_normal((g["B"], g["K"], g["OH"], g["OH"])).astype(dt),
        "p": np.abs(rng.standard_normal((g["B"], g["K"], g["PH"], g["PH"]))).astype(dt) + 0.5,
    }
    return to_device(host, xp)


class Calls(NamedTuple):
    forward: Callable  # () -> (y, cache)
    backward_of: Callable  # (y, cache) -> () -> (dx, grads): the backward alone, on one cache
    dy_of: Callable  # y -> the upstream gradient fed to the backward

    def forward_backward(self):
        y, cache = self.forward()
        return self.backward_of(y, cache)()


def sublayer_calls(cfg: BenchConfig, a: dict, impl) -> dict[str, Calls]:
    """One :class:`Calls` per sublayer, with the implementation functions of ``impl``."""
    S, out = cfg.stride, (cfg.size, cfg.size)
    obj = dict(stride=S, pool_window=cfg.pool_window, pool_stride=1, lam=cfg.lam, eps=cfg.eps)

    def calls(fwd, bwd, dy_of=lambda y: y):
        return Calls(fwd, lambda y, cache: (lambda: bwd(dy_of(y), cache)), dy_of)

    return {
        "local_filter": calls(lambda: impl["local_filter_forward"](a["x"], {"W1": a["W1"]}, stride=S),
                              impl["local_filter_backward"]),
        "local_decoder": calls(lambda: impl["local_decoder_forward"](a["f"], {"W2": a["W2"]}, stride=S, out_size=out),
                               impl["local_decoder_backward"]),
        "l2pool": calls(lambda: impl["l2pool_forward"](a["f"], window=cfg.pool_window, stride=1, eps=cfg.eps),
                        impl["l2pool_backward"]),
        "lcn": calls(lambda: impl["lcn_forward"](a["p"], window=cfg.lcn_window), impl["lcn_backward"]),
        "objective": calls(lambda: impl["objective_forward"](a["x"], {"W1": a["W1"], "W2": a["W2"]}, **obj),
                           impl["objective_backward"], lambda J: 1.0),
    }


def refimpl_impl() -> dict:
    import refimpl

    return {n: getattr(refimpl, n) for n in refimpl.__all__ if n.endswith(("_forward", "_backward"))}


def bench_sublayers(cfg: BenchConfig, dev: Device) -> list[dict]:
    rows, counts = [], flops(cfg)
    a = make_inputs(cfg, dev.xp)
    for name, c in sublayer_calls(cfg, a, refimpl_impl()).items():
        row = {"sublayer": name}
        dev.reset_memory()
        seconds, (y, cache) = timed(dev, c.forward, cfg.repeats)
        row["forward"] = {"ms": 1e3 * seconds, "gflops": counts[name][0] / seconds / 1e9,
                          "pool_bytes": dev.pool_bytes()}
        seconds, _ = timed(dev, c.backward_of(y, cache), cfg.repeats)  # the cache stays allocated
        row["backward"] = {"ms": 1e3 * seconds, "gflops": counts[name][1] / seconds / 1e9,
                           "pool_bytes": dev.pool_bytes()}
        del y, cache
        rows.append(row)
        print(f"  {name:<14} forward {row['forward']['ms']:9.2f} ms {row['forward']['gflops']:8.2f} GFLOP/s"
              f"   backward {row['backward']['ms']:9.2f} ms {row['backward']['gflops']:8.2f} GFLOP/s")
    return rows


def bench_fused(cfg: BenchConfig, dev: Device) -> list[dict]:
    """gpu.kernels against refimpl for L2 pooling and LCN, forward + backward."""
    import gpu.kernels as fused

    a = make_inputs(cfg, dev.xp)
    plain = sublayer_calls(cfg, a, refimpl_impl())
    fast = sublayer_calls(cfg, a, {**refimpl_impl(), **{n: getattr(fused, n) for n in (
        "l2pool_forward", "l2pool_backward", "lcn_forward", "lcn_backward")}})
    rows = []
    for name in ("l2pool", "lcn"):
        t_plain, _ = timed(dev, plain[name].forward_backward, cfg.repeats)
        t_fused, _ = timed(dev, fast[name].forward_backward, cfg.repeats)
        rows.append({"sublayer": name, "plain_ms": 1e3 * t_plain, "fused_ms": 1e3 * t_fused,
                     "speedup": t_plain / t_fused})
        print(f"  {name:<8} forward+backward: plain {1e3 * t_plain:8.2f} ms, fused {1e3 * t_fused:8.2f} ms "
              f"({t_plain / t_fused:.1f}x)")
    return rows


def stage_step(cfg: BenchConfig, a: dict):
    """One stage's training computation: eq. 1 forward, LCN forward, LCN backward fed back into
    eq. 1's backward as dp_extra (the joint gradient); returns the gradients."""
    from refimpl import lcn_backward, lcn_forward, objective_backward, objective_forward

    params = {"W1": a["W1"], "W2": a["W2"]}
    J, cache = objective_forward(a["x"], params, stride=cfg.stride, pool_window=cfg.pool_window,
                                 pool_stride=1, lam=cfg.lam, eps=cfg.eps)
    y, lcn_cache = lcn_forward(cache.pooled, window=cfg.lcn_window)
    dp, _ = lcn_backward(y, lcn_cache)  # the upstream gradient of 0.5 * ||y||^2, a stand-in loss above
    return objective_backward(1.0, cache, dp_extra=dp)


def bench_stage_step(cfg: BenchConfig, dev: Device) -> dict:
    a = make_inputs(cfg, dev.xp)
    dev.reset_memory()
    seconds, _ = timed(dev, lambda: stage_step(cfg, a), cfg.repeats)
    out = {"ms": 1e3 * seconds, "examples_per_s": cfg.batch / seconds, "pool_bytes": dev.pool_bytes()}
    print(f"  stage step: {out['ms']:.1f} ms, {out['examples_per_s']:.1f} examples/s")
    return out


def _replica(cfg_dict: dict, barrier, results) -> None:
    """One pinned process of the scaling run: its own minibatch, no parameter traffic."""
    cfg = BenchConfig(**cfg_dict)
    xp = select_backend(None)  # CATNEURON_DEVICE, set by the pin
    dev = Device(xp)
    a = make_inputs(cfg, xp)
    stage_step(cfg, a)  # warm-up (kernel compilation, memory pool)
    dev.sync()
    barrier.wait()
    t0 = time.perf_counter()
    for _ in range(cfg.scaling_steps):
        stage_step(cfg, a)
    dev.sync()
    results.put((cfg.batch * cfg.scaling_steps, time.perf_counter() - t0))


def bench_scaling(cfg: BenchConfig, gpus: tuple[int, ...]) -> list[dict]:
    """examples/s with 1, 2, ..., len(gpus) independent replicas (host processes on --dry-run)."""
    ctx, rows = mp_context("spawn"), []
    counts = range(1, len(gpus) + 1) if gpus else (1, 2)
    for n in counts:
        assignments = plan(gpus[:n] if gpus else None, replicas=n, partitions=1, shards=0,
                           host_device="strict" if not gpus else "cpu")
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=run_pinned, args=(pin_env(a), _replica, asdict(cfg), barrier, results))
                 for a in assignments]
        for p in procs:
            p.start()
        done = [results.get(timeout=3600) for _ in procs]
        for p in procs:
            p.join()
            if p.exitcode != 0:
                raise RuntimeError(f"a replica process exited with code {p.exitcode}")
        rate = sum(e for e, _ in done) / max(s for _, s in done)
        rows.append({"gpus": n if gpus else 0, "processes": n, "examples_per_s": rate})
        print(f"  {n} replica(s){' on host' if not gpus else ''}: {rate:.1f} examples/s")
    return rows


def parse_args(argv=None) -> tuple[BenchConfig, bool, str]:
    d = BenchConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--size", type=int, default=d.size, help="input height = width")
    p.add_argument("--stride", type=int, default=d.stride)
    p.add_argument("--dtype", choices=["float32", "float64"], default=d.dtype)
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--gpus", default=d.gpus, help="GPUs for the scaling run, e.g. 0,1 (default: all)")
    p.add_argument("--dry-run", action="store_true", help="the CuPy stand-in on the CPU, tiny shapes")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    cfg = BenchConfig(batch=args.batch, size=args.size, stride=args.stride, dtype=args.dtype,
                      repeats=args.repeats, gpus=args.gpus)
    if args.dry_run:
        cfg = BenchConfig(batch=2, size=12, field=5, stride=1, maps=2, repeats=1, scaling_steps=1,
                          dtype="float64", device="strict")
    return cfg, args.dry_run, args.out


def main(argv=None) -> int:
    cfg, dry_run, out = parse_args(argv)
    if not dry_run:
        status = cuda_status()
        if not status.available:
            print(f"benchmarks/gpu.py: no CUDA device found ({status.reason}); nothing to measure.")
            return 0
        gpus = parse_gpus(cfg.gpus) or tuple(range(status.device_count))
    else:
        print("benchmarks/gpu.py --dry-run: the CuPy stand-in on the CPU; the numbers mean nothing.")
        status, gpus = None, ()
    dev = Device(select_backend(cfg.device))
    print(f"geometry {geometry(cfg)}, {cfg.dtype}")
    print("1. sublayers (refimpl on the device)")
    result = {"config": asdict(cfg), "dry_run": dry_run, "sublayers": bench_sublayers(cfg, dev)}
    if dev.cuda or dry_run:
        print("2. fused kernels against plain xp" + (" (skipped on the stand-in)" if not dev.cuda else ""))
        result["fused"] = bench_fused(cfg, dev) if dev.cuda else []
    print("3. one stage step (SKELETON of a full paper-config step)")
    result["stage_step"] = bench_stage_step(cfg, dev)
    print("4. examples/s vs GPUs: independent replicas, no PS traffic (an upper bound; SKELETON)")
    result["scaling"] = bench_scaling(cfg, gpus)
    if status is not None:
        from gpu.device import device_info

        result["devices"] = [d._asdict() for d in device_info()]
        result["cupy"] = status.cupy_version
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
