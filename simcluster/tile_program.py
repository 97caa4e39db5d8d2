"""One partition's share of a training step, as a program that pauses at every halo exchange.

:func:`tile_step` is a generator: it computes forward and backward of its tile for every stage by
calling refimpl's sublayers on crops, and at each exchange it *yields* an :class:`Exchange`
(what it sends to whom, and from whom it expects a piece) and is resumed with what arrived
(``{partition: array}``). Whoever drives it decides how messages travel:

- :func:`simcluster.tiled.tiled_step` drives every partition's program in one process, in
  lockstep, handing the pieces over directly (the oracle);
- :func:`simcluster.partition.partition_main` drives one program in its own process and moves
  the pieces through the :class:`~simcluster.transport.Transport`.

The exchanges of one stage, in order (``G`` gather, ``S`` scatter, see :mod:`simcluster.tiles`)::

    forward   x      G filter   stage input x on the filter's read region
              xhat   S filter   decoder partial sums W2 f onto the pixel owners (eq. 1)
              resid  G filter   residuals xhat - x back to the units that read them
              f      G pool     filter responses on the pooling's read region
              p      G lcn      pooled values on LCN's read region           (lcn = true)
    backward  dp     S lcn      partial dL/dp from LCN             (joint, not the last stage)
              df     S pool     partial dL/df from pooling
              dx     S filter   partial dL/dx from the encoder     (joint, not the first stage)

Every partition yields every exchange of this list, even with nothing to send or receive, so
all programs stay in step.

LCN runs on the crop as if the crop were the whole plane (refimpl's ``lcn_forward`` unchanged).
That is exact on the owned cells: where the crop's edge is the plane's edge it is the same
computation, and the wrong values and window masses near an inner edge reach at most
``2 (L // 2)`` cells in (one radius for the mean, one more for sigma), which is the LCN halo. Owned outputs are exact: a crop's cells that are not owned may be
wrong for lack of data, so they are never used forward and get zero upstream gradient backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator

from refimpl.backend import get_xp
from refimpl.config import ModelConfig
from refimpl.l2pool import l2pool_backward, l2pool_forward
from refimpl.lcn import lcn_backward, lcn_forward
from refimpl.local_decoder import local_decoder_backward, local_decoder_forward
from refimpl.local_filter import local_filter_backward, local_filter_forward

from .plan import PartitionPlan
from .tiles import (REGIONS, gather_assemble, gather_sends, routes, scatter_sends, scatter_sum,
                    shape, stage_routes, view, zeros_on)


@dataclass(frozen=True)
class Exchange:
    """What a tile program yields: send ``sends[v]`` to partition v, then resume me with one
    array from each partition in ``expect``. ``stage`` and ``name`` label the exchange."""

    stage: int
    name: str
    sends: dict  # partition -> array
    expect: tuple  # partitions I receive a piece from


@dataclass(frozen=True)
class TileResult:
    """What a tile program returns: its share of every stage's eq. 1 terms (summed over the
    batch and its owned cells) and the gradients of its weight slices."""

    reconstruction: tuple  # per stage: sum of (xhat - x)^2 over owned stage-input cells
    sparsity: tuple  # per stage: sum of p over owned pooling units (before lambda)
    grads: dict  # "stage{s}.W1"/"W2" -> (fh, fw, K, C, R, R), the owned filter units' slice


def _gather(s, name, owned, r):
    got = yield Exchange(s, name, gather_sends(owned, r), tuple(r.take))
    return gather_assemble(owned, got, r)


def _scatter(s, name, partial, r):
    got = yield Exchange(s, name, scatter_sends(partial, r), tuple(r.give))
    return scatter_sum(partial, got, r)


def plan_routes(plan: PartitionPlan) -> list[list[dict]]:
    """Every partition's :class:`~simcluster.tiles.Routes`: ``[t][s][region]``."""
    table = [{reg: stage_routes(plan, s, reg) for reg in REGIONS} for s in range(len(plan.stages))]
    return [[{reg: table[s][reg][t] for reg in REGIONS} for s in range(len(plan.stages))]
            for t in range(plan.n_partitions)]


def tile_routes(plan: PartitionPlan, t: int) -> list[dict]:
    """Partition ``t``'s :class:`~simcluster.tiles.Routes`, per stage and read region."""
    return [{reg: routes(plan, t, s, reg) for reg in REGIONS} for s in range(len(plan.stages))]


