"""Placement: which process of a simulated cluster computes on which GPU of one machine.

A job has ``replicas`` model replicas, each cut into ``partitions`` (model parallelism), and
``shards`` parameter-server shards. Given ``--gpus 0,1,...`` every worker process (one per
replica x partition) gets exactly one GPU, dealt round robin in the order

    replica 0: partition 0, 1, ..., P-1;  replica 1: partition 0, 1, ...;  ...

so the partitions of one replica land on different GPUs and, with as many GPUs as partitions,
partition p always lands on GPU p. Shards stay on the host (they hold parameters and apply
Adagrad, cheap next to the sublayers) unless ``shards_on_gpu``, which continues the same cycle.

A process is pinned by its environment: ``CUDA_VISIBLE_DEVICES`` set to its one GPU (so it sees
it as device 0) and ``CATNEURON_DEVICE`` to ``cuda``; host processes get
``CUDA_VISIBLE_DEVICES=""`` so they cannot touch a GPU by accident. CUDA reads that variable
once, so it must be set before CuPy is imported and initialised: start workers with ``spawn``
or ``forkserver`` (never ``fork`` from a process that has used CUDA) and make
:func:`run_pinned` the child's entry point::

    ctx = mp_context()
    for a in plan(args.gpus, replicas=R, partitions=P, shards=S):
        ctx.Process(target=run_pinned, args=(pin_env(a), worker_main, a, ...)).start()

simcluster does this: :func:`process_pins` gives the partitions (``Coordinator(device=
"cuda", gpus=...)``) and the Downpour replicas and shards (``DownpourConfig(device="cuda",
gpus=...)``) their environments before any process starts, and each worker calls
:func:`pinned_backend` first thing, which pins it and only then imports CuPy.

Everything but :func:`run_pinned`, :func:`pinned_backend` and the CUDA check of
:func:`process_pins` is a pure function.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from numbers import Integral
from typing import NamedTuple

from .device import DEVICES, ENV_VAR

START_METHODS = ("spawn", "forkserver")


class Assignment(NamedTuple):
    role: str  # "worker" or "shard"
    rank: int  # workers: replica * partitions + partition; shards: the shard index
    replica: int | None
    partition: int | None
    shard: int | None
    gpu: int | None  # the physical GPU id, None for the host
    device: str  # what the process computes with: "cuda", or the host device ("cpu")

    @property
    def name(self) -> str:
        if self.role == "worker":
            return f"replica{self.replica}/partition{self.partition}"
        return f"shard{self.shard}"


def parse_gpus(spec) -> tuple[int, ...]:
    """``"0,1,3"`` -> (0, 1, 3); ``None`` or ``""`` -> () (no GPU: everything on the host).

    Also accepts a list/tuple of ints. Raises ValueError naming --gpus on anything else.
    """
    if spec is None:
        return ()
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",")] if spec.strip() else []
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise ValueError(f"--gpus must be a comma-separated list of GPU ids like '0,1', got {spec!r}")
    ids = []
    for item in items:
        if isinstance(item, str) and item.isdigit():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, Integral) or item < 0:
            raise ValueError(f"--gpus must be a comma-separated list of GPU ids >= 0 like '0,1', got {spec!r}")
        ids.append(int(item))
    if len(set(ids)) != len(ids):
        raise ValueError(f"--gpus lists a GPU more than once: {spec!r}")
    return tuple(ids)


def _count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def plan(gpus, *, replicas: int, partitions: int, shards: int, shards_on_gpu: bool = False,
         host_device: str = "cpu") -> list[Assignment]:
    """One :class:`Assignment` per process: the workers (replica-major), then the shards.

    ``gpus``: as for :func:`parse_gpus`. Without GPUs every process is on the host, and workers
    compute with ``host_device`` (``cpu``; ``strict`` runs them on the CuPy stand-in in tests).
    Shards on the host always use ``cpu``.
    """
    ids = parse_gpus(gpus)
    replicas = _count("replicas", replicas, 1)
    partitions = _count("partitions", partitions, 1)
    shards = _count("shards", shards, 0)
    if shards_on_gpu and not ids:
        raise ValueError("shards_on_gpu needs GPUs: pass --gpus")
    if host_device not in DEVICES or host_device == "cuda":
        raise ValueError(f"host_device must be 'cpu' or 'strict', got {host_device!r}")
    out = []
    for r in range(replicas):
        for p in range(partitions):
            rank = r * partitions + p
            gpu = ids[rank % len(ids)] if ids else None
            out.append(Assignment("worker", rank, r, p, None, gpu, "cuda" if ids else host_device))
    n_workers = len(out)
    for s in range(shards):
        gpu = ids[(n_workers + s) % len(ids)] if shards_on_gpu else None
        out.append(Assignment("shard", s, None, None, s, gpu, "cuda" if gpu is not None else "cpu"))
    return out


def processes_per_gpu(assignments: list[Assignment]) -> dict[int | None, int]:
    """How many processes each GPU (None: the host) carries."""
    load: dict[int | None, int] = {}
    for a in assignments:
        load[a.gpu] = load.get(a.gpu, 0) + 1
    return load


def pin_env(assignment: Assignment) -> dict[str, str]:
    """The environment variables that pin one process: CUDA_VISIBLE_DEVICES and CATNEURON_DEVICE."""
    visible = "" if assignment.gpu is None else str(assignment.gpu)
    return {"CUDA_VISIBLE_DEVICES": visible, ENV_VAR: assignment.device}


def child_env(assignment: Assignment, base=None) -> dict[str, str]:
    """The whole environment for a child started with ``subprocess`` (``base``: os.environ)."""
    return {**(os.environ if base is None else base), **pin_env(assignment)}


def run_pinned(env: dict[str, str], target, *args, **kwargs):
    """A child's entry point: apply ``env`` (from :func:`pin_env`), then ``target(*args)``.

    Raises RuntimeError if CuPy was imported in this process already: then CUDA may have been
    initialised with the parent's CUDA_VISIBLE_DEVICES and the pin would be silently ignored.
    """
    if "cupy" in sys.modules:
        raise RuntimeError(
            "CuPy was imported in this process before it was pinned to its GPU; start workers "
            "with the 'spawn' or 'forkserver' method and import cupy only inside the worker"
        )
    os.environ.update(env)
    return target(*args, **kwargs)


def process_pins(device: str, gpus=None, *, replicas: int, partitions: int = 1,
                 shards: int = 0) -> list:
    """Per process of :func:`plan` (the workers replica-major, then the shards) the environment
    that pins it (:func:`pin_env`) when ``device`` is ``cuda``; otherwise None for every process
    (``cpu`` and ``strict`` processes are not pinned).

    Call it before starting any process: ValueError for an unknown ``device`` or ``gpus``
    without ``cuda``; :class:`~gpu.device.DeviceUnavailable` (a one-line ValueError) when
    ``cuda`` is asked for and CuPy or a device is missing. ``gpus`` defaults to every visible GPU.
    """
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"device must be one of 'cpu', 'cuda', 'strict', got {device!r}")
    ids = parse_gpus(gpus)
    if device != "cuda":
        if gpus is not None:
            raise ValueError(f"gpus needs device='cuda', got device={device!r}")
        return [None] * len(plan((), replicas=replicas, partitions=partitions, shards=shards))
    from .device import cuda_status, select_backend

    select_backend("cuda")  # DeviceUnavailable, before any process starts
    ids = ids or tuple(range(cuda_status().device_count))
    return [pin_env(a) for a in plan(ids, replicas=replicas, partitions=partitions, shards=shards)]


def pinned_backend(device: str = "cpu", pin: dict | None = None):
    """The namespace ``xp`` a worker computes with: numpy for ``cpu``; otherwise
    :func:`gpu.device.select_backend`, after applying ``pin`` (from :func:`process_pins`) if
    given. Call it first thing in the worker: the pin must come before CuPy is imported."""
    from .device import select_backend

    return select_backend(device) if pin is None else run_pinned(pin, select_backend, device)


def mp_context(method: str = "spawn"):
    """A multiprocessing context that starts fresh interpreters (no inherited CUDA state)."""
    if method not in START_METHODS:
        raise ValueError(f"start method must be one of {START_METHODS} (never 'fork' with CUDA), got {method!r}")
    return multiprocessing.get_context(method)
