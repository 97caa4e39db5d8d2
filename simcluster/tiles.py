"""Tile math: a partition's arrays as crops of the full planes, and the two halo exchanges.

A partition of :mod:`simcluster.plan` holds, per stage and per plane, the cells it *owns* (a
:class:`~simcluster.plan.Rect`) and computes on the cells it *reads* (a larger Rect: owned plus
halo). Every array here is a crop ``(B, channels, rows, cols)`` of a full plane, cut at a Rect;
:func:`view` finds a sub-rectangle of a crop by global unit indices.

Only two kinds of exchange are needed, and each is the other's adjoint::

    gather   (forward)   owners ---- their owned cells that I read ----> me: the read crop
    scatter  (backward)  me ------- partial sums over my read crop -----> owners, who add them

For one read region (``"filter"``, ``"pool"`` or ``"lcn"``, see :func:`routes`), partition t
*sends* to v the cells ``own(t) & reads(v)`` in a gather, and *receives* from u the cells
``reads(t) & own(u)``; a scatter uses the same rectangles the other way round. The part of its
own read region a partition owns never travels. Both sides compute the rectangles from the plan,
so a message carries only its array.

No sublayer math lives here: :mod:`simcluster.tile_program` calls refimpl's sublayers on crops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl.backend import get_xp

from .plan import PartitionPlan, Rect, StageTile

REGIONS = ("filter", "pool", "lcn")  # which read region: stage input, filter units, pooled units


def shape(r: Rect) -> tuple[int, int]:
    """(rows, cols) of a rectangle."""
    return (max(0, r.rows[1] - r.rows[0]), max(0, r.cols[1] - r.cols[0]))


def view(a, at: Rect, sub: Rect):
    """The cells ``sub`` (global indices) of the crop ``a`` (B, ch, rows, cols) cut at ``at``."""
    r0, c0 = at.rows[0], at.cols[0]
    return a[..., sub.rows[0] - r0 : sub.rows[1] - r0, sub.cols[0] - c0 : sub.cols[1] - c0]


def zeros_on(like, channels: int, r: Rect):
    """A zero crop (B, channels, rows, cols) on ``r``, with ``like``'s batch, dtype and backend."""
    xp = get_xp(like)
    return xp.zeros((like.shape[0], channels, *shape(r)), dtype=like.dtype)


def owned_and_reads(tile: StageTile, region: str) -> tuple[Rect, Rect]:
    """What a tile owns and reads in one read region of a stage.

    ``filter``: stage-input cells (owned) and the inputs its filter units read;
    ``pool``: filter units and the ones its pooling units read;
    ``lcn``: pooled cells and the ones its LCN outputs depend on.
    """
    if region == "filter":
        return tile.input, tile.filter_reads
    if region == "pool":
        return tile.filter, tile.pool_reads
    if region == "lcn":
        return tile.pool, tile.lcn_reads
    raise ValueError(f"region must be one of {REGIONS}, got {region!r}")


@dataclass(frozen=True)
class Routes:
    """One partition's exchange partners for one read region of one stage.

    ``give[v]``: the cells of mine that v reads (I send them in a gather, receive v's partial
    sums on them in a scatter). ``take[u]``: the cells I read that u owns (I receive them in a
    gather, send my partial sums on them in a scatter). ``own``/``reads``: my rectangles.
    """

    own: Rect
    reads: Rect
    give: dict  # partition -> Rect, sorted by partition
    take: dict  # partition -> Rect, sorted by partition

    def __post_init__(self):
        # every cell I read is mine or comes from its one owner (owners tile every plane), so a
        # gather fills its whole read crop
        got = self.local.area + sum(cells.area for cells in self.take.values())
        if got != self.reads.area:
            raise ValueError(f"routes: {got} of the {self.reads.area} cells of {self.reads} have "
                             f"an owner; a plan's owned rectangles must tile every plane")

    @property
    def local(self) -> Rect:
        """The cells I both own and read: they never travel."""
        return self.own.meet(self.reads)


def _tables(plan: PartitionPlan, s: int, region: str):
    """Every partition's owned and read rectangles as (n, 4) arrays [r0, r1, c0, c1], and as Rects."""
    pairs = [owned_and_reads(plan.tiles[t][s], region) for t in range(plan.n_partitions)]
    own = np.array([[*o.rows, *o.cols] for o, _ in pairs]).reshape(-1, 4)  # (n, 4)
    reads = np.array([[*r.rows, *r.cols] for _, r in pairs]).reshape(-1, 4)  # (n, 4)
    return own, reads, pairs


def _meets(own, reads):
    """``own[i] & reads[j]`` for every pair: starts and ends (m, m', 2) and which have cells (m, m')."""
    lo = np.maximum(own[:, None, [0, 2]], reads[None, :, [0, 2]])  # (m, m', 2) first row, col
    hi = np.minimum(own[:, None, [1, 3]], reads[None, :, [1, 3]])  # (m, m', 2) end row, col
    return lo, hi, (lo < hi).all(axis=2)


