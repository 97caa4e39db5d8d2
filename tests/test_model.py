"""The 9-sublayer model on the tiny config: end-to-end gradient checks (joint and local, tied,
without LCN), neuron gradients, the flat parameter vector and clear errors.

Gradient checks: central differences in float64 with h = 1e-5, rel err < 1e-6 with the floor
convention of refimpl.gradcheck. J is a sum of many terms of size ~1e3, so ``J(+h) - J(-h)`` is
summed term by term (``sum(t+ - t-)`` over the arrays whose sum is J), as the sublayer checker
does: terms a weight does not reach cancel exactly instead of adding rounding noise.
"""

import numpy as np
import pytest

from refimpl.config import load_config, stage_geometry
from refimpl.gradcheck import TOLERANCE, relative_error
from refimpl.model import (features_backward, flatten, init_params, model_backward,
                           model_forward, param_count, param_shapes, stage_terms,
                           sublayer_outputs, unflatten)

H = 1e-5
SAMPLES = 12  # entries checked per array


def objective_terms(cache, stages):
    """Arrays whose total is sum_{s in stages} J_s."""
    out = []
    for s in stages:
        o = cache.stages[s].objective
        out += [o.residual * o.residual, o.lam * o.pooled]
    return out


def numeric_grad(fn, a, idx):
    """Central differences of sum(fn()) wrt a.flat[idx], summed term by term."""
    flat = a.reshape(-1)
    out = np.empty(len(idx))
    for j, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + H
        plus = fn()
        flat[i] = old - H
        minus = fn()
        flat[i] = old
        out[j] = sum(np.sum(p - m) for p, m in zip(plus, minus)) / (2 * H)
    return out


def setup(seed=0, batch=2, **overrides):
    cfg = load_config("tiny", **overrides)
    rng = np.random.default_rng(seed)
    params = init_params(cfg, rng)
    x = rng.standard_normal((batch, cfg.channels, cfg.image_size, cfg.image_size))
    return cfg, rng, params, x


def assert_sigma_away_from_c(cache, cfg):
    """Central differences are poor near the kink of max(c, sigma) in LCN: make sure we're not."""
    for st in cache.stages:
        if st.lcn is not None:
            assert float(st.lcn.sigma.min()) > 10 * cfg.c


@pytest.mark.parametrize("overrides", [
    {"gradient": "joint"},
    {"gradient": "local"},
    {"gradient": "joint", "tied": True},
    {"gradient": "local", "tied": True},
    {"gradient": "joint", "lcn": False},
], ids=["joint", "local", "joint-tied", "local-tied", "joint-no-lcn"])
def test_model_gradients_match_central_differences(overrides):
    cfg, rng, params, x = setup(**overrides)
    J, cache = model_forward(x, params, cfg)
    assert_sigma_away_from_c(cache, cfg)
    dx, grads = model_backward(cache, cfg)
    assert list(grads) == list(param_shapes(cfg))
    joint = cfg.gradient == "joint"

    def terms(stages):
        return lambda: objective_terms(model_forward(x, params, cfg)[1], stages)

    everything = range(cfg.n_stages)
    checks = [("x", x, dx, everything if joint else [0])]
    for key in params:
        s = int(key[len("stage")])
        checks.append((key, params[key], grads[key], everything if joint else [s]))
    for name, a, analytic, stages in checks:
        idx = rng.choice(a.size, size=min(SAMPLES, a.size), replace=False)
        numeric = numeric_grad(terms(stages), a, idx)
        err = relative_error(analytic.reshape(-1)[idx], numeric, floor_abs=1e-8 / H)
        assert err < TOLERANCE, f"d/d{name}: rel err {err:.2e}"


def test_joint_and_local_differ_only_below_the_top_stage():
    cfg, _, params, x = setup()
    _, grads_joint = model_backward(model_forward(x, params, cfg)[1], cfg)
    local = load_config("tiny", gradient="local")
    _, grads_local = model_backward(model_forward(x, params, local)[1], local)
    for w in ("W1", "W2"):
        np.testing.assert_array_equal(grads_joint[f"stage2.{w}"], grads_local[f"stage2.{w}"])
    # the decoder W2 of a stage does not touch the stage's output, so only W1 gets more
    np.testing.assert_array_equal(grads_joint["stage0.W2"], grads_local["stage0.W2"])
    assert np.abs(grads_joint["stage0.W1"] - grads_local["stage0.W1"]).max() > 1e-3


@pytest.mark.parametrize("gradient", ["joint", "local"])
def test_grads_alone_are_the_same_grads_without_unused_input_gradients(monkeypatch, gradient):
    """model_backward(input_grad=False), as training calls it: the same grads bit for bit, dx
    None, and an input gradient (the local filter's transpose product) only where one flows on
    down: joint mode's stages above the first; none in local mode."""
    import refimpl.local_filter as lf

    cfg, _, params, x = setup(gradient=gradient)
    cache = model_forward(x, params, cfg)[1]
    dx, grads = model_backward(cache, cfg)
    calls = []
    real = lf.lc_transpose
    monkeypatch.setattr(lf, "lc_transpose", lambda f, *a, **k: calls.append(f.shape) or real(f, *a, **k))
    none, alone = model_backward(cache, cfg, input_grad=False)
    assert dx is not None and none is None
    assert list(alone) == list(grads)
    for key in grads:
        np.testing.assert_array_equal(alone[key], grads[key])
    maps = [cache.stages[s].objective.enc.W1.shape for s in range(1, len(cfg.stages))]
    want = [(x.shape[0], K, OH, OW) for OH, OW, K, *_ in maps][::-1] if gradient == "joint" else []
    assert calls == want  # top stage first


