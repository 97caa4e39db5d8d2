"""benchmarks/gpu.py: without a CUDA device it says so and exits 0; --dry-run runs every part on
the CuPy stand-in; the fused-kernel part runs on the emulated kernels of test_gpu_kernels."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gpu.strict

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


def _run(*args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_without_a_cuda_device_it_says_so_and_exits_0():
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on a GPU machine too
    out = _run(env={"CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr
    assert "no CUDA device found" in out.stdout and "nothing to measure" in out.stdout


def test_dry_run_runs_every_part_on_the_stand_in(tmp_path):
    path = tmp_path / "gpu.json"
    out = _run("--dry-run", "--out", str(path))
    assert out.returncode == 0, out.stderr
    result = json.loads(path.read_text())
    assert result["dry_run"] and result["config"]["device"] == "strict"
    assert [r["sublayer"] for r in result["sublayers"]] == [
        "local_filter", "local_decoder", "l2pool", "lcn", "objective"]
    assert all(r[p]["ms"] > 0 and r[p]["gflops"] > 0 for r in result["sublayers"] for p in ("forward", "backward"))
    assert result["stage_step"]["examples_per_s"] > 0
    assert [r["processes"] for r in result["scaling"]] == [1, 2]
    assert all(r["examples_per_s"] > 0 for r in result["scaling"])


def test_fused_part_runs_on_the_emulated_kernels(monkeypatch):
    from test_gpu_kernels import CXX, EmulatedRawKernel

    if CXX is None:
        pytest.skip("no C++ compiler to emulate the CUDA kernels")
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_gpu", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    import gpu.kernels

    gpu.kernels._kernel.cache_clear()
    monkeypatch.setattr(gpu.strict, "RawKernel", EmulatedRawKernel, raising=False)
    cfg = bench.BenchConfig(batch=1, size=10, field=3, maps=2, repeats=1, dtype="float64", device="strict")
    rows = bench.bench_fused(cfg, bench.Device(gpu.strict))
    gpu.kernels._kernel.cache_clear()
    assert [r["sublayer"] for r in rows] == ["l2pool", "lcn"] and all(r["fused_ms"] > 0 for r in rows)
