"""``catneuron plan --config paper --grid 13x13 [--png out.png]``: the model-parallel partition plan.

Per partition: parameters (W1 and W2 of the filter units it owns), halo cells per stage and read
region, bytes received per example and grid neighbours; then totals, including the
communication/computation ratio (bytes exchanged per flop). Numbers come from the geometry alone
(:mod:`simcluster.plan_report`): nothing is allocated, so the paper config is planned at once.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="print the partition plan of a config over a grid: parameters, halos, bytes, ratio",
        description="Split the image plane into an RxC grid of regions; in every stage a "
        "partition owns the units whose receptive fields are centred in its region (DistBelief's "
        "model parallelism). Prints per-partition parameter counts, halo sizes and bytes "
        "exchanged per example, the communication/computation ratio, and optionally draws the "
        "tiling as a PNG.",
    )
    p.add_argument("--config", default="paper", help="config name or path (default: paper)")
    p.add_argument("--grid", default="13x13", metavar="RxC", help="partition grid (default: 13x13)")
    p.add_argument("--png", default=None, metavar="PATH", help="draw the tiling to this PNG")
    p.add_argument("--tile", type=int, default=None,
                   help="partition whose halos the PNG outlines (default: the middle one)")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from refimpl.config import load_config
    from simcluster.plan_report import draw_tiling, format_table, summary
    from simcluster.tiled import plan_for

    cfg = load_config(args.config)
    plan = plan_for(cfg, args.grid)
    nbytes = np.dtype(cfg.dtype).itemsize
    print(f"config {cfg.name}: {cfg.image_size}x{cfg.image_size}x{cfg.channels} input, "
          f"{len(cfg.stages)} stages; grid {plan.grid[0]}x{plan.grid[1]} = {plan.n_partitions} "
          f"partitions; {cfg.dtype} ({nbytes} bytes per value)")
    print(format_table(plan, nbytes))
    summ = summary(plan, nbytes)
    print(f"parameters per partition: {summ['params_min']:,} .. {summ['params_max']:,}; "
          f"partitions owning no filter unit, per stage: {summ['empty_partitions_per_stage']}; "
          f"at most {summ['max_neighbours']} partitions to talk to")
    if args.png:
        draw_tiling(plan, args.png, tile=args.tile)
        print(f"wrote {args.png}")
    return 0
