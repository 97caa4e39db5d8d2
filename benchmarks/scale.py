"""Model-parallel scaling, measured and modelled (issue 10): what ``catneuron scale model`` does,
with the machine's load saved next to the figures.

    .venv/bin/python benchmarks/scale.py                          # mini, 1x1 .. 4x4, ~1 min
    .venv/bin/python benchmarks/scale.py --grids 1x1,2x1,2x2 --steps 2   # a quick look

Writes ``benchmarks/results/scale.json`` and ``benchmarks/results/scale_*.png``: per measured
grid the step time and its split (compute, halo wait, coordination) against the cost model's
(:mod:`simcluster.costmodel`, fitted on the first grids and checked on the last two), the
model's step on bigger grids in virtual time, and the DistBelief-scale estimates under the
assumptions in :data:`catneuron.commands.scale.ASSUMED`. The machine has 2 cores that other
jobs share: the load average before and after is saved, and wall clocks under load are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from catneuron.commands.scale import figures, report, scale_model  # noqa: E402
from refimpl.config import load_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="mini")
    ap.add_argument("--grids", default="1x1,2x1,2x2,3x3,4x4")
    ap.add_argument("--predict", default="9x9,13x13")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    grids = args.grids.split(",")
    cfg = load_config(args.config)
    load_before = os.getloadavg()
    res, _ = scale_model(cfg, grids, [g for g in args.predict.split(",") if g], grids[:-2] or grids,
                         args.steps, cfg.train.batch_size)
    res["machine"] = {"cpus": os.cpu_count(), "load_before": load_before,
                      "load_after": os.getloadavg()}
    report(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "scale.json.tmp"
    tmp.write_text(json.dumps(res, indent=2))
    os.replace(tmp, out / "scale.json")
    figures(res, out)
    print(f"load average {load_before} -> {res['machine']['load_after']}; wrote {out / 'scale.json'}")


if __name__ == "__main__":
    main()
