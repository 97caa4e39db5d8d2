"""Device selection: --device / CATNEURON_DEVICE, and the errors when CUDA is asked for and is not
there, with CuPy absent (its import blocked) and with CuPy present but no device (the installed
CuPy on this machine, and a stand-in module that reports 0 devices)."""

import subprocess
import sys
import types

import numpy as np
import pytest

import gpu
import gpu.strict
from catneuron.cli import main
from gpu.device import DeviceUnavailable, cuda_status, device_info, resolve_device, select_backend


def test_flag_wins_over_environment_which_wins_over_default():
    assert resolve_device(None, env={}) == "cpu"
    assert resolve_device(None, env={"CATNEURON_DEVICE": " CUDA "}) == "cuda"
    assert resolve_device(None, env={"CATNEURON_DEVICE": ""}) == "cpu"
    assert resolve_device("strict", env={"CATNEURON_DEVICE": "cuda"}) == "strict"


def test_bad_device_names_the_flag_or_the_variable():
    with pytest.raises(ValueError, match="--device must be one of cpu, cuda.*'gpu'"):
        resolve_device("gpu", env={})
    with pytest.raises(ValueError, match="CATNEURON_DEVICE must be one of cpu, cuda.*'tpu'"):
        resolve_device(None, env={"CATNEURON_DEVICE": "tpu"})
    with pytest.raises(TypeError, match="--device must be a string"):
        resolve_device(0, env={})


def test_cpu_and_strict_backends(monkeypatch):
    monkeypatch.delenv("CATNEURON_DEVICE", raising=False)
    assert select_backend("cpu") is np and select_backend(None) is np
    assert select_backend("strict") is gpu.strict
    monkeypatch.setenv("CATNEURON_DEVICE", "strict")
    assert select_backend(None) is gpu.strict


def test_cuda_without_cupy_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now raises ImportError
    status = cuda_status()
    assert not status.available and status.cupy_version is None and status.device_count == 0
    assert "CuPy is not installed" in status.reason and ".[gpu]" in status.reason
    with pytest.raises(DeviceUnavailable, match=r"device 'cuda' was asked for .* CuPy is not installed"):
        select_backend("cuda")
    assert device_info() == []
    assert issubclass(DeviceUnavailable, ValueError)  # so the CLI prints it as one line


def _fake_cupy(count=None, error=None):
    """A module that looks like CuPy to gpu.device: a version and a CUDA runtime."""

    def get_device_count():
        if error:
            raise RuntimeError(error)
        return count

    runtime = types.SimpleNamespace(
        getDeviceCount=get_device_count,
        getDeviceProperties=lambda i: {"name": f"Fake GPU {i}".encode(), "major": 8, "minor": 6},
        memGetInfo=lambda: (3 * 2**30, 4 * 2**30),
    )

    class Device:
        def __init__(self, i):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    return types.SimpleNamespace(__version__="99.0", cuda=types.SimpleNamespace(runtime=runtime, Device=Device))


@pytest.mark.parametrize("count, error", [(0, None), (None, "cudaErrorNoDevice: no CUDA-capable device")])
def test_cuda_with_cupy_but_no_device_is_a_clear_error(monkeypatch, count, error):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count, error))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    status = cuda_status()
    assert not status.available and status.cupy_version == "99.0"
    assert "CUDA_VISIBLE_DEVICES=''" in status.reason  # says when a pin hides the GPUs
    with pytest.raises(DeviceUnavailable, match=r"CuPy 99.0 is installed but CUDA .*Use --device cpu"):
        select_backend("cuda")


def test_cuda_with_the_installed_cupy_and_no_device():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (make test installs it)",
                               exc_type=ImportError)
    if cuda_status().available:
        pytest.skip("this machine has a CUDA device")
    status = cuda_status()
    assert status.cupy_version == cupy.__version__ and "no usable device" in status.reason
    with pytest.raises(DeviceUnavailable, match="device 'cuda' was asked for"):
        select_backend("cuda")


def test_cuda_with_a_device_selects_cupy(monkeypatch):
    fake = _fake_cupy(count=2)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert select_backend("cuda") is fake
    infos = device_info()
    assert [(d.index, d.name, d.compute_capability, d.total_bytes) for d in infos] == [
        (0, "Fake GPU 0", "8.6", 4 * 2**30), (1, "Fake GPU 1", "8.6", 4 * 2**30)]


def test_import_gpu_needs_neither_cupy_nor_cupyx():
    code = ("import sys; sys.modules['cupy'] = None; sys.modules['cupyx'] = None\n"
            "import gpu, gpu.device, gpu.placement, gpu.strict, gpu.kernels, gpu.namespace\n"
            "print(gpu.select_backend('cpu').__name__, gpu.cuda_status().available)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["numpy", "False"]


def test_devices_command_lists_backends(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setenv("CATNEURON_DEVICE", "strict")
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "cpu      yes" in out and "cuda     no" in out and "CuPy is not installed" in out
    assert "CATNEURON_DEVICE='strict': default device strict" in out
    monkeypatch.setenv("CATNEURON_DEVICE", "tpu")
    assert main(["devices", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"default_device": null' in out and "CATNEURON_DEVICE must be one of" in out


def test_devices_command_shows_each_gpu(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count=1))
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "cuda     yes" in out and "Fake GPU 0" in out and "4.0 GiB" in out and "3.0 GiB" in out
