"""Weighted sums over P x P windows, and their adjoints: the shared core of pooling and LCN.

``window_sum(a, w, S)[..., oy, ox] = sum_{u,v} w[u, v] * a[..., oy*S + u, ox*S + v]`` over the
valid placements (see :mod:`refimpl.geometry`). The loops run over the window's offsets, each a
strided slice of the whole array, so the work is vectorised over batch, maps and positions.

Both windows this model uses are separable, ``w[u, v] = r[u] * c[v]`` (pooling's H is all ones,
LCN's Gaussian is a product of two): the sum then goes along the rows and then along the
columns, 2P slices instead of P*P (at P = 5, 10 passes over the array instead of 25), and a
weight of exactly 1 costs no multiplication. Any other ``w`` takes the direct P*P loop.

``w`` is a small host (NumPy) array; its entries enter as Python floats, so the code works
unchanged on any backend.
"""

from __future__ import annotations

import numpy as np

from .backend import get_xp


_SEPARABLE: dict = {}  # (shape, bytes) of a window -> separable()'s answer: the model asks often


def separable(w) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(r, c)`` with ``w[u, v] == r[u] * c[v]`` (to rounding), or None if ``w`` is not rank one."""
    w = np.asarray(w, dtype=np.float64)
    key = (w.shape, w.tobytes())
    if key not in _SEPARABLE:
        if len(_SEPARABLE) >= 64:
            _SEPARABLE.clear()
        _SEPARABLE[key] = _factor(w)
    return _SEPARABLE[key]


def _factor(w: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    i, j = np.unravel_index(np.argmax(np.abs(w)), w.shape)
    if w[i, j] == 0:
        return None
    r, c = w[:, j], w[i, :] / w[i, j]
    if not np.allclose(np.outer(r, c), w, rtol=1e-13, atol=0):
        return None
    return tuple(float(x) for x in r), tuple(float(x) for x in c)


def _along(a, axis: int, start: int, n: int, S: int):
    """``a[..., start : start + S*(n-1) + 1 : S, ...]`` on ``axis`` (-1 or -2), a view."""
    index = [slice(None)] * a.ndim
    index[axis] = slice(start, start + S * (n - 1) + 1, S)
    return a[tuple(index)]


def _sum_1d(a, weights, axis: int, n: int, S: int):
    """sum_i weights[i] * a[..., i + S*j, ...] on ``axis``: n outputs there."""
    xp = get_xp(a)
    out = None
    for i, wt in enumerate(weights):
        term = _along(a, axis, i, n, S)
        if out is None:
            out = xp.array(term) if wt == 1.0 else wt * term  # a new array, not a view of a
        elif wt == 1.0:
            out += term
        else:
            out += wt * term
    return out


def _sum_1d_adjoint(d, weights, axis: int, size: int, S: int):
    """The adjoint of :func:`_sum_1d`: d has n entries on ``axis``, the result ``size``."""
    xp = get_xp(d)
    shape = list(d.shape)
    shape[axis] = size
    out = xp.zeros(tuple(shape), dtype=d.dtype)
    n = d.shape[axis]
    for i, wt in enumerate(weights):
        view = _along(out, axis, i, n, S)
        view += d if wt == 1.0 else wt * d
    return out


def window_sum(a, w, stride: int):
    """a: (..., H, W), w: (P, P) host array -> (..., OH, OW), OH = (H - P) // stride + 1."""
    xp = get_xp(a)
    P, S = w.shape[0], stride
    OH = (a.shape[-2] - P) // S + 1
    OW = (a.shape[-1] - P) // S + 1
    rc = separable(w)
    if rc is not None:
        r, c = rc
        t = _sum_1d(a, c, -1, OW, S)  # (..., H, OW): along each row
        return _sum_1d(t, r, -2, OH, S)  # (..., OH, OW): then down each column
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
    rc = separable(w)
    if rc is not None:
        r, c = rc
        t = _sum_1d_adjoint(d, r, -2, in_hw[0], S)  # (..., H, OW)
        return _sum_1d_adjoint(t, c, -1, in_hw[1], S)  # (..., H, W)
    out = xp.zeros((*d.shape[:-2], *in_hw), dtype=d.dtype)
    for u in range(P):
        for v in range(P):
            out[..., u : u + S * (OH - 1) + 1 : S, v : v + S * (OW - 1) + 1 : S] += float(w[u, v]) * d
    return out
