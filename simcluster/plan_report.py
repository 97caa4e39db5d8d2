"""What a partition plan costs: exchanges, bytes, parameters, flops, and a picture of the tiling.

Built on :mod:`simcluster.plan`. Per stage, a partition takes part in these exchanges (cells are
counted once per direction; "forward" means owner -> reader, "scatter" reader -> owner):

====================  ==========  =============================  ==========
exchange              cells       what travels                   channels
====================  ==========  =============================  ==========
filter input          fwd halo    stage input x                  C
decoder partials      fwd halo    partial sums of W2 f (eq. 1)   C
residual              fwd halo    x_hat - x back to the readers  C
pool input            pool halo   filter responses f             K
LCN input             LCN halo    pooled values p                K
LCN grad (backward)   LCN halo    partial dL/dp, scatter-add     K
pool grad (backward)  pool halo   partial dL/df, scatter-add     K
filter grad (bwd)     fwd halo    partial dL/dx, scatter-add     C
====================  ==========  =============================  ==========

Backward exchanges follow the joint gradient (``gradient = "joint"``): "filter grad" is skipped
in stage 1 (nobody needs the gradient of the image) and "LCN grad" in the last stage (no
objective reads its LCN output). With per-stage gradients (``"local"``) neither would be needed.

Flops count multiply-adds as 2: encoder and decoder ``2 K C R^2`` each per filter unit forward,
twice that backward (weights and inputs); pooling ``2 P^2`` and LCN ``~6 L^2`` per unit and map.
"""

from __future__ import annotations

from dataclasses import dataclass

from .plan import PartitionPlan, Rect, StageTile

EXCHANGES = (  # (name, which read region, "C" = stage-input channels or "K" = maps)
    ("filter input", "filter", "C"),
    ("decoder partials", "filter", "C"),
    ("residual", "filter", "C"),
    ("pool input", "pool", "K"),
    ("LCN input", "lcn", "K"),
    ("LCN grad", "lcn", "K"),
    ("pool grad", "pool", "K"),
    ("filter grad", "filter", "C"),
)


@dataclass(frozen=True)
class Halo:
    """One tile's halo for one read region: cells read but not owned, and from whom."""

    cells: int  # per channel
    sources: dict  # partition -> cells it supplies (per channel)


def _owned_and_reads(tile: StageTile, which: str) -> tuple[Rect, Rect]:
    if which == "filter":
        return tile.input, tile.filter_reads
    if which == "pool":
        return tile.filter, tile.pool_reads
    return tile.pool, tile.lcn_reads


def halo(plan: PartitionPlan, t: int, s: int, which: str) -> Halo:
    """The halo of partition ``t`` in stage ``s`` for ``which`` in {"filter", "pool", "lcn"}."""
    own, reads = _owned_and_reads(plan.tiles[t][s], which)
    sources = {}
    for u in range(plan.n_partitions):
        if u != t:
            n = reads.meet(_owned_and_reads(plan.tiles[u][s], which)[0]).area
            if n:
                sources[u] = n
    return Halo(reads.area - reads.meet(own).area, sources)


def partition_flops(plan: PartitionPlan, t: int) -> int:
    """Multiply-add flops per example of partition ``t``'s forward and backward (its owned units)."""
    flops = 0
    for s, (st, pl) in enumerate(zip(plan.stages, plan.planes)):
        tile = plan.tiles[t][s]
        C, K, R = pl.input.channels, st.maps, st.field
        flops += 3 * (2 * tile.filter.area * K * C * R * R) * 2  # encoder + decoder, forward + 2x backward
        flops += 3 * tile.pool.area * K * (2 * st.pool**2 + 6 * st.lcn**2)
    return flops


def partition_stats(plan: PartitionPlan, t: int, dtype_bytes: int = 8) -> dict:
    """Parameters, halo cells, bytes received per example and flops of partition ``t``."""
    params = bytes_in = 0
    flops = partition_flops(plan, t)
    halos, neighbours = {}, set()
    for s, (st, pl) in enumerate(zip(plan.stages, plan.planes)):
        tile = plan.tiles[t][s]
        C, K, R = pl.input.channels, st.maps, st.field
        params += 2 * tile.filter.area * K * C * R * R  # W1 and W2
        found = {w: halo(plan, t, s, w) for w in ("filter", "pool", "lcn")}
        for w, h in found.items():
            halos[f"stage{s + 1}.{w}"] = h.cells
            neighbours.update(h.sources)
        last = s == len(plan.stages) - 1
        for name, which, ch in EXCHANGES:
            if (name == "filter grad" and s == 0) or (name == "LCN grad" and last):
                continue  # nobody needs dJ/d(image), and no objective reads the last LCN output
            bytes_in += found[which].cells * (C if ch == "C" else K) * dtype_bytes
    return {"partition": t, "params": params, "halo_cells": halos, "bytes_per_example": bytes_in,
            "flops_per_example": flops, "neighbours": len(neighbours)}


