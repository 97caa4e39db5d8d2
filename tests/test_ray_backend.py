"""The Ray backend (simcluster.ray_backend): the same roles, messages and checkpoints on Ray
actors give the same numbers as refimpl and as the process backend. Skipped without Ray."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from refimpl.config import load_config  # noqa: E402
from refimpl.model import flatten, init_params, model_backward, model_forward  # noqa: E402
from refimpl.train import train  # noqa: E402
from simcluster import ray_backend  # noqa: E402
from simcluster.coordinator import Coordinator, StepFailed  # noqa: E402
from simcluster.downpour import DownpourConfig, params_sha256, run_downpour  # noqa: E402
from simcluster.faults import Crash, FaultPlan, LinkModel  # noqa: E402
from simcluster.tiled import plan_for, tiled_step  # noqa: E402
from helpers import deadline  # noqa: E402

FAST = dict(retry_timeout=0.1, max_retries=50)
TOL = 1e-10




@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the whole file (starting one takes seconds), stopped at the end."""
    with deadline(60):
        ray_backend.init()
    yield
    ray_backend.shutdown()
    assert not ray.is_initialized()


@pytest.fixture
def groups(monkeypatch):
    """Records every RayGroup the test makes; afterwards none of their actors may be alive."""
    made = []
    start = ray_backend.RayGroup.start

    def recording(self):
        made.append(self)
        return start(self)

    monkeypatch.setattr(ray_backend.RayGroup, "start", recording)
    yield made
    assert made
    for g in made:
        for node, (role, rank) in g.roster.items():
            if node:
                with pytest.raises(ValueError):  # killed: its name is free again
                    ray.get_actor(f"cn{g.run_id}-{role}-{rank}")


def test_import_simcluster_does_not_import_ray():
    code = "import sys, simcluster, simcluster.coordinator, simcluster.downpour; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_unknown_backend_and_a_stray_address_are_clear_errors():
    with pytest.raises(ValueError, match="backend must be one of"):
        Coordinator(load_config("tiny"), (1, 2), backend="mpi")
    with pytest.raises(ValueError, match="address is for backend='ray'"):
        Coordinator(load_config("tiny"), (1, 2), address="auto")


@pytest.mark.slow
def test_partitions_on_ray_equal_refimpl_and_the_one_process_oracle(groups):
    cfg = load_config("tiny")  # float64
    rng = np.random.default_rng(0)
    params = init_params(cfg, rng)
    x = rng.standard_normal((3, cfg.channels, cfg.image_size, cfg.image_size))
    J, cache = model_forward(x, params, cfg)
    grads = model_backward(cache, cfg)[1]
    with deadline(60), Coordinator(cfg, (2, 2), trace=False, timeout=30, backend="ray") as c:
        c.set_params(params)
        step = c.step(x)
        second = c.step(x)  # the same group again: nothing left over from the first step
    assert abs(step.output.J - J) <= TOL * max(1.0, abs(J))
    assert list(step.output.grads) == list(grads)
    for key, g in grads.items():
        assert np.abs(step.output.grads[key] - g).max() <= TOL * max(1.0, float(np.abs(g).max())), key
    oracle = tiled_step(plan_for(cfg, (2, 2)), cfg, params, x)  # same pieces, same order of sums
    for out in (step.output, second.output):
        assert out.J == oracle.J
        for key in oracle.grads:
            np.testing.assert_array_equal(out.grads[key], oracle.grads[key])
    assert sum(p["messages"] for p in step.partitions) == oracle.traffic["messages"]
    assert step.halo_bytes == oracle.traffic["bytes"]


@pytest.mark.slow
def test_a_killed_partition_actor_fails_the_step_naming_it(groups):
    cfg = load_config("tiny")
    rng = np.random.default_rng(0)
    params = init_params(cfg, rng)
    x = rng.standard_normal((3, cfg.channels, cfg.image_size, cfg.image_size))
    faults = FaultPlan(crashes=(Crash(("partition", 3), after_sends=2),))  # dies mid-exchange
    with deadline(60), Coordinator(cfg, (2, 2), trace=False, timeout=30, backend="ray",
                                   faults=faults) as c:
        c.set_params(params)
        with pytest.raises(StepFailed, match=r"partition 3 \(node 4, actor on [\d.]+\) died") as err:
            c.step(x)
    assert err.value.partitions == [3]


