"""OpenCV detectors, as in the paper's data check and control experiment.

- Haar cascades shipped in ``cv2.data.haarcascades`` (opencv-python-headless<5; OpenCV 5 no
  longer ships them): frontal face, cat face, full body.
- :func:`face_patch_rate`: the paper's measurement. It ran "an OpenCV face detector on 60x60
  randomly-sampled patches" of its 200x200 frames and found faces in "less than 3% of the
  100,000 sampled patches". We sample square patches of ``patch_frac`` = 30% of the frame side
  and run the same kind of detector; patches smaller than 60 px are first enlarged to 60 px
  (cubic) so that the detector's 24x24 window can fire at all on small frames.

Images are float arrays in [0, 1], (C, H, W) or (H, W); boxes are (x, y, w, h) in pixels of
the image passed in.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from .sources import get_source

CASCADES = {  # kind -> (cascade file, minimum window in pixels, minNeighbors)
    "face": ("haarcascade_frontalface_default.xml", 24, 3),
    "cat": ("haarcascade_frontalcatface.xml", 24, 3),
    "body": ("haarcascade_fullbody.xml", 14, 3),
}
PAPER_PATCH_SIDE = 60  # the paper's patch side, and our minimum detector input side


@functools.lru_cache(maxsize=None)
def cascade(kind: str):
    """The OpenCV ``CascadeClassifier`` for ``kind`` ("face", "cat" or "body")."""
    if kind not in CASCADES:
        raise ValueError(f"kind must be one of {sorted(CASCADES)}, got {kind!r}")
    get_source("opencv").require()
    import os

    import cv2

    path = os.path.join(cv2.data.haarcascades, CASCADES[kind][0])
    clf = cv2.CascadeClassifier(path)
    if clf.empty():  # pragma: no cover - a broken OpenCV install
        raise FileNotFoundError(f"OpenCV could not load the cascade {path}")
    return clf


def to_grey_uint8(image: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) float in [0, 1] -> (H, W) uint8 grey."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img.mean(axis=0)  # (C, H, W) -> (H, W)
    if img.ndim != 2:
        raise ValueError(f"image must be (C, H, W) or (H, W), got shape {np.shape(image)}")
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def detect(image: np.ndarray, kind: str = "face", *, min_side: int = PAPER_PATCH_SIDE) -> np.ndarray:
    """Boxes (n, 4) int (x, y, w, h) where the ``kind`` cascade fires on ``image``.

    Images whose shorter side is below ``min_side`` are enlarged to it (cubic) first; the boxes
    are mapped back to the input's pixels.
    """
    import cv2

    grey = to_grey_uint8(image)
    scale = max(1.0, min_side / min(grey.shape))
    if scale > 1.0:
        grey = cv2.resize(grey, (round(grey.shape[1] * scale), round(grey.shape[0] * scale)),
                          interpolation=cv2.INTER_CUBIC)
    _, window, neighbours = CASCADES[kind]
    boxes = cascade(kind).detectMultiScale(grey, scaleFactor=1.1, minNeighbors=neighbours,
                                           minSize=(window, window))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / scale  # (n, 4)
    return np.rint(boxes).astype(np.int64)


def has_face(image: np.ndarray, *, min_side: int = PAPER_PATCH_SIDE) -> bool:
    """Whether the OpenCV frontal-face detector fires anywhere on ``image``."""
    return len(detect(image, "face", min_side=min_side)) > 0


class PatchRate(NamedTuple):
    """Result of :func:`face_patch_rate`: ``rate`` = detected / n_patches."""

    rate: float
    detected: int
    n_patches: int
    patch_side: int
    frame_side: int


def face_patch_rate(frames: np.ndarray, *, n_patches: int, rng: np.random.Generator,
                    patch_frac: float = 0.3) -> PatchRate:
    """Share of random square patches (``patch_frac`` of the frame side) where a face is detected.

    frames: (N, C, H, W) float in [0, 1]. Each patch takes a random frame and position. This is
    the paper's "<3% of 100,000 random 60x60 patches of 200x200 frames" measurement.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ValueError(f"frames must be a non-empty (N, C, H, W) array, got shape {frames.shape}")
    if not 0.0 < patch_frac <= 1.0:
        raise ValueError(f"patch_frac must be in (0, 1], got {patch_frac}")
    if n_patches < 1:
        raise ValueError(f"n_patches must be >= 1, got {n_patches}")
    n, _, h, w = frames.shape
    side = max(1, round(patch_frac * min(h, w)))
    detected = 0
    for _ in range(n_patches):
        k = int(rng.integers(0, n))
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        detected += has_face(frames[k, :, y:y + side, x:x + side])
    return PatchRate(detected / n_patches, detected, n_patches, side, min(h, w))
