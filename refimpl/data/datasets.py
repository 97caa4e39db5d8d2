"""Named, cached datasets: ``load(name, seed=..., size=..., ...)`` builds once, then reads the .npz.

    name                     arrays                                   built by
    frames                   frames, has_face, face_box               frames.make_frames
    frames-noface            frames, has_face, face_box               frames.no_face_frames
    faces-test, faces-val    images, labels, origin                   testsets.face_set
    cats-test, cats-val      images, labels, origin                   testsets.cat_set
    bodies-test, bodies-val  images, labels, origin                   testsets.body_set
    body-crops               crops                                    bodies.body_crops
    invariance-scale, invariance-translation, invariance-rotation
                             images, values, identity                 invariance.invariance_set
    labelled                 x_train, y_train, x_val, y_val           labelled.load_labelled

Everything is deterministic from ``seed`` (one ``numpy.random.default_rng(seed)`` per build).
The photo sources in use are resolved before the cache key is made, so installing the Debian
photos gives new files rather than stale ones; ``Dataset.info["sources"]`` says which were used.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .cache import cached
from .natural import photo_sources

DEFAULT_N = {"frames": 1000, "frames-noface": 1000, "test": 370, "labelled": None}


class Dataset(NamedTuple):
    """name; arrays: the dataset's arrays (see the module table); info: parameters, photo
    sources, note (caveats to print with results), path and content hash of the cache file."""

    name: str
    arrays: dict
    info: dict


def _frames(p, rng):
    from .frames import FrameConfig, make_frames, no_face_frames

    cfg = FrameConfig(size=p["size"], channels=p["channels"], face_fraction=p["face_fraction"],
                      sources=tuple(p["sources"]))
    make = no_face_frames if p["name"] == "frames-noface" else make_frames
    f = make(p["n"], cfg, rng=rng)
    return {"frames": f.frames, "has_face": f.has_face, "face_box": f.face_box}, ""


def _testset(p, rng):
    from . import testsets

    kind, split = p["name"].split("-")
    make = {"faces": testsets.face_set, "cats": testsets.cat_set, "bodies": testsets.body_set}[kind]
    extra = {"crops": _body_crops_cached(p)} if kind == "bodies" else {}
    s = make(p["n"], p["size"], channels=p["channels"], split=split, rng=rng,
             sources=tuple(p["sources"]), **extra)
    return {"images": s.images, "labels": s.labels, "origin": s.origin}, s.note


def _body_crops_cached(p):
    return load("body-crops", cache_dir=p["cache_dir"]).arrays["crops"]


def _body_crops(p, rng):
    from .bodies import body_crops

    return {"crops": body_crops(step=p["step"], progress=True)}, \
        "pedestrians from one street video (vtest.avi), ~10 people"


def _invariance(p, rng):
    from .invariance import invariance_set

    s = invariance_set(p["name"].split("-")[1], p["size"], channels=p["channels"], rng=rng,
                       sources=tuple(p["sources"]))
    note = f"{s.kind} in {s.unit}; out-of-plane (3-D) rotation is not provided (no pose data ships)"
    return {"images": s.images, "values": s.values, "identity": s.identity}, note


def _labelled(p, rng):
    from .labelled import load_labelled

    s = load_labelled(p["size"], channels=p["channels"], n=p["n"], rng=rng, source=p["source"])
    return {"x_train": s.x_train, "y_train": s.y_train, "x_val": s.x_val, "y_val": s.y_val,
            "classes": np.array(s.classes)}, f"labelled set: {s.source}"


BUILDERS = {
    "frames": _frames, "frames-noface": _frames,
    **{f"{k}-{s}": _testset for k in ("faces", "cats", "bodies") for s in ("test", "val")},
    "body-crops": _body_crops,
    **{f"invariance-{k}": _invariance for k in ("scale", "translation", "rotation")},
    "labelled": _labelled,
}
DATASETS = tuple(BUILDERS)


def load(name: str, *, seed: int = 0, size: int = 32, channels: int = 1, n: int | None = None,
         face_fraction: float | None = None, sources=None, cache_dir=None,
         refresh: bool = False) -> Dataset:
    """Build (or read from the cache) the dataset ``name`` at ``size`` px with ``channels``.

    n: number of images (default 1000 frames, 370 test images, all labelled images).
    face_fraction: frames only (default :class:`refimpl.data.frames.FrameConfig`'s).
    sources: photo sources (default: every installed one).
    """
    from .frames import FrameConfig

    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; known: {list(DATASETS)}")
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    kind = "test" if name.split("-")[-1] in ("test", "val") else name
    params = {"name": name, "seed": int(seed)}
    if name == "body-crops":
        params["step"] = 2  # every 2nd video frame: ~1k crops, ~2 minutes of HOG once
    elif name == "labelled":
        from .sources import get_source

        installed = "fashion-mnist" if get_source("fashion-mnist").installed() else "mnist-5k"
        params.update(size=size, channels=channels, n=n, source=installed)
    else:
        params.update(size=size, channels=channels, sources=list(photo_sources(sources)))
        if not name.startswith("invariance"):
            params["n"] = n if n is not None else DEFAULT_N[kind]
        if name.startswith("frames"):
            params["face_fraction"] = (FrameConfig.face_fraction if face_fraction is None
                                       else face_fraction)
    note = {}

    def build():
        arrays, note["note"] = BUILDERS[name]({**params, "cache_dir": cache_dir},
                                              np.random.default_rng(seed))
        arrays["__note__"] = np.array(note["note"])
        return arrays

    arrays, path, digest = cached(name, params, build, directory=cache_dir, refresh=refresh)
    text = str(arrays.pop("__note__"))
    return Dataset(name, arrays, {**params, "note": text, "path": str(path), "content_hash": digest})
