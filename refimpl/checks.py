"""Input validation with errors that name the argument, so a wrong call fails at our API and
never as a traceback from deep inside NumPy.

Rules: a wrong type or dtype is a ``TypeError``; a wrong rank, shape, mismatched size or a
non-finite value is a ``ValueError``. Every message names the argument and shows what was given.
"""

from __future__ import annotations

from .backend import get_xp

FLOAT_DTYPES = ("float32", "float64")


def check_array(name: str, a, *, ndim: int | None = None, layout: str = "") -> None:
    """Check that ``a`` is a finite float32/float64 array of rank ``ndim``.

    ``layout`` (e.g. ``"(B, C, H, W)"``) is only used to make the message readable.
    """
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(a).__name__}")
    if str(a.dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D {layout}".rstrip() + f", got shape {tuple(a.shape)}"
        )
    xp = get_xp(a)
    finite = xp.isfinite(a)
    if not bool(finite.all()):
        bad = int(a.size - int(xp.count_nonzero(finite)))
        raise ValueError(f"{name} contains NaN or inf ({bad} of {a.size} entries)")


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
