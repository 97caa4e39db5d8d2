"""A toy parameter-server problem, in one process, to measure what staleness does.

::

    replicas 0..N-1 (simulated)            one ShardState (simcluster.ps, the real rules)
      fetch: w_r, v_r = w, version   <---   w, version
      g_r = A^T (A w_r - b) / m              (the gradient at the *fetched* w)
      push(g_r, base_version = v_r)  --->   apply (or reject: bounded mode, non-finite)

The objective is least squares, ``f(w) = ||A w - b||^2 / (2 m)``. Each tick a seeded scheduler
picks one replica, which either fetches or computes-and-pushes; so between a replica's fetch
and its push, about N - 1 other pushes land, and its gradient is that stale. Plain SGD that is
stable with a few replicas diverges with many at the same step size, because a stale gradient
keeps pushing after the optimum has moved (the issue measured 6 replicas converging and 28
diverging at step size 0.1). Bounding staleness rejects the worst of them; Adagrad shrinks its
steps as squared gradients accumulate. No processes: the shard's rules are the real ones, the
network is perfect, and a run takes milliseconds.
"""

from __future__ import annotations

import numpy as np

from .ps import ShardSpec, ShardState
from .ps_messages import Push
from .schedule import Scheduler


def toy_problem(dim: int = 20, m: int = 200, seed: int = 0):
    """A, b of a well-conditioned least-squares problem and its optimum objective."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, dim))  # (m, dim)
    b = A @ rng.standard_normal(dim) + 0.1 * rng.standard_normal(m)
    w_star = np.linalg.lstsq(A, b, rcond=None)[0]
    return A, b, _objective(A, b, w_star)


def _objective(A, b, w) -> float:
    r = A @ w - b
    return float(r @ r) / (2 * A.shape[0])


def toy_async(n_replicas: int, lr: float, pushes: int, *, mode: str = "async",
              optimizer: str = "sgd", max_staleness: int = 4, seed: int = 0, dim: int = 20):
    """Run asynchronous training on the toy problem until ``pushes`` pushes were made.

    Returns a dict: ``objective`` (after every push, minus the optimum; inf once it overflows),
    ``staleness`` (of every push as the shard saw it), ``rejected`` (pushes refused),
    ``applied_staleness`` (histogram of the applied ones).
    """
    A, b, f_star = toy_problem(dim, seed=seed)
    state = ShardState(ShardSpec(0, 0, dim, np.zeros(dim), optimizer, lr, mode=mode,
                                 max_staleness=max_staleness, nan_limit=10 ** 9))
    sched = Scheduler(seed)
    cached = [None] * n_replicas  # (w, version) fetched, or None: the next action is a fetch
    seq = [0] * n_replicas
    out = {"objective": [], "staleness": [], "rejected": 0}
    with np.errstate(over="ignore", invalid="ignore"):
        while len(out["staleness"]) < pushes:
            r = sched.pick(range(n_replicas))
            if cached[r] is None:
                cached[r] = (state.values.copy(), state.version)
                continue
            w, v = cached[r]
            g = A.T @ (A @ w - b) / A.shape[0]  # (dim,)
            seq[r] += 1
            ack = state.push(Push(r, seq[r], 0, v, g))
            cached[r] = None
            out["staleness"].append(ack.staleness)
            out["rejected"] += ack.status != "applied"
            f = _objective(A, b, state.values) - f_star
            out["objective"].append(f if np.isfinite(f) else float("inf"))
            if not np.isfinite(f):  # diverged: nothing more to learn
                break
    out["applied_staleness"] = dict(state.staleness)
    return out
