"""Speed of the local filter (forward + backward) at paper-like shapes, against this machine's
float32 GEMM peak and a PyTorch CPU ``unfold + bmm`` baseline, all measured in the same run.

    make bench                                   # or:
    .venv/bin/python benchmarks/sublayers.py     # full run, writes benchmarks/results/sublayers.json
    .venv/bin/python benchmarks/sublayers.py --sizes 32 --strides 2 --repeats 3   # a quick look

Shapes (issue 2): batch B = 100, C = 3 channels, R = 18 fields, K = 8 maps, inputs of 32, 64 and
96 pixels, filter stride 1 and 2. Each figure is the median of ``--repeats`` timings.

FLOPs are counted as useful multiply-adds, 2 * B * OH * OW * K * C * R * R per pass (forward, dx,
dW each), so every implementation is charged the same work. The GEMM peak is NumPy's float32
``(2048 x 2048) @ (2048 x 2048)`` with BLAS's default threads (and with one thread, for reference),
measured at the start, before every case and at the end: the host's speed drifts with its other
tenants (one run's start and end differed by 17%), and the fractions are of the best of these.
For scale, the run also times the product every location of the forward makes, alone, on one
thread: ``(K x C*R*R) @ (C*R*R x B)`` over an operand that stays in cache, as a column's patches do
(``location_product``). With K = 8 rows it cannot use a GEMM kernel the way a square product does.

``bwd`` is the layer's whole backward (``local_filter_backward``): dx and dW together, which run
at once, one on each thread, the thread done first taking the other kernel's remaining columns, up
to 8 GFLOP for the pair (``refimpl.locally_connected.run_pair``; above it one after the other),
where the ``dx`` and ``dW`` columns time each kernel alone,
splitting its own columns over the threads. The three are timed at different moments, so on a
shared machine their comparison is rough; the run_pair docstring gives alternating probes.

A stage is local filter + decoder + L2 pooling (5x5, stride 1) + LCN (5x5) + eq. 1, forward and
backward (``objective_forward/backward`` with LCN's gradient fed back as ``dp_extra``). We report
how much of a stage's time is spent outside the locally connected products (filter + decoder),
and the share of L2 pooling and of LCN on their own.

The process keeps the memory it frees (``refimpl.memory.retain_freed_memory``), as the
``catneuron`` CLI and simcluster's workers do: without it every call faults fresh pages in for
its temporaries, which is dear on these VMs.

Other processes share the cores, so the load average (``os.getloadavg()``) is recorded before and
after each case and saved with the figures; ``--quiet-load 1.5`` waits for a quieter machine
before each case (at most ``--max-wait`` seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from refimpl import (  # noqa: E402
    l2pool_backward, l2pool_forward, lcn_backward, lcn_forward, local_decoder_backward,
    local_decoder_forward, local_filter_backward, local_filter_forward, objective_backward,
    objective_forward,
)
from refimpl.locally_connected import _threads, lc_transpose, lc_weight_grad  # noqa: E402
from refimpl.memory import retain_freed_memory  # noqa: E402

from machine import machine_info  # noqa: E402  (benchmarks/machine.py)

RESULTS = Path(__file__).resolve().parent / "results" / "sublayers.json"


@dataclass
class BenchConfig:
    batch: int = 100  # B, the paper's minibatch
    channels: int = 3  # C, colour input
    field: int = 18  # R, the receptive field
    maps: int = 8  # K
    sizes: tuple = (32, 64, 96)  # input height = width, pixels
    strides: tuple = (1, 2)  # filter stride S
    pool_window: int = 5  # L2 pooling window for the stage timing (stride 1)
    lcn_window: int = 5
    repeats: int = 5  # timings per figure; the median is reported
    torch_repeats: int = 3  # the baseline is slow; fewer timings
    gemm_n: int = 2048  # the GEMM peak's matrix size
    seed: int = 0
    out: str = str(RESULTS)
    torch: bool = True  # measure the PyTorch baseline (skipped if torch is not installed)
    stage: bool = True  # measure the whole-stage shares
    quiet_load: float = 0.0  # before each case wait (up to max_wait s) for the 1-min load to drop
    max_wait: float = 300.0  # below quiet_load; 0 = do not wait
    cases: tuple = ()  # the (size, stride) pairs measured; parse_args fills it in


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), samples


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable, timed in turns (one call of each per round, after a
    warm-up round), so that a slow spell of a shared machine falls on all of them alike: the
    stage shares are ratios of these, and timed one after the other a spell once made the
    products alone take 1.9x the whole stage."""
    for fn in fns.values():
        fn()
    samples: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in samples.items()}


