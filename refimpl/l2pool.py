"""L2 pooling with fixed uniform weights H: ``p = sqrt(eps + H (f^2))`` within one map.

The paper fixes H to uniform weights over 5x5 overlapping neighbourhoods of one feature map;
only W1 and W2 are learned. The same pooled values are the stage's output (before LCN) and the
terms of the sparsity penalty ``lambda * sum_j sqrt(eps + H_j (W1^T x)^2)`` of eq. 1.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .checks import check_array, check_shape
from .geometry import make_grid
from .windows import window_sum, window_sum_adjoint


class L2PoolCache(NamedTuple):
    f: Any  # (B, K, H, W) the input
    p: Any  # (B, K, OH, OW) the output
    H: np.ndarray  # (P, P) the fixed pooling weights (all ones)
    stride: int


def pooling_weights(window: int) -> np.ndarray:
    """H: the fixed uniform pooling weights, all ones over a ``window x window`` neighbourhood."""
    return np.ones((window, window))


def _check_eps(eps) -> float:
    if not isinstance(eps, (int, float)) or not eps > 0 or eps != eps:
        raise ValueError(f"eps must be a number > 0 (it keeps sqrt differentiable at 0), got {eps!r}")
    return float(eps)


def l2pool_forward(f, *, window: int, stride: int, eps: float):
    """Forward of L2 pooling.

    f: (B, K, H, W) -> p: (B, K, OH, OW) with OH = (H - window) // stride + 1,
    ``p[b, k, i, j] = sqrt(eps + sum_{u,v < P} f[b, k, i*S + u, j*S + v]^2)``.
    """
    check_array("f", f, ndim=4, layout="(B, K, H, W)")
    eps = _check_eps(eps)
    make_grid(f.shape[2], f.shape[3], window, stride, what="pooling window")
    H = pooling_weights(window)
    p = (eps + window_sum(f * f, H, stride)) ** 0.5
    return p, L2PoolCache(f, p, H, stride)


def l2pool_backward(dp, cache: L2PoolCache):
    """Backward of L2 pooling: dp (B, K, OH, OW) -> df (B, K, H, W), {} (nothing is learned).

    ``dp_ij / df = f / p_ij`` for every f in window ij, so ``df = f * H^T (dp / p)``.
    """
    f, p, H, S = cache
    check_array("dp", dp, ndim=4, layout="(B, K, OH, OW)")
    check_shape("dp", dp, p.shape, "(B, K, OH, OW)")
    df = f * window_sum_adjoint(dp / p, H, S, f.shape[2:])
    return df, {}
