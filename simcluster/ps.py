"""A parameter-server shard: one contiguous range of the canonical parameter vector.

::

    replica 0 ..N-1                          shard s (this module)
    +-----------+  Fetch(r, req)        +------------------------------------------+
    |           |---------------------->|  w = vec[lo:hi]   (refimpl.model.flatten) |
    |           |<-- Params(version, w) |  opt = Adagrad sums (or nothing: SGD)     |
    |           |  Push(r, seq, base_v, |  version: updates applied so far          |
    |           |       grad)           |  seen (r, seq) -> Ack  (duplicates)       |
    |           |---------------------->|  1 duplicate?  re-send the first Ack      |
    |           |<-- Ack(status, v,     |  2 quarantined / non-finite?  reject      |
    |           |        staleness)     |  3 bounded: version - base_v > s? reject  |
    +-----------+                       |  4 sync: buffer by step, else apply       |
                   driver: Commit(step) |  5 version += 1                           |
                   ------------------->  +------------------------------------------+

:class:`ShardState` is the shard's whole state and every rule above, as plain methods with no
I/O, so the rules can be tested without processes; :func:`shard_main` is the role function, a
plain loop on its inbox. The update is refimpl.optim's, applied to the shard's slice: both rules
are elementwise, so S shards together compute exactly what one optimiser on the whole vector
computes (1 replica with P = G = 1 equals sequential training bit for bit).

**Staleness** of an applied push is ``version - base_version``: how many updates other replicas
applied to this shard between the replica's fetch and its push.

**Bad pushes.** A gradient with a NaN or inf is rejected and counted; a replica that sends
``nan_limit`` of them is quarantined (every later push is rejected). In bounded-staleness mode
a push more than ``max_staleness`` versions old is rejected and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from refimpl.optim import init_state, update

from .messages import Stop
from .ps_messages import (APPLIED, BUFFERED, DUPLICATE, NONFINITE, QUARANTINED, STALE, Ack,
                          Commit, Committed, Fetch, Params, Push, ShardReport, Snapshot)
from .transport import PeerUnreachable

MODES = ("async", "sync", "bounded")


def shard_ranges(n_params: int, n_shards: int) -> list[tuple[int, int]]:
    """Split ``range(n_params)`` into ``n_shards`` contiguous (lo, hi), sizes differing by <= 1."""
    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or not 1 <= n_shards <= n_params:
        raise ValueError(f"shards must be an int in [1, {n_params}] (the parameter count), "
                         f"got {n_shards!r}")
    bounds = [n_params * s // n_shards for s in range(n_shards + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


@dataclass(frozen=True)
class ShardSpec:
    """What a shard process is started with."""

    shard: int
    lo: int
    hi: int
    values: np.ndarray  # (hi - lo,) initial parameters
    optimizer: str  # "sgd" or "adagrad" (refimpl.optim)
    lr: float
    floor: float = 1e-8  # Adagrad's floor (refimpl.optim)
    mode: str = "async"  # one of MODES
    max_staleness: int = 4  # bounded mode only
    nan_limit: int = 3  # non-finite pushes before a replica is quarantined
    idle_timeout: float = 120.0  # seconds without any message before the shard gives up
    store_dir: str | None = None  # checkpoints + write-ahead log here (simcluster.ps_checkpoint)
    checkpoint_every: int = 20  # logged messages between checkpoints


class ShardState:
    """One shard's parameters, optimiser state, version and bookkeeping (no I/O)."""

    def __init__(self, spec: ShardSpec):
        if spec.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {spec.mode!r}")
        if spec.values.shape != (spec.hi - spec.lo,):
            raise ValueError(f"shard {spec.shard}: values must have shape ({spec.hi - spec.lo},), "
                             f"got {spec.values.shape}")
        self.spec = spec
        self.params = {"w": np.array(spec.values, copy=True)}  # (hi - lo,)
        self.opt = init_state(spec.optimizer, self.params)
        self.version = 0
        self.acks: dict[tuple[int, int], Ack] = {}  # (replica, seq) -> the Ack first sent
        self.buffer: dict[int, dict[int, np.ndarray]] = {}  # sync: step -> replica -> grad
        self.committed: dict[int, int] = {}  # sync: step -> version after its commit
        self.nonfinite: Counter = Counter()  # replica -> non-finite pushes
        self.quarantined: set[int] = set()
        self.staleness: Counter = Counter()  # staleness -> applied updates
        self.counts: Counter = Counter()  # status -> pushes

    @property
    def values(self) -> np.ndarray:
        return self.params["w"]

    def _apply(self, grad: np.ndarray) -> None:
        s = self.spec
        self.params, self.opt = update(s.optimizer, self.params, {"w": grad}, self.opt, lr=s.lr,
                                       floor=s.floor, inplace=True)
        self.version += 1

    def push(self, p: Push) -> Ack:
        """Handle one push (the rules of the module docstring); returns the Ack to send."""
        key = (p.replica, p.seq)
        if key in self.acks:
            self.counts[DUPLICATE] += 1
            return self.acks[key]
        staleness = self.version - p.base_version
        grad = np.asarray(p.grad)
        if grad.shape != self.values.shape:
            raise ValueError(f"shard {self.spec.shard}: push from replica {p.replica} has shape "
                             f"{grad.shape}, expected {self.values.shape}")
        if p.replica in self.quarantined:
            status = QUARANTINED
        elif not np.isfinite(grad).all():
            status = NONFINITE
            self.nonfinite[p.replica] += 1
            if self.nonfinite[p.replica] >= self.spec.nan_limit:
                self.quarantined.add(p.replica)
        elif self.spec.mode == "bounded" and staleness > self.spec.max_staleness:
            status = STALE
        elif self.spec.mode == "sync":
            status = BUFFERED
            self.buffer.setdefault(p.step, {})[p.replica] = np.array(grad, copy=True)
        else:
            status = APPLIED
            self._apply(grad)
            self.staleness[staleness] += 1
        self.counts[status] += 1
        ack = Ack(self.spec.shard, p.replica, p.seq, status, self.version, staleness)
        self.acks[key] = ack
        return ack

    def commit(self, step: int, replicas: tuple) -> int:
        """Sync mode: apply the sum (in replica order) of ``step``'s buffered pushes from
        ``replicas`` as one update; idempotent (a repeated Commit changes nothing)."""
        if step in self.committed:
            return self.committed[step]
        got = self.buffer.pop(step, {})
        grads = [got[r] for r in sorted(replicas) if r in got]
        if grads:
            total = grads[0].copy()
            for g in grads[1:]:
                total += g
            self._apply(total)
            self.staleness[0] += 1
        self.committed[step] = self.version
        return self.version

    def stats(self) -> dict:
        return {"version": self.version, "counts": dict(self.counts),
                "staleness": {int(k): v for k, v in sorted(self.staleness.items())},
                "nonfinite": {int(k): v for k, v in self.nonfinite.items()},
                "quarantined": sorted(self.quarantined)}


