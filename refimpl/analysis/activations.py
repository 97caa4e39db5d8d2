"""Every neuron's response to a set of images: the raw material of the paper's neuron scans.

The paper scores each neuron of the network on a labelled test set (its Section 4). Here a
"neuron" is one entry of one sublayer output of :mod:`refimpl.model` (names as
:func:`refimpl.model.sublayer_outputs`)::

    stage{s}.filter  f_s = W1_s^T x_s       (N, K, OH, OW)
    stage{s}.pool    p_s = sqrt(eps + H f_s^2)  (N, K, PH, PW)
    stage{s}.lcn     y_s = LCN(p_s)         (N, K, PH, PW)   (absent when cfg.lcn is false)

Images are the raw frames; :func:`model_input` applies the run's whitening exactly as training
did (refimpl.train.prepare_frames), so a scan sees what the network saw during training.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..backend import to_numpy
from ..config import ModelConfig, stage_geometry
from ..model import check_params, model_forward, sublayer_outputs
from ..preprocess import Whitening, whiten
from ._checks import check_images, check_int, check_whitening


def sublayer_names(cfg: ModelConfig) -> list[str]:
    """The sublayer output names of ``cfg``, bottom to top (filter, pool, lcn per stage)."""
    kinds = ("filter", "pool", "lcn") if cfg.lcn else ("filter", "pool")
    return [f"stage{s}.{k}" for s in range(cfg.n_stages) for k in kinds]


def sublayer_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int, int]]:
    """Per example, the (K, h, w) shape of every sublayer output."""
    shapes = {}
    for s, geo in enumerate(stage_geometry(cfg)):
        shapes[f"stage{s}.filter"] = geo["filter"]
        shapes[f"stage{s}.pool"] = geo["pool"]
        if cfg.lcn:
            shapes[f"stage{s}.lcn"] = geo["pool"]
    return shapes


def check_names(names, cfg: ModelConfig, argument: str = "names") -> list[str]:
    """``names`` (None = all) as a list of known sublayer names, in model order."""
    known = sublayer_names(cfg)
    if names is None:
        return known
    if isinstance(names, str):
        raise TypeError(f"{argument} must be a list of sublayer names, got the string {names!r}")
    names = list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{argument}: unknown sublayer names {unknown}; known: {known}")
    if not names:
        raise ValueError(f"{argument} is empty: name at least one of {known}")
    return [n for n in known if n in names]


def model_input(images, cfg: ModelConfig, whitening: Whitening | None = None) -> np.ndarray:
    """Raw frames (N, C, H, W) -> the model's input in ``cfg.dtype``: whitened as in training."""
    check_images(images, cfg)
    check_whitening(cfg, whitening)
    if whitening is not None:
        return whiten(np.asarray(images), whitening, dtype=cfg.dtype)
    return np.ascontiguousarray(images, dtype=cfg.dtype)


def collect_activations(params: dict, cfg: ModelConfig, images, *, batch: int = 200,
                        whitening: Whitening | None = None, names=None,
                        progress: bool = False) -> dict[str, np.ndarray]:
    """Every sublayer output of the model for ``images`` (N, C, H, W) raw frames.

    Returns ``{name: (N, K, h, w) float64}`` for the sublayers in ``names`` (default: all of
    :func:`sublayer_names`), computed ``batch`` images at a time with :func:`model_forward`.
    """
    check_params(params, cfg)
    batch = check_int("batch", batch)
    names = check_names(names, cfg)
    x = model_input(images, cfg, whitening)
    N = x.shape[0]
    shapes = sublayer_shapes(cfg)
    acts = {n: np.empty((N, *shapes[n]), dtype=np.float64) for n in names}
    for start in tqdm(range(0, N, batch), disable=not progress, desc="activations", unit="batch"):
        _, cache = model_forward(x[start:start + batch], params, cfg)
        outs = sublayer_outputs(cache)
        for n in names:
            acts[n][start:start + batch] = to_numpy(outs[n])  # (B, K, h, w)
    return acts
