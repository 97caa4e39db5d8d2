"""The paper's experiments in miniature: train, find the concept neuron, run every baseline.

    catneuron reproduce --quick --out runs/reproduce      # minutes on 2 cores
    catneuron reproduce --full --seeds 5 --out runs/full  # a bigger model, more frames and steps

Two worlds, each scored with the same protocol::

    world     training frames                          labelled sets (val / test, 35:65)
    faces     photo crops, ORL faces pasted in          unseen faces vs textured distractors
    control   photo crops, one digit class pasted in    that class vs other classes + crops

    for each world, for each seed:
        train cfg on the frames ........................ "best_neuron"
        the same unit, untrained ....................... "at_init"
        the same network at initialisation ............. "random_weights"
        train cfg with lcn = false ..................... "no_lcn"
        train cfg on frames without the concept ........ "no_faces"
        training frames as linear filters .............. "best_linear_filter"
        stage-0 sublayers of the trained network ....... "first_stage"
        always "no" ..................................... "chance"
    faces world, seed 0: cats (and bodies, when the video is installed) with the trained network;
    Figure 2 (histograms), Figure 3 (top 48, optimal stimulus), Figures 4-5 (invariance);
    Table 2: fine-tuning on the labelled set, pre-trained vs random initialisation.

Protocol (the paper scored neurons on its test set; we keep a validation split for every
choice): each network's neurons are scanned on the *validation* set (20 thresholds between min
and max, "positive" when the activation is above the threshold, refimpl.analysis.neurons); the
best neuron and its threshold are then applied unchanged to the *test* set, and that test
accuracy is what the tables show. The paper's own number (best neuron chosen on the test set
itself) is kept as ``paper_protocol``. Seeds change the initial weights and the minibatch order;
frames and labelled sets are the same for every seed.

Everything comes from refimpl: training (refimpl.train), data (refimpl.data) and the analyses
(refimpl.analysis); this module only runs them in order and collects the numbers. The report
(report.md, figures, results.json) is written by :mod:`catneuron.report`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np
from tqdm.auto import tqdm

TABLE1_KEYS = ("chance", "random_weights", "best_linear_filter", "first_stage", "best_neuron",
               "no_lcn", "no_faces")
WORLDS = ("faces", "control")


@dataclass(frozen=True)
class Mode:
    """What one mode runs. Training length and frame count are the model config's
    (``train.steps``, ``train.frames``); the rest is here."""

    name: str
    config: str  # the model config used when --config is not given
    n_val: int  # validation images per labelled set (chooses neurons, thresholds, filters)
    n_test: int  # test images per labelled set (only scored, never used to choose)
    n_filters: int  # training frames tried as linear filters (paper: 100,000)
    face_fraction: float  # share of face-world frames with a face (refimpl.data.frames)
    concept_fraction: float  # share of control-world frames with the concept (issue 5: 20-30%)
    concept: int  # the control world's class of the labelled set
    concept_scale: tuple[float, float]  # its side / frame side in the control frames
    concept_placement: str  # "anywhere" or "centred" (refimpl.data.control.ControlConfig)
    stimulus_starts: int  # random starts of the optimal-stimulus ascent (eq. 2)
    stimulus_steps: int
    finetune_few: int  # labelled training images for the "few labels" column of Table 2
    finetune_steps: int  # steps of the top-only classifier, and again of whole-network tuning
    finetune_lr: float
    finetune_all: int | None = None  # labelled training images for "all labels" (None: all)
    seeds: int = 3


MODES = {
    "quick": Mode("quick", "quick", n_val=370, n_test=740, n_filters=2000, face_fraction=0.5,
                  concept_fraction=0.3, concept=0, concept_scale=(0.6, 0.9),
                  concept_placement="anywhere", stimulus_starts=3, stimulus_steps=60,
                  finetune_few=100, finetune_steps=150, finetune_lr=0.05),
    "full": Mode("full", "full", n_val=1000, n_test=3700, n_filters=10000, face_fraction=0.5,
                 concept_fraction=0.3, concept=0, concept_scale=(0.6, 0.9),
                 concept_placement="anywhere", stimulus_starts=5, stimulus_steps=100,
                 finetune_few=1000, finetune_steps=1000, finetune_lr=0.05),
}

# The paper's numbers (NOTES.md, Evaluation protocol), as fractions.
PAPER = {
    "faces": {"chance": 0.648, "best_linear_filter": 0.74, "first_stage": 0.71,
              "best_neuron": 0.817, "no_lcn": 0.785, "no_faces": 0.725},
    "cats": {"best_linear_filter": 0.672, "best_neuron": 0.748},
    "bodies": {"best_linear_filter": 0.681, "best_neuron": 0.767},
    "imagenet": {"2009 (~10K classes)": {"random_init": 0.161, "pretrained": 0.192},
                 "2011 (~20K classes)": {"random_init": 0.136, "pretrained": 0.158}},
}


class Labelled(NamedTuple):
    """A labelled set: images (N, C, H, W) raw, labels (N,) bool, note (caveats)."""

    images: np.ndarray
    labels: np.ndarray
    note: str


class Scored(NamedTuple):
    """One network's best neuron: chosen on validation, scored on test."""

    neuron: Any  # refimpl.analysis.Neuron
    threshold: float  # chosen on validation
    val: float  # its validation accuracy
    test: float  # its test accuracy at the validation threshold
    paper_protocol: float  # the best neuron's accuracy when chosen on the test set itself
    test_values: np.ndarray  # (N_test,) its activations on the test set


