"""Placement plans: --gpus parsing, round robin over replicas and partitions, shards on the host
by default, the pinned environment of each child, and a real spawned child that sees its pin."""

import os
import sys
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpu.placement import (child_env, mp_context, parse_gpus, pin_env, plan, processes_per_gpu,
                           run_pinned)


def test_parse_gpus():
    assert parse_gpus("0,1,3") == (0, 1, 3)
    assert parse_gpus(" 2 , 0 ") == (2, 0)
    assert parse_gpus("") == () and parse_gpus(None) == () and parse_gpus([1, 0]) == (1, 0)


@pytest.mark.parametrize("bad", ["a", "0,,1", "-1", "0,1.5", "1,1", 3, [True]])
def test_bad_gpus_name_the_flag(bad):
    with pytest.raises(ValueError, match="--gpus"):
        parse_gpus(bad)


def test_two_replicas_of_two_partitions_on_two_gpus():
    a = plan("0,1", replicas=2, partitions=2, shards=3)
    workers = [(x.replica, x.partition, x.gpu, x.device) for x in a if x.role == "worker"]
    assert workers == [(0, 0, 0, "cuda"), (0, 1, 1, "cuda"), (1, 0, 0, "cuda"), (1, 1, 1, "cuda")]
    shards = [(x.shard, x.gpu, x.device) for x in a if x.role == "shard"]
    assert shards == [(0, None, "cpu"), (1, None, "cpu"), (2, None, "cpu")]
    assert [x.name for x in a][:2] == ["replica0/partition0", "replica0/partition1"]


def test_shards_on_gpu_continue_the_cycle():
    a = plan("4,7,9", replicas=1, partitions=2, shards=2, shards_on_gpu=True)
    assert [x.gpu for x in a] == [4, 7, 9, 4]
    with pytest.raises(ValueError, match="shards_on_gpu needs GPUs"):
        plan("", replicas=1, partitions=1, shards=1, shards_on_gpu=True)


def test_without_gpus_everything_is_on_the_host():
    a = plan(None, replicas=2, partitions=1, shards=1, host_device="strict")
    assert [(x.gpu, x.device) for x in a] == [(None, "strict"), (None, "strict"), (None, "cpu")]


@pytest.mark.parametrize("kwargs, match", [
    (dict(replicas=0, partitions=1, shards=0), "replicas must be an int >= 1"),
    (dict(replicas=1, partitions=1.0, shards=0), "partitions must be an int >= 1"),
    (dict(replicas=1, partitions=1, shards=-1), "shards must be an int >= 0"),
    (dict(replicas=1, partitions=1, shards=0, host_device="cuda"), "host_device"),
])
def test_bad_plan_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan("0", **kwargs)


@given(n_gpus=st.integers(1, 8), replicas=st.integers(1, 6), partitions=st.integers(1, 6),
       shards=st.integers(0, 4))
def test_round_robin_properties(n_gpus, replicas, partitions, shards):
    ids = tuple(range(10, 10 + n_gpus))
    a = plan(ids, replicas=replicas, partitions=partitions, shards=shards)
    workers = [x for x in a if x.role == "worker"]
    assert len(workers) == replicas * partitions and len(a) == len(workers) + shards
    assert [x.rank for x in workers] == list(range(len(workers)))
    assert all(x.gpu in ids for x in workers)
    # balanced: the busiest GPU carries at most one worker more than the idlest
    load = processes_per_gpu(workers)
    counts = [load.get(g, 0) for g in ids]
    assert max(counts) - min(counts) <= 1
    # a replica's partitions are on distinct GPUs whenever there are enough GPUs
    for r in range(replicas):
        gpus = [x.gpu for x in workers if x.replica == r]
        assert len(set(gpus)) == min(partitions, n_gpus)
    assert all(x.gpu is None for x in a if x.role == "shard")


def test_pin_env_and_child_env():
    gpu_worker, host_shard = plan("3", replicas=1, partitions=1, shards=1)
    assert pin_env(gpu_worker) == {"CUDA_VISIBLE_DEVICES": "3", "CATNEURON_DEVICE": "cuda"}
    assert pin_env(host_shard) == {"CUDA_VISIBLE_DEVICES": "", "CATNEURON_DEVICE": "cpu"}
    env = child_env(gpu_worker, base={"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "3", "CATNEURON_DEVICE": "cuda"}


def test_run_pinned_sets_the_environment_then_runs(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("CATNEURON_DEVICE", "cpu")
    got = run_pinned({"CUDA_VISIBLE_DEVICES": "1", "CATNEURON_DEVICE": "cuda"},
                     lambda k: (os.environ["CUDA_VISIBLE_DEVICES"], os.environ[k]), "CATNEURON_DEVICE")
    assert got == ("1", "cuda")


def test_run_pinned_refuses_after_cupy_was_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    with pytest.raises(RuntimeError, match="imported in this process before it was pinned"):
        run_pinned({"CUDA_VISIBLE_DEVICES": "0"}, print)


def test_a_spawned_child_sees_its_pin():
    worker = plan("5", replicas=1, partitions=1, shards=0)[0]
    with mp_context("spawn").Pool(1) as pool:
        seen = pool.apply(run_pinned, (pin_env(worker), os.getenv, "CUDA_VISIBLE_DEVICES"))
    assert seen == "5" and os.environ.get("CUDA_VISIBLE_DEVICES") != "5"


def test_fork_is_refused():
    with pytest.raises(ValueError, match="never 'fork'"):
        mp_context("fork")
