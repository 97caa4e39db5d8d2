"""The messages of Downpour SGD (simcluster.downpour): tiny frozen dataclasses, one per kind.

Follow one update::

    replica r                       shard s                          driver (node 0)
      Fetch(r, req) ------------->  (reads its range)
      <--------- Params(s, req, version, values)
      (forward/backward on its own data)
      Push(r, seq, step, base_version, grad) -->  dedupe (r, seq), check finite, staleness
      <--------- Ack(s, r, seq, status, version, staleness)
      Progress(r, step, loss, ...) ------------------------------------------> display, JSONL

In deterministic and synchronous runs the driver grants each action (:class:`Grant`) and the
replica answers :class:`Done`; in synchronous runs the driver then tells every shard to apply
the step's buffered pushes (:class:`Commit` -> :class:`Committed`). Every request carries an id
(``req``/``seq``/``action``) so a retried request and a duplicated reply are recognised.
The arrays of Params and Push must be host (NumPy) arrays (TypeError otherwise): a replica on
a GPU copies its gradient to the host explicitly before it pushes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .messages import host_only

# statuses of a push (Ack.status)
APPLIED, BUFFERED, DUPLICATE, STALE, NONFINITE, QUARANTINED = (
    "applied", "buffered", "duplicate", "stale", "nonfinite", "quarantined")


@dataclass(frozen=True)
class Fetch:
    """Replica -> shard: send me your parameters (request ``req`` of replica ``replica``)."""

    replica: int
    req: int


@dataclass(frozen=True)
class Params:
    """Shard -> replica: the shard's range of the canonical vector at ``version``."""

    shard: int
    req: int
    version: int
    values: Any  # (hi - lo,) float array, on the host

    def __post_init__(self):
        host_only("Params", "values", self.values)


@dataclass(frozen=True)
class Push:
    """Replica -> shard: gradients summed over the replica's last G steps.

    ``base_version`` is the shard version the replica last fetched: the gradient was computed
    from it, so ``version - base_version`` at the shard is this update's staleness. ``step`` is
    the replica step that completed the push (synchronous runs buffer pushes by step).
    """

    replica: int
    seq: int
    step: int
    base_version: int
    grad: Any  # (hi - lo,) float array, on the host (a replica on a GPU downloads it first)

    def __post_init__(self):
        host_only("Push", "grad", self.grad)


@dataclass(frozen=True)
class Ack:
    """Shard -> replica: what became of push ``seq`` (a status from this module)."""

    shard: int
    replica: int
    seq: int
    status: str
    version: int
    staleness: int


@dataclass(frozen=True)
class Grant:
    """Driver -> replica: perform action number ``action`` of your program: ``what = "next"``
    is its next action (a fetch, or a compute and the push when due), ``"step"`` a whole step."""

    action: int
    what: str


@dataclass(frozen=True)
class Done:
    """Replica -> driver: action ``action`` is done (repeated if the Grant is repeated)."""

    replica: int
    action: int
    finished: bool = False  # the replica has done all its steps
    step: int = 0  # steps done


@dataclass(frozen=True)
class Progress:
    """Replica -> driver after every step: for the live display and metrics.jsonl."""

    replica: int
    step: int  # steps completed
    loss: float  # per example
    staleness: int  # of its last push (max over shards), -1 before the first
    versions: tuple  # shard versions seen in the last fetch/acks
    rejected: int  # pushes rejected so far (stale, non-finite, quarantined)
    retries: int  # requests resent after a timeout so far
    finished: bool = False


@dataclass(frozen=True)
class Commit:
    """Driver -> shard (synchronous mode): apply the pushes buffered for ``step`` from
    ``replicas``, summed in replica order."""

    step: int
    replicas: tuple


@dataclass(frozen=True)
class Committed:
    shard: int
    step: int
    version: int


@dataclass(frozen=True)
class Snapshot:
    """Driver -> shard: send your parameters and counters (request ``req``)."""

    req: int


@dataclass(frozen=True)
class ShardReport:
    shard: int
    req: int
    version: int
    values: Any
    stats: dict
    opt: Any = None  # the optimiser's state for the range (Adagrad's sums), None for SGD


@dataclass(frozen=True)
class Hello:
    """Replica -> driver, first thing (repeated until answered): at which step do I start?"""

    replica: int


@dataclass(frozen=True)
class Resume:
    """Driver -> replica: start at ``step`` (0, or where a restarted replica's process died)."""

    replica: int
    step: int