def tile_step(plan: PartitionPlan, t: int, cfg: ModelConfig, weights: dict, x,
              partners: list | None = None) -> Generator:
    """Partition ``t``'s forward and backward of the whole model (see the module docstring).

    weights: ``stage{s}.W1`` (and ``.W2`` unless tied), each the slice ``[rows, cols]`` of the
    owned filter units, (fh, fw, K, C, R, R). x: (B, C, h, w), the owned pixels of the image.
    partners: :func:`tile_routes` of ``t`` if already computed (a worker keeps them between steps).
    Yields :class:`Exchange`, returns a :class:`TileResult`.
    """
    n = len(cfg.stages)
    joint = cfg.gradient == "joint"
    partners = tile_routes(plan, t) if partners is None else partners
    h, saved, rec, spa = x, [], [], []
    for s, st in enumerate(cfg.stages):  # ---------------------------------------- forward
        tile, r = plan.tiles[t][s], partners[s]
        W1 = weights[f"stage{s}.W1"]
        W2 = W1 if cfg.tied else weights[f"stage{s}.W2"]
        K = st.maps
        x_crop = yield from _gather(s, "x", h, r["filter"])  # (B, C, reads)
        if not tile.filter.empty:
            f, enc = local_filter_forward(x_crop, {"W1": W1}, stride=st.stride)  # (B, K, fh, fw)
            xhat_part, dec = local_decoder_forward(f, {"W2": W2}, stride=st.stride,
                                                   out_size=shape(tile.filter_reads))
        else:
            f, enc, dec = zeros_on(h, K, tile.filter), None, None
            xhat_part = zeros_on(h, h.shape[1], tile.filter_reads)
        xhat = yield from _scatter(s, "xhat", xhat_part, r["filter"])  # (B, C, owned)
        resid = xhat - h
        rec.append(float((resid * resid).sum()))
        resid_crop = yield from _gather(s, "resid", resid, r["filter"])
        f_crop = yield from _gather(s, "f", f, r["pool"])  # (B, K, pool reads)
        if not tile.pool.empty:
            p, pool = l2pool_forward(f_crop, window=st.pool_window, stride=st.pool_stride, eps=cfg.eps)
        else:
            p, pool = zeros_on(h, K, tile.pool), None
        spa.append(float(p.sum()))
        y, lcn = p, None
        if cfg.lcn:
            p_crop = yield from _gather(s, "p", p, r["lcn"])  # (B, K, lcn reads)
            if not tile.pool.empty:
                y_crop, lcn = lcn_forward(p_crop, window=st.lcn_window, width=st.lcn_width, c=cfg.c,
                                          border=st.lcn_border)
                y = view(y_crop, tile.lcn_reads, tile.pool)  # the owned outputs are exact
        saved.append((enc, dec, pool, lcn, p, resid, resid_crop))
        h = y  # owned next-stage input: the same cells as this stage's owned pooling units
    grads, dy = {}, None
    for s in reversed(range(n)):  # ----------------------------------------------- backward
        st, tile, r = cfg.stages[s], plan.tiles[t][s], partners[s]
        enc, dec, pool, lcn, p, resid, resid_crop = saved[s]
        xp = get_xp(p)
        dp = xp.full_like(p, cfg.lam)  # d(lambda * sum p) / dp
        if dy is not None and cfg.lcn:
            dy_crop = zeros_on(p, st.maps, tile.lcn_reads)
            if lcn is not None:  # zero upstream gradient on the cells that are not owned
                view(dy_crop, tile.lcn_reads, tile.pool)[...] = dy
                dy_crop, _ = lcn_backward(dy_crop, lcn)  # partial dL/dp on the lcn reads
            dp = dp + (yield from _scatter(s, "dp", dy_crop, r["lcn"]))
        elif dy is not None:
            dp = dp + dy  # no LCN: the stage's output is p itself
        if pool is not None:
            df_part, _ = l2pool_backward(dp, pool)  # (B, K, pool reads)
        else:
            df_part = zeros_on(p, st.maps, tile.pool_reads)
        df = yield from _scatter(s, "df", df_part, r["pool"])  # (B, K, owned filter units)
        need_dx = joint and s > 0  # the input gradient goes on down, or is not made at all
        if enc is not None:
            df_dec, g2 = local_decoder_backward(2.0 * resid_crop, dec)
            dx_part, g1 = local_filter_backward(df + df_dec, enc,
                                                input_grad=need_dx)  # dx: (B, C, filter reads)
            g1, g2 = g1["W1"], g2["W2"]
        else:
            dx_part = zeros_on(resid, resid.shape[1], tile.filter_reads) if need_dx else None
            W1 = weights[f"stage{s}.W1"]
            g1 = g2 = xp.zeros_like(W1)
        if cfg.tied:
            grads[f"stage{s}.W1"] = g1 + g2  # one array in both roles
        else:
            grads[f"stage{s}.W1"], grads[f"stage{s}.W2"] = g1, g2
        dy = None
        if need_dx:
            dx = yield from _scatter(s, "dx", dx_part, r["filter"])
            dy = dx - 2.0 * resid  # x is also the reconstruction's target
    ordered = {k: grads[k] for k in weights}
    return TileResult(tuple(rec), tuple(spa), ordered)
