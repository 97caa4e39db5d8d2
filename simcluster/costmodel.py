"""A cost model of one model-parallel step: compute, halo wait and coordination, for any grid.

::

    measured steps (Coordinator) --fit--> CostModel(s/flop, s/message, s/byte, step, partition)
    partition plan + batch + link (latency, bandwidth) + cores --predict--> step time and its split

**What one step does** (:mod:`simcluster.tile_program`): every partition runs its tile program,
which stops at each halo exchange (``x``, ``xhat+f``, ``resid+p`` per stage forward, with
``+df`` there for local gradients; ``dp``, ``df``, ``dx`` backward for joint ones, as the
config needs them). Between two exchanges a partition computes; at an exchange it sends one
message to each neighbour, with its pieces of every part, and waits for its neighbours'.
:func:`exchanges` lists, per exchange ``e`` and partition ``t``, the flops computed since the
previous exchange ``F[e, t]`` (per
example, the multiply-add counts of :mod:`simcluster.plan_report`, split by sublayer), the halo
messages sent and received ``m[e, t]``, their bytes ``b[e, t]`` and the bytes received
``r[e, t]`` (both per example, from the routes of :mod:`simcluster.tiles`).

**The formula.** With minibatch ``B``, ``n`` partitions, constants ``k`` (seconds per flop, one
partition process), ``c_m`` (seconds per halo message, sender and receiver together), ``c_b``
(seconds per byte handled), ``w`` (a fixed wait per exchange in which a partition receives
pieces: waking up, the transport's bookkeeping), ``o`` (seconds per step) and ``o_p`` (seconds
per partition per step: the coordinator's inputs and results), and a link with latency ``a``
and bandwidth ``beta`` (bytes/s of one partition's network interface, shared by all its
incoming pieces; the transport's LinkModel is per link, so for injected bandwidth the model is
pessimistic)::

    cpu[e, t]  = k F[e, t] B + c_m m[e, t] + c_b b[e, t] B              work of t before e ends
    net[e, t]  = (w + a + r[e, t] B / beta)   if t receives anything at e,  else 0
    T[e]       = max( max_t (cpu[e, t] + net[e, t]),  sum_t cpu[e, t] / cores )
    step       = sum_e T[e]  +  o  +  o_p n

Each exchange ends when its slowest partition has computed and received its pieces (the
critical path through the exchanges, taken as a barrier per exchange), and never sooner than
``cores`` cores can do everybody's work (``cores=None``: one machine per partition, as in
DistBelief). The split: **compute** ``sum_e max(max_t k F B, sum_t k F B / cores)``,
**coordination** ``o + o_p n``, **halo wait** the rest (message handling, latency, bandwidth and
waiting for slower neighbours).

**Calibration** (:func:`fit`): the model is linear in ``(k, c_m, c_b, w, o, o_p)`` once it is known
which term attains each max, so the fit alternates: pick the maxima with the current constants,
solve a non-negative least-squares problem on *relative* errors (step times span decades), and
repeat until the choice of maxima no longer changes. Each measurement gives up to three
equations: its step time; its partitions' total compute CPU time ``sum_t k F[e, t] B`` (which
pins ``k`` without the noise of a shared machine's scheduling); and, when measured, its
coordination time ``o + o_p n`` (which keeps the coordinator's costs apart from the halo
costs, both of which grow with ``n``).

What the model leaves out: the parameter servers (data parallelism, issue 7), start-up, memory,
and the overlap of one partition's compute with another's messages within an exchange.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from refimpl.config import ModelConfig

from .plan import PartitionPlan
from .tiles import REGIONS, stage_routes
from .tiled import plan_for

CONSTANTS = ("s_per_flop", "s_per_message", "s_per_byte", "s_per_exchange", "step_overhead_s",
             "per_partition_s")


# ---------------------------------------------------------------------------------------------
# What each exchange costs, per partition (from the plan alone)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchanges:
    """Per exchange ``e`` (rows, in the tile program's order) and partition ``t`` (columns), per
    example: flops computed since the previous exchange, messages sent + received, bytes sent +
    received, bytes received. ``tail`` holds the flops after the last exchange, per partition."""

    names: tuple  # "stage{s}.{name}"
    flops: np.ndarray  # (E, n)
    messages: np.ndarray  # (E, n), not per example: one message per neighbour whatever B
    bytes: np.ndarray  # (E, n)
    bytes_in: np.ndarray  # (E, n)
    tail: np.ndarray  # (n,)

    @property
    def n_partitions(self) -> int:
        return self.flops.shape[1]


def _sublayer_flops(plan: PartitionPlan, cfg: ModelConfig, t: int, s: int) -> dict:
    """Forward flops per example of partition t's sublayers in stage s (multiply-add = 2)."""
    tile, st = plan.tiles[t][s], cfg.stages[s]
    C, K, R = plan.planes[s].input.channels, st.maps, st.field
    filt = 2 * K * C * R * R * tile.filter.area  # encoder W1 x; the decoder W2^T f costs the same
    return {"encode": filt, "decode": filt,
            "pool": 2 * st.pool_window ** 2 * K * tile.pool.area,
            "lcn": 6 * st.lcn_window ** 2 * K * tile.lcn_reads.area if cfg.lcn else 0}


def exchanges(cfg: ModelConfig, grid, dtype_bytes: int | None = None) -> Exchanges:
    """The exchange table of ``cfg`` over ``grid`` (see the module docstring).

    The exchanges, their parts, their order and the conditions follow
    :func:`simcluster.tile_program.tile_step`: ``p`` and ``dp`` only with LCN; with joint
    gradients a backward after the forward (``dp`` not in the last stage, ``dx`` not in the
    first), with local gradients each stage's ``df`` in its last forward exchange. A message
    carries every part of an exchange for one neighbour. Backward flops count twice the forward
    ones.
    """
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"cfg must be a refimpl ModelConfig, got {type(cfg).__name__}")
    plan = plan_for(cfg, grid)
    n, S = plan.n_partitions, len(cfg.stages)
    item = np.dtype(cfg.dtype).itemsize if dtype_bytes is None else int(dtype_bytes)
    joint = cfg.gradient == "joint"
    table = [{reg: stage_routes(plan, s, reg) for reg in REGIONS} for s in range(S)]
    sub = [[_sublayer_flops(plan, cfg, t, s) for t in range(n)] for s in range(S)]
    rows, names = [], []
    pending = np.zeros(n)  # flops computed since the last exchange

    def compute(key, s, times=1.0):
        nonlocal pending
        pending = pending + times * np.array([sub[s][t][key] for t in range(n)], dtype=float)

    def exchange(s, *parts):  # parts: (name, region, kind, channels); one message per neighbour
        nonlocal pending
        m, b, r = np.zeros(n), np.zeros(n), np.zeros(n)
        for t in range(n):
            dests, srcs = set(), set()
            for _, region, kind, channels in parts:
                rt = table[s][region][t]
                out_, in_ = (rt.give, rt.take) if kind == "gather" else (rt.take, rt.give)
                dests |= set(out_)
                srcs |= set(in_)
                cells_out = sum(c.area for c in out_.values())
                cells_in = sum(c.area for c in in_.values())
                b[t] += (cells_out + cells_in) * channels * item
                r[t] += cells_in * channels * item
            m[t] = len(dests) + len(srcs)
        rows.append((pending, m, b, r))
        names.append(f"stage{s}." + "+".join(part[0] for part in parts))
        pending = np.zeros(n)

    for s in range(S):  # forward (and, with local gradients, each stage's backward)
        C, K = plan.planes[s].input.channels, cfg.stages[s].maps
        exchange(s, ("x", "filter", "gather", C))
        compute("encode", s)
        compute("decode", s)
        exchange(s, ("xhat", "filter", "scatter", C), ("f", "pool", "gather", K))
        compute("pool", s)
        last = [("resid", "filter", "gather", C)]
        if cfg.lcn:
            last.append(("p", "lcn", "gather", K))
        if not joint:
            compute("pool", s, 2.0)
            last.append(("df", "pool", "scatter", K))
        exchange(s, *last)
        if cfg.lcn:
            compute("lcn", s)
        if not joint:
            compute("encode", s, 2.0)
            compute("decode", s, 2.0)
    for s in reversed(range(S)) if joint else ():  # backward, joint gradients
        C, K = plan.planes[s].input.channels, cfg.stages[s].maps
        if s < S - 1 and cfg.lcn:
            compute("lcn", s, 2.0)
            exchange(s, ("dp", "lcn", "scatter", K))
        compute("pool", s, 2.0)
        exchange(s, ("df", "pool", "scatter", K))
        compute("encode", s, 2.0)
        compute("decode", s, 2.0)
        if s > 0:
            exchange(s, ("dx", "filter", "scatter", C))
    flops, messages, nbytes, bytes_in = (np.array([row[i] for row in rows]) for i in range(4))
    return Exchanges(tuple(names), flops, messages, nbytes, bytes_in, pending)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """The network between partitions: latency per message and bandwidth per interface."""

    latency_s: float = 0.0
    bandwidth: float = math.inf  # bytes/s

    def __post_init__(self):
        if not (isinstance(self.latency_s, (int, float)) and 0 <= self.latency_s < math.inf):
            raise ValueError(f"Link.latency_s must be a finite number >= 0, got {self.latency_s!r}")
        if not (isinstance(self.bandwidth, (int, float)) and self.bandwidth > 0):
            raise ValueError(f"Link.bandwidth must be > 0 bytes/s, got {self.bandwidth!r}")


