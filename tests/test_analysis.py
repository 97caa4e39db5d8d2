"""Tests of refimpl.analysis.activations and .neurons: planted cases whose answers are known."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from refimpl.analysis import (Neuron, collect_activations, neuron_values, scan_neurons,
                              stump_accuracy, sublayer_names, top_stimuli)
from refimpl.config import load_config
from refimpl.model import init_params, model_forward, sublayer_outputs
from refimpl.preprocess import fit_zca, whiten


def reference_stump(values, labels, n_thresholds=20):
    """One column, written as the paper says it: plain Python over the thresholds."""
    lo, hi = min(values), max(values)
    best_acc, best_thr = -1.0, None
    for t in range(n_thresholds):
        thr = lo + t * (hi - lo) / (n_thresholds - 1)
        acc = sum((v > thr) == bool(l) for v, l in zip(values, labels)) / len(values)
        if acc > best_acc:
            best_acc, best_thr = acc, thr
    return best_acc, best_thr


# ---------------------------------------------------------------------------------------------
# stump_accuracy


def test_stump_hand_computed():
    values = np.array([[0.0, 5.0, 0.0, 0.0],
                       [1.0, 5.0, 1.0, 2.0],
                       [2.0, 5.0, 0.0, 1.0],
                       [3.0, 5.0, 1.0, 0.0]])
    labels = np.array([0, 0, 1, 1])
    acc, thr = stump_accuracy(values, labels)
    # column 0: thresholds 3t/19; t = 7 (21/19) is the first in [1, 2): all correct
    assert acc[0] == 1.0 and thr[0] == pytest.approx(21 / 19)
    # column 1 is constant: nothing is above its max, everything is "not a face": 2/4
    assert acc[1] == 0.5 and thr[1] == 5.0
    # column 2: [0, 1, 0, 1]; t = 0 (thr 0) gives [F, T, F, T] = 2/4 correct, ties to t = 0
    assert acc[2] == 0.5 and thr[2] == 0.0
    # column 3: [0, 2, 1, 0]; thr 0 gives [F, T, T, F] (2/4), thr in [1, 2) gives [F, T, F, F]
    # (1/4), thr 2 gives all "not a face" (2/4): best 2/4, first reached at thr 0
    assert acc[3] == 0.5 and thr[3] == 0.0


def test_stump_all_positive_labels_and_ties():
    values = np.array([[0.0], [1.0], [2.0]])
    acc, thr = stump_accuracy(values, np.ones(3, dtype=bool))
    assert acc[0] == pytest.approx(2 / 3) and thr[0] == 0.0  # only the minimum is not above
    # a perfect split reached by every threshold in [0, 1): the lowest (t = 0) is reported
    acc, thr = stump_accuracy(np.array([[0.0], [1.0]]), np.array([False, True]))
    assert acc[0] == 1.0 and thr[0] == 0.0
    # a neuron silenced by faces is no face detector: "above" only, best is all-negative
    acc, thr = stump_accuracy(np.array([[1.0], [0.0], [1.0]]), np.array([0, 1, 0]))
    assert acc[0] == pytest.approx(2 / 3) and thr[0] == 1.0


@given(st.integers(1, 12), st.integers(1, 4), st.integers(2, 25), st.integers(0, 2**32 - 1))
def test_stump_matches_reference(n, m, n_thresholds, seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(-3, 4, size=(n, m)).astype(float)  # integers: many ties
    labels = rng.random(n) < 0.4
    acc, thr = stump_accuracy(values, labels, n_thresholds=n_thresholds)
    for j in range(m):
        ref_acc, ref_thr = reference_stump(values[:, j], labels, n_thresholds)
        assert acc[j] == pytest.approx(ref_acc, abs=1e-12)
        assert thr[j] == pytest.approx(ref_thr, abs=1e-12)


@pytest.mark.parametrize("values, labels, err", [
    (np.zeros(4), np.zeros(4, bool), ValueError),  # values not 2-D
    (np.zeros((4, 2)), np.zeros(3, bool), ValueError),  # wrong length
    (np.zeros((4, 2)), np.array([0, 1, 2, 1]), ValueError),  # not 0/1
    (np.zeros((4, 2)), np.array([0.0, 1.0, 0.0, 1.0]), TypeError),  # float labels
    (np.zeros((4, 2)), np.zeros((4, 1), bool), ValueError),  # labels not 1-D
    (np.full((2, 2), np.nan), np.zeros(2, bool), ValueError),
])
def test_stump_bad_input(values, labels, err):
    with pytest.raises(err, match="values|labels"):
        stump_accuracy(values, labels)


def test_stump_bad_thresholds():
    with pytest.raises(ValueError, match="n_thresholds"):
        stump_accuracy(np.zeros((3, 1)), np.zeros(3, bool), n_thresholds=0)


# ---------------------------------------------------------------------------------------------
# a tiny network with one hand-set face-template neuron


def face_template(r: int) -> np.ndarray:
    """A cartoon face, r x r, zero mean and unit norm: a light oval, two dark eyes, a mouth."""
    yy, xx = np.mgrid[0:r, 0:r] / (r - 1) * 2 - 1
    t = ((yy / 1.0) ** 2 + (xx / 0.8) ** 2 < 1).astype(float)
    t[(np.abs(yy + 0.3) < 0.25) & (np.abs(np.abs(xx) - 0.4) < 0.25)] = -1.0  # eyes
    t[(np.abs(yy - 0.5) < 0.2) & (np.abs(xx) < 0.4)] = -1.0  # mouth
    t -= t.mean()
    return t / np.linalg.norm(t)


PLANT = Neuron("stage0.filter", 0, 2, 4, 6)


@pytest.fixture(scope="module")
def planted():
    cfg = load_config("tiny")
    rng = np.random.default_rng(5)
    params = {k: np.zeros_like(v) for k, v in init_params(cfg, rng).items()}
    R = cfg.stages[0].field
    tmpl = face_template(R)
    params["stage0.W1"][PLANT.y, PLANT.x, PLANT.map, 0] = tmpl  # (OH, OW, K, C, R, R)
    n = 120
    labels = np.arange(n) % 3 == 0  # 1/3 faces
    amp = np.where(labels, rng.uniform(0.2, 1.5, n), rng.uniform(-1.5, 0.4, n))
    images = rng.normal(0, 0.3, size=(n, 1, 16, 16))
    images[:, 0, PLANT.y:PLANT.y + R, PLANT.x:PLANT.x + R] += amp[:, None, None] * tmpl
    return cfg, params, images, labels, tmpl


def test_planted_face_neuron_is_found(planted):
    cfg, params, images, labels, tmpl = planted
    R = tmpl.shape[0]
    acts = collect_activations(params, cfg, images, batch=32)
    scan = scan_neurons(acts, labels, top=5)
    assert scan.best == PLANT
    # the expected accuracy, independently: the template's dot product with each image's patch
    patch = images[:, 0, PLANT.y:PLANT.y + R, PLANT.x:PLANT.x + R]
    response = np.einsum("nij,ij->n", patch, tmpl)
    ref_acc, ref_thr = reference_stump(list(response), list(labels))
    assert scan.accuracy == pytest.approx(ref_acc, abs=1e-12)
    assert scan.threshold == pytest.approx(ref_thr, abs=1e-9)
    assert 0.8 < scan.accuracy < 1.0  # the planted case is informative but not trivial
    assert scan.ranking[0] == (PLANT, scan.accuracy)
    assert [a for _, a in scan.ranking] == sorted((a for _, a in scan.ranking), reverse=True)
    assert scan.per_sublayer["stage0.filter"] == scan.accuracy
    # every zero-weight filter neuron is constant: it scores the negatives' share
    assert scan.per_sublayer["stage1.filter"] == pytest.approx(1 - labels.mean())
    np.testing.assert_allclose(neuron_values(acts, scan.best), response, atol=1e-12)
    # restricting the scan to later stages cannot find it
    later = scan_neurons(acts, labels, sublayers=["stage1.filter", "stage2.lcn"])
    assert later.best.sublayer in ("stage1.filter", "stage2.lcn") and later.accuracy < scan.accuracy
    assert set(later.per_sublayer) == {"stage1.filter", "stage2.lcn"}
    # top stimuli: the images with the strongest planted template, most exciting first
    top = top_stimuli(neuron_values(acts, scan.best), k=10)
    np.testing.assert_array_equal(top, np.argsort(-response)[:10])


def test_collect_activations_matches_model_and_batches():
    cfg = load_config("tiny")
    rng = np.random.default_rng(0)
    params = init_params(cfg, rng)
    images = rng.random((9, 1, 16, 16))
    acts = collect_activations(params, cfg, images, batch=4)
    _, cache = model_forward(images, params, cfg)
    outs = sublayer_outputs(cache)
    assert list(acts) == sublayer_names(cfg) == list(outs)
    for name, a in acts.items():
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, outs[name], rtol=1e-12, atol=1e-12)
    some = collect_activations(params, cfg, images, names=["stage2.lcn", "stage0.pool"])
    assert list(some) == ["stage0.pool", "stage2.lcn"]


def test_collect_activations_whitens_like_training():
    cfg = load_config("tiny", preprocess="zca")
    rng = np.random.default_rng(1)
    params = init_params(cfg, rng)
    frames = rng.random((300, 1, 16, 16))
    w = fit_zca(frames, 0.9)
    images = frames[:6]
    acts = collect_activations(params, cfg, images, whitening=w)
    _, cache = model_forward(whiten(images, w), params, cfg)
    np.testing.assert_allclose(acts["stage2.lcn"], sublayer_outputs(cache)["stage2.lcn"],
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="whitening"):
        collect_activations(params, cfg, images)
    with pytest.raises(ValueError, match="whitening"):
        collect_activations(params, load_config("tiny"), images, whitening=w)


def test_activations_and_scan_bad_input():
    cfg = load_config("tiny")
    params = init_params(cfg, np.random.default_rng(0))
    x = np.zeros((3, 1, 16, 16))
    with pytest.raises(ValueError, match="images"):
        collect_activations(params, cfg, np.zeros((3, 16, 16)))
    with pytest.raises(ValueError, match="images"):
        collect_activations(params, cfg, np.zeros((3, 1, 8, 8)))
    with pytest.raises(ValueError, match="names.*stage9"):
        collect_activations(params, cfg, x, names=["stage9.pool"])
    with pytest.raises(ValueError, match="batch"):
        collect_activations(params, cfg, x, batch=0)
    acts = collect_activations(params, cfg, x)
    with pytest.raises(ValueError, match="sublayers"):
        scan_neurons(acts, [0, 1, 0], sublayers=["stage0.conv"])
    with pytest.raises(ValueError, match="labels"):
        scan_neurons(acts, [0, 1])
    with pytest.raises(ValueError, match="labels"):
        scan_neurons(acts, [0, 1, 3])
    with pytest.raises(ValueError, match="unknown sublayer"):
        scan_neurons({"conv1": acts["stage0.pool"]}, [0, 1, 0])
    with pytest.raises(ValueError, match="outside"):
        neuron_values(acts, Neuron("stage0.pool", 0, 9, 0, 0))
    with pytest.raises(TypeError, match="neuron"):
        neuron_values(acts, ("stage0.pool", 0, 0, 0, 0))
    with pytest.raises(ValueError, match="values"):
        top_stimuli(np.zeros((2, 2)))
