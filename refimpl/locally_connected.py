"""The locally connected product: three kernels that the encoder W1 and the decoder W2 share.

A locally connected layer is a convolution without weight sharing: every output location
``(oy, ox)`` has its own ``K x (C*R*R)`` weight matrix ``W[oy, ox]``. Each kernel below is one
small matrix product per location:

    lc_apply       f[:, oy, ox]   = W[oy, ox] @ patch(x, oy, ox)          (encoder forward)
    lc_transpose   x[patch(oy,ox)] += W[oy, ox]^T @ f[:, oy, ox]          (its adjoint: decoder)
    lc_weight_grad dW[oy, ox]     = df[:, oy, ox] @ patch(x, oy, ox)^T    (either weight grad)

Internal layout. The public layout is ``(B, C, H, W)``. Inside the kernels the batch axis is
moved last, ``(C, H, W, B)`` (cuda-convnet's layout): then every row of a receptive field is one
contiguous run of ``R * B`` numbers, a patch is gathered with a cheap copy, and the per-location
product has the batch as its wide dimension, ``(K, C*R*R) @ (C*R*R, B)``. Rows of locations
are independent, so they are split across a small pool of threads (NumPy releases the GIL
inside copies and matrix products); set ``CATNEURON_THREADS=1`` to run them in order.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from .backend import get_xp

_POOL: ThreadPoolExecutor | None = None


def _threads() -> int:
    return max(1, int(os.environ.get("CATNEURON_THREADS", min(os.cpu_count() or 1, 4))))


def _for_each_row(n_rows: int, row_fn) -> None:
    """Call ``row_fn(oy)`` for every output row, on the thread pool when it helps."""
    global _POOL
    n = _threads()
    if n == 1 or n_rows < 2:
        for oy in range(n_rows):
            row_fn(oy)
        return
    if _POOL is None or _POOL._max_workers != n:
        _POOL = ThreadPoolExecutor(n, thread_name_prefix="catneuron-lc")
    for _ in _POOL.map(row_fn, range(n_rows)):
        pass


def _batch_last(a):
    """(B, C, H, W) -> contiguous (C, H, W, B)."""
    xp = get_xp(a)
    return xp.ascontiguousarray(a.transpose(1, 2, 3, 0))  # (C, H, W, B)


def lc_apply(x, W, stride: int):
    """``f[b, k, oy, ox] = sum_{c,u,v} W[oy, ox, k, c, u, v] * x[b, c, oy*S + u, ox*S + v]``.

    x: (B, C, H, W); W: (OH, OW, K, C, R, R) -> f: (B, K, OH, OW).
    """
    xp = get_xp(x, W)
    OH, OW, K, C, R, _ = W.shape
    B, S = x.shape[0], stride
    xt = _batch_last(x)  # (C, H, W, B)
    Wm = W.reshape(OH, OW, K, C * R * R)
    ft = xp.empty((OH, OW, K, B), dtype=x.dtype)

    def row(oy):
        for ox in range(OW):
            patch = xt[:, oy * S : oy * S + R, ox * S : ox * S + R, :]  # (C, R, R, B)
            ft[oy, ox] = Wm[oy, ox] @ patch.reshape(C * R * R, B)  # (K, B)

    _for_each_row(OH, row)
    return xp.ascontiguousarray(ft.transpose(3, 2, 0, 1))  # (B, K, OH, OW)


def lc_transpose(f, W, stride: int, out_hw: tuple[int, int]):
    """The adjoint of :func:`lc_apply` (overlap-add):
    ``x[b, c, oy*S + u, ox*S + v] += W[oy, ox, k, c, u, v] * f[b, k, oy, ox]``.

    f: (B, K, OH, OW); W: (OH, OW, K, C, R, R); out_hw = (H, W) -> x: (B, C, H, W).
    """
    xp = get_xp(f, W)
    OH, OW, K, C, R, _ = W.shape
    B, S = f.shape[0], stride
    H, Wd = out_hw
    ft = xp.ascontiguousarray(f.transpose(2, 3, 1, 0))  # (OH, OW, K, B)
    WmT = W.reshape(OH, OW, K, C * R * R).transpose(0, 1, 3, 2)  # (OH, OW, CRR, K)
    # Neighbouring rows of fields overlap, so rows that write the same pixels must not run at
    # the same time: rows oy and oy' overlap iff |oy - oy'| * S < R. Process rows in
    # ceil(R / S) interleaved phases; inside a phase the rows are disjoint and run in parallel.
    xt = xp.zeros((C, H, Wd, B), dtype=f.dtype)  # (C, H, W, B)

    def row(oy):
        for ox in range(OW):
            contrib = WmT[oy, ox] @ ft[oy, ox]  # (CRR, B)
            xt[:, oy * S : oy * S + R, ox * S : ox * S + R, :] += contrib.reshape(C, R, R, B)

    gap = -(-R // S)  # rows closer than this overlap
    for phase in range(gap):
        rows = list(range(phase, OH, gap))
        _for_each_row(len(rows), lambda i: row(rows[i]))
    return xp.ascontiguousarray(xt.transpose(3, 0, 1, 2))  # (B, C, H, W)


def lc_weight_grad(x, df, stride: int, field: int):
    """The weight gradient of :func:`lc_apply`:
    ``dW[oy, ox, k, c, u, v] = sum_b df[b, k, oy, ox] * x[b, c, oy*S + u, ox*S + v]``.

    x: (B, C, H, W); df: (B, K, OH, OW) -> dW: (OH, OW, K, C, R, R).
    """
    xp = get_xp(x, df)
    B, C = x.shape[:2]
    _, K, OH, OW = df.shape
    R, S = field, stride
    xt = _batch_last(x)  # (C, H, W, B)
    dft = xp.ascontiguousarray(df.transpose(2, 3, 1, 0))  # (OH, OW, K, B)
    dW = xp.empty((OH, OW, K, C * R * R), dtype=x.dtype)

    def row(oy):
        for ox in range(OW):
            patch = xt[:, oy * S : oy * S + R, ox * S : ox * S + R, :]  # (C, R, R, B)
            dW[oy, ox] = dft[oy, ox] @ patch.reshape(C * R * R, B).T  # (K, CRR)

    _for_each_row(OH, row)
    return dW.reshape(OH, OW, K, C, R, R)
