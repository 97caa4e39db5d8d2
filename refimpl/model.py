"""The model: a stack of stages, 3 in the paper (= 9 sublayers), and its summed objective.

One stage s, with input ``x_s`` (the image for s = 0, else the previous stage's output)::

    f_s    = W1_s^T x_s               local filtering        (refimpl.local_filter)
    p_s    = sqrt(eps + H f_s^2)      L2 pooling, H fixed    (refimpl.l2pool)
    y_s    = LCN(p_s)                 contrast normalisation (refimpl.lcn); y_s = p_s if lcn = false
    J_s    = eq. 1 on x_s: ||W2_s f_s - x_s||^2 + lambda * sum p_s   (refimpl.objective)
    x_s+1  = y_s

The model's objective is ``J = sum_s J_s`` (the paper: "the sum of the objectives of the three
layers"). Every piece of math is a sublayer of refimpl; this file only wires them.

Gradients, two readings of "trained jointly" (``cfg.gradient``):

- ``joint``: the exact gradient of J. Stage s+1's input gradient ``dJ/dx_s+1`` flows back through
  stage s's LCN onto its pooled output and enters ``objective_backward(1, cache_s, dp_extra=...)``,
  so later stages' objectives also train earlier stages' weights.
- ``local``: each stage's weights get only ``dJ_s/dW_s``: stage inputs are treated as constants
  (nothing flows between stages). The input gradient returned is then ``dJ_0/dx``.

Tied weights (``cfg.tied``, [open]; the paper does not tie, its footnote 4 notes that RICA
does): one array per stage plays both roles, ``W2 = W1``, so its gradient is the sum of the
W1 and W2 gradients. Untied, eq. 1 has a scale degeneracy (``W1 -> a W1, W2 -> W2 / a`` keeps
the reconstruction and scales the sparsity term by ~a), so the sparsity term mostly shrinks W1;
tying removes it.

Parameters are one flat dict with stage-prefixed keys in a fixed canonical order,
``stage0.W1, stage0.W2, stage1.W1, ...`` (no ``W2`` keys when tied), each ``(OH, OW, K, C, R, R)``; :func:`flatten` and
:func:`unflatten` map it to and from one 1-D vector in that order (parameter-server shards split
that vector into contiguous ranges).

Sublayer outputs (for neuron scans) are named ``stage{s}.filter`` (f), ``stage{s}.pool`` (p) and
``stage{s}.lcn`` (y, absent when lcn = false); :func:`features_backward` gives the input gradient
of any weighted sum of them (e.g. one neuron, for the optimal stimulus of eq. 2).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .backend import get_xp
from .config import ModelConfig, stage_geometry
from .lcn import LCNCache, lcn_backward, lcn_forward
from .local_filter import local_filter_backward
from .objective import ObjectiveCache, objective_backward, objective_forward

WEIGHTS = ("W1", "W2")


# ---------------------------------------------------------------------------------------------
# Parameters


def weight_names(cfg: ModelConfig) -> tuple[str, ...]:
    """The learned arrays of one stage: ("W1", "W2"), or ("W1",) when tied."""
    return ("W1",) if cfg.tied else WEIGHTS


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape, in the canonical order (stage by stage, W1 then W2)."""
    shapes = {}
    for s, geo in enumerate(stage_geometry(cfg)):
        for w in weight_names(cfg):
            shapes[f"stage{s}.{w}"] = geo["weight"]  # (OH, OW, K, C, R, R)
    return shapes


def param_count(cfg: ModelConfig) -> int:
    """Total number of learned weights (computed from shapes; nothing is allocated)."""
    return sum(int(np.prod(shape)) for shape in param_shapes(cfg).values())


