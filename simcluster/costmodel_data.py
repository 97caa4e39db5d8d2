"""A throughput model of data parallelism (Downpour): examples/s vs replicas, P, G and shards.

::

    measured Downpour runs (run_downpour) --fit--> DataCostModel(s/flop, s/message, s/byte,
                                                                 sync s/step, sync s/replica)
    replicas R, shards S, P, G, minibatch B, model size, cores --predict--> seconds per step,
                                                                          examples/s

**What one replica step does** (:mod:`simcluster.replica`): every ``P`` steps it fetches the
parameters from all ``S`` shards (``S`` requests, ``N`` parameter bytes back), then computes
the gradient of its minibatch, and every ``G`` steps pushes the summed gradient to all shards
(``S`` messages, ``N`` bytes). The shards apply what they receive. In ``sync`` mode the driver
also grants every step to every replica and commits it at every shard.

**The formula.** With ``F`` flops per example (forward and backward, the counts of
:func:`simcluster.costmodel.exchanges` on a 1x1 grid), ``N`` parameter bytes, constants ``k``
(seconds per flop of one replica process), ``c_m`` (seconds per message between a replica and
a shard, both ends and the shard's work on it), ``c_b`` (seconds per parameter byte moved and
applied), ``o`` and ``o_r`` (the sync driver's cost per step and per replica per step)::

    work       = k F B  +  (1/P + 1/G) (S c_m + N c_b)       CPU seconds of one replica step
    step(R)    = max( work,  R work / cores )                async and bounded
    step(R)    = max( work,  R work / cores ) + o + o_r R    sync
    examples/s = R B / step(R)

``cores=None`` means one machine per replica (and the shards elsewhere): ``step = work`` and
async throughput grows linearly with ``R``. On this machine's 2 cores the ``R work / cores``
term takes over from ``R = cores`` on: wall-clock throughput saturates, and the curve past that
is virtual time. Fetching and pushing less often (larger ``P`` and ``G``) lowers ``work``, and
raises throughput most when communication dominates it.

**Calibration** (:func:`fit`) is the same as :func:`simcluster.costmodel.fit`: the model is
linear in ``(k, c_m, c_b, o, o_r)`` once it is known which term attains the max, so the fit
picks the maxima with the current constants, solves a non-negative least-squares problem on
relative errors and repeats until the choice no longer changes. To tell ``k`` from ``c_m`` and
``c_b`` the measurements must vary ``P`` or ``G`` and ``S`` (or the model size). On a machine
that other jobs share, a run gets fewer cores than the machine has: :func:`fit_cores` fits
the cores too (a one-dimensional search around the linear fit).

What the model leaves out: start-up, the staleness of async updates (it changes how many steps
reach an objective, not how fast steps go; measured separately), retries after lost messages,
and the shards' own process limits (a shard applying pushes from many replicas at once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

CONSTANTS = ("s_per_flop", "s_per_message", "s_per_byte", "sync_step_s", "sync_per_replica_s")
MODES = ("async", "bounded", "sync")


@dataclass(frozen=True)
class DataRun:
    """One data-parallel configuration (what runs, not what it costs)."""

    mode: str  # async | bounded | sync
    replicas: int  # R
    shards: int  # S
    fetch_every: int  # P
    push_every: int  # G
    batch: int  # B, per replica
    flops_per_example: float  # F, forward + backward
    param_bytes: float  # N
    cores: float | None = None  # the cores everything shares (None: one machine per replica)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"DataRun.mode must be one of {MODES}, got {self.mode!r}")
        for name in ("replicas", "shards", "fetch_every", "push_every", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"DataRun.{name} must be an int >= 1, got {v!r}")
        for name in ("flops_per_example", "param_bytes"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v < math.inf):
                raise ValueError(f"DataRun.{name} must be a finite number >= 0, got {v!r}")
        c = self.cores
        if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c < math.inf):
            raise ValueError(f"DataRun.cores must be None or a number > 0, got {c!r}")

    @property
    def comm_per_step(self) -> float:
        """``1/P + 1/G``: fetches and pushes per step."""
        return 1.0 / self.fetch_every + 1.0 / self.push_every


@dataclass(frozen=True)
class DataPrediction:
    step_s: float  # seconds per step of one replica
    work_s: float  # CPU seconds of one replica step (compute + communication)
    compute_s: float  # k F B
    comm_s: float  # (1/P + 1/G)(S c_m + N c_b)
    sync_s: float  # o + o_r R (sync only)
    examples_per_s: float
    cores_bound: bool  # whether R work / cores attained the max


@dataclass(frozen=True)
class DataCostModel:
    """The calibrated constants (see the module docstring for where each one enters)."""

    s_per_flop: float  # k
    s_per_message: float  # c_m
    s_per_byte: float  # c_b
    sync_step_s: float  # o
    sync_per_replica_s: float  # o_r

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float)) and 0 <= v < math.inf):
                raise ValueError(f"DataCostModel.{f.name} must be a finite number >= 0, got {v!r}")

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, k) for k in CONSTANTS])

    def predict(self, run: DataRun) -> DataPrediction:
        if not isinstance(run, DataRun):
            raise TypeError(f"run must be a DataRun, got {type(run).__name__}")
        k, cm, cb, o, orr = self.vector()
        compute = k * run.flops_per_example * run.batch
        comm = run.comm_per_step * (run.shards * cm + run.param_bytes * cb)
        work = compute + comm
        shared = run.replicas * work / run.cores if run.cores is not None else 0.0
        sync = (o + orr * run.replicas) if run.mode == "sync" else 0.0
        step = max(work, shared) + sync
        return DataPrediction(step, work, compute, comm, sync,
                              run.replicas * run.batch / step if step > 0 else math.inf,
                              shared > work)


def _terms(run: DataRun) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients of the constants in ``work`` and in the sync term."""
    work = np.array([run.flops_per_example * run.batch, run.comm_per_step * run.shards,
                     run.comm_per_step * run.param_bytes, 0.0, 0.0])
    sync = np.array([0, 0, 0, 1.0, float(run.replicas)]) if run.mode == "sync" else np.zeros(5)
    return work, sync


