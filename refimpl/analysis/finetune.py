"""Supervised classifiers on the top stage, alone and fine-tuned (the paper's Table 2, ImageNet).

The paper put one-vs-all logistic classifiers on the network's top layer, trained them first
alone, then fine-tuned the whole network with them, without regularisation; it compared
unsupervised pre-training with random initialisation. Here, with top-stage features
``h(x; W)`` (the last stage's output, flattened to D values) and C classes::

    z_c(x)  = <V_c, h(x; W)> + b_c                      one logistic unit per class, V: (D, C)
    L       = (1/B) sum_i sum_c  BCE(sigmoid(z_c(x_i)), [y_i == c])      (no regularisation)
            = (1/B) sum_i sum_c  softplus(z_ic) - [y_i == c] z_ic
    dL/dz   = (sigmoid(z) - Y) / B                      Y: one-hot labels (B, C)
    predict = argmax_c z_c(x)                           (sigmoids, not a softmax)

Phase 1 ("top only"): W fixed, so h is computed once and (V, b) are trained on it. Phase 2
("fine-tuned"): from the phase-1 classifier, every step also back-propagates
``dL/dh = dL/dz V^T`` into the network (refimpl.model.features_backward) and updates W too.
Both phases draw minibatches from ``rng`` and use refimpl.optim (Adagrad, as DistBelief, by
default). :func:`finetune_loss` is the whole loss and its exact gradient (gradient-checked).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ..backend import to_numpy
from ..config import ModelConfig
from ..model import check_params, features_backward, model_forward, sublayer_outputs
from ..optim import init_state, update
from ..preprocess import Whitening
from ._checks import check_images, check_int, check_rng
from .activations import collect_activations, model_input


class FinetuneResult(NamedTuple):
    top_only_accuracy: float  # validation accuracy, classifiers trained on fixed features
    finetuned_accuracy: float  # validation accuracy after fine-tuning the whole network
    history: list[dict]  # {"phase", "step", "loss"} every log_every steps, val accuracy per phase
    params: dict  # the fine-tuned network
    classifier: dict  # the fine-tuned classifiers {"V": (D, C), "b": (C,)}
    top_only_classifier: dict  # the phase-1 classifiers


def top_name(cfg: ModelConfig) -> str:
    """The sublayer whose output is the network's top: ``stage{S-1}.lcn`` (``.pool`` if no LCN)."""
    return f"stage{cfg.n_stages - 1}.{'lcn' if cfg.lcn else 'pool'}"


def check_classes(labels, n: int, name: str) -> np.ndarray:
    a = np.asarray(labels)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must be (N,) = ({n},) class indices, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        raise TypeError(f"{name} must be integer class indices 0 .. C-1, got dtype {a.dtype}")
    if a.size and a.min() < 0:
        raise ValueError(f"{name} must be class indices >= 0, got {a.min()}")
    return a.astype(np.int64)


def classifier_loss(h, y, clf: dict):
    """One-vs-all logistic loss on features ``h`` (B, D), labels ``y`` (B,), ``clf`` V (D, C),
    b (C,). Returns (loss, {"V", "b"} gradients, dL/dh (B, D))."""
    V, b = clf["V"], clf["b"]
    B, C = h.shape[0], V.shape[1]
    z = h @ V + b  # (B, C)
    Y = np.zeros((B, C), dtype=z.dtype)
    Y[np.arange(B), y] = 1.0
    loss = float(np.sum(np.logaddexp(0.0, z) - Y * z)) / B  # softplus(z) - y z
    dz = (1.0 / (1.0 + np.exp(-z)) - Y) / B  # (B, C)
    return loss, {"V": h.T @ dz, "b": dz.sum(axis=0)}, dz @ V.T


def accuracy(h, y, clf: dict) -> float:
    """Share of ``argmax_c z_c`` equal to ``y``."""
    return float(np.mean(np.argmax(h @ clf["V"] + clf["b"], axis=1) == y))


def finetune_loss(params: dict, clf: dict, cfg: ModelConfig, x, y):
    """The fine-tuning loss on model inputs ``x`` (B, C, H, W) and its exact gradient.

    Returns (loss, grads of params, grads of clf)."""
    _, cache = model_forward(x, params, cfg)
    top = top_name(cfg)
    out = sublayer_outputs(cache)[top]  # (B, K, h, w)
    h = to_numpy(out).reshape(out.shape[0], -1).astype(np.float64)  # (B, D)
    loss, g_clf, dh = classifier_loss(h, y, clf)
    dout = dh.reshape(out.shape).astype(out.dtype)  # (B, K, h, w)
    _, g_params = features_backward(cache, {top: dout})
    g_params = {k: g.astype(params[k].dtype, copy=False) for k, g in g_params.items()}
    return loss, g_params, g_clf


