"""A model replica of Downpour SGD: its own part of the data, a cached copy of the parameters.

::

    driver (node 0)                replica r (this module)                   shards 0..S-1
         |  Grant(action, what)   +-------------------------------------+
         |----------------------->| step k:                             |  Fetch     (k % P == 0)
         |  (deterministic and    |   transport.step(k)  (crash plans)  |----------> all shards
         |   sync runs only)      |   fetch if k % P == 0  -> cached w  |<---------- Params
         |<-----------------------|   J, g = compute(w, own minibatch)  |
         |  Done(action)          |   acc += g                          |  Push      ((k+1) % G == 0)
         |<-----------------------|   push acc if (k+1) % G == 0        |----------> every shard
         |  Progress(step, loss,  |                                     |<---------- Ack
         |    staleness, ...)     +-------------------------------------+

**Free running** (asynchronous, not deterministic): the replica runs its ``steps`` steps on its
own, as in the paper. **Granted**: it waits for a :class:`~simcluster.ps_messages.Grant` before
each action and answers :class:`~simcluster.ps_messages.Done`, so the driver decides the
interleaving (``what = "next"``: the next action of the program above, where an action is a
fetch or a compute-and-maybe-push; ``what = "step"``: a whole step, for synchronous runs).

**Compute** is one function ``gradient(vec, x) -> (J, grad_vec)`` on the canonical vector;
:func:`refimpl_gradient` (refimpl's model_forward/model_backward) is the default, and a
model-parallel group could stand in for it later without changing the protocol.

**On a device** (``device="cuda"``, or ``"strict"``, the CuPy stand-in of :mod:`gpu.strict`) the
replica process is first pinned to its GPU (``pin``, from :func:`gpu.placement.process_pins`:
``CUDA_VISIBLE_DEVICES``) and only then imports CuPy. The cached parameters and the gradient
sum stay on the host, where the shards' messages put them and take them from; only the
gradient is computed on the device, with explicit copies at its boundary::

    shards --Params.values--> cached w (host) --xp.asarray--> w (device) --+
    own frames (host) ---minibatch x------------xp.asarray--> x (device) --+--> gradient(cfg, w, x)
    shards <--Push.grad = acc[lo:hi]-- acc (host) += to_numpy(grad) <------- grad (device)

Params and Push refuse device arrays (TypeError), so a forgotten download fails at once.

**Start and restart.** A replica first asks the driver where to start (:class:`~simcluster.
ps_messages.Hello` -> :class:`~simcluster.ps_messages.Resume`): 0, or for a process restarted
after a crash the step its predecessor had reached; it then skips those minibatch draws and
fetches fresh parameters before its first step.

**Requests are retried.** Every fetch and push waits for its replies with a timeout and resends
to the shards that have not answered (same ``req``/``seq``: shards recognise duplicates); replies
to older requests are discarded. After ``max_retries`` resends the replica gives up with an
error naming the silent shards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gpu.placement import pinned_backend
from refimpl.backend import to_numpy
from refimpl.checkpoint import restore_rng
from refimpl.config import ModelConfig
from refimpl.model import flatten, model_backward, model_forward, unflatten

from .messages import Stop
from .ps_messages import (APPLIED, BUFFERED, DUPLICATE, Ack, Done, Fetch, Grant, Hello, Params,
                          Progress, Push, Resume)
from .transport import PeerUnreachable, RecvTimeout


class Stopped(Exception):
    """The driver said Stop while the replica was waiting for shards."""


def refimpl_gradient(cfg: ModelConfig, vec: np.ndarray, x: np.ndarray):
    """J (summed over the batch) and dJ/dw as one canonical vector, with refimpl's model."""
    J, cache = model_forward(x, unflatten(vec, cfg), cfg)  # x: (B, C, H, W)
    _, grads = model_backward(cache, cfg, input_grad=False)
    return float(J), flatten(grads, cfg)  # (n_params,)


