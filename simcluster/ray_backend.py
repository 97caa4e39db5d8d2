"""The same cluster on Ray: every role function runs unchanged inside a Ray actor.

::

                         driver (node 0): RayGroup                      ray.init() / --address
          send: handle.deliver.remote(env)  |  ^ recv: inbox 0 actor's take(), and
                                            |  |       each actor's run() ref (its death)
          +---------------------------------+--+-------------------------------+
          |                                 |                                  |
    +-----v-------------------+     +-------v-----------------+        +-------v----------+
    | actor: node 1           |     | actor: node 2           |  ...   | actor: node N    |
    |  run(): role fn(ctx)    |<--->|  run(): role fn(ctx)    |<------>|                  |
    |  deliver(): inbox queue |     |  deliver(): inbox queue |        |                  |
    +-------------------------+     +-------------------------+        +------------------+
       small arrays inline in the task's arguments; bulk arrays (>= shm_threshold) ray.put
       into Ray's object store, their references travel instead (zero-copy read-only views)

What stays the same as :class:`~simcluster.group.ProcessGroup`: the roles (``partition_main``,
``shard_main``, ``replica_main``, ... are called as ``fn(ctx, *args)`` with the same
:class:`~simcluster.group.Context`, holding a :class:`RayTransport`), the messages, the fault plan
and the shard checkpoints. What differs is the transport, :class:`RayTransport`:

- **Inboxes.** Each actor is threaded: one thread runs the role function (``run``), the others
  take deliveries (``deliver``, a queue put). Node 0, the driver, is not an actor, so its inbox is
  a small actor of its own (:class:`_InboxActor`) that the driver drains with ``take``.
- **Order per link.** Ray does not order the calls of a threaded actor, so each delivery names the
  previous one on its link (still in flight) as an argument: Ray runs it only after that one.
  Messages on one link arrive in the order they were sent, as on a socket.
- **Faults** are decided in :meth:`RayTransport.send` exactly as in the process transport (one
  :class:`~simcluster.faults.LinkState` per directed link: latency, bandwidth, drops, duplicates,
  NaN payloads; crashes SIGKILL the actor's process; stragglers sleep at ``step``). Times on the
  wire are wall-clock (``time.time()``), so a delay means the same on two machines.
- **Deaths and restarts.** The driver waits on every actor's ``run`` reference: an actor whose
  process died makes it fail at once (``PeerDied`` -> :class:`~simcluster.group.WorkerDied`).
  Actors are created with ``max_restarts``: Ray re-runs the constructor (a fresh, empty actor) and
  :meth:`RayGroup.restart` calls ``run`` again, so a shard's state comes back only from its
  checkpoint and write-ahead log (:mod:`simcluster.ps_checkpoint`), as in the process backend.

:func:`init` starts a local Ray (2 CPUs, no dashboard) or joins a cluster (``address="auto"``).
Ray is imported only here, and only when a Ray group is made: ``import simcluster`` never needs it.
"""

from __future__ import annotations

import bisect
import logging
import os
import queue
import signal
import time
import traceback
import uuid
from copy import deepcopy
from dataclasses import fields, is_dataclass
from typing import Any, Callable

import numpy as np

from .faults import FaultPlan, LinkState
from .group import (Context, ProcessGroup, RemoteError, WorkerDied, describe, make_roster,
                    resolve_faults)
from .messages import Bye, Envelope, Error, Ready, Stop
from .trace import Tracer, chrome_trace, write_chrome_trace
from .transport import (DEFAULT_SHM_THRESHOLD, PeerDied, PeerUnreachable, RecvTimeout,
                        TransportError, _poisoned, _walk_nbytes, count_send)

BACKENDS = ("process", "ray")
log = logging.getLogger("simcluster.ray")


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("the Ray backend needs Ray: pip install 'catneuron[ray]'") from None
    return ray


def init(address: str | None = None):
    """Connect to Ray once per process and return the ``ray`` module: without ``address`` start a
    local Ray (2 CPUs, no dashboard, quiet), with ``address="auto"`` (or "host:port") join a
    running cluster (``ray start --head`` on one machine, ``ray start --address ...`` on the others)."""
    ray = _ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=True)
    return ray


