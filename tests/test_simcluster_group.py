"""Process groups: start and stop under forkserver and spawn, one BLAS thread per child, errors
as data, dead children detected and named, nothing leaked (processes, /dev/shm), logs from
every child, Chrome traces, and a 169-process halo round."""

import json
import logging
import os
import signal
import threading
import time

import numpy as np
import pytest

from simcluster import (Crash, FaultPlan, LinkModel, Ping, Pong, ProcessGroup, RecvTimeout,
                        RemoteError, Role, Tensor, WorkerDied)
from simcluster import demo_roles
from simcluster.shm import segment_prefix
from simcluster.transport import SHM_DIR

METHODS = ["forkserver", "spawn"]


def _segments_of(run_ids):
    prefixes = tuple(segment_prefix(r) for r in run_ids)
    return {n for n in os.listdir(SHM_DIR) if prefixes and n.startswith(prefixes)}


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"  # a zombie has exited (its parent reaps it)
    except FileNotFoundError:
        return True


@pytest.fixture
def no_leaks(monkeypatch):
    """Fails the test if it leaves shared-memory segments or live child processes behind.

    Only the segments of the groups this test made count (their run ids), so a test run beside
    another simcluster run on the same machine is not blamed for that run's segments."""
    run_ids, init = [], ProcessGroup.__init__

    def tracking_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        run_ids.append(self.run_id)

    monkeypatch.setattr(ProcessGroup, "__init__", tracking_init)
    pids = []
    yield pids
    assert run_ids, "the test made no ProcessGroup: the leak check would check nothing"
    assert _segments_of(run_ids) == set()
    deadline = time.monotonic() + 5
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pids if not _gone(p)] == []


@pytest.mark.parametrize("method", METHODS)
def test_round_trip_and_one_blas_thread_per_child(method, no_leaks):
    roles = [Role("env", i, demo_roles.environment) for i in range(2)]
    with ProcessGroup(roles, start_method=method) as g:
        no_leaks.extend(r.pid for r in g.ready.values())
        for node in (1, 2):
            g.send(node, Ping(node))
        replies = {}
        for _ in range(2):
            env = g.recv(20)
            replies[env.src] = env.body
    assert set(replies) == {1, 2}
    for node, pong in replies.items():
        assert isinstance(pong, Pong) and pong.token == node
        assert set(pong.payload["env"].values()) == {"1"}
        assert pong.payload["blas"] and set(pong.payload["blas"].values()) == {1}
    assert set(g.byes) == {1, 2}
    assert not os.path.exists(g.rundir)  # the inbox sockets' directory is gone too


def test_arrays_through_children_both_ways(no_leaks):
    with ProcessGroup([Role("echo", 0, demo_roles.echo)]) as g:
        no_leaks.extend(r.pid for r in g.ready.values())
        big = np.random.default_rng(0).standard_normal((512, 512))  # 2 MB: shared memory
        g.send(("echo", 0), Ping(1, {"big": big, "small": big[:2, :2]}))
        back = g.recv(20).body.payload
    np.testing.assert_array_equal(back["big"], big)
    np.testing.assert_array_equal(back["small"], big[:2, :2])


def test_remote_exception_names_role_and_shows_traceback(no_leaks):
    with pytest.raises(RemoteError) as info:
        with ProcessGroup([Role("echo", 0, demo_roles.echo),
                           Role("raiser", 3, demo_roles.raiser, ("weights went NaN",))]) as g:
            no_leaks.extend(r.pid for r in g.ready.values())
            g.recv(20)
    text = str(info.value)
    assert "raiser 3" in text and "ValueError: weights went NaN" in text
    assert "remote traceback" in text and "inner_step" in text  # the child's own frames
    assert info.value.error.exc_type == "ValueError"


def test_killed_child_is_detected_named_and_nothing_leaks(no_leaks):
    roles = [Role("streamer", 0, demo_roles.streamer, (("streamer", 1), 1 << 20)),
             Role("streamer", 1, demo_roles.streamer, (("streamer", 0), 1 << 20))]
    with pytest.raises(WorkerDied, match=r"streamer 1 \(node 2, pid \d+\) was killed by SIGKILL"):
        with ProcessGroup(roles) as g:
            no_leaks.extend(r.pid for r in g.ready.values())
            time.sleep(0.3)  # 1 MB arrays are flowing both ways through shared memory
            os.kill(g.ready[2].pid, signal.SIGKILL)
            g.recv(30)  # would raise RecvTimeout if the death went unnoticed


