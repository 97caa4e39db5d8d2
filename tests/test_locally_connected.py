"""The three locally connected kernels against a naive, independent implementation.

The reference takes every receptive field with ``numpy.lib.stride_tricks.sliding_window_view``
and contracts it with ``einsum`` (forward and weight gradient); the adjoint is a plain loop that
adds each location's field into the image. It is computed in float64 from the same inputs, so
float32 results are checked to float32 rounding. Geometries include odd strides, sizes that the
stride does not divide, non-square images and a single column. The kernels split columns across
threads: CATNEURON_THREADS=1 and more threads must agree bit for bit.
"""

import time
from functools import partial

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from refimpl import locally_connected as lc
from refimpl.locally_connected import lc_apply, lc_transpose, lc_weight_grad

# Relative to the largest reference value: float32 rounding over sums of a few thousand terms.
TOL = {np.float32: 2e-5, np.float64: 1e-12}


# ---- the naive reference ----------------------------------------------------------------------

def fields(x, R, S):
    """x: (B, C, H, W) -> every receptive field, (B, C, OH, OW, R, R)."""
    return sliding_window_view(x, (R, R), axis=(2, 3))[:, :, ::S, ::S]


def ref_apply(x, W, S):
    R = W.shape[-1]
    return np.einsum("bcyxuv,yxkcuv->bkyx", fields(x, R, S), W)


def ref_weight_grad(x, df, S, R):
    return np.einsum("bkyx,bcyxuv->yxkcuv", df, fields(x, R, S))


def ref_transpose(f, W, S, out_hw):
    OH, OW, K, C, R, _ = W.shape
    x = np.zeros((f.shape[0], C, *out_hw))
    for oy in range(OH):
        for ox in range(OW):
            x[:, :, oy * S : oy * S + R, ox * S : ox * S + R] += np.einsum(
                "bk,kcuv->bcuv", f[:, :, oy, ox], W[oy, ox]
            )
    return x


# ---- cases ------------------------------------------------------------------------------------

def draw(rng, dtype, B, C, K, R, S, H, W):
    OH, OW = (H - R) // S + 1, (W - R) // S + 1
    x = rng.standard_normal((B, C, H, W)).astype(dtype)
    Wt = rng.standard_normal((OH, OW, K, C, R, R)).astype(dtype)
    df = rng.standard_normal((B, K, OH, OW)).astype(dtype)
    return x, Wt, df


def assert_matches(out, ref, dtype):
    assert out.dtype == dtype
    assert out.shape == ref.shape
    scale = np.abs(ref).max()
    err = np.abs(out.astype(np.float64) - ref).max()
    assert err <= TOL[dtype] * scale, f"max error {err:.3g} vs scale {scale:.3g}"


def check_all_three(rng, dtype, B, C, K, R, S, H, W):
    x, Wt, df = draw(rng, dtype, B, C, K, R, S, H, W)
    x64, W64, df64 = (a.astype(np.float64) for a in (x, Wt, df))
    assert_matches(lc_apply(x, Wt, S), ref_apply(x64, W64, S), dtype)
    assert_matches(lc_transpose(df, Wt, S, (H, W)), ref_transpose(df64, W64, S, (H, W)), dtype)
    assert_matches(lc_weight_grad(x, df, S, R), ref_weight_grad(x64, df64, S, R), dtype)


GEOMETRIES = {
    #                B  C  K  R  S   H   W
    "stride1": (2, 3, 4, 5, 1, 9, 9),
    "odd-stride3-nondivisible": (3, 2, 3, 4, 3, 15, 12),  # (15 - 4) % 3 = 2, (12 - 4) % 3 = 2
    "stride2-nonsquare": (2, 3, 2, 6, 2, 17, 11),
    "one-column": (2, 1, 2, 5, 2, 12, 5),  # OW = 1: the kernels run without the pool
    "one-location-batch1": (1, 2, 3, 7, 5, 7, 7),
    "field1": (2, 2, 3, 1, 1, 4, 3),  # R = 1: a per-pixel linear map
    "paper-field": (2, 3, 8, 18, 2, 23, 25),  # R = 18, K = 8 as in the paper, small images
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_kernels_match_naive_reference(geometry, dtype):
    check_all_three(np.random.default_rng(0), dtype, *geometry)


@given(
    B=st.integers(1, 3), C=st.integers(1, 3), K=st.integers(1, 4), R=st.integers(1, 6),
    S=st.integers(1, 4), extra_h=st.integers(0, 9), extra_w=st.integers(0, 9),
    dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1),
)
def test_kernels_match_naive_reference_on_random_geometries(B, C, K, R, S, extra_h, extra_w, dtype, seed):
    check_all_three(np.random.default_rng(seed), dtype, B, C, K, R, S, R + extra_h, R + extra_w)


