"""Partition workers as real processes: the same objective and gradients as refimpl (and bit for
bit as the one-process tile executor), a 169-process replica, a killed partition named within a
bounded time with nothing leaked, and injected latency visible in the step and the trace."""

import dataclasses
import json
import os
import time

import numpy as np
import pytest

from refimpl.config import load_config
from refimpl.model import init_params, model_backward, model_forward
from simcluster import Crash, FaultPlan, LinkModel, WorkerDied
from simcluster.coordinator import Coordinator, StepFailed
from simcluster.partition import SetWeights
from simcluster.tiled import plan_for, split_params, tiled_step
from simcluster.tiles import routes
from simcluster.shm import SHM_DIR, segment_prefix

TOL = 1e-10


def _segments_of(run_ids):
    prefixes = tuple(segment_prefix(r) for r in run_ids)
    return sorted(n for n in os.listdir(SHM_DIR) if prefixes and n.startswith(prefixes))


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


class Watch:
    """What a test started: its runs' shared-memory segments and processes must all be gone."""

    def __init__(self):
        self.run_ids, self.pids = [], []

    def extend(self, c):
        self.run_ids.append(c.group.run_id)
        self.pids.extend(r.pid for r in c.group.ready.values())


@pytest.fixture
def no_leaks():
    """Fails the test if its coordinators leave shared-memory segments or live partition
    processes behind (only this test's runs are looked at: other jobs may share /dev/shm)."""
    watch = Watch()
    yield watch
    assert _segments_of(watch.run_ids) == []
    deadline = time.monotonic() + 5
    while not all(_gone(p) for p in watch.pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in watch.pids if not _gone(p)] == []


def problem(cfg, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    params = init_params(cfg, rng)
    x = rng.standard_normal((batch, cfg.channels, cfg.image_size, cfg.image_size))
    return params, x


def reference(cfg, params, x):
    J, cache = model_forward(x, params, cfg)
    return float(J), model_backward(cache, cfg)[1]


def assert_close_to_refimpl(out, J, grads):
    assert abs(out.J - J) <= TOL * max(1.0, abs(J))
    assert list(out.grads) == list(grads)
    for key, g in grads.items():
        assert np.abs(out.grads[key] - g).max() <= TOL * max(1.0, float(np.abs(g).max())), key


@pytest.mark.slow
def test_169_processes_equal_refimpl(no_leaks):
    cfg = load_config("tiny")
    params, x = problem(cfg, batch=2)
    with Coordinator(cfg, (13, 13), trace=False, timeout=120) as c:
        no_leaks.extend(c)
        c.set_params(params)
        step = c.step(x)
    assert_close_to_refimpl(step.output, *reference(cfg, params, x))
    oracle = tiled_step(plan_for(cfg, (13, 13)), cfg, params, x)
    assert sum(p["messages"] for p in step.partitions) == oracle.traffic["messages"]
    assert step.halo_bytes == oracle.traffic["bytes"]


@pytest.mark.parametrize("grid, overrides", [((2, 2), {}), ((3, 2), {}),
                                             ((3, 2), {"gradient": "local", "tied": True})])
def test_processes_equal_refimpl_and_the_one_process_oracle(grid, overrides, no_leaks):
    cfg = dataclasses.replace(load_config("tiny"), **overrides)
    params, x = problem(cfg)
    with Coordinator(cfg, grid, trace=False, timeout=60) as c:
        no_leaks.extend(c)
        c.set_params(params)
        first = c.step(x)
        params2, x2 = problem(cfg, seed=1)  # new weights and a new minibatch on the same group
        c.set_params(params2)
        second = c.step(x2)
        with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 16, 16\)"):
            c.step(x[:, :, :8])
        memory = c.memory()  # asked between steps; the next step is unaffected
        third = c.step(x2)
    for (p, xx), step in (((params, x), first), ((params2, x2), second)):
        assert_close_to_refimpl(step.output, *reference(cfg, p, xx))
        oracle = tiled_step(plan_for(cfg, grid), cfg, p, xx)  # same pieces, same sums, same order
        assert step.output.J == oracle.J
        for key in oracle.grads:
            np.testing.assert_array_equal(step.output.grads[key], oracle.grads[key])
    assert all(p["compute_s"] > 0 and p["peak_rss_kib"] > 0 for p in first.partitions)
    assert len(memory) == len(first.partitions)
    assert all(0 < m["pss_kib"] <= m["peak_rss_kib"] for m in memory)  # PSS splits shared pages
    assert third.output.J == second.output.J


