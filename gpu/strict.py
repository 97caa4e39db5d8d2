"""The strict array stand-in: a NumPy-backed "device" array that refuses to meet NumPy, as CuPy does.

No machine here has a GPU, so this module plays CuPy on the CPU. Arrays of :class:`StrictArray`
hold a NumPy array, compute with NumPy underneath (so results are bit-for-bit NumPy's), and
enforce the rules that make code written for NumPy break on CuPy:

    ======================================  =============================================
    on a StrictArray ``x``                  what happens (what CuPy does)
    ======================================  =============================================
    ``np.asarray(x)``, ``np.array(x)``      TypeError (implicit device -> host copy)
    ``np.sum(x)``, ``np.exp(x)``, ...       TypeError (stricter than CuPy, which dispatches
                                            the functions it has: our rule is ``xp.``)
    ``x + a``, ``a * x``, ``a @ x``         TypeError when ``a`` is a NumPy array;
                                            Python and NumPy scalars are fine
    ``x[...] = a``                          TypeError when ``a`` is a non-0-d NumPy array
    ``xp.<func>(a)``                        TypeError when ``a`` is a NumPy array, except
                                            the explicit uploads ``xp.asarray``/``xp.array``
    ``float(x)``, ``int(x)``, ``bool(x)``   TypeError unless ``x`` is 0-d (a 0-d array
                                            converts, with an implicit sync, as in CuPy)
    ``iter(x)``                             yields device arrays; TypeError if 0-d
    ``x.sum()``, ``x[0, 0]``                0-d device arrays, never NumPy scalars
    ``xp.asnumpy(x)``, ``x.get()``          the explicit device -> host copy
    ======================================  =============================================

This module is also the namespace: ``x.__array_namespace__()`` returns it, so
``refimpl.backend.get_xp(x)`` gives it, and ``xp.zeros``, ``xp.pad``, ``xp.where``, ... are
NumPy's functions with device arrays in and out (``xp.asarray(host)`` copies, like an upload).
Array methods are limited to :data:`METHODS`, names that ``cupy.ndarray`` also has (a test
checks that against the installed CuPy).
"""

from __future__ import annotations

import operator
import sys
import types

import numpy as np

_HOST_MSG = (
    "implicit conversion of a device array (the CuPy stand-in) to a NumPy array is not "
    "allowed; copy it to the host explicitly with gpu.to_host(x), xp.asnumpy(x) or x.get()"
)
_SCALARS = (bool, int, float, complex, np.generic)

# Methods delegated to the NumPy array underneath; every one exists on cupy.ndarray.
METHODS = frozenset({
    "all", "any", "argmax", "argmin", "argsort", "astype", "clip", "conj", "copy", "cumprod",
    "cumsum", "diagonal", "dot", "fill", "flatten", "max", "mean", "min", "nonzero", "prod",
    "ravel", "repeat", "reshape", "round", "sort", "squeeze", "std", "sum", "swapaxes", "take",
    "trace", "transpose", "var", "view",
})
# Methods that return host values on purpose (explicit transfers, allowed on CuPy too).
HOST_METHODS = frozenset({"item", "tolist"})
# Attributes (not methods) forwarded as they are, and those that are arrays themselves.
PROPERTIES = ("shape", "dtype", "ndim", "size", "itemsize", "nbytes", "strides", "flags")
ARRAY_PROPERTIES = ("T", "real", "imag")


def _wrap(r):
    """NumPy results -> device arrays (0-d for scalars, as CuPy returns); the rest unchanged."""
    if isinstance(r, np.ndarray):
        return StrictArray(r)
    if isinstance(r, np.generic):
        return StrictArray(np.asarray(r))
    if type(r) is tuple:
        return tuple(_wrap(v) for v in r)
    if type(r) is list:
        return [_wrap(v) for v in r]
    return r


def _unwrap(v, where: str):
    """Device arrays -> their NumPy array; a NumPy array here is a host array on the device."""
    if isinstance(v, StrictArray):
        return v._a
    if isinstance(v, np.ndarray):
        raise TypeError(
            f"{where}: got a NumPy (host) array of shape {v.shape} where a device array is "
            f"expected; copy it to the device first with xp.asarray / gpu.to_device"
        )
    if type(v) is tuple or type(v) is list:
        return type(v)(_unwrap(x, where) for x in v)
    if type(v) is dict:
        return {k: _unwrap(x, where) for k, x in v.items()}
    return v


