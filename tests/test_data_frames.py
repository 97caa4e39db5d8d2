"""refimpl.data frames: determinism, shapes, face fraction, identity split, the no-faces control,
pasting, and the face detector / face-patch-rate measurement."""

import numpy as np
import pytest

from refimpl.data import (FrameConfig, face_patch_rate, has_face, make_frames, natural_frames,
                          natural_photos, no_face_frames, paste_object, soft_ellipse)
from refimpl.data.faces import ORL_TEST_PEOPLE, ORL_VAL_PEOPLE, face_pool
from refimpl.data.natural import HELD_OUT, photo_pool

PYPI = ("skimage", "sklearn", "sporco")  # installed by `make test`: tests never need Debian


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("size,channels", [(16, 1), (32, 3)])
def test_frames_shapes_dtype_range_and_determinism(size, channels):
    cfg = FrameConfig(size=size, channels=channels, sources=PYPI)
    a = make_frames(12, cfg, rng=rng(3))
    b = make_frames(12, cfg, rng=rng(3))
    c = make_frames(12, cfg, rng=rng(4))
    assert a.frames.shape == (12, channels, size, size) and a.frames.dtype == np.float32
    assert 0.0 <= a.frames.min() and a.frames.max() <= 1.0
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.face_box, b.face_box)
    assert not np.array_equal(a.frames, c.frames)


def test_face_fraction_within_binomial_tolerance():
    n, f = 600, 0.3
    fr = make_frames(n, FrameConfig(size=16, face_fraction=f, sources=PYPI), rng=rng(1))
    assert abs(fr.has_face.mean() - f) < 4 * np.sqrt(f * (1 - f) / n)
    boxes = fr.face_box[fr.has_face]
    assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 0] + boxes[:, 2] <= 16)
    assert np.all(boxes[:, 1] >= 0) and np.all(boxes[:, 1] + boxes[:, 3] <= 16)
    assert np.all(fr.face_box[~fr.has_face] == -1)
    none = make_frames(50, FrameConfig(size=16, face_fraction=0.0, sources=PYPI), rng=rng(1))
    assert not none.has_face.any()


def test_face_boxes_follow_face_scale():
    cfg = FrameConfig(size=40, face_fraction=1.0, face_scale=(0.25, 0.5), sources=PYPI)
    fr = make_frames(30, cfg, rng=rng(2))
    assert fr.has_face.all()
    heights = fr.face_box[:, 2]
    assert heights.min() >= 10 and heights.max() <= 20 and heights.max() > heights.min()


