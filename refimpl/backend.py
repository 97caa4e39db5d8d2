"""The one place where the array backend is chosen (NumPy on the host, CuPy on a GPU).

Every function in refimpl starts with ``xp = get_xp(x, ...)`` and then writes ``xp.`` where it
would write ``np.``; nothing else in the package branches on the backend. This is the CuPy way
(``cupy.get_array_module``) and the scikit-learn Array API way (``get_namespace``).
"""

from __future__ import annotations

import numpy as np


def get_xp(*arrays):
    """Return the array namespace (module) that owns ``arrays``: ``numpy`` unless one is not.

    CuPy arrays give ``cupy``; any other array type that implements the Array API's
    ``__array_namespace__`` (the GPU stand-in used by the tests, for one) gives its namespace.
    Python scalars and ``None`` are ignored.
    """
    for a in arrays:
        if a is None or isinstance(a, (np.ndarray, np.generic, int, float)):
            continue
        if type(a).__module__.split(".")[0] == "cupy":
            import cupy  # imported only when a CuPy array is already in hand

            return cupy
        namespace = getattr(a, "__array_namespace__", None)
        if namespace is not None:
            return namespace()
    return np


def to_numpy(a) -> np.ndarray:
    """Copy ``a`` to the host as a NumPy array (a no-op for NumPy arrays)."""
    if isinstance(a, np.ndarray):
        return a
    xp = get_xp(a)
    if hasattr(xp, "asnumpy"):
        return xp.asnumpy(a)
    return np.asarray(a)


def strided_view(a, shape: tuple, strides: tuple, offset: int = 0):
    """A view of the contiguous array ``a`` with the given shape and strides (in bytes), starting
    ``offset`` bytes into it, no copy: ``as_strided``, which NumPy writes in Python (~5-10 us a
    call, paid once per column of every kernel); for a NumPy array the ndarray constructor makes
    the same view in C, and checks that it stays inside ``a``. Other backends use their own
    ``lib.stride_tricks.as_strided``."""
    if not a.flags.c_contiguous:
        raise ValueError("strided_view needs a contiguous array")
    if type(a) is np.ndarray:
        return np.ndarray(shape, a.dtype, buffer=a, offset=offset, strides=strides)
    if offset % a.itemsize:
        raise ValueError(f"strided_view: offset {offset} is not a whole number of {a.itemsize}-byte items")
    start = a.reshape(-1)[offset // a.itemsize :]
    return get_xp(a).lib.stride_tricks.as_strided(start, shape=shape, strides=strides)
