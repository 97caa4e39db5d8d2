"""Model-parallel scaling, measured and modelled (issue 10): what ``catneuron scale model`` does,
with the machine's load saved next to the figures.

    .venv/bin/python benchmarks/scale.py                          # mini, 1x1 .. 4x4, ~1 min
    .venv/bin/python benchmarks/scale.py --grids 1x1,2x1,2x2 --steps 2   # a quick look
    .venv/bin/python benchmarks/scale.py --parts data,gpu       # data parallelism only, ~1 min

Writes ``benchmarks/results/scale.json`` and ``benchmarks/results/scale_*.png``: per measured
grid the step time and its split (compute, halo wait, coordination) against the cost model's
(:mod:`simcluster.costmodel`, fitted on the first grids and checked on the last two), the
model's step on bigger grids in virtual time, and the DistBelief-scale estimates under the
assumptions in :data:`catneuron.commands.scale.ASSUMED`. The machine has 2 cores that other
jobs share: the load average before and after is saved, and wall clocks under load are noisy.

``--parts data`` adds ``scale_data.json`` and ``scale_data.png``: Downpour examples/s and time to
a target loss vs replicas, sync and async, against the throughput model of
:mod:`simcluster.costmodel_data` (fitted on 1 and 2 replicas, checked on 4 and 8), as
``catneuron scale data``. ``--parts gpu`` adds ``scale_gpu.json`` and ``scale_gpu.png``: the
paper's run on a box of 8 GPUs from assumed peak numbers (``catneuron scale gpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from catneuron.commands.scale import (data_figure, data_report, figures, gpu_estimate,  # noqa: E402
                                      gpu_figure, report, scale_data, scale_model)
from refimpl.config import load_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="mini")
    ap.add_argument("--grids", default="1x1,2x1,2x2,3x3,4x4")
    ap.add_argument("--predict", default="9x9,13x13")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--parts", default="model,data,gpu", help="any of model, data, gpu")
    ap.add_argument("--data-config", default="tiny")
    ap.add_argument("--replicas", default="1,2,4,8")
    ap.add_argument("--data-steps", type=int, default=30)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if parts - {"model", "data", "gpu"}:
        raise SystemExit(f"--parts: unknown {sorted(parts - {'model', 'data', 'gpu'})}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "model" in parts:
        run_model_part(args, out)
    if "data" in parts:
        load_before = os.getloadavg()
        res, _ = scale_data(load_config(args.data_config), [int(r) for r in args.replicas.split(",")],
                            ["sync", "async"], args.data_steps, repeats=3)
        res["machine"] = {"cpus": os.cpu_count(), "load_before": load_before,
                          "load_after": os.getloadavg()}
        data_report(res)
        _write(res, out / "scale_data.json")
        data_figure(res, out)
    if "gpu" in parts:
        scale = json.loads((out / "scale.json").read_text())
        res = gpu_estimate(scale["constants"]["flops_per_s"], load_config(scale["config"]).dtype,
                           8, out / "gpu.json")
        _write(res, out / "scale_gpu.json")
        gpu_figure(res, out)
        for name, rows in res["curves"].items():
            print(f"{name}: 8 GPUs {rows[-1]['examples_per_s']:.0f} examples/s, "
                  f"{rows[-1]['hours_per_pass']:.1f} h per pass ({res['gpu_flops_source']})")


def _write(res: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=2))
    os.replace(tmp, path)


def run_model_part(args, out: Path) -> None:
    grids = args.grids.split(",")
    cfg = load_config(args.config)
    load_before = os.getloadavg()
    res, _ = scale_model(cfg, grids, [g for g in args.predict.split(",") if g], grids[:-2] or grids,
                         args.steps, cfg.train.batch_size)
    res["machine"] = {"cpus": os.cpu_count(), "load_before": load_before,
                      "load_after": os.getloadavg()}
    report(res)
    tmp = out / "scale.json.tmp"
    tmp.write_text(json.dumps(res, indent=2))
    os.replace(tmp, out / "scale.json")
    figures(res, out)
    print(f"load average {load_before} -> {res['machine']['load_after']}; wrote {out / 'scale.json'}")


if __name__ == "__main__":
    main()
