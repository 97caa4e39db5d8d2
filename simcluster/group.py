"""A process group: N role processes, their transport, logs and traces, started and stopped as one.

::

                             +-------------------- parent (node 0) --------------------+
                             | ProcessGroup: start -> Ready x N -> run -> Stop -> Bye  |
                             |  transport inbox   log FanIn+QueueListener   sentinels  |
                             +------^---------------------^-----------------^----------+
                                    | Envelopes           | log records     | process exit
              +---------------------+-----+---------------+-----------------+----+
              |                           |                                      |
    +---------+----------+     +----------+---------+                 +----------+---------+
    | node 1: role fn    |<--->| node 2: role fn    |<---> ... <----->| node N: role fn    |
    | (a plain loop on   |     |                    |   work messages |                    |
    |  ctx.recv())       |     |                    |  between roles  |                    |
    +--------------------+     +--------------------+                 +--------------------+

**The parent** (node 0) builds the roster (node -> role, rank), starts every child with the
``forkserver`` (default; NumPy preloaded, so a child costs a few MB) or ``spawn`` start method
(never ``fork``), waits for each child's :class:`~simcluster.messages.Ready`, and from then on
talks to the children through its own :class:`~simcluster.transport.Transport`. While it waits
in :meth:`ProcessGroup.recv` it also watches every child's ``Process.sentinel``: a child that
dies is reported at once as :class:`WorkerDied`, naming its role and rank; a child that raised
sends an :class:`~simcluster.messages.Error`, re-raised here as :class:`RemoteError` with the
child's traceback.

**A child** (:func:`_child_main`) pins BLAS to one thread (the environment variables are set
before NumPy is imported, and threadpoolctl confirms), routes its logging to the parent
(:mod:`simcluster.logs`), opens its inbox, says Ready, waits for :class:`~simcluster.messages.Start` (sent once every child is Ready, so
every inbox exists), and calls the role function
``fn(ctx, *args)`` with a :class:`Context`. The role function is a plain loop on ``ctx.recv()``
that returns when it receives :class:`~simcluster.messages.Stop`. Whatever happens, the child's
last act is to send :class:`~simcluster.messages.Bye` with its trace and counters.

A child also watches its parent: if the parent dies, the child's next receive fails and it
exits (the last child out removes the run's inbox directory and shared-memory segments).

**Shutdown** (:meth:`ProcessGroup.close`, also on leaving the ``with`` block, also after an
error): Stop to every live child, collect the Byes, join with a timeout, then terminate and kill
whatever is left, unlink every shared-memory segment of the run, remove the inbox directory and
stop the log listener. Nothing outlives the group.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
from multiprocessing import connection as mp_connection
import os
import shutil
import signal
import tempfile
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

from refimpl.memory import retain_freed_memory

from . import logs
from .faults import FaultPlan
from .messages import Bye, Envelope, Error, Ready, Start, Stop
from .trace import Tracer, chrome_trace, write_chrome_trace
from .transport import DEFAULT_SHM_THRESHOLD, PeerDied, RecvTimeout, Transport, socket_path, sweep

START_METHODS = ("forkserver", "spawn")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CATNEURON_THREADS")
log = logging.getLogger("simcluster.group")


class WorkerDied(RuntimeError):
    """A child process exited while the group was running."""


class RemoteError(RuntimeError):
    """A role function raised in a child; the message shows the child's traceback."""

    def __init__(self, err: Error, describe: str):
        super().__init__(f"{describe} (pid node {err.node}) raised {err.exc_type}: {err.message}\n"
                         f"--- remote traceback ---\n{err.traceback.rstrip()}")
        self.error = err


@dataclass(frozen=True)
class Role:
    """One process to start: ``fn(ctx, *args)`` runs in it as ``role`` number ``rank``.

    ``fn`` must be importable by name (a module-level function): children do not fork.
    """

    role: str
    rank: int
    fn: Callable
    args: tuple = ()


def describe(roster: dict[int, tuple[str, int]], node: int) -> str:
    role, rank = roster.get(node, ("node", node))
    return "coordinator" if node == 0 else f"{role} {rank}"


@dataclass(frozen=True)
class _Boot:
    """Everything a child needs, pickled to it at start."""

    node: int
    roster: dict
    rundir: str
    run_id: str
    faults: FaultPlan | None
    log_conn: Any
    log_level: int
    trace: bool
    shm_threshold: int
    ready_timeout: float
    fn: Callable
    args: tuple


