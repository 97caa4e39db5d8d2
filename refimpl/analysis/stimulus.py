"""The optimal stimulus of a neuron (the paper's eq. 2 and Figure 3, bottom).

    x* = argmax_x  f(x; W, H)   subject to  ||x||_2 = 1

(the paper writes it as a minimisation of the negated activation). It is solved by projected
gradient ascent on the sphere with a backtracking (Armijo) line search:

    g      = grad f(x)                        from the model's backward pass
    g_T    = g - <g, x> x / r^2               the part of g along the sphere (radius r)
    x(a)   = r (x + a g_T) / ||x + a g_T||    a step, projected back onto the sphere
    accept the first a = a0, a0/2, a0/4, ... with f(x(a)) >= f(x) + 1e-4 a ||g_T||^2

and the next step starts from twice the accepted one. It stops when ``||g_T|| <= tol`` (a
stationary point on the sphere), when no step improves f, or after ``steps`` steps. The
activation is not concave, so :func:`optimal_stimulus` runs it from several random starts and
keeps the best.

The stimulus lives in the model's input space: whitened when training whitened (map it back
with refimpl.preprocess.unwhiten to show it as an image).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from ..backend import to_numpy
from ..config import ModelConfig
from ..model import check_params, features_backward, model_forward, sublayer_outputs
from ._checks import check_int, check_rng
from .activations import sublayer_shapes
from .neurons import Neuron

ARMIJO = 1e-4  # sufficient increase: f(x(a)) >= f(x) + ARMIJO a ||g_T||^2
MAX_HALVINGS = 40  # a0 / 2^40: below any useful step


class Ascent(NamedTuple):
    x: np.ndarray  # the final point, ||x|| = radius
    value: float  # f(x)
    history: list[float]  # f after every accepted step (history[0]: at the start)


class Stimulus(NamedTuple):
    x: np.ndarray  # (C, H, W) the best stimulus found, ||x||_2 = radius
    activation: float  # the neuron's activation at x
    activations_per_start: np.ndarray  # (starts,) the final activation of every start
    history: list[float]  # the ascent of the best start


def maximise_on_sphere(fun: Callable, x0, *, steps: int = 100, step0: float = 1.0,
                       tol: float = 1e-9, radius: float = 1.0) -> Ascent:
    """Maximise ``fun`` over ``||x||_2 = radius`` from ``x0`` (any shape, not 0).

    ``fun(x) -> (value, grad)`` with ``grad`` of x's shape.
    """
    x = np.array(x0, dtype=np.float64)
    steps = check_int("steps", steps, minimum=0)
    if not np.isfinite(x).all() or np.linalg.norm(x) == 0:
        raise ValueError("x0 must be finite and not all zero")
    if not (step0 > 0 and radius > 0):
        raise ValueError(f"step0 and radius must be > 0, got {step0!r} and {radius!r}")
    x *= radius / np.linalg.norm(x)

    def evaluate(x):
        v, g = fun(x)
        g = np.asarray(g, dtype=np.float64)
        if g.shape != x.shape:
            raise ValueError(f"fun's gradient must have x's shape {x.shape}, got {g.shape}")
        return float(v), g

    v, g = evaluate(x)
    history, a = [v], float(step0)
    for _ in range(steps):
        gt = g - np.vdot(g, x) / radius**2 * x  # tangent part of the gradient
        gn2 = float(np.vdot(gt, gt))
        if np.sqrt(gn2) <= tol:
            break
        for _ in range(MAX_HALVINGS):
            y = x + a * gt
            y *= radius / np.linalg.norm(y)  # project back onto the sphere
            vy, gy = evaluate(y)
            if vy >= v + ARMIJO * a * gn2:
                break
            a /= 2
        else:
            break  # no step increases f: a local maximum up to rounding
        x, v, g = y, vy, gy
        history.append(v)
        a *= 2  # let the step grow back after a short one
    return Ascent(x, v, history)


def neuron_function(params: dict, cfg: ModelConfig, neuron: Neuron) -> Callable:
    """``fun(x) -> (activation, d activation / dx)`` for one input x (C, H, W), in float64;
    the gradient is the model's backward pass (refimpl.model.features_backward)."""
    check_params(params, cfg)
    check_neuron(neuron, cfg)
    p64 = {k: to_numpy(v).astype(np.float64) for k, v in params.items()}
    shape = sublayer_shapes(cfg)[neuron.sublayer]

    def fun(x):
        _, cache = model_forward(x[None], p64, cfg)  # (1, C, H, W)
        out = sublayer_outputs(cache)[neuron.sublayer]  # (1, K, h, w)
        onehot = np.zeros((1, *shape))
        onehot[0, neuron.map, neuron.y, neuron.x] = 1.0
        dx, _ = features_backward(cache, {neuron.sublayer: onehot})
        return float(out[0, neuron.map, neuron.y, neuron.x]), dx[0]

    return fun


def check_neuron(neuron, cfg: ModelConfig) -> None:
    """``neuron`` is a :class:`Neuron` inside one of ``cfg``'s sublayer outputs."""
    if not isinstance(neuron, Neuron):
        raise TypeError(f"neuron must be a Neuron, got {type(neuron).__name__}")
    shapes = sublayer_shapes(cfg)
    if neuron.sublayer not in shapes:
        raise ValueError(f"neuron.sublayer {neuron.sublayer!r} is not a sublayer of config "
                         f"{cfg.name!r}: known {list(shapes)}")
    K, h, w = shapes[neuron.sublayer]
    if not (0 <= neuron.map < K and 0 <= neuron.y < h and 0 <= neuron.x < w):
        raise ValueError(f"neuron {neuron} is outside {neuron.sublayer!r} of shape (K, h, w) = "
                         f"{(K, h, w)}")


def optimal_stimulus(params: dict, cfg: ModelConfig, neuron: Neuron, *, rng: np.random.Generator,
                     starts: int = 5, steps: int = 100, step0: float = 1.0,
                     radius: float = 1.0) -> Stimulus:
    """Eq. 2 for ``neuron``: the input of norm ``radius`` that excites it most, best of
    ``starts`` ascents from random Gaussian directions drawn from ``rng``."""
    check_rng(rng)
    starts = check_int("starts", starts)
    fun = neuron_function(params, cfg, neuron)
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    runs = [maximise_on_sphere(fun, rng.standard_normal(shape), steps=steps, step0=step0,
                               radius=radius) for _ in range(starts)]
    values = np.array([r.value for r in runs])
    best = runs[int(np.argmax(values))]
    return Stimulus(best.x, best.value, values, best.history)