@dataclass(frozen=True)
class DataMeasurement:
    run: DataRun
    step_s: float  # measured seconds per step of one replica (R B / examples per second)

    def __post_init__(self):
        if not isinstance(self.run, DataRun):
            raise TypeError(f"DataMeasurement.run must be a DataRun, got {type(self.run).__name__}")
        if not (isinstance(self.step_s, (int, float)) and 0 < self.step_s < math.inf):
            raise ValueError(f"DataMeasurement.step_s must be a finite number > 0, got {self.step_s!r}")


def fit(measurements, iterations: int = 50) -> DataCostModel:
    """Non-negative least-squares constants on relative errors (module docstring)."""
    from scipy.optimize import nnls

    meas = list(measurements)
    if not meas or not all(isinstance(m, DataMeasurement) for m in meas):
        raise ValueError("measurements must be a non-empty list of DataMeasurement")
    bound = [m.run.cores is not None and m.run.replicas > m.run.cores for m in meas]  # first guess
    model = None
    for _ in range(iterations):
        A = []
        for m, b in zip(meas, bound):
            work, sync = _terms(m.run)
            scale = m.run.replicas / m.run.cores if b else 1.0
            A.append((work * scale + sync) / m.step_s)  # relative: divided by what was measured
        A = np.array(A)
        y = np.ones(len(meas))
        col = np.abs(A).max(axis=0)
        col[col == 0] = 1.0
        theta = nnls(A / col, y)[0] / col
        model = DataCostModel(*map(float, theta))
        new = [model.predict(m.run).cores_bound for m in meas]
        if new == bound:
            break
        bound = new
    return model