def test_reference_detects_a_wrong_kernel():
    """The comparison can fail: a kernel whose fields are off by one pixel is caught."""
    x, Wt, _ = draw(np.random.default_rng(1), np.float64, 2, 2, 3, 4, 1, 9, 9)
    shifted = lc_apply(np.roll(x, 1, axis=3), Wt, 1)
    with pytest.raises(AssertionError, match="max error"):
        assert_matches(shifted, ref_apply(x, Wt, 1), np.float64)


# ---- the internal layout and the adjoint's blocks --------------------------------------------

@pytest.mark.parametrize("shape", [(60, 3, 50, 45), (37, 8, 30, 41), (5, 2, 3, 3), (9, 8, 27, 31)])
def test_layout_changes_are_exact_transposes_across_tiles(shape):
    """Batch-last and back: shapes that span several tiles in both directions, tiles that the
    shape does not divide (the first two, over 1 MiB), and small arrays copied in one go."""
    a = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    at = lc._batch_last(a)
    np.testing.assert_array_equal(at, a.transpose(1, 2, 3, 0))
    assert at.flags.c_contiguous
    back = lc._batch_first(at)
    np.testing.assert_array_equal(back, a)
    assert back.flags.c_contiguous


@pytest.mark.parametrize("call_flops", [0.0, lc._CALL_FLOPS, 1e30], ids=["exact", "default", "one-run"])
@pytest.mark.parametrize("R, S, H", [(6, 1, 14), (6, 2, 14), (6, 3, 14), (5, 2, 12), (4, 3, 5),
                                     (1, 1, 3), (7, 2, 7)])
def test_adjoint_blocks_in_any_runs_match_reference(monkeypatch, call_flops, R, S, H):
    """The adjoint's runs of blocks (one product each): one block per run where a call costs
    nothing, one run for the whole column where calls are dear, and the default cut between.
    Fields that S divides or not, images taller than their fields reach ((H - R) % S != 0),
    columns shorter than the T locations that read a block, a 1x1 field and a single location."""
    monkeypatch.setattr(lc, "_CALL_FLOPS", call_flops)
    x, Wt, df = draw(np.random.default_rng(7), np.float64, 2, 2, 3, R, S, H, 9)
    assert_matches(lc_transpose(df, Wt, S, (H, 9)), ref_transpose(df, Wt, S, (H, 9)), np.float64)


@pytest.mark.parametrize("OH, R, S", [(8, 18, 2), (15, 18, 1), (40, 18, 2), (4, 3, 1), (7, 5, 2),
                                      (3, 8, 3), (1, 4, 1), (6, 1, 2)])
