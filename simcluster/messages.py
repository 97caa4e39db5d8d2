"""The messages processes exchange: tiny frozen dataclasses, one per kind.

Two families:

- **System messages** (``SYSTEM = True``) run the process group itself: :class:`Ready`,
  :class:`Start`, :class:`Stop`, :class:`Bye`, :class:`Error`. The transport never injects faults into them
  (a dropped Stop would turn a clean shutdown into a timeout).
- **Work messages** are whatever the roles define (halos, gradients, parameters); a few
  generic ones live here (:class:`Ping`, :class:`Pong`, :class:`Tensor`). Any frozen dataclass
  works: NumPy arrays in its fields (directly, or inside a dict/list/tuple) are moved through
  shared memory by the transport when they are large, and pickled inline when small.

:class:`Envelope` wraps every message on the wire with its routing and fault decisions;
:class:`ShmArray` is what a large array becomes while it travels (a small one travels as raw
bytes inside the control message).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np


# ---------------------------------------------------------------------------------------------
# On the wire
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShmArray:
    """A NumPy array parked in a shared-memory segment (see :mod:`simcluster.shm`)."""

    name: str  # segment name, without the leading "/" (listed in /dev/shm)
    shape: tuple[int, ...]
    dtype: str  # numpy dtype string, e.g. "<f8"
    nbytes: int
    offset: int = 0  # where the data starts; > 0 marks a pooled (reusable) slot


class Envelope(NamedTuple):
    """One message in flight from node ``src`` to node ``dst`` (the ``seq``-th on that link).

    The sender's transport decides the faults: ``deliver_at`` (monotonic seconds; latency and
    bandwidth) and ``copies`` (0 is never sent: a dropped message simply does not travel, 2 is a
    duplicate). ``nbytes`` counts what travelled (frame plus shared-memory arrays). A NamedTuple,
    not a dataclass: one is built per message received, and tuples are built 5x faster.
    """

    src: int
    dst: int
    seq: int
    sent_at: float  # time.monotonic() of the sender (CLOCK_MONOTONIC: one clock per machine)
    deliver_at: float
    copies: int
    nbytes: int
    body: Any


# ---------------------------------------------------------------------------------------------
# System messages: the process group's own protocol
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """Child -> parent: my inbox is listening and my role function is about to run."""

    SYSTEM = True
    node: int
    pid: int


@dataclass(frozen=True)
class Start:
    """Parent -> child, once every child is Ready: every inbox exists, run the role function."""

    SYSTEM = True


@dataclass(frozen=True)
class Stop:
    """Parent -> child: finish your loop and exit (role functions return when they see it)."""

    SYSTEM = True


@dataclass(frozen=True)
class Bye:
    """Child -> parent, last message of every child: its trace events and transport counters."""

    SYSTEM = True
    node: int
    trace: tuple = ()  # trace events (see simcluster.trace)
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Error:
    """Child -> parent: the role function raised; the exception travels as data."""

    SYSTEM = True
    node: int
    role: str
    rank: int
    exc_type: str  # e.g. "ValueError"
    message: str
    traceback: str  # traceback.format_exc() in the child


def is_system(msg: Any) -> bool:
    return bool(getattr(type(msg), "SYSTEM", False))


def host_only(message: str, attr: str, value) -> None:
    """TypeError unless every array in ``value`` (an array or a dict of arrays) is NumPy's.

    Work messages that carry arrays call it in ``__post_init__``: the transport's shared memory is
    host memory, so a device array must be copied to the host explicitly before it is sent."""
    for key, a in (value.items() if isinstance(value, dict) else [(None, value)]):
        if not isinstance(a, np.ndarray):
            where = attr if key is None else f"{attr}[{key!r}]"
            raise TypeError(
                f"{message}.{where} must be a host (NumPy) array, got {type(a).__module__}."
                f"{type(a).__name__}: messages travel through host memory; copy device arrays "
                f"to the host explicitly first (refimpl.backend.to_numpy / gpu.to_host)")


# ---------------------------------------------------------------------------------------------
# Generic work messages
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ping:
    """Ask for a :class:`Pong` carrying the same ``token`` (round-trip measurements)."""

    token: int
    payload: Any = None


@dataclass(frozen=True)
class Pong:
    token: int
    payload: Any = None


@dataclass(frozen=True)
class Tensor:
    """A named array (halos, gradients); ``step`` and ``tag`` let receivers match it."""

    tag: str
    step: int
    data: Any  # numpy array
