"""How a message becomes bytes and back: the body of a transport frame.

A frame is ``length | Envelope fields | body`` (:mod:`simcluster.transport`); this module makes
the body. NumPy arrays never go through NumPy's own pickling: a small one travels as its raw
bytes (4x cheaper to pickle, which thousands of 4 KB halos notice), a large one is parked in
shared memory by the sender's :class:`~simcluster.shm.SegmentPool` and travels as a
:class:`~simcluster.messages.ShmArray` reference, which the receiver opens as a view.

Two encodings (the frame's header says which)::

    FLAT     a dataclass message whose fields are plain values (int, float, str, bytes, bool,
             None, tuples of those), arrays, or dicts of them; nearly every message is one:
             pickle.dumps(("module:Class", fields with arrays set to None, [(field, key, ref)]))
    GENERAL  anything else (a nested dataclass such as a StepResult, lists of arrays, ...):
             pickled whole, arrays found anywhere by the pickler's ``reducer_override``

Both give the receiver the same message. FLAT exists for speed: with 169 processes taking turns
on 2 cores, every message's Python work is paid with cold caches, and the flat body takes about
half the Python work: no callback per pickled object, the class named by a string (pickle
would look its module up when pickling and again when unpickling), small arrays as bytearrays
that the receiver's arrays keep as their memory (no copy). A message is rebuilt as pickle
rebuilds a dataclass, ``__new__`` then its ``__dict__``, without running ``__init__`` again (it
was checked where it was made); so a class that pickles itself its own way (``__reduce__``,
``__getstate__``, ``__setstate__``) or has no ``__dict__`` (slots) is always GENERAL.
"""

from __future__ import annotations

import importlib
import io
import pickle
import threading
from typing import Any, Callable

import numpy as np

from .messages import ShmArray

FLAT, GENERAL = 1, 0
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})
Park = Callable[[np.ndarray], ShmArray]  # copies a large array into shared memory


class WireError(RuntimeError):
    """A body could not be decoded (a shared-memory segment vanished before it was read)."""


def encode(msg: Any, park: Park, shm_threshold: int) -> tuple[int, bytes, int]:
    """``(encoding, body, bytes parked in shared memory)`` of ``msg``; arrays of
    ``shm_threshold`` bytes or more are handed to ``park``."""
    cls = type(msg)
    name = _NAMES.get(cls) or _name(cls)
    flat = _flat(msg, name, park, shm_threshold) if name else None
    if flat is not None:
        return flat
    buf = io.BytesIO()
    pickler = _Pickler(buf, park, shm_threshold)
    pickler.dump(msg)
    return GENERAL, buf.getvalue(), pickler.shm_bytes


def decode(encoding: int, body, open_shm: Callable[[ShmArray], np.ndarray]) -> tuple[Any, int]:
    """``(message, bytes read from shared memory)`` of a body made by :func:`encode`."""
    if encoding != FLAT:
        _unpickling.open_shm, _unpickling.shm_bytes = open_shm, 0
        return pickle.loads(body), _unpickling.shm_bytes
    name, fields, arrays = pickle.loads(body)
    shm = 0
    for field, key, ref in arrays:
        if type(ref) is tuple:
            dtype, shape, raw = ref  # raw: a bytearray, now the array's own memory
            a = np.ndarray(shape, _DTYPES.get(dtype) or _dtype(dtype), raw)
        else:
            a, shm = _open(open_shm, ref), shm + ref.nbytes
        if key is None:
            fields[field] = a
        else:
            fields[field][key] = a
    cls = _CLASSES.get(name) or _class(name)
    msg = cls.__new__(cls)
    msg.__dict__.update(fields)
    return msg, shm


_CLASSES: dict[str, type] = {}  # "module:QualName" -> class, both ways
_NAMES: dict[type, str] = {}
_DTYPES: dict[str, np.dtype] = {}  # "<f8" -> dtype, and back
_DSTRS: dict[np.dtype, str] = {}


def _name(cls: type) -> str:
    """The FLAT name of a dataclass ("module:QualName"), or "" for a type that is not FLAT."""
    if not _rebuilt_from_dict(cls):
        _NAMES[cls] = ""
        return ""
    name = _NAMES[cls] = f"{cls.__module__}:{cls.__qualname__}"
    _CLASSES[name] = cls
    return name