@pytest.mark.parametrize("call_flops", [0.0, 5.0, 1e30])
def test_row_blocks_cover_every_field_row_once(OH, R, S, call_flops):
    """Every (location, field row) pair of a column is some block's row s at some slot t, for
    exactly one (block, slot, s); the runs cut the blocks in order, each over all the slots its
    blocks have; free calls multiply no zeros, and dear calls make one run."""
    blocks = lc._row_blocks(OH, R, S, 1.0, call_flops)
    n0, T = blocks.n0, blocks.T
    reached = {}
    for i in range(blocks.n):
        for t in range(T):
            for s in range(S):
                oy, u = i - n0 + t, s + (n0 - t) * S
                if 0 <= oy < OH and 0 <= u < R:
                    reached.setdefault((oy, u), []).append((i, t, s))
                    assert i * S + s < blocks.covered  # the row it writes is a row of the strip
    assert sorted(reached) == [(oy, u) for oy in range(OH) for u in range(R)]
    assert all(len(v) == 1 for v in reached.values())
    starts = [a for a, _, _, _ in blocks.runs]
    assert starts[0] == 0 and [b for _, b, _, _ in blocks.runs] == starts[1:] + [blocks.n]
    for a, b, t0, t1 in blocks.runs:
        for (i, t, _) in (v[0] for v in reached.values()):
            if a <= i < b:
                assert t0 <= t < t1, "a run leaves out a slot one of its blocks needs"
    slots = sum((b - a) * (t1 - t0) for a, b, t0, t1 in blocks.runs)
    needed = sum(min(T, OH + n0 - i) - max(0, n0 - i) for i in range(blocks.n))
    if call_flops == 0.0:
        assert slots == needed
    if call_flops == 1e30:
        assert len(blocks.runs) == 1


def test_block_weights_place_each_location_at_its_rows():
    """Block i, slot t holds W[oy = i - n0 + t] at its field rows u = s + (n0 - t) * S, and
    zeros where that location does not exist or its field does not reach."""
    _, Wt, _ = draw(np.random.default_rng(8), np.float64, 1, 2, 3, 5, 2, 14, 7)  # OH = 5, OW = 2
    OH, R, S, K, C = 5, 5, 2, 3, 2
    blocks = lc._row_blocks(OH, R, S, 1.0, lc._CALL_FLOPS)
    A = lc._BlockWeights(Wt, blocks, S).column(1).reshape(blocks.n, blocks.T, K, S, C, R)
    for i in range(blocks.n):
        for t in range(blocks.T):
            for s in range(S):
                oy, u = i - blocks.n0 + t, s + (blocks.n0 - t) * S
                if 0 <= oy < OH and u < R:
                    np.testing.assert_array_equal(A[i, t, :, s], Wt[oy, 1, :, :, u])
                else:
                    assert not A[i, t, :, s].any()


@pytest.mark.parametrize("bands", [1, 2, 3, 100])
def test_adjoint_in_bands_matches_reference(monkeypatch, bands):
    """The adjoint's image is summed in bands of columns (the first in the output itself);
    bands that do not divide the 6 columns, and more bands than columns, add every column once."""
    monkeypatch.setattr(lc, "_BANDS", bands)
    x, Wt, df = draw(np.random.default_rng(9), np.float64, 2, 2, 3, 4, 2, 9, 15)  # OW = 6
    assert_matches(lc_transpose(df, Wt, 2, (9, 15)), ref_transpose(df, Wt, 2, (9, 15)), np.float64)


def test_ufunc_buffers_are_small_inside_and_restored_after(monkeypatch):
    seen = []
    real_strip = lc._column_strip

    def spy(*args):
        seen.append(np.getbufsize())
        return real_strip(*args)

    monkeypatch.setattr(lc, "_column_strip", spy)
    monkeypatch.setattr(lc, "_MIN_THREADED_FLOPS", 0)
    monkeypatch.setenv("CATNEURON_THREADS", "2")
    before = np.getbufsize()
    x, Wt, _ = draw(np.random.default_rng(3), np.float64, 2, 2, 3, 4, 1, 9, 9)
    lc_apply(x, Wt, 1)
    assert len(seen) == 6 and set(seen) == {lc._UFUNC_BUFFER} != {before}  # in both threads
    assert np.getbufsize() == before


# ---- threads ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("S", [1, 3])
def test_thread_count_gives_bit_identical_results(monkeypatch, dtype, S):
    monkeypatch.setattr(lc, "_MIN_THREADED_FLOPS", 0)  # these small columns go to the pool too
    monkeypatch.setattr(lc, "_MIN_THREADED_ADJOINT_FLOPS", 0)
    x, Wt, df = draw(np.random.default_rng(2), dtype, 5, 3, 4, 6, S, 27, 31)
    results = {}
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("CATNEURON_THREADS", threads)
        results[threads] = (
            lc_apply(x, Wt, S), lc_transpose(df, Wt, S, x.shape[2:]), lc_weight_grad(x, df, S, 6)
        )
    for threads in ("2", "3"):
        for got, want in zip(results[threads], results["1"]):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("min_flops, pooled", [(0, True), (float("inf"), False)])
