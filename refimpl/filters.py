"""How Gabor-like are learned filters? Two measures on each R x R filter, and a verdict.

A Gabor filter (what V1 simple cells and sparse coding on natural images give) is *localised*
(its energy sits in a small part of the receptive field) and *oriented* (its 2-D Fourier energy
is peaked at one orientation). For a filter ``w: (C, R, R)`` (channels summed):

- localisation: the largest share of the energy ``sum w^2`` that one ``r x r`` window holds,
  ``r = ceil(R / 2)``, over all window placements. White noise scores about ``(r / R)^2``
  (a quarter) plus a little; a filter confined to a quarter of its field scores near 1.
- orientation: with ``P(k)`` the power spectrum of the zero-mean filter (DC removed) and
  ``theta(k)`` the angle of frequency k, ``|sum_k P(k) exp(2 i theta(k))| / sum_k P(k)``, the
  length of the mean "doubled-angle" vector (a Gabor's two spectral lobes at theta and
  theta + pi count as one orientation): 1 for energy at one orientation, near 0 for noise or
  for isotropic blobs.

A filter is Gabor-like when both exceed their thresholds (0.5 each by default: a level white
noise filters of the size used here reach only rarely; see tests/test_learning.py).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class GaborScore(NamedTuple):
    localisation: np.ndarray  # (N,) in [0, 1]
    orientation: np.ndarray  # (N,) in [0, 1]
    gabor_like: np.ndarray  # (N,) bool

    @property
    def fraction(self) -> float:
        """Share of the filters that are Gabor-like."""
        return float(self.gabor_like.mean())


def localisation(filters: np.ndarray) -> np.ndarray:
    """filters: (N, C, R, R) -> (N,) the largest energy share in one ceil(R/2)^2 window."""
    N, C, R, _ = filters.shape
    r = -(-R // 2)
    e = (np.asarray(filters, dtype=np.float64) ** 2).sum(axis=1)  # (N, R, R)
    total = e.sum(axis=(1, 2))
    c = np.pad(e.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))  # (N, R+1, R+1) integral image
    windows = c[:, r:, r:] - c[:, :-r, r:] - c[:, r:, :-r] + c[:, :-r, :-r]  # (N, R-r+1, R-r+1)
    return windows.reshape(N, -1).max(axis=1) / np.maximum(total, 1e-300)


def orientation(filters: np.ndarray) -> np.ndarray:
    """filters: (N, C, R, R) -> (N,) the doubled-angle resultant of the power spectrum."""
    N, C, R, _ = filters.shape
    w = np.asarray(filters, dtype=np.float64)
    w = w - w.mean(axis=(2, 3), keepdims=True)
    power = (np.abs(np.fft.fft2(w)) ** 2).sum(axis=1)  # (N, R, R), channels summed
    f = np.fft.fftfreq(R)
    theta = np.arctan2(f[:, None], f[None, :])  # (R, R) angle of each frequency
    phase = np.exp(2j * theta)
    phase[0, 0] = 0  # the DC term has no orientation (and is ~0 after centring)
    total = power.sum(axis=(1, 2))
    return np.abs((power * phase).sum(axis=(1, 2))) / np.maximum(total, 1e-300)


def gabor_score(filters: np.ndarray, *, min_localisation: float = 0.5,
                min_orientation: float = 0.5) -> GaborScore:
    """Score filters (N, C, R, R); also accepts W1 (OH, OW, K, C, R, R), scoring every filter."""
    filters = np.asarray(filters)
    if filters.ndim == 6:
        filters = filters.reshape(-1, *filters.shape[3:])  # (OH*OW*K, C, R, R)
    if filters.ndim != 4 or filters.shape[2] != filters.shape[3]:
        raise ValueError(f"filters must be (N, C, R, R) or W1 (OH, OW, K, C, R, R), got "
                         f"shape {filters.shape}")
    loc, ori = localisation(filters), orientation(filters)
    return GaborScore(loc, ori, (loc > min_localisation) & (ori > min_orientation))
