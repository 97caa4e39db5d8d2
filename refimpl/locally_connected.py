"""The locally connected product: three kernels that the encoder W1 and the decoder W2 share.

A locally connected layer is a convolution without weight sharing: every output location
``(oy, ox)`` has its own ``K x (C*R*R)`` weight matrix ``W[oy, ox]``. Each kernel below is one
small matrix product per location:

    lc_apply       f[:, oy, ox]   = W[oy, ox] @ patch(x, oy, ox)          (encoder forward)
    lc_transpose   x[patch(oy,ox)] += W[oy, ox]^T @ f[:, oy, ox]          (its adjoint: decoder)
    lc_weight_grad dW[oy, ox]     = df[:, oy, ox] @ patch(x, oy, ox)^T    (either weight grad)

Internal layout. The public layout is ``(B, C, H, W)``. Inside the kernels an image is
``(H, C, W, B)``: batch innermost (cuda-convnet's layout), so the batch is the wide dimension of
every product, ``(K, C*R*R) @ (C*R*R, B)``. The work goes one column of locations at a time:
the column's strip of input, ``x[:, :, ox*S : ox*S + R, :]``, is copied once into a contiguous
``(H, C, R, B)`` array, and then the patch of every location ``(oy, ox)`` of that column is the
contiguous slice ``strip[oy*S : oy*S + R]``, read as a ``(R*C*R, B)`` matrix with no further
copy. Its rows are in ``(u, c, v)`` order (field row, channel, field column), so each weight
matrix is read in the same order, ``W[oy, ox]`` ``(K, C, R, R)`` -> ``(K, R, C, R)`` (a copy of
one location's weights, much smaller than its patch). The adjoint gathers nothing: it adds each
location's ``(C*R*R, B)`` product into a ``(C, H, R, B)`` strip and keeps W's own order.

Threads. Columns are independent, so they are split across a small pool of threads (NumPy
releases the GIL inside copies and matrix products), with the BLAS library held to one thread
meanwhile: BLAS's own threads on top of ours oversubscribe the cores, and on a busy machine the
small products then slowed down up to 50-fold (see benchmarks/sublayers.py).
Every location's product is the same whatever the thread count, and the adjoint adds the
overlapping columns into the image in column order, so ``CATNEURON_THREADS=1`` (run in order,
in this thread) and any other thread count give bit-identical results.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from .backend import get_xp

_POOL: ThreadPoolExecutor | None = None


def _threads() -> int:
    return max(1, int(os.environ.get("CATNEURON_THREADS", min(os.cpu_count() or 1, 4))))


_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0  # kernels running now; the first one in limits BLAS, the last one out restores it
_BLAS_LIMIT = None
_BLAS_CONTROLLER = None  # threadpoolctl's view of the loaded BLAS libraries, found once


def _blas_controller():
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            _BLAS_CONTROLLER = False
        else:
            _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER


@contextmanager
def _one_blas_thread():
    """Hold the host BLAS (NumPy's OpenBLAS, say) to one thread while a kernel runs.

    Uses threadpoolctl (installed with scikit-learn); without it this does nothing. Nested and
    concurrent kernels share one limit, so the user's setting is restored exactly once.
    """
    global _BLAS_USERS, _BLAS_LIMIT
    with _BLAS_LOCK:
        if _BLAS_USERS == 0 and _blas_controller():
            _BLAS_LIMIT = _blas_controller().limit(limits=1, user_api="blas")
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0 and _BLAS_LIMIT is not None:
                _BLAS_LIMIT.restore_original_limits()
                _BLAS_LIMIT = None


def _columns(n_cols: int, column_fn):
    """Yield ``column_fn(ox)`` for ox = 0, 1, ..., in order; computed on the thread pool when
    it helps (then a column's result waits only until the caller has used the ones before it)."""
    global _POOL
    n = _threads()
    with _one_blas_thread():
        if n == 1 or n_cols < 2:
            for ox in range(n_cols):
                yield column_fn(ox)
            return
        if _POOL is None or _POOL._max_workers != n:
            _POOL = ThreadPoolExecutor(n, thread_name_prefix="catneuron-lc")
        yield from _POOL.map(column_fn, range(n_cols))


def _for_each_column(n_cols: int, column_fn) -> None:
    for _ in _columns(n_cols, column_fn):
        pass


def _internal(a):
    """(B, C, H, W) -> contiguous (H, C, W, B), the kernels' layout."""
    xp = get_xp(a)
    return xp.ascontiguousarray(a.transpose(2, 1, 3, 0))  # (H, C, W, B)


def _column_strip(xt, ox: int, stride: int, field: int):
    """The input seen by column ``ox`` of locations: xt (H, C, W, B) -> contiguous (H, C, R, B)."""
    xp = get_xp(xt)
    return xp.ascontiguousarray(xt[:, :, ox * stride : ox * stride + field, :])  # (H, C, R, B)


def _weight_ucv(W, oy: int, ox: int):
    """W[oy, ox] with its inputs in (u, c, v) order, the order of a strip's patch: (K, R*C*R)."""
    xp = get_xp(W)
    K = W.shape[2]
    return xp.ascontiguousarray(W[oy, ox].transpose(0, 2, 1, 3)).reshape(K, -1)  # (K, u*c*v)


def lc_apply(x, W, stride: int):
    """``f[b, k, oy, ox] = sum_{c,u,v} W[oy, ox, k, c, u, v] * x[b, c, oy*S + u, ox*S + v]``.

    x: (B, C, H, W); W: (OH, OW, K, C, R, R) -> f: (B, K, OH, OW).
    """
    xp = get_xp(x, W)
    OH, OW, K, C, R, _ = W.shape
    B, S = x.shape[0], stride
    xt = _internal(x)  # (H, C, W, B)
    ft = xp.empty((OW, OH, K, B), dtype=x.dtype)

    def column(ox):
        strip = _column_strip(xt, ox, S, R)  # (H, C, R, B)
        for oy in range(OH):
            patch = strip[oy * S : oy * S + R].reshape(R * C * R, B)  # (u*c*v, B), a view
            ft[ox, oy] = _weight_ucv(W, oy, ox) @ patch  # (K, B)

    _for_each_column(OW, column)
    return xp.ascontiguousarray(ft.transpose(3, 2, 1, 0))  # (B, K, OH, OW)


def lc_transpose(f, W, stride: int, out_hw: tuple[int, int]):
    """The adjoint of :func:`lc_apply` (overlap-add):
    ``x[b, c, oy*S + u, ox*S + v] += W[oy, ox, k, c, u, v] * f[b, k, oy, ox]``.

    f: (B, K, OH, OW); W: (OH, OW, K, C, R, R); out_hw = (H, W) -> x: (B, C, H, W).
    Nothing is gathered here, so W is used in its own (c, u, v) order and the strips are
    (C, H, R, B): a location's field ``strip[:, oy*S : oy*S + R]`` is C contiguous runs.
    """
    xp = get_xp(f, W)
    OH, OW, K, C, R, _ = W.shape
    B, S = f.shape[0], stride
    H, Wd = out_hw
    ft = xp.ascontiguousarray(f.transpose(3, 2, 1, 0))  # (OW, OH, K, B)
    Wm = W.reshape(OH, OW, K, C * R * R)

    def column(ox):
        """Overlap-add column ox's locations into a strip of its own."""
        strip = xp.zeros((C, H, R, B), dtype=f.dtype)
        for oy in range(OH):
            contrib = Wm[oy, ox].T @ ft[ox, oy]  # (c*u*v, B)
            strip[:, oy * S : oy * S + R] += contrib.reshape(C, R, R, B)
        return strip

    # Neighbouring columns overlap in the image: their strips are added here, in column order.
    xt = xp.zeros((C, H, Wd, B), dtype=f.dtype)  # (C, H, W, B)
    for ox, strip in enumerate(_columns(OW, column)):
        xt[:, :, ox * S : ox * S + R, :] += strip
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
    xt = _internal(x)  # (H, C, W, B)
    dft = xp.ascontiguousarray(df.transpose(3, 2, 0, 1))  # (OW, OH, B, K)
    dW = xp.empty((OH, OW, K, C, R, R), dtype=x.dtype)

    def column(ox):
        strip = _column_strip(xt, ox, S, R)  # (H, C, R, B)
        for oy in range(OH):
            patch = strip[oy * S : oy * S + R].reshape(R * C * R, B)  # (u*c*v, B), a view
            g = patch @ dft[ox, oy]  # (u*c*v, K): dW[oy, ox]^T in (u, c, v) order
            dW[oy, ox] = g.reshape(R, C, R, K).transpose(3, 1, 0, 2)  # (K, C, u, v)

    _for_each_column(OW, column)
    return dW
