"""Checkpoints round-trip everything, are written atomically, and refuse bad files clearly."""

import json

import numpy as np
import pytest

from refimpl import checkpoint as ck
from refimpl.config import load_config
from refimpl.model import init_params
from refimpl.optim import adagrad_init


def make(tmp_path, step=5):
    cfg = load_config("tiny")
    rng = np.random.default_rng(3)
    params = init_params(cfg, rng)
    opt = {k: np.abs(v) for k, v in adagrad_init(params).items()}
    rng.standard_normal(10)  # advance the generator past its seed state
    pre = {"mean": np.arange(4.0), "kept": np.array(2)}
    path = ck.save_checkpoint(tmp_path / "c.npz", config=cfg, step=step, params=params,
                              opt_state=opt, rng=rng, preprocess=pre)
    return path, cfg, params, opt, rng, pre


def test_round_trip(tmp_path):
    path, cfg, params, opt, rng, pre = make(tmp_path)
    c = ck.load_checkpoint(path)
    assert c.config == cfg and c.step == 5
    assert list(c.params) == list(params)
    for k in params:
        np.testing.assert_array_equal(c.params[k], params[k])
        np.testing.assert_array_equal(c.opt_state[k], opt[k])
    np.testing.assert_array_equal(c.preprocess["mean"], pre["mean"])
    # the restored Generator continues the saved one's stream exactly
    np.testing.assert_array_equal(c.rng().standard_normal(5), rng.standard_normal(5))
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary file left


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path, cfg, params, opt, rng, _ = make(tmp_path, step=5)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(ck.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(path, config=cfg, step=6, params=params, opt_state=opt, rng=rng)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]
    assert ck.load_checkpoint(path).step == 5


def test_truncated_file_is_a_clear_error(tmp_path):
    path = make(tmp_path)[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable .npz file"):
        ck.load_checkpoint(path)


def test_foreign_files_are_clear_errors(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a catneuron checkpoint"):
        ck.load_checkpoint(other)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable .npz file"):
        ck.load_checkpoint(text)
    with pytest.raises(FileNotFoundError):
        ck.load_checkpoint(tmp_path / "missing.npz")


def test_changed_contents_fail_the_checksum(tmp_path):
    path = make(tmp_path)[0]
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["param/stage1.W2"] = arrays["param/stage1.W2"].copy()
    arrays["param/stage1.W2"].flat[7] += 1e-9  # one weight, slightly
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="corrupted: its SHA-256 checksum does not match"):
        ck.load_checkpoint(path)


def test_config_is_stored_as_json(tmp_path):
    path, cfg, *_ = make(tmp_path)
    with np.load(path) as npz:
        stored = json.loads(str(npz["config"]))
    assert stored["stages"][0]["field"] == cfg.stages[0].field
