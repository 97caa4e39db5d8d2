"""The positive-control world (issue 5): one rigid, frequent concept pasted into natural frames.

Faces at our scale may be too hard a concept for a small network; the control world asks the
easier question first: can the pipeline grow a concept neuron at all? Its concept is one class
of the labelled set (:mod:`refimpl.data.labelled`: an MNIST digit, or a Fashion-MNIST item when
Debian's set is installed), drawn as bright strokes over a natural frame (the class image is
its own alpha mask, so only the strokes are pasted):

- **Training frames** (:func:`control_frames`): crops of the *training* photos; a
  ``concept_fraction`` share of them (issue 5: 20-30%) get one concept image, its side a uniform
  fraction ``object_scale`` of the frame side, anywhere in the frame (or, with ``placement =
  "centred"``, within 10% of the middle, as in the labelled sets). Other classes never appear
  in training.
- **Labelled sets** (:func:`control_set`): concept images (side 60-90% of the image, as in the
  face set) on textured crops of the *held-out* photos, against negatives that are half the
  *other* classes pasted the same way (same strokes, wrong shape) and half plain crops, at the
  paper's 35:65 ratio. Validation and test use disjoint class images and disjoint halves of the
  held-out photos (:func:`refimpl.data.testsets.split_half`).

Which class images go where is fixed by :func:`class_pool`: the labelled set's training split
feeds the training frames; its validation split is halved into validation and test images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .frames import Frames
from .labelled import load_labelled
from .natural import check_frame_args, photo_pool, random_crop, to_channels
from .paste import paste_object
from .testsets import PAPER_POSITIVE_SHARE, LabelledImages, _background, _by_source, n_positives

POOL_SPLITS = ("train", "val", "test")
POOL_SEED = 0  # [ours] fixes which labelled images feed training, validation and test
PLACEMENTS = ("anywhere", "centred")
TEST_SCALE = (0.6, 0.9)  # object side / image side in the labelled sets (as the face set)


@dataclass(frozen=True)
class ControlConfig:
    """How control frames are made (the counterpart of :class:`refimpl.data.frames.FrameConfig`)."""

    size: int = 32                    # frame side in pixels
    channels: int = 1                 # 1 grey or 3 colour (the strokes are white either way)
    concept: int = 0                  # class index of the labelled set that is the concept
    concept_fraction: float = 0.25    # share of frames with the concept [issue 5: 20-30%]
    object_scale: tuple[float, float] = (0.5, 0.9)  # concept side / frame side [ours]
    crop_scale: tuple[float, float] = (0.25, 1.0)   # photo crop side / photo's short side
    placement: str = "anywhere"  # "anywhere" in the frame, or "centred" (+-10% of the side, as
    #                              in the labelled sets): the most rigid version of the concept
    sources: tuple[str, ...] | None = None  # photo sources; None = every installed one

    def __post_init__(self):
        if not 0.0 <= self.concept_fraction <= 1.0:
            raise ValueError(f"concept_fraction must be in [0, 1], got {self.concept_fraction}")
        if not isinstance(self.concept, (int, np.integer)) or not 0 <= self.concept <= 9:
            raise ValueError(f"concept must be a class index 0..9, got {self.concept!r}")
        for name in ("object_scale", "crop_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name} must be (lo, hi) with 0 < lo <= hi <= 1, got {(lo, hi)}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        check_frame_args(0, self.size, self.channels, np.random.default_rng(0))


def class_pool(split: str) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The labelled images of ``split``: (n, 28, 28) float32 in [0, 1], labels (n,), class names.

    "train" is the labelled set's training split; "val" and "test" are the two halves of its
    validation split, so no image is in two of them.
    """
    if split not in POOL_SPLITS:
        raise ValueError(f"split must be one of {POOL_SPLITS}, got {split!r}")
    s = load_labelled(28, rng=np.random.default_rng(POOL_SEED))
    if split == "train":
        x, y = s.x_train, s.y_train
    else:
        half = len(s.x_val) // 2
        part = slice(None, half) if split == "val" else slice(half, None)
        x, y = s.x_val[part], s.y_val[part]
    return x[:, 0], y, s.classes  # (n, 28, 28)