# ---------------------------------------------------------------------------------------------
# Scoring


def score_network(params, cfg, whitening, val: Labelled, test: Labelled, *,
                  sublayers=None) -> Scored:
    """Scan every neuron (of ``sublayers``, default all) on ``val``; score the best on ``test``."""
    from refimpl.analysis import collect_activations, neuron_values, scan_neurons

    acts_val = collect_activations(params, cfg, val.images, whitening=whitening, names=sublayers)
    scan = scan_neurons(acts_val, val.labels, sublayers=sublayers)
    acts_test = collect_activations(params, cfg, test.images, whitening=whitening, names=sublayers)
    values = neuron_values(acts_test, scan.best)
    acc = float(np.mean((values > scan.threshold) == test.labels))
    oracle = scan_neurons(acts_test, test.labels, sublayers=sublayers).accuracy
    return Scored(scan.best, scan.threshold, scan.accuracy, acc, oracle, values)


def score_unit(params, cfg, whitening, neuron, val: Labelled, test: Labelled) -> float:
    """Test accuracy of one given ``neuron`` of ``params``, its threshold chosen on ``val``."""
    from refimpl.analysis import collect_activations, neuron_values, stump_accuracy

    names = [neuron.sublayer]
    v_val = neuron_values(collect_activations(params, cfg, val.images, whitening=whitening,
                                              names=names), neuron)
    _, thr = stump_accuracy(v_val[:, None], val.labels)
    v_test = neuron_values(collect_activations(params, cfg, test.images, whitening=whitening,
                                               names=names), neuron)
    return float(np.mean((v_test > thr[0]) == test.labels))


def score_linear(frames, whitening, val: Labelled, test: Labelled, *, n_filters, rng) -> dict:
    """The best of ``n_filters`` training frames as a linear filter (whitened by ``whitening``
    when given, like the images): chosen on ``val``, scored on ``test`` at its val threshold."""
    from refimpl.analysis.baselines import linear_filter_baseline
    from refimpl.preprocess import whiten

    n = min(n_filters, len(frames))
    lin = linear_filter_baseline(frames, val.images, val.labels, n_filters=n, rng=rng,
                                 whitening=whitening)
    x = test.images if whitening is None else whiten(test.images, whitening, dtype=np.float64)
    values = np.asarray(x, np.float64).reshape(len(x), -1) @ lin.filter.reshape(-1)  # (N_test,)
    return {"test": float(np.mean((values > lin.threshold) == test.labels)), "val": lin.accuracy,
            "index": lin.index, "n_filters": n, "filter": lin.filter}


# ---------------------------------------------------------------------------------------------
# Worlds: frames and labelled sets


class World(NamedTuple):
    name: str
    frames: np.ndarray  # (F, C, H, W) training frames with the concept
    frames_without: np.ndarray  # (F, C, H, W) training frames without it ("no_faces")
    val: Labelled
    test: Labelled
    info: dict  # sample sizes, sources, notes


def _labelled(images, labels, note) -> Labelled:
    return Labelled(np.asarray(images, np.float32), np.asarray(labels).astype(bool), str(note))


