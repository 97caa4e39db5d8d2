"""The unlabeled "YouTube" frames: natural-photo crops, a fraction of them with a pasted face.

The paper's 10M frames were 200x200 colour stills, one per YouTube video; an OpenCV face
detector found faces in fewer than 3% of 100,000 random 60x60 patches. That is a rate over
*patches*: a frame with a face still has many face-free patches. We reproduce the measurement
on our frames with :func:`refimpl.data.detect.face_patch_rate` (patches of 30% of the frame
side) and chose the frame-level face fraction from it:

    face_fraction = 0.5 (half the frames get one training face), face side 15-40% of the
    frame side [ours]

Measured with ``catneuron data --face-rate`` (1,000 colour frames of 200x200, seed 0, 10,000
random 60x60 patches):

    frames                                   detected-face patch rate
    face_fraction 0.5, PyPI photos only      1.32%
    face_fraction 0.5, all 6 photo sources   1.21%
    face_fraction 1.0 (every frame a face)   2.34%
    face_fraction 0.0 (the photos' own)      0.09%
    the paper (YouTube frames)               <3%

Even a face in every frame stays under the paper's 3%, because a 60x60 patch holds a whole,
detectable face only when the face is small and the patch lands on it; so the patch rate bounds
the face fraction only loosely. We take half the frames: faces common enough for a face unit to
form in a small run, and half the frames left for the no-faces control. ``face_fraction`` is a
config field: change it and re-measure.
Faces come from the training identities of :func:`refimpl.data.faces.face_pool` only, pasted
with a soft elliptical edge at a random position, their side a uniform fraction
``face_scale`` of the frame side, so a detector-sized 30% patch holds a whole face only
sometimes, as in the paper. The face sources are grey, so in colour frames a face is a grey
ellipse: prefer grey frames (``channels=1``) when faces matter.

:func:`no_face_frames` is the paper's control: the same generator, dropping every frame in which
the OpenCV face detector fires (pasted faces, and the faces in the photos themselves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .detect import has_face
from .faces import face_pool
from .natural import check_frame_args, photo_pool, random_crop, to_channels
from .paste import paste_object

DETECT_SIDE = 200  # frames are enlarged to the paper's frame side before face detection


@dataclass(frozen=True)
class FrameConfig:
    """How frames are made. Sizes: tiny configs ~16-32 px, mini ~32-48 px, the paper 200 px."""

    size: int = 32                   # frame side in pixels (paper: 200)
    channels: int = 1                # 1 grey (mean of RGB) or 3 colour (paper: colour)
    face_fraction: float = 0.5       # share of frames with a pasted face [ours, see module doc]
    face_scale: tuple[float, float] = (0.15, 0.4)  # face side / frame side [ours]
    crop_scale: tuple[float, float] = (0.25, 1.0)  # photo crop side / photo's short side [ours]
    sources: tuple[str, ...] | None = None  # photo sources; None = every installed one

    def __post_init__(self):
        if not 0.0 <= self.face_fraction <= 1.0:
            raise ValueError(f"face_fraction must be in [0, 1], got {self.face_fraction}")
        for name in ("face_scale", "crop_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name} must be (lo, hi) with 0 < lo <= hi <= 1, got {(lo, hi)}")
        check_frame_args(0, self.size, self.channels, np.random.default_rng(0))


class Frames(NamedTuple):
    """frames: (N, C, H, W) float32 in [0, 1]; has_face: (N,) bool, a face was pasted;
    face_box: (N, 4) int (top, left, height, width), -1 where there is none."""

    frames: np.ndarray
    has_face: np.ndarray
    face_box: np.ndarray


def _one_frame(cfg: FrameConfig, photos, faces, rng) -> tuple[np.ndarray, tuple]:
    photo = photos[int(rng.integers(0, len(photos)))][2]
    frame = to_channels(random_crop(photo, cfg.size, rng, scale=cfg.crop_scale), cfg.channels)
    if faces is None or rng.random() >= cfg.face_fraction:
        return frame, (-1, -1, -1, -1)
    k = int(rng.integers(0, len(faces.images)))
    face = faces.images[k]
    if rng.random() < 0.5:
        face = face[:, ::-1]
    side = max(2, round(rng.uniform(*cfg.face_scale) * cfg.size))
    height, width = side, max(2, round(side * face.shape[1] / face.shape[0]))
    top = int(rng.integers(0, cfg.size - height + 1))
    left = int(rng.integers(0, cfg.size - width + 1))
    frame = paste_object(frame, face, top=top, left=left, height=height, width=width,
                         feather=float(faces.feather[k]))
    return frame, (top, left, height, width)


def make_frames(n: int, cfg: FrameConfig, *, rng: np.random.Generator) -> Frames:
    """``n`` frames of ``cfg``; a ``cfg.face_fraction`` share get a training face (see module doc)."""
    check_frame_args(n, cfg.size, cfg.channels, rng)
    photos = photo_pool("train", cfg.sources)
    faces = face_pool("train") if cfg.face_fraction > 0 else None
    frames = np.empty((n, cfg.channels, cfg.size, cfg.size), dtype=np.float32)
    boxes = np.full((n, 4), -1, dtype=np.int64)
    for i in range(n):
        frames[i], boxes[i] = _one_frame(cfg, photos, faces, rng)
    return Frames(frames, boxes[:, 0] >= 0, boxes)


def no_face_frames(n: int, cfg: FrameConfig, *, rng: np.random.Generator,
                   drop_pasted: bool = False, detect_side: int = DETECT_SIDE,
                   max_tries: int = 20) -> Frames:
    """``n`` frames of the same generator with every frame where the face detector fires removed.

    Frames are drawn until ``n`` survive (at most ``max_tries * n`` draws). The detector sees
    each frame enlarged to ``detect_side`` px (the paper's 200 px frames) so that faces in small
    frames are found too. A pasted face the detector misses stays in, exactly as in the paper's
    control; ``drop_pasted`` also drops those (a cleaner control than the paper's).
    """
    check_frame_args(n, cfg.size, cfg.channels, rng)
    photos = photo_pool("train", cfg.sources)
    faces = face_pool("train") if cfg.face_fraction > 0 else None
    frames = np.empty((n, cfg.channels, cfg.size, cfg.size), dtype=np.float32)
    boxes = np.full((n, 4), -1, dtype=np.int64)
    kept = drawn = 0
    while kept < n:
        if drawn >= max_tries * max(n, 1):
            raise ValueError(f"the face detector fired on too many frames: kept {kept} of {drawn}")
        frame, box = _one_frame(cfg, photos, faces, rng)
        drawn += 1
        if not (drop_pasted and box[0] >= 0) and not has_face(frame, min_side=detect_side):
            frames[kept], boxes[kept] = frame, box
            kept += 1
    return Frames(frames, boxes[:, 0] >= 0, boxes)