def paste_strokes(frame: np.ndarray, obj: np.ndarray, *, top: int, left: int,
                  side: int) -> np.ndarray:
    """``frame`` (C, H, W) with the bright strokes of ``obj`` (h, w) in [0, 1], resized to
    ``side x side``, blended in at (top, left): the object is its own alpha mask."""
    return paste_object(frame, np.ones_like(obj), top=top, left=left, height=side, width=side,
                        mask=obj)


def _place(size: int, scale, rng, placement: str = "anywhere") -> tuple[int, int, int]:
    """(top, left, side) of a square object whose side is a ``scale`` fraction of ``size``:
    anywhere inside the frame, or centred up to 10% of the side off the middle."""
    side = max(2, round(rng.uniform(*scale) * size))
    if placement == "anywhere":
        lo, hi = 0, size - side
    else:
        jitter = size // 10
        lo, hi = max(0, (size - side) // 2 - jitter), min(size - side, (size - side) // 2 + jitter)
    return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)), side


def control_frames(n: int, cfg: ControlConfig, *, rng: np.random.Generator) -> Frames:
    """``n`` training frames; a ``cfg.concept_fraction`` share hold one concept image.

    Returns :class:`refimpl.data.frames.Frames`: ``has_face`` marks the frames with the concept
    and ``face_box`` its (top, left, height, width), -1 where there is none.
    """
    check_frame_args(n, cfg.size, cfg.channels, rng)
    photos = photo_pool("train", cfg.sources)
    x, y, _ = class_pool("train")
    concept = x[y == cfg.concept]
    if len(concept) == 0:
        raise ValueError(f"the labelled set has no images of class {cfg.concept}")
    frames = np.empty((n, cfg.channels, cfg.size, cfg.size), dtype=np.float32)
    boxes = np.full((n, 4), -1, dtype=np.int64)
    for i in range(n):
        photo = photos[int(rng.integers(0, len(photos)))][2]
        frame = to_channels(random_crop(photo, cfg.size, rng, scale=cfg.crop_scale), cfg.channels)
        if rng.random() < cfg.concept_fraction:
            top, left, side = _place(cfg.size, cfg.object_scale, rng, cfg.placement)
            frame = paste_strokes(frame, concept[int(rng.integers(0, len(concept)))],
                                  top=top, left=left, side=side)
            boxes[i] = (top, left, side, side)
        frames[i] = frame
    return Frames(frames, boxes[:, 0] >= 0, boxes)


def control_set(n: int, size: int, *, concept: int = 0, channels: int = 1, split: str = "test",
                rng: np.random.Generator, sources=None,
                positive_share: float = PAPER_POSITIVE_SHARE) -> LabelledImages:
    """Concept images vs negatives (half other classes, half plain crops) at ``positive_share``.

    origin: "class:<k>" for pasted class images (the concept's label is 1), else the photo's
    "source:name" for a plain crop.
    """
    check_frame_args(n, size, channels, rng)
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    x, y, classes = class_pool(split)
    if not 0 <= concept < len(classes):
        raise ValueError(f"concept must be a class index 0..{len(classes) - 1}, got {concept!r}")
    k = n_positives(n, positive_share)
    n_other = (n - k) // 2
    groups = _by_source(split, sources)
    pos_pool, other_pool = np.flatnonzero(y == concept), np.flatnonzero(y != concept)
    images = np.empty((n, channels, size, size), dtype=np.float32)
    labels = np.zeros(n, dtype=np.int64)
    origin = []
    for i in range(n):
        background, where = _background(groups, size, rng)
        frame = to_channels(background, channels)
        if i < k + n_other:
            j = int(rng.choice(pos_pool if i < k else other_pool))
            top, left, side = _place(size, TEST_SCALE, rng, "centred")
            frame = paste_strokes(frame, x[j], top=top, left=left, side=side)
            where = f"class:{int(y[j])}"
        images[i], labels[i] = frame, int(i < k)
        origin.append(where)
    order = rng.permutation(n)
    note = (f"control: class {concept} ({classes[concept]}) of the labelled set as bright strokes "
            f"on held-out photo crops; negatives: {n_other} other-class images and "
            f"{n - k - n_other} plain crops")
    return LabelledImages(images[order], labels[order], np.array(origin, dtype=str)[order], note)
