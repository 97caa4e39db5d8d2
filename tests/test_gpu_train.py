"""Training on a device: ``train(..., xp=...)`` and ``catneuron train --device``.

On the strict CuPy stand-in (gpu.strict: NumPy underneath, every implicit host <-> device
conversion raises TypeError) a few steps of the tiny config must give the NumPy run's
parameters, optimiser state, metrics and Generator state bit for bit, with the weights living
on the device throughout and the checkpoint coming back to the host. ``--device cuda`` on a
machine without a usable GPU stops with a one-line error before doing any work.
"""

import dataclasses
import sys

import numpy as np
import pytest

import gpu.strict
from catneuron.cli import main
from gpu.device import select_backend, to_host
from refimpl.checkpoint import load_checkpoint
from refimpl.config import load_config
from refimpl.train import train

STEPS = 6


def tiny(**overrides):
    train_over = {k: overrides.pop(k) for k in list(overrides) if k in ("optimizer", "lr")}
    cfg = load_config("tiny", **overrides)
    t = dataclasses.replace(cfg.train, batch_size=4, log_every=2, checkpoint_every=4, **train_over)
    return dataclasses.replace(cfg, train=t)


def frames(cfg, n=48, seed=1):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, cfg.channels, cfg.image_size, cfg.image_size))
    return base.cumsum(axis=3).astype(cfg.dtype)


def assert_same(a: dict, b: dict, what: str):
    assert list(a) == list(b), what
    for k in a:
        assert type(a[k]) is np.ndarray and type(b[k]) is np.ndarray, f"{what}[{k}] is not on the host"
        assert a[k].dtype == b[k].dtype, f"{what}[{k}]"
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{what}[{k}]")


def timeless(history):
    return [{k: v for k, v in line.items() if k != "examples_per_s"} for line in history]


@pytest.mark.parametrize("overrides", [{}, {"optimizer": "sgd", "lr": 1e-4, "preprocess": "zca",
                                            "dtype": "float32"}],
                         ids=["adagrad-float64", "sgd-zca-float32"])
def test_stand_in_training_is_bit_identical_to_numpy(tmp_path, overrides):
    cfg = tiny(**overrides)
    x = frames(cfg)
    host = train(cfg, x, steps=STEPS, out_dir=tmp_path / "cpu", progress=False)
    dev = train(cfg, x, steps=STEPS, out_dir=tmp_path / "strict", progress=False, xp=gpu.strict)

    # the weights and optimiser state stayed on the device ...
    assert all(isinstance(v, gpu.strict.StrictArray) for v in dev.params.values())
    assert all(isinstance(v, gpu.strict.StrictArray) for v in dev.opt_state.values())
    # ... and equal NumPy's bit for bit once copied back explicitly
    assert_same(to_host(dev.params), host.params, "params")
    assert_same(to_host(dev.opt_state), host.opt_state, "opt_state")
    assert timeless(dev.history) == timeless(host.history) and len(host.history) == STEPS // 2
    assert all(type(v) in (int, float) for line in dev.history for v in line.values())
    assert dev.rng.bit_generator.state == host.rng.bit_generator.state

    # the stand-in run's checkpoint is plain host data, identical to the NumPy run's
    ck_dev, ck_host = load_checkpoint(dev.checkpoint), load_checkpoint(host.checkpoint)
    assert ck_dev.step == ck_host.step == STEPS
    assert_same(ck_dev.params, ck_host.params, "checkpoint params")
    assert_same(ck_dev.opt_state, ck_host.opt_state, "checkpoint opt_state")
    assert (tmp_path / "strict" / "metrics.jsonl").read_text().count("\n") == STEPS // 2


def test_resume_crosses_devices(tmp_path):
    """Half a run on the stand-in, the rest on the host (and back): the full NumPy run."""
    cfg = tiny()
    x = frames(cfg)
    full = train(cfg, x, steps=STEPS, progress=False)
    half = train(cfg, x, steps=STEPS // 2, out_dir=tmp_path / "a", progress=False, xp=gpu.strict)
    on_host = train(cfg, x, steps=STEPS, resume=half.checkpoint, progress=False)
    assert_same(on_host.params, full.params, "resumed on the host")
    half = train(cfg, x, steps=STEPS // 2, out_dir=tmp_path / "b", progress=False)
    on_dev = train(cfg, x, steps=STEPS, resume=half.checkpoint, progress=False, xp=gpu.strict)
    assert_same(to_host(on_dev.params), full.params, "resumed on the stand-in")


def test_a_stray_host_array_on_the_device_path_fails():
    """The stand-in can fail: a NumPy minibatch meeting device weights raises TypeError."""
    cfg = tiny()
    cpu = select_backend("cpu")

    class HalfUpload:  # uploads the weights (6-D) but leaves the minibatches (4-D) on the host
        def asarray(self, a):
            return gpu.strict.asarray(a) if a.ndim == 6 else cpu.asarray(a)

    with pytest.raises(TypeError, match="host"):
        train(cfg, frames(cfg), steps=1, progress=False, xp=HalfUpload())


@pytest.mark.slow  # two CLI runs with their figures, ~8 s
def test_cli_device_strict_matches_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CATNEURON_DEVICE", raising=False)
    base = ["train", "--config", "tiny", "--steps", "4", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "cpu")]) == 0
    monkeypatch.setenv("CATNEURON_DEVICE", "cuda")  # the flag wins over the variable
    assert main(base + ["--out", str(tmp_path / "strict"), "--device", "strict"]) == 0
    printed = capsys.readouterr().out
    assert "trained tiny on cpu to step 4" in printed and "trained tiny on strict to step 4" in printed
    assert "filters.png" in printed
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.npz") for d in ("cpu", "strict"))
    assert_same(b.params, a.params, "CLI checkpoint params")
    assert_same(b.opt_state, a.opt_state, "CLI checkpoint opt_state")


@pytest.mark.parametrize("how", ["flag", "env", "no-cupy"])
def test_cli_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys, monkeypatch, how):
    from gpu.testing import cuda_available

    if cuda_available():
        pytest.skip("this machine has a CUDA device")
    argv = ["train", "--config", "tiny", "--steps", "2", "--no-progress", "--out", str(tmp_path / "r")]
    monkeypatch.delenv("CATNEURON_DEVICE", raising=False)
    if how == "env":
        monkeypatch.setenv("CATNEURON_DEVICE", "cuda")
    else:
        argv += ["--device", "cuda"]
    if how == "no-cupy":
        monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("catneuron train: error: device 'cuda' was asked for") and "\n" not in err
    assert "Use --device cpu" in err and "Traceback" not in err
    if how == "no-cupy":
        assert "CuPy is not installed" in err
    assert captured.out == "" and not (tmp_path / "r").exists()  # stopped before any work
