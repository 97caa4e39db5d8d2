"""One partition's share of a training step, as a program that pauses at every halo exchange.

:func:`tile_step` is a generator: it computes forward and backward of its tile for every stage by
calling refimpl's sublayers on crops, and at each exchange it *yields* an :class:`Exchange`
(what it sends to whom, and from whom it expects a message) and is resumed with what arrived
(``{partition: {part: array}}``). Whoever drives it decides how messages travel:

- :func:`simcluster.tiled.tiled_step` drives every partition's program in one process, in
  lockstep, handing the pieces over directly (the oracle);
- :func:`simcluster.partition.partition_main` drives one program in its own process and moves
  the pieces through the :class:`~simcluster.transport.Transport`.

An exchange has one or more *parts*, each a gather (``G``) or a scatter (``S``) over one read
region (see :mod:`simcluster.tiles`). Parts that are ready at the same time travel together, one
message per neighbour. The exchanges of one stage, in order::

    forward    x        x      G filter   stage input x on the filter's read region
               xhat+f   xhat   S filter   decoder partial sums W2 f onto the pixel owners (eq. 1)
                        f      G pool     filter responses on the pooling's read region
               resid+p  resid  G filter   residuals xhat - x back to the units that read them
                        p      G lcn      pooled values on LCN's read region       (lcn = true)
                        df     S pool     partial dL/df from pooling          (local gradients)
    backward   dp       dp     S lcn      partial dL/dp from LCN              (not the last stage)
    (joint     df       df     S pool     partial dL/df from pooling
    gradients) dx       dx     S filter   partial dL/dx from the encoder     (not the first stage)

With local gradients (each stage's weights follow its own J_s) a stage's backward needs nothing
from the stages above, so it runs inside the forward: its pooling gradient travels with the
stage's last forward exchange and its weight gradients are computed right after it. Three
stages with LCN take 9 exchanges instead of 18 (``full`` on a 2x1 grid: 18 messages instead of
36, the same bytes). Joint gradients flow down from the top stage, so their backward follows the
whole forward.

Every partition yields every exchange of this list, even with nothing to send or receive, so
all programs stay in step.

LCN runs on the crop as if the crop were the whole plane (refimpl's ``lcn_forward`` unchanged).
That is exact on the owned cells: where the crop's edge is the plane's edge it is the same
computation, and the wrong values and window masses near an inner edge reach at most
``2 (L // 2)`` cells in (one radius for the mean, one more for sigma), which is the LCN halo.
Owned outputs are exact: a crop's cells that are not owned may be wrong for lack of data, so they
are never used forward and get zero upstream gradient backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, NamedTuple

from refimpl.backend import get_xp
from refimpl.config import ModelConfig
from refimpl.l2pool import l2pool_backward, l2pool_forward
from refimpl.lcn import lcn_backward, lcn_forward
from refimpl.local_decoder import local_decoder_backward, local_decoder_forward
from refimpl.local_filter import local_filter_backward, local_filter_forward

from .plan import PartitionPlan
from .tiles import (REGIONS, Routes, gather_assemble, gather_sends, routes, scatter_sends,
                    scatter_sum, shape, stage_routes, view, zeros_on)


@dataclass(frozen=True)
class Exchange:
    """What a tile program yields: send ``sends[v]`` (``{part: array}``, one message) to
    partition v, then resume me with one such dict from each partition in ``expect``.
    ``stage`` and ``name`` label the exchange (its parts joined by ``+``, e.g. ``"xhat+f"``)."""

    stage: int
    name: str
    sends: dict  # partition -> {part name: array}
    expect: tuple  # partitions I receive a message from


@dataclass(frozen=True)
class TileResult:
    """What a tile program returns: its share of every stage's eq. 1 terms (summed over the
    batch and its owned cells) and the gradients of its weight slices."""

    reconstruction: tuple  # per stage: sum of (xhat - x)^2 over owned stage-input cells
    sparsity: tuple  # per stage: sum of p over owned pooling units (before lambda)
    grads: dict  # "stage{s}.W1"/"W2" -> (fh, fw, K, C, R, R), the owned filter units' slice


class Part(NamedTuple):
    """One gather or scatter of an exchange: ``array`` is my owned crop (gather) or my partial
    sums on my read crop (scatter), for the read region whose routes are ``routes``."""

    name: str
    kind: str  # "gather" | "scatter"
    array: Any
    routes: Routes

    def sends(self) -> dict:
        return (gather_sends if self.kind == "gather" else scatter_sends)(self.array, self.routes)

    def sources(self) -> dict:
        """The partitions I receive a piece of this part from."""
        return self.routes.take if self.kind == "gather" else self.routes.give

    def finish(self, pieces: dict):
        """The read crop (gather) or the owned sums (scatter), from what arrived."""
        done = gather_assemble if self.kind == "gather" else scatter_sum
        return done(self.array, pieces, self.routes)


def _exchange(s: int, *parts: Part):
    """Every part's pieces in one exchange, one message per neighbour; returns ``{name: result}``."""
    sends: dict = {}
    for part in parts:
        for v, piece in part.sends().items():
            sends.setdefault(v, {})[part.name] = piece
    expect = tuple(sorted({u for part in parts for u in part.sources()}))
    got = yield Exchange(s, "+".join(part.name for part in parts), sends, expect)
    return {part.name: part.finish({u: got[u][part.name] for u in got if part.name in got[u]})
            for part in parts}


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
    h, saved, rec, spa, grads = x, [], [], [], {}
    for s, st in enumerate(cfg.stages):  # ---------------------------------------- forward
        tile, r = plan.tiles[t][s], partners[s]
        W1 = weights[f"stage{s}.W1"]
        W2 = W1 if cfg.tied else weights[f"stage{s}.W2"]
        K = st.maps
        got = yield from _exchange(s, Part("x", "gather", h, r["filter"]))
        x_crop = got["x"]  # (B, C, filter reads)
        if not tile.filter.empty:
            f, enc = local_filter_forward(x_crop, {"W1": W1}, stride=st.stride)  # (B, K, fh, fw)
            xhat_part, dec = local_decoder_forward(f, {"W2": W2}, stride=st.stride,
                                                   out_size=shape(tile.filter_reads))
        else:
            f, enc, dec = zeros_on(h, K, tile.filter), None, None
            xhat_part = zeros_on(h, h.shape[1], tile.filter_reads)
        got = yield from _exchange(s, Part("xhat", "scatter", xhat_part, r["filter"]),
                                   Part("f", "gather", f, r["pool"]))
        xhat, f_crop = got["xhat"], got["f"]  # (B, C, owned), (B, K, pool reads)
        resid = xhat - h
        rec.append(float((resid * resid).sum()))
        if not tile.pool.empty:
            p, pool = l2pool_forward(f_crop, window=st.pool_window, stride=st.pool_stride, eps=cfg.eps)
        else:
            p, pool = zeros_on(h, K, tile.pool), None
        spa.append(float(p.sum()))
        parts = [Part("resid", "gather", resid, r["filter"])]
        if cfg.lcn:
            parts.append(Part("p", "gather", p, r["lcn"]))
        if not joint:  # local gradients: this stage's backward needs nothing from above
            parts.append(Part("df", "scatter", _pool_backward(st, tile, p, pool, cfg.lam), r["pool"]))
        got = yield from _exchange(s, *parts)
        resid_crop = got["resid"]  # (B, C, filter reads)
        y, lcn = p, None
        if cfg.lcn and not tile.pool.empty:
            y_crop, lcn = lcn_forward(got["p"], window=st.lcn_window, width=st.lcn_width, c=cfg.c,
                                      border=st.lcn_border)  # got["p"]: (B, K, lcn reads)
            y = view(y_crop, tile.lcn_reads, tile.pool)  # the owned outputs are exact
        if not joint:
            _weight_grads(grads, s, cfg, weights, enc, dec, got["df"], resid_crop, need_dx=False)
        if joint:  # what the backward below needs (local gradients are done with it)
            saved.append((enc, dec, pool, lcn, p, resid, resid_crop))
        h = y  # owned next-stage input: the same cells as this stage's owned pooling units
    dy = None
    for s in reversed(range(n)) if joint else ():  # ------------------ backward, joint gradients
        st, tile, r = cfg.stages[s], plan.tiles[t][s], partners[s]
        enc, dec, pool, lcn, p, resid, resid_crop = saved[s]
        dp = None
        if dy is not None and cfg.lcn:
            dy_crop = zeros_on(p, st.maps, tile.lcn_reads)
            if lcn is not None:  # zero upstream gradient on the cells that are not owned
                view(dy_crop, tile.lcn_reads, tile.pool)[...] = dy
                dy_crop, _ = lcn_backward(dy_crop, lcn)  # partial dL/dp on the lcn reads
            dp = (yield from _exchange(s, Part("dp", "scatter", dy_crop, r["lcn"])))["dp"]
        elif dy is not None:
            dp = dy  # no LCN: the stage's output is p itself
        df_part = _pool_backward(st, tile, p, pool, cfg.lam, dp)
        df = (yield from _exchange(s, Part("df", "scatter", df_part, r["pool"])))["df"]
        need_dx = s > 0  # the input gradient goes on down, or is not made at all
        dx_part = _weight_grads(grads, s, cfg, weights, enc, dec, df, resid_crop, need_dx)
        dy = None
        if need_dx:
            if dx_part is None:
                dx_part = zeros_on(resid, resid.shape[1], tile.filter_reads)
            dx = (yield from _exchange(s, Part("dx", "scatter", dx_part, r["filter"])))["dx"]
            dy = dx - 2.0 * resid  # x is also the reconstruction's target
    ordered = {k: grads[k] for k in weights}
    return TileResult(tuple(rec), tuple(spa), ordered)


