"""The best neuron: every neuron as a decision stump on a labelled test set (the paper, Sec. 4.2).

For one neuron with activations ``a_1 .. a_N`` on the test images and labels ``l_i`` (face or
not), the paper takes the minimum and maximum activation, tries ``T = 20`` equally spaced
thresholds between them and reports the best accuracy::

    thr_t  = min_i a_i + t (max_i a_i - min_i a_i) / (T - 1),     t = 0 .. T-1
    acc_t  = (1/N) sum_i [ (a_i > thr_t) == l_i ]                 "face" when above (Figure 2)
    acc    = max_t acc_t        (ties: the lowest threshold)

Only "above the threshold means face" is tried, as in the paper's Figure 2, so a neuron that is
*silenced* by faces does not count as a face detector. A neuron whose activation is constant
predicts "not a face" everywhere (nothing is above its max) and scores the negatives' share.
:func:`stump_accuracy` does this for M neurons at once (one (N, M) comparison per threshold);
:func:`scan_neurons` runs it over every sublayer output and ranks the neurons.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import check_int, check_labels

KINDS = ("filter", "pool", "lcn")


class Neuron(NamedTuple):
    """One neuron: an entry ``[:, map, y, x]`` of the sublayer output ``sublayer``."""

    sublayer: str  # e.g. "stage2.lcn"
    stage: int  # s of "stage{s}.*"
    map: int  # k: which of the K filters (maps)
    y: int  # row of the output plane
    x: int  # column of the output plane


class NeuronScan(NamedTuple):
    best: Neuron  # the highest stump accuracy (ties: the first in model order)
    accuracy: float  # its accuracy, a fraction
    threshold: float  # its best threshold ("face" when activation > threshold)
    ranking: list[tuple[Neuron, float]]  # the ``top`` best neurons, best first
    per_sublayer: dict[str, float]  # best accuracy within each scanned sublayer
    accuracies: dict[str, np.ndarray]  # every neuron's accuracy, (K, h, w) per sublayer
    thresholds: dict[str, np.ndarray]  # every neuron's best threshold, (K, h, w) per sublayer


def stump_accuracy(values, labels, *, n_thresholds: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Best decision-stump accuracy of each column of ``values`` (N, M) for ``labels`` (N,).

    Thresholds: ``n_thresholds`` equally spaced from each column's min to its max (both
    included); prediction: positive when value > threshold. Returns (acc (M,), thr (M,)).
    """
    v = np.asarray(values)
    if v.ndim != 2 or v.shape[0] < 1:
        raise ValueError(f"values must be 2-D (N, M) with N >= 1, got shape {v.shape}")
    if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
        raise TypeError(f"values must be real numbers, got dtype {v.dtype}")
    v = v.astype(np.float64, copy=False)
    if not np.isfinite(v).all():
        raise ValueError("values contain NaN or inf")
    pos = check_labels(labels, v.shape[0])
    T = check_int("n_thresholds", n_thresholds)
    N, M = v.shape
    n_neg = N - int(pos.sum())
    lo, hi = v.min(axis=0), v.max(axis=0)  # (M,)
    steps = np.linspace(0.0, 1.0, T) if T > 1 else np.zeros(1)
    thr = lo[None, :] + steps[:, None] * (hi - lo)[None, :]  # (T, M)
    if T > 1:
        thr[-1] = hi  # exactly the max (no rounding): nothing is above it
    correct = np.empty((T, M))
    for t in range(T):  # a loop over the 20 thresholds, vectorised over the M neurons
        above = v > thr[t]  # (N, M)
        tp = above[pos].sum(axis=0)  # faces called faces
        fp = above.sum(axis=0) - tp  # distractors called faces
        correct[t] = tp + (n_neg - fp)
    best = correct.argmax(axis=0)  # (M,) first maximum: the lowest threshold
    cols = np.arange(M)
    return correct[best, cols] / N, thr[best, cols]


def parse_sublayer(name) -> int:
    """The stage index of a sublayer name ``stage{s}.{filter|pool|lcn}`` (ValueError if not)."""
    if isinstance(name, str) and name.startswith("stage") and "." in name:
        stage, kind = name[len("stage"):].split(".", 1)
        if stage.isdigit() and kind in KINDS:
            return int(stage)
    raise ValueError(f"unknown sublayer name {name!r}: expected 'stage{{s}}.{{{'|'.join(KINDS)}}}'")