def labelled_set(name: str, seed: int, n: int, cfg, *, cache_dir=None) -> Labelled:
    """The named labelled set of refimpl.data (``faces-val``, ``cats-test``, ...) at ``cfg``'s
    image size and channels: ``n`` images drawn from ``seed`` (cached like every dataset)."""
    from refimpl.data import load

    d = load(name, seed=seed, size=cfg.image_size, channels=cfg.channels, n=n, cache_dir=cache_dir)
    return _labelled(d.arrays["images"], d.arrays["labels"], d.info["note"])


def face_world(cfg, mode: Mode, *, cache_dir=None) -> World:
    """Face frames (refimpl.data.frames, cached), face-free frames, face val/test sets."""
    from refimpl.data import load

    size, ch, n = cfg.image_size, cfg.channels, cfg.train.frames
    seed = cfg.train.data_seed
    fr = load("frames", seed=seed, size=size, channels=ch, n=n, face_fraction=mode.face_fraction,
              cache_dir=cache_dir)
    # face_fraction 0 pastes no face; "frames-noface" also drops frames where OpenCV's detector
    # fires (faces in the photos themselves): a cleaner control than the paper's.
    nf = load("frames-noface", seed=seed, size=size, channels=ch, n=n, face_fraction=0.0,
              cache_dir=cache_dir)
    val = labelled_set("faces-val", seed, mode.n_val, cfg, cache_dir=cache_dir)
    test = labelled_set("faces-test", seed + 1, mode.n_test, cfg, cache_dir=cache_dir)
    info = {"frames": n, "face_fraction": mode.face_fraction,
            "frames_with_face": int(fr.arrays["has_face"].sum()),
            "no_face_frames": "face_fraction 0 and every frame where OpenCV's face detector "
                              "fires dropped (refimpl.data.no_face_frames)",
            "sources": fr.info["sources"], "n_val": len(val.labels), "n_test": len(test.labels),
            "val_positives": int(val.labels.sum()), "test_positives": int(test.labels.sum()),
            "note": test.note}
    return World("faces", fr.arrays["frames"], nf.arrays["frames"], val, test, info)


def control_world(cfg, mode: Mode) -> World:
    """Control frames (one class of the labelled set pasted in), plain frames, control sets."""
    from refimpl.data.control import ControlConfig, control_frames, control_set

    size, ch, n = cfg.image_size, cfg.channels, cfg.train.frames
    seed = cfg.train.data_seed
    ccfg = ControlConfig(size=size, channels=ch, concept=mode.concept,
                         concept_fraction=mode.concept_fraction,
                         object_scale=tuple(mode.concept_scale), placement=mode.concept_placement)
    fr = control_frames(n, ccfg, rng=np.random.default_rng(seed))
    plain = control_frames(n, dataclasses.replace(ccfg, concept_fraction=0.0),
                           rng=np.random.default_rng(seed + 1))
    sets = {s: control_set(mode.n_val if s == "val" else mode.n_test, size, concept=mode.concept,
                           channels=ch, split=s,
                           rng=np.random.default_rng(seed + 2 + (s == "test")))
            for s in ("val", "test")}
    val, test = (_labelled(sets[s].images, sets[s].labels, sets[s].note) for s in ("val", "test"))
    info = {"frames": n, "concept": mode.concept, "concept_fraction": mode.concept_fraction,
            "concept_scale": list(mode.concept_scale), "concept_placement": mode.concept_placement,
            "frames_with_concept": int(fr.has_face.sum()),
            "no_faces_frames": "the same photo crops with no concept pasted",
            "n_val": len(val.labels), "n_test": len(test.labels),
            "val_positives": int(val.labels.sum()), "test_positives": int(test.labels.sum()),
            "note": test.note}
    return World("control", fr.frames, plain.frames, val, test, info)


def extra_sets(cfg, mode: Mode, *, cache_dir=None) -> dict[str, tuple[Labelled, Labelled] | str]:
    """Cats (and bodies when the video is installed): (val, test), or why they were not run."""
    from refimpl.data.sources import get_source

    out = {}
    for kind, needs in (("cats", "skimage"), ("bodies", "opencv-doc")):
        if not get_source(needs).installed():
            out[kind] = (f"not run: data source {needs!r} is not installed "
                         f"({get_source(needs).install})")
            continue
        seed = cfg.train.data_seed
        out[kind] = (labelled_set(f"{kind}-val", seed, mode.n_val, cfg, cache_dir=cache_dir),
                     labelled_set(f"{kind}-test", seed + 1, mode.n_test, cfg, cache_dir=cache_dir))
    return out


