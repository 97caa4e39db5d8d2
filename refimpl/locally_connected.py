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

The adjoint overlap-adds. Its products have only K = 8 terms per location, so it is bound by
what it writes: one ``(C*R*R, B)`` product per location, each added into the image, wrote and
re-read every pixel (R/S)^2 times. Instead it gathers: a column's strip is cut into blocks of S
rows, each read by the T = ceil(R/S) neighbouring locations of the column, and a block's gradient
is one product with T*K terms (:func:`_row_blocks`), so each row of the strip is written once and
the strip is then added into the image, C*H contiguous runs of R*B. Its weights are the column's
W, written once into a zero buffer laid out so that every block's matrix is a plain strided view
of it (:class:`_BlockWeights`).

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
once instead, one thread each, the thread done first helping the other (:func:`run_pair`).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from functools import lru_cache, partial
from typing import NamedTuple

from .backend import get_xp, strided_view

_POOL: ThreadPoolExecutor | None = None


def _pool(workers: int) -> ThreadPoolExecutor:
    """The kernels' thread pool, with at least ``workers`` threads (made, or remade, on demand)."""
    global _POOL
    if _POOL is None or _POOL._max_workers < workers:
        _POOL = ThreadPoolExecutor(workers, thread_name_prefix="catneuron-lc")
    return _POOL


_CPUS = os.cpu_count() or 1


def _threads() -> int:
    return max(1, int(os.environ.get("CATNEURON_THREADS", min(_CPUS, 4))))


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


def _run_in_order(tasks, flops: float, min_flops: float | None = None) -> list:
    """Run ``tasks`` (callables with no arguments) and return their results in order.

    When the call is worth it (``flops``, the whole call's work, at least ``min_flops``, by
    default ``_MIN_THREADED_FLOPS``), the tasks are cut into one contiguous run per thread and the
    caller's thread runs the last run itself: one hand-over per thread, not one per task. On this
    VM a thread that waits for the GIL wakes slowly, so many small hand-overs let one thread do
    nearly all the work while the other sat waiting (measured: a 0.3 ms column took 2.6 ms).
    """
    n = min(_threads(), len(tasks))
    min_flops = _MIN_THREADED_FLOPS if min_flops is None else min_flops
    with _one_blas_thread():
        if getattr(_SOLO, "on", False):  # one kernel of a pair: here, and shared with the other thread
            return _run_shared(tasks, _SOLO.pair, _SOLO.side)
        if n <= 1 or flops < min_flops:
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
_SOLO = threading.local()  # .on: this thread runs one kernel of a pair (.pair, .side: which one)


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
    ``_MIN_THREADED_FLOPS``.

    The two kernels seldom take equally long (the weight gradient took 0.9-1.3x the adjoint's
    time at the benchmark's shapes), so the thread that finishes first helps the other: it takes the
    other kernel's remaining tasks (columns, or the adjoint's bands) from the back of its list
    while their owner takes them from the front (:class:`_Shared`). Each task computes exactly
    what it computes alone, in whichever thread, so the results do not depend on any of this.
    """
    if (_threads() < 2 or not _MIN_THREADED_FLOPS <= flops <= _MAX_PAIR_FLOPS
            or getattr(_SOLO, "on", False)):
        return first(), second()
    pair = [None, None]  # each side's _Shared, once its kernel has made its tasks
    with _one_blas_thread():
        future = _pool(1).submit(_solo, second, pair, 1)
        try:
            a = _solo(first, pair, 0)
        except BaseException:
            wait([future])  # no kernel outlives the call, and `first`'s error is the one raised
            raise
        return a, future.result()


def _solo(call, pair: list, side: int):
    """Run one kernel of a pair in this thread, then help the other (:func:`run_pair`)."""
    _SOLO.on, _SOLO.pair, _SOLO.side = True, pair, side
    try:
        result = call()
    finally:
        _SOLO.on, _SOLO.pair = False, None
    other = pair[1 - side]
    if other is not None:  # (None: the other kernel has not made its tasks yet; nothing to take)
        other.help()
    return result


class _Shared:
    """One kernel's tasks in a pair: its own thread takes them from the front, and the other
    thread, once its own kernel is done, from the back. The owner returns when every task is
    done, the helper's included; an error in either thread stops both and reaches the owner."""

    def __init__(self, tasks):
        self.tasks, self.results = tasks, [None] * len(tasks)
        self.front, self.back = 0, len(tasks)  # tasks front..back-1 are still to take
        self.helping = 0  # tasks the helper is running now
        self.error: BaseException | None = None
        self.cond = threading.Condition()

    def _take(self, from_back: bool):
        with self.cond:
            if self.front >= self.back:
                return None
            if from_back:
                self.back -= 1
                self.helping += 1
                return self.back
            self.front += 1
            return self.front - 1

    def _stop(self):
        self.back = self.front  # (under self.cond) nothing more is taken

    def run(self) -> list:
        """The owner's part: tasks from the front, then wait for the helper's."""
        try:
            with _small_ufunc_buffers(), _quiet_invalid():
                while (i := self._take(from_back=False)) is not None:
                    self.results[i] = self.tasks[i]()
        except BaseException:
            with self.cond:
                self._stop()
                self.cond.wait_for(lambda: self.helping == 0)
            raise
        with self.cond:
            self.cond.wait_for(lambda: self.helping == 0)
        if self.error is not None:
            raise self.error
        return self.results

    def help(self):
        """The other thread's part: tasks from the back while any are left."""
        with _small_ufunc_buffers(), _quiet_invalid():
            while (i := self._take(from_back=True)) is not None:
                error = None
                try:
                    self.results[i] = self.tasks[i]()
                except BaseException as e:  # handed to the owner, which raises it
                    error = e
                with self.cond:
                    self.helping -= 1
                    if error is not None:
                        self.error = self.error or error
                        self._stop()
                    self.cond.notify_all()