def test_columns_go_to_the_pool_only_when_worth_it(monkeypatch, min_flops, pooled):
    import threading

    monkeypatch.setenv("CATNEURON_THREADS", "2")
    monkeypatch.setattr(lc, "_MIN_THREADED_FLOPS", min_flops)
    x, Wt, _ = draw(np.random.default_rng(6), np.float64, 2, 2, 3, 4, 1, 9, 9)
    where = []
    real_strip = lc._column_strip

    def spy(xt, ox, *args):
        where.append((ox, threading.current_thread() is threading.main_thread()))
        return real_strip(xt, ox, *args)

    monkeypatch.setattr(lc, "_column_strip", spy)
    lc_apply(x, Wt, 1)
    if pooled:  # one run of columns per thread: the first half in the pool, the rest here
        assert sorted(where) == [(0, False), (1, False), (2, False), (3, True), (4, True), (5, True)]
    else:
        assert sorted(where) == [(ox, True) for ox in range(6)]


@pytest.mark.parametrize("min_flops, pooled", [(0, True), (float("inf"), False)])
def test_the_adjoint_has_its_own_threshold_for_threads(monkeypatch, min_flops, pooled):
    """Its bands cost more than other kernels' runs of columns: it goes to the pool only above
    ``_MIN_THREADED_ADJOINT_FLOPS``, whatever ``_MIN_THREADED_FLOPS`` says."""
    import threading

    monkeypatch.setenv("CATNEURON_THREADS", "2")
    monkeypatch.setattr(lc, "_MIN_THREADED_FLOPS", 0)
    monkeypatch.setattr(lc, "_MIN_THREADED_ADJOINT_FLOPS", min_flops)
    _, Wt, df = draw(np.random.default_rng(6), np.float64, 2, 2, 3, 4, 1, 9, 9)
    homes = []
    real_init = lc._BlockWeights.__init__

    def spy(self, *args):
        homes.append(threading.current_thread() is threading.main_thread())
        real_init(self, *args)

    monkeypatch.setattr(lc._BlockWeights, "__init__", spy)
    lc_transpose(df, Wt, 1, (9, 9))
    assert sorted(homes) == ([False, True] if pooled else [True, True])  # one per band


def test_tasks_come_back_in_order_and_errors_reach_the_caller(monkeypatch):
    monkeypatch.setenv("CATNEURON_THREADS", "3")
    monkeypatch.setattr(lc, "_MIN_THREADED_FLOPS", 0)
    assert lc._run_in_order([lambda i=i: i * i for i in range(7)], 1.0) == [i * i for i in range(7)]

    def fail():
        raise KeyError("in a pool thread")

    with pytest.raises(KeyError, match="in a pool thread"):
        lc._run_in_order([fail] + [lambda: 0] * 5, 1.0)


# ---- pairs of kernels (a layer's backward) ----------------------------------------------------

def _where(log, tag, value=None):
    """A kernel call that logs which thread it and its column tasks ran in."""
    import threading

    def call():
        log.append((tag, threading.current_thread().name))
        tasks = [lambda: log.append((f"{tag} task", threading.current_thread().name))] * 4
        lc._run_in_order(tasks, float("inf"))
        return tag if value is None else value()
    return call


def test_a_pair_runs_one_kernel_per_thread(monkeypatch):
    import threading

    monkeypatch.setenv("CATNEURON_THREADS", "2")
    monkeypatch.setattr(lc, "_MIN_THREADED_FLOPS", 0)
    log = []
    assert lc.run_pair(_where(log, "first"), _where(log, "second"), 1.0) == ("first", "second")
    here = threading.current_thread().name
    calls = dict((t, name) for t, name in log if "task" not in t)
    assert calls["first"] == here and calls["second"] != here  # the pool's
    assert sum(t == "first task" for t, _ in log) == sum(t == "second task" for t, _ in log) == 4