def _reply(ctx, dst: int, msg) -> None:
    try:
        ctx.send(dst, msg)
    except PeerUnreachable:  # the asker died meanwhile: nobody to answer
        pass


def shard_main(ctx, spec: ShardSpec) -> None:
    """The shard's role function: answer Fetch, Push, Commit and Snapshot until Stop.

    With ``spec.store_dir`` the shard first restores itself from its checkpoint and log (a
    restarted shard continues where it died), and logs every Push and Commit durably before
    applying and acknowledging it (simcluster.ps_checkpoint).
    """
    store = None
    if spec.store_dir is not None:
        from .ps_checkpoint import ShardStore

        store = ShardStore(spec.store_dir, spec.shard, every=spec.checkpoint_every)
        state = store.restore(spec)
        if store.last_restore["checkpoint"] is not None or store.last_restore["corrupted"]:
            ctx.log.warning("shard %d restored: %s", spec.shard, store.last_restore)
    else:
        state = ShardState(spec)
    try:
        _serve(ctx, spec, state, store)
    finally:
        if store is not None:
            store.close()


def _serve(ctx, spec: ShardSpec, state: ShardState, store) -> None:
    while True:
        env = ctx.recv(timeout=spec.idle_timeout)
        msg = env.body
        if isinstance(msg, Stop):
            return
        if isinstance(msg, Fetch):
            _reply(ctx, env.src, Params(spec.shard, msg.req, state.version, state.values))
        elif isinstance(msg, Push):
            ctx.step(state.version)  # a crash plan "kill this shard at version k" fires here
            with ctx.span("apply push", replica=msg.replica, seq=msg.seq):
                ack = store.handle(state, msg) if store else state.push(msg)
            _reply(ctx, env.src, ack)
        elif isinstance(msg, Commit):
            with ctx.span("commit", step=msg.step):
                version = store.handle(state, msg) if store else state.commit(msg.step, msg.replicas)
            _reply(ctx, env.src, Committed(spec.shard, msg.step, version))
        elif isinstance(msg, Snapshot):
            stats = {**state.stats(), "restore": store.last_restore if store else {}}
            _reply(ctx, env.src, ShardReport(spec.shard, msg.req, state.version, state.values,
                                             stats, state.opt.get("w")))
