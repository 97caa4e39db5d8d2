"""``catneuron train``: train a config on natural frames, write metrics, checkpoint and figures.

    catneuron train --config mini --data natural                 # `make run`, a few minutes
    catneuron train --config tiny --steps 50 --out runs/tiny
    catneuron train --config mini --resume runs/mini/checkpoint.npz --steps 6000
    catneuron train --config mini --device cuda                  # on a GPU, through CuPy

Writes to --out (default runs/<config>): metrics.jsonl, checkpoint.npz, filters.png (stage 0's
W1 at a few locations), curves.png (loss and per-stage terms) and reconstructions.png (input
frames and the stage-0 decoder's reconstructions).

--device (or CATNEURON_DEVICE; the flag wins, the default is cpu) picks the array backend
(gpu.device.select_backend). The frames are made on the host and each minibatch is uploaded;
the weights and optimiser state live on the device; metrics and checkpoints come back to the
host, and so does the final result, explicitly (gpu.to_host), before the figures are drawn.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the model on natural frames; writes metrics, a checkpoint and figures",
        description="Train a config (configs/NAME.toml or a path) with minibatch SGD/Adagrad on "
        "random crops of the natural photos shipped by scikit-image and scikit-learn. "
        "Checkpoints are written atomically every train.checkpoint_every steps; --resume "
        "continues bit for bit.",
    )
    p.add_argument("--config", default="mini", help="config name or path (default: mini)")
    p.add_argument("--data", default="natural", choices=["natural"],
                   help="training frames: natural = crops of the shipped photos (default)")
    p.add_argument("--steps", type=int, default=None, help="total steps (default: train.steps)")
    p.add_argument("--out", default=None, help="output directory (default: runs/<config>)")
    p.add_argument("--resume", default=None, metavar="CKPT", help="continue from a checkpoint")
    p.add_argument("--device", default=None,
                   help="cpu (NumPy) or cuda (CuPy on the first visible GPU); default: "
                   "$CATNEURON_DEVICE, else cpu. strict = the CuPy stand-in, for tests")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from gpu.device import resolve_device, select_backend, to_host
    from refimpl.config import load_config
    from refimpl.data import natural_frames
    from refimpl.filters import gabor_score
    from refimpl.train import CHECKPOINT, METRICS, train

    device = resolve_device(args.device)  # --device, else CATNEURON_DEVICE, else cpu
    xp = select_backend(device)  # first: a missing GPU stops the run before any work
    cfg = load_config(args.config)
    out = Path(args.out or Path("runs") / cfg.name)
    frames = natural_frames(cfg.train.frames, cfg.image_size, channels=cfg.channels,
                            rng=np.random.default_rng(cfg.train.data_seed))
    try:
        result = train(cfg, frames, steps=args.steps, out_dir=out, resume=args.resume,
                       progress=not args.no_progress, xp=xp)
    except KeyboardInterrupt:
        print(f"interrupted: resume with --resume {out / CHECKPOINT}")
        return 130
    result = result._replace(params=to_host(result.params), opt_state=to_host(result.opt_state))
    figures = write_figures(cfg, result, frames, out)
    score = gabor_score(result.params["stage0.W1"])
    print(f"trained {cfg.name} on {device} to step {result.step}; stage-0 filters Gabor-like: "
          f"{score.fraction:.0%} (localisation {score.localisation.mean():.2f}, "
          f"orientation {score.orientation.mean():.2f})")
    print(f"outputs in {out}/:")
    for path in [out / METRICS, result.checkpoint, *figures]:
        print(f"  {path}")
    return 0


def write_figures(cfg, result, frames, out: Path) -> list[Path]:
    """filters.png, curves.png and reconstructions.png in ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from refimpl.model import model_forward, reconstruction
    from refimpl.preprocess import unwhiten
    from refimpl.train import METRICS, prepare_frames

    paths = []
    # 1. stage 0's W1: rows = a few locations, columns = the K maps
    W1 = np.asarray(result.params["stage0.W1"], dtype=np.float64)  # (OH, OW, K, C, R, R)
    OH, OW, K, C = W1.shape[:4]
    locs = [(int(i), int(j)) for i, j in zip(np.linspace(0, OH - 1, min(OH, 6)),
                                              np.linspace(0, OW - 1, min(OW, 6)))]
    fig, axes = plt.subplots(len(locs), K, figsize=(K * 0.9, len(locs) * 0.9), squeeze=False)
    for r, (i, j) in enumerate(locs):
        for k in range(K):
            axes[r, k].imshow(_image(W1[i, j, k]), cmap="gray", interpolation="nearest")
            axes[r, k].set_axis_off()
        axes[r, 0].set_title(f"({i},{j})", fontsize=6, loc="left")
    fig.suptitle(f"{cfg.name}: stage-0 filters W1 (rows: locations, columns: maps)", fontsize=8)
    paths.append(_save(fig, out / "filters.png"))

    # 2. training curves from the whole metrics file (earlier runs of a resume included)
    lines = [json.loads(s) for s in (out / METRICS).read_text().splitlines() if s.strip()]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [d["step"] for d in lines]
    a1.plot(steps, [d["loss"] for d in lines], label="J (sum of stages)")
    for s in range(cfg.n_stages):
        a2.plot(steps, [d[f"stage{s}.reconstruction"] for d in lines], label=f"stage {s} reconstruction")
        a2.plot(steps, [cfg.lam * d[f"stage{s}.sparsity"] for d in lines], "--",
                label=f"stage {s} lambda*sparsity")
    for a in (a1, a2):
        a.set_xlabel("step")
        a.set_ylabel("per example")
        a.set_yscale("log")
        a.legend(fontsize=6)
    paths.append(_save(fig, out / "curves.png"))

    # 3. input frames and the stage-0 reconstructions, shown in pixel space
    n = min(8, frames.shape[0])
    x, _ = prepare_frames(cfg, frames[:n], result.whitening)
    _, cache = model_forward(x, result.params, cfg)
    xhat = np.asarray(reconstruction(cache, 0), dtype=np.float64)
    shown_x, shown_xhat = np.asarray(x, dtype=np.float64), xhat
    if result.whitening is not None:
        shown_x, shown_xhat = unwhiten(shown_x, result.whitening), unwhiten(xhat, result.whitening)
    fig, axes = plt.subplots(2, n, figsize=(n * 1.2, 2.6), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(_image(shown_x[i]), cmap="gray")
        axes[1, i].imshow(_image(shown_xhat[i]), cmap="gray")
        axes[0, i].set_axis_off()
        axes[1, i].set_axis_off()
    axes[0, 0].set_title("input", fontsize=7, loc="left")
    axes[1, 0].set_title("W2 W1^T x", fontsize=7, loc="left")
    paths.append(_save(fig, out / "reconstructions.png"))
    return paths


def _image(a: np.ndarray) -> np.ndarray:
    """(C, H, W) -> an (H, W) or (H, W, 3) image scaled to [0, 1]."""
    a = a - a.min()
    a = a / max(a.max(), 1e-12)
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)  # (H, W, C)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