def test_the_thread_done_first_helps_the_other_kernel_from_the_back(monkeypatch):
    """The first kernel's first task cannot finish until its last one has run: only the other
    thread, done with its own (one quick task), can run that one, and the results still come
    back in order. If no one helped, the first task would time out and the test fail."""
    import threading

    monkeypatch.setenv("CATNEURON_THREADS", "2")
    monkeypatch.setattr(lc, "_MIN_THREADED_FLOPS", 0)
    first_started, last_ran, ran_in = threading.Event(), threading.Event(), {}

    def task(i):
        ran_in[i] = threading.current_thread().name
        if i == 0:
            first_started.set()  # (its tasks are out for the taking by now)
            assert last_ran.wait(timeout=10), "nobody ran the last task"
        if i == 5:
            last_ran.set()
        return i * i

    def first():
        return lc._run_in_order([partial(task, i) for i in range(6)], float("inf"))

    def second():  # done as soon as the first kernel's tasks can be helped with
        return lc._run_in_order([lambda: first_started.wait(timeout=10) and "quick"], float("inf"))

    assert lc.run_pair(first, second, 1.0) == ([i * i for i in range(6)], ["quick"])
    here = threading.current_thread().name
    assert ran_in[0] == here and ran_in[5] != here


@pytest.mark.parametrize("where", ["owner", "helper"])
def test_an_error_in_a_shared_task_reaches_the_owner(monkeypatch, where):
    """A task that fails in the helper's thread, or in the owner's while the helper runs one,
    is raised by the kernel that owns it, after the helper is done with it."""
    import threading

    monkeypatch.setenv("CATNEURON_THREADS", "2")
    monkeypatch.setattr(lc, "_MIN_THREADED_FLOPS", 0)
    first_started, helper_started = threading.Event(), threading.Event()
    finished = []

    def task(i):
        if i == 3:  # the last task: the helper takes it
            helper_started.set()
            if where == "helper":
                raise KeyError("in the helper")
            time.sleep(0.05)
            finished.append(i)
        if i == 0:
            first_started.set()
            assert helper_started.wait(timeout=10)
            if where == "owner":
                raise KeyError("in the owner")
        return i

    def first():
        return lc._run_in_order([partial(task, i) for i in range(4)], float("inf"))

    def second():
        return lc._run_in_order([lambda: first_started.wait(timeout=10)], float("inf"))

    with pytest.raises(KeyError, match=f"in the {where}"):
        lc.run_pair(first, second, 1.0)
    if where == "owner":
        assert finished == [3]  # the owner waited for the helper's task before raising


@pytest.mark.parametrize("threads, min_flops, max_flops", [
    ("1", 0, float("inf")),  # one thread allowed
    ("2", float("inf"), float("inf")),  # too little work
    ("2", 0, 0.5),  # too much: each kernel splits its own columns
])
def test_a_pair_runs_in_order_here_when_not_worth_two_threads(monkeypatch, threads, min_flops,
                                                               max_flops):
    import threading

    monkeypatch.setenv("CATNEURON_THREADS", threads)
    monkeypatch.setattr(lc, "_MIN_THREADED_FLOPS", min_flops)
    monkeypatch.setattr(lc, "_MAX_PAIR_FLOPS", max_flops)
    log = []
    lc.run_pair(_where(log, "first"), _where(log, "second"), 1.0)
    calls = [(t, name) for t, name in log if "task" not in t]  # (each kernel splits its own tasks)
    assert calls == [("first", threading.current_thread().name), ("second", threading.current_thread().name)]


@pytest.mark.parametrize("failing", ["first", "second"])
def test_an_error_in_either_kernel_of_a_pair_reaches_the_caller(monkeypatch, failing):
    monkeypatch.setenv("CATNEURON_THREADS", "2")
    monkeypatch.setattr(lc, "_MIN_THREADED_FLOPS", 0)
    log = []

    def fail():
        raise KeyError(f"in the {failing} kernel")

    calls = {tag: _where(log, tag, fail if tag == failing else None) for tag in ("first", "second")}
    with pytest.raises(KeyError, match=f"in the {failing} kernel"):
        lc.run_pair(calls["first"], calls["second"], 1.0)
    assert sum(t == "second task" for t, _ in log) == 4  # the pool's kernel had finished
    assert lc.run_pair(lambda: 1, lambda: 2, 1.0) == (1, 2)  # and the pool still works


