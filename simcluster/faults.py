"""What the simulated network does to messages: latency, bandwidth, drops, duplicates, reordering,
NaN payloads, crashes and stragglers, all decided from one seeded :class:`FaultPlan`.

The plan is data. Only :mod:`simcluster.transport` reads it: every work message a node sends
asks :meth:`LinkState.decide` (one per directed link ``src -> dst``) when it should arrive and
how many copies arrive, and every send asks :meth:`FaultPlan.crash_for` whether this node dies
now. Each link draws from its own ``numpy.random.Generator`` seeded by ``(seed, src, dst)``,
so a link's decisions depend only on the plan's seed and the order of messages on that link,
never on how the operating system schedules the processes.

Nodes are named by their number in the group (0 is the parent) or by ``(role, rank)``; the
transport resolves names with the group's roster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

import numpy as np

DISTRIBUTIONS = ("fixed", "uniform", "exponential", "lognormal")

NodeName = Union[int, tuple]  # node number, or (role, rank)


@dataclass(frozen=True)
class Dist:
    """A delay distribution in seconds.

    ``fixed``: always ``a``; ``uniform``: between ``a`` and ``b``; ``exponential``: mean ``a``;
    ``lognormal``: median ``a``, log-space standard deviation ``b``.
    """

    kind: str = "fixed"
    a: float = 0.0
    b: float = 0.0

    def __post_init__(self):
        if self.kind not in DISTRIBUTIONS:
            raise ValueError(f"Dist kind must be one of {DISTRIBUTIONS}, got {self.kind!r}")
        for name in ("a", "b"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
                raise ValueError(f"Dist.{name} must be a finite number >= 0 (seconds), got {value!r}")
        if self.kind == "uniform" and self.b < self.a:
            raise ValueError(f"uniform Dist needs b >= a, got a={self.a}, b={self.b}")

    def draw(self, rng: np.random.Generator) -> float:
        if self.kind == "fixed":
            return float(self.a)
        if self.kind == "uniform":
            return float(rng.uniform(self.a, self.b))
        if self.kind == "exponential":
            return float(rng.exponential(self.a)) if self.a > 0 else 0.0
        return float(self.a * math.exp(self.b * rng.standard_normal()))  # lognormal


def _probability(name: str, value) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"LinkModel.{name} must be a probability in [0, 1], got {value!r}")


@dataclass(frozen=True)
class LinkModel:
    """How one directed link behaves. The defaults are a perfect, instantaneous network."""

    latency: Dist = Dist()  # drawn per message from the link's generator
    bandwidth: float = math.inf  # bytes/s; a message holds its link for nbytes / bandwidth
    drop: float = 0.0  # probability that a message is lost
    duplicate: float = 0.0  # probability that it arrives twice
    reorder: float = 0.0  # probability that it is held back by reorder_delay (later ones overtake)
    reorder_delay: float = 2e-3  # seconds
    nan: float = 0.0  # probability that a work message's float arrays arrive as NaN (a bad gradient)

    def __post_init__(self):
        if isinstance(self.latency, (int, float)):  # a bare number means a fixed latency
            object.__setattr__(self, "latency", Dist("fixed", float(self.latency)))
        if not isinstance(self.latency, Dist):
            raise TypeError(f"LinkModel.latency must be a Dist or seconds, got {self.latency!r}")
        if not isinstance(self.bandwidth, (int, float)) or not self.bandwidth > 0:
            raise ValueError(f"LinkModel.bandwidth must be > 0 bytes/s, got {self.bandwidth!r}")
        for name in ("drop", "duplicate", "reorder", "nan"):
            _probability(name, getattr(self, name))
        if not isinstance(self.reorder_delay, (int, float)) or not self.reorder_delay >= 0:
            raise ValueError(f"LinkModel.reorder_delay must be >= 0 seconds, got {self.reorder_delay!r}")

    @property
    def perfect(self) -> bool:
        return self == LinkModel()


@dataclass(frozen=True)
class Crash:
    """Kill ``node`` with SIGKILL just before its ``after_sends + 1``-th send of a work message
    (the group's own Ready/Stop/Bye/Error are not counted), or when it calls
    ``transport.step(k)`` with ``k >= at_step``; with ``mid_write`` it dies half way through
    writing a 1 MB shared-memory segment, which is then left for the group to remove."""

    node: NodeName
    after_sends: int | None = None
    at_step: int | None = None
    mid_write: bool = False

    def __post_init__(self):
        if (self.after_sends is None) == (self.at_step is None):
            raise ValueError("Crash needs exactly one of after_sends or at_step")
        for name in ("after_sends", "at_step"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"Crash.{name} must be an int >= 0, got {v!r}")


@dataclass(frozen=True)
class Straggler:
    """Make ``node`` slow: every ``transport.step(k)`` it calls first sleeps ``delay`` seconds
    (a replica that is x times slower than the others, without touching its code)."""

    node: NodeName
    delay: float

    def __post_init__(self):
        if isinstance(self.delay, bool) or not isinstance(self.delay, (int, float)) \
                or not 0 <= self.delay < math.inf:
            raise ValueError(f"Straggler.delay must be a finite number >= 0 (seconds), got {self.delay!r}")


@dataclass(frozen=True)
class FaultPlan:
    """Every fault of a run: a default link, per-link overrides, and crashes.

    ``links`` maps ``(src, dst)`` to a :class:`LinkModel`; ``src`` or ``dst`` may be ``"*"``
    (any node). The most specific entry wins: (src, dst), then (src, "*"), then ("*", dst).
    """

    seed: int = 0
    default: LinkModel = LinkModel()
    links: dict = field(default_factory=dict)
    crashes: tuple = ()
    stragglers: tuple = ()  # Straggler objects

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"FaultPlan.seed must be an int >= 0, got {self.seed!r}")
        if not isinstance(self.default, LinkModel):
            raise TypeError(f"FaultPlan.default must be a LinkModel, got {self.default!r}")
        for key, model in self.links.items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise ValueError(f"FaultPlan.links keys must be (src, dst) pairs, got {key!r}")
            if not isinstance(model, LinkModel):
                raise TypeError(f"FaultPlan.links[{key!r}] must be a LinkModel, got {model!r}")
        for crash in self.crashes:
            if not isinstance(crash, Crash):
                raise TypeError(f"FaultPlan.crashes must hold Crash objects, got {crash!r}")
        for slow in self.stragglers:
            if not isinstance(slow, Straggler):
                raise TypeError(f"FaultPlan.stragglers must hold Straggler objects, got {slow!r}")

    def resolve(self, resolve_node) -> "FaultPlan":
        """The same plan with every node name turned into its node number by ``resolve_node``."""
        def r(name):
            return name if name == "*" else resolve_node(name)

        links = {(r(s), r(d)): m for (s, d), m in self.links.items()}
        crashes = tuple(Crash(resolve_node(c.node), c.after_sends, c.at_step, c.mid_write)
                        for c in self.crashes)
        stragglers = tuple(Straggler(resolve_node(s.node), s.delay) for s in self.stragglers)
        return FaultPlan(self.seed, self.default, links, crashes, stragglers)

    def model(self, src: int, dst: int) -> LinkModel:
        for key in ((src, dst), (src, "*"), ("*", dst)):
            if key in self.links:
                return self.links[key]
        return self.default

    def crash_for(self, node: int) -> Crash | None:
        for crash in self.crashes:
            if crash.node == node:
                return crash
        return None

    def delay_for(self, node: int) -> float:
        """Seconds ``node`` sleeps at each ``transport.step`` (0 unless it is a straggler)."""
        return sum(s.delay for s in self.stragglers if s.node == node)


class LinkState:
    """The sender's side of one directed link: its generator and when the link is next free."""

    def __init__(self, plan: FaultPlan, src: int, dst: int):
        self.model = plan.model(src, dst)
        self.rng = np.random.default_rng([plan.seed, src, dst])
        self.free_at = 0.0  # monotonic time at which the link has finished the previous message
        # NaN poisoning draws from its own stream, so plans without it keep their old decisions
        self.nan_rng = np.random.default_rng([plan.seed, src, dst, 1]) if self.model.nan > 0 else None

    def decide(self, now: float, nbytes: int) -> tuple[float, int]:
        """(deliver_at, copies) for a message of ``nbytes`` sent at ``now``; copies 0 = dropped.

        Every draw is made for every message, whatever the outcome, so one message's fate never
        shifts the random stream of the next.
        """
        m = self.model
        u_drop, u_dup, u_reorder = self.rng.random(3)
        latency = m.latency.draw(self.rng)
        start = max(now, self.free_at)
        done = start + (nbytes / m.bandwidth if math.isfinite(m.bandwidth) else 0.0)
        self.free_at = done
        deliver_at = done + latency + (m.reorder_delay if u_reorder < m.reorder else 0.0)
        copies = 0 if u_drop < m.drop else (2 if u_dup < m.duplicate else 1)
        return deliver_at, copies

    def poison(self) -> bool:
        """Whether this message's float arrays arrive as NaN (one draw per work message)."""
        return self.nan_rng is not None and bool(self.nan_rng.random() < self.model.nan)
