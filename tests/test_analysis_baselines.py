"""Tests of refimpl.analysis.baselines: chance, a planted linear filter among decoys."""

import numpy as np
import pytest

from refimpl.analysis.baselines import (chance_accuracy, linear_filter_baseline,
                                        random_weights_baseline)
from refimpl.analysis.activations import collect_activations
from refimpl.analysis.neurons import scan_neurons, stump_accuracy
from refimpl.config import load_config
from refimpl.model import init_params
from refimpl.preprocess import fit_zca, whiten


def test_chance_accuracy():
    labels = np.zeros(37000, dtype=bool)
    labels[:13026] = True  # the paper's LFW faces vs ImageNet distractors
    assert chance_accuracy(labels) == pytest.approx(23974 / 37000)
    assert round(chance_accuracy(labels), 3) == 0.648
    assert chance_accuracy([1, 1, 1, 0]) == 0.75  # the majority may be positive
    with pytest.raises(ValueError, match="labels"):
        chance_accuracy([0, 2])
    with pytest.raises(ValueError, match="empty"):
        chance_accuracy([])


def planted_world(rng, n_frames=60, n=150, size=8):
    """Decoy frames (noise) and one frame that is the template; images have the template in
    faces only, at a random positive amplitude, under noise."""
    frames = rng.normal(size=(n_frames, 1, size, size))
    template = rng.normal(size=(1, size, size))
    at = min(17, n_frames - 1)
    frames[at] = 3.0 * template  # its scale must not matter: filters are normalised
    labels = rng.random(n) < 0.35
    amp = np.where(labels, rng.uniform(0.0, 0.6, n), 0.0)
    images = rng.normal(size=(n, 1, size, size)) + amp[:, None, None, None] * template
    return frames, images, labels, template, at


def test_linear_filter_finds_planted_template():
    rng = np.random.default_rng(3)
    frames, images, labels, template, at = planted_world(rng)
    res = linear_filter_baseline(frames, images, labels, n_filters=60, rng=rng, chunk=7)
    assert res.index == at
    u = template / np.linalg.norm(template)
    np.testing.assert_allclose(res.filter, u, atol=1e-12)
    response = images.reshape(len(images), -1) @ u.reshape(-1)
    acc, thr = stump_accuracy(response[:, None], labels)
    assert res.accuracy == pytest.approx(acc[0]) and res.threshold == pytest.approx(thr[0])
    assert res.accuracy > chance_accuracy(labels) + 0.1
    # every decoy does worse, and each is scored by its own unit-norm response
    decoys = res.indices != at
    assert res.accuracies[decoys].max() < res.accuracy
    j = int(np.flatnonzero(decoys)[0])
    d = frames[res.indices[j]].reshape(-1)
    acc_d, _ = stump_accuracy((images.reshape(len(images), -1) @ d)[:, None], labels)
    assert res.accuracies[j] == pytest.approx(acc_d[0])


def test_linear_filter_sampling_and_whitening():
    rng = np.random.default_rng(4)
    frames, images, labels, _, _ = planted_world(rng)
    res = linear_filter_baseline(frames, images, labels, n_filters=10, rng=np.random.default_rng(0))
    again = linear_filter_baseline(frames, images, labels, n_filters=10,
                                   rng=np.random.default_rng(0))
    assert len(set(res.indices)) == 10 and np.array_equal(res.indices, again.indices)
    w = fit_zca(frames, 0.9)
    white = linear_filter_baseline(frames, images, labels, n_filters=10,
                                   rng=np.random.default_rng(0), whitening=w)
    u = whiten(frames[white.index:white.index + 1], w, dtype=np.float64)[0]
    np.testing.assert_allclose(white.filter, u / np.linalg.norm(u), atol=1e-12)
    white_images = whiten(images, w, dtype=np.float64).reshape(len(images), -1)  # (N, D)
    response = white_images @ white.filter.reshape(-1)
    assert white.accuracy == pytest.approx(stump_accuracy(response[:, None], labels)[0][0])


def test_linear_filter_bad_input():
    rng = np.random.default_rng(0)
    frames, images, labels, _, _ = planted_world(rng, n_frames=5, n=10)
    with pytest.raises(ValueError, match="n_filters"):
        linear_filter_baseline(frames, images, labels, n_filters=6, rng=rng)
    with pytest.raises(ValueError, match="share"):
        linear_filter_baseline(frames[:, :, :4], images, labels, n_filters=2, rng=rng)
    with pytest.raises(ValueError, match="labels"):
        linear_filter_baseline(frames, images, labels[:3], n_filters=2, rng=rng)
    with pytest.raises(TypeError, match="rng"):
        linear_filter_baseline(frames, images, labels, n_filters=2, rng=0)


def test_random_weights_baseline_is_a_scan_of_init():
    cfg = load_config("tiny")
    rng = np.random.default_rng(0)
    images = rng.random((30, 1, 16, 16))
    labels = np.arange(30) % 3 == 0
    a = random_weights_baseline(cfg, images, labels, rng=np.random.default_rng(7))
    params = init_params(cfg, np.random.default_rng(7))  # the same draw, scanned by hand
    b = scan_neurons(collect_activations(params, cfg, images), labels)
    assert a.best == b.best and a.accuracy == b.accuracy
    other = random_weights_baseline(cfg, images, labels, rng=np.random.default_rng(8))
    assert other.ranking != a.ranking  # another draw is another network