# ---------------------------------------------------------------------------------------------
# One seed of one world


def with_seed(cfg, seed: int):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=int(seed)))


def run_seed(cfg, world: World, seed: int, mode: Mode, *, step: Callable[[str], None],
             train_progress: bool = False) -> dict:
    """Every Table 1 row of ``world`` for one seed; also the networks, for figures."""
    from refimpl.analysis.baselines import chance_accuracy
    from refimpl.model import init_params
    from refimpl.preprocess import fit_zca
    from refimpl.train import train

    cfg = with_seed(cfg, seed)
    row, nets = {}, {}
    step(f"{world.name} seed {seed}: train")
    t0 = time.perf_counter()
    trained = train(cfg, world.frames, progress=train_progress)
    row["train_seconds"] = time.perf_counter() - t0
    row["final_loss"] = trained.history[-1]["loss"] if trained.history else None
    w = trained.whitening
    initial = init_params(cfg, np.random.default_rng(cfg.train.seed))  # what train() started from
    nets["trained"], nets["initial"], nets["whitening"] = trained.params, initial, w

    step(f"{world.name} seed {seed}: scan neurons")
    best = score_network(trained.params, cfg, w, world.val, world.test)
    rand = score_network(initial, cfg, w, world.val, world.test)
    stage0 = [n for n in _names(cfg) if n.startswith("stage0.")]
    first = score_network(trained.params, cfg, w, world.val, world.test, sublayers=stage0)
    row.update(chance=chance_accuracy(world.test.labels), best_neuron=best.test,
               random_weights=rand.test, first_stage=first.test,
               at_init=score_unit(initial, cfg, w, best.neuron, world.val, world.test))
    row["val"] = {"best_neuron": best.val, "random_weights": rand.val, "first_stage": first.val}
    row["paper_protocol"] = {"best_neuron": best.paper_protocol,
                             "random_weights": rand.paper_protocol,
                             "first_stage": first.paper_protocol}
    row["best_neuron_location"] = best.neuron._asdict()
    nets["best"] = best

    step(f"{world.name} seed {seed}: linear filters")
    lin = score_linear(world.frames, w, world.val, world.test, n_filters=mode.n_filters,
                       rng=np.random.default_rng(1000 + seed))
    row["best_linear_filter"] = lin["test"]
    row["val"]["best_linear_filter"] = lin["val"]
    row["n_filters"] = lin["n_filters"]
    nets["linear_filter"] = lin["filter"]
    if w is None:
        # On raw frames a dot product is dominated by mean brightness; templates in whitened
        # space (the earlier trials) are the stronger baseline: report both.
        zca = fit_zca(world.frames, cfg.zca_variance)
        lin_z = score_linear(world.frames, zca, world.val, world.test, n_filters=mode.n_filters,
                             rng=np.random.default_rng(1000 + seed))
        row["best_linear_filter_zca"] = lin_z["test"]
        row["val"]["best_linear_filter_zca"] = lin_z["val"]

    step(f"{world.name} seed {seed}: train without LCN")
    cfg_nolcn = dataclasses.replace(cfg, lcn=False)
    r = train(cfg_nolcn, world.frames, progress=train_progress)
    s = score_network(r.params, cfg_nolcn, r.whitening, world.val, world.test)
    row["no_lcn"], row["val"]["no_lcn"] = s.test, s.val

    step(f"{world.name} seed {seed}: train without the concept")
    r = train(cfg, world.frames_without, progress=train_progress)
    s = score_network(r.params, cfg, r.whitening, world.val, world.test)
    row["no_faces"], row["val"]["no_faces"] = s.test, s.val
    return {"row": row, "nets": nets}


def _names(cfg) -> list[str]:
    from refimpl.analysis import sublayer_names

    return sublayer_names(cfg)


# ---------------------------------------------------------------------------------------------
# Summaries


