"""Tests of refimpl.analysis.invariance: planted shift-invariant and shift-selective neurons."""

import numpy as np
import pytest

from refimpl.analysis import Neuron, invariance_curves, response_curve
from refimpl.config import load_config
from refimpl.data.invariance import InvarianceSet
from refimpl.model import init_params

SHIFTS = np.arange(-2, 3)  # the dot stays inside the 5 x 5 field
AT = (5, 5)  # the neurons' location in stage0.filter; their field is rows/cols 5..9


def dot_set(rng) -> InvarianceSet:
    """10 "faces": one bright dot each (random brightness, row in the field), at the field's
    centre column, shifted horizontally by SHIFTS."""
    images = np.zeros((10, len(SHIFTS), 1, 16, 16))
    brightness = rng.uniform(0.5, 2.0, 10)
    rows = rng.integers(AT[0], AT[0] + 5, 10)
    for i in range(10):
        for t, s in enumerate(SHIFTS):
            images[i, t, 0, rows[i], AT[1] + 2 + s] = brightness[i]
    return InvarianceSet(images, SHIFTS.astype(float), "translation", "pixels",
                         np.arange(10).astype(str)), brightness, rows


def planted(cfg):
    """Map 0: all-ones filter (sums its field: shift-invariant for a dot inside it). Map 1: a
    single central column (selective: only the unshifted dot)."""
    params = {k: np.zeros_like(v) for k, v in init_params(cfg, np.random.default_rng(0)).items()}
    W1 = params["stage0.W1"]  # (OH, OW, K, C, R, R)
    W1[AT[0], AT[1], 0, 0] = 1.0
    W1[AT[0], AT[1], 1, 0, :, 2] = 1.0
    return params


def test_invariant_neuron_is_flat_selective_is_peaked():
    cfg = load_config("tiny")
    rng = np.random.default_rng(1)
    iset, brightness, _ = dot_set(rng)
    params = planted(cfg)
    flat = response_curve(params, cfg, Neuron("stage0.filter", 0, 0, *AT), iset)
    peaked = response_curve(params, cfg, Neuron("stage0.filter", 0, 1, *AT), iset)
    np.testing.assert_allclose(flat.mean, brightness.mean(), rtol=1e-12)  # flat at the mean
    np.testing.assert_allclose(flat.std, brightness.std(), rtol=1e-12)
    np.testing.assert_array_equal(flat.values, SHIFTS)
    expect = np.where(SHIFTS == 0, brightness.mean(), 0.0)  # peak at 0 shift, nothing elsewhere
    np.testing.assert_allclose(peaked.mean, expect, atol=1e-12)
    assert peaked.responses.shape == (10, len(SHIFTS)) and flat.unit == "pixels"


def test_invariance_curves_uses_given_sets_and_checks():
    cfg = load_config("tiny")
    rng = np.random.default_rng(2)
    iset, _, _ = dot_set(rng)
    params = planted(cfg)
    n = Neuron("stage0.filter", 0, 1, *AT)
    curves = invariance_curves(params, cfg, n, rng=rng, kinds=("translation",),
                               sets={"translation": iset})
    assert list(curves) == ["translation"] and curves["translation"].mean.argmax() == 2
    with pytest.raises(ValueError, match="out-of-plane"):
        invariance_curves(params, cfg, n, rng=rng, kinds=("3d",))
    with pytest.raises(ValueError, match="size"):
        invariance_curves(params, cfg, n, rng=rng, size=32)
    with pytest.raises(ValueError, match="not a sublayer"):
        invariance_curves(params, cfg, Neuron("stage0.conv", 0, 0, 0, 0), rng=rng)
    bad = iset._replace(values=iset.values[:2])
    with pytest.raises(ValueError, match="iset.images"):
        response_curve(params, cfg, n, bad)


def test_invariance_curves_on_the_face_sets():
    """The real sets (refimpl.data.invariance, 10 faces): every kind, with the drawn values."""
    pytest.importorskip("skimage")
    cfg = load_config("tiny")
    params = init_params(cfg, np.random.default_rng(0))
    curves = invariance_curves(params, cfg, Neuron("stage2.lcn", 2, 0, 1, 1),
                               rng=np.random.default_rng(0))
    assert set(curves) == {"scale", "translation", "rotation"}
    for c in curves.values():
        assert c.responses.shape == (10, len(c.values)) and np.isfinite(c.mean).all()