def summary(plan: PartitionPlan, dtype_bytes: int = 8) -> dict:
    """Plan-wide totals and per-partition rows (each exchanged byte is counted once, at its
    receiver). ``comm_comp_ratio`` is bytes exchanged per flop."""
    rows = [partition_stats(plan, t, dtype_bytes) for t in range(plan.n_partitions)]
    total_bytes = sum(r["bytes_per_example"] for r in rows)
    total_flops = sum(r["flops_per_example"] for r in rows)
    return {
        "grid": list(plan.grid),
        "partitions": plan.n_partitions,
        "params_total": sum(r["params"] for r in rows),
        "params_max": max(r["params"] for r in rows),
        "params_min": min(r["params"] for r in rows),
        "empty_partitions_per_stage": [sum(plan.tiles[t][s].filter.empty for t in range(plan.n_partitions))
                                       for s in range(len(plan.stages))],
        "bytes_per_example": total_bytes,
        "flops_per_example": total_flops,
        "comm_comp_ratio": total_bytes / total_flops if total_flops else float("inf"),
        "max_neighbours": max(r["neighbours"] for r in rows),
        "rows": rows,
    }


def format_table(plan: PartitionPlan, dtype_bytes: int = 8) -> str:
    """The per-partition table and totals, as text (what ``catneuron plan`` will print)."""
    summ = summary(plan, dtype_bytes)
    keys = [f"stage{s + 1}.{w}" for s in range(len(plan.stages)) for w in ("filter", "pool", "lcn")]
    head = f"{'part':>5} {'row':>3} {'col':>3} {'params':>12} {'bytes/ex':>11} {'nbrs':>4} " + \
        " ".join(f"{k:>13}" for k in keys)
    lines = [head]
    C = plan.grid[1]
    for r in summ["rows"]:
        t = r["partition"]
        lines.append(f"{t:>5} {t // C:>3} {t % C:>3} {r['params']:>12,} {r['bytes_per_example']:>11,} "
                     f"{r['neighbours']:>4} " + " ".join(f"{r['halo_cells'][k]:>13,}" for k in keys))
    lines.append(f"total: {summ['params_total']:,} parameters, {summ['bytes_per_example']:,} bytes "
                 f"exchanged and {summ['flops_per_example']:,} flops per example; "
                 f"communication/computation = {summ['comm_comp_ratio']:.3g} bytes/flop")
    return "\n".join(lines)


def draw_tiling(plan: PartitionPlan, path, image=None, tile: int | None = None) -> None:
    """Draw the region grid over ``image`` (H, W[, 3] array; grey if None) as a PNG, and for one
    ``tile`` (default: the middle one) its region and, per stage, the image pixels its filter
    inputs cover (the footprint of its forward halo)."""
    from matplotlib.figure import Figure  # no pyplot: drawing leaves the caller's backend alone
    from matplotlib.patches import Rectangle

    import numpy as np

    H, W = plan.image.height, plan.image.width
    t = plan.n_partitions // 2 if tile is None else tile
    if not (isinstance(t, int) and 0 <= t < plan.n_partitions):
        raise ValueError(f"tile must be a partition number in [0, {plan.n_partitions}), got {tile!r}")
    fig = Figure(figsize=(6, 6))
    ax = fig.subplots()
    ax.imshow(np.full((H, W), 0.85) if image is None else image, cmap="gray", vmin=0, vmax=1,
              extent=(0, W, H, 0))
    for reg in plan.regions:
        ax.add_patch(Rectangle((reg.cols[0], reg.rows[0]), reg.cols[1] - reg.cols[0],
                               reg.rows[1] - reg.rows[0], fill=False, lw=0.5, ec="black"))
    reg = plan.regions[t]
    ax.add_patch(Rectangle((reg.cols[0], reg.rows[0]), reg.cols[1] - reg.cols[0], reg.rows[1] - reg.rows[0],
                           alpha=0.4, color="tab:blue", label=f"region of partition {t}"))
    colours = ("tab:red", "tab:orange", "tab:green", "tab:purple")
    for s in range(len(plan.stages)):
        rows, cols = footprint(plan, s, plan.tiles[t][s].filter_reads)
        if rows[1] > rows[0] and cols[1] > cols[0]:
            ax.add_patch(Rectangle((cols[0], rows[0]), cols[1] - cols[0], rows[1] - rows[0], fill=False,
                                   lw=1.5, ec=colours[s % 4], label=f"stage {s + 1} filter inputs (image px)"))
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_title(f"{plan.grid[0]}x{plan.grid[1]} partitions over {H}x{W} pixels")
    ax.legend(loc="lower right", fontsize=7)
    fig.savefig(path, dpi=100)


def footprint(plan: PartitionPlan, s: int, cells: Rect) -> tuple:
    """The image pixels (rows, cols intervals) that stage-``s`` input ``cells`` depend on."""
    from .plan import reads_filter, reads_lcn, reads_pool

    rows, cols = cells.rows, cells.cols
    for k in range(s - 1, -1, -1):  # stage k's output (LCN) -> its pooled -> filter -> input
        st, n = plan.stages[k], plan.planes[k].pool.size
        rows, cols = reads_lcn(rows, st, n[0]), reads_lcn(cols, st, n[1])
        rows, cols = reads_pool(rows, st), reads_pool(cols, st)
        rows, cols = reads_filter(rows, st), reads_filter(cols, st)
    return rows, cols
