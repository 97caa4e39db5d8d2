"""The transport in one process: two endpoints, arrays inline and through shared memory, faults
from a seeded plan, non-blocking sends, torn frames, timeouts, and no leaked segments."""

import os
import shutil
import socket
import struct
import tempfile
import threading
import time

import numpy as np
import pytest

from simcluster.faults import Crash, Dist, FaultPlan, LinkModel, LinkState
from simcluster.messages import Ping, Tensor
from simcluster.transport import (SHM_DIR, PeerUnreachable, RecvTimeout, Transport, segment_prefix,
                                  socket_path, sweep)


def _segments(run_id):
    return [n for n in os.listdir(SHM_DIR) if n.startswith(segment_prefix(run_id))]


@pytest.fixture
def pair():
    """Two transports (nodes 0 and 1) in this process; a fresh run id per test."""
    made = []

    def make(faults=None, shm_threshold=64 * 1024):
        rundir = tempfile.mkdtemp(prefix="simcluster-test-")
        run_id = os.urandom(4).hex()
        a = Transport(0, rundir, run_id, faults=faults, shm_threshold=shm_threshold)
        b = Transport(1, rundir, run_id, faults=faults, shm_threshold=shm_threshold)
        made.append((a, b, run_id, rundir))
        return a, b

    yield make
    for a, b, run_id, rundir in made:
        a.close(0.1)
        b.close(0.1)
        sweep(run_id)
        shutil.rmtree(rundir)


def test_arrays_small_and_large_arrive_intact_and_segments_are_unlinked(pair):
    a, b = pair()
    rng = np.random.default_rng(0)
    small = rng.standard_normal((4, 5))  # 160 bytes: inline
    big = rng.standard_normal((300, 400)).astype(np.float32)  # 480 KB: shared memory
    grads = {"W1": rng.standard_normal((2, 2, 3, 1, 5, 5)), "W2": np.arange(10)}
    a.send(1, Tensor("x", 7, {"small": small, "big": big, "grads": grads, "list": [big[:2], 3]}))
    assert _segments(a.run_id)  # parked until read
    env = b.recv(5.0)
    got = env.body.data
    assert env.src == 0 and env.body.step == 7
    np.testing.assert_array_equal(got["small"], small)
    np.testing.assert_array_equal(got["big"], big)
    assert got["big"].dtype == np.float32 and got["big"].flags.writeable
    np.testing.assert_array_equal(got["grads"]["W1"], grads["W1"])
    np.testing.assert_array_equal(got["list"][0], big[:2])
    assert a.stats["bytes_shm"] == big.nbytes + grads["W1"].nbytes * (grads["W1"].nbytes >= 65536)
    assert len(_segments(a.run_id)) == 1  # one pooled slot, kept for reuse


def test_a_message_that_fails_to_pickle_leaves_the_next_one_intact(pair):
    """Each transport reuses one pickler and one buffer: a failed send must not leak its
    half-written frame or its memo into the next message."""
    a, b = pair()
    shared = np.arange(6.0)
    with pytest.raises(Exception):
        a.send(1, Tensor("bad", 1, [shared, lambda: None]))  # a lambda does not pickle
    a.send(1, Tensor("good", 2, [shared, shared]))  # the same array twice: memo at work
    env = b.recv(5.0)
    assert env.body.tag == "good" and env.body.step == 2
    np.testing.assert_array_equal(env.body.data[0], shared)
    np.testing.assert_array_equal(env.body.data[1], shared)
    with pytest.raises(RecvTimeout):
        b.recv(0.2)  # nothing of the failed send arrived