def _run_shared(tasks, pair: list, side: int) -> list:
    shared = _Shared(tasks)
    pair[side] = shared  # from now on the other thread may help
    return shared.run()


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


_BANDS = 2  # the adjoint sums its image in this many bands of columns, whatever the thread count
# One more product call costs about as much as this many flops of products: the adjoint's runs of
# blocks weigh one against the other (:func:`_row_blocks`). A call and its views take ~5 us
# alone, ~20 us while a kernel runs on the other thread (each call hands the GIL over), and the
# products run at ~100 GFLOP/s. Probes at B = 100 (benchmarks/sublayers.py's shapes, the layer's
# backward, dx beside dW): 2e6 was 3-8% quicker than 5e5 and than one run a column.
_CALL_FLOPS = 2e6
# The adjoint alone runs on two threads only from this much work: its bands cost an image-sized
# zeroing and add each, and at 0.1 GFLOP (32 px, stride 2 in the benchmark) two threads were
# 10-50% slower than one; at 0.35 GFLOP (32 px, stride 1) 1.2x quicker.
_MIN_THREADED_ADJOINT_FLOPS = 2e8


class RowBlocks(NamedTuple):
    """How the adjoint cuts a column's strip into blocks of S rows (:func:`_row_blocks`)."""

    n0: int  # (R - 1) // S: block i is read by the locations i - n0 .. i
    T: int  # n0 + 1 locations read a block (fewer at the column's ends)
    covered: int  # rows of the strip that some field covers, (OH - 1) * S + R
    n: int  # blocks, ceil(covered / S)
    runs: tuple  # (a, b, t0, t1): blocks a..b-1 make one product over the slots t0..t1-1