def gemm_peak(n: int, repeats: int) -> dict:
    """NumPy float32 GEMM GFLOP/s, n x n x n, BLAS default threads and one thread."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n**3
    t_all, _ = median_time(lambda: a @ b, repeats)
    with threadpool_limits(limits=1, user_api="blas"):
        t_one, _ = median_time(lambda: a @ b, repeats)
    return {"gflops": flops / t_all / 1e9, "gflops_1thread": flops / t_one / 1e9, "n": n}


def lc_flops(cfg: BenchConfig, size: int, stride: int) -> tuple[float, int]:
    """Useful FLOPs of one pass (forward, dx or dW) and the output side OH."""
    oh = (size - cfg.field) // stride + 1
    return 2.0 * cfg.batch * oh * oh * cfg.maps * cfg.channels * cfg.field**2, oh


def draw_case(cfg: BenchConfig, size: int, stride: int, dtype=np.float32):
    rng = np.random.default_rng(cfg.seed)
    _, oh = lc_flops(cfg, size, stride)
    B, C, K, R = cfg.batch, cfg.channels, cfg.maps, cfg.field
    x = rng.standard_normal((B, C, size, size), dtype=dtype)
    W1 = (rng.standard_normal((oh, oh, K, C, R, R), dtype=dtype) / R).astype(dtype)
    W2 = (rng.standard_normal((oh, oh, K, C, R, R), dtype=dtype) / R).astype(dtype)
    df = rng.standard_normal((B, K, oh, oh), dtype=dtype)
    return x, W1, W2, df


def bench_refimpl(cfg: BenchConfig, size: int, stride: int) -> dict:
    """refimpl's local filter: forward, dx (lc_transpose), dW (lc_weight_grad), and fwd + bwd."""
    x, W1, _, df = draw_case(cfg, size, stride)
    flops, _ = lc_flops(cfg, size, stride)
    R = cfg.field
    t_fwd, s_fwd = median_time(lambda: local_filter_forward(x, {"W1": W1}, stride=stride), cfg.repeats)
    t_dx, s_dx = median_time(lambda: lc_transpose(df, W1, stride, (size, size)), cfg.repeats)
    t_dw, s_dw = median_time(lambda: lc_weight_grad(x, df, stride, R), cfg.repeats)
    _, cache = local_filter_forward(x, {"W1": W1}, stride=stride)
    t_bwd, s_bwd = median_time(lambda: local_filter_backward(df, cache), cfg.repeats)  # dx + dW

    def fwd_bwd():
        _, cache = local_filter_forward(x, {"W1": W1}, stride=stride)
        local_filter_backward(df, cache)

    t_all, s_all = median_time(fwd_bwd, cfg.repeats)
    return {
        "seconds": {"forward": t_fwd, "dx": t_dx, "dW": t_dw, "backward": t_bwd, "total": t_all},
        "samples": {"forward": s_fwd, "dx": s_dx, "dW": s_dw, "backward": s_bwd, "total": s_all},
        "gflops": {
            "forward": flops / t_fwd / 1e9, "dx": flops / t_dx / 1e9, "dW": flops / t_dw / 1e9,
            "backward": 2 * flops / t_bwd / 1e9, "total": 3 * flops / t_all / 1e9,
        },
    }


def bench_torch(cfg: BenchConfig, size: int, stride: int) -> dict | None:
    """The baseline: ``unfold`` then one batched product over locations, autograd backward."""
    try:
        import torch
    except ImportError:
        return None
    x, W1, _, df = draw_case(cfg, size, stride)
    flops, oh = lc_flops(cfg, size, stride)
    L, K, R = oh * oh, cfg.maps, cfg.field
    xt = torch.from_numpy(x).requires_grad_()
    Wt = torch.from_numpy(W1.reshape(L, K, -1)).requires_grad_()  # (L, K, C*R*R)
    dft = torch.from_numpy(np.ascontiguousarray(df.reshape(cfg.batch, K, L).transpose(2, 1, 0)))

    def forward():
        cols = torch.nn.functional.unfold(xt, R, stride=stride)  # (B, C*R*R, L)
        return torch.bmm(Wt, cols.permute(2, 1, 0))  # (L, K, B)

    def fwd_bwd():
        xt.grad = Wt.grad = None
        forward().backward(dft)

    with torch.no_grad():
        t_fwd, _ = median_time(forward, cfg.torch_repeats)
    t_all, s_all = median_time(fwd_bwd, cfg.torch_repeats)
    return {
        "seconds": {"forward": t_fwd, "total": t_all},
        "samples": {"total": s_all},
        "gflops": {"forward": flops / t_fwd / 1e9, "total": 3 * flops / t_all / 1e9},
        "threads": torch.get_num_threads(),
        "version": torch.__version__,
    }