def test_pooled_slots_are_reused_only_once_the_received_array_is_freed(pair):
    a, b = pair()
    x = np.arange(100_000, dtype=np.float64)  # 800 KB
    a.send(1, Tensor("x", 0, x))
    first = b.recv(5.0).body.data
    view = first[10:20]  # a view keeps the slot busy even when `first` is dropped
    del first
    a.send(1, Tensor("x", 1, x + 1))  # the slot is busy: a second one is made
    second = b.recv(5.0).body.data
    assert len(_segments(a.run_id)) == 2
    np.testing.assert_array_equal(view, x[10:20])  # not overwritten
    np.testing.assert_array_equal(second, x + 1)
    del view, second  # both slots free again
    for k in range(2, 6):
        a.send(1, Tensor("x", k, x + k))
        np.testing.assert_array_equal(b.recv(5.0).body.data, x + k)
    assert len(_segments(a.run_id)) == 2  # reused, never grown


def test_a_full_pool_retires_small_free_slots_and_falls_back_to_one_off_segments(pair):
    a, b = pair()
    a.pool.max_per_link = 2
    for k, n in enumerate([10_000, 20_000, 300_000]):  # 80 KB, 160 KB, then 2.4 MB
        a.send(1, Tensor("x", k, np.full(n, float(k))))
        assert b.recv(5.0).body.data.sum() == k * n
    assert len(a.pool.slots[1]) == 2 and len(_segments(a.run_id)) == 2  # the 128 KB slot retired
    held = [b.recv(5.0).body.data for _ in [a.send(1, Tensor("x", k, np.ones(300_000))) for k in range(3)]]
    assert [h.sum() for h in held] == [300_000.0] * 3  # the third went through a one-off segment
    assert len(_segments(a.run_id)) == 2  # and the receiver unlinked that one at once


def test_sends_never_block_and_large_inline_messages_get_through(pair):
    # 20 x 400 KB inline (no shared memory) is far beyond the ~208 KiB socket buffer: send must
    # return at once and the bytes go out while both sides are in the transport.
    a, b = pair(shm_threshold=1 << 40)
    block = np.arange(50_000, dtype=np.float64)
    for k in range(20):
        a.send(1, Tensor("h", k, block + k))
    assert any(o.pending for o in a._out.values())  # queued in user space, not blocking
    got = []
    reader = threading.Thread(target=lambda: got.extend(b.recv(10.0).body for _ in range(20)))
    reader.start()
    assert a.drain_outbox(10.0)
    reader.join(10.0)
    assert [m.step for m in got] == list(range(20))
    assert all(np.array_equal(m.data, block + m.step) for m in got)


def test_recv_times_out_and_selective_receive_keeps_the_rest(pair):
    a, b = pair()
    with pytest.raises(RecvTimeout, match="no message within 0.05 s"):
        b.recv(0.05)
    a.send(1, Tensor("x", 1, None))
    a.send(1, Tensor("y", 2, None))
    assert b.recv(2.0, where=lambda e: e.body.tag == "y").body.step == 2
    assert b.recv(2.0).body.step == 1
    with pytest.raises(ValueError, match="timeout must be"):
        b.recv(-1)


def test_torn_frame_from_a_dead_writer_blocks_nobody(pair):
    a, b = pair()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(socket_path(b.rundir, 1))
    s.sendall(struct.pack("!Q", 1000) + b"x" * 10)  # promises 1000 bytes, sends 10, dies
    s.close()
    with pytest.raises(RecvTimeout):
        b.recv(0.1)
    a.send(1, Ping(5))
    assert b.recv(2.0).body == Ping(5)
    assert len(b._in) == 1  # the torn connection was dropped


def test_unreachable_peer_is_named(pair):
    a, b = pair()
    with pytest.raises(PeerUnreachable, match="cannot reach the inbox of 9"):
        a.send(9, Ping(1))


def _run_faulty(pair, plan, n=200):
    a, b = pair(faults=plan)
    for k in range(n):
        a.send(1, Tensor("k", k, None))
    got = []
    while True:
        try:
            got.append(b.recv(0.3).body.step)
        except RecvTimeout:
            return got, dict(a.stats)