def summarise(rows: list[dict], keys=TABLE1_KEYS + ("at_init", "best_linear_filter_zca")) -> dict:
    """Means over seeds, per-seed lists and spreads (sample std; 0 for one seed) of ``keys``."""
    out: dict[str, Any] = {}
    per_seed, spread = {}, {}
    for k in keys:
        if not all(k in r for r in rows):
            continue
        v = np.array([float(r[k]) for r in rows])
        out[k] = float(v.mean())
        per_seed[k] = v.tolist()
        spread[k] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    out["per_seed"], out["spread"] = per_seed, spread
    return out


ORDERINGS = (
    ("best_neuron", ">", "best_linear_filter"),
    ("best_linear_filter", ">", "random_weights"),
    ("random_weights", ">", "chance"),
    ("no_lcn", "<", "best_neuron"),
    ("no_faces", "<", "best_neuron"),
)


# Not the paper's, but what tells learning from template matching and random features.
EXTRA_ORDERINGS = (
    ("best_neuron", ">", "at_init"),
    ("best_neuron", ">", "best_linear_filter_zca"),
)


def orderings(summary: dict) -> list[dict]:
    """Each of the paper's orderings (``paper``: True) and the extra checks: does it hold on
    the means, and in how many seeds."""
    out = []
    for a, op, b in ORDERINGS + EXTRA_ORDERINGS:
        if a not in summary or b not in summary:
            continue
        va, vb = np.array(summary["per_seed"][a]), np.array(summary["per_seed"][b])
        holds = (va > vb) if op == ">" else (va < vb)
        mean_holds = summary[a] > summary[b] if op == ">" else summary[a] < summary[b]
        out.append({"claim": f"{a} {op} {b}", "paper": (a, op, b) in ORDERINGS,
                    "holds_on_means": bool(mean_holds),
                    "seeds_holding": int(holds.sum()), "seeds": int(len(holds)),
                    "difference": float(summary[a] - summary[b])})
    return out


# ---------------------------------------------------------------------------------------------
# The whole pipeline


def plan(n_seeds: int, extras: dict) -> list[str]:
    """The pipeline's stages, for the progress bar."""
    steps = ["data"]
    for world in WORLDS:
        for s in range(n_seeds):
            steps += [f"{world} seed {s}: {x}" for x in ("train", "scan neurons", "linear filters",
                                                          "train without LCN",
                                                          "train without the concept")]
        steps.append(f"{world}: figures")
    steps += [f"{k} neuron" for k, v in extras.items() if not isinstance(v, str)]
    steps += ["invariance", "fine-tuning", "report"]
    return steps


def reproduce(mode: str | Mode = "quick", *, seeds: int | None = None, config=None, out=None,
              progress: bool = True, cache_dir=None) -> dict:
    """Run the whole pipeline and (with ``out``) write the report; return the results dict."""
    from pathlib import Path

    from refimpl.config import config_to_dict, load_config

    from . import report

    mode = MODES[mode] if isinstance(mode, str) else mode
    n_seeds = mode.seeds if seeds is None else seeds
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    cfg = load_config(config or mode.config) if not hasattr(config, "stages") else config
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    extras = extra_sets(cfg, mode, cache_dir=cache_dir)
    bar = tqdm(plan(n_seeds, extras), disable=not progress, desc="reproduce", unit="stage",
               dynamic_ncols=True)
    it = iter(bar)

    def step(label: str) -> None:
        next(it, None)
        bar.set_postfix_str(label)

    step("data")
    worlds = {"faces": face_world(cfg, mode, cache_dir=cache_dir),
              "control": control_world(cfg, mode)}
    results: dict[str, Any] = {
        "mode": mode.name, "mode_settings": dataclasses.asdict(mode), "seeds": list(range(n_seeds)),
        "config": config_to_dict(cfg), "paper": PAPER,
        "protocol": "each network's neurons are scanned on the validation set (20 thresholds "
                    "from min to max, positive when above); the best neuron and threshold are "
                    "scored unchanged on the test set; paper_protocol: chosen on test itself",
    }
    seed0_nets, face_nets = {}, []  # seed 0's networks per world (figures); every face seed's
    for name, world in worlds.items():
        runs = [run_seed(cfg, world, s, mode, step=step) for s in range(n_seeds)]
        rows = [r["row"] for r in runs]
        summary = summarise(rows)
        summary["paper_protocol"] = summarise([r["paper_protocol"] for r in rows],
                                              keys=("best_neuron", "random_weights", "first_stage"))
        summary["val"] = summarise([r["val"] for r in rows],
                                   keys=TABLE1_KEYS + ("best_linear_filter_zca",))
        summary["seconds_train"] = [r["train_seconds"] for r in rows]
        summary["best_neuron_location"] = [r["best_neuron_location"] for r in rows]
        summary["orderings"] = orderings(summary)
        summary["data"] = world.info
        results[name] = summary
        step(f"{name}: figures")
        seed0_nets[name] = runs[0]["nets"]
        if name == "faces":
            face_nets = [r["nets"] for r in runs]
        if out is not None:
            report.world_figures(out, name, cfg, world, runs[0]["nets"], mode)
            report.save_results(out, results)  # partial: this world is done

    # cats and bodies: the face world's networks, every seed
    for kind, sets in extras.items():
        if isinstance(sets, str):
            results.setdefault("not_run", {})[kind] = sets
            continue
        step(f"{kind} neuron")
        results[kind] = extra_scores(cfg, worlds["faces"], sets, face_nets, mode)

    step("invariance")
    nets = seed0_nets["faces"]
    results["invariance"] = report.invariance(out, cfg, nets, rng=np.random.default_rng(7))

    step("fine-tuning")
    results["table2"] = finetune_table(cfg, nets, mode)

    step("report")
    results["seconds"] = time.perf_counter() - t_start
    if out is not None:
        report.write_report(out, results)
    bar.close()
    return results


