"""refimpl.windows: window sums and their adjoints, on the separable fast path and the direct
loop, against a reference written out position by position."""

import numpy as np
import pytest

from refimpl.l2pool import pooling_weights
from refimpl.lcn import gaussian_window
from refimpl.windows import separable, window_sum, window_sum_adjoint


def reference_window_sum(a, w, S):
    P = w.shape[0]
    OH, OW = (a.shape[-2] - P) // S + 1, (a.shape[-1] - P) // S + 1
    out = np.zeros(a.shape[:-2] + (OH, OW))
    for oy in range(OH):
        for ox in range(OW):
            patch = a[..., oy * S : oy * S + P, ox * S : ox * S + P]
            out[..., oy, ox] = (patch * w).sum(axis=(-2, -1))
    return out


def windows(rng, P):
    r, c = rng.standard_normal(P), rng.standard_normal(P)
    return {"ones": np.ones((P, P)), "gaussian": gaussian_window(P, 1.3) if P % 2 else None,
            "rank one": np.outer(r, c), "rank two": np.outer(r, c) + np.outer(c, r) + np.eye(P)}


def test_the_model_windows_take_the_separable_path():
    for P in (1, 3, 5, 7):
        assert separable(pooling_weights(P)) is not None
        r, c = separable(gaussian_window(P, 0.8))
        np.testing.assert_allclose(np.outer(r, c), gaussian_window(P, 0.8), rtol=1e-14)


def test_separable_refuses_what_is_not_rank_one():
    rng = np.random.default_rng(0)
    assert separable(windows(rng, 4)["rank two"]) is None
    assert separable(np.zeros((3, 3))) is None
    w = np.outer([1.0, -2.0, 0.5], [3.0, 0.0, -1.0])
    r, c = separable(w)
    np.testing.assert_allclose(np.outer(r, c), w, rtol=1e-15)


CASES = [(P, kind) for P in (1, 2, 3, 5) for kind in ("ones", "gaussian", "rank one", "rank two")
         if P % 2 or kind != "gaussian"]  # a centred Gaussian needs an odd window


@pytest.mark.parametrize("P,kind", CASES)
@pytest.mark.parametrize("S", [1, 2, 3])
def test_window_sum_and_its_adjoint_match_the_reference(P, kind, S):
    rng = np.random.default_rng(P * 10 + S)
    w = windows(rng, P)[kind]
    a = rng.standard_normal((2, 3, 11, 9))
    y = window_sum(a, w, S)
    np.testing.assert_allclose(y, reference_window_sum(a, w, S), rtol=1e-12, atol=1e-12)
    d = rng.standard_normal(y.shape)
    adj = window_sum_adjoint(d, w, S, a.shape[-2:])
    assert adj.shape == a.shape
    np.testing.assert_allclose((y * d).sum(), (a * adj).sum(), rtol=1e-12)  # <W a, d> = <a, W^T d>


def test_float32_stays_float32():
    a = np.random.default_rng(1).standard_normal((2, 4, 8, 8)).astype(np.float32)
    for w in (np.ones((3, 3)), gaussian_window(3, 1.0)):
        assert window_sum(a, w, 1).dtype == np.float32
        assert window_sum_adjoint(window_sum(a, w, 1), w, 1, (8, 8)).dtype == np.float32
