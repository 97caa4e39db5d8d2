"""Downpour replicas on a device (issue 8): the gradient on the device, everything else on the host.

A replica with ``device="strict"`` (the CuPy stand-in, which raises on any implicit host <->
device conversion) uploads its cached parameters and minibatch, computes refimpl's gradient on
the device and downloads it before accumulating and pushing; Params and Push refuse device
arrays. Whole runs on the stand-in equal the CPU runs bit for bit; ``--gpus 0,1`` deals 3
replicas round robin over the GPUs with the 2 shards pinned to the host; ``cuda`` without a GPU
is a one-line error before any process starts.
"""

import contextlib
import dataclasses
import functools

import numpy as np
import pytest

import gpu.device
import gpu.strict
from catneuron.cli import main
from gpu.device import ENV_VAR, DeviceUnavailable
from gpu.placement import run_pinned
from gpu.testing import cuda_available
from refimpl.checkpoint import restore_rng
from refimpl.config import load_config
from simcluster import downpour, replica
from simcluster.downpour import DownpourConfig, initial_state, run_downpour
from simcluster.ps import shard_main, shard_ranges
from simcluster.ps_messages import Params, Push
from simcluster.replica import Replica, ReplicaSpec, refimpl_gradient, replica_main

FAST = dict(retry_timeout=0.1, max_retries=50)


def tiny():
    cfg = load_config("tiny")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=4))


def frames(cfg, n=24, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, cfg.channels, cfg.image_size, cfg.image_size)).cumsum(axis=3)


# ---------------------------------------------------------------------------------------------
# One replica in this process: where each array lives
# ---------------------------------------------------------------------------------------------


class _Ctx:
    """Just what Replica.__init__ and Replica.compute use of a process context."""

    def node_of(self, role, rank):
        return 1 + rank

    def span(self, name, **kw):
        return contextlib.nullcontext()


def test_a_replica_on_the_stand_in_computes_on_the_device_and_keeps_host_arrays():
    cfg = tiny()
    data = frames(cfg, n=10)
    vec, (state,) = initial_state(cfg, 1)
    seen = []

    def spy(cfg_, w, x):  # the gradient hook: must be handed device arrays
        seen.append((type(w), type(x)))
        return refimpl_gradient(cfg_, w, x)

    spec = ReplicaSpec(0, cfg, data, state, tuple(shard_ranges(vec.shape[0], 2)), steps=1,
                       gradient=spy, device="strict")
    rep = Replica(_Ctx(), spec)
    rep.vec[:] = vec  # as a fetch leaves it
    rep.compute()
    assert seen == [(gpu.strict.StrictArray, gpu.strict.StrictArray)]
    assert type(rep.vec) is np.ndarray and type(rep.acc) is np.ndarray  # host, for the messages
    idx = restore_rng(state).integers(0, data.shape[0], size=cfg.train.batch_size)
    J, g = refimpl_gradient(cfg, vec, data[idx])  # the same step on the host
    np.testing.assert_array_equal(rep.acc, g)
    assert rep.loss == J / cfg.train.batch_size


def test_a_forgotten_download_fails_on_the_stand_in(monkeypatch):
    # The test above can fail: drop the device -> host copy of the gradient. On the host nothing
    # changes; on the stand-in the host accumulator refuses the device gradient, as with CuPy.
    cfg = tiny()
    vec, (state,) = initial_state(cfg, 1)
    monkeypatch.setattr(replica, "to_numpy", lambda g: g)
    for device in ("cpu", "strict"):
        spec = ReplicaSpec(0, cfg, frames(cfg, n=10), state, ((0, vec.shape[0]),), steps=1,
                           device=device)
        rep = Replica(_Ctx(), spec)
        rep.vec[:] = vec
        if device == "cpu":
            rep.compute()
        else:
            with pytest.raises(TypeError, match="StrictArray"):  # numpy refuses the device array
                rep.compute()


