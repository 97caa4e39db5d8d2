"""Tests of refimpl.analysis.finetune (Table 2): the loss's gradient, planted problems."""

import numpy as np
import pytest

from refimpl.analysis.finetune import classifier_loss, finetune, finetune_loss, top_name
from refimpl.config import load_config
from refimpl.gradcheck import TOLERANCE, relative_error
from refimpl.model import init_params


def numeric_grad(f, a, idx, h=1e-5):
    """Central differences of the scalar f() w.r.t. the entries idx of array a (in place,
    restored)."""
    flat, out = a.reshape(-1), np.empty(len(idx))
    for j, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        out[j] = (plus - minus) / (2 * h)
    return out


def test_finetune_loss_gradient_check():
    cfg = load_config("tiny")  # float64
    rng = np.random.default_rng(0)
    params = init_params(cfg, rng)
    D = int(np.prod(cfg.stages[-1].maps)) * 2 * 2
    clf = {"V": rng.normal(size=(D, 3)), "b": rng.normal(size=3)}
    x = rng.normal(size=(2, 1, 16, 16))
    y = np.array([0, 2])
    loss, g_params, g_clf = finetune_loss(params, clf, cfg, x, y)
    h = 1e-5

    def f():
        return finetune_loss(params, clf, cfg, x, y)[0]

    for name, arrays, grads in (("params", params, g_params), ("clf", clf, g_clf)):
        for k, a in arrays.items():
            idx = rng.choice(a.size, size=min(a.size, 6), replace=False)
            num = numeric_grad(f, a, idx, h)
            err = relative_error(grads[k].reshape(-1)[idx], num, floor_abs=1e-8 / h)
            assert err < TOLERANCE, f"{name}[{k}]: rel. error {err:.2e}"
    # W2 (the decoders) do not enter the classifier: exactly zero gradient
    assert not np.any(g_params["stage0.W2"])


def test_classifier_loss_is_one_vs_all_logistic():
    rng = np.random.default_rng(1)
    h, y = rng.normal(size=(5, 4)), np.array([0, 1, 2, 1, 0])
    clf = {"V": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    loss, _, _ = classifier_loss(h, y, clf)
    z = h @ clf["V"] + clf["b"]
    p = 1 / (1 + np.exp(-z))
    Y = np.eye(3)[y]
    expect = -np.sum(Y * np.log(p) + (1 - Y) * np.log(1 - p)) / 5  # sum of binary CEs per class
    assert loss == pytest.approx(expect, rel=1e-12)


def blob_template():
    t = np.zeros((16, 16))
    t[4:12, 4:12] = 1.0
    return t / np.linalg.norm(t)


def orthogonal_to(params, t, R):
    """Remove from every stage-0 filter its component along the template's patch under it, so
    the network's features are exactly blind to the template."""
    W1 = params["stage0.W1"]  # (OH, OW, K, C, R, R)
    for oy in range(W1.shape[0]):
        for ox in range(W1.shape[1]):
            tp = t[oy:oy + R, ox:ox + R]
            nn = float((tp ** 2).sum())
            if nn > 0:
                W1[oy, ox, :, 0] -= np.einsum("kuv,uv->k", W1[oy, ox, :, 0], tp)[:, None, None] \
                    / nn * tp
    return params


def test_finetuning_learns_what_the_top_features_miss():
    cfg = load_config("tiny")
    rng = np.random.default_rng(11)
    t = blob_template()
    params = orthogonal_to(init_params(cfg, rng), t, cfg.stages[0].field)

    def data(n):  # class 1: the template; class 0: not; a little noise on both
        y = rng.integers(0, 2, n)
        return 0.05 * rng.normal(size=(n, 1, 16, 16)) + y[:, None, None, None] * t, y

    (xt, yt), (xv, yv) = data(300), data(200)
    before = {k: v.copy() for k, v in params.items()}
    r = finetune(params, cfg, xt, yt, xv, yv, rng=np.random.default_rng(0), steps=100, lr=0.1,
                 finetune_steps=60, finetune_lr=0.03, batch=32)
    chance = max(yv.mean(), 1 - yv.mean())
    assert r.top_only_accuracy <= chance + 0.08  # blind features: about chance
    assert r.finetuned_accuracy >= 0.9  # the network learned to see the template
    assert all(np.array_equal(before[k], params[k]) for k in params)  # input not modified
    losses = [h["loss"] for h in r.history if h["phase"] == "finetune" and "loss" in h]
    assert losses[-1] < losses[0]


def test_separable_problem_top_only_and_finetuned():
    cfg = load_config("tiny")
    rng = np.random.default_rng(12)
    params = init_params(cfg, rng)

    def data(n):  # 3 classes: a bright bar at the left, centre or right
        y = rng.integers(0, 3, n)
        x = 0.1 * rng.normal(size=(n, 1, 16, 16))
        for i, c in enumerate(y):
            x[i, 0, 3:13, 2 + 5 * c:4 + 5 * c] += 1.0
        return x, y

    (xt, yt), (xv, yv) = data(200), data(100)
    r = finetune(params, cfg, xt, yt, xv, yv, rng=np.random.default_rng(0), steps=300, lr=0.1,
                 finetune_steps=10, finetune_lr=0.01, batch=32)
    # random features see the bars' positions, though not all linearly separably (chance 1/3)
    assert r.top_only_accuracy >= 0.6 and r.finetuned_accuracy >= 0.9
    assert r.classifier["V"].shape == (16, 3) and top_name(cfg) == "stage2.lcn"


def test_finetune_bad_input():
    cfg = load_config("tiny")
    params = init_params(cfg, np.random.default_rng(0))
    x, y = np.zeros((4, 1, 16, 16)), np.array([0, 1, 0, 1])
    rng = np.random.default_rng(0)
    kw = dict(rng=rng, steps=1, lr=0.1)
    with pytest.raises(TypeError, match="train_labels"):
        finetune(params, cfg, x, y.astype(float), x, y, **kw)
    with pytest.raises(ValueError, match="val_labels"):
        finetune(params, cfg, x, y, x, y[:3], **kw)
    with pytest.raises(ValueError, match="val_images"):
        finetune(params, cfg, x, y, x[:, :, :8], y, **kw)
    with pytest.raises(ValueError, match="n_classes"):
        finetune(params, cfg, x, y, x, y, n_classes=1, **kw)
    with pytest.raises(ValueError, match="n_classes"):
        finetune(params, cfg, x, y, x, y + 1, n_classes=2, **kw)
    with pytest.raises(ValueError, match="train_labels"):
        finetune(params, cfg, x, y - 1, x, y, **kw)
    with pytest.raises(ValueError, match="steps"):
        finetune(params, cfg, x, y, x, y, rng=rng, steps=-1, lr=0.1)
    with pytest.raises(TypeError, match="rng"):
        finetune(params, cfg, x, y, x, y, rng=0, steps=1, lr=0.1)
    with pytest.raises(ValueError, match="whitening"):
        finetune(params, load_config("tiny", preprocess="zca"), x, y, x, y, **kw)
