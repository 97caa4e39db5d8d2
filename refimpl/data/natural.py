"""Natural photos shipped by scikit-image and scikit-learn, and random frames cropped from them."""

from __future__ import annotations

import numpy as np

# Photos bundled inside the scikit-image wheel (no download) and scikit-learn's two samples.
SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "brick", "grass",
                  "gravel", "hubble_deep_field", "moon", "coins", "stereo_motorcycle")


def natural_photos() -> list[np.ndarray]:
    """The shipped photos as float32 arrays in [0, 1], each (H, W, 3) (grey photos repeated)."""
    try:
        import skimage.data
        from sklearn.datasets import load_sample_images
    except ImportError as err:  # pragma: no cover - both are dependencies of catneuron
        raise ImportError(
            "natural photos need scikit-image and scikit-learn: pip install scikit-image scikit-learn"
        ) from err
    photos = []
    for name in SKIMAGE_PHOTOS:
        img = getattr(skimage.data, name)()
        if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
            img = img[0]
        photos.append(img)
    photos.extend(load_sample_images().images)
    out = []
    for img in photos:
        img = np.asarray(img, dtype=np.float32) / 255.0
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        out.append(img[:, :, :3])
    return out


def natural_frames(n: int, size: int, *, channels: int = 1, rng: np.random.Generator) -> np.ndarray:
    """``n`` random ``size x size`` crops of the shipped photos, randomly flipped.

    Returns float32 (n, channels, size, size) in [0, 1]; ``channels`` is 1 (grey, the mean of
    RGB) or 3. Deterministic given ``rng``.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if n < 0 or size < 1:
        raise ValueError(f"need n >= 0 and size >= 1, got n={n}, size={size}")
    photos = natural_photos()
    if size > min(min(p.shape[:2]) for p in photos):
        raise ValueError(f"size {size} is larger than the smallest shipped photo")
    frames = np.empty((n, channels, size, size), dtype=np.float32)
    which = rng.integers(0, len(photos), size=n)
    for i, k in enumerate(which):
        p = photos[k]
        y = int(rng.integers(0, p.shape[0] - size + 1))
        x = int(rng.integers(0, p.shape[1] - size + 1))
        crop = p[y : y + size, x : x + size]  # (size, size, 3)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = crop.transpose(2, 0, 1)  # (3, size, size)
        frames[i] = crop.mean(axis=0, keepdims=True) if channels == 1 else crop
    return frames
