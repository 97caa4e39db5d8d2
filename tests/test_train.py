"""The training loop: bit-for-bit reproducible, resumable exactly, logs, CLI outputs."""

import dataclasses
import json

import numpy as np
import pytest

from catneuron.cli import main
from refimpl.checkpoint import load_checkpoint
from refimpl.config import load_config
from refimpl.train import train

STEPS = 8


def frames(cfg, n=64, seed=1):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, cfg.channels, cfg.image_size, cfg.image_size))
    return base.cumsum(axis=3).astype(cfg.dtype)  # smooth-ish, like images


def tiny(**overrides):
    train_over = {k: overrides.pop(k) for k in list(overrides) if k in ("optimizer", "lr", "seed")}
    cfg = load_config("tiny", **overrides)
    t = dataclasses.replace(cfg.train, batch_size=4, log_every=2, checkpoint_every=4, **train_over)
    return dataclasses.replace(cfg, train=t)


def same_params(a, b):
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("overrides", [{}, {"optimizer": "sgd", "lr": 1e-4},
                                       {"preprocess": "zca", "dtype": "float32"}],
                         ids=["adagrad", "sgd", "zca-float32"])
def test_resume_is_bit_exact(tmp_path, overrides):
    cfg = tiny(**overrides)
    x = frames(cfg)
    full = train(cfg, x, steps=STEPS, progress=False)
    half = train(cfg, x, steps=STEPS // 2, out_dir=tmp_path, progress=False)
    assert half.checkpoint == tmp_path / "checkpoint.npz"
    assert load_checkpoint(half.checkpoint).step == STEPS // 2
    resumed = train(cfg, x, steps=STEPS, out_dir=tmp_path, resume=half.checkpoint, progress=False)
    assert same_params(full.params, resumed.params)
    assert same_params(full.opt_state, resumed.opt_state)
    assert full.rng.bit_generator.state == resumed.rng.bit_generator.state


def test_seed_reproduces_and_thread_count_does_not_matter(monkeypatch):
    cfg = tiny()
    x = frames(cfg)
    a = train(cfg, x, steps=4, progress=False)
    monkeypatch.setenv("CATNEURON_THREADS", "1")
    b = train(cfg, x, steps=4, progress=False)
    assert same_params(a.params, b.params)
    c = train(tiny(seed=1), x, steps=4, progress=False)
    assert not same_params(a.params, c.params)


def test_training_lowers_the_loss_and_logs_metrics(tmp_path):
    cfg = tiny()
    res = train(cfg, frames(cfg), steps=20, out_dir=tmp_path, progress=False)
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [d["step"] for d in lines] == list(range(2, 21, 2))
    assert lines == res.history
    for s in range(3):
        assert lines[-1][f"stage{s}.reconstruction"] > 0 and lines[-1][f"stage{s}.sparsity"] > 0
    assert lines[-1]["loss"] < 0.5 * lines[0]["loss"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow on the way to divergence
def test_errors(tmp_path):
    cfg = tiny()
    x = frames(cfg)
    with pytest.raises(ValueError, match=r"frames must have shape \(N, C, H, W\) = \(N, 1, 16, 16\)"):
        train(cfg, x[:, :, :8], steps=1, progress=False)
    first = train(cfg, x, steps=4, out_dir=tmp_path, progress=False)
    other = tiny(lam=0.5)
    with pytest.raises(ValueError, match="different config \\(differs in lam\\)"):
        train(other, x, steps=8, resume=first.checkpoint, progress=False)
    with pytest.raises(ValueError, match="training diverged at step"):
        train(tiny(optimizer="sgd", lr=10.0), x, steps=20, progress=False)


def test_cli_writes_checkpoint_metrics_and_figures(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--steps", "6", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for name in ("checkpoint.npz", "metrics.jsonl", "filters.png", "curves.png", "reconstructions.png"):
        assert (out / name).stat().st_size > 0
        assert name in printed
    assert load_checkpoint(out / "checkpoint.npz").step == 6
    assert main(["train", "--config", "tiny", "--steps", "8", "--out", str(out), "--no-progress",
                 "--resume", str(out / "checkpoint.npz")]) == 0
    assert load_checkpoint(out / "checkpoint.npz").step == 8


def test_zca_whitens_the_leading_components_and_inverts():
    from refimpl.preprocess import fit_zca, unwhiten, whiten

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 1, 6, 6)).cumsum(axis=3).cumsum(axis=2)  # correlated pixels
    w = fit_zca(x, variance=0.9)
    assert 1 <= w.kept < 36 and w.variance >= 0.9
    white = whiten(x, w).reshape(2000, -1)
    lam = np.sort(np.linalg.eigvalsh(np.cov(white.T)))[::-1]
    raw = np.sort(np.linalg.eigvalsh(np.cov(x.reshape(2000, -1).T)))[::-1]
    assert raw[0] / raw[w.kept - 1] > 20  # the raw spectrum is steep ...
    assert lam[0] / lam[w.kept - 1] < 2.5  # ... the whitened one flat over the kept components
    np.testing.assert_allclose(white.var(axis=0).mean(), 1.0, rtol=0.01)
    np.testing.assert_allclose(unwhiten(whiten(x, w), w), x, atol=1e-8)
    with pytest.raises(ValueError, match="frames have 16 values per frame"):
        whiten(x[:, :, :4, :4], w)
    with pytest.raises(ValueError, match="at least 2 frames"):
        fit_zca(x[:1])
    with pytest.raises(ValueError, match="too large for ZCA"):
        fit_zca(np.zeros((2, 3, 200, 200), dtype=np.float32))  # the paper's frames
