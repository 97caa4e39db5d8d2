"""Configs: the shipped TOML files load, every mistake is a clear error naming key and stage,
and `catneuron describe` counts the paper model without allocating it."""

import dataclasses
import tracemalloc

import pytest

from catneuron.cli import main
from refimpl.config import config_from_dict, config_to_dict, load_config, stage_geometry
from refimpl.model import param_count, param_shapes

BASE = {
    "top": {"image_size": "16", "channels": "1"},
    "stage0": {"field": "5", "maps": "4", "pool_window": "3", "lcn_window": "3"},
    "stage1": {"field": "3", "maps": "4", "pool_window": "3", "lcn_window": "3"},
    "train": {"batch_size": "4"},
}


def write(tmp_path, **changes):
    """A small 2-stage TOML file; ``changes`` like ``stage1="feild = 3"`` add or replace lines."""
    parts = {k: dict(v) for k, v in BASE.items()}
    for part, line in changes.items():
        key, value = (s.strip() for s in line.split("=", 1))
        parts[part][key] = value
    body = lambda d: "\n".join(f"{k} = {v}" for k, v in d.items())  # noqa: E731
    text = (body(parts["top"]) + "\n[[stages]]\n" + body(parts["stage0"]) + "\n[[stages]]\n"
            + body(parts["stage1"]) + "\n[train]\n" + body(parts["train"]) + "\n")
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["tiny", "mini", "paper"])
def test_shipped_configs_load(name):
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.n_stages == 3  # 9 sublayers
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_paper_config_is_the_papers_shape_and_near_a_billion_weights():
    cfg = load_config("paper")
    assert (cfg.image_size, cfg.channels) == (200, 3)
    for st in cfg.stages:
        assert (st.field, st.maps, st.pool_window, st.lcn_window) == (18, 8, 5, 5)
    # by hand: 200 -> 183 (stride 1) -> pool 179 -> 81 (stride 2) -> 77 -> 60 (stride 1) -> 56
    w = [183 * 183 * 8 * 3 * 18 * 18, 81 * 81 * 8 * 8 * 18 * 18, 60 * 60 * 8 * 8 * 18 * 18]
    assert param_count(cfg) == 2 * sum(w)
    assert 0.8e9 < param_count(cfg) < 1.2e9
    assert [g["pool"] for g in stage_geometry(cfg)] == [(8, 179, 179), (8, 77, 77), (8, 56, 56)]


def test_a_path_is_read_as_given(tmp_path):
    cfg = load_config(str(write(tmp_path, top="lam = 0.5")))
    assert cfg.lam == 0.5 and cfg.name == "c"
    assert cfg.stages[0].field == 5 and cfg.train.batch_size == 4


@pytest.mark.parametrize("kwargs, match", [
    ({"top": "lamda = 0.1"}, r"lamda: unknown key"),
    ({"stage1": "feild = 3"}, r"stages\[1\]\.feild: unknown key"),
    ({"train": "batchsize = 3"}, r"train\.batchsize: unknown key"),
    ({"stage0": "stride = 1.5"}, r"stages\[0\]\.stride must be int"),
    ({"stage1": "maps = true"}, r"stages\[1\]\.maps must be int"),
    ({"top": 'lam = "big"'}, r"lam must be float"),
    ({"top": "lcn = 1"}, r"lcn must be bool"),
    ({"train": "lr = -1.0"}, r"train\.lr must be > 0"),
    ({"top": 'gradient = "both"'}, r"gradient must be one of"),
    ({"train": 'optimizer = "adam"'}, r"train\.optimizer must be one of"),
    ({"stage1": "lcn_window = 4"}, r"stages\[1\]\.lcn_window must be odd"),
    ({"stage0": "stride = 0"}, r"stages\[0\]\.stride must be >= 1"),
    ({"stage1": "pool_window = 9"}, r"stages\[1\]\.pool_window = 9 is larger"),
])
def test_bad_values_name_the_key_and_stage(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_config(write(tmp_path, **kwargs))


def test_impossible_geometry_names_the_stage(tmp_path):
    # stage 0: 16 -> 12 -> pool 10; stage 1 with an 11x11 field does not fit a 10x10 input
    with pytest.raises(ValueError, match=r"stages\[1\]\.field = 11 is larger than the stage's input \(10 x 10\)"):
        load_config(write(tmp_path, stage1="field = 11"))


def test_missing_stages_unknown_name_and_bad_toml(tmp_path):
    with pytest.raises(ValueError, match="stages: missing"):
        config_from_dict({"image_size": 8})
    with pytest.raises(FileNotFoundError, match="known names"):
        load_config("no_such_config")
    bad = tmp_path / "bad.toml"
    bad.write_text("image_size = = 3")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(bad)


def test_configs_are_frozen():
    cfg = load_config("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lam = 1.0


def test_tied_config_has_no_decoder_parameters():
    cfg = load_config("tiny", tied=True)
    assert list(param_shapes(cfg)) == ["stage0.W1", "stage1.W1", "stage2.W1"]
    assert 2 * param_count(cfg) == param_count(load_config("tiny"))


def test_describe_paper_prints_the_count_without_allocating(capsys):
    tracemalloc.start()
    assert main(["describe", "--config", "paper"]) == 0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out = capsys.readouterr().out
    assert f"{param_count(load_config('paper')):,}" in out
    for s in range(3):
        for sub in ("filter", "decoder", "pool", "lcn"):
            assert f"stage{s}.{sub}" in out
    assert "8x183x183" in out and "8x56x56" in out
    assert peak < 50 * 2**20  # the weights alone would be 3.5 GiB


def test_describe_accepts_a_path_and_reports_errors(tmp_path, capsys):
    assert main(["describe", "--config", str(write(tmp_path))]) == 0
    assert main(["describe", "--config", str(write(tmp_path, stage1="feild = 3"))]) == 2
    assert "stages[1].feild: unknown key" in capsys.readouterr().err
