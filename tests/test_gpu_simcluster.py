"""simcluster on a device: the tiled model parallelism on the strict CuPy stand-in (issue 8).

gpu.strict computes with NumPy underneath and raises TypeError on any implicit host <-> device
conversion, so a stray ``np.`` on device data in the tile math fails here. In one process,
``tiled_step`` on stand-in params and input must give the NumPy tiled run's objective and
gradients bit for bit (and refimpl's to 1e-10), with the gradients still on the device. As real
processes (``Coordinator(device="strict")``), the partitions keep weights and tiles on the
device and copy halo pieces to the host explicitly around the transport; every message refuses
a device array. ``--device cuda`` without a GPU is a one-line error before any process starts.
"""

import dataclasses
import os
import sys

import numpy as np
import pytest

import gpu.strict
from catneuron.cli import main
from gpu.device import ENV_VAR, DeviceUnavailable, to_device, to_host
from gpu.testing import cuda_available, needs_cuda
from refimpl.config import load_config
from refimpl.model import init_params, model_backward, model_forward, stage_terms
from simcluster import tile_program, tiled, tiles
from simcluster.coordinator import Coordinator
from simcluster.partition import Halo, SetWeights, StepInput, StepResult, backend
from simcluster.tile_program import TileResult
from simcluster.tiled import plan_for, split_params, tiled_step

TOL = 1e-10


def problem(cfg, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    params = init_params(cfg, rng)
    x = rng.standard_normal((batch, cfg.channels, cfg.image_size, cfg.image_size))
    return params, x


def tiny(gradient="joint"):
    return dataclasses.replace(load_config("tiny"), gradient=gradient)  # float64


def assert_bit_identical(dev, host):
    """``dev`` (a StepOutput with device gradients, or host ones) equals ``host`` bit for bit."""
    assert dev.J == host.J and dev.terms == host.terms
    assert list(dev.grads) == list(host.grads)
    for key, g in host.grads.items():
        got = to_host(dev.grads[key])
        assert type(got) is np.ndarray and got.dtype == g.dtype, key
        np.testing.assert_array_equal(got, g, err_msg=key)


def assert_close_to_refimpl(out, cfg, params, x):
    J, cache = model_forward(x, params, cfg)
    _, grads = model_backward(cache, cfg)
    assert abs(out.J - float(J)) <= TOL * max(1.0, abs(float(J)))
    for mine, ref in zip(out.terms, stage_terms(cache)):
        assert abs(mine["reconstruction"] - ref["reconstruction"]) <= TOL * max(1.0, abs(ref["reconstruction"]))
    for key, g in grads.items():
        diff = np.abs(to_host(out.grads[key]) - g).max()
        assert diff <= TOL * max(1.0, float(np.abs(g).max())), key


# ---------------------------------------------------------------------------------------------
# In one process: tiled_step on the stand-in
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gradient", ["joint", "local"])
@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (3, 2),
                                  pytest.param((13, 13), marks=pytest.mark.slow)])  # ~4 s each
def test_tiled_step_on_the_stand_in_is_bit_identical_to_numpy(grid, gradient):
    cfg = tiny(gradient)
    params, x = problem(cfg)
    plan = plan_for(cfg, grid)
    host = tiled_step(plan, cfg, params, x)
    dev = tiled_step(plan, cfg, to_device(params, gpu.strict), to_device(x, gpu.strict))
    # the gradients were assembled on the device: nothing left it behind our back
    assert all(isinstance(g, gpu.strict.StrictArray) for g in dev.grads.values())
    assert_bit_identical(dev, host)
    assert dev.traffic == host.traffic  # the same pieces travelled
    assert_close_to_refimpl(dev, cfg, params, x)


def test_split_params_and_split_input_stay_on_the_device():
    cfg = tiny()
    params, x = problem(cfg)
    plan = plan_for(cfg, (3, 2))
    dev = split_params(plan, cfg, to_device(params, gpu.strict))
    for mine, ref in zip(dev, split_params(plan, cfg, params)):
        assert all(isinstance(w, gpu.strict.StrictArray) for w in mine.values())
        for key in ref:
            np.testing.assert_array_equal(to_host(mine[key]), ref[key])
    xs = tiled.split_input(plan, to_device(x, gpu.strict))
    assert all(isinstance(xt, gpu.strict.StrictArray) for xt in xs)


def _host_zeros(like, channels, r):
    return np.zeros((like.shape[0], channels, *tiles.shape(r)), dtype=like.dtype)  # stray np.


def _host_split_input(plan, x):
    return [np.ascontiguousarray(x[..., t[0].input.rows[0]:t[0].input.rows[1],  # stray np.
                                   t[0].input.cols[0]:t[0].input.cols[1]]) for t in plan.tiles]


@pytest.mark.parametrize("module, name, stray", [(tile_program, "zeros_on", _host_zeros),
                                                 (tiled, "split_input", _host_split_input)],
                         ids=["zeros_on", "split_input"])
def test_a_stray_host_conversion_fails_on_the_stand_in(monkeypatch, module, name, stray):
    # The test above can fail: put NumPy back into one helper. On NumPy arrays nothing changes;
    # on the stand-in the first device array that meets the host array raises TypeError.
    cfg = tiny()
    params, x = problem(cfg)
    plan = plan_for(cfg, (2, 2))
    clean = tiled_step(plan, cfg, params, x)
    monkeypatch.setattr(module, name, stray)
    assert_bit_identical(tiled_step(plan, cfg, params, x), clean)  # harmless on the host
    with pytest.raises(TypeError, match="NumPy|host"):
        tiled_step(plan, cfg, to_device(params, gpu.strict), to_device(x, gpu.strict))