class Context:
    """What a role function gets: its identity, the transport, a tracer and a logger.

    ``transport`` is anything with :class:`~simcluster.transport.Transport`'s ``send``, ``recv``
    and ``step`` (the Ray backend passes its own), so role functions run unchanged on either.
    ``ctx.send(dst, msg)`` is the transport's own ``send``."""

    def __init__(self, node: int, roster: dict, transport: Transport, tracer: Tracer):
        self.node = node
        self.role, self.rank = roster[node]
        self.roster = roster
        self.transport = transport
        self.send = transport.send  # ctx.send is the transport's own: one call less per message
        self.tracer = tracer
        self.log = logging.getLogger(f"simcluster.{self.role}")

    def node_of(self, role: str, rank: int) -> int:
        for node, rr in self.roster.items():
            if rr == (role, rank):
                return node
        raise ValueError(f"no {role} {rank} in this group")

    def recv(self, timeout: float = 60.0, where: Callable[[Envelope], bool] | None = None) -> Envelope:
        return self.transport.recv(timeout, where)

    def span(self, name: str, **args):
        """``with ctx.span("forward stage 1"):`` records a compute slice in the trace."""
        return self.tracer.span(name, **args)

    def step(self, k: int) -> None:
        self.transport.step(k)


def make_roster(roles) -> tuple[list, dict]:
    """``(roles, roster)``: the roles as a list, and node -> (role, rank) with the coordinator
    as node 0 and the roles as nodes 1, 2, ... Every backend's group builds it here."""
    roles = list(roles)
    if not roles:
        raise ValueError("roles must name at least one process")
    for r in roles:
        if not isinstance(r, Role):
            raise TypeError(f"roles must be Role objects, got {r!r}")
    roster = {0: ("coordinator", 0)}
    for i, r in enumerate(roles):
        if (r.role, r.rank) in roster.values():
            raise ValueError(f"two processes are both {r.role} {r.rank}")
        roster[i + 1] = (r.role, r.rank)
    return roles, roster


def resolve_faults(faults: FaultPlan | None, node_of) -> FaultPlan | None:
    """The fault plan with its nodes resolved to numbers; node 0 (the parent) may not crash."""
    resolved = faults.resolve(node_of) if faults is not None else None
    if resolved and resolved.crash_for(0):
        raise ValueError("the fault plan cannot crash node 0 (the parent)")
    return resolved


def _child_main(boot: _Boot) -> None:
    """A child's whole life: see the module docstring."""
    inherited = all(os.environ.get(v) == "1" for v in THREAD_VARS)
    for var in THREAD_VARS:
        os.environ[var] = "1"
    logs.setup_child(boot.log_conn, *boot.roster[boot.node], boot.node, boot.log_level)
    if not inherited:  # NumPy was loaded (by a forkserver someone else started) with more threads
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    retain_freed_memory()  # a worker reuses each step's blocks (page faults are dear here)
    tracer = Tracer(boot.node, enabled=boot.trace)
    transport = Transport(boot.node, boot.rundir, boot.run_id,
                          describe=lambda n: describe(boot.roster, n), faults=boot.faults,
                          tracer=tracer, shm_threshold=boot.shm_threshold)
    ctx = Context(boot.node, boot.roster, transport, tracer)
    parent = multiprocessing.parent_process()
    if parent is not None:  # an orphan leaves at once (its next recv raises) instead of lingering
        transport.watch(parent.sentinel, 0, lambda _: "the coordinator (node 0) died")
    try:
        transport.send(0, Ready(boot.node, os.getpid()))
        got = transport.recv(boot.ready_timeout, where=lambda e: isinstance(e.body, (Start, Stop)))
        if isinstance(got.body, Start):  # every peer's inbox exists now
            boot.fn(ctx, *boot.args)
    except BaseException as exc:  # noqa: BLE001 - every failure travels back as data
        try:
            transport.send(0, Error(boot.node, ctx.role, ctx.rank, type(exc).__name__, str(exc),
                                    traceback.format_exc()))
        except Exception:  # the parent is gone
            pass
    finally:
        orphan = parent is not None and not parent.is_alive()
        if not orphan:
            try:
                transport.send(0, Bye(boot.node, tuple(tracer.events), dict(transport.stats)))
            except Exception:
                pass
        transport.close(timeout=0.5 if orphan else 5.0)
        if orphan:
            _clean_up_after_dead_parent(boot)
        logging.shutdown()


