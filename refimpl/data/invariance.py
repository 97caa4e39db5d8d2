"""Invariance sets (the paper's Figures 4-5): 10 test faces scaled, translated and rotated.

Each face is pasted at the centre of a background three times the image size (a crop of a
held-out test photo), the whole canvas is transformed about its centre with cubic interpolation (the
paper: "standard cubic interpolation"), and the central ``size x size`` window is kept, so a
shifted or shrunken face reveals real background rather than padding.

- scale: factors :data:`SCALES` (the face's side at factor 1 is 75% of the image) [ours]
- translation: horizontal shifts in pixels, -size/4 .. size/4 [ours]
- rotation: *in-plane* angles :data:`ANGLES` degrees [ours]

The paper's third axis, out-of-plane (3-D) rotation up to 90 degrees, used calibrated pose
sequences of 10 people; no package ships such sequences, so that set is not provided (in-plane
rotation is a different invariance and is labelled as such).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .faces import face_pool
from .natural import check_frame_args, random_crop, to_channels
from .paste import paste_object
from .testsets import _by_source

SCALES = tuple(np.round(np.linspace(0.4, 1.6, 13), 2))
ANGLES = tuple(range(-90, 91, 15))
KINDS = ("scale", "translation", "rotation")
N_FACES = 10  # [paper]


class InvarianceSet(NamedTuple):
    """images: (N_FACES, T, C, H, W) float32; values: (T,) the transformation parameter
    (factor, pixels or degrees); kind and unit say which; identity: (N_FACES,) str."""

    images: np.ndarray
    values: np.ndarray
    kind: str
    unit: str
    identity: np.ndarray


def _transform(canvas: np.ndarray, kind: str, value: float) -> np.ndarray:
    from skimage.transform import AffineTransform, warp

    c = (canvas.shape[-1] - 1) / 2.0
    if kind == "scale":
        t = AffineTransform(translation=(-c, -c)) + AffineTransform(scale=value) + \
            AffineTransform(translation=(c, c))
    elif kind == "translation":
        t = AffineTransform(translation=(value, 0))
    else:
        t = AffineTransform(translation=(-c, -c)) + \
            AffineTransform(rotation=np.deg2rad(value)) + AffineTransform(translation=(c, c))
    out = [warp(p, t.inverse, order=3, mode="edge", preserve_range=True) for p in canvas]
    return np.clip(np.stack(out), 0, 1).astype(np.float32)  # (C, 3S, 3S)


def invariance_set(kind: str, size: int, *, channels: int = 1, rng: np.random.Generator,
                   values=None, sources=None) -> InvarianceSet:
    """The ``kind`` ("scale", "translation", "rotation") set of 10 test faces at ``size``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    check_frame_args(N_FACES, size, channels, rng)
    if values is None:
        values = {"scale": SCALES, "rotation": ANGLES,
                  "translation": np.round(np.linspace(-size / 4, size / 4, 11)).astype(int)}[kind]
    values = np.asarray(values, dtype=np.float64)
    unit = {"scale": "factor", "translation": "pixels", "rotation": "degrees (in-plane)"}[kind]
    faces = face_pool("test")
    people = np.unique(faces.identity)
    chosen = rng.choice(len(people), size=N_FACES, replace=False)  # 10 different people
    pick = [int(rng.choice(np.flatnonzero(faces.identity == people[c]))) for c in chosen]
    groups = _by_source("test", sources)
    images = np.empty((N_FACES, len(values), channels, size, size), dtype=np.float32)
    lo = size  # the central window of the 3S canvas
    for i, j in enumerate(pick):
        group = groups[int(rng.integers(0, len(groups)))]
        canvas = to_channels(random_crop(group[int(rng.integers(0, len(group)))][1], 3 * size,
                                         rng), channels)  # (C, 3S, 3S)
        face = faces.images[j]
        h = round(0.75 * size)
        w = round(h * face.shape[1] / face.shape[0])
        mid = 3 * size // 2
        canvas = paste_object(canvas, face, top=mid - h // 2, left=mid - w // 2, height=h,
                              width=w, feather=float(faces.feather[j]))
        for t, v in enumerate(values):
            images[i, t] = _transform(canvas, kind, float(v))[:, lo:lo + size, lo:lo + size]
    return InvarianceSet(images, values, kind, unit, faces.identity[pick])