def _rect(lo, hi) -> Rect:
    return Rect((int(lo[0]), int(hi[0])), (int(lo[1]), int(hi[1])))


def routes(plan: PartitionPlan, t: int, s: int, region: str) -> Routes:
    """The :class:`Routes` of partition ``t`` in stage ``s`` for ``region``."""
    own, reads, pairs = _tables(plan, s, region)
    lo, hi, has = _meets(own[t : t + 1], reads)  # own(t) & reads(v), every v
    give = {int(v): _rect(lo[0, v], hi[0, v]) for v in np.flatnonzero(has[0]) if v != t}
    lo, hi, has = _meets(own, reads[t : t + 1])  # own(u) & reads(t), every u
    take = {int(u): _rect(lo[u, 0], hi[u, 0]) for u in np.flatnonzero(has[:, 0]) if u != t}
    return Routes(*pairs[t], give, take)


def stage_routes(plan: PartitionPlan, s: int, region: str) -> list[Routes]:
    """:func:`routes` of every partition at once (one (n, n) table of rectangles; the cells t
    gives v are the cells v takes from t)."""
    own, reads, pairs = _tables(plan, s, region)
    lo, hi, has = _meets(own, reads)  # (n, n): own(t) & reads(v)
    np.fill_diagonal(has, False)  # what a partition owns and reads itself never travels
    give: list[dict] = [{} for _ in pairs]
    take: list[dict] = [{} for _ in pairs]
    for t, v in zip(*np.nonzero(has)):  # row-major: every dict fills in partition order
        give[t][int(v)] = take[v][int(t)] = _rect(lo[t, v], hi[t, v])
    return [Routes(*pairs[t], give[t], take[t]) for t in range(len(pairs))]


# ---------------------------------------------------------------------------------------------
# Gather (forward): owned crop -> read crop
# ---------------------------------------------------------------------------------------------


def gather_sends(owned, r: Routes) -> dict:
    """What a gather sends: ``{v: the cells of `owned` that v reads}``, as views of ``owned``
    (whoever carries them copies them: the transport into shared memory, the in-process driver
    by hand)."""
    return {v: view(owned, r.own, cells) for v, cells in r.give.items()}


def gather_assemble(owned, got: dict, r: Routes):
    """The read crop (B, ch, reads): my own cells plus what the owners sent (``got[u]``)."""
    _expect("gather", got, r.take)
    xp = get_xp(owned)  # every cell of the read crop is either mine or sent: no zeros needed
    out = xp.empty((owned.shape[0], owned.shape[1], *shape(r.reads)), dtype=owned.dtype)
    view(out, r.reads, r.local)[...] = view(owned, r.own, r.local)
    for u, cells in r.take.items():
        _check_piece("gather", u, got[u], view(out, r.reads, cells).shape)
        view(out, r.reads, cells)[...] = got[u]
    return out


# ---------------------------------------------------------------------------------------------
# Scatter (backward, and the decoder's partial sums): read crop -> owned crop, adding
# ---------------------------------------------------------------------------------------------


def scatter_sends(partial, r: Routes) -> dict:
    """What a scatter sends: ``{u: my partial sums on the cells u owns}`` (views of ``partial``)."""
    return {u: view(partial, r.reads, cells) for u, cells in r.take.items()}


def scatter_sum(partial, got: dict, r: Routes):
    """The owned crop: my partial sums on my own cells plus every reader's (``got[v]``), added in
    partition order (so the sum is the same wherever it is computed).

    When I read every cell I own (nearly always: a unit's own inputs are among those it reads),
    the readers' sums are added into ``partial`` itself and the result is a view of it: ``partial``
    is used up (its other cells, the pieces I sent, are not touched). A copy would cost as much
    as the adds (a probe: ``full`` on 2x1, the two partitions' scatters 1.0 -> 0.5 ms a step).
    """
    _expect("scatter", got, r.give)
    if r.local == r.own and not r.own.empty:  # (0 + a is a: add into my own sums in place)
        out = view(partial, r.reads, r.local)
    else:
        out = zeros_on(partial, partial.shape[1], r.own)
        view(out, r.own, r.local)[...] += view(partial, r.reads, r.local)
    for v, cells in r.give.items():
        _check_piece("scatter", v, got[v], view(out, r.own, cells).shape)
        view(out, r.own, cells)[...] += got[v]
    return out


def _expect(kind: str, got: dict, want: dict) -> None:
    if set(got) != set(want):
        raise ValueError(f"{kind}: expected pieces from partitions {sorted(want)}, got {sorted(got)}")


def _check_piece(kind: str, src: int, piece, want: tuple) -> None:
    if tuple(piece.shape) != tuple(want):
        raise ValueError(f"{kind}: the piece from partition {src} has shape {tuple(piece.shape)}, "
                         f"expected {tuple(want)}")
