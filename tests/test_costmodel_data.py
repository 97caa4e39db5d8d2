"""The data-parallel throughput model (simcluster.costmodel_data) and `catneuron scale data/gpu`.

Fitting synthetic measurements made by the model recovers its constants (and the cores a loaded
machine left free); the model's direction with P, G and replicas; one small real Downpour run
measured; the multi-GPU estimate's inputs and its measured-vs-assumed switch.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from numpy.testing import assert_allclose

from simcluster.costmodel_data import (DataCostModel, DataMeasurement, DataRun, fit, fit_cores,
                                       measure_run, model_sizes, relative_errors, steady_step,
                                       time_to_loss)

TRUE = DataCostModel(s_per_flop=2e-9, s_per_message=3e-4, s_per_byte=1e-9, sync_step_s=4e-3,
                     sync_per_replica_s=1e-3)


def _synthetic(model, cores):
    """Runs that vary R, P = G, S, the model size and the mode, 'measured' by ``model``."""
    runs = []
    for mode in ("async", "sync"):
        for R in (1, 2, 4):
            for PG in (1, 4):
                for S, F, N in ((2, 4e5, 4e5), (4, 4e5, 4e5), (2, 1e6, 4e6)):
                    runs.append(DataRun(mode, R, S, PG, PG, 8, F, N, cores))
    return [DataMeasurement(r, model.predict(r).step_s) for r in runs]


def test_fit_recovers_the_constants():
    meas = _synthetic(TRUE, cores=2)
    got = fit(meas)
    assert_allclose(got.vector(), TRUE.vector(), rtol=1e-6)
    assert max(abs(e) for e in relative_errors(got, meas)) < 1e-9


def test_fit_cores_recovers_the_free_cores():
    meas = _synthetic(TRUE, cores=1.5)
    claimed = [DataMeasurement(replace(m.run, cores=2), m.step_s) for m in meas]  # what os says
    model, cores = fit_cores(claimed)
    assert cores == pytest.approx(1.5)
    assert_allclose(model.vector(), TRUE.vector(), rtol=1e-6)


def test_fewer_fetches_and_pushes_help_most_when_communication_dominates():
    def gain(model, F):
        every = [model.predict(DataRun("async", 4, 2, PG, PG, 8, F, 4e6)).examples_per_s
                 for PG in (1, 10)]
        return every[1] / every[0]

    comm_heavy = gain(TRUE, F=1e3)  # communication is almost all of a step
    compute_heavy = gain(TRUE, F=1e8)
    assert comm_heavy > 3.0  # close to the 10x fewer messages
    assert 1.0 < compute_heavy < 1.05
    assert comm_heavy > compute_heavy


def test_direction_with_replicas_and_cores():
    def rate(mode, R, cores):
        return TRUE.predict(DataRun(mode, R, 2, 1, 1, 8, 4e5, 4e5, cores)).examples_per_s

    one = rate("async", 1, None)
    assert rate("async", 8, None) == pytest.approx(8 * one)  # one machine each: linear
    assert rate("async", 8, 2) == pytest.approx(2 * one)  # 2 shared cores: saturates at 2x
    assert rate("sync", 8, None) < rate("async", 8, None)  # the barrier's cost
    p = TRUE.predict(DataRun("async", 8, 2, 1, 1, 8, 4e5, 4e5, 2))
    assert p.cores_bound and not TRUE.predict(DataRun("async", 1, 2, 1, 1, 8, 4e5, 4e5, 2)).cores_bound


def test_steady_step_and_time_to_loss_from_a_history():
    # replica 0 reports every 1 s from t = 1, replica 1 every 3 s from t = 2; replica 0's last
    # report comes after a 50 s stall, when replica 1 has finished
    hist = [{"replica": 0, "t": float(i), "loss": 10.0 - i, "step": i} for i in range(1, 21)]
    hist += [{"replica": 1, "t": 2.0 + 3 * i, "loss": 5.0, "step": i + 1} for i in range(6)]
    hist[19] = dict(hist[19], t=70.0)
    hist.sort(key=lambda h: h["t"])
    step = steady_step(hist)
    gaps = [1.0] * 15 + [3.0] * 5  # inside the window [2, 17] where both run
    assert step == pytest.approx(np.median(gaps))
    assert steady_step([h for h in hist if h["replica"] == 1]) == pytest.approx(3.0)
    t = time_to_loss(hist, target=4.0, window=2)
    losses = [h["loss"] for h in hist]
    first = next(i for i in range(1, len(losses)) if (losses[i - 1] + losses[i]) / 2 <= 4.0)
    assert t == pytest.approx(hist[first]["t"])
    assert time_to_loss(hist, target=-100.0) is None
    with pytest.raises(ValueError, match="history"):
        steady_step(hist[:1])


@pytest.mark.parametrize("bad, match", [
    (dict(mode="fast"), "mode"), (dict(replicas=0), "replicas"), (dict(fetch_every=1.5), "fetch_every"),
    (dict(param_bytes=-1.0), "param_bytes"), (dict(cores=0), "cores")])
def test_bad_runs_name_the_field(bad, match):
    kw = dict(mode="async", replicas=1, shards=1, fetch_every=1, push_every=1, batch=8,
              flops_per_example=1.0, param_bytes=1.0)
    with pytest.raises(ValueError, match=match):
        DataRun(**{**kw, **bad})
    with pytest.raises(ValueError, match="s_per_byte"):
        DataCostModel(1.0, 1.0, math.nan, 0.0, 0.0)
    with pytest.raises(ValueError, match="measurements"):
        fit([])


@pytest.mark.slow
def test_a_real_bounded_run_is_measured():
    from refimpl.config import load_config
    from refimpl.data import natural_frames

    cfg = load_config("tiny")
    F, N = model_sizes(cfg)
    assert N == 51840 * 8  # tiny's weights in float64
    frames = natural_frames(32, cfg.image_size, channels=cfg.channels, rng=np.random.default_rng(0))
    run = DataRun("bounded", 2, 2, 1, 1, cfg.train.batch_size, F, N, 2)
    m, res = measure_run(cfg, frames, run, steps=8, max_staleness=1)
    assert m.run == run
    assert sorted({h["replica"] for h in res.history}) == [0, 1]
    assert max(h["step"] for h in res.history) == 8
    assert m.step_s == steady_step(res.history)
    assert 0 < m.step_s < res.seconds
    counts = {}
    for st in res.shard_stats:
        for k, v in st["counts"].items():
            counts[k] = counts.get(k, 0) + v
    assert sum(counts.values()) == 2 * 8 * 2  # every push of every replica reached both shards
    with pytest.raises(ValueError, match="batch"):
        measure_run(cfg, frames, replace(run, batch=3), steps=2)


def test_gpu_estimate_assumed_and_measured(tmp_path):
    from catneuron.commands.scale import GPU_ASSUMED, gpu_estimate

    res = gpu_estimate(4e9, "float32", gpus=4, gpu_json=tmp_path / "none.json")
    assert res["gpu_flops_source"].startswith("ASSUMED")
    assert res["gpu_flops"] == pytest.approx(4e9 / GPU_ASSUMED["cpu_core_peak_flops"]["float32"]
                                             * GPU_ASSUMED["gpu_peak_flops"])
    ring = res["curves"]["ring all-reduce over NVLink, every step"]
    rates = [r["examples_per_s"] for r in ring]
    assert all(b > a for a, b in zip(rates, rates[1:]))
    assert rates[-1] < 4 * rates[0]  # the all-reduce costs something
    pcie = res["curves"]["parameter server on the host, PCIe, P = G = 1"]
    lazy = res["curves"]["parameter server on the host, PCIe, P = G = 10"]
    assert lazy[0]["examples_per_s"] > pcie[0]["examples_per_s"]
    gpu_json = tmp_path / "gpu.json"
    gpu_json.write_text(json.dumps({"sublayers": {"a": {"forward": {"gflops": 100.0},
                                                        "backward": {"gflops": 300.0}}}}))
    measured = gpu_estimate(4e9, gpu_json=gpu_json, gpus=2)
    assert measured["gpu_flops"] == pytest.approx(200e9)
    assert measured["gpu_flops_source"].startswith("measured")
    with pytest.raises(ValueError, match="cpu_flops"):
        gpu_estimate(0.0)


@pytest.mark.slow
def test_cli_scale_data_writes_json_and_figure_with_held_out_errors(tmp_path, capsys):
    from catneuron.cli import main

    out = tmp_path / "scale"
    assert main(["scale", "data", "--config", "tiny", "--replicas", "1,2", "--modes", "async",
                 "--fit", "1", "--steps", "6", "--repeats", "1", "--out", str(out),
                 "--no-progress"]) == 0
    res = json.loads((out / "scale_data.json").read_text())
    plan = [(r["mode"], r["replicas"], r["fetch_every"], r["shards"], r["role"]) for r in res["measured"]]
    assert plan == [("async", 1, 1, 2, "fit"), ("async", 2, 1, 2, "held out"),
                    ("async", 1, 4, 2, "fit"), ("async", 1, 1, 4, "fit")]
    held = res["measured"][1]
    assert held["error"] == pytest.approx(
        (held["model_this_machine"]["step_s"] - held["measured"]["step_s"]) / held["measured"]["step_s"])
    assert res["held_out_abs_error"]["max"] == pytest.approx(abs(held["error"]))
    assert held["measured"]["examples_per_s"] == pytest.approx(2 * 8 / held["measured"]["step_s"])
    assert 1.0 <= res["effective_cores"] <= res["cores"]
    virt = [r["model_one_machine_each"]["examples_per_s"] for r in res["modelled"]]
    assert [r["replicas"] for r in res["modelled"]] == [1, 2, 4, 8]
    assert virt[3] == pytest.approx(8 * virt[0])  # async, one machine each: linear
    assert (out / "scale_data.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "held-out error" in capsys.readouterr().out


def test_cli_scale_gpu_and_bad_arguments(tmp_path, capsys):
    from catneuron.cli import main

    assert main(["scale", "gpu", "--cpu-flops", "4e9", "--gpus", "2", "--gpu-json",
                 str(tmp_path / "none.json"), "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "scale_gpu.json").read_text())
    assert res["assumed"]["gpu_peak_flops"] > 0 and res["gpu_flops_source"].startswith("ASSUMED")
    assert (tmp_path / "scale_gpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ASSUMED" in capsys.readouterr().out
    assert main(["scale", "gpu", "--scale-json", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
    assert "--scale-json" in capsys.readouterr().err
    assert main(["scale", "data", "--replicas", "1,x", "--out", str(tmp_path)]) == 2
    assert "--replicas" in capsys.readouterr().err
    assert main(["scale", "data", "--modes", "lazy", "--out", str(tmp_path)]) == 2
    assert "--modes" in capsys.readouterr().err
    assert main(["scale", "data", "--replicas", "1,2", "--fit", "4", "--out", str(tmp_path)]) == 2
    assert "--fit" in capsys.readouterr().err