def test_halos_larger_than_the_socket_buffer_do_not_deadlock(no_leaks):
    # every partition sends all its pieces before it receives any: with pieces bigger than a
    # socket buffer (~208 KiB) that deadlocks on blocking pipes; the transport's sends never
    # block. Every array travels inline on the sockets here (no shared memory).
    cfg = load_config("tiny")
    params, x = problem(cfg, batch=600)
    oracle = tiled_step(plan_for(cfg, (2, 1)), cfg, params, x)
    with Coordinator(cfg, (2, 1), trace=False, timeout=120, shm_threshold=1 << 40) as c:
        no_leaks.extend(c)
        c.set_params(params)
        step = c.step(x)
    plan = plan_for(cfg, (2, 1))
    channels = [cfg.channels] + [st.maps for st in cfg.stages]
    biggest = max(cells.area * (channels[s] if region == "filter" else channels[s + 1])
                  for t in range(2) for s in range(3) for region in ("filter", "pool", "lcn")
                  for cells in routes(plan, t, s, region).give.values()) * 600 * 8
    assert biggest > 256 * 1024  # bytes of the largest piece: more than a socket buffer holds
    assert step.output.J == oracle.J
    for key in oracle.grads:
        np.testing.assert_array_equal(step.output.grads[key], oracle.grads[key])


def test_step_needs_params_first():
    c = Coordinator(load_config("tiny"), (2, 2))  # not started: nothing to clean up
    with pytest.raises(RuntimeError, match="set_params"):
        c.step(np.zeros((1, 1, 16, 16)))


def test_a_failed_step_blames_the_killed_partition_not_the_survivors_that_left():
    """A survivor that loses a peer ends cleanly (exit code 0); if it is gone before the
    coordinator looks, only the killed one is named. With no failure, every dead one is."""
    from types import SimpleNamespace

    def proc(exitcode):
        return SimpleNamespace(exitcode=exitcode, is_alive=lambda: exitcode is None)

    c = Coordinator(load_config("tiny"), (2, 2))  # not started
    roster = {0: ("coordinator", 0), **{t + 1: ("partition", t) for t in range(4)}}
    c.group = SimpleNamespace(roster=roster, procs={1: proc(None), 2: proc(0), 3: proc(None), 4: proc(-9)})
    assert c._dead() == [3]
    c.group.procs[4] = proc(0)
    assert c._dead() == [1, 3]


def test_a_killed_partition_fails_the_step_naming_it(no_leaks):
    cfg = load_config("tiny")
    params, x = problem(cfg)
    faults = FaultPlan(crashes=(Crash(("partition", 3), after_sends=2),))  # dies mid-exchange
    c = Coordinator(cfg, (2, 2), faults=faults, trace=False, timeout=60)
    with pytest.raises(StepFailed) as info:
        with c:
            no_leaks.extend(c)
            c.set_params(params)
            c.step(x)
    # found through the process sentinel, not by running out the 60 s timeout
    assert isinstance(info.value.__cause__, WorkerDied)
    assert "partition 3" in str(info.value) and "SIGKILL" in str(info.value)
    assert info.value.partitions == [3]  # (and no_leaks: every survivor was stopped)


def test_a_partition_that_raises_fails_the_step_with_its_traceback(no_leaks):
    cfg = load_config("tiny")
    params, x = problem(cfg)
    c = Coordinator(cfg, (2, 1), trace=False, timeout=60)
    with pytest.raises(StepFailed) as info:
        with c:
            no_leaks.extend(c)
            c.set_params(params)
            mine = split_params(c.plan, cfg, params)[0]
            two = {k: np.concatenate([w, w], axis=3) for k, w in mine.items()}
            c.group.send(("partition", 0), SetWeights(two))
            c.step(x)  # partition 0's weights now read 2 input channels where the image has 1
    assert info.value.partitions == [0]
    assert "partition 0 raised" in str(info.value) and "ValueError" in str(info.value)
    assert "remote traceback" in str(info.value)  # the child's own traceback travelled back