def extra_scores(cfg, faces: World, sets: tuple[Labelled, Labelled], nets: list[dict],
                 mode: Mode) -> dict:
    """Cats or bodies: the best neuron of each seed's face-world network (``nets``, one per
    seed, as :func:`run_seed` returns them) and the baselines, on the cat or body sets."""
    from refimpl.analysis.baselines import chance_accuracy

    val, test = sets
    rows = []
    for seed, n in enumerate(nets):
        w = n["whitening"]
        best = score_network(n["trained"], cfg, w, val, test)
        rand = score_network(n["initial"], cfg, w, val, test)
        lin = score_linear(faces.frames, w, val, test, n_filters=mode.n_filters,
                           rng=np.random.default_rng(2000 + seed))
        rows.append({"chance": chance_accuracy(test.labels), "best_neuron": best.test,
                     "random_weights": rand.test, "best_linear_filter": lin["test"],
                     "at_init": score_unit(n["initial"], cfg, w, best.neuron, val, test)})
    summary = summarise(rows, keys=("chance", "random_weights", "best_linear_filter",
                                    "best_neuron", "at_init"))
    summary["orderings"] = orderings(summary)
    summary["data"] = {"n_val": len(val.labels), "n_test": len(test.labels),
                       "val_positives": int(val.labels.sum()),
                       "test_positives": int(test.labels.sum()), "note": test.note}
    return summary


def finetune_table(cfg, nets: dict, mode: Mode) -> dict:
    """Table 2 in small: validation accuracy of one-vs-all classifiers on the top stage, top
    layer alone and whole network fine-tuned, pre-trained vs random init, few labels and all."""
    try:
        from refimpl.analysis.finetune import finetune
    except ModuleNotFoundError as err:
        if err.name != "refimpl.analysis.finetune":
            raise
        return {"not_run": "refimpl.analysis.finetune is not available yet"}
    from refimpl.data.labelled import load_labelled

    lab = load_labelled(cfg.image_size, channels=cfg.channels, rng=np.random.default_rng(3))
    out: dict[str, Any] = {"source": lab.source, "classes": len(lab.classes),
                           "n_train": len(lab.y_train), "n_val": len(lab.y_val)}
    starts = {"pretrained": nets["trained"], "random_init": nets["initial"]}
    n_all = len(lab.y_train) if mode.finetune_all is None else mode.finetune_all
    for labels_name, n in (("few", mode.finetune_few), ("all", n_all)):
        n = min(n, len(lab.y_train))
        for start, params in starts.items():
            res = finetune(params, cfg, lab.x_train[:n], lab.y_train[:n], lab.x_val, lab.y_val,
                           rng=np.random.default_rng(5), steps=mode.finetune_steps,
                           lr=mode.finetune_lr, whitening=nets["whitening"])
            out.setdefault(labels_name, {"n_labels": n})[start] = {
                "top_only": float(res.top_only_accuracy),
                "finetuned": float(res.finetuned_accuracy)}
    return out