@dataclass(frozen=True)
class ReplicaSpec:
    """What a replica process is started with."""

    replica: int
    cfg: ModelConfig
    data: np.ndarray  # (N_r, C, H, W): this replica's part of the training frames
    rng_state: dict  # bit_generator.state of its minibatch Generator
    ranges: tuple  # ((lo, hi), ...) of every shard
    steps: int
    fetch_every: int = 1  # P
    push_every: int = 1  # G
    granted: bool = False  # wait for Grants (deterministic / sync runs)
    retry_timeout: float = 0.25  # seconds before a request is resent
    max_retries: int = 40
    gradient: Callable | None = None  # gradient(cfg, vec, x) -> (J, grad) with vec and x on the
    #                                   replica's device; None = refimpl_gradient
    device: str = "cpu"  # what the gradient is computed on: cpu, cuda or strict (the stand-in)
    pin: dict | None = None  # the environment pinning a cuda replica to its GPU (gpu.placement)


class Replica:
    """The replica's state and its three actions: fetch, compute, push."""

    def __init__(self, ctx, spec: ReplicaSpec):
        self.ctx, self.spec = ctx, spec
        self.xp = pinned_backend(spec.device, spec.pin)  # first: the pin precedes importing CuPy
        self.rng = restore_rng(spec.rng_state)
        self.shards = [ctx.node_of("shard", s) for s in range(len(spec.ranges))]
        n = spec.ranges[-1][1]
        self.vec = np.zeros(n, dtype=spec.cfg.dtype)  # cached parameters (n_params,)
        self.acc = np.zeros(n, dtype=spec.cfg.dtype)  # gradients summed since the last push
        self.n_acc = 0
        self.base = [0] * len(self.shards)  # shard versions of the cached parameters
        self.seen = [0] * len(self.shards)  # latest shard versions heard of
        self.k = 0  # steps done
        self.req = os.getpid() << 32  # fetch ids: a restarted replica never matches old replies
        self.seq = 0  # push ids: the step that completed the push, so a restarted replica that
        #               redoes a step its predecessor had pushed is recognised as a duplicate
        self.loss = float("nan")
        self.staleness = -1
        self.rejected = 0
        self.retries = 0
        self.fetched_at = -1  # step of the last fetch
        self.gradient = spec.gradient or refimpl_gradient

    @property
    def finished(self) -> bool:
        return self.k >= self.spec.steps

    # -- talking to the shards ----------------------------------------------------------------

    def _gather(self, send: Callable[[int], Any], kind: type, ident: str, want: int) -> dict:
        """Send ``send(s)`` to every shard, then collect one ``kind`` reply per shard whose
        ``ident`` field equals ``want``, resending to the silent ones after each timeout."""
        s = self.spec
        for i, node in enumerate(self.shards):
            self._send(node, send(i))
        got: dict[int, Any] = {}
        tries = 0
        while len(got) < len(self.shards):
            try:
                env = self.ctx.recv(s.retry_timeout, where=lambda e: isinstance(e.body, (kind, Stop)))
            except RecvTimeout:
                tries += 1
                if tries > s.max_retries:
                    silent = [i for i in range(len(self.shards)) if i not in got]
                    raise TimeoutError(f"replica {s.replica}: shards {silent} did not answer "
                                       f"{kind.__name__} {want} after {s.max_retries} resends "
                                       f"of {s.retry_timeout:g} s") from None
                for i, node in enumerate(self.shards):
                    if i not in got:
                        self.retries += 1
                        self._send(node, send(i))
                continue
            if isinstance(env.body, Stop):
                raise Stopped()
            if getattr(env.body, ident) == want:  # else a late reply to an older request
                got[env.body.shard] = env.body
        return got

    def _send(self, node: int, msg) -> None:
        try:
            self.ctx.send(node, msg)
        except PeerUnreachable:  # that shard is down (maybe restarting): the retry will tell
            pass

    def resume(self) -> None:
        """Ask the driver where to start (a restarted replica continues where it died): skip the
        minibatch draws of the steps already done, and fetch fresh parameters first."""
        s = self.spec
        for tries in range(s.max_retries + 1):
            self.ctx.send(0, Hello(s.replica))
            try:
                env = self.ctx.recv(s.retry_timeout, where=lambda e: isinstance(e.body, (Resume, Stop)))
            except RecvTimeout:
                continue
            if isinstance(env.body, Stop):
                raise Stopped()
            for _ in range(env.body.step):
                self.rng.integers(0, s.data.shape[0], size=s.cfg.train.batch_size)
            self.k = env.body.step
            return
        raise TimeoutError(f"replica {s.replica}: the driver did not answer Hello after "
                           f"{s.max_retries} resends")

    def fetch(self) -> None:
        self.req += 1
        with self.ctx.span("fetch", step=self.k):
            got = self._gather(lambda i: Fetch(self.spec.replica, self.req), Params, "req", self.req)
        for i, (lo, hi) in enumerate(self.spec.ranges):
            self.vec[lo:hi] = got[i].values
            self.base[i] = self.seen[i] = got[i].version
        self.fetched_at = self.k

    def compute(self) -> None:
        s = self.spec
        B = s.cfg.train.batch_size
        idx = self.rng.integers(0, s.data.shape[0], size=B)  # as refimpl.train draws them
        with self.ctx.span("compute", step=self.k):
            w, x = self.xp.asarray(self.vec), self.xp.asarray(s.data[idx])  # host -> device
            J, g = self.gradient(s.cfg, w, x)  # (n_params,), (B, C, H, W) -> (n_params,)
            g = to_numpy(g)  # device -> host
        self.acc += g
        self.n_acc += 1
        self.loss = J / B

    def push(self) -> None:
        self.seq = self.k
        ranges = self.spec.ranges

        def msg(i):
            lo, hi = ranges[i]
            return Push(self.spec.replica, self.seq, self.k - 1, self.base[i], self.acc[lo:hi])

        with self.ctx.span("push", step=self.k - 1):
            acks: dict[int, Ack] = self._gather(msg, Ack, "seq", self.seq)
        self.acc[:] = 0
        self.n_acc = 0
        self.staleness = max(a.staleness for a in acks.values())
        for i, a in acks.items():
            self.seen[i] = a.version
            if a.status not in (APPLIED, BUFFERED, DUPLICATE):
                self.rejected += 1

    # -- the program ----------------------------------------------------------------------------

    def next_action(self) -> None:
        """One action of the step program: a fetch (when due and not yet done) or a compute
        followed by a push when due."""
        s = self.spec
        if (self.k % s.fetch_every == 0 or self.fetched_at < 0) and self.fetched_at != self.k:
            self.ctx.step(self.k)  # crash and straggler plans fire at the start of a step
            self.fetch()
            return
        if self.fetched_at != self.k:
            self.ctx.step(self.k)
        self.compute()
        self.k += 1
        if self.k % s.push_every == 0 or self.finished:
            self.push()
        self.report()

    def run_step(self) -> None:
        k = self.k
        while self.k == k and not self.finished:
            self.next_action()

    def report(self) -> None:
        self.ctx.send(0, Progress(self.spec.replica, self.k, self.loss, self.staleness,
                                  tuple(self.seen), self.rejected, self.retries, self.finished))


def replica_main(ctx, spec: ReplicaSpec) -> None:
    """The replica's role function (see the module docstring)."""
    rep = Replica(ctx, spec)
    try:
        rep.resume()
        if not spec.granted:
            while not rep.finished:
                rep.run_step()
        else:
            last = 0
            while True:
                env = ctx.recv(timeout=120.0, where=lambda e: isinstance(e.body, (Grant, Stop)))
                if isinstance(env.body, Stop):
                    return
                g = env.body
                if g.action > last:  # a repeated Grant (its Done was lost) is only answered
                    if not rep.finished:
                        rep.run_step() if g.what == "step" else rep.next_action()
                    last = g.action
                ctx.send(0, Done(spec.replica, g.action, rep.finished, rep.k))
        for _ in range(120):  # finished: wait for Stop, repeating the last report (it may be lost)
            try:
                if isinstance(ctx.recv(timeout=1.0, where=lambda e: isinstance(e.body, Stop)).body, Stop):
                    return
            except RecvTimeout:
                rep.report()
    except Stopped:
        return
