"""``catneuron cluster train``: Downpour SGD on the simulated cluster (simcluster.downpour).

    catneuron cluster train --config tiny --replicas 5 --shards 16 --steps 40
    catneuron cluster train --config tiny --replicas 3 --steps 20 --deterministic --faults plan.toml
    catneuron cluster train --config tiny --mode sync --drop 0.05 --duplicate 0.05
    catneuron cluster train --config tiny --kill 'shard 1@30' --kill 'replica 2@10' --restarts 1
    catneuron cluster train --config tiny --replicas 4 --device cuda --gpus 0,1   # 2 replicas/GPU

N replica processes, each on its own 1/N of the training frames, fetch parameters from S
parameter-server shard processes every P steps and push gradients every G steps. Shows a live
progress bar (per replica: step, loss, staleness; per shard: version); writes to --out
metrics.jsonl (one line per replica step), trace.json (Chrome trace: open in ui.perfetto.dev),
checkpoint.npz (the final parameters, a refimpl checkpoint) and summary.txt, whose last line,
also printed last, is ``params sha256: <hex>`` so two runs can be compared. ``--device cuda``
computes each replica's gradients on a GPU (round robin over ``--gpus``, default every visible
one; the shards stay on the host); without one it stops with a one-line error before starting
any process.

This module exposes :func:`register_cluster`, which adds ``train`` to the subparsers of the
``cluster`` command (catneuron/commands/cluster.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def register_cluster(csub) -> None:
    """Add the ``train`` parser to the ``cluster`` command's subparsers ``csub``."""
    p = csub.add_parser(
        "train",
        help="Downpour SGD: N replicas, S parameter-server shards, faults and recovery",
        description="Train a config with Downpour SGD on simulated processes (one per replica "
        "and per shard). --mode async is the paper's Downpour, sync applies all replicas' "
        "gradients per step, bounded rejects pushes more than --max-staleness versions old. "
        "--deterministic replays an async run bit for bit from --seed.",
    )
    p.add_argument("--config", default="tiny", help="config name or path (default: tiny)")
    p.add_argument("--replicas", type=int, default=5, help="model replicas (default: 5)")
    p.add_argument("--shards", type=int, default=16, help="parameter-server shards (default: 16)")
    p.add_argument("--grid", default=None, metavar="RxC",
                   help="model-parallel partitions per replica (not yet: replicas are single processes)")
    p.add_argument("--fetch-every", type=int, default=1, metavar="P", help="fetch every P steps")
    p.add_argument("--push-every", type=int, default=1, metavar="G", help="push every G steps")
    p.add_argument("--steps", type=int, default=None, help="steps per replica (default: train.steps)")
    p.add_argument("--seed", type=int, default=0, help="scheduler seed (weights/data: the config's)")
    p.add_argument("--mode", choices=["async", "sync", "bounded"], default="async")
    p.add_argument("--max-staleness", type=int, default=4, help="bounded mode's limit (default: 4)")
    p.add_argument("--deterministic", action="store_true",
                   help="a seeded scheduler orders every action: the run replays exactly")
    p.add_argument("--faults", default=None, metavar="PLAN.toml",
                   help="fault plan (see simcluster.downpour_faults)")
    p.add_argument("--drop", type=float, default=None, help="drop rate of every link")
    p.add_argument("--duplicate", type=float, default=None, help="duplicate rate of every link")
    p.add_argument("--kill", action="append", default=[], metavar="'replica R@K'",
                   help="kill a process at its step K (repeatable)")
    p.add_argument("--restarts", type=int, default=0, metavar="N",
                   help="restart a dead process up to N times (default: 0, go on without it)")
    p.add_argument("--restart-delay", type=float, default=0.0, metavar="T",
                   help="seconds between a death and its restart")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="K",
                   help="shards log every push and checkpoint every K (default with --restarts: 20)")
    from .cluster import add_backend_flags, add_device_flags

    add_device_flags(p, "replicas", "; shards stay on the host")
    add_backend_flags(p, "replicas and shards")
    p.add_argument("--out", default=None, help="output directory (default: runs/cluster-<config>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def fault_plan(args):
    """The run's FaultPlan from --faults, --drop, --duplicate and --kill (None: no faults)."""
    import dataclasses

    from simcluster.downpour_faults import load_fault_plan, node_name
    from simcluster.faults import Crash, FaultPlan

    plan = load_fault_plan(args.faults) if args.faults else None
    if args.drop is None and args.duplicate is None and not args.kill:
        return plan
    plan = plan or FaultPlan(seed=args.seed)
    link = {}
    if args.drop is not None:
        link["drop"] = args.drop
    if args.duplicate is not None:
        link["duplicate"] = args.duplicate
    crashes = list(plan.crashes)
    for spec in args.kill:
        node, sep, step = spec.rpartition("@")
        if not sep or not step.isdigit():
            raise ValueError(f"--kill must look like 'replica 1@3' (node@step), got {spec!r}")
        crashes.append(Crash(node_name(node.strip()), at_step=int(step)))
    return dataclasses.replace(plan, default=dataclasses.replace(plan.default, **link),
                               crashes=tuple(crashes))


class _Display:
    """A tqdm bar over all replica steps; postfix: per replica step/loss/staleness, shard versions."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, disable=not enabled, desc="cluster train", unit="step",
                        dynamic_ncols=True)
        self.replicas: dict[int, str] = {}
        self.versions: list[int] = []

    def __call__(self, p, t: float) -> None:
        self.bar.update(1)
        self.replicas[p.replica] = f"r{p.replica}:{p.step} L={p.loss:.4g} s={p.staleness}"
        self.versions = [max(a, b) for a, b in zip(self.versions, p.versions)] or list(p.versions)
        v = self.versions
        shards = f"v={v}" if len(v) <= 8 else f"v={min(v)}..{max(v)}"
        self.bar.set_postfix_str(" ".join(self.replicas[r] for r in sorted(self.replicas))
                                 + f" | shards {shards}")

    def close(self) -> None:
        self.bar.close()


def run(args) -> int:
    from gpu.device import resolve_device
    from refimpl.checkpoint import save_checkpoint
    from refimpl.config import load_config
    from refimpl.data import natural_frames
    from simcluster.downpour import DownpourConfig, DownpourError, run_downpour

    if args.grid is not None:
        raise ValueError("--grid: model-parallel replicas: not yet (replicas are single processes "
                         "until the simcluster I coordinator can stand in for one)")
    cfg = load_config(args.config)
    steps = cfg.train.steps if args.steps is None else args.steps
    dcfg = DownpourConfig(replicas=args.replicas, shards=args.shards, fetch_every=args.fetch_every,
                          push_every=args.push_every, steps=steps, mode=args.mode,
                          deterministic=args.deterministic, max_staleness=args.max_staleness,
                          seed=args.seed, max_restarts=args.restarts,
                          restart_delay=args.restart_delay,
                          shard_checkpoints=bool(args.restarts) or args.checkpoint_every is not None,
                          checkpoint_every=args.checkpoint_every or 20,
                          device=resolve_device(args.device), gpus=args.gpus)
    dcfg.pins()  # a missing GPU is a one-line error here, before anything starts or prints
    plan = fault_plan(args)
    out = Path(args.out or Path("runs") / f"cluster-{cfg.name}")
    frames = natural_frames(cfg.train.frames, cfg.image_size, channels=cfg.channels,
                            rng=np.random.default_rng(cfg.train.data_seed))
    display = _Display(args.replicas * steps, not args.no_progress)
    try:
        result = run_downpour(cfg, frames, dcfg, faults=plan, out_dir=out, on_progress=display,
                              eval_frames=min(64, frames.shape[0]), trace=True,
                              backend=args.backend, address=args.address)
    except DownpourError as err:
        display.close()
        print(f"catneuron cluster train: the run stopped: {err}", file=sys.stderr)
        return 1
    finally:
        display.close()
    save_checkpoint(out / "checkpoint.npz", config=cfg, step=steps, params=result.params,
                    opt_state=result.opt_state, rng=np.random.default_rng(cfg.train.seed))
    lines = result.summary()
    tmp = out / ".summary.txt.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out / "summary.txt")  # atomic
    print(f"outputs in {out}/: metrics.jsonl trace.json checkpoint.npz summary.txt")
    for line in lines:
        print(line)
    return 0
