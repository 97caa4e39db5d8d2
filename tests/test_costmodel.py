"""The model-parallel cost model: its exchange table agrees with the plan's accounting, fitting
measurements made by a known model recovers its constants, its predictions move the right way
with latency and bandwidth, and latency injected into real partition processes moves the
measured step the way the calibrated model says."""

import dataclasses
import json
import math

import numpy as np
import pytest

from refimpl.config import load_config
from refimpl.model import init_params
from simcluster.costmodel import (CostModel, Link, Measurement, exchanges, fit, measure,
                                  partition_links)
from simcluster.plan_report import summary
from simcluster.tiled import plan_for, tiled_step

TRUE = CostModel(s_per_flop=2e-9, s_per_message=3e-5, s_per_byte=4e-10, s_per_exchange=2e-4,
                 step_overhead_s=2e-3, per_partition_s=5e-4)


@pytest.mark.parametrize("gradient", ["joint", "local"])
@pytest.mark.parametrize("grid", ["1x1", "2x2", "3x2"])
def test_exchange_table_matches_the_oracles_traffic_and_the_plans_bytes(grid, gradient):
    cfg = dataclasses.replace(load_config("tiny"), gradient=gradient)
    ex = exchanges(cfg, grid)
    plan = plan_for(cfg, grid)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, cfg.channels, cfg.image_size, cfg.image_size))
    traffic = tiled_step(plan, cfg, init_params(cfg, rng), x).traffic
    assert ex.names == tuple(traffic["exchanges"])  # the tile program's exchanges, in order
    # every message is counted once by its sender and once by its receiver
    assert ex.messages.sum() == 2 * traffic["messages"]
    assert ex.bytes.sum() * 2 == 2 * traffic["bytes"]  # per example x batch 2
    assert ex.bytes_in.sum() * 2 == traffic["bytes"]
    if gradient == "joint":  # the plan's accounting counts the joint gradient's exchanges
        assert ex.bytes_in.sum() == summary(plan)["bytes_per_example"]
    if gradient == "joint":  # 3 forward exchanges a stage, then dp (not in stage 3), df, dx (not in 1)
        assert len(ex.names) == 3 * 3 + 2 + 3 + 2
    else:  # each stage's df travels with its last forward exchange
        assert ex.names[:3] == ("stage0.x", "stage0.xhat+f", "stage0.resid+p+df")
        assert len(ex.names) == 3 * 3


def _synthetic(model, cores_options=(None, 2)):
    cfg = load_config("tiny")
    out = []
    for grid in ("1x1", "2x1", "2x2", "3x3", "4x2"):
        ex = exchanges(cfg, grid)
        for batch in (2, 16):
            for cores in cores_options:
                link = Link(1e-3 * batch, 1e8) if grid == "2x2" else Link()
                p = model.predict(ex, batch, link, cores)
                cpu = model.s_per_flop * (ex.flops.sum() + ex.tail.sum()) * batch
                coord = p.coordination_s if batch == 16 else None  # with and without
                out.append(Measurement(ex, batch, p.step_s, cpu, cores, link, coord))
    return out


def test_fitting_synthetic_measurements_recovers_the_constants():
    got = fit(_synthetic(TRUE))
    np.testing.assert_allclose(got.vector(), TRUE.vector(), rtol=1e-6)
    other = CostModel(1e-8, 1e-6, 1e-9, 1e-3, 0.05, 1e-5)  # a machine with other proportions
    np.testing.assert_allclose(fit(_synthetic(other)).vector(), other.vector(), rtol=1e-6)


def test_fit_rejects_bad_measurements():
    with pytest.raises(ValueError, match="measurements"):
        fit([])
    m = _synthetic(TRUE)[0]
    with pytest.raises(ValueError, match="step_s"):
        fit([Measurement(m.ex, m.batch, 0.0, 1.0)])


def test_latency_raises_the_halo_wait_share_and_bandwidth_lowers_it():
    ex = exchanges(load_config("tiny"), "3x3")
    shares = [TRUE.predict(ex, 8, Link(a)).shares["halo_wait"] for a in (0.0, 1e-3, 2e-3, 4e-3)]
    assert all(u < v for u, v in zip(shares, shares[1:]))
    # each exchange with pieces to receive costs one more latency
    has_pieces = int((ex.bytes_in.max(axis=1) > 0).sum())
    d = TRUE.predict(ex, 8, Link(2e-3)).step_s - TRUE.predict(ex, 8, Link(1e-3)).step_s
    assert d == pytest.approx(has_pieces * 1e-3)
    steps = [TRUE.predict(ex, 8, Link(0.0, bw)).step_s for bw in (1e6, 2e6, 1e9, math.inf)]
    assert all(u > v for u, v in zip(steps, steps[1:]))
    # more partitions on few cores: the cores bound dominates, the step grows
    assert TRUE.predict(ex, 8, cores=1).step_s > TRUE.predict(ex, 8, cores=None).step_s