def test_drops_and_duplicates_follow_the_seed(pair):
    plan = FaultPlan(seed=3, default=LinkModel(drop=0.2, duplicate=0.1))
    got1, stats1 = _run_faulty(pair, plan)
    got2, _ = _run_faulty(pair, plan)
    got3, _ = _run_faulty(pair, FaultPlan(seed=4, default=LinkModel(drop=0.2, duplicate=0.1)))
    assert sorted(got1) == sorted(got2)  # same decisions
    assert sorted(got1) != sorted(got3)
    counts = np.bincount(got1, minlength=200)
    assert (counts == 0).sum() == stats1["dropped"] > 0
    assert (counts == 2).sum() == stats1["duplicated"] > 0
    assert counts.max() <= 2


def test_reordering_holds_messages_back(pair):
    plan = FaultPlan(seed=1, default=LinkModel(reorder=0.3, reorder_delay=0.2))
    got, _ = _run_faulty(pair, plan, n=50)
    assert sorted(got) == list(range(50))  # nothing lost
    assert got != sorted(got)  # but not in order
    late = got[got.index(max(got)) + 1:]
    assert late == sorted(late) and len(late) > 0  # the held-back ones come last, in order


def test_latency_and_bandwidth_delay_delivery(pair):
    slow = LinkModel(latency=0.05, bandwidth=10e6)
    a, b = pair(faults=FaultPlan(links={(0, 1): slow}))
    t0 = time.monotonic()
    a.send(1, Tensor("big", 0, np.zeros(125_000)))  # 1 MB at 10 MB/s = 0.1 s, + 0.05 s latency
    env = b.recv(5.0)
    assert time.monotonic() - t0 >= 0.15
    assert env.deliver_at - env.sent_at == pytest.approx(0.05 + (1_000_000 + 256) / 10e6)


def test_link_draws_depend_only_on_seed_and_link():
    plan = FaultPlan(seed=7, default=LinkModel(latency=Dist("lognormal", 0.01, 0.5)))
    d1 = [LinkState(plan, 2, 3).decide(0.0, 0)[0] for _ in range(1)]
    s1, s2, s3 = LinkState(plan, 2, 3), LinkState(plan, 2, 3), LinkState(plan, 3, 2)
    seq1 = [s1.decide(100.0 * i, 0)[0] - 100.0 * i for i in range(5)]
    seq2 = [s2.decide(100.0 * i, 0)[0] - 100.0 * i for i in range(5)]
    seq3 = [s3.decide(100.0 * i, 0)[0] - 100.0 * i for i in range(5)]
    assert seq1 == seq2 and seq1 != seq3 and d1[0] == seq1[0]
    assert len(set(seq1)) == 5  # drawn per message


def test_fault_plan_precedence_and_validation():
    a, b = LinkModel(latency=0.1), LinkModel(drop=0.5)
    plan = FaultPlan(links={(1, 2): a, (1, "*"): b})
    assert plan.model(1, 2) is a and plan.model(1, 3) is b and plan.model(2, 1) == LinkModel()
    with pytest.raises(ValueError, match="drop must be a probability"):
        LinkModel(drop=1.5)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        LinkModel(bandwidth=0)
    with pytest.raises(ValueError, match="Dist kind must be one of"):
        Dist("gamma", 1.0)
    with pytest.raises(ValueError, match="uniform Dist needs b >= a"):
        Dist("uniform", 2.0, 1.0)
    with pytest.raises(ValueError, match="exactly one of after_sends or at_step"):
        Crash(1)
    with pytest.raises(ValueError, match="seed must be an int"):
        FaultPlan(seed=-1)
    with pytest.raises(TypeError, match="must be a LinkModel"):
        FaultPlan(links={(0, 1): 0.5})


def test_sweep_removes_segments_nobody_will_read(pair):
    a, _ = pair()
    # as if the readers died before reading (or the writer died before sending the references)
    to_1, to_2 = a.pool.park(np.ones(100_000), 1), a.pool.park(np.ones(100_000), 2)
    assert sorted(_segments(a.run_id)) == sorted([to_1.name, to_2.name])
    assert sweep(a.run_id, reader=2) == [to_2.name]  # reader 2 died: only its segment goes
    assert sweep(a.run_id) == [to_1.name]
    assert _segments(a.run_id) == []
