"""One table of every sublayer and the eq. 1 objective, with a random-case generator for each.

Tests, the gradient checker and ``catneuron gradcheck`` iterate over :data:`SUBLAYERS` without
knowing any sublayer; adding a sublayer here puts it under every check. Each entry has:

- ``case(rng, dtype)``: draws a random valid case (random geometry too) from a
  ``numpy.random.Generator``: ``x``, ``params`` (dict), ``hyper`` (dict) and ``dy`` (the
  upstream gradient, of the output's shape; a scalar 1.0 for the objective);
- ``forward(x, params, **hyper) -> (y, cache)`` and ``backward(dy, cache) -> (dx, grads)``,
  ``grads`` with the same keys as ``params``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from .l2pool import l2pool_backward, l2pool_forward
from .lcn import BORDERS, lcn_backward, lcn_forward
from .local_decoder import local_decoder_backward, local_decoder_forward
from .local_filter import local_filter_backward, local_filter_forward
from .objective import objective_backward, objective_forward


class Case(NamedTuple):
    x: Any
    params: dict
    hyper: dict
    dy: Any


@dataclass(frozen=True)
class Sublayer:
    name: str
    equation: str  # the forward, as in the paper
    forward: Callable  # (x, params, **hyper) -> (y, cache)
    backward: Callable  # (dy, cache) -> (dx, grads)
    case: Callable  # (rng, dtype) -> Case


def _lc_geometry(rng):
    """A random locally connected geometry, including sizes that the stride does not divide."""
    R, S = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    OH, OW = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    H = R + S * (OH - 1) + int(rng.integers(0, S))
    W = R + S * (OW - 1) + int(rng.integers(0, S))
    B, C, K = (int(n) for n in rng.integers(1, 4, size=3))
    return B, C, K, H, W, R, S, OH, OW


def _normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def _local_filter_case(rng, dtype):
    B, C, K, H, W, R, S, OH, OW = _lc_geometry(rng)
    W1 = _normal(rng, (OH, OW, K, C, R, R), dtype, 1 / np.sqrt(C * R * R))
    return Case(_normal(rng, (B, C, H, W), dtype), {"W1": W1}, {"stride": S},
                _normal(rng, (B, K, OH, OW), dtype))


def _local_decoder_case(rng, dtype):
    B, C, K, H, W, R, S, OH, OW = _lc_geometry(rng)
    W2 = _normal(rng, (OH, OW, K, C, R, R), dtype, 1 / np.sqrt(K))
    return Case(_normal(rng, (B, K, OH, OW), dtype), {"W2": W2},
                {"stride": S, "out_size": (H, W)}, _normal(rng, (B, C, H, W), dtype))


def _l2pool_case(rng, dtype):
    P, S = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    OH, OW = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    H, W = P + S * (OH - 1) + int(rng.integers(0, S)), P + S * (OW - 1) + int(rng.integers(0, S))
    B, K = (int(n) for n in rng.integers(1, 4, size=2))
    eps = float(rng.uniform(0.01, 1.0))
    return Case(_normal(rng, (B, K, H, W), dtype), {}, {"window": P, "stride": S, "eps": eps},
                _normal(rng, (B, K, OH, OW), dtype))


def _lcn_case(rng, dtype):
    """Inputs are redrawn until no local sigma lies in [c/2, 10c]: away from the kink of
    max(c, sigma) and from the steep region just above it, where central differences are poor."""
    window = int(rng.choice([1, 3, 5]))
    B, K = (int(n) for n in rng.integers(1, 4, size=2))
    H, W = (int(n) for n in rng.integers(max(2, window - 2), window + 4, size=2))
    hyper = {"window": window, "width": float(rng.uniform(0.5, 2.0)), "c": 0.01,
             "border": str(rng.choice(BORDERS))}
    while True:
        h = _normal(rng, (B, K, H, W), dtype)
        _, cache = lcn_forward(h, **hyper)
        near = (cache.sigma >= hyper["c"] / 2) & (cache.sigma <= 10 * hyper["c"])
        if not near.any():
            return Case(h, {}, hyper, _normal(rng, (B, K, H, W), dtype))


def _objective_case(rng, dtype):
    B, C, K, H, W, R, S, OH, OW = _lc_geometry(rng)
    P = int(rng.integers(1, min(OH, OW) + 1))
    params = {"W1": _normal(rng, (OH, OW, K, C, R, R), dtype, 1 / np.sqrt(C * R * R)),
              "W2": _normal(rng, (OH, OW, K, C, R, R), dtype, 1 / np.sqrt(K))}
    hyper = {"stride": S, "pool_window": P, "pool_stride": int(rng.integers(1, 3)),
             "lam": float(rng.uniform(0.05, 1.0)), "eps": float(rng.uniform(0.01, 1.0))}
    return Case(_normal(rng, (B, C, H, W), dtype), params, hyper, 1.0)


def _no_params(forward):
    """Adapt a parameter-free sublayer to the uniform ``forward(x, params, **hyper)``."""
    def adapted(x, params, **hyper):
        if params:
            raise ValueError(f"this sublayer has no parameters, got params {sorted(params)}")
        return forward(x, **hyper)
    return adapted


SUBLAYERS: dict[str, Sublayer] = {
    s.name: s
    for s in [
        Sublayer("local_filter", "f = W1^T x (locally connected, no weight sharing)",
                 local_filter_forward, local_filter_backward, _local_filter_case),
        Sublayer("local_decoder", "xhat = W2 f (overlap-add onto the input plane)",
                 local_decoder_forward, local_decoder_backward, _local_decoder_case),
        Sublayer("l2pool", "p = sqrt(eps + H f^2), H uniform and fixed",
                 _no_params(l2pool_forward), l2pool_backward, _l2pool_case),
        Sublayer("lcn", "y = (h - G*h) / max(c, sqrt(G*(h - G*h)^2))",
                 _no_params(lcn_forward), lcn_backward, _lcn_case),
        Sublayer("objective", "J = sum_i ||W2 W1^T x_i - x_i||^2 + lambda sum_j sqrt(eps + H_j (W1^T x_i)^2)",
                 objective_forward, objective_backward, _objective_case),
    ]
}
