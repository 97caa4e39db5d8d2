"""Invariance curves of one neuron (the paper's Figures 4 and 5).

The paper plots the best neuron's response, averaged over 10 test faces, against the amount of
a transformation: scaling, horizontal translation (pixels) and out-of-plane (3-D) rotation. For
each kind, :mod:`refimpl.data.invariance` gives the 10 faces transformed by each value
``v_1 .. v_T``; the curve is, per value,

    mean_t = (1/10) sum_i a(T_{v_t}(face_i)),     std_t = the spread over the 10 faces

where ``a`` is the neuron's activation (on the image whitened as in training). A flat curve
is an invariant neuron; a peaked one is selective for the untransformed face.

Out-of-plane rotation needs calibrated 3-D pose sequences that no installed package ships, so it
is listed in :data:`UNAVAILABLE` instead of being computed; in-plane rotation (a different
invariance) is computed and labelled as such.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..config import ModelConfig
from ..data.invariance import KINDS, InvarianceSet, invariance_set
from ..preprocess import Whitening
from ._checks import check_rng
from .activations import collect_activations
from .stimulus import check_neuron
from .neurons import Neuron

UNAVAILABLE = {"out-of-plane rotation": "no installed package ships calibrated 3-D pose "
                                        "sequences of faces (the paper's 10 people)"}


class Curve(NamedTuple):
    values: np.ndarray  # (T,) the transformation's parameter (factor, pixels, degrees)
    mean: np.ndarray  # (T,) the neuron's mean activation over the faces
    std: np.ndarray  # (T,) its standard deviation over the faces
    responses: np.ndarray  # (n_faces, T) every face's activation
    unit: str  # what values measure, e.g. "pixels"


def response_curve(params: dict, cfg: ModelConfig, neuron: Neuron, iset: InvarianceSet, *,
                   whitening: Whitening | None = None, batch: int = 200) -> Curve:
    """The curve of ``neuron`` over one invariance set (images (n_faces, T, C, H, W))."""
    check_neuron(neuron, cfg)
    imgs = np.asarray(iset.images)
    if imgs.ndim != 5 or imgs.shape[1] != len(iset.values):
        raise ValueError(f"iset.images must be (n_faces, T, C, H, W) with T = len(values) = "
                         f"{len(iset.values)}, got {imgs.shape}")
    F, T = imgs.shape[:2]
    acts = collect_activations(params, cfg, imgs.reshape(F * T, *imgs.shape[2:]),  # (F*T, C, H, W)
                               batch=batch, whitening=whitening, names=[neuron.sublayer])
    r = acts[neuron.sublayer][:, neuron.map, neuron.y, neuron.x].reshape(F, T)  # (faces, T)
    return Curve(np.asarray(iset.values, dtype=np.float64), r.mean(axis=0), r.std(axis=0), r,
                 iset.unit)


def invariance_curves(params: dict, cfg: ModelConfig, neuron: Neuron, *, size: int | None = None,
                      channels: int | None = None, rng: np.random.Generator,
                      whitening: Whitening | None = None, kinds=KINDS,
                      sets: dict | None = None) -> dict[str, Curve]:
    """Curves of ``neuron`` for every kind in ``kinds`` ("scale", "translation", "rotation").

    The sets are drawn by :func:`refimpl.data.invariance.invariance_set` from ``rng`` at the
    model's input size and channels (``size``/``channels``, if given, must match ``cfg``), unless
    ``sets`` (kind -> InvarianceSet) supplies them. Out-of-plane rotation: see UNAVAILABLE.
    """
    check_rng(rng)
    check_neuron(neuron, cfg)
    for name, got, want in (("size", size, cfg.image_size), ("channels", channels, cfg.channels)):
        if got is not None and got != want:
            raise ValueError(f"{name} = {got!r} does not match config {cfg.name!r} ({want})")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"kinds: unknown {unknown}; known {KINDS} (out-of-plane rotation is "
                         f"not available: {UNAVAILABLE['out-of-plane rotation']})")
    sets = dict(sets or {})
    curves = {}
    for kind in kinds:
        iset = sets.get(kind) or invariance_set(kind, cfg.image_size, channels=cfg.channels,
                                                rng=rng)
        curves[kind] = response_curve(params, cfg, neuron, iset, whitening=whitening)
    return curves
