"""Small role functions that exercise the group and the transport (tests and benchmarks use them).

Each is a plain loop on ``ctx.recv()`` that returns on :class:`~simcluster.messages.Stop`, the
shape every role in simcluster has. They live in a module (not in the tests) because children
import their role function by name.
"""

from __future__ import annotations

import os

import numpy as np

from .messages import Ping, Pong, Stop, Tensor


def echo(ctx) -> None:
    """Answer every Ping with a Pong carrying the same token and payload; ignore the rest."""
    while True:
        env = ctx.recv(timeout=120.0)
        if isinstance(env.body, Stop):
            return
        if isinstance(env.body, Ping):
            ctx.send(env.src, Pong(env.body.token, env.body.payload))


def environment(ctx) -> None:
    """Answer a Ping with this process's BLAS thread variables and threadpoolctl's view."""
    from threadpoolctl import threadpool_info

    while True:
        env = ctx.recv(timeout=120.0)
        if isinstance(env.body, Stop):
            return
        info = {i["internal_api"]: i["num_threads"] for i in threadpool_info()}
        names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CATNEURON_THREADS")
        ctx.send(env.src, Pong(env.body.token, {"env": {v: os.environ.get(v) for v in names},
                                                "blas": info, "pid": os.getpid()}))


def log_records(ctx, n: int) -> None:
    """Log ``n`` numbered records, then wait for Stop."""
    for i in range(n):
        ctx.log.info("record %d from %s %d", i, ctx.role, ctx.rank)
    while not isinstance(ctx.recv(timeout=120.0).body, Stop):
        pass


def raiser(ctx, message: str) -> None:
    """Raise ValueError(message) after a small computation, so a traceback has frames."""
    def inner_step(x):
        if x.sum() > 0:
            raise ValueError(message)

    with ctx.span("doomed"):
        inner_step(np.ones(3))


def quitter(ctx) -> None:
    """Return at once: the process ends cleanly (exit code 0), as a survivor does after it
    reports that it lost a peer."""


def sleeper(ctx, seconds: float) -> None:
    """Sleep, then wait for Stop (a process for the parent or a test to kill)."""
    import time

    time.sleep(seconds)
    while not isinstance(ctx.recv(timeout=120.0).body, Stop):
        pass


def streamer(ctx, peer: tuple, nbytes: int) -> None:
    """Send Tensor arrays of ``nbytes`` to ``peer`` (role, rank) and read whatever arrives, until
    Stop: steady shared-memory traffic in both directions for crash tests."""
    dst = ctx.node_of(*peer)
    data = np.full(nbytes // 8, float(ctx.rank))
    k = 0
    while True:
        k += 1
        ctx.step(k)
        ctx.send(dst, Tensor("stream", k, data))
        env = ctx.recv(timeout=120.0)
        if isinstance(env.body, Stop):
            return


def neighbours(rank: int, rows: int, cols: int) -> list[int]:
    """Ranks of the (up to 8) grid neighbours of ``rank`` in a rows x cols grid, row-major."""
    r, c = divmod(rank, cols)
    out = []
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            rr, cc = r + dr, c + dc
            if (dr or dc) and 0 <= rr < rows and 0 <= cc < cols:
                out.append(rr * cols + cc)
    return out


def halo(ctx, rows: int, cols: int) -> None:
    """One partition of a halo exchange: on Tensor("go", k, size) from the parent, send an array
    of ``size`` bytes to every grid neighbour, receive one from each, and answer "done"."""
    nbrs = [ctx.node_of("halo", n) for n in neighbours(ctx.rank, rows, cols)]
    while True:
        env = ctx.recv(timeout=120.0, where=lambda e: not isinstance(e.body, Tensor) or e.body.tag == "go")
        if isinstance(env.body, Stop):
            return
        k, size = env.body.step, int(env.body.data)
        block = np.full(size // 8, float(ctx.rank))
        for dst in nbrs:
            ctx.send(dst, Tensor("halo", k, block))
        got = 0
        for _ in nbrs:
            m = ctx.recv(timeout=60.0, where=lambda e, k=k: isinstance(e.body, Tensor)
                         and e.body.tag == "halo" and e.body.step == k)
            got += m.body.data.nbytes
        with ctx.span("halo bookkeeping", step=k):
            pass
        ctx.send(0, Tensor("done", k, got))


def sink(ctx) -> None:
    """Acknowledge every Tensor with a tiny Tensor("ack", step, nbytes received)."""
    while True:
        env = ctx.recv(timeout=120.0)
        if isinstance(env.body, Stop):
            return
        if isinstance(env.body, Tensor):
            data = env.body.data
            ctx.send(env.src, Tensor("ack", env.body.step, int(getattr(data, "nbytes", 0))))


def pusher(ctx, count: int, nbytes: int) -> None:
    """Send ``count`` Tensor("push", k, array of nbytes) to the parent, k = 1.., each in its own
    step (``ctx.step(k)``), then wait for Stop."""
    data = np.ones(nbytes // 8)
    for k in range(1, count + 1):
        ctx.step(k)
        ctx.send(0, Tensor("push", k, data * k))
    while not isinstance(ctx.recv(timeout=120.0).body, Stop):
        pass


def orphan_test_main() -> None:
    """Run by a test as a separate Python: start two echo processes, print their pids, then die
    by SIGKILL without any cleanup, leaving them orphans."""
    import signal
    import sys

    from .group import ProcessGroup, Role

    g = ProcessGroup([Role("echo", i, echo) for i in range(2)])
    g.start()
    print(g.rundir, g.run_id, " ".join(str(r.pid) for r in g.ready.values()), flush=True)
    sys.stdout.close()
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    orphan_test_main()