def bench_stage(cfg: BenchConfig, size: int, stride: int) -> dict:
    """One stage, forward and backward, and its parts timed alone on the same arrays."""
    x, W1, W2, _ = draw_case(cfg, size, stride)
    rng = np.random.default_rng(cfg.seed + 1)
    hyper = dict(stride=stride, pool_window=cfg.pool_window, pool_stride=1, lam=0.1, eps=0.01)
    _, cache = objective_forward(x, {"W1": W1, "W2": W2}, **hyper)
    p = cache.pooled
    dy = rng.standard_normal(p.shape, dtype=x.dtype)
    f, enc = local_filter_forward(x, {"W1": W1}, stride=stride)
    xhat, dec = local_decoder_forward(f, {"W2": W2}, stride=stride, out_size=(size, size))

    def stage():
        _, cache = objective_forward(x, {"W1": W1, "W2": W2}, **hyper)
        y, lcache = lcn_forward(cache.pooled, window=cfg.lcn_window)
        dp, _ = lcn_backward(dy, lcache)
        objective_backward(1.0, cache, dp_extra=dp)

    def lc_products():
        local_filter_forward(x, {"W1": W1}, stride=stride)
        local_decoder_forward(f, {"W2": W2}, stride=stride, out_size=(size, size))
        local_decoder_backward(xhat, dec)
        local_filter_backward(f, enc)

    def pooling():
        _, pcache = l2pool_forward(f, window=cfg.pool_window, stride=1, eps=0.01)
        l2pool_backward(dy, pcache)

    def lcn():
        _, lcache = lcn_forward(p, window=cfg.lcn_window)
        lcn_backward(dy, lcache)

    t = interleaved_medians({"stage": stage, "lc_products": lc_products, "l2pool": pooling, "lcn": lcn},
                            cfg.repeats)
    return {
        "seconds": t,
        "share_outside_filter_decoder": 1.0 - t["lc_products"] / t["stage"],
        "share_l2pool": t["l2pool"] / t["stage"],
        "share_lcn": t["lcn"] / t["stage"],
    }


def wait_for_quiet(cfg: BenchConfig) -> float:
    """Sleep until the 1-minute load average is below ``cfg.quiet_load`` or ``cfg.max_wait``
    seconds have passed; return the seconds waited."""
    t0 = time.monotonic()
    while cfg.quiet_load and os.getloadavg()[0] > cfg.quiet_load and time.monotonic() - t0 < cfg.max_wait:
        time.sleep(5)
    return time.monotonic() - t0