@dataclass(frozen=True)
class Prediction:
    """A predicted step and its split (seconds); ``shares`` are fractions of ``step_s``."""

    step_s: float
    compute_s: float
    halo_wait_s: float
    coordination_s: float

    @property
    def shares(self) -> dict:
        return {"compute": self.compute_s / self.step_s, "halo_wait": self.halo_wait_s / self.step_s,
                "coordination": self.coordination_s / self.step_s}


@dataclass(frozen=True)
class CostModel:
    """The calibrated constants (see the module docstring for where each one enters)."""

    s_per_flop: float  # k: one partition process's seconds per flop (1 / its flop rate)
    s_per_message: float  # c_m: handling one halo message (send or receive)
    s_per_byte: float  # c_b: handling one byte of a halo message
    s_per_exchange: float  # w: a partition's fixed wait per exchange it receives pieces in
    step_overhead_s: float  # o: the coordinator's fixed cost per step
    per_partition_s: float  # o_p: the coordinator's cost per partition per step

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float)) and 0 <= v < math.inf):
                raise ValueError(f"CostModel.{f.name} must be a finite number >= 0, got {v!r}")

    @property
    def flops_per_s(self) -> float:
        return 1.0 / self.s_per_flop if self.s_per_flop else math.inf

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, k) for k in CONSTANTS])

    def predict(self, ex: Exchanges, batch: int, link: Link = Link(), cores: int | None = None
                ) -> Prediction:
        """Step time of exchange table ``ex`` (:func:`exchanges`) with minibatch ``batch``."""
        return _predict(self, ex, batch, link, cores)[0]


