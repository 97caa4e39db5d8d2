"""Properties the paper's equations imply, checked on random inputs."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from refimpl import (l2pool_forward, lcn_forward, local_decoder_forward,
                     local_filter_forward)

seeds = st.integers(0, 2**32 - 1)


@given(seed=seeds)
def test_l2pool_is_nonnegative_and_sqrt_eps_on_zeros(seed):
    rng = np.random.default_rng(seed)
    P, S = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    f = rng.standard_normal((2, 3, 7, 6))
    eps = float(rng.uniform(1e-4, 1.0))
    p, _ = l2pool_forward(f, window=P, stride=S, eps=eps)
    assert (p >= np.sqrt(eps)).all()
    p0, _ = l2pool_forward(np.zeros_like(f), window=P, stride=S, eps=eps)
    np.testing.assert_allclose(p0, np.sqrt(eps), rtol=1e-15)


@given(seed=seeds)
def test_l2pool_of_one_spike_is_its_magnitude_in_every_window_that_holds_it(seed):
    rng = np.random.default_rng(seed)
    f = np.zeros((1, 1, 9, 9))
    y, x, a = int(rng.integers(0, 9)), int(rng.integers(0, 9)), float(rng.uniform(1, 5))
    f[0, 0, y, x] = a
    p, _ = l2pool_forward(f, window=3, stride=1, eps=1e-12)
    inside = np.zeros((7, 7), bool)
    inside[max(0, y - 2) : y + 1, max(0, x - 2) : x + 1] = True
    np.testing.assert_allclose(p[0, 0][inside], a, rtol=1e-9)
    np.testing.assert_allclose(p[0, 0][~inside], 1e-6, rtol=1e-9)


@given(seed=seeds, border=st.sampled_from(["renorm", "zero"]))
def test_lcn_of_a_constant_image_is_zero_away_from_the_borders(seed, border):
    rng = np.random.default_rng(seed)
    window = int(rng.choice([3, 5]))
    h = np.full((2, 3, 12, 11), float(rng.uniform(-5, 5)))
    y, _ = lcn_forward(h, window=window, width=1.0, border=border)
    r = window // 2
    np.testing.assert_allclose(y[:, :, r:-r, r:-r], 0.0, atol=1e-12)
    if border == "renorm":  # the window weights are rescaled at the border too
        np.testing.assert_allclose(y, 0.0, atol=1e-12)


@given(seed=seeds, a=st.floats(0.05, 50.0))
def test_lcn_is_unchanged_by_scaling_where_sigma_exceeds_c(seed, a):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((2, 3, 9, 9))
    y, cache = lcn_forward(h, window=5, width=1.0, c=0.01)
    ya, cache_a = lcn_forward(a * h, window=5, width=1.0, c=0.01)
    above = (cache.sigma > 0.01) & (cache_a.sigma > 0.01)  # (B, H, W)
    assert above.mean() > 0.9
    np.testing.assert_allclose(ya.transpose(0, 2, 3, 1)[above], y.transpose(0, 2, 3, 1)[above],
                               rtol=1e-10, atol=1e-12)


def test_lcn_divides_by_c_where_the_image_is_flat():
    """Where sigma < c the divisor is c: a faint ramp is amplified by 1/c, not normalised."""
    h = np.zeros((1, 1, 9, 9))
    h[0, 0, 4, 4] = 1e-4
    y, cache = lcn_forward(h, window=3, width=1.0, c=0.01)
    assert (cache.sigma < 0.01).all()
    np.testing.assert_allclose(y, cache.v / 0.01)


@given(seed=seeds)
def test_decoder_is_the_adjoint_of_the_encoder(seed):
    """<W x, y> == <x, W^T y> with W1 = W2 = W: the decoder has the transpose connectivity."""
    rng = np.random.default_rng(seed)
    R, S = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    OH, OW, K, C = (int(n) for n in rng.integers(1, 4, size=4))
    H, W = R + S * (OH - 1) + int(rng.integers(0, S)), R + S * (OW - 1) + int(rng.integers(0, S))
    Wt = rng.standard_normal((OH, OW, K, C, R, R))
    x = rng.standard_normal((2, C, H, W))
    f = rng.standard_normal((2, K, OH, OW))
    Wx, _ = local_filter_forward(x, {"W1": Wt}, stride=S)
    WTf, _ = local_decoder_forward(f, {"W2": Wt}, stride=S, out_size=(H, W))
    np.testing.assert_allclose(np.vdot(Wx, f), np.vdot(x, WTf), rtol=1e-10)


def test_local_filter_does_not_share_weights():
    """Changing the weights of one location changes only that location's output."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 8, 8))
    W1 = rng.standard_normal((3, 3, 2, 1, 4, 4))
    f, _ = local_filter_forward(x, {"W1": W1}, stride=2)
    W1b = W1.copy()
    W1b[1, 2] += 1.0
    fb, _ = local_filter_forward(x, {"W1": W1b}, stride=2)
    changed = np.abs(fb - f).max(axis=(0, 1)) > 0
    assert changed[1, 2] and changed.sum() == 1
