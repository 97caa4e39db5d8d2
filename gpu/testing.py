"""Test helpers: run any test on the CuPy stand-in (always) and on CuPy (when there is a GPU).

One line in a test file brings in the fixture::

    from gpu.testing import device_backend  # noqa: F401  (a pytest fixture)

    def test_something(device_backend):
        xp = device_backend.xp                      # gpu.strict, or cupy
        x = device_backend.to_device(host_array)    # host -> device
        ... run the code under test, e.g. with device=device_backend.device ...
        y = device_backend.to_host(result)          # device -> host, to compare with NumPy

Each test then runs twice: ``[strict]`` on the CPU, where any implicit host <-> device
conversion raises TypeError, and ``[cuda]``, marked ``gpu`` and skipped with the reason
"no CUDA device" where there is none. Code that selects its backend by name (train, simcluster)
is run on the stand-in by passing it ``device="strict"`` (:func:`gpu.device.select_backend`).
This module imports pytest; it is for tests only (``import gpu`` does not import it).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np
import pytest

from refimpl.registry import Case, Sublayer

from .device import cuda_status, select_backend, to_device, to_host

NO_CUDA = "no CUDA device"


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    return cuda_status().available


def needs_cuda(test):
    """Mark a test ``gpu`` and skip it with the reason "no CUDA device" where there is none."""
    test = pytest.mark.gpu(test)
    return pytest.mark.skipif(not cuda_available(), reason=NO_CUDA)(test)


class Backend(NamedTuple):
    device: str  # "strict" or "cuda": what select_backend / --device take
    xp: Any  # the namespace

    @property
    def exact(self) -> bool:
        """The stand-in computes with NumPy underneath: its results equal NumPy's bit for bit."""
        return self.device == "strict"

    def to_device(self, a):
        return to_device(a, self.xp)

    def to_host(self, a):
        return to_host(a)

    def case(self, case: Case) -> Case:
        """A registry case with its arrays on this device (the scalar dy of eq. 1 stays)."""
        return Case(self.to_device(case.x), self.to_device(case.params), dict(case.hyper),
                    self.to_device(case.dy))


def backend(device: str) -> Backend:
    return Backend(device, select_backend(device))


DEVICE_PARAMS = [
    pytest.param("strict", id="strict"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.gpu),  # skipped by the fixture
]


@pytest.fixture(params=DEVICE_PARAMS)
def device_backend(request) -> Backend:
    if request.param == "cuda" and not cuda_available():
        pytest.skip(NO_CUDA)
    return backend(request.param)


def on_device(entry: Sublayer, dev: Backend) -> Sublayer:
    """``entry`` with host arrays in and device arrays inside: forward moves x and params to the
    device, backward moves dy. So :func:`refimpl.gradcheck.check_gradients`, which perturbs host
    float64 copies and reads results with ``to_numpy``, checks the device computation."""

    def forward(x, params, **hyper):
        return entry.forward(dev.to_device(x), dev.to_device(params), **hyper)

    def backward(dy, cache):
        return entry.backward(dev.to_device(dy), cache)

    return Sublayer(entry.name, entry.equation, forward, backward, entry.case)


def assert_close(actual, expected: np.ndarray, *, exact: bool, grad: bool = False, what: str = "") -> None:
    """``actual`` (host) equals ``expected`` bit for bit if ``exact``; else to a tolerance
    relative to ``1 + max|expected|``: float64 1e-10; float32 1e-4, or 1e-3 for gradients (the
    suite's float32 tolerances; another summation order on a GPU moves the last bits, and LCN's
    division by max(c, sigma) can magnify that by 1/c)."""
    actual = np.asarray(actual)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (
        f"{what}: {actual.shape} {actual.dtype} != {expected.shape} {expected.dtype}")
    if exact:
        np.testing.assert_array_equal(actual, expected, err_msg=what)
        return
    tol = 1e-10 if expected.dtype == np.float64 else (1e-3 if grad else 1e-4)
    scale = 1.0 + float(np.abs(expected).max(initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)