def _pool_backward(st, tile, p, pool, lam: float, dp_above=None):
    """Partial dL/df on the pooling's read region: ``lambda`` (the sparsity term's d/dp) plus
    what comes from above (``dp_above``, owned pooling units), through L2 pooling."""
    if pool is None:  # no pooling unit of mine
        return zeros_on(p, st.maps, tile.pool_reads)
    dp = get_xp(p).full_like(p, lam)  # d(lambda * sum p) / dp
    if dp_above is not None:
        dp = dp + dp_above
    return l2pool_backward(dp, pool)[0]  # (B, K, pool reads)


def _weight_grads(grads: dict, s: int, cfg, weights, enc, dec, df, resid_crop, need_dx: bool):
    """Stage s's weight gradients into ``grads`` from dL/df (owned filter units) and the
    residuals on the filter reads; returns the partial dL/dx on the filter reads if
    ``need_dx`` (None when the tile owns no filter unit)."""
    if enc is not None:
        df_dec, g2 = local_decoder_backward(2.0 * resid_crop, dec)
        dx_part, g1 = local_filter_backward(df + df_dec, enc,
                                            input_grad=need_dx)  # dx: (B, C, filter reads)
        g1, g2 = g1["W1"], g2["W2"]
    else:
        W1 = weights[f"stage{s}.W1"]
        dx_part, g1, g2 = None, get_xp(W1).zeros_like(W1), get_xp(W1).zeros_like(W1)
    if cfg.tied:
        grads[f"stage{s}.W1"] = g1 + g2  # one array in both roles
    else:
        grads[f"stage{s}.W1"], grads[f"stage{s}.W2"] = g1, g2
    return dx_part