def test_a_killed_child_is_blamed_before_one_that_ended_cleanly(no_leaks):
    # the quitter exits cleanly (code 0) right after Start; the sleeper is killed 0.2 s later:
    # the killed one is the root cause, whichever death the parent notices first
    roles = [Role("quitter", 0, demo_roles.quitter), Role("sleeper", 0, demo_roles.sleeper, (60,))]
    with pytest.raises(WorkerDied, match=r"sleeper 0 \(node 2, pid \d+\) was killed by SIGKILL "
                                         r"\(exit code -9\); then quitter 0"):
        with ProcessGroup(roles) as g:
            no_leaks.extend(r.pid for r in g.ready.values())
            g.procs[1].join(10)  # the quitter is gone
            threading.Timer(0.2, os.kill, (g.ready[2].pid, signal.SIGKILL)).start()
            g.recv(30, where=lambda env: False)  # nothing but a death ends this wait


@pytest.mark.parametrize("crash, delivered, segments", [
    (Crash(("pusher", 0), after_sends=5, mid_write=True), [1, 2, 3, 4, 5], 1),
    (Crash(("pusher", 0), at_step=3), [1, 2], 0),
])
def test_planned_crash_fires_on_time_and_leaks_nothing(crash, delivered, segments, no_leaks):
    # the pusher sends 1 MB arrays to the parent, one per step; the plan kills it before its
    # 6th send (half way through writing that array's segment), or as it starts step 3
    g = ProcessGroup([Role("pusher", 0, demo_roles.pusher, (100, 1 << 20))],
                     faults=FaultPlan(crashes=(crash,)))
    got = []
    with pytest.raises(WorkerDied, match=r"pusher 0 \(node 1, pid \d+\) was killed by SIGKILL"):
        with g:
            no_leaks.extend(r.pid for r in g.ready.values())
            while True:
                got.append(g.recv(30).body)
    assert [m.step for m in got] == delivered  # what it sent before dying still arrives
    assert all(m.data[0] == m.step and m.data.nbytes == 1 << 20 for m in got)
    # the half-written one-off segment existed, and the group removed it (with the pooled slots)
    assert len([n for n in g.swept if "_p" not in n]) == segments


@pytest.mark.parametrize("method", METHODS)
def test_every_record_from_every_child_reaches_the_parent_log(method, no_leaks):
    k, n = 3, 40
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("simcluster.log")
    handler = Keep()
    logger.addHandler(handler)
    try:
        with ProcessGroup([Role("log", i, demo_roles.log_records, (n,)) for i in range(k)],
                          start_method=method) as g:
            no_leaks.extend(r.pid for r in g.ready.values())
    finally:
        logger.removeHandler(handler)
    got = sorted((r.role, r.rank, r.getMessage()) for r in records)
    want = sorted(("log", i, f"record {j} from log {i}") for i in range(k) for j in range(n))
    assert got == want


def test_chrome_trace_has_one_track_per_process_and_paired_flows(tmp_path, no_leaks):
    with ProcessGroup([Role("halo", i, demo_roles.halo, (2, 2)) for i in range(4)]) as g:
        no_leaks.extend(r.pid for r in g.ready.values())
        g.broadcast(Tensor("go", 0, 4096))
        for _ in range(4):
            assert g.recv(20).body.data == 3 * 4096  # each of the 4 has 3 neighbours in 2x2
    path = tmp_path / "trace.json"
    g.write_trace(path)
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {0: "coordinator", 1: "halo 0", 2: "halo 1", 3: "halo 2", 4: "halo 3"}
    for e in events:
        assert {"ph", "pid", "tid", "name"} <= set(e)
        if e["ph"] != "M":
            assert isinstance(e["ts"], float) and e["pid"] in names
        if e["ph"] == "X":
            assert e["dur"] >= 0
    slices = [e for e in events if e["ph"] == "X"]
    assert {e["pid"] for e in slices} == set(names)  # every process has its own track
    sends = [e for e in slices if e["cat"] == "send" and e["name"].startswith("send Tensor")]
    assert len([e for e in sends if "halo" in e["name"] and e["pid"] > 0]) == 12
    assert any(e["cat"] == "compute" and e["name"] == "halo bookkeeping" for e in slices)
    starts = {e["id"] for e in events if e["ph"] == "s"}
    ends = {e["id"] for e in events if e["ph"] == "f"}
    assert starts == ends and len(starts) >= 12 + 4 + 4