def _unwrap_index(key):
    """Index keys: device arrays unwrap; host index arrays are allowed (CuPy uploads them)."""
    if isinstance(key, StrictArray):
        return key._a
    if type(key) is tuple:
        return tuple(_unwrap_index(k) for k in key)
    return key


def _operand(other, op: str):
    if isinstance(other, StrictArray):
        return other._a
    if isinstance(other, _SCALARS):
        return other
    if isinstance(other, np.ndarray):
        raise TypeError(
            f"unsupported operand for {op}: a NumPy (host) array of shape {other.shape} mixed "
            f"with a device array (CuPy raises 'Unsupported type numpy.ndarray'); move one side "
            f"with gpu.to_device / gpu.to_host"
        )
    return NotImplemented


def _binary(name: str):
    op = getattr(operator, name)

    def method(self, other):
        o = _operand(other, name)
        return NotImplemented if o is NotImplemented else _wrap(op(self._a, o))

    def reflected(self, other):
        o = _operand(other, name)
        return NotImplemented if o is NotImplemented else _wrap(op(o, self._a))

    def inplace(self, other):
        o = _operand(other, name)
        if o is NotImplemented:
            return NotImplemented
        getattr(operator, "i" + name.rstrip("_"))(self._a, o)  # in place on the buffer
        return self

    return method, reflected, inplace


class StrictArray:
    """A "device" array: NumPy inside, no implicit traffic with NumPy outside (see the module)."""

    __slots__ = ("_a",)
    __array_ufunc__ = None  # np.<ufunc>(x) raises; ndarray <op> x defers to our reflected op
    __hash__ = None  # type: ignore[assignment]  (arrays are unhashable, as in CuPy)

    def __init__(self, a: np.ndarray):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"StrictArray wraps a numpy.ndarray, got {type(a).__name__}; "
                            f"use gpu.strict.asarray")
        self._a = a

    # -- the namespace and the explicit transfer -------------------------------------------
    def __array_namespace__(self, *, api_version=None):
        return sys.modules[__name__]

    def get(self) -> np.ndarray:
        """The explicit device -> host copy (``cupy.ndarray.get``)."""
        return self._a.copy()

    # -- what CuPy refuses ---------------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_HOST_MSG)

    def __array_function__(self, func, types_, args, kwargs):
        return NotImplemented  # numpy then raises TypeError: no implementation found

    def _to_python(self, kind):
        if self._a.ndim != 0:
            raise TypeError(
                f"only 0-d device arrays convert to a Python {kind.__name__}; this one has shape "
                f"{self._a.shape} (reduce it first, or copy it to the host)"
            )
        return kind(self._a)

    def __float__(self):
        return self._to_python(float)

    def __int__(self):
        return self._to_python(int)

    def __complex__(self):
        return self._to_python(complex)

    def __bool__(self):
        return self._to_python(bool)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d device array")
        return (_wrap(self._a[i]) for i in range(len(self._a)))

    # -- indexing ------------------------------------------------------------------------------
    def __getitem__(self, key):
        return _wrap(self._a[_unwrap_index(key)])

    def __setitem__(self, key, value):
        if isinstance(value, StrictArray):
            value = value._a
        elif isinstance(value, np.ndarray) and value.ndim != 0:
            raise TypeError(
                f"cannot assign a NumPy (host) array of shape {value.shape} into a device array; "
                f"copy it to the device first with xp.asarray / gpu.to_device"
            )
        elif not isinstance(value, (_SCALARS, np.ndarray)):
            raise TypeError(f"cannot assign a {type(value).__name__} into a device array")
        self._a[_unwrap_index(key)] = value

    # -- attributes and methods ----------------------------------------------------------------
    def __getattr__(self, name):
        if name in METHODS or name in HOST_METHODS:
            method = getattr(self._a, name)
            wrap = name in METHODS

            def call(*args, **kwargs):
                out = method(*_unwrap(args, f"x.{name}"), **_unwrap(kwargs, f"x.{name}"))
                return _wrap(out) if wrap else out

            return call
        if name in PROPERTIES:
            return getattr(self._a, name)
        if name in ARRAY_PROPERTIES:
            return _wrap(getattr(self._a, name))
        raise AttributeError(f"the CuPy stand-in's array has no attribute {name!r}")

    def __repr__(self):
        return f"StrictArray({self._a!r})"

    def __str__(self):
        return str(self._a)

    def __copy__(self):
        return StrictArray(self._a.copy())

    def __deepcopy__(self, memo):
        return StrictArray(self._a.copy())

    def __reduce__(self):
        return asarray, (self._a,)  # pickles as an upload of its values, like CuPy

    # -- arithmetic (a Python or NumPy scalar is fine; a NumPy array is not) --------------------
    def __neg__(self):
        return _wrap(-self._a)

    def __pos__(self):
        return _wrap(+self._a)

    def __abs__(self):
        return _wrap(abs(self._a))

    def __invert__(self):
        return _wrap(~self._a)


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul",
              "and_", "or_", "xor", "lshift", "rshift"):
    _m, _r, _i = _binary(_name)
    _base = _name.rstrip("_")
    setattr(StrictArray, f"__{_base}__", _m)
    setattr(StrictArray, f"__r{_base}__", _r)
    setattr(StrictArray, f"__i{_base}__", _i)
