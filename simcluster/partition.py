"""The partition worker: one tile of one model replica, in its own process.

::

         coordinator (node 0)
           |  SetWeights (once: my slices of W1, W2)       ^  StepResult (my share of J,
           |  StepInput  (per step: my pixels of x)        |  my gradient slices, timings)
           |  MemoryQuery (when asked, between steps)      |  MemoryReport
           v                                               |
    +------------------ partition t (node t + 1) ------------------+
    | loop on the inbox:                                           |
    |   tile_step(...)  -- yields Exchange(stage, name, sends) --+ |
    |        ^                                                   | |
    |        +-- resumed with {u: pieces} <- recv Halo x expect  | |
    +-------------------------------------------------------------|-+
                 ^  Halo(step, stage, name, {part: piece})         v
            neighbour partitions (whoever owns or reads my halo cells)

:func:`partition_main` is a plain loop on ``ctx.recv()``. A step runs the tile program of
:mod:`simcluster.tile_program` (the same one :mod:`simcluster.tiled` runs in one process): at
every :class:`~simcluster.tile_program.Exchange` the worker first sends one message to each
neighbour, holding its pieces of every part of the exchange (sends never block,
:mod:`simcluster.transport`), then receives exactly the messages the plan says are due, matched
by (step, stage, name), leaving any early message of a later exchange queued. It reports
the time spent computing (inside the tile program) and waiting (sending and receiving).

A :class:`~simcluster.messages.Stop` that arrives in the middle of a step (the coordinator
gave up, e.g. because a neighbour died) ends the worker at once.

On a device (``device="cuda"``, or ``"strict"``, the CuPy stand-in of :mod:`gpu.strict`) the
weights and every tile live on the device and the tile program never leaves it. Every message
is host data (the transport pickles NumPy arrays or parks them in shared memory, host memory),
so the transfers are explicit and happen only at the boundaries::

    SetWeights  --xp.array------> weights on the device (once)
    StepInput   --xp.asarray----> my pixels on the device
    Exchange    --to_numpy------> Halo messages to the neighbours (device -> host)
    Halo        --xp.asarray----> pieces resumed into the program (host -> device)
    TileResult  --to_numpy------> StepResult's gradient slices to the coordinator

Every message refuses a device array (TypeError), so a forgotten transfer fails at once instead
of travelling by pickle. A ``cuda`` worker is first pinned to its GPU (``pin``, from
:func:`gpu.placement.pin_env`: ``CUDA_VISIBLE_DEVICES``) before CuPy is imported.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, replace
from typing import Any

from gpu.placement import pinned_backend as backend
from refimpl.backend import to_numpy

from .messages import Stop, host_only
from .tile_program import TileResult, tile_routes, tile_step
from .tiled import plan_for


# ---------------------------------------------------------------------------------------------
# Messages (frozen dataclasses; their arrays travel through shared memory when large, so they
# must be host arrays: each message checks)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetWeights:
    """Coordinator -> partition: the partition's slices of every weight array."""

    weights: dict  # "stage{s}.W1"/"W2" -> (fh, fw, K, C, R, R)

    def __post_init__(self):
        host_only("SetWeights", "weights", self.weights)


@dataclass(frozen=True)
class StepInput:
    """Coordinator -> partition: run step ``step`` on these owned pixels of the minibatch."""

    step: int
    x: Any  # (B, C, h, w)

    def __post_init__(self):
        host_only("StepInput", "x", self.x)


@dataclass(frozen=True)
class Halo:
    """Partition -> partition: my pieces of one exchange of a step, one per part of it."""

    step: int
    stage: int
    name: str  # the exchange, e.g. "x", "xhat+f" (simcluster.tile_program)
    data: dict  # part name -> (B, channels, rows, cols)

    def __post_init__(self):
        host_only("Halo", "data", self.data)


@dataclass(frozen=True)
class StepResult:
    """Partition -> coordinator: its share of the step, and what the step cost it."""

    step: int
    result: TileResult
    compute_s: float  # inside the tile program (refimpl's sublayers on crops), wall clock
    compute_cpu_s: float  # the same, CPU time of this process (less than wall on a busy machine)
    wait_s: float  # sending and waiting for halo pieces
    messages: int  # halo messages sent (one per neighbour and exchange)
    bytes_sent: int  # their payload bytes
    peak_rss_kib: int  # this process's peak resident memory (shared pages counted too)

    def __post_init__(self):
        host_only("StepResult", "result.grads", self.result.grads)


