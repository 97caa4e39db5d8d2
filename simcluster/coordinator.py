"""The coordinator: one model replica split over a grid of partition processes.

::

                         Coordinator (node 0, the parent)
          SetWeights once,  |   ^  StepResult per step: share of J,
          StepInput per step|   |  gradient slices, compute / wait times
                            v   |
        +-------------+-------------+-------------+
        | partition 0 | partition 1 | partition 2 |   one process each
        +------<Halo>-+------<Halo>-+------<Halo>-+   (simcluster.partition)
        | partition 3 | partition 4 | partition 5 |   halo pieces go straight
        +-------------+-------------+-------------+   between partitions

:class:`Coordinator` builds the partition plan (:func:`simcluster.tiled.plan_for`), starts one
:func:`~simcluster.partition.partition_main` per region in a
:class:`~simcluster.group.ProcessGroup`, sends each partition its weight slices once
(:meth:`Coordinator.set_params`), and per step (:meth:`Coordinator.step`) sends every partition
its pixels of the minibatch (the partitions with the most work first) and gathers the partitions' results into refimpl's canonical
objective and gradients (:func:`simcluster.tiled.assemble`, the same assembly the one-process
oracle uses). Between steps :meth:`Coordinator.memory` asks every partition for its memory.

Every wait is bounded: a step that does not finish within ``timeout`` seconds raises
:class:`StepFailed` naming the partitions that did not answer; a partition that dies is noticed
at once (its process sentinel) and named; either way the group is then shut down, leaving no
process and no shared-memory segment behind.

``device="cuda"`` puts every partition on a GPU (one each, round robin over ``gpus``, by
:func:`gpu.placement.plan`; each process is pinned with ``CUDA_VISIBLE_DEVICES`` before it imports
CuPy); ``"strict"`` runs them on the CuPy stand-in (:mod:`gpu.strict`), for tests. The
coordinator itself stays on the host: it takes params and x from any device, copies them to the
host explicitly, and returns host gradients (see :mod:`simcluster.partition` for the transfers).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from refimpl.backend import to_numpy
from refimpl.config import ModelConfig

from .faults import FaultPlan
from .group import RemoteError, Role, WorkerDied
from .ray_backend import make_group
from .partition import MemoryQuery, MemoryReport, SetWeights, StepInput, StepResult, partition_main
from .plan_report import partition_flops
from .tiled import StepOutput, assemble, plan_for, split_params
from .transport import DEFAULT_SHM_THRESHOLD, RecvTimeout


class StepFailed(RuntimeError):
    """A step could not finish: a partition died, raised, or did not answer in time.

    ``partitions`` lists the partitions to blame (by rank)."""

    def __init__(self, message: str, partitions: list[int]):
        super().__init__(message)
        self.partitions = partitions


@dataclass(frozen=True)
class ClusterStep:
    """One step through the cluster: the result and what it cost."""

    output: StepOutput  # J, grads (canonical dict), per-stage terms
    seconds: float  # from the first StepInput sent to the last StepResult received
    partitions: list  # per partition: compute_s, compute_cpu_s, wait_s, messages, bytes_sent,
    #                   peak_rss_kib (see simcluster.partition.StepResult; PSS: memory())
    halo_bytes: int  # payload bytes of every halo piece sent between partitions
    coordinator_bytes: int  # payload bytes of the inputs sent and the results received


class Coordinator:
    """A model replica over ``grid`` partitions (see the module docstring).

    Args:
        cfg: the model config (its dtype is the dtype of every array).
        grid: "RxC" or (rows, cols).
        start_method: "forkserver" (default) or "spawn".
        faults: a :class:`~simcluster.faults.FaultPlan`; name partitions as ("partition", rank).
        trace: record Chrome trace events (:meth:`write_trace` after :meth:`close`).
        timeout: seconds a step may take (and a partition may wait for one halo piece).
        shm_threshold: arrays of at least this many bytes travel through shared memory
            (default: the transport's); a huge value sends every array inline on the sockets.
        device: what the partitions compute on: "cpu" (default), "cuda" (raises
            gpu.DeviceUnavailable, a ValueError, at once if CuPy or a device is missing) or
            "strict" (the CuPy stand-in, for tests).
        gpus: with device="cuda", the physical GPU ids to deal the partitions over ("0,1" or a
            list; default: every visible device).
        backend: "process" (default: one OS process per partition) or "ray" (one Ray actor per
            partition, :mod:`simcluster.ray_backend`); ``address`` is the Ray cluster to join
            ("auto"), None for a local Ray.
    """

    def __init__(self, cfg: ModelConfig, grid, *, start_method: str = "forkserver",
                 faults: FaultPlan | None = None, trace: bool = True, timeout: float = 60.0,
                 log_level: int = logging.WARNING, shm_threshold: int = DEFAULT_SHM_THRESHOLD,
                 device: str = "cpu", gpus=None, backend: str = "process",
                 address: str | None = None):
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"cfg must be a refimpl ModelConfig, got {type(cfg).__name__}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.cfg = cfg
        self.plan = plan_for(cfg, grid)
        # A step's inputs go out one message at a time: the partitions with the most work get
        # theirs first (ties in rank order), so that the slowest are not also the last to start.
        work = [partition_flops(self.plan, t) for t in range(self.plan.n_partitions)]
        self.send_order = sorted(range(self.plan.n_partitions), key=lambda t: -work[t])
        self.timeout = float(timeout)
        self.device = device
        pins = _pins(device, gpus, self.plan.n_partitions)
        roles = [Role("partition", t, partition_main,
                      (cfg, self.plan.grid, self.timeout, 3600.0, device, pins[t]))
                 for t in range(self.plan.n_partitions)]
        self.group = make_group(backend, roles, address=address, start_method=start_method,
                                faults=faults, trace=trace, log_level=log_level,
                                ready_timeout=max(60.0, self.timeout), shm_threshold=shm_threshold)
        self.k = 0
        self.has_params = False
        self.startup_s: float | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> "Coordinator":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close(graceful=exc[0] is None)

    def start(self) -> float:
        """Start every partition and wait until all are ready; the start-up time in seconds."""
        self.startup_s = self.group.start()
        return self.startup_s

    def close(self, graceful: bool = True) -> None:
        """Stop every partition (safe to call twice; see ProcessGroup.close)."""
        self.group.close(graceful=graceful)

    def write_trace(self, path) -> None:
        """The run's Chrome trace (after :meth:`close`: the partitions ship their events at exit)."""
        self.group.write_trace(path)

    # -- the work -----------------------------------------------------------------------------

    def set_params(self, params: dict) -> None:
        """Send every partition its slices of ``params`` (refimpl's canonical dict, on any
        device: copied to the host first)."""
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
        host = {key: to_numpy(w) for key, w in params.items()}  # device -> host, explicitly
        for t, mine in enumerate(split_params(self.plan, self.cfg, host)):
            self.group.send(("partition", t), SetWeights(mine))
        self.has_params = True

    def step(self, x) -> ClusterStep:
        """Objective and gradients of minibatch x (B, C, H, W), computed by the partitions.

        x may be on any device (it is copied to the host first); the gradients come back on the
        host."""
        if not self.has_params:
            raise RuntimeError("call set_params before step")
        if getattr(x, "ndim", None) == 4:
            x = to_numpy(x)  # device -> host, explicitly: the transport carries host arrays
        want = (self.cfg.channels, self.cfg.image_size, self.cfg.image_size)
        if getattr(x, "ndim", None) != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape (B, {want[0]}, {want[1]}, {want[2]}), "
                             f"got {getattr(x, 'shape', type(x).__name__)}")
        if x.dtype != np.dtype(self.cfg.dtype):
            raise TypeError(f"x must have the config's dtype {self.cfg.dtype}, got {x.dtype}")
        self.k += 1
        k = self.k
        t0 = time.perf_counter()
        sent = 0
        for t in self.send_order:  # the busiest first
            own = self.plan.tiles[t][0].input
            xt = x[..., own.rows[0]:own.rows[1], own.cols[0]:own.cols[1]]  # a view: sending copies it
            self.group.send(("partition", t), StepInput(k, xt))
            sent += xt.nbytes
        ordered = self._one_from_each(f"step {k}", "no result",
                                      lambda e: isinstance(e.body, StepResult) and e.body.step == k)
        seconds = time.perf_counter() - t0
        output = assemble(self.plan, self.cfg, [r.result for r in ordered], np.dtype(self.cfg.dtype))
        received = sum(g.nbytes for r in ordered for g in r.result.grads.values())
        stats = [{"compute_s": r.compute_s, "compute_cpu_s": r.compute_cpu_s, "wait_s": r.wait_s,
                  "messages": r.messages,
                  "bytes_sent": r.bytes_sent, "peak_rss_kib": r.peak_rss_kib}
                 for r in ordered]
        return ClusterStep(output, seconds, stats, sum(r.bytes_sent for r in ordered), sent + received)

    def memory(self) -> list[dict]:
        """Per partition (in rank order), its memory now, asked between steps:
        ``{"peak_rss_kib", "pss_kib"}`` (peak resident; proportional, shared pages split).

        Not part of every :class:`ClusterStep`: reading a worker's proportional memory takes over
        a millisecond, which every step would otherwise wait for."""
        for t in range(self.plan.n_partitions):
            self.group.send(("partition", t), MemoryQuery())
        reports = self._one_from_each("memory query", "no answer",
                                      lambda e: isinstance(e.body, MemoryReport))
        return [{"peak_rss_kib": r.peak_rss_kib, "pss_kib": r.pss_kib} for r in reports]

    def _one_from_each(self, what: str, missing_word: str, where) -> list:
        """One message body ``where`` accepts from every partition, in rank order, within
        ``timeout``; a death, a partition's exception or the timeout is a :class:`StepFailed`
        naming the partitions to blame."""
        n = self.plan.n_partitions
        got: dict = {}
        deadline = time.monotonic() + self.timeout
        try:
            while len(got) < n:
                env = self.group.recv(max(0.0, deadline - time.monotonic()), where=where)
                got[self.group.roster[env.src][1]] = env.body
        except WorkerDied as err:
            raise StepFailed(f"{what} failed: {err}", self._dead()) from err
        except RemoteError as err:
            rank = self.group.roster[err.error.node][1]
            raise StepFailed(f"{what} failed: partition {rank} raised: {err}", [rank]) from err
        except RecvTimeout:
            missing = sorted(set(range(n)) - set(got))
            raise StepFailed(f"{what} failed: {missing_word} within {self.timeout:g} s from "
                             f"partitions {missing}", missing) from None
        return [got[t] for t in range(n)]

    def _dead(self) -> list[int]:
        """Ranks of the partitions to blame: those that died (killed, or exited with an error),
        not the survivors that ended cleanly after losing a peer; all the dead if none failed."""
        dead = {node: p for node, p in self.group.procs.items() if not p.is_alive()}
        failed = [n for n, p in dead.items() if getattr(p, "exitcode", None) not in (None, 0)]
        return sorted(self.group.roster[node][1] for node in (failed or dead))


def _pins(device: str, gpus, n: int) -> list:
    """Per partition, the environment that pins it to its GPU (``cuda``), else None."""
    from gpu.placement import process_pins

    return process_pins(device, gpus, replicas=1, partitions=n)