def test_predict_rejects_bad_arguments():
    ex = exchanges(load_config("tiny"), "2x1")
    with pytest.raises(ValueError, match="batch"):
        TRUE.predict(ex, 0)
    with pytest.raises(ValueError, match="cores"):
        TRUE.predict(ex, 2, cores=0)
    with pytest.raises(ValueError, match="latency"):
        Link(-1.0)
    with pytest.raises(ValueError, match="s_per_flop"):
        CostModel(-1.0, 0, 0, 0, 0, 0)


@pytest.mark.slow
def test_injected_latency_raises_the_measured_halo_wait_as_the_calibrated_model_predicts():
    cfg = load_config("tiny")
    rng = np.random.default_rng(0)
    params = init_params(cfg, rng)
    x = rng.standard_normal((4, cfg.channels, cfg.image_size, cfg.image_size))
    cores = 2
    base = [measure(cfg, g, params, x, steps=2, cores=cores) for g in ("1x1", "2x1", "2x2")]
    model = fit([m for m, _ in base])
    link = Link(latency_s=0.02)
    slow, split = measure(cfg, "2x2", params, x, steps=2, cores=cores, link=link,
                          faults=partition_links(4, link))
    fast_split = base[2][1]
    # measured: the halo-wait share rises with the injected latency
    assert split.shares["halo_wait"] > fast_split.shares["halo_wait"]
    # the model calibrated without latency predicts the same direction and rough size
    before = model.predict(slow.ex, 4, Link(), cores)
    after = model.predict(slow.ex, 4, link, cores)
    assert after.shares["halo_wait"] > before.shares["halo_wait"]
    measured_rise = split.step_s - fast_split.step_s
    predicted_rise = after.step_s - before.step_s
    assert 0.5 <= measured_rise / predicted_rise <= 2.0


@pytest.mark.slow
def test_cli_scale_model_writes_json_and_figures_with_held_out_errors(tmp_path, capsys):
    from catneuron.cli import main

    out = tmp_path / "scale"
    assert main(["scale", "model", "--config", "tiny", "--grids", "1x1,2x1,2x2", "--fit", "1x1,2x1",
                 "--predict", "3x3", "--steps", "1", "--batch", "2", "--out", str(out),
                 "--no-progress"]) == 0
    res = json.loads((out / "scale.json").read_text())
    assert [(r["grid"], r["role"]) for r in res["measured"]] == \
        [("1x1", "fit"), ("2x1", "fit"), ("2x2", "held out")]
    held = res["measured"][2]
    assert held["error"] == pytest.approx(
        (held["model_this_machine"]["step_s"] - held["measured"]["step_s"]) / held["measured"]["step_s"])
    assert res["held_out_abs_error"]["max"] == pytest.approx(abs(held["error"]))
    assert [r["grid"] for r in res["modelled"]] == ["3x3"]
    db = res["distbelief"]
    assert 1.6e9 < db["parameters"] < 1.8e9  # DistBelief's largest locally connected model
    assert [r["machines"] for r in db["curve"]] == [k * k for k in range(1, 14)]
    assert db["curve"][0]["speedup"] == 1.0
    for name in ("scale_steps.png", "scale_split.png", "scale_distbelief.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "held-out error" in text and ">12x on 81" in text and "ASSUMED" in text


def test_cli_scale_model_rejects_bad_grids(tmp_path, capsys):
    from catneuron.cli import main

    assert main(["scale", "model", "--grids", "3by3", "--out", str(tmp_path)]) == 2
    assert "--grids" in capsys.readouterr().err
    assert main(["scale", "model", "--grids", "1x1,2x1", "--fit", "4x4", "--out", str(tmp_path)]) == 2
    assert "--fit" in capsys.readouterr().err
    assert main(["scale", "model", "--config", "tiny", "--grids", "1x1", "--predict", "17x17",
                 "--out", str(tmp_path)]) == 2
    assert "17x17" in capsys.readouterr().err
