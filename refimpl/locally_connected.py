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
``(OH, K, C, R, R)`` -> ``(OH, K, R, C, R)`` (much smaller than its patches). One product per
channel would read W in place, but at the small fields of the ``mini`` and ``full`` configs
(R = 3-8, up to 16 channels) its many tiny products made the forward up to 2x slower.

The adjoint overlap-adds. Its products have only K = 8 terms, so it is bound by what it writes:
one ``(C*R*R, B)`` product per location, each added into the image, wrote and re-read every
pixel (R/S)^2 times. Instead neighbouring locations of a column go in groups
(:func:`_group_size`), and a group's product covers the group's whole field with its overlaps
already summed inside the product (:func:`_grouped_weights`); only the groups' fields are then
added into the image, C*Y contiguous runs of R*B. It reads W in its own order: nothing is
gathered but the groups' matrices, whose runs are whole (u, v) blocks.

Moving between the public and internal layouts is a transpose of the ``(B, N)`` matrix of
flattened images, copied in tiles.

Threads. Columns are independent, so a call with enough work (``_MIN_THREADED_FLOPS``) is cut
into one run of columns per thread, on a small pool (NumPy releases the GIL inside copies and
matrix products), with the BLAS library held to one thread meanwhile: BLAS's own threads on top
of ours oversubscribe the cores, and on a busy machine the small products then slowed down up to
50-fold (see benchmarks/sublayers.py). Every location's product is the same whatever the thread
count, and the adjoint sums its image in fixed bands of columns, added in order, so
``CATNEURON_THREADS=1`` (run in order, in this thread) and any other thread count give
bit-identical results. A layer's backward runs its two kernels (input and weight gradients) at
once instead, one thread each (:func:`run_pair`).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from functools import partial

from .backend import get_xp, strided_view

_POOL: ThreadPoolExecutor | None = None


def _pool(workers: int) -> ThreadPoolExecutor:
    """The kernels' thread pool, with at least ``workers`` threads (made, or remade, on demand)."""
    global _POOL
    if _POOL is None or _POOL._max_workers < workers:
        _POOL = ThreadPoolExecutor(workers, thread_name_prefix="catneuron-lc")
    return _POOL


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


_UFUNC_BUFFER = 256  # elements; NumPy's default is 8192


@contextmanager
def _small_ufunc_buffers():
    """Give NumPy's ufuncs small buffers while a kernel runs (in this thread: the setting is
    per thread). The adjoint's adds go into strided fields of the image, C*Y runs of R*B floats;
    with the default 8192-element buffer NumPy copies such runs through its buffer first, and
    an add of a (72, 1800) block took 43 us instead of 18 (``benchmarks/sublayers.py`` shows the
    kernels' speeds). Nothing here needs a buffer: every operand has the kernel's own dtype.
    """
    import numpy as np

    old = np.setbufsize(_UFUNC_BUFFER)
    try:
        yield
    finally:
        np.setbufsize(old)


# A kernel call with less work than this runs in the caller's thread. Measured here: the `mini`
# config's calls (~17 MFLOP) were slower on two threads, `full`'s (80-90 MFLOP) about even, the
# paper's shapes (100 MFLOP and more a call) faster (benchmarks/sublayers.py).
_MIN_THREADED_FLOPS = 64e6