def _check_acts(acts, names=None) -> list[str]:
    if not isinstance(acts, dict) or not acts:
        raise TypeError(f"acts must be a non-empty dict of sublayer outputs (collect_activations), "
                        f"got {type(acts).__name__}")
    if names is None:
        names = list(acts)
    else:
        if isinstance(names, str):
            raise TypeError(f"sublayers must be a list of names, got the string {names!r}")
        names = list(names)
        missing = [n for n in names if n not in acts]
        if missing or not names:
            raise ValueError(f"sublayers: {missing or 'none given'} not among acts' {list(acts)}")
    for n in names:
        parse_sublayer(n)
        if getattr(acts[n], "ndim", None) != 4:
            raise ValueError(f"acts[{n!r}] must be 4-D (N, K, h, w), got shape "
                             f"{getattr(acts[n], 'shape', None)}")
    return names


def scan_neurons(acts: dict, labels, *, n_thresholds: int = 20, top: int = 10,
                 sublayers=None) -> NeuronScan:
    """Score every neuron of ``acts`` (name -> (N, K, h, w)) as a stump and rank them.

    ``sublayers`` restricts the scan (e.g. ``["stage0.filter", "stage0.pool", "stage0.lcn"]``
    for the paper's "best first-stage neuron" baseline). Ties rank in model order.
    """
    names = _check_acts(acts, sublayers)
    top = check_int("top", top)
    N = acts[names[0]].shape[0]
    labels = check_labels(labels, N)
    accs, thrs, flat_acc = {}, {}, []
    for n in names:
        a = np.asarray(acts[n])
        if a.shape[0] != N:
            raise ValueError(f"acts[{n!r}] has {a.shape[0]} examples, acts[{names[0]!r}] has {N}")
        acc, thr = stump_accuracy(a.reshape(N, -1), labels, n_thresholds=n_thresholds)  # (N, Khw)
        accs[n], thrs[n] = acc.reshape(a.shape[1:]), thr.reshape(a.shape[1:])  # (K, h, w)
        flat_acc.append(acc)
    every = np.concatenate(flat_acc)  # all neurons, in model order
    offsets = np.cumsum([0] + [a.size for a in flat_acc])
    order = np.argsort(-every, kind="stable")[:top]  # stable: ties keep model order

    def neuron(i: int) -> Neuron:
        j = int(np.searchsorted(offsets, i, side="right") - 1)
        k, y, x = np.unravel_index(i - offsets[j], accs[names[j]].shape)
        return Neuron(names[j], parse_sublayer(names[j]), int(k), int(y), int(x))

    ranking = [(neuron(int(i)), float(every[i])) for i in order]
    best = ranking[0][0]
    return NeuronScan(best, ranking[0][1], float(thrs[best.sublayer][best.map, best.y, best.x]),
                      ranking, {n: float(accs[n].max()) for n in names}, accs, thrs)


def neuron_values(acts: dict, neuron: Neuron) -> np.ndarray:
    """The activations (N,) of ``neuron`` in ``acts``."""
    if not isinstance(neuron, Neuron):
        raise TypeError(f"neuron must be a Neuron, got {type(neuron).__name__}")
    _check_acts(acts, [neuron.sublayer])
    a = acts[neuron.sublayer]
    K, h, w = a.shape[1:]
    if not (0 <= neuron.map < K and 0 <= neuron.y < h and 0 <= neuron.x < w):
        raise ValueError(f"neuron {neuron} is outside {neuron.sublayer!r} of shape (K, h, w) = "
                         f"{(K, h, w)}")
    return np.asarray(a[:, neuron.map, neuron.y, neuron.x], dtype=np.float64)  # (N,)


def top_stimuli(values, k: int = 48) -> np.ndarray:
    """Indices of the ``k`` largest ``values`` (N,), most exciting first (the paper's Figure 3
    shows 48). Ties keep index order; ``k`` larger than N gives all N."""
    v = np.asarray(values)
    if v.ndim != 1 or v.size < 1:
        raise ValueError(f"values must be 1-D (N,) with N >= 1, got shape {v.shape}")
    k = check_int("k", k)
    return np.argsort(-v.astype(np.float64), kind="stable")[:k]
