"""Input checks shared by the analyses: each raises a ValueError/TypeError naming the argument."""

from __future__ import annotations

import numpy as np

from ..config import ModelConfig


def check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def check_labels(labels, n: int | None = None, name: str = "labels") -> np.ndarray:
    """``labels`` (N,) bool or 0/1 integers -> a bool array; ``n`` is the expected length."""
    a = np.asarray(labels)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} must have one entry per example ({n}), got {a.shape[0]}")
    if a.dtype == bool:
        return a
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be bool or 0/1 integers, got dtype {a.dtype}")
    if a.size and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must be bool or 0/1 integers, got values {np.unique(a)[:10]}")
    return a.astype(bool)


def check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_images(images, cfg: ModelConfig, name: str = "images") -> None:
    """``images`` must be (N, C, H, W) with the config's C and H = W = image_size, N >= 1."""
    want = (cfg.channels, cfg.image_size, cfg.image_size)
    shape = getattr(images, "shape", None)
    if getattr(images, "ndim", None) != 4 or tuple(shape[1:]) != want or shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, C, H, W) = (N, {want[0]}, {want[1]}, "
                         f"{want[2]}) with N >= 1 for config {cfg.name!r}, got {shape}")


def check_whitening(cfg: ModelConfig, whitening) -> None:
    """The run's whitening must be given exactly when the config whitens its input."""
    if cfg.preprocess == "zca" and whitening is None:
        raise ValueError(f"config {cfg.name!r} whitens its input (preprocess = 'zca'): pass the "
                         f"run's whitening (TrainResult.whitening or the checkpoint's)")
    if cfg.preprocess != "zca" and whitening is not None:
        raise ValueError(f"config {cfg.name!r} has preprocess = {cfg.preprocess!r} but a "
                         f"whitening was given; training did not whiten, so pass whitening=None")
