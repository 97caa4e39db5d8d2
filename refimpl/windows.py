"""Weighted sums over P x P windows, and their adjoints: the shared core of pooling and LCN.

``window_sum(a, w, S)[..., oy, ox] = sum_{u,v} w[u, v] * a[..., oy*S + u, ox*S + v]`` over the
valid placements (see :mod:`refimpl.geometry`). The loop runs over the P*P offsets, each a
strided slice of the whole array, so the work is vectorised over batch, maps and positions.
``w`` is a small host (NumPy) array; its entries enter as Python floats, so it works unchanged
on any backend.
"""

from __future__ import annotations

from .backend import get_xp


def window_sum(a, w, stride: int):
    """a: (..., H, W), w: (P, P) host array -> (..., OH, OW), OH = (H - P) // stride + 1."""
    xp = get_xp(a)
    P, S = w.shape[0], stride
    OH = (a.shape[-2] - P) // S + 1
    OW = (a.shape[-1] - P) // S + 1
    out = xp.zeros((*a.shape[:-2], OH, OW), dtype=a.dtype)
    for u in range(P):
        for v in range(P):
            out += float(w[u, v]) * a[..., u : u + S * (OH - 1) + 1 : S, v : v + S * (OW - 1) + 1 : S]
    return out


def window_sum_adjoint(d, w, stride: int, in_hw: tuple[int, int]):
    """The adjoint of :func:`window_sum`: d (..., OH, OW) -> (..., H, W) (overlap-add)."""
    xp = get_xp(d)
    P, S = w.shape[0], stride
    OH, OW = d.shape[-2:]
    out = xp.zeros((*d.shape[:-2], *in_hw), dtype=d.dtype)
    for u in range(P):
        for v in range(P):
            out[..., u : u + S * (OH - 1) + 1 : S, v : v + S * (OW - 1) + 1 : S] += float(w[u, v]) * d
    return out