def _check(batch, cores):
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    if cores is not None and (isinstance(cores, bool) or not isinstance(cores, int) or cores < 1):
        raise ValueError(f"cores must be None (one machine per partition) or an int >= 1, got {cores!r}")


def _segments(ex: Exchanges):
    """The exchanges plus the tail (compute after the last exchange, no messages)."""
    zero = np.zeros((1, ex.n_partitions))
    return (np.vstack([ex.flops, ex.tail[None]]), np.vstack([ex.messages, zero]),
            np.vstack([ex.bytes, zero]), np.vstack([ex.bytes_in, zero]))


def _net(bytes_in, batch, link: Link, w: float = 0.0):
    wire = bytes_in * batch / link.bandwidth if math.isfinite(link.bandwidth) else 0.0 * bytes_in
    return np.where(bytes_in > 0, w + link.latency_s + wire, 0.0)


def _predict(model: CostModel, ex: Exchanges, batch: int, link: Link, cores):
    """The prediction, and which term attains each max: -1 for the cores bound, else the
    partition (used by :func:`fit`)."""
    _check(batch, cores)
    F, m, b, r = _segments(ex)
    k, cm, cb, w, o, op = model.vector()
    comp = k * F * batch
    cpu = comp + cm * m + cb * b * batch
    crit = cpu + _net(r, batch, link, w)
    best = crit.argmax(axis=1)
    T = crit.max(axis=1)
    c = comp.max(axis=1)
    if cores is not None:
        shared = cpu.sum(axis=1) / cores
        best = np.where(shared > T, -1, best)
        T = np.maximum(T, shared)
        c = np.maximum(c, comp.sum(axis=1) / cores)
    coord = o + op * ex.n_partitions
    step = float(T.sum() + coord)
    return Prediction(step, float(c.sum()), float(T.sum() - c.sum()), float(coord)), best


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One measured configuration: what ran and what it cost (medians over its steps)."""

    ex: Exchanges
    batch: int
    step_s: float  # wall clock of a step, seen by the coordinator
    compute_cpu_s: float  # sum over partitions of the CPU time inside the tile programs
    cores: int | None = None  # the cores the partitions shared (None: one machine each)
    link: Link = field(default_factory=Link)  # the injected link (none: the transport's own)
    coordination_s: float | None = None  # the step's time outside the partitions' programs


def _rows(meas: Measurement, best) -> list[tuple[np.ndarray, float, float]]:
    """The linear equations of one measurement, given the maxima ``best``: (coefficients of the
    constants, right-hand side, the measured value) for its step time (the right-hand side is
    the step minus the known link waits), its compute CPU time and, when measured, its
    coordination time."""
    F, m, b, r = _segments(meas.ex)
    B, n = meas.batch, meas.ex.n_partitions
    net = _net(r, B, meas.link)
    a = np.array([0.0, 0.0, 0.0, 0.0, 1.0, float(n)])
    rhs = meas.step_s
    for e, t in enumerate(best):
        if t < 0:  # the cores bound
            a[:3] += np.array([F[e].sum() * B, m[e].sum(), b[e].sum() * B]) / meas.cores
        else:
            a[:4] += np.array([F[e, t] * B, m[e, t], b[e, t] * B, float(r[e, t] > 0)])
            rhs -= net[e, t]
    cpu = meas.compute_cpu_s
    out = [(a, rhs, meas.step_s), (np.array([F.sum() * B, 0, 0, 0, 0, 0]), cpu, cpu)]
    coord = meas.coordination_s
    if coord is not None and coord > 0:
        out.append((np.array([0, 0, 0, 0, 1.0, float(n)]), coord, coord))
    return out


def fit(measurements, iterations: int = 50) -> CostModel:
    """Least-squares constants (non-negative, relative errors) for ``measurements`` (a list of
    :class:`Measurement`); see the module docstring."""
    from scipy.optimize import nnls

    meas = list(measurements)
    if not meas or not all(isinstance(x, Measurement) for x in meas):
        raise ValueError("measurements must be a non-empty list of Measurement")
    for x in meas:
        if not (x.step_s > 0 and x.compute_cpu_s > 0):
            raise ValueError(f"every measurement needs step_s > 0 and compute_cpu_s > 0, got "
                             f"{x.step_s!r}, {x.compute_cpu_s!r}")
    # start: maxima where the flops are largest, the cores bound when it is the larger
    bests = []
    for x in meas:
        F = _segments(x.ex)[0]
        best = F.argmax(axis=1)
        if x.cores is not None:
            best = np.where(F.sum(axis=1) / x.cores > F.max(axis=1), -1, best)
        bests.append(best)
    model = None
    for _ in range(iterations):
        A, y = [], []
        for x, best in zip(meas, bests):
            for a, rhs, size in _rows(x, best):  # relative: divided by what was measured
                A.append(a / size)
                y.append(rhs / size)
        A, y = np.array(A), np.array(y)
        scale = np.abs(A).max(axis=0)
        scale[scale == 0] = 1.0
        theta = nnls(A / scale, y)[0] / scale
        model = CostModel(*map(float, theta))
        new = [_predict(model, x.ex, x.batch, x.link, x.cores)[1] for x in meas]
        if all(np.array_equal(u, v) for u, v in zip(new, bests)):
            break
        bests = new
    return model


def relative_errors(model: CostModel, measurements) -> list[float]:
    """(predicted - measured) / measured step time, per measurement."""
    return [(model.predict(x.ex, x.batch, x.link, x.cores).step_s - x.step_s) / x.step_s
            for x in measurements]


def scaled(model: CostModel, **changes) -> CostModel:
    """The same constants with some replaced (e.g. an assumed machine's ``s_per_flop``)."""
    return replace(model, **changes)


# ---------------------------------------------------------------------------------------------
# Measuring a grid through the real processes
# ---------------------------------------------------------------------------------------------


def measure(cfg: ModelConfig, grid, params: dict, x, steps: int = 2, *, faults=None,
            link: Link = Link(), cores: int | None = None, timeout: float = 120.0) -> tuple:
    """Run ``steps`` minibatches ``x`` through a :class:`~simcluster.coordinator.Coordinator`
    on ``grid`` (after one warm-up step) and return ``(Measurement, split)``.

    ``split`` is the measured counterpart of :class:`Prediction` (medians over steps):
    ``compute_s`` and ``halo_wait_s`` the partitions' mean time inside their tile programs and
    in sends and halo receives, ``coordination_s`` the rest of the coordinator's step time.
    ``faults`` (a FaultPlan) is what the transport injects; ``link`` says the same to the model.
    """
    from .coordinator import Coordinator

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    ex = exchanges(cfg, grid)
    with Coordinator(cfg, grid, faults=faults, trace=False, timeout=timeout) as c:
        c.set_params(params)
        runs = [c.step(x) for _ in range(steps + 1)][1:]  # the first is a warm-up
    step = float(np.median([r.seconds for r in runs]))  # medians: robust to a busy machine
    comp = float(np.median([np.mean([p["compute_s"] for p in r.partitions]) for r in runs]))
    wait = float(np.median([np.mean([p["wait_s"] for p in r.partitions]) for r in runs]))
    cpu = float(np.median([sum(p["compute_cpu_s"] for p in r.partitions) for r in runs]))
    split = Prediction(step, comp, wait, max(0.0, step - comp - wait))
    return Measurement(ex, int(x.shape[0]), step, cpu, cores, link, split.coordination_s), split


def partition_links(n: int, link: Link):
    """A :class:`~simcluster.faults.FaultPlan` putting ``link`` on every partition -> partition
    link (the coordinator's links stay perfect), for :func:`measure`."""
    from .faults import Dist, FaultPlan, LinkModel

    model = LinkModel(latency=Dist("fixed", float(link.latency_s)), bandwidth=link.bandwidth)
    return FaultPlan(links={(("partition", t), ("partition", u)): model
                            for t in range(n) for u in range(n) if t != u})