def finetune(params: dict, cfg: ModelConfig, train_images, train_labels, val_images, val_labels,
             *, rng: np.random.Generator, steps: int, lr: float,
             whitening: Whitening | None = None, finetune_steps: int | None = None,
             finetune_lr: float | None = None, batch: int = 100, optimizer: str = "adagrad",
             n_classes: int | None = None, log_every: int = 10,
             progress: bool = False) -> FinetuneResult:
    """Phase 1: ``steps`` steps on the classifiers alone; phase 2: ``finetune_steps`` (default
    ``steps``) steps on classifiers and network (``finetune_lr``, default ``lr``).

    Images are raw frames (N, C, H, W), whitened like training when ``whitening`` is given;
    labels are class indices (N,). ``params`` is not modified.
    """
    check_rng(rng)
    check_params(params, cfg)
    check_images(train_images, cfg, "train_images")
    check_images(val_images, cfg, "val_images")
    steps = check_int("steps", steps, minimum=0)
    ft_steps = steps if finetune_steps is None else check_int("finetune_steps", finetune_steps, 0)
    batch, log_every = check_int("batch", batch), check_int("log_every", log_every)
    y_tr = check_classes(train_labels, len(train_images), "train_labels")
    y_va = check_classes(val_labels, len(val_images), "val_labels")
    top_label = int(max(y_tr.max(), y_va.max()))
    C = top_label + 1 if n_classes is None else check_int("n_classes", n_classes, 2)
    if top_label >= C:
        raise ValueError(f"labels must be < n_classes = {C}")
    ft_lr = lr if finetune_lr is None else finetune_lr
    top = top_name(cfg)

    def features(p, images):
        a = collect_activations(p, cfg, images, whitening=whitening, names=[top])[top]
        return a.reshape(len(a), -1)  # (N, D)

    h_tr, h_va = features(params, train_images), features(params, val_images)
    clf = {"V": np.zeros((h_tr.shape[1], C)), "b": np.zeros(C)}
    history = []

    # Phase 1: the classifiers alone, on fixed features
    state = init_state(optimizer, clf)
    for step in tqdm(range(steps), disable=not progress, desc="top only"):
        idx = rng.integers(0, len(h_tr), size=batch)
        loss, g, _ = classifier_loss(h_tr[idx], y_tr[idx], clf)
        clf, state = update(optimizer, clf, g, state, lr=lr)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            history.append({"phase": "top_only", "step": step + 1, "loss": loss})
    top_clf = clf
    top_acc = accuracy(h_va, y_va, clf)
    history.append({"phase": "top_only", "step": steps, "val_accuracy": top_acc})

    # Phase 2: the whole network with the classifiers
    x_tr = model_input(train_images, cfg, whitening)
    net = {k: np.array(to_numpy(v), copy=True) for k, v in params.items()}
    both = {**{f"net.{k}": v for k, v in net.items()}, "clf.V": clf["V"], "clf.b": clf["b"]}
    state = init_state(optimizer, both)
    for step in tqdm(range(ft_steps), disable=not progress, desc="fine-tune"):
        idx = rng.integers(0, len(x_tr), size=batch)
        loss, g_net, g_clf = finetune_loss(net, clf, cfg, x_tr[idx], y_tr[idx])
        grads = {**{f"net.{k}": v for k, v in g_net.items()},
                 "clf.V": g_clf["V"], "clf.b": g_clf["b"]}
        both, state = update(optimizer, both, grads, state, lr=ft_lr)
        net = {k: both[f"net.{k}"] for k in params}
        clf = {"V": both["clf.V"], "b": both["clf.b"]}
        if (step + 1) % log_every == 0 or step + 1 == ft_steps:
            history.append({"phase": "finetune", "step": step + 1, "loss": loss})
    ft_acc = accuracy(features(net, val_images), y_va, clf) if ft_steps else top_acc
    history.append({"phase": "finetune", "step": ft_steps, "val_accuracy": ft_acc})
    return FinetuneResult(top_acc, ft_acc, history, net, clf, top_clf)
