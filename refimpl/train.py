"""The training loop: minibatches of frames, the summed objective, an optimiser, checkpoints.

    catneuron train --config mini --data natural            # make run
    catneuron train --config tiny --steps 50 --out runs/t   # seconds
    catneuron train --config mini --resume runs/mini/checkpoint.npz --steps 4000

One step: draw ``batch_size`` frame indices from the run's Generator, ``J, cache =
model_forward``, ``grads = model_backward`` (joint or local, per the config), one optimiser
update. Everything random comes from one ``numpy.random.Generator`` seeded by
``cfg.train.seed`` (initial weights first, then the minibatch draws), and the kernels are
deterministic (whatever CATNEURON_THREADS is), so a seed reproduces a run bit for bit.

Every ``log_every`` steps a line goes to ``metrics.jsonl`` (loss and the per-stage terms per
example, examples/s). Every ``checkpoint_every`` steps, and at the end, ``checkpoint.npz`` is
replaced atomically (refimpl.checkpoint) with the weights, optimiser state, step and the
Generator's state, so resuming continues exactly where the run was, and a crash or Ctrl-C
loses at most the steps since the last checkpoint.

On a device (``xp``, e.g. ``cupy``; :func:`gpu.device.select_backend` picks it): the frames stay
on the host, the weights and optimiser state are uploaded once (``xp.asarray``) and stay on the
device, each minibatch is uploaded as it is drawn, and only scalars (metrics) and checkpoints
come back to the host (``refimpl.backend.to_numpy``). Nothing here branches on the backend.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from .backend import to_numpy
from .checkpoint import load_checkpoint, restore_rng, save_checkpoint
from .config import ModelConfig, config_to_dict
from .model import init_params, model_backward, model_forward, stage_terms
from .optim import init_state, update
from .preprocess import Whitening, fit_zca, from_arrays, to_arrays, whiten

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.jsonl"


class TrainResult(NamedTuple):
    params: dict  # on the device of ``xp`` (NumPy arrays by default)
    opt_state: dict  # likewise
    step: int
    rng: np.random.Generator
    history: list[dict]  # the logged metrics lines of this call (host floats)
    whitening: Whitening | None
    checkpoint: Path | None  # the last checkpoint written (None without out_dir)


def prepare_frames(cfg: ModelConfig, frames: np.ndarray, whitening: Whitening | None = None):
    """Frames (N, C, H, W) -> the model's training inputs in ``cfg.dtype``, and the whitening
    (fitted on ``frames`` when the config asks for ZCA and none is given)."""
    want = (cfg.channels, cfg.image_size, cfg.image_size)
    if getattr(frames, "ndim", None) != 4 or tuple(frames.shape[1:]) != want:
        raise ValueError(f"frames must have shape (N, C, H, W) = (N, {want[0]}, {want[1]}, "
                         f"{want[2]}) for config {cfg.name!r}, got {getattr(frames, 'shape', None)}")
    if cfg.preprocess == "zca":
        whitening = whitening or fit_zca(frames, cfg.zca_variance)
        return whiten(frames, whitening, dtype=cfg.dtype), whitening
    return np.ascontiguousarray(frames, dtype=cfg.dtype), None


def _same_run(a: ModelConfig, b: ModelConfig) -> list[str]:
    """The fields that differ between two configs, ignoring the name and train.steps."""
    da, db = config_to_dict(a), config_to_dict(b)
    for d in (da, db):
        d.pop("name")
        d["train"].pop("steps")
    diff = [k for k in da if k != "train" and da[k] != db[k]]
    diff += [f"train.{k}" for k in da["train"] if da["train"][k] != db["train"][k]]
    return diff


def metrics_line(step: int, J, cache, batch: int, seconds: float) -> dict:
    """One metrics record: loss and per-stage terms per example, throughput."""
    line = {"step": step, "loss": float(J) / batch, "examples_per_s": batch / max(seconds, 1e-12)}
    for s, t in enumerate(stage_terms(cache)):
        line[f"stage{s}.reconstruction"] = t["reconstruction"] / batch
        line[f"stage{s}.sparsity"] = t["sparsity"] / batch
    return line


def train(cfg: ModelConfig, frames: np.ndarray, *, steps: int | None = None,
          out_dir: str | Path | None = None, resume: str | Path | None = None,
          progress: bool = True, xp=None) -> TrainResult:
    """Train ``cfg`` on ``frames`` (N, C, H, W) up to ``steps`` total steps (default
    ``cfg.train.steps``). With ``out_dir``: metrics.jsonl and checkpoint.npz go there. With
    ``resume``: continue from that checkpoint (its config must match ``cfg`` except train.steps).
    With ``xp`` (an array namespace such as ``cupy``; default: NumPy, no transfers): compute on
    that device (module docstring); the result's params and opt_state are then device arrays.
    """
    t = cfg.train
    steps = t.steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    whitening, start = None, 0
    if resume is not None:
        ck = load_checkpoint(resume)
        diff = _same_run(ck.config, cfg)
        if diff:
            raise ValueError(f"resume: checkpoint {resume} was made with a different config "
                             f"(differs in {', '.join(diff)})")
        params, opt_state, start = ck.params, ck.opt_state, ck.step
        rng, whitening = restore_rng(ck.rng_state), from_arrays(ck.preprocess)
        if start > steps:
            raise ValueError(f"resume: checkpoint is at step {start}, past steps = {steps}")
    else:
        rng = np.random.default_rng(t.seed)
        params = init_params(cfg, rng)
        opt_state = init_state(t.optimizer, params)
    data, whitening = prepare_frames(cfg, frames, whitening)  # on the host
    N = data.shape[0]
    upload = (lambda a: a) if xp is None else xp.asarray  # host -> device
    params = {k: upload(v) for k, v in params.items()}
    opt_state = {k: upload(v) for k, v in opt_state.items()}

    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    last_ckpt = None

    def checkpoint(step):
        nonlocal last_ckpt
        if out is not None:
            last_ckpt = save_checkpoint(out / CHECKPOINT, config=cfg, step=step,
                                        params={k: to_numpy(v) for k, v in params.items()},
                                        opt_state={k: to_numpy(v) for k, v in opt_state.items()},
                                        rng=rng, preprocess=to_arrays(whitening))

    history = []
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress,
               desc=f"train {cfg.name}", unit="step", dynamic_ncols=True)
    try:
        for step in bar:
            t0 = time.perf_counter()
            idx = rng.integers(0, N, size=t.batch_size)
            x = upload(data[idx])  # (B, C, H, W), drawn on the host
            try:
                J, cache = model_forward(x, params, cfg)
                _, grads = model_backward(cache, cfg, input_grad=False)
            except ValueError as err:
                if "NaN or inf" not in str(err):
                    raise
                raise ValueError(f"training diverged at step {step + 1}: {err}; lower train.lr "
                                 f"(now {t.lr:g})") from None
            if not np.isfinite(float(J)):
                raise ValueError(f"training diverged at step {step + 1}: the loss is {float(J)}; "
                                 f"lower train.lr (now {t.lr:g})")
            params, opt_state = update(t.optimizer, params, grads, opt_state, lr=t.lr,
                                       floor=t.adagrad_floor)
            done = step + 1
            if done % t.log_every == 0 or done == steps:
                line = metrics_line(done, J, cache, t.batch_size, time.perf_counter() - t0)
                history.append(line)
                bar.set_postfix_str(_postfix(line, cfg.n_stages))
                if out is not None:
                    with open(out / METRICS, "a") as f:
                        f.write(json.dumps(line) + "\n")
            if done % t.checkpoint_every == 0 or done == steps:
                checkpoint(done)
    except KeyboardInterrupt:
        where = f"{last_ckpt}" if last_ckpt else "none written in this run"
        bar.write(f"interrupted; last checkpoint: {where}")
        raise
    finally:
        bar.close()
    if out is not None and start == steps:
        checkpoint(steps)  # nothing to do, but the caller still gets a checkpoint path
    return TrainResult(params, opt_state, steps, rng, history, whitening, last_ckpt)


def _postfix(line: dict, n_stages: int) -> str:
    parts = [f"loss={line['loss']:.4g}", f"{line['examples_per_s']:.0f} ex/s"]
    for s in range(n_stages):
        parts.append(f"s{s} rec={line[f'stage{s}.reconstruction']:.3g} "
                     f"spa={line[f'stage{s}.sparsity']:.3g}")
    return " ".join(parts)


def with_steps(cfg: ModelConfig, steps: int) -> ModelConfig:
    """``cfg`` with ``train.steps`` replaced."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
