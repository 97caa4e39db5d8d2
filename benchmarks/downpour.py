"""Downpour SGD on the simulated cluster, measured: throughput, convergence, staleness, faults.

    .venv/bin/python benchmarks/downpour.py                 # everything, tiny config (~2 min)
    .venv/bin/python benchmarks/downpour.py --steps 10      # a quick look

Writes ``benchmarks/results/downpour.json`` and ``downpour.png`` (figures for the book, issue 7):

- **throughput**: examples/s of free-running async training vs the number of replicas (each
  replica is one process; the machine has 2 cores, which caps the speed-up);
- **convergence**: minibatch loss per example vs wall time, for sync, async and bounded
  staleness (5 replicas), and the final objective on the training frames;
- **staleness**: histogram of the staleness of applied updates in the async and bounded runs;
- **faults**: for each fault (replica killed, replica killed and restarted, shard killed and
  restored from its checkpoint, 5% drops and duplicates), the run's wall time against the
  fault-free run's, the time from the dead process's last report to its detection, the restart
  time and the updates lost.
- **toy**: the toy parameter-server problem (simcluster.ps_toy): final objective of async SGD
  vs replicas at step size 0.5, and with bounded staleness or Adagrad.

The load average is saved with the figures: other jobs may share the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np


def _frames(cfg, n=100, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, cfg.channels, cfg.image_size, cfg.image_size)).cumsum(axis=3)


def _curve(history, every=5):
    """(t, loss) pairs, one per ``every`` Progress records, in arrival order."""
    return [[h["t"], h["loss"]] for h in history[::every]]


def plot(res: dict, path: Path) -> None:
    """downpour.png: examples/s vs replicas, loss vs wall time per mode, staleness histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    tp = res["throughput"]
    ax[0].plot([r["replicas"] for r in tp], [r["examples_per_s"] for r in tp], "o-")
    ax[0].set(xlabel="replicas", ylabel="examples / s", title="throughput (async, 2 cores)")
    for mode, c in res["convergence"].items():
        t, loss = zip(*c["loss_vs_time"])
        ax[1].plot(t, loss, ".", ms=3, label=f"{mode} (final {c['objective']:.0f})")
    ax[1].set(xlabel="wall time (s)", ylabel="minibatch loss / example", yscale="log",
              title="convergence, 5 replicas")
    ax[1].legend()
    for mode, hist in res["staleness"].items():
        if mode != "sync":
            ks = sorted(int(k) for k in hist)
            ax[2].bar([k + (0.2 if mode == "bounded" else -0.2) for k in ks],
                      [hist[k] if k in hist else hist[str(k)] for k in ks], width=0.4, label=mode)
    ax[2].set(xlabel="staleness (versions)", ylabel="applied updates", title="staleness")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    from refimpl.config import load_config
    from simcluster.downpour import DownpourConfig, run_downpour
    from simcluster.faults import Crash, FaultPlan, LinkModel
    from simcluster.ps_toy import toy_async

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--steps", type=int, default=30, help="steps per replica")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "downpour.json"))
    args = ap.parse_args()

    cfg = load_config(args.config)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=4))
    x = _frames(cfg)
    B, S = cfg.train.batch_size, args.shards
    res = {"config": cfg.name, "batch_size": B, "shards": S, "steps_per_replica": args.steps,
           "load_average_before": os.getloadavg()}

    def go(**kw):
        faults = kw.pop("faults", None)
        d = DownpourConfig(**{"shards": S, "steps": args.steps, "retry_timeout": 0.1, **kw})
        t0 = time.perf_counter()
        r = run_downpour(cfg, x, d, faults=faults, eval_frames=len(x))
        r.wall = time.perf_counter() - t0
        return r

    res["throughput"] = []
    for n in (1, 2, 3, 5):
        r = go(replicas=n)
        res["throughput"].append({"replicas": n, "seconds": round(r.seconds, 3),
                                  "examples_per_s": round(n * args.steps * B / r.seconds, 1)})
        print("throughput", res["throughput"][-1], flush=True)

    res["convergence"], res["staleness"] = {}, {}
    for mode in ("sync", "async", "bounded"):
        r = go(replicas=5, mode=mode, max_staleness=2)
        res["convergence"][mode] = {"seconds": round(r.seconds, 3), "objective": r.objective,
                                    "loss_vs_time": _curve(r.history), "versions": r.versions}
        res["staleness"][mode] = r.staleness_histogram()
        counts = {}
        for st in r.shard_stats:
            for k, v in st["counts"].items():
                counts[k] = counts.get(k, 0) + v
        res["convergence"][mode]["pushes"] = counts
        print(mode, "objective", r.objective, "staleness", res["staleness"][mode], flush=True)

    clean = go(replicas=5, deterministic=True)
    steps30 = max(1, args.steps * 3 // 10)
    faults = {
        "replica killed at 30%": dict(faults=FaultPlan(crashes=(Crash(("replica", 1), at_step=steps30),))),
        "replica killed at 30%, restarted": dict(
            faults=FaultPlan(crashes=(Crash(("replica", 1), at_step=steps30),)), max_restarts=1),
        "shard killed, restored": dict(
            faults=FaultPlan(crashes=(Crash(("shard", 1), at_step=5 * steps30),)), max_restarts=1,
            shard_checkpoints=True, checkpoint_every=10),
        "5% drops and duplicates": dict(faults=FaultPlan(seed=1, default=LinkModel(drop=0.05, duplicate=0.05))),
    }
    res["faults"] = {"fault-free": {"seconds": round(clean.seconds, 3), "objective": clean.objective,
                                    "sha256": clean.sha256}}
    for name, kw in faults.items():
        r = go(replicas=5, deterministic=True, **kw)
        row = {"seconds": round(r.seconds, 3), "extra_seconds": round(r.seconds - clean.seconds, 3),
               "objective": r.objective, "same_params_as_fault_free": r.sha256 == clean.sha256,
               "network": {k: r.transport.get(k, 0) for k in ("sent", "dropped", "duplicated")}}
        for e in r.events:
            before = [h["t"] for h in r.history if f"replica {h['replica']}" == e["node"] and h["t"] <= e["t"]]
            row["detect_s_after_last_report"] = round(e["t"] - max(before), 4) if before else None
            for k in ("restart_s", "down_s", "lost", "restored_version", "replayed"):
                if k in e:
                    row[k] = e[k]
        res["faults"][name] = row
        print(name, row, flush=True)

    res["toy"] = {}
    for label, kw in {"async sgd, 6 replicas": dict(n_replicas=6),
                      "async sgd, 28 replicas": dict(n_replicas=28),
                      "bounded (s=3) sgd, 28 replicas": dict(n_replicas=28, mode="bounded", max_staleness=3),
                      "async adagrad, 28 replicas": dict(n_replicas=28, optimizer="adagrad")}.items():
        o = toy_async(lr=0.5, pushes=1500, **kw)
        res["toy"][label] = {"first": o["objective"][0], "final": o["objective"][-1],
                             "mean_staleness": float(np.mean(o["staleness"])), "rejected": o["rejected"]}
    res["load_average_after"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=2))
    tmp.replace(out)  # atomic
    plot(res, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
