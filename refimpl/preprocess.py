"""Input preprocessing of the image frames: none (the paper) or ZCA whitening.

The paper trains on raw frames. With models much smaller than the paper's, an earlier trial here
found that raw frames give noise-like first-stage filters: natural images put almost all their
variance in low spatial frequencies, so a small model spends its few filters on smooth blobs.
ZCA whitening (Bell and Sejnowski 1997) flattens the spectrum and lets oriented edges appear:

    mean   = the per-pixel mean of the training frames            (D = C*H*W values)
    Sigma  = covariance of the centred frames = U diag(lam) U^T   (lam sorted, descending)
    k      = the number of leading components holding ``variance`` of the total (e.g. 0.95)
    reg    = lam_k, the smallest kept eigenvalue
    Z      = a * U diag(1 / sqrt(lam + reg)) U^T                  (D, D), symmetric
    white(x) = (x - mean) Z

Components well above ``reg`` come out with equal variance (whitened); those below it, the
noisiest high frequencies, are attenuated (gain ~ sqrt(lam / reg)) rather than cut, so no input
direction is exactly constant (a weight that never receives a gradient would keep its random
initial value forever). The scalar ``a`` makes the mean variance per pixel 1, the scale LCN
gives the inputs of the later stages. The fit (mean, Z and its inverse, for showing
reconstructions as images) is stored with each checkpoint so analyses apply exactly the
training transform.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MAX_VALUES = 16384  # ZCA's D x D matrices in float64: 2 GiB each at this size


class Whitening(NamedTuple):
    mean: np.ndarray  # (D,) per-pixel mean
    matrix: np.ndarray  # (D, D) Z: whitens centred frames
    inverse: np.ndarray  # (D, D) Z^-1: back to pixel space
    kept: int  # k, components whitened (the rest attenuated)
    variance: float  # share of the variance the kept components hold


def fit_zca(frames: np.ndarray, variance: float = 0.9) -> Whitening:
    """Fit ZCA whitening on ``frames`` (N, C, H, W), keeping ``variance`` of the variance."""
    if getattr(frames, "ndim", None) != 4:
        raise ValueError(f"frames must be 4-D (N, C, H, W), got {getattr(frames, 'shape', None)}")
    if not 0 < variance <= 1:
        raise ValueError(f"variance must be in (0, 1], got {variance!r}")
    N, D = frames.shape[0], int(np.prod(frames.shape[1:]))
    if D > MAX_VALUES:
        raise ValueError(f"frames of {D} values are too large for ZCA (a {D} x {D} covariance); "
                         f"use preprocess = \"none\" or frames of at most {MAX_VALUES} values")
    X = np.asarray(frames, dtype=np.float64).reshape(N, -1)  # (N, D)
    if N < 2:
        raise ValueError(f"ZCA needs at least 2 frames to estimate a covariance, got {N}")
    mean = X.mean(axis=0)
    Xc = X - mean
    cov = Xc.T @ Xc / (N - 1)  # (D, D)
    lam, U = np.linalg.eigh(cov)  # ascending
    lam, U = np.clip(lam[::-1], 0, None), U[:, ::-1]  # descending
    share = np.cumsum(lam) / lam.sum()
    k = int(np.searchsorted(share, variance - 1e-12) + 1)
    k = min(k, len(lam))
    reg = lam[k - 1]  # the smallest kept eigenvalue
    gain = 1 / np.sqrt(lam + reg)
    gain *= np.sqrt(len(lam) / np.sum(lam * gain**2))  # unit mean variance per pixel afterwards
    Z = (U * gain) @ U.T  # (D, D)
    inv = (U / gain) @ U.T  # (D, D)
    return Whitening(mean, Z, inv, k, float(share[k - 1]))


def whiten(frames: np.ndarray, w: Whitening, dtype=None) -> np.ndarray:
    """``(frames - mean) Z``: frames (N, C, H, W) -> whitened frames of the same shape."""
    N = frames.shape[0]
    X = np.asarray(frames, dtype=np.float64).reshape(N, -1)  # (N, D)
    if X.shape[1] != w.mean.shape[0]:
        raise ValueError(f"frames have {X.shape[1]} values per frame but the whitening was fitted "
                         f"on {w.mean.shape[0]}")
    out = ((X - w.mean) @ w.matrix).reshape(frames.shape)  # (N, C, H, W)
    return out.astype(dtype or frames.dtype)


def unwhiten(frames: np.ndarray, w: Whitening) -> np.ndarray:
    """Map whitened frames back to pixel space, (N, C, H, W)."""
    N = frames.shape[0]
    X = np.asarray(frames, dtype=np.float64).reshape(N, -1)  # (N, D)
    return (X @ w.inverse + w.mean).reshape(frames.shape)  # (N, C, H, W)


def to_arrays(w: Whitening | None) -> dict[str, np.ndarray]:
    """The fit as named arrays (for a checkpoint); {} for no preprocessing."""
    if w is None:
        return {}
    return {"mean": w.mean, "matrix": w.matrix, "inverse": w.inverse,
            "kept": np.array(w.kept), "variance": np.array(w.variance)}


def from_arrays(a: dict[str, np.ndarray]) -> Whitening | None:
    """The inverse of :func:`to_arrays`."""
    if not a:
        return None
    return Whitening(a["mean"], a["matrix"], a["inverse"], int(a["kept"]), float(a["variance"]))
