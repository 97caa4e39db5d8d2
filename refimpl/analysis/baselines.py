"""The baselines of the paper's Table 1 that are not "the best neuron of some network".

- **Random guess** (:func:`chance_accuracy`): always answer the majority class. At the paper's
  13,026 faces : 23,974 distractors this is 23,974 / 37,000 = 64.8%.
- **Best linear filter** (:func:`linear_filter_baseline`): the paper sampled 100,000 filters
  from the training set and reported the best one's stump accuracy (74% on faces). Here a
  filter is one training frame ``u`` (in the model's input space, i.e. whitened when training
  whitened), scaled to ``||u||_2 = 1``; its response to an image ``x`` is ``<u, x>`` and it is
  scored like a neuron (refimpl.analysis.neurons.stump_accuracy). The unit norm changes no
  accuracy (a stump is invariant to positive scaling); it makes the filters comparable images.
- **Random weights** (:func:`random_weights_baseline`): the same architecture at its random
  initialisation (refimpl.model.init_params), scanned like the trained network.

The other rows (best first-stage neuron, no LCN, no faces) are scans of other networks:
``scan_neurons(acts, labels, sublayers=[...])`` or a run with another config / data.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ..config import ModelConfig
from ..model import init_params
from ..preprocess import Whitening, whiten
from ._checks import check_int, check_labels, check_rng
from .activations import collect_activations
from .neurons import NeuronScan, scan_neurons, stump_accuracy


class LinearBaseline(NamedTuple):
    accuracy: float  # the best filter's stump accuracy, a fraction
    filter: np.ndarray  # (C, H, W) that filter, unit norm, in the model's input space
    index: int  # which frame of ``frames`` it is
    threshold: float  # its best threshold ("positive" when <filter, image> > threshold)
    accuracies: np.ndarray  # (n_filters,) every sampled filter's accuracy
    indices: np.ndarray  # (n_filters,) the frames sampled, in the order of ``accuracies``


def chance_accuracy(labels) -> float:
    """Accuracy of always answering the majority class of ``labels`` (N,) bool / 0-1."""
    if np.size(labels) == 0:
        raise ValueError("labels is empty")
    pos = check_labels(labels)
    share = float(pos.mean())
    return max(share, 1.0 - share)


def _flat(a, name: str) -> np.ndarray:
    if getattr(a, "ndim", None) != 4 or a.shape[0] < 1:
        raise ValueError(f"{name} must be 4-D (N, C, H, W) with N >= 1, "
                         f"got {getattr(a, 'shape', None)}")
    return np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1)  # (N, C*H*W)


def linear_filter_baseline(frames, images, labels, *, n_filters: int, rng: np.random.Generator,
                           n_thresholds: int = 20, whitening: Whitening | None = None,
                           chunk: int = 2000, progress: bool = False) -> LinearBaseline:
    """Best of ``n_filters`` training frames used as linear filters on ``images``.

    frames: (F, C, H, W) raw training frames; ``n_filters`` of them are drawn without
    replacement by ``rng``. images: (N, C, H, W) raw test images, labels (N,). With
    ``whitening`` both are whitened first (the model's input space). Filters are scored
    ``chunk`` at a time, so 100,000 filters need no (N, 100,000) array.
    """
    check_rng(rng)
    n_filters = check_int("n_filters", n_filters)
    chunk = check_int("chunk", chunk)
    if getattr(frames, "ndim", None) == 4 and getattr(images, "ndim", None) == 4 and \
            tuple(frames.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(f"frames (F, C, H, W) and images (N, C, H, W) must share (C, H, W), got "
                         f"{tuple(frames.shape[1:])} and {tuple(images.shape[1:])}")
    F = _flat(frames, "frames").shape[0]
    X = _flat(images, "images")  # (N, D)
    labels = check_labels(labels, X.shape[0])
    if n_filters > F:
        raise ValueError(f"n_filters = {n_filters} is more than the {F} frames given")
    idx = rng.choice(F, size=n_filters, replace=False)  # (n_filters,)
    if whitening is not None:
        X = _flat(whiten(np.asarray(images), whitening, dtype=np.float64), "images")
    accs, thrs = np.empty(n_filters), np.empty(n_filters)
    for start in tqdm(range(0, n_filters, chunk), disable=not progress, desc="linear filters"):
        U = _filters(frames, idx[start:start + chunk], whitening)  # (n, D) unit rows
        accs[start:start + len(U)], thrs[start:start + len(U)] = stump_accuracy(
            X @ U.T, labels, n_thresholds=n_thresholds)  # (N, n) responses
    best = int(np.argmax(accs))
    u = _filters(frames, idx[best:best + 1], whitening)[0].reshape(frames.shape[1:])  # (C, H, W)
    return LinearBaseline(float(accs[best]), u, int(idx[best]), float(thrs[best]), accs, idx)


def _filters(frames, idx, whitening) -> np.ndarray:
    """Frames ``idx`` as unit-norm rows (n, D), whitened first if ``whitening`` is given."""
    U = np.asarray(frames[idx], dtype=np.float64)  # (n, C, H, W)
    if whitening is not None:
        U = whiten(U, whitening, dtype=np.float64)
    U = U.reshape(len(idx), -1)  # (n, D)
    norm = np.linalg.norm(U, axis=1, keepdims=True)
    return U / np.where(norm > 0, norm, 1.0)  # an all-zero frame stays zero (a constant filter)


def random_weights_baseline(cfg: ModelConfig, images, labels, *, rng: np.random.Generator,
                            whitening: Whitening | None = None, n_thresholds: int = 20,
                            top: int = 10, batch: int = 200) -> NeuronScan:
    """Scan of the same architecture at random initialisation (``init_params(cfg, rng)``)."""
    check_rng(rng)
    params = init_params(cfg, rng)
    acts = collect_activations(params, cfg, images, batch=batch, whitening=whitening)
    return scan_neurons(acts, labels, n_thresholds=n_thresholds, top=top)