def test_latency_on_one_link_shows_in_the_step_and_the_trace(tmp_path, no_leaks):
    cfg = load_config("tiny")
    params, x = problem(cfg)
    latency = 0.2
    faults = FaultPlan(links={(("partition", 0), ("partition", 1)): LinkModel(latency=latency)})
    with Coordinator(cfg, (2, 2), faults=faults, trace=True, timeout=60) as c:
        no_leaks.extend(c)
        c.set_params(params)
        step = c.step(x)
    assert_close_to_refimpl(step.output, *reference(cfg, params, x))
    # partition 1 waits at least one latency for each of its exchanges with a piece from
    # partition 0 (they follow one another), and so does the step
    assert step.partitions[1]["wait_s"] >= latency
    assert step.seconds >= latency
    path = tmp_path / "trace.json"
    c.write_trace(path)
    events = json.loads(path.read_text())["traceEvents"]
    node = {e["args"]["name"]: e["pid"] for e in events if e["name"] == "process_name"}
    recvs = [e for e in events if e.get("cat") == "recv" and e["pid"] == node["partition 1"]
             and e["name"].startswith("recv Halo")]
    slow = [e for e in recvs if e["args"]["peer"] == "partition 0"]
    fast = [e for e in recvs if e["args"]["peer"] != "partition 0"]
    assert slow and fast
    assert all(e["args"]["delay_ms"] == pytest.approx(latency * 1e3) for e in slow)
    assert all(e["args"]["delay_ms"] == 0.0 for e in fast)
    assert any(e["name"] == "tile compute" for e in events)


def test_step_inputs_go_to_the_busiest_partitions_first(tmp_path, no_leaks):
    """On tiny's 3x2 grid the middle row has the most work, then the bottom, then the top (by
    the plan's flops); the coordinator sends the step's inputs in that order, ties by rank."""
    from simcluster.plan_report import partition_flops

    cfg = load_config("tiny")
    params, x = problem(cfg)
    with Coordinator(cfg, (3, 2), trace=True, timeout=60) as c:
        no_leaks.extend(c)
        work = [partition_flops(c.plan, t) for t in range(6)]
        assert work[2] == work[3] > work[4] == work[5] > work[0] == work[1]  # what makes this test bite
        assert c.send_order == [2, 3, 4, 5, 0, 1]
        c.set_params(params)
        c.step(x)
    path = tmp_path / "trace.json"
    c.write_trace(path)
    events = json.loads(path.read_text())["traceEvents"]
    sends = sorted((e for e in events if e.get("name", "").startswith("send StepInput")),
                   key=lambda e: e["ts"])
    assert [e["args"]["peer"] for e in sends] == [f"partition {t}" for t in c.send_order]


# ---------------------------------------------------------------------------------------------
# The commands: catneuron plan, catneuron cluster step | check
# ---------------------------------------------------------------------------------------------


def test_cli_plan_prints_the_table_and_draws_the_png(tmp_path, capsys):
    from catneuron.cli import main

    png = tmp_path / "tiling.png"
    assert main(["plan", "--config", "tiny", "--grid", "3x2", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "communication/computation" in out and "6 partitions" in out
    assert len(out.splitlines()) >= 6 + 3  # header, a row per partition, totals
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plan", "--config", "tiny", "--grid", "3y2"]) == 2
    assert "grid must look like" in capsys.readouterr().err


def test_cli_cluster_check_passes_in_float64_and_fails_above_a_tolerance(capsys):
    from catneuron.cli import main

    base = ["cluster", "check", "--grid", "2x2", "--config", "tiny", "--batch", "3"]
    assert main(base + ["--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "cluster check: pass" in out and "grad stage2.W2" in out
    # float32 partial sums in another order differ by ~1e-7: far above 1e-12
    assert main(base + ["--dtype", "float32", "--tol", "1e-12"]) == 1
    assert "cluster check: FAIL" in capsys.readouterr().out


def test_cli_cluster_step_reports_times_bytes_and_memory(tmp_path, capsys):
    from catneuron.cli import main

    trace = tmp_path / "trace.json"
    assert main(["cluster", "step", "--grid", "2x2", "--config", "tiny", "--batch", "2",
                 "--trace", str(trace)]) == 0
    out = capsys.readouterr().out
    for words in ("start-up:", "step 1:", "bytes moved:", "halo messages", "peak memory:"):
        assert words in out
    assert any(e.get("name") == "tile compute" for e in json.loads(trace.read_text())["traceEvents"])