@dataclass(frozen=True)
class MemoryQuery:
    """Coordinator -> partition: how much memory do you hold now? (answered between steps)"""


@dataclass(frozen=True)
class MemoryReport:
    """Partition -> coordinator: the answer to a :class:`MemoryQuery`."""

    peak_rss_kib: int  # peak resident memory (shared pages counted in full)
    pss_kib: int  # proportional memory now (shared pages split between sharers)


def _peak_rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _pss_kib() -> int:
    """Reads /proc/self/smaps_rollup, which walks every mapping of the process: 1.2-1.3 ms in a
    2x1 worker on `full` (a probe, traced), so it is asked for on its own (:class:`MemoryQuery`),
    not measured inside every step."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def partition_main(ctx, cfg, grid, timeout: float = 60.0, idle_timeout: float = 3600.0,
                   device: str = "cpu", pin: dict | None = None) -> None:
    """The worker of partition ``ctx.rank`` of model ``cfg`` split over ``grid`` (see the module
    docstring). ``timeout`` bounds every wait for a halo piece; ``idle_timeout`` the wait for
    the coordinator's next message. ``device``: ``cpu``, ``cuda`` or ``strict``, what the tile
    program computes on, after pinning the process with ``pin`` (see
    :func:`gpu.placement.pinned_backend`)."""
    xp = backend(device, pin)
    plan = plan_for(cfg, grid)  # (rebuilding it is 5x faster than unpickling it)
    partners = tile_routes(plan, ctx.rank)  # the same every step
    node = {u: ctx.node_of("partition", u) for u in range(plan.n_partitions)}
    rank = {n: u for u, n in node.items()}
    weights = None
    while True:
        msg = ctx.recv(idle_timeout, where=lambda e: not isinstance(e.body, Halo)).body
        if isinstance(msg, Stop):
            return
        if isinstance(msg, MemoryQuery):
            ctx.send(0, MemoryReport(_peak_rss_kib(), _pss_kib()))
        elif isinstance(msg, SetWeights):
            # own copies (frees the shared-memory slots), uploaded to the device
            weights = {k: xp.array(w) for k, w in msg.weights.items()}
        elif isinstance(msg, StepInput):
            if weights is None:
                raise RuntimeError(f"partition {ctx.rank}: StepInput before SetWeights")
            ctx.step(msg.step)  # (crash plans may fire here)
            out = _run_step(ctx, plan, cfg, weights, partners, msg, node, rank, timeout, xp)
            if out is None:  # Stop arrived mid-step
                return
            ctx.send(0, out)
        else:
            raise TypeError(f"partition {ctx.rank}: unexpected message {type(msg).__name__}")


def _run_step(ctx, plan, cfg, weights, partners, msg: StepInput, node, rank, timeout, xp):
    """One step; the host <-> device copies of the halo pieces count as waiting, not computing."""
    k = msg.step
    program = tile_step(plan, ctx.rank, cfg, weights, xp.asarray(msg.x), partners)  # upload
    compute = wait = cpu = 0.0
    messages = nbytes = 0
    got: dict | None = None
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            with ctx.span("tile compute", step=k):
                req = next(program) if got is None else program.send(got)
        except StopIteration as done:
            compute += time.perf_counter() - t0
            cpu += time.process_time() - c0
            result = done.value
            break
        t1 = time.perf_counter()
        compute += t1 - t0
        cpu += time.process_time() - c0
        for v, pieces in req.sends.items():  # device -> host
            ctx.send(node[v], Halo(k, req.stage, req.name, {a: to_numpy(b) for a, b in pieces.items()}))
            messages += 1
            nbytes += sum(b.nbytes for b in pieces.values())
        got, need = {}, set(req.expect)

        def due(e, stage=req.stage, name=req.name):
            b = e.body
            return isinstance(b, Stop) or (isinstance(b, Halo) and b.step == k and b.stage == stage
                                           and b.name == name)

        while need:
            env = ctx.recv(timeout, where=due)
            if isinstance(env.body, Stop):
                return None
            u = rank[env.src]
            got[u] = {a: xp.asarray(b) for a, b in env.body.data.items()}  # host -> device
            need.discard(u)
        wait += time.perf_counter() - t1
    result = replace(result, grads={key: to_numpy(g) for key, g in result.grads.items()})
    return StepResult(k, result, compute, cpu, wait, messages, nbytes, _peak_rss_kib())