@lru_cache(maxsize=256)
def _row_blocks(n_rows: int, field: int, stride: int, slot_flops: float,
                call_flops: float) -> RowBlocks:
    """Cut a column's strip into blocks of S rows, and the blocks into runs, one product each.

    Row ``y = i*S + s`` of the strip (block i, s < S) is read by the locations
    ``oy = i - n0 + t`` (slot t < T = n0 + 1, n0 = (R - 1) // S) through their field row
    ``u = s + (n0 - t)*S``, wherever ``0 <= oy < OH`` and ``u < R``. Block i's slots run from
    ``max(0, n0 - i)`` to ``min(T, OH + n0 - i)``: all T in the middle of the column, fewer near
    its ends. A run of blocks makes one product over the union of its blocks' slots, multiplying
    zeros in the slots a block does not have; each run costs ``call_flops`` more. The runs are
    the cheapest cut (dynamic programming over the blocks, in order); ``slot_flops`` is one
    slot's work, ``2 * S*C*R * K * B``. (OH = n_rows, R = field, S = stride.)
    """
    OH, R, S = n_rows, field, stride
    n0 = (R - 1) // S
    T, covered = n0 + 1, (OH - 1) * S + R
    n = -(-covered // S)
    slots = [(max(0, n0 - i), min(T, OH + n0 - i)) for i in range(n)]
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)  # best[b]: cheapest cut of blocks < b
    for b in range(1, n + 1):
        t0, t1 = T, 0
        for a in range(b - 1, -1, -1):  # the last run is blocks a..b-1
            t0, t1 = min(t0, slots[a][0]), max(t1, slots[a][1])
            cost = best[a] + call_flops + slot_flops * (b - a) * (t1 - t0)
            if cost < best[b]:
                best[b], cut[b] = cost, a
    runs, b = [], n
    while b > 0:
        a = cut[b]
        runs.append((a, b, min(t for t, _ in slots[a:b]), max(t for _, t in slots[a:b])))
        b = a
    return RowBlocks(n0, T, covered, n, tuple(reversed(runs)))


class _BlockWeights:
    """One column of W as the adjoint's block matrices, with no copy but one: ``A[i]`` (T*K,
    S*C*R) holds, at slot t, the weights with which location ``oy = i - n0 + t`` reads block i,
    and zeros where it does not.

    The column is written once into a zero buffer laid out so that every ``A[i]`` is a plain
    matrix view of it. Location oy's weights are K slabs of ``L = T*S * C * R`` values, one per
    map, each a (u, c, v) block with its field rows u padded with zeros to T*S; the locations
    follow each other ``K*L + S*C*R`` values apart (an S*C*R gap, never read), with n0 zero
    locations before the first. Moving one slot on (t + 1) reaches the next location (one step)
    at field rows S earlier (S*C*R values back): K*L values on in all, one whole map's worth of
    slabs, so (t, k) is a single row index with stride L. Within a row, (s, c, v) is one contiguous
    run of S*C*R values (u = s + (n0 - t)*S). Block i starts one location further on than block
    i - 1: the blocks are one strided stack of matrices, a view BLAS reads as it is.
    """

    def __init__(self, W, blocks: RowBlocks, stride: int):
        xp = get_xp(W)
        OH, _, K, C, R, _ = W.shape
        S, n0, T, n = stride, blocks.n0, blocks.T, blocks.n
        L = T * S * C * R  # one map's slab: (u, c, v), u padded to T*S
        step = K * L + S * C * R  # from one location to the next
        self.W, self.OH, self.n0 = W, OH, n0
        self.buffer = xp.zeros((n0 + n) * step, dtype=W.dtype)
        isz = W.dtype.itemsize
        # the locations' weights as (oy, k, c, u, v), to write a column into
        self.slabs = strided_view(self.buffer, (OH, K, C, R, R),
                                  (step * isz, L * isz, R * isz, C * R * isz, isz), offset=n0 * step * isz)
        # block i, rows (t, k), columns (s, c, v): its slot 0 is location i - n0, the buffer's
        # location i (after the n0 zero ones), read from field row n0*S
        self.A = strided_view(self.buffer, (n, T * K, S * C * R), (step * isz, L * isz, isz),
                              offset=n0 * S * C * R * isz)

    def column(self, ox: int):
        """-> (n, T*K, S*C*R), a view: the block matrices of column ``ox``."""
        self.slabs[...] = self.W[:, ox]  # (OH, K, C, u, v)
        return self.A