def tiny(**train_overrides):
    cfg = load_config("tiny")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=4, **train_overrides))


def frames(cfg, n=60, seed=1):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, cfg.channels, cfg.image_size, cfg.image_size))
    return base.cumsum(axis=3)


@pytest.mark.slow
def test_one_replica_on_ray_equals_sequential_training(groups):
    cfg = tiny(optimizer="adagrad", lr=0.05)
    x = frames(cfg, n=40)
    ref = flatten(train(cfg, x, steps=6, progress=False).params, cfg)
    with deadline(60):
        res = run_downpour(cfg, x, DownpourConfig(replicas=1, shards=3, steps=6, **FAST),
                           backend="ray")
    assert res.versions == [6, 6, 6]
    assert res.sha256 == params_sha256(ref)  # bit for bit
    assert res.transport["bytes_shm"] > 0  # the parameters went through the object store


@pytest.mark.slow
def test_a_killed_shard_actor_restarts_from_its_checkpoint(groups):
    """Ray restarts the killed shard's actor (a fresh constructor): its state comes back from
    checkpoint + log only, nothing acknowledged is lost, and the run ends bit-identical to the
    fault-free run of the process backend."""
    cfg = tiny()
    x = frames(cfg)
    kw = dict(replicas=3, shards=2, steps=8, deterministic=True, **FAST)
    with deadline(90):
        clean = run_downpour(cfg, x, DownpourConfig(**kw))  # process backend
        shard = run_downpour(cfg, x, DownpourConfig(max_restarts=1, shard_checkpoints=True,
                                                    checkpoint_every=4, **kw),
                             faults=FaultPlan(crashes=(Crash(("shard", 1), at_step=10),)),
                             backend="ray")
    (e,) = shard.events
    assert e["node"] == "shard 1" and "died" in e["how"] and e["restart_s"] > 0
    assert e["restored_version"] == 10 and e["lost"] == 0
    assert e["restored_version"] == e["checkpoint_version"] + e["replayed"]
    assert e["replayed"] > 0  # the log was replayed: the actor itself remembered nothing
    assert shard.sha256 == clean.sha256 and shard.versions == clean.versions == [24, 24]


@pytest.mark.slow
def test_sync_on_ray_with_drops_and_duplicates_equals_the_fault_free_process_run(groups):
    """The fault plan is applied by the Ray transport (drops, duplicates), and retries plus
    duplicate detection make the run exactly the fault-free one."""
    cfg = tiny()
    x = frames(cfg)
    kw = dict(replicas=2, shards=2, steps=5, mode="sync", **FAST)
    with deadline(90):
        clean = run_downpour(cfg, x, DownpourConfig(**kw))  # process backend
        noisy = run_downpour(cfg, x, DownpourConfig(**kw), backend="ray",
                             faults=FaultPlan(seed=3, default=LinkModel(drop=0.1, duplicate=0.1)))
    assert noisy.transport["dropped"] > 0 and noisy.transport["duplicated"] > 0
    assert noisy.sha256 == clean.sha256 and noisy.versions == clean.versions == [5, 5]


@pytest.mark.slow
def test_a_ray_group_keeps_order_per_link_moves_bulk_arrays_and_returns_errors(groups):
    from simcluster.demo_roles import echo, raiser
    from simcluster.group import RemoteError, Role
    from simcluster.messages import Ping, Pong

    big = np.arange(20000.0)  # 160 KB: through the object store; the small ones inline
    roles = [Role("echo", 0, echo), Role("raiser", 0, raiser, ("boom",))]
    with deadline(60), ray_backend.RayGroup(roles, trace=False) as g:
        with pytest.raises(RemoteError, match="raiser 0 .* raised ValueError: boom") as err:
            g.recv(30)
        assert "inner_step" in str(err.value)  # the actor's traceback came back as data
        for k in range(40):
            g.send(("echo", 0), Ping(k, big * k if k % 2 else k))
        got = [g.recv(30, where=lambda e: isinstance(e.body, Pong)).body for _ in range(40)]
    assert [p.token for p in got] == list(range(40))  # the order they were sent in
    for p in got[1::2]:
        np.testing.assert_array_equal(p.payload, big * p.token)
    assert g.byes[1].stats["bytes_shm"] == 20 * big.nbytes  # the echo's big Pongs: the store