# ---------------------------------------------------------------------------------------------
# The messages: host arrays only (the transport's shared memory is host memory)
# ---------------------------------------------------------------------------------------------


def test_every_message_refuses_a_device_array():
    host = np.zeros((1, 1, 2, 2))
    dev = gpu.strict.asarray(host)
    Halo(1, 0, "x", host), StepInput(1, host), SetWeights({"stage0.W1": host})  # fine
    with pytest.raises(TypeError, match=r"Halo.data must be a host \(NumPy\) array.*to_numpy"):
        Halo(1, 0, "x", dev)
    with pytest.raises(TypeError, match=r"StepInput.x must be a host"):
        StepInput(1, dev)
    with pytest.raises(TypeError, match=r"SetWeights.weights\['stage0.W1'\] must be a host"):
        SetWeights({"stage0.W1": dev})
    result = TileResult((0.0,), (0.0,), {"stage0.W1": dev})
    with pytest.raises(TypeError, match=r"StepResult.result.grads\['stage0.W1'\] must be a host"):
        StepResult(1, result, 0.0, 0.0, 0.0, 0, 0, 0)


# ---------------------------------------------------------------------------------------------
# Real processes: Coordinator(device="strict")
# ---------------------------------------------------------------------------------------------


def test_partition_processes_on_the_stand_in_equal_the_cpu_run():
    cfg = tiny()
    params, x = problem(cfg, batch=3)
    with Coordinator(cfg, (2, 2), trace=False, timeout=60) as c:
        c.set_params(params)
        on_cpu = c.step(x)
    with Coordinator(cfg, (2, 2), trace=False, timeout=60, device="strict") as c:
        c.set_params(to_device(params, gpu.strict))  # device params: the coordinator copies them
        on_dev = c.step(to_device(x, gpu.strict))
    assert all(type(g) is np.ndarray for g in on_dev.output.grads.values())  # back on the host
    assert_bit_identical(on_dev.output, on_cpu.output)
    assert on_dev.halo_bytes == on_cpu.halo_bytes > 0  # every piece went through host memory
    oracle = tiled_step(plan_for(cfg, (2, 2)), cfg, to_device(params, gpu.strict),
                        to_device(x, gpu.strict))
    assert_bit_identical(oracle, on_dev.output)
    assert_close_to_refimpl(on_dev.output, cfg, params, x)


@needs_cuda
def test_partition_processes_on_cuda_equal_refimpl():
    # on a real GPU: another summation order may move the last bits, so refimpl's tolerance
    cfg = tiny()
    params, x = problem(cfg, batch=3)
    with Coordinator(cfg, (2, 2), trace=False, timeout=120, device="cuda") as c:
        c.set_params(params)
        out = c.step(x).output
    assert all(type(g) is np.ndarray for g in out.grads.values())
    assert_close_to_refimpl(out, cfg, params, x)


def test_a_partition_worker_is_pinned_before_it_picks_its_backend(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    assert backend("cpu") is np
    assert backend("strict", {"CUDA_VISIBLE_DEVICES": "3"}) is gpu.strict
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.setitem(sys.modules, "cupy", object())  # CuPy imported before the pin: refused
    with pytest.raises(RuntimeError, match="before it was pinned"):
        backend("cuda", {"CUDA_VISIBLE_DEVICES": "0", ENV_VAR: "cuda"})


def test_cuda_partitions_are_dealt_round_robin_over_the_gpus(monkeypatch):
    # what Coordinator(device="cuda", gpus=...) hands each partition, with CUDA faked as present
    import gpu.device
    from simcluster.coordinator import _pins

    monkeypatch.setattr(gpu.device, "select_backend", lambda device: None)
    pins = _pins("cuda", "0,2", 3)
    assert [p["CUDA_VISIBLE_DEVICES"] for p in pins] == ["0", "2", "0"]
    assert all(p[ENV_VAR] == "cuda" for p in pins)
    assert _pins("strict", None, 2) == [None, None]
    with pytest.raises(ValueError, match="gpus needs device='cuda'"):
        _pins("cpu", "0", 2)


def test_coordinator_device_errors():
    cfg = tiny()
    with pytest.raises(ValueError, match="device must be one of 'cpu', 'cuda', 'strict', got 'gpu'"):
        Coordinator(cfg, (2, 2), device="gpu")
    if not cuda_available():
        with pytest.raises(DeviceUnavailable, match="device 'cuda' was asked for"):
            Coordinator(cfg, (2, 2), device="cuda")  # before any process starts


# ---------------------------------------------------------------------------------------------
# The command: catneuron cluster step|check --device
# ---------------------------------------------------------------------------------------------


def test_cli_cluster_check_on_the_stand_in_passes(capsys, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert main(["cluster", "check", "--grid", "2x2", "--config", "tiny", "--batch", "2",
                 "--dtype", "float64", "--device", "strict"]) == 0
    out = capsys.readouterr().out
    assert "device strict" in out and "cluster check: pass" in out


@pytest.mark.parametrize("command, how", [("step", "flag"), ("check", "flag"), ("step", "env")])
def test_cli_cluster_cuda_without_a_gpu_is_a_one_line_error(capsys, monkeypatch, command, how):
    if cuda_available():
        pytest.skip("this machine has a CUDA device")
    argv = ["cluster", command, "--grid", "2x2", "--config", "tiny", "--batch", "2"]
    monkeypatch.delenv(ENV_VAR, raising=False)
    if how == "env":
        monkeypatch.setenv(ENV_VAR, "cuda")
    else:
        argv += ["--device", "cuda"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("catneuron cluster: error: device 'cuda' was asked for") and "\n" not in err
    assert "Use --device cpu" in err and "Traceback" not in err
    assert captured.out == ""  # stopped before starting any process or printing anything
