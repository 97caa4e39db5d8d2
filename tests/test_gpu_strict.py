"""The strict CuPy stand-in (gpu.strict) itself: it refuses what CuPy refuses, allows what CuPy
allows, and so catches a stray ``np.`` on device data that NumPy alone would let through."""

import copy
import pickle

import numpy as np
import pytest

import gpu.strict as xp
from gpu.device import to_device, to_host
from refimpl.backend import get_xp, to_numpy


@pytest.fixture
def x():
    return xp.asarray(np.arange(12.0).reshape(3, 4))


HOST = np.ones((3, 4))

REFUSED = {
    "np.asarray": lambda x: np.asarray(x),
    "np.array": lambda x: np.array(x),
    "np.sum": lambda x: np.sum(x),
    "np.exp (ufunc)": lambda x: np.exp(x),
    "np.pad": lambda x: np.pad(x, 1),
    "device + host": lambda x: x + HOST,
    "host + device": lambda x: HOST + x,
    "host * device": lambda x: HOST * x,
    "device - 0-d host": lambda x: x - np.asarray(1.0),
    "device @ host": lambda x: x @ HOST.T,
    "host @ device": lambda x: HOST.T @ x,
    "device < host": lambda x: x < HOST,
    "host += device": lambda x: np.zeros((3, 4)).__iadd__(x),
    "device += host": lambda x: x.__iadd__(HOST),
    "float(non-0-d)": lambda x: float(x),
    "int(non-0-d)": lambda x: int(x[0]),
    "bool(non-0-d)": lambda x: bool(x),
    "iterate 0-d": lambda x: list(x.sum()),
    "setitem host array": lambda x: x.__setitem__(slice(None), HOST),
    "xp.<func>(host)": lambda x: xp.exp(HOST),
    "xp.maximum(device, host)": lambda x: xp.maximum(x, HOST),
    "xp.ascontiguousarray(host)": lambda x: xp.ascontiguousarray(HOST),
    "method(host)": lambda x: x.dot(HOST.T),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_implicit_host_device_traffic_raises_type_error(x, name):
    with pytest.raises(TypeError):
        REFUSED[name](x)


def test_the_same_operations_work_on_numpy():
    """So each refusal above is the stand-in's doing, not a broken expression."""
    for name, op in REFUSED.items():
        if name not in ("iterate 0-d", "float(non-0-d)", "int(non-0-d)", "bool(non-0-d)",
                        "xp.<func>(host)", "xp.maximum(device, host)", "xp.ascontiguousarray(host)"):
            op(np.arange(12.0).reshape(3, 4))


def test_scalars_mix_with_device_arrays_as_on_cupy(x):
    host = np.arange(12.0).reshape(3, 4)
    for op in (lambda a: 2.0 * a, lambda a: a * np.float32(3), lambda a: np.float64(2) - a,
               lambda a: a ** 0.5, lambda a: -a + 1, lambda a: abs(a) / 2, lambda a: a > 3):
        out = op(x)
        assert isinstance(out, xp.ndarray)
        np.testing.assert_array_equal(to_numpy(out), op(host))


def test_reductions_and_indexing_give_0d_device_arrays(x):
    s, e = x.sum(), x[1, 2]
    assert isinstance(s, xp.ndarray) and s.shape == () and float(s) == 66.0
    assert isinstance(e, xp.ndarray) and int(e) == 6 and bool(x[0, 1])
    assert [float(v) for v in x[0]] == [0.0, 1.0, 2.0, 3.0]  # iteration yields device arrays
    assert all(isinstance(v, xp.ndarray) for v in x)


def test_namespace_is_found_by_get_xp_and_returns_device_arrays(x):
    assert get_xp(x) is xp and get_xp(np.ones(2), x) is xp
    for out in (xp.zeros((2, 2)), xp.pad(x, [(1, 1), (0, 0)]), xp.where(x > 3, x, 0),
                xp.maximum(x, 2.0), xp.linalg.norm(x, axis=0), xp.add.reduce(x, axis=1)):
        assert isinstance(out, xp.ndarray)
    assert xp.float32 is np.float32 and xp.pi == np.pi and xp.ndarray is type(x)
    with pytest.raises(AttributeError, match="stand-in"):
        xp.no_such_function
    with pytest.raises(AttributeError, match="stand-in"):
        x.tobytes  # not in the CuPy-checked method list


def test_transfers_are_explicit_copies(x):
    host = np.ones(3)
    dev = xp.asarray(host)
    host[0] = 5.0  # an upload is a copy: the device array does not see later host writes
    assert float(dev[0]) == 1.0
    back = xp.asnumpy(dev)
    assert isinstance(back, np.ndarray) and back.tolist() == [1.0, 1.0, 1.0]
    back[0] = 7.0
    assert float(dev[0]) == 1.0 and x.get().shape == (3, 4)
    assert xp.asarray(dev) is dev  # already on the device: no copy, as in CuPy


def test_views_and_in_place_updates_write_through(x):
    flat = x.reshape(-1)  # a view, as on CuPy
    flat[0] = 100.0
    y = x
    y += 1.0
    assert y is x and float(x[0, 0]) == 101.0 and float(x[2, 3]) == 12.0
    x[1] = xp.zeros(4)
    x[2] = np.asarray(3.0)  # a 0-d host value fills, as cupy's fill does
    assert to_numpy(x)[1:].tolist() == [[0.0] * 4, [3.0] * 4]


def test_copy_and_pickle_give_independent_device_arrays(x):
    for other in (copy.copy(x), copy.deepcopy(x), pickle.loads(pickle.dumps(x))):
        assert isinstance(other, xp.ndarray) and other is not x
        other[0, 0] = -1.0
        assert float(x[0, 0]) == 0.0


def test_to_device_and_to_host_move_dicts_and_leave_scalars(x):
    params = {"W1": np.ones((2, 2)), "W2": np.zeros(3)}
    dev = to_device(params, xp)
    assert all(isinstance(v, xp.ndarray) for v in dev.values())
    host = to_host(dev)
    assert all(type(v) is np.ndarray for v in host.values())
    assert to_device(1.0, xp) == 1.0 and to_device(None, xp) is None and to_host(2) == 2
    assert type(to_device(x, np)) is np.ndarray  # device -> host when the target is numpy
    with pytest.raises(TypeError, match="to_device: a must be an array"):
        to_device([1.0, 2.0], xp)
    with pytest.raises(TypeError, match="to_host: a must be an array"):
        to_host("W1")


def _window_sum_with_a_stray_np(a, w, stride):
    """refimpl.windows.window_sum's direct loop with the bug this suite exists for: ``np.zeros``,
    not ``xp.``."""
    P, S = w.shape[0], stride
    OH, OW = (a.shape[-2] - P) // S + 1, (a.shape[-1] - P) // S + 1
    out = np.zeros((*a.shape[:-2], OH, OW), dtype=a.dtype)
    for u in range(P):
        for v in range(P):
            out += float(w[u, v]) * a[..., u : u + S * (OH - 1) + 1 : S, v : v + S * (OW - 1) + 1 : S]
    return out


def test_a_stray_np_passes_on_numpy_and_fails_on_the_stand_in():
    from refimpl.windows import window_sum

    a, w = np.random.default_rng(0).standard_normal((2, 3, 6, 6)), np.ones((3, 3))
    np.testing.assert_allclose(_window_sum_with_a_stray_np(a, w, 1), window_sum(a, w, 1), rtol=1e-13)
    with pytest.raises(TypeError):
        _window_sum_with_a_stray_np(xp.asarray(a), w, 1)