def test_params_and_push_refuse_device_arrays():
    host = np.zeros(3)
    dev = gpu.strict.asarray(host)
    Params(0, 1, 0, host), Push(0, 1, 0, 0, host)  # fine
    with pytest.raises(TypeError, match=r"Params.values must be a host \(NumPy\) array"):
        Params(0, 1, 0, dev)
    with pytest.raises(TypeError, match=r"Push.grad must be a host \(NumPy\) array.*gpu.to_host"):
        Push(0, 1, 0, 0, dev)


# ---------------------------------------------------------------------------------------------
# Whole runs (processes): the stand-in equals the CPU bit for bit
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_deterministic_replica_on_the_stand_in_equals_the_cpu_run():
    cfg = tiny()
    x = frames(cfg)
    runs = {device: run_downpour(cfg, x, DownpourConfig(replicas=1, shards=2, steps=4,
                                                        deterministic=True, device=device, **FAST))
            for device in ("cpu", "strict")}
    assert runs["strict"].sha256 == runs["cpu"].sha256
    assert runs["strict"].versions == runs["cpu"].versions == [4, 4]
    assert [h["loss"] for h in runs["strict"].history] == [h["loss"] for h in runs["cpu"].history]


@pytest.mark.slow
def test_shards_pinned_to_the_host_run_as_before(monkeypatch):
    # what a cuda run does to its shards (run_pinned(CUDA_VISIBLE_DEVICES="") around shard_main),
    # here in real processes, with the replicas on the CPU
    host = {"CUDA_VISIBLE_DEVICES": "", ENV_VAR: "cpu"}
    asked = []

    def pins(device, gpus, replicas, shards):
        asked.append(device)
        return [None] * replicas + [host] * shards

    monkeypatch.setattr(downpour, "process_pins", pins)
    cfg = tiny()
    x = frames(cfg)
    dcfg = DownpourConfig(replicas=2, shards=2, steps=2, mode="sync", **FAST)
    pinned = run_downpour(cfg, x, dcfg)
    assert asked == ["cpu"]
    monkeypatch.undo()
    assert pinned.sha256 == run_downpour(cfg, x, dcfg).sha256 and pinned.versions == [2, 2]


@pytest.mark.slow
def test_two_sync_replicas_on_the_stand_in_equal_the_cpu_run():
    cfg = tiny()
    x = frames(cfg)
    cpu, dev = (run_downpour(cfg, x, DownpourConfig(replicas=2, shards=2, steps=3, mode="sync",
                                                    device=device, **FAST))
                for device in ("cpu", "strict"))
    assert dev.sha256 == cpu.sha256 and dev.versions == cpu.versions == [3, 3]
    np.testing.assert_array_equal(dev.vec, cpu.vec)
    assert list(dev.opt_state) == list(cpu.opt_state) and cpu.opt_state  # Adagrad's sums too
    for key, acc in cpu.opt_state.items():
        np.testing.assert_array_equal(dev.opt_state[key], acc, err_msg=key)


# ---------------------------------------------------------------------------------------------
# Placement: what run_downpour hands each process (no process is started)
# ---------------------------------------------------------------------------------------------


class _Started(Exception):
    pass


def _roles_of(monkeypatch, dcfg):
    """The roles run_downpour would start for ``dcfg`` (the process group is replaced)."""
    roles = []

    def group(backend, r, **kw):
        roles.extend(r)
        raise _Started

    monkeypatch.setattr(downpour, "make_group", group)
    with pytest.raises(_Started):
        run_downpour(tiny(), frames(tiny(), n=6), dcfg)
    return roles


def test_gpus_0_1_deal_three_replicas_round_robin_and_pin_the_shards_to_the_host(monkeypatch):
    monkeypatch.setattr(gpu.device, "select_backend", lambda device: None)  # CUDA faked present
    roles = _roles_of(monkeypatch, DownpourConfig(replicas=3, shards=2, device="cuda", gpus="0,1"))
    replicas = [r.args[0] for r in roles if r.role == "replica"]
    assert [(s.replica, s.device, s.pin) for s in replicas] == [
        (0, "cuda", {"CUDA_VISIBLE_DEVICES": "0", ENV_VAR: "cuda"}),
        (1, "cuda", {"CUDA_VISIBLE_DEVICES": "1", ENV_VAR: "cuda"}),
        (2, "cuda", {"CUDA_VISIBLE_DEVICES": "0", ENV_VAR: "cuda"})]
    assert all(r.fn is replica_main for r in roles if r.role == "replica")
    shards = [r.fn for r in roles if r.role == "shard"]
    host = {"CUDA_VISIBLE_DEVICES": "", ENV_VAR: "cpu"}
    assert len(shards) == 2 and all(isinstance(f, functools.partial) and f.func is run_pinned
                                    and f.args == (host, shard_main) for f in shards)