def test_injected_latency_on_one_link_shows_in_the_trace(no_leaks):
    plan = FaultPlan(links={(("echo", 0), 0): LinkModel(latency=0.25)})
    with ProcessGroup([Role("echo", i, demo_roles.echo) for i in range(2)], faults=plan) as g:
        no_leaks.extend(r.pid for r in g.ready.values())
        for node in (2, 1):
            g.send(node, Ping(node))
            g.recv(20)
    recvs = {e["name"]: e for e in g.chrome_trace()["traceEvents"]
             if e["ph"] == "X" and e["pid"] == 0 and e["name"].startswith("recv Pong")}
    slow, fast = recvs["recv Pong from echo 0"], recvs["recv Pong from echo 1"]
    assert slow["args"]["delay_ms"] == pytest.approx(250.0) and fast["args"]["delay_ms"] == 0.0
    # the parent waited for it: at least the latency minus the moment between its send and recv
    assert slow["dur"] >= 200_000 and slow["dur"] > fast["dur"]


def test_bad_groups_are_refused():
    with pytest.raises(ValueError, match="never fork"):
        ProcessGroup([Role("echo", 0, demo_roles.echo)], start_method="fork")
    with pytest.raises(ValueError, match="at least one process"):
        ProcessGroup([])
    with pytest.raises(ValueError, match="two processes are both echo 0"):
        ProcessGroup([Role("echo", 0, demo_roles.echo)] * 2)
    with pytest.raises(ValueError, match="cannot crash node 0"):
        ProcessGroup([Role("echo", 0, demo_roles.echo)], faults=FaultPlan(crashes=(Crash(0, at_step=1),)))
    with pytest.raises(ValueError, match=r"no process \('echo', 5\)"):
        ProcessGroup([Role("echo", 0, demo_roles.echo)], faults=FaultPlan(links={(("echo", 5), 0): LinkModel()}))
    with pytest.raises(TypeError, match="must be Role objects"):
        ProcessGroup([demo_roles.echo])


def test_recv_timeout_in_the_parent(no_leaks):
    with ProcessGroup([Role("echo", 0, demo_roles.echo)]) as g:
        no_leaks.extend(r.pid for r in g.ready.values())
        with pytest.raises(RecvTimeout, match=r"live: 1/1"):
            g.recv(0.1)


def test_169_partitions_exchange_a_halo_round(no_leaks):
    R = C = 13
    with ProcessGroup([Role("halo", i, demo_roles.halo, (R, C)) for i in range(R * C)], trace=False) as g:
        no_leaks.extend(r.pid for r in g.ready.values())
        g.broadcast(Tensor("go", 0, 4096))
        got = {}
        for _ in range(R * C):
            env = g.recv(60)
            got[g.roster[env.src][1]] = env.body.data
    want = {i: 4096 * len(demo_roles.neighbours(i, R, C)) for i in range(R * C)}
    assert got == want
    assert sorted(set(got.values())) == [3 * 4096, 5 * 4096, 8 * 4096]


def test_children_of_a_killed_parent_exit_on_their_own():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "simcluster.demo_roles"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL
    rundir, run_id, *pids = out.stdout.split()
    assert len(pids) == 2
    deadline = time.monotonic() + 10  # their recv timeouts are 120 s: only the watch can do it
    while not all(_gone(int(p)) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pids if not _gone(int(p))] == []
    assert not os.path.exists(rundir)  # the last child out cleaned up for its parent
    assert _segments_of([run_id]) == set()