@pytest.mark.parametrize("name", ["stage2.lcn", "stage1.pool", "stage1.filter"])
def test_neuron_input_gradient_matches_central_differences(name):
    """features_backward gives d(weighted sublayer output)/dx, e.g. one neuron's for eq. 2."""
    cfg, rng, params, x = setup(seed=3, gradient="local")  # the mode must not matter here
    _, cache = model_forward(x, params, cfg)
    out = sublayer_outputs(cache)[name]
    d = rng.standard_normal(out.shape)
    dx, grads = features_backward(cache, {name: d})

    def weighted():
        return [sublayer_outputs(model_forward(x, params, cfg)[1])[name] * d]

    for label, a, analytic in [("x", x, dx), ("stage0.W1", params["stage0.W1"], grads["stage0.W1"])]:
        idx = rng.choice(a.size, size=SAMPLES, replace=False)
        numeric = numeric_grad(weighted, a, idx)
        err = relative_error(analytic.reshape(-1)[idx], numeric, floor_abs=1e-8 / H)
        assert err < TOLERANCE, f"{name}: d/d{label} rel err {err:.2e}"
    assert not np.any(grads["stage2.W1"]) or name.startswith("stage2")


def test_one_neuron_gradient_is_zero_outside_its_receptive_field():
    cfg, _, params, x = setup()
    _, cache = model_forward(x, params, cfg)
    d = np.zeros(sublayer_outputs(cache)["stage0.filter"].shape)
    d[0, 1, 0, 0] = 1.0  # map 1 at location (0, 0): a 5x5 field at the top-left corner
    dx, _ = features_backward(cache, {"stage0.filter": d})
    np.testing.assert_allclose(dx[0, 0, :5, :5], params["stage0.W1"][0, 0, 1, 0])
    assert not dx[0, 0, 5:, :].any() and not dx[0, 0, :, 5:].any() and not dx[1].any()


def test_objective_is_the_sum_of_the_stage_objectives():
    cfg, _, params, x = setup()
    J, cache = model_forward(x, params, cfg)
    terms = stage_terms(cache)
    assert len(terms) == 3
    np.testing.assert_allclose(float(J), sum(t["J"] for t in terms), rtol=1e-12)
    for t in terms:
        assert t["reconstruction"] > 0 and t["sparsity"] > 0


def test_sublayer_outputs_have_the_configured_shapes():
    cfg, _, params, x = setup(batch=3)
    _, cache = model_forward(x, params, cfg)
    outs = sublayer_outputs(cache)
    assert len(outs) == 9
    for s, geo in enumerate(stage_geometry(cfg)):
        assert outs[f"stage{s}.filter"].shape == (3, *geo["filter"])
        assert outs[f"stage{s}.pool"].shape == (3, *geo["pool"])
        assert outs[f"stage{s}.lcn"].shape == (3, *geo["pool"])
    # each stage's input is the previous stage's LCN output
    np.testing.assert_array_equal(cache.stages[1].objective.enc.x, outs["stage0.lcn"])


def test_without_lcn_a_stage_outputs_its_pooled_features():
    cfg, _, params, x = setup(lcn=False)
    _, cache = model_forward(x, params, cfg)
    outs = sublayer_outputs(cache)
    assert "stage0.lcn" not in outs and len(outs) == 6
    np.testing.assert_array_equal(cache.stages[1].objective.enc.x, outs["stage0.pool"])


def test_flatten_is_canonical_and_unflatten_inverts_it():
    cfg, _, params, _ = setup()
    vec = flatten(params, cfg)
    assert vec.shape == (param_count(cfg),)
    n0 = params["stage0.W1"].size
    np.testing.assert_array_equal(vec[:n0], params["stage0.W1"].ravel())
    np.testing.assert_array_equal(vec[n0 : 2 * n0], params["stage0.W2"].ravel())
    back = unflatten(vec, cfg)
    assert list(back) == list(param_shapes(cfg))
    for k in params:
        np.testing.assert_array_equal(back[k], params[k])
    with pytest.raises(ValueError, match="vec must be 1-D of length"):
        unflatten(vec[:-1], cfg)


def test_init_is_deterministic_in_the_config_dtype():
    cfg = load_config("tiny", dtype="float32", init_scale=0.5)
    a = init_params(cfg, np.random.default_rng(7))
    b = init_params(cfg, np.random.default_rng(7))
    c = init_params(cfg, np.random.default_rng(8))
    for k in a:
        assert a[k].dtype == np.float32
        np.testing.assert_array_equal(a[k], b[k])
        assert not np.array_equal(a[k], c[k])
    R, C = cfg.stages[0].field, cfg.channels
    assert abs(a["stage0.W1"].std() - 0.5 / np.sqrt(C * R * R)) < 0.02
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        init_params(cfg, 7)


def test_bad_inputs_are_clear_errors():
    cfg, _, params, x = setup()
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\) = \(B, 1, 16, 16\)"):
        model_forward(x[:, :, :8], params, cfg)
    with pytest.raises(ValueError, match="missing \\['stage1.W2'\\]"):
        model_forward(x, {k: v for k, v in params.items() if k != "stage1.W2"}, cfg)
    bad = dict(params, **{"stage1.W1": params["stage1.W1"][:2]})
    with pytest.raises(ValueError, match=r"params\['stage1.W1'\] must have shape"):
        model_forward(x, bad, cfg)
    _, cache = model_forward(x, params, cfg)
    with pytest.raises(ValueError, match="unknown sublayer output 'stage5.lcn'"):
        features_backward(cache, {"stage5.lcn": x})
    with pytest.raises(ValueError, match="gradient = 'joint' but cfg says 'local'"):
        model_backward(cache, load_config("tiny", gradient="local"))
