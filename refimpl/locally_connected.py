"""The locally connected product: three kernels that the encoder W1 and the decoder W2 share.

A locally connected layer is a convolution without weight sharing: every output location
``(oy, ox)`` has its own ``K x (C*R*R)`` weight matrix ``W[oy, ox]``. Each kernel below is one
small matrix product per location (batched over a column of locations):

    lc_apply       f[:, oy, ox]   = W[oy, ox] @ patch(x, oy, ox)          (encoder forward)
    lc_transpose   x[patch(oy,ox)] += W[oy, ox]^T @ f[:, oy, ox]          (its adjoint: decoder)
    lc_weight_grad dW[oy, ox]     = df[:, oy, ox] @ patch(x, oy, ox)^T    (either weight grad)

Internal layout. The public layout is ``(B, C, H, W)``. Inside the kernels an image is
``(C, H, W, B)`` and a map ``(K, OH, OW, B)``: batch innermost (cuda-convnet's layout), so the
batch is the wide dimension of every product, ``(K, C*R*R) @ (C*R*R, B)``. The work goes one
column of locations at a time. The column's strip of input, ``x[:, :, ox*S : ox*S + R]``, is
copied once into a contiguous ``(H, C, R, B)`` array; the patch of location ``(oy, ox)`` is then
the contiguous slice ``strip[oy*S : oy*S + R]``, an ``(R*C*R, B)`` matrix, and the patches of the
whole column are one strided view ``(OH, R*C*R, B)`` (``as_strided``: no copy, overlapping at
stride 1), so the column is a single batched ``matmul``. A patch's rows are in ``(u, c, v)`` order
(field row, channel, field column), so the column's weights are copied into the same order,
``(OH, K, C, R, R)`` -> ``(OH, K, R, C, R)`` (much smaller than its patches). The adjoint gathers
nothing: it reads W in its own order, as a view, and adds each location's ``(C*R*R, B)`` product
into a ``(C, H, R, B)`` strip, a few locations at a time so the products are still in cache.
Moving between the public and internal layouts is a transpose of the ``(B, N)`` matrix of
flattened images, copied in tiles.

Threads. Columns are independent, so columns of enough work (``_MIN_THREADED_FLOPS``) are split
across a small pool of threads (NumPy releases the GIL inside copies and matrix products), with
the BLAS library held to one thread meanwhile: BLAS's own threads on top of ours oversubscribe the cores, and on a busy machine the
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


_MIN_THREADED_FLOPS = 16e6  # a column with less work than this runs in the caller's thread


def _columns(n_cols: int, column_fn, column_flops: float):
    """Yield ``column_fn(ox)`` for ox = 0, 1, ..., in order; computed on the thread pool when
    it helps (then a column's result waits only until the caller has used the ones before it).

    It helps when a column is a lot of work: measured here (fwd + dx + dW, B = 100), two threads
    took 0.6x the time of one at 32 px, stride 1 (23 MFLOP a column), but 1.0-1.7x at 32 px,
    stride 2 (12 MFLOP) and on the ``mini`` and ``full`` configs' stages (1-10 MFLOP), where
    handing columns over costs what the second core gains. So a column under
    ``_MIN_THREADED_FLOPS`` runs in order in the caller's thread.
    """
    global _POOL
    n = _threads()
    with _one_blas_thread():
        if n == 1 or n_cols < 2 or column_flops < _MIN_THREADED_FLOPS:
            for ox in range(n_cols):
                yield column_fn(ox)
            return
        if _POOL is None or _POOL._max_workers != n:
            _POOL = ThreadPoolExecutor(n, thread_name_prefix="catneuron-lc")
        yield from _POOL.map(column_fn, range(n_cols))


def _for_each_column(n_cols: int, column_fn, column_flops: float) -> None:
    for _ in _columns(n_cols, column_fn, column_flops):
        pass


# The layout changes copy (images, values) tiles of these sizes (measured best here, 2 cores).
_TILE_LAST = (8, 4096)  # (B, N) -> (N, B): 8 images' rows of 16 KB
_TILE_FIRST = (32, 512)  # (N, B) -> (B, N)
_CACHED_BYTES = 1 << 20  # arrays up to this size (about an L2 cache) are copied in one go


def _batch_last(a):
    """(B, ...) -> contiguous (..., B), the kernels' batch-innermost layout.

    A transpose of the (B, N) matrix of flattened images, copied one tile at a time: a plain
    transposed copy strides through all of ``a`` for every output row and ran up to 2-5x slower
    here (the layout changes are a large share of the small cases; see benchmarks/sublayers.py),
    except when ``a`` fits in cache (``_CACHED_BYTES``), where the tiles' own overhead lost.
    """
    xp = get_xp(a)
    B = a.shape[0]
    if a.nbytes <= _CACHED_BYTES:  # it all stays in cache: one plain copy is quicker
        return xp.ascontiguousarray(a.transpose(tuple(range(1, a.ndim)) + (0,)))  # (..., B)
    a2 = a.reshape(B, -1)  # (B, N)
    out = xp.empty((a2.shape[1], B), dtype=a.dtype)  # (N, B)
    tb, tn = _TILE_LAST
    for n0 in range(0, a2.shape[1], tn):
        for b0 in range(0, B, tb):
            out[n0 : n0 + tn, b0 : b0 + tb] = a2[b0 : b0 + tb, n0 : n0 + tn].T
    return out.reshape(a.shape[1:] + (B,))  # (..., B)


def _batch_first(at):
    """(..., B) -> contiguous (B, ...): the inverse of :func:`_batch_last`, tiled the same way."""
    xp = get_xp(at)
    B = at.shape[-1]
    if at.nbytes <= _CACHED_BYTES:
        return xp.ascontiguousarray(at.transpose((at.ndim - 1,) + tuple(range(at.ndim - 1))))
    a2 = at.reshape(-1, B)  # (N, B)
    out = xp.empty((B, a2.shape[0]), dtype=at.dtype)  # (B, N)
    tb, tn = _TILE_FIRST
    for n0 in range(0, a2.shape[0], tn):
        for b0 in range(0, B, tb):
            out[b0 : b0 + tb, n0 : n0 + tn] = a2[n0 : n0 + tn, b0 : b0 + tb].T
    return out.reshape((B,) + at.shape[:-1])  # (B, ...)


def _column_strip(xt, ox: int, stride: int, field: int):
    """The input seen by column ``ox`` of locations, rows first:
    xt (C, H, W, B) -> contiguous (H, C, R, B)."""
    xp = get_xp(xt)
    cols = xt[:, :, ox * stride : ox * stride + field, :]  # (C, H, R, B), a view
    return xp.ascontiguousarray(cols.transpose(1, 0, 2, 3))  # (H, C, R, B): runs of R*B


def _column_patches(strip, n_rows: int, stride: int):
    """Every location's patch of one column, as a stack of matrices with no copy.

    strip (H, C, R, B), contiguous -> a strided view (OH, R*C*R, B) whose slice ``oy`` is
    ``strip[oy*S : oy*S + R]`` read as a matrix: rows in (u, c, v) order, one row per B-run.
    Consecutive patches start S strip rows apart, so at stride 1 they overlap (a view can do
    that; a copy would be R times the strip).
    """
    xp = get_xp(strip)
    H, C, R, B = strip.shape
    s_row, _, s_v, s_b = strip.strides  # bytes
    return xp.lib.stride_tricks.as_strided(
        strip, shape=(n_rows, R * C * R, B), strides=(stride * s_row, s_v, s_b)
    )  # (OH, u*c*v, B), only read


def _column_maps(ft, ox: int, axes):
    """Column ``ox`` of maps in the kernels' layout, as a small contiguous copy: ft (K, OH, OW, B)
    -> ``ft[:, :, ox]`` (K, OH, B) with its axes permuted. A strided operand (K rows a whole
    plane apart) made the products up to 1.6x slower here than this copy costs."""
    xp = get_xp(ft)
    return xp.ascontiguousarray(ft[:, :, ox].transpose(axes))


def _weight_ucv(W, ox: int):
    """Column ``ox`` of W with each location's inputs in (u, c, v) order, the order of a
    patch: W (OH, OW, K, C, R, R) -> contiguous (OH, K, R*C*R)."""
    xp = get_xp(W)
    OH, _, K = W.shape[:3]
    return xp.ascontiguousarray(W[:, ox].transpose(0, 1, 3, 2, 4)).reshape(OH, K, -1)  # (OH, K, u*c*v)


def lc_apply(x, W, stride: int):
    """``f[b, k, oy, ox] = sum_{c,u,v} W[oy, ox, k, c, u, v] * x[b, c, oy*S + u, ox*S + v]``.

    x: (B, C, H, W); W: (OH, OW, K, C, R, R) -> f: (B, K, OH, OW).
    One batched product per column: ``f[:, :, oy, ox] = W[oy, ox] @ patch(oy, ox)`` for all oy.
    """
    xp = get_xp(x, W)
    OH, OW, K, C, R, _ = W.shape
    B, S = x.shape[0], stride
    xt = _batch_last(x)  # (C, H, W, B)
    ft = xp.empty((K, OH, OW, B), dtype=x.dtype)

    def column(ox):
        patches = _column_patches(_column_strip(xt, ox, S, R), OH, S)  # (OH, u*c*v, B)
        out = ft[:, :, ox].transpose(1, 0, 2)  # (OH, K, B), a view
        xp.matmul(_weight_ucv(W, ox), patches, out=out)

    _for_each_column(OW, column, 2 * OH * K * C * R * R * B)
    return _batch_first(ft)  # (B, K, OH, OW)


_CHUNK_BYTES = 1 << 21  # the adjoint's products are made this many bytes at a time (~ an L2 cache)


def lc_transpose(f, W, stride: int, out_hw: tuple[int, int]):
    """The adjoint of :func:`lc_apply` (overlap-add):
    ``x[b, c, oy*S + u, ox*S + v] += W[oy, ox, k, c, u, v] * f[b, k, oy, ox]``.

    f: (B, K, OH, OW); W: (OH, OW, K, C, R, R); out_hw = (H, W) -> x: (B, C, H, W).
    Nothing is gathered here, so W is read in its own (c, u, v) order, as a view, and the strips
    are (C, H, R, B): a location's field ``strip[:, oy*S : oy*S + R]`` is C contiguous runs.
    A column's products are made a few locations at a time (one batched product per chunk of
    about ``_CHUNK_BYTES``), so each is still in cache when it is added into the strip.
    """
    xp = get_xp(f, W)
    OH, OW, K, C, R, _ = W.shape
    B, S = f.shape[0], stride
    H, Wd = out_hw
    ft = _batch_last(f)  # (K, OH, OW, B)
    Wm = W.reshape(OH, OW, K, C * R * R)  # a view
    chunk = max(1, _CHUNK_BYTES // (C * R * R * B * W.dtype.itemsize))

    def column(ox):
        """Overlap-add column ox's locations into a strip of its own."""
        fc = _column_maps(ft, ox, (1, 0, 2))  # (OH, K, B)
        strip = xp.zeros((C, H, R, B), dtype=f.dtype)
        products = xp.empty((min(chunk, OH), C * R * R, B), dtype=f.dtype)
        for o0 in range(0, OH, chunk):
            n = min(chunk, OH - o0)
            Wt = Wm[o0 : o0 + n, ox].transpose(0, 2, 1)  # (n, c*u*v, K), a view
            xp.matmul(Wt, fc[o0 : o0 + n], out=products[:n])  # (n, c*u*v, B)
            for oy in range(o0, o0 + n):
                strip[:, oy * S : oy * S + R] += products[oy - o0].reshape(C, R, R, B)
        return strip

    # Neighbouring columns overlap in the image: their strips are added here, in column order.
    xt = xp.zeros((C, H, Wd, B), dtype=f.dtype)  # (C, H, W, B)
    for ox, strip in enumerate(_columns(OW, column, 2 * OH * K * C * R * R * B)):
        xt[:, :, ox * S : ox * S + R, :] += strip
    return _batch_first(xt)  # (B, C, H, W)


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
    dft = _batch_last(df)  # (K, OH, OW, B)
    dW = xp.empty((OH, OW, K, C, R, R), dtype=x.dtype)

    def column(ox):
        patches = _column_patches(_column_strip(xt, ox, S, R), OH, S)  # (OH, u*c*v, B)
        g = xp.matmul(patches, _column_maps(dft, ox, (1, 2, 0)))  # (OH, u*c*v, K): each dW[oy, ox]^T in (u, c, v) order
        dW[:, ox] = g.reshape(OH, R, C, R, K).transpose(0, 4, 2, 1, 3)  # (OH, K, C, u, v)

    _for_each_column(OW, column, 2 * OH * K * C * R * R * B)
    return dW
