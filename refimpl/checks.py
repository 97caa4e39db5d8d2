"""Input validation with errors that name the argument, so a wrong call fails at our API and
never as a traceback from deep inside NumPy.

Rules: a wrong type or dtype is a ``TypeError``; a wrong rank, shape, mismatched size or a
non-finite value is a ``ValueError``. Every message names the argument and shows what was given.
"""

from __future__ import annotations

from .backend import get_xp

FLOAT_DTYPES = ("float32", "float64")


def check_array(name: str, a, *, ndim: int | None = None, layout: str = "",
                finite: bool = True) -> None:
    """Check that ``a`` is a finite float32/float64 array of rank ``ndim``.

    ``layout`` (e.g. ``"(B, C, H, W)"``) is only used to make the message readable. With
    ``finite=False`` the values are left to :func:`check_finite_through`.
    """
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(a).__name__}")
    if str(a.dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D {layout}".rstrip() + f", got shape {tuple(a.shape)}"
        )
    if finite:
        _check_finite(name, a)


def _check_finite(name: str, a) -> None:
    xp = get_xp(a)
    finite = xp.isfinite(a)
    if not bool(finite.all()):
        bad = int(a.size - int(xp.count_nonzero(finite)))
        raise ValueError(f"{name} contains NaN or inf ({bad} of {a.size} entries)")


def check_finite_through(name: str, a, result) -> None:
    """Raise the NaN/inf ``ValueError`` of :func:`check_array` for ``a``, by looking at ``result``.

    For a product in which every entry of ``a`` is a factor of some term of ``result`` (the
    weights of a locally connected layer and its output). IEEE arithmetic carries a NaN or inf
    into every term it is in (``NaN * y`` and ``inf * 0`` are NaN, ``inf * y`` is inf) and every
    sum with such a term is NaN or inf, so a finite ``result`` means a finite ``a``. The result
    is the smaller array: the local filter's weights hold C*R*R / B times as many values as its
    output (9.7 at the paper's C = 3, R = 18, B = 100). Only when ``result`` is not finite is
    ``a`` itself read, to name it (or to find that ``result`` overflowed from finite values,
    which is not an error of the input).
    """
    xp = get_xp(result)
    if not bool(xp.isfinite(result).all()):
        _check_finite(name, a)


def check_shape(name: str, a, expected: tuple, layout: str) -> None:
    """Check ``a.shape == expected``; the message spells out the ``layout`` of the axes."""
    if tuple(a.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape {layout} = {tuple(expected)}, got {tuple(a.shape)}"
        )


def check_same_dtype(**arrays) -> None:
    """All arrays share one dtype (mixing float32 and float64 is a ``TypeError``)."""
    dtypes = {name: str(a.dtype) for name, a in arrays.items()}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n} is {d}" for n, d in dtypes.items())
        raise TypeError(f"arrays must share one dtype: {listed}")


def check_params(params, keys: tuple[str, ...]) -> None:
    """``params`` is a dict holding exactly ``keys``."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict with keys {list(keys)}, got {type(params).__name__}")
    if set(params) != set(keys):
        raise ValueError(f"params must have keys {sorted(keys)}, got {sorted(params)}")