def test_off_cuda_nothing_is_pinned(monkeypatch):
    roles = _roles_of(monkeypatch, DownpourConfig(replicas=2, shards=2, device="strict"))
    assert [(r.args[0].device, r.args[0].pin) for r in roles if r.role == "replica"] == [
        ("strict", None), ("strict", None)]
    assert all(r.fn is shard_main for r in roles if r.role == "shard")


def test_cuda_without_a_gpu_fails_before_any_process_starts(monkeypatch):
    if cuda_available():
        pytest.skip("this machine has a CUDA device")
    monkeypatch.setattr(downpour, "make_group", lambda *a, **k: pytest.fail("a process started"))
    with pytest.raises(DeviceUnavailable, match="device 'cuda' was asked for") as err:
        run_downpour(tiny(), frames(tiny(), n=6), DownpourConfig(replicas=2, shards=1, device="cuda"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, match", [
    (dict(device="gpu"), "DownpourConfig.device must be one of"),
    (dict(device="cpu", gpus="0"), "DownpourConfig.gpus needs device='cuda'"),
    (dict(device="cuda", gpus="0,x"), "--gpus must be"),
])
def test_bad_device_settings_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DownpourConfig(**kwargs)


# ---------------------------------------------------------------------------------------------
# The commands: cluster train --device/--gpus, cluster step|check --gpus
# ---------------------------------------------------------------------------------------------


def test_cli_cluster_train_passes_device_and_gpus(monkeypatch, tmp_path):
    got = {}

    def fake_run(cfg, frames_, dcfg, **kw):
        got["dcfg"] = dcfg
        raise downpour.DownpourError("stopped by the test")

    monkeypatch.setattr(gpu.device, "select_backend", lambda device: None)  # CUDA faked present
    monkeypatch.setattr(downpour, "run_downpour", fake_run)
    monkeypatch.delenv(ENV_VAR, raising=False)
    argv = ["cluster", "train", "--config", "tiny", "--replicas", "3", "--shards", "2", "--steps",
            "1", "--no-progress", "--out", str(tmp_path)]
    assert main(argv + ["--device", "cuda", "--gpus", "0,1"]) == 1
    assert (got["dcfg"].device, got["dcfg"].gpus) == ("cuda", "0,1")
    assert main(argv + ["--device", "strict"]) == 1
    assert (got["dcfg"].device, got["dcfg"].gpus) == ("strict", None)


@pytest.mark.parametrize("argv", [
    ["cluster", "train", "--config", "tiny", "--replicas", "2", "--shards", "1", "--device", "cuda"],
    ["cluster", "train", "--config", "tiny", "--device", "cuda", "--gpus", "0,1"],
    ["cluster", "step", "--grid", "2x2", "--config", "tiny", "--device", "cuda", "--gpus", "0,1"],
    ["cluster", "check", "--grid", "2x2", "--config", "tiny", "--device", "cuda", "--gpus", "0"],
], ids=["train", "train-gpus", "step-gpus", "check-gpus"])
def test_cli_cuda_without_a_gpu_is_a_one_line_error(capsys, monkeypatch, tmp_path, argv):
    if cuda_available():
        pytest.skip("this machine has a CUDA device")
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)  # (cluster train would write runs/ here)
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("catneuron cluster: error: device 'cuda' was asked for") and "\n" not in err
    assert "Traceback" not in err and captured.out == ""  # nothing started, nothing printed
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["step", "check", "train"])
def test_cli_gpus_without_cuda_is_a_one_line_error(capsys, monkeypatch, tmp_path, command):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["cluster", command, "--config", "tiny", "--gpus", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "gpus needs device='cuda'" in err and "\n" not in err