def make_group(backend: str, roles, *, address: str | None = None, max_restarts: int = 0, **kw):
    """The process group of ``backend``: "process" (:class:`~simcluster.group.ProcessGroup`) or
    "ray" (:class:`RayGroup`, on the Ray at ``address``). ``kw`` are ProcessGroup's arguments."""
    if backend == "process":
        if address is not None:
            raise ValueError("address is for backend='ray' (the process backend runs on this machine)")
        return ProcessGroup(roles, **kw)
    if backend == "ray":
        return RayGroup(roles, address=address, max_restarts=max_restarts, **kw)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


# ---------------------------------------------------------------------------------------------
# Bulk arrays through the object store
# ---------------------------------------------------------------------------------------------


class _Bulk:
    """A large array's place in a message while it travels: its object-store reference."""

    __slots__ = ("ref", "nbytes")

    def __init__(self, ref, nbytes: int):
        self.ref, self.nbytes = ref, nbytes


def _map_arrays(obj: Any, fn: Callable) -> Any:
    """``obj`` with every NumPy array (and every :class:`_Bulk`) x replaced by ``fn(x)``, inside
    dicts, lists, tuples and dataclasses (rebuilt without ``__post_init__``: a message's checks
    would refuse a reference in place of its array). ``obj`` itself if nothing changed."""
    if isinstance(obj, _Bulk) or (type(obj) is np.ndarray and obj.dtype != object):
        return fn(obj)
    if isinstance(obj, dict):
        new = {k: _map_arrays(v, fn) for k, v in obj.items()}
        return obj if all(new[k] is obj[k] for k in obj) else new
    if type(obj) in (list, tuple):
        new = [_map_arrays(v, fn) for v in obj]
        return obj if all(a is b for a, b in zip(new, obj)) else type(obj)(new)
    if is_dataclass(obj) and not isinstance(obj, type):
        new = {f.name: _map_arrays(getattr(obj, f.name), fn) for f in fields(obj)}
        if all(new[k] is getattr(obj, k) for k in new):
            return obj
        out = object.__new__(type(obj))
        for k, v in new.items():
            object.__setattr__(out, k, v)
        return out
    return obj


class _Lost(Exception):
    """A bulk array could not be fetched (its owner, the sender, died): the message is lost."""


# ---------------------------------------------------------------------------------------------
# The transport
# ---------------------------------------------------------------------------------------------


