"""Tests of refimpl.analysis.stimulus (eq. 2): known optima on the sphere, a real tiny network."""

import numpy as np
import pytest

from refimpl.analysis import Neuron, collect_activations
from refimpl.analysis.stimulus import maximise_on_sphere, neuron_function, optimal_stimulus
from refimpl.config import load_config
from refimpl.model import init_params


def test_linear_function_optimum_is_normalised_weight():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 4, 4))
    for radius in (1.0, 2.5):
        res = maximise_on_sphere(lambda x: (np.vdot(w, x), w), rng.normal(size=w.shape),
                                 radius=radius)
        np.testing.assert_allclose(res.x, radius * w / np.linalg.norm(w), atol=1e-6)
        assert res.value == pytest.approx(radius * np.linalg.norm(w), rel=1e-10)
        assert np.all(np.diff(res.history) >= 0)  # an ascent never goes down


def test_quadratic_optimum_is_top_eigenvector():
    rng = np.random.default_rng(1)
    B = rng.normal(size=(12, 12))
    A = B @ B.T
    lam, U = np.linalg.eigh(A)
    res = maximise_on_sphere(lambda x: (x @ A @ x, 2 * A @ x), rng.normal(size=12), steps=500,
                             step0=0.1)
    assert res.value == pytest.approx(lam[-1], rel=1e-8)
    assert abs(np.vdot(res.x, U[:, -1])) == pytest.approx(1.0, abs=1e-6)


def test_planted_linear_neuron_in_the_model():
    cfg = load_config("tiny")
    rng = np.random.default_rng(2)
    params = {k: np.zeros_like(v) for k, v in init_params(cfg, rng).items()}
    n = Neuron("stage0.filter", 0, 1, 3, 7)
    R = cfg.stages[0].field
    w = rng.normal(size=(R, R))
    params["stage0.W1"][n.y, n.x, n.map, 0] = w  # (OH, OW, K, C, R, R)
    expect = np.zeros((1, 16, 16))
    expect[0, n.y:n.y + R, n.x:n.x + R] = w / np.linalg.norm(w)
    s = optimal_stimulus(params, cfg, n, rng=rng, starts=2, steps=25)
    np.testing.assert_allclose(s.x, expect, atol=1e-6)
    assert s.activation == pytest.approx(np.linalg.norm(w), rel=1e-10)
    assert s.activations_per_start.shape == (2,)


def test_real_tiny_network_stimulus_beats_random_inputs():
    cfg = load_config("tiny")
    rng = np.random.default_rng(3)
    params = init_params(cfg, rng)
    n = Neuron("stage2.lcn", 2, 1, 0, 1)
    s = optimal_stimulus(params, cfg, n, rng=rng, starts=2, steps=12)
    assert np.linalg.norm(s.x) == pytest.approx(1.0, abs=1e-12)
    # the returned activation is the network's, recomputed independently
    acts = collect_activations(params, cfg, s.x[None])
    assert s.activation == pytest.approx(acts[n.sublayer][0, n.map, n.y, n.x], rel=1e-9)
    assert s.activation == s.activations_per_start.max()
    trials = rng.normal(size=(300, 1, 16, 16))
    trials /= np.linalg.norm(trials.reshape(300, -1), axis=1)[:, None, None, None]
    random = collect_activations(params, cfg, trials, names=[n.sublayer])[n.sublayer]
    assert s.activation > random[:, n.map, n.y, n.x].max()


def test_stimulus_bad_input():
    cfg = load_config("tiny")
    params = init_params(cfg, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="not a sublayer"):
        optimal_stimulus(params, cfg, Neuron("stage5.lcn", 5, 0, 0, 0), rng=rng)
    with pytest.raises(ValueError, match="outside"):
        neuron_function(params, cfg, Neuron("stage2.lcn", 2, 0, 2, 0))
    with pytest.raises(TypeError, match="neuron"):
        neuron_function(params, cfg, ("stage2.lcn", 2, 0, 0, 0))
    with pytest.raises(TypeError, match="rng"):
        optimal_stimulus(params, cfg, Neuron("stage2.lcn", 2, 0, 0, 0), rng=1)
    with pytest.raises(ValueError, match="x0"):
        maximise_on_sphere(lambda x: (0.0, x), np.zeros(3))
    with pytest.raises(ValueError, match="gradient"):
        maximise_on_sphere(lambda x: (0.0, np.zeros(2)), np.ones(3))
