"""simcluster.wire: a message's body and back, in either encoding, without a transport."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from simcluster import wire
from simcluster.messages import Error, Ping, ShmArray, Stop, Tensor
from simcluster.partition import Halo


class FakeShm:
    """park/open without shared memory: the array is kept here under a made-up segment name."""

    def __init__(self):
        self.parked = {}

    def park(self, a):
        name = f"seg{len(self.parked)}"
        self.parked[name] = np.array(a)
        return ShmArray(name, tuple(a.shape), a.dtype.str, int(a.nbytes))

    def open(self, ref):
        return self.parked[ref.name]


@dataclass(frozen=True)
class Nested:
    inner: Any


@dataclass(frozen=True)
class Grads:
    step: int
    grads: dict
    shape: tuple
    note: Any = None


def roundtrip(msg, threshold=1 << 16):
    shm = FakeShm()
    encoding, body, parked = wire.encode(msg, shm.park, threshold)
    out, opened = wire.decode(encoding, body, shm.open)
    assert parked == opened == sum(a.nbytes for a in shm.parked.values())
    return encoding, out, shm


def assert_same(a, b):
    assert type(a) is type(b)
    for key, value in vars(a).items():
        other = vars(b)[key]
        if isinstance(value, dict):
            assert value.keys() == other.keys()
            for k in value:
                np.testing.assert_array_equal(value[k], other[k])
        elif isinstance(value, np.ndarray):
            assert other.dtype == value.dtype and other.shape == value.shape
            np.testing.assert_array_equal(other, value)
        else:
            assert other == value


ARRAYS = {
    "float32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "empty": np.zeros((3, 0)),
    "0-d": np.array(2.5),
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "strided": np.arange(20.0)[::3],
    "bool": np.array([True, False, True]),
    "big-endian": np.arange(5, dtype=">i4"),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_flat_arrays_arrive_equal_writable_and_independent(name):
    a = ARRAYS[name].copy() if ARRAYS[name].flags.c_contiguous else ARRAYS[name]
    encoding, out, _ = roundtrip(Tensor("t", 3, a))
    assert encoding == wire.FLAT
    assert_same(Tensor("t", 3, a), out)
    assert out.data.flags.writeable
    if a.size:
        out.data.reshape(-1)[0] = out.data.reshape(-1)[-1]  # writing it does not touch the sender's
        assert not np.shares_memory(out.data, a)


def test_flat_dicts_tuples_and_plain_values():
    rng = np.random.default_rng(0)
    msg = Grads(7, {"W1": rng.standard_normal((2, 3)), "W2": rng.standard_normal(4), "lr": 0.1},
                (2, "x", None, 1.5), b"raw")
    encoding, out, _ = roundtrip(msg)
    assert encoding == wire.FLAT
    assert_same(msg, out)
    assert out.grads is not msg.grads  # the receiver's own dict


def test_large_arrays_are_parked_and_small_ones_travel_inline():
    big, small = np.ones(1000), np.ones(10)
    encoding, out, shm = roundtrip(Grads(1, {"big": big, "small": small}, ()), threshold=big.nbytes)
    assert encoding == wire.FLAT and len(shm.parked) == 1
    np.testing.assert_array_equal(out.grads["big"], big)


@pytest.mark.parametrize("msg", [
    Nested(Tensor("t", 1, np.ones(3))),  # a dataclass inside a field
    Tensor("t", 1, [np.ones(3), 2]),  # a list of arrays
    Tensor("t", 1, {"deep": {"x": np.ones(2)}}),  # a dict inside a dict
    Tensor("t", 1, np.array([None, 1], dtype=object)),  # an object array
    (1, np.ones(2)),  # not a dataclass at all
])
def test_everything_else_is_general_and_arrives_the_same(msg):
    encoding, out, _ = roundtrip(msg)
    assert encoding == wire.GENERAL
    flat_a = [x for x in _leaves(msg)]
    flat_b = [x for x in _leaves(out)]
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b):
        np.testing.assert_array_equal(x, y)


def _leaves(obj):
    if hasattr(obj, "__dataclass_fields__"):
        for v in vars(obj).values():
            yield from _leaves(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj


@dataclass(frozen=True)
class Custom:
    """Pickles itself its own way: FLAT must not bypass that."""
    value: Any

    def __reduce__(self):
        return Custom, (("rebuilt", self.value),)


@dataclass(frozen=True, slots=True)
class Slotted:
    value: Any


@pytest.mark.parametrize("msg,expect", [(Custom(np.ones(2)), ("rebuilt",)), (Slotted(np.ones(2)), None)])
def test_classes_that_pickle_their_own_way_or_have_slots_are_general(msg, expect):
    encoding, out, _ = roundtrip(msg)
    assert encoding == wire.GENERAL
    if expect is None:
        np.testing.assert_array_equal(out.value, msg.value)
    else:
        assert out.value[0] == "rebuilt"
        np.testing.assert_array_equal(out.value[1], msg.value)


def test_a_message_that_is_not_flat_parks_each_array_once():
    """FLAT gives up before parking anything, so the GENERAL body parks every array once."""
    big, other = np.ones(1000), np.zeros(1000)
    encoding, out, shm = roundtrip(Tensor("t", 1, {"big": big, "deep": {"x": other}}), threshold=100)
    assert encoding == wire.GENERAL
    assert len(shm.parked) == 2  # not 3: FLAT looked at "big" first, and left it alone


def test_messages_of_the_system_and_the_model_are_flat():
    for msg in (Stop(), Ping(3), Error(3, "partition", 2, "ValueError", "bad", "Traceback ..."),
                Halo(4, 1, "x", np.ones((2, 3, 4, 5)))):
        encoding, out, _ = roundtrip(msg)
        assert encoding == wire.FLAT, type(msg)
        assert_same(msg, out)


def test_a_class_is_found_by_name_even_before_the_receiver_used_it(monkeypatch):
    msg = Halo(1, 0, "f", np.ones(2))
    encoding, body, _ = wire.encode(msg, None, 1 << 16)
    monkeypatch.setattr(wire, "_CLASSES", {})  # a receiver that never met the class
    out, _ = wire.decode(encoding, body, None)
    assert type(out) is Halo and out.name == "f"


def test_a_vanished_segment_is_a_wire_error():
    shm = FakeShm()
    encoding, body, _ = wire.encode(Tensor("t", 1, np.ones(100)), shm.park, 8)

    def gone(ref):
        raise FileNotFoundError(ref.name)

    with pytest.raises(wire.WireError, match="seg0 vanished before it was read"):
        wire.decode(encoding, body, gone)