def test_face_identities_are_disjoint_between_splits():
    pools = {s: face_pool(s) for s in ("train", "val", "test")}
    ids = {s: set(p.identity) for s, p in pools.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    assert {f"orl:{p}" for p in ORL_TEST_PEOPLE} <= ids["test"]
    assert {f"orl:{p}" for p in ORL_VAL_PEOPLE} <= ids["val"]
    assert all(i.startswith("orl:") for i in ids["train"]) and len(pools["train"].images) == 280
    for split in ("val", "test"):  # both evaluation splits hold LFW faces
        assert sum(i.startswith("lfw:") for i in pools[split].identity) == 50
    train = {img.tobytes() for img in pools["train"].images}
    assert not any(img.tobytes() in train for img in pools["test"].images)


def test_training_and_held_out_photos_are_disjoint():
    train = {(s, n) for s, n, _ in photo_pool("train", PYPI)}
    held = {(s, n) for s, n, _ in photo_pool("held-out", PYPI)}
    assert train and held and not train & held
    assert {("skimage", n) for n in HELD_OUT["skimage"]} <= held
    assert {s for s, _ in held} == set(PYPI)  # every source contributes distractors


def test_no_face_frames_contain_no_detections():
    cfg = FrameConfig(size=32, face_fraction=0.5, sources=PYPI)
    fr = no_face_frames(16, cfg, rng=rng(7))
    assert fr.frames.shape == (16, 1, 32, 32)
    assert not any(has_face(f, min_side=200) for f in fr.frames)
    strict = no_face_frames(8, cfg, rng=rng(7), drop_pasted=True)
    assert not strict.has_face.any()


def test_detector_finds_a_big_face_and_not_a_flat_frame():
    face = face_pool("test").images[0]  # an ORL face, 112x92
    assert has_face(face)
    assert not has_face(np.full((1, 64, 64), 0.5, np.float32))


def test_face_patch_rate_counts_detections():
    face = face_pool("test").images[0][None, :92, :92]  # (1, 92, 92), one whole face
    faces = np.repeat(face[None], 3, axis=0)  # (3, 1, 92, 92)
    r = face_patch_rate(faces, n_patches=6, rng=rng(0), patch_frac=1.0)
    assert r.rate == 1.0 and r.detected == 6 and r.patch_side == 92
    flat = np.full((3, 1, 100, 100), 0.5, np.float32)
    r0 = face_patch_rate(flat, n_patches=20, rng=rng(0))
    assert r0.rate == 0.0 and r0.patch_side == 30 and r0.frame_side == 100


def test_face_patch_rate_bad_input():
    x = np.zeros((2, 1, 20, 20), np.float32)
    with pytest.raises(TypeError, match="rng"):
        face_patch_rate(x, n_patches=1, rng=1)
    with pytest.raises(ValueError, match="patch_frac"):
        face_patch_rate(x, n_patches=1, rng=rng(), patch_frac=0.0)
    with pytest.raises(ValueError, match="frames"):
        face_patch_rate(x[0], n_patches=1, rng=rng())
    with pytest.raises(ValueError, match="n_patches"):
        face_patch_rate(x, n_patches=0, rng=rng())


def test_soft_ellipse_and_paste_object():
    a = soft_ellipse(9, 9, feather=0.0)
    assert a[4, 4] == 1 and a[0, 0] == 0 and np.array_equal(a, a.T) and np.array_equal(a, a[::-1])
    soft = soft_ellipse(21, 15, feather=0.5)
    assert soft.min() == 0 and soft.max() <= 1 and 0 < soft[10, 3] < 1
    frame = np.zeros((3, 10, 10), np.float32)
    out = paste_object(frame, np.ones((4, 4), np.float32), top=2, left=3, height=5, width=5,
                       feather=0.0)
    assert frame.max() == 0  # the input is not modified
    assert np.all(out[:, 4, 5] == 1) and np.all(out[:, 2, 3] == 0)  # centre in, corner out
    assert out[:, :2].max() == 0 and out[:, :, :3].max() == 0 and out[:, 7:].max() == 0
    assert np.array_equal(out[0], out[2])  # a grey object over colour: equal channels
    over = paste_object(frame, np.ones((4, 4)), top=-2, left=8, height=5, width=5, feather=0.0)
    assert over[:, 0, 9].min() == 1 and over[:, 5:].max() == 0
    colour = paste_object(np.zeros((1, 8, 8)), np.stack([np.ones((4, 4)), np.zeros((4, 4)),
                          np.zeros((4, 4))]), top=0, left=0, height=8, width=8, feather=0.0)
    assert abs(colour[0, 4, 4] - 1 / 3) < 1e-6  # colour over grey: the mean of RGB
    box = paste_object(frame, np.ones((4, 4)), top=0, left=0, height=10, width=10,
                       mask=np.ones((4, 4)))
    assert np.allclose(box, 1)


def test_paste_object_bad_input():
    with pytest.raises(ValueError, match="frame"):
        paste_object(np.zeros((8, 8)), np.ones((2, 2)), top=0, left=0, height=2, width=2)
    with pytest.raises(ValueError, match="mask"):
        paste_object(np.zeros((1, 8, 8)), np.ones((2, 2)), top=0, left=0, height=2, width=2,
                     mask=np.ones((3, 3)))
    with pytest.raises(ValueError, match="height and width"):
        paste_object(np.zeros((1, 8, 8)), np.ones((2, 2)), top=0, left=0, height=0, width=2)
    with pytest.raises(ValueError, match="feather"):
        soft_ellipse(4, 4, feather=1.0)


def test_frame_config_and_args_bad_input():
    with pytest.raises(ValueError, match="face_fraction"):
        FrameConfig(face_fraction=1.5)
    with pytest.raises(ValueError, match="face_scale"):
        FrameConfig(face_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="channels"):
        FrameConfig(channels=2)
    with pytest.raises(TypeError, match="rng"):
        make_frames(2, FrameConfig(sources=PYPI), rng=42)
    with pytest.raises(ValueError, match="n must be"):
        make_frames(-1, FrameConfig(sources=PYPI), rng=rng())


def test_natural_frames_and_photos_keep_their_api():
    x = natural_frames(6, 24, channels=3, rng=rng(0), sources=PYPI)
    assert x.shape == (6, 3, 24, 24) and x.dtype == np.float32
    assert np.array_equal(x, natural_frames(6, 24, channels=3, rng=rng(0), sources=PYPI))
    grey = natural_frames(6, 24, channels=1, rng=rng(0), sources=PYPI)
    np.testing.assert_allclose(grey[:, 0], x.mean(axis=1), atol=1e-6)
    photos = natural_photos(sources=PYPI)
    assert len(photos) == 19 and all(p.dtype == np.float32 and p.shape[2] == 3 for p in photos)
    with pytest.raises(ValueError, match="channels"):
        natural_frames(1, 8, channels=2, rng=rng())