class RayTransport:
    """One node's endpoint on Ray: sends through the peers' actor handles, receives from a queue
    of arrived envelopes (``pull(timeout)`` returns the next batch of them). The same interface
    and the same fault decisions as :class:`simcluster.transport.Transport`."""

    def __init__(self, node: int, peers: dict, pull: Callable[[float], list], *,
                 describe: Callable[[int], str] = str, faults: FaultPlan | None = None,
                 tracer: Tracer | None = None, shm_threshold: int = DEFAULT_SHM_THRESHOLD):
        self.ray = _ray()
        self.node = node
        self.peers = peers  # node -> actor handle (node 0: the driver's inbox actor)
        self._pull = pull
        self.describe = describe
        self.faults = faults
        self.crash = faults.crash_for(node) if faults else None
        self.straggle = faults.delay_for(node) if faults else 0.0
        self.tracer = tracer or Tracer(node, enabled=False)
        self.shm_threshold = int(shm_threshold)
        self.stats = {"sent": 0, "received": 0, "bytes_sent": 0, "bytes_shm": 0, "dropped": 0,
                      "duplicated": 0, "lost": 0, "recv_wait_s": 0.0}
        self._work_sent = 0
        self._seq: dict[int, int] = {}
        self._links: dict[int, LinkState] = {}
        self._last: dict[int, Any] = {}  # dst -> reference of the last delivery on that link
        self._held: list = []  # (deliver_at, arrival, Envelope) arrived, sorted: delivery order
        self._arrivals = 0
        self._deaths: list[PeerDied] = []
        self.closed = False

    # -- sending ------------------------------------------------------------------------------

    def send(self, dst: int, msg: Any) -> None:
        """Send ``msg`` to node ``dst`` (never blocks); PeerUnreachable if ``dst`` has no actor."""
        if self.closed:
            raise TransportError(f"{self.describe(self.node)}: send on a closed transport")
        peer = self.peers.get(dst)
        if peer is None:
            raise PeerUnreachable(f"{self.describe(self.node)}: no node {dst} in this group")
        system = count_send(self, msg)
        t0, now = time.monotonic(), time.time()
        seq = self._seq[dst] = self._seq.get(dst, 0) + 1
        faulty = not system and self.faults is not None
        nbytes = _walk_nbytes(msg)
        deliver_at, copies = now, 1
        if faulty:
            link = self._links.get(dst)
            if link is None:
                link = self._links[dst] = LinkState(self.faults, self.node, dst)
            at, copies = link.decide(t0, nbytes)  # monotonic: the delay is what matters
            deliver_at = now + (at - t0)
            if link.poison():
                poisoned = _poisoned(msg)
                if poisoned is not msg:
                    msg = poisoned
                    self.stats["poisoned"] = self.stats.get("poisoned", 0) + 1
        self.stats["sent"] += 1
        if copies == 0:
            self.stats["dropped"] += 1
            self.tracer.instant(f"drop {type(msg).__name__} to {self.describe(dst)}", t0,
                                {"dst": dst, "seq": seq})
            return
        bulk = [0]

        def park(a: np.ndarray):
            if a.nbytes < self.shm_threshold:
                return a  # small: inline in the task's arguments
            bulk[0] += a.nbytes
            return _Bulk(self.ray.put(a), a.nbytes)

        body = _map_arrays(msg, park)
        env = Envelope(self.node, dst, seq, now, deliver_at, copies, nbytes, body)
        prev = self._last.get(dst)
        if prev is not None and self.ray.wait([prev], timeout=0)[0]:
            prev = None  # delivered (or failed) already: nothing to wait for
        self._last[dst] = peer.deliver.remote(env, prev)  # after ``prev``: the link keeps order
        self.stats["bytes_sent"] += nbytes
        self.stats["bytes_shm"] += bulk[0]
        if copies == 2:
            self.stats["duplicated"] += 1
        if self.tracer.enabled:
            self.tracer.message("send", type(msg).__name__, self.describe(dst), t0, time.monotonic(),
                                self.node, seq, nbytes)

    def _die(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # Ray sees the actor's process die (and restarts it)

    def step(self, k: int) -> None:
        """The caller starts step ``k``: a straggler sleeps, a crash plan may fire."""
        if self.straggle:
            time.sleep(self.straggle)
        if self.crash is not None and self.crash.at_step is not None and k >= self.crash.at_step:
            self._die()

    # -- receiving ----------------------------------------------------------------------------

    def report_death(self, err: PeerDied) -> None:
        self._deaths.append(err)

    def recv(self, timeout: float, where: Callable[[Envelope], bool] | None = None) -> Envelope:
        """The oldest due message for which ``where`` holds, waiting up to ``timeout`` s
        (RecvTimeout). Messages that do not match stay queued."""
        if not (isinstance(timeout, (int, float)) and timeout >= 0):
            raise ValueError(f"recv timeout must be a number of seconds >= 0, got {timeout!r}")
        t0 = time.monotonic()
        deadline = t0 + timeout
        self._arrive(self._pull(0.0))
        while True:
            env = self._take(where)
            if env is not None:
                t1 = time.monotonic()
                self.stats["received"] += 1
                self.stats["recv_wait_s"] += t1 - t0
                self.tracer.message("recv", type(env.body).__name__, self.describe(env.src), t0, t1,
                                    env.src, env.seq, env.nbytes, env.deliver_at - env.sent_at)
                return env
            if self._deaths:
                raise self._deaths.pop(0)
            now = time.monotonic()
            if now >= deadline:
                raise RecvTimeout(f"{self.describe(self.node)}: no message within {timeout:g} s")
            wall = time.time()  # wake for the next held message that falls due (not for the
            #                     due ones that ``where`` refused: they wait for another recv)
            due_next = min((at for at, _, _ in self._held if at > wall), default=None)
            wake = deadline - now if due_next is None else min(deadline - now, due_next - wall)
            self._arrive(self._pull(max(0.0, wake)))

    def _arrive(self, envs: list) -> None:
        for env in envs:
            try:
                body = _map_arrays(env.body, self._fetch)
            except _Lost:
                self.stats["lost"] += 1
                continue
            for copy in range(env.copies):
                self._arrivals += 1
                bisect.insort(self._held, (env.deliver_at, self._arrivals,
                                           env._replace(body=body if copy == 0 else deepcopy(body))))

    def _fetch(self, b):
        if not isinstance(b, _Bulk):
            return b
        try:
            return self.ray.get(b.ref, timeout=60.0)  # a read-only view of the object store
        except Exception as err:  # noqa: BLE001 - the owner (sender) died: the message is lost
            log.debug("%s: a bulk array was lost: %s", self.describe(self.node), err)
            raise _Lost() from None

    def _take(self, where) -> Envelope | None:
        now = time.time()
        for i, (at, _, env) in enumerate(self._held):  # in delivery order
            if at > now:
                return None
            if where is None or where(env):
                del self._held[i]
                return env
        return None

    def close(self, timeout: float = 0.0) -> None:
        self.closed = True


# ---------------------------------------------------------------------------------------------
# The actors
# ---------------------------------------------------------------------------------------------


def _queue_pull(inbox: queue.SimpleQueue):
    def pull(wait: float) -> list:
        out = []
        try:
            out.append(inbox.get(timeout=wait) if wait > 0 else inbox.get_nowait())
            while True:
                out.append(inbox.get_nowait())
        except queue.Empty:
            pass
        return out
    return pull


class _NodeActor:
    """One node of the group (wrapped by ``ray.remote`` in :meth:`RayGroup.start`). Ray re-runs
    this constructor when it restarts the actor: it holds nothing but the node's identity."""

    def __init__(self, node: int, roster: dict, fn: Callable, log_level: int, trace: bool,
                 shm_threshold: int):
        from threadpoolctl import threadpool_limits

        from refimpl.memory import retain_freed_memory

        threadpool_limits(1)  # one BLAS thread per node, as in the process backend
        retain_freed_memory()  # and each step's blocks reused, as there
        logging.getLogger("simcluster").setLevel(log_level)
        self.node, self.roster, self.fn = node, roster, fn
        self.trace, self.shm_threshold = trace, shm_threshold
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()

    def ready(self) -> tuple[int, str]:
        return os.getpid(), _ray().util.get_node_ip_address()

    def deliver(self, env: Envelope, _after=None) -> None:
        """A peer's send. ``_after`` is the previous delivery on the same link, if still in
        flight: Ray runs this call only once that one has finished (the link keeps its order)."""
        self.inbox.put(env)

    def run(self, args: tuple, peers: dict, faults: FaultPlan | None) -> Bye:
        """The role function's whole life (as ``simcluster.group._child_main``): ``fn(ctx, *args)``
        with the peers' handles and this incarnation's fault plan; returns the Bye."""
        tracer = Tracer(self.node, enabled=self.trace)
        transport = RayTransport(self.node, peers, _queue_pull(self.inbox),
                                 describe=lambda n: describe(self.roster, n), faults=faults,
                                 tracer=tracer, shm_threshold=self.shm_threshold)
        ctx = Context(self.node, self.roster, transport, tracer)
        try:
            self.fn(ctx, *args)
        except BaseException as exc:  # noqa: BLE001 - every failure travels back as data
            try:
                transport.send(0, Error(self.node, ctx.role, ctx.rank, type(exc).__name__, str(exc),
                                        traceback.format_exc()))
            except Exception:  # noqa: BLE001
                pass
        return Bye(self.node, tuple(tracer.events), dict(transport.stats))


class _InboxActor:
    """Node 0's inbox: the driver is not an actor, so peers deliver here and it ``take``s."""

    def __init__(self):
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.pull = _queue_pull(self.inbox)

    def deliver(self, env: Envelope, _after=None) -> None:
        self.inbox.put(env)

    def take(self, wait: float) -> list:
        return self.pull(wait)


class _Proc:
    """What the coordinator asks of a node: is it alive."""

    def __init__(self):
        self.dead = False

    def is_alive(self) -> bool:
        return not self.dead


# ---------------------------------------------------------------------------------------------
# The group
# ---------------------------------------------------------------------------------------------


class RayGroup:
    """N role actors on Ray with :class:`~simcluster.group.ProcessGroup`'s interface (start,
    send, recv, restart, close, traces), so Coordinator and run_downpour use either unchanged.

    Args (beyond ProcessGroup's; ``start_method`` is accepted and ignored: Ray starts workers):
        address: the Ray cluster to join ("auto"), or None for a local Ray (:func:`init`).
        max_restarts: how often Ray may restart each actor after its process died.
    """

    def __init__(self, roles, *, address: str | None = None, max_restarts: int = 0,
                 start_method: str | None = None, faults: FaultPlan | None = None,
                 log_level: int = logging.INFO, trace: bool = True,
                 shm_threshold: int = DEFAULT_SHM_THRESHOLD, ready_timeout: float = 60.0):
        self.roles, self.roster = make_roster(roles)
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
        self.address = address
        self.max_restarts = max_restarts
        self.faults = resolve_faults(faults, self.node_of)
        self.log_level, self.trace = log_level, trace
        self.shm_threshold, self.ready_timeout = shm_threshold, ready_timeout
        self.run_id = uuid.uuid4().hex[:8]
        self.actors: dict = {}  # node -> actor handle
        self._boot: dict = {}  # node -> object-store reference of its role's arguments
        self.runs: dict = {}  # node -> reference of its run() (fails when its process dies)
        self.procs: dict[int, _Proc] = {}
        self.ready: dict[int, Ready] = {}  # node -> its pid, as ProcessGroup's
        self.hosts: dict[int, str] = {}  # node -> IP address of the machine its actor runs on
        self.byes: dict[int, Bye] = {}
        self.swept: list[str] = []  # (no shared-memory segments on Ray: kept for the interface)
        self.transport: RayTransport | None = None
        self.tracer = Tracer(0, enabled=trace)
        self.inbox = None
        self._take = None  # the pending take() on node 0's inbox
        self.startup_s: float | None = None
        self.t0_ns = time.monotonic_ns()

    # the same lookups and context-manager protocol as ProcessGroup (start/close differ)
    node_of = ProcessGroup.node_of
    describe = ProcessGroup.describe
    __enter__ = ProcessGroup.__enter__
    __exit__ = ProcessGroup.__exit__

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> float:
        """Create every actor, wait until each is alive, start the role functions."""
        t0 = time.perf_counter()
        self.t0_ns = time.monotonic_ns()
        ray = init(self.address)
        spread = {"scheduling_strategy": "SPREAD"} if self.address else {}
        try:
            self.inbox = ray.remote(_InboxActor).options(num_cpus=0, max_concurrency=8).remote()
            node_actor = ray.remote(_NodeActor)
            for i, role in enumerate(self.roles):
                node = i + 1
                # the role's arguments (a shard's initial values...) in the object store once,
                # for its first run() and every run() after a restart
                self._boot[node] = ray.put(role.args)
                self.actors[node] = node_actor.options(
                    num_cpus=0, max_concurrency=8, max_restarts=self.max_restarts,
                    name=f"cn{self.run_id}-{role.role}-{role.rank}", **spread,
                ).remote(node, self.roster, role.fn, self.log_level, self.trace,
                         self.shm_threshold)
                self.procs[node] = _Proc()
            refs = {node: a.ready.remote() for node, a in self.actors.items()}
            for node, (pid, host) in zip(refs, ray.get(list(refs.values()), timeout=self.ready_timeout)):
                self.ready[node], self.hosts[node] = Ready(node, pid), host
            self.transport = RayTransport(0, {**self.actors, 0: self.inbox}, self._pull,
                                          describe=self.describe, faults=self.faults,
                                          tracer=self.tracer, shm_threshold=self.shm_threshold)
            for node in self.actors:
                self._run(node, self.faults)
        except BaseException:
            self.close(graceful=False)
            raise
        self.startup_s = time.perf_counter() - t0
        log.info("%d actors ready in %.2f s", len(self.roles), self.startup_s)
        return self.startup_s

    def _run(self, node: int, faults) -> None:
        peers = {**self.actors, 0: self.inbox}
        self.runs[node] = self.actors[node].run.remote(self._boot[node], peers, faults)

    def restart(self, node: int, timeout: float | None = None) -> float:
        """Run ``node``'s role function again in the actor Ray restarted (its constructor re-ran:
        nothing of the dead one's state is left), with the fault plan without its crash."""
        t0 = time.perf_counter()
        ray = _ray()
        if node not in self.actors or self.transport is None:
            raise ValueError(f"restart: no actor {node} in this running group")
        if node in self.runs:
            raise ValueError(f"restart: {self.describe(node)} is still running")
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        while True:
            try:
                pid, self.hosts[node] = ray.get(self.actors[node].ready.remote(),
                                                timeout=max(0.0, deadline - time.monotonic()))
                self.ready[node] = Ready(node, pid)
                break
            except ray.exceptions.ActorUnavailableError:  # still restarting: ask again
                if time.monotonic() > deadline:
                    raise WorkerDied(f"restart: {self.describe(node)} did not come back within "
                                     f"{deadline - t0:g} s") from None
                time.sleep(0.05)
            except Exception as err:  # noqa: BLE001 - restarts exhausted, or it did not come back
                raise WorkerDied(f"restart: {self.describe(node)} did not come back "
                                 f"(max_restarts={self.max_restarts}): {type(err).__name__}") from None
        faults = self.faults
        if faults is not None and faults.crash_for(node) is not None:
            import dataclasses

            faults = dataclasses.replace(faults, crashes=tuple(c for c in faults.crashes if c.node != node))
        self.procs[node].dead = False
        self._run(node, faults)
        log.info("%s restarted in %.2f s", self.describe(node), time.perf_counter() - t0)
        return time.perf_counter() - t0

    # -- node 0's inbox, and the deaths ---------------------------------------------------------

    def _pull(self, wait: float) -> list:
        """Node 0's next envelopes (up to ``wait`` s); a finished run() is a Bye or a death."""
        ray = _ray()
        if self._take is None:
            self._take = self.inbox.take.remote(min(wait, 0.5))
        watch = {ref: node for node, ref in self.runs.items()}
        ready, _ = ray.wait([self._take, *watch], num_returns=1, timeout=wait)
        out = []
        for ref in ready:
            if ref is self._take:
                out = ray.get(ref)
                self._take = None
                continue
            node = watch[ref]
            del self.runs[node]
            try:
                self.byes[node] = ray.get(ref)  # the role function returned
            except Exception as err:  # noqa: BLE001 - the actor's process died
                self.procs[node].dead = True
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                self.transport.report_death(PeerDied(
                    node, f"{self.describe(node)} (node {node}, actor on {self.hosts.get(node)}) "
                          f"died: {type(err).__name__}: {first}"))
        return out

    # -- talking to the actors -------------------------------------------------------------------

    def send(self, dst, msg: Any) -> None:
        self.transport.send(self.node_of(dst), msg)

    def broadcast(self, msg: Any) -> None:
        for node in self.actors:
            self.transport.send(node, msg)

    def recv(self, timeout: float = 60.0, where: Callable[[Envelope], bool] | None = None) -> Envelope:
        """As ProcessGroup.recv: RemoteError, WorkerDied or RecvTimeout."""
        def wanted(env):
            return isinstance(env.body, Error) or where is None or where(env)

        try:
            env = self.transport.recv(timeout, wanted)
        except PeerDied as err:
            raise WorkerDied(str(err)) from None
        except RecvTimeout:
            raise RecvTimeout(f"coordinator: no message within {timeout:g} s "
                              f"(live: {len(self.alive())}/{len(self.actors)})") from None
        if isinstance(env.body, Error):
            raise RemoteError(env.body, self.describe(env.src))
        return env

    def alive(self) -> list[int]:
        return [n for n, p in self.procs.items() if p.is_alive()]

    # -- shutting down ------------------------------------------------------------------------

    def close(self, graceful: bool = True, timeout: float = 10.0) -> None:
        """Stop every role function (collecting the Byes if ``graceful``), then kill every actor
        of the group, so nothing of it is left on the cluster. Safe to call twice."""
        if not self.actors and self.inbox is None:
            return
        ray = _ray()
        deadline = time.monotonic() + timeout
        try:
            if self.transport is not None:
                for node in list(self.runs):
                    try:
                        self.transport.send(node, Stop())
                    except Exception:  # noqa: BLE001
                        pass
                while graceful and self.runs and time.monotonic() < deadline:
                    self._pull(min(0.5, max(0.0, deadline - time.monotonic())))  # Byes, deaths
        finally:
            for a in [*self.actors.values(), self.inbox]:
                if a is not None:
                    try:
                        ray.kill(a, no_restart=True)
                    except Exception:  # noqa: BLE001
                        pass
            self.actors, self.inbox, self.runs, self._take, self._boot = {}, None, {}, None, {}
            if self.transport is not None:
                self.transport.close()
                self.transport = None

    # -- results ------------------------------------------------------------------------------

    def chrome_trace(self) -> dict:
        events = {0: self.tracer.events}
        events.update({n: list(b.trace) for n, b in self.byes.items()})
        return chrome_trace(events, {n: self.describe(n) for n in self.roster}, self.t0_ns)

    def write_trace(self, path) -> None:
        write_chrome_trace(path, self.chrome_trace())


def shutdown() -> None:
    """Disconnect from Ray (and stop the local Ray that :func:`init` started, if any)."""
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()