def _clean_up_after_dead_parent(boot: _Boot) -> None:
    """The parent was killed and cannot clean up: the last of its children to leave does it."""
    try:
        os.unlink(socket_path(boot.rundir, 0))
    except FileNotFoundError:
        pass
    try:
        os.rmdir(boot.rundir)  # succeeds only for the last child out (every inbox socket gone)
    except OSError:
        return
    sweep(boot.run_id)


@contextmanager
def _one_thread_env():
    """Set the BLAS thread variables in os.environ while children (or the forkserver) start."""
    saved = {v: os.environ.get(v) for v in THREAD_VARS}
    os.environ.update({v: "1" for v in THREAD_VARS})
    try:
        yield
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


def _explain_exit(code: int | None) -> str:
    if code is None:
        return "is not responding"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class ProcessGroup:
    """Start, run and stop a group of role processes (see the module docstring).

    Args:
        roles: the processes to start; node i + 1 runs ``roles[i]``.
        start_method: "forkserver" (default) or "spawn".
        faults: a :class:`FaultPlan` (nodes by number or (role, rank)); None = perfect network.
        log_level: level of the children's root loggers.
        trace: record Chrome trace events in every process.
        shm_threshold: arrays of at least this many bytes travel through shared memory.
        ready_timeout: seconds to wait for every child's Ready.
    """

    def __init__(self, roles, *, start_method: str = "forkserver", faults: FaultPlan | None = None,
                 log_level: int = logging.INFO, trace: bool = True,
                 shm_threshold: int = DEFAULT_SHM_THRESHOLD, ready_timeout: float = 60.0):
        if start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {START_METHODS} (never fork), got {start_method!r}")
        self.roles, self.roster = make_roster(roles)
        self.start_method = start_method
        self.faults = resolve_faults(faults, self.node_of)
        self.log_level = log_level
        self.trace = trace
        self.shm_threshold = shm_threshold
        self.ready_timeout = ready_timeout
        self.run_id = uuid.uuid4().hex[:8]
        self.procs: dict[int, multiprocessing.Process] = {}
        self.ready: dict[int, Ready] = {}
        self.byes: dict[int, Bye] = {}
        self.transport: Transport | None = None
        self.tracer = Tracer(0, enabled=trace)
        self.rundir: str | None = None
        self.log_server: logs.LogServer | None = None
        self.startup_s: float | None = None
        self.swept: list[str] = []  # segments removed by the group (pools, and what the dead left)
        self.t0_ns = time.monotonic_ns()
        self._stopping: set[int] = set()

    # -- names --------------------------------------------------------------------------------

    def node_of(self, name) -> int:
        """A node number from a number or a (role, rank) pair."""
        if isinstance(name, int) and not isinstance(name, bool) and name in self.roster:
            return name
        if isinstance(name, (tuple, list)) and len(name) == 2:
            for node, rr in self.roster.items():
                if rr == tuple(name):
                    return node
        raise ValueError(f"no process {name!r} in this group (nodes 0..{len(self.roles)})")

    def describe(self, node: int) -> str:
        return describe(self.roster, node)

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> "ProcessGroup":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close(graceful=exc[0] is None)

    def start(self) -> float:
        """Start every child and wait until all are Ready; returns the start-up time in seconds."""
        t0 = time.perf_counter()
        self.t0_ns = time.monotonic_ns()
        ctx = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            ctx.set_forkserver_preload(["numpy", "threadpoolctl", "simcluster.group"])
        self.rundir = tempfile.mkdtemp(prefix="simcluster-")
        self.transport = Transport(0, self.rundir, self.run_id, describe=self.describe,
                                   faults=self.faults, tracer=self.tracer,
                                   shm_threshold=self.shm_threshold)
        log_ends = []
        try:
            with _one_thread_env():
                for i, role in enumerate(self.roles):
                    node = i + 1
                    r, w = ctx.Pipe(duplex=False)
                    boot = _Boot(node, self.roster, self.rundir, self.run_id, self.faults, w,
                                 self.log_level, self.trace, self.shm_threshold, self.ready_timeout,
                                 role.fn, role.args)
                    p = ctx.Process(target=_child_main, args=(boot,),
                                    name=f"{role.role}-{role.rank}", daemon=True)
                    p.start()
                    w.close()
                    log_ends.append(r)
                    self.procs[node] = p
                    self.transport.watch(p.sentinel, node, self._death_message)
            self.log_server = logs.LogServer(log_ends)
            deadline = time.monotonic() + self.ready_timeout
            while len(self.ready) < len(self.roles):
                env = self.recv(max(0.0, deadline - time.monotonic()),
                                where=lambda e: isinstance(e.body, Ready))
                self.ready[env.src] = env.body
            self.broadcast(Start())
        except BaseException:
            if self.log_server is None:
                self.log_server = logs.LogServer(log_ends)
            self.close(graceful=False)
            raise
        self.startup_s = time.perf_counter() - t0
        log.info("%d processes ready in %.2f s (%s)", len(self.roles), self.startup_s, self.start_method)
        return self.startup_s

    def restart(self, node: int, timeout: float | None = None) -> float:
        """Start a new process for ``node``, whose process died: same role, rank, function and
        arguments, a fresh inbox at the same address, and the fault plan without its crash (it
        would die again at once). Waits for its Ready, sends it Start; returns the seconds taken.
        Peers reconnect on their next send (their old connection failed when it died)."""
        t0 = time.perf_counter()
        old = self.procs.get(node)
        if old is None or self.transport is None:
            raise ValueError(f"restart: no process {node} in this running group")
        old.join(1.0)
        if old.is_alive():
            raise ValueError(f"restart: {self.describe(node)} is still running")
        self.transport.unwatch(old.sentinel)
        self.transport.forget(node)
        self.swept += sweep(self.run_id, reader=node)
        try:
            os.unlink(socket_path(self.rundir, node))
        except FileNotFoundError:
            pass
        faults = self.faults
        if faults is not None and faults.crash_for(node) is not None:
            faults = dataclasses.replace(faults, crashes=tuple(c for c in faults.crashes if c.node != node))
        role = self.roles[node - 1]
        ctx = multiprocessing.get_context(self.start_method)
        r, w = ctx.Pipe(duplex=False)
        boot = _Boot(node, self.roster, self.rundir, self.run_id, faults, w, self.log_level,
                     self.trace, self.shm_threshold, self.ready_timeout, role.fn, role.args)
        with _one_thread_env():
            p = ctx.Process(target=_child_main, args=(boot,), name=f"{role.role}-{role.rank}",
                            daemon=True)
            p.start()
        w.close()
        self.log_server.add(r)
        self.procs[node] = p
        self.transport.watch(p.sentinel, node, self._death_message)
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        others = []  # deaths of other processes meanwhile: reported by the next recv, not here
        try:
            while True:
                try:
                    env = self.transport.recv(max(0.0, deadline - time.monotonic()),
                                              where=lambda e: isinstance(e.body, (Ready, Error))
                                              and e.src == node)
                    break
                except PeerDied as err:
                    if err.node == node:
                        raise WorkerDied(f"restart: {err}") from None
                    others.append(err)
        finally:
            for err in others:
                self.transport.report_death(err)
        if isinstance(env.body, Error):
            raise RemoteError(env.body, self.describe(node))
        self.ready[node] = env.body
        self.transport.send(node, Start())
        if old.exitcode is not None:
            old.close()
        log.info("%s restarted in %.2f s", self.describe(node), time.perf_counter() - t0)
        return time.perf_counter() - t0

    def _death_message(self, node: int) -> str:
        p = self.procs[node]
        p.join(0.5)
        return f"{self.describe(node)} (node {node}, pid {p.pid}) {_explain_exit(p.exitcode)}"

    # -- talking to the children --------------------------------------------------------------

    def send(self, dst, msg: Any) -> None:
        self.transport.send(self.node_of(dst), msg)

    def broadcast(self, msg: Any) -> None:
        for node in self.procs:
            self.transport.send(node, msg)

    def recv(self, timeout: float = 60.0, where: Callable[[Envelope], bool] | None = None) -> Envelope:
        """The next message for the parent. Raises RemoteError if a child's Error arrives first,
        WorkerDied if a child dies, RecvTimeout after ``timeout`` seconds."""
        def wanted(env):
            return isinstance(env.body, Error) or where is None or where(env)

        try:
            env = self.transport.recv(timeout, wanted)
        except PeerDied as err:
            self.swept += sweep(self.run_id, reader=err.node)  # nobody else will read those
            cause = self._root_cause(err.node)
            if cause == err.node:
                raise WorkerDied(str(err)) from None
            raise WorkerDied(f"{self._death_message(cause)}; then {str(err)}") from None
        except RecvTimeout:
            raise RecvTimeout(f"coordinator: no message within {timeout:g} s "
                              f"(live: {sum(p.is_alive() for p in self.procs.values())}/{len(self.procs)})") from None
        if isinstance(env.body, Error):
            if env.body.exc_type in ("PeerUnreachable", "RecvTimeout"):
                self._blame_the_dead(env.body, env.src)  # the root cause, if a process died
            raise RemoteError(env.body, self.describe(env.src))
        return env

    def _blame_the_dead(self, err: Error, src: int, grace: float = 1.0) -> None:
        """A child lost a peer: if some child has died (give its exit a moment to show), raise
        WorkerDied naming it rather than the survivor's secondary error."""
        sentinels = {p.sentinel: n for n, p in self.procs.items() if n != src}
        dead = mp_connection.wait(list(sentinels), timeout=grace)
        if dead:
            node = self._root_cause(sentinels[dead[0]], grace=0.0)
            raise WorkerDied(f"{self._death_message(node)}; then {self.describe(src)} failed: "
                             f"{err.exc_type}: {err.message}")

    def _root_cause(self, node: int, grace: float = 1.0) -> int:
        """Of the dead children, the one to blame: ``node``, unless it ended cleanly (exit code 0,
        as a survivor does after reporting that it lost a peer) while another was killed or
        failed; then that one (waiting up to ``grace`` s for its exit to show)."""
        self.procs[node].join(0.5)
        if self.procs[node].exitcode != 0:
            return node
        deadline = time.monotonic() + grace
        while True:
            failed = [n for n, p in self.procs.items()
                      if n != node and p.exitcode not in (None, 0)]
            if failed or time.monotonic() >= deadline:
                return failed[0] if failed else node
            others = [p.sentinel for n, p in self.procs.items() if n != node and p.is_alive()]
            mp_connection.wait(others, timeout=max(0.0, deadline - time.monotonic()))

    def alive(self) -> list[int]:
        return [n for n, p in self.procs.items() if p.is_alive()]

    # -- shutting down ------------------------------------------------------------------------

    def close(self, graceful: bool = True, timeout: float = 10.0) -> None:
        """Stop everything (see the module docstring); safe to call twice."""
        if self.transport is None:
            return
        deadline = time.monotonic() + timeout
        try:
            if graceful:
                self._collect_byes(deadline)
            else:  # best effort: live children blocked in recv leave at once
                for node in self.alive():
                    try:
                        self.transport.send(node, Stop())
                    except Exception:
                        pass
        finally:
            for p in self.procs.values():
                p.join(max(0.0, min(1.0, deadline - time.monotonic())))
            for p in self.procs.values():
                if p.is_alive():
                    p.terminate()
            last = time.monotonic() + 2.0  # one shared bound, not one per process
            for p in self.procs.values():
                p.join(max(0.0, last - time.monotonic()))
            for p in self.procs.values():
                if p.is_alive():
                    p.kill()
                    p.join(1.0)
            for p in self.procs.values():
                if p.exitcode is not None:
                    p.close()
            self.transport.close(timeout=0.5)
            self.transport = None
            self.swept += sweep(self.run_id)
            log.debug("removed %d shared-memory segments (pooled slots and leftovers)", len(self.swept))
            if self.rundir:
                shutil.rmtree(self.rundir, ignore_errors=True)
            if self.log_server is not None:
                self.log_server.stop()
                self.log_server = None

    def _collect_byes(self, deadline: float) -> None:
        live = [n for n in self.procs if self.procs[n].is_alive()]
        for node in live:
            try:
                self.transport.send(node, Stop())
            except Exception:
                pass
        waiting = set(live) - set(self.byes)
        while waiting and time.monotonic() < deadline:
            try:
                env = self.transport.recv(max(0.0, deadline - time.monotonic()),
                                          lambda e: isinstance(e.body, (Bye, Error)))
            except PeerDied as err:
                waiting.discard(err.node)
                continue
            except RecvTimeout:
                break
            if isinstance(env.body, Bye):
                self.byes[env.src] = env.body
                waiting.discard(env.src)
            else:
                log.warning("%s raised while stopping: %s: %s", self.describe(env.src),
                            env.body.exc_type, env.body.message)
        while True:  # Byes already in the inbox of children that exited meanwhile
            try:
                env = self.transport.recv(0.05, lambda e: isinstance(e.body, Bye))
            except (PeerDied, RecvTimeout):
                break
            self.byes[env.src] = env.body

    # -- results ------------------------------------------------------------------------------

    def chrome_trace(self) -> dict:
        """The run's trace (every process that said Bye, and the parent) as a Chrome trace document."""
        events = {0: self.tracer.events}
        events.update({n: list(b.trace) for n, b in self.byes.items()})
        names = {n: self.describe(n) for n in self.roster}
        return chrome_trace(events, names, self.t0_ns)

    def write_trace(self, path) -> None:
        write_chrome_trace(path, self.chrome_trace())
