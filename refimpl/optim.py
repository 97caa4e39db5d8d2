"""Optimisers: small pure update rules over param dicts (params, grads and state share keys).

- SGD: ``w <- w - lr * g``.
- Adagrad as in DistBelief's Downpour SGD (Dean et al. 2012), per parameter i at step K:

      G_i   <- G_i + g_i^2                     (the sum of squared past gradients, this one included)
      eta_i  = lr / max(sqrt(G_i), floor)      (``floor`` only guards G_i = 0, where g_i = 0 too)
      w_i   <- w_i - eta_i * g_i

Each rule is ``init(params) -> state`` and ``update(params, grads, state, ...) -> (params, state)``.
By default the update is pure: new arrays are returned and nothing passed in is modified. With
``inplace=True`` the same arithmetic writes into ``params`` and ``state`` (the caller's arrays)
instead, which keeps memory at one copy of each for the paper-sized model; the results are
bit-for-bit those of the pure update.
"""

from __future__ import annotations

from .backend import get_xp

OPTIMIZERS = ("sgd", "adagrad")


def _check_keys(params: dict, grads: dict, state: dict | None = None) -> None:
    if set(grads) != set(params):
        raise ValueError(f"grads must have the keys of params {sorted(params)}, got {sorted(grads)}")
    if state is not None and set(state) != set(params):
        raise ValueError(f"optimiser state must have the keys of params {sorted(params)}, "
                         f"got {sorted(state)}")
    for k in params:
        if grads[k].shape != params[k].shape:
            raise ValueError(f"grads[{k!r}] has shape {grads[k].shape}, params[{k!r}] has "
                             f"{params[k].shape}")


def _check_rate(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def sgd_init(params: dict) -> dict:
    """SGD keeps no state."""
    return {}


def sgd_update(params: dict, grads: dict, state: dict, *, lr: float, inplace: bool = False):
    """``w <- w - lr * g`` for every key. Returns (params, state)."""
    _check_keys(params, grads)
    lr = _check_rate("lr", lr)
    if inplace:
        for k, w in params.items():
            w -= w.dtype.type(lr) * grads[k]
        return params, state
    return {k: w - w.dtype.type(lr) * grads[k] for k, w in params.items()}, {}


def adagrad_init(params: dict) -> dict:
    """Adagrad's state: the running sum of squared gradients, zeros like each parameter."""
    return {k: get_xp(w).zeros_like(w) for k, w in params.items()}


def adagrad_update(params: dict, grads: dict, state: dict, *, lr: float, floor: float = 1e-8,
                   inplace: bool = False):
    """DistBelief's Adagrad (module docstring). Returns (params, state)."""
    _check_keys(params, grads, state)
    lr, floor = _check_rate("lr", lr), _check_rate("floor", floor)
    new_params, new_state = ({}, {}) if not inplace else (params, state)
    for k, w in params.items():
        xp, g = get_xp(w), grads[k]
        if inplace:
            G = state[k]
            G += g * g
        else:
            G = state[k] + g * g
        eta = w.dtype.type(lr) / xp.maximum(xp.sqrt(G), w.dtype.type(floor))
        eta *= g  # the step eta_i * g_i
        if inplace:
            w -= eta
        else:
            new_params[k], new_state[k] = w - eta, G
    return new_params, new_state


def init_state(name: str, params: dict) -> dict:
    """The initial state of optimiser ``name`` ("sgd" or "adagrad")."""
    if name == "sgd":
        return sgd_init(params)
    if name == "adagrad":
        return adagrad_init(params)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def update(name: str, params: dict, grads: dict, state: dict, *, lr: float, floor: float = 1e-8,
           inplace: bool = False):
    """Dispatch to :func:`sgd_update` or :func:`adagrad_update` by name."""
    if name == "sgd":
        return sgd_update(params, grads, state, lr=lr, inplace=inplace)
    if name == "adagrad":
        return adagrad_update(params, grads, state, lr=lr, floor=floor, inplace=inplace)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