def fit_cores(measurements, candidates=None) -> tuple[DataCostModel, float]:
    """:func:`fit` with the cores the runs share fitted too: on a machine that other jobs load,
    a run gets fewer than ``os.cpu_count()`` cores. Tries each of ``candidates`` as every run's
    cores and keeps the one with the smallest sum of squared relative errors; returns
    ``(model, cores)``. The default candidates go from 1 to the largest ``run.cores`` in steps
    of 0.1: in this model a process always gets a whole core, and a slow core shows in ``k``."""
    meas = list(measurements)
    if not meas or not all(isinstance(m, DataMeasurement) for m in meas):
        raise ValueError("measurements must be a non-empty list of DataMeasurement")
    if candidates is None:
        top = max((m.run.cores for m in meas if m.run.cores is not None), default=None)
        if top is None:
            raise ValueError("fit_cores: no measurement says how many cores it ran on")
        candidates = np.arange(1.0, top + 1e-9, 0.1)
    best = None
    for c in candidates:
        trial = [DataMeasurement(replace(m.run, cores=float(c)), m.step_s) for m in meas]
        model = fit(trial)
        err = float(np.sum(np.square(relative_errors(model, trial))))
        if best is None or err < best[0] - 1e-12:
            best = (err, model, float(c))
    return best[1], best[2]


def relative_errors(model: DataCostModel, measurements) -> list[float]:
    """(predicted - measured) / measured seconds per step, per measurement."""
    return [(model.predict(m.run).step_s - m.step_s) / m.step_s for m in measurements]


def model_sizes(cfg) -> tuple[float, float]:
    """``(F, N)`` of a ModelConfig: flops per example (forward + backward, the multiply-add
    counts of :func:`simcluster.costmodel.exchanges` on one partition) and parameter bytes."""
    from refimpl.model import param_count

    from .costmodel import exchanges

    ex = exchanges(cfg, (1, 1))
    flops = float(ex.flops.sum() + ex.tail.sum())
    return flops, float(param_count(cfg) * np.dtype(cfg.dtype).itemsize)


# ---------------------------------------------------------------------------------------------
# Measuring through the real processes
# ---------------------------------------------------------------------------------------------


def steady_step(history: list) -> float:
    """Seconds per step of one replica from its Progress records (``history`` of a
    DownpourResult): the median time between a replica's consecutive reports, pooled over the
    replicas, in the window where every replica was running (from the last replica's first
    report to the first replica's last report). Medians, because other jobs on a shared machine
    stall a process now and then; start-up and the tail, when fewer replicas run, are left out."""
    by = {}
    for h in history:
        by.setdefault(h["replica"], []).append(h["t"])
    if not by or any(len(t) < 2 for t in by.values()):
        raise ValueError("history: every replica needs at least two Progress records")
    lo = max(t[0] for t in by.values())
    hi = min(t[-1] for t in by.values())
    gaps = [b - a for t in by.values() for a, b in zip(t, t[1:]) if lo <= a and b <= hi]
    if len(gaps) < 3:  # replicas hardly overlapped: every gap
        gaps = [b - a for t in by.values() for a, b in zip(t, t[1:])]
    return float(np.median(gaps))


def time_to_loss(history: list, target: float, window: int = 5) -> float | None:
    """Seconds until the running mean of the last ``window`` minibatch losses (all replicas, in
    arrival order) first reaches ``target``; None if it never does."""
    losses = [h["loss"] for h in history]
    for i in range(window - 1, len(losses)):
        if np.mean(losses[i - window + 1:i + 1]) <= target:
            return float(history[i]["t"])
    return None


def measure_run(cfg, frames, run: DataRun, steps: int, *, seed: int = 0, max_staleness: int = 4,
                eval_frames: int = 0) -> tuple[DataMeasurement, object]:
    """Run Downpour for ``run`` (``steps`` per replica) and return ``(DataMeasurement, result)``.

    The measured seconds per step is :func:`steady_step` (examples/s = ``R B / step``).
    ``run.batch`` must be the config's minibatch (it is what replicas draw).
    """
    from .downpour import DownpourConfig, run_downpour

    if run.batch != cfg.train.batch_size:
        raise ValueError(f"run.batch ({run.batch}) must be cfg.train.batch_size ({cfg.train.batch_size})")
    d = DownpourConfig(replicas=run.replicas, shards=run.shards, fetch_every=run.fetch_every,
                       push_every=run.push_every, steps=steps, mode=run.mode, seed=seed,
                       max_staleness=max_staleness, retry_timeout=0.25)
    res = run_downpour(cfg, frames, d, eval_frames=eval_frames)
    return DataMeasurement(run, steady_step(res.history)), res