for _name in ("lt", "le", "eq", "ne", "gt", "ge"):
    setattr(StrictArray, f"__{_name}__", _binary(_name)[0])
del _name, _m, _r, _i, _base

# ----------------------------------------------------------------------------------------------
# The namespace: this module is what get_xp returns for a StrictArray.

ndarray = StrictArray


def asarray(a, dtype=None, order=None, *, copy=None):
    """Host data -> a device array (a copy, like an upload); a device array is returned as is
    unless a different dtype is asked for."""
    if isinstance(a, StrictArray):
        return StrictArray(a._a.astype(dtype, copy=False)) if dtype is not None else a
    return StrictArray(np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(a, dtype=None, *, copy=True, order="K", ndmin=0):
    """Always a new device array (``cupy.array``)."""
    host = a._a if isinstance(a, StrictArray) else a
    return StrictArray(np.array(host, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asnumpy(a, stream=None, order="C", out=None) -> np.ndarray:
    """Device -> host copy (``cupy.asnumpy``); a NumPy array comes back as it is."""
    if isinstance(a, StrictArray):
        return a.get()
    return np.asarray(a, order=order)


def get_array_module(*args):
    """``cupy.get_array_module``: this module if any argument is a device array, else numpy."""
    return sys.modules[__name__] if any(isinstance(a, StrictArray) for a in args) else np


class _DeviceFunction:
    """A NumPy function (or ufunc) with device arrays in and out; ufunc methods work too."""

    def __init__(self, func, name: str):
        self._func, self._name = func, name

    def __call__(self, *args, **kwargs):
        where = f"xp.{self._name}"
        return _wrap(self._func(*_unwrap(args, where), **_unwrap(kwargs, where)))

    def __getattr__(self, attr):  # e.g. xp.add.at, xp.maximum.reduce
        return _device_attr(getattr(self._func, attr), f"{self._name}.{attr}")

    def __repr__(self):
        return f"<device function xp.{self._name}>"


class _DeviceNamespace:
    """A NumPy submodule (``xp.linalg``, ``xp.fft``, ``xp.lib``...) seen through the stand-in."""

    def __init__(self, module, name: str):
        self._module, self._name = module, name

    def __getattr__(self, attr):
        try:
            obj = getattr(self._module, attr)
        except AttributeError:
            raise AttributeError(f"the CuPy stand-in has no attribute {self._name}.{attr}") from None
        return _device_attr(obj, f"{self._name}.{attr}")


def _device_attr(obj, name: str):
    if isinstance(obj, types.ModuleType):
        return _DeviceNamespace(obj, name)
    if isinstance(obj, type) or not callable(obj):
        return obj  # dtypes (xp.float32), constants (xp.pi, xp.newaxis), classes (xp.finfo)
    return _DeviceFunction(obj, name)


def __getattr__(name: str):
    """Every other NumPy name, with device arrays in and out (cached after the first look-up)."""
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        obj = getattr(np, name)
    except AttributeError:
        raise AttributeError(f"the CuPy stand-in (gpu.strict) has no attribute {name!r}") from None
    value = _device_attr(obj, name)
    globals()[name] = value
    return value