def _rebuilt_from_dict(cls: type) -> bool:
    """Whether pickle would rebuild an instance of ``cls`` from ``__new__`` and its ``__dict__``:
    a dataclass with instance dicts and no pickling of its own."""
    return (hasattr(cls, "__dataclass_fields__") and "__slots__" not in vars(cls)
            and cls.__reduce_ex__ is object.__reduce_ex__ and cls.__reduce__ is object.__reduce__
            and getattr(cls, "__getstate__", None) is getattr(object, "__getstate__", None)
            and not hasattr(cls, "__setstate__"))


def _class(name: str) -> type:
    module, _, qualname = name.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    _CLASSES[name] = obj
    return obj


def _dtype(s: str) -> np.dtype:
    d = _DTYPES[s] = np.dtype(s)
    return d


def _dtype_str(d: np.dtype) -> str:
    """``d.str``, from a cache: NumPy builds that string anew at each call, slowly."""
    s = _DSTRS.get(d)
    if s is None:
        s = _DSTRS[d] = d.str
    return s


def _flat(msg, name: str, park: Park, threshold: int) -> tuple[int, bytes, int] | None:
    """The FLAT body of the dataclass ``msg``, or None if its fields do not qualify (found
    before anything is parked in shared memory)."""
    fields, arrays, large = msg.__dict__, [], []
    for field, value in msg.__dict__.items():
        kind = type(value)
        if kind in _PLAIN:
            continue
        if fields is msg.__dict__:
            fields = dict(fields)  # copied once there is something to take out
        if kind is dict:
            inner = fields[field] = dict(value)
            for key, a in value.items():
                if type(a) is np.ndarray and not a.dtype.hasobject:
                    inner[key] = None
                    if a.nbytes < threshold:
                        arrays.append((field, key, (_dtype_str(a.dtype), a.shape, bytearray(a))))
                    else:
                        large.append((field, key, a))
                elif type(a) not in _PLAIN:
                    return None
        elif kind is np.ndarray and not value.dtype.hasobject:
            fields[field] = None
            if value.nbytes < threshold:  # (a bytearray unpickles as a mutable buffer)
                arrays.append((field, None, (_dtype_str(value.dtype), value.shape, bytearray(value))))
            else:
                large.append((field, None, value))
        elif kind is not tuple or not all(type(v) in _PLAIN for v in value):
            return None
    shm = 0
    for field, key, a in large:  # parked only now that the whole message qualifies
        arrays.append((field, key, park(a)))
        shm += a.nbytes
    return FLAT, pickle.dumps((name, fields, arrays), pickle.HIGHEST_PROTOCOL), shm


def _open(open_shm, ref: ShmArray) -> np.ndarray:
    try:
        return open_shm(ref)
    except FileNotFoundError:
        raise WireError(f"shared-memory segment {ref.name} vanished before it was read") from None


class _Pickler(pickle.Pickler):
    """GENERAL bodies: arrays anywhere in the message are reduced by hand, large ones parked in
    shared memory (rebuilt by :func:`_open_shm`), small ones as raw bytes (:func:`_raw_array`).
    ``reducer_override`` is not even called for ints, floats, strings and the like."""

    def __init__(self, file, park: Park, threshold: int):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.park, self.threshold = park, threshold
        self.shm_bytes = 0

    def reducer_override(self, obj):
        if type(obj) is not np.ndarray or obj.dtype.hasobject:
            return NotImplemented
        if obj.nbytes >= self.threshold:
            self.shm_bytes += obj.nbytes
            return _open_shm, (self.park(obj),)
        return _raw_array, (obj.dtype.str, obj.shape, obj.tobytes())


_unpickling = threading.local()  # the receiver's open_shm while a GENERAL body is unpickled


def _raw_array(dtype: str, shape: tuple, data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape).copy()


def _open_shm(ref: ShmArray) -> np.ndarray:
    """A shared-memory array, as a view of its segment (see simcluster.shm)."""
    _unpickling.shm_bytes += ref.nbytes
    return _open(_unpickling.open_shm, ref)
