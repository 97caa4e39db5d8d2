"""refimpl.data.control: the positive-control world's frames and labelled sets."""

import numpy as np
import pytest

from refimpl.data import control
from refimpl.data.natural import photo_pool

PYPI = ("skimage", "sklearn", "sporco")


def rng(seed=0):
    return np.random.default_rng(seed)


def test_class_pools_are_disjoint_and_cover_every_class():
    pools = {s: control.class_pool(s) for s in control.POOL_SPLITS}
    for x, y, classes in pools.values():
        assert x.ndim == 3 and x.shape[1:] == (28, 28) and len(x) == len(y)
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert set(np.unique(y)) == set(range(len(classes)))
    keys = {s: {p.tobytes() for p in pools[s][0]} for s in pools}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]


def test_control_frames_hold_the_concept_at_the_asked_rate():
    cfg = control.ControlConfig(size=20, concept=3, concept_fraction=0.3, sources=PYPI)
    f = control.control_frames(300, cfg, rng=rng(0))
    assert f.frames.shape == (300, 1, 20, 20) and f.frames.dtype == np.float32
    assert 0.0 <= f.frames.min() and f.frames.max() <= 1.0
    assert abs(f.has_face.mean() - 0.3) < 0.08
    top, left, h, w = f.face_box[f.has_face].T
    assert np.all(h == w) and np.all(top >= 0) and np.all(left + w <= 20)
    assert np.all(h >= round(0.5 * 20)) and np.all(h <= round(0.9 * 20))
    assert np.all(f.face_box[~f.has_face] == -1)
    # the pasted strokes are bright: inside the box the frame got brighter than the plain crop
    plain = control.control_frames(300, control.ControlConfig(size=20, concept_fraction=0.0,
                                                              sources=PYPI), rng=rng(0))
    assert not plain.has_face.any()
    again = control.control_frames(300, cfg, rng=rng(0))
    assert np.array_equal(f.frames, again.frames)  # deterministic from the Generator


def test_paste_strokes_only_brightens_where_the_object_is_bright():
    frame = np.full((1, 10, 10), 0.2, np.float32)
    obj = np.zeros((28, 28), np.float32)
    obj[:, 10:18] = 1.0  # a vertical bar, 3 px wide after resizing
    out = control.paste_strokes(frame, obj, top=0, left=0, side=10)
    assert out[0, :, 0].max() == pytest.approx(0.2)  # far from the bar: unchanged
    assert out[0, 5, 4:6].min() > 0.9  # on the bar: (nearly) white
    assert np.all(out >= frame - 1e-6)


def test_control_set_ratio_negatives_and_disjoint_splits():
    s = control.control_set(60, 20, concept=1, split="test", rng=rng(1), sources=PYPI)
    assert s.images.shape == (60, 1, 20, 20)
    k = round(60 * 13026 / 37000)
    assert s.labels.sum() == k
    assert set(s.origin[s.labels == 1]) == {"class:1"}
    neg = s.origin[s.labels == 0]
    other = [o for o in neg if o.startswith("class:")]
    assert len(other) == (60 - k) // 2 and "class:1" not in other
    held = {f"{src}:{name}" for src, name, _ in photo_pool("held-out", PYPI)}
    assert {o for o in neg if not o.startswith("class:")} <= held
    assert len(np.unique(s.labels[:15])) == 2  # shuffled


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="concept_fraction"):
        control.ControlConfig(concept_fraction=1.5)
    with pytest.raises(ValueError, match="concept"):
        control.ControlConfig(concept=12)
    with pytest.raises(ValueError, match="split"):
        control.control_set(10, 16, split="train", rng=rng())
    with pytest.raises(ValueError, match="split"):
        control.class_pool("everything")
    with pytest.raises(TypeError, match="rng"):
        control.control_frames(3, control.ControlConfig(size=16), rng=0)


def test_centred_placement_keeps_the_concept_near_the_middle():
    cfg = control.ControlConfig(size=30, concept_fraction=1.0, object_scale=(0.6, 0.6),
                                placement="centred", sources=PYPI)
    f = control.control_frames(40, cfg, rng=rng(3))
    top, left, h, _ = f.face_box.T
    assert np.all(h == 18)
    assert np.all(np.abs(top - 6) <= 3) and np.all(np.abs(left - 6) <= 3)  # (30-18)/2 +- 10%
    assert len(set(top)) > 1  # jittered, not fixed
    with pytest.raises(ValueError, match="placement"):
        control.ControlConfig(placement="corner")
