"""Every refimpl.SUBLAYERS entry on a device backend against NumPy, forward and backward.

``[strict]`` runs on the CuPy stand-in (any implicit host <-> device conversion inside refimpl
raises TypeError, and the results must equal NumPy's bit for bit, since NumPy computes
underneath); ``[cuda]`` runs on CuPy (marked ``gpu``, skipped with "no CUDA device" without one)
to the rounding of each dtype. The gradient check then runs with the sublayer computing on the
device.
"""

import numpy as np
import pytest

from gpu.testing import assert_close, device_backend, on_device  # noqa: F401 (a fixture)
from refimpl import SUBLAYERS
from refimpl.gradcheck import TOLERANCE, check_gradients

NAMES = list(SUBLAYERS)
SEEDS = range(4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward_match_numpy(device_backend, name, dtype):
    dev, entry = device_backend, SUBLAYERS[name]
    for seed in SEEDS:
        case = entry.case(np.random.default_rng(seed), dtype)
        y0, cache0 = entry.forward(case.x, case.params, **case.hyper)
        dx0, grads0 = entry.backward(case.dy, cache0)

        on = dev.case(case)
        y, cache = entry.forward(on.x, on.params, **on.hyper)
        dx, grads = entry.backward(on.dy, cache)
        assert isinstance(y, dev.xp.ndarray) and isinstance(dx, dev.xp.ndarray), "left the device"
        assert set(grads) == set(grads0)
        what = f"{name} seed {seed} {np.dtype(dtype).name}"
        assert_close(dev.to_host(y), np.asarray(y0), exact=dev.exact, what=f"{what} forward")
        assert_close(dev.to_host(dx), dx0, exact=dev.exact, grad=True, what=f"{what} dx")
        for k, g in grads.items():
            assert isinstance(g, dev.xp.ndarray), f"{what} d{k} left the device"
            assert_close(dev.to_host(g), grads0[k], exact=dev.exact, grad=True, what=f"{what} d{k}")


@pytest.mark.parametrize("name", NAMES)
def test_gradients_on_the_device_match_central_differences(device_backend, name):
    entry = SUBLAYERS[name]
    rng = np.random.default_rng(7)
    case = entry.case(rng, np.float64)
    result = check_gradients(on_device(entry, device_backend), case, rng=rng)
    assert {a.argument for a in result.args} == {"x", *case.params}
    for a in result.args:
        assert a.rel_err < TOLERANCE, f"{name}: d/d{a.argument} rel err {a.rel_err:.2e}"


def test_the_device_gradient_check_can_fail(device_backend):
    entry = SUBLAYERS["l2pool"]
    rng = np.random.default_rng(1)
    case = entry.case(rng, np.float64)

    def wrong_backward(dy, cache):
        dx, grads = entry.backward(dy, cache)
        return dx * 1.001, grads

    broken = type(entry)(entry.name, entry.equation, entry.forward, wrong_backward, entry.case)
    assert not check_gradients(on_device(broken, device_backend), case, rng=rng).passed


def test_mixing_a_host_parameter_with_device_input_is_caught(device_backend):
    """A parameter left on the host while the input is on the device fails loudly."""
    entry = SUBLAYERS["local_filter"]
    case = entry.case(np.random.default_rng(0), np.float64)
    with pytest.raises(TypeError):
        entry.forward(device_backend.to_device(case.x), case.params, **case.hyper)
