"""Every sublayer in refimpl.SUBLAYERS, driven by the registry (one table, minitorch-style).

- gradients: central differences in float64 against the analytic backward, every parameter and the
  input, relative error < 1e-6, on geometries drawn at random (field sizes, strides, maps, channels,
  batch) by each entry's own case generator;
- float32: the same forward in float32 stays float32 and agrees with float64;
- the checker itself can fail: a backward that is off by 0.1% is caught.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl import SUBLAYERS
from refimpl.gradcheck import TOLERANCE, check_gradients

NAMES = list(SUBLAYERS)
seeds = st.integers(0, 2**32 - 1)


@pytest.mark.parametrize("name", NAMES)
@given(seed=seeds)
def test_gradients_match_central_differences(name, seed):
    entry = SUBLAYERS[name]
    rng = np.random.default_rng(seed)
    case = entry.case(rng, np.float64)
    result = check_gradients(entry, case, rng=rng)
    assert {a.argument for a in result.args} == {"x", *case.params}
    for a in result.args:
        assert a.rel_err < TOLERANCE, f"{name}: d/d{a.argument} {a.shape} rel err {a.rel_err:.2e}"


@pytest.mark.parametrize("name", NAMES)
@given(seed=seeds)
def test_backward_returns_one_gradient_per_argument(name, seed):
    entry = SUBLAYERS[name]
    case = entry.case(np.random.default_rng(seed), np.float64)
    y, cache = entry.forward(case.x, case.params, **case.hyper)
    dx, grads = entry.backward(case.dy, cache)
    assert dx.shape == case.x.shape and dx.dtype == case.x.dtype
    assert set(grads) == set(case.params)
    for k, g in grads.items():
        assert g.shape == case.params[k].shape and g.dtype == case.params[k].dtype


@pytest.mark.parametrize("name", NAMES)
@given(seed=seeds)
def test_float32_agrees_with_float64(name, seed):
    entry = SUBLAYERS[name]
    case32 = entry.case(np.random.default_rng(seed), np.float32)
    to64 = lambda a: a.astype(np.float64)  # noqa: E731
    y32, cache32 = entry.forward(case32.x, case32.params, **case32.hyper)
    y64, cache64 = entry.forward(to64(case32.x), {k: to64(v) for k, v in case32.params.items()},
                                 **case32.hyper)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4 * (1 + np.abs(y64).max()))
    dy64 = case32.dy if np.isscalar(case32.dy) else to64(case32.dy)
    dx32, g32 = entry.backward(case32.dy, cache32)
    dx64, g64 = entry.backward(dy64, cache64)
    assert dx32.dtype == np.float32
    for a32, a64 in [(dx32, dx64)] + [(g32[k], g64[k]) for k in g64]:
        np.testing.assert_allclose(a32, a64, rtol=1e-3, atol=1e-3 * (1 + np.abs(a64).max()))


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_catches_a_wrong_backward(name):
    """A backward off by 0.1% (or with one entry nudged) must fail the check."""
    entry = SUBLAYERS[name]
    rng = np.random.default_rng(1)
    case = entry.case(rng, np.float64)

    def wrong_backward(dy, cache):
        dx, grads = entry.backward(dy, cache)
        return dx * 1.001, {k: g * 1.001 for k, g in grads.items()}

    broken = type(entry)(entry.name, entry.equation, entry.forward, wrong_backward, entry.case)
    result = check_gradients(broken, case, rng=rng)
    assert not result.passed
    assert all(a.rel_err > 1e-4 for a in result.args if np.abs(a.rel_err) > 0)


def test_cases_are_deterministic_per_seed():
    for name, entry in SUBLAYERS.items():
        a = entry.case(np.random.default_rng(7), np.float64)
        b = entry.case(np.random.default_rng(7), np.float64)
        np.testing.assert_array_equal(a.x, b.x)
        assert a.hyper == b.hyper, name