def init_params(cfg: ModelConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random weights ``N(0, (init_scale / sqrt(fan_in))^2)`` in ``cfg.dtype``, drawn in canonical
    order from ``rng``.

    fan_in of W1 is ``C R^2`` (one field); of W2 it is ``K ceil(R/S)^2`` (the features that
    overlap-add onto one input pixel), so both f and the reconstruction start at the input's scale.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    dtype = np.dtype(cfg.dtype)
    params = {}
    for key, shape in param_shapes(cfg).items():
        s = int(key[len("stage"):key.index(".")])
        st = cfg.stages[s]
        OH, OW, K, C, R, _ = shape
        fan_in = C * R * R if key.endswith("W1") else K * (-(-R // st.stride)) ** 2
        w = rng.standard_normal(shape, dtype=dtype)
        w *= dtype.type(cfg.init_scale / np.sqrt(fan_in))
        params[key] = w
    return params


def check_params(params, cfg: ModelConfig) -> None:
    """``params`` holds exactly the canonical keys with the canonical shapes (``ValueError``)."""
    shapes = param_shapes(cfg)
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict with keys {list(shapes)}, got {type(params).__name__}")
    if set(params) != set(shapes):
        missing, extra = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
        raise ValueError(f"params keys do not match the config: missing {missing}, unexpected {extra}")
    for key, shape in shapes.items():
        if tuple(params[key].shape) != shape:
            raise ValueError(f"params[{key!r}] must have shape (OH, OW, K, C, R, R) = {shape}, "
                             f"got {tuple(params[key].shape)}")


def flatten(params: dict, cfg: ModelConfig):
    """One 1-D vector of every parameter, in canonical order."""
    check_params(params, cfg)
    xp = get_xp(*params.values())
    return xp.concatenate([params[k].reshape(-1) for k in param_shapes(cfg)])  # (n_params,)


def unflatten(vec, cfg: ModelConfig) -> dict:
    """The inverse of :func:`flatten`: views into ``vec``, reshaped to the canonical shapes."""
    shapes = param_shapes(cfg)
    total = sum(int(np.prod(s)) for s in shapes.values())
    if getattr(vec, "ndim", None) != 1 or vec.shape[0] != total:
        raise ValueError(f"vec must be 1-D of length {total} (the config's parameter count), "
                         f"got shape {getattr(vec, 'shape', type(vec).__name__)}")
    params, start = {}, 0
    for key, shape in shapes.items():
        n = int(np.prod(shape))
        params[key] = vec[start : start + n].reshape(shape)  # (OH, OW, K, C, R, R)
        start += n
    return params


# ---------------------------------------------------------------------------------------------
# Forward


class StageCache(NamedTuple):
    objective: ObjectiveCache  # f, p, the decoder and the eq. 1 terms of this stage
    lcn: LCNCache | None  # None when cfg.lcn is False
    output: Any  # (B, K, PH, PW) y_s: the next stage's input


class ModelCache(NamedTuple):
    x: Any  # (B, C, H, W) the model's input
    stages: tuple[StageCache, ...]
    J: Any  # 0-d: sum of the stages' objectives
    gradient: str  # "joint" or "local"
    tied: bool  # W2 is W1


def _stage_key(s: int, w: str) -> str:
    return f"stage{s}.{w}"


def model_forward(x, params: dict, cfg: ModelConfig):
    """Forward of every stage and the summed objective.

    x: (B, C, H, W) with C = cfg.channels and H = W = cfg.image_size; params as
    :func:`init_params`. Returns J (0-d, ``sum_s J_s`` summed over the batch) and the cache.
    """
    if not hasattr(x, "shape") or getattr(x, "ndim", None) != 4:
        raise ValueError(f"x must be a 4-D array (B, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    want = (cfg.channels, cfg.image_size, cfg.image_size)
    if tuple(x.shape[1:]) != want:
        raise ValueError(f"x must have shape (B, C, H, W) = (B, {want[0]}, {want[1]}, {want[2]}) "
                         f"for config {cfg.name!r}, got {tuple(x.shape)}")
    check_params(params, cfg)
    h, stages, J = x, [], 0.0
    for s, st in enumerate(cfg.stages):
        W1 = params[_stage_key(s, "W1")]
        W2 = W1 if cfg.tied else params[_stage_key(s, "W2")]
        J_s, ocache = objective_forward(
            h, {"W1": W1, "W2": W2}, stride=st.stride,
            pool_window=st.pool_window, pool_stride=st.pool_stride, lam=cfg.lam, eps=cfg.eps)
        p = ocache.pooled  # (B, K, PH, PW)
        if cfg.lcn:
            y, lcache = lcn_forward(p, window=st.lcn_window, width=st.lcn_width, c=cfg.c,
                                    border=st.lcn_border)
        else:
            y, lcache = p, None
        stages.append(StageCache(ocache, lcache, y))
        J = J + J_s
        h = y
    return J, ModelCache(x, tuple(stages), J, cfg.gradient, cfg.tied)


def sublayer_outputs(cache: ModelCache) -> dict[str, Any]:
    """Every sublayer's output of every stage, batch first: ``stage{s}.filter`` f (B, K, OH, OW),
    ``stage{s}.pool`` p (B, K, PH, PW) and ``stage{s}.lcn`` y (B, K, PH, PW) when LCN is on."""
    out = {}
    for s, st in enumerate(cache.stages):
        out[f"stage{s}.filter"] = st.objective.pool.f
        out[f"stage{s}.pool"] = st.objective.pooled
        if st.lcn is not None:
            out[f"stage{s}.lcn"] = st.output
    return out


def stage_terms(cache: ModelCache) -> list[dict[str, float]]:
    """Per stage, the eq. 1 terms summed over the batch: J, reconstruction, sparsity (no lambda)."""
    terms = []
    for st in cache.stages:
        o = st.objective
        rec, spa = float(o.reconstruction), float(o.sparsity)
        terms.append({"J": rec + o.lam * spa, "reconstruction": rec, "sparsity": spa})
    return terms


def reconstruction(cache: ModelCache, stage: int = 0):
    """The decoder's reconstruction ``W2 f`` of stage ``stage``'s input: (B, C, H, W)."""
    o = cache.stages[stage].objective
    return o.residual + o.enc.x  # xhat = (xhat - x) + x


# ---------------------------------------------------------------------------------------------
# Backward


def _add(a, b):
    return b if a is None else (a if b is None else a + b)


def _backward(cache: ModelCache, dJ: float, d_outputs: dict, flow_between_stages: bool,
              input_grad: bool = True):
    """Backward through the stages, top to bottom.

    Computes the gradient of ``dJ * J_s + sum <d_outputs[name], output[name]>`` for every stage;
    with ``flow_between_stages`` the input gradient of stage s+1 is passed on to stage s's output
    (the exact gradient of the whole sum), otherwise each stage stops at its own input. A stage's
    input gradient is computed only if it is passed on, or returned (stage 0, ``input_grad``).
    """
    grads, dy = {}, None  # dy: upstream gradient on the current stage's output y_s
    dx_input = None
    for s in reversed(range(len(cache.stages))):
        need_dx = flow_between_stages and s > 0 or s == 0 and input_grad
        st = cache.stages[s]
        dy = _add(dy, d_outputs.get(f"stage{s}.lcn"))
        d_f = d_outputs.get(f"stage{s}.filter")
        if dJ == 0 and dy is None and d_f is None and f"stage{s}.pool" not in d_outputs:
            for w in ("W1",) if cache.tied else WEIGHTS:  # nothing above uses these weights
                grads[_stage_key(s, w)] = get_xp(st.output).zeros_like(st.objective.enc.W1)
            continue
        if st.lcn is not None and dy is not None:
            dp, _ = lcn_backward(dy, st.lcn)  # (B, K, PH, PW)
        else:
            dp = dy  # without LCN the stage's output is p itself
        dp = _add(dp, d_outputs.get(f"stage{s}.pool"))
        dx, g = objective_backward(dJ, st.objective, dp_extra=dp, input_grad=need_dx)
        if d_f is not None:  # a gradient on f enters below the pooling: through W1 only
            dx_f, g_f = local_filter_backward(d_f, st.objective.enc, input_grad=need_dx)
            dx, g = _add(dx, dx_f), {"W1": g["W1"] + g_f["W1"], "W2": g["W2"]}
        if cache.tied:
            grads[_stage_key(s, "W1")] = g["W1"] + g["W2"]  # one array in both roles
        else:
            for w in WEIGHTS:
                grads[_stage_key(s, w)] = g[w]
        dy = dx if flow_between_stages else None
        dx_input = dx
    ordered = {k: grads[k] for k in sorted(grads, key=_canonical)}
    return dx_input, ordered


def _canonical(key: str):
    stage, w = key.split(".")
    return int(stage[len("stage"):]), WEIGHTS.index(w)


def model_backward(cache: ModelCache, cfg: ModelConfig, *, input_grad: bool = True):
    """Gradient of the model's objective J.

    Returns dx: (B, C, H, W), the gradient with respect to the input image, and grads: a dict with
    the keys and shapes of params. In ``joint`` mode these are the exact gradients of
    ``J = sum_s J_s``; in ``local`` mode grads of stage s are ``dJ_s/dW_s`` and dx is ``dJ_0/dx``.
    ``input_grad=False`` (training, which needs only grads): dx is None, and no stage computes an
    input gradient that nothing uses (in ``local`` mode none does; in ``joint`` mode the first
    stage's): the same grads, with one locally connected product fewer per such stage.
    """
    if cache.gradient != cfg.gradient:
        raise ValueError(f"the cache was made with gradient = {cache.gradient!r} but cfg says "
                         f"{cfg.gradient!r}")
    return _backward(cache, 1.0, {}, flow_between_stages=cfg.gradient == "joint",
                     input_grad=input_grad)


def features_backward(cache: ModelCache, d_outputs: dict):
    """Gradient of ``L = sum_name <d_outputs[name], output[name]>`` over sublayer outputs.

    ``d_outputs`` maps names of :func:`sublayer_outputs` to arrays of the same shape (a one-hot
    array picks one neuron: then dx is ``d neuron / d x``). The objective is not involved and the
    gradient always flows through every stage (it is exact in either gradient mode).
    Returns dx: (B, C, H, W) and grads of L for every parameter.
    """
    outputs = sublayer_outputs(cache)
    for name, d in d_outputs.items():
        if name not in outputs:
            raise ValueError(f"d_outputs: unknown sublayer output {name!r}; known: {list(outputs)}")
        if tuple(d.shape) != tuple(outputs[name].shape):
            raise ValueError(f"d_outputs[{name!r}] must have shape {tuple(outputs[name].shape)}, "
                             f"got {tuple(d.shape)}")
    if not d_outputs:
        raise ValueError("d_outputs is empty: name at least one sublayer output")
    return _backward(cache, 0.0, d_outputs, flow_between_stages=True)