def _run_in_order(tasks, flops: float) -> list:
    """Run ``tasks`` (callables with no arguments) and return their results in order.

    When the call is worth it (``flops``, the whole call's work, at least
    ``_MIN_THREADED_FLOPS``), the tasks are cut into one contiguous run per thread and the
    caller's thread runs the last run itself: one hand-over per thread, not one per task. On this
    VM a thread that waits for the GIL wakes slowly, so many small hand-overs let one thread do
    nearly all the work while the other sat waiting (measured: a 0.3 ms column took 2.6 ms).
    """
    n = min(_threads(), len(tasks))
    with _one_blas_thread():
        if n <= 1 or flops < _MIN_THREADED_FLOPS or getattr(_SOLO, "on", False):
            return _run_all(tasks)
        pool = _pool(n - 1)
        runs = [tasks[i * len(tasks) // n : (i + 1) * len(tasks) // n] for i in range(n)]
        futures = [pool.submit(_run_all, run) for run in runs[:-1]]
        last = _run_all(runs[-1])
        return [r for fut in futures for r in fut.result()] + last


def _run_all(tasks) -> list:
    with _small_ufunc_buffers(), _quiet_invalid():
        return [task() for task in tasks]


@contextmanager
def _quiet_invalid():
    """No "invalid value" warning from a kernel's products and adds (in this thread).

    Every input of a kernel has been checked for NaN and inf (x and the upstream gradients in
    full, the weights through the layer's output: :func:`refimpl.checks.check_finite_through`),
    so an invalid operation inside one comes from a non-finite weight, which the layer then
    names in its ValueError, or from sums that overflowed, which NumPy reports as an overflow.
    Without this the user saw NumPy's warning about ``inf * 0`` before the layer's error.
    """
    import numpy as np

    with np.errstate(invalid="ignore"):
        yield


_MAX_PAIR_FLOPS = 8e9  # a pair with more work than this runs one kernel after the other
_SOLO = threading.local()  # .on: this thread runs one kernel of a pair: its tasks stay here


def run_pair(first, second, flops: float):
    """Run two independent kernel calls (callables with no arguments) and return both results.

    A layer's backward makes two products from the same upstream gradient (the input's
    gradient and the weights'), and neither needs the other. When the pair is worth it
    (``flops``, both calls' work, at least ``_MIN_THREADED_FLOPS``) and two threads are allowed,
    ``second`` runs in the pool while this thread runs ``first``, each kernel on one thread: one
    hand-over for the pair instead of one per thread and kernel. Handing the GIL between threads
    is slow on these VMs (a probe: two threads copying 100 KB blocks got no further than one), and
    at B = 100 (probes, each alternating the two ways) the pair was 2-12% quicker than the two
    kernels one after the other at up to 2.5 GFLOP a kernel (the benchmark's stride 2, and 32 px
    at stride 1), even at 3.4 (64 px, stride 1), and 3-5% slower at 9.7 (96 px, stride 1; not
    explained: perhaps two different kernels at once contend for memory more than one kernel
    split in two). Above ``_MAX_PAIR_FLOPS`` each kernel therefore splits its own columns.
    The ``mini`` config's pairs (34 MFLOP) were 20% slower this way: they stay below
    ``_MIN_THREADED_FLOPS``. Each kernel computes exactly what it computes alone, so the
    results do not depend on any of this.
    """
    if (_threads() < 2 or not _MIN_THREADED_FLOPS <= flops <= _MAX_PAIR_FLOPS
            or getattr(_SOLO, "on", False)):
        return first(), second()
    with _one_blas_thread():
        future = _pool(1).submit(_solo, second)
        try:
            a = _solo(first)
        except BaseException:
            wait([future])  # no kernel outlives the call, and `first`'s error is the one raised
            raise
        return a, future.result()


def _solo(call):
    """Run one kernel call with all its tasks in this thread (:func:`run_pair`)."""
    _SOLO.on = True
    try:
        return call()
    finally:
        _SOLO.on = False


# The layout changes copy (images, values) tiles of these sizes: the best of a sweep at 1.2-20 MB
# on the Intel machine of benchmarks/results/sublayers.json (the AMD one before it preferred
# (8, 4096) for _TILE_LAST; here that was 10-50% slower).
_TILE_LAST = (32, 512)  # (B, N) -> (N, B): 32 images' rows of 2 KB
_TILE_FIRST = (100, 512)  # (N, B) -> (B, N)
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


def kernel_layout(a):
    """(B, ...) -> contiguous (..., B): ``a`` in the kernels' layout, to hand to several kernels
    (their ``xt=`` / ``dft=`` / ``ft=`` arguments) so that its layout is changed only once."""
    return _batch_last(a)


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
    H, C, R, B = strip.shape
    s_row, _, s_v, s_b = strip.strides  # bytes
    shape, strides = (n_rows, R * C * R, B), (stride * s_row, s_v, s_b)
    return strided_view(strip, shape, strides)  # (OH, u*c*v, B), only read


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


def lc_apply(x, W, stride: int, *, xt=None):
    """``f[b, k, oy, ox] = sum_{c,u,v} W[oy, ox, k, c, u, v] * x[b, c, oy*S + u, ox*S + v]``.

    x: (B, C, H, W); W: (OH, OW, K, C, R, R) -> f: (B, K, OH, OW). ``xt``: x already in the
    kernels' layout (:func:`kernel_layout`), if the caller has it.
    One batched product per column: ``f[:, :, oy, ox] = W[oy, ox] @ patch(oy, ox)`` for all oy.
    """
    xp = get_xp(x, W)
    OH, OW, K, C, R, _ = W.shape
    B, S = x.shape[0], stride
    xt = _batch_last(x) if xt is None else xt  # (C, H, W, B)
    ft = xp.empty((K, OH, OW, B), dtype=x.dtype)

    def column(ox):
        patches = _column_patches(_column_strip(xt, ox, S, R), OH, S)  # (OH, u*c*v, B)
        out = ft[:, :, ox].transpose(1, 0, 2)  # (OH, K, B), a view
        xp.matmul(_weight_ucv(W, ox), patches, out=out)

    _run_in_order([partial(column, ox) for ox in range(OW)], 2 * OH * OW * K * C * R * R * B)
    return _batch_first(ft)  # (B, K, OH, OW)


_CHUNK_BYTES = 1 << 20  # the adjoint's products are made this many bytes at a time (~ an L2 cache)
_GROUP: int | None = None  # locations per adjoint product; None: _group_size's choice
_BANDS = 2  # the adjoint sums its image in this many bands of columns, whatever the thread count


def _group_size(field: int, stride: int) -> int:
    """How many neighbouring locations of a column share one adjoint product: the most whose
    padding, (g - 1) * S field rows, stays within a third of R, so that at most a quarter of the
    product is zeros (g = 4 at R = 18, S = 2; g = 1, one product per location, at R = 5, S = 2)."""
    return _GROUP or 1 + field // (3 * stride)


def _grouped_weights(W, ox: int, g: int, stride: int, out=None):
    """Column ``ox`` of W as the adjoint's grouped matrices, one per ``g`` neighbouring locations.

    W (OH, OW, K, C, R, R) -> (G, g*K, C*Y*R), G = ceil(OH / g), Y = R + (g-1)*S. Group i's
    matrix holds, for the locations oy = i*g + j (j < g), ``W[oy, ox]`` placed at the field rows
    j*S .. j*S + R of the Y rows the group covers together, zeros elsewhere (and for locations
    past OH). Its transpose maps the group's maps to its field: one product does the group's
    overlap-add. Each (u, v) block of W is one contiguous run here.
    ``out``: the previous column's matrices, to refill: the zeros are in the same places for every
    column, so only W's blocks are written again.
    """
    xp = get_xp(W)
    OH, _, K, C, R, _ = W.shape
    S = stride
    G, Y = -(-OH // g), R + (g - 1) * S
    A = xp.zeros((G, g, K, C, Y, R), dtype=W.dtype) if out is None else out.reshape(G, g, K, C, Y, R)
    for j in range(g):
        n = len(range(j, OH, g))
        A[:n, j, :, :, j * S : j * S + R] = W[j::g, ox]  # (n, K, C, u, v)
    return A.reshape(G, g * K, C * Y * R)


def lc_transpose(f, W, stride: int, out_hw: tuple[int, int], *, ft=None):
    """The adjoint of :func:`lc_apply` (overlap-add):
    ``x[b, c, oy*S + u, ox*S + v] += W[oy, ox, k, c, u, v] * f[b, k, oy, ox]``.

    f: (B, K, OH, OW); W: (OH, OW, K, C, R, R); out_hw = (H, W) -> x: (B, C, H, W). ``ft``: f
    in the kernels' layout (:func:`kernel_layout`), if the caller has it.
    A column's locations go g = :func:`_group_size` at a time: one product ``A_i^T @ f_i`` (see
    :func:`_grouped_weights`) gives the whole field of group i, the group's own overlaps already
    summed, and that ``(C, Y, R, B)`` block is added into the image, C*Y contiguous runs of R*B.
    A group of 4 at R = 18, S = 2 spends a quarter of its products on zeros but writes a third
    as much as one product per location, and this kernel is bound by what it writes.
    The products are made a few groups at a time (about ``_CHUNK_BYTES``), so each is still in
    cache when it is added.

    The columns are cut into ``_BANDS`` bands, each summed into an image of its own (the first
    into the output), and the bands are then added in order. Threads take whole bands, and the
    cut does not depend on the thread count, so neither does any sum. Each band past the first
    costs one more image-sized add: on 2 cores two bands were 5-10% quicker than four, so this
    kernel uses at most two threads.
    """
    xp = get_xp(f, W)
    OH, OW, K, C, R, _ = W.shape
    B, S = f.shape[0], stride
    H, Wd = out_hw
    ft = _batch_last(f) if ft is None else ft  # (K, OH, OW, B)
    xt = xp.zeros((C, H, Wd, B), dtype=f.dtype)  # (C, H, W, B)
    g = min(_group_size(R, S), OH)
    G, Y = -(-OH // g), R + (g - 1) * S  # groups in a column; field rows a group covers
    chunk = max(1, _CHUNK_BYTES // (C * Y * R * B * W.dtype.itemsize))

    def band(cols: range):
        """Overlap-add the locations of columns ``cols`` into the image they cover."""
        x0, width = cols[0] * S, (len(cols) - 1) * S + R
        acc = xt[:, :, :width] if x0 == 0 else xp.zeros((C, H, width, B), dtype=f.dtype)
        products = xp.empty((min(chunk, G), C * Y * R, B), dtype=f.dtype)
        fc = xp.zeros((G * g, K, B), dtype=f.dtype)  # the column's maps, zero past OH
        A = None
        for ox in cols:
            A = _grouped_weights(W, ox, g, S, out=A)  # (G, g*K, c*y*v)
            At = A.transpose(0, 2, 1)  # (G, c*y*v, g*K), a view
            fc[:OH] = ft[:, :, ox].transpose(1, 0, 2)  # (OH, K, B)
            fg = fc.reshape(G, g * K, B)
            v0 = ox * S - x0
            for i0 in range(0, G, chunk):
                n = min(chunk, G - i0)
                xp.matmul(At[i0 : i0 + n], fg[i0 : i0 + n], out=products[:n])  # (n, c*y*v, B)
                for i in range(i0, i0 + n):
                    y0 = i * g * S
                    y1 = min(y0 + Y, H)  # rows past H hold only the zeros of missing locations
                    acc[:, y0:y1, v0 : v0 + R] += products[i - i0].reshape(C, Y, R, B)[:, : y1 - y0]
        return acc

    n_bands = min(_BANDS, OW)
    bands = [range(i * OW // n_bands, (i + 1) * OW // n_bands) for i in range(n_bands)]
    sums = _run_in_order([partial(band, cols) for cols in bands], 2 * OH * OW * K * C * R * R * B)
    with _small_ufunc_buffers(), _quiet_invalid():
        for cols, acc in zip(bands[1:], sums[1:]):  # neighbouring bands overlap: added in order
            xt[:, :, cols[0] * S : cols[0] * S + acc.shape[2]] += acc
    return _batch_first(xt)  # (B, C, H, W)


def lc_weight_grad(x, df, stride: int, field: int, *, xt=None, dft=None):
    """The weight gradient of :func:`lc_apply`:
    ``dW[oy, ox, k, c, u, v] = sum_b df[b, k, oy, ox] * x[b, c, oy*S + u, ox*S + v]``.

    x: (B, C, H, W); df: (B, K, OH, OW) -> dW: (OH, OW, K, C, R, R). ``xt``, ``dft``: x and df
    in the kernels' layout (:func:`kernel_layout`), if the caller has them.
    """
    xp = get_xp(x, df)
    B, C = x.shape[:2]
    _, K, OH, OW = df.shape
    R, S = field, stride
    xt = _batch_last(x) if xt is None else xt  # (C, H, W, B)
    dft = _batch_last(df) if dft is None else dft  # (K, OH, OW, B)
    dW = xp.empty((OH, OW, K, C, R, R), dtype=x.dtype)

    def column(ox):
        patches = _column_patches(_column_strip(xt, ox, S, R), OH, S)  # (OH, u*c*v, B)
        g = xp.matmul(patches, _column_maps(dft, ox, (1, 2, 0)))  # (OH, u*c*v, K): each dW[oy, ox]^T in (u, c, v) order
        dW[:, ox] = g.reshape(OH, R, C, R, K).transpose(0, 4, 2, 1, 3)  # (OH, K, C, u, v)

    _run_in_order([partial(column, ox) for ox in range(OW)], 2 * OH * OW * K * C * R * R * B)
    return dW