@pytest.mark.parametrize("S", [1, 2])
def test_layer_backwards_are_bit_identical_on_one_thread_and_in_pairs(monkeypatch, S):
    from refimpl.local_decoder import local_decoder_backward, local_decoder_forward
    from refimpl.local_filter import local_filter_backward, local_filter_forward

    monkeypatch.setattr(lc, "_MIN_THREADED_FLOPS", 0)  # small kernels pair up too
    monkeypatch.setattr(lc, "_MIN_THREADED_ADJOINT_FLOPS", 0)  # and the decoder's forward splits
    x, Wt, df = draw(np.random.default_rng(9), np.float32, 4, 3, 4, 6, S, 21, 23)
    out = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("CATNEURON_THREADS", threads)
        _, enc = local_filter_forward(x, {"W1": Wt}, stride=S)
        xhat, dec = local_decoder_forward(df, {"W2": Wt}, stride=S, out_size=x.shape[2:])
        out[threads] = (local_filter_backward(df, enc), local_decoder_backward(xhat, dec))
    for (d1, g1), (d2, g2) in zip(out["1"], out["2"]):
        np.testing.assert_array_equal(d1, d2)
        for key in g1:
            np.testing.assert_array_equal(g1[key], g2[key])


def blas_threads():
    """Threads of NumPy's own BLAS (the one the kernels' matrix products run on); BLAS
    libraries that other packages load later (scipy, torch) are not the kernels' concern."""
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info()
            if lib["user_api"] == "blas" and "numpy" in lib["filepath"]]


def test_blas_threads_are_limited_inside_and_restored_after(monkeypatch):
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_limits

    monkeypatch.setenv("CATNEURON_THREADS", "2")
    monkeypatch.setattr(lc, "_MIN_THREADED_FLOPS", 0)
    x, Wt, df = draw(np.random.default_rng(3), np.float64, 2, 2, 3, 4, 1, 9, 9)
    seen = []
    real_strip = lc._column_strip

    def spy(*args):
        seen.append(blas_threads())
        return real_strip(*args)

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        monkeypatch.setattr(lc, "_column_strip", spy)
        lc_apply(x, Wt, 1)
        assert seen and all(n == [1] * len(before) for n in seen)
        assert blas_threads() == before
        # An error inside a column still restores the limit.
        def broken(*args):
            raise RuntimeError("a column failed")

        monkeypatch.setattr(lc, "_column_strip", broken)
        with pytest.raises(RuntimeError, match="a column failed"):
            lc_apply(x, Wt, 1)
        assert blas_threads() == before


def test_inputs_already_in_the_kernels_layout_give_the_same_results():
    """A caller that changes an array's layout once (kernel_layout) and hands it to several
    kernels gets what each kernel computes on its own; an encoder cache made without the
    batch-last input (xt=None) still works."""
    from refimpl.local_filter import LocalFilterCache, local_filter_backward, local_filter_forward

    x, Wt, df = draw(np.random.default_rng(11), np.float64, 3, 2, 3, 4, 2, 11, 9)
    xt, dft = lc.kernel_layout(x), lc.kernel_layout(df)
    assert xt.shape == (2, 11, 9, 3) and dft.shape == (3, 4, 3, 3)
    np.testing.assert_array_equal(lc_apply(x, Wt, 2, xt=xt), lc_apply(x, Wt, 2))
    np.testing.assert_array_equal(lc_transpose(df, Wt, 2, (11, 9), ft=dft), lc_transpose(df, Wt, 2, (11, 9)))
    np.testing.assert_array_equal(lc_weight_grad(x, df, 2, 4, xt=xt, dft=dft), lc_weight_grad(x, df, 2, 4))
    _, cache = local_filter_forward(x, {"W1": Wt}, stride=2)
    dx, grads = local_filter_backward(df, cache)
    dx0, grads0 = local_filter_backward(df, LocalFilterCache(x, Wt, 2))
    np.testing.assert_array_equal(dx, dx0)
    np.testing.assert_array_equal(grads["W1"], grads0["W1"])
