"""``catneuron scale model``: model-parallel step time vs grid, measured, fitted and extrapolated.

    catneuron scale model --config mini --grids 1x1,2x1,2x2,3x3,4x4 --predict 9x9,13x13 --out runs/scale

1. **Measure**: for every grid of ``--grids`` start the partition processes
   (:class:`simcluster.Coordinator`), run ``--steps`` minibatches after a warm-up, and record the
   step time and its split: the partitions' mean compute, mean halo wait, and the rest
   (coordination). The grids used for the fit are also measured at a quarter of the batch, so
   that the per-message and per-byte costs can be told apart.
2. **Fit** the cost model (:mod:`simcluster.costmodel`) on the ``--fit`` grids (default: all
   but the last two) and report its error on the held-out measured grids.
3. **Extrapolate** in virtual time: the same model with one machine per partition (no shared
   cores) for every grid of ``--grids`` and ``--predict`` (this machine's 2 cores cap the
   wall-clock speedup near 2).
4. **DistBelief's scale**, with assumed machines and network (``ASSUMED``, written into
   scale.json and onto the figures): (a) the speedup vs machines of a 1.7B-parameter locally
   connected model next to DistBelief's published ">12x on 81 machines"; (b) the paper's run,
   10M images on 5 replicas of 169 machines, as time per pass over the data.

Writes ``scale.json``, ``scale_steps.png`` (step time and speedup vs partitions; measured points
are filled markers, modelled ones lines and open markers), ``scale_split.png`` (measured vs
modelled split per grid) and ``scale_distbelief.png``, all atomically.

``catneuron scale data`` (data parallelism: Downpour examples/s vs replicas, :data:`DATA_DOC`)
and ``catneuron scale gpu`` (the paper's run on a multi-GPU box, :data:`GPU_DOC`) are below.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

# What the DistBelief-scale estimates assume (none of it is measured here).
ASSUMED = {
    "cores_per_machine": 16,  # the paper's machines (NOTES.md)
    "machine_flops": "16 x the fitted flop rate of one partition process here (perfect scaling "
                     "over cores, BLAS efficiency as on our small config)",
    "network_bytes_per_s": 125e6,  # 1 Gbit/s Ethernet per machine
    "latency_s": 1e-4,  # per message, one hop in a 2012 data centre
    "software_costs": "per-piece, per-byte, per-exchange and coordinator costs as fitted on "
                      "this machine (under its load)",
    "distbelief_model": "configs/paper.toml (3 stages, 18x18 fields, 8 maps, strides 1,2,1, "
                        "untied W1/W2) on 256x256 colour input instead of 200x200: 1.70e9 "
                        "parameters, the size of DistBelief's largest locally connected model",
    "paper_run": "configs/paper.toml (200x200, 0.94e9 parameters), minibatch 100, 10M images "
                 "split over 5 replicas of 13x13 = 169 machines; parameter-server traffic "
                 "(issue 7) left out",
}
DISTBELIEF_PUBLISHED = {"machines": 81, "speedup": 12.0,
                        "quote": "DistBelief (Dean et al. 2012, their figure): the 1.7B-parameter "
                                 "locally connected model ran >12x faster on 81 machines than on 1"}


def register(sub) -> None:
    p = sub.add_parser("scale", help="scaling experiments: measured, fitted, extrapolated",
                       description="Scaling experiments with a calibrated cost model.")
    ssub = p.add_subparsers(dest="scale_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    m = ssub.add_parser("model", help="model-parallel step time vs grid (measured + cost model)",
                        description="Measure the model-parallel step on several grids, fit the "
                        "cost model, report its error on held-out grids, extrapolate in virtual "
                        "time, and estimate DistBelief-scale runs under stated assumptions.")
    m.add_argument("--config", default="mini", help="config name or path (default: mini)")
    m.add_argument("--grids", default="1x1,2x1,2x2,3x3,4x4", help="grids to measure, comma-separated")
    m.add_argument("--predict", default="9x9,13x13", help="grids to model only (may be empty)")
    m.add_argument("--fit", default=None,
                   help="grids to fit on (default: all measured grids but the last two)")
    m.add_argument("--steps", type=int, default=3, help="timed minibatches per grid (default: 3)")
    m.add_argument("--batch", type=int, default=None, help="minibatch (default: the config's)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True, help="output directory")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.set_defaults(func=run_model)
    _register_data(ssub)
    _register_gpu(ssub)


def _grids(text: str, what: str) -> list[str]:
    from simcluster.plan import _parse_grid

    out = [g.strip().lower() for g in text.split(",") if g.strip()]
    for g in out:
        try:
            _parse_grid(g)
        except ValueError:
            raise ValueError(f"--{what}: {g!r} is not a grid like 3x3") from None
    return out


def _n(grid: str) -> int:
    r, c = grid.split("x")
    return int(r) * int(c)


def _pred(p) -> dict:
    return {"step_s": p.step_s, "compute_s": p.compute_s, "halo_wait_s": p.halo_wait_s,
            "coordination_s": p.coordination_s, "shares": {k: float(v) for k, v in p.shares.items()}}


def scale_model(cfg, grids, predict, fit_grids, steps: int, batch: int, seed: int = 0,
                progress: bool = True) -> tuple:
    """Measure, fit and extrapolate (steps 1-4 of the module docstring): (scale.json dict, model)."""
    import numpy as np
    from tqdm.auto import tqdm

    from refimpl.model import init_params
    from simcluster.costmodel import exchanges, fit, measure

    cores = os.cpu_count() or 1
    rng = np.random.default_rng(seed)
    params = init_params(cfg, rng)
    x = rng.standard_normal((batch, cfg.channels, cfg.image_size, cfg.image_size)).astype(cfg.dtype)
    small = max(1, batch // 4)
    measured, fit_set = {}, []
    for g in tqdm(grids, desc="scale model", unit="grid", disable=not progress):
        m, split = measure(cfg, g, params, x, steps, cores=cores, timeout=600)
        measured[g] = (m, split)
        if g in fit_grids:
            fit_set.append(m)
            if small < batch:
                fit_set.append(measure(cfg, g, params, x[:small], steps, cores=cores, timeout=600)[0])
    model = fit(fit_set)
    rows = []
    for g, (m, split) in measured.items():
        here = model.predict(m.ex, batch, cores=cores)
        rows.append({"grid": g, "partitions": _n(g), "role": "fit" if g in fit_grids else "held out",
                     "measured": _pred(split), "model_this_machine": _pred(here),
                     "model_one_machine_each": _pred(model.predict(m.ex, batch)),
                     "error": (here.step_s - m.step_s) / m.step_s})
    virtual = []
    for g in predict:
        ex = exchanges(cfg, g)
        virtual.append({"grid": g, "partitions": _n(g),
                        "model_this_machine": _pred(model.predict(ex, batch, cores=cores)),
                        "model_one_machine_each": _pred(model.predict(ex, batch))})
    held = [abs(r["error"]) for r in rows if r["role"] == "held out"]
    return {"config": cfg.name, "batch": batch, "steps": steps, "cores": cores,
            "load_avg": list(os.getloadavg()),
            "constants": {**{k: getattr(model, k) for k in model.__dataclass_fields__},
                          "flops_per_s": model.flops_per_s},
            "fit_grids": list(fit_grids), "measured": rows, "modelled": virtual,
            "held_out_abs_error": {"mean": float(np.mean(held)) if held else None,
                                   "max": float(np.max(held)) if held else None},
            "distbelief": distbelief(model), "paper_run": paper_run(model)}, model


def _cluster(model, software: bool = True):
    """The assumed machine and network; ``software=False`` also drops every fitted software cost
    (per message, byte, exchange, step, partition): compute and the network only, a lower bound."""
    from simcluster.costmodel import Link, scaled

    machine = scaled(model, s_per_flop=model.s_per_flop / ASSUMED["cores_per_machine"])
    if not software:
        machine = scaled(machine, s_per_message=0.0, s_per_byte=0.0, s_per_exchange=0.0,
                         step_overhead_s=0.0, per_partition_s=0.0)
    return machine, Link(ASSUMED["latency_s"], ASSUMED["network_bytes_per_s"])


def _speedups(cfg, machine, link) -> list[dict]:
    from simcluster.costmodel import exchanges

    curve = []
    for k in range(1, 14):
        p = machine.predict(exchanges(cfg, (k, k)), 100, link)
        curve.append({"machines": k * k, "step_s": p.step_s, "shares": p.shares})
    for row in curve:
        row["speedup"] = curve[0]["step_s"] / row["step_s"]
    return curve


def distbelief(model) -> dict:
    """(a): speedup vs machines (n x n grids) of the 1.7B-parameter model on assumed machines."""
    import numpy as np

    from refimpl.config import load_config
    from refimpl.model import param_shapes

    cfg = load_config("paper", image_size=256)
    params = sum(int(np.prod(s)) for s in param_shapes(cfg).values())
    curve = _speedups(cfg, *_cluster(model))
    bound = _speedups(cfg, *_cluster(model, software=False))
    at81 = next(i for i, r in enumerate(curve) if r["machines"] == 81)
    return {"parameters": params, "batch": 100, "curve": curve, "speedup_at_81": curve[at81]["speedup"],
            "curve_network_only": bound, "speedup_at_81_network_only": bound[at81]["speedup"],
            "published": DISTBELIEF_PUBLISHED, "assumed": ASSUMED}


def paper_run(model) -> dict:
    """(b): the paper's run (10M images, 5 replicas x 169 machines) as time per pass."""
    from refimpl.config import load_config
    from simcluster.costmodel import exchanges

    cfg = load_config("paper")
    ex = exchanges(cfg, (13, 13))
    p = _cluster(model)[0].predict(ex, 100, _cluster(model)[1])
    bound = _cluster(model, software=False)[0].predict(ex, 100, _cluster(model)[1])
    steps_per_replica = 10_000_000 // 5 // 100
    hours = steps_per_replica * p.step_s / 3600
    return {"step_s": p.step_s, "shares": p.shares, "steps_per_replica_per_pass": steps_per_replica,
            "hours_per_pass": hours, "passes_in_three_days": 72 / hours,
            "network_only": {"step_s": bound.step_s,
                             "hours_per_pass": steps_per_replica * bound.step_s / 3600},
            "note": "the paper trained for three days on 1,000 machines; it does not say how many "
                    "passes over the 10M images that was"}


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def figures(res: dict, out: Path) -> list[Path]:
    plt = _plt()
    paths = []
    meas, virt, cores = res["measured"], res["modelled"], res["cores"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    allrows = sorted(meas + virt, key=lambda r: r["partitions"])
    n = [r["partitions"] for r in allrows]
    ax.plot(n, [r["model_this_machine"]["step_s"] for r in allrows], "-", color="tab:blue",
            label=f"model, {cores} shared cores (this machine)")
    ax.plot(n, [r["model_one_machine_each"]["step_s"] for r in allrows], "--o", mfc="none",
            color="tab:orange", label="model, one machine per partition (virtual time)")
    for role, mk in (("fit", "o"), ("held out", "s")):
        pts = [r for r in meas if r["role"] == role]
        ax.plot([r["partitions"] for r in pts], [r["measured"]["step_s"] for r in pts], mk,
                color="black", ms=7, label=f"measured ({role})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("partitions")
    ax.set_ylabel("seconds per step")
    ax.set_title(f"{res['config']}, minibatch {res['batch']}: step time")
    ax.legend(fontsize=7)
    base = next((r for r in meas if r["partitions"] == 1), None)
    if base is not None:
        t1 = base["measured"]["step_s"]
        m1 = base["model_one_machine_each"]["step_s"]
        bx.plot([r["partitions"] for r in meas], [t1 / r["measured"]["step_s"] for r in meas], "o",
                color="black", label="measured (this machine)")
        h1 = base["model_this_machine"]["step_s"]
        bx.plot(n, [h1 / r["model_this_machine"]["step_s"] for r in allrows], "-", color="tab:blue",
                label=f"model, {cores} shared cores")
        bx.plot(n, [m1 / r["model_one_machine_each"]["step_s"] for r in allrows], "--o", mfc="none",
                color="tab:orange", label="model, one machine per partition")
        bx.set_xscale("log")
        bx.axhline(1.0, color="grey", lw=0.5)
        bx.set_xlabel("partitions")
        bx.set_ylabel("speedup over 1 partition")
        bx.set_title("speedup")
        bx.legend(fontsize=7)
    paths.append(out / "scale_steps.png")
    _save(fig, paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    parts = ("compute_s", "halo_wait_s", "coordination_s")
    colours = ("tab:green", "tab:red", "tab:grey")
    for i, r in enumerate(meas):
        for j, (kind, hatch) in enumerate((("measured", ""), ("model_this_machine", "//"))):
            bottom = 0.0
            for part, col in zip(parts, colours):
                v = r[kind][part]
                ax.bar(i + 0.4 * j - 0.2, v, 0.38, bottom=bottom, color=col, hatch=hatch,
                       edgecolor="white",
                       label=f"{part[:-2].replace('_', ' ')} ({'measured' if j == 0 else 'model'})"
                       if i == 0 else None)
                bottom += v
    ax.set_xticks(range(len(meas)), [f"{r['grid']}\n({r['role']})" for r in meas])
    ax.set_ylabel("seconds per step")
    ax.set_title("split of a step: measured (left, plain) vs model (right, hatched)")
    ax.legend(fontsize=7, ncol=2)
    paths.append(out / "scale_split.png")
    _save(fig, paths[-1])
    plt.close(fig)

    db = res["distbelief"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot([r["machines"] for r in db["curve"]], [r["speedup"] for r in db["curve"]], "--o",
            mfc="none", color="tab:orange",
            label=f"model ({db['parameters'] / 1e9:.2f}B parameters), ASSUMED machines and network,"
                  " software costs fitted here")
    ax.plot([r["machines"] for r in db["curve_network_only"]],
            [r["speedup"] for r in db["curve_network_only"]], ":^", mfc="none", color="tab:purple",
            label="the same, compute and network only (software costs 0)")
    pub = db["published"]
    ax.plot([pub["machines"]], [pub["speedup"]], "*", color="black", ms=14,
            label="DistBelief, published: >12x on 81 machines (theirs)")
    ax.annotate(">12x", (pub["machines"], pub["speedup"]), (pub["machines"] + 4, pub["speedup"] + 0.6))
    ax.set_xlabel("machines")
    ax.set_ylabel("speedup over 1 machine")
    a = db["assumed"]
    ax.set_title("modelled in virtual time; assumed: "
                 f"{a['cores_per_machine']} cores/machine, "
                 f"{a['network_bytes_per_s'] * 8 / 1e9:g} Gbit/s, {a['latency_s'] * 1e6:g} us latency",
                 fontsize=9)
    ax.set_ylim(0, max(pub["speedup"], *(r["speedup"] for r in db["curve_network_only"])) * 1.2)
    ax.legend(fontsize=7, loc="upper left")
    paths.append(out / "scale_distbelief.png")
    _save(fig, paths[-1])
    plt.close(fig)
    return paths


def run_model(args) -> int:
    from refimpl.config import load_config

    grids = _grids(args.grids, "grids")
    predict = _grids(args.predict, "predict")
    if not grids:
        raise ValueError("--grids: give at least one grid")
    fit_grids = _grids(args.fit, "fit") if args.fit else (grids[:-2] if len(grids) > 2 else grids)
    unknown = sorted(set(fit_grids) - set(grids))
    if unknown:
        raise ValueError(f"--fit: {unknown} are not among --grids")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    cfg = load_config(args.config)
    batch = cfg.train.batch_size if args.batch is None else args.batch
    if batch < 1:
        raise ValueError(f"--batch must be >= 1, got {batch}")
    from simcluster.tiled import plan_for

    for g in grids + predict:  # a grid the image cannot hold fails now, not after measuring
        plan_for(cfg, g)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res, _ = scale_model(cfg, grids, predict, fit_grids, args.steps, batch, args.seed,
                         progress=not args.no_progress)
    report(res)
    path = out / "scale.json"
    tmp = path.with_name("scale.json.tmp")
    tmp.write_text(json.dumps(res, indent=2))
    os.replace(tmp, path)
    paths = figures(res, out)
    print("wrote " + ", ".join(str(p) for p in [path, *paths]))
    return 0


def report(res: dict) -> None:
    c = res["constants"]
    print(f"config {res['config']}, minibatch {res['batch']}, {res['cores']} cores, load average "
          f"{', '.join(f'{v:.1f}' for v in res['load_avg'])} (a shared machine: wall clocks are noisy)")
    print(f"fitted on {', '.join(res['fit_grids'])}: {c['flops_per_s'] / 1e9:.2f} Gflop/s per "
          f"process, {c['s_per_message'] * 1e6:.0f} us per message, {c['s_per_byte'] * 1e9:.3f} ns "
          f"per byte, {c['s_per_exchange'] * 1e6:.0f} us per exchange wait, "
          f"{c['step_overhead_s'] * 1e3:.1f} ms per step + "
          f"{c['per_partition_s'] * 1e3:.2f} ms per partition")
    print(f"{'grid':>6} {'role':>9} {'measured s':>10} {'model s':>8} {'error':>7}   "
          f"measured share compute/halo/coord   model share")
    for r in res["measured"]:
        ms, ps = r["measured"]["shares"], r["model_this_machine"]["shares"]
        print(f"{r['grid']:>6} {r['role']:>9} {r['measured']['step_s']:>10.4f} "
              f"{r['model_this_machine']['step_s']:>8.4f} {r['error']:>+7.1%}   "
              f"{ms['compute']:.2f}/{ms['halo_wait']:.2f}/{ms['coordination']:.2f}"
              f"{'':>18}{ps['compute']:.2f}/{ps['halo_wait']:.2f}/{ps['coordination']:.2f}")
    for r in res["modelled"]:
        print(f"{r['grid']:>6} {'modelled':>9} {'-':>10} {r['model_this_machine']['step_s']:>8.4f}"
              f"  one machine per partition: {r['model_one_machine_each']['step_s']:.4f} s")
    e = res["held_out_abs_error"]
    if e["mean"] is not None:
        print(f"held-out error: mean {e['mean']:.1%}, max {e['max']:.1%}")
    db, pr = res["distbelief"], res["paper_run"]
    print(f"(a) {db['parameters'] / 1e9:.2f}B-parameter model, ASSUMED machines/network: "
          f"{db['speedup_at_81']:.1f}x on 81 machines ({db['speedup_at_81_network_only']:.1f}x with "
          f"compute and network only; DistBelief published: >12x on 81)")
    print(f"(b) paper's run, ASSUMED machines/network: {pr['step_s']:.3f} s per minibatch on 169 "
          f"machines, {pr['hours_per_pass']:.1f} h per pass over 10M images with 5 replicas "
          f"({pr['passes_in_three_days']:.1f} passes in three days; compute and network only: "
          f"{pr['network_only']['hours_per_pass']:.1f} h)")
    if not math.isfinite(c["flops_per_s"]):
        print("warning: the fitted flop rate is infinite (no compute measured)")


# ---------------------------------------------------------------------------------------------
# ``catneuron scale data``: data-parallel throughput vs replicas (Downpour), measured and fitted
# ---------------------------------------------------------------------------------------------

DATA_DOC = """``catneuron scale data``: Downpour throughput vs replicas, measured, fitted, extrapolated.

    catneuron scale data --config tiny --replicas 1,2,4,8 --modes sync,async --out runs/scale

1. **Measure**: for every mode and replica count run Downpour SGD (:func:`simcluster.downpour.
   run_downpour`, ``--steps`` per replica, ``--shards`` shards, P = G = 1) and take examples/s
   over the window in which every replica runs (the median time between a replica's reports;
   each configuration runs ``--repeats`` times and the fastest counts). At the ``--fit``
   replica counts (default: the first two) also run async with P = G = 4 and with twice the
   shards, so that compute and per-message and per-byte costs can be told apart.
2. **Fit** the throughput model (:mod:`simcluster.costmodel_data`) on the ``--fit`` replica
   counts and report its error on the held-out ones.
3. **Time to an objective**: the objective is the running mean of 5 minibatch losses of a
   1-replica async run after half of ``--steps`` steps; each run's time to reach it is measured, and
   modelled as its measured steps per replica to the target times the modelled step.
4. **Extrapolate** in virtual time (one machine per replica) to 4x the largest replica count.

Writes ``scale_data.json`` and ``scale_data.png`` (measured points filled, model lines and open
markers; the machine's cores are marked where wall-clock throughput saturates), atomically.
"""


def _ints(text: str, what: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{what}: {text!r} is not a comma-separated list of integers") from None
    if not out or min(out) < 1:
        raise ValueError(f"--{what}: give integers >= 1, got {text!r}")
    return out


def _data_row(pred) -> dict:
    return {"step_s": pred.step_s, "examples_per_s": pred.examples_per_s, "work_s": pred.work_s,
            "compute_s": pred.compute_s, "comm_s": pred.comm_s, "sync_s": pred.sync_s,
            "cores_bound": bool(pred.cores_bound)}


def scale_data(cfg, replicas, modes, steps: int, shards: int = 2, fit_replicas=None, seed: int = 0,
               progress: bool = True, repeats: int = 1) -> tuple:
    """Measure, fit and extrapolate (steps 1-4 of :data:`DATA_DOC`): (scale_data.json dict, model).

    Each configuration runs ``repeats`` times and the fastest run counts (as ``timeit`` does:
    on a shared machine the other jobs only ever slow a run down)."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    import dataclasses

    import numpy as np
    from tqdm.auto import tqdm

    from refimpl.data import natural_frames
    from simcluster.costmodel_data import (DataMeasurement, DataRun, fit_cores, measure_run,
                                           model_sizes, time_to_loss)

    cores = os.cpu_count() or 1
    fit_replicas = list(fit_replicas) if fit_replicas else replicas[:2]
    F, N = model_sizes(cfg)
    B = cfg.train.batch_size
    frames = natural_frames(max(64, 8 * max(replicas)), cfg.image_size, channels=cfg.channels,
                            rng=np.random.default_rng(seed))

    def run(mode, R, S=shards, P=1, G=1, cores_=cores):
        return DataRun(mode, R, S, P, G, B, F, N, cores_)

    eff = cores

    plan = [(mode, R, 1, shards) for mode in modes for R in replicas]
    if 1 not in replicas or "async" not in modes:
        plan.insert(0, ("async", 1, 1, shards))  # the target objective's run
    plan += [("async", R, 4, shards) for R in fit_replicas]
    plan += [("async", R, 1, 2 * shards) for R in fit_replicas]
    rows, meas = [], {}
    for mode, R, PG, S in tqdm([p for p in plan for _ in range(repeats)], desc="scale data",
                               unit="run", disable=not progress):
        m, res = measure_run(cfg, frames, run(mode, R, S, PG, PG), steps, seed=seed,
                             max_staleness=2)
        if (mode, R, PG, S) not in meas or m.step_s < meas[(mode, R, PG, S)][0].step_s:
            meas[(mode, R, PG, S)] = (m, res)
    base = meas[("async", 1, 1, shards)][1]
    half = [h["loss"] for h in base.history if h["step"] <= steps // 2]
    target = float(np.mean(half[-5:]))
    fit_set = [m for (mode, R, PG, S), (m, _) in meas.items() if R in fit_replicas]
    model, eff = fit_cores(fit_set)
    for (mode, R, PG, S), (m, res) in meas.items():
        m = DataMeasurement(dataclasses.replace(m.run, cores=eff), m.step_s)
        pred = model.predict(m.run)
        t_hit = time_to_loss(res.history, target)
        hit_step = None
        if t_hit is not None:
            hit_step = max(h["step"] for h in res.history if h["t"] <= t_hit)
        virt = model.predict(dataclasses.replace(m.run, cores=None))
        rows.append({"mode": mode, "replicas": R, "fetch_every": PG, "push_every": PG, "shards": S,
                     "role": "fit" if R in fit_replicas else "held out",
                     "measured": {"step_s": m.step_s, "examples_per_s": R * B / m.step_s,
                                  "time_to_target_s": t_hit, "steps_per_replica_to_target": hit_step,
                                  "final_loss": res.history[-1]["loss"]},
                     "model_this_machine": _data_row(pred),
                     "model_one_machine_each": _data_row(virt),
                     "model_time_to_target_s": (None if hit_step is None else hit_step * pred.step_s),
                     "error": (pred.step_s - m.step_s) / m.step_s})
    virtual = []
    for mode in modes:
        for R in sorted({1, 2, 4, 8, 16, 32, *replicas, 4 * max(replicas)}):
            if R > 4 * max(replicas):
                continue
            virtual.append({"mode": mode, "replicas": R,
                            "model_this_machine": _data_row(model.predict(run(mode, R, cores_=eff))),
                            "model_one_machine_each": _data_row(model.predict(run(mode, R, cores_=None)))})
    held = [abs(r["error"]) for r in rows if r["role"] == "held out"]
    return {"config": cfg.name, "batch": B, "steps": steps, "repeats": repeats, "shards": shards,
            "cores": cores,
            "effective_cores": eff, "load_avg": list(os.getloadavg()), "flops_per_example": F, "param_bytes": N,
            "target": {"loss": target, "what": f"running mean of 5 minibatch losses of a "
                                               f"1-replica async run after {steps // 2} steps"},
            "constants": {k: getattr(model, k) for k in model.__dataclass_fields__},
            "fit_replicas": fit_replicas, "measured": rows, "modelled": virtual,
            "held_out_abs_error": {"mean": float(np.mean(held)) if held else None,
                                   "max": float(np.max(held)) if held else None}}, model


def data_figure(res: dict, out: Path) -> Path:
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    colours = {"async": "tab:blue", "sync": "tab:red", "bounded": "tab:green"}
    cores = res["cores"]
    for mode in dict.fromkeys(r["mode"] for r in res["modelled"]):
        col = colours.get(mode, "black")
        virt = [r for r in res["modelled"] if r["mode"] == mode]
        R = [r["replicas"] for r in virt]
        ax.plot(R, [r["model_this_machine"]["examples_per_s"] for r in virt], "-", color=col,
                label=f"{mode}: model, this machine ({res['effective_cores']:.1f} cores fitted)")
        ax.plot(R, [r["model_one_machine_each"]["examples_per_s"] for r in virt], "--o", mfc="none",
                color=col, label=f"{mode}: model, one machine per replica (virtual time)")
        for role, mk in (("fit", "o"), ("held out", "s")):
            pts = [r for r in res["measured"] if r["mode"] == mode and r["role"] == role
                   and r["fetch_every"] == 1 and r["shards"] == res["shards"]]
            ax.plot([r["replicas"] for r in pts], [r["measured"]["examples_per_s"] for r in pts], mk,
                    color=col, mec="black", ms=8, label=f"{mode}: measured ({role})")
    eff = res["effective_cores"]
    ax.axvline(eff, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo / 4, hi)  # room for the note below the curves
    ax.text(0.98, 0.03, f"dotted: {eff:.1f} of {cores} cores free for this run,\nwhere wall-clock "
            f"throughput saturates;\ndashed: virtual time", transform=ax.transAxes, ha="right",
            va="bottom", fontsize=7, color="dimgrey")
    ax.set_xlabel("replicas")
    ax.set_ylabel("examples / s")
    ax.set_title(f"{res['config']}: Downpour throughput (P = G = 1, {res['shards']} shards)")
    ax.legend(fontsize=6, loc="upper left")
    for mode in dict.fromkeys(r["mode"] for r in res["measured"]):
        col = colours.get(mode, "black")
        pts = [r for r in res["measured"] if r["mode"] == mode and r["fetch_every"] == 1
               and r["shards"] == res["shards"] and r["measured"]["time_to_target_s"] is not None]
        bx.plot([r["replicas"] for r in pts], [r["measured"]["time_to_target_s"] for r in pts], "o",
                color=col, mec="black", ms=8, label=f"{mode}: measured")
        bx.plot([r["replicas"] for r in pts], [r["model_time_to_target_s"] for r in pts], "x--",
                color=col, label=f"{mode}: measured steps x modelled step")
    bx.set_xscale("log", base=2)
    bx.set_xlabel("replicas")
    bx.set_ylabel("seconds to the target loss")
    bx.set_title(f"time to loss {res['target']['loss']:.4g} (1 replica after {res['steps'] // 2} steps)",
                 fontsize=9)
    bx.legend(fontsize=7)
    path = out / "scale_data.png"
    _save(fig, path)
    plt.close(fig)
    return path


def data_report(res: dict) -> None:
    c = res["constants"]
    print(f"config {res['config']}, minibatch {res['batch']}, {res['cores']} cores, load average "
          f"{', '.join(f'{v:.1f}' for v in res['load_avg'])} (a shared machine: wall clocks are noisy)")
    print(f"fitted on replicas {res['fit_replicas']}: {res['effective_cores']:.1f} of "
          f"{res['cores']} cores free for this run, {c['s_per_flop'] and 1 / c['s_per_flop'] / 1e9:.2f} "
          f"Gflop/s per replica, {c['s_per_message'] * 1e6:.0f} us per message, "
          f"{c['s_per_byte'] * 1e9:.3f} ns per byte, sync {c['sync_step_s'] * 1e3:.1f} ms per step + "
          f"{c['sync_per_replica_s'] * 1e3:.2f} ms per replica")
    print(f"{'mode':>7} {'R':>3} {'P=G':>3} {'S':>2} {'role':>9} {'meas ex/s':>9} {'model ex/s':>10} "
          f"{'error':>7} {'to target s':>11}")
    for r in res["measured"]:
        t = r["measured"]["time_to_target_s"]
        print(f"{r['mode']:>7} {r['replicas']:>3} {r['fetch_every']:>3} {r['shards']:>2} {r['role']:>9} "
              f"{r['measured']['examples_per_s']:>9.1f} {r['model_this_machine']['examples_per_s']:>10.1f} "
              f"{r['error']:>+7.1%} {'-' if t is None else f'{t:.2f}':>11}")
    e = res["held_out_abs_error"]
    if e["mean"] is not None:
        print(f"held-out error (seconds per step): mean {e['mean']:.1%}, max {e['max']:.1%}")


def _write_json(res: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=2))
    os.replace(tmp, path)


def run_data(args) -> int:
    from refimpl.config import load_config

    replicas = _ints(args.replicas, "replicas")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("async", "sync", "bounded")]
    if not modes or bad:
        raise ValueError(f"--modes: choose from async, sync, bounded; got {args.modes!r}")
    fit_replicas = _ints(args.fit, "fit") if args.fit else None
    if fit_replicas and set(fit_replicas) - set(replicas):
        raise ValueError(f"--fit: {sorted(set(fit_replicas) - set(replicas))} are not among --replicas")
    if args.steps < 5:
        raise ValueError(f"--steps must be >= 5 (the target is a mean of 5 losses), got {args.steps}")
    if args.shards < 1:
        raise ValueError(f"--shards must be >= 1, got {args.shards}")
    cfg = load_config(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    res, _ = scale_data(cfg, replicas, modes, args.steps, args.shards, fit_replicas, args.seed,
                        progress=not args.no_progress, repeats=args.repeats)
    data_report(res)
    _write_json(res, out / "scale_data.json")
    fig = data_figure(res, out)
    print(f"wrote {out / 'scale_data.json'}, {fig}")
    return 0


def _register_data(ssub) -> None:
    d = ssub.add_parser("data", help="data-parallel throughput vs replicas (measured + model)",
                        description="Measure Downpour SGD's examples/s and time to a target loss vs "
                        "replicas, fit the throughput model, report its error on held-out replica "
                        "counts and extrapolate in virtual time.")
    d.add_argument("--config", default="tiny", help="config name or path (default: tiny)")
    d.add_argument("--replicas", default="1,2,4,8", help="replica counts, comma-separated")
    d.add_argument("--modes", default="sync,async", help="async, sync, bounded (comma-separated)")
    d.add_argument("--fit", default=None, help="replica counts to fit on (default: the first two)")
    d.add_argument("--steps", type=int, default=30, help="steps per replica (default: 30)")
    d.add_argument("--repeats", type=int, default=2,
                   help="runs per configuration, the fastest counts (default: 2)")
    d.add_argument("--shards", type=int, default=2, help="parameter-server shards (default: 2)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", required=True, help="output directory")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=run_data)


# ---------------------------------------------------------------------------------------------
# ``catneuron scale gpu``: the paper-shaped run on a multi-GPU box (issue 10 (c)), no GPU needed
# ---------------------------------------------------------------------------------------------

GPU_DOC = """``catneuron scale gpu``: the paper's run (configs/paper.toml, minibatch 100, 10M images) on
one box of GPUs, estimated with the data-parallel model of :mod:`simcluster.costmodel_data`.

    catneuron scale gpu --out runs/scale                    # flop rate from benchmarks/results/scale.json
    catneuron scale gpu --cpu-flops 3e9 --gpus 8 --out runs/scale

Each GPU holds a whole model replica (0.94e9 float32 weights: weights + gradients + Adagrad
state are 11 GiB) and computes at ``GPU_ASSUMED["gpu_peak_flops"]`` times the fraction of its
peak that our CPU kernel reaches (the fitted flop rate of one process over an assumed core
peak), or at the GPU benchmark's measured GFLOP/s when ``benchmarks/results/gpu.json`` exists.
Two ways to combine the gradients, each a :class:`~simcluster.costmodel_data.DataRun`:

- **parameter server in host memory over PCIe** (Downpour's layout on one box): each GPU fetches
  and pushes all ``N`` bytes over its own PCIe link, every P = G = 1 and every 10 steps;
- **ring all-reduce over NVLink** (synchronous, what a multi-GPU box does today): each GPU
  sends and receives ``2 N (R - 1) / R`` bytes in ``2 (R - 1)`` messages per step.

Every number that is not measured here is in ``GPU_ASSUMED`` and marked assumed in the JSON and
on the figure. Left out: the host's memory bandwidth and CPU time, which all parameter-server
traffic shares (so the PCIe rows are optimistic), activation memory, start-up, data loading.
"""

GPU_ASSUMED = {
    "gpu_peak_flops": 19.5e12,  # float32 peak of one NVIDIA A100 (datasheet, no tensor cores)
    "cpu_core_peak_flops": {"float32": 80e9, "float64": 40e9},  # one AVX2 core: 2 FMA x 8 (4) lanes x 2.5 GHz
    "pcie_bytes_per_s": 25e9,  # PCIe 4.0 x16, one direction, usable
    "nvlink_bytes_per_s": 300e9,  # NVLink 3, per GPU per direction
    "latency_s": 1e-5,  # per message between GPU and host or GPU and GPU
    "gpu_memory_bytes": 80e9,  # one A100 80 GB
    "note": "assumed peak numbers, none measured here (no GPU on this machine); the flop-rate "
            "fraction assumes a GPU kernel as far from its peak as our CPU kernel is from its own",
    "left_out": "the host's memory bandwidth and CPU time shared by all parameter-server traffic, "
                "activations' memory, start-up, data loading",
}


def _measured_gpu_flops(path: Path) -> float | None:
    """The median forward/backward GFLOP/s of the GPU benchmark's sublayers (flop/s), if any."""
    import statistics

    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text())
        rates = [row[k]["gflops"] for row in res["sublayers"].values() if isinstance(row, dict)
                 for k in ("forward", "backward") if k in row]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return statistics.median(rates) * 1e9 if rates else None


def gpu_estimate(cpu_flops: float, cpu_dtype: str = "float32", gpus: int = 8,
                 gpu_json: Path | None = None) -> dict:
    """The paper's run on 1..``gpus`` GPUs of one box (see :data:`GPU_DOC`), as a dict."""
    from refimpl.config import load_config
    from simcluster.costmodel_data import DataCostModel, DataRun, model_sizes

    if not (isinstance(cpu_flops, (int, float)) and 0 < cpu_flops < math.inf):
        raise ValueError(f"cpu_flops must be a finite number > 0 (flop/s), got {cpu_flops!r}")
    if cpu_dtype not in GPU_ASSUMED["cpu_core_peak_flops"]:
        raise ValueError(f"cpu_dtype must be one of {sorted(GPU_ASSUMED['cpu_core_peak_flops'])}, "
                         f"got {cpu_dtype!r}")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ValueError(f"gpus must be an int >= 1, got {gpus!r}")
    a = GPU_ASSUMED
    fraction = cpu_flops / a["cpu_core_peak_flops"][cpu_dtype]
    measured = _measured_gpu_flops(gpu_json) if gpu_json is not None else None
    rate = measured if measured is not None else min(1.0, fraction) * a["gpu_peak_flops"]
    cfg = load_config("paper")
    F, N = model_sizes(cfg)
    B, images = 100, 10_000_000

    def model(bandwidth):
        return DataCostModel(1.0 / rate, a["latency_s"], 1.0 / bandwidth, 0.0, 0.0)

    scenarios = {
        "parameter server on the host, PCIe, P = G = 1":
            lambda R: (model(a["pcie_bytes_per_s"]), DataRun("async", R, 1, 1, 1, B, F, N)),
        "parameter server on the host, PCIe, P = G = 10":
            lambda R: (model(a["pcie_bytes_per_s"]), DataRun("async", R, 1, 10, 10, B, F, N)),
        "ring all-reduce over NVLink, every step":
            lambda R: (model(a["nvlink_bytes_per_s"]),
                       DataRun("sync", R, max(1, R - 1), 1, 1, B, F, N * (R - 1) / R)),
    }
    curves = {}
    for name, make in scenarios.items():
        rows = []
        for R in range(1, gpus + 1):
            m, run = make(R)
            p = m.predict(run)
            rows.append({"gpus": R, "step_s": p.step_s, "compute_s": p.compute_s, "comm_s": p.comm_s,
                         "examples_per_s": p.examples_per_s,
                         "hours_per_pass": images / p.examples_per_s / 3600})
        curves[name] = rows
    return {"config": "paper", "parameters": int(N / 4), "flops_per_example": F, "batch": B,
            "images": images, "gpu_flops": rate,
            "gpu_flops_source": ("measured: benchmarks/results/gpu.json (median sublayer GFLOP/s)"
                                 if measured is not None else
                                 f"ASSUMED: {min(1.0, fraction):.1%} of an assumed "
                                 f"{a['gpu_peak_flops'] / 1e12:g} TFLOP/s peak"),
            "cpu_flops_per_process": cpu_flops, "cpu_dtype": cpu_dtype, "fraction_of_peak": fraction,
            "memory_per_gpu_bytes": 3 * N, "fits": 3 * N < a["gpu_memory_bytes"],
            "assumed": a, "curves": curves}


def gpu_figure(res: dict, out: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (name, rows), mk in zip(res["curves"].items(), ("o", "s", "^")):
        ax.plot([r["gpus"] for r in rows], [r["examples_per_s"] for r in rows], f"--{mk}", mfc="none",
                label=f"{name} (model)")
    ax.set_xlabel("GPUs in one box")
    ax.set_ylabel("examples / s (paper config, minibatch 100 per GPU)")
    a = res["assumed"]
    ax.set_title(f"modelled, ASSUMED: {res['gpu_flops'] / 1e12:.2f} TFLOP/s per GPU "
                 f"({'measured' if res['gpu_flops_source'].startswith('measured') else 'assumed'}), "
                 f"PCIe {a['pcie_bytes_per_s'] / 1e9:g} GB/s, NVLink {a['nvlink_bytes_per_s'] / 1e9:g} GB/s",
                 fontsize=8)
    ax.legend(fontsize=7)
    path = out / "scale_gpu.png"
    _save(fig, path)
    plt.close(fig)
    return path


def run_gpu(args) -> int:
    cpu_flops, dtype = args.cpu_flops, args.cpu_dtype
    if cpu_flops is None:
        path = Path(args.scale_json)
        if not path.is_file():
            raise ValueError(f"--scale-json: {path} does not exist; run `catneuron scale model` "
                             f"first or give --cpu-flops")
        res = json.loads(path.read_text())
        cpu_flops = res["constants"]["flops_per_s"]
        from refimpl.config import load_config

        dtype = load_config(res["config"]).dtype
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = gpu_estimate(cpu_flops, dtype, args.gpus, Path(args.gpu_json))
    print(f"paper config ({res['parameters'] / 1e9:.2f}B parameters, {res['flops_per_example'] / 1e9:.1f} "
          f"GFLOP per example), GPU rate {res['gpu_flops'] / 1e12:.2f} TFLOP/s ({res['gpu_flops_source']})")
    for name, rows in res["curves"].items():
        last = rows[-1]
        print(f"  {name}: {last['gpus']} GPUs {last['examples_per_s']:.0f} examples/s, "
              f"{last['hours_per_pass']:.1f} h per pass over 10M images")
    _write_json(res, out / "scale_gpu.json")
    fig = gpu_figure(res, out)
    print(f"wrote {out / 'scale_gpu.json'}, {fig}")
    return 0


def _register_gpu(ssub) -> None:
    here = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    g = ssub.add_parser("gpu", help="the paper's run on a multi-GPU box (modelled, assumptions stated)",
                        description="Estimate the paper-shaped run on one box of GPUs from the "
                        "GPU benchmark's figures if present, otherwise from assumed peak numbers.")
    g.add_argument("--gpus", type=int, default=8, help="GPUs in the box (default: 8)")
    g.add_argument("--cpu-flops", type=float, default=None,
                   help="our CPU kernel's flop/s per process (default: from --scale-json)")
    g.add_argument("--cpu-dtype", default="float32", help="dtype of --cpu-flops (float32|float64)")
    g.add_argument("--scale-json", default=str(here / "scale.json"),
                   help="a `catneuron scale model` result to take the flop rate from")
    g.add_argument("--gpu-json", default=str(here / "gpu.json"),
                   help="GPU benchmark results, used when the file exists")
    g.add_argument("--out", required=True, help="output directory")
    g.set_defaults(func=run_gpu)
