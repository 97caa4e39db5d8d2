"""Gradient checks: central differences in float64 against the analytic backward.

For a sublayer ``y = F(x; params)`` and an upstream gradient ``dy`` the checked scalar is
``L = sum(y * dy)``; its exact gradient is what ``backward(dy, cache)`` returns. For every entry
checked (all of them, or a random sample of ``max_entries`` on large arrays),

    numeric_i = (L(a + h e_i) - L(a - h e_i)) / (2 h)
    rel_err   = max_i |analytic_i - numeric_i| / max(|analytic_i|, |numeric_i|, floor)

``floor`` keeps entries whose gradient is (almost) exactly 0 from dividing rounding noise by ~0:
it is the larger of 1e-3 times the argument's largest gradient and ``1e-8 / h`` (a central
difference of O(1) outputs carries a rounding noise of about 1e-15 / h, summed over the
outputs an entry reaches; 1e-8 / h keeps that noise 1e-6 below the floor).
The difference ``L(a + h e_i) - L(a - h e_i)`` is summed as ``sum((y+ - y-) * dy)``, so outputs
that entry i does not reach cancel exactly instead of adding rounding noise. Perturbations are made on float64
copies: the caller's arrays are never touched.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .backend import to_numpy
from .registry import Case, Sublayer

TOLERANCE = 1e-6


class ArgCheck(NamedTuple):
    argument: str  # "x" or a parameter name
    shape: tuple
    checked: int  # entries compared
    rel_err: float


class GradcheckResult(NamedTuple):
    sublayer: str
    args: list[ArgCheck]
    tolerance: float

    @property
    def max_rel_err(self) -> float:
        return max(a.rel_err for a in self.args)

    @property
    def passed(self) -> bool:
        return self.max_rel_err < self.tolerance


def _as_float64(case: Case) -> Case:
    f64 = lambda a: np.array(to_numpy(a), dtype=np.float64)  # noqa: E731 (a copy)
    dy = case.dy if np.isscalar(case.dy) else f64(case.dy)
    return Case(f64(case.x), {k: f64(v) for k, v in case.params.items()}, dict(case.hyper), dy)


def relative_error(
    analytic: np.ndarray, numeric: np.ndarray, *, floor_abs: float, floor_rel: float = 1e-3
) -> float:
    """max_i |a_i - n_i| / max(|a_i|, |n_i|, floor), floor = max(floor_rel * max|n|, floor_abs)."""
    floor = max(floor_rel * float(np.abs(numeric).max(initial=0.0)), floor_abs)
    denom = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    return float((np.abs(analytic - numeric) / denom).max(initial=0.0))


def check_gradients(
    entry: Sublayer,
    case: Case,
    *,
    rng: np.random.Generator,
    h: float = 1e-5,
    max_entries: int = 64,
    tolerance: float = TOLERANCE,
) -> GradcheckResult:
    """Check every parameter and the input of ``entry`` on ``case`` (converted to float64)."""
    case = _as_float64(case)
    x, params, hyper, dy = case

    def output(x_, params_):
        return to_numpy(entry.forward(x_, params_, **hyper)[0])

    _, cache = entry.forward(x, params, **hyper)
    dx, grads = entry.backward(dy, cache)
    analytic = {"x": to_numpy(dx), **{k: to_numpy(g) for k, g in grads.items()}}
    arrays = {"x": x, **params}

    results = []
    for name, a in arrays.items():
        flat = a.reshape(-1)  # a view: perturbing it perturbs the array passed to loss()
        n = flat.size
        idx = np.arange(n) if n <= max_entries else rng.choice(n, size=max_entries, replace=False)
        numeric = np.empty(len(idx))
        for j, i in enumerate(idx):
            old = flat[i]
            flat[i] = old + h
            y_plus = output(x, params)
            flat[i] = old - h
            y_minus = output(x, params)
            flat[i] = old
            # sum((y+ - y-) * dy), not L+ - L-: outputs the entry does not reach cancel exactly
            numeric[j] = np.sum((y_plus - y_minus) * dy) / (2 * h)
        err = relative_error(analytic[name].reshape(-1)[idx], numeric, floor_abs=1e-8 / h)
        results.append(ArgCheck(name, tuple(a.shape), len(idx), err))
    return GradcheckResult(entry.name, results, tolerance)
