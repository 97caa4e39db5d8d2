"""Local contrast normalisation (LCN): subtractive, then divisive, over a Gaussian window.

With a Gaussian window ``G`` over ``P x P`` neighbourhoods, normalised so that
``sum_{i,u,v} G[u, v] = 1`` (the sum runs over the K maps i too; so ``G = g / K`` with ``g``
summing to 1 over the window):

    subtractive  v[i, j, k] = h[i, j, k] - sum_{i',u,v} G[u, v] * h[i', j + u, k + v]
    divisive     y[i, j, k] = v[i, j, k] / max(c, sigma[j, k]),
                 sigma[j, k] = sqrt(sum_{i',u,v} G[u, v] * v[i', j + u, k + v]^2)

with the window centred on ``(j, k)`` (u, v run from -P//2 to P//2; P must be odd) and c = 0.01.
The output has the input's shape.

Border handling (open in the paper; a config field): windows that reach past the border see
zeros there. With ``border="renorm"`` (the default, as in Torch 7's
SpatialContrastiveNormalization) each window's weights are rescaled to sum to 1 over the pixels
inside the image, so a constant image normalises to exactly zero everywhere. With
``border="zero"`` they are not, so the local mean is pulled towards 0 near the border.

The Gaussian's standard deviation ``width`` (in pixels) is also open; 1.0 is our default.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .backend import get_xp
from .checks import check_array, check_shape
from .windows import window_sum, window_sum_adjoint

BORDERS = ("renorm", "zero")


class LCNCache(NamedTuple):
    v: Any  # (B, K, H, W) after the subtractive step
    sigma: Any  # (B, H, W) local standard deviation
    d: Any  # (B, H, W) divisor max(c, sigma)
    g: np.ndarray  # (P, P) Gaussian window summing to 1
    mass: Any  # (H, W) K * (window weight inside the image): the normaliser of every window
    c: float


def gaussian_window(window: int, width: float) -> np.ndarray:
    """g: (P, P), a centred Gaussian of standard deviation ``width`` pixels, summing to 1."""
    r = np.arange(window) - window // 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * width**2))
    return g / g.sum()


def _check_hyper(window, width, c, border) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"LCN window must be an odd int >= 1 (a centred window), got {window!r}")
    if not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"LCN width (Gaussian std, pixels) must be > 0, got {width!r}")
    if not isinstance(c, (int, float)) or not c > 0:
        raise ValueError(f"LCN c must be > 0 (it bounds the divisor away from 0), got {c!r}")
    if border not in BORDERS:
        raise ValueError(f"LCN border must be one of {BORDERS}, got {border!r}")


def _local_sum(a, g):
    """sum_{u,v} g[u, v] * a[..., j + u, k + v] with a centred window and zeros outside."""
    xp = get_xp(a)
    r = g.shape[0] // 2
    a_pad = xp.pad(a, [(0, 0)] * (a.ndim - 2) + [(r, r), (r, r)])
    return window_sum(a_pad, g, 1)


def _local_sum_adjoint(d, g):
    r = g.shape[0] // 2
    H, W = d.shape[-2:]
    full = window_sum_adjoint(d, g, 1, (H + 2 * r, W + 2 * r))
    return full[..., r : r + H, r : r + W]


def _window_mass(shape_hw, K: int, g: np.ndarray, border: str, xp, dtype):
    """K times the window weight that falls inside the image, per position: (H, W)."""
    if border == "zero":
        mass = np.full(shape_hw, float(K))
    else:
        mass = K * _local_sum(np.ones(shape_hw), g)
    return xp.asarray(mass, dtype=dtype)


def lcn_forward(h, *, window: int, width: float = 1.0, c: float = 0.01, border: str = "renorm"):
    """Forward of LCN. h: (B, K, H, W) -> y: (B, K, H, W) (equations in the module docstring)."""
    check_array("h", h, ndim=4, layout="(B, K, H, W)")
    _check_hyper(window, width, c, border)
    xp = get_xp(h)
    K = h.shape[1]
    g = gaussian_window(window, width)
    mass = _window_mass(h.shape[2:], K, g, border, xp, h.dtype)  # (H, W)
    mean = _local_sum(h.sum(axis=1), g) / mass  # (B, H, W), shared by all maps
    v = h - mean[:, None]  # (B, K, H, W)
    sigma = (_local_sum((v * v).sum(axis=1), g) / mass) ** 0.5  # (B, H, W)
    d = xp.maximum(sigma, c)
    y = v / d[:, None]
    return y, LCNCache(v, sigma, d, g, mass, float(c))


def lcn_backward(dy, cache: LCNCache):
    """Backward of LCN: dy (B, K, H, W) -> dh (B, K, H, W), {} (nothing is learned).

    Where ``sigma <= c`` the divisor is the constant c and no gradient flows through sigma.
    """
    v, sigma, d, g, mass, c = cache
    check_array("dy", dy, ndim=4, layout="(B, K, H, W)")
    check_shape("dy", dy, v.shape, "(B, K, H, W)")
    xp = get_xp(dy)
    dv = dy / d[:, None]
    dd = -(dy * v).sum(axis=1) / d**2  # (B, H, W)
    dvar = xp.where(sigma > c, dd / (2 * d), 0)  # d sigma / d var = 1 / (2 sigma); d == sigma here
    dv = dv + 2 * v * _local_sum_adjoint(dvar / mass, g)[:, None]
    dh = dv - _local_sum_adjoint(dv.sum(axis=1) / mass, g)[:, None]
    return dh, {}
