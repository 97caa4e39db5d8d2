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
    (per piece, byte, exchange, step, partition): compute and the network only, a lower bound."""
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
          f"process, {c['s_per_message'] * 1e6:.0f} us per piece, {c['s_per_byte'] * 1e9:.3f} ns "
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