def lc_transpose(f, W, stride: int, out_hw: tuple[int, int], *, ft=None):
    """The adjoint of :func:`lc_apply` (overlap-add):
    ``x[b, c, oy*S + u, ox*S + v] += W[oy, ox, k, c, u, v] * f[b, k, oy, ox]``.

    f: (B, K, OH, OW); W: (OH, OW, K, C, R, R); out_hw = (H, W) -> x: (B, C, H, W). ``ft``: f
    in the kernels' layout (:func:`kernel_layout`), if the caller has it.

    Column by column, the gradient of the column's strip (the input its fields read) is gathered
    a block of S rows at a time (:func:`_row_blocks`): block i is read by T = ceil(R/S)
    neighbouring locations, so its gradient is one product,
    ``dX_i (S*C*R, B) = A_i^T (S*C*R, T*K) @ F_i (T*K, B)``, with ``F_i`` the maps of those
    locations (rows of the column's maps, zero-padded at both ends: a contiguous slice) and
    ``A_i`` their weights at the rows they read (:class:`_BlockWeights`). Every row of the strip
    is written once, by a product with T*K terms, and the strip is then added into the image,
    C*H contiguous runs of R*B; the strips of neighbouring columns overlap. This kernel is bound by
    what it writes: adding one product per location into the image wrote and re-read every pixel
    (R/S)^2 times, and groups of locations that summed their own overlaps inside one product
    (the kernel before this one) still wrote each row of a column up to R/S + 1 times. Against
    that one, on one thread at B = 100 (interleaved probes): 1.07-1.28x quicker at the six shapes
    of benchmarks/sublayers.py, 0.89-1.48x at the `mini` and `full` configs' (slowest at R = 3
    with 16 channels, where a block has only 3 locations).

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
    blocks = _row_blocks(OH, R, S, 2 * S * C * R * K * B, _CALL_FLOPS)
    n0, T, covered, n = blocks.n0, blocks.T, blocks.covered, blocks.n
    isz = f.dtype.itemsize
    step = K * B * isz  # bytes from one location's maps to the next

    def band(cols: range):
        """Overlap-add the strips of columns ``cols`` into the image they cover."""
        x0, width = cols[0] * S, (len(cols) - 1) * S + R
        acc = xt[:, :, :width] if x0 == 0 else xp.zeros((C, H, width, B), dtype=f.dtype)
        weights = _BlockWeights(W, blocks, S)
        fpad = xp.zeros((n + n0, K, B), dtype=f.dtype)  # the column's maps at rows n0.., zeros around
        dstrip = xp.empty((n, S * C * R, B), dtype=f.dtype)  # (block, s*c*v, B)
        for ox in cols:
            A = weights.column(ox)  # (n, t*k, s*c*v), a view
            fpad[n0 : n0 + OH] = ft[:, :, ox].transpose(1, 0, 2)  # (OH, K, B)
            for a, b, t0, t1 in blocks.runs:
                F = strided_view(fpad, (b - a, (t1 - t0) * K, B), (step, B * isz, isz),
                                 offset=(a + t0) * step)  # F_i = fpad[i + t0 : i + t1]
                xp.matmul(A[a:b, t0 * K : t1 * K].transpose(0, 2, 1), F, out=dstrip[a:b])
            rows = dstrip.reshape(n * S, C, R, B)[:covered]  # (y, c, v, B)
            v0 = ox * S - x0
            acc[:, :covered, v0 : v0 + R] += rows.transpose(1, 0, 2, 3)  # (C, y, v, B)
        return acc

    n_bands = min(_BANDS, OW)
    bands = [range(i * OW // n_bands, (i + 1) * OW // n_bands) for i in range(n_bands)]
    sums = _run_in_order([partial(band, cols) for cols in bands], 2 * OH * OW * K * C * R * R * B,
                         _MIN_THREADED_ADJOINT_FLOPS)
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
