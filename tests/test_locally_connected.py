"""The three locally connected kernels against a naive, independent implementation.

The reference takes every receptive field with ``numpy.lib.stride_tricks.sliding_window_view``
and contracts it with ``einsum`` (forward and weight gradient); the adjoint is a plain loop that
adds each location's field into the image. It is computed in float64 from the same inputs, so
float32 results are checked to float32 rounding. Geometries include odd strides, sizes that the
stride does not divide, non-square images and a single column. The kernels split columns across
threads: CATNEURON_THREADS=1 and more threads must agree bit for bit.
"""

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


# ---- the internal layout and the adjoint's chunks --------------------------------------------

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


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 4 * 6 * 2 * 8])  # 1 and 2 groups a chunk
def test_adjoint_in_chunks_matches_reference(monkeypatch, chunk_bytes):
    """The adjoint makes its products a few groups at a time; a chunk that does not divide
    the column (7 locations, 4 groups of 2) must still add every location once."""
    monkeypatch.setattr(lc, "_CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(lc, "_GROUP", 2)
    x, Wt, df = draw(np.random.default_rng(5), np.float64, 2, 3, 2, 4, 1, 10, 6)  # OH = 7
    assert_matches(lc_transpose(df, Wt, 1, (10, 6)), ref_transpose(df, Wt, 1, (10, 6)), np.float64)


@pytest.mark.parametrize("group", [1, 2, 3, 5, 50])
@pytest.mark.parametrize("S", [1, 2, 3])
def test_adjoint_groups_of_any_size_match_reference(monkeypatch, group, S):
    """Groups that divide the column or not (OH = 9, 5 or 4 here), a last group that runs past
    the image's bottom edge, one group bigger than the column, and an image taller than its
    fields reach ((H - R) % S != 0)."""
    monkeypatch.setattr(lc, "_GROUP", group)
    H = 14
    x, Wt, df = draw(np.random.default_rng(7), np.float64, 2, 2, 3, 6, S, H, 9)
    assert_matches(lc_transpose(df, Wt, S, (H, 9)), ref_transpose(df, Wt, S, (H, 9)), np.float64)


@pytest.mark.parametrize("R, S, g", [(18, 2, 4), (18, 1, 7), (8, 2, 2), (5, 2, 1), (3, 1, 2), (1, 1, 1)])
def test_group_size_keeps_the_zeros_under_a_quarter(R, S, g):
    assert lc._group_size(R, S) == g
    assert (g - 1) * S / (R + (g - 1) * S) <= 0.25  # the share of a group's product that is padding


def test_grouped_weights_place_each_location_at_its_rows():
    """Group i holds W[i*g + j] at field rows j*S .. j*S + R and zeros elsewhere."""
    _, Wt, _ = draw(np.random.default_rng(8), np.float64, 1, 2, 3, 4, 2, 12, 6)  # OH = 5
    g, S, R, K, C = 2, 2, 4, 3, 2
    A = lc._grouped_weights(Wt, 1, g, S).reshape(3, g, K, C, R + (g - 1) * S, R)
    for oy in range(5):
        i, j = divmod(oy, g)
        np.testing.assert_array_equal(A[i, j, :, :, j * S : j * S + R], Wt[oy, 1])
        outside = np.delete(A[i, j], np.s_[j * S : j * S + R], axis=2)
        assert not outside.any()
    assert not A[2, 1].any()  # location 5 does not exist


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


def test_a_pair_runs_one_kernel_per_thread_each_with_its_tasks_at_home(monkeypatch):
    import threading

    monkeypatch.setenv("CATNEURON_THREADS", "2")
    monkeypatch.setattr(lc, "_MIN_THREADED_FLOPS", 0)
    log = []
    assert lc.run_pair(_where(log, "first"), _where(log, "second"), 1.0) == ("first", "second")
    here = threading.current_thread().name
    threads = {tag: {name for t, name in log if t.startswith(tag)} for tag in ("first", "second")}
    assert threads["first"] == {here}
    assert len(threads["second"]) == 1 and threads["second"] != {here}  # the pool's, tasks too
    assert len(log) == 10


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
