"""Model and training configs: typed frozen dataclasses, loaded strictly from TOML.

A config file (``configs/NAME.toml``) has three parts; every field has a commented default below::

    image_size = 16          # top level: the model
    channels = 1
    ...
    [[stages]]               # one table per stage (the paper: 3 identical stages = 9 sublayers)
    field = 5
    ...
    [train]                  # the training loop
    batch_size = 100
    ...

``load_config("tiny")`` reads ``configs/tiny.toml`` of the repository; any other string with a
``/`` or ending in ``.toml`` is read as a path. Loading is strict: an unknown key, a value of the
wrong type or a geometry that does not fit (a field larger than its input, an even LCN window...)
is a ``ValueError`` naming the key and, for stage fields, the stage.

Stage geometry (square planes; see :mod:`refimpl.geometry`): a stage with input ``(C, H, H)``
filters it to ``f: (K, OH, OH)``, ``OH = (H - field) // stride + 1``, pools it to
``p: (K, PH, PH)``, ``PH = (OH - pool_window) // pool_stride + 1``, and LCN keeps that shape.
The next stage's input is ``(K, PH, PH)``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs"

GRADIENT_MODES = ("joint", "local")
PREPROCESS = ("none", "zca")
OPTIMIZERS = ("sgd", "adagrad")
DTYPES = ("float32", "float64")
BORDERS = ("renorm", "zero")


@dataclass(frozen=True)
class StageConfig:
    """One stage = local filtering (W1) -> L2 pooling (fixed H) -> LCN, plus its decoder W2."""

    field: int = 18  # R: receptive field is R x R over all input channels (paper: 18)
    stride: int = 1  # S: step between receptive fields ([open] in the paper)
    maps: int = 8  # K: filters at each location (paper: 8)
    pool_window: int = 5  # P: L2 pooling over P x P neighbourhoods of one map (paper: 5)
    pool_stride: int = 1  # pooling step ([open])
    lcn_window: int = 5  # LCN Gaussian window, odd (paper: 5x5)
    lcn_width: float = 1.0  # std of the LCN Gaussian in pixels ([open])
    lcn_border: str = "renorm"  # LCN border handling: "renorm" or "zero" ([open])


@dataclass(frozen=True)
class TrainConfig:
    """The training loop (refimpl.train)."""

    batch_size: int = 100  # minibatch size (paper: 100)
    steps: int = 1000  # optimiser steps
    optimizer: str = "adagrad"  # "sgd" or "adagrad" (DistBelief's per-parameter rate)
    lr: float = 0.05  # gamma: the (base) learning rate
    adagrad_floor: float = 1e-8  # eta_i = lr / max(sqrt(sum of past g_i^2), floor)
    seed: int = 0  # seeds the initialisation and the minibatch draws
    frames: int = 10000  # natural frames cropped for training (catneuron train --data natural)
    data_seed: int = 1  # seeds the crops of the training frames
    log_every: int = 10  # steps between metrics lines (metrics.jsonl)
    checkpoint_every: int = 100  # steps between checkpoints


@dataclass(frozen=True)
class ModelConfig:
    """The whole model: input geometry, stages, objective constants and training."""

    name: str = "custom"  # the config's name (the TOML file's stem)
    image_size: int = 200  # input frames are image_size x image_size (paper: 200)
    channels: int = 3  # input channels (paper: 3, colour)
    stages: tuple[StageConfig, ...] = (StageConfig(), StageConfig(), StageConfig())  # paper: 3
    lam: float = 0.1  # lambda: weight of the sparsity term of eq. 1 ([open], 0.1 reported)
    eps: float = 0.01  # eps inside sqrt(eps + H f^2) ([open])
    c: float = 0.01  # LCN divisor floor (paper: 0.01)
    init_scale: float = 1.0  # weights ~ N(0, (init_scale / sqrt(fan_in))^2)
    dtype: str = "float32"  # "float32" or "float64" (gradient checks use float64)
    gradient: str = "joint"  # "joint": later stages' objectives back-propagate into earlier
    #                          stages; "local": each stage gets only its own objective's gradient
    tied: bool = False  # True: one weight array per stage plays both W1 and W2 (W2 = W1, as in
    #                     RICA, the paper's footnote 4); the paper itself does not tie them
    lcn: bool = True  # False: a stage outputs its pooled features (the "no LCN" baseline)
    preprocess: str = "none"  # "none" (raw frames, as the paper) or "zca" (whitening, see
    #                           refimpl.preprocess), fitted on the training frames
    zca_variance: float = 0.9  # ZCA whitens the leading components holding this share of the
    #                            variance and attenuates the rest (refimpl.preprocess)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def n_stages(self) -> int:
        return len(self.stages)


# ---------------------------------------------------------------------------------------------
# Geometry


def stage_geometry(cfg: ModelConfig) -> list[dict[str, Any]]:
    """Per stage: the input, filter-output and pooled-output shapes (per example) and the
    weight shape. Raises ``ValueError`` naming the stage and key when a window does not fit."""
    out = []
    C, H = cfg.channels, cfg.image_size
    for s, st in enumerate(cfg.stages):
        where = f"stages[{s}]"
        if st.field > H:
            raise ValueError(f"{where}.field = {st.field} is larger than the stage's input "
                             f"({H} x {H}); make it <= {H}")
        OH = (H - st.field) // st.stride + 1
        if st.pool_window > OH:
            raise ValueError(f"{where}.pool_window = {st.pool_window} is larger than the filter "
                             f"output ({OH} x {OH}); make it <= {OH}")
        PH = (OH - st.pool_window) // st.pool_stride + 1
        out.append({
            "input": (C, H, H),
            "filter": (st.maps, OH, OH),
            "pool": (st.maps, PH, PH),
            "weight": (OH, OH, st.maps, C, st.field, st.field),
        })
        C, H = st.maps, PH
    return out


# ---------------------------------------------------------------------------------------------
# Strict construction from plain dicts (TOML, checkpoints)


def _check_value(where: str, name: str, value, ftype: str):
    """Return ``value`` if it has the declared type (an int is accepted for a float)."""
    if ftype == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif ftype == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif ftype == "bool":
        ok = isinstance(value, bool)
    elif ftype == "str":
        ok = isinstance(value, str)
    else:  # pragma: no cover - a field type this function does not know
        raise AssertionError(ftype)
    if not ok:
        raise ValueError(f"{where}{name} must be {ftype}, got {value!r} ({type(value).__name__})")
    return value


def _build(cls, data: dict, where: str, skip: tuple[str, ...] = ()):
    if not isinstance(data, dict):
        raise ValueError(f"{where.rstrip('.') or 'config'} must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    unknown = sorted(set(data) - set(fields) - set(skip))
    if unknown:
        raise ValueError(f"{where}{unknown[0]}: unknown key (known keys: {sorted(fields)})")
    kwargs = {k: _check_value(where, k, v, fields[k].type) for k, v in data.items() if k in fields}
    return cls(**kwargs)


def _positive(where: str, obj, names: tuple[str, ...], minimum=1):
    for n in names:
        v = getattr(obj, n)
        if not v >= minimum:
            raise ValueError(f"{where}{n} must be >= {minimum}, got {v!r}")


def _choice(where: str, name: str, value, choices):
    if value not in choices:
        raise ValueError(f"{where}{name} must be one of {choices}, got {value!r}")


def validate(cfg: ModelConfig) -> ModelConfig:
    """Check every value range and the geometry; return ``cfg`` (``ValueError`` otherwise)."""
    _positive("", cfg, ("image_size", "channels"))
    if not cfg.stages:
        raise ValueError("stages: a model needs at least one [[stages]] table")
    for name in ("lam",):
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)!r}")
    for name in ("eps", "c", "init_scale"):
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)!r}")
    if not 0 < cfg.zca_variance <= 1:
        raise ValueError(f"zca_variance must be in (0, 1], got {cfg.zca_variance!r}")
    _choice("", "dtype", cfg.dtype, DTYPES)
    _choice("", "gradient", cfg.gradient, GRADIENT_MODES)
    _choice("", "preprocess", cfg.preprocess, PREPROCESS)
    for s, st in enumerate(cfg.stages):
        where = f"stages[{s}]."
        _positive(where, st, ("field", "stride", "maps", "pool_window", "pool_stride", "lcn_window"))
        if st.lcn_window % 2 == 0:
            raise ValueError(f"{where}lcn_window must be odd (a centred window), got {st.lcn_window}")
        if not st.lcn_width > 0:
            raise ValueError(f"{where}lcn_width must be > 0, got {st.lcn_width!r}")
        _choice(where, "lcn_border", st.lcn_border, BORDERS)
    t = cfg.train
    _positive("train.", t, ("batch_size", "frames", "log_every", "checkpoint_every"))
    _positive("train.", t, ("steps", "seed", "data_seed"), minimum=0)
    _choice("train.", "optimizer", t.optimizer, OPTIMIZERS)
    if not t.lr > 0:
        raise ValueError(f"train.lr must be > 0, got {t.lr!r}")
    if not t.adagrad_floor > 0:
        raise ValueError(f"train.adagrad_floor must be > 0, got {t.adagrad_floor!r}")
    stage_geometry(cfg)
    return cfg


def config_from_dict(data: dict, *, name: str | None = None) -> ModelConfig:
    """Build and validate a :class:`ModelConfig` from a plain dict (as TOML or JSON gives)."""
    if not isinstance(data, dict):
        raise ValueError(f"config must be a table, got {type(data).__name__}")
    data = dict(data)
    stages = data.pop("stages", None)
    train = data.pop("train", {})
    if stages is None:
        raise ValueError("stages: missing; give one [[stages]] table per stage")
    if not isinstance(stages, list):
        raise ValueError(f"stages must be an array of tables ([[stages]]), got {type(stages).__name__}")
    if name is not None:
        data.setdefault("name", name)
    cfg = _build(ModelConfig, data, "", skip=("stages", "train"))
    built = tuple(_build(StageConfig, st, f"stages[{s}].") for s, st in enumerate(stages))
    cfg = dataclasses.replace(cfg, stages=built, train=_build(TrainConfig, train, "train."))
    return validate(cfg)


def config_to_dict(cfg: ModelConfig) -> dict:
    """The inverse of :func:`config_from_dict` (plain types, JSON- and TOML-friendly)."""
    d = dataclasses.asdict(cfg)
    d["stages"] = [dict(st) for st in d["stages"]]
    return d


def resolve_config_path(name_or_path: str | Path) -> Path:
    """``"tiny"`` -> ``configs/tiny.toml`` of the repository; a path (has ``/`` or ``.toml``)
    is taken as given."""
    s = str(name_or_path)
    if "/" in s or s.endswith(".toml") or Path(s).suffix:
        return Path(s)
    return CONFIG_DIR / f"{s}.toml"


def load_config(name_or_path: str | Path, **overrides) -> ModelConfig:
    """Load a config by name (``configs/NAME.toml``) or path; ``overrides`` replace top-level
    fields (e.g. ``dtype="float64"``) and are validated like the file."""
    path = resolve_config_path(name_or_path)
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
        raise FileNotFoundError(f"config {str(name_or_path)!r}: no file {path} (known names: {known})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config {path}: not valid TOML: {err}") from None
    data.update(overrides)
    return config_from_dict(data, name=path.stem)