def location_product(cfg: BenchConfig, n: int = 16) -> dict:
    """One thread's GFLOP/s on ``n`` locations' forward products ``(K, C*R*R) @ (C*R*R, B)``, one
    batched matmul over one patch (in cache, as a column's overlapping patches are)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(cfg.seed)
    K, N, B = cfg.maps, cfg.channels * cfg.field**2, cfg.batch
    w = rng.standard_normal((n, K, N), dtype=np.float32)
    patch = rng.standard_normal((1, N, B), dtype=np.float32)  # broadcast over the n products
    out = np.empty((n, K, B), dtype=np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        t, _ = median_time(lambda: np.matmul(w, patch, out=out), 5 * cfg.repeats)
    return {"shape": [K, N, B], "locations": n, "gflops_1thread": 2.0 * n * K * N * B / t / 1e9}


def run(cfg: BenchConfig) -> dict:
    wait_for_quiet(cfg)
    load_start = os.getloadavg()
    peak = gemm_peak(cfg.gemm_n, cfg.repeats)
    product = location_product(cfg)
    rows = []
    for size, stride in tqdm(cfg.cases, desc="cases", unit="case"):
        flops, oh = lc_flops(cfg, size, stride)
        waited = wait_for_quiet(cfg)
        row = {"size": size, "stride": stride, "out": oh, "gflop_per_pass": flops / 1e9,
               "waited_for_quiet_s": waited, "load_before": os.getloadavg(),
               "gemm_peak_before": gemm_peak(cfg.gemm_n, cfg.repeats)}
        row["refimpl"] = bench_refimpl(cfg, size, stride)
        if cfg.torch:
            row["torch"] = bench_torch(cfg, size, stride)
        if cfg.stage:
            row["stage"] = bench_stage(cfg, size, stride)
        g = row["refimpl"]["gflops"]["total"]
        if row.get("torch"):
            row["ratio_to_torch"] = g / row["torch"]["gflops"]["total"]
        row["load_after"] = os.getloadavg()
        rows.append(row)
    peak_end = gemm_peak(cfg.gemm_n, cfg.repeats)  # the peak again: did the load change?
    # The host's speed drifts (other tenants): the fractions are of the best peak of the run.
    peaks = [peak, peak_end] + [row["gemm_peak_before"] for row in rows]
    best = {key: max(p[key] for p in peaks) for key in ("gflops", "gflops_1thread")}
    for row in rows:
        g = row["refimpl"]["gflops"]["total"]
        row["fraction_of_peak"] = g / best["gflops"]
        row["fraction_of_1thread_peak"] = g / best["gflops_1thread"]
    return {
        "config": asdict(cfg),
        "machine": machine_info(catneuron_threads=_threads(), retains_freed_memory=retain_freed_memory()),
        "load_start": load_start, "load_end": os.getloadavg(),
        "gemm_peak": peak, "gemm_peak_end": peak_end, "gemm_peak_best": best,
        "location_product": product,
        "cases": rows,
    }


def report(res: dict) -> None:
    peak = res["gemm_peak_best"]
    each = [r["gemm_peak_before"]["gflops"] for r in res["cases"]]
    print(f"float32 GEMM peak {peak['gflops']:.0f} GFLOP/s, the best of the run "
          f"({peak['gflops_1thread']:.0f} on one thread; {res['gemm_peak']['gflops']:.0f} at the start,"
          f" {min(each):.0f}-{max(each):.0f} before the cases, {res['gemm_peak_end']['gflops']:.0f} at"
          f" the end); load {res['load_start'][0]:.2f} -> {res['load_end'][0]:.2f}")
    lp = res["location_product"]
    print(f"one location's product ({lp['shape'][0]} x {lp['shape'][1]}) @ ({lp['shape'][1]} x "
          f"{lp['shape'][2]}) alone: {lp['gflops_1thread']:.0f} GFLOP/s on one thread"
          f" ({100 * lp['gflops_1thread'] / peak['gflops_1thread']:.0f}% of that thread's peak)")
    print(f"{'size':>4} {'S':>2} {'fwd':>6} {'dx':>6} {'dW':>6} {'bwd':>6} {'total':>6} {'%peak':>6}"
          f" {'torch':>6} {'x torch':>7} {'outside':>8} {'pool':>6} {'lcn':>6} {'load':>5}   (GFLOP/s)")
    for r in res["cases"]:
        g = r["refimpl"]["gflops"]
        t = r.get("torch") or {}
        st = r.get("stage") or {}
        nan = float("nan")
        torch_g = t["gflops"]["total"] if t else nan
        print(f"{r['size']:>4} {r['stride']:>2} {g['forward']:>6.1f} {g['dx']:>6.1f} {g['dW']:>6.1f}"
              f" {g.get('backward', nan):>6.1f} {g['total']:>6.1f} {100 * r['fraction_of_peak']:>5.1f}% {torch_g:>6.2f}"
              f" {r.get('ratio_to_torch', nan):>6.1f}x"
              f" {100 * st.get('share_outside_filter_decoder', nan):>7.1f}%"
              f" {100 * st.get('share_l2pool', nan):>5.1f}% {100 * st.get('share_lcn', nan):>5.1f}%"
              f" {r['load_before'][0]:>5.2f}")


def parse_args(argv=None) -> BenchConfig:
    d = BenchConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(d.sizes))
    ap.add_argument("--strides", type=int, nargs="+", default=list(d.strides))
    ap.add_argument("--batch", type=int, default=d.batch)
    ap.add_argument("--repeats", type=int, default=d.repeats)
    ap.add_argument("--torch-repeats", type=int, default=d.torch_repeats)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    ap.add_argument("--no-stage", action="store_true", help="skip the whole-stage shares")
    ap.add_argument("--quiet-load", type=float, default=d.quiet_load,
                    help="before each case, wait for the 1-min load average to drop below this")
    ap.add_argument("--max-wait", type=float, default=d.max_wait, help="seconds to wait at most")
    ap.add_argument("--out", default=d.out, help="JSON file to write ('' to skip)")
    a = ap.parse_args(argv)
    return BenchConfig(
        batch=a.batch, sizes=tuple(a.sizes), strides=tuple(a.strides), repeats=a.repeats,
        torch_repeats=a.torch_repeats, torch=not a.no_torch, stage=not a.no_stage, out=a.out,
        quiet_load=a.quiet_load, max_wait=a.max_wait,
        cases=tuple((s, st) for s in a.sizes for st in a.strides),
    )


def main(argv=None) -> int:
    cfg = parse_args(argv)
    retain_freed_memory()  # as the CLI does; run() records whether it took effect
    res = run(cfg)
    report(res)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
